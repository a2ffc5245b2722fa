//! Btree operations: lookup, insert (top-down splitting), ordered search and iteration.
//!
//! Trees are identified by their root block; every modifying operation returns the new root
//! (the root moves when it is shadowed).  Depth is bounded by [`MAX_DEPTH`] (a tree of u64 keys
//! with nodes at least a third full cannot be deeper), which also stops cycles in corrupt trees.
//! Removal lives in `btree_remove.rs`.

use super::block::BlockManager;
use super::btree_node::{self as node, Header, MAX_VALUE_SIZE};
use super::error::{Error, Result};
use super::tm::{ReadMode, Tx};

/// Deepest tree the engine walks.  Internal nodes hold at least 84 entries, so 2^64 keys need
/// at most 11 levels.
pub const MAX_DEPTH: usize = 16;

/// What a leaf value refers to, i.e. what a new or dropped reference to a leaf means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// No references (details, index entries, counts).
    Plain,
    /// `block_time`: a data block reference.
    DataBlockTime,
    /// Root of a bottom-level mapping tree (metadata block reference).
    SubtreeRoot,
}

/// Static description of one kind of tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeInfo {
    /// Leaf value size in bytes.
    pub value_size: usize,
    /// Meaning of leaf values.
    pub values: ValueKind,
}

/// Top level of the mapping tree: dev id → bottom tree root.
pub const MAPPING_TOP_TREE: TreeInfo = TreeInfo {
    value_size: 8,
    values: ValueKind::SubtreeRoot,
};
/// Bottom level: virtual block → block_time.
pub const MAPPING_BOTTOM_TREE: TreeInfo = TreeInfo {
    value_size: 8,
    values: ValueKind::DataBlockTime,
};
/// Device details: dev id → `disk_device_details`.
pub const DETAILS_TREE: TreeInfo = TreeInfo {
    value_size: 24,
    values: ValueKind::Plain,
};
/// Data space map index: bitmap number → `disk_index_entry`.
pub const SM_INDEX_TREE: TreeInfo = TreeInfo {
    value_size: 16,
    values: ValueKind::Plain,
};
/// Space map ref-count tree: block → le32 count.
pub const REF_COUNT_TREE: TreeInfo = TreeInfo {
    value_size: 4,
    values: ValueKind::Plain,
};

/// How [`Tx::btree_update_run`] computes a key's new value: `f(j, old, new)` for `keys[j]`.
pub type UpdateFn<'a> = dyn FnMut(usize, Option<&[u8]>, &mut [u8]) -> Result<()> + 'a;

/// A copied-out leaf value (large enough for any tree).
pub type Value = [u8; MAX_VALUE_SIZE];

fn too_deep(block: u64) -> Error {
    Error::Corrupt {
        block,
        what: "btree deeper than any valid tree (cycle?)",
    }
}

fn empty_internal(block: u64) -> Error {
    Error::Corrupt {
        block,
        what: "internal btree node has no entries",
    }
}

fn copy_value(g: &super::block::Block, h: &Header, i: usize) -> Value {
    let mut v = [0u8; MAX_VALUE_SIZE];
    v[..h.value_size].copy_from_slice(node::value(g, h, i));
    v
}

impl<B: BlockManager> Tx<B> {
    /// Value stored under `k`, if any.
    pub fn btree_lookup(&self, root: u64, info: TreeInfo, k: u64) -> Result<Option<Value>> {
        self.btree_lookup_with(root, info, k, ReadMode::Blocking)
    }

    /// [`Tx::btree_lookup`]; with [`ReadMode::CacheOnly`] it never waits for I/O and fails
    /// with [`Error::WouldBlock`] at the first node not in the cache.
    pub fn btree_lookup_with(
        &self,
        root: u64,
        info: TreeInfo,
        k: u64,
        mode: ReadMode,
    ) -> Result<Option<Value>> {
        let mut loc = root;
        let mut from = 0;
        for _ in 0..MAX_DEPTH {
            let (g, h) = self.read_node_with(loc, info, from, mode)?;
            if !h.internal {
                return Ok(node::find(&g, &h, k).map(|i| copy_value(&g, &h, i)));
            }
            if h.nr == 0 {
                return Err(empty_internal(loc));
            }
            match node::lower_bound(&g, &h, k) {
                Some(i) => {
                    from = loc;
                    loc = node::value64(&g, &h, i);
                }
                None => return Ok(None),
            }
        }
        Err(too_deep(root))
    }

