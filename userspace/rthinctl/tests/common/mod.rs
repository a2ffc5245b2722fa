//! Shared test helpers: memory pools, a seeded RNG, temp files and the thin-provisioning-tools
//! oracle.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use rthin_metadata::{BlockManager, Pool};
use rthin_metadata_file::{CachedBm, MemBm, MemDisk};

/// xorshift64* — deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Seed from `RTHIN_TEST_SEED` or a default, printed so failures can be replayed.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("RTHIN_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    eprintln!("seed = {s} (set RTHIN_TEST_SEED to replay)");
    s
}

pub fn mem_bm(nr_blocks: u64) -> MemBm {
    CachedBm::new(MemDisk::new(nr_blocks))
}

/// A fresh pool on an in-memory device.
pub fn mem_pool(meta_blocks: u64, data_blocks: u64) -> Pool<MemBm> {
    let mut p = Pool::format(mem_bm(meta_blocks), 128).expect("format");
    p.resize_data(data_blocks).expect("resize data");
    p.commit().expect("commit");
    p
}

/// Reopen from the disk contents only (drops every cached block).
pub fn reopen(p: Pool<MemBm>) -> Pool<MemBm> {
    let bm = p.into_block_manager();
    let disk = bm.into_disk();
    Pool::open(CachedBm::new(disk), None, true).expect("reopen")
}

pub fn image_of(p: &Pool<MemBm>) -> Vec<u8> {
    p.block_manager().with_disk(|d| d.to_image())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rthin-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{n}-{name}"))
}

pub fn write_temp(name: &str, data: &[u8]) -> PathBuf {
    let p = temp_path(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Directory with thin_check & co.: `$RTHIN_THIN_TOOLS`, else `scripts/thin-tools.sh`.  Panics
/// (fails the test) when neither works: the compatibility tests must not pass silently.
pub fn thin_tools() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(find_thin_tools).clone()
}

fn find_thin_tools() -> PathBuf {
    if let Ok(d) = std::env::var("RTHIN_THIN_TOOLS") {
        let p = PathBuf::from(d);
        assert!(
            p.join("thin_check").exists(),
            "RTHIN_THIN_TOOLS={} has no thin_check",
            p.display()
        );
        return p;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/thin-tools.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        p.join("thin_check").exists(),
        "no thin_check in {}",
        p.display()
    );
    p
}

pub struct ToolOutput {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_tool(tool: &str, args: &[&str]) -> ToolOutput {
    let out = Command::new(thin_tools().join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    ToolOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// thin_check must report no error (leaks included) on `image`.
pub fn assert_thin_check_clean(image: &Path) {
    let o = run_tool("thin_check", &[image.to_str().unwrap()]);
    assert!(
        o.ok,
        "thin_check failed on {}:\n{}\n{}",
        image.display(),
        o.stdout,
        o.stderr
    );
}

/// Our own checker must be clean.
pub fn assert_our_check_clean<B: BlockManager>(bm: &B) {
    let r = rthinctl::check::check(bm);
    assert!(
        r.is_clean(),
        "rthinctl check errors:\n{}",
        r.errors.join("\n")
    );
}

/// Our dump of an image.
pub fn our_dump<B: BlockManager>(bm: &B) -> String {
    let mut v = Vec::new();
    rthinctl::dump::dump(bm, None, &mut v).expect("dump");
    String::from_utf8(v).unwrap()
}

/// Full compatibility round: our check, thin_check, and thin_dump == our dump.
pub fn assert_compatible(image: &[u8], what: &str) {
    let bm = CachedBm::new(MemDisk::from_image(image));
    assert_our_check_clean(&bm);
    let path = write_temp(&format!("{what}.bin"), image);
    assert_thin_check_clean(&path);
    let theirs = run_tool("thin_dump", &[path.to_str().unwrap()]);
    assert!(theirs.ok, "thin_dump failed: {}", theirs.stderr);
    let ours = our_dump(&bm);
    if ours != theirs.stdout {
        let dp = write_temp(&format!("{what}.ours.xml"), ours.as_bytes());
        let tp = write_temp(&format!("{what}.theirs.xml"), theirs.stdout.as_bytes());
        panic!(
            "dump mismatch for {what}: ours {} theirs {} image {}",
            dp.display(),
            tp.display(),
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
}

/// The image thin_restore makes of `xml` on a zeroed device of `meta_blocks` blocks.
pub fn thin_restore(xml: &str, meta_blocks: u64) -> Vec<u8> {
    let xp = write_temp("in.xml", xml.as_bytes());
    let img = temp_path("restored.bin");
    std::fs::write(&img, vec![0u8; (meta_blocks * 4096) as usize]).unwrap();
    let o = run_tool(
        "thin_restore",
        &["-i", xp.to_str().unwrap(), "-o", img.to_str().unwrap()],
    );
    assert!(o.ok, "thin_restore failed: {}{}", o.stdout, o.stderr);
    let v = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&xp);
    v
}
