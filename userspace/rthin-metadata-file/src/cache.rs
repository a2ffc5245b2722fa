//! Write-back block cache implementing the engine's `BlockManager` contract.
//!
//! Buffers are shared `Rc<Box<Block>>`: a read guard is a clone of the `Rc`; a write guard
//! takes the buffer out of the cache (copying it if readers still hold it) and puts it back,
//! dirty, when dropped.  A block that is checked out for writing cannot be read or written again
//! until then — the engine never does that, and the cache reports it as an error if it did.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

use rthin_metadata::block::{seal, shadow_buckets_for, verify, ShadowBucket};
use rthin_metadata::{Block, BlockKind, BlockManager, Error, Result, BLOCK_SIZE};

use crate::disk::Disk;

/// A cached buffer.  `Rc<Box<..>>` rather than `Rc<Block>` so that a write guard can take the
/// boxed buffer out and put it back without copying 4 KiB each time.
#[allow(clippy::redundant_allocation)]
type Buf = Rc<Box<Block>>;

struct Entry {
    /// `None` while checked out by a write guard.
    data: Option<Buf>,
    kind: BlockKind,
    dirty: bool,
}

/// Counters for benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    /// Blocks read from the disk.
    pub disk_reads: u64,
    /// Non-blocking reads that missed the cache (`read_cached` returned `WouldBlock`).
    pub would_block: u64,
    /// Blocks written to the disk.
    pub disk_writes: u64,
    /// Flushes issued.
    pub flushes: u64,
}

/// Hash of a block number: one multiplication (SipHash, the default, showed up as a tenth of
/// a restore's time).  Block numbers are not chosen by an adversary; a multiplicative hash
/// spreads consecutive ones over both the low bits (bucket) and the high bits (tag).
#[derive(Default)]
struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type BlockMap<V> = HashMap<u64, V, BuildHasherDefault<BlockHasher>>;

struct Inner<D: Disk> {
    disk: D,
    cache: BlockMap<Entry>,
    /// Blocks made dirty since the last flush (may contain duplicates).
    dirty: Vec<u64>,
    stats: CacheStats,
    /// Clean blocks no guard holds are dropped when this many blocks are cached
    /// (`usize::MAX`: never).
    limit: usize,
    /// Cache size at which the next sweep runs (at least `limit`; twice what a sweep kept, so
    /// that sweeping stays amortised O(1) per block read).
    next_sweep: usize,
}

/// Block manager: a cache in front of a [`Disk`].
pub struct CachedBm<D: Disk> {
    inner: Rc<RefCell<Inner<D>>>,
    /// The engine's shadowed-block set, sized for the disk when the cache is made.
    shadows: Box<[ShadowBucket]>,
}

/// Read guard.
pub struct ReadGuard {
    data: Buf,
}

impl Deref for ReadGuard {
    type Target = Block;
    fn deref(&self) -> &Block {
        &self.data
    }
}

/// Write guard; returns the buffer to the cache as dirty on drop.
pub struct WriteGuard<D: Disk> {
    data: Option<Box<Block>>,
    loc: u64,
    inner: Rc<RefCell<Inner<D>>>,
}

impl<D: Disk> Deref for WriteGuard<D> {
    type Target = Block;
    fn deref(&self) -> &Block {
        self.data
            .as_deref()
            .expect("write guard holds its buffer until dropped")
    }
}

impl<D: Disk> DerefMut for WriteGuard<D> {
    fn deref_mut(&mut self) -> &mut Block {
        self.data
            .as_deref_mut()
            .expect("write guard holds its buffer until dropped")
    }
}

impl<D: Disk> Drop for WriteGuard<D> {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            let mut inner = self.inner.borrow_mut();
            if let Some(e) = inner.cache.get_mut(&self.loc) {
                e.data = Some(Rc::new(data));
                e.dirty = true;
            }
        }
    }
}

