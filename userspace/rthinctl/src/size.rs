//! Sizes as people type them (`10G`, `512M`, `64K`, `1.5T`, plain bytes), in binary units as
//! dd, LVM and Docker read them: `G` is 2^30 bytes, `GB` and `GiB` too.

use parse_size::Config;

use crate::error::{Error, Result};

/// Parse a size in bytes.
pub fn parse_bytes(s: &str) -> Result<u64> {
    let cfg = Config::new().with_binary();
    let v = cfg.parse_size(s.trim()).map_err(|e| {
        Error::BadSize(format!(
            "{s:?}: {e} (write e.g. 10G, 512M or 65536; units are powers of 1024)"
        ))
    })?;
    if v == 0 {
        return Err(Error::BadSize(format!("{s:?}: must be more than 0")));
    }
    Ok(v)
}

/// Parse a size that must be a whole number of 512-byte sectors; returns sectors.
pub fn parse_sectors(s: &str) -> Result<u64> {
    let b = parse_bytes(s)?;
    if b % 512 != 0 {
        return Err(Error::BadSize(format!(
            "{s:?} is {b} bytes, not a multiple of 512"
        )));
    }
    Ok(b / 512)
}

/// A data block size: 64 KiB .. 1 GiB, a multiple of 64 KiB (dm-thin's rule); returns sectors.
pub fn parse_block_size(s: &str) -> Result<u64> {
    let sectors = parse_sectors(s)?;
    if !(128..=2_097_152).contains(&sectors) || sectors % 128 != 0 {
        return Err(Error::BadSize(format!(
            "block size {s:?} must be a multiple of 64K between 64K and 1G"
        )));
    }
    Ok(sectors)
}

/// clap value parser for byte sizes.
pub fn clap_bytes(s: &str) -> std::result::Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

/// clap value parser for block sizes (sectors).
pub fn clap_block_size(s: &str) -> std::result::Result<u64, String> {
    parse_block_size(s).map_err(|e| e.to_string())
}

/// The metadata size the kernel documentation recommends for a data size: 48 bytes per data
/// block, at least 2 MiB, rounded up to whole 4 KiB metadata blocks.
pub fn suggested_metadata_bytes(data_bytes: u64, block_sectors: u64) -> u64 {
    let blocks = data_bytes / (block_sectors * 512);
    let bytes = (blocks * 48).max(2 << 20);
    bytes.div_ceil(4096) * 4096
}

/// Human form with binary units and one decimal, e.g. `1.5G`; exact values print without one.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["", "K", "M", "G", "T", "P"];
    let mut unit = 0;
    let mut v = bytes as f64;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if v.fract() == 0.0 {
        format!("{}{}", v as u64, UNITS[unit])
    } else {
        format!("{v:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_units_as_dd_reads_them() {
        assert_eq!(parse_bytes("10G").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_bytes("64K").unwrap(), 65536);
        assert_eq!(parse_bytes("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("2t").unwrap(), 2 << 40);
    }

    #[test]
    fn bad_sizes_are_refused_with_a_hint() {
        for s in ["", "ten", "-1G", "0", "1Q"] {
            let e = parse_bytes(s).unwrap_err().to_string();
            assert!(e.starts_with("bad size"), "{s}: {e}");
        }
        assert!(parse_sectors("1000").is_err());
        assert_eq!(parse_sectors("1M").unwrap(), 2048);
    }

    #[test]
    fn block_sizes_follow_dm_thin() {
        assert_eq!(parse_block_size("64K").unwrap(), 128);
        assert_eq!(parse_block_size("1M").unwrap(), 2048);
        assert_eq!(parse_block_size("192K").unwrap(), 384);
        assert_eq!(parse_block_size("1G").unwrap(), 2_097_152);
        assert!(parse_block_size("32K").is_err());
        assert!(parse_block_size("100K").is_err());
        assert!(parse_block_size("2G").is_err());
    }

    #[test]
    fn metadata_suggestion_is_48_bytes_per_block_at_least_2m() {
        assert_eq!(suggested_metadata_bytes(1 << 30, 128), 2 << 20);
        // 100 GiB of 64 KiB blocks: 1,638,400 blocks x 48 bytes = 75 MiB.
        assert_eq!(suggested_metadata_bytes(100 << 30, 128), 75 << 20);
        assert_eq!(suggested_metadata_bytes(100 << 30, 128) % 4096, 0);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(10 << 30), "10G");
        assert_eq!(human(3 << 29), "1.5G");
        assert_eq!(human(65536), "64K");
    }
}
