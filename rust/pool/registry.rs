// SPDX-License-Identifier: GPL-2.0

//! The registry of pool objects, shared by the `rthin-pool` and `rthin` targets.
//!
//! As in dm-thin, a pool object is keyed by the mapped device of its pool table and by its
//! metadata device, survives table reloads, and lives while any pool or thin table uses it
//! (each holds a [`PoolHandle`]). Thin constructors find their pool here. The data path will
//! hang its per-pool state (metadata, workers, deferred bios) on [`PoolObject`].

use crate::dm::{CtrError, DevT};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// What a pool object is in dm-thin's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PoolMode {
    /// dm-thin's `PM_FAIL`: all I/O to thin devices errors, messages are refused and no thin
    /// device can be activated. Every pool is in this mode until the metadata engine and data
    /// path exist: without them the pool cannot provision anything, and saying so is better
    /// than pretending.
    Fail,
}

/// The devices that identify a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PoolKey {
    /// The mapped device the pool table belongs to (what thin tables name as pool dev).
    pub(crate) pool_md: DevT,
    /// The metadata device.
    pub(crate) metadata: DevT,
    /// The data device.
    pub(crate) data: DevT,
}

/// A pool object (dm-thin's `struct pool`).
pub(crate) struct PoolObject {
    key: PoolKey,
    block_size: u32,
    discard_enabled: bool,
}

impl PoolObject {
    /// The devices of the pool.
    pub(crate) fn key(&self) -> PoolKey {
        self.key
    }

    /// Data block size in sectors, fixed when the pool object was created.
    pub(crate) fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Whether discards were enabled when the pool object was created; a reload cannot change
    /// it.
    pub(crate) fn discard_enabled(&self) -> bool {
        self.discard_enabled
    }

    /// The current mode.
    pub(crate) fn mode(&self) -> PoolMode {
        PoolMode::Fail
    }
}

struct Entry {
    pool: Arc<PoolObject>,
    /// Pool and thin tables holding a [`PoolHandle`] on this pool.
    users: usize,
}

/// All pool objects of the module.
#[pin_data]
pub(crate) struct PoolRegistry {
    #[pin]
    entries: Mutex<KVec<Entry>>,
}

/// A pool or thin table's reference on a pool object; dropping it releases the reference and
/// removes the pool object when it was the last.
pub(crate) struct PoolHandle {
    registry: Arc<PoolRegistry>,
    pool: Arc<PoolObject>,
}

impl PoolHandle {
    /// The pool object.
    pub(crate) fn pool(&self) -> &PoolObject {
        &self.pool
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        let mut entries = self.registry.entries.lock();
        let found = entries
            .iter()
            .position(|e| Arc::ptr_eq(&e.pool, &self.pool));
        if let Some(i) = found {
            entries[i].users -= 1;
            if entries[i].users == 0 {
                // `i` is in bounds, so this cannot fail.
                let _ = entries.remove(i);
            }
        }
    }
}

const ERR_METADATA_BUSY: CtrError =
    CtrError::new(EBUSY, c"metadata device already in use by a pool");
const ERR_DATA_BUSY: CtrError = CtrError::new(EBUSY, c"data device already in use by a pool");
const ERR_REPLACE: CtrError = CtrError::new(EINVAL, c"different pool cannot replace a pool");

impl PoolRegistry {
    /// An empty registry.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                entries <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )
    }

    /// Finds or creates the pool object for a pool table, as dm-thin's `__pool_find()`:
    /// by metadata device first (it must belong to the same mapped device and data device),
    /// then by mapped device (a reload must keep both devices). Returns the handle and whether
    /// the pool object was created.
    pub(crate) fn attach_pool(
        this: &Arc<Self>,
        key: PoolKey,
        block_size: u32,
        discard_enabled: bool,
    ) -> Result<(PoolHandle, bool), CtrError> {
        let mut entries = this.entries.lock();
        let by_metadata = entries
            .iter()
            .position(|e| e.pool.key.metadata == key.metadata);
        let by_md = entries
            .iter()
            .position(|e| e.pool.key.pool_md == key.pool_md);
        let (index, created) = match (by_metadata, by_md) {
            (Some(i), _) => {
                let existing = entries[i].pool.key;
                if existing.pool_md != key.pool_md {
                    return Err(ERR_METADATA_BUSY);
                }
                if existing.data != key.data {
                    return Err(ERR_DATA_BUSY);
                }
                (i, false)
            }
            // Found by mapped device but not by metadata device: the metadata device differs.
            (None, Some(_)) => return Err(ERR_REPLACE),
            (None, None) => {
                let pool = Arc::new(
                    PoolObject {
                        key,
                        block_size,
                        discard_enabled,
                    },
                    GFP_KERNEL,
                )?;
                entries.push(Entry { pool, users: 0 }, GFP_KERNEL)?;
                (entries.len() - 1, true)
            }
        };
        entries[index].users += 1;
        let handle = PoolHandle {
            registry: this.clone(),
            pool: entries[index].pool.clone(),
        };
        Ok((handle, created))
    }

    /// The pool object whose pool table lives on mapped device `md`, if any (dm-thin's
    /// `__pool_table_lookup()`), with a reference for the caller.
    pub(crate) fn find_by_mapped_device(this: &Arc<Self>, md: DevT) -> Option<PoolHandle> {
        let mut entries = this.entries.lock();
        let entry = entries.iter_mut().find(|e| e.pool.key.pool_md == md)?;
        entry.users += 1;
        Some(PoolHandle {
            registry: this.clone(),
            pool: entry.pool.clone(),
        })
    }
}
