//! Corruption: every kind of metadata block with a bad checksum, a wrong self-location or an
//! impossible header/count must give a clear error naming the block — from the engine (open
//! and walk) and from `rthinctl check` — and never a panic.  Random damage must not panic
//! either (the stable "fuzz smoke" counterpart of the cargo-fuzz target).

mod common;
use common::*;

use rthin_metadata::block::{put32, put64, seal};
use rthin_metadata::{Block, BlockKind, BlockManager, Pool, BLOCK_SIZE};
use rthin_metadata_file::{CachedBm, MemDisk};

/// A pool using every block type: snapshots (shared nodes, counts >= 3 in both space maps'
/// ref-count trees), several bitmaps, a held metadata snapshot.
fn rich_image() -> Vec<u8> {
    let mut p = mem_pool(20_000, 40_000);
    p.create_thin(0).unwrap();
    for v in 0..3000 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
    }
    p.commit().unwrap();
    for s in 1..5 {
        p.create_snap(s, 0).unwrap();
        for v in 0..40 {
            let b = p.alloc_data_block().unwrap();
            p.insert(0, v * 70 + s, b).unwrap();
        }
    }
    p.commit().unwrap();
    p.reserve_metadata_snap().unwrap();
    p.create_thin(9).unwrap();
    p.commit().unwrap();
    image_of(&p)
}

/// Open and walk everything through the engine.
fn exercise(image: &[u8]) -> Result<(), rthin_metadata::Error> {
    let bm = CachedBm::new(MemDisk::from_image(image));
    let mut p = Pool::open(bm, None, true)?;
    let mut ids = Vec::new();
    p.for_each_device(&mut |id, _| {
        ids.push(id);
        Ok(true)
    })?;
    for id in &ids {
        p.for_each_mapping(*id, &mut |_, _, _| Ok(true))?;
        p.lookup(*id, 17)?;
    }
    // Every bitmap is visited (a bitmap covers 16,320 blocks), plus blocks with counts >= 3.
    for b in (0..p.data_nr_blocks()).step_by(97) {
        p.data_block_count(b)?;
    }
    for b in (0..p.metadata_nr_blocks()).step_by(89) {
        p.metadata_block_count(b)?;
    }
    // Writes reach the space maps, the ref-count trees and the metadata snapshot.
    for id in &ids {
        if let Ok(b) = p.alloc_data_block() {
            p.insert(*id, 5, b)?;
        }
        p.remove(*id, 6)?;
    }
    if p.held_root().is_some() {
        p.release_metadata_snap()?;
    }
    p.commit()
}

fn check_mentions(image: &[u8], block: u64) -> Vec<String> {
    let bm = CachedBm::new(MemDisk::from_image(image));
    let r = rthinctl::check::check(&bm);
    assert!(
        !r.is_clean(),
        "rthinctl check found nothing wrong with damaged block {block}"
    );
    let needle = format!(" {block}");
    assert!(
        r.errors.iter().any(|e| e.contains(&needle)),
        "no check message names block {block}: {:?}",
        &r.errors[..r.errors.len().min(5)]
    );
    r.errors
}

fn blk(image: &[u8], loc: u64) -> Block {
    let mut b = [0u8; BLOCK_SIZE];
    b.copy_from_slice(&image[loc as usize * BLOCK_SIZE..(loc as usize + 1) * BLOCK_SIZE]);
    b
}

fn with_block(image: &[u8], loc: u64, b: &Block) -> Vec<u8> {
    let mut v = image.to_vec();
    v[loc as usize * BLOCK_SIZE..(loc as usize + 1) * BLOCK_SIZE].copy_from_slice(b);
    v
}

