//! The thin-pool superblock (`struct thin_disk_superblock`, block 0) and the device details
//! record (`struct disk_device_details`).

use super::block::{le32, le64, put32, put64, Block};
use super::error::{Error, Result};
use super::sm_common::SmRoot;

/// `THIN_SUPERBLOCK_MAGIC`.
pub const SUPERBLOCK_MAGIC: u64 = 27_022_010;
/// Version the kernel (and this engine) writes.
pub const SUPERBLOCK_VERSION: u32 = 2;
/// `THIN_METADATA_NEEDS_CHECK_FLAG`.
pub const NEEDS_CHECK_FLAG: u32 = 1;
/// Metadata block size in sectors.
pub const METADATA_BLOCK_SECTORS: u32 = 8;
/// Superblock location.
pub const SUPERBLOCK_LOCATION: u64 = 0;

const OFF_FLAGS: usize = 4;
const OFF_UUID: usize = 16;
const OFF_MAGIC: usize = 32;
const OFF_VERSION: usize = 40;
const OFF_TIME: usize = 44;
const OFF_TRANS_ID: usize = 48;
const OFF_HELD_ROOT: usize = 56;
const OFF_DATA_SM: usize = 64;
const OFF_META_SM: usize = 192;
const OFF_MAPPING_ROOT: usize = 320;
const OFF_DETAILS_ROOT: usize = 328;
const OFF_DATA_BLOCK_SIZE: usize = 336;
const OFF_META_BLOCK_SIZE: usize = 340;
const OFF_META_NR_BLOCKS: usize = 344;
const OFF_COMPAT: usize = 352;
const OFF_COMPAT_RO: usize = 356;
const OFF_INCOMPAT: usize = 360;

/// Decoded superblock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Superblock {
    /// Flags (bit 0: needs_check).
    pub flags: u32,
    /// UUID (the kernel writes zeros).
    pub uuid: [u8; 16],
    /// Format version.
    pub version: u32,
    /// Snapshot clock.
    pub time: u32,
    /// Userspace transaction id.
    pub trans_id: u64,
    /// Metadata snapshot superblock copy, 0 = none.
    pub held_root: u64,
    /// Data space map root.
    pub data_sm: SmRoot,
    /// Metadata space map root.
    pub meta_sm: SmRoot,
    /// Top-level mapping tree root.
    pub mapping_root: u64,
    /// Device details tree root.
    pub details_root: u64,
    /// Data block size in sectors.
    pub data_block_size: u32,
    /// Metadata block size in sectors (8).
    pub metadata_block_size: u32,
    /// Metadata device size in blocks at format time.
    pub metadata_nr_blocks: u64,
    /// Compatible feature flags.
    pub compat_flags: u32,
    /// Read-only-compatible feature flags.
    pub compat_ro_flags: u32,
    /// Incompatible feature flags.
    pub incompat_flags: u32,
}

