//! Thin-pool metadata API: what dm-thin-metadata.c offers the pool target.
//!
//! [`Pool`] owns a transaction ([`Tx`]) and the in-core superblock.  Every change happens in
//! the current transaction and becomes durable at [`Pool::commit`].  If an operation fails half
//! way (I/O error, corruption, metadata exhaustion) the in-core state can no longer be trusted:
//! the pool refuses further changes *and lookups* (the trees may be half modified) and must be
//! reopened, which returns to the last commit — the kernel does the same by switching the pool
//! to read-only / fail mode.
//!
//! Metadata space is accounted as dm-thin does: free = committed free − allocated in this
//! transaction; the reported free count hides the reserve (min(4096, nr_blocks / 10)).  The
//! reserve is enforced: once only the reserve is left, changes that start new work are refused
//! up front with `NoSpace(Metadata)` (nothing changes, the pool is not poisoned):
//! [`Pool::alloc_data_block`], thin creation/deletion/snapshots, unmapping, metadata snapshots,
//! restore-tool edits.  What finishes work already started — [`Pool::insert`] of an allocated
//! block, [`Pool::release_data_block`] — and [`Pool::commit`], resizes and superblock flags
//! may use the reserve.  This is where dm-thin draws the line: it checks free metadata right
//! after each data block allocation (commit, then out-of-metadata-space mode if still 0, which
//! refuses messages, discards and provisioning) and lets the mapping in progress complete.

use super::block::{le64, BlockKind, BlockManager};
use super::btree::{
    DETAILS_TREE, MAPPING_BOTTOM_TREE, MAPPING_TOP_TREE, REF_COUNT_TREE, SM_INDEX_TREE,
};
use super::btree_node as node;
use super::btree_remove::RunRemoval;
use super::error::{Error, Result, Space};
use super::sm_common::{bitmap_set, IndexEntry, SmRoot, ENTRIES_PER_BITMAP};
use super::sm_data::{DataSm, IndexCache};
use super::sm_metadata::{MetaSm, MAX_METADATA_BLOCKS};
use super::superblock::{
    DeviceDetails, Superblock, METADATA_BLOCK_SECTORS, NEEDS_CHECK_FLAG, SUPERBLOCK_LOCATION,
    SUPERBLOCK_VERSION,
};
use super::tm::{ReadMode, ShadowSet, Tx};

/// Largest thin device id (24 bits).
pub const MAX_DEV_ID: u64 = (1 << 24) - 1;
/// Mapping times are stored in 24 bits.
pub const TIME_MASK: u32 = 0x00FF_FFFF;
/// Upper bound of the metadata reserve (blocks hidden from reported free space).
pub const METADATA_RESERVE_MAX: u64 = 4096;
/// Smallest metadata device we format.
pub const MIN_METADATA_BLOCKS: u64 = 32;

/// What every change and every read of the trees returns after a failed change.
const FAILED: Error = Error::Busy("an earlier metadata operation failed; reopen the pool");

/// `(data_block << 24) | time` as stored in bottom-level leaves.
pub fn pack_block_time(block: u64, time: u32) -> u64 {
    (block << 24) | u64::from(time & TIME_MASK)
}

/// Split a stored `block_time` value.
pub fn unpack_block_time(v: &[u8]) -> (u64, u32) {
    let x = le64(v, 0);
    (x >> 24, (x as u32) & TIME_MASK)
}

/// Result of a mapping lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Data block.
    pub data_block: u64,
    /// Time the mapping was made.
    pub time: u32,
    /// The block may be shared with a snapshot (`snapshotted_time > time`): writes must break
    /// sharing.
    pub shared: bool,
}

const DETAILS_CACHE: usize = 16;
/// Devices whose bottom-tree roots [`Pool`] keeps, made writable, per transaction.
const WRITABLE_ROOTS: usize = 16;
/// Data blocks [`Pool::remove_range`] reads from a leaf at once (on the stack: keep small).
const REMOVE_BATCH: usize = 32;

/// Devices whose top-level path this transaction already made writable, with their bottom
/// roots: once done, the path stays this transaction's own until the commit (nothing makes a
/// node shared again within a transaction; a metadata snapshot commits first), so later
/// changes of the device's bottom tree skip the top-level tree.  The roots kept here are exact
/// (updated whenever a bottom root moves).  When full, the oldest entry makes room; a device
/// not found here takes the simple path.  A root is never block 0: 0 marks a free slot.
struct WritableRoots {
    ids: [u64; WRITABLE_ROOTS],
    roots: [u64; WRITABLE_ROOTS],
    next: usize,
}

impl WritableRoots {
    const fn new() -> WritableRoots {
        WritableRoots {
            ids: [0; WRITABLE_ROOTS],
            roots: [0; WRITABLE_ROOTS],
            next: 0,
        }
    }

    fn find(&self, id: u64) -> Option<usize> {
        (0..WRITABLE_ROOTS).find(|&i| self.roots[i] != 0 && self.ids[i] == id)
    }

    fn get(&self, id: u64) -> Option<u64> {
        self.find(id).map(|i| self.roots[i])
    }

    fn set(&mut self, id: u64, root: u64) {
        let i = match self.find(id) {
            Some(i) => i,
            None => {
                let i = self.roots.iter().position(|&r| r == 0).unwrap_or(self.next);
                self.next = (i + 1) % WRITABLE_ROOTS;
                i
            }
        };
        self.ids[i] = id;
        self.roots[i] = root;
    }

    /// Update `id`'s root if it is kept.
    fn moved(&mut self, id: u64, root: u64) {
        if let Some(i) = self.find(id) {
            self.roots[i] = root;
        }
    }

    fn forget(&mut self, id: u64) {
        if let Some(i) = self.find(id) {
            self.roots[i] = 0;
        }
    }

    fn clear(&mut self) {
        self.roots = [0; WRITABLE_ROOTS];
        self.next = 0;
    }
}

