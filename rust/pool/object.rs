// SPDX-License-Identifier: GPL-2.0

//! [`PoolObject`]: one pool (dm-thin's `struct pool`): the open metadata, the data device, the
//! worker that provisions blocks, the mode, and the thin tables using it.
//!
//! It outlives table reloads: it is created by the first `rthin-pool` table on a metadata
//! device, shared through the registry by later pool tables on the same mapped device and by
//! thin tables, and shut down when the last of them goes. It therefore holds counted
//! [`BlockDevice`] handles, never a table's `DmDev`.
//!
//! Locking: `meta` (a reader-writer semaphore) serialises every metadata change; the worker
//! holds its write side for a batch of bios. Thin `map` only tries its read side (never
//! waiting) to resolve provisioned blocks; otherwise it and `end_io` queue bios under their
//! `ThinState`'s irq-safe lock and kick the worker.

use super::{
    bufio_bm::BufioBlockManager,
    cells::Cells,
    registry::PoolKey,
    routing::{fast_candidate, fast_path},
    thin_state::ThinState,
};
use crate::{
    dm::{Bio, BlkStatus, BlockDevice, CtrError, EventRelay, Kcopyd, OwnedQueue, RwSemaphore},
    metadata::{self, Error as MetaError},
    new_rwsem,
};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
    time::{Instant, Monotonic},
    workqueue::{self, impl_has_delayed_work, impl_has_work, new_delayed_work, new_work},
};

/// The metadata engine on the pool's metadata device.
pub(crate) type Engine = metadata::Pool<BufioBlockManager>;

/// dm-thin's pool modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PoolMode {
    /// Normal operation (`rw`).
    Write = 0,
    /// No free data block: writes needing one are queued or failed (`out_of_data_space`).
    OutOfDataSpace = 1,
    /// The metadata reserve is all that is left: metadata is read-only (`ro`).
    OutOfMetadataSpace = 2,
    /// Metadata is read-only (`read_only` feature or a failed metadata operation) (`ro`).
    ReadOnly = 3,
    /// Nothing works: the abort of a failed transaction failed too (`Fail`).
    Fail = 4,
}

impl PoolMode {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Write,
            1 => Self::OutOfDataSpace,
            2 => Self::OutOfMetadataSpace,
            3 => Self::ReadOnly,
            _ => Self::Fail,
        }
    }

    /// Whether metadata can change (writes can provision, messages are served).
    pub(crate) fn metadata_writable(self) -> bool {
        matches!(self, Self::Write | Self::OutOfDataSpace)
    }
}

/// The settings of the pool table most recently resumed (dm-thin binds the pool object to it
/// in preresume).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolConfig {
    pub(crate) zero_new_blocks: bool,
    pub(crate) discard_passdown: bool,
    pub(crate) error_if_no_space: bool,
    pub(crate) low_water_mark: u64,
}

/// A bio waiting in a cell, with the thin it came from.
pub(crate) type Waiter = (Arc<ThinState>, crate::dm::OwnedBio<super::ThinBio>);

/// State behind the metadata lock.
pub(crate) struct MetaState {
    pub(crate) engine: KBox<Engine>,
    /// When the last commit happened (dm-thin commits at least every second when dirty).
    pub(crate) last_commit: Instant<Monotonic>,
    /// Virtual blocks being provisioned (a whole-block write or a kcopyd fill in flight), with
    /// the bios that wait for them.
    pub(crate) cells: Cells<Waiter>,
    /// Zeroes and copies new blocks. Here rather than in the pool object so that the last
    /// table's `shut_down` destroys it, in process context with a reference to the pool still
    /// held: a kcopyd callback then never drops the last reference to the pool (which would
    /// destroy the client from its own thread).
    pub(crate) kcopyd: Option<Kcopyd>,
    /// The active pool table's settings.
    pub(crate) config: PoolConfig,
    /// The low water mark event fired since the last resume.
    pub(crate) low_water_triggered: bool,
    /// Free metadata (reserve included) is at or below the metadata threshold: the edge-
    /// triggered event has fired and re-arms when space comes back above it.
    pub(crate) metadata_threshold_reached: bool,
}

