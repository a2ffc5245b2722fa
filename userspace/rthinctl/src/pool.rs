//! `rthinctl pool ...`: pools on sparse files (loop devices) or block devices.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::loopdev::{self, Loop};
use crate::pools::{self, Loaded};
use crate::size::{human, suggested_metadata_bytes};
use crate::state::{self, PoolState, STATE_VERSION};
use crate::sys::Sys;
use crate::tables::{PoolTable, Target};
use crate::txn;

/// Where a new pool's space comes from.
pub enum Backing {
    /// Sparse files in this directory (default `$RTHINCTL_HOME/NAME`).
    Files(Option<PathBuf>),
    /// Existing block devices.
    Devices { metadata: PathBuf, data: PathBuf },
}

/// `pool create` arguments.
pub struct CreateArgs {
    pub name: String,
    pub data_size: Option<u64>,
    pub metadata_size: Option<u64>,
    pub backing: Backing,
    pub block_sectors: u64,
    pub low_water_mark: u64,
    pub zeroing: bool,
    pub error_if_no_space: bool,
    pub target: Target,
}

fn table_for(s: &PoolState, meta_dev: &str, data_dev: &str) -> PoolTable {
    PoolTable {
        target: s.target,
        data_sectors: s.data_size / 512,
        metadata_dev: meta_dev.into(),
        data_dev: data_dev.into(),
        block_sectors: s.block_sectors,
        low_water_mark: s.low_water_mark,
        zeroing: s.zeroing,
        error_if_no_space: s.error_if_no_space,
    }
}

/// Attach (files) or name (devices) the pool's metadata and data devices.  The returned loops
/// must live until the pool table holds them.
fn open_backing(sys: &Sys, s: &PoolState) -> Result<(Vec<Loop>, String, String)> {
    if !s.files {
        for p in [&s.metadata, &s.data] {
            if !p.exists() {
                return Err(Error::FilesMissing(p.display().to_string()));
            }
        }
        return Ok((
            Vec::new(),
            s.metadata.display().to_string(),
            s.data.display().to_string(),
        ));
    }
    for p in [&s.metadata, &s.data] {
        if !sys.dry() && !p.exists() {
            return Err(Error::FilesMissing(p.display().to_string()));
        }
    }
    let meta = sys.attach_loop(&s.metadata, "META")?;
    let data = match sys.attach_loop(&s.data, "DATA") {
        Ok(d) => d,
        Err(e) => {
            if let Some(m) = &meta {
                let _ = loopdev::detach(&m.path);
            }
            return Err(e);
        }
    };
    let name = |l: &Option<Loop>, var: &str| match l {
        Some(l) => l.path.display().to_string(),
        None => format!("${var}"),
    };
    let (m, d) = (name(&meta, "META"), name(&data, "DATA"));
    Ok((meta.into_iter().chain(data).collect(), m, d))
}

fn detach_all(loops: &[Loop]) {
    for l in loops {
        let _ = loopdev::detach(&l.path);
    }
}

