// SPDX-License-Identifier: GPL-2.0

//! Underlying devices of a target: [`DmDev`] (an open `struct dm_dev`), [`DevT`] and
//! [`OpenMode`], and [`DeviceVisitor`] for `iterate_devices`.

use super::{bindings as dm, IterationStop};
use core::{fmt, marker::PhantomData, ptr::NonNull};
use kernel::{bindings, error::to_result, prelude::*};

/// A device number (`dev_t`). Displays as `major:minor`, the form dm tables use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevT(bindings::dev_t);

impl DevT {
    pub(crate) fn from_raw(dev: bindings::dev_t) -> Self {
        Self(dev)
    }

    pub(crate) fn raw(&self) -> bindings::dev_t {
        self.0
    }

    /// Major number (`MAJOR()`).
    pub fn major(&self) -> u32 {
        // SAFETY: `MAJOR()` is pure arithmetic on any value.
        unsafe { dm::rthin_dev_major(self.0) }
    }

    /// Minor number (`MINOR()`).
    pub fn minor(&self) -> u32 {
        // SAFETY: `MINOR()` is pure arithmetic on any value.
        unsafe { dm::rthin_dev_minor(self.0) }
    }

    /// Whether this is an existing device-mapper device (`dm_get_md()` finds it).
    pub fn is_mapped_device(&self) -> bool {
        // SAFETY: `dm_get_md` accepts any `dev_t`; the shim drops the reference it takes.
        unsafe { dm::rthin_dm_devt_is_mapped_device(self.0) }
    }
}

impl fmt::Display for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}

