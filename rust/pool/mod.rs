// SPDX-License-Identifier: GPL-2.0

//! The `rthin-pool` target: binds a metadata device and a data device into a pool.
//!
//! The constructor validates the table line exactly as dm-thin does, opens both devices and
//! attaches to (or creates) the pool object, which opens the metadata (formatting it when its
//! first 4 KiB are zero). The pool object survives reloads; preresume binds it to the newest
//! table's settings and grows the data and metadata space maps to the devices' sizes. Status
//! lines and messages follow dm-thin 1.24 exactly. I/O sent to the pool device itself goes to
//! the data device, as dm-thin's `pool_map()` does: that is also how thin bios, remapped to the
//! pool device by the worker, reach the data device.

mod bufio_bm;
mod cells;
#[cfg(CONFIG_KUNIT = "y")]
mod mem_blocks;
mod messages;
mod metadata_kunit;
mod object;
mod params;
mod registry;
mod routing;
mod status;
mod thin_state;
mod worker;

pub(crate) use object::{FastPath, PoolMode, PoolObject};
pub(crate) use registry::{PoolHandle, PoolRegistry};
pub(crate) use thin_state::{Stage, ThinBio, ThinState};

use crate::dm::{
    self, Args, CtrError, DevHandle, DeviceVisitor, DmDev, IterationStop, MapOutcome, MapRequest,
    OpenMode, QueueLimits, ResultWriter, StatusFlags, StatusType, TargetCtr, TargetFeatures,
    TargetRef,
};
use crate::metadata::BlockManager;
use core::fmt::Write;
use kernel::{prelude::*, sync::Arc};
use object::{PoolConfig, PoolParams};
use params::{
    parse_block_size, parse_low_water_mark, parse_pool_args, pool_io_limits, IoSizeLimits,
    PoolFeatures,
};
use registry::PoolKey;
use status::{DiscardStatus, PoolStatus};

/// Metadata devices larger than this (16 GiB, in sectors) get a warning: the excess is unused.
const METADATA_SIZE_WARNING_SECTORS: u64 = 16 * (1 << 30) / 512;
/// The part of a metadata device the space map can address, in sectors.
const METADATA_MAX_SECTORS: u64 = 255 * ((1 << 14) - 64) * 8;

/// The `rthin-pool` target type.
pub(crate) struct PoolTarget;

/// One `rthin-pool` table entry.
pub(crate) struct PoolInstance {
    pool: PoolHandle,
    /// The data device (owned by the glue for this table, like the metadata device, which the
    /// pool object reads through its own counted open).
    data_dev: DevHandle,
    low_water_mark: u64,
    /// As requested in the table line (what `dmsetup table` prints).
    features: PoolFeatures,
    /// Discard passdown as it takes effect: off when the data device cannot discard whole
    /// blocks (dm-thin's `disable_discard_passdown_if_not_supported`).
    passdown: bool,
}

impl PoolInstance {
    fn emit_table(&self, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        write!(
            out,
            "{} {} {} {} ",
            self.pool.pool().key.metadata,
            self.pool.pool().key.data,
            self.pool.pool().block_size,
            self.low_water_mark
        )?;
        self.features.emit(out)
    }

    /// The settings this table gives the pool when it is resumed.
    fn config(&self) -> PoolConfig {
        PoolConfig {
            zero_new_blocks: self.features.zero_new_blocks,
            discard_passdown: self.passdown,
            error_if_no_space: self.features.error_if_no_space,
            low_water_mark: self.low_water_mark,
        }
    }

