// SPDX-License-Identifier: GPL-2.0

//! Bios: [`Bio`] (borrowed), [`MapRequest`] and [`MapOutcome`] (one decision per mapped bio),
//! [`EndIoRequest`] and [`EndIoOutcome`] (one decision per completed bio), [`OwnedBio`] (a bio the
//! target took over and must complete exactly once) and [`BioList`] (owned bios in a list that
//! needs no allocation).
//!
//! C headers: [`include/linux/bio.h`](srctree/include/linux/bio.h),
//! [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h).

use super::{bindings as dm, BlkStatus, BlockDevice, DmDev};
use core::{
    marker::PhantomData,
    mem::ManuallyDrop,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{bindings, prelude::*, types::Opaque};

/// The operation of a bio (`bio_op()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BioOp {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// `REQ_OP_FLUSH` (an empty flush).
    Flush,
    /// `REQ_OP_DISCARD`.
    Discard,
    /// `REQ_OP_SECURE_ERASE`.
    SecureErase,
    /// `REQ_OP_WRITE_ZEROES`.
    WriteZeroes,
    /// Any other operation, by its raw value.
    Other(u32),
}

/// A bio, borrowed from dm core for the duration of a callback.
///
/// # Invariants
///
/// `self.0` is a valid `struct bio` that the holder of the reference may read and modify: dm
/// core does not touch it until the callback returns.
#[repr(transparent)]
pub struct Bio(Opaque<bindings::bio>);

impl Bio {
    /// # Safety
    ///
    /// `ptr` must be a valid bio that nothing else accesses during `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::bio) -> &'a mut Self {
        // SAFETY: `Bio` is a transparent wrapper of `Opaque<bio>`; the caller guarantees
        // validity and exclusive access for `'a`.
        unsafe { &mut *ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    /// The operation (`bio_op()`).
    pub fn op(&self) -> BioOp {
        // SAFETY: By the type invariant the bio is valid.
        let op = unsafe { dm::rthin_bio_op(self.as_raw()) };
        match op {
            dm::RTHIN_REQ_OP_READ => BioOp::Read,
            dm::RTHIN_REQ_OP_WRITE => BioOp::Write,
            dm::RTHIN_REQ_OP_FLUSH => BioOp::Flush,
            dm::RTHIN_REQ_OP_DISCARD => BioOp::Discard,
            dm::RTHIN_REQ_OP_SECURE_ERASE => BioOp::SecureErase,
            dm::RTHIN_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            other => BioOp::Other(other),
        }
    }

    /// Whether the operation writes (`op_is_write()`), including discards and flushes.
    pub fn is_write(&self) -> bool {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { dm::rthin_bio_is_write(self.as_raw()) }
    }

    fn opf(&self) -> bindings::blk_opf_t {
        // SAFETY: By the type invariant the bio is valid; `bi_opf` is a plain field.
        unsafe { (*self.as_raw()).bi_opf }
    }

    /// The bio asks for a cache flush before it (`REQ_PREFLUSH`).
    pub fn is_preflush(&self) -> bool {
        self.opf() & dm::RTHIN_REQ_PREFLUSH != 0
    }

    /// The bio asks to be on stable storage when it completes (`REQ_FUA`).
    pub fn is_fua(&self) -> bool {
        self.opf() & dm::RTHIN_REQ_FUA != 0
    }

    /// First sector (`bi_iter.bi_sector`).
    pub fn sector(&self) -> u64 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { (*self.as_raw()).bi_iter.bi_sector }
    }

    /// Moves the bio to `sector` (of the device it will be sent to).
    pub fn set_sector(&mut self, sector: u64) {
        // SAFETY: By the type invariant the bio is valid and ours to modify.
        unsafe { (*self.as_raw()).bi_iter.bi_sector = sector };
    }

