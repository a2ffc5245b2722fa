// SPDX-License-Identifier: GPL-2.0

//! [`OwnedQueue`], a workqueue a target allocates for itself, and [`NoIoScope`], the
//! `memalloc_noio` scope its workers run in.
//!
//! C headers: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h),
//! [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h).
//!
//! A block target's worker sits on the write-out path: memory reclaim may wait for the very
//! bios the worker is about to process. So its queue is `WQ_MEM_RECLAIM` (a rescuer thread
//! guarantees progress when no new worker can be created), and allocations made while it works
//! must not recurse into I/O (`memalloc_noio_save`). The kernel's Rust `workqueue` module (7.2)
//! offers only the system queues; this adds an owned one that work items are queued on through
//! the kernel's own [`Queue`] API.

use super::bindings as dm;
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};
use kernel::{
    bindings,
    prelude::*,
    workqueue::{DelayedWork, Queue},
};

/// An ordered `WQ_MEM_RECLAIM` workqueue (one work item runs at a time), destroyed (after
/// draining) when dropped.
///
/// # Invariants
///
/// `ptr` was returned by `alloc_workqueue` and is destroyed only in `drop`.
pub struct OwnedQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// Allocates a reclaim-safe workqueue called `name` (shown in `ps` as `kworker`s'
    /// rescuer `name`).
    pub fn new(name: &CStr) -> Result<Self> {
        // SAFETY: `name` is NUL-terminated; `alloc_workqueue` copies it.
        let ptr = unsafe { dm::rthin_alloc_workqueue(name.as_char_ptr()) };
        // INVARIANT: Checked for allocation failure.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }
}

impl OwnedQueue {
    /// Waits until every work item queued so far has finished (`flush_workqueue`). Work whose
    /// delay has not expired yet is not waited for: see [`flush_delayed_work`].
    ///
    /// Sleeps; must not be called from a work item of this queue.
    pub fn flush(&self) {
        // SAFETY: By the type invariant the queue is alive.
        unsafe { dm::rthin_flush_workqueue(self.ptr.as_ptr()) };
    }
}

/// Makes a pending delayed work item run now and waits for it (`flush_delayed_work`), so that
/// whatever it holds (an `Arc` of its owner, typically) is released when this returns, unless it
/// queued itself again.
///
/// Sleeps; must not be called from the work item itself.
pub fn flush_delayed_work<T: ?Sized, const ID: u64>(work: &DelayedWork<T, ID>) {
    // SAFETY: `work` is a valid, initialised `DelayedWork`.
    let inner = unsafe { DelayedWork::raw_as_work(work) };
    // CAST: `work` is the first member of `struct delayed_work`, so the `work_struct` pointer is
    // also a pointer to the `delayed_work` around it.
    let dwork = inner.cast::<bindings::delayed_work>();
    // SAFETY: `dwork` points to an initialised `delayed_work` that outlives the call.
    unsafe { bindings::flush_delayed_work(dwork) };
}

impl Deref for OwnedQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: By the type invariant the queue is alive until `self` is dropped, which the
        // borrow of `self` outlives.
        unsafe { Queue::from_raw(self.ptr.as_ptr()) }
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the queue is alive and destroyed exactly once, here.
        // `destroy_workqueue` drains it first: work items still queued run to completion.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}

/// While it lives, allocations of the current task behave as `GFP_NOIO`
/// (`memalloc_noio_save`/`memalloc_noio_restore`).
///
/// Not `Send`: it must be dropped by the task that created it. Scopes nest.
pub struct NoIoScope {
    flags: u32,
    _not_send: PhantomData<*mut ()>,
}

impl NoIoScope {
    /// Enters the scope.
    pub fn enter() -> Self {
        // SAFETY: `memalloc_noio_save` only sets a flag of the current task.
        let flags = unsafe { dm::rthin_memalloc_noio_save() };
        Self {
            flags,
            _not_send: PhantomData,
        }
    }
}

impl Drop for NoIoScope {
    fn drop(&mut self) {
        // SAFETY: `flags` came from `memalloc_noio_save` on this task (the scope is not `Send`).
        unsafe { dm::rthin_memalloc_noio_restore(self.flags) };
    }
}
