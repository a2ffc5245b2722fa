//! dm-thin's strings: table lines, messages and status lines, for both target families.
//! `rthin-pool`/`rthin` take exactly `thin-pool`/`thin`'s arguments, so only the type names
//! differ.

use serde::{Deserialize, Serialize};

use crate::dm::ioctl::TargetLine;
use crate::error::Result;

/// Which implementation drives a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// dm-rthin (`rthin-pool`/`rthin`, module dm-rthin).
    Rthin,
    /// The kernel's C dm-thin (`thin-pool`/`thin`, module dm-thin-pool).
    Thin,
}

impl Target {
    pub fn pool_type(self) -> &'static str {
        match self {
            Target::Rthin => "rthin-pool",
            Target::Thin => "thin-pool",
        }
    }

    pub fn thin_type(self) -> &'static str {
        match self {
            Target::Rthin => "rthin",
            Target::Thin => "thin",
        }
    }

    pub fn module(self) -> &'static str {
        match self {
            Target::Rthin => "dm-rthin",
            Target::Thin => "dm-thin-pool",
        }
    }
}

/// What a pool table says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTable {
    pub target: Target,
    pub data_sectors: u64,
    pub metadata_dev: String,
    pub data_dev: String,
    pub block_sectors: u64,
    pub low_water_mark: u64,
    pub zeroing: bool,
    pub error_if_no_space: bool,
}

impl PoolTable {
    /// The pool table's length: whole data blocks only (the kernel ignores a partial one).
    pub fn length(&self) -> u64 {
        self.data_sectors / self.block_sectors * self.block_sectors
    }

    /// The parameters after the type name, in dm-thin's feature order.
    pub fn params(&self) -> String {
        let mut features = Vec::new();
        if !self.zeroing {
            features.push("skip_block_zeroing");
        }
        if self.error_if_no_space {
            features.push("error_if_no_space");
        }
        let mut s = format!(
            "{} {} {} {} {}",
            self.metadata_dev,
            self.data_dev,
            self.block_sectors,
            self.low_water_mark,
            features.len()
        );
        for f in features {
            s.push(' ');
            s.push_str(f);
        }
        s
    }

    pub fn line(&self) -> TargetLine {
        TargetLine {
            start: 0,
            length: self.length(),
            target_type: self.target.pool_type().into(),
            params: self.params(),
        }
    }
}

/// A thin table: `0 <sectors> thin <pool dev> <id>`.
pub fn thin_line(target: Target, sectors: u64, pool_dev: &str, id: u32) -> TargetLine {
    TargetLine {
        start: 0,
        length: sectors,
        target_type: target.thin_type().into(),
        params: format!("{pool_dev} {id}"),
    }
}

/// A table line as dmsetup prints and reads it.
pub fn line_text(l: &TargetLine) -> String {
    format!("{} {} {} {}", l.start, l.length, l.target_type, l.params)
}

/// Pool messages.
pub mod msg {
    pub fn create_thin(id: u32) -> String {
        format!("create_thin {id}")
    }
    pub fn create_snap(id: u32, origin: u32) -> String {
        format!("create_snap {id} {origin}")
    }
    pub fn delete(id: u32) -> String {
        format!("delete {id}")
    }
    pub fn set_transaction_id(from: u64, to: u64) -> String {
        format!("set_transaction_id {from} {to}")
    }
    pub const RESERVE_METADATA_SNAP: &str = "reserve_metadata_snap";
    pub const RELEASE_METADATA_SNAP: &str = "release_metadata_snap";
}

/// A pool's INFO status line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    pub transaction_id: u64,
    pub metadata_used: u64,
    pub metadata_total: u64,
    pub data_used: u64,
    pub data_total: u64,
    /// Block of the held metadata snapshot.
    pub held_root: Option<u64>,
    /// `rw`, `ro`, `out_of_data_space` or `fail`.
    pub mode: String,
    pub discard: String,
    pub no_space: String,
    pub needs_check: bool,
    pub metadata_low_water: Option<u64>,
}

