// SPDX-License-Identifier: GPL-2.0

//! Table and message arguments.
//!
//! [`Args`] walks the `argv` device-mapper hands to a constructor or message handler, one
//! `&CStr` at a time, like `struct dm_arg_set` with `dm_shift_arg()`. The number parsers are
//! plain functions on bytes, so they can be tested without a device:
//!
//! - [`parse_u64`] follows `kstrtoull(s, 10, ..)`;
//! - [`parse_dm_arg_u32`] follows the `sscanf(s, "%u%c", ..)` that `dm_read_arg()` and
//!   `dm_read_arg_group()` use, including its quirks (see there).

use super::CtrError;
use kernel::{ffi::c_char, prelude::*};

/// Why a number did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseIntError {
    /// Not a number: empty, a non-digit, or trailing junk (`kstrtoull` returns `-EINVAL`).
    Invalid,
    /// A number that does not fit in the result type (`kstrtoull` returns `-ERANGE`).
    Overflow,
}

impl From<ParseIntError> for Error {
    fn from(e: ParseIntError) -> Error {
        match e {
            ParseIntError::Invalid => EINVAL,
            ParseIntError::Overflow => ERANGE,
        }
    }
}

/// Accumulates decimal digits from the start of `s` like the kernel's `_parse_integer()`:
/// returns the value (saturated at `u64::MAX` on overflow), how many digits were read, and
/// whether it overflowed.
fn leading_decimal(s: &[u8]) -> (u64, usize, bool) {
    let mut value: u64 = 0;
    let mut overflow = false;
    let mut digits = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            break;
        }
        match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
        {
            Some(v) => value = v,
            None => {
                value = u64::MAX;
                overflow = true;
            }
        }
        digits += 1;
    }
    (value, digits, overflow)
}

/// Parses a base-10 `u64` exactly as `kstrtoull(s, 10, &v)` does.
///
/// Accepted: one optional leading `+`, one or more decimal digits, and one optional trailing
/// newline. Everything else (sign `-`, spaces, `0x`, junk after the digits) is
/// [`ParseIntError::Invalid`]; a value above `u64::MAX` is [`ParseIntError::Overflow`].
pub fn parse_u64(s: &[u8]) -> Result<u64, ParseIntError> {
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (value, digits, overflow) = leading_decimal(s);
    if overflow {
        return Err(ParseIntError::Overflow);
    }
    if digits == 0 {
        return Err(ParseIntError::Invalid);
    }
    let rest = &s[digits..];
    if rest.is_empty() || rest == b"\n" {
        Ok(value)
    } else {
        Err(ParseIntError::Invalid)
    }
}

/// The kernel's `isspace()`: ASCII white space including vertical tab, plus Latin-1 NBSP.
fn is_kernel_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Parses a `u32` the way `dm_read_arg()` does (`sscanf(s, "%u%c", &v, &dummy) == 1`).
///
/// Returns `None` unless the whole string is leading white space followed by decimal digits.
/// Kept for table compatibility, this reproduces the C behaviour for huge numbers too: the
/// digits accumulate into 64 bits (saturating) and the result is then truncated to 32 bits, so
/// `"4294967297"` reads as 1.
pub fn parse_dm_arg_u32(s: &[u8]) -> Option<u32> {
    let start = s
        .iter()
        .position(|&c| !is_kernel_space(c))
        .unwrap_or(s.len());
    let s = &s[start..];
    let (value, digits, _overflow) = leading_decimal(s);
    if digits == 0 || digits != s.len() {
        return None;
    }
    // Truncation is the point: it is what the C `unsigned int` store does.
    Some(value as u32)
}

/// A numeric argument's accepted range and the error reported otherwise, like `struct dm_arg`.
#[derive(Clone, Copy)]
pub struct ArgRange {
    /// Smallest accepted value.
    pub min: u32,
    /// Largest accepted value.
    pub max: u32,
    /// Reason reported (as `ti->error`) when the argument is missing, malformed or out of range.
    pub error: &'static CStr,
}

