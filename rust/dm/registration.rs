// SPDX-License-Identifier: GPL-2.0

//! [`Registration`]: a registered device-mapper target type.

use super::{bindings as dm, vtable::TargetVTable, Target};
use kernel::{error::to_result, prelude::*, types::Opaque};

/// A target type registered with device-mapper for as long as this value lives.
///
/// The `struct target_type` lives inside the registration (dm core links it into its global
/// list), so the registration is pinned. It also owns the target's [`Target::Shared`] data,
/// which every constructor borrows.
///
/// # Invariants
///
/// - `target_type` holds a `target_type` built by [`TargetVTable::<T>::build`] and registered
///   with `dm_register_target()`; it is unregistered exactly once, in `drop`.
/// - `shared` is initialised before the target type is registered, so no constructor can see
///   it uninitialised.
/// - Every `dm_target` whose `type` points at `target_type` was constructed by
///   `TargetVTable::<T>`, and holds a reference on `target_type.module`; the module (and with it
///   this registration) therefore outlives every such target.
#[pin_data(PinnedDrop)]
pub struct Registration<T: Target> {
    shared: T::Shared,
    #[pin]
    target_type: Opaque<dm::target_type>,
}

// SAFETY: Registering and unregistering may happen on any thread; `T::Shared: Send`.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` only exposes `&T::Shared`, and `T::Shared: Sync`.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers target type `T`, owned by `module`, with `shared` as its shared data.
    ///
    /// Fails with `EBUSY` if a target type of the same name is already registered.
    pub fn register(module: &'static ThisModule, shared: T::Shared) -> impl PinInit<Self, Error> {
        // Field order matters: `shared` must be in place before the registration makes the
        // constructor callable.
        try_pin_init!(Self {
            shared,
            target_type <- Opaque::try_ffi_init(move |slot: *mut dm::target_type| {
                // SAFETY: `slot` is valid for writes.
                unsafe { slot.write(TargetVTable::<T>::build(module)) };
                // SAFETY: `slot` now holds a complete `target_type` whose name is static; it is
                // pinned and `drop` unregisters it before the memory goes away.
                to_result(unsafe { dm::dm_register_target(slot) })
            }),
        })
    }

    /// The shared data.
    pub fn shared(&self) -> &T::Shared {
        &self.shared
    }

    /// The registration a target instance of type `T` belongs to.
    ///
    /// # Safety
    ///
    /// `ti` must be a valid `dm_target` whose `type` is the `target_type` of a
    /// `Registration<T>` (true inside the callbacks of [`TargetVTable<T>`]).
    pub(crate) unsafe fn from_target<'a>(ti: *mut dm::dm_target) -> &'a Self {
        // SAFETY: `ti` is valid (caller).
        let tt = unsafe { (*ti).type_ };
        // SAFETY: The caller guarantees `tt` is the `target_type` field of a
        // `Registration<T>`; `Opaque<target_type>` has the layout of `target_type`.
        let reg = unsafe {
            kernel::container_of!(tt.cast::<Opaque<dm::target_type>>(), Self, target_type)
        };
        // SAFETY: By the type invariants the registration outlives every target of its type,
        // so it is valid for the duration of the callback.
        unsafe { &*reg }
    }
}

#[pinned_drop]
impl<T: Target> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariants the target type is registered; this is the only place
        // that unregisters it.
        unsafe { dm::dm_unregister_target(self.target_type.get()) };
    }
}