#[derive(Clone, Copy, Default)]
struct CachedDetails {
    id: u64,
    details: DeviceDetails,
    valid: bool,
    /// Changed since read from (or last written to) the details tree.
    dirty: bool,
    /// Known to have an entry in the details tree (always so when clean; a dirty entry may be
    /// a device created in this transaction): removing it then needs no lookup first.
    in_tree: bool,
}

/// Open thin-pool metadata.
pub struct Pool<B: BlockManager> {
    tx: Tx<B>,
    sb: Superblock,
    cache: [CachedDetails; DETAILS_CACHE],
    next_evict: usize,
    /// Devices whose top-level path this transaction made writable (see [`WritableRoots`]).
    roots: WritableRoots,
    changed: bool,
    failed: bool,
    writable: bool,
    reserve_enforced: bool,
}

fn check_dev_id(id: u64) -> Result<()> {
    if id > MAX_DEV_ID {
        return Err(Error::Invalid("thin device id does not fit in 24 bits"));
    }
    Ok(())
}

impl<B: BlockManager> Pool<B> {
    /// True if block 0 holds anything at all (the kernel formats iff it is all zeroes).
    pub fn is_formatted(bm: &B) -> Result<bool> {
        let g = bm.read(SUPERBLOCK_LOCATION, BlockKind::Unchecked)?;
        Ok(g.iter().any(|&b| b != 0))
    }

    /// Format the device (any previous contents are ignored) and commit an empty pool with a
    /// zero-sized data space map.
    pub fn format(bm: B, data_block_size: u32) -> Result<Self> {
        let mut pool = Pool::unloaded(bm);
        pool.format_in_place(data_block_size)?;
        Ok(pool)
    }

    /// A pool with nothing loaded (every operation fails until one of the `_in_place` methods
    /// succeeds).  `Pool` is about 7 KiB: the kernel puts this in its heap allocation and loads
    /// it there, because the by-value constructors need several copies of it on the stack.
    #[inline(always)]
    pub fn unloaded(bm: B) -> Self {
        // One struct expression of constants, so that it is built directly in the caller's
        // slot (a run-time `MetaSm::new` is built on the stack and copied).
        Pool {
            tx: Tx {
                bm,
                msm: const { MetaSm::new(0) },
                dsm: DataSm::default(),
                shadows: const { ShadowSet::new() },
                simple: false,
            },
            sb: Superblock::default(),
            // Constants, so that they are written in place like the rest (a run-time array
            // would be built on the stack and copied).
            cache: const {
                [CachedDetails {
                    id: 0,
                    details: DeviceDetails {
                        mapped_blocks: 0,
                        transaction_id: 0,
                        creation_time: 0,
                        snapshotted_time: 0,
                    },
                    valid: false,
                    dirty: false,
                    in_tree: false,
                }; DETAILS_CACHE]
            },
            next_evict: 0,
            roots: const { WritableRoots::new() },
            changed: false,
            failed: true,
            writable: false,
            reserve_enforced: true,
        }
    }

    /// Forget the in-core state; the pool is unusable until loaded again.
    fn unload(&mut self) {
        // Zeroed, not just a new generation: the memory may hold an earlier pool's slots.
        self.tx.reset_shadows();
        self.forget_roots();
        self.failed = true;
        self.changed = false;
        self.writable = false;
        self.cache = [CachedDetails::default(); DETAILS_CACHE];
        self.next_evict = 0;
    }

    /// [`Pool::format`] into this pool, in place.
    pub fn format_in_place(&mut self, data_block_size: u32) -> Result<()> {
        if data_block_size == 0 {
            return Err(Error::Invalid("data block size must not be zero"));
        }
        let nr = core::cmp::min(self.tx.bm.nr_blocks(), MAX_METADATA_BLOCKS);
        if nr < MIN_METADATA_BLOCKS {
            return Err(Error::Invalid("metadata device too small"));
        }
        // Bootstrap layout, as the kernel's: index block 1, metadata ref-count root 2, bitmaps
        // from 3; blocks 0..=last bitmap are in use.
        let nbm = nr.div_ceil(ENTRIES_PER_BITMAP);
        let used = 3 + nbm;
        // Nothing of the previous in-core state survives, even if formatting fails half-way.
        self.unload();
        self.writable = true;
        let tx = &mut self.tx;
        tx.msm.reset(nr);
        tx.dsm = DataSm::default();
        for i in 0..nbm {
            let loc = 3 + i;
            let mut g = tx.bm.new_block(loc, BlockKind::Bitmap)?;
            let (nr_free, nfb) = if i == 0 {
                for b in 0..used {
                    bitmap_set(&mut g, b, 1);
                }
                (ENTRIES_PER_BITMAP - used, used)
            } else {
                (ENTRIES_PER_BITMAP, 0)
            };
            tx.msm.set_index_entry(
                i,
                IndexEntry {
                    blocknr: loc,
                    nr_free: nr_free as u32,
                    none_free_before: nfb as u32,
                },
            )?;
        }
        {
            let mut g = tx.bm.new_block(2, BlockKind::Node)?;
            node::init(&mut g, false, REF_COUNT_TREE.value_size);
        }
        drop(tx.bm.new_block(1, BlockKind::Index)?);
        tx.msm.nr_allocated = used;
        tx.msm.ref_root = 2;
        tx.msm.index_loc = 1;
        tx.msm.mark_all_shadowed();
        tx.dsm.index_root = tx.btree_empty(SM_INDEX_TREE)?;
        tx.dsm.ref_root = tx.btree_empty(REF_COUNT_TREE)?;
        tx.dsm.committed_index_root = tx.dsm.index_root;
        let mapping_root = tx.btree_empty(MAPPING_TOP_TREE)?;
        let details_root = tx.btree_empty(DETAILS_TREE)?;
        self.sb = Superblock {
            version: SUPERBLOCK_VERSION,
            mapping_root,
            details_root,
            data_block_size,
            metadata_block_size: METADATA_BLOCK_SECTORS,
            metadata_nr_blocks: nr,
            ..Superblock::default()
        };
        self.failed = false;
        self.changed = true;
        self.commit()
    }

