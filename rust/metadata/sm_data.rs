//! The data space map: reference counts of the pool's data blocks.
//!
//! Bitmaps are found through an index btree (key = bitmap number, value = `disk_index_entry`);
//! bitmaps, index tree and ref-count tree all live in metadata blocks and are counted by the
//! metadata space map.  Unlike the metadata space map there is no recursion: every change here
//! only allocates or frees *metadata* blocks.

use super::block::le32;
use super::block::{BlockKind, BlockManager};
use super::btree::{REF_COUNT_TREE, SM_INDEX_TREE};
use super::error::{Error, Result, Space};
use super::sm_common::{
    bitmap_get, bitmap_set, find_free_pair, CountOp, IndexEntry, SmId, ENTRIES_PER_BITMAP,
};
use super::tm::Tx;

/// Blocks [`Tx::data_inc_run`] changes at once (2 bits each in a `u64`; keys on the stack).
const INC_CHUNK: usize = 32;

/// Largest data device: mapping values hold the data block in 40 bits.
pub const MAX_DATA_BLOCKS: u64 = 1 << 40;

/// Slots of an [`IndexCache`] (dm-thin's index-entry cache has as many).
pub const INDEX_CACHE_SLOTS: usize = 16;

/// Index entries of the data space map changed in this transaction but not yet written to the
/// index tree, as dm-thin's index-entry cache keeps them: runs of count changes in a few
/// bitmaps (a thin freed whole, a leaf copied, blocks allocated from the cursor's bitmap) then
/// cost one index-tree insert per bitmap and commit instead of one per change.
///
/// Direct mapped: bitmap `i` may only sit in slot `i % INDEX_CACHE_SLOTS`, so a lookup is one
/// comparison; an entry is written to the tree when another bitmap needs its slot, and all of
/// them, in bitmap order, before a commit stores the tree's root.  A fixed 512 bytes inside the
/// pool: nothing to allocate, nothing to run out of.
#[derive(Clone, Copy, Debug, Default)]
pub struct IndexCache {
    slots: [Option<(u64, IndexEntry)>; INDEX_CACHE_SLOTS],
}

impl IndexCache {
    fn slot(i: u64) -> usize {
        (i % INDEX_CACHE_SLOTS as u64) as usize
    }

    /// The pending entry of bitmap `i`, if any.
    pub fn get(&self, i: u64) -> Option<IndexEntry> {
        match self.slots[Self::slot(i)] {
            Some((b, ie)) if b == i => Some(ie),
            _ => None,
        }
    }

    /// Keeps `ie` as bitmap `i`'s entry; returns the entry of another bitmap it displaces (to
    /// be written to the tree).
    pub fn put(&mut self, i: u64, ie: IndexEntry) -> Option<(u64, IndexEntry)> {
        let slot = &mut self.slots[Self::slot(i)];
        let displaced = slot.filter(|&(b, _)| b != i);
        *slot = Some((i, ie));
        displaced
    }

    /// No entry pending.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Removes and returns the pending entry with the lowest bitmap number.
    pub fn take_lowest(&mut self) -> Option<(u64, IndexEntry)> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.is_some())
            .min_by_key(|s| s.map_or(u64::MAX, |(b, _)| b))?;
        slot.take()
    }
}

/// In-core state of the data space map.
#[derive(Clone, Copy, Debug, Default)]
pub struct DataSm {
    /// Blocks covered.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Index btree root.
    pub index_root: u64,
    /// Ref-count btree root.
    pub ref_root: u64,
    /// Index root of the committed state.
    pub committed_index_root: u64,
    /// Blocks covered in the committed state.
    pub committed_nr_blocks: u64,
    /// Allocation cursor: moves forward, kept across commits, wraps at the end.
    pub cursor: u64,
    /// Last index entry looked up in the current index tree: (root, bitmap, entry).  Saves a
    /// btree walk per count change in the common case of consecutive changes in one bitmap.
    pub(crate) last_index: Option<(u64, u64, IndexEntry)>,
    /// Index entries changed in this transaction but not yet written to the index tree.
    pub(crate) pending_index: IndexCache,
}

