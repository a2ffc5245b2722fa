//! Transaction manager: the context every tree and space-map operation runs in.
//!
//! It owns the block manager and both space maps and implements copy-on-write ("shadowing"):
//! a node that is part of the committed state, or shared by several parents, is never modified
//! in place; the first modification in a transaction copies it to a newly allocated block.  A
//! block may be written in place iff it was unused in the committed state and its count is 1.
//! Checking that costs three block reads (the count's bitmap, the committed index and the
//! committed bitmap); a bounded in-core [`ShadowSet`] remembers the blocks this transaction
//! already knows to qualify, so that shadowing them again (every btree insert shadows its whole
//! path) costs nothing.

use super::block::{le64, BlockKind, BlockManager};
use super::btree::{TreeInfo, ValueKind, MAPPING_BOTTOM_TREE, MAX_DEPTH};
use super::btree_node::{self as node, Header};
use super::error::{Error, Result};
use super::sm_data::DataSm;
use super::sm_metadata::MetaSm;

/// Most tree levels [`Tx::dec_tree`] follows at once: a top-level tree plus the bottom-level
/// trees its leaves point to, each at most [`MAX_DEPTH`] levels.  Deeper means a cycle or
/// corruption, reported as [`Error::Corrupt`].  The walk keeps one 16-byte frame per level on
/// an explicit stack (512 bytes), not one recursive call per level.
pub const DEC_TREE_MAX_LEVELS: usize = 2 * MAX_DEPTH;

/// Data blocks [`Tx::dec_tree`] reads from a mapping leaf at once (on the stack: keep small).
const DEC_BATCH: usize = 16;

/// log2 of the number of buckets of a [`ShadowSet`].
const SHADOW_BUCKET_BITS: u32 = 8;
/// Buckets of a [`ShadowSet`].
const SHADOW_BUCKETS: usize = 1 << SHADOW_BUCKET_BITS;
/// Blocks one bucket of a [`ShadowSet`] holds.
const SHADOW_WAYS: usize = 4;

/// Metadata blocks that this transaction allocated and still holds alone (count 1, unused in
/// the committed state): they may be modified in place without reading their count again.
///
/// A fixed budget (1,024 blocks in 4-way buckets, 8 KiB, part of the [`Tx`] and hence of the
/// heap-allocated pool; never on the stack): a block that does not fit evicts the oldest one of
/// its bucket, and a block not found here just takes the simple path (reading its count), so
/// running out of room is never an error.  Any count change of a block drops it (an increment
/// makes it shared, a decrement frees it); everything is forgotten at commit.  Block 0 (the
/// superblock) marks an empty slot.
pub struct ShadowSet {
    buckets: [[u64; SHADOW_WAYS]; SHADOW_BUCKETS],
}

impl ShadowSet {
    /// An empty set.
    pub const fn new() -> ShadowSet {
        ShadowSet {
            buckets: [[0; SHADOW_WAYS]; SHADOW_BUCKETS],
        }
    }

    fn bucket(b: u64) -> usize {
        (b.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SHADOW_BUCKET_BITS)) as usize
    }

    /// Is `b` known to be this transaction's own block?
    pub fn contains(&self, b: u64) -> bool {
        b != 0 && self.buckets[Self::bucket(b)].contains(&b)
    }

    /// Remember `b` (evicting the oldest block of its bucket when that is full).
    pub fn insert(&mut self, b: u64) {
        if b == 0 {
            return;
        }
        let s = &mut self.buckets[Self::bucket(b)];
        if !s.contains(&b) {
            s.copy_within(0..SHADOW_WAYS - 1, 1);
            s[0] = b;
        }
    }

    /// Forget `b`.
    pub fn remove(&mut self, b: u64) {
        if b == 0 {
            return;
        }
        for x in self.buckets[Self::bucket(b)].iter_mut() {
            if *x == b {
                *x = 0;
            }
        }
    }

    /// Forget everything (commit, abort, reload), in place.
    pub fn clear(&mut self) {
        for s in self.buckets.iter_mut() {
            *s = [0; SHADOW_WAYS];
        }
    }
}

impl Default for ShadowSet {
    fn default() -> Self {
        ShadowSet::new()
    }
}

