//! Offline metadata check: every structure is walked independently of the engine's in-core
//! state, every reference to a metadata or data block is counted, and the counts are compared
//! with both space maps.  Messages name the block at fault.

use std::collections::{BTreeMap, HashMap};

use rthin_metadata::block::le32;
use rthin_metadata::btree::{
    TreeInfo, ValueKind, DETAILS_TREE, MAPPING_BOTTOM_TREE, MAPPING_TOP_TREE, MAX_DEPTH,
    REF_COUNT_TREE, SM_INDEX_TREE,
};
use rthin_metadata::btree_node as node;
use rthin_metadata::sm_common::{bitmap_get, IndexEntry, SmRoot, ENTRIES_PER_BITMAP};
use rthin_metadata::sm_metadata::{INDEX_ENTRIES_OFFSET, MAX_METADATA_BITMAPS};
use rthin_metadata::superblock::{DeviceDetails, Superblock};
use rthin_metadata::thin::unpack_block_time;
use rthin_metadata::{BlockKind, BlockManager};

use crate::raw;

/// Outcome of a check.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Problems found (empty = clean).
    pub errors: Vec<String>,
    /// Transaction id from the superblock.
    pub transaction_id: u64,
    /// Free metadata blocks per the metadata space map.
    pub metadata_free_blocks: u64,
    /// Devices seen.
    pub devices: usize,
    /// Mappings seen (all devices).
    pub mappings: u64,
    /// Every metadata block something references, in order.
    pub referenced: Vec<u64>,
}

impl Report {
    /// True when no error was found.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Mapping,
    Details,
    Index,
    RefCount,
}

#[derive(Clone, Copy)]
struct Summary {
    height: usize,
    entries: u64,
    role: Role,
}

type Collected = Vec<(u64, [u8; 24])>;

/// Reference counts of blocks `0..nr`: one byte per block (a data device of millions of
/// blocks costs a few MB and no hashing), counts of 255 and more on the side.
struct Counts {
    small: Vec<u8>,
    big: HashMap<u64, u32>,
}

impl Counts {
    const BIG: u8 = u8::MAX;

    fn new(nr: u64) -> Counts {
        Counts {
            small: vec![0; nr as usize],
            big: HashMap::new(),
        }
    }

    fn get(&self, b: u64) -> u32 {
        match self.small[b as usize] {
            Self::BIG => self.big[&b],
            v => u32::from(v),
        }
    }

    fn set(&mut self, b: u64, v: u32) {
        match u8::try_from(v) {
            Ok(x) if x != Self::BIG => {
                self.small[b as usize] = x;
                self.big.remove(&b);
            }
            _ => {
                self.small[b as usize] = Self::BIG;
                self.big.insert(b, v);
            }
        }
    }

    fn inc(&mut self, b: u64) {
        let i = b as usize;
        if self.small[i] < Self::BIG - 1 {
            self.small[i] += 1;
        } else {
            let v = self.get(b).saturating_add(1);
            self.set(b, v);
        }
    }
}

struct Checker<'a, B: BlockManager> {
    bm: &'a B,
    nr_meta: u64,
    nr_data: u64,
    meta_refs: Counts,
    data_refs: Counts,
    seen: HashMap<u64, Option<Summary>>,
    errors: Vec<String>,
}