    /// Insert or overwrite `k`.  Returns the new root and the previous value, if any.  The
    /// caller owns the reference semantics of the old value (it is not released here).
    pub fn btree_insert(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
        v: &[u8],
    ) -> Result<(u64, Option<Value>)> {
        let (root_loc, mut g, mut h, _) = self.insert_descend(root, info, k)?;
        Ok(match node::lower_bound(&g, &h, k) {
            Some(i) if node::key(&g, &h, i) == k => {
                let old = copy_value(&g, &h, i);
                node::set_value(&mut g, &h, i, v);
                (root_loc, Some(old))
            }
            pos => {
                let i = pos.map_or(0, |i| i + 1);
                node::insert_at(&mut g, &mut h, i, k, v);
                (root_loc, None)
            }
        })
    }

    /// Insert or overwrite a run of keys (strictly ascending) with one descent for all the
    /// keys that fall into one leaf, as [`Tx::btree_insert`] of each would.  `f(j, old, new)`
    /// writes the new value of `keys[j]` given its old one (`None`: absent).  Returns the new
    /// root and how many keys were done (at least one): call again for the rest.
    pub fn btree_update_run(
        &mut self,
        root: u64,
        info: TreeInfo,
        keys: &[u64],
        f: &mut UpdateFn<'_>,
    ) -> Result<(u64, usize)> {
        let Some(&first) = keys.first() else {
            return Ok((root, 0));
        };
        let (root_loc, mut g, mut h, hi) = self.insert_descend(root, info, first)?;
        let vs = h.value_size;
        let mut j = 0;
        while j < keys.len() {
            let k = keys[j];
            if hi.is_some_and(|hi| k >= hi) || (j > 0 && k <= keys[j - 1]) {
                break;
            }
            let mut v = [0u8; MAX_VALUE_SIZE];
            match node::lower_bound(&g, &h, k) {
                Some(i) if node::key(&g, &h, i) == k => {
                    let old = copy_value(&g, &h, i);
                    f(j, Some(&old[..vs]), &mut v[..vs])?;
                    node::set_value(&mut g, &h, i, &v[..vs]);
                }
                pos => {
                    if h.is_full() {
                        break;
                    }
                    f(j, None, &mut v[..vs])?;
                    node::insert_at(&mut g, &mut h, pos.map_or(0, |i| i + 1), k, &v[..vs]);
                }
            }
            j += 1;
        }
        Ok((root_loc, j))
    }

    /// Shadow the path to the leaf where `k` belongs, splitting full nodes on the way down so
    /// that the leaf has room.  Returns the root, the leaf's guard and header, and the smallest
    /// key known to belong to a later leaf (`None`: no later leaf).
    fn insert_descend(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
    ) -> Result<(u64, B::Write, Header, Option<u64>)> {
        let (root_loc, mut g, mut h) = self.shadow(root, info, 0)?;
        if h.is_full() {
            self.split_beneath(&mut g, &mut h)?;
        }
        let mut cur = root_loc;
        let mut hi: Option<u64> = None;
        for _ in 0..MAX_DEPTH {
            if !h.internal {
                return Ok((root_loc, g, h, hi));
            }
            if h.nr == 0 {
                return Err(empty_internal(cur));
            }
            let mut i = match node::lower_bound(&g, &h, k) {
                Some(i) => i,
                None => {
                    // New smallest key: lower the separator so the parent key never exceeds
                    // the child's first key (the kernel does the same).
                    node::set_key(&mut g, &h, 0, k);
                    0
                }
            };
            let child = node::value64(&g, &h, i);
            let (mut cloc, mut cg, mut ch) = self.shadow(child, info, cur)?;
            if cloc != child {
                node::set_value64(&mut g, &h, i, cloc);
            }
            if ch.is_full() {
                let (sloc, mut sg, mut sh) = self.new_node(ch.internal, ch.value_size)?;
                let left = ch.nr / 2;
                let right = ch.nr - left;
                node::copy_entries(&mut sg, &sh, 0, &cg, &ch, left, right);
                node::set_nr(&mut sg, &mut sh, right);
                node::set_nr(&mut cg, &mut ch, left);
                let skey = node::key(&sg, &sh, 0);
                node::insert_at(&mut g, &mut h, i + 1, skey, &sloc.to_le_bytes());
                if k >= skey {
                    i += 1;
                    cg = sg;
                    ch = sh;
                    cloc = sloc;
                }
            }
            if i + 1 < h.nr {
                let next = node::key(&g, &h, i + 1);
                hi = Some(hi.map_or(next, |x| x.min(next)));
            }
            g = cg;
            h = ch;
            cur = cloc;
        }
        Err(too_deep(root))
    }

