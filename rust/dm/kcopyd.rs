// SPDX-License-Identifier: GPL-2.0

//! [`Kcopyd`]: a dm-kcopyd client, for zeroing and copying ranges of block devices without
//! waiting.
//!
//! C header: [`include/linux/dm-kcopyd.h`](srctree/include/linux/dm-kcopyd.h).
//!
//! Thin provisioning zeroes a newly allocated data block before a partial write lands in it,
//! and copies a shared block before a write breaks the sharing. dm-kcopyd does both with its own
//! preallocated pages and threads, so it makes progress under memory pressure. A job is started
//! with a [`KcopydDone`] value that kcopyd hands back, with the outcome, when the I/O is done:
//! the submitter (a pool's worker) goes on with other bios meanwhile.
//!
//! Lifetimes: the job owns counted handles of the devices it reads and writes ([`BlockDevice`]
//! in an [`Arc`]), so a device cannot be closed under a running job; and `dm_kcopyd_client_destroy`
//! waits for every job of the client, so the client cannot go away under one either.

use super::{bindings as dm, BlockDevice};
use core::{mem::MaybeUninit, ptr::NonNull};
use kernel::{
    error::from_err_ptr,
    ffi::{c_int, c_ulong, c_void},
    prelude::*,
    sync::Arc,
};

/// What a kcopyd job hands back when it is done.
pub trait KcopydDone: Send + Sized + 'static {
    /// Called exactly once, with whether every read and write of the job succeeded.
    ///
    /// Runs on kcopyd's thread, in process context: it may take locks and queue work, but must
    /// not wait for kcopyd (a job of the same client cannot finish meanwhile), and must not drop
    /// the last owner of the [`Kcopyd`] (its destruction waits for this very call to return: a
    /// deadlock, not memory unsafety, but a hang all the same).
    fn done(self, ok: bool);
}

/// A dm-kcopyd client.
///
/// # Invariants
///
/// `ptr` came from `dm_kcopyd_client_create` and is destroyed only in `drop`.
pub struct Kcopyd {
    ptr: NonNull<dm::dm_kcopyd_client>,
}

// SAFETY: kcopyd clients may be used from any thread; jobs are queued under kcopyd's own locks.
unsafe impl Send for Kcopyd {}
// SAFETY: As above: submitting jobs through `&Kcopyd` is thread-safe.
unsafe impl Sync for Kcopyd {}

/// One job in flight: what it must keep alive, and what to hand back.
struct Job<D> {
    _devices: [Option<Arc<BlockDevice>>; 2],
    done: D,
}

/// kcopyd's notify function for jobs of type `Job<D>`.
///
/// # Safety
///
/// `context` is the pointer `Kcopyd::start` leaked from a `KBox<Job<D>>`, passed here once.
unsafe extern "C" fn notify<D: KcopydDone>(
    read_err: c_int,
    write_err: c_ulong,
    context: *mut c_void,
) {
    // SAFETY: By the function's safety requirement `context` owns a `Job<D>`; kcopyd calls
    // each job's notify function once.
    let job = unsafe { KBox::from_raw(context.cast::<Job<D>>()) };
    let Job { _devices, done } = KBox::into_inner(job);
    done.done(read_err == 0 && write_err == 0);
    // The devices are released only now that kcopyd is done with them.
    drop(_devices);
}

impl Kcopyd {
    /// Creates a client (not throttled).
    pub fn new() -> Result<Self> {
        // SAFETY: A null throttle means "not throttled", which kcopyd supports.
        let ptr = from_err_ptr(unsafe { dm::dm_kcopyd_client_create(core::ptr::null_mut()) })?;
        // INVARIANT: `ptr` was just created.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    /// Starts writing zeroes to `count` sectors of `dev` from `sector`; `done` gets the outcome.
    ///
    /// Returns `done` back when the job cannot be started (no memory for it). May sleep for
    /// memory (call it in a `NoIoScope` from a worker, never from `map`).
    pub fn zero<D: KcopydDone>(
        &self,
        dev: &Arc<BlockDevice>,
        sector: u64,
        count: u64,
        done: D,
    ) -> Result<(), D> {
        let context = Self::leak_job([Some(dev.clone()), None], done)?;
        // SAFETY: The client is alive (invariant); `dev` stays open until `notify` drops the
        // job's handle; `context` is a leaked `Job<D>` that `notify::<D>` takes back once.
        unsafe {
            dm::rthin_kcopyd_zero(
                self.ptr.as_ptr(),
                dev.bdev(),
                sector,
                count,
                Some(notify::<D>),
                context,
            )
        };
        Ok(())
    }

    /// Starts copying `count` sectors from `from` at `from_sector` to `to` at `to_sector`;
    /// `done` gets the outcome.
    ///
    /// Returns `done` back when the job cannot be started (no memory for it). May sleep for
    /// memory, as [`Kcopyd::zero`].
    pub fn copy<D: KcopydDone>(
        &self,
        from: &Arc<BlockDevice>,
        from_sector: u64,
        to: &Arc<BlockDevice>,
        to_sector: u64,
        count: u64,
        done: D,
    ) -> Result<(), D> {
        let context = Self::leak_job([Some(from.clone()), Some(to.clone())], done)?;
        // SAFETY: The client is alive (invariant); both devices stay open until `notify` drops
        // the job's handles; `context` is a leaked `Job<D>` that `notify::<D>` takes back once.
        unsafe {
            dm::rthin_kcopyd_copy(
                self.ptr.as_ptr(),
                from.bdev(),
                from_sector,
                to.bdev(),
                to_sector,
                count,
                Some(notify::<D>),
                context,
            )
        };
        Ok(())
    }

    /// Boxes a job and leaks it for kcopyd; on allocation failure gives `done` back.
    fn leak_job<D: KcopydDone>(
        devices: [Option<Arc<BlockDevice>>; 2],
        done: D,
    ) -> Result<*mut c_void, D> {
        let slot: KBox<MaybeUninit<Job<D>>> = match KBox::new_uninit(GFP_KERNEL) {
            Ok(slot) => slot,
            Err(_) => return Err(done),
        };
        let job = KBox::write(
            slot,
            Job {
                _devices: devices,
                done,
            },
        );
        Ok(KBox::into_raw(job).cast())
    }
}

impl Drop for Kcopyd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the client is alive. `dm_kcopyd_client_destroy` first
        // waits for every job of the client to be notified.
        unsafe { dm::dm_kcopyd_client_destroy(self.ptr.as_ptr()) };
    }
}