fn pair(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once('/')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Parse a pool status line; `Fail` gives a status with mode `fail` and zero counters.
pub fn parse_pool_status(s: &str) -> Result<PoolStatus> {
    let w: Vec<&str> = s.split_whitespace().collect();
    if w.first() == Some(&"Fail") {
        return Ok(PoolStatus {
            transaction_id: 0,
            metadata_used: 0,
            metadata_total: 0,
            data_used: 0,
            data_total: 0,
            held_root: None,
            mode: "fail".into(),
            discard: String::new(),
            no_space: String::new(),
            needs_check: false,
            metadata_low_water: None,
        });
    }
    let bad = || crate::other!("cannot parse the pool status line {s:?}");
    if w.len() < 8 {
        return Err(bad());
    }
    let (mu, mt) = pair(w[1]).ok_or_else(bad)?;
    let (du, dt) = pair(w[2]).ok_or_else(bad)?;
    Ok(PoolStatus {
        transaction_id: w[0].parse().map_err(|_| bad())?,
        metadata_used: mu,
        metadata_total: mt,
        data_used: du,
        data_total: dt,
        held_root: w[3].parse().ok(),
        mode: w[4].into(),
        discard: w[5].into(),
        no_space: w[6].into(),
        needs_check: w[7] == "needs_check",
        metadata_low_water: w.get(8).and_then(|v| v.parse().ok()),
    })
}

/// A thin's INFO status: mapped sectors and the highest mapped sector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinStatus {
    pub mapped_sectors: u64,
    pub highest_sector: Option<u64>,
}

pub fn parse_thin_status(s: &str) -> Option<ThinStatus> {
    let mut w = s.split_whitespace();
    let mapped_sectors = w.next()?.parse().ok()?;
    let highest_sector = w.next()?.parse().ok();
    Some(ThinStatus {
        mapped_sectors,
        highest_sector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PoolTable {
        PoolTable {
            target: Target::Rthin,
            data_sectors: 10 * 2048 * 1024 + 100,
            metadata_dev: "7:0".into(),
            data_dev: "7:1".into(),
            block_sectors: 128,
            low_water_mark: 32768,
            zeroing: true,
            error_if_no_space: false,
        }
    }

    #[test]
    fn pool_table_lines() {
        let t = table();
        assert_eq!(
            line_text(&t.line()),
            "0 20971520 rthin-pool 7:0 7:1 128 32768 0"
        );
        let t = PoolTable {
            target: Target::Thin,
            zeroing: false,
            error_if_no_space: true,
            ..table()
        };
        assert_eq!(
            line_text(&t.line()),
            "0 20971520 thin-pool 7:0 7:1 128 32768 2 skip_block_zeroing error_if_no_space"
        );
    }

    #[test]
    fn thin_table_lines() {
        assert_eq!(
            line_text(&thin_line(Target::Rthin, 2097152, "253:0", 3)),
            "0 2097152 rthin 253:0 3"
        );
        assert_eq!(thin_line(Target::Thin, 8, "x", 0).target_type, "thin");
    }

    #[test]
    fn messages() {
        assert_eq!(msg::create_thin(0), "create_thin 0");
        assert_eq!(msg::create_snap(2, 1), "create_snap 2 1");
        assert_eq!(msg::delete(7), "delete 7");
        assert_eq!(msg::set_transaction_id(4, 5), "set_transaction_id 4 5");
    }

    #[test]
    fn pool_status_lines() {
        let s = parse_pool_status(
            "3 1661/16384 20/16384 - rw discard_passdown queue_if_no_space - 1024 ",
        )
        .unwrap();
        assert_eq!(s.transaction_id, 3);
        assert_eq!((s.metadata_used, s.metadata_total), (1661, 16384));
        assert_eq!((s.data_used, s.data_total), (20, 16384));
        assert_eq!(s.held_root, None);
        assert_eq!(s.mode, "rw");
        assert!(!s.needs_check);
        assert_eq!(s.metadata_low_water, Some(1024));
        let s = parse_pool_status(
            "0 10/512 0/16 42 out_of_data_space ignore_discard error_if_no_space needs_check 128 ",
        )
        .unwrap();
        assert_eq!(s.held_root, Some(42));
        assert!(s.needs_check);
        assert_eq!(parse_pool_status("Fail").unwrap().mode, "fail");
        assert!(parse_pool_status("1 2 3").is_err());
    }

    #[test]
    fn thin_status_lines() {
        assert_eq!(
            parse_thin_status("256 1023"),
            Some(ThinStatus {
                mapped_sectors: 256,
                highest_sector: Some(1023)
            })
        );
        assert_eq!(
            parse_thin_status("0 -"),
            Some(ThinStatus {
                mapped_sectors: 0,
                highest_sector: None
            })
        );
        assert_eq!(parse_thin_status("Fail"), None);
    }
}
