// SPDX-License-Identifier: GPL-2.0

//! [`BufferLock`]: the lock word every dm-bufio buffer of a [`super::BufioClient`] carries in its
//! aux area, shared by the buffer's guards and bufio's write callback.
//!
//! dm-bufio leaves locking to its user, and Rust forbids a `&mut` to memory that anything else
//! reads or writes at the same time. Three parties touch a buffer's bytes:
//!
//! * any number of readers ([`super::BufferRef`]), or one writer ([`super::BufferMut`]);
//! * bufio's write callback, which prepares a dirty buffer for the disk (the metadata engine
//!   seals it: checksum and self-location) just before bufio writes it, from whatever thread
//!   starts the write-back (a commit, or an allocation that hit the dirty watermark).
//!
//! The callback must not wait for a guard (bufio calls it with its client lock held, and the
//! guard's holder may need that lock to finish), so it never blocks: if the buffer is held it
//! skips its preparation and leaves a *rewrite owed* mark in the word. Whoever releases the last
//! guard after that takes the mark and marks the buffer dirty again, so the buffer is written
//! again, prepared, by a later write-back. The skipped write put unprepared bytes on disk, which
//! is harmless for a copy-on-write user such as the metadata engine: every block it dirties was
//! allocated in the running transaction, no committed metadata points at it, and the commit's
//! write-back (with no guard held) rewrites it prepared.
//!
//! A guard requested while the callback prepares the buffer waits for it (a spin of one
//! checksum's length; guards are only taken in process context, where the spinner can be
//! preempted in favour of the callback's thread).

use core::sync::atomic::{AtomicU32, Ordering};

/// Held by one writer.
const WRITER: u32 = 1 << 31;
/// Held by bufio's write callback while it prepares the buffer.
const WRITING_BACK: u32 = 1 << 30;
/// A write-back skipped its preparation while the buffer was held: the releaser marks the
/// buffer dirty again.
const REWRITE_OWED: u32 = 1 << 29;
/// The low bits count readers.
const READERS: u32 = REWRITE_OWED - 1;

/// Why a guard could not be had at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Busy {
    /// Another guard conflicts (a writer, or readers when a writer is wanted): a caller bug.
    Conflict,
    /// The write callback is preparing the buffer; it finishes without waiting for anything.
    WritingBack,
}

/// The per-buffer lock word (see the module docs).
///
/// # Invariants
///
/// At most one of: [`WRITER`], a non-zero reader count, [`WRITING_BACK`]. [`REWRITE_OWED`] is
/// only set while a guard holds the buffer.
#[repr(transparent)]
pub(super) struct BufferLock(AtomicU32);

impl BufferLock {
    /// A lock nobody holds.
    pub(super) const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// Takes the lock for a reader or the writer, or says why not.
    pub(super) fn try_acquire(&self, exclusive: bool) -> Result<(), Busy> {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            if cur & WRITING_BACK != 0 {
                return Err(Busy::WritingBack);
            }
            let new = if exclusive {
                if cur != 0 {
                    return Err(Busy::Conflict);
                }
                WRITER
            } else {
                if cur & WRITER != 0 || cur & READERS == READERS {
                    return Err(Busy::Conflict);
                }
                cur + 1
            };
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Takes the lock, waiting out a write callback; fails only on a conflicting guard.
    pub(super) fn acquire(&self, exclusive: bool) -> Result<(), Busy> {
        loop {
            match self.try_acquire(exclusive) {
                Err(Busy::WritingBack) => kernel::processor::cpu_relax(),
                done => return done,
            }
        }
    }

    /// Drops a reader's hold. True if a rewrite is owed: the caller, still holding the bufio
    /// buffer, must mark it dirty.
    pub(super) fn release_shared(&self) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let owed = cur & REWRITE_OWED != 0;
            let new = (cur - 1) & !REWRITE_OWED;
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return owed,
                Err(now) => cur = now,
            }
        }
    }

    /// Drops the writer's hold. True if a rewrite is owed (a writer marks its buffer dirty on
    /// release anyway, which pays it).
    pub(super) fn release_exclusive(&self) -> bool {
        self.0.swap(0, Ordering::Release) & REWRITE_OWED != 0
    }

    /// Called by the write callback: true if the buffer is free and now reserved for the
    /// callback's preparation (end it with [`Self::end_write_back`]); false if a guard holds
    /// it, in which case the rewrite is now owed by the guard's releaser.
    pub(super) fn begin_write_back(&self) -> bool {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let (new, free) = if cur == 0 {
                (WRITING_BACK, true)
            } else {
                (cur | REWRITE_OWED, false)
            };
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return free,
                Err(now) => cur = now,
            }
        }
    }

    /// Ends the callback's preparation begun by a successful [`Self::begin_write_back`].
    pub(super) fn end_write_back(&self) {
        self.0.store(0, Ordering::Release);
    }
}

// The glue test module (rust/dm_rthin_test.rs) builds this file too; the suite runs in dm-rthin.
#[cfg(not(rthin_glue_test))]
#[kernel::prelude::kunit_tests(rthin_dm_buffer_lock)]
mod tests {
    use super::{BufferLock, Busy};

    #[test]
    fn readers_share_and_exclude_the_writer() {
        let lock = BufferLock::new();
        assert_eq!(lock.try_acquire(false), Ok(()));
        assert_eq!(lock.try_acquire(false), Ok(()));
        assert_eq!(lock.try_acquire(true), Err(Busy::Conflict));
        assert!(!lock.release_shared());
        assert!(!lock.release_shared());
        assert_eq!(lock.try_acquire(true), Ok(()));
        assert_eq!(lock.try_acquire(false), Err(Busy::Conflict));
        assert_eq!(lock.try_acquire(true), Err(Busy::Conflict));
        assert!(!lock.release_exclusive());
        assert_eq!(lock.try_acquire(true), Ok(()));
        assert!(!lock.release_exclusive());
    }

    #[test]
    fn write_back_of_a_free_buffer_excludes_guards_until_it_ends() {
        let lock = BufferLock::new();
        assert!(lock.begin_write_back());
        assert_eq!(lock.try_acquire(false), Err(Busy::WritingBack));
        assert_eq!(lock.try_acquire(true), Err(Busy::WritingBack));
        lock.end_write_back();
        assert_eq!(lock.acquire(true), Ok(()));
        assert!(!lock.release_exclusive());
    }

    #[test]
    fn write_back_of_a_written_buffer_is_owed_by_the_writer() {
        let lock = BufferLock::new();
        assert_eq!(lock.acquire(true), Ok(()));
        assert!(!lock.begin_write_back());
        assert!(lock.release_exclusive());
        // Paid: the next write-back prepares the buffer.
        assert!(lock.begin_write_back());
        lock.end_write_back();
    }

    #[test]
    fn write_back_of_a_read_buffer_is_owed_by_one_releasing_reader() {
        let lock = BufferLock::new();
        assert_eq!(lock.acquire(false), Ok(()));
        assert_eq!(lock.acquire(false), Ok(()));
        assert!(!lock.begin_write_back());
        // A reader joining keeps the debt; exactly one release takes it.
        assert_eq!(lock.acquire(false), Ok(()));
        assert!(lock.release_shared());
        assert!(!lock.release_shared());
        // A second skipped write-back while the last reader holds it is owed again.
        assert!(!lock.begin_write_back());
        assert!(lock.release_shared());
        assert!(lock.begin_write_back());
        lock.end_write_back();
        assert_eq!(lock.try_acquire(true), Ok(()));
        assert!(!lock.release_exclusive());
    }
}
