// SPDX-License-Identifier: GPL-2.0

//! KUnit suite `rthin_metadata`: the metadata engine running inside the kernel, on
//! [`MemBlockManager`](super::mem_blocks::MemBlockManager).
//!
//! The userspace tests (`userspace/rthinctl/tests/`) cover the engine in depth; this suite
//! proves that the same code behaves the same when built by the kernel's compiler and flags,
//! with kernel allocations and a 16 KiB stack.

use kernel::prelude::kunit_tests;

#[kunit_tests(rthin_metadata)]
mod tests {
    use super::super::mem_blocks::MemBlockManager;
    use crate::metadata::{block::BlockManager, BlockKind, DeviceDetails, Error, Pool, Space};
    use kernel::prelude::*;

    type TestPool = Pool<MemBlockManager>;

    /// 1 MiB of metadata.
    const META_BLOCKS: usize = 256;
    /// Data block size in sectors (dm-thin's minimum, 64 KiB).
    const DATA_BLOCK_SIZE: u32 = 128;
    const DATA_BLOCKS: u64 = 320;

    /// Test error: converting an engine error logs it with the location of the `?` that
    /// propagated it, because KUnit itself only reports that the test returned `Err`.
    struct Failed;

    impl From<Error> for Failed {
        #[track_caller]
        fn from(e: Error) -> Self {
            let at = core::panic::Location::caller();
            // `core::fmt::Display` reaches `pr_err!` through `Arguments`.
            let e = format_args!("{e}");
            pr_err!("engine error at {}:{}: {}\n", at.file(), at.line(), e);
            Failed
        }
    }

    type TestResult = core::result::Result<(), Failed>;

    /// An unloaded pool in a heap allocation. `Pool` is about 7 KiB and KUnit runs tests on a
    /// 16 KiB kernel stack: it is loaded in place (`format_in_place`, `open_in_place`), never
    /// moved by value; the one by-value temporary lives in this frame, gone before loading.
    #[inline(never)]
    fn unloaded(bm: &MemBlockManager) -> Result<KBox<TestPool>, Error> {
        // Allocated first and then written, so the compiler builds it in the heap slot.
        let slot = KBox::<TestPool>::new_uninit(GFP_KERNEL).map_err(|_| Error::NoMemory)?;
        Ok(slot.write(Pool::unloaded(bm.clone())))
    }

    /// Format a fresh pool with `DATA_BLOCKS` data blocks and commit.
    fn format(bm: &MemBlockManager) -> Result<KBox<TestPool>, Error> {
        let mut pool = unloaded(bm)?;
        pool.format_in_place(DATA_BLOCK_SIZE)?;
        pool.resize_data(DATA_BLOCKS)?;
        pool.commit()?;
        Ok(pool)
    }

    /// Open the last commit on `bm` as a pool constructor does, expecting `data_block_size`.
    fn open_as(
        bm: &MemBlockManager,
        data_block_size: Option<u32>,
    ) -> Result<KBox<TestPool>, Error> {
        let mut pool = unloaded(bm)?;
        pool.open_in_place(data_block_size, true)?;
        Ok(pool)
    }

    fn open(bm: &MemBlockManager) -> Result<KBox<TestPool>, Error> {
        open_as(bm, Some(DATA_BLOCK_SIZE))
    }

    /// Map `vblock`s `0, step, 2 * step, ...` (`count` of them) of `id` to fresh data blocks.
    fn map_fresh(pool: &mut TestPool, id: u64, count: u64, step: u64) -> Result<(), Error> {
        for i in 0..count {
            let b = pool.alloc_data_block()?;
            pool.insert(id, i * step, b)?;
        }
        Ok(())
    }

    /// Everything a commit must preserve, gathered through the public API.
    #[derive(PartialEq)]
    struct Contents {
        devices: KVec<(u64, DeviceDetails)>,
        /// `(device, virtual block, data block, time)`.
        mappings: KVec<(u64, u64, u64, u32)>,
        transaction_id: u64,
        time: u32,
        data_free: u64,
        metadata_free: u64,
    }