// The kernel's printing macros format through their own `Display` trait.
impl kernel::fmt::Display for DevT {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How to open a device (`blk_mode_t`, built from `BLK_OPEN_READ`/`BLK_OPEN_WRITE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenMode(bindings::blk_mode_t);

impl OpenMode {
    /// Read-only.
    pub const READ: Self = Self(dm::RTHIN_BLK_OPEN_READ);
    /// Read-write.
    pub const READ_WRITE: Self = Self(dm::RTHIN_BLK_OPEN_READ | dm::RTHIN_BLK_OPEN_WRITE);

    pub(crate) fn from_raw(mode: bindings::blk_mode_t) -> Self {
        Self(mode)
    }

    /// Whether writing is allowed.
    pub fn is_write(&self) -> bool {
        self.0 & dm::RTHIN_BLK_OPEN_WRITE != 0
    }
}

/// An underlying device opened with `dm_get_device()`; released with `dm_put_device()` on drop.
///
/// # Invariants
///
/// - `dev` was returned by a successful `dm_get_device(ti, ..)` and has not been put yet.
/// - `ti` is alive for as long as `self` is: a `DmDev` lives in the private data of the target
///   that opened it (or in a local of its constructor), and the glue drops that private data in
///   the target's `dtr`, before dm core frees `ti`. Moving a `DmDev` somewhere that outlives the
///   target (a global, another target) breaks this and is not caught by the compiler; see the
///   "Known limitations" section of `rust/dm/README.md`.
pub struct DmDev {
    ti: NonNull<dm::dm_target>,
    dev: NonNull<dm::dm_dev>,
}

// SAFETY: `dm_put_device` and the read-only accessors may be called from any thread.
unsafe impl Send for DmDev {}
// SAFETY: `&DmDev` only allows reading immutable fields of the `dm_dev` and its `block_device`.
unsafe impl Sync for DmDev {}

impl DmDev {
    /// Opens `path` for the target `ti`.
    ///
    /// # Safety
    ///
    /// `ti` must be a valid target whose constructor is running; the returned `DmDev` must be
    /// dropped before `ti` is destroyed.
    pub(crate) unsafe fn open(ti: *mut dm::dm_target, path: &CStr, mode: OpenMode) -> Result<Self> {
        let mut dev: *mut dm::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid (caller), `path` is NUL-terminated and outlives the call, and
        // `dev` is a valid place for the result.
        to_result(unsafe { dm::dm_get_device(ti, path.as_char_ptr(), mode.0, &mut dev) })?;
        let dev = NonNull::new(dev).ok_or(ENODEV)?;
        let ti = NonNull::new(ti).ok_or(EINVAL)?;
        // INVARIANT: `dev` was just returned by `dm_get_device(ti, ..)`; the caller keeps `ti`
        // alive for the lifetime of `self`.
        Ok(Self { ti, dev })
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: By the type invariant `dev` is an open `dm_dev`, whose `bdev` stays valid
        // until `dm_put_device`.
        unsafe { (*self.dev.as_ptr()).bdev }
    }

    pub(crate) fn as_raw(&self) -> *mut dm::dm_dev {
        self.dev.as_ptr()
    }

    /// The device number of the underlying block device.
    pub fn devt(&self) -> DevT {
        // SAFETY: `bdev()` is a valid block device while `self` exists.
        DevT(unsafe { dm::rthin_bdev_devt(self.bdev()) })
    }

    /// Size of the underlying device in 512-byte sectors (`bdev_nr_sectors()`).
    pub fn nr_sectors(&self) -> u64 {
        // SAFETY: `bdev()` is a valid block device while `self` exists.
        unsafe { dm::rthin_bdev_nr_sectors(self.bdev()) }
    }

    /// Largest discard the device accepts, in sectors; 0 when it cannot discard.
    pub fn max_discard_sectors(&self) -> u32 {
        // SAFETY: `bdev()` is a valid block device while `self` exists.
        unsafe { dm::rthin_bdev_max_discard_sectors(self.bdev()) }
    }

    /// The mode the device was opened with.
    pub fn mode(&self) -> OpenMode {
        // SAFETY: By the type invariant `dev` is valid; `mode` is set when it is opened.
        OpenMode(unsafe { (*self.dev.as_ptr()).mode })
    }
}

impl Drop for DmDev {
    fn drop(&mut self) {
        // SAFETY: By the type invariant `dev` was opened for `ti`, which is still alive, and is
        // put exactly once, here.
        unsafe { dm::dm_put_device(self.ti.as_ptr(), self.dev.as_ptr()) };
    }
}

/// Passed to [`super::Target::iterate_devices`]: report each device section with
/// [`DeviceVisitor::visit`].
///
/// # Invariants
///
/// `callout` and `data` are the callout and cookie dm core passed to `iterate_devices` for the
/// target `ti`; they are valid for `'a`.
pub struct DeviceVisitor<'a> {
    ti: *mut dm::dm_target,
    callout: dm::iterate_devices_callout_fn,
    data: *mut c_void,
    _callback: PhantomData<&'a ()>,
}

impl DeviceVisitor<'_> {
    /// # Safety
    ///
    /// The arguments must be those of a running `iterate_devices` call, valid for the lifetime
    /// of the result.
    pub(crate) unsafe fn new(
        ti: *mut dm::dm_target,
        callout: dm::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> Self {
        // INVARIANT: The caller passes the arguments of the running call.
        Self {
            ti,
            callout,
            data,
            _callback: PhantomData,
        }
    }

    /// Reports sectors `start..start + len` of `dev`. Returns [`IterationStop`] when dm core's
    /// callout asks to stop; return it from `iterate_devices` (usually with `?`).
    pub fn visit(&mut self, dev: &DmDev, start: u64, len: u64) -> Result<(), IterationStop> {
        let Some(callout) = self.callout else {
            return Ok(());
        };
        // SAFETY: By the type invariant `callout`, `ti` and `data` are those of the running
        // `iterate_devices` call; `dev` is an open `dm_dev` for as long as the borrow lasts.
        let r = unsafe { callout(self.ti, dev.as_raw(), start, len, self.data) };
        if r == 0 {
            Ok(())
        } else {
            Err(IterationStop(r))
        }
    }
}
