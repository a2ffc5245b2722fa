//! Btree removal with rebalancing.
//!
//! Removal is top-down: before descending into a child that is at its minimum fill (a third of
//! `max_entries`), the child is merged with a sibling or entries are redistributed between them,
//! so that removing one entry below never leaves a non-root node under a third full (the
//! invariant thin_check enforces).  A root left with a single child is collapsed into it.

use super::block::BlockManager;
use super::btree::{TreeInfo, Value, MAX_DEPTH};
use super::btree_node::{self as node, Header, MAX_VALUE_SIZE};
use super::error::{Error, Result};
use super::tm::Tx;

/// Where [`Tx::remove_descend`] ended.
enum Descent<B: BlockManager> {
    /// Root, leaf location, its write guard and header.
    Leaf(u64, u64, B::Write, Header),
    /// Root, and the number of entries of the leaf dropped whole.
    Dropped(u64, usize),
}

/// A descent without a range never drops a leaf.
fn unreachable_drop<T>(root: u64) -> Result<T> {
    Err(Error::Corrupt {
        block: root,
        what: "btree removal dropped a leaf it was not asked to",
    })
}

/// What [`Tx::btree_remove_run_begin`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunRemoval {
    /// Entries `i..i + n` of `leaf` are to go: release what they reference, then call
    /// [`Tx::btree_remove_run_finish`].
    Entries {
        /// The (shadowed) leaf.
        leaf: u64,
        /// First entry.
        i: usize,
        /// Number of entries.
        n: usize,
    },
    /// A whole leaf of `n` entries, every key in the range, was unlinked from its parent and
    /// released with [`Tx::dec_tree`]: a shared leaf just lost a reference (nothing copied),
    /// an unshared one released its blocks in runs.  Nothing is left to do.
    Dropped {
        /// Entries the leaf held.
        n: usize,
    },
}

impl<B: BlockManager> Tx<B> {
    /// Remove `k`.  Returns the new root and the removed value (`None`: key absent, tree
    /// untouched).  The caller releases whatever the value referenced.
    pub fn btree_remove(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
    ) -> Result<(u64, Option<Value>)> {
        if self.btree_lookup(root, info, k)?.is_none() {
            return Ok((root, None));
        }
        self.btree_remove_present(root, info, k)
            .map(|(r, v)| (r, Some(v)))
    }

    /// [`Tx::btree_remove`] of a key the caller has just found in the tree (no second
    /// lookup).  A missing key is reported as corruption, after the path was shadowed.
    pub fn btree_remove_present(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
    ) -> Result<(u64, Value)> {
        let (root_loc, cur, mut g, mut h) = match self.remove_descend(root, info, k, None)? {
            Descent::Leaf(r, cur, g, h) => (r, cur, g, h),
            Descent::Dropped(..) => unreachable_drop(root)?,
        };
        let i = node::find(&g, &h, k).ok_or(Error::Corrupt {
            block: cur,
            what: "key vanished during removal",
        })?;
        let mut old = [0u8; MAX_VALUE_SIZE];
        old[..h.value_size].copy_from_slice(node::value(&g, &h, i));
        node::delete_at(&mut g, &mut h, i);
        drop(g);
        self.collapse_root_again(root_loc, info)?;
        Ok((root_loc, old))
    }

