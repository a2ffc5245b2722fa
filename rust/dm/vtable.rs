// SPDX-License-Identifier: GPL-2.0

//! [`TargetVTable`]: the `extern "C"` callbacks dm core calls, translating to [`Target`].
//!
//! Ownership of the private data: `ctr_callback` turns the [`Target::Private`] returned by
//! [`Target::ctr`] into a foreign pointer, kept with the glue's own per-target state in a boxed
//! [`Instance`] stored in `ti->private`; every other callback borrows it; `dtr_callback` clears
//! `ti->private`, then takes both back and drops them. dm core never calls another callback of a
//! target concurrently with, or after, its `dtr`, and calls `dtr` only after a successful
//! `ctr`.

use super::bio::BioSlot;
use super::{
    bindings as dm, instance::Instance, Args, BlkStatus, DeviceVisitor, EndIoRequest, MapRequest,
    QueueLimits, Registration, ResultWriter, StatusFlags, StatusType, Target, TargetCtr, TargetRef,
};
use core::{marker::PhantomData, ptr::NonNull, sync::atomic::Ordering};
use kernel::{bindings, ffi::c_uint, prelude::*, types::ForeignOwnable};

/// Builds the `struct target_type` of `T` and holds its callbacks.
pub(crate) struct TargetVTable<T: Target>(PhantomData<T>);

impl<T: Target> TargetVTable<T> {
    /// Size of the per-bio area (`T::PerBio` and the glue's bookkeeping) as dm core's
    /// `per_io_data_size`.
    const PER_BIO_SIZE: usize = {
        // dm core places per-bio data right before its `struct dm_target_io`, whose alignment
        // (at least that of a pointer) is all the per-bio area is guaranteed.
        assert!(align_of::<BioSlot<T::PerBio>>() <= align_of::<*const u8>());
        assert!(size_of::<BioSlot<T::PerBio>>() <= u32::MAX as usize);
        size_of::<BioSlot<T::PerBio>>()
    };

    /// A `target_type` for `T`, owned by `module`; callbacks `T` does not implement stay
    /// `NULL`.
    pub(crate) fn build(module: &'static ThisModule) -> dm::target_type {
        let mut tt: dm::target_type = pin_init::zeroed();
        tt.name = T::NAME.as_char_ptr();
        tt.module = module.as_ptr();
        tt.version = T::VERSION;
        tt.features = T::FEATURES.bits();
        tt.ctr = Some(Self::ctr_callback);
        tt.dtr = Some(Self::dtr_callback);
        tt.map = Some(Self::map_callback);
        // Always: per-bio data is dropped, and bios the target took over are counted out, when
        // they complete, also for a target without an `end_io` of its own.
        tt.end_io = Some(Self::end_io_callback);
        tt.status = if T::HAS_STATUS {
            Some(Self::status_callback)
        } else {
            None
        };
        tt.message = if T::HAS_MESSAGE {
            Some(Self::message_callback)
        } else {
            None
        };
        tt.iterate_devices = if T::HAS_ITERATE_DEVICES {
            Some(Self::iterate_devices_callback)
        } else {
            None
        };
        tt.io_hints = if T::HAS_IO_HINTS {
            Some(Self::io_hints_callback)
        } else {
            None
        };
        tt.presuspend = if T::HAS_PRESUSPEND {
            Some(Self::presuspend_callback)
        } else {
            None
        };
        tt.postsuspend = if T::HAS_POSTSUSPEND {
            Some(Self::postsuspend_callback)
        } else {
            None
        };
        tt.preresume = if T::HAS_PRERESUME {
            Some(Self::preresume_callback)
        } else {
            None
        };
        tt.resume = if T::HAS_RESUME {
            Some(Self::resume_callback)
        } else {
            None
        };
        tt
    }

