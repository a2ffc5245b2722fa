//! Metadata engine benchmark: inserts/s, lookups/s, commits/s and metadata blocks per mapped
//! block at several pool sizes, with and without snapshots.  In-memory block device, so the
//! numbers measure the engine (btree, space maps, copy-on-write, checksums), not a disk.
//!
//! `cargo run --release -p rthin-metadata-bench [-- sizes...]`, e.g. `-- 1000 100000`.
//! Then, unless `--no-offline` is given, the offline tools side by side with
//! thin-provisioning-tools (`offline.rs`; needs `rthinctl` built in the same profile).

use std::time::Instant;

mod offline;

use rthin_metadata::Pool;
use rthin_metadata_file::{CachedBm, MemBm, MemDisk};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Row {
    label: String,
    mappings: u64,
    inserts: f64,
    lookups: f64,
    commits: f64,
    meta_per_map: f64,
}

fn pool(mappings: u64, snapshots: u64) -> Pool<MemBm> {
    // Each snapshot generation below copies up to one leaf per overwrite.
    let meta = (4096 + mappings / 50 + snapshots * (mappings / 80)).min(4_000_000);
    let mut p = Pool::format(CachedBm::new(MemDisk::new(meta)), 128).expect("format");
    p.resize_data(mappings * 2 + 100_000).expect("resize");
    p.commit().expect("commit");
    p
}

fn rate(n: u64, t: Instant) -> f64 {
    n as f64 / t.elapsed().as_secs_f64().max(1e-9)
}

fn measure(label: &str, mappings: u64, snapshots: u64) -> Row {
    let mut p = pool(mappings, snapshots);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    p.create_thin(0).unwrap();
    let t = Instant::now();
    for v in 0..mappings {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
        if v % 100_000 == 99_999 {
            p.commit().unwrap();
        }
    }
    p.commit().unwrap();
    let mut inserts = rate(mappings, t);
    // Snapshot generations: snapshot the newest device, then overwrite 1% of it (breaking
    // sharing), as a copy-on-write workload would.
    let mut dev = 0;
    if snapshots > 0 {
        let writes = (mappings / 100).max(10);
        let t = Instant::now();
        for s in 1..=snapshots {
            p.create_snap(s, dev).unwrap();
            dev = s;
            for _ in 0..writes {
                let v = rng.next() % mappings;
                let b = p.alloc_data_block().unwrap();
                p.insert(dev, v, b).unwrap();
            }
            p.commit().unwrap();
        }
        inserts = rate(snapshots * writes, t);
    }
    let n = mappings.min(200_000);
    let t = Instant::now();
    for _ in 0..n {
        let v = rng.next() % mappings;
        assert!(p.lookup(dev, v).unwrap().is_some());
    }
    let lookups = rate(n, t);
    let commits_n = 200;
    let t = Instant::now();
    for _ in 0..commits_n {
        for _ in 0..10 {
            let v = rng.next() % mappings;
            let b = p.alloc_data_block().unwrap();
            p.insert(dev, v, b).unwrap();
        }
        p.commit().unwrap();
    }
    let commits = rate(commits_n, t);
    let used = p.metadata_nr_blocks() - p.metadata_free_blocks_raw();
    let mapped: u64 = {
        let mut total = 0;
        p.for_each_device(&mut |_, d| {
            total += d.mapped_blocks;
            Ok(true)
        })
        .unwrap();
        total
    };
    Row {
        label: label.to_string(),
        mappings,
        inserts,
        lookups,
        commits,
        meta_per_map: used as f64 / mapped.max(1) as f64,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![1_000, 100_000, 1_000_000]
    } else {
        args
    };
    let mut rows = Vec::new();
    for &n in &sizes {
        rows.push(measure("no snapshots", n, 0));
        rows.push(measure("10 snapshot gens", n, 10));
    }
    println!(
        "{:>10} {:<18} {:>12} {:>12} {:>10} {:>16}",
        "mappings", "workload", "inserts/s", "lookups/s", "commits/s", "meta blk/mapping"
    );
    for r in rows {
        println!(
            "{:>10} {:<18} {:>12.0} {:>12.0} {:>10.1} {:>16.5}",
            r.mappings, r.label, r.inserts, r.lookups, r.commits, r.meta_per_map
        );
    }
    println!("(inserts/s of snapshot rows: copy-on-write overwrites after each snapshot; commits/s: 10 inserts per commit)");
    if !std::env::args().any(|a| a == "--no-offline") {
        offline::side_by_side(1_000_000, 950_000, false);
        offline::side_by_side(1_000_000, 950_000, true);
        offline::side_by_side(5_000_000, 4_750_000, false);
    }
}