/// `pool create`.
pub fn create(sys: &mut Sys, a: CreateArgs) -> Result<()> {
    state::check_name("pool", &a.name)?;
    if let Some(p) = state::lookup(&a.name) {
        match state::load(&p) {
            Ok(s) if s.creating => {
                eprintln!(
                    "rthinctl: cleaning up pool {} left half-made by an interrupted create",
                    a.name
                );
                remove_loaded(sys, Loaded { path: p, state: s }, false)?;
            }
            _ => return Err(Error::Exists(format!("pool {}", a.name))),
        }
    }
    if sys.info(&a.name)?.is_some() {
        return Err(Error::Exists(format!("device-mapper device {}", a.name)));
    }
    // Volume and pool names share device-mapper's namespace.
    for p in state::registered() {
        if pools::find(&p).is_ok_and(|l| l.state.thins.contains_key(&a.name)) {
            return Err(Error::Exists(format!("volume {} (in pool {p})", a.name)));
        }
    }
    sys.ensure_target(a.target)?;

    let (dir, metadata, data, files) = match &a.backing {
        Backing::Files(dir) => {
            let dir = dir.clone().unwrap_or_else(|| state::home().join(&a.name));
            let m = dir.join(format!("{}-metadata.img", a.name));
            let d = dir.join(format!("{}-data.img", a.name));
            for f in [&m, &d] {
                if f.exists() {
                    return Err(Error::Exists(format!("file {}", f.display())));
                }
            }
            (dir, m, d, true)
        }
        Backing::Devices { metadata, data } => {
            (state::home(), metadata.clone(), data.clone(), false)
        }
    };
    let data_size = match (a.data_size, files) {
        (Some(s), _) => s,
        (None, false) => loopdev::size_of(&data)?,
        (None, true) => {
            return Err(Error::BadSize(
                "--data-size is needed for a pool on files".into(),
            ))
        }
    };
    let block_bytes = a.block_sectors * 512;
    if data_size < block_bytes {
        return Err(Error::BadSize(format!(
            "data size {} is smaller than one block ({})",
            human(data_size),
            human(block_bytes)
        )));
    }
    let metadata_size = match (a.metadata_size, files) {
        (Some(s), _) => s,
        (None, true) => suggested_metadata_bytes(data_size, a.block_sectors),
        (None, false) => loopdev::size_of(&metadata)?,
    };
    if metadata_size < 64 * 1024 {
        return Err(Error::BadSize(format!(
            "metadata size {} is too small (at least 64K; 2M or more is advised)",
            human(metadata_size)
        )));
    }
    if !files && loopdev::size_of(&data)? < data_size {
        return Err(Error::BadSize(format!(
            "{} is smaller than --data-size",
            data.display()
        )));
    }

    let mut l = Loaded {
        path: state::state_path(&dir, &a.name),
        state: PoolState {
            version: STATE_VERSION,
            name: a.name.clone(),
            target: a.target,
            metadata: metadata.clone(),
            data: data.clone(),
            files,
            data_size: data_size / block_bytes * block_bytes,
            metadata_size,
            block_sectors: a.block_sectors,
            low_water_mark: a.low_water_mark,
            zeroing: a.zeroing,
            error_if_no_space: a.error_if_no_space,
            transaction_id: 0,
            creating: true,
            pending: None,
            thins: BTreeMap::new(),
        },
    };
    if !sys.dry() {
        fs::create_dir_all(&dir).map_err(|e| crate::other!("creating {}: {e}", dir.display()))?;
        l.save(sys)?;
        state::register(&a.name, &l.path)?;
    } else {
        sys.show(&["mkdir", "-p", &dir.display().to_string()]);
    }
    // From here on, a failure removes everything made so far.
    let made = build(sys, &l, data_size, metadata_size);
    if let Err(e) = made {
        if !sys.dry() {
            let _ = remove_loaded(sys, l, false);
        }
        return Err(e);
    }
    l.state.creating = false;
    l.save(sys)?;
    if !sys.dry() {
        println!(
            "pool {} created ({}): data {} in {}-byte blocks, metadata {}, on {}",
            a.name,
            a.target.pool_type(),
            human(l.state.data_size),
            block_bytes,
            human(metadata_size),
            if files {
                dir.display().to_string()
            } else {
                format!("{} and {}", metadata.display(), data.display())
            }
        );
    }
    Ok(())
}

/// Files, loops, fresh metadata, the pool device.
fn build(sys: &mut Sys, l: &Loaded, data_size: u64, metadata_size: u64) -> Result<()> {
    let s = &l.state;
    if s.files {
        sys.create_sparse_file(&s.metadata, metadata_size)?;
        sys.create_sparse_file(&s.data, data_size)?;
    }
    let (loops, meta_dev, data_dev) = open_backing(sys, s)?;
    let result = (|| {
        let meta_path = loops
            .first()
            .map(|l| l.path.clone())
            .unwrap_or_else(|| s.metadata.clone());
        sys.zero_first_block(&meta_path, &meta_dev)?;
        sys.create_device(s.name.as_str(), &table_for(s, &meta_dev, &data_dev).line())
    })();
    if result.is_err() {
        detach_all(&loops);
    }
    // Dropping the loops closes our descriptors: the pool holds the devices now.
    drop(loops);
    result.map(|_| ())
}

/// Remove a pool's devices, files (unless `keep_files`) and state.
fn remove_loaded(sys: &mut Sys, l: Loaded, keep_files: bool) -> Result<()> {
    let name = l.name().to_string();
    for thin in l.state.thins.keys() {
        if sys.info(thin)?.is_some() {
            sys.remove_device(thin)?;
        }
    }
    if sys.info(&name)?.is_some() {
        sys.remove_device(&name)?;
    }
    if !keep_files {
        if l.state.files {
            sys.remove_file(&l.state.metadata);
            sys.remove_file(&l.state.data);
        }
        sys.remove_file(&l.path);
        if let Some(dir) = l.path.parent() {
            // Only when empty: the directory may be the user's own.
            let _ = fs::remove_dir(dir);
        }
    }
    if !sys.dry() {
        state::unregister(&name);
    }
    Ok(())
}

