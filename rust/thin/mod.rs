// SPDX-License-Identifier: GPL-2.0

//! The `rthin` target: a thin device of an `rthin-pool`.
//!
//! The constructor validates the table line and opens the devices exactly as dm-thin does,
//! finds the pool object in the shared [`PoolRegistry`], checks that the thin device exists in
//! the pool's metadata and registers a [`ThinState`] with the pool. `map` hands every bio to the
//! pool worker (which provisions, remaps or completes it); `end_io` hands whole-block writes to
//! new blocks back to the worker so their mapping is inserted once the data is on disk.

mod params;

use crate::{
    dm::{
        self, Args, BlkStatus, BlockDevice, CtrError, DevT, EndIoOutcome, EndIoRequest, MapOutcome,
        MapRequest, OpenMode, QueueLimits, RateLimit, ResultWriter, StatusFlags, StatusType,
        TargetCtr, TargetFeatures, TargetRef,
    },
    metadata::Error as MetaError,
    pool::{FastPath, PoolHandle, PoolMode, PoolObject, PoolRegistry, Stage, ThinBio, ThinState},
};
use core::{fmt::Write, sync::atomic::Ordering};
use kernel::{prelude::*, sync::Arc};
use params::{parse_dev_id, parse_thin_args};

/// The `rthin` target type.
pub(crate) struct ThinTarget;

/// One `rthin` table entry.
#[pin_data(PinnedDrop)]
pub(crate) struct ThinInstance {
    pool: PoolHandle,
    /// The pool device and the external origin as the table names them (dm-thin prints these).
    pool_devt: DevT,
    origin_devt: Option<DevT>,
    dev_id: u64,
    /// What the pool worker sees of this table.
    state: Arc<ThinState>,
    #[pin]
    io_error_log: RateLimit,
}

#[pinned_drop]
impl PinnedDrop for ThinInstance {
    fn drop(self: Pin<&mut Self>) {
        // dm core destroys a table only after all its bios completed: nothing of this table is
        // queued any more.
        self.pool.pool().remove_thin(&self.state);
    }
}

#[vtable]
impl dm::Target for ThinTarget {
    const NAME: &'static CStr = c"rthin";
    const VERSION: [u32; 3] = [1, 24, 0];
    const FEATURES: TargetFeatures = TargetFeatures::PASSES_CRYPTO;

    type Shared = Arc<PoolRegistry>;
    type Private = Pin<KBox<ThinInstance>>;
    type PerBio = ThinBio;

    fn ctr(
        registry: &Arc<PoolRegistry>,
        ti: &mut TargetCtr<'_>,
        args: Args<'_>,
    ) -> Result<Pin<KBox<ThinInstance>>, CtrError> {
        let args = parse_thin_args(args)?;

        let origin_dev = match args.origin_dev {
            Some(path) => Some(
                ti.get_device(path, OpenMode::READ)
                    .map_err(|e| CtrError::new(e, c"Error opening origin device"))?,
            ),
            None => None,
        };
        // The pool device is opened with the table's own mode, as dm-thin does.
        let table_mode = ti.table_mode();
        let pool_dev = ti
            .get_device(args.pool_dev, table_mode)
            .map_err(|e| CtrError::new(e, c"Error opening pool device"))?;

        let dev_id = parse_dev_id(args.dev_id)?;

        let pool_md = ti.device(pool_dev).ok_or(EINVAL)?.devt();
        let origin_devt = match origin_dev {
            Some(h) => Some(ti.device(h).ok_or(EINVAL)?.devt()),
            None => None,
        };
        if !pool_md.is_mapped_device() {
            return Err(CtrError::new(EINVAL, c"Couldn't get pool mapped device"));
        }
        let pool = PoolRegistry::find_by_mapped_device(registry, pool_md)
            .ok_or(CtrError::new(EINVAL, c"Couldn't find pool object"))?;
        let object = pool.pool();
        if object.mode() == PoolMode::Fail {
            return Err(CtrError::new(
                EINVAL,
                c"Couldn't open thin device, Pool is in fail mode",
            ));
        }
        let exists = object.meta.read().engine.device_exists(dev_id);
        match exists {
            Ok(true) => {}
            Ok(false) => {
                return Err(CtrError::new(
                    dm::enodata(),
                    c"Couldn't open thin internal device",
                ))
            }
            Err(e) => {
                return Err(CtrError::new(
                    Error::from_errno(-e.errno()),
                    c"Couldn't open thin internal device",
                ))
            }
        }

        // Bios must not cross a data block boundary.
        ti.set_max_io_len(u64::from(object.block_size))
            .map_err(|e| CtrError::new(e, c"Maximum size of target IO is too large"))?;
        ti.set_num_flush_bios(1);
        ti.set_limit_swap_bios(true);
        ti.set_flush_supported(true);
        ti.set_accounts_remapped_io(true);
        if object.discard_enabled {
            ti.set_discards_supported(true);
            ti.set_num_discard_bios(1);
            ti.set_max_discard_granularity(true);
        }
        if object.is_suspended() {
            return Err(CtrError::new(
                EINVAL,
                c"Unable to activate thin device while pool is suspended",
            ));
        }

        // The worker's own counted open: it stays valid for as long as it holds the state.
        let origin_bdev = match origin_devt {
            Some(devt) => Some(Arc::new(
                BlockDevice::open(devt, false)
                    .map_err(|e| CtrError::new(e, c"Error opening origin device"))?,
                GFP_KERNEL,
            )?),
            None => None,
        };
        let state = ThinState::new(dev_id, origin_bdev)?;
        let registered = state.clone();

        let instance = try_pin_init!(ThinInstance {
            pool,
            pool_devt: pool_md,
            origin_devt,
            dev_id,
            state,
            io_error_log <- RateLimit::new(),
        }? Error);
        let instance =
            KBox::pin_init(instance, GFP_KERNEL).map_err(|e| CtrError::new(e, c"Out of memory"))?;
        // Registered only now: the instance's drop unregisters it, on every path.
        instance.pool.pool().add_thin(registered)?;
        Ok(instance)
    }

