//! Mapping trees at the format's real sizes: a thin grows to a four-level mapping tree (root,
//! two internal levels, leaves), then loses most of its mappings, by ranges and one by one, so
//! that leaves empty, internal nodes merge and the tree shrinks back. At every stage the counts,
//! sampled lookups against the model, our checker and thin_check agree. Runs with the test
//! profile's optimisation (opt-level 2).

mod common;
use common::*;

use rthin_metadata::{btree_node, BlockKind, BlockManager, Pool};
use rthin_metadata_file::MemBm;
use std::time::Instant;

/// Ascending inserts leave nodes about half full after their splits (127 of 254 entries), and a
/// root takes up to 254 children, so three levels hold up to 127 × 127 × 254 ≈ 4.1M mappings:
/// this many need a fourth.
const MAPPINGS: u64 = 4_600_000;
/// Of every window of this many keys, the first `KEEP` stay after the range removals.
const WINDOW: u64 = 10_000;
const KEEP: u64 = 300;

/// Levels of device `dev`'s mapping tree (1: the root is a leaf).
fn levels(p: &Pool<MemBm>, dev: u64) -> usize {
    let bm = p.block_manager();
    let node = |loc: u64| {
        let b = bm.read(loc, BlockKind::Node).expect("read node");
        let h = btree_node::check(loc, &b, 8).expect("valid node");
        (h.internal, btree_node::value64(&b, &h, 0), h.nr)
    };
    // The top-level tree maps device ids to subtree roots; with one device it is one leaf.
    let top = p.superblock().mapping_root;
    let b = bm.read(top, BlockKind::Node).expect("read top");
    let h = btree_node::check(top, &b, 8).expect("valid top");
    assert!(!h.internal, "one device: the top-level tree is a leaf");
    let i = btree_node::find(&b, &h, dev).expect("device in the top-level tree");
    let mut loc = btree_node::value64(&b, &h, i);
    drop(b);
    let mut depth = 1;
    loop {
        let (internal, first_child, _) = node(loc);
        if !internal {
            return depth;
        }
        loc = first_child;
        depth += 1;
    }
}

fn kept(v: u64) -> bool {
    v % WINDOW < KEEP
}

/// Mapped count, sampled lookups against `present`, our checker and thin_check.
fn check_against(p: &Pool<MemBm>, what: &str, rng: &mut Rng, present: impl Fn(u64) -> bool) {
    let expected = (0..MAPPINGS).filter(|&v| present(v)).count() as u64;
    let mapped = p.device_details(0).unwrap().mapped_blocks;
    assert_eq!(mapped, expected, "{what}: mapped blocks");
    for _ in 0..50_000 {
        let v = rng.below(MAPPINGS + 1000);
        let found = p.lookup(0, v).unwrap().is_some();
        assert_eq!(found, v < MAPPINGS && present(v), "{what}: lookup of {v}");
    }
    assert_our_check_clean(p.block_manager());
    let image = write_temp(&format!("deep-tree-{what}.img"), &image_of(p));
    assert_thin_check_clean(&image);
    let _ = std::fs::remove_file(image);
}

#[test]
fn four_level_tree_grows_and_shrinks_with_internal_merges() {
    let t = Instant::now();
    let mut rng = Rng::new(seed(44));
    let mut p = mem_pool(200_000, MAPPINGS + 1000);
    p.create_thin(0).unwrap();
    for v in 0..MAPPINGS {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
        if v % 500_000 == 499_999 {
            p.commit().unwrap();
        }
    }
    p.commit().unwrap();
    eprintln!("{MAPPINGS} inserts: {:?}", t.elapsed());
    assert_eq!(levels(&p, 0), 4, "a four-level tree");
    check_against(&p, "grown", &mut rng, |_| true);

    // Most of every window goes by ranges: whole leaves and runs of them empty, so internal
    // nodes lose most of their children and merge.
    let t = Instant::now();
    for w in 0..MAPPINGS.div_ceil(WINDOW) {
        let end = ((w + 1) * WINDOW).min(MAPPINGS);
        p.remove_range(0, w * WINDOW + KEEP, end).unwrap();
    }
    p.commit().unwrap();
    eprintln!("range removals: {:?}", t.elapsed());
    let shrunk = levels(&p, 0);
    assert!(
        shrunk < 4,
        "the tree shrinks after the removals ({shrunk} levels)"
    );
    check_against(&p, "ranges-removed", &mut rng, kept);

    // Then one by one: the odd keys that are left, with merges at every level as leaves run low.
    for v in (0..MAPPINGS).filter(|&v| kept(v) && v % 2 == 1) {
        p.remove(0, v).unwrap();
    }
    p.commit().unwrap();
    check_against(&p, "keys-removed", &mut rng, |v| kept(v) && v % 2 == 0);
    let p = reopen(p);
    check_against(&p, "reopened", &mut rng, |v| kept(v) && v % 2 == 0);
    eprintln!("total: {:?}", t.elapsed());
}
