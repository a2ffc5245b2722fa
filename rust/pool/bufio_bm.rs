// SPDX-License-Identifier: GPL-2.0

//! [`BufioBlockManager`]: the metadata engine's [`BlockManager`] on dm-bufio over the metadata
//! device, the one the pool runs on.
//!
//! * Reads are verified ([`block::verify`]: checksum and self-location) the first time a buffer
//!   is used as a given kind; the buffer's bufio tag remembers the kind, so a cached block is not
//!   checksummed again on every lookup.
//! * A write guard seals its block ([`block::seal`]) when it is dropped, then marks the buffer
//!   dirty. Sealing at release rather than in bufio's write callback means the seal never races
//!   a caller still modifying the block, and bufio's background write-back only ever sees
//!   finished, sealed blocks.
//! * `flush` writes every dirty buffer and flushes the device cache; `flush_data` flushes the
//!   data device (the first step of every commit).

use crate::{
    dm::{BlockDevice, BufferMut, BufferRef, BufioClient},
    metadata::{
        block::{self, Block, BlockKind, BlockManager, BLOCK_SIZE, MAX_HELD_GUARDS},
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
}

impl BufioBlockManager {
    /// A block manager on `metadata` (kept open by the manager) whose commits flush `data_dev`.
    pub(crate) fn new(metadata: BlockDevice, data_dev: Arc<BlockDevice>) -> Result<Self> {
        Ok(Self {
            client: BufioClient::new(metadata, RESERVED_BUFFERS)?,
            data_dev,
        })
    }

    /// Drops cached blocks so the next reads come from the disk (after an aborted transaction).
    pub(crate) fn reset(&self) {
        self.client.reset();
    }
}

/// The bufio tag of a buffer verified as `kind` (0 means not verified).
fn tag_of(kind: BlockKind) -> u32 {
    match kind {
        BlockKind::Unchecked => 0,
        BlockKind::Superblock => 1,
        BlockKind::Node => 2,
        BlockKind::Index => 3,
        BlockKind::Bitmap => 4,
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

/// Write guard: exclusive access; the block is sealed as `kind` and marked dirty on drop.
pub(crate) struct WriteGuard {
    buf: BufferMut<BLOCK_SIZE>,
    kind: BlockKind,
    loc: u64,
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
        block::seal(self.kind, self.loc, &mut self.buf);
        self.buf.set_tag(tag_of(self.kind));
    }
}

impl BlockManager for BufioBlockManager {
    type Read = ReadGuard;
    type Write = WriteGuard;

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
        Ok(WriteGuard { buf, kind, loc })
    }

    fn new_block(&self, loc: u64, kind: BlockKind) -> MetaResult<WriteGuard> {
        if loc >= self.nr_blocks() {
            return Err(MetaError::Io { block: loc });
        }
        let mut buf = BufioClient::new_block(&self.client, loc).map_err(io_error(loc))?;
        buf.fill(0);
        Ok(WriteGuard { buf, kind, loc })
    }

    fn flush(&self) -> MetaResult<()> {
        self.client
            .write_dirty_buffers()
            .map_err(|_| MetaError::Io { block: 0 })
    }

    fn flush_data(&self) -> MetaResult<()> {
        self.data_dev
            .flush()
            .map_err(|_| MetaError::Io { block: 0 })
    }
}
