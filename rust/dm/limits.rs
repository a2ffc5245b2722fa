// SPDX-License-Identifier: GPL-2.0

//! [`QueueLimits`]: the queue limits a target may adjust in `io_hints`.

use kernel::{bindings, types::Opaque};

/// Queue limits of a mapped device (`struct queue_limits`), borrowed during `io_hints`.
///
/// dm core has already stacked the limits of the underlying devices (reported through
/// `iterate_devices`) when `io_hints` runs; the target only adjusts them.
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

    fn get(&self) -> &bindings::queue_limits {
        // SAFETY: By the type invariant the limits are valid and nobody else writes them.
        unsafe { &*self.0.get() }
    }

    fn get_mut(&mut self) -> &mut bindings::queue_limits {
        // SAFETY: By the type invariant we have exclusive access; `&mut self` bounds it.
        unsafe { &mut *self.0.get() }
    }

    /// Largest I/O in sectors (`max_sectors`).
    pub fn max_sectors(&self) -> u32 {
        self.get().max_sectors
    }

    /// Sets the largest I/O in sectors.
    pub fn set_max_sectors(&mut self, sectors: u32) {
        self.get_mut().max_sectors = sectors;
    }

    /// Minimum preferred I/O size in bytes (`io_min`).
    pub fn io_min(&self) -> u32 {
        self.get().io_min
    }

    /// Sets the minimum preferred I/O size in bytes.
    pub fn set_io_min(&mut self, bytes: u32) {
        self.get_mut().io_min = bytes;
    }

    /// Optimal I/O size in bytes (`io_opt`).
    pub fn io_opt(&self) -> u32 {
        self.get().io_opt
    }

    /// Sets the optimal I/O size in bytes.
    pub fn set_io_opt(&mut self, bytes: u32) {
        self.get_mut().io_opt = bytes;
    }

    /// Discard granularity in bytes (`discard_granularity`).
    pub fn discard_granularity(&self) -> u32 {
        self.get().discard_granularity
    }

    /// Sets the discard granularity in bytes; 0 stops the block layer from stacking the
    /// underlying devices' discard limits.
    pub fn set_discard_granularity(&mut self, bytes: u32) {
        self.get_mut().discard_granularity = bytes;
    }

    /// Sets the largest discard the hardware path accepts, in sectors (0: no discards).
    pub fn set_max_hw_discard_sectors(&mut self, sectors: u32) {
        self.get_mut().max_hw_discard_sectors = sectors;
    }
}
