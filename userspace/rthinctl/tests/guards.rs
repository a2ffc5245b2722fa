//! The most block guards the engine holds at once, measured on its heaviest paths: deep btree
//! inserts with splits, removals with merges, snapshots, deletes of shared trees, discards of
//! ranges, metadata snapshots, growth of both space maps and commits. The kernel's block
//! manager reserves that many dm-bufio buffers (`rthin_metadata::MAX_HELD_GUARDS`), so the
//! engine can always make progress under memory pressure; this test is where the number comes
//! from, and it fails if a change makes the engine hold more.

mod common;
use common::*;

use rthin_metadata::{Block, BlockKind, BlockManager, Pool, Result, MAX_HELD_GUARDS};
use rthin_metadata_file::MemBm;
use std::{
    cell::Cell,
    ops::{Deref, DerefMut},
    rc::Rc,
};

#[derive(Default)]
struct Held {
    now: Cell<u32>,
    peak: Cell<u32>,
}

/// A guard of the wrapped block manager, counted while it lives.
struct Counted<G> {
    guard: G,
    held: Rc<Held>,
}

impl<G> Counted<G> {
    fn new(guard: G, held: &Rc<Held>) -> Self {
        held.now.set(held.now.get() + 1);
        held.peak.set(held.peak.get().max(held.now.get()));
        Counted {
            guard,
            held: held.clone(),
        }
    }
}

impl<G> Drop for Counted<G> {
    fn drop(&mut self) {
        self.held.now.set(self.held.now.get() - 1);
    }
}

impl<G: Deref<Target = Block>> Deref for Counted<G> {
    type Target = Block;
    fn deref(&self) -> &Block {
        &self.guard
    }
}

impl<G: DerefMut<Target = Block>> DerefMut for Counted<G> {
    fn deref_mut(&mut self) -> &mut Block {
        &mut self.guard
    }
}

struct CountingBm {
    inner: MemBm,
    held: Rc<Held>,
    /// The size the device shows (it grows when the test says so).
    shown_blocks: Rc<Cell<u64>>,
}

impl BlockManager for CountingBm {
    type Read = Counted<<MemBm as BlockManager>::Read>;
    type Write = Counted<<MemBm as BlockManager>::Write>;
    fn nr_blocks(&self) -> u64 {
        self.shown_blocks.get().min(self.inner.nr_blocks())
    }
    fn read(&self, loc: u64, kind: BlockKind) -> Result<Self::Read> {
        Ok(Counted::new(self.inner.read(loc, kind)?, &self.held))
    }
    fn read_cached(&self, loc: u64, kind: BlockKind) -> Result<Self::Read> {
        Ok(Counted::new(self.inner.read_cached(loc, kind)?, &self.held))
    }
    fn write(&self, loc: u64, kind: BlockKind) -> Result<Self::Write> {
        Ok(Counted::new(self.inner.write(loc, kind)?, &self.held))
    }
    fn new_block(&self, loc: u64, kind: BlockKind) -> Result<Self::Write> {
        Ok(Counted::new(self.inner.new_block(loc, kind)?, &self.held))
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn flush_data(&self) -> Result<()> {
        self.inner.flush_data()
    }
    fn shadow_buckets(&mut self) -> &mut [rthin_metadata::block::ShadowBucket] {
        self.inner.shadow_buckets()
    }
}

#[test]
fn engine_holds_at_most_max_held_guards() {
    let held = Rc::new(Held::default());
    let shown_blocks = Rc::new(Cell::new(4096));
    let bm = CountingBm {
        inner: mem_bm(40_000),
        held: held.clone(),
        shown_blocks: shown_blocks.clone(),
    };
    let mut p = Pool::format(bm, 128).unwrap();
    p.resize_data(20_000).unwrap();
    p.commit().unwrap();
    let mut rng = Rng::new(seed(17));

    // Deep trees: scattered inserts split leaves and internal nodes on every level.
    p.create_thin(1).unwrap();
    for _ in 0..12_000 {
        let v = rng.below(1 << 40);
        let b = p.alloc_data_block().unwrap();
        p.insert(1, v, b).unwrap();
    }
    p.commit().unwrap();
    // Snapshots share the trees; writes to both sides shadow shared nodes (reference counts
    // of whole subtrees change), deletes walk and free shared trees.
    for snap in 2..6 {
        p.create_snap(snap, 1).unwrap();
        for _ in 0..500 {
            let v = rng.below(1 << 40);
            let b = p.alloc_data_block().unwrap();
            p.insert(if rng.chance(50) { 1 } else { snap }, v, b)
                .unwrap();
        }
        p.commit().unwrap();
    }
    let held_root = p.reserve_metadata_snap().unwrap();
    assert!(held_root > 0);
    p.delete_thin(3).unwrap();
    // Removals merge and rebalance nodes; ranges unmap many blocks in one call.
    for _ in 0..3000 {
        let v = rng.below(1 << 40);
        p.remove(1, v).unwrap();
    }
    p.remove_range(2, 0, 1 << 39).unwrap();
    p.commit().unwrap();
    p.release_metadata_snap().unwrap();
    // Growth of both space maps (new bitmaps and index entries, the metadata ones placed in
    // the new area), then a commit.
    p.resize_data(200_000).unwrap();
    shown_blocks.set(40_000);
    p.resize_metadata(40_000).unwrap();
    p.commit().unwrap();
    assert_eq!(p.metadata_nr_blocks(), 40_000);
    p.delete_thin(1).unwrap();
    p.delete_thin(2).unwrap();
    p.commit().unwrap();
    // Lookups hold guards too.
    for _ in 0..1000 {
        let _ = p.lookup(4, rng.below(1 << 40)).unwrap();
    }

    let peak = held.peak.get();
    eprintln!("most guards held at once: {peak} (MAX_HELD_GUARDS = {MAX_HELD_GUARDS})");
    assert_eq!(held.now.get(), 0, "guards still held after the workload");
    assert!(peak >= 3, "the counting wrapper saw no nesting: {peak}");
    assert!(
        peak <= MAX_HELD_GUARDS,
        "the engine held {peak} guards at once; MAX_HELD_GUARDS is {MAX_HELD_GUARDS}"
    );
}
