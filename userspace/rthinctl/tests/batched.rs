//! The engine's batched paths (everything `Pool::set_simple_paths(true)` turns off: the set of
//! blocks shadowed in this transaction, device roots kept per transaction, per-bitmap count
//! changes for copied leaves and deletes, leaf-at-a-time range removal) against its simple
//! per-entry paths: the same random operations on two pools in lockstep, one of them with
//! `set_simple_paths(true)`, must leave the same mappings, details and free counts, both
//! images clean for our checker (which recounts every reference) and, sampled, for thin_check
//! with thin_dump equal to our dump.
//!
//! Without range removals both pools keep the same btree shapes, so every data block's
//! reference count must be exactly the same.  A leaf-at-a-time range removal leaves other
//! node boundaries than key-by-key removal (several keys per descent, whole leaves dropped
//! without rebalancing), and a data block's count is the number of leaves that map it, so
//! after one the two pools' counts may legitimately differ: those runs compare which blocks
//! are in use, and rely on the checker for the counts.  The pools span several space-map
//! bitmaps on both sides (more than 16,320 blocks each).

mod common;
use common::*;

use rthin_metadata::{Error, Pool, Space};
use rthin_metadata_file::MemBm;

/// Device id, mapped blocks and mappings `(virtual block, data block, time)`.
type DeviceState = (u64, u64, Vec<(u64, u64, u32)>);
/// Every data block's count, the free data blocks, and every device.
type PoolState = (Vec<u32>, u64, Vec<DeviceState>);

const META_BLOCKS: u64 = 20_000;
const DATA_BLOCKS: u64 = 40_000;

struct Pair {
    fast: Pool<MemBm>,
    simple: Pool<MemBm>,
}

impl Pair {
    fn new() -> Pair {
        let fast = mem_pool(META_BLOCKS, DATA_BLOCKS);
        let mut simple = mem_pool(META_BLOCKS, DATA_BLOCKS);
        simple.set_simple_paths(true);
        Pair { fast, simple }
    }

    /// Run `f` on both pools; both must give the same answer.
    fn both<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Pool<MemBm>) -> T,
    ) -> T {
        let a = f(&mut self.fast);
        let b = f(&mut self.simple);
        assert_eq!(a, b, "{what}: batched and simple paths differ");
        a
    }

    fn reopen(self) -> Pair {
        let fast = reopen(self.fast);
        let mut simple = reopen(self.simple);
        simple.set_simple_paths(true);
        Pair { fast, simple }
    }

    /// Everything the two pools must agree on; every count exactly if `exact`, else which
    /// blocks are in use.
    fn compare(&mut self, what: &str, exact: bool) {
        fn state(p: &mut Pool<MemBm>) -> PoolState {
            let counts = (0..DATA_BLOCKS)
                .map(|b| p.data_block_count(b).unwrap())
                .collect();
            let mut devs = Vec::new();
            p.for_each_device(&mut |id, d| {
                devs.push((id, d.mapped_blocks));
                Ok(true)
            })
            .unwrap();
            let mut out = Vec::new();
            for (id, mapped) in devs {
                let mut maps = Vec::new();
                p.for_each_mapping(id, &mut |k, b, t| {
                    maps.push((k, b, t));
                    Ok(true)
                })
                .unwrap();
                assert_eq!(maps.len() as u64, mapped, "mapped_blocks of device {id}");
                out.push((id, mapped, maps));
            }
            (counts, p.data_free_blocks(), out)
        }
        let mut a = state(&mut self.fast);
        let mut b = state(&mut self.simple);
        if !exact {
            for c in a.0.iter_mut().chain(b.0.iter_mut()) {
                *c = u32::from(*c > 0);
            }
        }
        if a.0 != b.0 {
            let first = (0..a.0.len()).find(|&i| a.0[i] != b.0[i]).unwrap();
            panic!(
                "{what}: data block {first} has count {} batched, {} simple",
                a.0[first], b.0[first]
            );
        }
        assert_eq!(a.1, b.1, "{what}: data free blocks");
        assert!(a.2 == b.2, "{what}: devices or mappings differ");
    }

    fn check(&mut self, what: &str, exact: bool, thin_tools: bool) {
        self.compare(what, exact);
        if thin_tools {
            let fi = image_of(&self.fast);
            let si = image_of(&self.simple);
            assert_compatible(&fi, &format!("{what}-batched"));
            assert_compatible(&si, &format!("{what}-simple"));
        } else {
            assert_our_check_clean(self.fast.block_manager());
            assert_our_check_clean(self.simple.block_manager());
        }
    }
}

