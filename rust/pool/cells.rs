// SPDX-License-Identifier: GPL-2.0

//! [`Cells`]: the virtual blocks being provisioned, each with the bios that wait for it.
//!
//! dm-thin puts every bio that may change a block's mapping in a "cell" of its bio prison,
//! keyed by (thin, virtual block), so two writes to the same unprovisioned block never both
//! allocate. Here the worker decides every such bio under the metadata lock, so a cell is only
//! needed while a provisioning runs outside it: a whole-block write on its way to a new block,
//! or a kcopyd job filling one. While a cell is locked, other bios for its block wait in it,
//! and `map` sends none of them to the data device (it could read or write the old block).
//!
//! Pure bookkeeping (no I/O, no locks of its own): the pool keeps it in its metadata state.

use kernel::{prelude::*, rbtree::RBTree};

/// A cell's key: thin device id and virtual block.
type Key = (u64, u64);

/// Locked cells, with their waiters of type `W` in arrival order.
pub(crate) struct Cells<W> {
    locked: RBTree<Key, KVec<W>>,
}

impl<W> Cells<W> {
    /// No cell locked.
    pub(crate) fn new() -> Self {
        Self {
            locked: RBTree::new(),
        }
    }

    /// Whether no cell is locked (nothing is being provisioned).
    pub(crate) fn is_empty(&self) -> bool {
        self.locked.is_empty()
    }

    /// Whether the cell of `vblock` of thin `dev_id` is locked.
    pub(crate) fn is_locked(&self, dev_id: u64, vblock: u64) -> bool {
        self.locked.get(&(dev_id, vblock)).is_some()
    }

    /// Locks the cell of `vblock` of thin `dev_id` for its provisioning.
    ///
    /// Fails with `EBUSY` when it is locked already (wait in it instead), `ENOMEM` when out of
    /// memory.
    pub(crate) fn lock(&mut self, dev_id: u64, vblock: u64) -> Result {
        if self.is_locked(dev_id, vblock) {
            return Err(EBUSY);
        }
        self.locked
            .try_create_and_insert((dev_id, vblock), KVec::new(), GFP_KERNEL)?;
        Ok(())
    }

    /// Makes `waiter` wait in the locked cell of `vblock` of thin `dev_id`. Gives it back when
    /// the cell is not locked (no need to wait) or on allocation failure.
    pub(crate) fn wait(&mut self, dev_id: u64, vblock: u64, waiter: W) -> Result<(), W> {
        match self.locked.get_mut(&(dev_id, vblock)) {
            // `push` would drop the waiter on failure: make room first, then push within it.
            Some(waiting) => match waiting.reserve(1, GFP_KERNEL) {
                Ok(()) => waiting.push_within_capacity(waiter).map_err(|e| e.0),
                Err(_) => Err(waiter),
            },
            None => Err(waiter),
        }
    }

    /// Unlocks the cell of `vblock` of thin `dev_id` and returns its waiters, first come first.
    /// Unlocking a cell that is not locked returns none.
    pub(crate) fn unlock(&mut self, dev_id: u64, vblock: u64) -> KVec<W> {
        self.locked.remove(&(dev_id, vblock)).unwrap_or_default()
    }

    /// The waiters of every locked cell, to take some out (a `--noflush` suspend) or all (an
    /// aborted transaction). The cells stay locked.
    pub(crate) fn waiters_mut(&mut self) -> impl Iterator<Item = &mut KVec<W>> {
        self.locked.values_mut()
    }
}

#[kunit_tests(rthin_pool_cells)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_per_thin_and_block() {
        let mut c = Cells::<u32>::new();
        assert!(c.is_empty());
        assert!(c.lock(1, 10).is_ok());
        assert!(c.is_locked(1, 10));
        assert!(!c.is_empty());
        assert_eq!(c.lock(1, 10), Err(EBUSY));
        // Same block of another thin, another block of the same thin: independent cells.
        assert!(!c.is_locked(2, 10));
        assert!(!c.is_locked(1, 11));
        assert!(c.lock(2, 10).is_ok());
        assert!(c.lock(1, 11).is_ok());
        assert!(c.unlock(1, 10).is_empty());
        assert!(!c.is_locked(1, 10));
        assert!(c.is_locked(2, 10) && c.is_locked(1, 11));
        // Locked again after the unlock.
        assert!(c.lock(1, 10).is_ok());
    }

    #[test]
    fn waiters_come_back_in_arrival_order() {
        let mut c = Cells::<u32>::new();
        assert!(c.lock(3, 7).is_ok());
        for w in 0..100 {
            assert_eq!(c.wait(3, 7, w), Ok(()));
        }
        let waiters = c.unlock(3, 7);
        assert_eq!(waiters.len(), 100);
        assert!(waiters.iter().copied().eq(0..100));
        assert!(c.is_empty());
    }

    #[test]
    fn waiting_needs_a_locked_cell() {
        let mut c = Cells::<u32>::new();
        assert_eq!(c.wait(1, 1, 42), Err(42));
        assert!(c.lock(1, 1).is_ok());
        assert_eq!(c.wait(1, 2, 43), Err(43));
        assert_eq!(c.wait(2, 1, 44), Err(44));
        assert_eq!(c.wait(1, 1, 45), Ok(()));
        assert!(c.unlock(1, 1).iter().copied().eq([45]));
        // Unlocked: waiting is refused again, a second unlock returns nothing.
        assert_eq!(c.wait(1, 1, 46), Err(46));
        assert!(c.unlock(1, 1).is_empty());
    }

    #[test]
    fn many_cells_keep_their_own_waiters() {
        let mut c = Cells::<u64>::new();
        // 512 cells over 4 thins, locked in a scattered order, two waiters each.
        for i in 0..512u64 {
            let (dev, block) = (i % 4, (i * 37) % 512);
            assert!(c.lock(dev, block).is_ok());
        }
        for i in 0..512u64 {
            let (dev, block) = (i % 4, (i * 37) % 512);
            assert_eq!(c.wait(dev, block, i), Ok(()));
            assert_eq!(c.wait(dev, block, i + 1000), Ok(()));
        }
        for i in (0..512u64).rev() {
            let (dev, block) = (i % 4, (i * 37) % 512);
            assert!(c.unlock(dev, block).iter().copied().eq([i, i + 1000]));
        }
        assert!(c.is_empty());
    }

    #[test]
    fn waiters_can_be_taken_out_with_cells_kept() {
        let mut c = Cells::<u32>::new();
        assert!(c.lock(1, 1).is_ok() && c.lock(2, 2).is_ok());
        for w in 0..6u32 {
            let cell = 1 + u64::from(w % 2);
            assert_eq!(c.wait(cell, cell, w), Ok(()));
        }
        // Take out the odd waiters (as a suspend takes one thin's bios), then clear all.
        for waiting in c.waiters_mut() {
            waiting.retain(|w| *w % 2 == 0);
        }
        assert!(c.is_locked(1, 1) && c.is_locked(2, 2));
        assert!(c.unlock(1, 1).iter().copied().eq([0, 2, 4]));
        assert!(c.unlock(2, 2).is_empty());
        assert!(c.lock(5, 5).is_ok() && c.wait(5, 5, 9).is_ok());
        for waiting in c.waiters_mut() {
            waiting.clear();
        }
        assert!(c.unlock(5, 5).is_empty());
    }
}
