//! Pieces shared by both space maps: bitmap encoding, index entries, the ref-count tree, and the
//! count-changing logic.
//!
//! A space map stores one reference count per block: 2 bits in a bitmap block (16,320 entries per
//! bitmap), where the value 3 means "3 or more, see the ref-count btree".  Bitmaps are found
//! through index entries: an in-core array of 255 entries for the metadata space map (saved in
//! one index block at commit), a btree for the data space map.

use super::block::{le32, le64, put32, put64, Block, BlockKind, BlockManager};
use super::btree::{TreeInfo, REF_COUNT_TREE};
use super::error::{Error, Result};
use super::tm::Tx;

/// Entries per bitmap block: (4096 - 16-byte header) * 4 entries per byte.
pub const ENTRIES_PER_BITMAP: u64 = 16_320;
/// Offset of the bitmap data in a bitmap block.
const BITMAP_DATA: usize = 16;

/// `struct disk_index_entry`: where a bitmap lives and a summary of its free entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexEntry {
    /// Bitmap block.
    pub blocknr: u64,
    /// Number of zero entries (new bitmaps start at 16,320 even if they cover fewer blocks).
    pub nr_free: u32,
    /// No free entry below this one (search hint the kernel relies on).
    pub none_free_before: u32,
}

impl IndexEntry {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Decode from 16 bytes.
    pub fn unpack(b: &[u8]) -> IndexEntry {
        IndexEntry {
            blocknr: le64(b, 0),
            nr_free: le32(b, 8),
            none_free_before: le32(b, 12),
        }
    }

    /// Encode into 16 bytes.
    pub fn pack(&self, b: &mut [u8]) {
        put64(b, 0, self.blocknr);
        put32(b, 8, self.nr_free);
        put32(b, 12, self.none_free_before);
    }

    /// Encode into an array (for btree values).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.pack(&mut b);
        b
    }

    /// Check the fields that can be checked without reading the bitmap.
    pub fn validate(&self, from: u64, nr_metadata_blocks: u64) -> Result<()> {
        if self.blocknr == 0 || self.blocknr >= nr_metadata_blocks {
            return Err(Error::OutOfBounds {
                block: self.blocknr,
                referenced_from: from,
            });
        }
        if u64::from(self.nr_free) > ENTRIES_PER_BITMAP
            || u64::from(self.none_free_before) > ENTRIES_PER_BITMAP
        {
            return Err(Error::Corrupt {
                block: from,
                what: "space map index entry has impossible free counts",
            });
        }
        Ok(())
    }
}

/// `struct disk_sm_root`: the 32 interpreted bytes of a superblock space-map root field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmRoot {
    /// Blocks covered.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// Metadata index block (metadata sm) or index btree root (data sm).
    pub bitmap_root: u64,
    /// Ref-count btree root.
    pub ref_count_root: u64,
}

impl SmRoot {
    /// Decode.
    pub fn unpack(b: &[u8]) -> SmRoot {
        SmRoot {
            nr_blocks: le64(b, 0),
            nr_allocated: le64(b, 8),
            bitmap_root: le64(b, 16),
            ref_count_root: le64(b, 24),
        }
    }

    /// Encode (32 bytes).
    pub fn pack(&self, b: &mut [u8]) {
        put64(b, 0, self.nr_blocks);
        put64(b, 8, self.nr_allocated);
        put64(b, 16, self.bitmap_root);
        put64(b, 24, self.ref_count_root);
    }
}

/// 2-bit count of entry `e` (< 16,320).  Bit `2·(e%32)` of word `e/32` is the high bit.
#[inline]
pub fn bitmap_get(b: &Block, e: u64) -> u32 {
    let word = le64(b, BITMAP_DATA + 8 * (e / 32) as usize);
    let shift = 2 * (e % 32);
    let hi = (word >> shift) & 1;
    let lo = (word >> (shift + 1)) & 1;
    ((hi << 1) | lo) as u32
}

/// Store the 2-bit count `v` (0..=3) of entry `e`.
#[inline]
pub fn bitmap_set(b: &mut Block, e: u64, v: u32) {
    let off = BITMAP_DATA + 8 * (e / 32) as usize;
    let mut word = le64(b, off);
    let shift = 2 * (e % 32);
    word &= !(3u64 << shift);
    word |= ((u64::from(v) >> 1) & 1) << shift;
    word |= (u64::from(v) & 1) << (shift + 1);
    put64(b, off, word);
}

/// First entry in `[start, end)` that is zero in `cur` and (if given) in `committed`, skipping
/// entries for which `skip` says yes.  Word at a time, so full stretches are skipped quickly.
pub fn find_free_pair(
    cur: &Block,
    committed: Option<&Block>,
    start: u64,
    end: u64,
    skip: &mut dyn FnMut(u64) -> bool,
) -> Option<u64> {
    let mut e = start;
    while e < end {
        let w = e / 32;
        let off = BITMAP_DATA + 8 * w as usize;
        let mut word = le64(cur, off);
        if let Some(c) = committed {
            word |= le64(c, off);
        }
        if word == u64::MAX {
            e = (w + 1) * 32;
            continue;
        }
        let word_end = core::cmp::min((w + 1) * 32, end);
        while e < word_end {
            if (word >> (2 * (e % 32))) & 3 == 0 && !skip(e) {
                return Some(e);
            }
            e += 1;
        }
    }
    None
}