    /// Remaining size in bytes (`bi_iter.bi_size`).
    pub fn size(&self) -> u32 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { (*self.as_raw()).bi_iter.bi_size }
    }

    /// Remaining size in sectors (`bio_sectors()`).
    pub fn sectors(&self) -> u32 {
        // SAFETY: By the type invariant the bio is valid.
        unsafe { dm::rthin_bio_sectors(self.as_raw()) }
    }

    /// Points the bio at `dev` (`bio_set_dev()`).
    pub fn set_dev(&mut self, dev: &DmDev) {
        // SAFETY: The bio is valid and ours to modify; `dev.bdev()` is an open block device.
        unsafe { dm::rthin_bio_set_dev(self.as_raw(), dev.bdev()) };
    }

    /// Points the bio at the counted device `dev`.
    fn set_block_device(&mut self, dev: &BlockDevice) {
        // SAFETY: The bio is valid and ours to modify; `dev.bdev()` is open while `dev` lives,
        // and whoever submits the bio keeps `dev` alive until it completes.
        unsafe { dm::rthin_bio_set_dev(self.as_raw(), dev.bdev()) };
    }

    /// Whether the bio carries no data (an empty flush).
    pub fn is_empty(&self) -> bool {
        self.size() == 0
    }

    /// Removes `REQ_PREFLUSH` and `REQ_FUA` (a target that already made the data durable).
    pub fn clear_flush_fua(&mut self) {
        // SAFETY: By the type invariant the bio is valid and ours to modify.
        unsafe { (*self.as_raw()).bi_opf &= !(dm::RTHIN_REQ_PREFLUSH | dm::RTHIN_REQ_FUA) };
    }
}

/// A bio a callback has in hand, with its per-bio data: what [`MapRequest`] and
/// [`EndIoRequest`] share.
///
/// # Invariants
///
/// `bio` is the bio dm core handed to the callback; `per_bio` its per-bio data (the first field
/// of its initialised [`BioSlot`]); dm core does not touch either during `'a`. `owned` marks
/// the same slot.
struct BioInHand<'a, P> {
    bio: NonNull<bindings::bio>,
    per_bio: NonNull<P>,
    owned: OwnedMark<'a>,
}

impl<'a, P> BioInHand<'a, P> {
    /// # Safety
    ///
    /// `bio` must be the bio passed to the callback; `slot` its initialised per-bio area; both
    /// unaccessed by anything else during `'a`; `owned_bios` the target instance's count.
    unsafe fn new(
        bio: NonNull<bindings::bio>,
        slot: NonNull<BioSlot<P>>,
        owned_bios: &'a AtomicUsize,
    ) -> Self {
        // INVARIANT: Guaranteed by the caller; the data is the slot's first field.
        Self {
            bio,
            per_bio: slot.cast(),
            owned: OwnedMark::new(slot, owned_bios),
        }
    }

    fn bio(&mut self) -> &mut Bio {
        // SAFETY: By the type invariant the bio is valid and exclusively ours; the borrow of
        // `self` bounds the reference.
        unsafe { Bio::from_raw(self.bio.as_ptr()) }
    }

    fn per_bio(&mut self) -> &mut P {
        // SAFETY: By the type invariant the area is initialised, exclusively ours and disjoint
        // from the bio.
        unsafe { self.per_bio.as_mut() }
    }

    /// The target takes the bio over: counted as owned, and handed out as an [`OwnedBio`].
    ///
    /// The caller returns `DM_MAPIO_SUBMITTED` or `DM_ENDIO_INCOMPLETE`, after which dm core
    /// leaves the bio to the target until it is ended or submitted.
    fn into_owned(self) -> OwnedBio<P> {
        self.owned.mark();
        // INVARIANT: As the caller's return value guarantees; the per-bio data lives as long as
        // the bio.
        OwnedBio {
            bio: self.bio,
            per_bio: self.per_bio,
        }
    }
}

