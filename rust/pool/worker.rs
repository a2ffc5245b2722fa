// SPDX-License-Identifier: GPL-2.0

//! The pool worker: every thin bio is decided here, under the metadata lock.
//!
//! One run takes each active thin's queued bios and
//! * remaps reads and writes of provisioned blocks to the data device, and completes reads of
//!   holes with zeroes (or sends them to the external origin). dm-thin sends them through the
//!   pool device instead; going straight to the data device saves a device-mapper layer per
//!   bio, and the pool object keeps its own counted open of the data device for it;
//! * provisions: allocates a data block for a write to a hole or to a block shared with a
//!   snapshot. A write covering the whole block is sent at once and its mapping inserted when
//!   it completes (`end_io` hands it back), so a crash can never map a block whose data never
//!   arrived; a partial write first has the new block zeroed or the old block copied (kcopyd),
//!   then the mapping inserted, then the bio sent. While a whole-block write is in flight,
//!   other bios for the same virtual block wait for it (dm-thin's cell);
//! * unmaps whole blocks covered by discards;
//! * commits when a flush or FUA bio follows a metadata change (those bios are sent or
//!   completed only after the commit), and at least every second while there are changes.
//!
//! Metadata failures abort the transaction (reopen at the last commit), set `needs_check` and
//! switch the pool to read-only, or to fail mode if that fails too, as dm-thin does.

use super::{
    object::{Engine, MetaState, PoolMode, PoolObject},
    routing::{route, Route},
    thin_state::{Stage, ThinBio, ThinState},
};
use crate::{
    dm::{BioList, BioOp, BlkStatus, BlockDevice, KcopydDone, NoIoScope, OwnedBio},
    metadata::{Error as MetaError, Space},
};
use core::sync::atomic::Ordering;
use kernel::{prelude::*, sync::Arc, time::Delta};

type ThinOwnedBio = OwnedBio<ThinBio>;

/// What a partial write's new block is filled with before the write lands in it.
struct Fill {
    /// Copied from this device at this sector; zeroes when `None`.
    source: Option<(Arc<BlockDevice>, u64)>,
    /// Sectors at the start of the block.
    count: u64,
    /// Sectors after those still to zero (once the copy is done).
    zero_tail: u64,
}

/// A bio waiting for kcopyd to fill its new block: handed back to the worker when done.
struct FillDone {
    pool: Arc<PoolObject>,
    thin: Arc<ThinState>,
    bio: ThinOwnedBio,
}

impl KcopydDone for FillDone {
    fn done(self, ok: bool) {
        let FillDone {
            pool,
            thin,
            mut bio,
        } = self;
        bio.per_bio().write_ok &= ok;
        thin.queues.lock().filled.push(bio);
        // While the bio is in flight its thin table, and so a handle to the pool, exists: this
        // is never the last reference to the pool (see `PoolObject::shut_down`).
        PoolObject::kick(&pool);
    }
}

/// Commit at least this often while the metadata has changes.
const COMMIT_PERIOD_MS: i64 = 1000;

