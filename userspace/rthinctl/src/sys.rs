//! Every change rthinctl makes to the system goes through [`Sys`], which can print the
//! equivalent `truncate`/`losetup`/`dmsetup` command before doing it (`--explain`), or print it
//! instead of doing it (`--dry-run`).  Reads (status, tables, the state file) always happen, so
//! a dry run shows the commands for the system as it is.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::devnode;
use crate::dm::ioctl::TargetLine;
use crate::dm::Dm;
use crate::error::{Error, Result};
use crate::loopdev::{self, Loop};
use crate::tables::{line_text, Target};

/// How commands run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Just do it.
    #[default]
    Quiet,
    /// Print each equivalent command (as a `# ...` comment line), then do it.
    Explain,
    /// Print each equivalent command, do nothing.
    DryRun,
}

/// Quote a word for a POSIX shell when it needs it.
pub fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+,$@%".contains(c));
    if plain {
        s.to_string()
    } else if s.contains('$') && !s.contains('"') {
        // Keeps $META-style placeholders of a dry run expandable.
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn command_line(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The system, seen through a mode.
pub struct Sys {
    pub mode: Mode,
    dm: Option<Dm>,
}

impl Sys {
    pub fn new(mode: Mode) -> Sys {
        Sys { mode, dm: None }
    }

    pub fn dry(&self) -> bool {
        self.mode == Mode::DryRun
    }

    /// The control node, opened on first use.
    pub fn dm(&mut self) -> Result<&Dm> {
        if self.dm.is_none() {
            self.dm = Some(Dm::open()?);
        }
        Ok(self.dm.as_ref().expect("just opened"))
    }

    /// DM_DEV_STATUS of `name`.  A dry run on a system without device-mapper (a build host)
    /// sees no devices, so it can still print what it would do.
    pub fn info(&mut self, name: &str) -> Result<Option<crate::dm::Info>> {
        if self.dry() && self.dm.is_none() && Dm::open().is_err() {
            return Ok(None);
        }
        self.dm()?.info(name)
    }

    /// Print a command line for the explain and dry-run modes.
    pub fn show(&self, words: &[&str]) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Explain => println!("# {}", command_line(words)),
            Mode::DryRun => println!("{}", command_line(words)),
        }
    }

    /// Print a free-form shell line (assignments) in the explain and dry-run modes.
    pub fn show_raw(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Explain => println!("# {line}"),
            Mode::DryRun => println!("{line}"),
        }
    }

    /// Make sure the kernel has `target`'s pool type, loading its module if needed.
    pub fn ensure_target(&mut self, target: Target) -> Result<()> {
        if self.dry() && self.dm.is_none() && Dm::open().is_err() {
            self.show(&["modprobe", target.module()]);
            return Ok(());
        }
        let have = |sys: &mut Sys| -> Result<bool> {
            Ok(sys
                .dm()?
                .target_versions()?
                .iter()
                .any(|(n, _)| n == target.pool_type()))
        };
        if have(self)? {
            return Ok(());
        }
        self.show(&["modprobe", target.module()]);
        if self.dry() {
            return Ok(());
        }
        let out = std::process::Command::new("modprobe")
            .arg(target.module())
            .output();
        if have(self)? {
            return Ok(());
        }
        let why = match out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("running modprobe: {e}"),
        };
        Err(Error::NoTarget {
            target: target.pool_type().into(),
            module: target.module().into(),
            why: if why.is_empty() {
                "not registered".into()
            } else {
                why
            },
        })
    }

    /// A sparse file of `size` bytes, nothing allocated (`truncate -s`); refuses to replace one.
    pub fn create_sparse_file(&self, path: &Path, size: u64) -> Result<()> {
        self.set_file_len(path, size, true)
    }

    /// Grow a file (never shrinks: callers check).
    pub fn grow_file(&self, path: &Path, size: u64) -> Result<()> {
        self.set_file_len(path, size, false)
    }

    /// `truncate -s SIZE PATH`, creating the file (never replacing one) if `create`, then
    /// syncing it.
    fn set_file_len(&self, path: &Path, size: u64, create: bool) -> Result<()> {
        self.show(&[
            "truncate",
            "-s",
            &size.to_string(),
            &path.display().to_string(),
        ]);
        if self.dry() {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .create_new(create)
            .open(path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => Error::Exists(format!("file {}", path.display())),
                _ => Error::from_os(&format!("opening {}", path.display()), &e),
            })?;
        f.set_len(size)
            .map_err(|e| crate::other!("sizing {}: {e}", path.display()))?;
        f.sync_all()
            .map_err(|e| crate::other!("syncing {}: {e}", path.display()))?;
        Ok(())
    }

    pub fn remove_file(&self, path: &Path) {
        self.show(&["rm", "-f", &path.display().to_string()]);
        if !self.dry() {
            let _ = fs::remove_file(path);
        }
    }

    /// Attach a file to a loop device; `var` names it in the printed commands.  `None` in a
    /// dry run.
    pub fn attach_loop(&self, file: &Path, var: &str) -> Result<Option<Loop>> {
        if self.dry() {
            self.show_raw(&format!(
                "{var}=$(losetup --find --show {})",
                sh_quote(&file.display().to_string())
            ));
            return Ok(None);
        }
        let l = loopdev::attach(file)?;
        self.show_raw(&format!(
            "{var}=$(losetup --find --show {})   # {}",
            sh_quote(&file.display().to_string()),
            l.path.display()
        ));
        Ok(Some(l))
    }

    /// Zero the first 4 KiB of a metadata device: the pool formats fresh metadata only when
    /// that block is all zeroes.
    pub fn zero_first_block(&self, dev: &Path, shown: &str) -> Result<()> {
        self.show(&[
            "dd",
            "if=/dev/zero",
            &format!("of={shown}"),
            "bs=4096",
            "count=1",
            "oflag=direct",
            "conv=notrunc",
        ]);
        if self.dry() {
            return Ok(());
        }
        let f = OpenOptions::new()
            .write(true)
            .open(dev)
            .map_err(|e| Error::from_os(&format!("opening {}", dev.display()), &e))?;
        f.write_all_at(&[0u8; 4096], 0)
            .and_then(|_| f.sync_all())
            .map_err(|e| crate::other!("zeroing {}: {e}", dev.display()))?;
        Ok(())
    }

    pub fn set_loop_capacity(&self, dev: &Path) -> Result<()> {
        self.show(&["losetup", "--set-capacity", &dev.display().to_string()]);
        if self.dry() {
            return Ok(());
        }
        loopdev::set_capacity(dev)
    }

    /// `dmsetup create NAME --table LINE` and the `/dev/mapper` node; on any failure the device
    /// is removed again.  Returns the device's dev (0 in a dry run).
    pub fn create_device(&mut self, name: &str, line: &TargetLine) -> Result<u64> {
        self.show(&["dmsetup", "create", name, "--table", &line_text(line)]);
        self.show(&["dmsetup", "mknodes", name]);
        if self.dry() {
            return Ok(0);
        }
        let dm = self.dm()?;
        dm.create(name)?;
        let made = dm
            .load(name, std::slice::from_ref(line))
            .and_then(|_| dm.resume(name));
        let dev = match made {
            Ok(dev) => dev,
            Err(e) => {
                let _ = dm.remove(name);
                return Err(e);
            }
        };
        if let Err(e) = devnode::ensure(name, dev) {
            let _ = dm.remove(name);
            return Err(e);
        }
        Ok(dev)
    }

    /// `dmsetup remove NAME`; busy devices are reported as such.
    pub fn remove_device(&mut self, name: &str) -> Result<()> {
        self.show(&["dmsetup", "remove", name]);
        if self.dry() {
            return Ok(());
        }
        let dm = self.dm()?;
        if let Some(info) = dm.info(name)? {
            if info.open_count > 0 {
                return Err(Error::Busy(format!(
                    "{name} (open {} time(s): mounted or used by another device)",
                    info.open_count
                )));
            }
        } else {
            devnode::remove(name);
            return Ok(());
        }
        dm.remove(name)?;
        devnode::remove(name);
        Ok(())
    }

    pub fn load(&mut self, name: &str, line: &TargetLine) -> Result<()> {
        self.show(&["dmsetup", "reload", name, "--table", &line_text(line)]);
        if self.dry() {
            return Ok(());
        }
        self.dm()?.load(name, std::slice::from_ref(line))
    }

    pub fn suspend(&mut self, name: &str) -> Result<()> {
        self.show(&["dmsetup", "suspend", name]);
        if self.dry() {
            return Ok(());
        }
        self.dm()?.suspend(name, false)
    }

    pub fn resume(&mut self, name: &str) -> Result<()> {
        self.show(&["dmsetup", "resume", name]);
        if self.dry() {
            return Ok(());
        }
        self.dm()?.resume(name).map(|_| ())
    }

    /// `dmsetup message POOL 0 MSG`; the raw errno is kept for the caller to interpret.
    pub fn message(&mut self, pool: &str, msg: &str) -> Result<std::result::Result<(), io::Error>> {
        self.show(&["dmsetup", "message", pool, "0", msg]);
        if self.dry() {
            return Ok(Ok(()));
        }
        Ok(self.dm()?.message(pool, msg).map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting() {
        assert_eq!(sh_quote("/dev/loop0"), "/dev/loop0");
        assert_eq!(sh_quote("create_thin 1"), "'create_thin 1'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(
            sh_quote("0 8 rthin-pool $META $DATA 128 0 0"),
            "\"0 8 rthin-pool $META $DATA 128 0 0\""
        );
        assert_eq!(sh_quote(""), "''");
        assert_eq!(
            command_line(&["dmsetup", "message", "p", "0", "delete 3"]),
            "dmsetup message p 0 'delete 3'"
        );
    }
}