/// `ranges`: include range removals (then counts are compared as in use or not).
fn run(seed: u64, ops: usize, ranges: bool) {
    let mut rng = Rng::new(seed);
    let mut pair = Pair::new();
    // A big first thin: allocations then spread over several data bitmaps, and copying its
    // shared leaves, removing ranges of it and deleting it cross bitmap boundaries.
    pair.both("create", |p| p.create_thin(0)).unwrap();
    let prefill = 20_000 + rng.below(4_000);
    for v in 0..prefill {
        pair.both("prefill", |p| {
            let b = p.alloc_data_block().unwrap();
            p.insert(0, v, b).unwrap();
            b
        });
    }
    pair.both("commit", |p| p.commit()).unwrap();
    let mut commits = 0;
    for step in 0..ops {
        let mut ids = Vec::new();
        pair.fast
            .for_each_device(&mut |id, _| {
                ids.push(id);
                Ok(true)
            })
            .unwrap();
        let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
        let span = prefill + 2_000;
        match rng.below(100) {
            0..=3 => {
                let id = rng.below(10);
                let _ = pair.both("create_thin", |p| p.create_thin(id));
            }
            4..=8 if !ids.is_empty() => {
                let (id, origin) = (rng.below(10), pick(&mut rng));
                let _ = pair.both("create_snap", |p| p.create_snap(id, origin));
            }
            9 if !ids.is_empty() => {
                let id = pick(&mut rng);
                pair.both("delete_thin", |p| p.delete_thin(id)).unwrap();
            }
            10..=64 if !ids.is_empty() => {
                // Overwrites (breaking sharing after a snapshot) and new mappings, in runs;
                // now and then a long one, which fills whole leaves.
                let id = pick(&mut rng);
                let v0 = rng.below(span);
                let n = if rng.chance(10) {
                    200 + rng.below(1000)
                } else {
                    1 + rng.below(40)
                };
                for v in v0..v0 + n {
                    let r = pair.both("insert", |p| match p.alloc_data_block() {
                        Ok(b) => p.insert(id, v, b).map(|()| b),
                        Err(e) => Err(e),
                    });
                    match r {
                        Ok(_) => {}
                        Err(Error::NoSpace(Space::Data)) => break,
                        Err(e) => panic!("insert: {e}"),
                    }
                }
            }
            65..=71 if !ids.is_empty() => {
                let id = pick(&mut rng);
                let v = rng.below(span);
                pair.both("remove", |p| p.remove(id, v)).unwrap();
            }
            72..=79 if ranges && !ids.is_empty() => {
                // Short ranges, and long ones that cover whole leaves.
                let id = pick(&mut rng);
                let a = rng.below(span);
                let len = if rng.chance(30) {
                    span / 8 + rng.below(span)
                } else {
                    rng.below(600)
                };
                pair.both("remove_range", |p| p.remove_range(id, a, a + len))
                    .unwrap();
            }
            80..=81 => {
                if pair.fast.held_root().is_some() {
                    pair.both("release_metadata_snap", |p| p.release_metadata_snap())
                        .unwrap();
                } else {
                    pair.both("reserve_metadata_snap", |p| {
                        p.reserve_metadata_snap().map(|_| ())
                    })
                    .unwrap();
                }
            }
            82..=91 => {
                pair.both("commit", |p| p.commit()).unwrap();
                commits += 1;
                pair.check(
                    &format!("batched-{seed}-{step}"),
                    !ranges,
                    commits % 12 == 0,
                );
            }
            92..=94 => {
                pair.both("commit", |p| p.commit()).unwrap();
                pair = pair.reopen();
                pair.compare(&format!("reopened-{seed}-{step}"), !ranges);
            }
            _ => {
                // Abort: both go back to the last commit.
                pair = pair.reopen();
            }
        }
    }
    pair.both("commit", |p| p.commit()).unwrap();
    pair.check(&format!("batched-{seed}-final"), !ranges, true);
}

#[test]
fn batched_paths_leave_the_same_counts_as_simple_ones() {
    let base = seed(20_261_202);
    for i in 0..3 {
        run(base + i, 600, false);
    }
}

#[test]
fn batched_range_removal_leaves_the_same_mappings_as_key_by_key() {
    let base = seed(20_261_212);
    for i in 0..3 {
        run(base + i, 600, true);
    }
}
