//! dm-rthin metadata engine: dm-thin compatible persistent data (superblock version 2, the
//! layout Linux dm-thin 1.24 writes).
//!
//! `core` only: no `std`, no `alloc`, no heap.  Block buffers come from the platform through
//! [`block::BlockManager`]; all in-core state lives in fixed-size structs inside [`thin::Pool`].
//! This file is included both by the kernel module (`#[path = "metadata/mod.rs"] pub mod
//! metadata;`) and by the userspace crate `rthin-metadata`; see README.md in this directory.
//!
//! Layers, bottom up:
//! * [`crc`], [`block`]: checksums, block kinds, the block-manager trait;
//! * [`btree_node`]: node byte layout; [`btree`], [`btree_remove`]: tree algorithms;
//!   [`btree_build`]: bottom-up construction (restore tools);
//! * [`sm_common`], [`sm_metadata`], [`sm_data`]: space maps;
//! * [`tm`]: transaction context and copy-on-write;
//! * [`superblock`], [`thin`]: the thin-pool metadata API.

pub mod block;
pub mod btree;
pub mod btree_build;
pub mod btree_node;
pub mod btree_remove;
pub mod crc;
pub mod error;
pub mod sm_bulk;
pub mod sm_common;
pub mod sm_data;
pub mod sm_metadata;
pub mod superblock;
pub mod thin;
pub mod tm;

pub use block::{Block, BlockKind, BlockManager, BLOCK_SIZE, MAX_HELD_GUARDS};
pub use error::{Error, Result, Space};
pub use superblock::{DeviceDetails, Superblock};
pub use thin::{Mapping, Pool};
