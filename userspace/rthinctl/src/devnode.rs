//! `/dev/mapper/NAME` nodes.  The kernel makes only `/dev/dm-N`; the named node comes from udev
//! when it runs, else from the client (what libdevmapper does when udev is absent).  We let
//! udev do it when it runs (giving it a moment), and make or remove the node ourselves
//! otherwise, so the guest without udev and a normal system both get `/dev/mapper/NAME`.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

use crate::dm::ioctl::dev_major_minor;
use crate::error::Result;

const MAPPER: &str = "/dev/mapper";

/// `/dev/mapper/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(MAPPER).join(name)
}

fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

fn node_is(p: &Path, major: u32, minor: u32) -> bool {
    fs::metadata(p)
        .map(|m| {
            m.file_type().is_block_device()
                && libc::major(m.rdev()) == major
                && libc::minor(m.rdev()) == minor
        })
        .unwrap_or(false)
}

/// Make sure `/dev/mapper/NAME` is the block device `dev` (as dm_ioctl encodes it).
pub fn ensure(name: &str, dev: u64) -> Result<()> {
    let (major, minor) = dev_major_minor(dev);
    let p = path(name);
    if udev_running() {
        for _ in 0..50 {
            if node_is(&p, major, minor) {
                return Ok(());
            }
            sleep(Duration::from_millis(100));
        }
    }
    if node_is(&p, major, minor) {
        return Ok(());
    }
    fs::create_dir_all(MAPPER).map_err(|e| crate::other!("creating {MAPPER}: {e}"))?;
    let _ = fs::remove_file(&p);
    let c = CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in a checked name");
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if r != 0 {
        return Err(crate::other!(
            "making {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Remove `/dev/mapper/NAME` after its device went (udev does it when it runs).
pub fn remove(name: &str) {
    let p = path(name);
    if udev_running() {
        for _ in 0..20 {
            if !p.exists() {
                return;
            }
            sleep(Duration::from_millis(50));
        }
    }
    let _ = fs::remove_file(p);
}
