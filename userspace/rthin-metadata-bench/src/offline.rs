//! Offline tools side by side: `rthinctl restore|check|dump` against thin-provisioning-tools'
//! `thin_restore|thin_check|thin_dump` (1.1.0, `scripts/thin-tools.sh`) on the same generated
//! thin_dump-style XML, each run as a child process (elapsed time; CPU and peak RSS from GNU
//! time).  Skipped, with a note, when either side is not available.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One measured run.
struct Run {
    secs: f64,
    cpu: f64,
    rss_mb: f64,
    ok: bool,
}

/// Runs `cmd` under GNU time (`/usr/bin/time`), which reports the peak RSS of the command
/// alone: a process the bench started directly would inherit the bench's own peak (Linux
/// carries `maxrss` across `exec`).  Without GNU time, the memory column reads 0.
fn run(cmd: &Path, args: &[&str], report: &Path) -> Run {
    let gnu_time = Path::new("/usr/bin/time");
    let t = Instant::now();
    let status = if gnu_time.exists() {
        Command::new(gnu_time)
            .args(["-f", "%U %S %M", "-o"])
            .arg(report)
            .arg(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    } else {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    let secs = t.elapsed().as_secs_f64();
    let fields: Vec<f64> = std::fs::read_to_string(report)
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let _ = std::fs::remove_file(report);
    let (cpu, rss_mb) = match fields[..] {
        [u, s, m] => (u + s, m / 1024.0),
        _ => (0.0, 0.0),
    };
    Run {
        secs,
        cpu,
        rss_mb,
        ok: status.is_ok_and(|s| s.success()),
    }
}

fn tools_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("RTHIN_THIN_TOOLS") {
        return Some(PathBuf::from(d));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/thin-tools.sh");
    let out = Command::new("bash").arg(script).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()))
}

/// A thin_dump-style document: two devices of `per_dev` mappings whose first `shared` map the
/// same data blocks; runs of 1-8 blocks, each its own element.  With `def`, the shared part is
/// one `<def>` both devices reference (their leaves are shared, as after a snapshot); without,
/// each device lists it (as thin_dump prints a pool whose leaves were all copied).
fn write_xml(path: &Path, per_dev: u64, shared: u64, def: bool) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next_data = 0u64;
    let mut lines = |x: &mut String, from: u64, to: u64, indent: &str| {
        let mut o = from;
        while o < to {
            let len = (1 + rnd(8)).min(to - o);
            let t = rnd(6);
            if len == 1 {
                let _ = writeln!(
                    x,
                    "{indent}<single_mapping origin_block=\"{o}\" data_block=\"{next_data}\" time=\"{t}\"/>"
                );
            } else {
                let _ = writeln!(
                    x,
                    "{indent}<range_mapping origin_begin=\"{o}\" data_begin=\"{next_data}\" length=\"{len}\" time=\"{t}\"/>"
                );
            }
            next_data += len + 1 + rnd(3);
            o += len;
        }
    };
    let mut common = String::new();
    lines(&mut common, 0, shared, "    ");
    let mut body = String::new();
    if def {
        body.push_str("  <def name=\"1\">\n");
        body.push_str(&common);
        body.push_str("  </def>\n");
    }
    for dev in 0..2 {
        let _ = writeln!(
            body,
            "  <device dev_id=\"{dev}\" mapped_blocks=\"{per_dev}\" transaction=\"{dev}\" creation_time=\"{dev}\" snap_time=\"5\">"
        );
        if def {
            body.push_str("    <ref name=\"1\"/>\n");
        } else {
            body.push_str(&common);
        }
        lines(&mut body, shared, per_dev, "    ");
        body.push_str("  </device>\n");
    }
    writeln!(
        f,
        "<superblock uuid=\"\" time=\"6\" transaction=\"9\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"{}\">",
        next_data + 1000
    )?;
    f.write_all(body.as_bytes())?;
    f.write_all(b"</superblock>")?;
    f.flush()
}

/// Def names replaced by their order of appearance (thin_dump names a def after the block of
/// its first leaf, which differs between tools writing the same metadata).
fn canon(xml: &[u8]) -> String {
    let xml = String::from_utf8_lossy(xml);
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(xml.len());
    let mut rest = &xml[..];
    while let Some(i) = rest.find("name=\"") {
        let (before, after) = rest.split_at(i + 6);
        out.push_str(before);
        let end = after.find('"').unwrap_or(after.len());
        let name = after[..end].to_string();
        let id = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            names.len() - 1
        });
        let _ = write!(out, "d{id}");
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Metadata blocks in use, from the space map root in the superblock.
fn used_blocks(image: &Path) -> Option<u64> {
    let bm = rthin_metadata_file::open_file(image, false).ok()?;
    let p = rthin_metadata::Pool::open(bm, None, false).ok()?;
    Some(p.metadata_nr_blocks() - p.metadata_free_blocks_raw())
}