#[test]
fn every_block_kind_with_bad_checksum_or_location_is_reported() {
    let image = rich_image();
    let clean = CachedBm::new(MemDisk::from_image(&image));
    let report = rthinctl::check::check(&clean);
    assert!(report.is_clean(), "{:?}", report.errors);
    let mut by_kind: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for &loc in &report.referenced {
        let k = BlockKind::classify(&blk(&image, loc)).expect("live blocks have a known checksum");
        by_kind.entry(format!("{k:?}")).or_default().push(loc);
    }
    for k in ["Superblock", "Node", "Index", "Bitmap"] {
        assert!(by_kind.contains_key(k), "no {k} block in the test image");
    }
    let mut cases = 0;
    for (kind, locs) in &by_kind {
        // A spread of blocks of each kind (all of them for the rare kinds).
        let step = (locs.len() / 12).max(1);
        for &loc in locs.iter().step_by(step) {
            let orig = blk(&image, loc);
            // 1. Bad checksum.
            let mut b = orig;
            b[200] ^= 0x5a;
            let img = with_block(&image, loc, &b);
            check_mentions(&img, loc);
            let r = exercise(&img);
            if kind != "Superblock" || loc == 0 {
                // The held snapshot copy is only read on release, which exercise() does.
                let e = r.expect_err(&format!("engine accepted {kind} {loc} with a bad checksum"));
                assert_eq!(e.block(), Some(loc), "{kind} {loc}: {e}");
            }
            // 2. Valid checksum, wrong self-location.
            let k = BlockKind::classify(&orig).unwrap();
            let mut b = orig;
            seal(k, loc + 1, &mut b);
            let img = with_block(&image, loc, &b);
            check_mentions(&img, loc);
            let e = exercise(&img).expect_err(&format!(
                "engine accepted {kind} {loc} at the wrong location"
            ));
            assert_eq!(e.block(), Some(loc), "{kind} {loc}: {e}");
            cases += 2;
        }
    }
    eprintln!("{cases} damaged images");
}

#[test]
fn impossible_headers_and_counts_are_reported() {
    let image = rich_image();
    let clean = CachedBm::new(MemDisk::from_image(&image));
    let report = rthinctl::check::check(&clean);
    let nodes: Vec<u64> = report
        .referenced
        .iter()
        .copied()
        .filter(|&l| BlockKind::classify(&blk(&image, l)) == Some(BlockKind::Node))
        .collect();
    let mut cases = 0;
    for &loc in nodes.iter().step_by((nodes.len() / 10).max(1)) {
        // (offset, value): nr_entries > max, max_entries too large, flags invalid, value size.
        for (off, val) in [(16usize, 100_000u32), (20, 5000), (4, 0), (4, 3), (24, 7)] {
            let mut b = blk(&image, loc);
            put32(&mut b, off, val);
            seal(BlockKind::Node, loc, &mut b);
            let img = with_block(&image, loc, &b);
            check_mentions(&img, loc);
            let e = exercise(&img).expect_err("engine accepted an impossible node header");
            assert_eq!(e.block(), Some(loc), "node {loc} field {off}: {e}");
            cases += 1;
        }
    }
    // Superblock: space map larger than the device, a root outside it, unknown features.
    let sb = blk(&image, 0);
    for (off, val) in [(192usize, 1u64 << 40), (320, 1 << 33), (360, 1)] {
        let mut b = sb;
        put64(&mut b, off, val);
        seal(BlockKind::Superblock, 0, &mut b);
        let img = with_block(&image, 0, &b);
        let bm = CachedBm::new(MemDisk::from_image(&img));
        assert!(
            !rthinctl::check::check(&bm).is_clean(),
            "check accepted superblock field {off} = {val}"
        );
        assert!(
            exercise(&img).is_err(),
            "engine accepted superblock field {off} = {val}"
        );
        cases += 1;
    }
    // Metadata index entry pointing beyond the device.
    let idx = rthin_metadata::superblock::Superblock::unpack(&sb)
        .meta_sm
        .bitmap_root;
    let mut b = blk(&image, idx);
    put64(&mut b, 16, 1 << 50);
    seal(BlockKind::Index, idx, &mut b);
    let img = with_block(&image, idx, &b);
    check_mentions(&img, idx);
    assert!(exercise(&img).is_err());
    // A bitmap count changed (leak / wrong count): the checker names the block.
    let dbm = CachedBm::new(MemDisk::from_image(&image));
    let mut p = Pool::open(dbm, None, false).unwrap();
    let free_meta = (0..p.metadata_nr_blocks())
        .find(|&b| p.metadata_block_count(b).unwrap() == 0)
        .unwrap();
    drop(p);
    let mut bmp = None;
    for &l in &report.referenced {
        if BlockKind::classify(&blk(&image, l)) == Some(BlockKind::Bitmap) {
            bmp = Some(l);
            break;
        }
    }
    let bl = bmp.unwrap();
    let mut b = blk(&image, bl);
    // Mark the first free metadata block as used (count 1) if this is the metadata bitmap 0.
    rthin_metadata::sm_common::bitmap_set(&mut b, free_meta % 16_320, 1);
    seal(BlockKind::Bitmap, bl, &mut b);
    let img = with_block(&image, bl, &b);
    let bm = CachedBm::new(MemDisk::from_image(&img));
    let r = rthinctl::check::check(&bm);
    assert!(!r.is_clean(), "a changed bitmap count went unnoticed");
    eprintln!("{cases} header cases; bitmap damage: {}", r.errors[0]);
    let _ = exercise(&img);
}

