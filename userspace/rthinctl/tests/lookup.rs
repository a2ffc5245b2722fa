//! Lookups for the kernel's map path: `&self` lookups, the non-blocking `try_lookup` (cache-only
//! reads, `WouldBlock` on a miss), and refusal after a failed change.

mod common;
use common::*;

use rthin_metadata::{BlockManager, Error, Pool};
use rthin_metadata_file::{CachedBm, MemBm, MemDisk};

fn populated() -> Pool<MemBm> {
    let mut p = mem_pool(4096, 100_000);
    p.create_thin(1).unwrap();
    for v in 0..30_000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v * 2, b).unwrap();
    }
    p.commit().unwrap();
    p.create_snap(2, 1).unwrap();
    p.commit().unwrap();
    p
}

/// Shared references are enough for every read.
fn read_only_queries(p: &Pool<MemBm>, id: u64, v: u64) -> (bool, u64, Option<u64>, bool) {
    (
        p.device_exists(id).unwrap(),
        p.device_details(id).unwrap().mapped_blocks,
        p.highest_mapped(id).unwrap(),
        p.lookup(id, v).unwrap().is_some(),
    )
}

#[test]
fn try_lookup_reads_only_the_cache() {
    let p = reopen(populated());
    let misses = || p.block_manager().stats().would_block;
    // Nothing but the superblock and the space map index is cached after open.
    assert_eq!(p.try_lookup(1, 10), Err(Error::WouldBlock));
    assert_eq!(Error::WouldBlock.errno(), 11);
    assert_eq!(misses(), 1);
    let reads = p.block_manager().stats().disk_reads;
    let mut rng = Rng::new(seed(11));
    for _ in 0..2000 {
        let (id, v) = (1 + rng.below(2), rng.below(70_000));
        match p.try_lookup(id, v) {
            Ok(m) => assert_eq!(m, p.lookup(id, v).unwrap()),
            Err(Error::WouldBlock) => {
                // The blocking lookup reads what was missing; then the same lookup succeeds
                // from the cache.
                let m = p.lookup(id, v).unwrap();
                assert_eq!(p.try_lookup(id, v), Ok(m));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(p.block_manager().stats().disk_reads > reads);
    // A non-blocking lookup never reads the disk.
    let reads = p.block_manager().stats().disk_reads;
    for v in 0..70_000 {
        let _ = p.try_lookup(1, v);
    }
    assert_eq!(p.block_manager().stats().disk_reads, reads);
    // Unknown devices are reported as such once the details are cached.
    assert_eq!(p.lookup(7, 0), Err(Error::NoDevice(7)));
    assert_eq!(p.try_lookup(7, 0), Err(Error::NoDevice(7)));
    let got = read_only_queries(&p, 2, 4);
    assert_eq!(got, (true, 30_000, Some(59_998), true));
}

#[test]
fn try_lookup_sees_uncommitted_changes() {
    let mut p = populated();
    let b = p.alloc_data_block().unwrap();
    p.insert(2, 1, b).unwrap();
    let m = p.try_lookup(2, 1).unwrap().unwrap();
    assert_eq!((m.data_block, m.shared), (b, false));
    let shared = p.try_lookup(2, 2).unwrap().unwrap();
    assert!(shared.shared);
    assert_eq!(p.try_lookup(1, 1), Ok(None));
}

#[test]
fn block_managers_without_cache_only_reads_would_block() {
    // The trait's default: every non-blocking read would block.
    struct Plain(MemBm);
    impl BlockManager for Plain {
        type Read = <MemBm as BlockManager>::Read;
        type Write = <MemBm as BlockManager>::Write;
        fn nr_blocks(&self) -> u64 {
            self.0.nr_blocks()
        }
        fn read(&self, l: u64, k: rthin_metadata::BlockKind) -> rthin_metadata::Result<Self::Read> {
            self.0.read(l, k)
        }
        fn write(
            &self,
            l: u64,
            k: rthin_metadata::BlockKind,
        ) -> rthin_metadata::Result<Self::Write> {
            self.0.write(l, k)
        }
        fn new_block(
            &self,
            l: u64,
            k: rthin_metadata::BlockKind,
        ) -> rthin_metadata::Result<Self::Write> {
            self.0.new_block(l, k)
        }
        fn flush(&self) -> rthin_metadata::Result<()> {
            self.0.flush()
        }
        fn flush_data(&self) -> rthin_metadata::Result<()> {
            self.0.flush_data()
        }
    }
    let disk = populated().into_block_manager().into_disk();
    let p = Pool::open(Plain(CachedBm::new(disk)), None, true).unwrap();
    assert!(p.lookup(1, 0).unwrap().is_some());
    assert_eq!(p.try_lookup(1, 0), Err(Error::WouldBlock));
}

#[test]
fn lookups_are_refused_after_a_failed_change() {
    let mut p = populated();
    let committed = p.lookup(1, 0).unwrap();
    // Fail a change half way: the disk stops accepting writes during the commit.
    let b = p.alloc_data_block().unwrap();
    p.insert(1, 0, b).unwrap();
    p.block_manager()
        .with_disk(|d| d.fail_writes_after = Some(0));
    assert!(matches!(p.commit(), Err(Error::Io { .. })));
    assert!(p.has_failed());
    let refused = Error::Busy("an earlier metadata operation failed; reopen the pool");
    assert_eq!(p.lookup(1, 0), Err(refused));
    assert_eq!(p.try_lookup(1, 0), Err(refused));
    assert_eq!(p.device_details(1), Err(refused));
    assert_eq!(p.device_exists(1), Err(refused));
    assert_eq!(p.highest_mapped(1), Err(refused));
    assert_eq!(p.for_each_mapping(1, &mut |_, _, _| Ok(true)), Err(refused));
    assert_eq!(p.for_each_device(&mut |_, _| Ok(true)), Err(refused));
    assert_eq!(refused.errno(), 16);
    // Aborting (reopening the last commit) makes lookups work again.
    let mut disk = p.into_block_manager().into_disk();
    disk.fail_writes_after = None;
    let p = Pool::open(CachedBm::new(disk), None, true).unwrap();
    assert_eq!(p.lookup(1, 0).unwrap(), committed);

    // An unloaded pool refuses lookups too.
    let p = Pool::unloaded(CachedBm::new(MemDisk::new(64)));
    assert_eq!(p.lookup(0, 0), Err(refused));
    assert_eq!(p.try_lookup(0, 0), Err(refused));
}

/// A block manager that counts the blocks read (blocking and cache-only).
struct Counting {
    inner: CachedBm<MemDisk>,
    reads: std::cell::Cell<u64>,
}

impl BlockManager for Counting {
    type Read = <CachedBm<MemDisk> as BlockManager>::Read;
    type Write = <CachedBm<MemDisk> as BlockManager>::Write;
    fn nr_blocks(&self) -> u64 {
        self.inner.nr_blocks()
    }
    fn read(&self, l: u64, k: rthin_metadata::BlockKind) -> rthin_metadata::Result<Self::Read> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(l, k)
    }
    fn read_cached(
        &self,
        l: u64,
        k: rthin_metadata::BlockKind,
    ) -> rthin_metadata::Result<Self::Read> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read_cached(l, k)
    }
    fn write(&self, l: u64, k: rthin_metadata::BlockKind) -> rthin_metadata::Result<Self::Write> {
        self.inner.write(l, k)
    }
    fn new_block(
        &self,
        l: u64,
        k: rthin_metadata::BlockKind,
    ) -> rthin_metadata::Result<Self::Write> {
        self.inner.new_block(l, k)
    }
    fn flush(&self) -> rthin_metadata::Result<()> {
        self.inner.flush()
    }
    fn flush_data(&self) -> rthin_metadata::Result<()> {
        self.inner.flush_data()
    }
    fn shadow_buckets(&mut self) -> &mut [rthin_metadata::block::ShadowBucket] {
        self.inner.shadow_buckets()
    }
}

#[test]
fn cached_details_save_the_details_walk_and_stay_exact() {
    // Enough thins for a details tree deeper than its root.
    let mut p = mem_pool(8192, 100_000);
    for id in 0..400 {
        p.create_thin(id).unwrap();
    }
    for v in 0..2000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(7, v, b).unwrap();
    }
    p.commit().unwrap();
    let disk = p.into_block_manager().into_disk();
    let bm = Counting {
        inner: CachedBm::new(disk),
        reads: std::cell::Cell::new(0),
    };
    let mut p = Pool::open(bm, None, true).unwrap();
    let reads_per_lookup = |p: &Pool<Counting>| {
        let before = p.block_manager().reads.get();
        let m = p.lookup(7, 1500).unwrap().unwrap();
        assert_eq!(p.try_lookup(7, 1500), Ok(Some(m)));
        (p.block_manager().reads.get() - before, m)
    };
    let (uncached, m) = reads_per_lookup(&p);
    assert!(p.cache_details(7).unwrap());
    let (cached, m2) = reads_per_lookup(&p);
    assert_eq!(m, m2);
    // The details tree has at least two levels here: both lookups skip them.
    assert!(
        cached + 4 <= uncached,
        "{cached} reads cached vs {uncached} uncached"
    );
    assert!(!p.cache_details(4000).unwrap());
    // A snapshot changes the cached details: the origin's blocks become shared.
    assert!(!m.shared);
    p.create_snap(500, 7).unwrap();
    assert!(p.lookup(7, 1500).unwrap().unwrap().shared);
    assert!(p.try_lookup(7, 1500).unwrap().unwrap().shared);
    // Caching more thins than the cache holds keeps every answer right.
    for id in 0..400 {
        assert!(p.cache_details(id).unwrap());
    }
    assert_eq!(p.device_details(7).unwrap().mapped_blocks, 2000);
    assert_eq!(p.lookup(7, 3).unwrap().map(|m| m.shared), Some(true));
    // A deleted thin is gone from the cache too.
    p.delete_thin(500).unwrap();
    assert_eq!(p.lookup(500, 0), Err(Error::NoDevice(500)));
    assert!(!p.cache_details(500).unwrap());
    p.commit().unwrap();
    assert_our_check_clean(p.block_manager());
}