/// Which space map an operation addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmId {
    /// Metadata space map.
    Meta,
    /// Data space map.
    Data,
}

/// A count change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountOp {
    /// +1
    Inc,
    /// -1
    Dec,
}

impl<B: BlockManager> Tx<B> {
    /// Bitmap index entry `i` of a space map.
    pub(crate) fn sm_index_get(&mut self, sm: SmId, i: u64) -> Result<IndexEntry> {
        match sm {
            SmId::Meta => self.msm.index_entry(i),
            SmId::Data => self.data_index_get(i),
        }
    }

    fn sm_index_set(&mut self, sm: SmId, i: u64, ie: IndexEntry) -> Result<()> {
        match sm {
            SmId::Meta => self.msm.set_index_entry(i, ie),
            SmId::Data => self.data_index_set(i, ie),
        }
    }

    fn sm_ref_root(&self, sm: SmId) -> u64 {
        match sm {
            SmId::Meta => self.msm.ref_root,
            SmId::Data => self.dsm.ref_root,
        }
    }

    fn sm_set_ref_root(&mut self, sm: SmId, root: u64) {
        match sm {
            SmId::Meta => self.msm.ref_root = root,
            SmId::Data => self.dsm.ref_root = root,
        }
    }

    fn sm_nr_blocks(&self, sm: SmId) -> u64 {
        match sm {
            SmId::Meta => self.msm.nr_blocks,
            SmId::Data => self.dsm.nr_blocks,
        }
    }

    /// Exact reference count of `b` as stored (bitmap, then ref-count tree for 3).
    pub(crate) fn sm_get(&mut self, sm: SmId, b: u64) -> Result<u32> {
        if b >= self.sm_nr_blocks(sm) {
            return Err(Error::Invalid("block beyond the end of the space map"));
        }
        let ie = self.sm_index_get(sm, b / ENTRIES_PER_BITMAP)?;
        let v = {
            let bm = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
            bitmap_get(&bm, b % ENTRIES_PER_BITMAP)
        };
        if v < 3 {
            return Ok(v);
        }
        self.ref_tree_get(sm, b, ie.blocknr)
    }

    /// 2-bit bitmap value only (enough to tell 0, 1, 2 and "3 or more").
    pub(crate) fn sm_get_small(&mut self, sm: SmId, b: u64) -> Result<u32> {
        let ie = self.sm_index_get(sm, b / ENTRIES_PER_BITMAP)?;
        let bm = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
        Ok(bitmap_get(&bm, b % ENTRIES_PER_BITMAP))
    }

    fn ref_tree_get(&mut self, sm: SmId, b: u64, bitmap: u64) -> Result<u32> {
        let root = self.sm_ref_root(sm);
        match self.btree_lookup(root, REF_COUNT_TREE, b)? {
            Some(v) => {
                let c = le32(&v, 0);
                if c < 3 {
                    return Err(Error::Corrupt {
                        block: root,
                        what: "ref-count tree holds a count below 3",
                    });
                }
                Ok(c)
            }
            None => Err(Error::Corrupt {
                block: bitmap,
                what: "bitmap count 3 has no ref-count tree entry",
            }),
        }
    }

