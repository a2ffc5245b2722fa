// SPDX-License-Identifier: GPL-2.0

//! [`RwSemaphore`]: data behind a kernel `struct rw_semaphore` — many readers or one writer.
//!
//! C header: [`include/linux/rwsem.h`](srctree/include/linux/rwsem.h).
//!
//! A thin pool resolves already-provisioned blocks in `map` on many CPUs at once while its
//! worker changes the metadata: `map` takes the read side without waiting
//! ([`RwSemaphore::try_read`]) and leaves the bio to the worker when the worker holds the write
//! side. The kernel's Rust `sync` module (7.2) has no reader-writer lock, so the glue adds one.
//! Readers share `&T` (hence `T: Sync` for the lock to be `Sync`); the writer gets `&mut T`.
//! Guards are not `Send`: a semaphore is released by the task that took it (lockdep checks).

use core::{
    cell::UnsafeCell,
    marker::{PhantomData, PhantomPinned},
    ops::{Deref, DerefMut},
};
use kernel::{bindings, prelude::*, str::CStr, sync::LockClassKey, types::Opaque};

/// A reader-writer semaphore protecting a `T`.
///
/// # Invariants
///
/// `sem` is initialised (`__init_rwsem`); `data` is only accessed through a guard: shared by
/// read guards, exclusively by the one write guard.
#[pin_data]
pub struct RwSemaphore<T> {
    #[pin]
    sem: Opaque<bindings::rw_semaphore>,
    #[pin]
    _pin: PhantomPinned,
    data: UnsafeCell<T>,
}

// SAFETY: The semaphore may move between threads with its data when `T` may.
unsafe impl<T: Send> Send for RwSemaphore<T> {}
// SAFETY: Readers on several threads share `&T` (needs `T: Sync`); the writer may be on any
// thread (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for RwSemaphore<T> {}

/// Creates an [`RwSemaphore`] initialiser with a lockdep class for this call site.
#[macro_export]
macro_rules! new_rwsem {
    ($inner:expr, $name:literal) => {
        $crate::dm::RwSemaphore::new($inner, kernel::c_str!($name), kernel::static_lock_class!())
    };
}

impl<T> RwSemaphore<T> {
    /// A semaphore holding `data`, named `name` for lockdep.
    pub fn new(
        data: T,
        name: &'static CStr,
        key: Pin<&'static LockClassKey>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writes during the call; `name` and `key` are static.
            sem <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_rwsem(slot, name.as_char_ptr(), key.as_ptr())
            }),
            _pin: PhantomPinned,
            data: UnsafeCell::new(data),
        })
    }

    /// Shared access; sleeps while a writer holds the semaphore.
    pub fn read(&self) -> ReadGuard<'_, T> {
        // SAFETY: Initialised (type invariant).
        unsafe { bindings::down_read(self.sem.get()) };
        ReadGuard {
            sem: self,
            _not_send: PhantomData,
        }
    }

    /// Shared access if no writer holds the semaphore; never sleeps.
    pub fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        // SAFETY: Initialised (type invariant).
        if unsafe { bindings::down_read_trylock(self.sem.get()) } == 0 {
            return None;
        }
        Some(ReadGuard {
            sem: self,
            _not_send: PhantomData,
        })
    }

    /// Exclusive access; sleeps until every reader and writer is gone.
    pub fn write(&self) -> WriteGuard<'_, T> {
        // SAFETY: Initialised (type invariant).
        unsafe { bindings::down_write(self.sem.get()) };
        WriteGuard {
            sem: self,
            _not_send: PhantomData,
        }
    }
}

/// Shared access to the data of an [`RwSemaphore`]; released on drop.
pub struct ReadGuard<'a, T> {
    sem: &'a RwSemaphore<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The read side is held: only shared access exists.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard holds the read side, taken by this task.
        unsafe { bindings::up_read(self.sem.sem.get()) };
    }
}

/// Exclusive access to the data of an [`RwSemaphore`]; released on drop.
pub struct WriteGuard<'a, T> {
    sem: &'a RwSemaphore<T>,
    _not_send: PhantomData<*mut ()>,
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: The write side is held: this guard is the only access.
        unsafe { &*self.sem.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: The write side is held and `&mut self` is the only borrow of the guard.
        unsafe { &mut *self.sem.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: This guard holds the write side, taken by this task.
        unsafe { bindings::up_write(self.sem.sem.get()) };
    }
}

// The glue test module (rust/dm_rthin_test.rs) builds this file too; the suite runs in dm-rthin.
#[cfg(not(rthin_glue_test))]
#[kernel::prelude::kunit_tests(rthin_dm_rwsem)]
mod tests {
    use kernel::prelude::*;

    #[test]
    fn readers_share_writer_excludes() {
        let sem = KBox::pin_init(crate::new_rwsem!(5u32, "test"), GFP_KERNEL);
        assert!(sem.is_ok());
        let Ok(sem) = sem else { return };
        {
            let a = sem.read();
            let b = sem.try_read();
            assert!(b.is_some());
            assert_eq!(*a, 5);
        }
        {
            let mut w = sem.write();
            *w = 6;
            // A writer excludes readers.
            assert!(sem.try_read().is_none());
        }
        assert_eq!(sem.try_read().as_deref().copied(), Some(6));
    }
}