    /// First half of removing the keys in `[k, end)` that the leaf holding `k` (which must
    /// be present) holds, as many as the leaf can lose without dropping below its minimum
    /// fill (at least one): one descent for a run of keys instead of one per key.  Shadows
    /// the path (rebalancing on the way down, as [`Tx::btree_remove`] does).  A leaf whose
    /// keys all lie in the range is dropped whole ([`RunRemoval::Dropped`]), without being
    /// copied if it is shared; otherwise nothing changes below the path and the entries to
    /// remove are returned ([`RunRemoval::Entries`]): the caller reads and releases what they
    /// reference (nothing in this tree changes meanwhile), then calls
    /// [`Tx::btree_remove_run_finish`].  Returns the new root too.
    pub fn btree_remove_run_begin(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
        end: u64,
    ) -> Result<(u64, RunRemoval)> {
        let (root_loc, cur, g, h) = match self.remove_descend(root, info, k, Some(end))? {
            Descent::Leaf(r, cur, g, h) => (r, cur, g, h),
            Descent::Dropped(r, n) => return Ok((r, RunRemoval::Dropped { n })),
        };
        let i = node::find(&g, &h, k).ok_or(Error::Corrupt {
            block: cur,
            what: "key vanished during removal",
        })?;
        // The descent left a non-root leaf above its minimum: at least one entry may go.
        let spare = if cur == root_loc {
            h.nr
        } else {
            h.nr.saturating_sub(h.min_entries()).max(1)
        };
        let limit = core::cmp::min(spare, h.nr - i);
        let mut n = 1;
        while n < limit && node::key(&g, &h, i + n) < end {
            n += 1;
        }
        Ok((root_loc, RunRemoval::Entries { leaf: cur, i, n }))
    }

    /// Second half of a run removal: delete entries `i..i + n` of `leaf` (from
    /// [`Tx::btree_remove_run_begin`]), then collapse the root if it has one child left.
    pub fn btree_remove_run_finish(
        &mut self,
        root: u64,
        leaf: u64,
        info: TreeInfo,
        i: usize,
        n: usize,
    ) -> Result<()> {
        {
            let mut g = self.write(leaf, super::block::BlockKind::Node, root)?;
            let mut h = node::check(leaf, &g, info.value_size)?;
            if i + n > h.nr {
                return Err(Error::Corrupt {
                    block: leaf,
                    what: "btree leaf changed during a run removal",
                });
            }
            node::delete_range(&mut g, &mut h, i, n);
        }
        self.collapse_root_again(root, info)
    }

    /// Shadow the path to the leaf that covers `k` (present), rebalancing on the way down so
    /// that the leaf may lose an entry.  Returns the root, the leaf's location, its guard and
    /// header.  With `drop_end`, a leaf whose keys all lie in `[k, drop_end)` is instead
    /// unlinked from its parent (which may lose one entry: it was rebalanced on the way down,
    /// or is a root with at least two) and released, without being shadowed.
    fn remove_descend(
        &mut self,
        root: u64,
        info: TreeInfo,
        k: u64,
        drop_end: Option<u64>,
    ) -> Result<Descent<B>> {
        let (root_loc, mut g, mut h) = self.shadow(root, info, 0)?;
        self.collapse_root(root_loc, &mut g, &mut h, info)?;
        let mut cur = root_loc;
        for _ in 0..MAX_DEPTH {
            if !h.internal {
                return Ok(Descent::Leaf(root_loc, cur, g, h));
            }
            let i = node::lower_bound(&g, &h, k).ok_or(Error::Corrupt {
                block: cur,
                what: "key below the first separator of an internal node",
            })?;
            if let Some(end) = drop_end {
                let child = node::value64(&g, &h, i);
                let may_lose_one = h.nr >= 2 && (cur == root_loc || h.nr > h.min_entries());
                let whole = {
                    let (cg, ch) = self.read_node(child, info, cur)?;
                    let inside = !ch.internal
                        && ch.nr > 0
                        && node::key(&cg, &ch, 0) >= k
                        && node::key(&cg, &ch, ch.nr - 1) < end;
                    (may_lose_one && inside).then_some(ch.nr)
                };
                if let Some(n) = whole {
                    node::delete_at(&mut g, &mut h, i);
                    drop(g);
                    self.dec_tree(child, info, 0)?;
                    self.collapse_root_again(root_loc, info)?;
                    return Ok(Descent::Dropped(root_loc, n));
                }
            }
            let i = self.rebalance_child(cur, &mut g, &mut h, i, info, k)?;
            let child = node::value64(&g, &h, i);
            let (cloc, cg, ch) = self.shadow(child, info, cur)?;
            if cloc != child {
                node::set_value64(&mut g, &h, i, cloc);
            }
            g = cg;
            h = ch;
            cur = cloc;
        }
        Err(Error::Corrupt {
            block: root,
            what: "btree deeper than any valid tree (cycle?)",
        })
    }

