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

use super::block::{le64, Block, BlockKind, BlockManager, ShadowBucket, SHADOW_WAYS};
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

/// Low bits of a [`ShadowSet`] slot holding the block number; the bits above hold the
/// generation (transaction) that put it there.
const SHADOW_BLOCK_BITS: u32 = 40;
/// Generations before the slots are zeroed again (24 bits above the block number).
const SHADOW_GENERATIONS: u64 = 1 << (64 - SHADOW_BLOCK_BITS);

/// Metadata blocks that this transaction allocated and still holds alone (count 1, unused in
/// the committed state): they may be modified in place without reading their count again.
///
/// The slots live in memory the platform sized once, at open
/// ([`BlockManager::shadow_buckets`]): buckets of [`SHADOW_WAYS`] blocks, a block hashed to one
/// bucket.  A block that does not fit evicts the oldest one of its bucket, and a block not
/// found here just takes the simple path (reading its count), so running out of room (or
/// having no memory at all) is never an error.  Any count change of a block drops it (an
/// increment makes it shared, a decrement frees it).
///
/// A slot holds `generation << 40 | block`: forgetting everything at a commit is one
/// increment of the generation, not a pass over up to 2 MiB; slots of older generations count
/// as empty.  The slots are zeroed when the pool is loaded ([`ShadowSet::reset`]) and when the
/// 24-bit generation wraps, so no slot can ever match a block it was not given for in the
/// running transaction, which is what makes writing in place safe.
pub struct ShadowSet {
    /// 0 until [`ShadowSet::reset`] zeroed the slots: nothing is found or remembered.
    generation: u64,
}

impl ShadowSet {
    /// A set that knows nothing and remembers nothing until [`ShadowSet::reset`].
    pub const fn new() -> ShadowSet {
        ShadowSet { generation: 0 }
    }

    fn slot_value(&self, b: u64) -> Option<u64> {
        // Block 0 is the superblock, never shadowed; zero is also an empty slot.
        (self.generation != 0 && b != 0 && b < 1 << SHADOW_BLOCK_BITS)
            .then_some((self.generation << SHADOW_BLOCK_BITS) | b)
    }

