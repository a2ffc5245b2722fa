// SPDX-License-Identifier: GPL-2.0

//! dm-rthin-test: the device-mapper glue of dm-rthin (`rust/dm/`, the same source files) with
//! one small target, `rthin-test`, that exercises in the guest the glue calls the thin targets
//! do not use yet, before a target relies on them (tests/guest/12-glue-test.sh). Built beside
//! dm-rthin.ko, loaded only by tests.
//!
//! Today that is [`dm::MapRequest::accept_partial`] (`dm_accept_partial_bio`).
//!
//! Table: `rthin-test <dev path> <chunk sectors>`, a linear mapping of the target onto the
//! device from its sector 0 that maps at most one chunk per `map` call: a read or write that
//! crosses a chunk boundary is accepted up to the boundary, and dm core sends the rest as a new
//! bio. Every other bio (flushes, discards) is passed through after checking that the glue
//! refuses to accept part of it.
//!
//! Status INFO: `<map calls> <partial accepts> <refusals> <wrong answers>`. Each read or write
//! also asks to keep 0 sectors and one more than it has, which must be refused; each other bio
//! (a flush, a discard) asks to keep 1, which must be refused too and counts as a refusal. A
//! call that should have been refused but was accepted, or a boundary split that was refused,
//! counts as a wrong answer: a test wants 0 of those. TABLE: `<major:minor> <chunk sectors>`.

#[path = "dm/mod.rs"]
pub mod dm;

use core::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};
use dm::{
    parse_dm_arg_u32, Args, CtrError, DevHandle, DeviceVisitor, IterationStop, MapOutcome,
    MapRequest, ResultWriter, StatusFlags, StatusType, TargetCtr, TargetFeatures, TargetRef,
};
use kernel::prelude::*;

module! {
    type: GlueTestModule,
    name: "dm_rthin_test",
    authors: ["dm-rthin developers"],
    description: "dm-rthin glue test target (rthin-test); for tests only",
    license: "GPL",
}

/// Module state: the target's registration.
struct GlueTestModule {
    _target: Pin<KBox<dm::Registration<ChunkTarget>>>,
}

impl kernel::Module for GlueTestModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(Self {
            _target: KBox::pin_init(dm::Registration::register(module, ()), GFP_KERNEL)?,
        })
    }
}

/// The `rthin-test` target type.
struct ChunkTarget;

/// One `rthin-test` table entry.
struct ChunkInstance {
    dev: DevHandle,
    chunk: u32,
    maps: AtomicU64,
    partial: AtomicU64,
    refused: AtomicU64,
    wrong: AtomicU64,
}

impl ChunkInstance {
    /// Checks that a call was refused; counts it as a wrong answer if not.
    fn must_refuse(&self, result: Result) -> bool {
        if result.is_ok() {
            self.wrong.fetch_add(1, Relaxed);
        }
        result.is_err()
    }
}

#[vtable]
impl dm::Target for ChunkTarget {
    const NAME: &'static CStr = c"rthin-test";
    const VERSION: [u32; 3] = [1, 0, 0];
    const FEATURES: TargetFeatures = TargetFeatures::NONE;

    type Shared = ();
    type Private = KBox<ChunkInstance>;
    type PerBio = ();

    fn ctr(
        _shared: &(),
        ti: &mut TargetCtr<'_>,
        args: Args<'_>,
    ) -> Result<KBox<ChunkInstance>, CtrError> {
        let (Some(path), Some(chunk), 2) = (args.get(0), args.get(1), args.len()) else {
            return Err(CtrError::new(EINVAL, c"Invalid argument count"));
        };
        let chunk = match parse_dm_arg_u32(chunk.to_bytes()) {
            Some(n) if n > 0 => n,
            _ => return Err(CtrError::new(EINVAL, c"Invalid chunk size")),
        };
        let mode = ti.table_mode();
        let dev = ti
            .get_device(path, mode)
            .map_err(|e| CtrError::new(e, c"Error opening device"))?;
        ti.set_num_flush_bios(1);
        ti.set_flush_supported(true);
        ti.set_num_discard_bios(1);
        ti.set_discards_supported(true);
        KBox::new(
            ChunkInstance {
                dev,
                chunk,
                maps: AtomicU64::new(0),
                partial: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                wrong: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )
        .map_err(|_| CtrError::new(ENOMEM, c"Cannot allocate target context"))
    }

    fn map<'a>(
        this: &ChunkInstance,
        ti: &TargetRef,
        mut req: MapRequest<'a, ()>,
    ) -> MapOutcome<'a> {
        this.maps.fetch_add(1, Relaxed);
        let offset = ti.target_offset(req.bio().sector());
        let sectors = req.bio().sectors();
        let plain = matches!(req.bio().op(), dm::BioOp::Read | dm::BioOp::Write)
            && !req.bio().is_preflush();
        if plain {
            // Counts that dm core would BUG() on are refused, leaving the bio whole.
            this.must_refuse(req.accept_partial(0));
            this.must_refuse(req.accept_partial(sectors.saturating_add(1)));
            // `chunk` is a u32, so the remainder and what is left of the chunk fit one.
            let to_boundary = this.chunk - (offset % u64::from(this.chunk)) as u32;
            if sectors > to_boundary {
                if req.accept_partial(to_boundary).is_ok() {
                    this.partial.fetch_add(1, Relaxed);
                } else {
                    this.wrong.fetch_add(1, Relaxed);
                }
            }
        } else if this.must_refuse(req.accept_partial(1)) {
            this.refused.fetch_add(1, Relaxed);
        }
        match ti.device(this.dev) {
            Some(dev) => {
                req.bio().set_sector(offset);
                req.remap(dev)
            }
            None => req.kill(),
        }
    }

    fn status(
        this: &ChunkInstance,
        ti: &TargetRef,
        kind: StatusType,
        _flags: StatusFlags,
        out: &mut ResultWriter<'_>,
    ) {
        // A full buffer is not an error: dm core retries with a larger one.
        let _ = match kind {
            StatusType::Info => write!(
                out,
                "{} {} {} {}",
                this.maps.load(Relaxed),
                this.partial.load(Relaxed),
                this.refused.load(Relaxed),
                this.wrong.load(Relaxed)
            ),
            StatusType::Table => match ti.device(this.dev) {
                Some(dev) => {
                    let devt = dev.devt();
                    write!(out, "{}:{} {}", devt.major(), devt.minor(), this.chunk)
                }
                None => Ok(()),
            },
            StatusType::Ima => Ok(()),
        };
    }

    fn iterate_devices(
        this: &ChunkInstance,
        ti: &TargetRef,
        visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), IterationStop> {
        match ti.device(this.dev) {
            Some(dev) => visitor.visit(dev, 0, ti.len()),
            None => Ok(()),
        }
    }
}
