//! `rthinctl restore` at scale and with sharing: the streaming reader, the bottom-up tree
//! builder (`btree_build.rs`) and the reference counts of shared leaves and shared data
//! blocks, all checked by thin_check 1.1.0 and by thin_dump reproducing the input.
//!
//! "Equal" for XML with `<def>`s means equal once the def names are replaced by their order of
//! appearance: thin_dump names a def after the block of its first leaf, which differs between
//! any two tools that write the same metadata.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use rthin_metadata::btree::MAPPING_BOTTOM_TREE;
use rthin_metadata::btree_build::TreeBuilder;
use rthin_metadata::superblock::DeviceDetails;
use rthin_metadata::thin::pack_block_time;
use rthin_metadata::{Pool, BLOCK_SIZE};
use rthin_metadata_file::{CachedBm, MemDisk};

/// Per device: virtual block -> (data block, time).
type Expected = BTreeMap<u64, BTreeMap<u64, (u64, u32)>>;

fn mapping_line(x: &mut String, o: u64, d: u64, len: u64, t: u32) {
    if len == 1 {
        writeln!(
            x,
            "<single_mapping origin_block=\"{o}\" data_block=\"{d}\" time=\"{t}\"/>"
        )
        .unwrap();
    } else {
        writeln!(
            x,
            "<range_mapping origin_begin=\"{o}\" data_begin=\"{d}\" length=\"{len}\" time=\"{t}\"/>"
        )
        .unwrap();
    }
}

/// Mapping runs for `count` virtual blocks from `o`; data from `*next_data` (advanced), or
/// from `reuse` (data blocks another device maps too) when given.
fn runs(
    rng: &mut Rng,
    x: &mut String,
    maps: &mut BTreeMap<u64, (u64, u32)>,
    mut o: u64,
    count: u64,
    next_data: &mut u64,
    time: u32,
) -> u64 {
    let end = o + count;
    while o < end {
        let len = (1 + rng.below(12)).min(end - o);
        let t = rng.below(u64::from(time) + 1) as u32;
        mapping_line(x, o, *next_data, len, t);
        for j in 0..len {
            maps.insert(o + j, (*next_data + j, t));
        }
        *next_data += len + 1 + rng.below(2);
        o += len + rng.below(3);
    }
    o
}

/// Sizes that land on and around node boundaries (84 = the minimum, 252 = a full leaf).
fn pick_size(rng: &mut Rng) -> u64 {
    match rng.below(6) {
        0 => 1 + rng.below(20),
        1 => 80 + rng.below(10),
        2 => 245 + rng.below(15),
        3 => 330 + rng.below(10),
        4 => 500 + rng.below(600),
        _ => 2000 + rng.below(3000),
    }
}

