// SPDX-License-Identifier: GPL-2.0

//! The registry of pool objects, shared by the `rthin-pool` and `rthin` targets.
//!
//! As in dm-thin, a pool object is keyed by the mapped device of its pool table and by its
//! metadata device, survives table reloads, and lives while any pool or thin table uses it
//! (each holds a [`PoolHandle`]). Thin constructors find their pool here. The data path will
//! hang its per-pool state (metadata, workers, deferred bios) on [`PoolObject`].

use super::object::{PoolObject, PoolParams};
use crate::dm::{CtrError, DevT};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

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

    /// The pool object, counted (to kick its worker).
    pub(crate) fn arc(&self) -> &Arc<PoolObject> {
        &self.pool
    }
}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        let last = {
            let mut entries = self.registry.entries.lock();
            let found = entries
                .iter()
                .position(|e| Arc::ptr_eq(&e.pool, &self.pool));
            match found {
                Some(i) => {
                    entries[i].users -= 1;
                    // `i` is in bounds, so `remove` cannot fail.
                    entries[i].users == 0 && entries.remove(i).is_ok()
                }
                None => false,
            }
        };
        if last {
            // Outside the registry lock: this commits and waits for the worker.
            self.pool.shut_down();
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
        params: PoolParams,
    ) -> Result<(PoolHandle, bool), CtrError> {
        let key = params.key;
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
                let pool = PoolObject::create(params)?;
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