    /// `dmsetup status`: dm-thin's `pool_status` INFO line, every field followed by a space.
    fn emit_info(&self, flags: StatusFlags, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        let pool = self.pool.arc();
        let mode = pool.mode();
        if mode == PoolMode::Fail {
            return out.write_str("Fail");
        }
        let mut meta = pool.meta.write();
        // dm-thin commits first, unless asked not to or suspended (and we skip it while
        // whole-block writes to new blocks are in flight, see the worker's periodic commit).
        if !flags.noflush() && !pool.is_suspended() && meta.cells.is_empty() {
            worker::commit(pool, &mut meta);
        }
        let e = &meta.engine;
        let discard = if !pool.discard_enabled {
            DiscardStatus::Ignore
        } else if meta.config.discard_passdown {
            DiscardStatus::Passdown
        } else {
            DiscardStatus::NoPassdown
        };
        PoolStatus {
            transaction_id: e.transaction_id(),
            metadata_free: e.metadata_free_blocks(),
            metadata_total: e.metadata_nr_blocks(),
            data_free: e.data_free_blocks(),
            data_total: e.data_nr_blocks(),
            held_root: e.held_root(),
            mode: pool.mode(),
            discard,
            error_if_no_space: meta.config.error_if_no_space,
            needs_check: e.needs_check(),
            metadata_device_blocks: metadata_device_blocks(e),
        }
        .emit(out)
    }

    /// Binds the pool to this table and grows it to the devices (dm-thin's `pool_preresume`).
    fn preresume(&self, ti: &TargetRef) -> Result {
        let pool = self.pool.arc();
        let mut meta = pool.meta.write();
        meta.config = self.config();
        if pool.mode() == PoolMode::Fail {
            return Ok(());
        }
        // The requested mode: `read_only` makes the metadata read-only; without it a pool that
        // was read-only by request goes back to write, unless the metadata needs checking
        // (a failure forced read-only and set needs_check).
        if self.features.read_only {
            if pool.mode() != PoolMode::ReadOnly {
                if let Err(e) = meta.engine.commit() {
                    pr_err!(
                        "{}: commit before read-only failed: {:?}\n",
                        pool.key.pool_md,
                        e
                    );
                }
                pool.set_mode(PoolMode::ReadOnly);
            }
        } else if pool.mode() == PoolMode::ReadOnly && !meta.engine.needs_check() {
            // Reopen the committed metadata for writing (nothing changed while read-only).
            match meta.engine.open_in_place(Some(pool.block_size), true) {
                Ok(()) => pool.set_mode(PoolMode::Write),
                Err(e) => worker::metadata_failed(pool, &mut meta, "reopen read-write", e),
            }
        }
        let bs = u64::from(pool.block_size);
        // (The block size is never 0: the constructor checked it.)
        let data_sectors = ti.device(self.data_dev).map_or(0, |d| d.nr_sectors());
        let data_blocks = data_sectors.checked_div(bs).unwrap_or(0);
        let current = meta.engine.data_nr_blocks();
        refuse_shrinking(pool, "pool target", data_blocks, current)?;
        let metadata_blocks = metadata_device_blocks(&meta.engine);
        let current_meta = meta.engine.metadata_nr_blocks();
        refuse_shrinking(pool, "metadata device", metadata_blocks, current_meta)?;
        let grow = data_blocks > current || metadata_blocks > current_meta;
        if grow && meta.engine.needs_check() {
            pr_err!(
                "{}: unable to grow the pool: run thin_check first (needs_check is set)\n",
                pool.key.pool_md
            );
            return Ok(());
        }
        let growable =
            pool.mode().metadata_writable() || pool.mode() == PoolMode::OutOfMetadataSpace;
        if grow && growable {
            let r = meta
                .engine
                .resize_data(data_blocks)
                .and_then(|()| meta.engine.resize_metadata(metadata_blocks));
            if let Err(e) = r {
                worker::metadata_failed(pool, &mut meta, "resize", e);
                return Ok(());
            }
            if pool.mode() == PoolMode::OutOfMetadataSpace && meta.engine.metadata_free_blocks() > 0
            {
                pool.set_mode(PoolMode::Write);
            }
            worker::commit(pool, &mut meta);
        }
        if pool.mode() == PoolMode::OutOfDataSpace && meta.engine.data_free_blocks() > 0 {
            pool.set_mode(PoolMode::Write);
        }
        if pool.mode() == PoolMode::OutOfMetadataSpace && meta.engine.metadata_free_blocks() > 0 {
            pool.set_mode(PoolMode::Write);
        }
        Ok(())
    }
}

