// SPDX-License-Identifier: GPL-2.0

//! [`BufioClient`]: a dm-bufio cache of fixed-size blocks of one block device, with guards that
//! make shared and exclusive access to a buffer checkable by the type system.
//!
//! C header: [`include/linux/dm-bufio.h`](srctree/include/linux/dm-bufio.h).
//!
//! dm-bufio lets any number of holders share a buffer and leaves locking to its user. Handing
//! out `&[u8]` and `&mut [u8]` to the same memory at once would be undefined behaviour in Rust,
//! so each buffer carries a lock word ([`BufferLock`]) in its bufio aux area: a [`BufferRef`]
//! counts as a reader, a [`BufferMut`] as the only writer, and a conflicting request fails with
//! `EBUSY` instead of aliasing (a caller that keeps to one guard per block, as the metadata
//! engine does, never sees it). The aux area also keeps a user tag per buffer (the metadata
//! layer records which block kind a buffer is, so repeated reads skip the checksum).
//!
//! A client's user can prepare each dirty buffer just before bufio writes it ([`PrepareWrite`],
//! bufio's write callback; the metadata engine seals blocks there). The lock word keeps that
//! preparation from racing a guard: a buffer written back while a guard holds it is written
//! unprepared and marked dirty again when the guard goes, so a later write-back prepares it.
//!
//! A buffer becomes dirty when its [`BufferMut`] is dropped, once the modification is complete.
//!
//! Guards hold a counted reference to the client, so the client (and the device it reads)
//! outlives every guard.

use super::{
    bindings as dm,
    buffer_lock::{BufferLock, Busy},
    BlockDevice,
};
use core::{
    ops::{Deref, DerefMut},
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};
use kernel::{error::from_err_ptr, error::to_result, prelude::*, sync::Arc};

/// The per-buffer aux area (`aux_size` bytes that dm-bufio keeps with every buffer).
#[repr(C)]
struct Aux {
    /// Who may touch the bytes now: readers, one writer, or the write callback.
    lock: BufferLock,
    /// Free for the client's user; starts at 0 whenever bufio (re)allocates the buffer.
    tag: AtomicU32,
}

/// What a client's user does to a dirty buffer just before bufio writes it to the device.
pub trait PrepareWrite<const N: usize> {
    /// Prepares `data`, the contents of block `block` whose user tag is `tag`.
    ///
    /// Runs on whichever thread starts the write-back, with bufio's client lock held, while no
    /// guard of the buffer exists: it must not sleep, take a guard or call into the client.
    fn prepare(block: u64, tag: u32, data: &mut [u8; N]);
}

/// A dm-bufio client over one block device.
///
/// # Invariants
///
/// `ptr` came from `dm_bufio_client_create` with an aux area of `size_of::<Aux>()` bytes and
/// is destroyed only in `drop`; `dev` keeps the device it reads open for the client's lifetime.
pub struct BufioClient<const N: usize> {
    ptr: NonNull<dm::dm_bufio_client>,
    dev: BlockDevice,
    /// Buffers held by guards now.
    held: AtomicUsize,
}

// SAFETY: dm-bufio clients are internally locked and usable from any thread.
unsafe impl<const N: usize> Send for BufioClient<N> {}
// SAFETY: As above.
unsafe impl<const N: usize> Sync for BufioClient<N> {}

/// The aux area's allocation hook: a new or reused buffer starts unlocked with tag 0.
///
/// # Safety
///
/// Called by dm-bufio with a buffer of a client created by [`BufioClient::new`].
unsafe extern "C" fn init_aux(b: *mut dm::dm_buffer) {
    // SAFETY: The client was created with an `Aux`-sized aux area, which this writes before any
    // guard can see the buffer.
    unsafe {
        dm::dm_bufio_get_aux_data(b).cast::<Aux>().write(Aux {
            lock: BufferLock::new(),
            tag: AtomicU32::new(0),
        })
    };
}

