//! Metadata space: the allocator at the very end of the device, the metadata reserve, free
//! counts as dm-thin reports them, and growing a full metadata device.

mod common;
use common::*;

use rthin_metadata::{Error, Pool, Space};

/// Two metadata bitmaps, the second covering a single block (16,320).  Fill everything the
/// first covers within one transaction, so that the last free block lies in a bitmap this
/// transaction has not copied yet: allocating it must copy that bitmap, and the nested
/// allocation for the copy must not hand out the very block being allocated.
#[test]
fn last_free_metadata_block_is_never_handed_out_twice() {
    let mut p = Pool::format(mem_bm(16_321), 128).unwrap();
    let tx = p.tx();
    let mut got = Vec::new();
    let last = loop {
        match tx.meta_alloc() {
            Ok(b) if b < 16_320 => got.push(b),
            r => break r,
        }
    };
    assert!(got.len() > 16_000, "{} blocks allocated", got.len());
    match last {
        // The only block left cannot hold both itself and the copy of its bitmap.
        Err(Error::NoSpace(Space::Metadata)) => {}
        Ok(b) => {
            let c = tx.meta_count(b).unwrap();
            panic!("block {b} handed out with count {c} (also used as a bitmap copy?)");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// dm-thin's allocation loop around the engine: allocate and map; when a change is refused
/// because only the metadata reserve is left, commit (blocks freed in the transaction come
/// back) and retry once; if still nothing is free, the pool is out of metadata space.
/// Returns the number of blocks mapped before running out.
fn fill_like_dm_thin(p: &mut Pool<rthin_metadata_file::MemBm>, id: u64, first: u64) -> u64 {
    let mut v = first;
    let mut refused_after_commit = false;
    loop {
        // insert completes the provisioning alloc_data_block started: never refused.
        let r = p
            .alloc_data_block()
            .map(|b| p.insert(id, v * 3, b).unwrap());
        match r {
            Ok(()) => {
                v += 1;
                refused_after_commit = false;
            }
            Err(Error::NoSpace(Space::Metadata)) => {
                assert!(!p.has_failed(), "a refused change must not poison the pool");
                assert_eq!(p.metadata_free_blocks(), 0);
                assert!(
                    !refused_after_commit,
                    "refused although a commit freed space"
                );
                p.commit().expect("the commit may use the reserve");
                if p.metadata_free_blocks() == 0 {
                    return v - first;
                }
                refused_after_commit = true;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn metadata_reserve_is_kept_for_the_change_in_progress_and_the_commit() {
    let bm = mem_bm(1000);
    bm.with_disk(|d| d.set_nr_blocks(1000));
    let mut p = Pool::format(bm, 128).unwrap();
    p.resize_data(1_000_000).unwrap();
    p.commit().unwrap();
    assert_eq!(p.metadata_reserve(), 100);
    p.create_thin(1).unwrap();
    let mapped = fill_like_dm_thin(&mut p, 1, 0);
    assert!(mapped > 10_000, "{mapped}");
    // Out of metadata space: only the reserve is left, and every change that allocates
    // metadata is refused without touching anything.
    let raw = p.metadata_free_blocks_raw();
    assert!(raw > 0 && raw <= p.metadata_reserve(), "raw free {raw}");
    assert_eq!(p.create_thin(2), Err(Error::NoSpace(Space::Metadata)));
    assert_eq!(p.create_snap(2, 1), Err(Error::NoSpace(Space::Metadata)));
    assert_eq!(p.delete_thin(1), Err(Error::NoSpace(Space::Metadata)));
    assert_eq!(p.remove(1, 0), Err(Error::NoSpace(Space::Metadata)));
    assert_eq!(
        p.remove_range(1, 0, 100),
        Err(Error::NoSpace(Space::Metadata))
    );
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace(Space::Metadata)));
    assert_eq!(
        p.reserve_metadata_snap(),
        Err(Error::NoSpace(Space::Metadata))
    );
    assert!(!p.has_failed());
    assert_eq!(p.metadata_free_blocks_raw(), raw);
    // Lookups, the transaction id and needs_check still work; so does a commit.
    assert!(p.lookup(1, 0).unwrap().is_some());
    assert_eq!(
        p.remove(1, 1),
        Ok(false),
        "nothing to unmap: nothing refused"
    );
    let t = p.transaction_id();
    p.set_transaction_id(t, t + 1).unwrap();
    p.commit().unwrap();
    assert_eq!(
        p.metadata_free_blocks_raw(),
        p.metadata_nr_blocks() - p.superblock().meta_sm.nr_allocated
    );
    assert_compatible(&image_of(&p), "out-of-metadata-space");
    let p = reopen(p);
    assert_eq!(p.device_details(1).unwrap().mapped_blocks, mapped);
    assert_eq!(p.metadata_free_blocks(), 0);
}

#[test]
fn metadata_free_count_is_committed_free_minus_allocated_this_transaction() {
    let mut p = mem_pool(4000, 100_000);
    p.create_thin(1).unwrap();
    for v in 0..20_000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
    }
    p.commit().unwrap();
    let sb = p.superblock();
    let committed_free = p.metadata_nr_blocks() - sb.meta_sm.nr_allocated;
    assert_eq!(p.metadata_free_blocks_raw(), committed_free);
    // Removing mappings copies nodes (allocations) and frees the old ones, which stay in use
    // by the committed state: the free count can only go down until the commit.
    let mut last = committed_free;
    for v in (0..20_000).step_by(7) {
        p.remove(1, v).unwrap();
        let now = p.metadata_free_blocks_raw();
        assert!(
            now <= last,
            "free went up from {last} to {now} without a commit"
        );
        last = now;
    }
    assert!(last < committed_free);
    // Every block counted as free can really be allocated (with room for the copy of the one
    // bitmap not yet copied, the index and the superblock... of which there is one each).
    let claimed_free = p.metadata_free_blocks_raw();
    {
        let tx = p.tx();
        let mut n = 0;
        while tx.meta_alloc().is_ok() {
            n += 1;
        }
        assert!(
            n >= claimed_free,
            "{n} allocatable, {claimed_free} reported free"
        );
    }
    // Deleting the device frees everything at the commit.
    let mut p = reopen(p);
    p.delete_thin(1).unwrap();
    let before = p.metadata_free_blocks_raw();
    p.commit().unwrap();
    assert!(p.metadata_free_blocks_raw() > before + 50);
    assert_eq!(
        p.metadata_free_blocks_raw(),
        p.metadata_nr_blocks() - p.superblock().meta_sm.nr_allocated
    );
    assert_compatible(&image_of(&p), "metadata-free-count");
}

#[test]
fn data_free_count_is_committed_free_minus_net_allocations() {
    // dm-space-map-disk: freed blocks count as free at once, but are handed out only after
    // the commit.
    let mut p = mem_pool(1024, 100);
    p.create_thin(1).unwrap();
    for v in 0..100 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
    }
    assert_eq!(p.data_free_blocks(), 0);
    p.commit().unwrap();
    assert_eq!(p.remove_range(1, 0, 40), Ok(40));
    assert_eq!(p.data_free_blocks(), 40);
    assert_eq!(p.alloc_data_block(), Err(Error::NoSpace(Space::Data)));
    assert!(!p.has_failed());
    p.commit().unwrap();
    assert_eq!(p.data_free_blocks(), 40);
    let b = p.alloc_data_block().unwrap();
    assert!(b < 100);
    assert_eq!(p.data_free_blocks(), 39);
    p.insert(1, 0, b).unwrap();
    p.commit().unwrap();
    assert_compatible(&image_of(&p), "data-free-count");
}

/// Fill the metadata device completely in one transaction (the last blocks taken straight
/// from the allocator), then grow it: the new bitmaps must come from the new area.
fn grow_when_full(initial: u64, grown: u64) {
    let bm = mem_bm(initial);
    let mut p = Pool::format(bm, 128).unwrap();
    p.resize_data(200_000).unwrap();
    p.create_thin(1).unwrap();
    p.commit().unwrap();
    p.set_metadata_reserve_enforced(false);
    let mut v = 0;
    for _ in 0..3000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
        v += 1;
    }
    p.commit().unwrap();
    // Take blocks straight from the allocator (given back below), committing in between,
    // until a commit would no longer fit; then, in one transaction, every remaining block.
    let mut leaked = Vec::new();
    loop {
        let free = p.metadata_free_blocks_raw();
        let last = free <= 40;
        let n = if last { u64::MAX } else { free - 40 };
        let t = p.transaction_id();
        p.set_transaction_id(t, t + 1).unwrap();
        for _ in 0..n {
            match p.tx().meta_alloc() {
                Ok(b) => leaked.push(b),
                Err(Error::NoSpace(Space::Metadata)) if last => break,
                Err(e) => panic!("{e}"),
            }
        }
        if last {
            break;
        }
        p.commit().unwrap();
    }
    assert!(!leaked.is_empty());
    assert_eq!(p.metadata_free_blocks_raw(), 0);
    assert!(!p.has_failed());
    // Grow, commit, and give the blocks taken above back.
    p.block_manager().with_disk(|d| d.set_nr_blocks(grown));
    p.resize_metadata(grown)
        .expect("a full metadata device can grow");
    assert_eq!(p.metadata_nr_blocks(), grown);
    p.commit().expect("commit after growing");
    for b in leaked {
        p.tx().meta_dec(b).unwrap();
    }
    let t = p.transaction_id();
    p.set_transaction_id(t, t + 1).unwrap();
    p.commit().unwrap();
    assert_eq!(
        p.metadata_free_blocks_raw(),
        grown - p.superblock().meta_sm.nr_allocated
    );
    // And the pool works on.
    p.set_metadata_reserve_enforced(true);
    for _ in 0..2000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
        v += 1;
    }
    p.commit().unwrap();
    assert_eq!(p.device_details(1).unwrap().mapped_blocks, v);
    assert_compatible(&image_of(&p), &format!("grown-when-full-{initial}-{grown}"));
}

#[test]
fn full_metadata_device_grows_within_its_last_bitmap() {
    grow_when_full(600, 1200);
}

#[test]
fn full_metadata_device_grows_by_new_bitmaps() {
    grow_when_full(600, 40_000);
}

#[test]
fn full_metadata_device_grows_from_a_bitmap_boundary() {
    grow_when_full(16_320, 16_420);
}

/// Deleting thins frees their data blocks in runs (one bitmap write per run): runs that cross
/// bitmaps, counts of 1, 2 and more (leaves shadowed by snapshots raise their blocks' counts)
/// all end as exact counts, and every block comes back.
#[test]
fn deleting_runs_of_blocks_keeps_counts_exact() {
    let mut p = mem_pool(8192, 100_000);
    p.create_thin(1).unwrap();
    // 40,000 consecutive blocks: runs across the bitmaps at 16,320 and 32,640.
    for v in 0..40_000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
    }
    p.commit().unwrap();
    // Each snapshot writes into a few leaves: copying a shared leaf raises its blocks' counts.
    for s in 2..6 {
        p.create_snap(s, 1).unwrap();
        for v in [5, 16_300, 16_330, 33_000] {
            let b = p.alloc_data_block().unwrap();
            p.insert(s, v + s, b).unwrap();
        }
    }
    p.commit().unwrap();
    let used = p.data_nr_blocks() - p.data_free_blocks();
    p.delete_thin(1).unwrap();
    p.commit().unwrap();
    // The snapshots still use every block but the ones only the origin had.
    assert!(p.data_nr_blocks() - p.data_free_blocks() <= used);
    assert_our_check_clean(p.block_manager());
    for s in 2..5 {
        p.delete_thin(s).unwrap();
        p.commit().unwrap();
        assert_our_check_clean(p.block_manager());
    }
    assert_eq!(p.device_details(5).unwrap().mapped_blocks, 40_000);
    assert_compatible(&image_of(&p), "runs-one-snapshot-left");
    p.delete_thin(5).unwrap();
    p.commit().unwrap();
    assert_eq!(p.data_free_blocks(), p.data_nr_blocks());
    assert_compatible(&image_of(&p), "runs-all-deleted");
}
