//! The state file: what the kernel does not remember for us (names, sizes, origins, where the
//! backing files are), one JSON file per pool beside its backing files, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory) so a
//! crash leaves either the old or the new state, never a torn one.
//!
//! A registry directory (`$RTHINCTL_HOME/pools`, default `/var/lib/rthinctl/pools`) holds one
//! symlink per pool to its state file, so commands find pools by name.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tables::Target;

/// Format version of the state file.
pub const STATE_VERSION: u32 = 1;

/// One thin volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinState {
    /// dm-thin device id (24 bits).
    pub id: u32,
    /// Virtual size in bytes (a multiple of 512).
    pub size: u64,
    /// Name of the volume this one was snapshotted from, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Whether it should be active: `pool activate` brings back exactly these.
    pub active: bool,
}

/// A pool change in flight: recorded before the kernel message, cleared when the pool's
/// transaction id has moved from `from_transaction` to `from_transaction + 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Pending {
    /// `create_thin id`, or `create_snap id origin_id` when `origin` is set.
    Create {
        name: String,
        id: u32,
        size: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<String>,
        from_transaction: u64,
    },
    /// `delete id`.
    Delete {
        name: String,
        id: u32,
        from_transaction: u64,
    },
}

impl Pending {
    pub fn from_transaction(&self) -> u64 {
        match self {
            Pending::Create {
                from_transaction, ..
            }
            | Pending::Delete {
                from_transaction, ..
            } => *from_transaction,
        }
    }
}

/// A pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    pub version: u32,
    pub name: String,
    pub target: Target,
    /// Metadata backing: a file (attached to a loop device) or a block device.
    pub metadata: PathBuf,
    /// Data backing, likewise.
    pub data: PathBuf,
    /// Whether `metadata`/`data` are files rthinctl created (and removes with the pool).
    pub files: bool,
    /// Data size in bytes the pool table covers.
    pub data_size: u64,
    /// Metadata size in bytes (the file's size for file pools).
    pub metadata_size: u64,
    /// Data block size in 512-byte sectors.
    pub block_sectors: u64,
    /// Low water mark in data blocks.
    pub low_water_mark: u64,
    pub zeroing: bool,
    pub error_if_no_space: bool,
    /// The pool's transaction id after the last completed change.
    pub transaction_id: u64,
    /// Set while `pool create` runs; a pool left so by a crash is cleaned up by `pool remove`
    /// or a new `pool create` of the same name.
    #[serde(default)]
    pub creating: bool,
    #[serde(default)]
    pub pending: Option<Pending>,
    pub thins: BTreeMap<String, ThinState>,
}

impl PoolState {
    /// The lowest device id no volume uses.
    pub fn free_id(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> = self.thins.values().map(|t| t.id).collect();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }

    /// Data size in blocks.
    pub fn data_blocks(&self) -> u64 {
        self.data_size / (self.block_sectors * 512)
    }
}

/// Where rthinctl keeps its registry and, by default, pool directories.
pub fn home() -> PathBuf {
    std::env::var_os("RTHINCTL_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/rthinctl"))
}

fn registry() -> PathBuf {
    home().join("pools")
}

/// State file of pool `name` in `dir`.
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.rthinctl.json"))
}

/// Pool names are dm device names and file names: keep them simple.
pub fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        && !name.starts_with('.')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(crate::other!(
            "bad {kind} name {name:?}: use 1-100 of A-Z a-z 0-9 . _ + - (not starting with . or -)"
        ))
    }
}

/// Read a state file.
pub fn load(path: &Path) -> Result<PoolState> {
    let text = fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::FilesMissing(path.display().to_string()),
        _ => crate::other!("reading {}: {e}", path.display()),
    })?;
    let s: PoolState =
        serde_json::from_str(&text).map_err(|e| crate::other!("{}: {e}", path.display()))?;
    if s.version != STATE_VERSION {
        return Err(crate::other!(
            "{}: state version {} is not {STATE_VERSION}",
            path.display(),
            s.version
        ));
    }
    Ok(s)
}

