//! `rthinctl thin list`: every volume with its space.

use serde::Serialize;

use crate::error::Result;
use crate::pools;
use crate::size::human;
use crate::state;
use crate::sys::Sys;
use crate::tables::parse_thin_status;
use crate::usage;

/// One volume.  Block counts are in the pool's data blocks; `None` = not known (pool on block
/// devices and volume inactive).
#[derive(Serialize)]
pub struct Row {
    pub name: String,
    pub pool: String,
    pub id: u32,
    pub size_bytes: u64,
    pub active: bool,
    pub block_size_bytes: u64,
    pub mapped_blocks: Option<u64>,
    pub exclusive_blocks: Option<u64>,
    pub shared_blocks: Option<u64>,
    pub highest_mapped_block: Option<u64>,
    pub origin: Option<String>,
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Gather the rows of one pool or of all.
pub fn rows(sys: &mut Sys, pool: Option<&str>) -> Result<Vec<Row>> {
    let names = match pool {
        Some(p) => vec![p.to_string()],
        None => state::registered(),
    };
    let mut rows = Vec::new();
    for p in names {
        let mut l = pools::find(&p)?;
        if !sys.dry() {
            // Like every command, a listing finishes a change an earlier one left half-done.
            crate::txn::recover(sys, &mut l)?;
        }
        let bs = l.state.block_sectors;
        let from_metadata = usage::of_pool(sys, &l)?;
        for (name, t) in &l.state.thins {
            let live = pools::active(sys, name)?;
            let status = match &live {
                Some(_) => sys
                    .dm()?
                    .status(name, false, false)?
                    .first()
                    .and_then(|s| parse_thin_status(&s.params)),
                None => None,
            };
            let u = from_metadata.as_ref().and_then(|m| m.get(&(t.id as u64)));
            rows.push(Row {
                name: name.clone(),
                pool: p.clone(),
                id: t.id,
                size_bytes: t.size,
                active: live.is_some(),
                block_size_bytes: bs * 512,
                // The kernel's live numbers win over the (possibly a second older) snapshot.
                mapped_blocks: status
                    .map(|s| s.mapped_sectors / bs)
                    .or(u.map(|u| u.mapped)),
                exclusive_blocks: u.map(|u| u.exclusive),
                shared_blocks: u.map(|u| u.shared),
                highest_mapped_block: match status {
                    Some(s) => s.highest_sector.map(|h| h / bs),
                    None => u.and_then(|u| u.highest),
                },
                origin: t.origin.clone(),
            });
        }
    }
    Ok(rows)
}

/// Print the listing.
pub fn list(sys: &mut Sys, pool: Option<&str>, json: bool) -> Result<()> {
    let rows = rows(sys, pool)?;
    if json {
        return crate::print_json(&rows);
    }
    println!(
        "{:<20} {:<12} {:>4} {:>8} {:<6} {:>9} {:>9} {:>9} {:>9}  ORIGIN",
        "VOLUME", "POOL", "ID", "SIZE", "ACTIVE", "MAPPED", "EXCLUSIVE", "SHARED", "HIGHEST"
    );
    for r in rows {
        println!(
            "{:<20} {:<12} {:>4} {:>8} {:<6} {:>9} {:>9} {:>9} {:>9}  {}",
            r.name,
            r.pool,
            r.id,
            human(r.size_bytes),
            if r.active { "yes" } else { "no" },
            opt(r.mapped_blocks),
            opt(r.exclusive_blocks),
            opt(r.shared_blocks),
            opt(r.highest_mapped_block),
            r.origin.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