    fn contents(pool: &mut TestPool) -> Result<Contents, Error> {
        let mut devices = KVec::new();
        pool.for_each_device(&mut |id, d| {
            devices
                .push((id, d), GFP_KERNEL)
                .map_err(|_| Error::NoMemory)?;
            Ok(true)
        })?;
        let mut mappings = KVec::new();
        for &(id, _) in devices.iter() {
            pool.for_each_mapping(id, &mut |v, b, t| {
                mappings
                    .push((id, v, b, t), GFP_KERNEL)
                    .map_err(|_| Error::NoMemory)?;
                Ok(true)
            })?;
        }
        Ok(Contents {
            devices,
            mappings,
            transaction_id: pool.transaction_id(),
            time: pool.time(),
            data_free: pool.data_free_blocks(),
            metadata_free: pool.metadata_free_blocks_raw(),
        })
    }

    /// Two thin devices and a snapshot, committed.
    fn populate(pool: &mut TestPool) -> Result<(), Error> {
        pool.create_thin(1)?;
        map_fresh(pool, 1, 100, 3)?;
        pool.create_thin(2)?;
        map_fresh(pool, 2, 20, 1)?;
        pool.create_snap(3, 1)?;
        pool.set_transaction_id(0, 7)?;
        pool.commit()
    }

    #[test]
    fn format_and_open() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        assert_eq!(TestPool::is_formatted(&bm), Ok(false));
        // An all-zero device is not metadata: an error, whatever the engine calls it.
        assert!(open_as(&bm, None).is_err());

