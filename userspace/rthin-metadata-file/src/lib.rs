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

/// Blocks a read-only [`open_file`] keeps cached (1 MiB): the offline tools read each block
/// about once, and the page cache is below.
pub const READ_ONLY_CACHE_BLOCKS: usize = 256;

/// Clean blocks a writable [`open_file`] keeps cached (16 MiB).  Dirty blocks stay until they
/// are written: a bulk writer (restore) bounds its memory by flushing now and then.
pub const WRITABLE_CACHE_BLOCKS: usize = 4096;

/// Open an image file read-write (or read-only) as a block manager with a bounded cache.
pub fn open_file(path: &Path, writable: bool) -> std::io::Result<FileBm> {
    let disk = FileDisk::open(path, writable)?;
    Ok(CachedBm::with_limit(
        disk,
        if writable {
            WRITABLE_CACHE_BLOCKS
        } else {
            READ_ONLY_CACHE_BLOCKS
        },
    ))
}
