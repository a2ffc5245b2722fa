//! Bottom-up btree construction (a bulk load) from entries in increasing key order.
//!
//! Restore tools know every entry of a tree in key order before the tree exists.  Inserting
//! them one at a time splits nodes in half and leaves every leaf about half full; building the
//! tree bottom-up packs each node full instead, and touches every block once.
//!
//! * [`LeafRunBuilder`] packs entries into leaves in a buffer the caller hands in (the engine
//!   allocates nothing), writing a leaf out when it is full.  Leaves built on their own are the
//!   unit of sharing between trees (thin_dump's `<def>`: a run of leaves several devices
//!   reference).
//! * [`TreeBuilder`] puts a tree together: entries (through its own [`LeafRunBuilder`]) and
//!   whole leaves built elsewhere ([`TreeBuilder::push_leaf`]), with internal levels above them,
//!   one node in construction per level.  [`TreeBuilder::finish`] returns the root.
//!
//! Node shape: every node is full except the last one of each level, which takes entries from
//! its full left neighbour when it would hold fewer than `max_entries / 3` (the minimum the
//! kernel and thin_check demand of non-root nodes), so both end up at least half full.  A leaf
//! pushed whole stays as it is (shared) only where every leaf around it can hold the minimum:
//! the leaf before it is closed early (balanced with a full one of ours before it if short),
//! and the leaf waits until enough entries follow it, another whole leaf follows, or the tree
//! ends.  Otherwise its entries are copied into the tree's own leaves, and so are those of a
//! whole leaf under the minimum unless it is the entire tree.  A root with a single child is
//! never built: the child is the root.
//!
//! References: a new node has count 1 (the reference its parent holds).  The caller adds the
//! references the values it pushes hold (data blocks of a mapping tree) and one reference for
//! every whole leaf it pushes; when the builder copies a whole leaf's entries instead, it adds
//! the copies' references and drops that one itself.  Nothing here recurses; state is a fixed
//! array of [`MAX_DEPTH`] levels (a [`TreeBuilder`] is about 1.3 KiB).

use super::block::{Block, BlockKind, BlockManager};
use super::btree::{TreeInfo, MAX_DEPTH};
use super::btree_node::{self as node, Header};
use super::error::{Error, Result};
use super::tm::Tx;

/// A finished leaf: where it is and the keys it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafRef {
    /// Block of the leaf.
    pub loc: u64,
    /// Its smallest key (the key its parent stores).
    pub first_key: u64,
    /// Its largest key.
    pub last_key: u64,
}

const NOT_ASCENDING: Error = Error::Invalid("btree build: keys are not in increasing order");

fn write_leaf<B: BlockManager>(tx: &mut Tx<B>, buf: &Block) -> Result<u64> {
    let loc = tx.meta_alloc()?;
    let mut g = tx.bm.new_block(loc, BlockKind::Node)?;
    g.copy_from_slice(buf);
    Ok(loc)
}

/// Packs entries in increasing key order into full leaves (see the module docs).
///
/// The leaf being filled lives in a buffer the caller passes to every call (the same buffer
/// each time, untouched in between).  The last full leaf written is held back until the next
/// one is complete, so that [`LeafRunBuilder::finish`] can balance the final leaf with it.
#[derive(Clone, Copy, Debug)]
pub struct LeafRunBuilder {
    info: TreeInfo,
    /// Header of the leaf in the buffer; `nr == 0` means the buffer holds nothing yet.
    h: Header,
    first_key: u64,
    last_key: Option<u64>,
    /// A full leaf already written, not yet handed out.
    held: Option<LeafRef>,
}

impl LeafRunBuilder {
    /// A builder for leaves of trees of kind `info`.
    pub const fn new(info: TreeInfo) -> Self {
        LeafRunBuilder {
            info,
            h: Header {
                internal: false,
                nr: 0,
                max: node::calc_max_entries(info.value_size) as usize,
                value_size: info.value_size,
            },
            first_key: 0,
            last_key: None,
            held: None,
        }
    }

    /// Largest key pushed so far.
    pub fn last_key(&self) -> Option<u64> {
        self.last_key
    }