/// Replace `path` with `state`, atomically and durably.
pub fn save(path: &Path, state: &PoolState) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let text = serde_json::to_string_pretty(state).map_err(|e| crate::other!("{e}"))?;
    let io = |e: std::io::Error| crate::other!("writing {}: {e}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    // The rename itself must reach the disk before we act on the new state.
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Record pool `name` in the registry (a symlink to its state file).
pub fn register(name: &str, state_file: &Path) -> Result<()> {
    let reg = registry();
    fs::create_dir_all(&reg).map_err(|e| crate::other!("creating {}: {e}", reg.display()))?;
    let link = reg.join(name);
    let target = fs::canonicalize(state_file).unwrap_or_else(|_| state_file.to_path_buf());
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link)
        .map_err(|e| crate::other!("registering {}: {e}", link.display()))?;
    Ok(())
}

/// Forget pool `name`.
pub fn unregister(name: &str) {
    let _ = fs::remove_file(registry().join(name));
}

/// The state file of a registered pool.
pub fn lookup(name: &str) -> Option<PathBuf> {
    fs::read_link(registry().join(name)).ok()
}

/// Registered pool names, sorted.
pub fn registered() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(registry())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PoolState {
        let mut thins = BTreeMap::new();
        thins.insert(
            "base".to_string(),
            ThinState {
                id: 0,
                size: 1 << 30,
                origin: None,
                active: true,
            },
        );
        thins.insert(
            "snap".to_string(),
            ThinState {
                id: 2,
                size: 1 << 30,
                origin: Some("base".into()),
                active: false,
            },
        );
        PoolState {
            version: STATE_VERSION,
            name: "pool0".into(),
            target: Target::Rthin,
            metadata: "/x/pool0-metadata.img".into(),
            data: "/x/pool0-data.img".into(),
            files: true,
            data_size: 10 << 30,
            metadata_size: 2 << 20,
            block_sectors: 128,
            low_water_mark: 0,
            zeroing: true,
            error_if_no_space: false,
            transaction_id: 2,
            creating: false,
            pending: Some(Pending::Create {
                name: "snap2".into(),
                id: 1,
                size: 1 << 30,
                origin: Some("base".into()),
                from_transaction: 2,
            }),
            thins,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rthinctl-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let d = scratch("rt");
        let p = state_path(&d, "pool0");
        assert_eq!(p, d.join("pool0.rthinctl.json"));
        let s = sample();
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        // Saving again replaces the file and leaves no temporary behind.
        let mut s2 = s.clone();
        s2.pending = None;
        s2.transaction_id = 3;
        save(&p, &s2).unwrap();
        assert_eq!(load(&p).unwrap(), s2);
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pending_operations_are_tagged_in_the_json() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(
            text.contains(r#""pending":{"op":"create","name":"snap2","id":1"#),
            "{text}"
        );
        assert!(text.contains(r#""target":"rthin""#), "{text}");
    }

    #[test]
    fn missing_state_file_is_reported_as_missing_files() {
        let e = load(Path::new("/nonexistent/p.rthinctl.json")).unwrap_err();
        assert!(matches!(e, Error::FilesMissing(_)), "{e}");
    }

    #[test]
    fn other_versions_are_refused() {
        let d = scratch("ver");
        let p = state_path(&d, "p");
        let mut s = sample();
        s.version = 99;
        save(&p, &s).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("version 99"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn free_ids_fill_gaps() {
        let s = sample();
        assert_eq!(s.free_id(), 1);
        assert_eq!(s.data_blocks(), 163_840);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("pool", "pool0").is_ok());
        assert!(check_name("pool", "a.b_c+d-1").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_name("pool", bad).is_err(), "{bad}");
        }
    }
}