/// Where the strings of an [`Args`] live.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// The C `argv` array passed to a callback.
    Raw(&'a [*mut c_char]),
    /// Strings owned by Rust (tests, internal callers).
    Strs(&'a [&'a CStr]),
}

/// The remaining arguments of a table line or message (`struct dm_arg_set`).
///
/// Iterating yields each argument once, in order, and removes it from the set.
///
/// # Invariants
///
/// In [`Source::Raw`], every pointer in the slice points to a NUL-terminated string that stays
/// valid and unchanged for `'a`.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    source: Source<'a>,
}

impl<'a> Args<'a> {
    /// Wraps the C argument vector of a callback.
    ///
    /// # Safety
    ///
    /// `argv` must point to `argc` pointers, each to a NUL-terminated string, all valid and
    /// unchanged for `'a` (device-mapper guarantees this for the duration of a ctr or message
    /// call). `argv` may be null if `argc` is 0.
    pub(crate) unsafe fn from_raw(argc: u32, argv: *mut *mut c_char) -> Self {
        let raw: &'a [*mut c_char] = if argc == 0 || argv.is_null() {
            &[]
        } else {
            // SAFETY: The caller guarantees `argv` points to `argc` initialised pointers that
            // stay valid for `'a`; `argc` came from a `u32`, so it fits in `usize`.
            unsafe { core::slice::from_raw_parts(argv, argc as usize) }
        };
        // INVARIANT: The caller guarantees every element is a valid string for `'a`.
        Self {
            source: Source::Raw(raw),
        }
    }

    /// Arguments taken from Rust strings (used by tests and internal callers).
    pub fn from_strs(strs: &'a [&'a CStr]) -> Self {
        Self {
            source: Source::Strs(strs),
        }
    }

    /// Number of arguments left.
    pub fn len(&self) -> usize {
        match self.source {
            Source::Raw(r) => r.len(),
            Source::Strs(s) => s.len(),
        }
    }

    /// Whether no argument is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th remaining argument, without consuming anything.
    pub fn get(&self, i: usize) -> Option<&'a CStr> {
        match self.source {
            Source::Raw(r) => {
                let p = *r.get(i)?;
                // SAFETY: By the type invariant `p` points to a NUL-terminated string that is
                // valid and unchanged for `'a`.
                Some(unsafe { CStr::from_char_ptr(p) })
            }
            Source::Strs(s) => s.get(i).copied(),
        }
    }

    /// Drops the first `n` arguments (all of them if fewer are left), like `dm_consume_args()`.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.len());
        self.source = match self.source {
            Source::Raw(r) => Source::Raw(&r[n..]),
            Source::Strs(s) => Source::Strs(&s[n..]),
        };
    }

    /// Takes the next argument as a number in `range`, like `dm_read_arg()`.
    ///
    /// A missing argument is an error too; the argument is consumed either way.
    pub fn read_arg(&mut self, range: &ArgRange) -> Result<u32, CtrError> {
        self.read_checked(range, false)
    }

    /// Takes the next argument as the size of a group of arguments that follows, like
    /// `dm_read_arg_group()`: it must be in `range` and no larger than the number of arguments
    /// left after it.
    pub fn read_arg_group(&mut self, range: &ArgRange) -> Result<u32, CtrError> {
        self.read_checked(range, true)
    }

    fn read_checked(&mut self, range: &ArgRange, grouped: bool) -> Result<u32, CtrError> {
        let fail = CtrError::new(EINVAL, range.error);
        let arg = self.next().ok_or(fail)?;
        let value = parse_dm_arg_u32(arg.to_bytes()).ok_or(fail)?;
        // The group check compares against what is left after the count itself.
        let too_many = grouped && usize::try_from(value).map_or(true, |v| v > self.len());
        if value < range.min || value > range.max || too_many {
            return Err(fail);
        }
        Ok(value)
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a CStr;

    fn next(&mut self) -> Option<&'a CStr> {
        let first = self.get(0)?;
        self.consume(1);
        Some(first)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

// The glue test module (rust/dm_rthin_test.rs) builds this file too; the suite runs in dm-rthin.
#[cfg(not(rthin_glue_test))]
#[kunit_tests(rthin_dm_args)]
mod tests {
    use super::*;

    #[test]
    fn u64_accepts_what_kstrtoull_accepts() {
        assert_eq!(parse_u64(b"0"), Ok(0));
        assert_eq!(parse_u64(b"128"), Ok(128));
        assert_eq!(parse_u64(b"+7"), Ok(7));
        assert_eq!(parse_u64(b"0010"), Ok(10));
        assert_eq!(parse_u64(b"42\n"), Ok(42));
        assert_eq!(parse_u64(b"18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn u64_rejects_junk_and_overflow() {
        assert_eq!(parse_u64(b""), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"+"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"-1"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b" 1"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"1 "), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"12k"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"0x10"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"1\n\n"), Err(ParseIntError::Invalid));
        assert_eq!(parse_u64(b"++1"), Err(ParseIntError::Invalid));
        assert_eq!(
            parse_u64(b"18446744073709551616"),
            Err(ParseIntError::Overflow)
        );
        assert_eq!(
            parse_u64(b"99999999999999999999999"),
            Err(ParseIntError::Overflow)
        );
    }

    #[test]
    fn dm_arg_u32_follows_sscanf() {
        assert_eq!(parse_dm_arg_u32(b"0"), Some(0));
        assert_eq!(parse_dm_arg_u32(b"4"), Some(4));
        assert_eq!(parse_dm_arg_u32(b" 3"), Some(3));
        assert_eq!(parse_dm_arg_u32(b""), None);
        assert_eq!(parse_dm_arg_u32(b"-1"), None);
        assert_eq!(parse_dm_arg_u32(b"+1"), None);
        assert_eq!(parse_dm_arg_u32(b"1x"), None);
        assert_eq!(parse_dm_arg_u32(b"1 "), None);
        assert_eq!(parse_dm_arg_u32(b"x"), None);
        // 32-bit truncation of the 64-bit value, as the C store does.
        assert_eq!(parse_dm_arg_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_dm_arg_u32(b"4294967297"), Some(1));
        // Past 64 bits the value saturates, then truncates to u32::MAX.
        assert_eq!(parse_dm_arg_u32(b"99999999999999999999999"), Some(u32::MAX));
    }

    #[test]
    fn args_iterate_and_consume() {
        let strs = [c"a", c"b", c"c"];
        let mut args = Args::from_strs(&strs);
        assert_eq!(args.len(), 3);
        assert_eq!(args.get(2), Some(c"c"));
        assert_eq!(args.next(), Some(c"a"));
        args.consume(5);
        assert!(args.is_empty());
        assert_eq!(args.next(), None);
    }

    #[test]
    fn arg_group_checks_range_and_remaining() {
        const GROUP: ArgRange = ArgRange {
            min: 0,
            max: 4,
            error: c"bad group",
        };
        let ok = [c"2", c"x", c"y"];
        assert_eq!(Args::from_strs(&ok).read_arg_group(&GROUP), Ok(2));
        let short = [c"3", c"x", c"y"];
        let err = Args::from_strs(&short).read_arg_group(&GROUP);
        assert_eq!(err.map_err(|e| e.reason()), Err(c"bad group"));
        let big = [c"5", c"a", c"b", c"c", c"d", c"e"];
        assert!(Args::from_strs(&big).read_arg_group(&GROUP).is_err());
        let junk = [c"1a", c"x"];
        assert!(Args::from_strs(&junk).read_arg_group(&GROUP).is_err());
        // dm_read_arg() does not look at what follows.
        let single = [c"3"];
        assert_eq!(Args::from_strs(&single).read_arg(&GROUP), Ok(3));
        assert!(Args::from_strs(&[]).read_arg(&GROUP).is_err());
    }
}
