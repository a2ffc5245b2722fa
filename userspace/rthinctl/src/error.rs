//! Errors a person can act on: each kind says what went wrong and what to do, in one line, and
//! maps to a documented exit code (see the README's "rthinctl" section).

use std::io;

/// The failures `rthinctl` reports with their own exit code.  Everything else is
/// [`Error::Other`] (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Device-mapper and loop devices need CAP_SYS_ADMIN.
    #[error("permission denied: {0} (run rthinctl as root)")]
    NotRoot(String),
    /// The kernel has no such target type and modprobe could not load it.
    #[error("target {target} is not available: {why} (load it with `modprobe {module}`)")]
    NoTarget {
        target: String,
        module: String,
        why: String,
    },
    /// A device is open (mounted, or used by another device) and cannot be changed.
    #[error("{0} is busy: unmount it or close what uses it, then retry")]
    Busy(String),
    /// A pool, volume, device-mapper device or file with that name exists already.
    #[error("{0} already exists: pick another name or remove it first")]
    Exists(String),
    /// No pool or volume of that name is known.
    #[error("{0}")]
    NotFound(String),
    /// The pool has no free data or metadata blocks left.
    #[error("pool {0} is out of space: grow it with `rthinctl pool extend {0} --data-size SIZE`")]
    PoolFull(String),
    /// Backing files recorded in the state are not there (e.g. after a reboot without the disk).
    #[error("backing file {0} is missing: mount the filesystem that holds it, or restore it")]
    FilesMissing(String),
    /// A size or count that cannot be used.
    #[error("bad size: {0}")]
    BadSize(String),
    /// The state file and the kernel disagree in a way rthinctl cannot repair on its own.
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// Anything else, with its context.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Exit codes, documented in the README.  clap's own usage errors exit with 2.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_ROOT: u8 = 3;
    pub const NO_TARGET: u8 = 4;
    pub const BUSY: u8 = 5;
    pub const EXISTS: u8 = 6;
    pub const NOT_FOUND: u8 = 7;
    pub const POOL_FULL: u8 = 8;
    pub const FILES_MISSING: u8 = 9;
    pub const INCONSISTENT: u8 = 10;
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotRoot(_) => exit::NOT_ROOT,
            Error::NoTarget { .. } => exit::NO_TARGET,
            Error::Busy(_) => exit::BUSY,
            Error::Exists(_) => exit::EXISTS,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::PoolFull(_) => exit::POOL_FULL,
            Error::FilesMissing(_) => exit::FILES_MISSING,
            Error::BadSize(_) => exit::USAGE,
            Error::Inconsistent(_) => exit::INCONSISTENT,
            Error::Other(_) => exit::FAILURE,
        }
    }

    /// Classify an errno from a device-mapper or loop ioctl on `what`.
    pub fn from_os(what: &str, e: &io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::NotRoot(what.to_string()),
            Some(libc::EBUSY) => Error::Busy(what.to_string()),
            Some(libc::EEXIST) => Error::Exists(what.to_string()),
            _ => Error::Other(anyhow::anyhow!("{what}: {e}")),
        }
    }
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// `anyhow!`-style constructor for [`Error::Other`].
#[macro_export]
macro_rules! other {
    ($($t:tt)*) => { $crate::error::Error::Other(anyhow::anyhow!($($t)*)) };
}
