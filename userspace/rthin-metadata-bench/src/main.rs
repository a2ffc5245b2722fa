//! Metadata engine benchmark: what the kernel's data path pays under the pool lock, at real sizes.
//!
//! For each pool size (mappings of one fully provisioned thin) and snapshot depth (a chain of
//! snapshots, each of the one before), one child process measures, on an in-memory metadata
//! device (so the numbers are the engine's: btrees, space maps, copy-on-write, checksums):
//!
//! * `provision/s`: inserts of newly allocated blocks into an empty thin;
//! * `snap µs`: one `create_snap` (the chain is built after provisioning);
//! * `overwrite/s`: writes to random blocks of the newest snapshot, each breaking sharing;
//! * `rewrite/s`: the same random writes to a fully mapped thin that shares nothing (a pool of
//!   its own): plain inserts at the positions the overwrites use, the baseline that isolates
//!   what breaking sharing costs from what random positions cost (provisioning is sequential);
//! * `lookup/s`: random lookups in the newest snapshot;
//! * `commit µs` with 1, 10 and 1000 changes (overwrites) in the transaction;
//! * `remove_range s`: unmapping the whole newest snapshot (what a full discard does);
//! * `delete s`: deleting the fully mapped origin after its snapshots (a full walk);
//! * `peak MiB`: the child's peak resident memory (the in-memory device included).
//!
//! `cargo run --release -p rthin-metadata-bench [-- SIZE... [--depths D,D,...] [--no-offline]]`,
//! by default sizes 1000 100000 1000000 and depths 1,10,100. The goals (issue 10) are printed
//! with the measured ratios; they are targets, not assertions. Then, unless `--no-offline` is
//! given, the offline tools side by side with thin-provisioning-tools (`offline.rs`; needs
//! `rthinctl` built in the same profile).

use std::{
    process::Command,
    time::{Duration, Instant},
};

mod offline;

use rthin_metadata::Pool;
use rthin_metadata_file::{CachedBm, MemBm, MemDisk};

/// xorshift64: reproducible random block numbers.
#[derive(Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Overwrites measured per row (bounded so that 1M-mapping rows stay quick).
const MAX_OVERWRITES: u64 = 100_000;
/// Lookups measured per row.
const MAX_LOOKUPS: u64 = 200_000;
/// Changes per transaction of the commit-latency columns, and commits measured for each.
const COMMIT_CHANGES: [u64; 3] = [1, 10, 1000];
const COMMITS_EACH: u64 = 20;

/// One row, as the child prints it (`key=value` words) and the parent reads it.
#[derive(Default)]
struct Row {
    mappings: u64,
    depth: u64,
    provision: f64,
    snap_us: f64,
    overwrite: f64,
    rewrite: f64,
    lookup: f64,
    commit_us: [f64; 3],
    remove_range_s: f64,
    delete_s: f64,
    meta_per_mapping: f64,
    peak_mib: f64,
}

const FIELDS: [&str; 14] = [
    "mappings",
    "depth",
    "provision",
    "snap_us",
    "overwrite",
    "rewrite",
    "lookup",
    "commit1_us",
    "commit10_us",
    "commit1000_us",
    "remove_range_s",
    "delete_s",
    "meta_per_mapping",
    "peak_mib",
];

impl Row {
    fn values(&self) -> [f64; 14] {
        [
            self.mappings as f64,
            self.depth as f64,
            self.provision,
            self.snap_us,
            self.overwrite,
            self.rewrite,
            self.lookup,
            self.commit_us[0],
            self.commit_us[1],
            self.commit_us[2],
            self.remove_range_s,
            self.delete_s,
            self.meta_per_mapping,
            self.peak_mib,
        ]
    }

