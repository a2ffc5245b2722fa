//! XML → metadata image, streaming: the document is read element by element (quick-xml, with
//! entity unescaping) and each mapping tree is built bottom-up with full leaves
//! (`btree_build.rs` in the engine) as its mappings go by.  The blocks built so far are
//! written back every 2^20 mappings, so with a bounded block cache
//! (`rthin_metadata_file::open_file`) memory stays bounded whatever the size of the XML or the
//! metadata (the `<def>` leaf lists aside: 24 bytes per shared leaf).
//!
//! Sharing is kept as the XML states it: a `<def>` becomes a run of leaves of its own, and every
//! `<ref>` to it puts those same leaves into the device's tree (one more reference per leaf), as
//! a snapshot shares leaves.  Each data block gains one reference per leaf entry that maps it,
//! which is what `thin_check` counts.  Mappings of a device or a `<def>` must come in
//! increasing order of virtual block, as `thin_dump` writes them.

use std::collections::HashMap;
use std::io::BufRead;

use anyhow::{anyhow, bail, Context, Result};
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use rthin_metadata::btree::MAPPING_BOTTOM_TREE;
use rthin_metadata::btree_build::{LeafRef, LeafRunBuilder, TreeBuilder};
use rthin_metadata::superblock::DeviceDetails;
use rthin_metadata::thin::pack_block_time;
use rthin_metadata::{Block, BlockManager, Pool, BLOCK_SIZE};

/// Data blocks one space-map bitmap covers.
const BITMAP_SPAN: u64 = rthin_metadata::sm_common::ENTRIES_PER_BITMAP;

/// One `single_mapping` or `range_mapping`.
#[derive(Clone, Copy)]
struct Map {
    origin: u64,
    data: u64,
    len: u64,
    time: u32,
}

/// A `<def>`: its leaves, built once, shared by every `<ref>`.
struct Def {
    leaves: Vec<LeafRef>,
}

enum Open {
    Nothing,
    Def(String, LeafRunBuilder, Vec<LeafRef>),
    Device(u64, DeviceDetails, Box<TreeBuilder>),
}

fn tag_name(e: &BytesStart) -> String {
    String::from_utf8_lossy(e.name().as_ref()).into_owned()
}

/// The values of attributes `keys` of `e`, unescaped (`None`: absent).
fn attrs<const N: usize>(e: &BytesStart, keys: [&str; N]) -> Result<[Option<String>; N]> {
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for a in e.attributes() {
        let a = a.with_context(|| format!("bad attribute in <{}>", tag_name(e)))?;
        if let Some(i) = keys.iter().position(|k| k.as_bytes() == a.key.as_ref()) {
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .with_context(|| format!("bad value of '{}' in <{}>", keys[i], tag_name(e)))?;
            out[i] = Some(v.into_owned());
        }
    }
    Ok(out)
}

fn parse_num<T: std::str::FromStr>(v: &str, tag: &str, key: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow!("bad value '{v}' for attribute '{key}' in <{tag}>"))
}

fn need<T: std::str::FromStr>(v: &Option<String>, tag: &str, key: &str) -> Result<T> {
    match v {
        Some(v) => parse_num(v, tag, key),
        None => bail!("missing attribute '{key}' in <{tag}>"),
    }
}

/// Numeric attributes of a mapping element, read from the raw bytes (the hot path: numbers
/// need no unescaping unless they contain an entity, which then goes the general way).
fn num_attrs<const N: usize>(e: &BytesStart, tag: &str, keys: [&str; N]) -> Result<[u64; N]> {
    let mut out = [0u64; N];
    let mut seen = [false; N];
    // The hot path: quick-xml's duplicate-attribute check is skipped here (a repeated
    // attribute takes its last value).
    for a in e.attributes().with_checks(false) {
        let a = a.with_context(|| format!("bad attribute in <{tag}>"))?;
        let Some(i) = keys.iter().position(|k| k.as_bytes() == a.key.as_ref()) else {
            continue;
        };
        let raw = a.value.as_ref();
        out[i] = match fast_u64(raw) {
            Some(n) => n,
            None => {
                let v = a
                    .normalized_value(XmlVersion::Implicit1_0)
                    .with_context(|| format!("bad value of '{}' in <{tag}>", keys[i]))?;
                parse_num(&v, tag, keys[i])?
            }
        };
        seen[i] = true;
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        bail!("missing attribute '{}' in <{tag}>", keys[i]);
    }
    Ok(out)
}

