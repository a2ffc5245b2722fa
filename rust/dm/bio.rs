// SPDX-License-Identifier: GPL-2.0

//! Bios: [`Bio`] (borrowed), [`MapRequest`] and [`MapOutcome`] (one decision per mapped bio),
//! and [`OwnedBio`] (a bio the target took over and must complete exactly once).

use super::{bindings as dm, BlkStatus, DmDev};
use core::{marker::PhantomData, mem::ManuallyDrop, ptr::NonNull};
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
}

/// A bio handed to [`super::Target::map`], together with its per-bio data.
///
/// Consuming it is the only way to produce the [`MapOutcome`] that `map` must return, so every
/// mapped bio gets exactly one decision, and `DM_MAPIO_SUBMITTED` is only possible together
/// with an [`OwnedBio`].
///
/// # Invariants
///
/// `bio` is the bio being mapped; `per_bio` is its per-bio data area, which dm core reserved
/// with the size of `P` and the glue initialised. dm core does not touch either during `'a`.
pub struct MapRequest<'a, P> {
    bio: NonNull<bindings::bio>,
    per_bio: NonNull<P>,
    _life: PhantomData<fn(&'a ()) -> &'a ()>,
}

impl<'a, P> MapRequest<'a, P> {
    /// # Safety
    ///
    /// `bio` must be the bio passed to `map`; `per_bio` its initialised per-bio data of type
    /// `P`; both unaccessed by anything else during `'a`.
    pub(crate) unsafe fn new(bio: NonNull<bindings::bio>, per_bio: NonNull<P>) -> Self {
        // INVARIANT: Guaranteed by the caller.
        Self {
            bio,
            per_bio,
            _life: PhantomData,
        }
    }

    /// The bio.
    pub fn bio(&mut self) -> &mut Bio {
        // SAFETY: By the type invariant the bio is valid and exclusively ours; the borrow of
        // `self` bounds the reference.
        unsafe { Bio::from_raw(self.bio.as_ptr()) }
    }

    /// The bio's per-bio data.
    pub fn per_bio(&mut self) -> &mut P {
        // SAFETY: By the type invariant the area is initialised, exclusively ours and disjoint
        // from the bio.
        unsafe { self.per_bio.as_mut() }
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
        // INVARIANT: After `DM_MAPIO_SUBMITTED`, dm core leaves the bio to the target until it
        // is ended or submitted; the per-bio data lives as long as the bio.
        let owned = OwnedBio {
            bio: self.bio,
            per_bio: self.per_bio,
        };
        (owned, self.outcome(dm::DM_MAPIO_SUBMITTED))
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

    /// Sends the (remapped) bio to its device (`dm_submit_bio_remap()`).
    pub fn submit(self) {
        let bio = self.into_raw();
        // SAFETY: By the type invariant we own the clone bio; passing a null target clone
        // submits `bio` itself. `into_raw` disarmed the drop, so it is submitted exactly once.
        unsafe { dm::dm_submit_bio_remap(bio, core::ptr::null_mut()) };
    }
}

impl<P> Drop for OwnedBio<P> {
    fn drop(&mut self) {
        pr_warn!("rthin: bio dropped without completion; failing it with EIO\n");
        // SAFETY: By the type invariant we own the bio; `end` and `submit` forget `self`, so
        // this runs only if neither did, and the bio is completed exactly once.
        unsafe { dm::rthin_bio_endio_status(self.bio.as_ptr(), BlkStatus::IOERR.0) };
    }
}