impl DataSm {
    /// Start a new transaction.
    pub(crate) fn end_transaction(&mut self) {
        debug_assert!(
            self.pending_index.is_empty(),
            "commit without the pending index entry"
        );
        self.committed_index_root = self.index_root;
        self.committed_nr_blocks = self.nr_blocks;
        // The cursor stays: the blocks before it were in use a moment ago, so searching from
        // it finds free blocks sooner (the allocation wraps to the start when it reaches the
        // end).
        self.last_index = None;
    }
}

impl<B: BlockManager> Tx<B> {
    /// Index entry of bitmap `i` in the current state (a pending change included).
    pub(crate) fn data_index_get(&mut self, i: u64) -> Result<IndexEntry> {
        if let Some(ie) = self.dsm.pending_index.get(i) {
            return Ok(ie);
        }
        self.data_index_lookup(self.dsm.index_root, i)
    }

    /// Index entry of bitmap `i` in the committed state.
    pub(crate) fn data_index_get_committed(&mut self, i: u64) -> Result<IndexEntry> {
        self.data_index_lookup(self.dsm.committed_index_root, i)
    }

    fn data_index_lookup(&mut self, root: u64, i: u64) -> Result<IndexEntry> {
        if let Some((r, li, ie)) = self.dsm.last_index {
            if r == root && li == i {
                return Ok(ie);
            }
        }
        match self.btree_lookup(root, SM_INDEX_TREE, i)? {
            Some(v) => {
                let ie = IndexEntry::unpack(&v);
                ie.validate(root, self.msm.nr_blocks)?;
                self.dsm.last_index = Some((root, i, ie));
                Ok(ie)
            }
            None => Err(Error::Corrupt {
                block: root,
                what: "data space map index has no entry for a bitmap",
            }),
        }
    }

    /// Sets the current index entry of bitmap `i` (kept pending, see [`IndexCache`]).
    pub(crate) fn data_index_set(&mut self, i: u64, ie: IndexEntry) -> Result<()> {
        if let Some((other, other_ie)) = self.dsm.pending_index.put(i, ie) {
            self.data_index_write(other, other_ie)?;
        }
        Ok(())
    }

    /// Writes the pending index entries into the index tree, in bitmap order: before a commit
    /// stores its root.
    pub(crate) fn data_index_flush(&mut self) -> Result<()> {
        while let Some((i, ie)) = self.dsm.pending_index.take_lowest() {
            self.data_index_write(i, ie)?;
        }
        Ok(())
    }

    fn data_index_write(&mut self, i: u64, ie: IndexEntry) -> Result<()> {
        self.dsm.last_index = None;
        let (root, _) = self.btree_insert(self.dsm.index_root, SM_INDEX_TREE, i, &ie.to_bytes())?;
        self.dsm.index_root = root;
        self.dsm.last_index = Some((root, i, ie));
        Ok(())
    }

    /// Reference count of data block `b`.
    pub fn data_count(&mut self, b: u64) -> Result<u32> {
        self.sm_get(SmId::Data, b)
    }

    /// Increment a data block's count.
    pub fn data_inc(&mut self, b: u64) -> Result<()> {
        self.sm_change(SmId::Data, b, CountOp::Inc).map(|_| ())
    }

    /// Decrement a data block's count.
    pub fn data_dec(&mut self, b: u64) -> Result<()> {
        self.sm_change(SmId::Data, b, CountOp::Dec).map(|_| ())
    }

    /// Decrements the counts of data blocks `first..first + n`: the same as `n` calls of
    /// [`Tx::data_dec`] (deleting a thin frees long runs of blocks; dm-thin decrements runs
    /// likewise), batched as [`Tx::data_change_run`] says.
    pub fn data_dec_run(&mut self, first: u64, n: u64) -> Result<()> {
        self.data_change_run(first, n, CountOp::Dec)
    }

    /// Applies `op` to the counts of data blocks `first..first + n`: per bitmap, one bitmap
    /// write and at most one index update when every count there is one the bitmap holds both
    /// before and after (0 or 1 for an increment, 1 or 2 for a decrement); any other count
    /// (3 and more live in the ref-count tree; a decrement of 0 is corruption) sends that
    /// bitmap's blocks one by one through [`Tx::sm_change`].
    pub(crate) fn data_change_run(&mut self, first: u64, n: u64, op: CountOp) -> Result<()> {
        self.data_run_pieces(first, n, ENTRIES_PER_BITMAP, |tx, begin, end| {
            tx.data_change_in_bitmap(begin, end, op)
        })
    }