/// The metadata device's size in 4 KiB blocks, capped at what the space map can address.
fn metadata_device_blocks(engine: &object::Engine) -> u64 {
    core::cmp::min(
        engine.block_manager().nr_blocks(),
        crate::metadata::sm_metadata::MAX_METADATA_BLOCKS,
    )
}

/// Whether the data device can take the discards passdown sends (whole data blocks).
fn passdown_supported(data: &DmDev, block_size: u32) -> bool {
    let max = data.max_discard_sectors();
    let reason = if max == 0 {
        "discard unsupported"
    } else if max < block_size {
        "max discard sectors smaller than a block"
    } else {
        return true;
    };
    pr_warn!(
        "Data device ({}) {}: Disabling discard passdown.\n",
        data.devt(),
        reason
    );
    false
}

/// dm-thin cannot shrink a pool's data or metadata: refuses a device of `blocks` where the
/// pool has `current`.
fn refuse_shrinking(pool: &PoolObject, what: &str, blocks: u64, current: u64) -> Result {
    if blocks < current {
        pr_err!(
            "{}: {} ({} blocks) too small: expected {}\n",
            pool.key.pool_md,
            what,
            blocks,
            current
        );
        return Err(EINVAL);
    }
    Ok(())
}

fn warn_if_metadata_too_big(dev: &DmDev) {
    if dev.nr_sectors() > METADATA_SIZE_WARNING_SECTORS {
        pr_warn!(
            "Metadata device {} is larger than {} sectors: excess space will not be used.\n",
            dev.devt(),
            METADATA_MAX_SECTORS
        );
    }
}

#[vtable]
impl dm::Target for PoolTarget {
    const NAME: &'static CStr = c"rthin-pool";
    const VERSION: [u32; 3] = [1, 24, 0];
    const FEATURES: TargetFeatures = TargetFeatures::SINGLETON
        .union(TargetFeatures::ALWAYS_WRITEABLE)
        .union(TargetFeatures::IMMUTABLE)
        .union(TargetFeatures::PASSES_CRYPTO);

    type Shared = Arc<PoolRegistry>;
    type Private = KBox<PoolInstance>;
    type PerBio = ();

    fn ctr(
        registry: &Arc<PoolRegistry>,
        ti: &mut TargetCtr<'_>,
        args: Args<'_>,
    ) -> Result<KBox<PoolInstance>, CtrError> {
        let args = parse_pool_args(args)?;
        let features = args.features;

        let metadata_mode = if features.read_only {
            OpenMode::READ
        } else {
            OpenMode::READ_WRITE
        };
        let metadata_dev = ti
            .get_device(args.metadata_dev, metadata_mode)
            .map_err(|e| CtrError::new(e, c"Error opening metadata block device"))?;
        let metadata_devt = {
            let dev = ti.device(metadata_dev).ok_or(EINVAL)?;
            warn_if_metadata_too_big(dev);
            dev.devt()
        };
        let data_dev = ti
            .get_device(args.data_dev, OpenMode::READ_WRITE)
            .map_err(|e| CtrError::new(e, c"Error getting data device"))?;

        let block_size = parse_block_size(args.block_size)?;
        let low_water_mark = parse_low_water_mark(args.low_water_mark)?;

        let key = PoolKey {
            pool_md: ti.mapped_device(),
            metadata: metadata_devt,
            data: ti.device(data_dev).ok_or(EINVAL)?.devt(),
        };
        let passdown = features.discard_passdown
            && passdown_supported(ti.device(data_dev).ok_or(EINVAL)?, block_size);
        let params = PoolParams {
            key,
            block_size,
            discard_enabled: features.discard_enabled,
            read_only: features.read_only,
            config: PoolConfig {
                zero_new_blocks: features.zero_new_blocks,
                discard_passdown: passdown,
                error_if_no_space: features.error_if_no_space,
                low_water_mark,
            },
        };
        let (pool, created) = PoolRegistry::attach_pool(registry, params)?;
        if !created && features.discard_enabled != pool.pool().discard_enabled {
            return Err(CtrError::new(
                EINVAL,
                c"Discard support cannot be disabled once enabled",
            ));
        }

        ti.set_num_flush_bios(1);
        ti.set_limit_swap_bios(true);
        // Discards only reach the pool target when they are passed down to the data device;
        // thin devices handle their own discards.
        if features.discard_enabled && features.discard_passdown {
            ti.set_num_discard_bios(1);
            ti.set_discards_supported(true);
            ti.set_max_discard_granularity(true);
        }

        let instance = PoolInstance {
            pool,
            data_dev,
            low_water_mark,
            features,
            passdown,
        };
        Ok(KBox::new(instance, GFP_KERNEL)?)
    }

