//! Per-volume space: mapped, exclusive and shared blocks and the highest mapped block, read
//! from a pool's metadata.  For an active pool the kernel is asked for a metadata snapshot
//! (`reserve_metadata_snap`), which is a stable copy we can read while the pool runs; it is
//! released afterwards.  We read the metadata *file*: the loop device writes through the same
//! page cache, so what the kernel committed is what we see.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rthin_metadata::btree::MAPPING_BOTTOM_TREE;
use rthin_metadata::thin::unpack_block_time;
use rthin_metadata::BlockManager;

use crate::dump::{collect_tree, devices};
use crate::error::Result;
use crate::pools::{self, Loaded};
use crate::raw;
use crate::sys::Sys;
use crate::tables::msg;

/// One device's numbers, in data blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub mapped: u64,
    pub exclusive: u64,
    pub shared: u64,
    pub highest: Option<u64>,
    pub transaction_id: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

/// Usage of every device under the superblock at `sb_loc` (0: live; else a metadata snapshot).
pub fn usage<B: BlockManager>(bm: &B, sb_loc: u64) -> anyhow::Result<BTreeMap<u64, Usage>> {
    let sb = raw::read_superblock(bm, sb_loc)?;
    let mut per_dev = Vec::new();
    let mut users: HashMap<u64, u32> = HashMap::new();
    for (id, root, details) in devices(bm, &sb)? {
        let mappings = collect_tree(bm, root, MAPPING_BOTTOM_TREE)?;
        let highest = mappings.last().map(|(k, _)| *k);
        let mut blocks: Vec<u64> = mappings
            .iter()
            .map(|(_, v)| unpack_block_time(v).0)
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        for b in &blocks {
            *users.entry(*b).or_default() += 1;
        }
        per_dev.push((id, details, highest, blocks));
    }
    let mut out = BTreeMap::new();
    for (id, d, highest, blocks) in per_dev {
        let exclusive = blocks.iter().filter(|b| users[b] == 1).count() as u64;
        out.insert(
            id,
            Usage {
                mapped: d.mapped_blocks,
                exclusive,
                shared: blocks.len() as u64 - exclusive,
                highest,
                transaction_id: d.transaction_id,
                creation_time: d.creation_time,
                snapshotted_time: d.snapshotted_time,
            },
        );
    }
    Ok(out)
}

fn read_file(path: &Path, sb_loc: u64) -> Result<BTreeMap<u64, Usage>> {
    let bm = rthin_metadata_file::open_file(path, false)
        .map_err(|e| crate::other!("opening {}: {e}", path.display()))?;
    usage(&bm, sb_loc).map_err(|e| crate::other!("reading {}: {e:#}", path.display()))
}

/// Usage of a pool's volumes by device id; `None` when it cannot be read (a pool on block
/// devices: only the kernel's per-volume status is available then).
pub fn of_pool(sys: &mut Sys, l: &Loaded) -> Result<Option<BTreeMap<u64, Usage>>> {
    if !l.state.files {
        return Ok(None);
    }
    if pools::active(sys, l.name())?.is_none() {
        return read_file(&l.state.metadata, 0).map(Some);
    }
    let pool = l.name().to_string();
    // A held snapshot of someone else (thin_ls -m, a backup) is used as it is.
    let ours = match sys.dm()?.message(&pool, msg::RESERVE_METADATA_SNAP) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => false,
        Err(_) => return Ok(None),
    };
    let held = pools::status(sys, &pool)?.held_root;
    let result = match held {
        Some(loc) => read_file(&l.state.metadata, loc).map(Some),
        None => Ok(None),
    };
    if ours {
        let _ = sys.dm()?.message(&pool, msg::RELEASE_METADATA_SNAP);
    }
    result
}