    /// `b`'s slot value in this generation and its bucket (`None`: nothing to find or keep).
    fn locate<'a>(
        &self,
        buckets: &'a mut [ShadowBucket],
        b: u64,
    ) -> Option<(u64, &'a mut ShadowBucket)> {
        let v = self.slot_value(b)?;
        // Multiplicative hash onto the largest power of two of buckets available.
        let bits = buckets.len().checked_ilog2()?;
        let h = b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let i = h.checked_shr(64 - bits).unwrap_or(0);
        Some((v, buckets.get_mut(usize::try_from(i).ok()?)?))
    }

    /// Is `b` known to be this transaction's own block?
    pub fn contains(&self, buckets: &mut [ShadowBucket], b: u64) -> bool {
        self.locate(buckets, b)
            .is_some_and(|(v, bucket)| bucket.contains(&v))
    }

    /// Remember `b`: in an empty or stale slot of its bucket, else in place of the oldest.
    pub fn insert(&self, buckets: &mut [ShadowBucket], b: u64) {
        let Some((v, bucket)) = self.locate(buckets, b) else {
            return;
        };
        if bucket.contains(&v) {
            return;
        }
        let live = |x: u64| x != 0 && x >> SHADOW_BLOCK_BITS == self.generation;
        match bucket.iter_mut().find(|x| !live(**x)) {
            Some(free) => *free = v,
            None => {
                bucket.copy_within(0..SHADOW_WAYS - 1, 1);
                bucket[0] = v;
            }
        }
    }

    /// Forget `b`.
    pub fn remove(&self, buckets: &mut [ShadowBucket], b: u64) {
        let Some((v, bucket)) = self.locate(buckets, b) else {
            return;
        };
        for x in bucket.iter_mut() {
            if *x == v {
                *x = 0;
            }
        }
    }

    /// Forget everything (commit, abort): the next generation.
    pub fn clear(&mut self, buckets: &mut [ShadowBucket]) {
        if self.generation == 0 || self.generation + 1 >= SHADOW_GENERATIONS {
            self.reset(buckets);
        } else {
            self.generation += 1;
        }
    }

    /// Zero every slot and start at generation 1: when a pool is loaded, since the memory
    /// may hold slots of an earlier pool on the same block manager.
    pub fn reset(&mut self, buckets: &mut [ShadowBucket]) {
        buckets.fill([0; SHADOW_WAYS]);
        self.generation = 1;
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
        if self.shadow_known(loc) {
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

    /// Is `b` known to be this transaction's own block (see [`ShadowSet`])?
    pub(crate) fn shadow_known(&mut self, b: u64) -> bool {
        !self.simple && self.shadows.contains(self.bm.shadow_buckets(), b)
    }

    /// Note that `b` (allocated in this transaction, count 1) may be modified in place.
    pub(crate) fn remember_shadow(&mut self, b: u64) {
        if !self.simple {
            self.shadows.insert(self.bm.shadow_buckets(), b);
        }
    }

    /// `b` is shared or freed now: no longer this transaction's own block.
    pub(crate) fn forget_shadow(&mut self, b: u64) {
        self.shadows.remove(self.bm.shadow_buckets(), b);
    }

    /// Forget every block of the set (commit, abort).
    pub(crate) fn forget_all_shadows(&mut self) {
        self.shadows.clear(self.bm.shadow_buckets());
    }

    /// Zero the set's memory (the pool is being loaded).
    pub(crate) fn reset_shadows(&mut self) {
        self.shadows.reset(self.bm.shadow_buckets());
    }

    /// Add a reference to everything node `g` points to.
    fn inc_children(&mut self, g: &mut B::Write, h: &Header, info: TreeInfo) -> Result<()> {
        if !h.internal && info.values == ValueKind::DataBlockTime && !self.simple {
            // A mapping leaf: its data blocks in runs of consecutive blocks (in leaf order, as
            // the per-entry path would take them).
            let data_block =
                |g: &Block, h: &Header, i| super::thin::unpack_block_time(node::value(g, h, i)).0;
            return for_each_child_run(g, h, data_block, |first, len| {
                self.data_inc_run(first, len)
            });
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
                if i == 0 && (h.internal || matches!(tinfo.values, ValueKind::SubtreeRoot)) {
                    // The node's children are read next, one after another: ask for all of
                    // them now, as dm-btree's delete does.
                    self.prefetch_children(&g, &h);
                }
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

    /// Read-ahead hint for the blocks an internal node (or a top-level leaf) points to, in
    /// runs of consecutive blocks.  Not inlined: its batch would add to `dec_tree`'s frame.
    #[inline(never)]
    fn prefetch_children(&self, g: &Block, h: &Header) {
        let _ = for_each_child_run(g, h, node::value64, |first, len| {
            self.bm.prefetch(first, len);
            Ok(())
        });
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
        self.forget_all_shadows();
    }
}

/// Calls `f(first, len)` for each run of consecutive block numbers among the entries of node
/// `g` (`block(g, h, i)`: entry `i`'s block), in entry order, [`DEC_BATCH`] entries at a time
/// (the batch is on the stack).
fn for_each_child_run(
    g: &Block,
    h: &Header,
    block: impl Fn(&Block, &Header, usize) -> u64,
    mut f: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let mut i = 0;
    while i < h.nr {
        let mut batch = [0u64; DEC_BATCH];
        let n = core::cmp::min(DEC_BATCH, h.nr - i);
        for (k, b) in batch.iter_mut().enumerate().take(n) {
            *b = block(g, h, i + k);
        }
        for_each_run(&batch[..n], &mut f)?;
        i += n;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_set_finds_only_what_this_generation_remembered() {
        let mut buckets = [[0u64; SHADOW_WAYS]; 8];
        let mut set = ShadowSet::new();
        // Not reset yet: remembers nothing.
        set.insert(&mut buckets, 7);
        assert!(!set.contains(&mut buckets, 7));
        set.reset(&mut buckets);
        for b in 1..=20 {
            set.insert(&mut buckets, b);
        }
        // 32 slots for 20 blocks: most stay; whatever is found was inserted.
        let found = (1..=20).filter(|&b| set.contains(&mut buckets, b)).count();
        assert!(found >= 12, "{found}");
        assert!(!(21..200).any(|b| set.contains(&mut buckets, b)));
        assert!(!set.contains(&mut buckets, 0), "block 0 is an empty slot");
        set.remove(&mut buckets, 3);
        assert!(!set.contains(&mut buckets, 3));
        // A commit forgets everything at once, and old slots make room for new blocks.
        set.clear(&mut buckets);
        assert!(!(0..200).any(|b| set.contains(&mut buckets, b)));
        for b in 100..132 {
            set.insert(&mut buckets, b);
        }
        let found = (100..132)
            .filter(|&b| set.contains(&mut buckets, b))
            .count();
        assert!(found >= 16, "{found}");
        assert!(!(1..=20).any(|b| set.contains(&mut buckets, b)));
    }

    #[test]
    fn shadow_set_zeroes_its_slots_when_the_generation_wraps() {
        let mut buckets = [[0u64; SHADOW_WAYS]; 4];
        let mut set = ShadowSet::new();
        set.reset(&mut buckets);
        set.generation = SHADOW_GENERATIONS - 2;
        set.insert(&mut buckets, 5);
        assert!(set.contains(&mut buckets, 5));
        set.clear(&mut buckets);
        set.insert(&mut buckets, 6);
        set.clear(&mut buckets);
        assert_eq!(set.generation, 1);
        assert_eq!(buckets, [[0; SHADOW_WAYS]; 4]);
        assert!(!set.contains(&mut buckets, 5) && !set.contains(&mut buckets, 6));
    }

    #[test]
    fn shadow_set_without_memory_or_out_of_range_blocks_remembers_nothing() {
        let mut none: [ShadowBucket; 0] = [];
        let mut set = ShadowSet::new();
        set.reset(&mut none);
        set.insert(&mut none, 9);
        assert!(!set.contains(&mut none, 9));
        let mut one = [[0u64; SHADOW_WAYS]; 1];
        set.insert(&mut one, 9);
        assert!(set.contains(&mut one, 9), "a single bucket works");
        set.insert(&mut one, 1 << SHADOW_BLOCK_BITS);
        assert!(!set.contains(&mut one, 1 << SHADOW_BLOCK_BITS));
    }

    #[test]
    fn suggested_budget_is_a_bounded_power_of_two() {
        use super::super::block::shadow_buckets_for;
        assert_eq!(shadow_buckets_for(0), 256);
        assert_eq!(shadow_buckets_for(512 * 1024), 32_768);
        assert_eq!(shadow_buckets_for(1 << 40), 65_536);
        assert!(shadow_buckets_for(100_000).is_power_of_two());
    }
}