    /// Open existing metadata.  `data_block_size`, when given, must match the superblock.
    pub fn open(bm: B, data_block_size: Option<u32>, writable: bool) -> Result<Self> {
        let mut pool = Pool::unloaded(bm);
        pool.open_in_place(data_block_size, writable)?;
        Ok(pool)
    }

    /// [`Pool::open`] into this pool, in place: also how to abort, i.e. return to the last
    /// commit.  On failure the pool stays unloaded.
    pub fn open_in_place(&mut self, data_block_size: Option<u32>, writable: bool) -> Result<()> {
        self.unload();
        let bm = &self.tx.bm;
        let sb = {
            let g = bm.read(SUPERBLOCK_LOCATION, BlockKind::Superblock)?;
            Superblock::check_magic(&g)?;
            Superblock::unpack(&g)
        };
        sb.check_features(writable)?;
        if let Some(d) = data_block_size {
            if d != sb.data_block_size {
                return Err(Error::BlockSizeMismatch {
                    on_disk: sb.data_block_size,
                    requested: d,
                });
            }
        }
        sb.check_geometry(SUPERBLOCK_LOCATION, bm.nr_blocks())?;
        let msm = &mut self.tx.msm;
        msm.reset(sb.meta_sm.nr_blocks);
        msm.nr_allocated = sb.meta_sm.nr_allocated;
        msm.ref_root = sb.meta_sm.ref_count_root;
        {
            let loc = sb.meta_sm.bitmap_root;
            let g = self.tx.bm.read(loc, BlockKind::Index)?;
            msm.read_index(loc, &g)?;
        }
        msm.end_transaction(sb.meta_sm.bitmap_root);
        self.tx.dsm = DataSm {
            nr_blocks: sb.data_sm.nr_blocks,
            nr_allocated: sb.data_sm.nr_allocated,
            index_root: sb.data_sm.bitmap_root,
            ref_root: sb.data_sm.ref_count_root,
            committed_index_root: sb.data_sm.bitmap_root,
            committed_nr_blocks: sb.data_sm.nr_blocks,
            cursor: 0,
            last_index: None,
            pending_index: IndexCache::default(),
        };
        self.sb = sb;
        self.writable = writable;
        self.failed = false;
        Ok(())
    }

    /// Open if block 0 is non-zero, otherwise format (what the pool constructor does).
    pub fn open_or_format(bm: B, data_block_size: u32) -> Result<Self> {
        if Self::is_formatted(&bm)? {
            Self::open(bm, Some(data_block_size), true)
        } else {
            Self::format(bm, data_block_size)
        }
    }

    /// Give the block manager back (uncommitted changes are lost with the in-core state).
    pub fn into_block_manager(self) -> B {
        self.tx.bm
    }

    /// The block manager.
    pub fn block_manager(&self) -> &B {
        &self.tx.bm
    }

    /// Transaction context, for tools that walk the structures directly.
    pub fn tx(&mut self) -> &mut Tx<B> {
        &mut self.tx
    }

    /// In-core superblock (space-map roots are those of the last commit).
    pub fn superblock(&self) -> Superblock {
        self.sb
    }

    /// True after a failed operation: further changes are refused until reopen.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Enforce the metadata reserve (the default).  Offline tools that rebuild metadata, like
    /// `thin_restore`, may turn it off to use every block.
    pub fn set_metadata_reserve_enforced(&mut self, on: bool) {
        self.reserve_enforced = on;
    }

    /// Take only the simple per-entry paths (no set of shadowed blocks, no batched count
    /// changes, no cached device roots): the reference the batched paths are tested against.
    /// Both leave the same mappings and reference counts.
    pub fn set_simple_paths(&mut self, on: bool) {
        self.tx.simple = on;
        self.tx.forget_all_shadows();
    }

    /// True when the current transaction changed something that [`Pool::commit`] would write
    /// (the kernel target commits before completing a flush only then).
    pub fn has_uncommitted_changes(&self) -> bool {
        self.changed
    }

    /// Reads of the trees are refused after a failed change: the in-core roots may point into
    /// half-modified trees (dm-thin refuses lookups once `fail_io` is set).
    fn readable(&self) -> Result<()> {
        if self.failed {
            return Err(FAILED);
        }
        Ok(())
    }

    /// Refuse to start a change that allocates metadata when only the reserve is left (see
    /// the module docs).  Checked before anything changes: the refusal does not poison.
    fn check_metadata_space(&self) -> Result<()> {
        self.readable()?;
        if !self.writable {
            return Err(Error::Invalid("metadata is open read-only"));
        }
        if self.reserve_enforced && self.metadata_free_blocks() == 0 {
            return Err(Error::NoSpace(Space::Metadata));
        }
        Ok(())
    }

