// SPDX-License-Identifier: GPL-2.0

//! [`SpinLockIrq`]: a spinlock that disables local interrupts while held
//! (`spin_lock_irqsave`/`spin_unlock_irqrestore`).
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h).
//!
//! Bio completion (`end_io`, `bi_end_io`) may run in hard or soft interrupt context. State it
//! shares with process context (a pool's list of bios whose data reached the disk, say) must be
//! protected by a lock that keeps the interrupt out of a CPU holding it, or the interrupt would
//! spin forever on a lock its own CPU holds. The kernel's Rust `SpinLock` (7.2) takes a plain
//! `spin_lock()`, so the glue adds this backend for the generic [`kernel::sync::lock::Lock`]:
//! the same guard type, the same lockdep integration, the saved IRQ flags kept in the guard.
//!
//! Create one with [`new_spinlock_irq!`](crate::new_spinlock_irq). Guards are not `Send`
//! (the kernel's `Guard` is not), so the flags are always restored on the CPU that saved them.

use super::bindings as dm;
use kernel::{bindings, ffi::c_ulong, sync::lock::Backend};

/// A spinlock taken with interrupts disabled; usable from any context.
pub type SpinLockIrq<T> = kernel::sync::lock::Lock<T, SpinLockIrqBackend>;

/// A guard of a [`SpinLockIrq`]; interrupts are restored when it is dropped.
pub type SpinLockIrqGuard<'a, T> = kernel::sync::lock::Guard<'a, T, SpinLockIrqBackend>;

/// The `spin_lock_irqsave` backend of [`SpinLockIrq`].
pub struct SpinLockIrqBackend;

/// Creates a [`SpinLockIrq`] initialiser with a lockdep class for this call site.
#[macro_export]
macro_rules! new_spinlock_irq {
    ($inner:expr, $name:literal) => {
        $crate::dm::SpinLockIrq::new($inner, kernel::c_str!($name), kernel::static_lock_class!())
    };
}

// SAFETY: `spin_lock_irqsave` gives mutual exclusion like `spin_lock`; `relock` uses the default
// implementation, which calls `lock` again (the same method).
unsafe impl Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The caller guarantees `ptr` is valid for writes and `name`/`key` live forever.
        // (The kernel's Rust helper, which picks the lockdep-aware initialiser when needed.)
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The caller guarantees the lock was initialised.
        unsafe { dm::rthin_spin_lock_irqsave(ptr) }
    }

    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        let mut flags: c_ulong = 0;
        // SAFETY: The caller guarantees the lock was initialised; `flags` is a valid place.
        if unsafe { dm::rthin_spin_trylock_irqsave(ptr, &mut flags) } {
            Some(flags)
        } else {
            None
        }
    }

    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: The caller owns the lock; `guard_state` holds the flags its `lock` saved on
        // this CPU (guards are not `Send`).
        unsafe { dm::rthin_spin_unlock_irqrestore(ptr, *guard_state) }
    }

    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: The caller guarantees the lock was initialised.
        unsafe { dm::rthin_assert_spin_locked(ptr) }
    }
}

// The glue test module (rust/dm_rthin_test.rs) builds this file too; the suite runs in dm-rthin.
#[cfg(not(rthin_glue_test))]
#[kernel::prelude::kunit_tests(rthin_dm_irq_lock)]
mod tests {
    use kernel::prelude::*;

    #[test]
    fn excludes_and_restores() {
        let lock = KBox::pin_init(crate::new_spinlock_irq!(0u32, "test"), GFP_KERNEL);
        assert!(lock.is_ok());
        let Ok(lock) = lock else { return };
        {
            let mut g = lock.lock();
            *g += 1;
            // Held: a second attempt on the same CPU must fail, not deadlock.
            assert!(lock.try_lock().is_none());
        }
        let g = lock.try_lock();
        assert!(g.is_some());
        assert_eq!(g.as_deref().copied(), Some(1));
    }
}
