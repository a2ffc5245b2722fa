//! Raw block devices for the userspace block cache.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use rthin_metadata::{Block, BLOCK_SIZE};

/// A device of 4 KiB blocks.
pub trait Disk {
    /// Size in blocks.
    fn nr_blocks(&self) -> u64;
    /// Read one block.
    fn read_block(&mut self, loc: u64, buf: &mut Block) -> io::Result<()>;
    /// Write one block (may sit in a volatile cache until `flush`).
    fn write_block(&mut self, loc: u64, buf: &Block) -> io::Result<()>;
    /// Make all previous writes durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Data-device flush (nothing to do for images; recorded by [`MemDisk`]).
    fn flush_data(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Read-ahead hint for blocks `first..first + n`; ignored by default.
    fn prefetch(&mut self, first: u64, n: u64) {
        let _ = (first, n);
    }
}

/// A metadata image file.
pub struct FileDisk {
    file: File,
    nr_blocks: u64,
}

impl FileDisk {
    /// Open an existing file; its size (rounded down to 4 KiB) is the device size.
    pub fn open(path: &Path, writable: bool) -> io::Result<FileDisk> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let nr_blocks = file.metadata()?.len() / BLOCK_SIZE as u64;
        Ok(FileDisk { file, nr_blocks })
    }
}

impl Disk for FileDisk {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read_block(&mut self, loc: u64, buf: &mut Block) -> io::Result<()> {
        self.file.read_exact_at(buf, loc * BLOCK_SIZE as u64)
    }

    fn write_block(&mut self, loc: u64, buf: &Block) -> io::Result<()> {
        self.file.write_all_at(buf, loc * BLOCK_SIZE as u64)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// `posix_fadvise(POSIX_FADV_WILLNEED)`: the kernel starts reading the range in the
    /// background (files and block devices alike); errors only lose the hint.
    fn prefetch(&mut self, first: u64, n: u64) {
        let block = BLOCK_SIZE as u64;
        let (Some(offset), Some(len)) = (first.checked_mul(block), n.checked_mul(block)) else {
            return;
        };
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return;
        };
        // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open for
        // as long as `self.file` lives.
        let _ = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::POSIX_FADV_WILLNEED,
            )
        };
    }
}

/// One recorded device event.
#[derive(Clone)]
pub enum DiskEvent {
    /// A block write.
    Write(u64, Box<Block>),
    /// A metadata device flush.
    Flush,
    /// A data device flush.
    FlushData,
}

/// A sparse in-memory device.  Optionally records writes and flushes (for crash tests) and can
/// fail writes after a given number (for I/O error tests).
#[derive(Clone, Default)]
pub struct MemDisk {
    nr_blocks: u64,
    blocks: HashMap<u64, Box<Block>>,
    /// Recorded events, when recording.
    pub log: Vec<DiskEvent>,
    /// Record events into `log`.
    pub recording: bool,
    /// Fail every write once this many more writes succeeded.
    pub fail_writes_after: Option<usize>,
    /// Fail every write to this block (the superblock is block 0).
    pub fail_writes_to: Option<u64>,
    /// Fail every flush once this many more flushes succeeded.
    pub fail_flushes_after: Option<usize>,
}

impl MemDisk {
    /// An all-zero device of `nr_blocks` blocks.
    pub fn new(nr_blocks: u64) -> MemDisk {
        MemDisk {
            nr_blocks,
            ..MemDisk::default()
        }
    }

    /// Build from a raw image.
    pub fn from_image(image: &[u8]) -> MemDisk {
        let mut d = MemDisk::new((image.len() / BLOCK_SIZE) as u64);
        for (i, chunk) in image.chunks_exact(BLOCK_SIZE).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                let mut b = Box::new([0u8; BLOCK_SIZE]);
                b.copy_from_slice(chunk);
                d.blocks.insert(i as u64, b);
            }
        }
        d
    }

    /// Raw image bytes.
    pub fn to_image(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.nr_blocks as usize * BLOCK_SIZE];
        for (&loc, b) in &self.blocks {
            let o = loc as usize * BLOCK_SIZE;
            v[o..o + BLOCK_SIZE].copy_from_slice(&b[..]);
        }
        v
    }

    /// Grow the device.
    pub fn set_nr_blocks(&mut self, n: u64) {
        self.nr_blocks = n;
    }

    /// Apply a write directly (used to build crash images).
    pub fn apply_write(&mut self, loc: u64, data: &Block) {
        self.blocks.insert(loc, Box::new(*data));
    }

    /// Direct access to a stored block (zero if never written).
    pub fn block(&self, loc: u64) -> Block {
        self.blocks
            .get(&loc)
            .map(|b| **b)
            .unwrap_or([0u8; BLOCK_SIZE])
    }
}

impl Disk for MemDisk {
    fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    fn read_block(&mut self, loc: u64, buf: &mut Block) -> io::Result<()> {
        if loc >= self.nr_blocks {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond end",
            ));
        }
        match self.blocks.get(&loc) {
            Some(b) => buf.copy_from_slice(&b[..]),
            None => buf.fill(0),
        }
        Ok(())
    }

    fn write_block(&mut self, loc: u64, buf: &Block) -> io::Result<()> {
        if loc >= self.nr_blocks {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "write beyond end",
            ));
        }
        if self.fail_writes_to == Some(loc) {
            return Err(io::Error::other("injected write failure"));
        }
        if let Some(n) = self.fail_writes_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("injected write failure"));
            }
            *n -= 1;
        }
        if self.recording {
            self.log.push(DiskEvent::Write(loc, Box::new(*buf)));
        }
        self.blocks.insert(loc, Box::new(*buf));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(n) = self.fail_flushes_after.as_mut() {
            if *n == 0 {
                return Err(io::Error::other("injected flush failure"));
            }
            *n -= 1;
        }
        if self.recording {
            self.log.push(DiskEvent::Flush);
        }
        Ok(())
    }

    fn flush_data(&mut self) -> io::Result<()> {
        if self.recording {
            self.log.push(DiskEvent::FlushData);
        }
        Ok(())
    }
}
