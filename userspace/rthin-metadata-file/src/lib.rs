//! Userspace implementations of the engine's [`BlockManager`]: a write-back block cache over a
//! [`Disk`], with a file-backed disk for the tools and an in-memory disk that records every
//! write and flush for crash tests.

mod cache;
mod disk;

pub use cache::{CacheStats, CachedBm, ReadGuard, WriteGuard};
pub use disk::{Disk, DiskEvent, FileDisk, MemDisk};

use std::path::Path;

/// Block manager over a metadata image file.
pub type FileBm = CachedBm<FileDisk>;
/// Block manager over an in-memory image.
pub type MemBm = CachedBm<MemDisk>;

/// Open an image file read-write (or read-only) as a block manager.
pub fn open_file(path: &Path, writable: bool) -> std::io::Result<FileBm> {
    Ok(CachedBm::new(FileDisk::open(path, writable)?))
}

pub use rthin_metadata::{Block, BlockKind, BlockManager, BLOCK_SIZE};
