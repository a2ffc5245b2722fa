//! Metadata blocks, their checksums, and the block-manager trait the platform implements.
//!
//! The engine owns no block buffers: every node, bitmap and index block it touches is borrowed
//! from the platform's block manager (dm-bufio in the kernel, a file cache in userspace) through
//! a guard object.  The platform validates blocks when it reads them from disk ([`verify`]) and
//! seals them when it writes them back ([`seal`]); the engine only says which [`BlockKind`] each
//! block is.

use core::ops::{Deref, DerefMut};

use super::crc::dm_checksum;
use super::error::{Error, Result};

/// Metadata block size in bytes (fixed by the format).
pub const BLOCK_SIZE: usize = 4096;

/// The most block guards the engine holds at once, measured on its heaviest paths (deep btree
/// splits and merges, shared-tree shadowing, deletes, range removal, space-map growth, commit)
/// by `userspace/rthinctl/tests/guards.rs`, which fails if the engine ever holds more. A block
/// manager that must guarantee progress under memory pressure (dm-bufio's reserved buffers)
/// reserves this many.
pub const MAX_HELD_GUARDS: u32 = 6;

/// One metadata block.
pub type Block = [u8; BLOCK_SIZE];

/// Block types that carry a checksum, a salt and a self-location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    /// The superblock and the metadata-snapshot copy of it.
    Superblock,
    /// Any btree node.
    Node,
    /// The metadata space map's index block.
    Index,
    /// A space-map bitmap block (metadata or data space map).
    Bitmap,
    /// No validation at all: only used to look at a possibly unformatted block 0.
    Unchecked,
}

impl BlockKind {
    /// Salt XORed into the checksum (decimal values from the kernel sources).
    pub const fn salt(self) -> u32 {
        match self {
            BlockKind::Superblock => 160_774,
            BlockKind::Node => 121_107,
            BlockKind::Index => 160_478,
            BlockKind::Bitmap => 240_779,
            BlockKind::Unchecked => 0,
        }
    }

    /// Human name used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            BlockKind::Superblock => "superblock",
            BlockKind::Node => "btree node",
            BlockKind::Index => "space map index",
            BlockKind::Bitmap => "space map bitmap",
            BlockKind::Unchecked => "raw",
        }
    }

    /// Classify a block by trying every salt against its stored checksum.
    pub fn classify(block: &Block) -> Option<BlockKind> {
        let stored = le32(block, 0);
        let raw = dm_checksum(&block[4..], 0);
        [
            BlockKind::Superblock,
            BlockKind::Node,
            BlockKind::Index,
            BlockKind::Bitmap,
        ]
        .into_iter()
        .find(|k| raw ^ k.salt() == stored)
    }
}

/// Offset of the self-location field (the same for all four block types).
const BLOCKNR_OFFSET: usize = 8;

/// Read a little-endian u32 at a constant, in-bounds offset.
#[inline]
pub fn le32(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(w)
}

/// Read a little-endian u64 at a constant, in-bounds offset.
#[inline]
pub fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Store a little-endian u32.
#[inline]
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Store a little-endian u64.
#[inline]
pub fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Stamp the block's own location and checksum.  Platforms call this just before writing a dirty
/// block back to disk.
pub fn seal(kind: BlockKind, loc: u64, block: &mut Block) {
    if kind == BlockKind::Unchecked {
        return;
    }
    put64(block, BLOCKNR_OFFSET, loc);
    let csum = dm_checksum(&block[4..], kind.salt());
    put32(block, 0, csum);
}

/// Validate checksum and self-location.  Platforms call this when a block comes from disk.
pub fn verify(kind: BlockKind, loc: u64, block: &Block) -> Result<()> {
    if kind == BlockKind::Unchecked {
        return Ok(());
    }
    let stored = le32(block, 0);
    if dm_checksum(&block[4..], kind.salt()) != stored {
        return Err(Error::Checksum { block: loc, kind });
    }
    let found = le64(block, BLOCKNR_OFFSET);
    if found != loc {
        return Err(Error::WrongLocation { block: loc, found });
    }
    Ok(())
}