/// Random XML: `<def>`s at fixed virtual ranges, devices that reference some of them with
/// their own mappings in between (sizes around node boundaries), empty devices, a def no one
/// references, and data blocks that two devices map explicitly.
fn random_shared_xml(rng: &mut Rng) -> (String, Expected) {
    const SLOT: u64 = 1_000_000;
    let time = 3 + rng.below(10) as u32;
    let mut x = String::new();
    let mut next_data = 0u64;
    let ndefs = 1 + rng.below(4);
    let mut defs: Vec<BTreeMap<u64, (u64, u32)>> = Vec::new();
    for k in 0..ndefs {
        let mut maps = BTreeMap::new();
        let mut body = String::new();
        let size = pick_size(rng);
        runs(
            rng,
            &mut body,
            &mut maps,
            k * SLOT + 500_000,
            size,
            &mut next_data,
            time,
        );
        writeln!(x, "<def name=\"def-{k}\">\n{body}</def>").unwrap();
        defs.push(maps);
    }
    let mut expected = Expected::new();
    let mut last_own: Option<String> = None;
    let ndev = 2 + rng.below(5);
    for dev in 0..ndev {
        let mut maps = BTreeMap::new();
        let mut body = String::new();
        if !rng.chance(10) {
            for (k, def) in defs.iter().enumerate() {
                if rng.chance(60) {
                    let n = if rng.chance(25) { 0 } else { pick_size(rng) };
                    runs(
                        rng,
                        &mut body,
                        &mut maps,
                        k as u64 * SLOT,
                        n,
                        &mut next_data,
                        time,
                    );
                }
                if rng.chance(70) {
                    writeln!(body, "<ref name=\"def-{k}\"/>").unwrap();
                    maps.extend(def.iter().map(|(k, v)| (*k, *v)));
                }
            }
            if rng.chance(50) {
                let n = pick_size(rng);
                runs(
                    rng,
                    &mut body,
                    &mut maps,
                    ndefs * SLOT,
                    n,
                    &mut next_data,
                    time,
                );
            }
        }
        // Data blocks shared without a def: the previous device's own tail, mapped again.
        if let (Some(prev), true) = (&last_own, rng.chance(30)) {
            let base = (ndefs + 1) * SLOT;
            for line in prev.lines() {
                let v: Vec<u64> = line
                    .split('"')
                    .skip(1)
                    .step_by(2)
                    .map(|s| s.parse().unwrap())
                    .collect();
                let (o, d, len, t) = if v.len() == 3 {
                    (v[0], v[1], 1, v[2])
                } else {
                    (v[0], v[1], v[2], v[3])
                };
                mapping_line(&mut body, o, d, len, t as u32);
                for j in 0..len {
                    maps.insert(o + j, (d + j, t as u32));
                }
                assert!(o >= base);
            }
            last_own = None;
        } else {
            let mut tail = String::new();
            let mut tail_maps = BTreeMap::new();
            let n = rng.below(400);
            runs(
                rng,
                &mut tail,
                &mut tail_maps,
                (ndefs + 1) * SLOT,
                n,
                &mut next_data,
                time,
            );
            body.push_str(&tail);
            maps.extend(tail_maps);
            last_own = Some(tail);
        }
        let id = dev * 5 + rng.below(5);
        writeln!(
            x,
            "<device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" snap_time=\"{time}\">\n{body}</device>",
            maps.len(),
            rng.below(100),
            rng.below(u64::from(time)),
        )
        .unwrap();
        expected.insert(id, maps);
    }
    let head = format!(
        "<superblock uuid=\"\" time=\"{time}\" transaction=\"{}\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{}\">\n",
        rng.below(1000),
        next_data + 100
    );
    (head + &x + "</superblock>", expected)
}