/// One run of the worker.
pub(super) fn run(pool: &Arc<PoolObject>) {
    let _noio = NoIoScope::enter();
    let thins = match clone_thins(pool) {
        Ok(t) => t,
        Err(_) => {
            // Out of memory: try again in a second rather than spin.
            PoolObject::kick_later(pool);
            return;
        }
    };
    let mut meta = pool.meta.write();
    let mut worker = Worker {
        pool,
        meta: &mut meta,
        requeued: false,
    };
    // Bios to send (all to the data device) or complete after the commit.
    let mut after_commit = BioList::new();
    for thin in thins.iter() {
        // Keep each active thin's details in memory: `map`'s lookups then skip the details
        // tree. (Cheap once cached; an error shows again in the lookups themselves.)
        let _ = worker.engine().cache_details(thin.dev_id);
        let (mut provisioned, mut filled, mut deferred) = {
            let mut q = thin.queues.lock();
            (q.provisioned.take(), q.filled.take(), q.deferred.take())
        };
        while let Some(bio) = provisioned.pop() {
            worker.finish_overwrite(thin, bio, &mut after_commit);
        }
        while let Some(bio) = filled.pop() {
            worker.finish_fill(thin, bio, &mut after_commit);
        }
        while let Some(bio) = deferred.pop() {
            worker.process(thin, bio, &mut after_commit);
        }
    }
    let requeued = worker.requeued;

    // The periodic commit waits while whole-block writes to new blocks are in flight: their
    // blocks are allocated but not mapped yet, and a commit now followed by a crash would leak
    // them (thin_check reports leaked data blocks). Their completions run the worker again.
    let must_commit = !after_commit.is_empty()
        || (meta.cells.is_empty()
            && meta.last_commit.elapsed() >= Delta::from_millis(COMMIT_PERIOD_MS));
    let committed = if meta.engine.has_uncommitted_changes() && must_commit {
        commit(pool, &mut meta)
    } else {
        true
    };
    check_metadata_threshold(pool, &mut meta);
    let still_dirty = meta.engine.has_uncommitted_changes();
    drop(meta);

    while let Some(mut bio) = after_commit.pop() {
        if !committed {
            bio.end(BlkStatus::IOERR);
        } else if bio.per_bio().stage == Stage::Finished || bio.bio().is_empty() {
            // Its data is on disk (or it carries none) and the data device was flushed by the
            // commit.
            bio.end(BlkStatus::OK);
        } else {
            bio.submit_to(&pool.data_dev);
        }
    }
    if requeued {
        PoolObject::kick(pool);
    }
    if still_dirty {
        PoolObject::kick_later(pool);
    }
}

fn clone_thins(pool: &PoolObject) -> Result<KVec<Arc<ThinState>>> {
    let thins = pool.thins.lock();
    let mut out = KVec::with_capacity(thins.len(), GFP_KERNEL)?;
    for t in thins.iter() {
        out.push(t.clone(), GFP_KERNEL)?;
    }
    Ok(out)
}

/// dm-thin's metadata threshold event (from its metadata space map): raised once when free
/// metadata blocks, the reserve included, fall to min(1024, a quarter of the device), and again
/// only after they have risen above it.
fn check_metadata_threshold(pool: &Arc<PoolObject>, meta: &mut MetaState) {
    let e = &meta.engine;
    let threshold = core::cmp::min(1024, e.metadata_nr_blocks() / 4);
    let below = e.metadata_free_blocks_raw() <= threshold;
    if below && !meta.metadata_threshold_reached {
        pr_warn!(
            "{}: reached low water mark for metadata device: sending event.\n",
            pool.key.pool_md
        );
        meta.metadata_threshold_reached = true;
        pool.raise_event();
    } else if !below {
        meta.metadata_threshold_reached = false;
    }
}

/// Commits; on failure handles it as a failed metadata operation. Returns whether it worked.
pub(super) fn commit(pool: &Arc<PoolObject>, meta: &mut MetaState) -> bool {
    if !pool.mode().metadata_writable() {
        return !meta.engine.has_uncommitted_changes();
    }
    match meta.engine.commit() {
        Ok(()) => {
            meta.last_commit = kernel::time::Instant::now();
            if pool.mode() == PoolMode::OutOfDataSpace && meta.engine.data_free_blocks() > 0 {
                pool.set_mode(PoolMode::Write);
            }
            true
        }
        Err(e) => {
            metadata_failed(pool, meta, "commit", e);
            false
        }
    }
}

/// dm-thin's `metadata_operation_failed`: abort the transaction, set `needs_check`, go
/// read-only; fail mode if any of that fails.
pub(super) fn metadata_failed(
    pool: &Arc<PoolObject>,
    meta: &mut MetaState,
    op: &str,
    e: MetaError,
) {
    pr_err!(
        "{}: metadata operation '{}' failed: {:?}\n",
        pool.key.pool_md,
        op,
        e
    );
    if pool.mode() == PoolMode::Fail {
        return;
    }
    pr_err!(
        "{}: aborting current metadata transaction\n",
        pool.key.pool_md
    );
    meta.engine.block_manager().reset();
    let aborted = meta
        .engine
        .open_in_place(Some(pool.block_size), true)
        .and_then(|()| meta.engine.set_needs_check(true))
        .and_then(|()| meta.engine.commit());
    match aborted {
        Ok(()) => {
            pr_err!(
                "{}: switching pool to read-only mode; run thin_check\n",
                pool.key.pool_md
            );
            pool.set_mode(PoolMode::ReadOnly);
        }
        Err(e) => {
            pr_err!(
                "{}: failed to abort metadata transaction: {:?}\n",
                pool.key.pool_md,
                e
            );
            pool.set_mode(PoolMode::Fail);
        }
    }
    // Whatever was in flight was allocated in the aborted transaction.
    for waiting in meta.cells.waiters_mut() {
        waiting.clear();
    }
}

