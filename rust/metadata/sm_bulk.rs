//! Count changes over runs of data blocks, for bulk loads (restore tools).
//!
//! A restore adds one reference per mapping, and mappings come in runs of consecutive data
//! blocks.  [`Tx::data_inc_range`] adds a reference to every block of a run, and
//! [`Tx::data_inc_ranges`] to every block of many runs, with one bitmap write and at most one
//! index update per bitmap the runs fall in, instead of one count change per block.

use super::block::{BlockKind, BlockManager};
use super::error::{Error, Result};
use super::sm_common::{bitmap_get, bitmap_set, CountOp, SmId, ENTRIES_PER_BITMAP};
use super::tm::Tx;

impl<B: BlockManager> Tx<B> {
    /// Increments the counts of data blocks `first..first + n`: the same as `n` calls of
    /// [`Tx::data_inc`], but in one bitmap write per bitmap when every count there is 0 or 1
    /// (others take the general path, block by block; see [`Tx::data_change_run`]).
    pub fn data_inc_range(&mut self, first: u64, n: u64) -> Result<()> {
        self.data_change_run(first, n, CountOp::Inc)
    }

    /// [`Tx::data_inc_range`] for each of `ranges` (`(first, n)`; any order, overlaps and
    /// repeats allowed).  Consecutive ranges within one bitmap share its write: a caller that
    /// groups its runs by bitmap (`first / ENTRIES_PER_BITMAP`) gets one write per group.
    pub fn data_inc_ranges(&mut self, ranges: &[(u64, u64)]) -> Result<()> {
        for &(first, n) in ranges {
            if first
                .checked_add(n)
                .is_none_or(|end| end > self.dsm.nr_blocks)
            {
                return Err(Error::Invalid(
                    "count change beyond the end of the space map",
                ));
            }
        }
        let in_one = |(first, n): (u64, u64)| {
            n > 0 && first / ENTRIES_PER_BITMAP == (first + n - 1) / ENTRIES_PER_BITMAP
        };
        let mut k = 0;
        while k < ranges.len() {
            if !in_one(ranges[k]) {
                // Empty, or across a bitmap boundary: on its own.
                self.data_inc_range(ranges[k].0, ranges[k].1)?;
                k += 1;
                continue;
            }
            let i = ranges[k].0 / ENTRIES_PER_BITMAP;
            let mut j = k + 1;
            while j < ranges.len() && in_one(ranges[j]) && ranges[j].0 / ENTRIES_PER_BITMAP == i {
                j += 1;
            }
            self.data_inc_pieces(i, &ranges[k..j])?;
            k = j;
        }
        Ok(())
    }

    /// Adds a reference to every block of `pieces`, all within bitmap `i`: one bitmap write
    /// for every block whose count goes to 1 or 2; a block at 2 already (its count moves to the
    /// ref-count tree) interrupts the write and takes the general path.
    fn data_inc_pieces(&mut self, i: u64, pieces: &[(u64, u64)]) -> Result<()> {
        let (mut p, mut off) = (0usize, 0u64);
        while p < pieces.len() {
            let mut ie = self.data_index_get(i)?;
            let before = ie;
            let loc = self.sm_bitmap_for_write(SmId::Data, i, &mut ie)?;
            let mut taken = 0u32;
            let mut general = None;
            {
                let mut bm = self.write(loc, BlockKind::Bitmap, 0)?;
                'pieces: while p < pieces.len() {
                    let (first, n) = pieces[p];
                    while off < n {
                        let b = first + off;
                        off += 1;
                        let e = b % ENTRIES_PER_BITMAP;
                        let v = bitmap_get(&bm, e);
                        if v >= 2 {
                            general = Some(b);
                            break 'pieces;
                        }
                        bitmap_set(&mut bm, e, v + 1);
                        taken += u32::from(v == 0);
                    }
                    p += 1;
                    off = 0;
                }
                if taken > 0 {
                    // First free entry at or after the old hint (allocation frees nothing).
                    let mut e = u64::from(ie.none_free_before);
                    while e < ENTRIES_PER_BITMAP && bitmap_get(&bm, e) != 0 {
                        e += 1;
                    }
                    ie.none_free_before = e as u32;
                }
            }
            if taken > 0 {
                ie.nr_free = ie.nr_free.saturating_sub(taken);
                self.dsm.nr_allocated = self.dsm.nr_allocated.saturating_add(u64::from(taken));
            }
            if ie != before {
                self.data_index_set(i, ie)?;
            }
            if let Some(b) = general {
                self.data_inc(b)?;
            }
        }
        Ok(())
    }
}
