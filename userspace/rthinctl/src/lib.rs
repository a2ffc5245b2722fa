//! Library behind the `rthinctl` binary.
//!
//! Offline tools built on the rthin metadata engine:
//! * [`check`]: structural and reference-count verification (what `thin_check` checks);
//! * [`dump`]: `thin_dump` 1.1.0 compatible XML;
//! * [`restore`]: XML → metadata image through the engine, streamed, trees built bottom-up;
//! * [`ls`], [`usage`], [`thin_ls`]: per-device mapped / exclusive / shared block counts.
//!
//! Pools and volumes on a running kernel:
//! * [`dm`]: the device-mapper ioctls, with a unit-tested buffer layout; [`loopdev`]: loop
//!   devices; [`devnode`]: `/dev/mapper` nodes;
//! * [`tables`]: dm-thin's table, message and status strings; [`size`]: size arguments;
//! * [`state`]: the crash-safe state file; [`lock`]: one rthinctl at a time; [`txn`]: transaction-id bracketing and recovery;
//! * [`sys`]: every change, with `--explain` / `--dry-run`;
//! * [`pool`], [`thin`], [`listing`], [`monitor`]: the commands.

pub mod check;
pub mod devnode;
pub mod dm;
pub mod dump;
pub mod error;
pub mod listing;
pub mod lock;
pub mod loopdev;
pub mod ls;
pub mod monitor;
pub mod pool;
pub mod pools;
pub mod raw;
pub mod restore;
pub mod size;
pub mod state;
pub mod sys;
pub mod tables;
pub mod thin;
pub mod thin_ls;
pub mod txn;
pub mod usage;
/// Prints `value` as pretty JSON on stdout (the `--json` output of the listing commands).
pub fn print_json<T: serde::Serialize>(value: &T) -> error::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| other!("{e}"))?;
    println!("{text}");
    Ok(())
}
