// SPDX-License-Identifier: GPL-2.0

//! Parsing and validation of `rthin-pool` table lines, exactly as dm-thin's `pool_ctr()` and
//! `parse_pool_features()` do it (checks, order, reasons, errnos). Pure functions: no device
//! is needed, so KUnit covers them.
//!
//! ```text
//! rthin-pool <metadata dev> <data dev> <data block size> <low water mark>
//!            [<#features> <feature>...]
//! ```

use crate::dm::{parse_u64, ArgRange, Args, CtrError};
use core::fmt::{self, Write};
use kernel::prelude::*;

/// Smallest data block size in sectors (64 KiB); every block size is a multiple of it.
pub(crate) const BLOCK_SIZE_MIN_SECTORS: u64 = 128;
/// Largest data block size in sectors (1 GiB).
pub(crate) const BLOCK_SIZE_MAX_SECTORS: u64 = 2_097_152;

/// The feature group: a count of 0 to 4 words.
const FEATURE_COUNT: ArgRange = ArgRange {
    min: 0,
    max: 4,
    error: c"Invalid number of pool feature arguments",
};

pub(crate) const ERR_ARG_COUNT: CtrError = CtrError::new(EINVAL, c"Invalid argument count");
pub(crate) const ERR_SAME_DEVICE: CtrError =
    CtrError::new(EINVAL, c"Error setting metadata or data device");
pub(crate) const ERR_UNKNOWN_FEATURE: CtrError =
    CtrError::new(EINVAL, c"Unrecognised pool feature requested");
pub(crate) const ERR_BLOCK_SIZE: CtrError = CtrError::new(EINVAL, c"Invalid block size");
pub(crate) const ERR_LOW_WATER: CtrError = CtrError::new(EINVAL, c"Invalid low water mark");

/// Pool features requested in the table line (dm-thin's `struct pool_features`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolFeatures {
    /// Zero newly provisioned blocks (off with `skip_block_zeroing`).
    pub(crate) zero_new_blocks: bool,
    /// Process discards at all (off with `ignore_discard`).
    pub(crate) discard_enabled: bool,
    /// Pass discards down to the data device (off with `no_discard_passdown`).
    pub(crate) discard_passdown: bool,
    /// Open the metadata read-only and start in read-only mode (`read_only`).
    pub(crate) read_only: bool,
    /// Fail writes with ENOSPC instead of queueing them when out of space
    /// (`error_if_no_space`).
    pub(crate) error_if_no_space: bool,
}

impl Default for PoolFeatures {
    fn default() -> Self {
        Self {
            zero_new_blocks: true,
            discard_enabled: true,
            discard_passdown: true,
            read_only: false,
            error_if_no_space: false,
        }
    }
}

impl PoolFeatures {
    /// Applies one feature word (case-insensitive, like `strcasecmp`).
    fn apply(&mut self, word: &[u8]) -> Result<(), CtrError> {
        let is = |name: &[u8]| word.eq_ignore_ascii_case(name);
        if is(b"skip_block_zeroing") {
            self.zero_new_blocks = false;
        } else if is(b"ignore_discard") {
            self.discard_enabled = false;
        } else if is(b"no_discard_passdown") {
            self.discard_passdown = false;
        } else if is(b"read_only") {
            self.read_only = true;
        } else if is(b"error_if_no_space") {
            self.error_if_no_space = true;
        } else {
            return Err(ERR_UNKNOWN_FEATURE);
        }
        Ok(())
    }

    /// The words that describe the non-default features, in dm-thin's fixed order.
    fn words(&self) -> [Option<&'static str>; 5] {
        [
            (!self.zero_new_blocks).then_some("skip_block_zeroing"),
            (!self.discard_enabled).then_some("ignore_discard"),
            (!self.discard_passdown).then_some("no_discard_passdown"),
            self.read_only.then_some("read_only"),
            self.error_if_no_space.then_some("error_if_no_space"),
        ]
    }