    fn map<'a>(
        thin: Pin<&ThinInstance>,
        ti: &TargetRef,
        mut bio: MapRequest<'a, ThinBio>,
    ) -> MapOutcome<'a> {
        let pool = thin.pool.arc();
        if thin.state.requeue.load(Ordering::Acquire) {
            // A `--noflush` suspend is under way: dm core keeps the bio until the resume.
            return bio.requeue();
        }
        if pool.mode() == PoolMode::Fail {
            if thin.io_error_log.allow() {
                pr_err!("thin {}: pool is in fail mode; failing I/O\n", thin.dev_id);
            }
            return bio.kill();
        }
        // The worker works in sectors of the thin device.
        let sector = ti.target_offset(bio.bio().sector());
        bio.bio().set_sector(sector);
        match pool.try_map(&thin.state, bio.bio()) {
            FastPath::Remap(data_block) => {
                let bs = u64::from(pool.block_size);
                bio.bio().set_sector(data_block * bs + sector % bs);
                return bio.remap_to(&pool.data_dev);
            }
            FastPath::Zeroes => {
                let (owned, outcome) = bio.take();
                owned.zero_fill_and_end();
                return outcome;
            }
            FastPath::Defer => {}
        }
        let (owned, outcome) = bio.take();
        thin.state.queues.lock().deferred.push(owned);
        PoolObject::kick(pool);
        outcome
    }

    fn end_io<'a>(
        thin: Pin<&ThinInstance>,
        _ti: &TargetRef,
        mut bio: EndIoRequest<'a, ThinBio>,
        status: &mut BlkStatus,
    ) -> EndIoOutcome<'a> {
        if bio.per_bio().stage != Stage::Overwrite {
            return bio.done();
        }
        // A whole-block write to a new block reached the disk (or failed): the worker maps the
        // block and completes the bio.
        bio.per_bio().write_ok = status.is_ok();
        let (owned, outcome) = bio.take();
        thin.state.queues.lock().provisioned.push(owned);
        PoolObject::kick(thin.pool.arc());
        outcome
    }

    fn presuspend(thin: Pin<&ThinInstance>, ti: &TargetRef) {
        // dm-thin's `thin_presuspend`: with `--noflush`, bios waiting in the pool (for data
        // space above all) go back to dm core, so the suspend does not wait for them.
        if ti.noflush_suspending() {
            thin.state.requeue.store(true, Ordering::Release);
            thin.pool.pool().requeue_waiting(&thin.state);
        }
    }

    fn postsuspend(thin: Pin<&ThinInstance>, _ti: &TargetRef) {
        // Suspended: dm core holds new bios itself until the resume.
        thin.state.requeue.store(false, Ordering::Release);
    }

    fn resume(thin: Pin<&ThinInstance>, _ti: &TargetRef) {
        // Also after a suspend that failed between presuspend and postsuspend.
        thin.state.requeue.store(false, Ordering::Release);
    }

    fn io_hints(thin: Pin<&ThinInstance>, _ti: &TargetRef, limits: &mut QueueLimits) {
        let pool = thin.pool.pool();
        if pool.discard_enabled {
            // Discards are unmapped in whole blocks, at most 1024 per bio (dm-thin's
            // BIO_PRISON_MAX_RANGE).
            let bs = pool.block_size;
            limits.set_discard_granularity(bs.saturating_mul(512));
            limits.set_max_hw_discard_sectors(bs.saturating_mul(1024));
        }
    }

    fn status(
        thin: Pin<&ThinInstance>,
        _ti: &TargetRef,
        kind: StatusType,
        _flags: StatusFlags,
        out: &mut ResultWriter<'_>,
    ) {
        // A full buffer is not an error: dm core retries with a larger one.
        let _ = if thin.pool.pool().mode() == PoolMode::Fail {
            // dm-thin prints only "Fail", for both kinds, while the pool is in fail mode.
            match kind {
                StatusType::Info | StatusType::Table => out.write_str("Fail"),
                StatusType::Ima => Ok(()),
            }
        } else {
            match kind {
                StatusType::Info => thin.emit_info(out),
                StatusType::Table => thin.emit_table(out),
                StatusType::Ima => Ok(()),
            }
        };
    }
}

impl ThinInstance {
    /// `<mapped sectors> <highest mapped sector>|-`, as dm-thin's `thin_status` INFO.
    fn emit_info(&self, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        let pool = self.pool.pool();
        let bs = u64::from(pool.block_size);
        let counts = {
            let meta = pool.meta.read();
            meta.engine.device_details(self.dev_id).and_then(|d| {
                let highest = meta.engine.highest_mapped(self.dev_id)?;
                Ok::<_, MetaError>((d.mapped_blocks, highest))
            })
        };
        match counts {
            Ok((mapped, highest)) => {
                write!(out, "{} ", mapped * bs)?;
                match highest {
                    Some(h) => write!(out, "{}", (h + 1) * bs - 1),
                    None => out.write_str("-"),
                }
            }
            Err(_) => out.write_str("Error"),
        }
    }

    /// `<pool dev> <dev id>[ <origin dev>]`, as dm-thin prints the table line.
    fn emit_table(&self, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        write!(out, "{} {}", self.pool_devt, self.dev_id)?;
        if let Some(origin) = &self.origin_devt {
            write!(out, " {}", origin)?;
        }
        Ok(())
    }
}