    fn to_words(&self) -> String {
        let v = self.values();
        FIELDS
            .iter()
            .zip(v)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn from_words(line: &str) -> Option<Row> {
        let mut v = [0f64; 14];
        for word in line.split_whitespace() {
            let (k, val) = word.split_once('=')?;
            let i = FIELDS.iter().position(|f| *f == k)?;
            v[i] = val.parse().ok()?;
        }
        Some(Row {
            mappings: v[0] as u64,
            depth: v[1] as u64,
            provision: v[2],
            snap_us: v[3],
            overwrite: v[4],
            rewrite: v[5],
            lookup: v[6],
            commit_us: [v[7], v[8], v[9]],
            remove_range_s: v[10],
            delete_s: v[11],
            meta_per_mapping: v[12],
            peak_mib: v[13],
        })
    }
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// A pool sized for `mappings` plus what the row's overwrites and commits copy.
fn pool(mappings: u64) -> Pool<MemBm> {
    let copies = MAX_OVERWRITES.min(mappings) + COMMIT_CHANGES.iter().sum::<u64>() * COMMITS_EACH;
    let meta = (8192 + mappings / 20 + copies * 4).min(16_000_000);
    let mut p = Pool::format(CachedBm::new(MemDisk::new(meta)), 128).expect("format");
    p.resize_data(mappings + copies + 100_000).expect("resize");
    p.commit().expect("commit");
    p
}

/// Peak resident memory of this process in MiB (`VmHWM`), 0 if unknown.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Creates thin 0 and maps its blocks `0..mappings` to newly allocated data blocks, in order.
fn provision(p: &mut Pool<MemBm>, mappings: u64) {
    p.create_thin(0).unwrap();
    for v in 0..mappings {
        let b = p.alloc_data_block().unwrap();
        p.insert(0, v, b).unwrap();
        if v % 100_000 == 99_999 {
            p.commit().unwrap();
        }
    }
    p.commit().unwrap();
}

/// Overwrites `n` random blocks of `dev` with newly allocated ones.
fn overwrite(p: &mut Pool<MemBm>, rng: &mut Rng, dev: u64, mappings: u64, n: u64) {
    for _ in 0..n {
        let v = rng.next() % mappings;
        let b = p.alloc_data_block().unwrap();
        p.insert(dev, v, b).unwrap();
    }
}

/// The child's work: one row.
fn measure(mappings: u64, depth: u64) -> Row {
    let mut p = pool(mappings);
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut row = Row {
        mappings,
        depth,
        ..Row::default()
    };

    row.rewrite = {
        // A pool of its own, dropped before the main one is built.
        let mut q = pool(mappings);
        provision(&mut q, mappings);
        let n = MAX_OVERWRITES.min(mappings);
        let t = Instant::now();
        overwrite(&mut q, &mut rng.clone(), 0, mappings, n);
        q.commit().unwrap();
        rate(n, t.elapsed())
    };
    let t = Instant::now();
    provision(&mut p, mappings);
    row.provision = rate(mappings, t.elapsed());
    let used = p.metadata_nr_blocks() - p.metadata_free_blocks_raw();
    row.meta_per_mapping = used as f64 / mappings.max(1) as f64;

    let mut snaps = Duration::ZERO;
    for s in 1..=depth {
        let t = Instant::now();
        p.create_snap(s, s - 1).unwrap();
        snaps += t.elapsed();
        p.commit().unwrap();
    }
    row.snap_us = snaps.as_secs_f64() * 1e6 / depth.max(1) as f64;
    let newest = depth;

    let n = MAX_OVERWRITES.min(mappings);
    let t = Instant::now();
    overwrite(&mut p, &mut rng, newest, mappings, n);
    p.commit().unwrap();
    row.overwrite = rate(n, t.elapsed());

    let n = MAX_LOOKUPS.min(mappings);
    let t = Instant::now();
    for _ in 0..n {
        let v = rng.next() % mappings;
        assert!(p.lookup(newest, v).unwrap().is_some());
    }
    row.lookup = rate(n, t.elapsed());

    for (i, changes) in COMMIT_CHANGES.into_iter().enumerate() {
        let mut spent = Duration::ZERO;
        for _ in 0..COMMITS_EACH {
            overwrite(&mut p, &mut rng, newest, mappings, changes);
            let t = Instant::now();
            p.commit().unwrap();
            spent += t.elapsed();
        }
        row.commit_us[i] = spent.as_secs_f64() * 1e6 / COMMITS_EACH as f64;
    }

    let t = Instant::now();
    let removed = p.remove_range(newest, 0, mappings).unwrap();
    p.commit().unwrap();
    row.remove_range_s = t.elapsed().as_secs_f64();
    assert_eq!(removed, mappings, "the newest snapshot was fully mapped");

    // Delete the origin once nothing shares its tree any more (the snapshots go first, each
    // only dropping a reference to a shared root), so that the delete walks every leaf and
    // frees every data block, as deleting a lone fully mapped thin does.
    for s in 1..=depth {
        p.delete_thin(s).unwrap();
    }
    p.commit().unwrap();
    let t = Instant::now();
    p.delete_thin(0).unwrap();
    p.commit().unwrap();
    row.delete_s = t.elapsed().as_secs_f64();
    row.peak_mib = peak_mib();
    row
}

/// Runs one row in a child process (so that its peak memory is its own).
fn run_child(mappings: u64, depth: u64) -> Row {
    let exe = std::env::current_exe().expect("own executable");
    let out = Command::new(exe)
        .args(["--child", &mappings.to_string(), &depth.to_string()])
        .output()
        .expect("running a bench child");
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("bench child {mappings} {depth} failed: {}", out.status);
    }
    Row::from_words(text.trim()).expect("a row from the bench child")
}

fn print_table(rows: &[Row]) {
    println!(
        "| mappings | depth | provision/s | snap µs | overwrite/s | rewrite/s | lookup/s | commit µs (1/10/1000 changes) | remove_range s | delete s | meta blk/mapping | peak MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {:.3} | {:.3} | {:.4} | {:.0} |",
            r.mappings,
            r.depth,
            r.provision,
            r.snap_us,
            r.overwrite,
            r.rewrite,
            r.lookup,
            r.commit_us[0],
            r.commit_us[1],
            r.commit_us[2],
            r.remove_range_s,
            r.delete_s,
            r.meta_per_mapping,
            r.peak_mib
        );
    }
}