        let pool = format(&bm)?;
        assert_eq!(pool.data_nr_blocks(), DATA_BLOCKS);
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS);
        assert_eq!(pool.metadata_nr_blocks(), 256);
        assert_eq!(pool.metadata_reserve(), 25);
        let used = pool.metadata_nr_blocks() - pool.metadata_free_blocks_raw();
        assert!(used > 3 && used < 32);
        assert_eq!(pool.transaction_id(), 0);
        drop(pool);

        assert_eq!(TestPool::is_formatted(&bm), Ok(true));
        let pool = open(&bm)?;
        assert_eq!(pool.data_nr_blocks(), DATA_BLOCKS);
        assert_eq!(pool.metadata_nr_blocks(), 256);
        assert_eq!(pool.data_block_size(), DATA_BLOCK_SIZE);
        assert!(!pool.needs_check());
        assert_eq!(pool.device_exists(0), Ok(false));
        assert!(matches!(
            open_as(&bm, Some(256)).err(),
            Some(Error::BlockSizeMismatch {
                on_disk: 128,
                requested: 256
            })
        ));
        // Blocks beyond the device are an error from the block manager, not a panic.
        assert!(matches!(
            bm.read(256, BlockKind::Node).err(),
            Some(Error::Io { block: 256 })
        ));
        Ok(())
    }

    #[test]
    fn insert_lookup_remove() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        pool.create_thin(0)?;
        assert_eq!(pool.create_thin(0), Err(Error::DeviceExists(0)));
        assert_eq!(pool.lookup(9, 0), Err(Error::NoDevice(9)));
        // 300 mappings: the bottom tree grows past one leaf (126 entries), so nodes split.
        map_fresh(&mut pool, 0, 300, 2)?;
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS - 300);
        assert_eq!(pool.device_details(0)?.mapped_blocks, 300);
        assert_eq!(pool.highest_mapped(0)?, Some(598));
        for i in 0..300 {
            let m = pool.lookup(0, i * 2)?;
            assert!(m.is_some_and(|m| !m.shared && m.time == 0));
            assert_eq!(pool.lookup(0, i * 2 + 1)?, None);
        }
        // Each mapping got its own data block.
        let mut seen = KVec::new();
        pool.for_each_mapping(0, &mut |_, b, _| {
            seen.push(b, GFP_KERNEL).map_err(|_| Error::NoMemory)?;
            Ok(true)
        })?;
        seen.sort_unstable();
        assert_eq!(seen.len(), 300);
        assert!(seen.windows(2).all(|w| w[0] != w[1]));

        for i in 0..100 {
            assert_eq!(pool.remove(0, i * 2), Ok(true));
        }
        assert_eq!(pool.remove(0, 0), Ok(false));
        assert_eq!(pool.lookup(0, 0)?, None);
        assert!(pool.lookup(0, 200)?.is_some());
        assert_eq!(pool.remove_range(0, 200, 400)?, 100);
        assert_eq!(pool.device_details(0)?.mapped_blocks, 100);
        pool.commit()?;
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS - 100);
        pool.delete_thin(0)?;
        assert_eq!(pool.delete_thin(0), Err(Error::NoDevice(0)));
        pool.commit()?;
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS);
        Ok(())
    }

    #[test]
    fn snapshot_shares_blocks() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        pool.create_thin(0)?;
        map_fresh(&mut pool, 0, 50, 1)?;
        let before = pool.lookup(0, 10)?.ok_or(Error::NoDevice(0))?;
        assert!(!before.shared);

        pool.create_snap(1, 0)?;
        assert_eq!(pool.time(), 1);
        assert_eq!(pool.device_details(1)?.mapped_blocks, 50);
        for dev in [0, 1] {
            let m = pool.lookup(dev, 10)?;
            assert!(m.is_some_and(|m| m.shared && m.data_block == before.data_block));
        }
        // Sharing is lazy, as in dm-thin: both devices reach the block through one shared
        // tree, so its count is still 1.
        assert_eq!(pool.data_block_count(before.data_block)?, 1);

        // Break sharing as a write to the origin would: new block for the origin only.
        let fresh = pool.alloc_data_block()?;
        pool.insert(0, 10, fresh)?;
        let origin = pool.lookup(0, 10)?;
        assert!(origin.is_some_and(|m| !m.shared && m.data_block == fresh && m.time == 1));
        let snap = pool.lookup(1, 10)?;
        assert!(snap.is_some_and(|m| m.data_block == before.data_block));
        // Copying the shared leaf gave every block in it a second reference; the overwritten
        // one then lost the origin's, and the fresh one has only the origin's.
        assert_eq!(pool.data_block_count(before.data_block)?, 1);
        assert_eq!(pool.data_block_count(fresh)?, 1);
        let other = pool.lookup(1, 11)?.ok_or(Error::NoDevice(1))?;
        assert!(other.shared);
        assert_eq!(pool.data_block_count(other.data_block)?, 2);

        // Deleting the origin leaves the snapshot complete; blocks only it used go free.
        pool.delete_thin(0)?;
        pool.commit()?;
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS - 50);
        assert_eq!(pool.device_details(1)?.mapped_blocks, 50);
        assert!(pool.lookup(1, 49)?.is_some());
        Ok(())
    }

    #[test]
    fn commit_then_reopen_finds_the_commit() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        populate(&mut pool)?;
        let stats = bm.stats();
        assert_eq!(stats.dirty_blocks, 0);
        assert!(stats.data_flushes >= 1 && stats.flushes >= 2);
        let committed = contents(&mut pool)?;
        assert_eq!(committed.devices.len(), 3);
        assert_eq!(committed.mappings.len(), 220);
        drop(pool);

        // Power failure right after the commit: nothing is lost.
        bm.discard_dirty();
        let mut pool = open(&bm)?;
        assert!(contents(&mut pool)? == committed);
        assert_eq!(pool.transaction_id(), 7);
        assert!(pool.lookup(3, 3)?.is_some_and(|m| m.shared));
        Ok(())
    }

    #[test]
    fn uncommitted_changes_vanish() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        populate(&mut pool)?;
        let committed = contents(&mut pool)?;

        pool.create_thin(4)?;
        map_fresh(&mut pool, 4, 30, 1)?;
        map_fresh(&mut pool, 1, 10, 1000)?;
        pool.remove_range(2, 0, 10)?;
        pool.delete_thin(3)?;
        pool.set_transaction_id(7, 8)?;
        assert!(contents(&mut pool)? != committed);
        assert!(bm.stats().dirty_blocks > 0);

        // Abort, as the pool target does it: reload the last commit into the same allocation
        // while the uncommitted blocks are still cached (dirty).
        pool.open_in_place(Some(DATA_BLOCK_SIZE), true)?;
        assert!(contents(&mut pool)? == committed);

        // The same changes again, then a power failure instead of an abort.
        pool.create_thin(4)?;
        map_fresh(&mut pool, 4, 30, 1)?;
        pool.delete_thin(1)?;
        drop(pool);
        bm.discard_dirty();
        let mut pool = open(&bm)?;
        assert!(contents(&mut pool)? == committed);
        Ok(())
    }

    #[test]
    fn space_accounting() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        assert_eq!(
            pool.metadata_free_blocks(),
            pool.metadata_free_blocks_raw() - pool.metadata_reserve()
        );
        let meta_free_empty = pool.metadata_free_blocks_raw();
        pool.create_thin(0)?;
        map_fresh(&mut pool, 0, DATA_BLOCKS, 1)?;
        assert_eq!(pool.data_free_blocks(), 0);
        assert_eq!(pool.alloc_data_block(), Err(Error::NoSpace(Space::Data)));
        assert_eq!(Error::NoSpace(Space::Data).errno(), 28);
        // Running out of data space does not poison the pool.
        assert!(!pool.has_failed());
        pool.commit()?;
        assert!(pool.metadata_free_blocks_raw() < meta_free_empty);

        pool.resize_data(DATA_BLOCKS + 24)?;
        assert_eq!(pool.data_free_blocks(), 24);
        assert_eq!(
            pool.resize_data(10),
            Err(Error::Invalid("the data device cannot shrink"))
        );
        let b = pool.alloc_data_block()?;
        assert!(b >= DATA_BLOCKS);
        pool.insert(0, DATA_BLOCKS, b)?;
        pool.delete_thin(0)?;
        pool.commit()?;
        assert_eq!(pool.data_free_blocks(), DATA_BLOCKS + 24);
        assert!(pool.metadata_free_blocks_raw() + 2 >= meta_free_empty);
        Ok(())
    }

    #[test]
    fn bad_checksum_is_an_error() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        populate(&mut pool)?;
        let sb = pool.superblock();
        drop(pool);

        // A damaged mapping tree root: the pool opens, the lookup that reads it fails.
        bm.corrupt(sb.mapping_root, 100)?;
        let pool = open(&bm)?;
        assert_eq!(
            pool.lookup(1, 0),
            Err(Error::Checksum {
                block: sb.mapping_root,
                kind: BlockKind::Node
            })
        );
        drop(pool);

        // A damaged space map index or superblock: the pool does not open.
        bm.corrupt(sb.meta_sm.bitmap_root, 2000)?;
        assert!(matches!(open(&bm).err(), Some(Error::Checksum { .. })));
        bm.corrupt(0, 4095)?;
        assert_eq!(
            open(&bm).err(),
            Some(Error::Checksum {
                block: 0,
                kind: BlockKind::Superblock
            })
        );
        Ok(())
    }

    #[test]
    fn allocation_failure_is_an_error() -> TestResult {
        let bm = MemBlockManager::new(META_BLOCKS).map_err(|_| Error::NoMemory)?;
        let mut pool = format(&bm)?;
        populate(&mut pool)?;
        let committed = contents(&mut pool)?;

        bm.fail_allocations(true);
        let r = map_fresh(&mut pool, 2, 50, 7);
        bm.fail_allocations(false);
        assert_eq!(r, Err(Error::NoMemory));
        assert_eq!(Error::NoMemory.errno(), 12);
        // A failed change poisons the in-core state; reopening returns to the last commit.
        assert!(pool.has_failed());
        assert!(pool.commit().is_err());
        drop(pool);
        let mut pool = open(&bm)?;
        assert!(contents(&mut pool)? == committed);
        Ok(())
    }
}
