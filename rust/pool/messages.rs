// SPDX-License-Identifier: GPL-2.0

//! Pool messages (`dmsetup message <pool> 0 "<msg>"`), with dm-thin's argument rules and
//! errnos: `create_thin`, `create_snap`, `delete`, `set_transaction_id`,
//! `reserve_metadata_snap`, `release_metadata_snap`. Every successful message is followed by a
//! commit, so its effect is durable when `dmsetup` returns.

use super::{
    object::{MetaState, PoolObject},
    worker::{commit, metadata_failed},
};
use crate::{
    dm::{self, parse_u64, Args},
    metadata::Error as MetaError,
};
use kernel::{prelude::*, sync::Arc};

/// Largest thin device id (24 bits).
const MAX_DEV_ID: u64 = (1 << 24) - 1;

/// A parsed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Message {
    CreateThin(u64),
    CreateSnap { id: u64, origin: u64 },
    Delete(u64),
    SetTransactionId { current: u64, new: u64 },
    ReserveMetadataSnap,
    ReleaseMetadataSnap,
}

fn arg_count(args: &Args<'_>, want: usize) -> Result {
    if args.len() != want {
        pr_warn!(
            "Incorrect number of arguments ({}) to pool message\n",
            args.len()
        );
        return Err(EINVAL);
    }
    Ok(())
}

fn dev_id(args: &Args<'_>, i: usize) -> Result<u64> {
    let s = args.get(i).ok_or(EINVAL)?;
    match parse_u64(s.to_bytes()) {
        Ok(id) if id <= MAX_DEV_ID => Ok(id),
        _ => {
            pr_warn!("Message received with invalid device id: {}\n", s);
            Err(EINVAL)
        }
    }
}

fn number(args: &Args<'_>, i: usize, what: &str) -> Result<u64> {
    let s = args.get(i).ok_or(EINVAL)?;
    parse_u64(s.to_bytes()).map_err(|_| {
        pr_warn!("set_transaction_id message: Unrecognised {} {}.\n", what, s);
        EINVAL
    })
}

/// Parses a message as dm-thin's `pool_message` does (the word case-insensitively, exact
/// argument counts, base-10 numbers).
pub(crate) fn parse(args: &Args<'_>) -> Result<Message> {
    let word = args.get(0).ok_or(EINVAL)?.to_bytes();
    let is = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
    if is("create_thin") {
        arg_count(args, 2)?;
        Ok(Message::CreateThin(dev_id(args, 1)?))
    } else if is("create_snap") {
        arg_count(args, 3)?;
        Ok(Message::CreateSnap {
            id: dev_id(args, 1)?,
            origin: dev_id(args, 2)?,
        })
    } else if is("delete") {
        arg_count(args, 2)?;
        Ok(Message::Delete(dev_id(args, 1)?))
    } else if is("set_transaction_id") {
        arg_count(args, 3)?;
        Ok(Message::SetTransactionId {
            current: number(args, 1, "current transaction id")?,
            new: number(args, 2, "new transaction id")?,
        })
    } else if is("reserve_metadata_snap") {
        arg_count(args, 1)?;
        Ok(Message::ReserveMetadataSnap)
    } else if is("release_metadata_snap") {
        arg_count(args, 1)?;
        Ok(Message::ReleaseMetadataSnap)
    } else {
        pr_warn!(
            "Unrecognised thin pool target message received: {}\n",
            args.get(0).unwrap_or(c"")
        );
        Err(EINVAL)
    }
}

fn errno(e: MetaError) -> Error {
    Error::from_errno(-e.errno())
}

/// Runs one message against the metadata, then commits.
pub(crate) fn handle(pool: &Arc<PoolObject>, args: &Args<'_>) -> Result {
    if !pool.mode().metadata_writable() {
        pr_err!(
            "{}: unable to service pool target messages in READ_ONLY or FAIL mode\n",
            pool.key.pool_md
        );
        return Err(dm::eopnotsupp());
    }
    let msg = parse(args)?;
    let mut meta = pool.meta.write();
    let r = run(pool, &mut meta, msg);
    if let Err(e) = r {
        if meta.engine.has_failed() {
            metadata_failed(pool, &mut meta, "message", e);
        } else {
            // Refused before anything changed: dm-thin logs these too.
            pr_warn!("{}: message {:?} failed: {:?}\n", pool.key.pool_md, msg, e);
        }
        return Err(errno(e));
    }
    commit(pool, &mut meta);
    Ok(())
}

fn run(pool: &PoolObject, meta: &mut MetaState, msg: Message) -> Result<(), MetaError> {
    let engine = &mut meta.engine;
    match msg {
        Message::CreateThin(id) => engine.create_thin(id),
        Message::CreateSnap { id, origin } => engine.create_snap(id, origin),
        Message::Delete(id) => {
            if pool.thin_is_active(id) {
                return Err(MetaError::Busy("thin device is active"));
            }
            engine.delete_thin(id)
        }
        Message::SetTransactionId { current, new } => engine.set_transaction_id(current, new),
        Message::ReserveMetadataSnap => engine.reserve_metadata_snap().map(|_| ()),
        Message::ReleaseMetadataSnap => engine.release_metadata_snap(),
    }
}

#[kunit_tests(rthin_pool_messages)]
mod tests {
    use super::*;

    fn p(a: &[&CStr]) -> Result<Message> {
        parse(&Args::from_strs(a))
    }

    #[test]
    fn words_and_counts() {
        assert_eq!(p(&[c"create_thin", c"0"]), Ok(Message::CreateThin(0)));
        assert_eq!(p(&[c"CREATE_THIN", c"7"]), Ok(Message::CreateThin(7)));
        assert_eq!(
            p(&[c"create_snap", c"1", c"0"]),
            Ok(Message::CreateSnap { id: 1, origin: 0 })
        );
        assert_eq!(
            p(&[c"delete", c"16777215"]),
            Ok(Message::Delete(MAX_DEV_ID))
        );
        assert_eq!(
            p(&[c"set_transaction_id", c"0", c"18446744073709551615"]),
            Ok(Message::SetTransactionId {
                current: 0,
                new: u64::MAX
            })
        );
        assert_eq!(
            p(&[c"reserve_metadata_snap"]),
            Ok(Message::ReserveMetadataSnap)
        );
        assert_eq!(
            p(&[c"release_metadata_snap"]),
            Ok(Message::ReleaseMetadataSnap)
        );
        // Exact argument counts, known words, 24-bit decimal ids.
        for bad in [
            &[c"create_thin"][..],
            &[c"create_thin", c"0", c"1"],
            &[c"create_snap", c"1"],
            &[c"delete"],
            &[c"set_transaction_id", c"0"],
            &[c"reserve_metadata_snap", c"1"],
            &[c"create_thin", c"16777216"],
            &[c"create_thin", c"0x1"],
            &[c"create_thin", c"-1"],
            &[c"set_transaction_id", c"a", c"1"],
            &[c"frobnicate"],
            &[],
        ] {
            assert_eq!(p(bad), Err(EINVAL));
        }
    }

    #[test]
    fn engine_errors_keep_their_errno() {
        assert_eq!(errno(MetaError::DeviceExists(1)), EEXIST);
        assert_eq!(errno(MetaError::NoDevice(1)), dm::enodata());
        assert_eq!(errno(MetaError::Busy("held")), EBUSY);
        assert_eq!(errno(MetaError::Invalid("mismatch")), EINVAL);
    }
}