/// What the platform provides: cached, validated access to 4 KiB metadata blocks.
///
/// Contract (the kernel implements it on dm-bufio, userspace on a file):
/// * `read` returns the block's contents, validated with [`verify`] for `kind` (a platform may
///   skip re-validation of a block it already validated for the same kind or wrote itself);
/// * `write` is `read` plus "this block will be modified": the block becomes dirty;
/// * `new_block` returns a zero-filled dirty block without reading the disk;
/// * dirty blocks are [`seal`]ed with the kind given at `write`/`new_block` when written back;
/// * `flush` writes back every dirty block and then issues a device cache flush (FUA/PREFLUSH);
///   the engine relies on nothing reaching the disk *after* a `flush` returns being reordered
///   before it;
/// * `flush_data` flushes the *data* device (dm-thin's pre-commit step);
/// * `read_cached` is `read` that never waits for I/O (dm-bufio's `dm_bufio_get`): a block not
///   in the cache gives [`Error::WouldBlock`].  The default implementation always says so, which
///   is correct, merely useless;
/// * `prefetch` is a hint that blocks `first..first + n` will be read soon (read-ahead, like
///   `dm_bufio_prefetch`); it never fails and may do nothing (the default);
/// * `shadow_buckets` is memory the engine keeps its set of blocks shadowed in the running
///   transaction in (see [`ShadowBucket`]); the default, none, makes every shadow take the
///   simple path;
/// * guards are owned handles (no borrow of the manager); dropping one releases the buffer.
///   The engine never holds a write guard and any other guard on the same block at once.
/// * Errors: out-of-range block → [`Error::Io`] (the engine range-checks first anyway),
///   allocation failure → [`Error::NoMemory`].  Never panic.
pub trait BlockManager {
    /// Read guard.
    type Read: Deref<Target = Block>;
    /// Write guard; the block is dirty once handed out.
    type Write: DerefMut<Target = Block>;

    /// Size of the metadata device in 4 KiB blocks.
    fn nr_blocks(&self) -> u64;
    /// Validated read access.
    fn read(&self, loc: u64, kind: BlockKind) -> Result<Self::Read>;
    /// Validated read access without waiting for I/O: [`Error::WouldBlock`] when the block is
    /// not cached (or cannot be had without sleeping).  Used by [`super::thin::Pool::try_lookup`].
    fn read_cached(&self, loc: u64, kind: BlockKind) -> Result<Self::Read> {
        let _ = (loc, kind);
        Err(Error::WouldBlock)
    }
    /// Validated read-modify access.
    fn write(&self, loc: u64, kind: BlockKind) -> Result<Self::Write>;
    /// A fresh zero-filled block (its previous contents are not read).
    fn new_block(&self, loc: u64, kind: BlockKind) -> Result<Self::Write>;
    /// Write back all dirty blocks, then flush the device cache.
    fn flush(&self) -> Result<()>;
    /// Flush the data device (called first in every commit).
    fn flush_data(&self) -> Result<()>;
    /// Read-ahead hint for blocks `first..first + n` (see the trait docs); the default ignores it.
    fn prefetch(&self, first: u64, n: u64) {
        let _ = (first, n);
    }
    /// The engine's memory for its set of blocks shadowed in the running transaction.  The
    /// platform allocates it once, when it is created, zero-filled (a budget fixed at open:
    /// [`shadow_buckets_for`] suggests a size for the device), and never touches it afterwards.
    /// Fewer buckets (none, the default) only means more shadows take the simple path.
    fn shadow_buckets(&mut self) -> &mut [ShadowBucket] {
        &mut []
    }
}

/// Block numbers one bucket of the engine's shadowed-block set holds (see
/// [`BlockManager::shadow_buckets`]; the set itself is `tm::ShadowSet`).
pub const SHADOW_WAYS: usize = 4;

/// One bucket of the engine's shadowed-block set: opaque to the platform, zero when new.
pub type ShadowBucket = [u64; SHADOW_WAYS];

/// Buckets of the shadowed-block set the engine suggests for a metadata device of
/// `nr_blocks`: room for a quarter of its blocks (a transaction shadows at most the device's
/// free blocks, rarely more than a fraction of them), at least 1,024 and at most 262,144
/// blocks, i.e. 8 KiB to 2 MiB; a power of two.
pub fn shadow_buckets_for(nr_blocks: u64) -> usize {
    const MIN: u64 = 256;
    const MAX: u64 = 65_536;
    let want = (nr_blocks / (4 * SHADOW_WAYS as u64)).clamp(MIN, MAX);
    // Largest power of two not above `want` (`want` >= 256).
    1usize << want.ilog2()
}
