//! `thin_dump`-compatible XML output.
//!
//! Byte-identical to thin-provisioning-tools 1.1.0 `thin_dump`, which (1) walks each distinct
//! mapping root once, listing its leaves in key order; (2) splits each device's sequence of
//! leaves into "atomic runs" shared between devices, printed once as `<def name="head leaf">`
//! and referenced by `<ref>`; (3) merges consecutive mappings into `range_mapping`s.  The
//! formatting (two-space indent, no final newline) follows that tool's XML writer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use anyhow::{anyhow, Context, Result};
use rthin_metadata::block::le64;
use rthin_metadata::btree::{
    TreeInfo, DETAILS_TREE, MAPPING_BOTTOM_TREE, MAPPING_TOP_TREE, MAX_DEPTH,
};
use rthin_metadata::btree_node as node;
use rthin_metadata::superblock::{DeviceDetails, Superblock};
use rthin_metadata::thin::unpack_block_time;
use rthin_metadata::BlockManager;

use crate::raw;

/// One entry of a device's leaf sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    Leaf(u64),
    Ref(u64),
}

/// Collect `(key, value)` pairs of a single-level tree in key order.
pub fn collect_tree<B: BlockManager>(
    bm: &B,
    root: u64,
    info: TreeInfo,
) -> Result<Vec<(u64, [u8; 24])>> {
    let mut out = Vec::new();
    collect_rec(bm, root, info, 0, &mut out)?;
    Ok(out)
}

fn collect_rec<B: BlockManager>(
    bm: &B,
    loc: u64,
    info: TreeInfo,
    depth: usize,
    out: &mut Vec<(u64, [u8; 24])>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(anyhow!("btree at {loc} is too deep"));
    }
    let (g, h) = raw::read_node(bm, loc, info)?;
    for i in 0..h.nr {
        if h.internal {
            collect_rec(bm, node::value64(&g, &h, i), info, depth + 1, out)?;
        } else {
            let mut v = [0u8; 24];
            v[..h.value_size].copy_from_slice(node::value(&g, &h, i));
            out.push((node::key(&g, &h, i), v));
        }
    }
    Ok(())
}

struct LeafWalker<'a, B: BlockManager> {
    bm: &'a B,
    seen: HashMap<u64, u32>,
}

impl<B: BlockManager> LeafWalker<'_, B> {
    fn inc(&mut self, b: u64) -> u32 {
        let c = self.seen.entry(b).or_default();
        let old = *c;
        *c += 1;
        old
    }

    fn depth(&self, root: u64) -> Result<usize> {
        let mut loc = root;
        for d in 0..=MAX_DEPTH {
            let (g, h) = raw::read_node(self.bm, loc, MAPPING_BOTTOM_TREE)?;
            if !h.internal {
                return Ok(d);
            }
            if h.nr == 0 {
                return Err(anyhow!("internal node {loc} has no entries"));
            }
            loc = node::value64(&g, &h, 0);
        }
        Err(anyhow!("mapping tree at {root} is too deep"))
    }

    fn walk(&mut self, root: u64, out: &mut Vec<Entry>) -> Result<()> {
        let depth = self.depth(root)?;
        if depth == 0 {
            self.inc(root);
            out.push(Entry::Leaf(root));
        } else if self.inc(root) > 0 {
            out.push(Entry::Ref(root));
        } else {
            self.walk_node(root, depth - 1, out)?;
        }
        Ok(())
    }

    fn walk_node(&mut self, loc: u64, depth: usize, out: &mut Vec<Entry>) -> Result<()> {
        let (g, h) = raw::read_node(self.bm, loc, MAPPING_BOTTOM_TREE)?;
        if !h.internal {
            return Err(anyhow!(
                "btree nodes under {loc} are not all at the same depth"
            ));
        }
        let children: Vec<u64> = (0..h.nr).map(|i| node::value64(&g, &h, i)).collect();
        drop(g);
        if depth == 0 {
            for c in children {
                self.inc(c);
                out.push(Entry::Leaf(c));
            }
        } else {
            // Already-seen children are reported first, then the new ones are walked: the order
            // thin_dump produces.
            let mut fresh = Vec::new();
            for c in children {
                if self.inc(c) == 0 {
                    fresh.push(c);
                } else {
                    out.push(Entry::Ref(c));
                }
            }
            for c in fresh {
                self.walk_node(c, depth - 1, out)?;
            }
        }
        Ok(())
    }
}

/// Splits leaf sequences into atomic runs and marks the shared ones.  A leaf is shared when it
/// starts a sequence twice, is reached twice through the same predecessor, or follows a run
/// boundary more than once.
#[derive(Default)]
struct Gatherer {
    prev: Option<u64>,
    heads: BTreeSet<u64>,
    tails: BTreeSet<u64>,
    shared: HashSet<u64>,
    next: BTreeMap<u64, BTreeSet<u64>>,
    back: HashMap<u64, u64>,
}

