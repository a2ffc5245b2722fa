//! The `rthinctl` binary: restore, check, dump, ls on image files, exit codes and messages.

mod common;
use common::*;

use std::process::Command;

fn rthinctl(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rthinctl"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const XML: &str = r#"<superblock uuid="" time="1" transaction="7" version="2" data_block_size="128" nr_data_blocks="1024">
  <device dev_id="0" mapped_blocks="5" transaction="0" creation_time="0" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>
    <single_mapping origin_block="10" data_block="5" time="0"/>
    <range_mapping origin_begin="11" data_begin="6" length="2" time="1"/>
  </device>
  <device dev_id="1" mapped_blocks="3" transaction="0" creation_time="1" snap_time="1">
    <range_mapping origin_begin="0" data_begin="0" length="2" time="0"/>
    <single_mapping origin_block="10" data_block="5" time="0"/>
  </device>
</superblock>"#;

#[test]
fn restore_check_dump_ls() {
    let xml = write_temp("cli.xml", XML.as_bytes());
    let img = write_temp("cli.bin", &vec![0u8; 1024 * 4096]);
    let (c, _, e) = rthinctl(&[
        "restore",
        "-i",
        xml.to_str().unwrap(),
        "-o",
        img.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{e}");
    let (c, out, e) = rthinctl(&["check", img.to_str().unwrap()]);
    assert_eq!(c, 0, "{e}");
    assert!(out.contains("TRANSACTION_ID=7"), "{out}");
    let (c, out, _) = rthinctl(&["dump", img.to_str().unwrap()]);
    assert_eq!(c, 0);
    assert_eq!(out, XML);
    let theirs = run_tool("thin_dump", &[img.to_str().unwrap()]);
    assert_eq!(out, theirs.stdout);
    assert_thin_check_clean(&img);
    let (c, out, _) = rthinctl(&["ls", img.to_str().unwrap()]);
    assert_eq!(c, 0);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // dev, mapped, exclusive, shared: blocks 0, 1 and 5 are mapped by both devices.
    assert_eq!(rows[0][..4], ["0", "5", "2", "3"]);
    assert_eq!(rows[1][..4], ["1", "3", "0", "3"]);

    // Damage the details tree root: check fails and names the block.
    let sb = rthin_metadata::superblock::Superblock::unpack(
        &std::fs::read(&img).unwrap()[..4096].try_into().unwrap(),
    );
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[sb.details_root as usize * 4096 + 100] ^= 1;
    std::fs::write(&img, &bytes).unwrap();
    let (c, _, e) = rthinctl(&["check", img.to_str().unwrap()]);
    assert_eq!(c, 1);
    assert!(
        e.contains(&format!(
            "bad checksum in btree node block {}",
            sb.details_root
        )),
        "{e}"
    );
    let (c, _, e) = rthinctl(&["dump", img.to_str().unwrap()]);
    assert_eq!(c, 2);
    assert!(e.contains(&sb.details_root.to_string()), "{e}");
}