    /// Entries in the leaf being filled.
    pub fn nr_buffered(&self) -> usize {
        self.h.nr
    }

    /// True when nothing is buffered or held.
    pub fn is_empty(&self) -> bool {
        self.h.nr == 0 && self.held.is_none()
    }

    /// True when no full leaf is held back (only the buffer, if anything, has entries).
    pub fn holds_no_leaf(&self) -> bool {
        self.held.is_none()
    }

    /// Puts the entries of finished leaf `leaf` (keys below everything buffered) in front of
    /// the buffered ones, with the references they hold, and drops the reference to `leaf`
    /// (which the caller handed over).  Only while no full leaf is held back.  When the
    /// entries do not fit one leaf, the first part is written as a leaf of its own and
    /// returned; the rest stays buffered (both at least half full).
    pub fn prepend_leaf<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        leaf: LeafRef,
    ) -> Result<Option<LeafRef>> {
        if self.held.is_some() {
            return Err(Error::Invalid("btree build: prepend behind a held leaf"));
        }
        let vs = self.info.value_size;
        let (g, lh) = tx.read_node(leaf.loc, self.info, leaf.loc)?;
        if lh.internal || lh.nr == 0 {
            return Err(Error::Invalid("btree build: a pushed leaf is not a leaf"));
        }
        let s = lh.nr;
        if self.h.nr == 0 {
            self.h = node::init(buf, false, vs);
            self.last_key = Some(node::key(&g, &lh, s - 1));
        }
        let n = self.h.nr;
        let split = if s + n > self.h.max { (s + n) / 2 } else { 0 };
        let mut out = None;
        if split > 0 {
            let loc = tx.meta_alloc()?;
            let mut ng = tx.bm.new_block(loc, BlockKind::Node)?;
            ng.copy_from_slice(&g[..]);
            let mut nh = lh;
            node::set_nr(&mut ng, &mut nh, split);
            out = Some(LeafRef {
                loc,
                first_key: node::key(&ng, &nh, 0),
                last_key: node::key(&ng, &nh, split - 1),
            });
        }
        node::open_front(buf, &mut self.h, s - split);
        node::copy_entries(buf, &self.h, 0, &g, &lh, split, s - split);
        self.first_key = node::key(buf, &self.h, 0);
        // The copies hold references of their own.
        let mut v = [0u8; node::MAX_VALUE_SIZE];
        for i in 0..s {
            v[..vs].copy_from_slice(node::value(&g, &lh, i));
            tx.value_inc(self.info.values, &v)?;
        }
        drop(g);
        tx.dec_tree(leaf.loc, self.info, 0)?;
        Ok(out)
    }

    /// Appends `key → value`; `key` must exceed every key pushed before.  Returns a leaf when
    /// one is complete (in key order).
    pub fn push<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        key: u64,
        value: &[u8],
    ) -> Result<Option<LeafRef>> {
        if self.last_key.is_some_and(|l| key <= l) {
            return Err(NOT_ASCENDING);
        }
        if value.len() < self.info.value_size {
            return Err(Error::Invalid("btree build: value shorter than the tree's"));
        }
        let mut out = None;
        if self.h.nr == self.h.max {
            // The buffer is full and more follows: write it, hand out the one held before.
            let loc = write_leaf(tx, buf)?;
            out = self.held.replace(LeafRef {
                loc,
                first_key: self.first_key,
                last_key: self.last_key.unwrap_or(self.first_key),
            });
            self.h.nr = 0;
        }
        if self.h.nr == 0 {
            self.h = node::init(buf, false, self.info.value_size);
            self.first_key = key;
        }
        let i = self.h.nr;
        node::set_key(buf, &self.h, i, key);
        node::set_value(buf, &self.h, i, value);
        node::set_nr(buf, &mut self.h, i + 1);
        self.last_key = Some(key);
        Ok(out)
    }

    /// Writes what is left: up to two leaves, in key order (the held full leaf and the one in
    /// the buffer, balanced when the latter is under the minimum).  The builder is then empty
    /// (keys must still increase).
    pub fn finish<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
    ) -> Result<[Option<LeafRef>; 2]> {
        let held = self.held.take();
        if self.h.nr == 0 {
            return Ok([held, None]);
        }
        let mut held = held;
        if let Some(prev) = held.as_mut() {
            if self.h.nr < self.h.min_entries() {
                let mut g = tx.write(prev.loc, BlockKind::Node, prev.loc)?;
                let mut ph = node::check(prev.loc, &g, self.info.value_size)?;
                let total = ph.nr + self.h.nr;
                let keep = total / 2;
                let moved = ph.nr - keep;
                node::open_front(buf, &mut self.h, moved);
                node::copy_entries(buf, &self.h, 0, &g, &ph, keep, moved);
                node::set_nr(&mut g, &mut ph, keep);
                prev.last_key = node::key(&g, &ph, keep - 1);
                self.first_key = node::key(buf, &self.h, 0);
            }
        }
        let loc = write_leaf(tx, buf)?;
        let last = LeafRef {
            loc,
            first_key: self.first_key,
            last_key: self.last_key.unwrap_or(self.first_key),
        };
        self.h.nr = 0;
        Ok([held, Some(last)])
    }
}