/// The write callback: runs `P::prepare` on a buffer about to be written, unless a guard holds
/// it (then the guard's release owes a rewrite, see [`BufferLock`]).
///
/// # Safety
///
/// Called by dm-bufio, just before it writes `b`, for a buffer of a client created by
/// [`BufioClient::new`] with `N`-byte blocks.
unsafe extern "C" fn prepare_write<const N: usize, P: PrepareWrite<N>>(b: *mut dm::dm_buffer) {
    // SAFETY: bufio keeps `b` (and its aux area, initialised by `init_aux`) alive while it
    // writes it; the aux area is only accessed through atomics.
    let aux = unsafe { &*dm::dm_bufio_get_aux_data(b).cast::<Aux>() };
    if !aux.lock.begin_write_back() {
        return;
    }
    // SAFETY: The buffer's data is `N` bytes (the client's block size). `begin_write_back`
    // succeeded, so no guard exists and none can be made until `end_write_back`: this is the
    // only reference to the bytes.
    let data = unsafe { &mut *dm::dm_bufio_get_block_data(b).cast::<[u8; N]>() };
    // SAFETY: `b` is a live buffer (above).
    let block = unsafe { dm::dm_bufio_get_block_number(b) };
    P::prepare(block, aux.tag.load(Ordering::Relaxed), data);
    aux.lock.end_write_back();
}

impl<const N: usize> BufioClient<N> {
    /// Block size in bytes: a power of two from 512 B to 2 GiB (checked at compile time).
    const BLOCK_SIZE: u32 = {
        assert!(N.is_power_of_two() && N >= 512 && N <= 1 << 31);
        N as u32
    };