/// `pool remove`.
pub fn remove(sys: &mut Sys, name: &str, keep_files: bool) -> Result<()> {
    let l = pools::find(name)?;
    let n = l.state.thins.len();
    remove_loaded(sys, l, keep_files)?;
    if !sys.dry() {
        println!(
            "pool {name} removed with its {n} volume(s){}",
            if keep_files { "; files kept" } else { "" }
        );
    }
    Ok(())
}

/// `pool activate`: attach the same files, load the same table, bring back the volumes that
/// were active.
pub fn activate(sys: &mut Sys, name: &str, dir: Option<&Path>) -> Result<()> {
    let mut l = pools::find_in(name, dir)?;
    if l.state.creating {
        return Err(crate::other!(
            "pool {name} was never completely created: remove it with `rthinctl pool remove {name}`"
        ));
    }
    if !sys.dry() {
        state::register(name, &l.path)?;
    }
    if pools::active(sys, name)?.is_none() {
        if sys.info(name)?.is_some() {
            // A device without a table, left by an interrupted activation.
            sys.remove_device(name)?;
        }
        sys.ensure_target(l.state.target)?;
        let (loops, m, d) = open_backing(sys, &l.state)?;
        let made = sys.create_device(name, &table_for(&l.state, &m, &d).line());
        if made.is_err() {
            detach_all(&loops);
        }
        drop(loops);
        made?;
    }
    if sys.dry() {
        for (t, ts) in &l.state.thins {
            if ts.active && sys.info(t)?.is_none() {
                crate::thin::activate_device(sys, &l, t)?;
            }
        }
        return Ok(());
    }
    txn::recover(sys, &mut l)?;
    let st = pools::status(sys, name)?;
    if st.transaction_id != l.state.transaction_id {
        eprintln!(
            "rthinctl: warning: pool {name} is at transaction {} but its state file expects {}",
            st.transaction_id, l.state.transaction_id
        );
    }
    println!("pool {name} active");
    Ok(())
}

/// `pool deactivate`: volumes first, then the pool (its loop devices go with it).
pub fn deactivate(sys: &mut Sys, name: &str) -> Result<()> {
    let l = pools::find(name)?;
    for thin in l.state.thins.keys() {
        if sys.info(thin)?.is_some() {
            sys.remove_device(thin)?;
        }
    }
    sys.remove_device(name)?;
    if !sys.dry() {
        println!("pool {name} inactive");
    }
    Ok(())
}

/// A size argument of `pool extend`: absolute, or `+SIZE` on top of the current one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NewSize {
    Absolute(u64),
    Plus(u64),
}

impl NewSize {
    pub fn resolve(self, current: u64) -> u64 {
        match self {
            NewSize::Absolute(v) => v,
            NewSize::Plus(v) => current + v,
        }
    }
}

pub fn parse_new_size(s: &str) -> std::result::Result<NewSize, String> {
    match s.strip_prefix('+') {
        Some(rest) => crate::size::clap_bytes(rest).map(NewSize::Plus),
        None => crate::size::clap_bytes(s).map(NewSize::Absolute),
    }
}

