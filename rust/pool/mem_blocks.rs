// SPDX-License-Identifier: GPL-2.0

//! [`MemBlockManager`]: the metadata engine's [`BlockManager`] over kernel memory.
//!
//! It is the KUnit test bed for running the engine inside the kernel. The pool's real block
//! manager (`BufioBlockManager`, on dm-bufio over the metadata device) implements the same trait
//! with the same rules, so tests written against this one carry over.
//!
//! It models a device with a volatile write-back cache, which is what makes crash tests mean
//! something: every block has a *stable* copy (what survived the last [`BlockManager::flush`],
//! sealed with [`block::seal`]) and possibly a *dirty* copy (written since, not sealed).
//! [`MemBlockManager::discard_dirty`] is a power failure: dirty copies vanish.
//!
//! Guards own a private 4 KiB copy of their block rather than borrowing the store: the trait
//! wants guards without lifetimes, and copying needs no `unsafe`. A write guard copies its
//! contents back into the block's dirty copy when dropped; until then the block is checked out
//! and other accesses to it fail, so nobody sees contents that are about to change.

use crate::metadata::{
    block::{self, Block, BlockKind, BlockManager, ShadowBucket},
    Error as MetaError, Result as MetaResult,
};
use core::ops::{Deref, DerefMut};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// One metadata block of the in-memory device.
struct Slot {
    /// Contents as of the last flush; `None` means all zeroes (never written), saving memory.
    stable: Option<KBox<Block>>,
    /// Contents written since the last flush, not yet sealed.
    dirty: Option<KBox<Block>>,
    /// Kind given with the latest `write`/`new_block`: the kind the block is sealed as.
    dirty_kind: BlockKind,
    /// Kind `stable` was last verified as (or sealed as), so repeated reads skip the checksum.
    verified_as: Option<BlockKind>,
    /// A write guard holds this block's only current copy.
    checked_out: bool,
}

/// Counters the tests check the engine's commit protocol with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemStats {
    /// Calls of [`BlockManager::flush`].
    pub(crate) flushes: u64,
    /// Calls of [`BlockManager::flush_data`].
    pub(crate) data_flushes: u64,
    /// Blocks currently dirty (written since the last flush).
    pub(crate) dirty_blocks: u64,
}

struct State {
    slots: KVec<Slot>,
    stats: MemStats,
    /// Fault injection: every allocation fails while set.
    fail_allocations: bool,
}

/// An in-memory metadata device of fixed size with a write-back cache.
///
/// Cloning gives another handle on the same device; that is how a test keeps access to the
/// blocks while a `Pool` owns a handle.
pub(crate) struct MemBlockManager {
    state: Arc<Mutex<State>>,
    /// The engine's shadowed-block set, as the real block manager sizes it. A handle's own:
    /// a clone starts without one (only the handle a `Pool` owns needs it).
    shadows: KVec<ShadowBucket>,
}

impl Clone for MemBlockManager {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            shadows: KVec::new(),
        }
    }
}

/// Read guard: a private copy of a validated block.
pub(crate) struct MemRead {
    buf: KBox<Block>,
}

/// Write guard: a copy of the block's contents; they go back to the store, dirty, on drop.
pub(crate) struct MemWrite {
    buf: KBox<Block>,
    loc: u64,
    state: Arc<Mutex<State>>,
}

impl State {
    fn slot(&mut self, loc: u64) -> MetaResult<&mut Slot> {
        let i = usize::try_from(loc).map_err(|_| MetaError::Io { block: loc })?;
        let slot = self.slots.get_mut(i).ok_or(MetaError::Io { block: loc })?;
        // The engine never holds a write guard and another guard on the same block; if that
        // rule is broken, fail the access instead of handing out stale contents.
        if slot.checked_out {
            return Err(MetaError::Io { block: loc });
        }
        Ok(slot)
    }

    fn alloc(&self) -> MetaResult<KBox<Block>> {
        if self.fail_allocations {
            return Err(MetaError::NoMemory);
        }
        KBox::zeroed(GFP_KERNEL).map_err(|_| MetaError::NoMemory)
    }

    /// A copy of the block's current contents, validated as `kind` if they come from stable
    /// storage (dirty contents were produced by the engine itself and are not sealed yet).
    fn copy_current(&mut self, loc: u64, kind: BlockKind) -> MetaResult<KBox<Block>> {
        let mut buf = self.alloc()?;
        let slot = self.slot(loc)?;
        if let Some(dirty) = &slot.dirty {
            buf.copy_from_slice(&dirty[..]);
            return Ok(buf);
        }
        if let Some(stable) = &slot.stable {
            buf.copy_from_slice(&stable[..]);
        }
        if slot.verified_as != Some(kind) {
            block::verify(kind, loc, &buf)?;
            slot.verified_as = Some(kind);
        }
        Ok(buf)
    }

