// SPDX-License-Identifier: GPL-2.0

//! [`ThinState`]: what the pool's worker knows of one active `rthin` table, and [`ThinBio`], the
//! per-bio data of thin bios.
//!
//! A thin table's `map` puts every bio on its `ThinState`'s deferred list and kicks the pool
//! worker; `end_io` puts bios whose freshly provisioned block has been written on the
//! `provisioned` list (their mapping is inserted only then, see `worker.rs`). Both run without
//! sleeping, `end_io` possibly in interrupt context, hence the irq-safe lock.

use crate::dm::{BioList, BlockDevice, SpinLockIrq};
use crate::new_spinlock_irq;
use kernel::{prelude::*, sync::Arc};

/// Per-bio data of thin bios.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ThinBio {
    /// What the worker did with the bio.
    pub(crate) stage: Stage,
    /// Virtual block the bio writes (for [`Stage::Overwrite`]).
    pub(crate) vblock: u64,
    /// Newly allocated data block it writes (for [`Stage::Overwrite`]).
    pub(crate) data_block: u64,
    /// Whether the data write succeeded (set by `end_io`).
    pub(crate) write_ok: bool,
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
}

/// Bios of one thin table waiting for the worker.
#[derive(Default)]
pub(crate) struct ThinQueues {
    /// New bios from `map`.
    pub(crate) deferred: BioList<ThinBio>,
    /// Whole-block writes whose data reached the disk (from `end_io`).
    pub(crate) provisioned: BioList<ThinBio>,
    /// Bios waiting for data space (the pool is out of data space, `queue_if_no_space`).
    pub(crate) no_space: BioList<ThinBio>,
}

/// One active thin table, as the pool worker sees it.
#[pin_data]
pub(crate) struct ThinState {
    /// The thin device id in the metadata.
    pub(crate) dev_id: u64,
    /// External origin, read for unprovisioned blocks.
    pub(crate) origin: Option<BlockDevice>,
    #[pin]
    pub(crate) queues: SpinLockIrq<ThinQueues>,
}

impl ThinState {
    /// A state for thin `dev_id`.
    pub(crate) fn new(dev_id: u64, origin: Option<BlockDevice>) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                dev_id,
                origin,
                queues <- new_spinlock_irq!(ThinQueues::default(), "ThinState::queues"),
            }? Error),
            GFP_KERNEL,
        )
    }
}
