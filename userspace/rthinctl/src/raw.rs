//! Direct reads of metadata structures for the offline tools (no transaction needed).

use rthin_metadata::btree::TreeInfo;
use rthin_metadata::btree_node::{self as node, Header};
use rthin_metadata::superblock::{Superblock, SUPERBLOCK_LOCATION};
use rthin_metadata::{BlockKind, BlockManager, Result};

/// Read and validate one btree node.
pub fn read_node<B: BlockManager>(bm: &B, loc: u64, info: TreeInfo) -> Result<(B::Read, Header)> {
    let g = bm.read(loc, BlockKind::Node)?;
    let h = node::check(loc, &g, info.value_size)?;
    Ok((g, h))
}

/// Read and validate a superblock (block 0 or a metadata snapshot copy).
pub fn read_superblock<B: BlockManager>(bm: &B, loc: u64) -> Result<Superblock> {
    let g = bm.read(loc, BlockKind::Superblock)?;
    Superblock::check_magic(&g)?;
    Ok(Superblock::unpack(&g))
}

/// Read the live superblock.
pub fn live_superblock<B: BlockManager>(bm: &B) -> Result<Superblock> {
    read_superblock(bm, SUPERBLOCK_LOCATION)
}