/// One internal level of a [`TreeBuilder`].
#[derive(Clone, Copy, Debug)]
struct Level {
    /// The first child reported before this level has a node: (key, block).
    single: Option<(u64, u64)>,
    /// Node being filled: block, first key, entries.
    cur: Option<(u64, u64, usize)>,
    /// The previous node of this level (full).
    prev: Option<u64>,
}

/// Builds one tree bottom-up (see the module docs).
///
/// A leaf pushed whole ([`TreeBuilder::push_leaf`]) is kept pending until what follows shows
/// it may stay as it is: at least a minimum's worth of entries, another leaf that may stay, or
/// the end of the tree.  Otherwise its entries are copied into the tree's own leaves (so no
/// leaf but the root ever holds fewer than the minimum), and so are the entries of a pushed
/// leaf under the minimum, unless it is the whole tree.
#[derive(Clone, Copy, Debug)]
pub struct TreeBuilder {
    leaves: LeafRunBuilder,
    /// A whole leaf not yet placed, with its entry count.
    pending: Option<(LeafRef, usize)>,
    /// `levels[i]`: internal level `i + 1` (0 = the leaves' parents).
    levels: [Level; MAX_DEPTH],
    last_key: Option<u64>,
    /// Leaves placed in the tree so far.
    nr_leaves: u64,
}

/// Entries copied from a leaf per read (on the stack: keep small).
const COPY_BATCH: usize = 16;

impl TreeBuilder {
    /// A builder for a tree of kind `info`.
    ///
    /// About 1.3 KiB by value: inlined where it is used, so the value is built in its final
    /// place and no out-of-line copy of it sits in a kernel stack frame (the module has none).
    #[inline(always)]
    pub const fn new(info: TreeInfo) -> Self {
        TreeBuilder {
            leaves: LeafRunBuilder::new(info),
            pending: None,
            levels: [Level {
                single: None,
                cur: None,
                prev: None,
            }; MAX_DEPTH],
            last_key: None,
            nr_leaves: 0,
        }
    }

    /// Largest key in the tree so far.
    pub fn last_key(&self) -> Option<u64> {
        self.last_key
    }

    fn min_entries(&self) -> usize {
        node::calc_max_entries(self.leaves.info.value_size) as usize / 3
    }

