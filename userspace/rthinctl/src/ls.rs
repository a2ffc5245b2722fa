//! Per-device space usage: mapped blocks, blocks only this device maps (exclusive) and blocks
//! other devices map too (shared).

use std::collections::HashMap;

use anyhow::Result;
use rthin_metadata::superblock::DeviceDetails;
use rthin_metadata::{BlockManager, Pool};

/// One `ls` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Thin device id.
    pub dev: u64,
    /// Mapped blocks.
    pub mapped: u64,
    /// Blocks no other device maps.
    pub exclusive: u64,
    /// Blocks at least one other device maps.
    pub shared: u64,
    /// Details record.
    pub details: DeviceDetails,
}

/// Compute the rows for every device.
pub fn ls<B: BlockManager>(pool: &mut Pool<B>) -> Result<Vec<Row>> {
    let mut devs = Vec::new();
    pool.for_each_device(&mut |id, d| {
        devs.push((id, d));
        Ok(true)
    })?;
    let mut users: HashMap<u64, u32> = HashMap::new();
    let mut per_dev: Vec<Vec<u64>> = Vec::new();
    for (id, _) in &devs {
        let mut blocks = Vec::new();
        pool.for_each_mapping(*id, &mut |_, b, _| {
            blocks.push(b);
            Ok(true)
        })?;
        blocks.sort_unstable();
        blocks.dedup();
        for b in &blocks {
            *users.entry(*b).or_default() += 1;
        }
        per_dev.push(blocks);
    }
    let mut rows = Vec::new();
    for ((id, d), blocks) in devs.iter().zip(per_dev) {
        let exclusive = blocks.iter().filter(|b| users.get(b) == Some(&1)).count() as u64;
        rows.push(Row {
            dev: *id,
            mapped: d.mapped_blocks,
            exclusive,
            shared: blocks.len() as u64 - exclusive,
            details: *d,
        });
    }
    Ok(rows)
}
