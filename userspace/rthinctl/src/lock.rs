//! One rthinctl at a time: commands that read and change pools hold an exclusive `flock` on
//! `$RTHINCTL_HOME/lock`, so two of them never interleave their state-file and kernel steps
//! (the transaction-id bracket assumes it is the only writer).  The lock goes with the
//! process, even on `kill -9`.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};
use crate::state;

/// Wait for and take the lock; it is held until the returned file is dropped.
pub fn hold() -> Result<File> {
    let home = state::home();
    fs::create_dir_all(&home)
        .map_err(|e| Error::from_os(&format!("creating {}", home.display()), &e))?;
    let path = home.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::from_os(&format!("opening {}", path.display()), &e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(crate::other!(
            "locking {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(f)
}