    /// Writes `<count> [<word> ]...` as dm-thin's `emit_flags()`: every item is followed by a
    /// space, the count too.
    pub(crate) fn emit(&self, out: &mut impl Write) -> fmt::Result {
        let words = self.words();
        write!(out, "{} ", words.iter().flatten().count())?;
        for word in words.iter().flatten() {
            write!(out, "{word} ")?;
        }
        Ok(())
    }
}

/// Parses the optional feature group that follows the four fixed arguments.
///
/// No arguments left means defaults. Otherwise the first is the count (0..=4, and no more than
/// the arguments after it); each counted word must be a known feature. Arguments after the
/// group are ignored, as in dm-thin.
pub(crate) fn parse_features(args: &mut Args<'_>) -> Result<PoolFeatures, CtrError> {
    let mut features = PoolFeatures::default();
    if args.is_empty() {
        return Ok(features);
    }
    let count = args.read_arg_group(&FEATURE_COUNT)?;
    for _ in 0..count {
        // `read_arg_group` checked that `count` arguments follow.
        let word = args.next().ok_or(FEATURE_COUNT_ERROR)?;
        features.apply(word.to_bytes())?;
    }
    Ok(features)
}

const FEATURE_COUNT_ERROR: CtrError = CtrError::new(EINVAL, FEATURE_COUNT.error);

/// The arguments of a pool table line that are checked before any device is opened.
pub(crate) struct PoolArgs<'a> {
    pub(crate) metadata_dev: &'a CStr,
    pub(crate) data_dev: &'a CStr,
    pub(crate) block_size: &'a CStr,
    pub(crate) low_water_mark: &'a CStr,
    pub(crate) features: PoolFeatures,
}

/// First stage of the constructor: argument count, distinct device arguments, features.
///
/// The block size and low water mark are only checked after the devices are open
/// ([`parse_block_size`], [`parse_low_water_mark`]), as in dm-thin, so that a table with both a
/// missing device and a bad block size reports the device.
pub(crate) fn parse_pool_args<'a>(mut args: Args<'a>) -> Result<PoolArgs<'a>, CtrError> {
    if args.len() < 4 {
        return Err(ERR_ARG_COUNT);
    }
    let arg = |i| args.get(i).ok_or(ERR_ARG_COUNT);
    let (metadata_dev, data_dev) = (arg(0)?, arg(1)?);
    let (block_size, low_water_mark) = (arg(2)?, arg(3)?);
    // dm-thin compares the strings, not the devices they name.
    if metadata_dev == data_dev {
        return Err(ERR_SAME_DEVICE);
    }
    args.consume(4);
    let features = parse_features(&mut args)?;
    Ok(PoolArgs {
        metadata_dev,
        data_dev,
        block_size,
        low_water_mark,
        features,
    })
}

/// Parses the data block size in sectors: decimal, 128..=2097152, a multiple of 128.
pub(crate) fn parse_block_size(s: &CStr) -> Result<u32, CtrError> {
    let size = parse_u64(s.to_bytes()).map_err(|_| ERR_BLOCK_SIZE)?;
    if !(BLOCK_SIZE_MIN_SECTORS..=BLOCK_SIZE_MAX_SECTORS).contains(&size)
        || size % BLOCK_SIZE_MIN_SECTORS != 0
    {
        return Err(ERR_BLOCK_SIZE);
    }
    u32::try_from(size).map_err(|_| ERR_BLOCK_SIZE)
}

/// Parses the low water mark in data blocks: any decimal `u64`.
pub(crate) fn parse_low_water_mark(s: &CStr) -> Result<u64, CtrError> {
    parse_u64(s.to_bytes()).map_err(|_| ERR_LOW_WATER)
}

/// The I/O size limits dm-thin's `pool_io_hints()` adjusts (sectors and bytes as in
/// `struct queue_limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoSizeLimits {
    /// Largest I/O, in sectors.
    pub(crate) max_sectors: u32,
    /// Minimum preferred I/O, in bytes.
    pub(crate) io_min: u32,
    /// Optimal I/O, in bytes.
    pub(crate) io_opt: u32,
}

/// Whether `a` is a multiple of `b` (dm-thin's `is_factor`); never true for `b == 0`.
fn is_factor(a: u64, b: u64) -> bool {
    b != 0 && a % b == 0
}

