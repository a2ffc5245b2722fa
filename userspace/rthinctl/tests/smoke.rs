mod common;
use common::*;

#[test]
fn basic_lifecycle_is_compatible() {
    let mut p = mem_pool(1024, 100_000);
    p.create_thin(0).unwrap();
    for v in 0..1000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v * 3, b).unwrap();
    }
    p.commit().unwrap();
    p.create_snap(1, 0).unwrap();
    for v in 0..300u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v * 7, b).unwrap();
    }
    for v in 0..200u64 {
        p.remove(1, v * 5).unwrap();
    }
    p.commit().unwrap();
    let p = reopen(p);
    assert_compatible(&image_of(&p), "smoke");
}

#[test]
fn flags_and_features() {
    use rthin_metadata::block::{put32, seal};
    use rthin_metadata::{BlockKind, Error, Pool};
    use rthin_metadata_file::{CachedBm, MemDisk};
    let mut p = mem_pool(256, 100);
    assert!(!p.needs_check());
    p.set_needs_check(true).unwrap();
    p.commit().unwrap();
    let mut p = reopen(p);
    assert!(p.needs_check());
    // thin_check accepts the flag (it only reports it).
    assert_compatible(&image_of(&p), "needs-check");
    p.set_needs_check(false).unwrap();
    p.commit().unwrap();
    assert!(!reopen(p).needs_check());

    // Unknown feature bits: incompat refuses any open, compat_ro refuses a writable open.
    let image = image_of(&mem_pool(256, 100));
    for (off, writable_ok, ro_ok) in [(360usize, false, false), (356, false, true)] {
        let mut img = image.clone();
        let mut b = [0u8; 4096];
        b.copy_from_slice(&img[..4096]);
        put32(&mut b, off, 4);
        seal(BlockKind::Superblock, 0, &mut b);
        img[..4096].copy_from_slice(&b);
        let rw = Pool::open(CachedBm::new(MemDisk::from_image(&img)), None, true);
        assert_eq!(rw.is_ok(), writable_ok);
        assert!(matches!(
            rw.err(),
            Some(Error::UnsupportedFeatures { .. }) | None
        ));
        let ro = Pool::open(CachedBm::new(MemDisk::from_image(&img)), None, false);
        assert_eq!(ro.is_ok(), ro_ok);
    }
    // Data block size must match when given.
    let r = Pool::open(CachedBm::new(MemDisk::from_image(&image)), Some(256), true);
    assert!(matches!(
        r.err(),
        Some(Error::BlockSizeMismatch {
            on_disk: 128,
            requested: 256
        })
    ));
    eprintln!(
        "size of Pool: {} bytes",
        std::mem::size_of::<Pool<rthin_metadata_file::MemBm>>()
    );
}

#[test]
fn accounting_and_transaction_ids() {
    use rthin_metadata::Error;
    let mut p = mem_pool(10_000, 500);
    assert_eq!(p.metadata_reserve(), 1000);
    assert_eq!(
        p.metadata_free_blocks(),
        p.metadata_free_blocks_raw() - 1000
    );
    assert_eq!(p.data_free_blocks(), 500);
    assert_eq!(
        p.set_transaction_id(1, 2),
        Err(Error::Invalid("mismatched transaction id"))
    );
    p.set_transaction_id(0, 5).unwrap();
    assert_eq!(p.transaction_id(), 5);
    p.create_thin(1).unwrap();
    assert_eq!(p.create_thin(1), Err(Error::DeviceExists(1)));
    assert_eq!(p.create_snap(2, 9), Err(Error::NoDevice(9)));
    assert_eq!(p.delete_thin(9), Err(Error::NoDevice(9)));
    assert_eq!(p.create_thin(1 << 24).unwrap_err().errno(), 22);
    for v in 0..500 {
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
    }
    assert_eq!(p.data_free_blocks(), 0);
    let e = p.alloc_data_block().unwrap_err();
    assert_eq!(e.errno(), 28);
    assert!(
        !p.has_failed(),
        "out of data space does not poison the pool"
    );
    p.create_snap(2, 1).unwrap();
    let m = p.lookup(2, 7).unwrap().unwrap();
    assert!(m.shared);
    assert_eq!(p.device_details(2).unwrap().mapped_blocks, 500);
    assert_eq!(p.device_details(2).unwrap().transaction_id, 5);
    assert_eq!(p.time(), 1);
    p.reserve_metadata_snap().unwrap();
    assert_eq!(p.reserve_metadata_snap().unwrap_err().errno(), 16);
    p.release_metadata_snap().unwrap();
    assert_eq!(p.release_metadata_snap().unwrap_err().errno(), 22);
    p.delete_thin(1).unwrap();
    p.commit().unwrap();
    assert_eq!(
        p.data_free_blocks(),
        0,
        "the snapshot still maps everything"
    );
    p.delete_thin(2).unwrap();
    p.commit().unwrap();
    assert_eq!(p.data_free_blocks(), 500);
    assert_compatible(&image_of(&p), "accounting");
}

#[test]
fn delete_finds_details_wherever_they_are() {
    use rthin_metadata::Error;
    // 40 devices: more than the 16 cached details, so some are written to the details tree
    // before the commit and some exist only in the cache when deleted.
    let mut p = mem_pool(4096, 10_000);
    for id in 0..40u64 {
        p.create_thin(id).unwrap();
        let b = p.alloc_data_block().unwrap();
        p.insert(id, id, b).unwrap();
    }
    // Created in this transaction: the newest only cached, the oldest written back already.
    p.delete_thin(39).unwrap();
    p.delete_thin(0).unwrap();
    p.commit().unwrap();
    // Committed: cached clean, uncached, and cached dirty (a changed mapping count).
    assert!(p.cache_details(5).unwrap());
    p.delete_thin(5).unwrap();
    p.delete_thin(6).unwrap();
    let b = p.alloc_data_block().unwrap();
    p.insert(7, 100, b).unwrap();
    p.delete_thin(7).unwrap();
    assert_eq!(p.delete_thin(7), Err(Error::NoDevice(7)));
    assert_eq!(p.delete_thin(1000), Err(Error::NoDevice(1000)));
    assert!(!p.has_failed());
    p.commit().unwrap();
    let mut p = reopen(p);
    let mut ids = Vec::new();
    p.for_each_device(&mut |id, _| {
        ids.push(id);
        Ok(true)
    })
    .unwrap();
    let expected: Vec<u64> = (1..39).filter(|id| ![5, 6, 7].contains(id)).collect();
    assert_eq!(ids, expected);
    assert_eq!(p.data_free_blocks(), 10_000 - expected.len() as u64);
    assert_compatible(&image_of(&p), "delete-details");
}
