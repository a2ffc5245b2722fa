// SPDX-License-Identifier: GPL-2.0

//! [`BlockDevice`]: a counted open of a block device, independent of any device-mapper table.
//!
//! C headers: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//! (`bdev_file_open_by_dev`, `file_bdev`, `blkdev_issue_flush`).
//!
//! A [`super::DmDev`] belongs to the table that opened it and dies with it. State that must
//! outlive one table (a pool object shared by thin targets and bound again on every reload, the
//! metadata block manager, a worker's remap destination) holds a `BlockDevice` instead: its own
//! open of the device (`bdev_file_open_by_dev`, non-exclusive, so it never conflicts with dm
//! core's claim), closed synchronously (`__fput_sync`, as dm core does) when the handle is
//! dropped, which must therefore happen in process context. While the handle exists the
//! `struct block_device` it points to stays valid, whatever happens to the tables.

use super::{bindings as dm, DevT};
use core::ptr::NonNull;
use kernel::{bindings, error::from_err_ptr, prelude::*};

/// An open block device, kept open for as long as this handle lives.
///
/// # Invariants
///
/// `file` is a block-device file returned by a successful `bdev_file_open_by_dev` and not put
/// yet; `file_bdev(file)` is therefore a valid, open `struct block_device`.
pub struct BlockDevice {
    file: NonNull<bindings::file>,
    writable: bool,
}

// SAFETY: The handle only reads immutable properties of the open device and submits I/O to it,
// which the block layer allows from any thread; closing it (in `drop`) needs only a thread
// that may sleep.
unsafe impl Send for BlockDevice {}
// SAFETY: `&BlockDevice` allows only the same thread-safe operations.
unsafe impl Sync for BlockDevice {}

impl BlockDevice {
    /// Opens the block device `dev`, for reading and, if `write`, writing.
    ///
    /// Sleeps: process context only.
    pub fn open(dev: DevT, write: bool) -> Result<Self> {
        // SAFETY: `bdev_file_open_by_dev` accepts any device number; no holder is passed, so the
        // open is not exclusive.
        let file = from_err_ptr(unsafe { dm::rthin_bdev_open_by_dev(dev.raw(), write) })?;
        let file = NonNull::new(file).ok_or(ENODEV)?;
        // INVARIANT: `file` was just opened and is owned by the new handle.
        Ok(Self {
            file,
            writable: write,
        })
    }

    /// The `struct block_device` (valid while `self` lives).
    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: By the type invariant `file` is an open block-device file.
        unsafe { dm::rthin_file_bdev(self.file.as_ptr()) }
    }

    /// The device number.
    pub fn devt(&self) -> DevT {
        // SAFETY: `bdev()` is valid while `self` lives.
        DevT::from_raw(unsafe { dm::rthin_bdev_devt(self.bdev()) })
    }

    /// Current size in 512-byte sectors (re-read on every call: devices can grow).
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: `bdev()` is valid while `self` lives.
        unsafe { dm::rthin_bdev_nr_sectors(self.bdev()) }
    }

    /// Largest discard the device accepts, in sectors; 0 when it cannot discard.
    pub fn max_discard_sectors(&self) -> u32 {
        // SAFETY: `bdev()` is valid while `self` lives.
        unsafe { dm::rthin_bdev_max_discard_sectors(self.bdev()) }
    }

    /// Discards `count` sectors from `sector` and waits (`blkdev_issue_discard`, `GFP_NOIO`).
    ///
    /// Sleeps: worker context only.
    pub fn discard(&self, sector: u64, count: u64) -> Result {
        // SAFETY: `bdev()` is an open block device while `self` lives.
        kernel::error::to_result(unsafe { dm::rthin_bdev_discard(self.bdev(), sector, count) })
    }

    /// Whether the device was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Flushes the device's volatile write cache and waits for it (`blkdev_issue_flush`).
    ///
    /// Sleeps: process context only, never from a path that the flush itself waits on.
    pub fn flush(&self) -> Result {
        // SAFETY: `bdev()` is an open block device while `self` lives.
        kernel::error::to_result(unsafe { bindings::blkdev_issue_flush(self.bdev()) })
    }
}

/// Dropping the handle closes the device before returning (as dm core closes its table
/// devices), so the device is free again at once: it may sleep, so drop it in process context.
impl Drop for BlockDevice {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `file` is open and owned by `self`; it is put exactly
        // once, here.
        unsafe { dm::rthin_bdev_file_put(self.file.as_ptr()) };
    }
}