/// How a read-only tree operation reads blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// [`BlockManager::read`]: may wait for I/O.
    Blocking,
    /// [`BlockManager::read_cached`]: never waits; [`Error::WouldBlock`] on a cache miss.
    CacheOnly,
}

/// One node being released by [`Tx::dec_tree`]: its entries before `next` are done.
#[derive(Clone, Copy)]
struct DecFrame {
    loc: u64,
    next: u32,
    /// A bottom-level mapping tree reached through a top-level leaf.
    bottom: bool,
}

/// Transaction context: block manager plus both space maps.
pub struct Tx<B: BlockManager> {
    /// The platform's block manager.
    pub bm: B,
    /// Metadata space map.
    pub msm: MetaSm,
    /// Data space map.
    pub dsm: DataSm,
    /// Blocks this transaction may modify in place without looking at their counts.
    pub shadows: ShadowSet,
    /// Take the simple per-entry paths only (no [`ShadowSet`], no batched count changes, no
    /// cached device roots): the reference behaviour the batched paths are tested against.
    pub simple: bool,
}

impl<B: BlockManager> Tx<B> {
    /// Range-checked validated read; `from` names the block the reference came from.
    pub fn read(&self, loc: u64, kind: BlockKind, from: u64) -> Result<B::Read> {
        self.check_loc(loc, from)?;
        self.bm.read(loc, kind)
    }

    /// [`Tx::read`], or with [`ReadMode::CacheOnly`] a read that never waits for I/O.
    pub fn read_with(
        &self,
        loc: u64,
        kind: BlockKind,
        from: u64,
        mode: ReadMode,
    ) -> Result<B::Read> {
        self.check_loc(loc, from)?;
        match mode {
            ReadMode::Blocking => self.bm.read(loc, kind),
            ReadMode::CacheOnly => self.bm.read_cached(loc, kind),
        }
    }

    /// Range-checked write access (caller knows the block may be modified in place).
    pub fn write(&self, loc: u64, kind: BlockKind, from: u64) -> Result<B::Write> {
        self.check_loc(loc, from)?;
        self.bm.write(loc, kind)
    }

    fn check_loc(&self, loc: u64, from: u64) -> Result<()> {
        if loc >= self.msm.nr_blocks || loc >= self.bm.nr_blocks() {
            return Err(Error::OutOfBounds {
                block: loc,
                referenced_from: from,
            });
        }
        Ok(())
    }

    /// Read and validate a btree node.
    pub fn read_node(&self, loc: u64, info: TreeInfo, from: u64) -> Result<(B::Read, Header)> {
        self.read_node_with(loc, info, from, ReadMode::Blocking)
    }

    /// [`Tx::read_node`] with a choice of [`ReadMode`].
    pub fn read_node_with(
        &self,
        loc: u64,
        info: TreeInfo,
        from: u64,
        mode: ReadMode,
    ) -> Result<(B::Read, Header)> {
        let g = self.read_with(loc, BlockKind::Node, from, mode)?;
        let h = node::check(loc, &g, info.value_size)?;
        Ok((g, h))
    }

    /// Allocate and initialise an empty node.
    pub fn new_node(
        &mut self,
        internal: bool,
        value_size: usize,
    ) -> Result<(u64, B::Write, Header)> {
        let loc = self.meta_alloc()?;
        let mut g = self.bm.new_block(loc, BlockKind::Node)?;
        let h = node::init(&mut g, internal, value_size);
        self.remember_shadow(loc);
        Ok((loc, g, h))
    }

    /// An empty tree: one empty leaf.
    pub fn btree_empty(&mut self, info: TreeInfo) -> Result<u64> {
        let (loc, _g, _h) = self.new_node(false, info.value_size)?;
        Ok(loc)
    }