/// `pool extend`: grow the files, tell the loop devices, reload the pool table.
pub fn extend(
    sys: &mut Sys,
    name: &str,
    data: Option<NewSize>,
    metadata: Option<NewSize>,
) -> Result<()> {
    let mut l = pools::find(name)?;
    let info = pools::require_active(sys, name)?;
    let _ = info;
    let block_bytes = l.state.block_sectors * 512;
    let new_data = data.map(|d| d.resolve(l.state.data_size) / block_bytes * block_bytes);
    let new_meta = metadata.map(|m| m.resolve(l.state.metadata_size));
    if new_data.is_none() && new_meta.is_none() {
        return Err(Error::BadSize(
            "say --data-size and/or --metadata-size".into(),
        ));
    }
    if let Some(d) = new_data {
        if d < l.state.data_size {
            return Err(Error::BadSize(format!(
                "data size {} is smaller than the current {} (pools cannot shrink)",
                human(d),
                human(l.state.data_size)
            )));
        }
    }
    if let Some(m) = new_meta {
        if m < l.state.metadata_size {
            return Err(Error::BadSize(format!(
                "metadata size {} is smaller than the current {} (pools cannot shrink)",
                human(m),
                human(l.state.metadata_size)
            )));
        }
    }
    // The devices the live table uses, as major:minor.
    let table = sys.dm()?.status(name, true, false)?;
    let params = table.first().map(|t| t.params.clone()).unwrap_or_default();
    let mut words = params.split_whitespace();
    let (meta_dev, data_dev) = match (words.next(), words.next()) {
        (Some(m), Some(d)) => (m.to_string(), d.to_string()),
        _ => return Err(crate::other!("cannot read pool {name}'s table {params:?}")),
    };
    let grow = |sys: &Sys, file: &Path, dev: &str, size: u64| -> Result<()> {
        if l.state.files {
            sys.grow_file(file, size)?;
            let (ma, mi) = dev
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| crate::other!("bad device {dev} in pool {name}'s table"))?;
            let (loop_dev, _) = loopdev::backing_file_of(ma, mi).ok_or_else(|| {
                crate::other!("{dev} in pool {name}'s table is not a loop device")
            })?;
            sys.set_loop_capacity(&loop_dev)
        } else if loopdev::size_of(file)? < size {
            Err(Error::BadSize(format!(
                "{} is smaller than {}: grow the device first",
                file.display(),
                human(size)
            )))
        } else {
            Ok(())
        }
    };
    if let Some(m) = new_meta {
        grow(sys, &l.state.metadata.clone(), &meta_dev, m)?;
        l.state.metadata_size = m;
    }
    if let Some(d) = new_data {
        grow(sys, &l.state.data.clone(), &data_dev, d)?;
        l.state.data_size = d;
    }
    reload(sys, &l, &meta_dev, &data_dev)?;
    l.save(sys)?;
    if !sys.dry() {
        println!(
            "pool {name}: data {}, metadata {}",
            human(l.state.data_size),
            human(l.state.metadata_size)
        );
    }
    Ok(())
}

/// Load the pool's table from its state and swap it in.  Active volumes are suspended around
/// the pool's suspend, as LVM does (a suspended rthin-pool does not hold its volumes' I/O).
pub fn reload(sys: &mut Sys, l: &Loaded, meta_dev: &str, data_dev: &str) -> Result<()> {
    let name = l.name().to_string();
    sys.load(&name, &table_for(&l.state, meta_dev, data_dev).line())?;
    let mut suspended = Vec::new();
    let mut result = Ok(());
    for t in l.state.thins.keys() {
        if pools::active(sys, t)?.is_some() {
            if let Err(e) = sys.suspend(t) {
                result = Err(e);
                break;
            }
            suspended.push(t.clone());
        }
    }
    if result.is_ok() {
        result = sys.suspend(&name).and_then(|_| sys.resume(&name));
    }
    if result.is_err() && !sys.dry() {
        let _ = sys.dm()?.clear(&name);
        let _ = sys.resume(&name);
    }
    for t in suspended {
        sys.resume(&t)?;
    }
    result
}

/// Low water mark: change it in the table and the state (for `pool monitor`).
pub fn set_low_water_mark(sys: &mut Sys, l: &mut Loaded, blocks: u64) -> Result<()> {
    let table = sys.dm()?.status(l.name(), true, false)?;
    let params = table.first().map(|t| t.params.clone()).unwrap_or_default();
    let w: Vec<&str> = params.split_whitespace().collect();
    if w.len() < 2 {
        return Err(crate::other!(
            "cannot read pool {}'s table {params:?}",
            l.name()
        ));
    }
    l.state.low_water_mark = blocks;
    let (m, d) = (w[0].to_string(), w[1].to_string());
    reload(sys, l, &m, &d)?;
    l.save(sys)
}

/// One pool's status, for people and for scripts.
#[derive(Serialize)]
pub struct StatusReport {
    pub name: String,
    pub target: String,
    pub active: bool,
    pub state_file: String,
    pub data_size_bytes: u64,
    pub metadata_size_bytes: u64,
    pub block_size_bytes: u64,
    pub volumes: usize,
    #[serde(flatten)]
    pub kernel: Option<KernelStatus>,
}

#[derive(Serialize)]
pub struct KernelStatus {
    pub transaction_id: u64,
    pub data_used_blocks: u64,
    pub data_total_blocks: u64,
    pub data_used_percent: f64,
    pub metadata_used_blocks: u64,
    pub metadata_total_blocks: u64,
    pub metadata_used_percent: f64,
    pub mode: String,
    pub needs_check: bool,
    pub no_space_policy: String,
    pub discard: String,
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (used as f64 * 10000.0 / total as f64).round() / 100.0
    }
}