impl<B: BlockManager> Checker<'_, B> {
    fn err(&mut self, msg: String) {
        self.errors.push(msg);
    }

    fn add_meta_ref(&mut self, b: u64, from: u64) -> bool {
        if b >= self.nr_meta {
            self.err(format!(
                "block {b} referenced from metadata block {from} is beyond the end of the metadata space map ({} blocks)",
                self.nr_meta
            ));
            return false;
        }
        self.meta_refs.inc(b);
        true
    }

    /// Walk a tree: count one reference to `root`, and on first visit validate it, count its
    /// children and data references and collect leaf values into `out`.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        root: u64,
        info: TreeInfo,
        role: Role,
        from: u64,
        is_root: bool,
        bounds: (u64, Option<u64>),
        depth: usize,
        out: &mut Collected,
    ) -> Option<Summary> {
        if !self.add_meta_ref(root, from) {
            return None;
        }
        if let Some(s) = self.seen.get(&root) {
            let s = *s;
            if let Some(sum) = s {
                if sum.role != role {
                    self.err(format!(
                        "metadata block {root} is used as a {role:?} node and as a {:?} node",
                        sum.role
                    ));
                }
            }
            return s;
        }
        self.seen.insert(root, None);
        if depth > MAX_DEPTH {
            self.err(format!(
                "btree node {root}: tree deeper than {MAX_DEPTH} levels"
            ));
            return None;
        }
        let (g, h) = match raw::read_node(self.bm, root, info) {
            Ok(x) => x,
            Err(e) => {
                self.err(format!("{e} (referenced from block {from})"));
                return None;
            }
        };
        if h.max % 3 != 0 {
            self.err(format!(
                "btree node {root}: max_entries {} is not a multiple of 3",
                h.max
            ));
        }
        if !is_root && h.nr < h.max / 3 {
            self.err(format!(
                "btree node {root}: too few entries ({} of {}, minimum {})",
                h.nr,
                h.max,
                h.max / 3
            ));
        }
        if h.internal && h.nr == 0 {
            self.err(format!("btree node {root}: internal node without entries"));
            return None;
        }
        let (lo, hi) = bounds;
        let mut prev: Option<u64> = None;
        for i in 0..h.nr {
            let k = node::key(&g, &h, i);
            if let Some(p) = prev {
                if k <= p {
                    self.err(format!("btree node {root}: keys out of order at entry {i}"));
                }
            }
            if k < lo || hi.is_some_and(|hi| k >= hi) {
                self.err(format!(
                    "btree node {root}: key {k} outside the range its parent {from} gives it"
                ));
            }
            prev = Some(k);
        }
        let mut summary = Summary {
            height: 0,
            entries: 0,
            role,
        };
        if h.internal {
            // Read-ahead: ask for the children not seen yet, a run of consecutive blocks at a
            // time (bulk-built trees keep siblings together), before walking them one by one.
            let mut run: Option<(u64, u64)> = None;
            for i in 0..=h.nr {
                let child = (i < h.nr).then(|| node::value64(&g, &h, i));
                let wanted = child.filter(|c| !self.seen.contains_key(c));
                run = match (run, wanted) {
                    (Some((first, n)), Some(c)) if c == first + n => Some((first, n + 1)),
                    (prev, next) => {
                        if let Some((first, n)) = prev {
                            self.bm.prefetch(first, n);
                        }
                        next.map(|c| (c, 1))
                    }
                };
            }
            let mut height = None;
            for i in 0..h.nr {
                let child = node::value64(&g, &h, i);
                let clo = node::key(&g, &h, i);
                let chi = if i + 1 < h.nr {
                    Some(node::key(&g, &h, i + 1))
                } else {
                    hi
                };
                if let Some(s) =
                    self.walk(child, info, role, root, false, (clo, chi), depth + 1, out)
                {
                    match height {
                        None => height = Some(s.height),
                        Some(x) if x != s.height => {
                            self.err(format!("btree node {root}: children at different depths"))
                        }
                        _ => {}
                    }
                    summary.entries += s.entries;
                }
            }
            summary.height = height.unwrap_or(0) + 1;
        } else {
            summary.entries = h.nr as u64;
            for i in 0..h.nr {
                let k = node::key(&g, &h, i);
                let v = node::value(&g, &h, i);
                if info.values == ValueKind::DataBlockTime {
                    let (b, _) = unpack_block_time(v);
                    if b >= self.nr_data {
                        self.err(format!(
                            "btree node {root}: mapping of block {k} to data block {b} beyond the data device ({} blocks)",
                            self.nr_data
                        ));
                    } else {
                        self.data_refs.inc(b);
                    }
                } else {
                    let mut buf = [0u8; 24];
                    buf[..v.len()].copy_from_slice(v);
                    out.push((k, buf));
                }
            }
        }
        self.seen.insert(root, Some(summary));
        Some(summary)
    }

    fn walk_tree(
        &mut self,
        root: u64,
        info: TreeInfo,
        role: Role,
        from: u64,
    ) -> (Option<Summary>, Collected) {
        let mut out = Vec::new();
        let s = self.walk(root, info, role, from, true, (0, None), 0, &mut out);
        (s, out)
    }

    /// Walk a two-level mapping tree; returns (dev → mapping count) for devices first seen.
    fn walk_mappings(&mut self, root: u64, from: u64) -> BTreeMap<u64, u64> {
        let (_, tops) = self.walk_tree(root, MAPPING_TOP_TREE, Role::Mapping, from);
        let mut counts = BTreeMap::new();
        for (dev, v) in tops {
            let sub = u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8]));
            let mut unused = Vec::new();
            let s = self.walk(
                sub,
                MAPPING_BOTTOM_TREE,
                Role::Mapping,
                root,
                true,
                (0, None),
                0,
                &mut unused,
            );
            counts.insert(dev, s.map(|s| s.entries).unwrap_or(0));
        }
        counts
    }

    /// Read the counts a space map stores, for blocks `0..nr`.
    fn stored_counts(
        &mut self,
        name: &str,
        nr: u64,
        bitmaps: &[(u64, IndexEntry)],
        ref_counts: &Collected,
        ref_root: u64,
    ) -> Counts {
        let mut counts = Counts::new(nr);
        for &(i, ie) in bitmaps {
            let base = i * ENTRIES_PER_BITMAP;
            let g = match self.bm.read(ie.blocknr, BlockKind::Bitmap) {
                Ok(g) => g,
                Err(e) => {
                    self.err(format!("{name} space map bitmap {i}: {e}"));
                    continue;
                }
            };
            let end = std::cmp::min(ENTRIES_PER_BITMAP, nr.saturating_sub(base));
            let mut first_free = None;
            for e in 0..end {
                let v = bitmap_get(&g, e);
                counts.small[(base + e) as usize] = v as u8;
                if v == 0 && first_free.is_none() {
                    first_free = Some(e);
                }
            }
            if let Some(f) = first_free {
                if f < ie.none_free_before as u64 {
                    self.err(format!(
                        "{name} space map bitmap {i} (block {}): none_free_before is {} but entry {f} is free",
                        ie.blocknr, ie.none_free_before
                    ));
                }
            }
        }
        let mut in_tree = HashMap::new();
        for (b, v) in ref_counts {
            let c = le32(v, 0);
            in_tree.insert(*b, c);
            if *b >= nr {
                self.err(format!(
                    "{name} ref-count tree {ref_root}: entry for block {b} beyond the space map"
                ));
            } else if counts.small[*b as usize] != 3 {
                self.err(format!(
                    "{name} ref-count tree {ref_root}: entry for block {b} whose bitmap count is {}",
                    counts.small[*b as usize]
                ));
            } else if c < 3 {
                self.err(format!(
                    "{name} ref-count tree {ref_root}: block {b} has count {c} (must be >= 3)"
                ));
            }
        }
        for b in 0..nr {
            if counts.small[b as usize] == 3 {
                match in_tree.get(&b) {
                    Some(&t) => counts.set(b, t),
                    None => self.err(format!(
                        "{name} space map: block {b} has bitmap count 3 but no ref-count tree entry"
                    )),
                }
            }
        }
        counts
    }

    fn compare(&mut self, name: &str, stored: &Counts, expected: &Counts, root: &SmRoot) {
        let mut allocated = 0u64;
        for (b, (&ss, &es)) in stored.small.iter().zip(&expected.small).enumerate() {
            if ss == es && ss != Counts::BIG {
                allocated += u64::from(ss != 0);
                continue;
            }
            let (s, e) = (stored.get(b as u64), expected.get(b as u64));
            if s != 0 {
                allocated += 1;
            }
            if s == e {
                continue;
            }
            if e == 0 && s == 1 {
                self.err(format!(
                    "{name} block {b} is leaked (count 1, unreferenced)"
                ));
            } else {
                self.err(format!(
                    "{name} block {b}: reference count {s}, expected {e}"
                ));
            }
        }
        if allocated != root.nr_allocated {
            self.err(format!(
                "{name} space map: nr_allocated is {} but {allocated} blocks are in use",
                root.nr_allocated
            ));
        }
    }
}

