//! Byte layout of one btree node (`struct node_header` + keys + values).
//!
//! Layout: 32-byte header, `le64 keys[max_entries]` at 32, values at `32 + 8 * max_entries`,
//! `value_size` bytes each.  Everything here works on a borrowed [`Block`] and validates the
//! header before any index derived from it is used, so corrupt nodes give errors, not panics.

use super::block::{le32, le64, put32, put64, Block, BLOCK_SIZE};
use super::error::{Error, Result};

/// Node header size.
pub const HEADER_SIZE: usize = 32;
/// Header flag: internal node (values are child block numbers).
pub const INTERNAL_NODE: u32 = 1;
/// Header flag: leaf node.
pub const LEAF_NODE: u32 = 2;
/// Largest value size any thin tree uses (device details).
pub const MAX_VALUE_SIZE: usize = 24;

const FLAGS_OFF: usize = 4;
const NR_OFF: usize = 16;
const MAX_OFF: usize = 20;
const VSIZE_OFF: usize = 24;

/// `max_entries` the kernel gives a node with `value_size` values: a multiple of 3 so that
/// splits and merges keep every non-root node at least a third full.
pub const fn calc_max_entries(value_size: usize) -> u32 {
    let n = (BLOCK_SIZE - HEADER_SIZE) / (8 + value_size);
    (3 * (n / 3)) as u32
}

/// Decoded and validated node header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// True for an internal node.
    pub internal: bool,
    /// Number of live entries.
    pub nr: usize,
    /// Capacity.
    pub max: usize,
    /// Bytes per value.
    pub value_size: usize,
}

impl Header {
    /// Byte offset of key `i`.
    #[inline]
    pub fn key_off(&self, i: usize) -> usize {
        HEADER_SIZE + 8 * i
    }

    /// Byte offset of value `i`.
    #[inline]
    pub fn value_off(&self, i: usize) -> usize {
        HEADER_SIZE + 8 * self.max + self.value_size * i
    }

    /// True when no entry can be added.
    pub fn is_full(&self) -> bool {
        self.nr >= self.max
    }

    /// Fewest entries a non-root node may hold.
    pub fn min_entries(&self) -> usize {
        self.max / 3
    }
}

/// Validate the header of node `loc`; `leaf_value_size` is the value size of the tree's leaves.
pub fn check(loc: u64, b: &Block, leaf_value_size: usize) -> Result<Header> {
    let flags = le32(b, FLAGS_OFF);
    let internal = match flags {
        INTERNAL_NODE => true,
        LEAF_NODE => false,
        _ => {
            return Err(Error::Corrupt {
                block: loc,
                what: "btree node flags are neither internal nor leaf",
            })
        }
    };
    let nr = le32(b, NR_OFF) as usize;
    let max = le32(b, MAX_OFF) as usize;
    let value_size = le32(b, VSIZE_OFF) as usize;
    let want_vs = if internal { 8 } else { leaf_value_size };
    if value_size != want_vs {
        return Err(Error::Corrupt {
            block: loc,
            what: "btree node has the wrong value size for its tree",
        });
    }
    // (8 + value_size) * max must fit in the block: compare by division to avoid overflow.
    if max == 0 || max > (BLOCK_SIZE - HEADER_SIZE) / (8 + value_size) {
        return Err(Error::Corrupt {
            block: loc,
            what: "btree node max_entries does not fit in a block",
        });
    }
    if nr > max {
        return Err(Error::Corrupt {
            block: loc,
            what: "btree node has more entries than max_entries",
        });
    }
    Ok(Header {
        internal,
        nr,
        max,
        value_size,
    })
}

/// Key `i` (caller guarantees `i < h.max`).
#[inline]
pub fn key(b: &Block, h: &Header, i: usize) -> u64 {
    le64(b, h.key_off(i))
}

/// Value bytes of entry `i`.
#[inline]
pub fn value<'a>(b: &'a Block, h: &Header, i: usize) -> &'a [u8] {
    let o = h.value_off(i);
    &b[o..o + h.value_size]
}

/// Value `i` read as a little-endian u64 (internal nodes, mapping leaves).
#[inline]
pub fn value64(b: &Block, h: &Header, i: usize) -> u64 {
    le64(b, h.value_off(i))
}

/// Set key `i`.
#[inline]
pub fn set_key(b: &mut Block, h: &Header, i: usize, k: u64) {
    put64(b, h.key_off(i), k);
}

/// Set value `i`.
#[inline]
pub fn set_value(b: &mut Block, h: &Header, i: usize, v: &[u8]) {
    let o = h.value_off(i);
    b[o..o + h.value_size].copy_from_slice(&v[..h.value_size]);
}