    /// Calls `f(self, begin, end)` for consecutive pieces of data blocks `first..first + n`,
    /// each within one bitmap and at most `max` blocks long, after checking that the whole run
    /// lies in the space map (so a bad run changes nothing).
    fn data_run_pieces(
        &mut self,
        first: u64,
        n: u64,
        max: u64,
        mut f: impl FnMut(&mut Self, u64, u64) -> Result<()>,
    ) -> Result<()> {
        let end = first
            .checked_add(n)
            .filter(|&end| end <= self.dsm.nr_blocks)
            .ok_or(Error::Invalid(
                "count change beyond the end of the space map",
            ))?;
        let mut b = first;
        while b < end {
            let bitmap_end = (b / ENTRIES_PER_BITMAP + 1) * ENTRIES_PER_BITMAP;
            let stop = end.min(bitmap_end).min(b.saturating_add(max));
            f(self, b, stop)?;
            b = stop;
        }
        Ok(())
    }

    /// Increments the counts of data blocks `first..first + n`: the same as `n` calls of
    /// [`Tx::data_inc`] (copying a shared mapping leaf adds a reference to each block it maps),
    /// but for every chunk of up to 32 blocks in one bitmap with one bitmap write, one index
    /// update, and one ref-count tree descent per tree leaf for the counts of 3 or more.
    pub fn data_inc_run(&mut self, first: u64, n: u64) -> Result<()> {
        self.data_run_pieces(first, n, INC_CHUNK as u64, |tx, begin, end| {
            tx.data_inc_chunk(begin, end)
        })
    }

    /// [`Tx::data_inc_run`] of at most [`INC_CHUNK`] blocks that share a bitmap.  In the order
    /// of [`Tx::sm_change`]: the ref-count tree first, then the bitmap and its index entry.
    fn data_inc_chunk(&mut self, begin: u64, end: u64) -> Result<()> {
        let i = begin / ENTRIES_PER_BITMAP;
        let n = (end - begin) as usize;
        let ie = self.data_index_get(i)?;
        // 2-bit counts, entry k at bits 2k.
        let mut counts = 0u64;
        {
            let bm = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
            for k in 0..n {
                let e = (begin + k as u64) % ENTRIES_PER_BITMAP;
                counts |= u64::from(bitmap_get(&bm, e)) << (2 * k);
            }
        }
        let count = |k: usize| ((counts >> (2 * k)) & 3) as u32;
        // Counts going to 3 or more live in the ref-count tree: 2 -> 3 is a new entry, 3 means
        // "see the tree" and the tree's count goes up.
        let mut keys = [0u64; INC_CHUNK];
        let mut was3 = 0u32;
        let mut nk = 0;
        for k in 0..n {
            if count(k) >= 2 {
                keys[nk] = begin + k as u64;
                if count(k) == 3 {
                    was3 |= 1 << nk;
                }
                nk += 1;
            }
        }
        let bitmap = ie.blocknr;
        let mut done = 0;
        while done < nk {
            let base = done;
            let mut f = |j: usize, old: Option<&[u8]>, new: &mut [u8]| -> Result<()> {
                let c = if was3 & (1 << (base + j)) == 0 {
                    3
                } else {
                    let old = old.ok_or(Error::Corrupt {
                        block: bitmap,
                        what: "bitmap count 3 has no ref-count tree entry",
                    })?;
                    let o = le32(old, 0);
                    if o < 3 {
                        return Err(Error::Corrupt {
                            block: bitmap,
                            what: "ref-count tree holds a count below 3",
                        });
                    }
                    o.checked_add(1)
                        .ok_or(Error::Limit("reference count overflow"))?
                };
                new[..4].copy_from_slice(&c.to_le_bytes());
                Ok(())
            };
            let root = self.dsm.ref_root;
            let (nr, did) = self.btree_update_run(root, REF_COUNT_TREE, &keys[done..nk], &mut f)?;
            self.dsm.ref_root = nr;
            done += did;
        }
        if (0..n).all(|k| count(k) == 3) {
            return Ok(());
        }
        let mut ie = self.data_index_get(i)?;
        let before = ie;
        let loc = self.sm_bitmap_for_write(SmId::Data, i, &mut ie)?;
        let mut allocated = 0u64;
        {
            let mut bm = self.write(loc, BlockKind::Bitmap, 0)?;
            for k in 0..n {
                let v = count(k);
                if v == 3 {
                    continue;
                }
                let e = (begin + k as u64) % ENTRIES_PER_BITMAP;
                bitmap_set(&mut bm, e, v + 1);
                if v == 0 {
                    let e32 = e as u32;
                    ie.nr_free = ie.nr_free.saturating_sub(1);
                    if ie.none_free_before == e32 {
                        ie.none_free_before = e32 + 1;
                    }
                    allocated += 1;
                }
            }
        }
        self.dsm.nr_allocated = self.dsm.nr_allocated.saturating_add(allocated);
        if ie != before {
            self.data_index_set(i, ie)?;
        }
        Ok(())
    }

