//! Scale: a pool with over a million mapped blocks and 100 snapshot generations (each one
//! overwriting part of the newest snapshot, so trees share most nodes but not all) passes our
//! checker and thin_check.  Runs with the test profile's optimisation (opt-level 2).

mod common;
use common::*;

use std::time::Instant;

#[test]
fn million_mappings_and_100_snapshot_generations() {
    let t = Instant::now();
    let mut rng = Rng::new(seed(1_000_000));
    let mut p = mem_pool(40_000, 1_200_000);
    p.create_thin(0).unwrap();
    for v in 0..1_000_000u64 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
        if v % 250_000 == 249_999 {
            p.commit().unwrap();
        }
    }
    p.commit().unwrap();
    eprintln!("1M inserts: {:?}", t.elapsed());
    let mut dev = 0;
    for gen in 1..=100u64 {
        p.create_snap(gen, dev).unwrap();
        dev = gen;
        for _ in 0..150 {
            let v = rng.below(1_000_000);
            let b = p.alloc_data_block().unwrap();
            p.insert(dev, v, b).unwrap();
        }
        if gen % 10 == 0 {
            // Delete an old generation now and then: frees what only it used.
            p.delete_thin(gen - 9).unwrap();
        }
        p.commit().unwrap();
    }
    eprintln!("100 generations: {:?}", t.elapsed());
    let d = p.device_details(dev).unwrap();
    assert_eq!(d.mapped_blocks, 1_000_000);
    let image = image_of(&p);
    let bm = rthin_metadata_file::CachedBm::new(rthin_metadata_file::MemDisk::from_image(&image));
    let r = rthinctl::check::check(&bm);
    assert!(r.is_clean(), "{:?}", &r.errors[..r.errors.len().min(10)]);
    assert!(r.mappings >= 90_000_000, "{} mappings", r.mappings);
    eprintln!(
        "our check: {:?}; metadata blocks used {}",
        t.elapsed(),
        p.metadata_nr_blocks() - p.metadata_free_blocks_raw()
    );
    assert!(
        p.metadata_nr_blocks() - p.metadata_free_blocks_raw() > 16_320,
        "exercise several metadata bitmaps"
    );
    let path = write_temp("scale.bin", &image);
    drop(image);
    assert_thin_check_clean(&path);
    let _ = std::fs::remove_file(&path);
    eprintln!("thin_check: {:?}", t.elapsed());
}
