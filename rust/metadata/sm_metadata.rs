//! The metadata space map: reference counts of the 4 KiB metadata blocks themselves.
//!
//! Its bitmaps and ref-count tree live in the metadata blocks it counts, so changing a count can
//! require allocating a block (to shadow a bitmap or a ref-count tree node), which changes another
//! count, and so on.  Like the kernel, we break the recursion with a small queue: while one count
//! change is being applied, further changes are queued and applied afterwards, one at a time.
//! Blocks handed out while recursing are found without changing any bitmap and are queued as
//! increments; pending increments are included in [`Tx::meta_count`].
//!
//! The index (255 entries) is kept in core and written to a freshly allocated index block at
//! every commit.

use super::block::{le64, put64, BlockKind, BlockManager};
use super::error::{Error, Result, Space};
use super::sm_common::{bitmap_get, find_free_pair, CountOp, IndexEntry, SmId, ENTRIES_PER_BITMAP};
use super::tm::Tx;

/// Bitmaps one index block can describe.
pub const MAX_METADATA_BITMAPS: usize = 255;
/// Largest usable metadata device, in blocks.
pub const MAX_METADATA_BLOCKS: u64 = MAX_METADATA_BITMAPS as u64 * ENTRIES_PER_BITMAP;
/// Offset of `index[0]` in the index block.
pub const INDEX_ENTRIES_OFFSET: usize = 16;

/// Queue capacity.  One queued change can queue at most a bitmap shadow (2 changes) plus the
/// node changes of one ref-count tree update (a few per level), so this is far more than needed.
const QUEUE_LEN: usize = 64;

#[derive(Clone, Copy, Debug, Default)]
struct Pending {
    block: u64,
    inc: bool,
}

/// In-core state of the metadata space map.
pub struct MetaSm {
    /// Blocks covered.
    pub nr_blocks: u64,
    /// Blocks with a non-zero count.
    pub nr_allocated: u64,
    /// `nr_allocated` of the committed state.
    pub committed_nr_allocated: u64,
    /// Blocks handed out by [`Tx::meta_alloc`] (and new bitmaps of [`Tx::meta_extend`]) in this
    /// transaction; never lowered by frees (dm-space-map-metadata's
    /// `allocated_this_transaction`).
    pub allocated_this_tx: u64,
    /// Current index entries (entries past the bitmap count are unused).
    index: [IndexEntry; MAX_METADATA_BITMAPS],
    /// Ref-count tree root.
    pub ref_root: u64,
    /// Location of the committed index block.
    pub index_loc: u64,
    /// False until the first commit: there is no committed state to protect yet.
    pub committed: bool,
    /// Bitmaps in the committed state (for the "free in the committed map too" rule).
    pub committed_nr_bitmaps: u64,
    /// Bitmaps already copied in this transaction (bit per index entry).
    shadowed: [u64; 4],
    /// Allocation cursor: moves forward within a transaction.
    cursor: u64,
    /// Blocks `[claimed.0, claimed.1)` are never handed out: new bitmaps placed by
    /// [`Tx::meta_extend`] whose counts are not recorded yet.
    claimed: (u64, u64),
    recursing: bool,
    queue: [Pending; QUEUE_LEN],
    q_head: usize,
    q_len: usize,
}

impl MetaSm {
    /// A space map with no bitmaps yet (filled by format or open).
    pub const fn new(nr_blocks: u64) -> MetaSm {
        MetaSm {
            nr_blocks,
            nr_allocated: 0,
            committed_nr_allocated: 0,
            allocated_this_tx: 0,
            index: [IndexEntry {
                blocknr: 0,
                nr_free: 0,
                none_free_before: 0,
            }; MAX_METADATA_BITMAPS],
            ref_root: 0,
            index_loc: 0,
            committed: false,
            committed_nr_bitmaps: 0,
            shadowed: [0; 4],
            cursor: 0,
            claimed: (0, 0),
            recursing: false,
            queue: [Pending {
                block: 0,
                inc: false,
            }; QUEUE_LEN],
            q_head: 0,
            q_len: 0,
        }
    }