    fn dirty_count(&self) -> u64 {
        let n = self.slots.iter().filter(|s| s.dirty.is_some()).count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

impl MemBlockManager {
    /// A zero-filled device of `nr_blocks` 4 KiB blocks. Memory is only used for blocks that
    /// get written.
    pub(crate) fn new(nr_blocks: usize) -> Result<Self> {
        let mut slots = KVec::with_capacity(nr_blocks, GFP_KERNEL)?;
        for _ in 0..nr_blocks {
            slots.push(
                Slot {
                    stable: None,
                    dirty: None,
                    dirty_kind: BlockKind::Unchecked,
                    verified_as: None,
                    checked_out: false,
                },
                GFP_KERNEL,
            )?;
        }
        let state = State {
            slots,
            stats: MemStats::default(),
            fail_allocations: false,
        };
        let buckets = block::shadow_buckets_for(u64::try_from(nr_blocks).unwrap_or(u64::MAX));
        Ok(Self {
            state: Arc::pin_init(new_mutex!(state), GFP_KERNEL)?,
            shadows: KVec::from_elem(ShadowBucket::default(), buckets, GFP_KERNEL)?,
        })
    }

    /// Power failure: every write since the last flush is lost.
    pub(crate) fn discard_dirty(&self) {
        let mut st = self.state.lock();
        for slot in st.slots.iter_mut() {
            slot.dirty = None;
        }
    }

    /// Damage stable storage: flip the bits of one byte of block `loc`, as a bad sector or a
    /// stray write would. Drops any cached copy so the damage is seen by the next read.
    pub(crate) fn corrupt(&self, loc: u64, offset: usize) -> MetaResult<()> {
        let mut st = self.state.lock();
        // Allocated up front: a never-written block has no stable copy yet.
        let zeroes = st.alloc()?;
        let slot = st.slot(loc)?;
        slot.dirty = None;
        slot.verified_as = None;
        let stable = slot.stable.get_or_insert(zeroes);
        if let Some(byte) = stable.get_mut(offset) {
            *byte ^= 0xa5;
        }
        Ok(())
    }

    /// Make every allocation fail (`true`) or work again (`false`).
    pub(crate) fn fail_allocations(&self, on: bool) {
        self.state.lock().fail_allocations = on;
    }

    /// Flush counters and the number of dirty blocks.
    pub(crate) fn stats(&self) -> MemStats {
        let st = self.state.lock();
        MemStats {
            dirty_blocks: st.dirty_count(),
            ..st.stats
        }
    }

    /// Check block `loc` out for writing with contents `buf`: it is dirty from now on and is
    /// sealed as `kind` when written back.
    fn check_out(
        &self,
        st: &mut State,
        loc: u64,
        kind: BlockKind,
        buf: KBox<Block>,
    ) -> MetaResult<MemWrite> {
        // The dirty copy must exist before the guard does: the guard's drop cannot allocate.
        if st.slot(loc)?.dirty.is_none() {
            let spare = st.alloc()?;
            st.slot(loc)?.dirty = Some(spare);
        }
        let slot = st.slot(loc)?;
        slot.dirty_kind = kind;
        slot.checked_out = true;
        Ok(MemWrite {
            buf,
            loc,
            state: self.state.clone(),
        })
    }
}

impl Deref for MemRead {
    type Target = Block;

    fn deref(&self) -> &Block {
        &self.buf
    }
}

impl Deref for MemWrite {
    type Target = Block;

    fn deref(&self) -> &Block {
        &self.buf
    }
}

impl DerefMut for MemWrite {
    fn deref_mut(&mut self) -> &mut Block {
        &mut self.buf
    }
}

impl Drop for MemWrite {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        // `check_out` made the slot and its dirty copy exist; both lookups always succeed.
        let slot = usize::try_from(self.loc)
            .ok()
            .and_then(|i| st.slots.get_mut(i));
        if let Some(slot) = slot {
            if let Some(dirty) = slot.dirty.as_mut() {
                dirty.copy_from_slice(&self.buf[..]);
            }
            slot.checked_out = false;
        }
    }
}

impl BlockManager for MemBlockManager {
    type Read = MemRead;
    type Write = MemWrite;

    fn shadow_buckets(&mut self) -> &mut [ShadowBucket] {
        &mut self.shadows
    }

    fn nr_blocks(&self) -> u64 {
        u64::try_from(self.state.lock().slots.len()).unwrap_or(u64::MAX)
    }

    fn read(&self, loc: u64, kind: BlockKind) -> MetaResult<MemRead> {
        let buf = self.state.lock().copy_current(loc, kind)?;
        Ok(MemRead { buf })
    }

    fn write(&self, loc: u64, kind: BlockKind) -> MetaResult<MemWrite> {
        let mut st = self.state.lock();
        let buf = st.copy_current(loc, kind)?;
        self.check_out(&mut st, loc, kind, buf)
    }

    fn new_block(&self, loc: u64, kind: BlockKind) -> MetaResult<MemWrite> {
        let mut st = self.state.lock();
        let buf = st.alloc()?;
        self.check_out(&mut st, loc, kind, buf)
    }

    /// Seal every dirty block and make it the stable copy; the flush itself is implicit.
    fn flush(&self) -> MetaResult<()> {
        let mut st = self.state.lock();
        if st.slots.iter().any(|s| s.checked_out) {
            // A guard still holds newer contents: writing back now would lose them.
            return Err(MetaError::Io { block: 0 });
        }
        for (loc, slot) in (0u64..).zip(st.slots.iter_mut()) {
            if let Some(mut dirty) = slot.dirty.take() {
                block::seal(slot.dirty_kind, loc, &mut dirty);
                slot.stable = Some(dirty);
                slot.verified_as = Some(slot.dirty_kind);
            }
        }
        st.stats.flushes = st.stats.flushes.saturating_add(1);
        Ok(())
    }

    /// There is no data device; only counted, so tests can see that commits ask for it.
    fn flush_data(&self) -> MetaResult<()> {
        let mut st = self.state.lock();
        st.stats.data_flushes = st.stats.data_flushes.saturating_add(1);
        Ok(())
    }
}
