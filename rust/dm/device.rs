// SPDX-License-Identifier: GPL-2.0

//! Underlying devices of a target: [`DmDev`] (an open `struct dm_dev`), [`DevT`] and
//! [`OpenMode`], and [`DeviceVisitor`] for `iterate_devices`.

use super::{bindings as dm, IterationStop};
use core::{fmt, marker::PhantomData, ptr::NonNull};
use kernel::{bindings, error::to_result, prelude::*, types::Opaque};

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

/// An underlying device of a target, opened with `dm_get_device()` through
/// [`super::TargetCtr::get_device`] and seen through a [`DevHandle`].
///
/// The glue owns every device a target opens: it keeps them with the target's private data and
/// puts them (`dm_put_device`) in `dtr`, after the private data is dropped, or when the
/// constructor fails. A target only ever holds `&DmDev` borrowed from the [`super::TargetRef`]
/// of the running callback ([`super::TargetRef::device`]), so no reference to a device can
/// outlive its table. State that must outlive a table opens a
/// [`BlockDevice`](super::BlockDevice) instead.
///
/// # Invariants
///
/// `self.0` is an open `dm_dev` of a live target for as long as the reference exists.
#[repr(transparent)]
pub struct DmDev(Opaque<dm::dm_dev>);

impl DmDev {
    /// # Safety
    ///
    /// `ptr` must be an open `dm_dev` that stays open for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: NonNull<dm::dm_dev>) -> &'a Self {
        // SAFETY: `DmDev` is a transparent wrapper of `Opaque<dm_dev>`; the caller guarantees
        // validity for `'a`.
        unsafe { &*ptr.as_ptr().cast::<Self>() }
    }

    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: By the type invariant the `dm_dev` is open, so its `bdev` is valid.
        unsafe { (*self.0.get()).bdev }
    }

    pub(crate) fn as_raw(&self) -> *mut dm::dm_dev {
        self.0.get()
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
        // SAFETY: By the type invariant the `dm_dev` is valid; `mode` is set when it is opened.
        OpenMode(unsafe { (*self.0.get()).mode })
    }
}

/// Names one device of a target (an index into the devices the glue keeps for it). Plain data:
/// it can be stored anywhere; it only gives access to a device together with a
/// [`super::TargetRef`] of the same target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevHandle(pub(crate) usize);

/// The devices a target opened, put when the list is dropped (in `dtr`, or when the
/// constructor fails).
///
/// # Invariants
///
/// Every entry was returned by `dm_get_device(ti, ..)` and is put exactly once, on drop; `ti`
/// outlives the list (the glue drops it in the constructor or in `dtr`).
pub(crate) struct DeviceList {
    ti: NonNull<dm::dm_target>,
    devs: KVec<NonNull<dm::dm_dev>>,
}

// SAFETY: `dm_put_device` may be called from any thread; the list is only read otherwise.
unsafe impl Send for DeviceList {}
// SAFETY: `&DeviceList` only gives `&DmDev`, which only reads.
unsafe impl Sync for DeviceList {}

impl DeviceList {
    /// An empty list for target `ti`.
    ///
    /// # Safety
    ///
    /// `ti` must outlive the list.
    pub(crate) unsafe fn new(ti: NonNull<dm::dm_target>) -> Self {
        Self {
            ti,
            devs: KVec::new(),
        }
    }

    /// Opens `path` for the target (`dm_get_device`).
    ///
    /// # Safety
    ///
    /// The target's constructor must be running (dm core only allows `dm_get_device` then).
    pub(crate) unsafe fn open(&mut self, path: &CStr, mode: OpenMode) -> Result<DevHandle> {
        self.devs.reserve(1, GFP_KERNEL)?;
        let mut dev: *mut dm::dm_dev = core::ptr::null_mut();
        // SAFETY: `ti` is valid and under construction (caller), `path` is NUL-terminated and
        // outlives the call, and `dev` is a valid place for the result.
        to_result(unsafe {
            dm::dm_get_device(self.ti.as_ptr(), path.as_char_ptr(), mode.0, &mut dev)
        })?;
        let dev = NonNull::new(dev).ok_or(ENODEV)?;
        // Cannot fail: capacity was reserved above, so the device is never leaked.
        self.devs.push(dev, GFP_KERNEL)?;
        Ok(DevHandle(self.devs.len() - 1))
    }

    /// The device `h` names, if this list has it.
    pub(crate) fn get(&self, h: DevHandle) -> Option<&DmDev> {
        let dev = *self.devs.get(h.0)?;
        // SAFETY: By the type invariant the device is open until the list is dropped, which
        // the borrow of `self` outlives.
        Some(unsafe { DmDev::from_raw(dev) })
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        for dev in self.devs.iter() {
            // SAFETY: By the type invariant each device was opened for `ti`, which is alive,
            // and is put exactly once, here.
            unsafe { dm::dm_put_device(self.ti.as_ptr(), dev.as_ptr()) };
        }
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