    /// [`Tx::data_change_run`] within one bitmap: `begin..end` share a bitmap.
    fn data_change_in_bitmap(&mut self, begin: u64, end: u64, op: CountOp) -> Result<()> {
        let i = begin / ENTRIES_PER_BITMAP;
        let mut ie = self.data_index_get(i)?;
        let bitmap_only = |v: u32| match op {
            CountOp::Inc => v <= 1,
            CountOp::Dec => v == 1 || v == 2,
        };
        let simple = {
            let bm = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
            (begin..end).all(|b| bitmap_only(bitmap_get(&bm, b % ENTRIES_PER_BITMAP)))
        };
        if !simple {
            for b in begin..end {
                self.sm_change(SmId::Data, b, op)?;
            }
            return Ok(());
        }
        let before = ie;
        let loc = self.sm_bitmap_for_write(SmId::Data, i, &mut ie)?;
        // Entries taken (0 -> 1) or freed (1 -> 0): how many, the first and the last.
        let mut moved = 0u32;
        let mut first_moved = None;
        let mut last_moved = 0u32;
        {
            let mut bm = self.write(loc, BlockKind::Bitmap, 0)?;
            for b in begin..end {
                let e = b % ENTRIES_PER_BITMAP;
                let v = bitmap_get(&bm, e);
                let (new, at_zero) = match op {
                    CountOp::Inc => (v + 1, v == 0),
                    CountOp::Dec => (v - 1, v == 1),
                };
                bitmap_set(&mut bm, e, new);
                if at_zero {
                    moved += 1;
                    first_moved.get_or_insert(e as u32);
                    last_moved = e as u32;
                }
            }
        }
        if let Some(first) = first_moved {
            match op {
                CountOp::Inc => {
                    ie.nr_free = ie.nr_free.saturating_sub(moved);
                    // Keep "nothing free before" exact where the run starts at it, as single
                    // increments do (a smaller value stays a valid hint).
                    let start = (begin % ENTRIES_PER_BITMAP) as u32;
                    if ie.none_free_before >= start && ie.none_free_before <= last_moved {
                        ie.none_free_before = last_moved + 1;
                    }
                    self.dsm.nr_allocated = self.dsm.nr_allocated.saturating_add(u64::from(moved));
                }
                CountOp::Dec => {
                    ie.nr_free = core::cmp::min(ie.nr_free + moved, ENTRIES_PER_BITMAP as u32);
                    ie.none_free_before = core::cmp::min(ie.none_free_before, first);
                    self.dsm.nr_allocated = self.dsm.nr_allocated.saturating_sub(u64::from(moved));
                }
            }
        }
        if ie != before {
            self.data_index_set(i, ie)?;
        }
        Ok(())
    }

    /// Allocate a data block (count 1) that is free now and in the committed state.
    pub fn data_alloc(&mut self) -> Result<u64> {
        let b = match self.data_find_free(self.dsm.cursor, self.dsm.nr_blocks)? {
            Some(b) => b,
            None => self
                .data_find_free(0, self.dsm.cursor)?
                .ok_or(Error::NoSpace(Space::Data))?,
        };
        self.dsm.cursor = b + 1;
        self.data_inc(b)?;
        Ok(b)
    }