/// Plain decimal digits only (at most 19 of them: never overflows).
fn fast_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(c - b'0');
    }
    Some(n)
}

fn parse_map(e: &BytesStart, single: bool) -> Result<Map> {
    if single {
        let tag = "single_mapping";
        let [origin, data, time] = num_attrs(e, tag, ["origin_block", "data_block", "time"])?;
        Ok(Map {
            origin,
            data,
            len: 1,
            time: u32::try_from(time).map_err(|_| anyhow!("time {time} out of range"))?,
        })
    } else {
        let tag = "range_mapping";
        let [origin, data, len, time] =
            num_attrs(e, tag, ["origin_begin", "data_begin", "length", "time"])?;
        Ok(Map {
            origin,
            data,
            len,
            time: u32::try_from(time).map_err(|_| anyhow!("time {time} out of range"))?,
        })
    }
}

fn device_details(e: &BytesStart) -> Result<(u64, DeviceDetails)> {
    let tag = "device";
    let [id, mapped, trans, ctime, stime] = attrs(
        e,
        [
            "dev_id",
            "mapped_blocks",
            "transaction",
            "creation_time",
            "snap_time",
        ],
    )?;
    Ok((
        need(&id, tag, "dev_id")?,
        DeviceDetails {
            mapped_blocks: need(&mapped, tag, "mapped_blocks")?,
            transaction_id: need(&trans, tag, "transaction")?,
            creation_time: need(&ctime, tag, "creation_time")?,
            snapshotted_time: need(&stime, tag, "snap_time")?,
        },
    ))
}

fn name_attr(e: &BytesStart) -> Result<String> {
    let [name] = attrs(e, ["name"])?;
    name.ok_or_else(|| anyhow!("<{}> without name", tag_name(e)))
}

/// State of one restore.
struct Restorer<B: BlockManager> {
    pool: Pool<B>,
    nr_data: u64,
    defs: HashMap<String, Def>,
    open: Open,
    buf: Box<Block>,
    /// Data references not yet added: runs of consecutive blocks `(first, len)` in one
    /// bitmap, added with one bitmap write when a run falls in another bitmap.  Adding
    /// commutes; the batch is added before anything may drop a reference.
    data_runs: Vec<(u64, u64)>,
    /// Mappings since the block manager last wrote its dirty blocks back.
    since_writeback: u64,
}

/// Mappings between write-backs of the blocks built so far (about 4,000 blocks): with a block
/// manager whose cache is bounded, the restore's memory does not grow with the metadata.  The
/// superblock is written only by the final commit, so a restore cut short leaves no pool.
const WRITEBACK_MAPPINGS: u64 = 1 << 20;

impl<B: BlockManager> Restorer<B> {
    fn check_map(&self, m: &Map) -> Result<()> {
        let end = m.data.checked_add(m.len);
        if end.is_none_or(|e| e > self.nr_data) {
            bail!(
                "data blocks {}+{} beyond the end of the data device ({} blocks)",
                m.data,
                m.len,
                self.nr_data
            );
        }
        if m.origin.checked_add(m.len).is_none() {
            bail!("virtual blocks {}+{} overflow", m.origin, m.len);
        }
        Ok(())
    }