fn fresh_image(path: &Path, blocks: u64) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    f.set_len(blocks * 4096)
}

/// Prints the table for `per_dev` mappings per device, `shared` of them shared (through a
/// `<def>` with `def`).
pub fn side_by_side(per_dev: u64, shared: u64, def: bool) {
    let total = 2 * per_dev;
    println!();
    println!(
        "offline tools vs thin-provisioning-tools 1.1.0: 2 devices, {total} mappings, {shared} data blocks in both{}",
        if def { ", shared leaves (<def>)" } else { ", listed in each device" }
    );
    let Some(tools) = tools_dir().filter(|d| d.join("thin_restore").exists()) else {
        println!("  skipped: thin-provisioning-tools not found (RTHIN_THIN_TOOLS or scripts/thin-tools.sh)");
        return;
    };
    let ours = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("rthinctl")))
        .filter(|p| p.exists());
    let Some(ours) = ours else {
        println!("  skipped: no rthinctl next to this binary (cargo build --release -p rthinctl)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("rthin-bench-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        println!("  skipped: cannot create {}", dir.display());
        return;
    }
    let xml = dir.join("in.xml");
    if let Err(e) = write_xml(&xml, per_dev, shared, def) {
        println!("  skipped: writing the XML: {e}");
        return;
    }
    let meta_blocks = (total / 100).max(16_384);
    let (theirs_img, ours_img) = (dir.join("theirs.img"), dir.join("ours.img"));
    let s = |p: &Path| p.to_str().unwrap_or_default().to_string();
    let (x, ti, oi) = (s(&xml), s(&theirs_img), s(&ours_img));
    let (td, od) = (s(&dir.join("theirs.xml")), s(&dir.join("ours.xml")));
    let rep = dir.join("time.txt");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "operation",
        "tpt s",
        "ours s",
        "tpt cpu",
        "ours cpu",
        "tpt MB",
        "ours MB",
        "time x",
        "mem x"
    );
    let mut rows = Vec::new();
    // Best of three runs each (the machine may be shared).
    let best = |f: &dyn Fn() -> Run| {
        let mut b = f();
        for _ in 0..2 {
            let r = f();
            if r.ok && r.secs < b.secs {
                b = r;
            }
        }
        b
    };
    let tr = best(&|| {
        let _ = fresh_image(&theirs_img, meta_blocks);
        run(&tools.join("thin_restore"), &["-i", &x, "-o", &ti], &rep)
    });
    let or = best(&|| {
        let _ = fresh_image(&ours_img, meta_blocks);
        run(&ours, &["restore", "-i", &x, "-o", &oi], &rep)
    });
    rows.push(("restore", tr, or));
    let tc = best(&|| run(&tools.join("thin_check"), &[&oi], &rep));
    let oc = best(&|| run(&ours, &["check", &oi], &rep));
    rows.push(("check", tc, oc));
    let tdr = best(&|| run(&tools.join("thin_dump"), &[&oi, "-o", &td], &rep));
    let odr = best(&|| run(&ours, &["dump", &oi, "-o", &od], &rep));
    rows.push(("dump", tdr, odr));
    for (op, t, o) in &rows {
        let flag = if t.ok && o.ok { "" } else { "  (FAILED)" };
        println!(
            "{op:<10} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.1} {:>10.1} {:>8.2} {:>8.2}{flag}",
            t.secs,
            o.secs,
            t.cpu,
            o.cpu,
            t.rss_mb,
            o.rss_mb,
            o.secs / t.secs.max(1e-9),
            o.rss_mb / t.rss_mb.max(1e-9),
        );
    }
    let their_dump = std::fs::read(&td).unwrap_or_default();
    let same = !their_dump.is_empty() && std::fs::read(&od).ok() == Some(their_dump.clone());
    let round_trip = std::fs::read(&xml).is_ok_and(|input| canon(&input) == canon(&their_dump));
    println!(
        "metadata blocks used: thin_restore {}, rthinctl restore {}; thin_check on ours: {}; thin_dump of ours = input: {round_trip}; our dump = thin_dump: {same}",
        used_blocks(&theirs_img).map_or("?".into(), |n| n.to_string()),
        used_blocks(&ours_img).map_or("?".into(), |n| n.to_string()),
        if rows[1].1.ok { "clean" } else { "ERRORS" },
    );
    println!("(goal: ours <= 1.0x thin-provisioning-tools' time and memory; check and dump both read our image)");
    let _ = std::fs::remove_dir_all(&dir);
}
