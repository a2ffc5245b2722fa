// SPDX-License-Identifier: GPL-2.0

//! [`QueueLimits`]: the queue limits a target may adjust in `io_hints`.

use kernel::{bindings, types::Opaque};

/// Queue limits of a mapped device (`struct queue_limits`), borrowed during `io_hints`.
///
/// # Invariants
///
/// `self.0` is the `queue_limits` dm core is stacking for this table; during `io_hints` the
/// target has exclusive access to it.
#[repr(transparent)]
pub struct QueueLimits(Opaque<bindings::queue_limits>);

impl QueueLimits {
    /// # Safety
    ///
    /// `ptr` must be valid and exclusively ours for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::queue_limits) -> &'a mut Self {
        // SAFETY: Transparent wrapper; validity and exclusivity come from the caller.
        unsafe { &mut *ptr.cast::<Self>() }
    }

    fn raw(&mut self) -> &mut bindings::queue_limits {
        // SAFETY: By the type invariant we have exclusive access; `&mut self` bounds it.
        unsafe { &mut *self.0.get() }
    }

    /// Minimum preferred I/O size in bytes (`io_min`).
    pub fn io_min(&mut self) -> u32 {
        self.raw().io_min
    }

    /// Sets the minimum preferred I/O size in bytes.
    pub fn set_io_min(&mut self, bytes: u32) {
        self.raw().io_min = bytes;
    }

    /// Optimal I/O size in bytes (`io_opt`).
    pub fn io_opt(&mut self) -> u32 {
        self.raw().io_opt
    }

    /// Sets the optimal I/O size in bytes.
    pub fn set_io_opt(&mut self, bytes: u32) {
        self.raw().io_opt = bytes;
    }

    /// Sets the discard granularity in bytes.
    pub fn set_discard_granularity(&mut self, bytes: u32) {
        self.raw().discard_granularity = bytes;
    }

    /// Sets the largest discard the hardware path accepts, in sectors.
    pub fn set_max_hw_discard_sectors(&mut self, sectors: u32) {
        self.raw().max_hw_discard_sectors = sectors;
    }
}