struct Worker<'a> {
    pool: &'a Arc<PoolObject>,
    meta: &'a mut MetaState,
    /// Bios were put back on a thin's deferred list: run again.
    requeued: bool,
}

impl Worker<'_> {
    fn engine(&mut self) -> &mut Engine {
        &mut self.meta.engine
    }

    fn block_sectors(&self) -> u64 {
        u64::from(self.pool.block_size)
    }

    /// Sends `bio` (already remapped), or parks it for the commit if it asks for durability and
    /// the metadata changed.
    fn issue(&mut self, mut bio: ThinOwnedBio, after_commit: &mut BioList<ThinBio>) {
        let durable = bio.bio().is_preflush() || bio.bio().is_fua();
        if durable && self.engine().has_uncommitted_changes() {
            after_commit.push(bio);
        } else {
            bio.submit_to(&self.pool.data_dev);
        }
    }

    fn process(
        &mut self,
        thin: &Arc<ThinState>,
        mut bio: ThinOwnedBio,
        after_commit: &mut BioList<ThinBio>,
    ) {
        if thin.requeue.load(Ordering::Acquire) {
            // A `--noflush` suspend: dm core keeps the bio until the resume.
            bio.end(BlkStatus::DM_REQUEUE);
            return;
        }
        if self.pool.mode() == PoolMode::Fail {
            bio.end(BlkStatus::IOERR);
            return;
        }
        match bio.bio().op() {
            BioOp::Flush => {
                if self.engine().has_uncommitted_changes() {
                    after_commit.push(bio);
                } else {
                    bio.submit_to(&self.pool.data_dev);
                }
            }
            BioOp::Discard => self.discard(thin, bio),
            BioOp::Read | BioOp::Write => self.read_write(thin, bio, after_commit),
            _ => bio.end(BlkStatus::IOERR),
        }
    }

    fn read_write(
        &mut self,
        thin: &Arc<ThinState>,
        mut bio: ThinOwnedBio,
        after_commit: &mut BioList<ThinBio>,
    ) {
        let bs = self.block_sectors();
        let sector = bio.bio().sector();
        let (vblock, offset) = (sector / bs, sector % bs);
        let is_write = bio.bio().op() == BioOp::Write;

        // The block is being provisioned: wait for its mapping.
        let mut bio = match self
            .meta
            .cells
            .wait(thin.dev_id, vblock, (thin.clone(), bio))
        {
            Ok(()) => return,
            Err((_, returned)) => returned,
        };

        let mapping = match self.engine().lookup(thin.dev_id, vblock) {
            Ok(m) => m,
            Err(e) => {
                metadata_failed(self.pool, self.meta, "lookup", e);
                bio.end(BlkStatus::IOERR);
                return;
            }
        };
        match route(is_write, mapping) {
            Route::Remap(data_block) => {
                bio.bio().set_sector(data_block * bs + offset);
                self.issue(bio, after_commit);
            }
            Route::Provision(shared) => {
                self.provision(thin, bio, vblock, offset, shared, after_commit)
            }
            Route::Hole => match &thin.origin {
                Some(origin) if sector < origin.nr_sectors() => {
                    // Past the origin's end reads zeroes (dm-thin's process_bio).
                    let within = origin.nr_sectors() - sector;
                    if within < u64::from(bio.bio().sectors()) {
                        bio.zero_fill_and_truncate(within as u32);
                    }
                    bio.submit_to(origin)
                }
                _ => bio.zero_fill_and_end(),
            },
        }
    }

    /// Gives `bio` a new data block for `vblock`; `shared` is the block it shares now, if any.
    fn provision(
        &mut self,
        thin: &Arc<ThinState>,
        mut bio: ThinOwnedBio,
        vblock: u64,
        offset: u64,
        shared: Option<u64>,
        after_commit: &mut BioList<ThinBio>,
    ) {
        if !self.pool.mode().metadata_writable() {
            bio.end(BlkStatus::IOERR);
            return;
        }
        if self.pool.mode() == PoolMode::OutOfDataSpace {
            self.no_space(thin, bio);
            return;
        }
        let data_block = match self.alloc() {
            Ok(b) => b,
            Err(MetaError::NoSpace(Space::Data)) => {
                self.no_space(thin, bio);
                return;
            }
            Err(MetaError::NoSpace(Space::Metadata)) => {
                self.out_of_metadata_space();
                bio.end(BlkStatus::IOERR);
                return;
            }
            Err(e) => {
                metadata_failed(self.pool, self.meta, "alloc_data_block", e);
                bio.end(BlkStatus::IOERR);
                return;
            }
        };
        let bs = self.block_sectors();
        if self.meta.cells.lock(thin.dev_id, vblock).is_err() {
            self.release(data_block);
            bio.end(BlkStatus::IOERR);
            return;
        }
        let whole_block = offset == 0 && u64::from(bio.bio().sectors()) == bs;
        let fill = if whole_block {
            None
        } else {
            self.fill_for(thin, vblock, shared)
        };
        *bio.per_bio() = ThinBio {
            stage: Stage::Filling,
            vblock,
            data_block,
            write_ok: true,
            zero_tail: 0,
        };
        match fill {
            None if whole_block => {
                // Mapped when the data is on disk: see `finish_overwrite`.
                bio.per_bio().stage = Stage::Overwrite;
                bio.per_bio().write_ok = false;
                bio.bio().set_sector(data_block * bs);
                bio.submit_to(&self.pool.data_dev);
            }
            // Nothing to fill (`skip_block_zeroing`): map and send it now.
            None => self.finish_fill(thin, bio, after_commit),
            Some(fill) => {
                bio.per_bio().zero_tail = fill.zero_tail;
                self.start_fill(thin, bio, fill.source, 0, fill.count);
            }
        }
    }

    /// What must be written into a new block before a partial write to `vblock` lands in it: a
    /// copy of the shared block, of the external origin's block (zeroes past the origin's end),
    /// or zeroes (unless `skip_block_zeroing`). `None`: nothing.
    fn fill_for(&self, thin: &ThinState, vblock: u64, shared: Option<u64>) -> Option<Fill> {
        let bs = self.block_sectors();
        if let Some(old) = shared {
            return Some(Fill {
                source: Some((self.pool.data_dev.clone(), old * bs)),
                count: bs,
                zero_tail: 0,
            });
        }
        if let Some(origin) = &thin.origin {
            let start = vblock * bs;
            let size = origin.nr_sectors();
            if start < size {
                let n = core::cmp::min(bs, size - start);
                return Some(Fill {
                    source: Some((origin.clone(), start)),
                    count: n,
                    zero_tail: bs - n,
                });
            }
        }
        self.meta.config.zero_new_blocks.then_some(Fill {
            source: None,
            count: bs,
            zero_tail: 0,
        })
    }

    /// Starts a kcopyd job writing `count` sectors from sector `at` of the bio's new block: a
    /// copy from `source` (device, sector), or zeroes. The bio comes back on its thin's
    /// `filled` list (see `finish_fill`).
    fn start_fill(
        &mut self,
        thin: &Arc<ThinState>,
        mut bio: ThinOwnedBio,
        source: Option<(Arc<BlockDevice>, u64)>,
        at: u64,
        count: u64,
    ) {
        let pool = self.pool;
        let to = bio.per_bio().data_block * self.block_sectors() + at;
        let job = FillDone {
            pool: pool.clone(),
            thin: thin.clone(),
            bio,
        };
        let Some(kcopyd) = self.meta.kcopyd.as_ref() else {
            // Only after `shut_down`, when no bio can reach the worker.
            job.done(false);
            return;
        };
        let started = match source {
            Some((from, from_sector)) => {
                kcopyd.copy(&from, from_sector, &pool.data_dev, to, count, job)
            }
            None => kcopyd.zero(&pool.data_dev, to, count, job),
        };
        if let Err(job) = started {
            pr_err!(
                "{}: out of memory starting a kcopyd job\n",
                pool.key.pool_md
            );
            job.done(false);
        }
    }

    /// A kcopyd job on a new block finished: zero what is left of it, or map the block, wake
    /// the bios waiting for it and send the write.
    fn finish_fill(
        &mut self,
        thin: &Arc<ThinState>,
        mut bio: ThinOwnedBio,
        after_commit: &mut BioList<ThinBio>,
    ) {
        let ThinBio {
            vblock,
            data_block,
            write_ok,
            zero_tail,
            ..
        } = *bio.per_bio();
        let bs = self.block_sectors();
        if write_ok && zero_tail > 0 && self.pool.mode().metadata_writable() {
            bio.per_bio().zero_tail = 0;
            self.start_fill(thin, bio, None, bs - zero_tail, zero_tail);
            return;
        }
        bio.per_bio().stage = Stage::Plain;
        if !write_ok {
            pr_err!(
                "{}: preparing data block {} failed\n",
                self.pool.key.pool_md,
                data_block
            );
        }
        if !self.complete_provisioning(thin.dev_id, vblock, data_block, write_ok) {
            bio.end(BlkStatus::IOERR);
            return;
        }
        let offset = bio.bio().sector() % bs;
        bio.bio().set_sector(data_block * bs + offset);
        self.issue(bio, after_commit);
    }

    /// The data for new block `data_block` of `vblock` of thin `dev_id` is written (`data_ok`)
    /// or failed: unlock the block's cell and map the block, or give it back. Returns whether
    /// the block is mapped.
    fn complete_provisioning(
        &mut self,
        dev_id: u64,
        vblock: u64,
        data_block: u64,
        data_ok: bool,
    ) -> bool {
        self.unlock_cell(dev_id, vblock);
        if !self.pool.mode().metadata_writable() {
            // The transaction that allocated the block was aborted.
            return false;
        }
        if !data_ok {
            self.release(data_block);
            return false;
        }
        self.map_block(dev_id, vblock, data_block)
    }

    /// `vblock` of thin `dev_id` is provisioned (or failed to be): the bios waiting for it go
    /// back to their thins' deferred lists, for the next run.
    fn unlock_cell(&mut self, dev_id: u64, vblock: u64) {
        for (waiter_thin, waiter) in self.meta.cells.unlock(dev_id, vblock).drain_all() {
            waiter_thin.queues.lock().deferred.push(waiter);
            self.requeued = true;
        }
    }

    /// A whole-block write to a new block completed: map the block, wake the bios waiting for
    /// it, complete the write (after the commit if it asked for durability).
    fn finish_overwrite(
        &mut self,
        thin: &ThinState,
        mut bio: ThinOwnedBio,
        after_commit: &mut BioList<ThinBio>,
    ) {
        let ThinBio {
            vblock,
            data_block,
            write_ok,
            ..
        } = *bio.per_bio();
        bio.per_bio().stage = Stage::Finished;
        if !self.complete_provisioning(thin.dev_id, vblock, data_block, write_ok) {
            bio.end(BlkStatus::IOERR);
            return;
        }
        if bio.bio().is_preflush() || bio.bio().is_fua() {
            after_commit.push(bio);
        } else {
            bio.end(BlkStatus::OK);
        }
    }

    fn discard(&mut self, thin: &ThinState, mut bio: ThinOwnedBio) {
        if !self.pool.mode().metadata_writable() {
            // dm-thin completes discards as no-ops when it cannot change the metadata.
            bio.end(BlkStatus::OK);
            return;
        }
        let bs = self.block_sectors();
        let start = bio.bio().sector();
        let end = start + u64::from(bio.bio().sectors());
        // Only whole blocks can be unmapped.
        let (first, last) = (start.div_ceil(bs), end / bs);
        let r = if !self.meta.config.discard_passdown {
            self.engine()
                .remove_range(thin.dev_id, first, last)
                .map(|_| ())
        } else {
            self.unmap_and_pass_down(thin.dev_id, first, last)
        };
        match r {
            Ok(()) => bio.end(BlkStatus::OK),
            Err(MetaError::NoSpace(Space::Metadata)) if !self.engine().has_failed() => {
                self.out_of_metadata_space();
                bio.end(BlkStatus::IOERR);
            }
            Err(e) => {
                metadata_failed(self.pool, self.meta, "discard", e);
                bio.end(BlkStatus::IOERR);
            }
        }
    }

    /// Only the metadata reserve is left (the engine refused the change before making it):
    /// commit, and if that frees nothing switch to read-only metadata, as dm-thin's
    /// out-of-metadata-space mode does. Growing the metadata device brings the pool back.
    fn out_of_metadata_space(&mut self) {
        if commit(self.pool, self.meta) && self.engine().metadata_free_blocks() > 0 {
            return;
        }
        pr_warn!(
            "{}: no free metadata space available\n",
            self.pool.key.pool_md
        );
        self.pool.set_mode(PoolMode::OutOfMetadataSpace);
    }

    /// Unmaps `[first, last)` of thin `dev_id` and discards, on the data device, every data
    /// block that no other thin uses any more. (A block freed this way cannot be reused before
    /// the next commit, and the discard finishes before the worker goes on, so no new data can
    /// be discarded by mistake.)
    fn unmap_and_pass_down(&mut self, dev_id: u64, first: u64, last: u64) -> Result<(), MetaError> {
        let bs = self.block_sectors();
        for vblock in first..last {
            let Some(m) = self.engine().lookup(dev_id, vblock)? else {
                continue;
            };
            self.engine().remove(dev_id, vblock)?;
            if self.engine().data_block_count(m.data_block)? == 0 {
                // A failed passdown loses nothing: the block is unmapped either way.
                let _ = self.pool.data_dev.discard(m.data_block * bs, bs);
            }
        }
        Ok(())
    }

    /// Allocates a data block; when none is free, commits once to recycle blocks freed in this
    /// transaction and tries again (dm-thin's `alloc_data_block`).
    fn alloc(&mut self) -> Result<u64, MetaError> {
        // dm-thin looks at the free count before allocating.
        self.check_low_water_mark();
        match self.engine().alloc_data_block() {
            Err(MetaError::NoSpace(_)) if self.engine().has_uncommitted_changes() => {
                if !commit(self.pool, self.meta) {
                    return Err(MetaError::Io { block: 0 });
                }
                self.engine().alloc_data_block()
            }
            r => r,
        }
    }

    /// dm-thin's `check_low_water_mark`: one event per resume when free data blocks fall to
    /// the table's low water mark.
    fn check_low_water_mark(&mut self) {
        let free = self.engine().data_free_blocks();
        if !self.meta.low_water_triggered && free <= self.meta.config.low_water_mark {
            pr_info!(
                "{}: reached low water mark for data device: sending event.\n",
                self.pool.key.pool_md
            );
            self.meta.low_water_triggered = true;
            self.pool.raise_event();
        }
    }

    /// Maps `vblock` of thin `dev_id` to `data_block`; a failure is handled as a failed metadata
    /// operation. Returns whether it worked.
    fn map_block(&mut self, dev_id: u64, vblock: u64, data_block: u64) -> bool {
        match self.engine().insert(dev_id, vblock, data_block) {
            Ok(()) => true,
            Err(e) => {
                metadata_failed(self.pool, self.meta, "insert", e);
                false
            }
        }
    }

    /// Returns an allocated but unmapped block.
    fn release(&mut self, data_block: u64) {
        if let Err(e) = self.engine().release_data_block(data_block) {
            metadata_failed(self.pool, self.meta, "release_data_block", e);
        }
    }

    /// Out of data space: fail the bio (`error_if_no_space`) or keep it until the pool grows.
    fn no_space(&mut self, thin: &ThinState, bio: ThinOwnedBio) {
        if self.pool.mode() == PoolMode::Write {
            self.pool.set_mode(PoolMode::OutOfDataSpace);
        }
        if self.meta.config.error_if_no_space {
            bio.end(BlkStatus::NOSPC);
        } else {
            thin.queues.lock().no_space.push(bio);
        }
    }
}