    /// Borrows the private data and the target of a constructed instance.
    ///
    /// # Safety
    ///
    /// `ti` must be a target of type `T` whose `ctr_callback` succeeded and whose
    /// `dtr_callback` has not run; the result must not be used after the callback returns.
    unsafe fn instance<'a>(
        ti: *mut dm::dm_target,
    ) -> Option<(<T::Private as ForeignOwnable>::Borrowed<'a>, &'a TargetRef)> {
        // SAFETY: Same requirements.
        unsafe { Self::instance_and_glue(ti) }.map(|(private, ti, _)| (private, ti))
    }

    /// [`Self::instance`], with the glue's own part of the instance.
    ///
    /// # Safety
    ///
    /// As for [`Self::instance`].
    #[allow(clippy::type_complexity)]
    unsafe fn instance_and_glue<'a>(
        ti: *mut dm::dm_target,
    ) -> Option<(
        <T::Private as ForeignOwnable>::Borrowed<'a>,
        &'a TargetRef,
        &'a Instance,
    )> {
        // SAFETY: `ti` is valid (caller), so is its `private` field: a boxed `Instance` set by
        // `ctr_callback` that lives until `dtr_callback`, which first sets it to null. A
        // callback that comes too late (a bug elsewhere) finds null and does nothing.
        let instance = unsafe { (*ti).private.cast::<Instance>().as_ref() }?;
        // SAFETY: `instance.private` came from `into_foreign` in `ctr_callback`, and
        // `from_foreign` only runs in `dtr_callback`, which dm core does not call while another
        // callback runs.
        let private = unsafe { T::Private::borrow(instance.private) };
        // SAFETY: dm core keeps `ti` alive and unchanged for the duration of the callback.
        let ti = unsafe { TargetRef::from_raw(ti) };
        Some((private, ti, instance))
    }

    /// `target_type.ctr`.
    ///
    /// # Safety
    ///
    /// Called by dm core with a `dm_target` of type `T` under construction, and `argv` holding
    /// `argc` NUL-terminated strings valid for the call.
    unsafe extern "C" fn ctr_callback(
        ti: *mut dm::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
    ) -> c_int {
        // SAFETY: `ti` is under construction and valid for the call.
        let mut ctr = unsafe { TargetCtr::from_raw(ti) };
        // SAFETY: `ti->type` is the `target_type` of the `Registration<T>` that registered the
        // callback.
        let registration = unsafe { Registration::<T>::from_target(ti) };
        // SAFETY: dm core passes `argc` valid strings that live for the call.
        let args = unsafe { Args::from_raw(argc, argv) };
        if Self::PER_BIO_SIZE > 0 {
            // Fits: `PER_BIO_SIZE` is checked against `u32::MAX` at compile time.
            ctr.set_per_io_data_size(Self::PER_BIO_SIZE as u32);
        }
        let result = T::ctr(registration.shared(), &mut ctr, args);
        // The devices the constructor opened: kept with the instance, or put on failure.
        let devices = ctr.take_devices();
        match result {
            Ok(private) => {
                let foreign: *mut c_void = private.into_foreign().cast();
                let instance = devices
                    .ok_or(EINVAL)
                    .and_then(|devices| Instance::new(ctr.table_raw(), devices, foreign));
                match instance {
                    Ok(instance) => {
                        ctr.set_private(KBox::into_raw(instance).cast());
                        0
                    }
                    Err(e) => {
                        // SAFETY: `foreign` came from `into_foreign` just above and was not
                        // handed to anyone.
                        drop(unsafe { T::Private::from_foreign(foreign.cast()) });
                        ctr.set_error(c"Out of memory");
                        e.to_errno()
                    }
                }
            }
            Err(e) => {
                drop(devices);
                ctr.set_error(e.reason());
                e.code().to_errno()
            }
        }
    }

    /// `target_type.dtr`.
    ///
    /// # Safety
    ///
    /// Called by dm core once per successfully constructed target, after every other callback
    /// of that target has returned.
    unsafe extern "C" fn dtr_callback(ti: *mut dm::dm_target) {
        // SAFETY: `ti` is valid for the call.
        let raw = unsafe { (*ti).private };
        // SAFETY: As above. `ti->private` is cleared first, so nothing can find the instance
        // while it is being torn down.
        unsafe { (*ti).private = core::ptr::null_mut() };
        // SAFETY: `raw` is the boxed `Instance` from `ctr_callback`, converted back only here.
        let instance = unsafe { KBox::from_raw(raw.cast::<Instance>()) };
        // The relay is cleared before the private data (and then the table) goes away.
        let (private, devices) = instance.destroy();
        // SAFETY: `private` came from `into_foreign` in `ctr_callback`; this is its only
        // `from_foreign`, and no borrow is alive (no other callback runs).
        drop(unsafe { T::Private::from_foreign(private.cast()) });
        // Last, the devices: nothing can reach them any more.
        drop(devices);
    }

    /// `target_type.map`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target of type `T` with a clone bio that dm core
    /// hands to the target until `map` returns (or, after `DM_MAPIO_SUBMITTED`, until the target
    /// finishes it), whose per-bio area has `per_io_data_size` bytes.
    unsafe extern "C" fn map_callback(ti: *mut dm::dm_target, bio: *mut bindings::bio) -> c_int {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti, instance)) = (unsafe { Self::instance_and_glue(ti) }) else {
            return dm::DM_MAPIO_KILL as c_int;
        };
        let Some(bio) = NonNull::new(bio) else {
            return dm::DM_MAPIO_KILL as c_int;
        };
        // SAFETY: Same area and size `ctr_callback` reserved.
        let Some(per_bio) = (unsafe { Self::per_bio(bio) }) else {
            return dm::DM_MAPIO_KILL as c_int;
        };
        // SAFETY: `per_bio` is valid for writes and aligned (checked by `PER_BIO_SIZE`).
        unsafe {
            per_bio.write(BioSlot {
                data: T::PerBio::default(),
                owned: false,
            })
        };
        // SAFETY: The bio is ours for the call; its per-bio area was just initialised and is
        // disjoint from it; the count is this instance's.
        let request = unsafe { MapRequest::new(bio, per_bio, &instance.owned_bios) };
        let code = T::map(private, ti, request).into_raw();
        // dm core calls `end_io` only for bios that were remapped or submitted: the per-bio
        // data of a killed or requeued bio is dropped here (a requeued bio is mapped afresh).
        if code == dm::DM_MAPIO_KILL as c_int || code == dm::DM_MAPIO_REQUEUE as c_int {
            // SAFETY: Initialised above; no `OwnedBio` exists for a killed or requeued bio, so
            // nothing else refers to it, and it is dropped exactly once.
            unsafe { core::ptr::drop_in_place(per_bio.as_ptr()) };
        }
        code
    }

    /// The per-bio area of `bio`.
    ///
    /// # Safety
    ///
    /// `bio` must be a clone bio of a target of type `T` (so it has `PER_BIO_SIZE` bytes of
    /// per-bio data).
    unsafe fn per_bio(bio: NonNull<bindings::bio>) -> Option<NonNull<BioSlot<T::PerBio>>> {
        // Evaluating the constant checks the per-bio area's size and alignment.
        let _ = Self::PER_BIO_SIZE;
        // SAFETY: The bio is a dm clone with that much per-bio data (caller).
        Some(unsafe { super::bio::per_bio_slot::<T::PerBio>(bio) })
    }

    /// `target_type.end_io`.
    ///
    /// # Safety
    ///
    /// Called by dm core, possibly in interrupt context, for a bio that went through
    /// `map_callback` of this constructed target, with `error` valid for reads and writes.
    unsafe extern "C" fn end_io_callback(
        ti: *mut dm::dm_target,
        bio: *mut bindings::bio,
        error: *mut bindings::blk_status_t,
    ) -> c_int {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti, instance)) = (unsafe { Self::instance_and_glue(ti) }) else {
            return dm::DM_ENDIO_DONE as c_int;
        };
        let Some(bio) = NonNull::new(bio) else {
            return dm::DM_ENDIO_DONE as c_int;
        };
        // SAFETY: `error` is valid (caller).
        let mut status = BlkStatus(unsafe { *error });
        // SAFETY: The bio went through `map_callback`, which initialised its per-bio data.
        let Some(per_bio) = (unsafe { Self::per_bio(bio) }) else {
            return dm::DM_ENDIO_DONE as c_int;
        };
        // SAFETY: dm core hands us the bio for the call; its per-bio data is initialised and
        // disjoint from it.
        let request = unsafe { EndIoRequest::new(bio, per_bio, &instance.owned_bios) };
        let code = if T::HAS_END_IO {
            T::end_io(private, ti, request, &mut status).into_raw()
        } else {
            request.done().into_raw()
        };
        // SAFETY: `error` is valid (caller).
        unsafe { *error = status.0 };
        // Unless the target kept the bio (`DM_ENDIO_INCOMPLETE`: it ends it again later, and
        // this runs again), the bio's life with this target is over: drop its per-bio data.
        if code != dm::DM_ENDIO_INCOMPLETE as c_int {
            // SAFETY: Initialised by `map_callback`; nothing else refers to it (see below).
            if unsafe { (*per_bio.as_ptr()).owned } {
                instance.owned_bios.fetch_sub(1, Ordering::Relaxed);
            }
            // SAFETY: Initialised by `map_callback`; the `EndIoRequest` was consumed and no
            // `OwnedBio` of the bio exists (it was ended or submitted, which consumed it), so
            // nothing else refers to it; this is the bio's last completion, so it is dropped
            // exactly once.
            unsafe { core::ptr::drop_in_place(per_bio.as_ptr()) };
        }
        code
    }

    /// `target_type.status`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target, with `result` valid for writes of `maxlen`
    /// bytes.
    unsafe extern "C" fn status_callback(
        ti: *mut dm::dm_target,
        kind: dm::status_type_t,
        flags: c_uint,
        result: *mut c_char,
        maxlen: c_uint,
    ) {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return;
        };
        // SAFETY: `result` is valid for `maxlen` bytes and ours for the call.
        let mut out = unsafe { ResultWriter::from_raw(result, maxlen) };
        let kind = match kind {
            dm::status_type_t_STATUSTYPE_INFO => StatusType::Info,
            dm::status_type_t_STATUSTYPE_TABLE => StatusType::Table,
            _ => StatusType::Ima,
        };
        T::status(private, ti, kind, StatusFlags::from_raw(flags), &mut out);
    }

    /// `target_type.message`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target with `argc` valid strings in `argv` and
    /// `result` valid for writes of `maxlen` bytes, all for the duration of the call.
    unsafe extern "C" fn message_callback(
        ti: *mut dm::dm_target,
        argc: c_uint,
        argv: *mut *mut c_char,
        result: *mut c_char,
        maxlen: c_uint,
    ) -> c_int {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return EINVAL.to_errno();
        };
        // SAFETY: `argv` holds `argc` strings valid for the call.
        let args = unsafe { Args::from_raw(argc, argv) };
        // SAFETY: `result` is valid for `maxlen` bytes and ours for the call.
        let mut out = unsafe { ResultWriter::from_raw(result, maxlen) };
        match T::message(private, ti, args, &mut out) {
            // 1 tells dm core that `result` holds text for user space.
            Ok(()) => c_int::from(!out.is_empty()),
            Err(e) => e.to_errno(),
        }
    }

    /// `target_type.iterate_devices`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target with a callout and cookie valid for the call.
    unsafe extern "C" fn iterate_devices_callback(
        ti: *mut dm::dm_target,
        callout: dm::iterate_devices_callout_fn,
        data: *mut c_void,
    ) -> c_int {
        let raw_ti = ti;
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return 0;
        };
        // SAFETY: These are the arguments of the running call.
        let mut visitor = unsafe { DeviceVisitor::new(raw_ti, callout, data) };
        match T::iterate_devices(private, ti, &mut visitor) {
            Ok(()) => 0,
            Err(stop) => stop.0,
        }
    }

    /// `target_type.io_hints`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target with `limits` valid and exclusively ours for
    /// the call.
    unsafe extern "C" fn io_hints_callback(
        ti: *mut dm::dm_target,
        limits: *mut bindings::queue_limits,
    ) {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return;
        };
        // SAFETY: `limits` is valid and ours for the call.
        let limits = unsafe { QueueLimits::from_raw(limits) };
        T::io_hints(private, ti, limits);
    }

    /// `target_type.presuspend`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn presuspend_callback(ti: *mut dm::dm_target) {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return;
        };
        T::presuspend(private, ti);
    }

    /// `target_type.postsuspend`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn postsuspend_callback(ti: *mut dm::dm_target) {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return;
        };
        T::postsuspend(private, ti);
    }

    /// `target_type.preresume`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn preresume_callback(ti: *mut dm::dm_target) -> c_int {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return EINVAL.to_errno();
        };
        match T::preresume(private, ti) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// `target_type.resume`.
    ///
    /// # Safety
    ///
    /// Called by dm core for a constructed target.
    unsafe extern "C" fn resume_callback(ti: *mut dm::dm_target) {
        // SAFETY: The target is constructed (dm core calls this only then).
        let Some((private, ti)) = (unsafe { Self::instance(ti) }) else {
            return;
        };
        T::resume(private, ti);
    }
}