/// A bio handed to [`super::Target::map`], together with its per-bio data.
///
/// Consuming it is the only way to produce the [`MapOutcome`] that `map` must return, so every
/// mapped bio gets exactly one decision, and `DM_MAPIO_SUBMITTED` is only possible together
/// with an [`OwnedBio`].
pub struct MapRequest<'a, P> {
    inner: BioInHand<'a, P>,
    _life: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a, P> MapRequest<'a, P> {
    /// # Safety
    ///
    /// `bio` must be the bio passed to `map`; `slot` its initialised per-bio area; both
    /// unaccessed by anything else during `'a`; `owned_bios` the target instance's count.
    pub(crate) unsafe fn new(
        bio: NonNull<bindings::bio>,
        slot: NonNull<BioSlot<P>>,
        owned_bios: &'a AtomicUsize,
    ) -> Self {
        Self {
            // SAFETY: The caller's guarantees, for the duration of `map`.
            inner: unsafe { BioInHand::new(bio, slot, owned_bios) },
            _life: PhantomData,
        }
    }

    /// The bio.
    pub fn bio(&mut self) -> &mut Bio {
        self.inner.bio()
    }

    /// The bio's per-bio data.
    pub fn per_bio(&mut self) -> &mut P {
        self.inner.per_bio()
    }

    fn outcome(self, code: u32) -> MapOutcome<'a> {
        MapOutcome {
            code: code as c_int,
            _life: PhantomData,
        }
    }
    /// Sends the bio to `dev` (sector unchanged unless set before): `DM_MAPIO_REMAPPED`.
    pub fn remap(mut self, dev: &DmDev) -> MapOutcome<'a> {
        self.bio().set_dev(dev);
        self.outcome(dm::DM_MAPIO_REMAPPED)
    }

    /// Sends the bio to the counted device `dev` (sector unchanged unless set before):
    /// `DM_MAPIO_REMAPPED`. The caller keeps `dev` open until the bio completes (a pool's
    /// counted handles live as long as the targets whose bios use them).
    pub fn remap_to(mut self, dev: &BlockDevice) -> MapOutcome<'a> {
        self.bio().set_block_device(dev);
        self.outcome(dm::DM_MAPIO_REMAPPED)
    }

    /// Keeps only the bio's first `sectors` sectors for this call; dm core sends the rest to
    /// the target again as a new bio once this one is mapped (`dm_accept_partial_bio`). For a
    /// target whose natural unit varies per bio, where a fixed `max_io_len` does not fit.
    ///
    /// Refused with `EINVAL` (the bio unchanged) where dm core does not allow it: for anything
    /// but a read or a write, a flush or atomic write, a bio of a zoned device, or `sectors`
    /// of zero or more than the bio has.
    pub fn accept_partial(&mut self, sectors: u32) -> Result {
        let bio = self.bio().as_raw();
        // SAFETY: `bio` is the bio dm core passed to `map` (the type invariant of
        // `BioInHand`), which is the only place `dm_accept_partial_bio` may be called from. The
        // shim checks the operation, flags, zoned device and count, which rules out every
        // `BUG_ON` but one: the bio being longer than dm core's length for it, which cannot
        // happen because nothing in the glue lets a target lengthen a bio in `map` (`Bio` can
        // only change its sector and device) and a duplicated bio is never a plain read/write.
        if unsafe { dm::rthin_bio_accept_partial(bio, sectors) } {
            Ok(())
        } else {
            Err(EINVAL)
        }
    }

    /// Fails the bio with an I/O error: `DM_MAPIO_KILL` (dm core completes it with
    /// `BLK_STS_IOERR`).
    pub fn kill(self) -> MapOutcome<'a> {
        self.outcome(dm::DM_MAPIO_KILL)
    }

    /// Asks dm core to resubmit the bio later: `DM_MAPIO_REQUEUE`.
    pub fn requeue(self) -> MapOutcome<'a> {
        self.outcome(dm::DM_MAPIO_REQUEUE)
    }

    /// Takes the bio over: `DM_MAPIO_SUBMITTED`. The target must complete or submit the
    /// returned [`OwnedBio`] later.
    pub fn take(self) -> (OwnedBio<P>, MapOutcome<'a>) {
        let MapRequest { inner, .. } = self;
        (
            inner.into_owned(),
            MapOutcome {
                code: dm::DM_MAPIO_SUBMITTED as c_int,
                _life: PhantomData,
            },
        )
    }
}

/// The decision `map` returns (`DM_MAPIO_*`), obtainable only by consuming a [`MapRequest`].
///
/// The invariant lifetime ties it to the request it came from.
pub struct MapOutcome<'a> {
    code: c_int,
    _life: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl MapOutcome<'_> {
    pub(crate) fn into_raw(self) -> c_int {
        self.code
    }
}

