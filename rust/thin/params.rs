// SPDX-License-Identifier: GPL-2.0

//! Parsing and validation of `rthin` table lines, as dm-thin's `thin_ctr()` does it. Pure
//! functions, covered by KUnit.
//!
//! ```text
//! rthin <pool dev> <dev id> [<external origin dev>]
//! ```

use crate::dm::{parse_u64, Args, CtrError};
use kernel::prelude::*;

/// Largest thin device id: ids are 24-bit.
pub(crate) const MAX_DEV_ID: u64 = (1 << 24) - 1;

pub(crate) const ERR_ARG_COUNT: CtrError = CtrError::new(EINVAL, c"Invalid argument count");
pub(crate) const ERR_SAME_ORIGIN: CtrError = CtrError::new(EINVAL, c"Error setting origin device");
pub(crate) const ERR_DEV_ID: CtrError = CtrError::new(EINVAL, c"Invalid device id");

/// The arguments of a thin table line that are checked before any device is opened.
pub(crate) struct ThinArgs<'a> {
    pub(crate) pool_dev: &'a CStr,
    pub(crate) dev_id: &'a CStr,
    pub(crate) origin_dev: Option<&'a CStr>,
}

/// First stage of the constructor: two or three arguments, and an origin argument that differs
/// from the pool argument (compared as strings). The device id is parsed later, after the
/// devices are opened ([`parse_dev_id`]), as in dm-thin.
pub(crate) fn parse_thin_args<'a>(args: Args<'a>) -> Result<ThinArgs<'a>, CtrError> {
    if args.len() != 2 && args.len() != 3 {
        return Err(ERR_ARG_COUNT);
    }
    let pool_dev = args.get(0).ok_or(ERR_ARG_COUNT)?;
    let dev_id = args.get(1).ok_or(ERR_ARG_COUNT)?;
    let origin_dev = args.get(2);
    if origin_dev == Some(pool_dev) {
        return Err(ERR_SAME_ORIGIN);
    }
    Ok(ThinArgs {
        pool_dev,
        dev_id,
        origin_dev,
    })
}

/// Parses a thin device id: a decimal number in `0..=2^24 - 1`.
pub(crate) fn parse_dev_id(s: &CStr) -> Result<u64, CtrError> {
    match parse_u64(s.to_bytes()) {
        Ok(id) if id <= MAX_DEV_ID => Ok(id),
        _ => Err(ERR_DEV_ID),
    }
}

#[kunit_tests(rthin_thin_params)]
mod tests {
    use super::*;

    fn reason<T>(r: Result<T, CtrError>) -> Option<&'static CStr> {
        r.err().map(|e| e.reason())
    }

    #[test]
    fn dev_id_range() {
        assert_eq!(parse_dev_id(c"0"), Ok(0));
        assert_eq!(parse_dev_id(c"16777215"), Ok(MAX_DEV_ID));
        for bad in [
            c"16777216",
            c"-1",
            c"",
            c"1a",
            c"0x10",
            c" 1",
            c"18446744073709551616",
        ] {
            assert_eq!(reason(parse_dev_id(bad)), Some(c"Invalid device id"));
        }
        assert_eq!(parse_dev_id(c"x").map_err(|e| e.code()), Err(EINVAL));
    }

    #[test]
    fn argument_count_and_origin() {
        let r = |a: &[&CStr]| reason(parse_thin_args(Args::from_strs(a)));
        assert_eq!(r(&[]), Some(c"Invalid argument count"));
        assert_eq!(r(&[c"p"]), Some(c"Invalid argument count"));
        assert_eq!(
            r(&[c"p", c"1", c"o", c"x"]),
            Some(c"Invalid argument count")
        );
        assert_eq!(r(&[c"p", c"1", c"p"]), Some(c"Error setting origin device"));
        assert_eq!(r(&[c"p", c"1"]), None);
        assert_eq!(r(&[c"p", c"1", c"o"]), None);
        // The id is not checked at this stage.
        assert_eq!(r(&[c"p", c"bogus"]), None);
    }
}