    /// Make `self` what [`MetaSm::new`] returns, in place: `MetaSm` is over 5 KiB, too much
    /// for a temporary on a kernel stack.  Destructured so that a new field cannot be missed.
    pub fn reset(&mut self, nr_blocks: u64) {
        let MetaSm {
            nr_blocks: nr,
            nr_allocated,
            committed_nr_allocated,
            allocated_this_tx,
            index,
            ref_root,
            index_loc,
            committed,
            committed_nr_bitmaps,
            shadowed,
            cursor,
            claimed,
            recursing,
            queue,
            q_head,
            q_len,
        } = self;
        *nr = nr_blocks;
        *nr_allocated = 0;
        *committed_nr_allocated = 0;
        *allocated_this_tx = 0;
        index.fill(IndexEntry::default());
        *ref_root = 0;
        *index_loc = 0;
        *committed = false;
        *committed_nr_bitmaps = 0;
        *shadowed = [0; 4];
        *cursor = 0;
        *claimed = (0, 0);
        *recursing = false;
        queue.fill(Pending::default());
        *q_head = 0;
        *q_len = 0;
    }

    /// Number of bitmaps covering `nr_blocks`.
    pub fn nr_bitmaps(&self) -> u64 {
        self.nr_blocks.div_ceil(ENTRIES_PER_BITMAP)
    }

    pub(crate) fn index_entry(&self, i: u64) -> Result<IndexEntry> {
        self.index
            .get(i as usize)
            .copied()
            .ok_or(Error::Invalid("metadata bitmap index out of range"))
    }

    pub(crate) fn set_index_entry(&mut self, i: u64, ie: IndexEntry) -> Result<()> {
        let slot = self
            .index
            .get_mut(i as usize)
            .ok_or(Error::Invalid("metadata bitmap index out of range"))?;
        *slot = ie;
        Ok(())
    }

    pub(crate) fn is_shadowed(&self, i: u64) -> bool {
        let i = i as usize;
        i < 256 && self.shadowed[i / 64] & (1 << (i % 64)) != 0
    }

    pub(crate) fn mark_shadowed(&mut self, i: u64) {
        let i = i as usize;
        if i < 256 {
            self.shadowed[i / 64] |= 1 << (i % 64);
        }
    }

    /// Everything written from now on is new (format: no committed state).
    pub(crate) fn mark_all_shadowed(&mut self) {
        self.shadowed = [u64::MAX; 4];
    }

    /// Start a new transaction after a commit wrote the index to `index_loc`.
    pub(crate) fn end_transaction(&mut self, index_loc: u64) {
        self.index_loc = index_loc;
        self.committed = true;
        self.committed_nr_bitmaps = self.nr_bitmaps();
        self.committed_nr_allocated = self.nr_allocated;
        self.allocated_this_tx = 0;
        self.shadowed = [0; 4];
        self.cursor = 0;
    }

    /// Free blocks as dm-space-map-metadata counts them (`sm_metadata_get_nr_free`): free in
    /// the committed state minus the blocks allocated in this transaction.  Blocks freed in
    /// this transaction only count once committed.  Unlike the kernel, which counts the old
    /// size until the commit, blocks added by [`Tx::meta_extend`] count at once (dm-thin commits
    /// right after growing, so the difference is never visible there).
    pub fn nr_free(&self) -> u64 {
        self.nr_blocks
            .saturating_sub(self.committed_nr_allocated)
            .saturating_sub(self.allocated_this_tx)
    }

    fn push(&mut self, block: u64, inc: bool) -> Result<()> {
        if self.q_len == QUEUE_LEN {
            return Err(Error::Limit("metadata space map operation queue overflow"));
        }
        let slot = (self.q_head + self.q_len) % QUEUE_LEN;
        self.queue[slot] = Pending { block, inc };
        self.q_len += 1;
        Ok(())
    }

    fn peek(&self) -> Option<Pending> {
        (self.q_len > 0).then(|| self.queue[self.q_head])
    }

    fn pop(&mut self) {
        if self.q_len > 0 {
            self.q_head = (self.q_head + 1) % QUEUE_LEN;
            self.q_len -= 1;
        }
    }

    fn clear_queue(&mut self) {
        self.q_head = 0;
        self.q_len = 0;
    }

    /// Net queued change of `b`'s count.
    fn pending_delta(&self, b: u64) -> i64 {
        let mut d = 0i64;
        for k in 0..self.q_len {
            let p = &self.queue[(self.q_head + k) % QUEUE_LEN];
            if p.block == b {
                d += if p.inc { 1 } else { -1 };
            }
        }
        d
    }

    /// Pack the index into an index block image.
    pub(crate) fn write_index(&self, blk: &mut super::block::Block) {
        for (i, ie) in self
            .index
            .iter()
            .enumerate()
            .take(self.nr_bitmaps() as usize)
        {
            let off = INDEX_ENTRIES_OFFSET + i * IndexEntry::SIZE;
            ie.pack(&mut blk[off..off + IndexEntry::SIZE]);
        }
    }