    fn mapping(&mut self, m: Map) -> Result<()> {
        self.check_map(&m)?;
        let tx = self.pool.tx();
        match &mut self.open {
            Open::Nothing => bail!("mapping outside <device> or <def>"),
            Open::Def(name, b, leaves) => {
                for j in 0..m.len {
                    let v = pack_block_time(m.data + j, m.time).to_le_bytes();
                    if let Some(l) = b
                        .push(tx, &mut self.buf, m.origin + j, &v)
                        .with_context(|| format!("<def name=\"{name}\">: block {}", m.origin + j))?
                    {
                        leaves.push(l);
                    }
                }
            }
            Open::Device(id, _, b) => {
                for j in 0..m.len {
                    let v = pack_block_time(m.data + j, m.time).to_le_bytes();
                    b.push(tx, &mut self.buf, m.origin + j, &v)
                        .with_context(|| format!("device {id}: block {}", m.origin + j))?;
                }
            }
        }
        match self.data_runs.last_mut() {
            Some((first, len)) if *first + *len == m.data => *len += m.len,
            Some(&mut (first, _)) if first / BITMAP_SPAN != m.data / BITMAP_SPAN => {
                self.flush_data_runs()?;
                self.data_runs.push((m.data, m.len));
            }
            _ => self.data_runs.push((m.data, m.len)),
        }
        if self.data_runs.len() >= 4096 {
            self.flush_data_runs()?;
        }
        self.since_writeback += m.len;
        if self.since_writeback >= WRITEBACK_MAPPINGS {
            self.since_writeback = 0;
            self.flush_data_runs()?;
            self.pool
                .block_manager()
                .flush()
                .context("writing back the blocks built so far")?;
        }
        Ok(())
    }

    fn flush_data_runs(&mut self) -> Result<()> {
        if !self.data_runs.is_empty() {
            self.pool
                .tx()
                .data_inc_ranges(&self.data_runs)
                .context("adding data block references")?;
            self.data_runs.clear();
        }
        Ok(())
    }

    fn reference(&mut self, name: &str) -> Result<()> {
        self.flush_data_runs()?;
        let def = self
            .defs
            .get(name)
            .ok_or_else(|| anyhow!("<ref name=\"{name}\"> to an unknown <def>"))?;
        let tx = self.pool.tx();
        let Open::Device(id, _, b) = &mut self.open else {
            bail!("<ref> outside <device>");
        };
        for l in &def.leaves {
            // The tree's reference (the builder drops it again if it copies the entries).
            tx.meta_inc(l.loc)?;
            b.push_leaf(tx, &mut self.buf, *l)
                .with_context(|| format!("device {id}: <ref name=\"{name}\">"))?;
        }
        Ok(())
    }

    fn start(&mut self, e: &BytesStart, empty: bool) -> Result<()> {
        match e.name().as_ref() {
            b"single_mapping" | b"range_mapping" => {
                let m = parse_map(e, e.name().as_ref() == b"single_mapping")?;
                self.mapping(m)?;
            }
            b"ref" => {
                let name = name_attr(e)?;
                self.reference(&name)?;
            }
            b"def" => {
                if !matches!(self.open, Open::Nothing) {
                    bail!("<def> inside another element");
                }
                let name = name_attr(e)?;
                self.open = Open::Def(name, LeafRunBuilder::new(MAPPING_BOTTOM_TREE), Vec::new());
            }
            b"device" => {
                if !matches!(self.open, Open::Nothing) {
                    bail!("<device> inside another element");
                }
                let (id, d) = device_details(e)?;
                self.open = Open::Device(id, d, Box::new(TreeBuilder::new(MAPPING_BOTTOM_TREE)));
            }
            _ => bail!("unexpected XML element <{}>", tag_name(e)),
        }
        if empty {
            match e.name().as_ref() {
                b"def" | b"device" => self.end(e.name().as_ref())?,
                _ => {}
            }
        }
        Ok(())
    }

    fn end(&mut self, name: &[u8]) -> Result<()> {
        self.flush_data_runs()?;
        let open = std::mem::replace(&mut self.open, Open::Nothing);
        let tx = self.pool.tx();
        match (name, open) {
            (b"def", Open::Def(name, mut b, mut leaves)) => {
                leaves.extend(b.finish(tx, &mut self.buf)?.into_iter().flatten());
                if self.defs.insert(name.clone(), Def { leaves }).is_some() {
                    bail!("two <def>s named \"{name}\"");
                }
            }
            (b"device", Open::Device(id, d, mut b)) => {
                let root = b
                    .finish(tx, &mut self.buf)
                    .with_context(|| format!("building the mapping tree of device {id}"))?;
                self.pool
                    .create_thin_with_tree(id, root, d)
                    .with_context(|| format!("creating device {id}"))?;
            }
            (n, _) => bail!("unexpected </{}>", String::from_utf8_lossy(n)),
        }
        Ok(())
    }

