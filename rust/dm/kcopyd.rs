// SPDX-License-Identifier: GPL-2.0

//! [`Kcopyd`]: a dm-kcopyd client, for zeroing and copying ranges of block devices.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h).
//!
//! Thin provisioning zeroes a newly allocated data block before a partial write lands in it,
//! and copies a shared block before a write breaks the sharing. dm-kcopyd does both with its own
//! preallocated pages and threads, so it makes progress under memory pressure. The calls here
//! wait for the copy to finish (the caller sleeps, so they are for a worker, never for `map`).

use super::{bindings as dm, BlockDevice};
use core::ptr::NonNull;
use kernel::{error::from_err_ptr, error::to_result, prelude::*};

/// A dm-kcopyd client.
///
/// # Invariants
///
/// `ptr` came from `dm_kcopyd_client_create` and is destroyed only in `drop`.
pub struct Kcopyd {
    ptr: NonNull<dm::dm_kcopyd_client>,
}

// SAFETY: kcopyd clients may be used from any thread; jobs are queued under kcopyd's own locks.
unsafe impl Send for Kcopyd {}
// SAFETY: As above: submitting jobs through `&Kcopyd` is thread-safe.
unsafe impl Sync for Kcopyd {}

impl Kcopyd {
    /// Creates a client (not throttled).
    pub fn new() -> Result<Self> {
        // SAFETY: A null throttle means "not throttled", which kcopyd supports.
        let ptr = from_err_ptr(unsafe { dm::dm_kcopyd_client_create(core::ptr::null_mut()) })?;
        // INVARIANT: `ptr` was just created.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    /// Writes zeroes to `count` sectors of `dev` from `sector`, and waits.
    ///
    /// Sleeps: worker context only.
    pub fn zero(&self, dev: &BlockDevice, sector: u64, count: u64) -> Result {
        // SAFETY: The client is alive (invariant); `dev` is open for the call.
        to_result(unsafe {
            dm::rthin_kcopyd_zero_sync(self.ptr.as_ptr(), dev.bdev(), sector, count)
        })
    }

    /// Copies `count` sectors from `from` at `from_sector` to `to` at `to_sector`, and waits.
    ///
    /// Sleeps: worker context only.
    pub fn copy(
        &self,
        from: &BlockDevice,
        from_sector: u64,
        to: &BlockDevice,
        to_sector: u64,
        count: u64,
    ) -> Result {
        // SAFETY: The client is alive (invariant); both devices are open for the call.
        to_result(unsafe {
            dm::rthin_kcopyd_copy_sync(
                self.ptr.as_ptr(),
                from.bdev(),
                from_sector,
                to.bdev(),
                to_sector,
                count,
            )
        })
    }
}

impl Drop for Kcopyd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the client is alive; no job is in flight because every
        // job is waited for by the call that submitted it.
        unsafe { dm::dm_kcopyd_client_destroy(self.ptr.as_ptr()) };
    }
}