    /// Split a full root "beneath": its entries move into two new children and the root
    /// becomes an internal node pointing at them, so the root's location does not change.
    fn split_beneath(&mut self, g: &mut B::Write, h: &mut Header) -> Result<()> {
        let left = h.nr / 2;
        let right = h.nr - left;
        let (lloc, mut lg, mut lh) = self.new_node(h.internal, h.value_size)?;
        node::copy_entries(&mut lg, &lh, 0, g, h, 0, left);
        node::set_nr(&mut lg, &mut lh, left);
        let (rloc, mut rg, mut rh) = self.new_node(h.internal, h.value_size)?;
        node::copy_entries(&mut rg, &rh, 0, g, h, left, right);
        node::set_nr(&mut rg, &mut rh, right);
        let lkey = node::key(&lg, &lh, 0);
        let rkey = node::key(&rg, &rh, 0);
        *h = node::init(g, true, 8);
        node::insert_at(g, h, 0, lkey, &lloc.to_le_bytes());
        node::insert_at(g, h, 1, rkey, &rloc.to_le_bytes());
        Ok(())
    }

    /// Smallest key `>= k` and its value.
    pub fn btree_next(&self, root: u64, info: TreeInfo, k: u64) -> Result<Option<(u64, Value)>> {
        // Path of (internal node, child index taken).
        let mut stack = [(0u64, 0usize); MAX_DEPTH];
        let mut depth = 0usize;
        let mut loc = root;
        let mut from = 0u64;
        let mut seek = Some(k);
        loop {
            let (g, h) = self.read_node(loc, info, from)?;
            if h.internal {
                if h.nr == 0 {
                    return Err(empty_internal(loc));
                }
                let i = match seek {
                    Some(k) => node::lower_bound(&g, &h, k).unwrap_or(0),
                    None => 0,
                };
                if depth == MAX_DEPTH {
                    return Err(too_deep(root));
                }
                stack[depth] = (loc, i);
                depth += 1;
                from = loc;
                loc = node::value64(&g, &h, i);
                continue;
            }
            let j = match seek {
                Some(k) => match node::lower_bound(&g, &h, k) {
                    Some(i) if node::key(&g, &h, i) == k => i,
                    Some(i) => i + 1,
                    None => 0,
                },
                None => 0,
            };
            if j < h.nr {
                return Ok(Some((node::key(&g, &h, j), copy_value(&g, &h, j))));
            }
            drop(g);
            // Leaf exhausted: climb to the first ancestor with a next child, then go leftmost.
            loop {
                if depth == 0 {
                    return Ok(None);
                }
                depth -= 1;
                let (ploc, pi) = stack[depth];
                let (pg, ph) = self.read_node(ploc, info, 0)?;
                if pi + 1 < ph.nr {
                    stack[depth] = (ploc, pi + 1);
                    depth += 1;
                    from = ploc;
                    loc = node::value64(&pg, &ph, pi + 1);
                    seek = None;
                    break;
                }
            }
        }
    }

    /// Visit every entry in key order; the visitor returns `false` to stop early.
    pub fn btree_walk(
        &self,
        root: u64,
        info: TreeInfo,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut stack = [(0u64, 0usize); MAX_DEPTH];
        let mut depth = 0usize;
        let mut loc = root;
        let mut from = 0u64;
        loop {
            let (g, h) = self.read_node(loc, info, from)?;
            if h.internal {
                if h.nr == 0 {
                    return Err(empty_internal(loc));
                }
                if depth == MAX_DEPTH {
                    return Err(too_deep(root));
                }
                stack[depth] = (loc, 0);
                depth += 1;
                from = loc;
                loc = node::value64(&g, &h, 0);
                continue;
            }
            for i in 0..h.nr {
                if !visit(node::key(&g, &h, i), node::value(&g, &h, i))? {
                    return Ok(());
                }
            }
            drop(g);
            loop {
                if depth == 0 {
                    return Ok(());
                }
                depth -= 1;
                let (ploc, pi) = stack[depth];
                let (pg, ph) = self.read_node(ploc, info, 0)?;
                if pi + 1 < ph.nr {
                    stack[depth] = (ploc, pi + 1);
                    depth += 1;
                    from = ploc;
                    loc = node::value64(&pg, &ph, pi + 1);
                    break;
                }
            }
        }
    }

    /// Largest key in the tree, if any.
    pub fn btree_last_key(&self, root: u64, info: TreeInfo) -> Result<Option<u64>> {
        let mut loc = root;
        let mut from = 0;
        for _ in 0..MAX_DEPTH {
            let (g, h) = self.read_node(loc, info, from)?;
            if h.nr == 0 {
                return if h.internal {
                    Err(empty_internal(loc))
                } else {
                    Ok(None)
                };
            }
            if !h.internal {
                return Ok(Some(node::key(&g, &h, h.nr - 1)));
            }
            from = loc;
            loc = node::value64(&g, &h, h.nr - 1);
        }
        Err(too_deep(root))
    }
}