    /// Load the index from an index block image (already checksum-validated).
    pub(crate) fn read_index(&mut self, loc: u64, blk: &super::block::Block) -> Result<()> {
        let n = self.nr_bitmaps();
        if n > MAX_METADATA_BITMAPS as u64 {
            return Err(Error::Corrupt {
                block: 0,
                what: "metadata space map needs more bitmaps than an index block holds",
            });
        }
        for i in 0..n as usize {
            let off = INDEX_ENTRIES_OFFSET + i * IndexEntry::SIZE;
            let ie = IndexEntry::unpack(&blk[off..off + IndexEntry::SIZE]);
            ie.validate(loc, self.nr_blocks)?;
            self.index[i] = ie;
        }
        Ok(())
    }
}

impl<B: BlockManager> Tx<B> {
    /// Increment a metadata block's count.
    pub fn meta_inc(&mut self, b: u64) -> Result<()> {
        self.meta_op(b, true)
    }

    /// Decrement a metadata block's count.
    pub fn meta_dec(&mut self, b: u64) -> Result<()> {
        self.meta_op(b, false)
    }

    /// Queue a count change; unless already inside one, apply the queue.  Every change,
    /// the outermost included, stays queued until applied: while it is applied it counts as
    /// pending, so [`Tx::meta_count`] already sees it and the allocator skips a block whose
    /// increment is under way (it may need a bitmap copy, i.e. a nested allocation).
    fn meta_op(&mut self, b: u64, inc: bool) -> Result<()> {
        if b >= self.msm.nr_blocks {
            return Err(Error::OutOfBounds {
                block: b,
                referenced_from: 0,
            });
        }
        // Shared now, or freed: no longer this transaction's own block.
        self.forget_shadow(b);
        self.msm.push(b, inc)?;
        if self.msm.recursing {
            return Ok(());
        }
        self.msm.recursing = true;
        let r = self.meta_apply_queue();
        self.msm.recursing = false;
        if r.is_err() {
            // The transaction is lost anyway (the pool refuses further changes); leave no
            // stale pending changes behind.
            self.msm.clear_queue();
        }
        r
    }

    fn meta_apply_queue(&mut self) -> Result<()> {
        while let Some(p) = self.msm.peek() {
            let op = if p.inc { CountOp::Inc } else { CountOp::Dec };
            self.sm_change(SmId::Meta, p.block, op)?;
            self.msm.pop();
        }
        Ok(())
    }

    /// Current count of a metadata block, including queued changes.
    pub fn meta_count(&mut self, b: u64) -> Result<u32> {
        let c = i64::from(self.sm_get(SmId::Meta, b)?) + self.msm.pending_delta(b);
        u32::try_from(c).map_err(|_| Error::Corrupt {
            block: b,
            what: "metadata block count went negative",
        })
    }

    /// Like [`Tx::meta_count`] but only exact up to 2 ("3" means 3 or more); never reads the
    /// ref-count tree, so it is safe in the middle of ref-count tree updates.
    pub fn meta_count_small(&mut self, b: u64) -> Result<u32> {
        let c = i64::from(self.sm_get_small(SmId::Meta, b)?) + self.msm.pending_delta(b);
        Ok(c.clamp(0, 3) as u32)
    }

    /// Was `b` in use in the last committed state?  Blocks that were not may be modified in
    /// place; all others must be shadowed.
    pub fn meta_committed_in_use(&mut self, b: u64) -> Result<bool> {
        if !self.msm.committed {
            return Ok(false);
        }
        let i = b / ENTRIES_PER_BITMAP;
        if i >= self.msm.committed_nr_bitmaps {
            return Ok(false);
        }
        let loc = self.committed_meta_bitmap(i)?;
        let bm = self.read(loc, BlockKind::Bitmap, self.msm.index_loc)?;
        Ok(bitmap_get(&bm, b % ENTRIES_PER_BITMAP) != 0)
    }

    fn committed_meta_bitmap(&mut self, i: u64) -> Result<u64> {
        let idx = self.msm.index_loc;
        let blk = self.read(idx, BlockKind::Index, 0)?;
        let loc = le64(
            &blk[..],
            INDEX_ENTRIES_OFFSET + i as usize * IndexEntry::SIZE,
        );
        if loc >= self.msm.nr_blocks {
            return Err(Error::OutOfBounds {
                block: loc,
                referenced_from: idx,
            });
        }
        Ok(loc)
    }