    fn map<'a>(pool: &PoolInstance, ti: &TargetRef, bio: MapRequest<'a, ()>) -> MapOutcome<'a> {
        // The pool target is a singleton, so it starts at sector 0 and no offset applies.
        match ti.device(pool.data_dev) {
            Some(dev) => bio.remap(dev),
            None => bio.kill(),
        }
    }

    fn status(
        pool: &PoolInstance,
        _ti: &TargetRef,
        kind: StatusType,
        flags: StatusFlags,
        out: &mut ResultWriter<'_>,
    ) {
        // A full buffer is not an error: dm core retries with a larger one.
        let _ = match kind {
            StatusType::Info => pool.emit_info(flags, out),
            StatusType::Table => pool.emit_table(out),
            StatusType::Ima => Ok(()),
        };
    }

    fn message(
        pool: &PoolInstance,
        _ti: &TargetRef,
        args: Args<'_>,
        _out: &mut ResultWriter<'_>,
    ) -> Result {
        messages::handle(pool.pool.arc(), &args)
    }

    fn preresume(pool: &PoolInstance, ti: &TargetRef) -> Result {
        pool.preresume(ti)
    }

    fn resume(pool: &PoolInstance, ti: &TargetRef) {
        let object = pool.pool.arc();
        object.bind_events(ti.event_relay());
        object.meta.write().low_water_triggered = false;
        object.set_suspended(false);
        // Bios that waited for data space get another chance (or their ENOSPC, if the pool
        // is still full and now errors).
        for thin in object.thins.lock().iter() {
            let mut q = thin.queues.lock();
            let mut waiting = q.no_space.take();
            q.deferred.append(&mut waiting);
        }
        PoolObject::kick(object);
    }

    fn postsuspend(pool: &PoolInstance, _ti: &TargetRef) {
        let object = pool.pool.arc();
        object.set_suspended(true);
        let mut meta = object.meta.write();
        worker::commit(object, &mut meta);
    }

    fn iterate_devices(
        pool: &PoolInstance,
        ti: &TargetRef,
        visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), IterationStop> {
        match ti.device(pool.data_dev) {
            Some(dev) => visitor.visit(dev, 0, ti.len()),
            None => Ok(()),
        }
    }

    fn io_hints(pool: &PoolInstance, _ti: &TargetRef, limits: &mut QueueLimits) {
        let stacked = IoSizeLimits {
            max_sectors: limits.max_sectors(),
            io_min: limits.io_min(),
            io_opt: limits.io_opt(),
        };
        let adapted = pool_io_limits(pool.pool.pool().block_size, stacked);
        limits.set_max_sectors(adapted.max_sectors);
        limits.set_io_min(adapted.io_min);
        limits.set_io_opt(adapted.io_opt);

        // Discard limits as dm-thin sets them from the requested features. (dm-thin also turns
        // passdown off when the data device cannot discard whole blocks; that adjustment
        // belongs to the data path and is not made yet.)
        if !pool.features.discard_enabled {
            // Keep the block layer from stacking the data device's discard limits.
            limits.set_discard_granularity(0);
        } else if !pool.passdown {
            limits.set_max_hw_discard_sectors(0);
        }
    }
}