/// Adapts the stacked I/O size limits to a pool with `block_size`-sector blocks, exactly as
/// `pool_io_hints()`:
/// - a `max_sectors` below the block size becomes the largest power of two dividing the block
///   size that is not above it (so partial-block I/O still ends on block boundaries);
/// - unless `io_opt` already is a multiple of the block size, `io_opt` becomes the block size
///   and `io_min` the block size, or `max_sectors` when that divides the block size.
pub(crate) fn pool_io_limits(block_size: u32, stacked: IoSizeLimits) -> IoSizeLimits {
    let block = u64::from(block_size);
    let mut limits = stacked;
    if limits.max_sectors < block_size {
        while limits.max_sectors > 0 && !is_factor(block, u64::from(limits.max_sectors)) {
            if limits.max_sectors.is_power_of_two() {
                limits.max_sectors -= 1;
            }
            limits.max_sectors = limits.max_sectors.checked_ilog2().map_or(0, |log| 1 << log);
        }
    }
    let io_opt_sectors = u64::from(stacked.io_opt >> 9);
    if io_opt_sectors < block || !is_factor(io_opt_sectors, block) {
        let min_sectors = if is_factor(block, u64::from(limits.max_sectors)) {
            limits.max_sectors
        } else {
            block_size
        };
        limits.io_min = min_sectors.saturating_mul(512);
        limits.io_opt = block_size.saturating_mul(512);
    }
    limits
}

#[kunit_tests(rthin_pool_params)]
mod tests {
    use super::*;
    use crate::dm::ResultWriter;