    /// A client for `dev` with `N`-byte blocks that keeps at least `reserved` buffers
    /// allocated, so that holding that many guards at once never waits for memory, and runs
    /// `P::prepare` on every dirty buffer it writes.
    pub fn new<P: PrepareWrite<N>>(dev: BlockDevice, reserved: u32) -> Result<Arc<Self>> {
        // SAFETY: `dev` is open; `init_aux` matches the aux size passed and `prepare_write`
        // the block size.
        let ptr = from_err_ptr(unsafe {
            dm::dm_bufio_client_create(
                dev.bdev(),
                Self::BLOCK_SIZE,
                reserved,
                size_of::<Aux>() as u32,
                Some(init_aux),
                Some(prepare_write::<N, P>),
                0,
            )
        })?;
        let ptr = NonNull::new(ptr).ok_or(ENOMEM)?;
        // INVARIANT: `ptr` was just created over `dev`, which the client now owns.
        Ok(Arc::new(
            Self {
                ptr,
                dev,
                held: AtomicUsize::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Buffers that guards hold now. A write-back while this is non-zero may have written a
    /// held buffer unprepared (it is dirty again once released).
    pub fn held_buffers(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The device the client reads.
    pub fn device(&self) -> &BlockDevice {
        &self.dev
    }

    /// Number of whole blocks on the device now.
    pub fn nr_blocks(&self) -> u64 {
        // SAFETY: The client is alive (invariant).
        unsafe { dm::dm_bufio_get_device_size(self.ptr.as_ptr()) }
    }

    /// Reads block `block` (from the cache or the device; sleeps) for shared access.
    pub fn read(this: &Arc<Self>, block: u64) -> Result<BufferRef<N>> {
        let mut b: *mut dm::dm_buffer = core::ptr::null_mut();
        // SAFETY: The client is alive; `b` is a valid place for the buffer pointer.
        let data = from_err_ptr(unsafe { dm::dm_bufio_read(this.ptr.as_ptr(), block, &mut b) })?;
        // SAFETY: `dm_bufio_read` succeeded, so `b` is a held buffer with `data` as contents.
        unsafe { Held::new(this, b, data) }?.into_shared()
    }

    /// Block `block` for shared access if it is cached; `Ok(None)` if reading it would need
    /// I/O (`dm_bufio_get`). Never sleeps for I/O.
    pub fn read_cached(this: &Arc<Self>, block: u64) -> Result<Option<BufferRef<N>>> {
        let mut b: *mut dm::dm_buffer = core::ptr::null_mut();
        // SAFETY: The client is alive; `b` is a valid place for the buffer pointer.
        let data = unsafe { dm::dm_bufio_get(this.ptr.as_ptr(), block, &mut b) };
        if data.is_null() {
            return Ok(None);
        }
        let data = from_err_ptr(data)?;
        // SAFETY: `dm_bufio_get` returned a held buffer with `data` as contents.
        Ok(Some(unsafe { Held::new(this, b, data) }?.into_shared()?))
    }

    /// Reads block `block` (sleeps) for exclusive access; dirty once the guard is dropped.
    pub fn write(this: &Arc<Self>, block: u64) -> Result<BufferMut<N>> {
        let mut b: *mut dm::dm_buffer = core::ptr::null_mut();
        // SAFETY: As in `read`.
        let data = from_err_ptr(unsafe { dm::dm_bufio_read(this.ptr.as_ptr(), block, &mut b) })?;
        // SAFETY: As in `read`.
        unsafe { Held::new(this, b, data) }?.into_exclusive()
    }

    /// Block `block` for exclusive access without reading it from the device (its contents are
    /// whatever the cache holds, or unspecified); dirty once the guard is dropped.
    pub fn new_block(this: &Arc<Self>, block: u64) -> Result<BufferMut<N>> {
        let mut b: *mut dm::dm_buffer = core::ptr::null_mut();
        // SAFETY: The client is alive; `b` is a valid place for the buffer pointer.
        let data = from_err_ptr(unsafe { dm::dm_bufio_new(this.ptr.as_ptr(), block, &mut b) })?;
        // SAFETY: `dm_bufio_new` succeeded, so `b` is a held buffer with `data` as contents.
        unsafe { Held::new(this, b, data) }?.into_exclusive()
    }

    /// Starts reading blocks `first..first + n` into the cache and returns without waiting
    /// (`dm_bufio_prefetch`): a read-ahead hint. Blocks past the device's end are left out.
    /// It may sleep (allocating buffers, writing dirty ones back to make room); from a bio
    /// submission context dm-bufio refuses it with a warning and does nothing.
    pub fn prefetch(&self, first: u64, n: u64) {
        let end = first.saturating_add(n).min(self.nr_blocks());
        let Some(count) = end.checked_sub(first).filter(|&c| c > 0) else {
            return;
        };
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        // SAFETY: The client is alive (invariant); `first..first + count` lies on the device.
        // dm-bufio takes its own lock and only reads into buffers no guard holds.
        unsafe { dm::dm_bufio_prefetch(self.ptr.as_ptr(), first, count) };
    }

    /// Writes every dirty buffer, waits, then flushes the device cache.
    pub fn write_dirty_buffers(&self) -> Result {
        // SAFETY: The client is alive.
        to_result(unsafe { dm::dm_bufio_write_dirty_buffers(self.ptr.as_ptr()) })
    }

    /// Writes back dirty buffers and evicts every unheld buffer, so the next reads come from
    /// the device (`dm_bufio_client_reset`; used when a transaction is aborted).
    pub fn reset(&self) {
        // SAFETY: The client is alive. `dm_bufio_client_reset` only evicts unheld buffers.
        unsafe { dm::dm_bufio_client_reset(self.ptr.as_ptr()) };
    }
}

impl<const N: usize> Drop for BufioClient<N> {
    fn drop(&mut self) {
        // SAFETY: No guard exists (each holds an `Arc` of the client); the client is destroyed
        // exactly once, here, before `dev` is closed (field drop order follows).
        unsafe { dm::dm_bufio_client_destroy(self.ptr.as_ptr()) };
    }
}

/// A held buffer not yet locked for shared or exclusive use.
///
/// # Invariants
///
/// `buf` is held (one `dm_bufio_release` owed) and belongs to `client`; `data` is its contents,
/// `client.block_size` bytes.
struct Held<const N: usize> {
    /// Keeps the client (and its device) alive while the buffer is held.
    client: Arc<BufioClient<N>>,
    buf: NonNull<dm::dm_buffer>,
    data: NonNull<u8>,
}

impl<const N: usize> Held<N> {
    /// # Safety
    ///
    /// `b` must be a buffer of `client` just returned, held, by a successful bufio call that
    /// returned `data`.
    unsafe fn new(
        client: &Arc<BufioClient<N>>,
        b: *mut dm::dm_buffer,
        data: *mut c_void,
    ) -> Result<Self> {
        let buf = NonNull::new(b).ok_or(EIO)?;
        let data = NonNull::new(data.cast::<u8>()).ok_or(EIO)?;
        client.held.fetch_add(1, Ordering::AcqRel);
        Ok(Self {
            client: client.clone(),
            buf,
            data,
        })
    }

    fn aux(&self) -> &Aux {
        // SAFETY: The buffer is held, so its aux area (initialised by `init_aux`) stays valid;
        // it is only accessed through atomics.
        unsafe { &*dm::dm_bufio_get_aux_data(self.buf.as_ptr()).cast::<Aux>() }
    }

    fn into_shared(self) -> Result<BufferRef<N>> {
        match self.aux().lock.acquire(false) {
            Ok(()) => Ok(BufferRef(self)),
            Err(Busy::Conflict | Busy::WritingBack) => Err(EBUSY), // `self` drops: released
        }
    }

    fn into_exclusive(self) -> Result<BufferMut<N>> {
        match self.aux().lock.acquire(true) {
            Ok(()) => Ok(BufferMut(self)),
            Err(Busy::Conflict | Busy::WritingBack) => Err(EBUSY),
        }
    }

    fn mark_dirty(&self) {
        // SAFETY: The buffer is held.
        unsafe { dm::dm_bufio_mark_buffer_dirty(self.buf.as_ptr()) };
    }

    fn bytes(&self) -> &[u8; N] {
        // SAFETY: `data` is the `N` bytes of a held buffer; the lock word guarantees no
        // `BufferMut` of it exists while this shared borrow does.
        unsafe { &*self.data.as_ptr().cast::<[u8; N]>() }
    }

    /// The buffer's user tag.
    fn tag(&self) -> u32 {
        self.aux().tag.load(Ordering::Relaxed)
    }

    fn set_tag(&self, tag: u32) {
        self.aux().tag.store(tag, Ordering::Relaxed);
    }

    fn block(&self) -> u64 {
        // SAFETY: The buffer is held.
        unsafe { dm::dm_bufio_get_block_number(self.buf.as_ptr()) }
    }
}

impl<const N: usize> Drop for Held<N> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant one release is owed; this is it.
        unsafe { dm::dm_bufio_release(self.buf.as_ptr()) };
        self.client.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What both guards offer: the block number, the user tag, the bytes.
macro_rules! guard_accessors {
    ($guard:ident) => {
        impl<const N: usize> $guard<N> {
            /// The block number.
            pub fn block(&self) -> u64 {
                self.0.block()
            }

            /// The buffer's user tag (0 when bufio (re)loaded the buffer).
            pub fn tag(&self) -> u32 {
                self.0.tag()
            }

            /// Sets the user tag (any holder may update it, last write wins).
            pub fn set_tag(&self, tag: u32) {
                self.0.set_tag(tag)
            }
        }

        impl<const N: usize> Deref for $guard<N> {
            type Target = [u8; N];

            fn deref(&self) -> &[u8; N] {
                self.0.bytes()
            }
        }
    };
}

/// Shared access to a buffer.
pub struct BufferRef<const N: usize>(Held<N>);

// SAFETY: A held buffer may be released from any thread; the data is only read.
unsafe impl<const N: usize> Send for BufferRef<N> {}
// SAFETY: `&BufferRef` only reads.
unsafe impl<const N: usize> Sync for BufferRef<N> {}

guard_accessors!(BufferRef);

impl<const N: usize> Drop for BufferRef<N> {
    fn drop(&mut self) {
        if self.0.aux().lock.release_shared() {
            // A write-back skipped this buffer's preparation while it was read: write it again.
            self.0.mark_dirty();
        }
    }
}

/// Exclusive access to a buffer; marks it dirty when dropped.
pub struct BufferMut<const N: usize>(Held<N>);

// SAFETY: As for `BufferRef`.
unsafe impl<const N: usize> Send for BufferMut<N> {}
// SAFETY: `&BufferMut` only reads.
unsafe impl<const N: usize> Sync for BufferMut<N> {}

guard_accessors!(BufferMut);

impl<const N: usize> DerefMut for BufferMut<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        // SAFETY: `data` is the `N` bytes of a held buffer; the lock word's writer bit makes
        // this the only guard of the buffer, and `&mut self` the only borrow.
        unsafe { &mut *self.0.data.as_ptr().cast::<[u8; N]>() }
    }
}

impl<const N: usize> Drop for BufferMut<N> {
    fn drop(&mut self) {
        // Unlock first, then mark dirty: a write-back that starts in between prepares the
        // finished contents, and one that ran while the guard was held (its debt, returned by
        // `release_exclusive`) is paid by this marking too.
        let _owed = self.0.aux().lock.release_exclusive();
        self.0.mark_dirty();
    }
}