/// A completed bio handed to [`super::Target::end_io`], with its per-bio data.
///
/// Consuming it produces the [`EndIoOutcome`] `end_io` must return: [`EndIoRequest::done`]
/// (complete it, with the possibly changed status), [`EndIoRequest::requeue`], or
/// [`EndIoRequest::take`] (`DM_ENDIO_INCOMPLETE`: the target keeps the bio and completes it
/// later with [`OwnedBio::end`], which runs `end_io` again for it).
pub struct EndIoRequest<'a, P> {
    inner: BioInHand<'a, P>,
    _life: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a, P> EndIoRequest<'a, P> {
    /// # Safety
    ///
    /// `bio` must be the bio passed to `end_io`; `slot` its initialised per-bio area; both
    /// unaccessed by anything else during `'a`; `owned_bios` the target instance's count.
    pub(crate) unsafe fn new(
        bio: NonNull<bindings::bio>,
        slot: NonNull<BioSlot<P>>,
        owned_bios: &'a AtomicUsize,
    ) -> Self {
        Self {
            // SAFETY: The caller's guarantees, for the duration of `end_io`.
            inner: unsafe { BioInHand::new(bio, slot, owned_bios) },
            _life: PhantomData,
        }
    }

    /// The bio.
    pub fn bio(&mut self) -> &mut Bio {
        self.inner.bio()
    }

    /// The bio's per-bio data.
    pub fn per_bio(&mut self) -> &mut P {
        self.inner.per_bio()
    }

    fn outcome(self, code: u32) -> EndIoOutcome<'a> {
        EndIoOutcome {
            code: code as c_int,
            _life: PhantomData,
        }
    }

    /// Let dm core complete the bio (`DM_ENDIO_DONE`).
    pub fn done(self) -> EndIoOutcome<'a> {
        self.outcome(dm::DM_ENDIO_DONE)
    }

    /// Have dm core resubmit the bio (`DM_ENDIO_REQUEUE`).
    pub fn requeue(self) -> EndIoOutcome<'a> {
        self.outcome(dm::DM_ENDIO_REQUEUE)
    }

    /// Keep the bio (`DM_ENDIO_INCOMPLETE`): the target must end it later through the returned
    /// [`OwnedBio`]; that second completion calls `end_io` again, which then decides afresh.
    pub fn take(self) -> (OwnedBio<P>, EndIoOutcome<'a>) {
        let EndIoRequest { inner, .. } = self;
        (
            inner.into_owned(),
            EndIoOutcome {
                code: dm::DM_ENDIO_INCOMPLETE as c_int,
                _life: PhantomData,
            },
        )
    }
}

/// The decision `end_io` returns (`DM_ENDIO_*`), obtainable only by consuming an
/// [`EndIoRequest`].
pub struct EndIoOutcome<'a> {
    code: c_int,
    _life: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl EndIoOutcome<'_> {
    pub(crate) fn into_raw(self) -> c_int {
        self.code
    }
}

/// A bio the target took over in `map` (`DM_MAPIO_SUBMITTED`) and must finish exactly once, by
/// [`OwnedBio::end`] or [`OwnedBio::submit`]. Dropping it unfinished ends it with an I/O error
/// and a warning, so a bio is never lost.
///
/// # Invariants
///
/// `bio` is a dm clone bio owned by the target: dm core waits for it (suspend and table
/// destruction wait for in-flight bios) and nobody else completes it. `per_bio` is its
/// initialised per-bio data of type `P`, which lives until the bio is completed.
pub struct OwnedBio<P> {
    bio: NonNull<bindings::bio>,
    per_bio: NonNull<P>,
}

// SAFETY: A bio owned by the target may be ended or submitted from any thread; `P: Send` covers
// the per-bio data moving with it.
unsafe impl<P: Send> Send for OwnedBio<P> {}
// SAFETY: `&OwnedBio` gives access to nothing (every accessor takes `&mut self`).
unsafe impl<P> Sync for OwnedBio<P> {}

impl<P> OwnedBio<P> {
    /// The bio.
    pub fn bio(&mut self) -> &mut Bio {
        // SAFETY: By the type invariant the bio is owned by us; `&mut self` bounds the borrow.
        unsafe { Bio::from_raw(self.bio.as_ptr()) }
    }

    /// The bio's per-bio data.
    pub fn per_bio(&mut self) -> &mut P {
        // SAFETY: By the type invariant the data is initialised and lives as long as the bio.
        unsafe { self.per_bio.as_mut() }
    }