/// A pool object.
#[pin_data]
pub(crate) struct PoolObject {
    pub(crate) key: PoolKey,
    /// Data block size in sectors, fixed when the pool object was created.
    pub(crate) block_size: u32,
    /// Whether discards were enabled when the pool object was created.
    pub(crate) discard_enabled: bool,
    pub(crate) data_dev: Arc<BlockDevice>,
    wq: OwnedQueue,
    mode: AtomicU8,
    /// Set in postsuspend, cleared in resume (thin tables cannot be created meanwhile).
    suspended: AtomicBool,
    /// Set when the last table lets go: nothing may queue work any more.
    dying: AtomicBool,
    /// Seconds spent out of data space so far (the no-space timeout's clock).
    no_space_seconds: AtomicU32,
    /// Written by the worker, messages, status and suspend/resume; read without waiting by
    /// `map` to resolve provisioned blocks.
    #[pin]
    pub(crate) meta: RwSemaphore<MetaState>,
    #[pin]
    pub(crate) thins: Mutex<KVec<Arc<ThinState>>>,
    /// Raises the table event of the pool table most recently resumed.
    #[pin]
    events: Mutex<Option<Arc<EventRelay>>>,
    #[pin]
    work: workqueue::Work<PoolObject, 0>,
    #[pin]
    commit_timer: workqueue::DelayedWork<PoolObject, 1>,
    /// Fires `no_space_timeout` seconds after the pool ran out of data space.
    #[pin]
    no_space_timer: workqueue::DelayedWork<PoolObject, 2>,
}

impl_has_work! {
    impl HasWork<Self, 0> for PoolObject { self.work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, 1> for PoolObject { self.commit_timer }
    impl HasDelayedWork<Self, 2> for PoolObject { self.no_space_timer }
}

impl workqueue::WorkItem<0> for PoolObject {
    type Pointer = Arc<PoolObject>;

    fn run(this: Arc<PoolObject>) {
        super::worker::run(&this);
    }
}

impl workqueue::WorkItem<1> for PoolObject {
    type Pointer = Arc<PoolObject>;

    fn run(this: Arc<PoolObject>) {
        super::worker::run(&this);
    }
}

impl workqueue::WorkItem<2> for PoolObject {
    type Pointer = Arc<PoolObject>;

    /// The no-space timeout, polled every second while the pool is out of data space (a
    /// pending delayed work cannot be re-armed earlier, and `no_space_timeout` may change at
    /// run time): once it expires, switch to `error_if_no_space` and fail the queued bios with
    /// ENOSPC (dm-thin's `do_no_space_timeout`).
    fn run(this: Arc<PoolObject>) {
        if this.dying.load(Ordering::Acquire) || this.mode() != PoolMode::OutOfDataSpace {
            return;
        }
        let waited = this.no_space_seconds.fetch_add(1, Ordering::AcqRel) + 1;
        let timeout = crate::dm::no_space_timeout_secs();
        if timeout == 0 || waited < timeout {
            PoolObject::arm_no_space_timer(&this);
            return;
        }
        if this.meta.write().config.error_if_no_space {
            return;
        }
        pr_warn!(
            "{}: switching pool to out-of-data-space (error IO) mode\n",
            this.key.pool_md
        );
        this.meta.write().config.error_if_no_space = true;
        for thin in this.thins.lock().iter() {
            let mut waiting = thin.queues.lock().no_space.take();
            while let Some(bio) = waiting.pop() {
                bio.end(BlkStatus::NOSPC);
            }
        }
        this.raise_event();
    }
}

/// Why opening the metadata failed, as dm-thin reports it.
fn open_error(e: MetaError) -> CtrError {
    pr_err!("rthin-pool: could not open the metadata: {:?}\n", e);
    match e {
        MetaError::NoMemory => CtrError::new(ENOMEM, c"Error creating metadata object"),
        MetaError::BlockSizeMismatch { .. } => {
            CtrError::new(EINVAL, c"Error creating metadata object")
        }
        MetaError::UnsupportedFeatures { .. } => {
            CtrError::new(EINVAL, c"Error creating metadata object")
        }
        _ => CtrError::new(EIO, c"Error creating metadata object"),
    }
}

/// What `map` can do with a thin bio without the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FastPath {
    /// Send it to this data block (same offset within the block).
    Remap(u64),
    /// Complete it with zeroes.
    Zeroes,
    /// Leave it to the worker.
    Defer,
}

/// What a new pool object is made from.
pub(crate) struct PoolParams {
    pub(crate) key: PoolKey,
    pub(crate) block_size: u32,
    pub(crate) discard_enabled: bool,
    pub(crate) read_only: bool,
    pub(crate) config: PoolConfig,
}