    fn reason<T>(r: Result<T, CtrError>) -> Option<&'static CStr> {
        r.err().map(|e| e.reason())
    }

    fn features(words: &[&CStr]) -> Result<PoolFeatures, CtrError> {
        parse_features(&mut Args::from_strs(words))
    }

    #[test]
    fn block_size_bounds_and_multiple() {
        assert_eq!(parse_block_size(c"128"), Ok(128));
        assert_eq!(parse_block_size(c"256"), Ok(256));
        assert_eq!(parse_block_size(c"384"), Ok(384)); // not a power of two: fine
        assert_eq!(parse_block_size(c"2097152"), Ok(2_097_152));
        assert_eq!(parse_block_size(c"+128"), Ok(128));
        for bad in [
            c"0",
            c"64",
            c"127",
            c"129",
            c"200",
            c"2097280",
            c"4194304",
            c"",
            c"abc",
            c"128k",
            c"-128",
            c"0x80",
            c"99999999999999999999",
        ] {
            assert_eq!(reason(parse_block_size(bad)), Some(c"Invalid block size"));
        }
        assert_eq!(parse_block_size(c"64").map_err(|e| e.code()), Err(EINVAL));
    }

    #[test]
    fn low_water_mark_is_any_u64() {
        assert_eq!(parse_low_water_mark(c"0"), Ok(0));
        assert_eq!(parse_low_water_mark(c"18446744073709551615"), Ok(u64::MAX));
        for bad in [c"", c"-1", c"1.5", c"ten", c"18446744073709551616"] {
            assert_eq!(
                reason(parse_low_water_mark(bad)),
                Some(c"Invalid low water mark")
            );
        }
    }

    #[test]
    fn features_default_and_each_word() {
        assert_eq!(features(&[]), Ok(PoolFeatures::default()));
        assert_eq!(features(&[c"0"]), Ok(PoolFeatures::default()));
        let all = features(&[
            c"4",
            c"skip_block_zeroing",
            c"ignore_discard",
            c"no_discard_passdown",
            c"error_if_no_space",
        ]);
        let expected = PoolFeatures {
            zero_new_blocks: false,
            discard_enabled: false,
            discard_passdown: false,
            read_only: false,
            error_if_no_space: true,
        };
        assert_eq!(all, Ok(expected));
        let ro = features(&[c"1", c"read_only"]).map(|f| f.read_only);
        assert_eq!(ro, Ok(true));
    }

    #[test]
    fn feature_words_are_case_insensitive() {
        let f = features(&[c"2", c"Skip_Block_Zeroing", c"READ_ONLY"]);
        assert_eq!(
            f.map(|f| (f.zero_new_blocks, f.read_only)),
            Ok((false, true))
        );
    }

    #[test]
    fn feature_errors() {
        let count = Some(c"Invalid number of pool feature arguments");
        let unknown = Some(c"Unrecognised pool feature requested");
        assert_eq!(
            reason(features(&[c"5", c"a", c"b", c"c", c"d", c"e"])),
            count
        );
        assert_eq!(reason(features(&[c"2", c"read_only"])), count);
        assert_eq!(reason(features(&[c"x"])), count);
        assert_eq!(reason(features(&[c"-1"])), count);
        assert_eq!(reason(features(&[c"1", c"bogus"])), unknown);
        assert_eq!(reason(features(&[c"1", c"read_only_"])), unknown);
        // Words after the counted group are not looked at.
        assert!(features(&[c"1", c"read_only", c"junk"]).is_ok());
        // The count truncates like the C sscanf into an unsigned int: 2^32 + 1 reads as 1.
        assert!(features(&[c"4294967297", c"read_only"]).is_ok());
    }

    #[test]
    fn pool_args_count_and_order() {
        let r = |a: &[&CStr]| reason(parse_pool_args(Args::from_strs(a)));
        assert_eq!(r(&[]), Some(c"Invalid argument count"));
        assert_eq!(r(&[c"m", c"d", c"128"]), Some(c"Invalid argument count"));
        assert_eq!(
            r(&[c"m", c"m", c"128", c"0"]),
            Some(c"Error setting metadata or data device")
        );
        // Same-device check comes before the feature check.
        assert_eq!(
            r(&[c"m", c"m", c"128", c"0", c"1", c"bogus"]),
            Some(c"Error setting metadata or data device")
        );
        assert_eq!(
            r(&[c"m", c"d", c"128", c"0", c"1", c"bogus"]),
            Some(c"Unrecognised pool feature requested")
        );
        // Block size and low water mark are not checked yet (devices first).
        let ok = parse_pool_args(Args::from_strs(&[c"m", c"d", c"x", c"y"]));
        assert!(ok.is_ok());
    }

    #[test]
    fn io_limits_follow_pool_io_hints() {
        let l = |max_sectors, io_min, io_opt| IoSizeLimits {
            max_sectors,
            io_min,
            io_opt,
        };
        // Typical disk: max_sectors above the block size, no io_opt.
        assert_eq!(pool_io_limits(128, l(2560, 512, 0)), l(2560, 65536, 65536));
        // io_opt already a multiple of the block size: left alone.
        assert_eq!(
            pool_io_limits(128, l(2560, 512, 131072)),
            l(2560, 512, 131072)
        );
        // io_opt above the block size but not a multiple of it: overridden.
        assert_eq!(
            pool_io_limits(256, l(2560, 512, 196608)),
            l(2560, 131072, 131072)
        );
        // max_sectors below the block size shrinks to a power-of-two factor of it.
        assert_eq!(pool_io_limits(384, l(255, 512, 0)), l(128, 65536, 196608));
        assert_eq!(
            pool_io_limits(2048, l(1024, 512, 0)),
            l(1024, 524288, 1048576)
        );
        assert_eq!(pool_io_limits(640, l(256, 512, 0)), l(128, 65536, 327680));
        // Degenerate zero is left alone instead of dividing by it.
        assert_eq!(pool_io_limits(128, l(0, 0, 0)).max_sectors, 0);
    }

    #[test]
    fn emits_features_like_dm_thin() {
        let mut buf = [0u8; 128];
        let mut out = ResultWriter::new(&mut buf);
        let _ = PoolFeatures::default().emit(&mut out);
        assert_eq!(out.as_bytes(), b"0 ");

        let mut buf = [0u8; 128];
        let mut out = ResultWriter::new(&mut buf);
        let f = PoolFeatures {
            zero_new_blocks: false,
            read_only: true,
            error_if_no_space: true,
            ..PoolFeatures::default()
        };
        let _ = f.emit(&mut out);
        assert_eq!(
            out.as_bytes(),
            b"3 skip_block_zeroing read_only error_if_no_space "
        );
    }
}
