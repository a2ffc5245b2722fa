// SPDX-License-Identifier: GPL-2.0

//! What the glue keeps in `ti->private`: the target's own private data plus glue state that
//! must live exactly as long as the target, and [`EventRelay`], a counted handle through which
//! any context that may sleep can raise the target's table event.
//!
//! C header: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h)
//! (`dm_table_event`).
//!
//! dm-thin raises table events from its worker (low water mark, mode changes) through a
//! pointer to the pool's `dm_target`, which it must not use after the table is gone. Here the
//! worker holds an [`EventRelay`] instead: the glue clears it in `dtr` before the table can be
//! freed, and raising through a cleared relay does nothing. So a relay can be kept anywhere
//! (an `Arc`, a work item, another target's state) without outliving what it points into.

use super::{bindings as dm, device::DeviceList};
use core::{
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// Raises table events on one target's table, while that target exists.
///
/// # Invariants
///
/// `table`, when `Some`, is the table of a target that has not been destroyed: the glue sets it
/// when the target is constructed and clears it (under the mutex) in the target's `dtr`, before
/// dm core frees the table.
#[pin_data]
pub struct EventRelay {
    #[pin]
    table: Mutex<Option<NonNull<dm::dm_table>>>,
}

// SAFETY: The table pointer is only used under the mutex while valid (type invariant);
// `dm_table_event` may be called from any thread in process context.
unsafe impl Send for EventRelay {}
// SAFETY: As above; all access goes through the mutex.
unsafe impl Sync for EventRelay {}

impl EventRelay {
    fn new(table: NonNull<dm::dm_table>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                table <- new_mutex!(Some(table), "EventRelay::table"),
            }),
            GFP_KERNEL,
        )
    }

    /// Raises a table event (`dm_table_event`: wakes `dmsetup wait`, sends a uevent) if the
    /// target still exists; otherwise does nothing.
    ///
    /// Sleeps (dm core takes a mutex): process context only, never `map` or `end_io`.
    pub fn raise(&self) {
        let table = self.table.lock();
        if let Some(t) = *table {
            // SAFETY: By the type invariant the table is alive while the mutex is held with
            // the pointer set.
            unsafe { dm::dm_table_event(t.as_ptr()) };
        }
    }

    /// Whether the target still exists.
    pub fn is_live(&self) -> bool {
        self.table.lock().is_some()
    }

    fn clear(&self) {
        *self.table.lock() = None;
    }
}

/// The glue's per-target state, the pointee of `ti->private`.
///
/// `relay` comes first and the struct is `repr(C)`, so code that does not know the target type
/// (`TargetRef`) can find the relay of any constructed target.
///
/// # Invariants
///
/// `private` came from `T::Private::into_foreign` and is converted back exactly once, in
/// [`Instance::destroy`].
#[repr(C)]
pub(crate) struct Instance {
    pub(crate) relay: Arc<EventRelay>,
    /// The devices the target opened; put after the private data is dropped.
    pub(crate) devices: DeviceList,
    pub(crate) private: *mut c_void,
    /// Bios the target took over (in `map` or `end_io`) whose final completion has not run.
    /// dm core destroys a table only after all its bios completed, so this is 0 in `dtr`;
    /// anything else is a bug, warned about there.
    pub(crate) owned_bios: AtomicUsize,
}

impl Instance {
    /// Boxes the state of a target whose table is `table`, taking over `private` (a foreign
    /// pointer of the target's private data).
    ///
    /// On failure the devices have been put (the list is dropped) and `private` is untouched:
    /// the caller still owns it.
    pub(crate) fn new(
        table: *mut dm::dm_table,
        devices: DeviceList,
        private: *mut c_void,
    ) -> Result<KBox<Self>> {
        let table = NonNull::new(table).ok_or(EINVAL)?;
        let relay = EventRelay::new(table)?;
        let instance = Self {
            relay,
            devices,
            private,
            owned_bios: AtomicUsize::new(0),
        };
        Ok(KBox::new(instance, GFP_KERNEL)?)
    }

    /// Clears the relay and returns the private data's foreign pointer and the devices, for
    /// the caller to drop in that order.
    pub(crate) fn destroy(self: KBox<Self>) -> (*mut c_void, DeviceList) {
        self.relay.clear();
        let left = self.owned_bios.load(Ordering::Relaxed);
        if left != 0 {
            pr_err!(
                "rthin: target destroyed with {} bios it took over still unfinished\n",
                left
            );
        }
        kernel::warn_on!(left != 0);
        let this = KBox::into_inner(self);
        (this.private, this.devices)
    }
}