impl Gatherer {
    fn mark_head(&mut self, b: u64) {
        if !self.heads.insert(b) {
            self.shared.insert(b);
        }
    }

    fn new_seq(&mut self) {
        if let Some(p) = self.prev.take() {
            self.tails.insert(p);
        }
    }

    fn push(&mut self, b: u64) {
        match self.prev {
            Some(p) => {
                if !self.next.entry(p).or_default().insert(b) {
                    self.shared.insert(b);
                }
                match self.back.get(&b) {
                    Some(&bp) if bp != p => self.mark_head(b),
                    Some(_) => {}
                    None => {
                        self.back.insert(b, p);
                    }
                }
            }
            None => self.mark_head(b),
        }
        self.next.entry(b).or_default();
        self.prev = Some(b);
    }

    fn gather(mut self) -> Result<Vec<(Vec<u64>, bool)>> {
        self.new_seq();
        let mut extra = Vec::new();
        for (b, n) in &self.next {
            if n.len() != 1 {
                extra.push(*b);
            }
            if let Some(f) = n.iter().next() {
                if self.heads.contains(f) {
                    extra.push(*b);
                }
            }
        }
        self.tails.extend(extra);
        let mut new_heads = Vec::new();
        for t in &self.tails {
            if let Some(n) = self.next.get(t) {
                new_heads.extend(n.iter().copied());
            }
        }
        for b in new_heads {
            self.mark_head(b);
        }
        let mut runs = Vec::new();
        for &h in &self.heads {
            let mut run = vec![h];
            let mut b = h;
            while !self.tails.contains(&b) {
                b = *self
                    .next
                    .get(&b)
                    .and_then(|n| n.iter().next())
                    .ok_or_else(|| anyhow!("leaf sequence ends without a tail at {b}"))?;
                run.push(b);
                if run.len() > self.next.len() {
                    return Err(anyhow!("cycle in leaf sequences"));
                }
            }
            runs.push((run, self.shared.contains(&h)));
        }
        Ok(runs)
    }
}

/// Minimal indenting XML writer matching the reference output byte for byte.
struct XmlOut<'a, W: Write> {
    w: &'a mut W,
    level: usize,
    first: bool,
}

impl<W: Write> XmlOut<'_, W> {
    fn line(&mut self, text: &str) -> Result<()> {
        if !self.first {
            write!(self.w, "\n{:width$}", "", width = 2 * self.level)?;
        }
        self.first = false;
        self.w.write_all(text.as_bytes())?;
        Ok(())
    }

    fn start(&mut self, text: &str) -> Result<()> {
        self.line(text)?;
        self.level += 1;
        Ok(())
    }

    fn end(&mut self, tag: &str) -> Result<()> {
        self.level = self.level.saturating_sub(1);
        self.line(&format!("</{tag}>"))
    }
}

struct Run {
    thin: u64,
    data: u64,
    time: u32,
    len: u64,
}

fn emit_run<W: Write>(x: &mut XmlOut<W>, r: &Run) -> Result<()> {
    if r.len == 1 {
        x.line(&format!(
            "<single_mapping origin_block=\"{}\" data_block=\"{}\" time=\"{}\"/>",
            r.thin, r.data, r.time
        ))
    } else {
        x.line(&format!(
            "<range_mapping origin_begin=\"{}\" data_begin=\"{}\" length=\"{}\" time=\"{}\"/>",
            r.thin, r.data, r.len, r.time
        ))
    }
}

fn emit_leaves<B: BlockManager, W: Write>(bm: &B, x: &mut XmlOut<W>, leaves: &[u64]) -> Result<()> {
    let mut run: Option<Run> = None;
    for &l in leaves {
        let (g, h) = raw::read_node(bm, l, MAPPING_BOTTOM_TREE)?;
        if h.internal {
            return Err(anyhow!("block {l} is not a leaf"));
        }
        for i in 0..h.nr {
            let k = node::key(&g, &h, i);
            let (b, t) = unpack_block_time(node::value(&g, &h, i));
            match run.as_mut() {
                Some(r)
                    if r.thin.checked_add(r.len) == Some(k)
                        && r.data.checked_add(r.len) == Some(b)
                        && t == r.time =>
                {
                    r.len += 1
                }
                _ => {
                    if let Some(r) = run.take() {
                        emit_run(x, &r)?;
                    }
                    run = Some(Run {
                        thin: k,
                        data: b,
                        time: t,
                        len: 1,
                    });
                }
            }
        }
    }
    if let Some(r) = run {
        emit_run(x, &r)?;
    }
    Ok(())
}