impl<D: Disk> Inner<D> {
    /// At the limit, drop every clean block no guard holds.
    fn sweep_if_full(&mut self) {
        if self.cache.len() >= self.next_sweep {
            self.cache
                .retain(|_, e| e.dirty || e.data.as_ref().is_none_or(|d| Rc::strong_count(d) > 1));
            self.next_sweep = self.limit.max(self.cache.len().saturating_mul(2));
        }
    }
}

fn busy(loc: u64) -> Error {
    Error::Corrupt {
        block: loc,
        what: "block accessed while checked out for writing (engine bug)",
    }
}

impl<D: Disk> CachedBm<D> {
    /// Wrap a disk; every block read stays cached.
    pub fn new(disk: D) -> CachedBm<D> {
        Self::with_limit(disk, usize::MAX)
    }

    /// Wrap a disk, dropping clean blocks no guard holds whenever `limit` blocks are cached
    /// (read-only tools walking a large image keep a few MB instead of the whole image).
    /// Dirty blocks always stay until they are written.
    pub fn with_limit(disk: D, limit: usize) -> CachedBm<D> {
        let shadows = vec![ShadowBucket::default(); shadow_buckets_for(disk.nr_blocks())];
        CachedBm {
            shadows: shadows.into_boxed_slice(),
            inner: Rc::new(RefCell::new(Inner {
                disk,
                cache: BlockMap::default(),
                dirty: Vec::new(),
                stats: CacheStats::default(),
                limit,
                next_sweep: limit,
            })),
        }
    }

    /// Run `f` on the underlying disk.
    pub fn with_disk<T>(&self, f: impl FnOnce(&mut D) -> T) -> T {
        f(&mut self.inner.borrow_mut().disk)
    }

    /// Drop every cached block, including dirty ones (simulates losing the in-core state).
    pub fn discard_cache(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.cache.clear();
        inner.dirty.clear();
    }

    /// Take the disk out.
    pub fn into_disk(self) -> D {
        match Rc::try_unwrap(self.inner) {
            Ok(cell) => cell.into_inner().disk,
            Err(_) => panic!("block manager still has outstanding guards"),
        }
    }

    /// I/O counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.borrow().stats
    }

    /// Number of cached blocks.
    pub fn cached_blocks(&self) -> usize {
        self.inner.borrow().cache.len()
    }

    fn load(&self, loc: u64, kind: BlockKind) -> Result<Buf> {
        self.load_with(loc, kind, false)
    }

    /// `cached_only`: never read the disk; a miss is `WouldBlock` (dm-bufio's `dm_bufio_get`).
    fn load_with(&self, loc: u64, kind: BlockKind, cached_only: bool) -> Result<Buf> {
        let mut inner = self.inner.borrow_mut();
        if loc >= inner.disk.nr_blocks() {
            return Err(Error::Io { block: loc });
        }
        if cached_only && !inner.cache.contains_key(&loc) {
            inner.stats.would_block += 1;
            return Err(Error::WouldBlock);
        }
        if let Some(e) = inner.cache.get_mut(&loc) {
            let data = e.data.clone().ok_or(busy(loc))?;
            if kind != BlockKind::Unchecked && e.kind != kind {
                if e.dirty && e.kind != BlockKind::Unchecked {
                    // Written as one type, now read as another: a dangling pointer.
                    return Err(Error::Checksum { block: loc, kind });
                }
                verify(kind, loc, &data)?;
                e.kind = kind;
            }
            return Ok(data);
        }
        let mut buf = Box::new([0u8; BLOCK_SIZE]);
        inner
            .disk
            .read_block(loc, &mut buf)
            .map_err(|_| Error::Io { block: loc })?;
        inner.stats.disk_reads += 1;
        verify(kind, loc, &buf)?;
        let data = Rc::new(buf);
        inner.sweep_if_full();
        inner.cache.insert(
            loc,
            Entry {
                data: Some(data.clone()),
                kind,
                dirty: false,
            },
        );
        Ok(data)
    }

    fn checkout(&self, loc: u64, kind: BlockKind, fresh: bool) -> Result<WriteGuard<D>> {
        let data = if fresh {
            let mut inner = self.inner.borrow_mut();
            if loc >= inner.disk.nr_blocks() {
                return Err(Error::Io { block: loc });
            }
            if let Some(e) = inner.cache.get(&loc) {
                if e.data.is_none() {
                    return Err(busy(loc));
                }
            }
            inner.sweep_if_full();
            inner.cache.insert(
                loc,
                Entry {
                    data: None,
                    kind,
                    dirty: true,
                },
            );
            inner.dirty.push(loc);
            Box::new([0u8; BLOCK_SIZE])
        } else {
            let rc = self.load(loc, kind)?;
            let mut inner = self.inner.borrow_mut();
            let e = inner.cache.get_mut(&loc).ok_or(busy(loc))?;
            e.data = None;
            e.kind = kind;
            if !e.dirty {
                e.dirty = true;
                inner.dirty.push(loc);
            }
            match Rc::try_unwrap(rc) {
                Ok(b) => b,
                Err(shared) => Box::new(**shared),
            }
        };
        Ok(WriteGuard {
            data: Some(data),
            loc,
            inner: self.inner.clone(),
        })
    }
}

