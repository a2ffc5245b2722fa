//! `rthinctl ls --format thin_ls`: thin_ls 1.1.0's table, so scripts written for thin_ls keep
//! working: the same field names (`-o DEV,MAPPED_BLOCKS,...`), the same default columns
//! (DEV MAPPED CREATE_TIME SNAP_TIME), each column right-aligned to its widest cell, every cell
//! followed by one space.  The numeric fields are exact; the human-readable ones (MAPPED,
//! EXCLUSIVE, SHARED) use thin_ls's units (`b`, `KiB`, `MiB`, ...) but may pick another unit
//! than thin_ls right at a unit boundary.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::usage::Usage;

/// thin_ls's fields.
pub const FIELDS: [&str; 16] = [
    "DEV",
    "MAPPED_BLOCKS",
    "EXCLUSIVE_BLOCKS",
    "SHARED_BLOCKS",
    "MAPPED_SECTORS",
    "EXCLUSIVE_SECTORS",
    "SHARED_SECTORS",
    "MAPPED_BYTES",
    "EXCLUSIVE_BYTES",
    "SHARED_BYTES",
    "MAPPED",
    "EXCLUSIVE",
    "SHARED",
    "TRANSACTION",
    "CREATE_TIME",
    "SNAP_TIME",
];

const DEFAULT: &str = "DEV,MAPPED,CREATE_TIME,SNAP_TIME";

/// Parse a comma-separated field list (thin_ls's default when `None`).
pub fn parse_fields(s: Option<&str>) -> Result<Vec<String>> {
    s.unwrap_or(DEFAULT)
        .split(',')
        .map(|f| {
            let f = f.trim().to_ascii_uppercase();
            if FIELDS.contains(&f.as_str()) {
                Ok(f)
            } else {
                Err(anyhow!(
                    "unknown thin_ls field {f:?} (fields: {})",
                    FIELDS.join(",")
                ))
            }
        })
        .collect()
}

/// Bytes in thin_ls's style: the largest binary unit that leaves at least 64 of it.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes == 0 {
        return "0b".into();
    }
    let mut best = None;
    for (i, u) in UNITS.iter().enumerate() {
        let size = 1u64 << (10 * (i + 1));
        if bytes >= 64 * size || (i == 0 && bytes >= size) {
            best = Some((bytes / size, *u));
        }
    }
    match best {
        Some((v, u)) => format!("{v}{u}"),
        None => format!("{bytes}b"),
    }
}

fn cell(field: &str, dev: u64, u: &Usage, block_sectors: u64) -> String {
    let bs = block_sectors;
    match field {
        "DEV" => dev.to_string(),
        "MAPPED_BLOCKS" => u.mapped.to_string(),
        "EXCLUSIVE_BLOCKS" => u.exclusive.to_string(),
        "SHARED_BLOCKS" => u.shared.to_string(),
        "MAPPED_SECTORS" => (u.mapped * bs).to_string(),
        "EXCLUSIVE_SECTORS" => (u.exclusive * bs).to_string(),
        "SHARED_SECTORS" => (u.shared * bs).to_string(),
        "MAPPED_BYTES" => (u.mapped * bs * 512).to_string(),
        "EXCLUSIVE_BYTES" => (u.exclusive * bs * 512).to_string(),
        "SHARED_BYTES" => (u.shared * bs * 512).to_string(),
        "MAPPED" => human(u.mapped * bs * 512),
        "EXCLUSIVE" => human(u.exclusive * bs * 512),
        "SHARED" => human(u.shared * bs * 512),
        "TRANSACTION" => u.transaction_id.to_string(),
        "CREATE_TIME" => u.creation_time.to_string(),
        "SNAP_TIME" => u.snapshotted_time.to_string(),
        _ => String::new(),
    }
}

/// The table, header first (if `headers`).
pub fn render(
    usage: &BTreeMap<u64, Usage>,
    block_sectors: u64,
    fields: &[String],
    headers: bool,
) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if headers {
        rows.push(fields.to_vec());
    }
    for (dev, u) in usage {
        rows.push(
            fields
                .iter()
                .map(|f| cell(f, *dev, u, block_sectors))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..fields.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, w) in r.iter().zip(&widths) {
            out.push_str(&format!("{c:>w$} "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> BTreeMap<u64, Usage> {
        let mut m = BTreeMap::new();
        for (dev, t) in [(0u64, 0u64), (1, 1)] {
            m.insert(
                dev,
                Usage {
                    mapped: 3,
                    exclusive: 1,
                    shared: 2,
                    highest: Some(5),
                    transaction_id: t,
                    creation_time: t as u32,
                    snapshotted_time: 1,
                },
            );
        }
        m
    }

    #[test]
    fn default_columns_match_thin_ls() {
        // thin_ls 1.1.0 on the same metadata printed exactly this.
        let f = parse_fields(None).unwrap();
        assert_eq!(
            render(&usage(), 128, &f, true),
            "DEV MAPPED CREATE_TIME SNAP_TIME \n  0 192KiB           0         1 \n  1 192KiB           1         1 \n"
        );
    }

    #[test]
    fn chosen_fields_match_thin_ls() {
        let f = parse_fields(Some(
            "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS,MAPPED,EXCLUSIVE,TRANSACTION",
        ))
        .unwrap();
        assert_eq!(
            render(&usage(), 128, &f, true),
            "DEV MAPPED_BLOCKS EXCLUSIVE_BLOCKS SHARED_BLOCKS MAPPED EXCLUSIVE TRANSACTION \n  0             3                1             2 192KiB     64KiB           0 \n  1             3                1             2 192KiB     64KiB           1 \n"
        );
        let f = parse_fields(Some("dev,mapped_sectors,shared_bytes")).unwrap();
        assert_eq!(
            render(&usage(), 128, &f, false),
            "0 384 131072 \n1 384 131072 \n"
        );
        assert!(parse_fields(Some("DEV,SIZE")).is_err());
    }

    #[test]
    fn human_units_as_thin_ls_prints_them() {
        assert_eq!(human(0), "0b");
        assert_eq!(human(64 << 10), "64KiB");
        assert_eq!(human(1536 << 10), "1536KiB");
        assert_eq!(human(6400 << 10), "6400KiB");
        assert_eq!(human(64 << 20), "64MiB");
        assert_eq!(human(3 << 30), "3072MiB");
        assert_eq!(human(100 << 30), "100GiB");
    }
}
