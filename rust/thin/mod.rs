// SPDX-License-Identifier: GPL-2.0

//! The `rthin` target: a thin device of an `rthin-pool`.
//!
//! The constructor validates the table line and opens the devices exactly as dm-thin does,
//! then looks the pool object up in the shared [`PoolRegistry`]. While the pool is in fail
//! mode (always, until the metadata engine and data path exist) the table is refused with
//! dm-thin's "Couldn't open thin device, Pool is in fail mode". Should an instance exist, its
//! `map` fails every bio with EIO and a rate-limited message: there is nothing to provision
//! from.

mod params;

use crate::{
    dm::{
        self, Args, CtrError, DmDev, MapOutcome, MapRequest, OpenMode, RateLimit, ResultWriter,
        StatusFlags, StatusType, TargetCtr, TargetFeatures, TargetRef,
    },
    pool::{PoolHandle, PoolMode, PoolRegistry},
};
use core::fmt::Write;
use kernel::{prelude::*, sync::Arc};
use params::{parse_dev_id, parse_thin_args};

/// The `rthin` target type.
pub(crate) struct ThinTarget;

/// One `rthin` table entry.
#[pin_data]
pub(crate) struct ThinInstance {
    pool: PoolHandle,
    pool_dev: DmDev,
    origin_dev: Option<DmDev>,
    dev_id: u64,
    #[pin]
    io_error_log: RateLimit,
}

#[vtable]
impl dm::Target for ThinTarget {
    const NAME: &'static CStr = c"rthin";
    const VERSION: [u32; 3] = [1, 24, 0];
    const FEATURES: TargetFeatures = TargetFeatures::PASSES_CRYPTO;

    type Shared = Arc<PoolRegistry>;
    type Private = Pin<KBox<ThinInstance>>;
    type PerBio = ();

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

        let pool_md = pool_dev.devt();
        if !pool_md.is_mapped_device() {
            return Err(CtrError::new(EINVAL, c"Couldn't get pool mapped device"));
        }
        let pool = PoolRegistry::find_by_mapped_device(registry, pool_md)
            .ok_or(CtrError::new(EINVAL, c"Couldn't find pool object"))?;
        if pool.pool().mode() == PoolMode::Fail {
            return Err(CtrError::new(
                EINVAL,
                c"Couldn't open thin device, Pool is in fail mode",
            ));
        }

        // Bios must not cross a data block boundary.
        ti.set_max_io_len(u64::from(pool.pool().block_size()))
            .map_err(|e| CtrError::new(e, c"Maximum size of target IO is too large"))?;
        ti.set_num_flush_bios(1);
        ti.set_limit_swap_bios(true);
        ti.set_flush_supported(true);
        if pool.pool().discard_enabled() {
            ti.set_discards_supported(true);
            ti.set_num_discard_bios(1);
            ti.set_max_discard_granularity(true);
        }

        let instance = try_pin_init!(ThinInstance {
            pool,
            pool_dev,
            origin_dev,
            dev_id,
            io_error_log <- RateLimit::new(),
        }? Error);
        KBox::pin_init(instance, GFP_KERNEL).map_err(|e| CtrError::new(e, c"Out of memory"))
    }

    fn map<'a>(
        thin: Pin<&ThinInstance>,
        _ti: &TargetRef,
        bio: MapRequest<'a, ()>,
    ) -> MapOutcome<'a> {
        if thin.io_error_log.allow() {
            pr_err!(
                "thin {}: no data path yet; failing I/O with EIO\n",
                thin.dev_id
            );
        }
        bio.kill()
    }

    fn status(
        thin: Pin<&ThinInstance>,
        _ti: &TargetRef,
        kind: StatusType,
        _flags: StatusFlags,
        out: &mut ResultWriter<'_>,
    ) {
        // dm-thin prints only "Fail", for both kinds, while the pool is in fail mode.
        let _ = if thin.pool.pool().mode() == PoolMode::Fail {
            match kind {
                StatusType::Info | StatusType::Table => out.write_str("Fail"),
                StatusType::Ima => Ok(()),
            }
        } else {
            match kind {
                // Mapped-block counts come from the metadata engine, which does not exist yet.
                StatusType::Info => out.write_str("-"),
                StatusType::Table => thin.emit_table(out),
                StatusType::Ima => Ok(()),
            }
        };
    }
}

impl ThinInstance {
    /// `<pool dev> <dev id>[ <origin dev>]`, as dm-thin prints the table line.
    fn emit_table(&self, out: &mut ResultWriter<'_>) -> core::fmt::Result {
        write!(out, "{} {}", self.pool_dev.devt(), self.dev_id)?;
        if let Some(origin) = &self.origin_dev {
            write!(out, " {}", origin.devt())?;
        }
        Ok(())
    }
}
