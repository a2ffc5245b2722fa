//! The `rthinctl` binary on a build host (no device-mapper needed): dry-run output, errors and
//! exit codes of the lifecycle commands.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rthinctl-dry-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rthinctl(home: &PathBuf, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rthinctl"))
        .env("RTHINCTL_HOME", home)
        .args(args)
        .output()
        .expect("running rthinctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pool_create_dry_run_prints_the_seed_commands_and_touches_nothing() {
    let home = scratch("create");
    let dir = home.join("files");
    let dir_s = dir.display().to_string();
    let out = rthinctl(
        &home,
        &[
            "--dry-run",
            "pool",
            "create",
            "p1",
            "--data-size",
            "10G",
            "--dir",
            &dir_s,
            "--no-zeroing",
            "--low-water-mark",
            "32768",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let expect = [
        format!("mkdir -p {dir_s}"),
        // 163840 blocks x 48 bytes = 7.5 MiB of metadata.
        format!("truncate -s 7864320 {dir_s}/p1-metadata.img"),
        format!("truncate -s 10737418240 {dir_s}/p1-data.img"),
        format!("META=$(losetup --find --show {dir_s}/p1-metadata.img)"),
        format!("DATA=$(losetup --find --show {dir_s}/p1-data.img)"),
        "dd if=/dev/zero of=$META bs=4096 count=1 oflag=direct conv=notrunc".to_string(),
        "dmsetup create p1 --table \"0 20971520 rthin-pool $META $DATA 128 32768 1 skip_block_zeroing\"".to_string(),
        "dmsetup mknodes p1".to_string(),
    ];
    let mut at = 0;
    for e in &expect {
        let found = s[at..]
            .find(e.as_str())
            .unwrap_or_else(|| panic!("{e:?} not in order in:\n{s}"));
        at += found + e.len();
    }
    assert!(!dir.exists(), "a dry run created {dir_s}");
    assert!(
        !home.join("pools").exists(),
        "a dry run registered the pool"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn thin_target_and_block_size_reach_the_table() {
    let home = scratch("target");
    let dir_s = home.join("f").display().to_string();
    let out = rthinctl(
        &home,
        &[
            "--dry-run",
            "pool",
            "create",
            "p2",
            "--data-size",
            "1G",
            "--metadata-size",
            "8M",
            "--dir",
            &dir_s,
            "--block-size",
            "1M",
            "--target",
            "thin",
            "--error-if-no-space",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("truncate -s 8388608 "), "{s}");
    assert!(
        s.contains("\"0 2097152 thin-pool $META $DATA 2048 0 1 error_if_no_space\""),
        "{s}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn bad_sizes_exit_2_with_one_line() {
    let home = scratch("size");
    for args in [
        &["pool", "create", "p", "--data-size", "ten"][..],
        &[
            "pool",
            "create",
            "p",
            "--data-size",
            "1G",
            "--block-size",
            "100K",
        ][..],
        &["thin", "create", "v", "--size", "0"][..],
    ] {
        let out = rthinctl(&home, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("bad size"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn unknown_pools_and_volumes_exit_7() {
    let home = scratch("missing");
    for args in [
        &["pool", "status", "nope"][..],
        &["thin", "delete", "nope"][..],
        &["thin", "create", "v", "--size", "1G"][..],
        &["pool", "remove", "nope"][..],
    ] {
        let out = rthinctl(&home, args);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn activation_without_the_files_exits_9() {
    let home = scratch("activate");
    let out = rthinctl(&home, &["pool", "activate", "p", "--dir", "/nonexistent"]);
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("missing"));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn help_teaches_sizes_and_exit_codes() {
    let home = scratch("help");
    let out = rthinctl(&home, &["--help"]);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert!(s.contains("binary units"), "{s}");
    assert!(s.contains("Exit codes"), "{s}");
    let out = rthinctl(&home, &["pool", "create", "--help"]);
    assert!(text(&out.stdout).contains("--data-size"));
    std::fs::remove_dir_all(&home).unwrap();
}
