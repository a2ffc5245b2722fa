// SPDX-License-Identifier: GPL-2.0

//! The pool's `dmsetup status` line, as dm-thin's `pool_status` prints it: every field followed
//! by a space, in this order:
//!
//! ```text
//! <transaction id> <used>/<total metadata blocks> <used>/<total data blocks> <held root>|-
//! rw|ro|out_of_data_space ignore_discard|discard_passdown|no_discard_passdown
//! error_if_no_space|queue_if_no_space needs_check|- <metadata low water mark>
//! ```
//!
//! Used metadata counts the reserve (`total - free`, free excluding the reserve), so a fresh
//! pool shows the reserve as used, exactly as dm-thin does.

use super::PoolMode;
use core::fmt::{self, Write};
use kernel::prelude::*;

/// Discard handling as the status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DiscardStatus {
    Ignore,
    Passdown,
    NoPassdown,
}

/// Everything the INFO line shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolStatus {
    pub(crate) transaction_id: u64,
    pub(crate) metadata_free: u64,
    pub(crate) metadata_total: u64,
    pub(crate) data_free: u64,
    pub(crate) data_total: u64,
    pub(crate) held_root: Option<u64>,
    pub(crate) mode: PoolMode,
    pub(crate) discard: DiscardStatus,
    pub(crate) error_if_no_space: bool,
    pub(crate) needs_check: bool,
    /// Size of the metadata device in 4 KiB blocks (capped at what the space map addresses).
    pub(crate) metadata_device_blocks: u64,
}

impl PoolStatus {
    /// dm-thin's `calc_metadata_threshold`: min(1024 blocks, a quarter of the device).
    pub(crate) fn metadata_low_water_mark(&self) -> u64 {
        core::cmp::min(1024, self.metadata_device_blocks / 4)
    }

    /// Writes the INFO line.
    pub(crate) fn emit(&self, out: &mut impl Write) -> fmt::Result {
        if self.mode == PoolMode::Fail {
            return out.write_str("Fail");
        }
        write!(
            out,
            "{} {}/{} {}/{} ",
            self.transaction_id,
            self.metadata_total.saturating_sub(self.metadata_free),
            self.metadata_total,
            self.data_total.saturating_sub(self.data_free),
            self.data_total
        )?;
        match self.held_root {
            Some(root) => write!(out, "{root} ")?,
            None => out.write_str("- ")?,
        }
        out.write_str(match self.mode {
            PoolMode::OutOfDataSpace => "out_of_data_space ",
            PoolMode::OutOfMetadataSpace | PoolMode::ReadOnly => "ro ",
            _ => "rw ",
        })?;
        out.write_str(match self.discard {
            DiscardStatus::Ignore => "ignore_discard ",
            DiscardStatus::Passdown => "discard_passdown ",
            DiscardStatus::NoPassdown => "no_discard_passdown ",
        })?;
        out.write_str(if self.error_if_no_space {
            "error_if_no_space "
        } else {
            "queue_if_no_space "
        })?;
        out.write_str(if self.needs_check {
            "needs_check "
        } else {
            "- "
        })?;
        write!(out, "{} ", self.metadata_low_water_mark())
    }
}

#[kunit_tests(rthin_pool_status)]
mod tests {
    use super::*;
    use crate::dm::ResultWriter;

    fn fresh() -> PoolStatus {
        // 64 MiB metadata, 1 GiB data, 64 KiB blocks: the interface reference's example.
        PoolStatus {
            transaction_id: 0,
            metadata_free: 16384 - 10 - 1638,
            metadata_total: 16384,
            data_free: 16384,
            data_total: 16384,
            held_root: None,
            mode: PoolMode::Write,
            discard: DiscardStatus::Passdown,
            error_if_no_space: false,
            needs_check: false,
            metadata_device_blocks: 16384,
        }
    }

    fn line(s: &PoolStatus) -> KVec<u8> {
        let mut buf = [0u8; 256];
        let mut out = ResultWriter::new(&mut buf);
        assert!(s.emit(&mut out).is_ok());
        let mut v = KVec::new();
        assert!(v.extend_from_slice(out.as_bytes(), GFP_KERNEL).is_ok());
        v
    }

    #[test]
    fn fresh_pool_line() {
        assert_eq!(
            &line(&fresh())[..],
            b"0 1648/16384 0/16384 - rw discard_passdown queue_if_no_space - 1024 "
        );
    }

    #[test]
    fn every_field_changes_the_line() {
        let s = PoolStatus {
            transaction_id: 7,
            data_free: 0,
            held_root: Some(42),
            mode: PoolMode::OutOfDataSpace,
            discard: DiscardStatus::Ignore,
            error_if_no_space: true,
            needs_check: true,
            metadata_device_blocks: 400,
            ..fresh()
        };
        assert_eq!(
            &line(&s)[..],
            b"7 1648/16384 16384/16384 42 out_of_data_space ignore_discard error_if_no_space needs_check 100 "
        );
        let ro = PoolStatus {
            mode: PoolMode::ReadOnly,
            discard: DiscardStatus::NoPassdown,
            ..fresh()
        };
        assert_eq!(
            &line(&ro)[..],
            b"0 1648/16384 0/16384 - ro no_discard_passdown queue_if_no_space - 1024 "
        );
        let full_meta = PoolStatus {
            mode: PoolMode::OutOfMetadataSpace,
            metadata_free: 0,
            ..fresh()
        };
        assert_eq!(
            &line(&full_meta)[..],
            b"0 16384/16384 0/16384 - ro discard_passdown queue_if_no_space - 1024 "
        );
        let fail = PoolStatus {
            mode: PoolMode::Fail,
            ..fresh()
        };
        assert_eq!(&line(&fail)[..], b"Fail");
    }
}
