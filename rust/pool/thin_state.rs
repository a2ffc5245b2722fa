// SPDX-License-Identifier: GPL-2.0

//! [`ThinState`]: what the pool's worker knows of one active `rthin` table, and [`ThinBio`], the
//! per-bio data of thin bios.
//!
//! A thin table's `map` puts every bio on its `ThinState`'s deferred list and kicks the pool
//! worker; `end_io` puts bios whose freshly provisioned block has been written on the
//! `provisioned` list (their mapping is inserted only then, see `worker.rs`), and kcopyd puts
//! bios whose new block it has zeroed or copied on the `filled` list. None of them sleeps,
//! `end_io` runs possibly in interrupt context, hence the irq-safe lock.

use crate::dm::{BioList, BlockDevice, SpinLockIrq};
use crate::new_spinlock_irq;
use core::sync::atomic::AtomicBool;
use kernel::{prelude::*, sync::Arc};

/// Per-bio data of thin bios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThinBio {
    /// What the worker did with the bio.
    pub(crate) stage: Stage,
    /// Virtual block the bio writes (for [`Stage::Overwrite`] and [`Stage::Filling`]).
    pub(crate) vblock: u64,
    /// Newly allocated data block it writes (for [`Stage::Overwrite`] and [`Stage::Filling`]).
    pub(crate) data_block: u64,
    /// Whether the data write (set by `end_io`) or the fill (set by kcopyd) succeeded.
    pub(crate) write_ok: bool,
    /// For [`Stage::Filling`]: sectors at the end of the block still to zero once the current
    /// kcopyd job is done (a block copied from an external origin that ends inside it).
    pub(crate) zero_tail: u64,
}

/// Where a thin bio is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing special: complete it normally.
    #[default]
    Plain,
    /// A whole-block write to a newly allocated block; `end_io` hands it back to the worker,
    /// which inserts the mapping before the bio completes.
    Overwrite,
    /// Handed back once already; its second completion is final.
    Finished,
    /// A partial write waiting for kcopyd to zero or copy its new block; it is remapped and sent
    /// once the block is filled and mapped.
    Filling,
}

/// Bios of one thin table waiting for the worker.
#[derive(Default)]
pub(crate) struct ThinQueues {
    /// New bios from `map`.
    pub(crate) deferred: BioList<ThinBio>,
    /// Whole-block writes whose data reached the disk (from `end_io`).
    pub(crate) provisioned: BioList<ThinBio>,
    /// Partial writes whose new block kcopyd has filled (or failed to).
    pub(crate) filled: BioList<ThinBio>,
    /// Bios waiting for data space (the pool is out of data space, `queue_if_no_space`).
    pub(crate) no_space: BioList<ThinBio>,
}

/// One active thin table, as the pool worker sees it.
#[pin_data]
pub(crate) struct ThinState {
    /// The thin device id in the metadata.
    pub(crate) dev_id: u64,
    /// External origin, read for unprovisioned blocks (counted: kcopyd jobs hold it too).
    pub(crate) origin: Option<Arc<BlockDevice>>,
    #[pin]
    pub(crate) queues: SpinLockIrq<ThinQueues>,
    /// A `--noflush` suspend is under way: bios go back to dm core (`DM_REQUEUE`), which
    /// resubmits them after the resume, instead of waiting in the pool (dm-thin's
    /// `requeue_mode`). Otherwise a bio waiting for data space would hold the suspend forever.
    pub(crate) requeue: AtomicBool,
}

impl ThinState {
    /// A state for thin `dev_id`.
    pub(crate) fn new(dev_id: u64, origin: Option<Arc<BlockDevice>>) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                dev_id,
                origin,
                queues <- new_spinlock_irq!(ThinQueues::default(), "ThinState::queues"),
                requeue: AtomicBool::new(false),
            }? Error),
            GFP_KERNEL,
        )
    }
}
