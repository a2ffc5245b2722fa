//! Loop devices over backing files, with the kernel's loop ioctls (include/uapi/linux/loop.h).
//!
//! `LOOP_CONFIGURE` (Linux 5.8+) binds the file and sets its flags in one call, so no other
//! process can see a half-configured device; older kernels get `LOOP_SET_FD` then
//! `LOOP_SET_STATUS64`.  Devices are attached with `LO_FLAGS_AUTOCLEAR`: once the pool table
//! holds them, they detach by themselves when the pool goes, and a crashed rthinctl leaves no
//! loop device behind.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const LOOP_SET_FD: libc::Ioctl = 0x4C00;
const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
const LOOP_SET_STATUS64: libc::Ioctl = 0x4C04;
const LOOP_SET_CAPACITY: libc::Ioctl = 0x4C07;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

fn info_for(path: &Path) -> LoopInfo64 {
    let mut name = [0u8; LO_NAME_SIZE];
    let s = path.as_os_str().as_encoded_bytes();
    let n = s.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&s[..n]);
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR,
        lo_file_name: name,
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An attached loop device.  Keep it until the pool table holds the device: dropping it closes
/// the last descriptor, which (autoclear) detaches an unused device.
pub struct Loop {
    pub path: PathBuf,
    pub file: File,
}

/// Attach `backing` to a free loop device.
pub fn attach(backing: &Path) -> Result<Loop> {
    let what = format!("attaching {} to a loop device", backing.display());
    let backing_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(backing)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::FilesMissing(backing.display().to_string()),
            _ => Error::from_os(&what, &e),
        })?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| {
            Error::from_os("opening /dev/loop-control (is the loop driver loaded?)", &e)
        })?;
    // Another process may take the free device between GET_FREE and our configure: EBUSY, try
    // the next one.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns the index.
        let n = check(unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) })
            .map_err(|e| Error::from_os(&what, &e))?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::from_os(&format!("opening {}", path.display()), &e))?;
        let cfg = LoopConfig {
            fd: backing_file.as_raw_fd() as u32,
            block_size: 0,
            info: info_for(backing),
            reserved: [0; 8],
        };
        // SAFETY: cfg is a valid loop_config for the duration of the call.
        let r = check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) });
        match r {
            Ok(_) => return Ok(Loop { path, file: dev }),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) => {
                // A kernel without LOOP_CONFIGURE.
                return attach_old_style(path, dev, &backing_file, backing)
                    .map_err(|e| Error::from_os(&what, &e));
            }
            Err(e) => return Err(Error::from_os(&what, &e)),
        }
    }
    Err(crate::other!(
        "{what}: every free loop device was taken by others; retry"
    ))
}

fn attach_old_style(path: PathBuf, dev: File, backing: &File, name: &Path) -> io::Result<Loop> {
    // SAFETY: LOOP_SET_FD takes the backing descriptor by value.
    check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd()) })?;
    let info = info_for(name);
    // SAFETY: info is a valid loop_info64 for the duration of the call.
    if let Err(e) = check(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info) }) {
        // SAFETY: no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        return Err(e);
    }
    Ok(Loop { path, file: dev })
}

/// Detach a loop device now (undo of a failed create; autoclear handles the normal case).
pub fn detach(dev: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .open(dev)
        .map_err(|e| Error::from_os(&format!("opening {}", dev.display()), &e))?;
    // SAFETY: no argument.
    match check(unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) }) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(Error::from_os(&format!("detaching {}", dev.display()), &e)),
    }
}

/// Make the loop device see its grown backing file (`losetup --set-capacity`).
pub fn set_capacity(dev: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .open(dev)
        .map_err(|e| Error::from_os(&format!("opening {}", dev.display()), &e))?;
    // SAFETY: no argument.
    check(unsafe { libc::ioctl(f.as_raw_fd(), LOOP_SET_CAPACITY, 0) })
        .map_err(|e| Error::from_os(&format!("LOOP_SET_CAPACITY on {}", dev.display()), &e))?;
    Ok(())
}

/// The loop device `major:minor` is, with its backing file, if it is one.
pub fn backing_file_of(major: u32, minor: u32) -> Option<(PathBuf, PathBuf)> {
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let backing = fs::read_to_string(sys.join("loop/backing_file")).ok()?;
    let name = fs::canonicalize(&sys).ok()?.file_name()?.to_owned();
    Some((
        Path::new("/dev").join(name),
        PathBuf::from(backing.trim_end()),
    ))
}

/// Whether `p` is a block device (else a file for a loop device).
pub fn is_block_device(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

/// Size in bytes of a block device or file.
pub fn size_of(p: &Path) -> Result<u64> {
    let f = File::open(p).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::FilesMissing(p.display().to_string()),
        _ => Error::from_os(&format!("opening {}", p.display()), &e),
    })?;
    if is_block_device(p) {
        const BLKGETSIZE64: libc::Ioctl = 0x8008_1272;
        let mut size = 0u64;
        // SAFETY: BLKGETSIZE64 writes one u64.
        check(unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size) })
            .map_err(|e| Error::from_os(&format!("size of {}", p.display()), &e))?;
        Ok(size)
    } else {
        Ok(f.metadata().map_err(|e| crate::other!("{e}"))?.len())
    }
}
