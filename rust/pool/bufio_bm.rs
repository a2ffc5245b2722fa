// SPDX-License-Identifier: GPL-2.0

//! [`BufioBlockManager`]: the metadata engine's [`BlockManager`] on dm-bufio over the metadata
//! device, the one the pool runs on.
//!
//! * Reads are verified ([`block::verify`]: checksum and self-location) the first time a buffer
//!   is used as a given kind; the buffer's bufio tag remembers the kind, so a cached block is not
//!   checksummed again on every lookup.
//! * A write guard records its block's kind in the tag and marks the buffer dirty when dropped.
//!   The block is sealed ([`block::seal`]) in bufio's write callback, once per write to the
//!   device however often it was modified in between, as dm-thin's block manager does. A
//!   write-back that meets a held buffer writes it unsealed and leaves it dirty for the next
//!   one (see `dm::BufioClient`); that is harmless because the engine only writes blocks
//!   allocated in the running transaction, which no committed metadata references.
//! * `flush` writes every dirty buffer and flushes the device cache; `flush_data` flushes the
//!   data device (the first step of every commit). A flush is refused while any guard is held,
//!   so every block a commit relies on is written sealed.

use crate::{
    dm::{BlockDevice, BufferMut, BufferRef, BufioClient, PrepareWrite},
    metadata::{
        block::{self, Block, BlockKind, BlockManager, ShadowBucket, BLOCK_SIZE, MAX_HELD_GUARDS},
        Error as MetaError, Result as MetaResult,
    },
};
use core::ops::{Deref, DerefMut};
use kernel::{prelude::*, sync::Arc};

/// Buffers bufio keeps reserved, so the engine always makes progress under memory pressure: as
/// many as it ever holds at once (measured, see [`MAX_HELD_GUARDS`]).
const RESERVED_BUFFERS: u32 = MAX_HELD_GUARDS;

/// The engine's block manager in the kernel.
pub(crate) struct BufioBlockManager {
    client: Arc<BufioClient<BLOCK_SIZE>>,
    data_dev: Arc<BlockDevice>,
    /// The engine's shadowed-block set ([`BlockManager::shadow_buckets`]), sized for the
    /// metadata device at open; empty if that allocation failed (the engine then reads counts
    /// instead: slower, never wrong).
    shadows: KVVec<ShadowBucket>,
}

impl BufioBlockManager {
    /// A block manager on `metadata` (kept open by the manager) whose commits flush `data_dev`.
    pub(crate) fn new(metadata: BlockDevice, data_dev: Arc<BlockDevice>) -> Result<Self> {
        let client = BufioClient::new::<SealOnWrite>(metadata, RESERVED_BUFFERS)?;
        let buckets = block::shadow_buckets_for(client.nr_blocks());
        let shadows = KVVec::from_elem(ShadowBucket::default(), buckets, GFP_KERNEL)
            .unwrap_or_else(|_| KVVec::new());
        Ok(Self {
            client,
            data_dev,
            shadows,
        })
    }

    /// Drops cached blocks so the next reads come from the disk (after an aborted transaction).
    pub(crate) fn reset(&self) {
        self.client.reset();
    }
}

/// The bufio tag of a buffer verified as, or last written as, `kind` (0: neither).
fn tag_of(kind: BlockKind) -> u32 {
    match kind {
        BlockKind::Unchecked => 0,
        BlockKind::Superblock => 1,
        BlockKind::Node => 2,
        BlockKind::Index => 3,
        BlockKind::Bitmap => 4,
    }
}

/// The kind a tag stands for (the inverse of [`tag_of`]).
fn kind_of(tag: u32) -> BlockKind {
    match tag {
        1 => BlockKind::Superblock,
        2 => BlockKind::Node,
        3 => BlockKind::Index,
        4 => BlockKind::Bitmap,
        _ => BlockKind::Unchecked,
    }
}

/// Seals each block as the kind its last write guard gave it, just before bufio writes it.
struct SealOnWrite;

impl PrepareWrite<BLOCK_SIZE> for SealOnWrite {
    fn prepare(block: u64, tag: u32, data: &mut Block) {
        block::seal(kind_of(tag), block, data);
    }
}