    /// Allocate a metadata block (count 1).  Never returns a block that is in use in the
    /// committed state, so the last commit stays intact until the next superblock write, nor
    /// one already handed out (including the block whose allocation is copying a bitmap).
    ///
    /// This is the raw allocator: it may use every block, the metadata reserve included.
    /// [`super::thin::Pool`] keeps the reserve for the change in progress and the commit by
    /// refusing to *start* a change when only the reserve is left.
    pub fn meta_alloc(&mut self) -> Result<u64> {
        let b = match self.meta_find_free(self.msm.cursor, self.msm.nr_blocks)? {
            Some(b) => b,
            None => self
                .meta_find_free(0, self.msm.cursor)?
                .ok_or(Error::NoSpace(Space::Metadata))?,
        };
        self.msm.cursor = b + 1;
        self.meta_op(b, true)?;
        self.msm.allocated_this_tx = self.msm.allocated_this_tx.saturating_add(1);
        Ok(b)
    }

    fn meta_find_free(&mut self, begin: u64, end: u64) -> Result<Option<u64>> {
        let end = core::cmp::min(end, self.msm.nr_blocks);
        let mut i = begin / ENTRIES_PER_BITMAP;
        while i * ENTRIES_PER_BITMAP < end {
            let ie = self.msm.index_entry(i)?;
            let base = i * ENTRIES_PER_BITMAP;
            if ie.nr_free > 0 {
                let start =
                    core::cmp::max(begin.saturating_sub(base), u64::from(ie.none_free_before));
                let stop = core::cmp::min(end - base, ENTRIES_PER_BITMAP);
                let committed_loc = if self.msm.committed && i < self.msm.committed_nr_bitmaps {
                    Some(self.committed_meta_bitmap(i)?)
                } else {
                    None
                };
                let cur = self.read(ie.blocknr, BlockKind::Bitmap, 0)?;
                let comm = match committed_loc {
                    Some(l) if l != ie.blocknr => Some(self.read(l, BlockKind::Bitmap, 0)?),
                    _ => None,
                };
                let msm = &self.msm;
                let (c0, c1) = msm.claimed;
                let mut skip = |e: u64| {
                    let b = base + e;
                    (c0..c1).contains(&b) || msm.pending_delta(b) > 0
                };
                if let Some(e) = find_free_pair(&cur, comm.as_deref(), start, stop, &mut skip) {
                    return Ok(Some(base + e));
                }
            }
            i += 1;
        }
        Ok(None)
    }

    /// Grow the metadata space map to `new_nr` blocks (the device must already be that big).
    ///
    /// As `sm_metadata_extend` does, the new bitmaps are placed at the start of the new area
    /// (`old_nr`, `old_nr + 1`, ...: there is always room, each new bitmap covers at least one
    /// new block), never taken from the old area, so a completely full device can grow.  Their
    /// counts are then recorded one at a time; meanwhile the allocator skips them, and any
    /// block needed on the way (a copy of the old last bitmap) comes from whatever is free,
    /// the new area included.
    pub fn meta_extend(&mut self, new_nr: u64) -> Result<()> {
        let old_nr = self.msm.nr_blocks;
        if new_nr <= old_nr {
            return Ok(());
        }
        if new_nr > MAX_METADATA_BLOCKS {
            return Err(Error::Invalid(
                "metadata device larger than the format allows",
            ));
        }
        let old_bitmaps = self.msm.nr_bitmaps();
        let new_bitmaps = new_nr.div_ceil(ENTRIES_PER_BITMAP);
        let placed = new_bitmaps - old_bitmaps;
        for i in old_bitmaps..new_bitmaps {
            let b = old_nr + (i - old_bitmaps);
            drop(self.bm.new_block(b, BlockKind::Bitmap)?);
            self.msm.set_index_entry(
                i,
                IndexEntry {
                    blocknr: b,
                    nr_free: ENTRIES_PER_BITMAP as u32,
                    none_free_before: 0,
                },
            )?;
            // Written in this transaction: modified in place from now on.
            self.msm.mark_shadowed(i);
        }
        self.msm.claimed = (old_nr, old_nr + placed);
        self.msm.nr_blocks = new_nr;
        let mut r = Ok(());
        for b in old_nr..old_nr + placed {
            r = self.meta_inc(b);
            if r.is_err() {
                break;
            }
            self.msm.allocated_this_tx = self.msm.allocated_this_tx.saturating_add(1);
        }
        self.msm.claimed = (0, 0);
        r
    }

    /// Write the metadata index into block `loc` (commit helper).
    pub(crate) fn meta_write_index(&mut self, loc: u64) -> Result<()> {
        let mut blk = self.bm.new_block(loc, BlockKind::Index)?;
        self.msm.write_index(&mut blk);
        put64(&mut blk[..], 8, loc);
        Ok(())
    }
}