    /// Make node `loc` writable in this transaction.  Returns its (possibly new) location, a
    /// write guard and the header.  When the old node was shared, everything it points to gains
    /// a reference (the copy is a new parent); the old node loses the reference the caller's
    /// pointer held.
    pub fn shadow(
        &mut self,
        loc: u64,
        info: TreeInfo,
        from: u64,
    ) -> Result<(u64, B::Write, Header)> {
        self.check_loc(loc, from)?;
        if !self.simple && self.shadows.contains(loc) {
            let g = self.bm.write(loc, BlockKind::Node)?;
            let h = node::check(loc, &g, info.value_size)?;
            return Ok((loc, g, h));
        }
        let count = self.meta_count_small(loc)?;
        if count == 0 {
            return Err(Error::Corrupt {
                block: loc,
                what: "btree node in use but its reference count is 0",
            });
        }
        if count == 1 && !self.meta_committed_in_use(loc)? {
            let g = self.bm.write(loc, BlockKind::Node)?;
            let h = node::check(loc, &g, info.value_size)?;
            self.remember_shadow(loc);
            return Ok((loc, g, h));
        }
        let new = self.meta_alloc()?;
        let (mut g, h) = {
            let (old, h) = self.read_node(loc, info, from)?;
            let mut g = self.bm.new_block(new, BlockKind::Node)?;
            g.copy_from_slice(&old[..]);
            (g, h)
        };
        if count > 1 {
            self.inc_children(&mut g, &h, info)?;
        }
        self.meta_dec(loc)?;
        self.remember_shadow(new);
        Ok((new, g, h))
    }

    /// Note that `b` (allocated in this transaction, count 1) may be modified in place.
    pub(crate) fn remember_shadow(&mut self, b: u64) {
        if !self.simple {
            self.shadows.insert(b);
        }
    }

    /// Add a reference to everything node `g` points to.
    fn inc_children(&mut self, g: &mut B::Write, h: &Header, info: TreeInfo) -> Result<()> {
        if !h.internal && info.values == ValueKind::DataBlockTime && !self.simple {
            // A mapping leaf: its data blocks a batch at a time, in runs of consecutive blocks
            // (in leaf order, as the per-entry path would take them).
            let mut i = 0;
            while i < h.nr {
                let mut batch = [0u64; DEC_BATCH];
                let n = core::cmp::min(DEC_BATCH, h.nr - i);
                for (k, b) in batch.iter_mut().enumerate().take(n) {
                    *b = super::thin::unpack_block_time(node::value(g, h, i + k)).0;
                }
                for_each_run(&batch[..n], |first, len| self.data_inc_run(first, len))?;
                i += n;
            }
            return Ok(());
        }
        for i in 0..h.nr {
            if h.internal {
                let child = node::value64(g, h, i);
                self.meta_inc(child)?;
            } else {
                let mut v = [0u8; node::MAX_VALUE_SIZE];
                v[..h.value_size].copy_from_slice(node::value(g, h, i));
                self.value_inc(info.values, &v)?;
            }
        }
        Ok(())
    }

    /// Add a reference held by a leaf value.
    pub fn value_inc(&mut self, kind: ValueKind, v: &[u8]) -> Result<()> {
        match kind {
            ValueKind::Plain => Ok(()),
            ValueKind::DataBlockTime => self.data_inc(super::thin::unpack_block_time(v).0),
            ValueKind::SubtreeRoot => self.meta_inc(le64(v, 0)),
        }
    }

    /// Drop a reference held by a leaf value (may free a whole bottom-level tree).
    pub fn value_dec(&mut self, kind: ValueKind, v: &[u8], depth: usize) -> Result<()> {
        match kind {
            ValueKind::Plain => Ok(()),
            ValueKind::DataBlockTime => self.data_dec(super::thin::unpack_block_time(v).0),
            ValueKind::SubtreeRoot => self.dec_tree(le64(v, 0), MAPPING_BOTTOM_TREE, depth + 1),
        }
    }

