//! Library behind the `rthinctl` binary: offline tools built on the rthin metadata engine.
//!
//! * [`check`]: structural and reference-count verification (what `thin_check` checks);
//! * [`dump`]: `thin_dump` 1.1.0 compatible XML;
//! * [`restore`]: XML → metadata image through the engine;
//! * [`ls`]: per-device mapped / exclusive / shared block counts.

pub mod check;
pub mod dump;
pub mod ls;
pub mod raw;
pub mod restore;
pub mod xml;
