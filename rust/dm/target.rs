// SPDX-License-Identifier: GPL-2.0

//! The [`Target`] trait a device-mapper target implements, and the small value types its
//! methods exchange with the glue.

use super::{
    bindings as dm, Args, DeviceVisitor, EndIoOutcome, EndIoRequest, MapOutcome, MapRequest,
    QueueLimits, ResultWriter, TargetCtr, TargetRef,
};
use kernel::{error::VTABLE_DEFAULT_ERROR, prelude::*, types::ForeignOwnable};

/// How a target's private data is borrowed in its callbacks (`&T` for `KBox<T>`, ...).
pub type Borrowed<'a, T> = <<T as Target>::Private as ForeignOwnable>::Borrowed<'a>;

/// A constructor failure: the errno returned to device-mapper and the reason it prints.
///
/// dm core logs the reason as `device-mapper: table: <dev>: <type>: <reason> (<errno>)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtrError {
    code: Error,
    reason: &'static CStr,
}

impl CtrError {
    /// A failure with errno `code`, reported with `reason`.
    pub const fn new(code: Error, reason: &'static CStr) -> Self {
        Self { code, reason }
    }

    /// The errno returned to device-mapper.
    pub fn code(&self) -> Error {
        self.code
    }

    /// The reason stored in `ti->error`.
    pub fn reason(&self) -> &'static CStr {
        self.reason
    }
}

impl From<Error> for CtrError {
    /// A failure without a specific reason (for example an allocation failure).
    fn from(code: Error) -> Self {
        Self::new(code, c"Unknown error")
    }
}

impl From<kernel::alloc::AllocError> for CtrError {
    fn from(_: kernel::alloc::AllocError) -> Self {
        Self::new(ENOMEM, c"Out of memory")
    }
}

/// `EOPNOTSUPP` ("Operation not supported"), which `kernel::error::code` lacks; dm-thin returns
/// it for messages a pool cannot service in its current mode.
pub fn eopnotsupp() -> Error {
    Error::from_errno(-(kernel::bindings::EOPNOTSUPP as c_int))
}

/// `ENODATA` ("No data available"), which `kernel::error::code` lacks; dm-thin returns it for a
/// thin device id the pool does not know.
pub fn enodata() -> Error {
    Error::from_errno(-(kernel::bindings::ENODATA as c_int))
}

/// `target_type.features` bits (`DM_TARGET_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetFeatures(u64);

impl TargetFeatures {
    /// No feature bit.
    pub const NONE: Self = Self(0);
    /// Only target in its table (`DM_TARGET_SINGLETON`).
    pub const SINGLETON: Self = Self(dm::DM_TARGET_SINGLETON as u64);
    /// Refuses read-only tables (`DM_TARGET_ALWAYS_WRITEABLE`).
    pub const ALWAYS_WRITEABLE: Self = Self(dm::DM_TARGET_ALWAYS_WRITEABLE as u64);
    /// The device can never get a different target type (`DM_TARGET_IMMUTABLE`).
    pub const IMMUTABLE: Self = Self(dm::DM_TARGET_IMMUTABLE as u64);
    /// Inline encryption passes through (`DM_TARGET_PASSES_CRYPTO`).
    pub const PASSES_CRYPTO: Self = Self(dm::DM_TARGET_PASSES_CRYPTO as u64);

    /// Both sets of bits.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
}

/// Which status device-mapper asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusType {
    /// Run-time state (`dmsetup status`, `STATUSTYPE_INFO`).
    Info,
    /// The table line as loaded (`dmsetup table`, `STATUSTYPE_TABLE`).
    Table,
    /// Measurement for IMA (`STATUSTYPE_IMA`).
    Ima,
}

/// Flags of a status request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusFlags(u32);

impl StatusFlags {
    pub(crate) fn from_raw(bits: u32) -> Self {
        Self(bits)
    }

    /// The caller asked not to flush or commit anything (`DM_STATUS_NOFLUSH_FLAG`).
    pub fn noflush(&self) -> bool {
        self.0 & dm::RTHIN_DM_STATUS_NOFLUSH_FLAG != 0
    }
}

/// A block-layer completion status (`blk_status_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkStatus(pub(crate) kernel::bindings::blk_status_t);

impl BlkStatus {
    /// Success.
    pub const OK: Self = Self(dm::RTHIN_BLK_STS_OK);
    /// Generic I/O error (`-EIO`).
    pub const IOERR: Self = Self(dm::RTHIN_BLK_STS_IOERR);
    /// Out of space (`-ENOSPC`).
    pub const NOSPC: Self = Self(dm::RTHIN_BLK_STS_NOSPC);
    /// Try again later (`-EAGAIN`, for `REQ_NOWAIT` bios that would block).
    pub const AGAIN: Self = Self(dm::RTHIN_BLK_STS_AGAIN);
    /// Have dm core requeue the bio (`BLK_STS_DM_REQUEUE`, used with noflush suspend).
    pub const DM_REQUEUE: Self = Self(dm::RTHIN_BLK_STS_DM_REQUEUE);

    /// Whether this is success.
    pub fn is_ok(&self) -> bool {
        *self == Self::OK
    }