fn emit_entries<B: BlockManager, W: Write>(bm: &B, x: &mut XmlOut<W>, es: &[Entry]) -> Result<()> {
    let mut leaves = Vec::new();
    for e in es {
        match e {
            Entry::Leaf(b) => leaves.push(*b),
            Entry::Ref(id) => {
                if !leaves.is_empty() {
                    emit_leaves(bm, x, &leaves)?;
                    leaves.clear();
                }
                x.line(&format!("<ref name=\"{id}\"/>"))?;
            }
        }
    }
    if !leaves.is_empty() {
        emit_leaves(bm, x, &leaves)?;
    }
    Ok(())
}

/// Device list of a superblock: (id, mapping root, details) in id order.
pub fn devices<B: BlockManager>(bm: &B, sb: &Superblock) -> Result<Vec<(u64, u64, DeviceDetails)>> {
    let details: BTreeMap<u64, DeviceDetails> = collect_tree(bm, sb.details_root, DETAILS_TREE)
        .context("reading the device details tree")?
        .into_iter()
        .map(|(k, v)| (k, DeviceDetails::unpack(&v)))
        .collect();
    let tops =
        collect_tree(bm, sb.mapping_root, MAPPING_TOP_TREE).context("reading the mapping tree")?;
    let mut out = Vec::new();
    for (id, v) in tops {
        let d = details
            .get(&id)
            .ok_or_else(|| anyhow!("device {id} has a mapping tree but no details"))?;
        out.push((id, le64(&v, 0), *d));
    }
    Ok(out)
}

/// Write the XML dump of the live metadata (or of the metadata snapshot at `snap`).
pub fn dump<B: BlockManager, W: Write>(bm: &B, snap: Option<u64>, w: &mut W) -> Result<()> {
    let live = raw::live_superblock(bm).context("reading the superblock")?;
    // With a metadata snapshot thin_dump prints that copy's fields; its space-map roots are
    // zeroed, so nr_data_blocks comes out as 0 there too.
    let sb = match snap {
        Some(loc) => raw::read_superblock(bm, loc).context("reading the metadata snapshot")?,
        None => live,
    };
    let devs = devices(bm, &sb)?;
    let roots: BTreeSet<u64> = devs.iter().map(|d| d.1).collect();
    let mut entry_map = HashMap::new();
    for r in roots {
        // Each root is walked on its own (thin_dump 1.1.0 does not carry the "seen" set from
        // one device's tree to the next), so every device lists all of its leaves and sharing
        // is found by the run gatherer below.
        let mut walker = LeafWalker {
            bm,
            seen: HashMap::new(),
        };
        let mut es = Vec::new();
        walker.walk(r, &mut es)?;
        entry_map.insert(r, es);
    }
    let empty = Vec::new();
    let dev_entries: Vec<&Vec<Entry>> = devs
        .iter()
        .map(|d| entry_map.get(&d.1).unwrap_or(&empty))
        .collect();

    let mut g = Gatherer::default();
    for es in &dev_entries {
        g.new_seq();
        for e in es.iter() {
            match e {
                Entry::Leaf(b) => g.push(*b),
                Entry::Ref(_) => g.new_seq(),
            }
        }
    }
    let runs: BTreeMap<u64, (Vec<u64>, bool)> = g
        .gather()?
        .into_iter()
        .map(|(run, shared)| (run[0], (run, shared)))
        .collect();

    let mut x = XmlOut {
        w,
        level: 0,
        first: true,
    };
    // thin_dump prints the superblock flags only when some are set.
    let flags = if sb.flags != 0 {
        format!(" flags=\"{}\"", sb.flags)
    } else {
        String::new()
    };
    x.start(&format!(
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\"{flags} version=\"2\" data_block_size=\"{}\" nr_data_blocks=\"{}\">",
        sb.time, sb.trans_id, sb.data_block_size, sb.data_sm.nr_blocks
    ))?;
    for (head, (run, shared)) in &runs {
        if !shared {
            continue;
        }
        x.start(&format!("<def name=\"{head}\">"))?;
        emit_leaves(bm, &mut x, run)?;
        x.end("def")?;
    }
    for ((id, _, d), es) in devs.iter().zip(dev_entries) {
        // Replace each run by a reference when it is shared.
        let mut out = Vec::new();
        let mut i = 0;
        while i < es.len() {
            match es[i] {
                Entry::Ref(r) => {
                    out.push(Entry::Ref(r));
                    i += 1;
                }
                Entry::Leaf(b) => match runs.get(&b) {
                    Some((run, shared)) => {
                        if *shared {
                            out.push(Entry::Ref(b));
                        } else {
                            out.extend(run.iter().map(|l| Entry::Leaf(*l)));
                        }
                        i += run.len();
                    }
                    None => {
                        out.push(Entry::Leaf(b));
                        i += 1;
                    }
                },
            }
        }
        x.start(&format!(
            "<device dev_id=\"{id}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" snap_time=\"{}\">",
            d.mapped_blocks, d.transaction_id, d.creation_time, d.snapshotted_time
        ))?;
        emit_entries(bm, &mut x, &out)?;
        x.end("device")?;
    }
    x.end("superblock")?;
    x.w.flush()?;
    Ok(())
}