    fn data_find_free(&mut self, begin: u64, end: u64) -> Result<Option<u64>> {
        let end = core::cmp::min(end, self.dsm.nr_blocks);
        let committed_bitmaps = self.dsm.committed_nr_blocks.div_ceil(ENTRIES_PER_BITMAP);
        let mut i = begin / ENTRIES_PER_BITMAP;
        while i * ENTRIES_PER_BITMAP < end {
            let ie = self.data_index_get(i)?;
            let base = i * ENTRIES_PER_BITMAP;
            if ie.nr_free > 0 {
                let start =
                    core::cmp::max(begin.saturating_sub(base), u64::from(ie.none_free_before));
                let stop = core::cmp::min(end - base, ENTRIES_PER_BITMAP);
                let comm_loc = if i < committed_bitmaps {
                    let c = self.data_index_get_committed(i)?;
                    Some(c.blocknr)
                } else {
                    None
                };
                let cur = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
                let comm = match comm_loc {
                    Some(l) if l != ie.blocknr => Some(self.read(l, BlockKind::Bitmap, 0)?),
                    _ => None,
                };
                if let Some(e) = find_free_pair(&cur, comm.as_deref(), start, stop, &mut |_| false)
                {
                    return Ok(Some(base + e));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    /// Grow the data space map to `new_nr` blocks.
    pub fn data_extend(&mut self, new_nr: u64) -> Result<()> {
        if new_nr < self.dsm.nr_blocks {
            return Err(Error::Invalid("the data space map cannot shrink"));
        }
        if new_nr > MAX_DATA_BLOCKS {
            return Err(Error::Invalid("data device larger than 2^40 blocks"));
        }
        let old_bitmaps = self.dsm.nr_blocks.div_ceil(ENTRIES_PER_BITMAP);
        let new_bitmaps = new_nr.div_ceil(ENTRIES_PER_BITMAP);
        for i in old_bitmaps..new_bitmaps {
            let b = self.meta_alloc()?;
            drop(self.bm.new_block(b, BlockKind::Bitmap)?);
            self.remember_shadow(b);
            self.data_index_set(
                i,
                IndexEntry {
                    blocknr: b,
                    nr_free: ENTRIES_PER_BITMAP as u32,
                    none_free_before: 0,
                },
            )?;
        }
        self.dsm.nr_blocks = new_nr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(blocknr: u64) -> IndexEntry {
        IndexEntry {
            blocknr,
            nr_free: 7,
            none_free_before: 3,
        }
    }

    #[test]
    fn index_cache_keeps_one_entry_per_slot_and_hands_back_the_displaced_one() {
        let mut c = IndexCache::default();
        assert!(c.is_empty());
        assert_eq!(c.put(5, entry(50)), None);
        assert_eq!(
            c.put(5, entry(51)),
            None,
            "the same bitmap replaces in place"
        );
        assert_eq!(c.get(5), Some(entry(51)));
        assert_eq!(c.get(5 + INDEX_CACHE_SLOTS as u64), None);
        // Bitmap 21 maps to bitmap 5's slot: 5 must be written out.
        let other = 5 + INDEX_CACHE_SLOTS as u64;
        assert_eq!(c.put(other, entry(60)), Some((5, entry(51))));
        assert_eq!(c.get(5), None);
        assert_eq!(c.get(other), Some(entry(60)));
    }

    #[test]
    fn index_cache_drains_in_bitmap_order() {
        let mut c = IndexCache::default();
        for i in [40u64, 3, 17, 9, 2] {
            assert_eq!(c.put(i, entry(100 + i)), None);
        }
        let mut order = [0u64; 5];
        for o in order.iter_mut() {
            let (i, ie) = c.take_lowest().unwrap();
            assert_eq!(ie, entry(100 + i));
            *o = i;
        }
        assert_eq!(order, [2, 3, 9, 17, 40]);
        assert_eq!(c.take_lowest(), None);
        assert!(c.is_empty());
    }
}