/// The goals of issue 10, with the measured ratios (the largest size's rows).
fn print_goals(rows: &[Row]) {
    let Some(largest) = rows.iter().map(|r| r.mappings).max() else {
        return;
    };
    let big: Vec<&Row> = rows.iter().filter(|r| r.mappings == largest).collect();
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    println!();
    println!("Goals at {largest} mappings (targets, not test assertions):");
    for r in &big {
        let ratio = r.overwrite / r.provision.max(1e-9);
        println!(
            "- overwrite after a snapshot ≥ 1/4 of provisioning speed, depth {}: {:.2}x ({}); \
             of random writes to an unshared thin (rewrite/s): {:.2}x",
            r.depth,
            ratio,
            verdict(ratio >= 0.25),
            r.overwrite / r.rewrite.max(1e-9)
        );
    }
    if largest >= 1_000_000 {
        for r in &big {
            println!(
                "- remove_range / delete of {largest} mappings < 0.5 s, depth {}: {:.2} s / {:.2} s ({})",
                r.depth,
                r.remove_range_s,
                r.delete_s,
                verdict(r.remove_range_s < 0.5 && r.delete_s < 0.5)
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let n = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .expect("--child MAPPINGS DEPTH");
        let d = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .expect("--child MAPPINGS DEPTH");
        println!("{}", measure(n, d).to_words());
        return;
    }
    let mut sizes = Vec::new();
    let mut depths = vec![1, 10, 100];
    let mut offline_tools = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--no-offline" {
            offline_tools = false;
        } else if a == "--depths" {
            let list = it.next().expect("--depths D,D,...");
            depths = list
                .split(',')
                .map(|d| d.parse().expect("a depth"))
                .collect();
        } else {
            sizes.push(a.parse().expect("a number of mappings"));
        }
    }
    if sizes.is_empty() {
        sizes = vec![1_000, 100_000, 1_000_000];
    }
    let mut rows = Vec::new();
    for &n in &sizes {
        for &d in &depths {
            eprintln!("bench: {n} mappings, depth {d}");
            rows.push(run_child(n, d));
        }
    }
    print_table(&rows);
    println!();
    println!(
        "One fully mapped thin of MAPPINGS blocks, then a chain of DEPTH snapshots. overwrite: up to {MAX_OVERWRITES} writes to random blocks of the newest snapshot, each breaking sharing; rewrite: the same writes to a thin that shares nothing; lookups in the newest snapshot; remove_range: all of the newest snapshot; delete: the origin, after its snapshots. In-memory metadata device."
    );
    print_goals(&rows);
    if offline_tools {
        offline::side_by_side(1_000_000, 950_000, false);
        offline::side_by_side(1_000_000, 950_000, true);
        offline::side_by_side(5_000_000, 4_750_000, false);
    }
}