/// Def names replaced by their order of first appearance.
fn canon(xml: &str) -> String {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(i) = rest.find("name=\"") {
        let (before, after) = rest.split_at(i + 6);
        out.push_str(before);
        let end = after.find('"').unwrap();
        let n = names.len();
        let id = *names.entry(after[..end].to_string()).or_insert(n);
        write!(out, "d{id}").unwrap();
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ours(xml: &str, meta_blocks: u64) -> Vec<u8> {
    let p = rthinctl::restore::restore(xml, mem_bm(meta_blocks)).expect("our restore");
    image_of(&p)
}

fn thin_dump(image: &[u8]) -> String {
    let path = write_temp("dump.bin", image);
    let o = run_tool("thin_dump", &[path.to_str().unwrap()]);
    assert!(o.ok, "thin_dump failed: {}", o.stderr);
    let _ = std::fs::remove_file(&path);
    o.stdout
}

/// Metadata blocks in use.
fn used_blocks(image: &[u8]) -> u64 {
    let p = Pool::open(CachedBm::new(MemDisk::from_image(image)), None, false).unwrap();
    p.metadata_nr_blocks() - p.metadata_free_blocks_raw()
}

fn assert_mappings(image: &[u8], expected: &Expected) {
    let p = Pool::open(CachedBm::new(MemDisk::from_image(image)), None, false).unwrap();
    for (id, maps) in expected {
        let mut got = BTreeMap::new();
        p.for_each_mapping(*id, &mut |k, b, t| {
            got.insert(k, (b, t));
            Ok(true)
        })
        .unwrap();
        assert_eq!(&got, maps, "device {id}");
        assert_eq!(
            p.device_details(*id).unwrap().mapped_blocks,
            maps.len() as u64
        );
    }
}

/// Our restore of `xml` passes both checkers, our dump equals thin_dump's, and thin_dump
/// gives `xml` back (def names aside).  Returns the image.
fn assert_round_trip(xml: &str, meta_blocks: u64, what: &str) -> Vec<u8> {
    let image = ours(xml, meta_blocks);
    assert_compatible(&image, what);
    let back = thin_dump(&image);
    if canon(&back) != canon(xml) {
        let a = write_temp(&format!("{what}.in.xml"), xml.as_bytes());
        let b = write_temp(&format!("{what}.back.xml"), back.as_bytes());
        panic!(
            "{what}: thin_dump of our restore differs: input {} dump {}",
            a.display(),
            b.display()
        );
    }
    image
}

#[test]
fn shared_leaves_and_shared_data_blocks_round_trip() {
    let mut rng = Rng::new(seed(4242));
    for round in 0..10 {
        let (xml, expected) = random_shared_xml(&mut rng);
        // Straight from the generator: defs of every size, own runs of every size next to
        // them.  Checkers clean, the mappings and counts exact.
        let image = ours(&xml, 8192);
        assert_compatible(&image, &format!("shared-{round}"));
        assert_mappings(&image, &expected);
        // thin_dump's form of the same metadata comes back unchanged.
        let canonical = thin_dump(&thin_restore(&xml, 8192));
        let image = assert_round_trip(&canonical, 8192, &format!("shared-canonical-{round}"));
        assert_mappings(&image, &expected);
    }
}

#[test]
fn many_devices_and_empty_ones() {
    let mut rng = Rng::new(seed(99));
    let mut x = String::from(
        "<superblock uuid=\"\" time=\"4\" transaction=\"17\" version=\"2\" data_block_size=\"256\" nr_data_blocks=\"2000000\">\n",
    );
    let mut expected = Expected::new();
    let mut next_data = 0;
    let mut shared = BTreeMap::new();
    let mut body = String::new();
    runs(&mut rng, &mut body, &mut shared, 0, 700, &mut next_data, 4);
    writeln!(x, "<def name=\"common\">\n{body}</def>").unwrap();
    for id in 0..300u64 {
        let mut maps = BTreeMap::new();
        let mut body = String::new();
        match id % 5 {
            // Empty, written both ways.
            0 => {}
            1 => {
                writeln!(
                    x,
                    "<device dev_id=\"{id}\" mapped_blocks=\"0\" transaction=\"1\" creation_time=\"2\" snap_time=\"3\"/>"
                )
                .unwrap();
                expected.insert(id, maps);
                continue;
            }
            2 => {
                writeln!(body, "<ref name=\"common\"/>").unwrap();
                maps.extend(shared.iter().map(|(k, v)| (*k, *v)));
                let n = rng.below(600);
                runs(&mut rng, &mut body, &mut maps, 10_000, n, &mut next_data, 4);
            }
            _ => {
                let n = 1 + rng.below(1200);
                runs(&mut rng, &mut body, &mut maps, 0, n, &mut next_data, 4);
            }
        }
        writeln!(
            x,
            "<device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"1\" creation_time=\"2\" snap_time=\"3\">\n{body}</device>",
            maps.len()
        )
        .unwrap();
        expected.insert(id, maps);
    }
    x.push_str("</superblock>");
    let image = ours(&x, 16384);
    assert_compatible(&image, "many-devices");
    assert_mappings(&image, &expected);
    // thin_restore wants an empty device as a start and an end tag.
    let for_them = x.replace("snap_time=\"3\"/>", "snap_time=\"3\"></device>");
    let canonical = thin_dump(&thin_restore(&for_them, 16384));
    assert_round_trip(&canonical, 16384, "many-devices-canonical");
}

/// A thin_dump-style document: two devices of `per_dev` mappings, the first `shared` of them
/// one `<def>` both reference, the rest each device's own; runs of 1-8 blocks, every run its
/// own element (the data blocks jump between runs).
fn two_device_xml(per_dev: u64, shared: u64) -> String {
    let mut rng = Rng::new(7);
    let mut next_data = 0;
    let mut lines = |x: &mut String, from: u64, to: u64| {
        let mut o = from;
        while o < to {
            let len = (1 + rng.below(8)).min(to - o);
            mapping_line(x, o, next_data, len, rng.below(6) as u32);
            next_data += len + 1 + rng.below(3);
            o += len;
        }
    };
    let mut x = String::from("<def name=\"s\">\n");
    lines(&mut x, 0, shared);
    x.push_str("</def>\n");
    for dev in 0..2 {
        writeln!(
            x,
            "<device dev_id=\"{dev}\" mapped_blocks=\"{per_dev}\" transaction=\"{dev}\" creation_time=\"{dev}\" snap_time=\"5\">\n<ref name=\"s\"/>"
        )
        .unwrap();
        lines(&mut x, shared, per_dev);
        x.push_str("</device>\n");
    }
    format!(
        "<superblock uuid=\"\" time=\"6\" transaction=\"9\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{}\">\n{x}</superblock>",
        next_data + 10
    )
}

#[test]
fn one_million_mappings_with_full_leaves() {
    // 1,000,000 mappings in the leaves: 2 x 100,000 of the devices' own and 800,000 shared.
    let xml = two_device_xml(900_000, 800_000);
    let meta = 32_768;
    let reference = thin_restore(&xml, meta);
    let canonical = thin_dump(&reference);
    let image = assert_round_trip(&canonical, meta, "one-million");
    let (ours_used, theirs_used) = (used_blocks(&image), used_blocks(&reference));
    eprintln!("metadata blocks used: ours {ours_used}, thin_restore {theirs_used}");
    assert!(
        ours_used <= theirs_used,
        "ours {ours_used} blocks, thin_restore {theirs_used}"
    );
    // Full leaves: within 1% of the fewest leaves that can hold the mappings.
    let leaves_min = 1_000_000u64.div_ceil(252);
    assert!(
        ours_used < leaves_min + leaves_min / 100 + 200,
        "{ours_used}"
    );
}

#[test]
fn tree_shapes_at_node_boundaries() {
    // One device per size, built with the engine's builder directly: full leaves, the last
    // one balanced, internal levels likewise (252 * 252 = 63,504 entries fill two levels).
    let sizes = [
        0u64, 1, 83, 84, 85, 251, 252, 253, 300, 336, 503, 504, 505, 21_168, 21_169, 63_503,
        63_504, 63_505, 63_589, 63_700, 200_000,
    ];
    let total: u64 = sizes.iter().sum();
    let mut p = mem_pool(8192, total + 10);
    let mut buf = Box::new([0u8; BLOCK_SIZE]);
    let mut data = 0;
    for (id, &n) in sizes.iter().enumerate() {
        let mut b = TreeBuilder::new(MAPPING_BOTTOM_TREE);
        let tx = p.tx();
        for v in 0..n {
            b.push(
                tx,
                &mut buf,
                v * 3,
                &pack_block_time(data + v, 1).to_le_bytes(),
            )
            .unwrap();
        }
        if n > 0 {
            tx.data_inc_range(data, n).unwrap();
        }
        let root = b.finish(tx, &mut buf).unwrap();
        let d = DeviceDetails {
            mapped_blocks: n,
            transaction_id: 0,
            creation_time: 0,
            snapshotted_time: 0,
        };
        p.create_thin_with_tree(id as u64, root, d).unwrap();
        data += n;
    }
    p.commit().unwrap();
    let image = image_of(&p);
    assert_compatible(&image, "shapes");
    let p = Pool::open(CachedBm::new(MemDisk::from_image(&image)), None, false).unwrap();
    let mut data = 0;
    for (id, &n) in sizes.iter().enumerate() {
        let mut v = 0;
        p.for_each_mapping(id as u64, &mut |k, b, _| {
            assert_eq!((k, b), (v * 3, data + v));
            v += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(v, n);
        data += n;
    }
    // Leaves, internal nodes: nothing beyond the fewest possible, plus the space maps.
    let nodes: u64 = sizes
        .iter()
        .map(|&n| {
            let leaves = n.div_ceil(252).max(1);
            let l1 = if leaves > 1 { leaves.div_ceil(252) } else { 0 };
            let l2 = if l1 > 1 { l1.div_ceil(252) } else { 0 };
            leaves + l1 + l2
        })
        .sum();
    // Space maps: a bitmap per 16,320 data blocks; superblock, index and tree roots besides.
    let used = used_blocks(&image);
    let overhead = (total + 10).div_ceil(16_320) + 12;
    assert!(used <= nodes + overhead, "used {used}, nodes {nodes}");
}

#[test]
fn entities_are_unescaped_and_bad_input_is_refused() {
    // A def name with entities, numbers written as character references, a comment.
    let xml = "<?xml version=\"1.0\"?>\n<!-- from a test -->\n<superblock uuid=\"\" time=\"1\" transaction=\"&#50;\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100\">\n<def name=\"a&amp;b &lt;c&gt;\">\n<single_mapping origin_block=\"&#55;\" data_block=\"3\" time=\"1\"/>\n</def>\n<device dev_id=\"1\" mapped_blocks=\"2\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">\n<single_mapping origin_block=\"2\" data_block=\"9\" time=\"0\"/>\n<ref name=\"a&amp;b &#60;c&gt;\"/>\n</device>\n</superblock>";
    let p = rthinctl::restore::restore(xml, mem_bm(256)).unwrap();
    assert_eq!(p.transaction_id(), 2);
    let mut got = Vec::new();
    p.for_each_mapping(1, &mut |k, b, t| {
        got.push((k, b, t));
        Ok(true)
    })
    .unwrap();
    assert_eq!(got, vec![(2, 9, 0), (7, 3, 1)]);
    assert_compatible(&image_of(&p), "entities");

    let head = "<superblock uuid=\"\" time=\"1\" transaction=\"1\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100\">";
    let dev = "<device dev_id=\"1\" mapped_blocks=\"2\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">";
    let bad = [
        (
            format!("{head}{dev}<single_mapping origin_block=\"5\" data_block=\"1\" time=\"0\"/><single_mapping origin_block=\"4\" data_block=\"2\" time=\"0\"/></device></superblock>"),
            "increasing order",
        ),
        (
            format!("{head}{dev}<single_mapping origin_block=\"5\" data_block=\"100\" time=\"0\"/></device></superblock>"),
            "beyond the end of the data device",
        ),
        (format!("{head}{dev}<ref name=\"nope\"/></device></superblock>"), "unknown <def>"),
        (format!("{head}{dev}</def></superblock>"), "def"),
        (format!("{head}{dev}"), "ends before"),
        (
            format!("{head}{dev}<single_mapping origin_block=\"x\" data_block=\"1\" time=\"0\"/></device></superblock>"),
            "origin_block",
        ),
    ];
    for (xml, want) in bad {
        let e = match rthinctl::restore::restore(&xml, mem_bm(256)) {
            Ok(_) => panic!("accepted: {xml}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(want), "{xml}: {e}");
    }
}

#[test]
fn run_increments_leave_the_counts_single_increments_leave() {
    // Runs within and across bitmaps (16,320 blocks each), overlapping and repeated (counts up
    // to 5: the ref-count tree), in any order: the batched path must end where one increment
    // per block ends.
    let mut rng = Rng::new(seed(2024));
    let nr = 3 * 16_320 + 100;
    for round in 0..4 {
        let mut batched = mem_pool(2048, nr);
        let mut single = mem_pool(2048, nr);
        let mut ranges = Vec::new();
        for _ in 0..300 {
            let first = match rng.below(4) {
                0 => 16_320 - rng.below(20),
                1 => rng.below(50),
                _ => rng.below(nr - 40),
            };
            let n = rng.below(40).min(nr - first);
            ranges.push((first, n));
            if rng.chance(20) {
                ranges.push((first, n));
            }
        }
        if round % 2 == 1 {
            ranges.sort_unstable();
        }
        batched.tx().data_inc_ranges(&ranges).unwrap();
        for &(first, n) in &ranges {
            for b in first..first + n {
                single.tx().data_inc(b).unwrap();
            }
        }
        for b in 0..nr {
            assert_eq!(
                batched.data_block_count(b).unwrap(),
                single.data_block_count(b).unwrap(),
                "block {b}, round {round}"
            );
        }
        assert_eq!(batched.data_free_blocks(), single.data_free_blocks());
        batched.commit().unwrap();
        single.commit().unwrap();
        assert_eq!(
            batched.superblock().data_sm.nr_allocated,
            single.superblock().data_sm.nr_allocated
        );
        // Allocation after the batch finds only free blocks (the index hints stay valid).
        for _ in 0..200 {
            let b = batched.alloc_data_block().unwrap();
            assert_eq!(
                single.data_block_count(b).unwrap(),
                0,
                "block {b} was in use"
            );
        }
    }
}

#[test]
fn restore_through_a_small_cache_writes_back_and_reads_again() {
    // 1.1M mappings in the XML: one write-back in the middle; a 64-block cache drops clean
    // blocks all the time, so built nodes and bitmaps are read back from the disk.
    let xml = two_device_xml(700_000, 300_000);
    let bm = CachedBm::with_limit(MemDisk::new(16_384), 64);
    let p = rthinctl::restore::restore(&xml, bm).unwrap();
    // Built blocks were dropped from the cache and read back.
    let reads = p.block_manager().stats().disk_reads;
    eprintln!("blocks read back: {reads}");
    assert!(reads > 0);
    let image = image_of(&p);
    let reference = ours(&xml, 16_384);
    assert_eq!(used_blocks(&image), used_blocks(&reference));
    assert_round_trip(&thin_dump(&image), 16_384, "small-cache");
    assert_eq!(canon(&thin_dump(&image)), canon(&thin_dump(&reference)));
}