    /// Appends `key → value` (`key` greater than every key before).
    pub fn push<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        key: u64,
        value: &[u8],
    ) -> Result<()> {
        if self.last_key.is_some_and(|l| key <= l) {
            return Err(NOT_ASCENDING);
        }
        self.push_entry(tx, buf, key, value)?;
        self.last_key = Some(key);
        Ok(())
    }

    fn push_entry<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        key: u64,
        value: &[u8],
    ) -> Result<()> {
        if let Some(l) = self.leaves.push(tx, buf, key, value)? {
            self.add_leaf(tx, l)?;
        }
        if self.pending.is_some() && self.leaves.nr_buffered() >= self.min_entries() {
            // Enough follows the pending leaf: it may stay as it is (if it is big enough).
            self.place_pending(tx, buf)?;
        }
        Ok(())
    }

    /// Appends a finished leaf (one shared with other trees, say); its keys must all exceed
    /// the keys before.  The builder takes over one reference to the leaf from the caller: the
    /// tree keeps it when the leaf goes in as it is, and when its entries are copied instead,
    /// the copies gain the references they hold and the leaf loses this one.
    pub fn push_leaf<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        leaf: LeafRef,
    ) -> Result<()> {
        if self.last_key.is_some_and(|l| leaf.first_key <= l) || leaf.last_key < leaf.first_key {
            return Err(NOT_ASCENDING);
        }
        let nr = {
            let (_, h) = tx.read_node(leaf.loc, self.leaves.info, leaf.loc)?;
            if h.internal || h.nr == 0 {
                return Err(Error::Invalid("btree build: a pushed leaf is not a leaf"));
            }
            h.nr
        };
        self.place_pending(tx, buf)?;
        let min = self.min_entries();
        let n = self.leaves.nr_buffered();
        let tree_empty = self.nr_leaves == 0 && self.leaves.is_empty();
        if (nr < min && !tree_empty) || (n > 0 && n < min && self.leaves.holds_no_leaf()) {
            // It cannot stand next to what is there: copy its entries.
            self.copy_leaf(tx, buf, leaf, nr)?;
        } else {
            self.flush_leaves(tx, buf)?;
            self.pending = Some((leaf, nr));
        }
        self.last_key = Some(leaf.last_key);
        Ok(())
    }

    /// Decides about the pending leaf: kept as it is when nothing is buffered after it and it
    /// holds at least the minimum, copied in front of the buffered entries otherwise.
    fn place_pending<B: BlockManager>(&mut self, tx: &mut Tx<B>, buf: &mut Block) -> Result<()> {
        let Some((leaf, nr)) = self.pending.take() else {
            return Ok(());
        };
        let n = self.leaves.nr_buffered();
        if nr >= self.min_entries() && (n == 0 || n >= self.min_entries()) {
            return self.add_leaf(tx, leaf);
        }
        if let Some(first) = self.leaves.prepend_leaf(tx, buf, leaf)? {
            self.add_leaf(tx, first)?;
        }
        Ok(())
    }

    /// Appends the entries of `leaf` as entries of this tree, then drops the reference to it.
    fn copy_leaf<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        buf: &mut Block,
        leaf: LeafRef,
        nr: usize,
    ) -> Result<()> {
        let info = self.leaves.info;
        let vs = info.value_size;
        let mut keys = [0u64; COPY_BATCH];
        let mut vals = [[0u8; node::MAX_VALUE_SIZE]; COPY_BATCH];
        let mut i = 0;
        while i < nr {
            let cnt = core::cmp::min(COPY_BATCH, nr - i);
            {
                let (g, h) = tx.read_node(leaf.loc, info, leaf.loc)?;
                if h.nr != nr {
                    return Err(Error::Invalid("btree build: a pushed leaf changed"));
                }
                for j in 0..cnt {
                    keys[j] = node::key(&g, &h, i + j);
                    vals[j][..vs].copy_from_slice(node::value(&g, &h, i + j));
                }
            }
            for j in 0..cnt {
                tx.value_inc(info.values, &vals[j])?;
                self.push_entry(tx, buf, keys[j], &vals[j])?;
            }
            i += cnt;
        }
        tx.dec_tree(leaf.loc, info, 0)
    }

    fn flush_leaves<B: BlockManager>(&mut self, tx: &mut Tx<B>, buf: &mut Block) -> Result<()> {
        for l in self.leaves.finish(tx, buf)?.into_iter().flatten() {
            self.add_leaf(tx, l)?;
        }
        Ok(())
    }

    fn add_leaf<B: BlockManager>(&mut self, tx: &mut Tx<B>, l: LeafRef) -> Result<()> {
        if let Some((p, _)) = self.pending {
            if p.first_key < l.first_key {
                return Err(Error::Invalid(
                    "btree build: a leaf placed past a pending one",
                ));
            }
        }
        self.nr_leaves += 1;
        self.add_child(tx, 0, l.first_key, l.loc)
    }

    /// Appends child `loc` (smallest key `key`) to internal level `level`, completing nodes
    /// upwards as they fill.
    fn add_child<B: BlockManager>(
        &mut self,
        tx: &mut Tx<B>,
        level: usize,
        key: u64,
        loc: u64,
    ) -> Result<()> {
        let max = node::calc_max_entries(8) as usize;
        let (mut level, mut key, mut loc) = (level, key, loc);
        loop {
            let lv = self.levels.get_mut(level).ok_or(TOO_DEEP)?;
            let Some((cur, first, nr)) = lv.cur else {
                match lv.single.take() {
                    None => lv.single = Some((key, loc)),
                    Some((k0, c0)) => {
                        let (n, mut g, mut h) = tx.new_node(true, 8)?;
                        node::insert_at(&mut g, &mut h, 0, k0, &c0.to_le_bytes());
                        node::insert_at(&mut g, &mut h, 1, key, &loc.to_le_bytes());
                        self.levels[level].cur = Some((n, k0, 2));
                    }
                }
                return Ok(());
            };
            if nr < max {
                let mut g = tx.write(cur, BlockKind::Node, cur)?;
                let mut h = node::check(cur, &g, 8)?;
                node::insert_at(&mut g, &mut h, nr, key, &loc.to_le_bytes());
                self.levels[level].cur = Some((cur, first, nr + 1));
                return Ok(());
            }
            // `cur` is full: a new node takes this child, `cur` goes up a level.
            let (n, mut g, mut h) = tx.new_node(true, 8)?;
            node::insert_at(&mut g, &mut h, 0, key, &loc.to_le_bytes());
            drop(g);
            let lv = &mut self.levels[level];
            lv.prev = Some(cur);
            lv.cur = Some((n, key, 1));
            level += 1;
            key = first;
            loc = cur;
        }
    }

    /// Writes what is left and returns the root (an empty leaf for an empty tree).  The
    /// builder is then spent.
    pub fn finish<B: BlockManager>(&mut self, tx: &mut Tx<B>, buf: &mut Block) -> Result<u64> {
        if let Some((leaf, _)) = self.pending {
            if self.nr_leaves == 0 && self.leaves.is_empty() {
                // The pushed leaf is the whole tree.
                self.pending = None;
                return Ok(leaf.loc);
            }
        }
        self.place_pending(tx, buf)?;
        self.flush_leaves(tx, buf)?;
        if self.nr_leaves == 0 {
            return tx.btree_empty(self.leaves.info);
        }
        let min = node::calc_max_entries(8) as usize / 3;
        for level in 0..MAX_DEPTH {
            let lv = self.levels[level];
            let Some((cur, mut first, nr)) = lv.cur else {
                // One child and no node: that child is the root.
                return lv
                    .single
                    .map(|(_, c)| c)
                    .ok_or(Error::Invalid("btree build: a level without children"));
            };
            // A level that never completed a node has nothing above it: `cur` is the root.
            let Some(prev) = lv.prev else {
                return Ok(cur);
            };
            if nr < min {
                let mut pg = tx.write(prev, BlockKind::Node, prev)?;
                let mut ph = node::check(prev, &pg, 8)?;
                let mut g = tx.write(cur, BlockKind::Node, cur)?;
                let mut h = node::check(cur, &g, 8)?;
                let keep = (ph.nr + h.nr) / 2;
                let moved = ph.nr - keep;
                node::open_front(&mut g, &mut h, moved);
                node::copy_entries(&mut g, &h, 0, &pg, &ph, keep, moved);
                node::set_nr(&mut pg, &mut ph, keep);
                first = node::key(&g, &h, 0);
            }
            self.levels[level].cur = None;
            self.add_child(tx, level + 1, first, cur)?;
        }
        Err(TOO_DEEP)
    }
}

const TOO_DEEP: Error = Error::Invalid("btree build: tree deeper than any valid tree");
