//! XML → metadata image, through the engine (so a restored image is exactly what the engine
//! would have written for the same operations).  Shared definitions (`def`/`ref`) are expanded:
//! each device gets its own leaves, and data blocks are counted once per referencing leaf.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use rthin_metadata::superblock::DeviceDetails;
use rthin_metadata::{BlockManager, Pool};

use crate::xml::{self, Event};

#[derive(Clone, Copy)]
struct Map {
    origin: u64,
    data: u64,
    len: u64,
    time: u32,
}

fn parse_map(name: &str, attrs: &[(String, String)]) -> Result<Map> {
    Ok(if name == "single_mapping" {
        Map {
            origin: xml::num(attrs, name, "origin_block")?,
            data: xml::num(attrs, name, "data_block")?,
            len: 1,
            time: xml::num(attrs, name, "time")?,
        }
    } else {
        Map {
            origin: xml::num(attrs, name, "origin_begin")?,
            data: xml::num(attrs, name, "data_begin")?,
            len: xml::num(attrs, name, "length")?,
            time: xml::num(attrs, name, "time")?,
        }
    })
}

fn apply<B: BlockManager>(pool: &mut Pool<B>, dev: u64, m: &Map) -> Result<()> {
    for j in 0..m.len {
        let (o, d) = (m.origin + j, m.data + j);
        pool.inc_data_block(d)
            .with_context(|| format!("device {dev}: data block {d}"))?;
        pool.insert_with_time(dev, o, d, m.time)
            .with_context(|| format!("device {dev}: mapping {o} -> {d}"))?;
    }
    Ok(())
}

/// Build metadata from `xml_text` on a formatted-anew `bm`; the result is committed.
pub fn restore<B: BlockManager>(xml_text: &str, bm: B) -> Result<Pool<B>> {
    let events = xml::parse(xml_text)?;
    let mut it = events.into_iter();
    let (sb_attrs, _) = match it.next() {
        Some(Event::Start(n, a)) if n == "superblock" => (a, ()),
        _ => bail!("the document does not start with <superblock>"),
    };
    let dbs: u32 = xml::num(&sb_attrs, "superblock", "data_block_size")?;
    let nr_data: u64 = xml::num(&sb_attrs, "superblock", "nr_data_blocks")?;
    let time: u32 = xml::num(&sb_attrs, "superblock", "time")?;
    let trans: u64 = xml::num(&sb_attrs, "superblock", "transaction")?;
    let flags: u32 = xml::opt_num(&sb_attrs, "superblock", "flags")?.unwrap_or(0);
    let mut pool = Pool::format(bm, dbs).context("formatting the metadata")?;
    // Like thin_restore, use every metadata block: the reserve is the kernel's runtime policy.
    pool.set_metadata_reserve_enforced(false);
    pool.resize_data(nr_data)
        .context("sizing the data space map")?;
    pool.set_time(time)?;
    pool.set_transaction_id(0, trans)?;
    if flags & rthin_metadata::superblock::NEEDS_CHECK_FLAG != 0 {
        pool.set_needs_check(true)?;
    }

    let mut defs: HashMap<String, Vec<Map>> = HashMap::new();
    let mut cur_def: Option<(String, Vec<Map>)> = None;
    let mut cur_dev: Option<(u64, DeviceDetails)> = None;
    for ev in it {
        match ev {
            Event::Start(n, a) if n == "def" => {
                let name = xml::text(&a, "name").ok_or_else(|| anyhow!("<def> without name"))?;
                cur_def = Some((name.to_string(), Vec::new()));
            }
            Event::End(n) if n == "def" => {
                let (name, maps) = cur_def
                    .take()
                    .ok_or_else(|| anyhow!("</def> without <def>"))?;
                defs.insert(name, maps);
            }
            Event::Start(n, a) if n == "device" => {
                let id: u64 = xml::num(&a, "device", "dev_id")?;
                let d = DeviceDetails {
                    mapped_blocks: xml::num(&a, "device", "mapped_blocks")?,
                    transaction_id: xml::num(&a, "device", "transaction")?,
                    creation_time: xml::num(&a, "device", "creation_time")?,
                    snapshotted_time: xml::num(&a, "device", "snap_time")?,
                };
                pool.create_thin(id)
                    .with_context(|| format!("creating device {id}"))?;
                cur_dev = Some((id, d));
            }
            Event::End(n) if n == "device" => {
                let (id, d) = cur_dev
                    .take()
                    .ok_or_else(|| anyhow!("</device> without <device>"))?;
                pool.set_device_details(id, d)?;
            }
            Event::Empty(n, a) if n == "single_mapping" || n == "range_mapping" => {
                let m = parse_map(&n, &a)?;
                if let Some((_, maps)) = cur_def.as_mut() {
                    maps.push(m);
                } else if let Some((id, _)) = cur_dev {
                    apply(&mut pool, id, &m)?;
                } else {
                    bail!("<{n}> outside <device> or <def>");
                }
            }
            Event::Empty(n, a) if n == "ref" => {
                let name = xml::text(&a, "name").ok_or_else(|| anyhow!("<ref> without name"))?;
                let maps = defs
                    .get(name)
                    .ok_or_else(|| anyhow!("<ref name=\"{name}\"> to an unknown <def>"))?
                    .clone();
                let (id, _) = cur_dev.ok_or_else(|| anyhow!("<ref> outside <device>"))?;
                for m in &maps {
                    apply(&mut pool, id, m)?;
                }
            }
            Event::End(n) if n == "superblock" => break,
            other => bail!("unexpected XML element {other:?}"),
        }
    }
    pool.commit().context("committing the restored metadata")?;
    Ok(pool)
}