    /// Apply one count change to `b` and keep bitmap, ref-count tree, index entry and
    /// `nr_allocated` consistent.  Returns the new count.
    pub(crate) fn sm_change(&mut self, sm: SmId, b: u64, op: CountOp) -> Result<u32> {
        if b >= self.sm_nr_blocks(sm) {
            return Err(Error::Invalid(
                "count change beyond the end of the space map",
            ));
        }
        let i = b / ENTRIES_PER_BITMAP;
        let e = b % ENTRIES_PER_BITMAP;
        let ie = self.sm_index_get(sm, i)?;
        let v = {
            let bm = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
            bitmap_get(&bm, e)
        };
        let old = if v < 3 {
            v
        } else {
            self.ref_tree_get(sm, b, ie.blocknr)?
        };
        let new = match op {
            CountOp::Inc => old
                .checked_add(1)
                .ok_or(Error::Limit("reference count overflow"))?,
            CountOp::Dec => old.checked_sub(1).ok_or(Error::Corrupt {
                block: ie.blocknr,
                what: "reference count of a free block decremented",
            })?,
        };
        // The ref-count tree holds exactly the blocks whose count is 3 or more.
        let info: TreeInfo = REF_COUNT_TREE;
        if new >= 3 {
            let root = self.sm_ref_root(sm);
            let (nr, _) = self.btree_insert(root, info, b, &new.to_le_bytes())?;
            self.sm_set_ref_root(sm, nr);
        } else if old >= 3 {
            // `old` was just read from this entry: no second lookup.
            let root = self.sm_ref_root(sm);
            let (nr, _) = self.btree_remove_present(root, info, b)?;
            self.sm_set_ref_root(sm, nr);
        }
        let new_v = core::cmp::min(new, 3);
        if new_v != v {
            // The index entry may have moved while the ref-count tree changed (the metadata
            // space map shadows bitmaps lazily), so fetch it again.
            let mut ie = self.sm_index_get(sm, i)?;
            let before = ie;
            let loc = self.sm_bitmap_for_write(sm, i, &mut ie)?;
            {
                let mut bm = self.write(loc, BlockKind::Bitmap, 0)?;
                bitmap_set(&mut bm, e, new_v);
            }
            let e32 = e as u32;
            if v == 0 {
                ie.nr_free = ie.nr_free.saturating_sub(1);
                if ie.none_free_before == e32 {
                    ie.none_free_before = e32 + 1;
                }
                self.sm_allocated_delta(sm, true);
            } else if new_v == 0 {
                ie.nr_free = core::cmp::min(ie.nr_free + 1, ENTRIES_PER_BITMAP as u32);
                ie.none_free_before = core::cmp::min(ie.none_free_before, e32);
                self.sm_allocated_delta(sm, false);
            }
            // Most changes (1 -> 2, 2 -> 3...) leave the index entry alone; the data space map
            // stores it in a btree, so skip the update then.
            if ie != before {
                self.sm_index_set(sm, i, ie)?;
            }
        }
        Ok(new)
    }

    fn sm_allocated_delta(&mut self, sm: SmId, up: bool) {
        let n = match sm {
            SmId::Meta => &mut self.msm.nr_allocated,
            SmId::Data => &mut self.dsm.nr_allocated,
        };
        *n = if up {
            n.saturating_add(1)
        } else {
            n.saturating_sub(1)
        };
    }

    /// Make bitmap `i` writable in this transaction, shadowing it on first modification.
    /// Updates `ie.blocknr` and returns the location to write.
    pub(crate) fn sm_bitmap_for_write(
        &mut self,
        sm: SmId,
        i: u64,
        ie: &mut IndexEntry,
    ) -> Result<u64> {
        let fresh = match sm {
            SmId::Meta => self.msm.is_shadowed(i),
            SmId::Data => {
                self.shadow_known(ie.blocknr) || !self.meta_committed_in_use(ie.blocknr)?
            }
        };
        if fresh {
            return Ok(ie.blocknr);
        }
        let old = ie.blocknr;
        let new = self.meta_alloc()?;
        {
            let src = self.read(old, BlockKind::Bitmap, 0)?;
            let mut dst = self.bm.new_block(new, BlockKind::Bitmap)?;
            dst.copy_from_slice(&src[..]);
        }
        ie.blocknr = new;
        match sm {
            SmId::Meta => self.msm.mark_shadowed(i),
            SmId::Data => self.remember_shadow(new),
        }
        // Store the new location before the old block's count changes: that change may itself
        // touch bitmap `i` and must find the shadow.
        self.sm_index_set(sm, i, *ie)?;
        self.meta_dec(old)?;
        // The decrement may have changed this very index entry (same bitmap): re-read it.
        *ie = self.sm_index_get(sm, i)?;
        Ok(ie.blocknr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BLOCK_SIZE;

    #[test]
    fn bitmap_bit_order_matches_the_kernel() {
        // Data counts 2,2,0,0 then 0,1,1,0 are stored as bytes 05 28 (measured on dm-thin).
        let mut b = [0u8; BLOCK_SIZE];
        for (e, c) in [2, 2, 0, 0, 0, 1, 1, 0].into_iter().enumerate() {
            bitmap_set(&mut b, e as u64, c);
        }
        assert_eq!(&b[16..18], &[0x05, 0x28]);
        for (e, c) in [2, 2, 0, 0, 0, 1, 1, 0].into_iter().enumerate() {
            assert_eq!(bitmap_get(&b, e as u64), c);
        }
        bitmap_set(&mut b, 16_319, 3);
        assert_eq!(bitmap_get(&b, 16_319), 3);
        assert_eq!(b[BLOCK_SIZE - 1], 0xc0);
    }

    #[test]
    fn free_search_skips_entries_used_in_either_map() {
        let mut cur = [0u8; BLOCK_SIZE];
        let mut old = [0u8; BLOCK_SIZE];
        for e in 0..40 {
            bitmap_set(&mut cur, e, 1);
        }
        bitmap_set(&mut old, 40, 1);
        let f = find_free_pair(&cur, Some(&old), 0, 16_320, &mut |_| false);
        assert_eq!(f, Some(41));
        assert_eq!(find_free_pair(&cur, None, 0, 40, &mut |_| false), None);
        assert_eq!(
            find_free_pair(&cur, None, 0, 100, &mut |e| e < 50),
            Some(50)
        );
    }
}
