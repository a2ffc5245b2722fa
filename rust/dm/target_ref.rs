// SPDX-License-Identifier: GPL-2.0

//! Safe views of a `struct dm_target`: [`TargetRef`] in every callback, [`TargetCtr`] with the
//! extra setters that are only valid while the constructor runs.

use super::{
    bindings as dm,
    device::DeviceList,
    instance::{EventRelay, Instance},
    DevHandle, DevT, DmDev, OpenMode,
};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{error::to_result, prelude::*, sync::Arc, types::Opaque};

/// A device-mapper target instance (`struct dm_target`), borrowed for one callback.
///
/// # Invariants
///
/// `self.0` is a `dm_target` that dm core keeps alive, with a valid `table`, for as long as the
/// reference exists. Outside of the constructor its fields are only read.
#[repr(transparent)]
pub struct TargetRef(Opaque<dm::dm_target>);

impl TargetRef {
    /// Borrows the `dm_target` behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a `dm_target` that stays alive, with a valid `table`, for `'a`, and
    /// nothing may write to it during `'a` except through a [`TargetCtr`] built on it.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut dm::dm_target) -> &'a Self {
        // SAFETY: `TargetRef` is a transparent wrapper of `Opaque<dm_target>`, which has the
        // layout of `dm_target`; the caller guarantees validity for `'a`.
        unsafe { &*ptr.cast::<Self>() }
    }

    pub(crate) fn as_raw(&self) -> *mut dm::dm_target {
        self.0.get()
    }

    /// First sector of the target within the mapped device (`ti->begin`).
    pub fn begin(&self) -> u64 {
        // SAFETY: By the type invariant the target is valid; `begin` is only written by dm core
        // before the constructor runs.
        unsafe { (*self.as_raw()).begin }
    }

    /// Length of the target in sectors (`ti->len`).
    pub fn len(&self) -> u64 {
        // SAFETY: As for `begin`.
        unsafe { (*self.as_raw()).len }
    }

    /// Whether the target has zero length.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts a sector of the mapped device into an offset within this target
    /// (`dm_target_offset()`).
    pub fn target_offset(&self, sector: u64) -> u64 {
        sector.wrapping_sub(self.begin())
    }

    /// The mode the table was loaded with (`dm_table_get_mode()`).
    pub fn table_mode(&self) -> OpenMode {
        // SAFETY: By the type invariant `ti->table` is a valid table.
        OpenMode::from_raw(unsafe { dm::dm_table_get_mode((*self.as_raw()).table) })
    }

    /// The `dev_t` of the mapped device this target belongs to.
    pub fn mapped_device(&self) -> DevT {
        // SAFETY: By the type invariant `ti` and its table are valid, and a table always belongs
        // to a mapped device with a disk.
        DevT::from_raw(unsafe { dm::rthin_dm_target_md_devt(self.as_raw()) })
    }

    /// Whether the device is being suspended with `--noflush` (`dm_noflush_suspending()`): dm
    /// core then keeps bios the target requeues (`DM_MAPIO_REQUEUE`, `BLK_STS_DM_REQUEUE`) and
    /// resubmits them after the resume, instead of failing them. Meaningful in `presuspend` and
    /// `postsuspend`.
    pub fn noflush_suspending(&self) -> bool {
        // SAFETY: By the type invariant `ti` and its table (with its mapped device) are valid.
        unsafe { dm::dm_noflush_suspending(self.as_raw()) != 0 }
    }

    /// Raises a table event (`dm_table_event()`), waking `dmsetup wait` and the like.
    ///
    /// Takes a mutex: call it from process context only, never from `map` or `end_io`.
    pub fn table_event(&self) {
        // SAFETY: By the type invariant `ti->table` is a valid table.
        unsafe { dm::dm_table_event((*self.as_raw()).table) };
    }

    /// The device `h` names (opened by this target's constructor); `None` while the
    /// constructor runs (use [`TargetCtr::device`] there) or for a handle of another target.
    pub fn device(&self, h: DevHandle) -> Option<&DmDev> {
        // SAFETY: By the type invariant the target is valid. Outside the constructor its
        // `private` is null or the glue's boxed `Instance`, which lives until `dtr`, after every
        // callback that holds `self`.
        let private = unsafe { (*self.as_raw()).private };
        if private.is_null() {
            return None;
        }
        // SAFETY: As above.
        let instance = unsafe { &*private.cast::<Instance>() };
        instance.devices.get(h)
    }

    /// A counted handle that raises this target's table event from anywhere that may sleep
    /// (a worker, say), for as long as the target exists; `None` while the constructor runs.
    pub fn event_relay(&self) -> Option<Arc<EventRelay>> {
        // SAFETY: By the type invariant the target is valid. Outside the constructor its
        // `private` is null or the boxed `Instance` of the glue, which begins with the relay
        // (`repr(C)`) and lives until `dtr`, after every other callback.
        let private = unsafe { (*self.as_raw()).private };
        if private.is_null() {
            return None;
        }
        // SAFETY: As above.
        Some(unsafe { (*private.cast::<Instance>()).relay.clone() })
    }

    pub(crate) fn table_raw(&self) -> *mut dm::dm_table {
        // SAFETY: By the type invariant the target is valid.
        unsafe { (*self.as_raw()).table }
    }
}