    /// Drop the `<def>`s' own references: leaves no `<ref>` used are released with their data
    /// block references.
    fn release_defs(&mut self) -> Result<()> {
        let tx = self.pool.tx();
        for def in self.defs.values() {
            for l in &def.leaves {
                tx.dec_tree(l.loc, MAPPING_BOTTOM_TREE, 0)?;
            }
        }
        self.defs.clear();
        Ok(())
    }
}

/// Build metadata from `xml_text` on a formatted-anew `bm`; the result is committed.
pub fn restore<B: BlockManager>(xml_text: &str, bm: B) -> Result<Pool<B>> {
    restore_from(xml_text.as_bytes(), bm)
}

/// [`restore`] from a stream (the XML is never held in memory as a whole).
pub fn restore_from<R: BufRead, B: BlockManager>(input: R, bm: B) -> Result<Pool<B>> {
    let mut reader = Reader::from_reader(input);
    let mut ev = Vec::with_capacity(512);
    let at = |r: &Reader<R>| r.buffer_position();
    // The superblock opens the document (after a declaration, comments or blank text).
    let sb = loop {
        ev.clear();
        match reader.read_event_into(&mut ev) {
            Ok(Event::Start(e)) if e.name().as_ref() == b"superblock" => break e.into_owned(),
            Ok(Event::Decl(_) | Event::Comment(_) | Event::Text(_) | Event::DocType(_)) => {}
            Ok(Event::PI(_)) => {}
            Ok(Event::Eof) => bail!("the document has no <superblock>"),
            Ok(_) => bail!("the document does not start with <superblock>"),
            Err(e) => bail!("XML error at byte {}: {e}", reader.error_position()),
        }
    };
    let tag = "superblock";
    let [dbs, nr_data, time, trans, flags] = attrs(
        &sb,
        [
            "data_block_size",
            "nr_data_blocks",
            "time",
            "transaction",
            "flags",
        ],
    )?;
    let dbs: u32 = need(&dbs, tag, "data_block_size")?;
    let nr_data: u64 = need(&nr_data, tag, "nr_data_blocks")?;
    let time: u32 = need(&time, tag, "time")?;
    let trans: u64 = need(&trans, tag, "transaction")?;
    let flags: u32 = match &flags {
        Some(f) => parse_num(f, tag, "flags")?,
        None => 0,
    };
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
    let mut r = Restorer {
        pool,
        nr_data,
        defs: HashMap::new(),
        open: Open::Nothing,
        buf: Box::new([0u8; BLOCK_SIZE]),
        data_runs: Vec::with_capacity(4096),
        since_writeback: 0,
    };
    loop {
        ev.clear();
        let pos = at(&reader);
        let res = match reader.read_event_into(&mut ev) {
            Ok(Event::Empty(e)) => r.start(&e, true),
            Ok(Event::Start(e)) => r.start(&e, false),
            Ok(Event::End(e)) if e.name().as_ref() == b"superblock" => break,
            Ok(Event::End(e)) => r.end(e.name().as_ref()),
            Ok(Event::Text(_) | Event::GeneralRef(_) | Event::Comment(_) | Event::PI(_)) => Ok(()),
            Ok(Event::Eof) => bail!("the document ends before </superblock>"),
            Ok(other) => Err(anyhow!("unexpected XML content {other:?}")),
            Err(e) => bail!("XML error at byte {}: {e}", reader.error_position()),
        };
        res.with_context(|| format!("at byte {pos} of the XML"))?;
    }
    if !matches!(r.open, Open::Nothing) {
        bail!("</superblock> inside an open <device> or <def>");
    }
    r.flush_data_runs()?;
    r.release_defs()?;
    let mut pool = r.pool;
    pool.commit().context("committing the restored metadata")?;
    Ok(pool)
}