    /// Drop one reference to the tree rooted at `root`; when the last reference goes, release
    /// everything it points to (for a top-level mapping tree, the bottom-level trees too).  A
    /// node's own count is dropped last, so it cannot be reused while its entries are read.
    ///
    /// Iterative, depth first in key order (the order the recursive definition gives), on a
    /// fixed stack of [`DEC_TREE_MAX_LEVELS`] frames less `depth` (levels the caller is
    /// already nested in): kernel stacks are 16 KiB.  A deeper tree is corrupt (a cycle).
    pub fn dec_tree(&mut self, root: u64, info: TreeInfo, depth: usize) -> Result<()> {
        let mut stack = [DecFrame {
            loc: 0,
            next: 0,
            bottom: false,
        }; DEC_TREE_MAX_LEVELS];
        let cap = DEC_TREE_MAX_LEVELS.saturating_sub(depth);
        let mut len = 0usize;
        self.dec_enter(root, false, &mut stack[..cap], &mut len)?;
        while len > 0 {
            let f = stack[len - 1];
            let tinfo = if f.bottom { MAPPING_BOTTOM_TREE } else { info };
            let mut v = [0u8; node::MAX_VALUE_SIZE];
            // Data blocks of a mapping leaf are taken a batch at a time (one node read each) and
            // released in runs of consecutive blocks.
            let mut batch = [0u64; DEC_BATCH];
            let mut batched = 0usize;
            let (internal, nr) = {
                let (g, h) = self.read_node(f.loc, tinfo, f.loc)?;
                let i = f.next as usize;
                if i < h.nr {
                    if !h.internal && matches!(tinfo.values, ValueKind::DataBlockTime) {
                        for k in i..core::cmp::min(h.nr, i + DEC_BATCH) {
                            batch[batched] =
                                super::thin::unpack_block_time(node::value(&g, &h, k)).0;
                            batched += 1;
                        }
                    } else {
                        v[..h.value_size].copy_from_slice(node::value(&g, &h, i));
                    }
                }
                (h.internal, h.nr)
            };
            if f.next as usize >= nr {
                // Every entry released: now the node itself.
                len -= 1;
                self.meta_dec(f.loc)?;
                continue;
            }
            if batched > 0 {
                stack[len - 1].next = f.next + batched as u32;
                for_each_run(&batch[..batched], |first, len| {
                    self.data_dec_run(first, len)
                })?;
                continue;
            }
            stack[len - 1].next = f.next + 1;
            if internal {
                self.dec_enter(le64(&v, 0), f.bottom, &mut stack[..cap], &mut len)?;
                continue;
            }
            match tinfo.values {
                // Nothing referenced: the rest of the leaf needs no visit either.
                ValueKind::Plain => stack[len - 1].next = nr as u32,
                ValueKind::DataBlockTime => {
                    self.data_dec(super::thin::unpack_block_time(&v).0)?;
                }
                ValueKind::SubtreeRoot => {
                    self.dec_enter(le64(&v, 0), true, &mut stack[..cap], &mut len)?;
                }
            }
        }
        Ok(())
    }

    /// Drop a reference to node `loc`: if others remain, that is all; if it was the last one,
    /// push a frame so that [`Tx::dec_tree`] releases the node's entries, then the node.
    fn dec_enter(
        &mut self,
        loc: u64,
        bottom: bool,
        stack: &mut [DecFrame],
        len: &mut usize,
    ) -> Result<()> {
        let count = self.meta_count_small(loc)?;
        if count == 0 {
            return Err(Error::Corrupt {
                block: loc,
                what: "btree node in use but its reference count is 0",
            });
        }
        if count > 1 {
            return self.meta_dec(loc);
        }
        let slot = stack.get_mut(*len).ok_or(Error::Corrupt {
            block: loc,
            what: "btree deeper than any valid tree (cycle?)",
        })?;
        *slot = DecFrame {
            loc,
            next: 0,
            bottom,
        };
        *len += 1;
        Ok(())
    }

    /// Begin the next transaction after a commit.
    pub(crate) fn end_transaction(&mut self, index_loc: u64) {
        self.msm.end_transaction(index_loc);
        self.dsm.end_transaction();
        self.shadows.clear();
    }
}

/// Calls `f(first, len)` for each run of consecutive block numbers in `blocks`, in order.
fn for_each_run(blocks: &[u64], mut f: impl FnMut(u64, u64) -> Result<()>) -> Result<()> {
    let mut k = 0;
    while k < blocks.len() {
        let mut run = 1;
        while k + run < blocks.len() && blocks[k + run] == blocks[k] + run as u64 {
            run += 1;
        }
        f(blocks[k], run as u64)?;
        k += run;
    }
    Ok(())
}