#[test]
fn random_damage_never_panics() {
    let image = rich_image();
    let nr = (image.len() / BLOCK_SIZE) as u64;
    let mut rng = Rng::new(seed(4242));
    for _ in 0..120 {
        let mut img = image.clone();
        for _ in 0..1 + rng.below(4) {
            let loc = rng.below(nr.min(400));
            let mut b = blk(&img, loc);
            let k = BlockKind::classify(&b);
            for _ in 0..1 + rng.below(8) {
                let off = 4 + rng.below(200) as usize;
                b[off] = rng.next() as u8;
            }
            if let Some(k) = k {
                if rng.chance(80) {
                    seal(k, loc, &mut b);
                }
            }
            img = with_block(&img, loc, &b);
        }
        let _ = exercise(&img);
        let bm = CachedBm::new(MemDisk::from_image(&img));
        let _ = rthinctl::check::check(&bm);
        let mut out = Vec::new();
        let _ = rthinctl::dump::dump(&bm, None, &mut out);
        let _ = bm.nr_blocks();
    }
    // Pure noise too.
    for _ in 0..50 {
        let mut img = vec![0u8; 64 * BLOCK_SIZE];
        for x in img.iter_mut() {
            *x = rng.next() as u8;
        }
        if rng.chance(50) {
            let mut b = blk(&img, 0);
            put64(&mut b, 32, rthin_metadata::superblock::SUPERBLOCK_MAGIC);
            seal(BlockKind::Superblock, 0, &mut b);
            img = with_block(&img, 0, &b);
        }
        assert!(exercise(&img).is_err());
        let bm = CachedBm::new(MemDisk::from_image(&img));
        assert!(!rthinctl::check::check(&bm).is_clean());
    }
}

#[test]
fn deleting_a_cyclic_tree_is_an_error_not_a_stack_overflow() {
    use rthin_metadata::btree::MAPPING_TOP_TREE;
    use rthin_metadata::btree_node as node;
    // 600 mappings: the bottom tree's root is an internal node over a few leaves.
    let mut p = mem_pool(1024, 2000);
    p.create_thin(0).unwrap();
    for v in 0..600 {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
    }
    p.commit().unwrap();
    let top = p.superblock().mapping_root;
    let v = p
        .tx()
        .btree_lookup(top, MAPPING_TOP_TREE, 0)
        .unwrap()
        .unwrap();
    let root = u64::from_le_bytes(v[..8].try_into().unwrap());
    let image = image_of(&p);
    // Its first child becomes the root itself: a cycle, followed depth first.
    let mut b = blk(&image, root);
    let h = node::check(root, &b, 8).unwrap();
    assert!(h.internal);
    node::set_value64(&mut b, &h, 0, root);
    seal(BlockKind::Node, root, &mut b);
    let img = with_block(&image, root, &b);
    let mut p = Pool::open(CachedBm::new(MemDisk::from_image(&img)), None, true).unwrap();
    let e = p.delete_thin(0).unwrap_err();
    assert_eq!(
        e,
        rthin_metadata::Error::Corrupt {
            block: root,
            what: "btree deeper than any valid tree (cycle?)"
        }
    );
    assert!(p.has_failed());
}
