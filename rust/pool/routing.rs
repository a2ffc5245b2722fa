// SPDX-License-Identifier: GPL-2.0

//! Where a thin bio goes: the rules `map`'s fast path and the worker share, so they cannot
//! disagree.
//!
//! `map` must not sleep, so it resolves a bio itself only when no metadata has to change and
//! the mapping is already in memory; everything else is deferred to the worker (dm-thin's
//! `thin_bio_map`). The worker applies [`route`] to the same lookup, with I/O allowed.

use super::FastPath;
use crate::{dm::BioOp, metadata::Mapping};
use kernel::prelude::*;

/// What a read or write of one virtual block needs, given the block's mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Read or write this data block in place.
    Remap(u64),
    /// A write to a hole, or to a block shared with a snapshot (the block to copy from): it
    /// needs a new data block.
    Provision(Option<u64>),
    /// A read of a hole: the external origin's data if the thin has one, else zeroes.
    Hole,
}

/// The route of a read (`is_write` false) or write of a block mapped as `mapping`.
pub(crate) fn route(is_write: bool, mapping: Option<Mapping>) -> Route {
    match mapping {
        Some(m) if !(is_write && m.shared) => Route::Remap(m.data_block),
        Some(m) => Route::Provision(Some(m.data_block)),
        None if is_write => Route::Provision(None),
        None => Route::Hole,
    }
}

/// Whether `map` may try a bio of operation `op` itself: `Some(is_write)` for plain reads and
/// writes. FLUSH/FUA bios go to the worker, which commits first when the metadata changed;
/// discards change the metadata.
pub(crate) fn fast_candidate(op: BioOp, durable: bool) -> Option<bool> {
    match op {
        BioOp::Read if !durable => Some(false),
        BioOp::Write if !durable => Some(true),
        _ => None,
    }
}

/// `map`'s decision for a read or write of a block, given whether the block's cell is locked
/// (a provisioning in flight), the outcome of the non-blocking lookup (`None`: not decided
/// without I/O, or failed: the worker looks again and handles errors) and whether the thin
/// has an external origin.
pub(crate) fn fast_path(
    is_write: bool,
    in_cell: bool,
    lookup: Option<Option<Mapping>>,
    has_origin: bool,
) -> FastPath {
    if in_cell {
        return FastPath::Defer;
    }
    match lookup.map(|m| route(is_write, m)) {
        Some(Route::Remap(block)) => FastPath::Remap(block),
        Some(Route::Hole) if !has_origin => FastPath::Zeroes,
        _ => FastPath::Defer,
    }
}

#[kunit_tests(rthin_pool_routing)]
mod tests {
    use super::*;

    fn mapped(data_block: u64, shared: bool) -> Option<Mapping> {
        Some(Mapping {
            data_block,
            time: 0,
            shared,
        })
    }

    #[test]
    fn routes_follow_mapping_and_sharing() {
        assert_eq!(route(false, mapped(7, false)), Route::Remap(7));
        assert_eq!(route(true, mapped(7, false)), Route::Remap(7));
        // Reads of a shared block use it; writes break the sharing.
        assert_eq!(route(false, mapped(7, true)), Route::Remap(7));
        assert_eq!(route(true, mapped(7, true)), Route::Provision(Some(7)));
        assert_eq!(route(true, None), Route::Provision(None));
        assert_eq!(route(false, None), Route::Hole);
    }

    #[test]
    fn only_plain_reads_and_writes_are_candidates() {
        assert_eq!(fast_candidate(BioOp::Read, false), Some(false));
        assert_eq!(fast_candidate(BioOp::Write, false), Some(true));
        // FUA / PREFLUSH writes wait for the worker's commit.
        assert_eq!(fast_candidate(BioOp::Write, true), None);
        assert_eq!(fast_candidate(BioOp::Read, true), None);
        for op in [
            BioOp::Flush,
            BioOp::Discard,
            BioOp::SecureErase,
            BioOp::WriteZeroes,
            BioOp::Other(99),
        ] {
            assert_eq!(fast_candidate(op, false), None);
        }
    }

    #[test]
    fn map_resolves_only_what_needs_no_change_and_no_io() {
        // Provisioned, unshared: remapped for both reads and writes.
        assert_eq!(
            fast_path(true, false, Some(mapped(3, false)), false),
            FastPath::Remap(3)
        );
        assert_eq!(
            fast_path(false, false, Some(mapped(3, true)), true),
            FastPath::Remap(3)
        );
        // A hole reads as zeroes, unless an external origin holds the data.
        assert_eq!(fast_path(false, false, Some(None), false), FastPath::Zeroes);
        assert_eq!(fast_path(false, false, Some(None), true), FastPath::Defer);
    }

    #[test]
    fn map_defers_provisioning_cells_and_cache_misses() {
        // Writes that need a new block.
        assert_eq!(fast_path(true, false, Some(None), false), FastPath::Defer);
        assert_eq!(
            fast_path(true, false, Some(mapped(3, true)), false),
            FastPath::Defer
        );
        // A provisioning of the block is in flight: even a mapped block waits for it.
        assert_eq!(
            fast_path(false, true, Some(mapped(3, false)), false),
            FastPath::Defer
        );
        assert_eq!(fast_path(false, true, Some(None), false), FastPath::Defer);
        // Not decidable without I/O (or the lookup failed).
        assert_eq!(fast_path(false, false, None, false), FastPath::Defer);
        assert_eq!(fast_path(true, false, None, false), FastPath::Defer);
    }
}