/// The target under construction, handed to [`super::Target::ctr`].
///
/// Dereferences to [`TargetRef`] and adds the setters dm core only honours in the constructor.
///
/// # Invariants
///
/// `ti` is a `dm_target` being constructed: dm core does not touch it until the constructor
/// returns, so writes through it do not race.
pub struct TargetCtr<'a> {
    ti: &'a TargetRef,
    devices: Option<DeviceList>,
    _not_send: PhantomData<*mut ()>,
}

impl<'a> TargetCtr<'a> {
    /// # Safety
    ///
    /// `ptr` must be a `dm_target` whose constructor is running, valid for `'a`.
    pub(crate) unsafe fn from_raw(ptr: *mut dm::dm_target) -> Self {
        Self {
            // SAFETY: The caller guarantees validity for `'a`; writes happen only through
            // `self`, which the invariant of `TargetCtr` covers.
            ti: unsafe { TargetRef::from_raw(ptr) },
            // SAFETY: The glue drops the list in the constructor or in `dtr`, before dm core
            // frees the target.
            devices: NonNull::new(ptr).map(|ti| unsafe { DeviceList::new(ti) }),
            _not_send: PhantomData,
        }
    }

    /// The devices opened so far, for the glue to keep or put.
    pub(crate) fn take_devices(&mut self) -> Option<DeviceList> {
        self.devices.take()
    }

    fn raw(&mut self) -> &mut dm::dm_target {
        // SAFETY: By the type invariant nothing else accesses the target during construction,
        // and `&mut self` makes this the only reference created through `self`.
        unsafe { &mut *self.ti.as_raw() }
    }

    /// Opens an underlying device by path or `major:minor` (`dm_get_device()`).
    ///
    /// The glue keeps the device for the target and puts it in `dtr` (or when the constructor
    /// fails); the handle names it in [`TargetCtr::device`] and [`TargetRef::device`].
    pub fn get_device(&mut self, path: &CStr, mode: OpenMode) -> Result<DevHandle> {
        let devices = self.devices.as_mut().ok_or(EINVAL)?;
        // SAFETY: The target is under construction, as `dm_get_device` requires.
        unsafe { devices.open(path, mode) }
    }

    /// A device this constructor opened.
    pub fn device(&self, h: DevHandle) -> Option<&DmDev> {
        self.devices.as_ref()?.get(h)
    }

    /// Number of flush bios dm core sends to `map` per flush (`ti->num_flush_bios`).
    pub fn set_num_flush_bios(&mut self, n: u32) {
        self.raw().num_flush_bios = n;
    }

    /// Number of discard bios dm core sends to `map` per discard (`ti->num_discard_bios`).
    pub fn set_num_discard_bios(&mut self, n: u32) {
        self.raw().num_discard_bios = n;
    }

    /// Receive flushes even if no underlying device needs them (`ti->flush_supported`).
    pub fn set_flush_supported(&mut self, on: bool) {
        self.raw().set_flush_supported(on);
    }

    /// Receive discards regardless of the underlying devices (`ti->discards_supported`).
    pub fn set_discards_supported(&mut self, on: bool) {
        self.raw().set_discards_supported(on);
    }

    /// Split discards on `max_discard_sectors` boundaries (`ti->max_discard_granularity`).
    pub fn set_max_discard_granularity(&mut self, on: bool) {
        self.raw().set_max_discard_granularity(on);
    }

    /// Limit in-flight bios when swapping to this device (`ti->limit_swap_bios`).
    pub fn set_limit_swap_bios(&mut self, on: bool) {
        self.raw().set_limit_swap_bios(on);
    }

    /// The target submits remapped bios itself after `map` (`ti->accounts_remapped_io`).
    pub fn set_accounts_remapped_io(&mut self, on: bool) {
        self.raw().set_accounts_remapped_io(on);
    }

    /// Never send bios larger than `sectors` or crossing a multiple of it
    /// (`dm_set_target_max_io_len()`).
    pub fn set_max_io_len(&mut self, sectors: u64) -> Result {
        let ti = self.raw();
        // SAFETY: `ti` is valid and under construction.
        to_result(unsafe { dm::dm_set_target_max_io_len(ti, sectors) })
    }

    /// Reserves `bytes` of per-bio data (`ti->per_io_data_size`); the glue calls it with the
    /// size of [`super::Target::PerBio`].
    pub(crate) fn set_per_io_data_size(&mut self, bytes: u32) {
        self.raw().per_io_data_size = bytes;
    }

    /// Stores the constructor's failure reason (`ti->error`).
    pub(crate) fn set_error(&mut self, reason: &'static CStr) {
        // dm core only reads the string; it never writes through `ti->error`.
        self.raw().error = reason.as_char_ptr().cast_mut();
    }

    /// Stores the private data pointer (`ti->private`).
    pub(crate) fn set_private(&mut self, ptr: *mut c_void) {
        self.raw().private = ptr;
    }
}

impl core::ops::Deref for TargetCtr<'_> {
    type Target = TargetRef;

    fn deref(&self) -> &TargetRef {
        self.ti
    }
}