/// Check a metadata image.
pub fn check<B: BlockManager>(bm: &B) -> Report {
    let mut report = Report::default();
    let sb = match raw::live_superblock(bm) {
        Ok(sb) => sb,
        Err(e) => {
            report.errors.push(format!("superblock: {e}"));
            return report;
        }
    };
    report.transaction_id = sb.trans_id;
    report.metadata_free_blocks = sb.meta_sm.nr_blocks.saturating_sub(sb.meta_sm.nr_allocated);
    if let Err(e) = sb.check_features(false) {
        report.errors.push(format!("superblock: {e}"));
    }
    if let Err(e) = sb.check_geometry(0, bm.nr_blocks()) {
        report.errors.push(format!("superblock: {e}"));
        return report;
    }
    // Every 16,320 data blocks need a bitmap in a metadata block: a larger data space map is
    // impossible (and would make this checker allocate absurd amounts of memory).
    if sb.data_sm.nr_blocks / ENTRIES_PER_BITMAP > sb.meta_sm.nr_blocks {
        report.errors.push(format!(
            "superblock: data space map of {} blocks cannot be described by {} metadata blocks",
            sb.data_sm.nr_blocks, sb.meta_sm.nr_blocks
        ));
        return report;
    }
    let mut c = Checker {
        bm,
        nr_meta: sb.meta_sm.nr_blocks,
        nr_data: sb.data_sm.nr_blocks,
        meta_refs: Counts::new(sb.meta_sm.nr_blocks),
        data_refs: Counts::new(sb.data_sm.nr_blocks),
        seen: HashMap::new(),
        errors: std::mem::take(&mut report.errors),
    };
    c.add_meta_ref(0, 0);

    // Live trees.
    let (_, details) = c.walk_tree(sb.details_root, DETAILS_TREE, Role::Details, 0);
    let counts = c.walk_mappings(sb.mapping_root, 0);
    let details: BTreeMap<u64, DeviceDetails> = details
        .iter()
        .map(|(k, v)| (*k, DeviceDetails::unpack(v)))
        .collect();
    if details.keys().ne(counts.keys()) {
        c.err(format!(
            "inconsistency between the details tree (root {}) and the mapping tree (root {}): devices {:?} vs {:?}",
            sb.details_root,
            sb.mapping_root,
            details.keys().collect::<Vec<_>>(),
            counts.keys().collect::<Vec<_>>()
        ));
    }
    for (dev, d) in &details {
        if let Some(&n) = counts.get(dev) {
            if n != d.mapped_blocks {
                c.err(format!(
                    "thin device {dev}: details say {} mapped blocks, its mapping tree has {n}",
                    d.mapped_blocks
                ));
            }
        }
    }
    report.devices = details.len();
    report.mappings = counts.values().sum();

    // Metadata snapshot.
    if sb.held_root != 0 && c.add_meta_ref(sb.held_root, 0) {
        match raw::read_superblock(bm, sb.held_root) {
            Ok(held) => {
                c.walk_tree(held.details_root, DETAILS_TREE, Role::Details, sb.held_root);
                c.walk_mappings(held.mapping_root, sb.held_root);
            }
            Err(e) => c.err(format!(
                "metadata snapshot superblock {}: {e}",
                sb.held_root
            )),
        }
    }

    // Data space map.
    let nr_data = sb.data_sm.nr_blocks;
    let (_, index) = c.walk_tree(sb.data_sm.bitmap_root, SM_INDEX_TREE, Role::Index, 0);
    let want = nr_data.div_ceil(ENTRIES_PER_BITMAP);
    let mut data_bitmaps = Vec::new();
    for (i, (k, v)) in index.iter().enumerate() {
        if *k != i as u64 {
            c.err(format!(
                "data space map index (root {}): bitmap keys are not 0..n (found {k} at position {i})",
                sb.data_sm.bitmap_root
            ));
            break;
        }
        let ie = IndexEntry::unpack(v);
        if c.add_meta_ref(ie.blocknr, sb.data_sm.bitmap_root) {
            data_bitmaps.push((*k, ie));
        }
    }
    if index.len() as u64 != want {
        c.err(format!(
            "data space map index (root {}): {} bitmaps for {nr_data} blocks, expected {want}",
            sb.data_sm.bitmap_root,
            index.len()
        ));
    }
    let (_, drefs) = c.walk_tree(sb.data_sm.ref_count_root, REF_COUNT_TREE, Role::RefCount, 0);
    let stored = c.stored_counts(
        "data",
        nr_data,
        &data_bitmaps,
        &drefs,
        sb.data_sm.ref_count_root,
    );
    let expected = std::mem::replace(&mut c.data_refs, Counts::new(0));
    c.compare("data", &stored, &expected, &sb.data_sm);

    // Metadata space map (last: every metadata reference is known by now).
    let nr_meta = sb.meta_sm.nr_blocks;
    let idx_loc = sb.meta_sm.bitmap_root;
    let mut meta_bitmaps = Vec::new();
    if c.add_meta_ref(idx_loc, 0) {
        match bm.read(idx_loc, BlockKind::Index) {
            Ok(g) => {
                let n = nr_meta.div_ceil(ENTRIES_PER_BITMAP);
                if n > MAX_METADATA_BITMAPS as u64 {
                    c.err(format!(
                        "metadata space map index {idx_loc}: {n} bitmaps needed, 255 fit"
                    ));
                } else {
                    for i in 0..n {
                        let off = INDEX_ENTRIES_OFFSET + i as usize * IndexEntry::SIZE;
                        let ie = IndexEntry::unpack(&g[off..off + IndexEntry::SIZE]);
                        if c.add_meta_ref(ie.blocknr, idx_loc) {
                            meta_bitmaps.push((i, ie));
                        }
                    }
                }
            }
            Err(e) => c.err(format!("metadata space map index: {e}")),
        }
    }
    let (_, mrefs) = c.walk_tree(sb.meta_sm.ref_count_root, REF_COUNT_TREE, Role::RefCount, 0);
    let stored = c.stored_counts(
        "metadata",
        nr_meta,
        &meta_bitmaps,
        &mrefs,
        sb.meta_sm.ref_count_root,
    );
    let expected = std::mem::replace(&mut c.meta_refs, Counts::new(0));
    c.compare("metadata", &stored, &expected, &sb.meta_sm);
    report.referenced = (0..nr_meta)
        .filter(|&b| expected.small[b as usize] != 0)
        .collect();

    report.errors = c.errors;
    report
}

/// Superblock summary line used by the CLI.
pub fn describe(sb: &Superblock) -> String {
    format!(
        "transaction {} time {} data blocks {} (block size {} sectors) metadata blocks {}",
        sb.trans_id, sb.time, sb.data_sm.nr_blocks, sb.data_block_size, sb.meta_sm.nr_blocks
    )
}