impl PoolObject {
    /// Opens (or, when its first 4 KiB are zero, formats) the metadata and creates the pool.
    pub(crate) fn create(p: PoolParams) -> Result<Arc<Self>, CtrError> {
        let data_dev = Arc::new(
            BlockDevice::open(p.key.data, true)
                .map_err(|e| CtrError::new(e, c"Error getting data device"))?,
            GFP_KERNEL,
        )?;
        let metadata_dev = BlockDevice::open(p.key.metadata, !p.read_only)
            .map_err(|e| CtrError::new(e, c"Error opening metadata block device"))?;
        let bm = BufioBlockManager::new(metadata_dev, data_dev.clone())
            .map_err(|e| CtrError::new(e, c"Error creating metadata object"))?;
        // `Pool` is ~7 KiB: built in its heap slot and loaded in place, never moved by value.
        // Allocated first and then written, so the compiler builds it in the heap slot.
        let mut engine = KBox::<Engine>::new_uninit(GFP_KERNEL)?.write(Engine::unloaded(bm));
        let formatted = Engine::is_formatted(engine.block_manager()).map_err(open_error)?;
        if formatted {
            engine
                .open_in_place(Some(p.block_size), !p.read_only)
                .map_err(open_error)?;
        } else if p.read_only {
            return Err(CtrError::new(EPERM, c"Error creating metadata object"));
        } else {
            engine.format_in_place(p.block_size).map_err(open_error)?;
        }
        let mode = if p.read_only || engine.needs_check() {
            PoolMode::ReadOnly
        } else {
            PoolMode::Write
        };
        let kcopyd =
            Kcopyd::new().map_err(|e| CtrError::new(e, c"Error creating pool's kcopyd client"))?;
        let wq = OwnedQueue::new(c"rthin-pool")
            .map_err(|e| CtrError::new(e, c"Error creating pool's workqueue"))?;
        let meta = MetaState {
            engine,
            last_commit: Instant::now(),
            cells: Cells::new(),
            kcopyd: Some(kcopyd),
            config: p.config,
            low_water_triggered: false,
            metadata_threshold_reached: false,
        };
        let pool = Arc::pin_init(
            try_pin_init!(Self {
                key: p.key,
                block_size: p.block_size,
                discard_enabled: p.discard_enabled,
                data_dev,
                wq,
                mode: AtomicU8::new(mode as u8),
                suspended: AtomicBool::new(true),
                dying: AtomicBool::new(false),
                no_space_seconds: AtomicU32::new(0),
                meta <- new_rwsem!(meta, "PoolObject::meta"),
                thins <- new_mutex!(KVec::new(), "PoolObject::thins"),
                events <- new_mutex!(None, "PoolObject::events"),
                work <- new_work!("PoolObject::work"),
                commit_timer <- new_delayed_work!(),
                no_space_timer <- new_delayed_work!(),
            }? Error),
            GFP_KERNEL,
        )?;
        Ok(pool)
    }

    /// The current mode.
    pub(crate) fn mode(&self) -> PoolMode {
        PoolMode::from_u8(self.mode.load(Ordering::Acquire))
    }

    /// Polls the no-space timeout in a second (a no-op if a poll is already pending).
    fn arm_no_space_timer(this: &Arc<Self>) {
        if this.dying.load(Ordering::Acquire) {
            return;
        }
        let _ = this.wq.enqueue_delayed::<Arc<PoolObject>, 2>(
            this.clone(),
            kernel::time::msecs_to_jiffies(1000),
        );
    }

    /// Raises a table event on the bound pool table (process context).
    pub(crate) fn raise_event(&self) {
        let relay = self.events.lock().clone();
        if let Some(relay) = relay {
            relay.raise();
        }
    }

    /// Binds the pool to the pool table being resumed: its events go there.
    pub(crate) fn bind_events(&self, relay: Option<Arc<EventRelay>>) {
        *self.events.lock() = relay;
    }

    /// Changes the mode, logging the change and raising a table event as dm-thin does.
    pub(crate) fn set_mode(self: &Arc<Self>, new: PoolMode) {
        let old = PoolMode::from_u8(self.mode.swap(new as u8, Ordering::AcqRel));
        // Fail is never left.
        if old == PoolMode::Fail {
            self.mode.store(PoolMode::Fail as u8, Ordering::Release);
            return;
        }
        if old != new {
            if new == PoolMode::OutOfDataSpace {
                self.no_space_seconds.store(0, Ordering::Release);
                PoolObject::arm_no_space_timer(self);
            }
            let what = match new {
                PoolMode::Write => "write",
                PoolMode::OutOfDataSpace => "out-of-data-space",
                PoolMode::OutOfMetadataSpace => "out-of-metadata-space",
                PoolMode::ReadOnly => "read-only",
                PoolMode::Fail => "failure",
            };
            pr_info!("{}: switching pool to {} mode\n", self.key.pool_md, what);
            self.raise_event();
        }
    }

