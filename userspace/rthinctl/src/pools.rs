//! Finding pools and volumes by name, and what the kernel says about them.

use std::path::{Path, PathBuf};

use crate::dm::Info;
use crate::error::{Error, Result};
use crate::state::{self, PoolState};
use crate::sys::Sys;
use crate::tables::{parse_pool_status, PoolStatus};

/// A pool's state and where it is kept.
pub struct Loaded {
    pub path: PathBuf,
    pub state: PoolState,
}

impl Loaded {
    /// Write the state back (not in a dry run).
    pub fn save(&self, sys: &Sys) -> Result<()> {
        if sys.dry() {
            return Ok(());
        }
        state::save(&self.path, &self.state)
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }
}

fn no_pool(name: &str) -> Error {
    Error::NotFound(format!(
        "no pool named {name} (see `rthinctl pool list`; after a reboot: `rthinctl pool activate {name} --dir DIR`)"
    ))
}

/// A registered pool.
pub fn find(name: &str) -> Result<Loaded> {
    let path = state::lookup(name).ok_or_else(|| no_pool(name))?;
    let state = state::load(&path)?;
    Ok(Loaded { path, state })
}

/// A registered pool, or the one whose state file is in `dir`.
pub fn find_in(name: &str, dir: Option<&Path>) -> Result<Loaded> {
    match dir {
        Some(d) => {
            let path = state::state_path(d, name);
            if !path.exists() {
                return Err(Error::FilesMissing(path.display().to_string()));
            }
            let state = state::load(&path)?;
            Ok(Loaded { path, state })
        }
        None => find(name),
    }
}

/// `--pool P`, or the only pool there is.
pub fn choose(pool: Option<&str>) -> Result<Loaded> {
    if let Some(p) = pool {
        return find(p);
    }
    let names = state::registered();
    match names.len() {
        0 => Err(Error::NotFound(
            "no pools yet: create one with `rthinctl pool create NAME --data-size SIZE`".into(),
        )),
        1 => find(&names[0]),
        _ => Err(crate::other!(
            "there are several pools ({}): say which with --pool",
            names.join(", ")
        )),
    }
}

/// The pool holding volume `thin` (in `--pool P` if given).
pub fn with_thin(thin: &str, pool: Option<&str>) -> Result<Loaded> {
    let candidates = match pool {
        Some(p) => vec![p.to_string()],
        None => state::registered(),
    };
    for p in candidates {
        let l = find(&p)?;
        if l.state.thins.contains_key(thin) {
            return Ok(l);
        }
    }
    Err(Error::NotFound(format!(
        "no thin volume named {thin} (see `rthinctl thin list`)"
    )))
}

/// The device's info if it has a live table.
pub fn active(sys: &mut Sys, name: &str) -> Result<Option<Info>> {
    Ok(sys.info(name)?.filter(|i| i.live_table))
}

/// The pool's status line, parsed.
pub fn status(sys: &mut Sys, name: &str) -> Result<PoolStatus> {
    let lines = sys.dm()?.status(name, false, false)?;
    let line = lines
        .first()
        .ok_or_else(|| crate::other!("pool {name} has no table"))?;
    parse_pool_status(&line.params)
}

/// A pool must be active for volume commands.
pub fn require_active(sys: &mut Sys, name: &str) -> Result<Info> {
    active(sys, name)?.ok_or_else(|| {
        crate::other!("pool {name} is not active: run `rthinctl pool activate {name}` first")
    })
}

/// How a thin table names its pool: `major:minor` (works without any /dev/mapper node).
pub fn pool_dev_string(info: &Info) -> String {
    let (ma, mi) = crate::dm::ioctl::dev_major_minor(info.dev);
    format!("{ma}:{mi}")
}