fn io_error(block: u64) -> impl FnOnce(Error) -> MetaError {
    move |e| {
        if e == ENOMEM {
            MetaError::NoMemory
        } else {
            MetaError::Io { block }
        }
    }
}

/// Verifies `data` as `kind` unless its buffer's tag says it already was.
fn check(tag: u32, kind: BlockKind, loc: u64, data: &Block) -> MetaResult<bool> {
    if kind == BlockKind::Unchecked || tag == tag_of(kind) {
        return Ok(false);
    }
    block::verify(kind, loc, data)?;
    Ok(true)
}

/// Read guard: shared access to a verified block.
pub(crate) struct ReadGuard(BufferRef<BLOCK_SIZE>);

impl Deref for ReadGuard {
    type Target = Block;

    fn deref(&self) -> &Block {
        &self.0
    }
}

/// Write guard: exclusive access; on drop the buffer is tagged `kind` (what the write callback
/// seals it as) and marked dirty.
pub(crate) struct WriteGuard {
    buf: BufferMut<BLOCK_SIZE>,
    kind: BlockKind,
}

impl Deref for WriteGuard {
    type Target = Block;

    fn deref(&self) -> &Block {
        &self.buf
    }
}

impl DerefMut for WriteGuard {
    fn deref_mut(&mut self) -> &mut Block {
        &mut self.buf
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        // Before `buf` drops (marking the buffer dirty), so the seal uses this kind.
        self.buf.set_tag(tag_of(self.kind));
    }
}

impl BlockManager for BufioBlockManager {
    type Read = ReadGuard;
    type Write = WriteGuard;

    fn shadow_buckets(&mut self) -> &mut [ShadowBucket] {
        &mut self.shadows
    }

    fn nr_blocks(&self) -> u64 {
        self.client.nr_blocks()
    }

    fn read(&self, loc: u64, kind: BlockKind) -> MetaResult<ReadGuard> {
        if loc >= self.nr_blocks() {
            return Err(MetaError::Io { block: loc });
        }
        let buf = BufioClient::read(&self.client, loc).map_err(io_error(loc))?;
        if check(buf.tag(), kind, loc, &buf)? {
            buf.set_tag(tag_of(kind));
        }
        Ok(ReadGuard(buf))
    }

    fn read_cached(&self, loc: u64, kind: BlockKind) -> MetaResult<ReadGuard> {
        if loc >= self.nr_blocks() {
            return Err(MetaError::Io { block: loc });
        }
        let buf = BufioClient::read_cached(&self.client, loc)
            .map_err(io_error(loc))?
            .ok_or(MetaError::WouldBlock)?;
        if check(buf.tag(), kind, loc, &buf)? {
            buf.set_tag(tag_of(kind));
        }
        Ok(ReadGuard(buf))
    }

    fn write(&self, loc: u64, kind: BlockKind) -> MetaResult<WriteGuard> {
        if loc >= self.nr_blocks() {
            return Err(MetaError::Io { block: loc });
        }
        let buf = BufioClient::write(&self.client, loc).map_err(io_error(loc))?;
        check(buf.tag(), kind, loc, &buf)?;
        Ok(WriteGuard { buf, kind })
    }

    fn new_block(&self, loc: u64, kind: BlockKind) -> MetaResult<WriteGuard> {
        if loc >= self.nr_blocks() {
            return Err(MetaError::Io { block: loc });
        }
        let mut buf = BufioClient::new_block(&self.client, loc).map_err(io_error(loc))?;
        buf.fill(0);
        Ok(WriteGuard { buf, kind })
    }

    fn flush(&self) -> MetaResult<()> {
        // Every engine path drops its guards before a commit flushes; the pool's metadata lock
        // keeps lookups out. A guard held now would mean a block written unsealed that the
        // commit might point at: refuse rather than risk it.
        if self.client.held_buffers() != 0 {
            kernel::warn_on!(true);
            return Err(MetaError::Io { block: 0 });
        }
        self.client
            .write_dirty_buffers()
            .map_err(|_| MetaError::Io { block: 0 })
    }

    fn prefetch(&self, first: u64, n: u64) {
        self.client.prefetch(first, n);
    }

    fn flush_data(&self) -> MetaResult<()> {
        self.data_dev
            .flush()
            .map_err(|_| MetaError::Io { block: 0 })
    }
}