    /// Whether the pool is suspended.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::Acquire)
    }

    /// Records a suspend or resume of the pool table.
    pub(crate) fn set_suspended(&self, on: bool) {
        self.suspended.store(on, Ordering::Release);
    }

    /// Runs the worker soon. Callable from any context (queueing work never sleeps).
    pub(crate) fn kick(this: &Arc<Self>) {
        if this.dying.load(Ordering::Acquire) {
            return;
        }
        // Already queued is fine: the queued run will see the new work.
        let _ = this.wq.enqueue::<Arc<PoolObject>, 0>(this.clone());
    }

    /// Runs the worker in about a second (the periodic commit).
    pub(crate) fn kick_later(this: &Arc<Self>) {
        if this.dying.load(Ordering::Acquire) {
            return;
        }
        let _ = this.wq.enqueue_delayed::<Arc<PoolObject>, 1>(
            this.clone(),
            kernel::time::msecs_to_jiffies(1000),
        );
    }

    /// Called when the last table lets go: no more work is queued, pending work has run.
    ///
    /// Process context. After it returns no work item and no kcopyd job holds a reference to
    /// the pool, so the last reference is dropped by the caller, never by the worker (whose
    /// queue the pool owns) or a kcopyd callback (whose client the pool owns).
    pub(crate) fn shut_down(&self) {
        self.dying.store(true, Ordering::Release);
        *self.events.lock() = None;
        crate::dm::flush_delayed_work(&self.commit_timer);
        crate::dm::flush_delayed_work(&self.no_space_timer);
        self.wq.flush();
        let mut meta = self.meta.write();
        if self.mode().metadata_writable() {
            if let Err(e) = meta.engine.commit() {
                pr_err!("{}: commit at shutdown failed: {:?}\n", self.key.pool_md, e);
            }
        }
        // No table is left, so no bio and no kcopyd job of ours is in flight; destroying the
        // client (which waits for its jobs) here makes that certain.
        let kcopyd = meta.kcopyd.take();
        drop(meta);
        drop(kcopyd);
    }

    /// Decides a thin bio in `map` when that needs no metadata change and no I/O: a read or
    /// write of a provisioned block it may use as it is (remapped), or a read of a hole without
    /// an external origin (zeroes). Everything else goes to the worker. Never sleeps: the
    /// metadata lock is only tried, and only cached metadata blocks are read.
    pub(crate) fn try_map(&self, thin: &ThinState, bio: &Bio) -> FastPath {
        let Some(is_write) = fast_candidate(bio.op(), bio.is_preflush() || bio.is_fua()) else {
            return FastPath::Defer;
        };
        let Some(meta) = self.meta.try_read() else {
            return FastPath::Defer;
        };
        let vblock = bio.sector() / u64::from(self.block_size);
        let in_cell = meta.cells.is_locked(thin.dev_id, vblock);
        let lookup = if in_cell {
            None
        } else {
            meta.engine.try_lookup(thin.dev_id, vblock).ok()
        };
        fast_path(is_write, in_cell, lookup, thin.origin.is_some())
    }

    /// Hands every bio of `thin` waiting in the pool (for the worker, for a block being
    /// provisioned, for data space) back to dm core with `DM_REQUEUE` (dm-thin's `requeue_io`,
    /// for a `--noflush` suspend). Bios already sent to a device, or whose block kcopyd is
    /// filling, finish normally: the suspend waits for them.
    ///
    /// Process context: waits for a running worker.
    pub(crate) fn requeue_waiting(&self, thin: &ThinState) {
        let mut meta = self.meta.write();
        for waiting in meta.cells.waiters_mut() {
            let mut i = 0;
            while i < waiting.len() {
                if core::ptr::eq(&*waiting[i].0, thin) {
                    if let Ok((_, bio)) = waiting.remove(i) {
                        bio.end(BlkStatus::DM_REQUEUE);
                        continue;
                    }
                }
                i += 1;
            }
        }
        let (mut deferred, mut no_space) = {
            let mut q = thin.queues.lock();
            (q.deferred.take(), q.no_space.take())
        };
        drop(meta);
        while let Some(bio) = deferred.pop().or_else(|| no_space.pop()) {
            bio.end(BlkStatus::DM_REQUEUE);
        }
    }

    /// Registers an active thin table.
    pub(crate) fn add_thin(&self, thin: Arc<ThinState>) -> Result {
        self.thins.lock().push(thin, GFP_KERNEL)?;
        Ok(())
    }

    /// Unregisters a thin table (its bios have all completed: dm core waits for them first).
    pub(crate) fn remove_thin(&self, thin: &Arc<ThinState>) {
        let mut thins = self.thins.lock();
        if let Some(i) = thins.iter().position(|t| Arc::ptr_eq(t, thin)) {
            let _ = thins.remove(i);
        }
    }

    /// Whether a thin table for `dev_id` is active.
    pub(crate) fn thin_is_active(&self, dev_id: u64) -> bool {
        self.thins.lock().iter().any(|t| t.dev_id == dev_id)
    }
}
