//! Errors of the metadata engine.
//!
//! Every error that comes from on-disk data names the metadata block it was found in, so that a
//! log line or a `rthinctl check` message points at the culprit.  The kernel glue maps each
//! variant to an errno with [`Error::errno`].

use core::fmt;

use super::block::BlockKind;

/// Which space an out-of-space condition refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// 4 KiB metadata blocks.
    Metadata,
    /// Data blocks of the pool.
    Data,
}

/// Engine error.  Small and `Copy` so it can travel through `no_std` code without allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The platform could not read or write a block.
    Io {
        /// The block that failed.
        block: u64,
    },
    /// The stored checksum does not match the block contents for the expected block type.
    Checksum {
        /// The block read.
        block: u64,
        /// The type it was expected to have.
        kind: BlockKind,
    },
    /// The block's self-location field names a different block.
    WrongLocation {
        /// The block read.
        block: u64,
        /// The location stored in it.
        found: u64,
    },
    /// A structural impossibility (bad count, size, flag, order...) found in a block.
    Corrupt {
        /// The block holding the impossible value.
        block: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// A block number taken from disk points outside the metadata device.
    OutOfBounds {
        /// The out-of-range block number.
        block: u64,
        /// The block that holds the reference.
        referenced_from: u64,
    },
    /// Superblock magic is wrong: the device holds no thin-pool metadata.
    BadMagic,
    /// The superblock carries feature flags this engine does not support.
    UnsupportedFeatures {
        /// Unknown incompatible feature bits.
        incompat: u32,
        /// Unknown read-only-compatible feature bits (they forbid writing).
        compat_ro: u32,
    },
    /// The superblock's data block size differs from the one requested.
    BlockSizeMismatch {
        /// Data block size in the superblock (sectors).
        on_disk: u32,
        /// Data block size asked for (sectors).
        requested: u32,
    },
    /// No space left in the metadata or data space map.
    NoSpace(Space),
    /// The thin device does not exist.
    NoDevice(u64),
    /// The thin device id is already in use.
    DeviceExists(u64),
    /// The operation is refused in the current state (e.g. a metadata snapshot is already held).
    Busy(&'static str),
    /// An argument is invalid (bad id, mismatched transaction id, shrinking...).
    Invalid(&'static str),
    /// The platform could not allocate memory (never a panic).
    NoMemory,
    /// An internal limit was hit (e.g. tree deeper than the engine supports).
    Limit(&'static str),
    /// A non-blocking read ([`super::block::BlockManager::read_cached`]) found the block not in
    /// the cache: retry where waiting for I/O is allowed (dm-thin's `-EWOULDBLOCK`).
    WouldBlock,
}

/// Result alias used by the whole engine.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// Positive errno value the kernel glue should return for this error.
    pub fn errno(&self) -> i32 {
        const EIO: i32 = 5;
        const EAGAIN: i32 = 11;
        const ENOMEM: i32 = 12;
        const EBUSY: i32 = 16;
        const EEXIST: i32 = 17;
        const EINVAL: i32 = 22;
        const ENOSPC: i32 = 28;
        const ENODATA: i32 = 61;
        match self {
            Error::Io { .. }
            | Error::Checksum { .. }
            | Error::WrongLocation { .. }
            | Error::Corrupt { .. }
            | Error::OutOfBounds { .. }
            | Error::Limit(_) => EIO,
            Error::BadMagic
            | Error::UnsupportedFeatures { .. }
            | Error::BlockSizeMismatch { .. }
            | Error::Invalid(_) => EINVAL,
            Error::NoSpace(_) => ENOSPC,
            Error::NoDevice(_) => ENODATA,
            Error::DeviceExists(_) => EEXIST,
            Error::Busy(_) => EBUSY,
            Error::NoMemory => ENOMEM,
            Error::WouldBlock => EAGAIN,
        }
    }

    /// The metadata block this error was found in, if any.
    pub fn block(&self) -> Option<u64> {
        match *self {
            Error::Io { block }
            | Error::Checksum { block, .. }
            | Error::WrongLocation { block, .. }
            | Error::Corrupt { block, .. }
            | Error::OutOfBounds { block, .. } => Some(block),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { block } => write!(f, "I/O error on metadata block {block}"),
            Error::Checksum { block, kind } => {
                write!(f, "bad checksum in {} block {block}", kind.name())
            }
            Error::WrongLocation { block, found } => {
                write!(f, "metadata block {block} claims to be block {found}")
            }
            Error::Corrupt { block, what } => write!(f, "metadata block {block}: {what}"),
            Error::OutOfBounds {
                block,
                referenced_from,
            } => write!(
                f,
                "block {block} referenced from metadata block {referenced_from} is beyond the end of the device"
            ),
            Error::BadMagic => write!(f, "superblock has a bad magic number"),
            Error::UnsupportedFeatures {
                incompat,
                compat_ro,
            } => write!(
                f,
                "unsupported metadata features (incompat {incompat:#x}, compat_ro {compat_ro:#x})"
            ),
            Error::BlockSizeMismatch { on_disk, requested } => write!(
                f,
                "data block size {requested} differs from {on_disk} in the superblock"
            ),
            Error::NoSpace(Space::Metadata) => write!(f, "out of metadata space"),
            Error::NoSpace(Space::Data) => write!(f, "out of data space"),
            Error::NoDevice(id) => write!(f, "thin device {id} does not exist"),
            Error::DeviceExists(id) => write!(f, "thin device {id} already exists"),
            Error::Busy(what) => write!(f, "busy: {what}"),
            Error::Invalid(what) => write!(f, "invalid: {what}"),
            Error::NoMemory => write!(f, "out of memory"),
            Error::Limit(what) => write!(f, "engine limit: {what}"),
            Error::WouldBlock => write!(f, "metadata block not cached (would block)"),
        }
    }
}

impl core::error::Error for Error {}