/// Set value `i` from a u64.
#[inline]
pub fn set_value64(b: &mut Block, h: &Header, i: usize, v: u64) {
    put64(b, h.value_off(i), v);
}

/// Store a new entry count (the header copy is updated too).
pub fn set_nr(b: &mut Block, h: &mut Header, nr: usize) {
    h.nr = nr;
    put32(b, NR_OFF, nr as u32);
}

/// Turn `b` into an empty node.
pub fn init(b: &mut Block, internal: bool, value_size: usize) -> Header {
    b.fill(0);
    let max = calc_max_entries(value_size);
    put32(
        b,
        FLAGS_OFF,
        if internal { INTERNAL_NODE } else { LEAF_NODE },
    );
    put32(b, NR_OFF, 0);
    put32(b, MAX_OFF, max);
    put32(b, VSIZE_OFF, value_size as u32);
    Header {
        internal,
        nr: 0,
        max: max as usize,
        value_size,
    }
}

/// Change the node type flag (used when a root is split beneath or collapsed).
pub fn set_internal(b: &mut Block, h: &mut Header, internal: bool) {
    h.internal = internal;
    put32(
        b,
        FLAGS_OFF,
        if internal { INTERNAL_NODE } else { LEAF_NODE },
    );
}

/// Largest `i` with `key(i) <= k`; `None` when `k` is below every key (or the node is empty).
pub fn lower_bound(b: &Block, h: &Header, k: u64) -> Option<usize> {
    let (mut lo, mut hi) = (0usize, h.nr);
    // Invariant: keys[..lo] <= k < keys[hi..]
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(b, h, mid) <= k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Index of exactly `k`, if present.
pub fn find(b: &Block, h: &Header, k: u64) -> Option<usize> {
    lower_bound(b, h, k).filter(|&i| key(b, h, i) == k)
}

/// Insert an entry at `i`, shifting later entries up (caller ensures room and order).
pub fn insert_at(b: &mut Block, h: &mut Header, i: usize, k: u64, v: &[u8]) {
    let nr = h.nr;
    let ko = h.key_off(i);
    b.copy_within(ko..h.key_off(nr), ko + 8);
    let vo = h.value_off(i);
    b.copy_within(vo..h.value_off(nr), vo + h.value_size);
    set_key(b, h, i, k);
    set_value(b, h, i, v);
    set_nr(b, h, nr + 1);
}

/// Delete entry `i`, shifting later entries down.
pub fn delete_at(b: &mut Block, h: &mut Header, i: usize) {
    let nr = h.nr;
    b.copy_within(h.key_off(i + 1)..h.key_off(nr), h.key_off(i));
    b.copy_within(h.value_off(i + 1)..h.value_off(nr), h.value_off(i));
    set_nr(b, h, nr - 1);
}

/// Delete entries `i..i + n`, shifting later entries down.
pub fn delete_range(b: &mut Block, h: &mut Header, i: usize, n: usize) {
    let nr = h.nr;
    b.copy_within(h.key_off(i + n)..h.key_off(nr), h.key_off(i));
    b.copy_within(h.value_off(i + n)..h.value_off(nr), h.value_off(i));
    set_nr(b, h, nr - n);
}

/// Copy `count` entries from `src[si..]` into `dst[di..]` (same geometry; no count update).
pub fn copy_entries(
    dst: &mut Block,
    dh: &Header,
    di: usize,
    src: &Block,
    sh: &Header,
    si: usize,
    count: usize,
) {
    dst[dh.key_off(di)..dh.key_off(di + count)]
        .copy_from_slice(&src[sh.key_off(si)..sh.key_off(si + count)]);
    dst[dh.value_off(di)..dh.value_off(di + count)]
        .copy_from_slice(&src[sh.value_off(si)..sh.value_off(si + count)]);
}

/// Move entries `[from..nr]` of a node down to position 0 (drop the first `from`).
pub fn drop_front(b: &mut Block, h: &mut Header, from: usize) {
    let nr = h.nr;
    b.copy_within(h.key_off(from)..h.key_off(nr), h.key_off(0));
    b.copy_within(h.value_off(from)..h.value_off(nr), h.value_off(0));
    set_nr(b, h, nr - from);
}

/// Shift all entries up by `n` slots, leaving room at the front (caller ensures capacity).
pub fn open_front(b: &mut Block, h: &mut Header, n: usize) {
    let nr = h.nr;
    b.copy_within(h.key_off(0)..h.key_off(nr), h.key_off(n));
    b.copy_within(h.value_off(0)..h.value_off(nr), h.value_off(n));
    set_nr(b, h, nr + n);
}