impl Superblock {
    /// Decode (the block's checksum and location were validated by the block manager).
    pub fn unpack(b: &Block) -> Superblock {
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[OFF_UUID..OFF_UUID + 16]);
        Superblock {
            flags: le32(b, OFF_FLAGS),
            uuid,
            version: le32(b, OFF_VERSION),
            time: le32(b, OFF_TIME),
            trans_id: le64(b, OFF_TRANS_ID),
            held_root: le64(b, OFF_HELD_ROOT),
            data_sm: SmRoot::unpack(&b[OFF_DATA_SM..OFF_DATA_SM + 32]),
            meta_sm: SmRoot::unpack(&b[OFF_META_SM..OFF_META_SM + 32]),
            mapping_root: le64(b, OFF_MAPPING_ROOT),
            details_root: le64(b, OFF_DETAILS_ROOT),
            data_block_size: le32(b, OFF_DATA_BLOCK_SIZE),
            metadata_block_size: le32(b, OFF_META_BLOCK_SIZE),
            metadata_nr_blocks: le64(b, OFF_META_NR_BLOCKS),
            compat_flags: le32(b, OFF_COMPAT),
            compat_ro_flags: le32(b, OFF_COMPAT_RO),
            incompat_flags: le32(b, OFF_INCOMPAT),
        }
    }

    /// Encode into a zeroed block (checksum and location are stamped on write-back).
    pub fn pack(&self, b: &mut Block) {
        b.fill(0);
        put32(b, OFF_FLAGS, self.flags);
        b[OFF_UUID..OFF_UUID + 16].copy_from_slice(&self.uuid);
        put64(b, OFF_MAGIC, SUPERBLOCK_MAGIC);
        put32(b, OFF_VERSION, self.version);
        put32(b, OFF_TIME, self.time);
        put64(b, OFF_TRANS_ID, self.trans_id);
        put64(b, OFF_HELD_ROOT, self.held_root);
        self.data_sm.pack(&mut b[OFF_DATA_SM..OFF_DATA_SM + 32]);
        self.meta_sm.pack(&mut b[OFF_META_SM..OFF_META_SM + 32]);
        put64(b, OFF_MAPPING_ROOT, self.mapping_root);
        put64(b, OFF_DETAILS_ROOT, self.details_root);
        put32(b, OFF_DATA_BLOCK_SIZE, self.data_block_size);
        put32(b, OFF_META_BLOCK_SIZE, self.metadata_block_size);
        put64(b, OFF_META_NR_BLOCKS, self.metadata_nr_blocks);
        put32(b, OFF_COMPAT, self.compat_flags);
        put32(b, OFF_COMPAT_RO, self.compat_ro_flags);
        put32(b, OFF_INCOMPAT, self.incompat_flags);
    }

    /// Magic number check (on the raw block).
    pub fn check_magic(b: &Block) -> Result<()> {
        if le64(b, OFF_MAGIC) != SUPERBLOCK_MAGIC {
            return Err(Error::BadMagic);
        }
        Ok(())
    }

    /// Refuse feature flags we do not implement (none are defined): unknown incompat bits
    /// always, unknown compat_ro bits for a writable open.
    pub fn check_features(&self, writable: bool) -> Result<()> {
        if self.incompat_flags != 0 || (writable && self.compat_ro_flags != 0) {
            return Err(Error::UnsupportedFeatures {
                incompat: self.incompat_flags,
                compat_ro: self.compat_ro_flags,
            });
        }
        Ok(())
    }

    /// Sanity checks of sizes and roots against the metadata device size (`nr` blocks).
    pub fn check_geometry(&self, loc: u64, device_blocks: u64) -> Result<()> {
        let bad = |what| Err(Error::Corrupt { block: loc, what });
        if self.meta_sm.nr_blocks == 0 || self.meta_sm.nr_blocks > device_blocks {
            return bad("metadata space map size is zero or larger than the metadata device");
        }
        if self.meta_sm.nr_allocated > self.meta_sm.nr_blocks
            || self.data_sm.nr_allocated > self.data_sm.nr_blocks
        {
            return bad("space map claims more allocated blocks than it has");
        }
        if self.data_sm.nr_blocks > super::sm_data::MAX_DATA_BLOCKS {
            return bad("data space map larger than 2^40 blocks");
        }
        if self.data_block_size == 0 {
            return bad("data block size is zero");
        }
        let n = self.meta_sm.nr_blocks;
        for r in [
            self.mapping_root,
            self.details_root,
            self.meta_sm.bitmap_root,
            self.meta_sm.ref_count_root,
            self.data_sm.bitmap_root,
            self.data_sm.ref_count_root,
            self.held_root,
        ] {
            if r >= n {
                return Err(Error::OutOfBounds {
                    block: r,
                    referenced_from: loc,
                });
            }
        }
        Ok(())
    }
}

/// `struct disk_device_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDetails {
    /// Number of mapped blocks.
    pub mapped_blocks: u64,
    /// Pool transaction id when the device was created.
    pub transaction_id: u64,
    /// Snapshot time at creation.
    pub creation_time: u32,
    /// Time of the last snapshot of (or by) this device.
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    /// Encoded size.
    pub const SIZE: usize = 24;

    /// Decode.
    pub fn unpack(b: &[u8]) -> DeviceDetails {
        DeviceDetails {
            mapped_blocks: le64(b, 0),
            transaction_id: le64(b, 8),
            creation_time: le32(b, 16),
            snapshotted_time: le32(b, 20),
        }
    }

    /// Encode.
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        put64(&mut b, 0, self.mapped_blocks);
        put64(&mut b, 8, self.transaction_id);
        put32(&mut b, 16, self.creation_time);
        put32(&mut b, 20, self.snapshotted_time);
        b
    }
}