    /// After a removal below it: collapse the (already shadowed) root if it has one child.
    fn collapse_root_again(&mut self, root_loc: u64, info: TreeInfo) -> Result<()> {
        let mut g = self.write(root_loc, super::block::BlockKind::Node, 0)?;
        let mut h = node::check(root_loc, &g, info.value_size)?;
        self.collapse_root(root_loc, &mut g, &mut h, info)
    }

    /// While the (already shadowed) root is an internal node with one child, pull the child's
    /// entries up into the root.
    fn collapse_root(
        &mut self,
        root: u64,
        g: &mut B::Write,
        h: &mut Header,
        info: TreeInfo,
    ) -> Result<()> {
        while h.internal && h.nr == 1 {
            let child = node::value64(g, h, 0);
            let count = self.meta_count_small(child)?;
            {
                let (cg, _ch) = self.read_node(child, info, root)?;
                g.copy_from_slice(&cg[..]);
            }
            *h = node::check(root, g, info.value_size)?;
            if count > 1 {
                // The child stays alive elsewhere: the root now holds its own references to
                // everything the child pointed at.
                for i in 0..h.nr {
                    if h.internal {
                        let c = node::value64(g, h, i);
                        self.meta_inc(c)?;
                    } else {
                        let mut v = [0u8; MAX_VALUE_SIZE];
                        v[..h.value_size].copy_from_slice(node::value(g, h, i));
                        self.value_inc(info.values, &v)?;
                    }
                }
            }
            self.meta_dec(child)?;
        }
        Ok(())
    }

    /// Make sure child `i` of the shadowed node `g` has more than the minimum number of entries,
    /// merging with or borrowing from a sibling.  Returns the index of the child that now covers
    /// key `k`.
    fn rebalance_child(
        &mut self,
        parent: u64,
        g: &mut B::Write,
        h: &mut Header,
        i: usize,
        info: TreeInfo,
        k: u64,
    ) -> Result<usize> {
        let child = node::value64(g, h, i);
        let cn = {
            let (_cg, ch) = self.read_node(child, info, parent)?;
            ch
        };
        if cn.nr > cn.min_entries() || h.nr < 2 {
            return Ok(i);
        }
        let (l, r) = if i + 1 < h.nr { (i, i + 1) } else { (i - 1, i) };
        let lchild = node::value64(g, h, l);
        let (lloc, mut lg, mut lh) = self.shadow(lchild, info, parent)?;
        node::set_value64(g, h, l, lloc);
        let rchild = node::value64(g, h, r);
        let (rloc, mut rg, mut rh) = self.shadow(rchild, info, parent)?;
        node::set_value64(g, h, r, rloc);
        if lh.internal != rh.internal || lh.max != rh.max {
            return Err(Error::Corrupt {
                block: parent,
                what: "sibling btree nodes differ in depth or capacity",
            });
        }
        let total = lh.nr + rh.nr;
        if total <= lh.max {
            // Merge right into left; the right node's references move with its entries.
            node::copy_entries(&mut lg, &lh, lh.nr, &rg, &rh, 0, rh.nr);
            node::set_nr(&mut lg, &mut lh, total);
            drop(rg);
            drop(lg);
            node::delete_at(g, h, r);
            self.meta_dec(rloc)?;
            return Ok(l);
        }
        // Redistribute evenly.
        let target_l = total / 2;
        if lh.nr < target_l {
            let n = target_l - lh.nr;
            node::copy_entries(&mut lg, &lh, lh.nr, &rg, &rh, 0, n);
            node::set_nr(&mut lg, &mut lh, target_l);
            node::drop_front(&mut rg, &mut rh, n);
        } else if lh.nr > target_l {
            let n = lh.nr - target_l;
            node::open_front(&mut rg, &mut rh, n);
            node::copy_entries(&mut rg, &rh, 0, &lg, &lh, target_l, n);
            node::set_nr(&mut lg, &mut lh, target_l);
        }
        let rkey = node::key(&rg, &rh, 0);
        node::set_key(g, h, r, rkey);
        Ok(if k >= rkey { r } else { l })
    }
}