    fn into_raw(self) -> *mut bindings::bio {
        ManuallyDrop::new(self).bio.as_ptr()
    }

    /// Completes the bio with `status` (`bio_endio()`).
    ///
    /// May be called from any context, including interrupts.
    pub fn end(self, status: BlkStatus) {
        let bio = self.into_raw();
        // SAFETY: By the type invariant we own the bio; `into_raw` disarmed the drop, so it is
        // completed exactly once.
        unsafe { dm::rthin_bio_endio_status(bio, status.0) };
    }

    /// Sends the bio to `dev` at its current sector (`bio_set_dev()`, then
    /// `dm_submit_bio_remap()`). The caller must keep `dev` open until the bio completes, as a
    /// pool's counted handles are (they live as long as the targets whose bios use them).
    ///
    /// There is no plain `submit`: a clone bio still points at the mapped device itself, and
    /// submitting it unchanged would send it into the target again.
    pub fn submit_to(mut self, dev: &BlockDevice) {
        self.bio().set_block_device(dev);
        let bio = self.into_raw();
        // SAFETY: By the type invariant we own the clone bio; passing a null target clone
        // submits `bio` itself. `into_raw` disarmed the drop, so it is submitted exactly once.
        unsafe { dm::dm_submit_bio_remap(bio, core::ptr::null_mut()) };
    }

    /// Zeroes all of the bio's data, then shortens it to its first `sectors` sectors (no-op if
    /// it is not longer): for a read whose tail lies past the end of the device it will be sent
    /// to, which then stays zero.
    pub fn zero_fill_and_truncate(&mut self, sectors: u32) {
        // SAFETY: By the type invariant we own the bio; shortening it only drops its tail.
        unsafe { dm::rthin_bio_zero_fill_and_truncate(self.bio.as_ptr(), sectors) };
    }

    /// Completes a read with zeroes in all its remaining data (`zero_fill_bio()`), successfully.
    pub fn zero_fill_and_end(self) {
        let bio = self.into_raw();
        // SAFETY: By the type invariant we own the bio; it is completed exactly once.
        unsafe { dm::rthin_bio_zero_fill_and_end(bio) };
    }
}

/// A FIFO of owned bios, linked through `bi_next` like the kernel's `struct bio_list`: pushing
/// never allocates, so it works in `map` and in interrupt context.
///
/// Dropping a non-empty list fails the bios it holds with EIO (each [`OwnedBio`] drop does).
///
/// # Invariants
///
/// `head..=tail` are owned bios linked through `bi_next` (the last one's `bi_next` is null),
/// each a bio an [`OwnedBio<P>`] owned; `len` counts them.
pub struct BioList<P> {
    head: *mut bindings::bio,
    tail: *mut bindings::bio,
    len: usize,
    _per_bio: PhantomData<OwnedBio<P>>,
}

// SAFETY: The list owns its bios like `OwnedBio<P>` does, which is `Send` for `P: Send`.
unsafe impl<P: Send> Send for BioList<P> {}

impl<P> Default for BioList<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> BioList<P> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
            _per_bio: PhantomData,
        }
    }

    /// Number of bios.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bio`.
    pub fn push(&mut self, bio: OwnedBio<P>) {
        // The per-bio data is found again from the bio when it is popped: dm core places it
        // at a fixed offset before the bio.
        let raw = bio.into_raw();
        // SAFETY: We own `raw`; `bi_next` of an owned dm clone is unused by anyone else.
        unsafe { (*raw).bi_next = core::ptr::null_mut() };
        if self.tail.is_null() {
            self.head = raw;
        } else {
            // SAFETY: `tail` is an owned bio of the list (invariant).
            unsafe { (*self.tail).bi_next = raw };
        }
        self.tail = raw;
        self.len += 1;
    }

    /// Moves every bio of `other` to the end of this list.
    pub fn append(&mut self, other: &mut Self) {
        if other.head.is_null() {
            return;
        }
        if self.tail.is_null() {
            self.head = other.head;
        } else {
            // SAFETY: `tail` is an owned bio of the list (invariant).
            unsafe { (*self.tail).bi_next = other.head };
        }
        self.tail = other.tail;
        self.len += other.len;
        // Emptied in place: assigning a new list would drop (and fail) the moved bios.
        other.head = core::ptr::null_mut();
        other.tail = core::ptr::null_mut();
        other.len = 0;
    }

    /// Takes all bios, leaving the list empty.
    pub fn take(&mut self) -> Self {
        core::mem::take(self)
    }
}

