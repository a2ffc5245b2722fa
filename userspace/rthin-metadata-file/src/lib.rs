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

/// Open an image file read-write (or read-only, with a bounded cache) as a block manager.
pub fn open_file(path: &Path, writable: bool) -> std::io::Result<FileBm> {
    let disk = FileDisk::open(path, writable)?;
    Ok(if writable {
        CachedBm::new(disk)
    } else {
        CachedBm::with_limit(disk, READ_ONLY_CACHE_BLOCKS)
    })
}

pub use rthin_metadata::{Block, BlockKind, BlockManager, BLOCK_SIZE};