    /// The block status for a kernel error.
    pub fn from_error(e: Error) -> Self {
        // SAFETY: `errno_to_blk_status` is a pure table lookup that accepts any int.
        Self(unsafe { kernel::bindings::errno_to_blk_status(e.to_errno()) })
    }
}

/// Returned by [`DeviceVisitor::visit`] when the callout asked to stop; pass it on with `?`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IterationStop(pub(crate) c_int);

/// A device-mapper target type.
///
/// Implement it on a marker type, then keep a [`super::Registration`] of it alive for as long as
/// the target type should exist (usually in the module struct). Methods the implementation does
/// not provide leave the corresponding `target_type` callback `NULL`, which is what dm core
/// expects for optional callbacks; `#[vtable]` generates the `HAS_*` constants that decide this.
///
/// Calling context, as dm core guarantees it:
/// - `ctr`, the destructor (dropping [`Self::Private`]), `message`, `status`, the suspend and
///   resume hooks, `iterate_devices` and `io_hints` run in process context and may sleep;
/// - `map` and `end_io` run on the I/O path: `map` may be called concurrently on many CPUs, and
///   `end_io` may run in softirq or hardirq context. They must not sleep. Note that the
///   `kernel::sync` locks are not irq-safe (`SpinLock` takes a plain `spin_lock()`), so state
///   shared with `end_io` or other completion paths needs an irq-safe lock from the shim, an
///   atomic, or deferral to a workqueue.
#[vtable]
pub trait Target: Sized {
    /// Target name as used in table lines (at most 15 bytes).
    const NAME: &'static CStr;
    /// Target version `[major, minor, patch]` reported by `dmsetup targets`.
    const VERSION: [u32; 3];
    /// `target_type.features`.
    const FEATURES: TargetFeatures;

    /// Data shared by all instances of this target type; owned by the registration and lent to
    /// every constructor.
    type Shared: Send + Sync;

    /// Per-instance private data, created by [`Self::ctr`] and stored in `ti->private`. It is
    /// dropped when dm core destroys the target (the `dtr` callback), which is the last callback
    /// for the instance: no bio of the table is in flight by then.
    type Private: ForeignOwnable + Send + Sync;

    /// Per-bio data the glue reserves in front of every bio this target maps (use `()` for
    /// none). The glue writes `Default::default()` before [`Self::map`] sees it and drops it
    /// exactly once when the bio is done with this target: when `map` kills or requeues it, or
    /// at its final completion (`end_io` returning anything but "incomplete"). It never moves
    /// while the bio lives, so it may hold real state (an `Arc`, a list link).
    type PerBio: Default + Send;

    /// Constructs an instance from a table line's arguments.
    ///
    /// On failure the reason is stored as `ti->error` and the errno returned to dm core, which
    /// refuses the table.
    fn ctr(
        shared: &Self::Shared,
        ti: &mut TargetCtr<'_>,
        args: Args<'_>,
    ) -> Result<Self::Private, CtrError>;

    /// Maps one bio. The returned [`MapOutcome`] comes from consuming `bio`, which makes the
    /// target decide exactly once what happens to it.
    fn map<'a>(
        private: Borrowed<'_, Self>,
        ti: &TargetRef,
        bio: MapRequest<'a, Self::PerBio>,
    ) -> MapOutcome<'a>;

    /// Called when a bio of this target completes (one it remapped, submitted or ended
    /// itself); may change `status`. Runs in any context, including hard interrupts: it must
    /// not sleep, and state it shares with process context needs a
    /// [`SpinLockIrq`](super::SpinLockIrq) or atomics.
    fn end_io<'a>(
        _private: Borrowed<'_, Self>,
        _ti: &TargetRef,
        _bio: EndIoRequest<'a, Self::PerBio>,
        _status: &mut BlkStatus,
    ) -> EndIoOutcome<'a> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Writes the status line (`INFO`), the table line (`TABLE`) or IMA data into `out`.
    fn status(
        _private: Borrowed<'_, Self>,
        _ti: &TargetRef,
        _kind: StatusType,
        _flags: StatusFlags,
        _out: &mut ResultWriter<'_>,
    ) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Handles `dmsetup message`. Text written to `out` is returned to user space.
    fn message(
        _private: Borrowed<'_, Self>,
        _ti: &TargetRef,
        _args: Args<'_>,
        _out: &mut ResultWriter<'_>,
    ) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Reports each underlying device section through `visitor` (used by dm core to stack
    /// queue limits and check device sizes).
    fn iterate_devices(
        _private: Borrowed<'_, Self>,
        _ti: &TargetRef,
        _visitor: &mut DeviceVisitor<'_>,
    ) -> Result<(), IterationStop> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Adjusts the queue limits after dm core stacked those of the underlying devices.
    fn io_hints(_private: Borrowed<'_, Self>, _ti: &TargetRef, _limits: &mut QueueLimits) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// First step of suspending: stop issuing new work.
    fn presuspend(_private: Borrowed<'_, Self>, _ti: &TargetRef) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Last step of suspending: all I/O has drained.
    fn postsuspend(_private: Borrowed<'_, Self>, _ti: &TargetRef) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// Before resuming; an error refuses the resume (and the table swap that goes with it).
    fn preresume(_private: Borrowed<'_, Self>, _ti: &TargetRef) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// After resuming.
    fn resume(_private: Borrowed<'_, Self>, _ti: &TargetRef) {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}