fn report(sys: &mut Sys, l: &mut Loaded) -> Result<StatusReport> {
    if !sys.dry() {
        txn::recover(sys, l)?;
    }
    let active = pools::active(sys, l.name())?.is_some();
    let kernel = if active {
        let st = pools::status(sys, l.name())?;
        Some(KernelStatus {
            transaction_id: st.transaction_id,
            data_used_blocks: st.data_used,
            data_total_blocks: st.data_total,
            data_used_percent: percent(st.data_used, st.data_total),
            metadata_used_blocks: st.metadata_used,
            metadata_total_blocks: st.metadata_total,
            metadata_used_percent: percent(st.metadata_used, st.metadata_total),
            mode: st.mode,
            needs_check: st.needs_check,
            no_space_policy: st.no_space,
            discard: st.discard,
        })
    } else {
        None
    };
    Ok(StatusReport {
        name: l.name().into(),
        target: l.state.target.pool_type().into(),
        active,
        state_file: l.path.display().to_string(),
        data_size_bytes: l.state.data_size,
        metadata_size_bytes: l.state.metadata_size,
        block_size_bytes: l.state.block_sectors * 512,
        volumes: l.state.thins.len(),
        kernel,
    })
}

/// `pool status [NAME] [--json]`.
pub fn status(sys: &mut Sys, name: Option<&str>, json: bool) -> Result<()> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => state::registered(),
    };
    let mut reports = Vec::new();
    for n in names {
        let mut l = pools::find(&n)?;
        reports.push(report(sys, &mut l)?);
    }
    if json {
        let v = if name.is_some() {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        println!("{}", v.map_err(|e| crate::other!("{e}"))?);
        return Ok(());
    }
    for r in reports {
        println!(
            "pool {} ({}, {})",
            r.name,
            r.target,
            if r.active { "active" } else { "inactive" }
        );
        match &r.kernel {
            Some(k) => {
                let bs = r.block_size_bytes;
                println!(
                    "  data:        {} used of {} ({:.2}%), {}/{} blocks of {}",
                    human(k.data_used_blocks * bs),
                    human(k.data_total_blocks * bs),
                    k.data_used_percent,
                    k.data_used_blocks,
                    k.data_total_blocks,
                    human(bs)
                );
                println!(
                    "  metadata:    {} used of {} ({:.2}%), {}/{} blocks of 4K",
                    human(k.metadata_used_blocks * 4096),
                    human(k.metadata_total_blocks * 4096),
                    k.metadata_used_percent,
                    k.metadata_used_blocks,
                    k.metadata_total_blocks
                );
                println!(
                    "  mode:        {}{}, {} when full, {}",
                    k.mode,
                    if k.needs_check { " (needs_check)" } else { "" },
                    k.no_space_policy.replace("_if_no_space", ""),
                    k.discard
                );
                println!("  transaction: {}", k.transaction_id);
            }
            None => println!(
                "  data {}, metadata {} (activate with `rthinctl pool activate {}`)",
                human(r.data_size_bytes),
                human(r.metadata_size_bytes),
                r.name
            ),
        }
        println!("  volumes:     {}", r.volumes);
        println!("  state:       {}", r.state_file);
    }
    Ok(())
}

/// `pool list`.
pub fn list(sys: &mut Sys, json: bool) -> Result<()> {
    let mut rows = Vec::new();
    for n in state::registered() {
        let mut l = match pools::find(&n) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("rthinctl: pool {n}: {e}");
                continue;
            }
        };
        rows.push(report(sys, &mut l)?);
    }
    if json {
        return crate::print_json(&rows);
    }
    println!(
        "{:<20} {:<10} {:<8} {:>8} {:>8} {:>7} {:>7}",
        "POOL", "TARGET", "ACTIVE", "DATA", "META", "DATA%", "VOLUMES"
    );
    for r in rows {
        let pct = r
            .kernel
            .as_ref()
            .map(|k| format!("{:.2}", k.data_used_percent))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<10} {:<8} {:>8} {:>8} {:>7} {:>7}",
            r.name,
            r.target,
            if r.active { "yes" } else { "no" },
            human(r.data_size_bytes),
            human(r.metadata_size_bytes),
            pct,
            r.volumes
        );
    }
    Ok(())
}
