// SPDX-License-Identifier: GPL-2.0

//! Device-mapper target glue.
//!
//! A safe Rust interface for writing device-mapper targets, in the style of the kernel's
//! `block::mq` and `miscdevice` abstractions. All FFI and `unsafe` of dm-rthin live in this
//! module; targets built on it contain none. See `README.md` next to this file for the design
//! (layering, ownership of private data and bios, invariants, adding a callback).
//!
//! C headers: [`include/linux/device-mapper.h`](srctree/include/linux/device-mapper.h).
//!
//! In short: implement [`Target`] (with `#[vtable]`), keep a pinned [`Registration`] of it,
//! and dm core calls the target through [`TargetVTable`](vtable) callbacks.

mod args;
mod bindings;
mod bio;
mod block_device;
mod buffer_lock;
mod bufio;
mod device;
mod instance;
mod irq_lock;
mod kcopyd;
mod limits;
mod ratelimit;
mod registration;
mod result;
mod rwsem;
mod target;
mod target_ref;
mod vtable;
mod workqueue;

pub use args::{parse_dm_arg_u32, parse_u64, ArgRange, Args, ParseIntError};
pub use bio::{Bio, BioList, BioOp, EndIoOutcome, EndIoRequest, MapOutcome, MapRequest, OwnedBio};
pub use block_device::BlockDevice;
pub use bufio::{BufferMut, BufferRef, BufioClient, PrepareWrite};
pub use device::{DevHandle, DevT, DeviceVisitor, DmDev, OpenMode};
pub use instance::EventRelay;
pub use irq_lock::{SpinLockIrq, SpinLockIrqBackend, SpinLockIrqGuard};
pub use kcopyd::{Kcopyd, KcopydDone};
pub use limits::QueueLimits;
pub use ratelimit::RateLimit;
pub use registration::Registration;
pub use result::ResultWriter;
pub use rwsem::{ReadGuard, RwSemaphore, WriteGuard};
pub use target::{
    enodata, eopnotsupp, BlkStatus, Borrowed, CtrError, IterationStop, StatusFlags, StatusType,
    Target, TargetFeatures,
};
pub use target_ref::{TargetCtr, TargetRef};
pub use workqueue::{flush_delayed_work, NoIoScope, OwnedQueue};

/// The `no_space_timeout` module parameter (seconds; 0 = queue forever), dm-thin's: defined in
/// the C shim so that, as in dm-thin, it is writable at run time through sysfs.
pub fn no_space_timeout_secs() -> u32 {
    // SAFETY: Reads an `unsigned int` with `READ_ONCE`; always safe.
    unsafe { bindings::rthin_no_space_timeout_secs() }
}