impl<P> BioList<P> {
    /// Removes the first bio.
    pub fn pop(&mut self) -> Option<OwnedBio<P>> {
        let raw = NonNull::new(self.head)?;
        // SAFETY: `raw` is an owned bio of the list (invariant).
        self.head = unsafe { (*raw.as_ptr()).bi_next };
        // SAFETY: As above; unlink it.
        unsafe { (*raw.as_ptr()).bi_next = core::ptr::null_mut() };
        if self.head.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        // INVARIANT: The bio was owned by an `OwnedBio<P>` when pushed, so it is a clone bio of
        // a target whose per-bio data is a `P`.
        Some(OwnedBio {
            bio: raw,
            // SAFETY: As just said; the data is the slot's first field.
            per_bio: unsafe { per_bio_slot::<P>(raw) }.cast(),
        })
    }
}

impl<P> Drop for BioList<P> {
    fn drop(&mut self) {
        let mut next = self.head;
        while let Some(bio) = NonNull::new(next) {
            // SAFETY: `bio` is an owned bio of the list (invariant).
            next = unsafe { (*bio.as_ptr()).bi_next };
            pr_warn!("rthin: bio list dropped with bios in it; failing them with EIO\n");
            // SAFETY: We own the bio and complete it exactly once, here.
            unsafe { dm::rthin_bio_endio_status(bio.as_ptr(), BlkStatus::IOERR.0) };
        }
    }
}

/// A bio's per-bio area as the glue lays it out: the target's data first (so a pointer to the
/// area is a pointer to the data), then the glue's own bookkeeping.
#[repr(C)]
pub(crate) struct BioSlot<P> {
    pub(crate) data: P,
    /// The target took the bio over (`DM_MAPIO_SUBMITTED` or `DM_ENDIO_INCOMPLETE`) and its
    /// final completion has not run yet: it is counted in its instance's owned bios.
    pub(crate) owned: bool,
}

/// Marks a bio as owned by its target when the target takes it, before anyone else can see it.
///
/// # Invariants
///
/// `flag` is the `owned` field of the bio's initialised [`BioSlot`], only touched by the glue
/// while dm core hands the bio to a callback; `count` the target instance's owned-bio count.
struct OwnedMark<'a> {
    flag: NonNull<bool>,
    count: &'a AtomicUsize,
}

impl<'a> OwnedMark<'a> {
    fn new<P>(slot: NonNull<BioSlot<P>>, count: &'a AtomicUsize) -> Self {
        let slot_ptr = slot.as_ptr();
        // SAFETY: `slot_ptr` points to a valid per-bio area (the caller's guarantee); `addr_of_mut!`
        // projects to its `owned` field without creating a reference, and a field of a non-null
        // place is non-null.
        let flag = unsafe { NonNull::new_unchecked(core::ptr::addr_of_mut!((*slot_ptr).owned)) };
        // INVARIANT: The caller's (`MapRequest::new`, `EndIoRequest::new`) guarantees.
        Self { flag, count }
    }

    /// Counts the bio once, however often it is taken (in `map`, then again in `end_io`).
    fn mark(&self) {
        // SAFETY: By the type invariant the flag is valid and nobody else accesses it now (the
        // target has not been handed the bio yet).
        let flag = unsafe { &mut *self.flag.as_ptr() };
        if !*flag {
            *flag = true;
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The per-bio area of `bio`.
///
/// # Safety
///
/// `bio` must be a dm clone bio of a target whose `per_io_data_size` is
/// `size_of::<BioSlot<P>>()`.
pub(crate) unsafe fn per_bio_slot<P>(bio: NonNull<bindings::bio>) -> NonNull<BioSlot<P>> {
    // SAFETY: The caller guarantees the per-bio area has that size; dm core places it right
    // before the bio, so the pointer is never null.
    unsafe {
        NonNull::new_unchecked(dm::dm_per_bio_data(bio.as_ptr(), size_of::<BioSlot<P>>()).cast())
    }
}