impl<D: Disk> BlockManager for CachedBm<D> {
    type Read = ReadGuard;
    type Write = WriteGuard<D>;

    fn shadow_buckets(&mut self) -> &mut [ShadowBucket] {
        &mut self.shadows
    }

    fn nr_blocks(&self) -> u64 {
        self.inner.borrow().disk.nr_blocks()
    }

    fn read(&self, loc: u64, kind: BlockKind) -> Result<ReadGuard> {
        Ok(ReadGuard {
            data: self.load(loc, kind)?,
        })
    }

    fn read_cached(&self, loc: u64, kind: BlockKind) -> Result<ReadGuard> {
        Ok(ReadGuard {
            data: self.load_with(loc, kind, true)?,
        })
    }

    fn write(&self, loc: u64, kind: BlockKind) -> Result<WriteGuard<D>> {
        self.checkout(loc, kind, false)
    }

    fn new_block(&self, loc: u64, kind: BlockKind) -> Result<WriteGuard<D>> {
        self.checkout(loc, kind, true)
    }

    fn flush(&self) -> Result<()> {
        let mut inner = self.inner.borrow_mut();
        let mut dirty = std::mem::take(&mut inner.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for (n, &loc) in dirty.iter().enumerate() {
            if !inner.cache.get(&loc).is_some_and(|e| e.dirty) {
                continue;
            }
            let (kind, mut rc) = {
                let e = inner.cache.get_mut(&loc).ok_or(busy(loc))?;
                (e.kind, e.data.take().ok_or(busy(loc))?)
            };
            let buf: &mut Box<Block> = Rc::make_mut(&mut rc);
            seal(kind, loc, buf);
            let r = inner.disk.write_block(loc, &rc);
            if let Some(e) = inner.cache.get_mut(&loc) {
                e.data = Some(rc);
                if r.is_ok() {
                    e.dirty = false;
                }
            }
            if r.is_err() {
                // Keep the blocks not written yet queued for the next attempt.
                inner.dirty.extend_from_slice(&dirty[n..]);
            }
            r.map_err(|_| Error::Io { block: loc })?;
            inner.stats.disk_writes += 1;
        }
        inner.stats.flushes += 1;
        inner.disk.flush().map_err(|_| Error::Io { block: 0 })
    }

    fn flush_data(&self) -> Result<()> {
        self.inner
            .borrow_mut()
            .disk
            .flush_data()
            .map_err(|_| Error::Io { block: 0 })
    }

    fn prefetch(&self, first: u64, n: u64) {
        let mut inner = self.inner.borrow_mut();
        let end = first.saturating_add(n).min(inner.disk.nr_blocks());
        // Cached blocks need no read; a range that starts cached is trimmed, the rest is passed
        // on whole (a hint, not worth splitting).
        let mut from = first;
        while from < end && inner.cache.contains_key(&from) {
            from += 1;
        }
        if from < end {
            inner.disk.prefetch(from, end - from);
        }
    }
}
