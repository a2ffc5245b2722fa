// SPDX-License-Identifier: GPL-2.0

//! The `rthin-pool` target: binds a metadata device and a data device into a pool.
//!
//! What works now: the constructor validates the table line exactly as dm-thin does, opens
//! both devices and registers the pool object; `dmsetup table` prints the table line and
//! `io_hints` shapes the queue limits as dm-thin does; I/O sent to the pool device itself goes
//! to the data device, as dm-thin's `pool_map()` does (this is raw access to the data device,
//! not provisioning).
//!
//! Not checked yet because they need the metadata engine: an existing superblock's block size
//! against the table's, `read_only` on unformatted metadata (dm-thin: EPERM), and the
//! superblock's feature flags.
//!
//! What does not exist yet: the metadata engine and the data path. Until then every pool is in
//! dm-thin's fail mode ([`PoolMode::Fail`]): `dmsetup status` prints `Fail`, messages fail
//! with EOPNOTSUPP, and thin tables are refused.

#[cfg(CONFIG_KUNIT = "y")]
mod mem_blocks;
mod metadata_kunit;
mod params;
mod registry;

pub(crate) use registry::{PoolHandle, PoolMode, PoolRegistry};

use crate::dm::{
    self, Args, CtrError, DeviceVisitor, DmDev, IterationStop, MapOutcome, MapRequest, OpenMode,
    QueueLimits, ResultWriter, StatusFlags, StatusType, TargetCtr, TargetFeatures, TargetRef,
};
use core::fmt::Write;
use kernel::{prelude::*, sync::Arc};
use params::{
    parse_block_size, parse_low_water_mark, parse_pool_args, pool_io_limits, IoSizeLimits,
    PoolFeatures,
};
use registry::PoolKey;

/// Metadata devices larger than this (16 GiB, in sectors) get a warning: the excess is unused.
const METADATA_SIZE_WARNING_SECTORS: u64 = 16 * (1 << 30) / 512;
/// The part of a metadata device the space map can address, in sectors.
const METADATA_MAX_SECTORS: u64 = 255 * ((1 << 14) - 64) * 8;

/// The `rthin-pool` target type.
pub(crate) struct PoolTarget;

/// One `rthin-pool` table entry.
pub(crate) struct PoolInstance {
    pool: PoolHandle,
    metadata_dev: DmDev,
    data_dev: DmDev,
    low_water_mark: u64,
    features: PoolFeatures,
}

impl PoolInstance {
    fn emit_table(&self, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        write!(
            out,
            "{} {} {} {} ",
            self.metadata_dev.devt(),
            self.data_dev.devt(),
            self.pool.pool().block_size(),
            self.low_water_mark
        )?;
        self.features.emit(out)
    }
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
        warn_if_metadata_too_big(&metadata_dev);
        let data_dev = ti
            .get_device(args.data_dev, OpenMode::READ_WRITE)
            .map_err(|e| CtrError::new(e, c"Error getting data device"))?;

        let block_size = parse_block_size(args.block_size)?;
        let low_water_mark = parse_low_water_mark(args.low_water_mark)?;

        let key = PoolKey {
            pool_md: ti.mapped_device(),
            metadata: metadata_dev.devt(),
            data: data_dev.devt(),
        };
        let (pool, created) =
            PoolRegistry::attach_pool(registry, key, block_size, features.discard_enabled)?;
        if !created && features.discard_enabled != pool.pool().discard_enabled() {
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
            metadata_dev,
            data_dev,
            low_water_mark,
            features,
        };
        Ok(KBox::new(instance, GFP_KERNEL)?)
    }

    fn map<'a>(pool: &PoolInstance, _ti: &TargetRef, bio: MapRequest<'a, ()>) -> MapOutcome<'a> {
        // The pool target is a singleton, so it starts at sector 0 and no offset applies.
        bio.remap(&pool.data_dev)
    }

    fn status(
        pool: &PoolInstance,
        _ti: &TargetRef,
        kind: StatusType,
        _flags: StatusFlags,
        out: &mut ResultWriter<'_>,
    ) {
        // A full buffer is not an error: dm core retries with a larger one.
        let _ = match kind {
            StatusType::Info => match pool.pool.pool().mode() {
                PoolMode::Fail => out.write_str("Fail"),
            },
            StatusType::Table => pool.emit_table(out),
            StatusType::Ima => Ok(()),
        };
    }

    fn message(
        pool: &PoolInstance,
        _ti: &TargetRef,
        _args: Args<'_>,
        _out: &mut ResultWriter<'_>,
    ) -> Result {
        match pool.pool.pool().mode() {
            PoolMode::Fail => {
                pr_err!(
                    "{}: unable to service pool target messages in READ_ONLY or FAIL mode\n",
                    pool.pool.pool().key().pool_md
                );
                Err(dm::eopnotsupp())
            }
        }
    }

    fn iterate_devices(
        pool: &PoolInstance,
        ti: &TargetRef,
        visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), IterationStop> {
        visitor.visit(&pool.data_dev, 0, ti.len())
    }

    fn io_hints(pool: &PoolInstance, _ti: &TargetRef, limits: &mut QueueLimits) {
        let stacked = IoSizeLimits {
            max_sectors: limits.max_sectors(),
            io_min: limits.io_min(),
            io_opt: limits.io_opt(),
        };
        let adapted = pool_io_limits(pool.pool.pool().block_size(), stacked);
        limits.set_max_sectors(adapted.max_sectors);
        limits.set_io_min(adapted.io_min);
        limits.set_io_opt(adapted.io_opt);

        // Discard limits as dm-thin sets them from the requested features. (dm-thin also turns
        // passdown off when the data device cannot discard whole blocks; that adjustment
        // belongs to the data path and is not made yet.)
        if !pool.features.discard_enabled {
            // Keep the block layer from stacking the data device's discard limits.
            limits.set_discard_granularity(0);
        } else if !pool.features.discard_passdown {
            limits.set_max_hw_discard_sectors(0);
        }
    }
}