    /// [`Pool::mutate`] for a change that allocates metadata blocks: refused (without
    /// poisoning) when only the metadata reserve is left.
    fn mutate_ordinary<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_metadata_space()?;
        self.mutate(f)
    }

    /// Run a change; any failure inside poisons the in-core state.  May use the metadata
    /// reserve: callers that start ordinary changes use [`Pool::mutate_ordinary`].
    fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.failed {
            return Err(FAILED);
        }
        if !self.writable {
            return Err(Error::Invalid("metadata is open read-only"));
        }
        self.changed = true;
        let r = f(self);
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    // ---- device details cache -------------------------------------------------------------

    fn cached(&self, id: u64) -> Option<usize> {
        self.cache.iter().position(|c| c.valid && c.id == id)
    }

    fn details_get(&self, id: u64) -> Result<Option<DeviceDetails>> {
        self.details_get_with(id, ReadMode::Blocking)
    }

    fn details_get_with(&self, id: u64, mode: ReadMode) -> Result<Option<DeviceDetails>> {
        self.readable()?;
        if let Some(i) = self.cached(id) {
            return Ok(Some(self.cache[i].details));
        }
        Ok(self
            .tx
            .btree_lookup_with(self.sb.details_root, DETAILS_TREE, id, mode)?
            .map(|v| DeviceDetails::unpack(&v)))
    }

    /// Keeps thin `id`'s details in memory, so its lookups (also [`Pool::try_lookup`] under a
    /// shared lock) skip the details tree, as dm-thin keeps an open thin's details in its
    /// `dm_thin_device`. Returns whether the device exists. Changes nothing on disk: the
    /// details are cached clean, replacing only a free or clean slot (when every slot holds
    /// changes still to write, nothing is cached and lookups just walk the tree).
    pub fn cache_details(&mut self, id: u64) -> Result<bool> {
        self.readable()?;
        if self.cached(id).is_some() {
            return Ok(true);
        }
        let Some(d) = self.details_get(id)? else {
            return Ok(false);
        };
        let free = self.cache.iter().position(|c| !c.valid);
        let clean = || {
            (0..DETAILS_CACHE)
                .map(|k| (self.next_evict + k) % DETAILS_CACHE)
                .find(|&i| !self.cache[i].dirty)
        };
        if let Some(slot) = free.or_else(clean) {
            if free.is_none() {
                self.next_evict = (slot + 1) % DETAILS_CACHE;
            }
            self.cache[slot] = CachedDetails {
                id,
                details: d,
                valid: true,
                dirty: false,
                in_tree: true,
            };
        }
        Ok(true)
    }

    fn details_put(&mut self, id: u64, d: DeviceDetails) -> Result<()> {
        let (slot, in_tree) = match self.cached(id) {
            Some(i) => (i, self.cache[i].in_tree),
            None => match self.cache.iter().position(|c| !c.valid) {
                Some(i) => (i, false),
                None => {
                    let i = self.next_evict;
                    self.next_evict = (i + 1) % DETAILS_CACHE;
                    self.write_back(i)?;
                    (i, false)
                }
            },
        };
        self.cache[slot] = CachedDetails {
            id,
            details: d,
            valid: true,
            dirty: true,
            in_tree,
        };
        Ok(())
    }

    fn write_back(&mut self, i: usize) -> Result<()> {
        let c = self.cache[i];
        if c.valid && c.dirty {
            let (root, _) = self.tx.btree_insert(
                self.sb.details_root,
                DETAILS_TREE,
                c.id,
                &c.details.to_bytes(),
            )?;
            self.sb.details_root = root;
            self.cache[i].dirty = false;
            self.cache[i].in_tree = true;
        }
        Ok(())
    }

    fn details_flush(&mut self) -> Result<()> {
        for i in 0..DETAILS_CACHE {
            self.write_back(i)?;
        }
        Ok(())
    }

    fn any_dirty_details(&self) -> bool {
        self.cache.iter().any(|c| c.valid && c.dirty)
    }

    fn dev_root(&self, id: u64) -> Result<u64> {
        self.dev_root_with(id, ReadMode::Blocking)
    }

    /// `id`'s bottom root, if this transaction already made its top-level path writable.
    fn writable_root(&self, id: u64) -> Option<u64> {
        if self.tx.simple {
            return None;
        }
        self.roots.get(id)
    }

    fn forget_roots(&mut self) {
        self.roots.clear();
    }

    fn dev_root_with(&self, id: u64, mode: ReadMode) -> Result<u64> {
        if let Some(root) = self.writable_root(id) {
            return Ok(root);
        }
        match self
            .tx
            .btree_lookup_with(self.sb.mapping_root, MAPPING_TOP_TREE, id, mode)?
        {
            Some(v) => Ok(le64(&v, 0)),
            None => Err(Error::Corrupt {
                block: self.sb.mapping_root,
                what: "device has details but no mapping tree",
            }),
        }
    }

    /// Root of `id`'s bottom tree, made safe to modify: the top-level path to it is shadowed
    /// first, so that if that path was shared (metadata snapshot) the bottom root gains its
    /// extra reference *before* the bottom tree is copied-on-write.  Updating the bottom tree
    /// first would see a count of 1 and wrongly modify or free a block the snapshot still uses.
    /// Done once per device and transaction (see [`WritableRoots`]).
    fn dev_root_for_write(&mut self, id: u64) -> Result<u64> {
        if let Some(root) = self.writable_root(id) {
            return Ok(root);
        }
        let root = self.dev_root(id)?;
        let (mr, _) = self.tx.btree_insert(
            self.sb.mapping_root,
            MAPPING_TOP_TREE,
            id,
            &root.to_le_bytes(),
        )?;
        self.sb.mapping_root = mr;
        if !self.tx.simple {
            self.roots.set(id, root);
        }
        Ok(root)
    }

    fn set_dev_root(&mut self, id: u64, old: u64, new: u64) -> Result<()> {
        self.roots.moved(id, new);
        if old != new {
            let (root, _) = self.tx.btree_insert(
                self.sb.mapping_root,
                MAPPING_TOP_TREE,
                id,
                &new.to_le_bytes(),
            )?;
            self.sb.mapping_root = root;
        }
        Ok(())
    }

    // ---- thin devices ---------------------------------------------------------------------

    /// Does thin device `id` exist?
    pub fn device_exists(&self, id: u64) -> Result<bool> {
        Ok(self.details_get(id)?.is_some())
    }

    /// Details of thin device `id`.
    pub fn device_details(&self, id: u64) -> Result<DeviceDetails> {
        self.details_get(id)?.ok_or(Error::NoDevice(id))
    }

    /// Create an empty thin device.
    pub fn create_thin(&mut self, id: u64) -> Result<()> {
        check_dev_id(id)?;
        if self.details_get(id)?.is_some() {
            return Err(Error::DeviceExists(id));
        }
        self.mutate_ordinary(|p| {
            let root = p.tx.btree_empty(MAPPING_BOTTOM_TREE)?;
            let (mr, _) =
                p.tx.btree_insert(p.sb.mapping_root, MAPPING_TOP_TREE, id, &root.to_le_bytes())?;
            p.sb.mapping_root = mr;
            let t = p.sb.time;
            p.details_put(
                id,
                DeviceDetails {
                    mapped_blocks: 0,
                    transaction_id: p.sb.trans_id,
                    creation_time: t,
                    snapshotted_time: t,
                },
            )
        })
    }

    /// Create `id` as a snapshot of `origin`: O(1), the mapping tree is shared.
    pub fn create_snap(&mut self, id: u64, origin: u64) -> Result<()> {
        check_dev_id(id)?;
        if self.details_get(id)?.is_some() {
            return Err(Error::DeviceExists(id));
        }
        let mut od = self.details_get(origin)?.ok_or(Error::NoDevice(origin))?;
        let time = self
            .sb
            .time
            .checked_add(1)
            .ok_or(Error::Invalid("snapshot time overflow"))?;
        self.mutate_ordinary(|p| {
            let root = p.dev_root(origin)?;
            p.tx.meta_inc(root)?;
            let (mr, _) =
                p.tx.btree_insert(p.sb.mapping_root, MAPPING_TOP_TREE, id, &root.to_le_bytes())?;
            p.sb.mapping_root = mr;
            p.sb.time = time;
            od.snapshotted_time = time;
            p.details_put(origin, od)?;
            p.details_put(
                id,
                DeviceDetails {
                    mapped_blocks: od.mapped_blocks,
                    transaction_id: p.sb.trans_id,
                    creation_time: time,
                    snapshotted_time: time,
                },
            )
        })
    }

    /// Delete a thin device, releasing every block only it used.
    pub fn delete_thin(&mut self, id: u64) -> Result<()> {
        if self.details_get(id)?.is_none() {
            return Err(Error::NoDevice(id));
        }
        self.mutate_ordinary(|p| {
            // Found above in the tree, unless the cache answered: then only a clean entry, or
            // one written back since, is known to be in the tree.
            let in_tree = match p.cached(id) {
                Some(i) => {
                    p.cache[i].valid = false;
                    p.cache[i].in_tree
                }
                None => true,
            };
            p.roots.forget(id);
            // No second lookup where the entry is known to be there.
            p.sb.details_root = if in_tree {
                p.tx.btree_remove_present(p.sb.details_root, DETAILS_TREE, id)?
                    .0
            } else {
                p.tx.btree_remove(p.sb.details_root, DETAILS_TREE, id)?.0
            };
            // A device with details has a mapping tree (a missing one is reported as
            // corruption by the removal).
            let (mr, old) =
                p.tx.btree_remove_present(p.sb.mapping_root, MAPPING_TOP_TREE, id)?;
            p.sb.mapping_root = mr;
            p.tx.dec_tree(le64(&old, 0), MAPPING_BOTTOM_TREE, 0)
        })
    }

    /// Overwrite a device's details (restore tools).
    pub fn set_device_details(&mut self, id: u64, d: DeviceDetails) -> Result<()> {
        if self.details_get(id)?.is_none() {
            return Err(Error::NoDevice(id));
        }
        self.mutate_ordinary(|p| p.details_put(id, d))
    }

    /// Add thin `id` with details `d` and the bottom-level mapping tree at `root`, built
    /// elsewhere in this transaction (restore tools, `btree_build.rs`).  The device takes over
    /// one reference to `root`; the counts of everything beneath are the builder's business.
    pub fn create_thin_with_tree(&mut self, id: u64, root: u64, d: DeviceDetails) -> Result<()> {
        check_dev_id(id)?;
        if self.details_get(id)?.is_some() {
            return Err(Error::DeviceExists(id));
        }
        self.mutate_ordinary(|p| {
            let (mr, _) =
                p.tx.btree_insert(p.sb.mapping_root, MAPPING_TOP_TREE, id, &root.to_le_bytes())?;
            p.sb.mapping_root = mr;
            p.details_put(id, d)
        })
    }

    /// Visit every device in id order.
    pub fn for_each_device(
        &mut self,
        f: &mut dyn FnMut(u64, DeviceDetails) -> Result<bool>,
    ) -> Result<()> {
        self.readable()?;
        if self.any_dirty_details() {
            // Writes back changes already made: may use the metadata reserve.
            self.mutate(|p| p.details_flush())?;
        }
        self.tx
            .btree_walk(self.sb.details_root, DETAILS_TREE, &mut |k, v| {
                f(k, DeviceDetails::unpack(v))
            })
    }

    // ---- mappings -------------------------------------------------------------------------

    /// Look up virtual block `vblock` of device `id`.  Refused after a failed change (see
    /// [`Pool::has_failed`]).
    pub fn lookup(&self, id: u64, vblock: u64) -> Result<Option<Mapping>> {
        self.lookup_with(id, vblock, ReadMode::Blocking)
    }

    /// [`Pool::lookup`] that never waits for I/O, for the kernel's `map` path (dm-thin's
    /// `dm_thin_find_block` with `can_issue_io` false): every block is read with
    /// [`BlockManager::read_cached`], and [`Error::WouldBlock`] is returned as soon as one is
    /// not in the cache (the caller defers the bio to a context that may block).  Refused
    /// after a failed change, like [`Pool::lookup`].
    pub fn try_lookup(&self, id: u64, vblock: u64) -> Result<Option<Mapping>> {
        self.lookup_with(id, vblock, ReadMode::CacheOnly)
    }

    fn lookup_with(&self, id: u64, vblock: u64, mode: ReadMode) -> Result<Option<Mapping>> {
        let d = self
            .details_get_with(id, mode)?
            .ok_or(Error::NoDevice(id))?;
        let root = self.dev_root_with(id, mode)?;
        Ok(self
            .tx
            .btree_lookup_with(root, MAPPING_BOTTOM_TREE, vblock, mode)?
            .map(|v| {
                let (data_block, time) = unpack_block_time(&v);
                Mapping {
                    data_block,
                    time,
                    shared: d.snapshotted_time > time,
                }
            }))
    }

    /// Allocate a data block (count 1) for a following [`Pool::insert`].
    ///
    /// `NoSpace(Data)`: no block is free in both the current and the committed data space map
    /// (blocks freed in this transaction become usable after a commit).  `NoSpace(Metadata)`:
    /// only the metadata reserve is left (checked first, as dm-thin checks free metadata right
    /// after each data allocation): commit, and if [`Pool::metadata_free_blocks`] is still 0
    /// the pool is out of metadata space.  Neither poisons the pool.
    pub fn alloc_data_block(&mut self) -> Result<u64> {
        self.check_metadata_space()?;
        // Out of data space is reported before anything changes, so it does not poison.
        match self.tx.data_alloc() {
            Err(Error::NoSpace(Space::Data)) => Err(Error::NoSpace(Space::Data)),
            r => {
                self.changed = true;
                if r.is_err() {
                    self.failed = true;
                }
                r
            }
        }
    }

    /// Give back a block from [`Pool::alloc_data_block`] that was never inserted (its data write
    /// failed, or the insert was refused).  Finishes a change already started: may use the
    /// metadata reserve.
    pub fn release_data_block(&mut self, data_block: u64) -> Result<()> {
        self.mutate(|p| p.tx.data_dec(data_block))
    }

    /// Map `vblock` of `id` to `data_block`, stamped with the current time.  The mapping takes
    /// over one reference to `data_block` (from [`Pool::alloc_data_block`]); a replaced mapping
    /// releases its block.  Completes a provisioning that [`Pool::alloc_data_block`] started:
    /// may use the metadata reserve.
    pub fn insert(&mut self, id: u64, vblock: u64, data_block: u64) -> Result<()> {
        let t = self.sb.time;
        self.insert_with_time(id, vblock, data_block, t)
    }

    /// [`Pool::insert`] with an explicit mapping time (restore tools).
    pub fn insert_with_time(
        &mut self,
        id: u64,
        vblock: u64,
        data_block: u64,
        time: u32,
    ) -> Result<()> {
        let mut d = self.details_get(id)?.ok_or(Error::NoDevice(id))?;
        if data_block >= self.tx.dsm.nr_blocks {
            return Err(Error::Invalid(
                "data block beyond the end of the data device",
            ));
        }
        self.mutate(|p| {
            let root = p.dev_root_for_write(id)?;
            let v = pack_block_time(data_block, time).to_le_bytes();
            let (nr, old) = p.tx.btree_insert(root, MAPPING_BOTTOM_TREE, vblock, &v)?;
            p.set_dev_root(id, root, nr)?;
            match old {
                Some(old) => p.tx.data_dec(unpack_block_time(&old).0),
                None => {
                    d.mapped_blocks = d.mapped_blocks.saturating_add(1);
                    p.details_put(id, d)
                }
            }
        })
    }

    /// Unmap `vblock`; returns whether it was mapped.
    pub fn remove(&mut self, id: u64, vblock: u64) -> Result<bool> {
        let d = self.details_get(id)?.ok_or(Error::NoDevice(id))?;
        let root = self.dev_root(id)?;
        if self
            .tx
            .btree_lookup(root, MAPPING_BOTTOM_TREE, vblock)?
            .is_none()
        {
            return Ok(false);
        }
        self.mutate_ordinary(|p| p.remove_mapped(id, d, vblock))?;
        Ok(true)
    }

    /// Remove `vblock`, which the caller has just found mapped.
    fn remove_mapped(&mut self, id: u64, mut d: DeviceDetails, vblock: u64) -> Result<()> {
        let root = self.dev_root_for_write(id)?;
        let (nr, old) = self
            .tx
            .btree_remove_present(root, MAPPING_BOTTOM_TREE, vblock)?;
        self.set_dev_root(id, root, nr)?;
        self.tx.data_dec(unpack_block_time(&old).0)?;
        d.mapped_blocks = d.mapped_blocks.saturating_sub(1);
        self.details_put(id, d)
    }

    /// Remove mapped `vblock` and the keys after it below `end` that its leaf can lose (see
    /// [`Tx::btree_remove_run_begin`]): one descent for up to two thirds of a leaf, or for a
    /// whole leaf inside the range (dropped with one decrement when shared), and the data
    /// blocks released in runs of consecutive blocks.  Returns how many went.
    fn remove_mapped_run(&mut self, id: u64, vblock: u64, end: u64) -> Result<u64> {
        let mut d = self.device_details(id)?;
        let root = self.dev_root_for_write(id)?;
        let (nr, found) = self
            .tx
            .btree_remove_run_begin(root, MAPPING_BOTTOM_TREE, vblock, end)?;
        self.set_dev_root(id, root, nr)?;
        let (leaf, i, n) = match found {
            RunRemoval::Entries { leaf, i, n } => (leaf, i, n),
            RunRemoval::Dropped { n } => {
                d.mapped_blocks = d.mapped_blocks.saturating_sub(n as u64);
                self.details_put(id, d)?;
                return Ok(n as u64);
            }
        };
        let mut done = 0;
        while done < n {
            let m = core::cmp::min(REMOVE_BATCH, n - done);
            let mut batch = [0u64; REMOVE_BATCH];
            {
                let (g, h) = self.tx.read_node(leaf, MAPPING_BOTTOM_TREE, nr)?;
                if i + done + m > h.nr {
                    return Err(Error::Corrupt {
                        block: leaf,
                        what: "btree leaf changed during a run removal",
                    });
                }
                for (j, b) in batch.iter_mut().enumerate().take(m) {
                    *b = unpack_block_time(node::value(&g, &h, i + done + j)).0;
                }
            }
            let mut k = 0;
            while k < m {
                let mut run = 1;
                while k + run < m && batch[k + run] == batch[k] + run as u64 {
                    run += 1;
                }
                self.tx.data_dec_run(batch[k], run as u64)?;
                k += run;
            }
            done += m;
        }
        self.tx
            .btree_remove_run_finish(nr, leaf, MAPPING_BOTTOM_TREE, i, n)?;
        d.mapped_blocks = d.mapped_blocks.saturating_sub(n as u64);
        self.details_put(id, d)?;
        Ok(n as u64)
    }

    /// Unmap every block in `[begin, end)`; returns how many were mapped.  One change as far as
    /// the metadata reserve goes: refused only before the first block is removed.
    pub fn remove_range(&mut self, id: u64, begin: u64, end: u64) -> Result<u64> {
        self.details_get(id)?.ok_or(Error::NoDevice(id))?;
        let mut count = 0;
        let mut next = begin;
        while next < end {
            let root = self.dev_root(id)?;
            let k = match self.tx.btree_next(root, MAPPING_BOTTOM_TREE, next)? {
                Some((k, _)) if k < end => k,
                _ => break,
            };
            let removed = if !self.tx.simple {
                let run = |p: &mut Self| p.remove_mapped_run(id, k, end);
                if count == 0 {
                    self.mutate_ordinary(run)?
                } else {
                    self.mutate(run)?
                }
            } else {
                let d = self.device_details(id)?;
                let one = |p: &mut Self| p.remove_mapped(id, d, k).map(|()| 1);
                if count == 0 {
                    self.mutate_ordinary(one)?
                } else {
                    self.mutate(one)?
                }
            };
            count += removed;
            // The keys removed are gone from the tree: the next one left is found from k + 1.
            next = match k.checked_add(1) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(count)
    }

    /// Visit the mappings of `id` in order: `(virtual block, data block, time)`.
    pub fn for_each_mapping(
        &self,
        id: u64,
        f: &mut dyn FnMut(u64, u64, u32) -> Result<bool>,
    ) -> Result<()> {
        self.details_get(id)?.ok_or(Error::NoDevice(id))?;
        let root = self.dev_root(id)?;
        self.tx.btree_walk(root, MAPPING_BOTTOM_TREE, &mut |k, v| {
            let (b, t) = unpack_block_time(v);
            f(k, b, t)
        })
    }

    /// Highest mapped virtual block of `id`.
    pub fn highest_mapped(&self, id: u64) -> Result<Option<u64>> {
        self.details_get(id)?.ok_or(Error::NoDevice(id))?;
        let root = self.dev_root(id)?;
        self.tx.btree_last_key(root, MAPPING_BOTTOM_TREE)
    }

    // ---- superblock fields ----------------------------------------------------------------

    /// Current transaction id.
    pub fn transaction_id(&self) -> u64 {
        self.sb.trans_id
    }

    /// Compare-and-swap the transaction id.
    pub fn set_transaction_id(&mut self, current: u64, new: u64) -> Result<()> {
        if current != self.sb.trans_id {
            return Err(Error::Invalid("mismatched transaction id"));
        }
        self.mutate(|p| {
            p.sb.trans_id = new;
            Ok(())
        })
    }

    /// Snapshot clock.
    pub fn time(&self) -> u32 {
        self.sb.time
    }

    /// Set the snapshot clock (restore tools).
    pub fn set_time(&mut self, time: u32) -> Result<()> {
        self.mutate(|p| {
            p.sb.time = time;
            Ok(())
        })
    }

    /// Data block size in sectors.
    pub fn data_block_size(&self) -> u32 {
        self.sb.data_block_size
    }

    /// needs_check flag.
    pub fn needs_check(&self) -> bool {
        self.sb.flags & NEEDS_CHECK_FLAG != 0
    }

    /// Set or clear needs_check (durable at the next commit).
    pub fn set_needs_check(&mut self, on: bool) -> Result<()> {
        self.mutate(|p| {
            if on {
                p.sb.flags |= NEEDS_CHECK_FLAG;
            } else {
                p.sb.flags &= !NEEDS_CHECK_FLAG;
            }
            Ok(())
        })
    }

    // ---- metadata snapshot ----------------------------------------------------------------

    /// Block of the held metadata snapshot, if any.
    pub fn held_root(&self) -> Option<u64> {
        (self.sb.held_root != 0).then_some(self.sb.held_root)
    }

    /// Commit, then take a metadata snapshot (a superblock copy sharing both trees).
    pub fn reserve_metadata_snap(&mut self) -> Result<u64> {
        if self.sb.held_root != 0 {
            return Err(Error::Busy("a metadata snapshot is already held"));
        }
        self.commit()?;
        // Everything becomes shared with the snapshot: no top-level path is this
        // transaction's own any more.
        self.forget_roots();
        self.mutate_ordinary(|p| {
            let h = p.tx.meta_alloc()?;
            {
                let mut copy = p.sb;
                copy.data_sm = SmRoot::default();
                copy.meta_sm = SmRoot::default();
                let mut g = p.tx.bm.new_block(h, BlockKind::Superblock)?;
                copy.pack(&mut g);
            }
            p.tx.meta_inc(p.sb.mapping_root)?;
            p.tx.meta_inc(p.sb.details_root)?;
            p.sb.held_root = h;
            Ok(h)
        })
    }

    /// Drop the metadata snapshot.
    pub fn release_metadata_snap(&mut self) -> Result<()> {
        let h = self.sb.held_root;
        if h == 0 {
            return Err(Error::Invalid("no metadata snapshot is held"));
        }
        self.mutate_ordinary(|p| {
            let copy = {
                let g = p.tx.read(h, BlockKind::Superblock, SUPERBLOCK_LOCATION)?;
                Superblock::check_magic(&g)?;
                Superblock::unpack(&g)
            };
            p.tx.dec_tree(copy.mapping_root, MAPPING_TOP_TREE, 0)?;
            p.tx.dec_tree(copy.details_root, DETAILS_TREE, 0)?;
            p.tx.meta_dec(h)?;
            p.sb.held_root = 0;
            Ok(())
        })
    }

    // ---- space accounting -----------------------------------------------------------------

    /// Data space map size in blocks.
    pub fn data_nr_blocks(&self) -> u64 {
        self.tx.dsm.nr_blocks
    }

    /// Free data blocks, as dm-space-map-disk counts them (`sm_disk_get_nr_free`): committed
    /// free minus the *net* allocations of this transaction, i.e. blocks freed in this
    /// transaction count as free although [`Pool::alloc_data_block`] hands them out only after
    /// the next commit (dm-thin commits and retries when an allocation fails).  The kernel
    /// also keeps the old size until a resize is committed; dm-thin commits right after
    /// resizing, so the current size is used here.
    pub fn data_free_blocks(&self) -> u64 {
        self.tx
            .dsm
            .nr_blocks
            .saturating_sub(self.tx.dsm.nr_allocated)
    }

    /// Metadata space map size in blocks.
    pub fn metadata_nr_blocks(&self) -> u64 {
        self.tx.msm.nr_blocks
    }

    /// Free metadata blocks, reserve included, as dm-space-map-metadata counts them: free in the
    /// committed state minus the blocks allocated in this transaction (blocks freed in this
    /// transaction count only after the commit).  Equal to `nr_blocks - nr_allocated` right
    /// after a commit or open.
    pub fn metadata_free_blocks_raw(&self) -> u64 {
        self.tx.msm.nr_free()
    }

    /// Metadata reserve: min(4096, nr_blocks / 10), kept back for the change in progress and
    /// the commit: no change that allocates metadata starts once only the reserve is left.
    pub fn metadata_reserve(&self) -> u64 {
        core::cmp::min(METADATA_RESERVE_MAX, self.tx.msm.nr_blocks / 10)
    }

    /// Free metadata blocks as the pool reports them (reserve excluded, floored at 0,
    /// `dm_pool_get_free_metadata_block_count`).  At 0, changes that allocate metadata are
    /// refused with `NoSpace(Metadata)`; dm-thin then commits and, if it is still 0, switches
    /// the pool to out-of-metadata-space (read-only) until the metadata device grows.
    pub fn metadata_free_blocks(&self) -> u64 {
        self.metadata_free_blocks_raw()
            .saturating_sub(self.metadata_reserve())
    }

    /// Reference count of a data block.
    pub fn data_block_count(&mut self, b: u64) -> Result<u32> {
        self.tx.data_count(b)
    }

    /// Add a reference to a data block (restore tools).
    pub fn inc_data_block(&mut self, b: u64) -> Result<()> {
        if b >= self.tx.dsm.nr_blocks {
            return Err(Error::Invalid(
                "data block beyond the end of the data device",
            ));
        }
        self.mutate_ordinary(|p| p.tx.data_inc(b))
    }

    /// Reference count of a metadata block.
    pub fn metadata_block_count(&mut self, b: u64) -> Result<u32> {
        self.tx.meta_count(b)
    }

    /// Grow the data space map.
    pub fn resize_data(&mut self, new_nr: u64) -> Result<()> {
        if new_nr < self.tx.dsm.nr_blocks {
            return Err(Error::Invalid("the data device cannot shrink"));
        }
        if new_nr == self.tx.dsm.nr_blocks {
            return Ok(());
        }
        self.mutate(|p| p.tx.data_extend(new_nr))
    }

    /// Grow the metadata space map (the device must already have grown).
    pub fn resize_metadata(&mut self, new_nr: u64) -> Result<()> {
        let new_nr = core::cmp::min(new_nr, MAX_METADATA_BLOCKS);
        if new_nr < self.tx.msm.nr_blocks {
            return Err(Error::Invalid("the metadata device cannot shrink"));
        }
        if new_nr > self.tx.bm.nr_blocks() {
            return Err(Error::Invalid(
                "metadata device is smaller than the requested size",
            ));
        }
        if new_nr == self.tx.msm.nr_blocks {
            return Ok(());
        }
        self.mutate(|p| p.tx.meta_extend(new_nr))
    }

    // ---- commit ---------------------------------------------------------------------------

    /// Make the current transaction durable, in dm-thin's order: flush the data device; write
    /// the details and the metadata space map index; write every dirty block and flush; then
    /// write the superblock and flush again.  A crash before the superblock write leaves the
    /// previous commit intact, because nothing it references was modified in place.
    pub fn commit(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::Busy(
                "an earlier metadata operation failed; reopen the pool",
            ));
        }
        if !self.changed {
            return Ok(());
        }
        let r = self.commit_inner();
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn commit_inner(&mut self) -> Result<()> {
        self.tx.bm.flush_data()?;
        self.details_flush()?;
        // Before the index tree's root is stored (the write may shadow index-tree nodes).
        self.tx.data_index_flush()?;
        let old_index = self.tx.msm.index_loc;
        let new_index = if self.tx.msm.committed {
            let n = self.tx.meta_alloc()?;
            self.tx.meta_dec(old_index)?;
            n
        } else {
            old_index
        };
        self.tx.meta_write_index(new_index)?;
        self.tx.bm.flush()?;
        self.sb.data_sm = SmRoot {
            nr_blocks: self.tx.dsm.nr_blocks,
            nr_allocated: self.tx.dsm.nr_allocated,
            bitmap_root: self.tx.dsm.index_root,
            ref_count_root: self.tx.dsm.ref_root,
        };
        self.sb.meta_sm = SmRoot {
            nr_blocks: self.tx.msm.nr_blocks,
            nr_allocated: self.tx.msm.nr_allocated,
            bitmap_root: new_index,
            ref_count_root: self.tx.msm.ref_root,
        };
        self.sb.version = SUPERBLOCK_VERSION;
        {
            let mut g = self
                .tx
                .bm
                .new_block(SUPERBLOCK_LOCATION, BlockKind::Superblock)?;
            self.sb.pack(&mut g);
        }
        self.tx.bm.flush()?;
        self.tx.end_transaction(new_index);
        self.forget_roots();
        self.changed = false;
        Ok(())
    }
}
