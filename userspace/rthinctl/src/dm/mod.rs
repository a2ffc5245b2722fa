//! Device-mapper through its control node: the handful of ioctls rthinctl needs, each turning
//! the kernel's errno into an [`Error`] that names the device.

pub mod ioctl;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::thread::sleep;
use std::time::Duration;

use crate::error::{Error, Result};
use ioctl::{flags, Buffer, Cmd, TargetLine};

/// Where the control node lives; libdevmapper's default.
pub const CONTROL: &str = "/dev/mapper/control";

/// What DM_DEV_STATUS reports about a device.
#[derive(Clone, Debug)]
pub struct Info {
    pub dev: u64,
    pub open_count: i32,
    pub event_nr: u32,
    pub suspended: bool,
    pub live_table: bool,
    pub inactive_table: bool,
}

/// An open control node.
pub struct Dm {
    control: File,
}

const INITIAL_BUFFER: usize = 16 * 1024;

impl Dm {
    /// Open the control node; the errors say whether we lack privileges or dm itself.
    pub fn open() -> Result<Dm> {
        match OpenOptions::new().read(true).write(true).open(CONTROL) {
            Ok(control) => Ok(Dm { control }),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(Error::NotRoot(format!("opening {CONTROL}")))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::NoTarget {
                target: "device-mapper".into(),
                module: "dm-mod".into(),
                why: format!("{CONTROL} does not exist"),
            }),
            Err(e) => Err(crate::other!("opening {CONTROL}: {e}")),
        }
    }

    /// One ioctl; the buffer is grown and the call repeated while the kernel says the output
    /// did not fit.
    fn call(&self, cmd: Cmd, mut build: impl FnMut(usize) -> Buffer) -> io::Result<Buffer> {
        let mut size = INITIAL_BUFFER;
        loop {
            let mut b = build(size);
            // SAFETY: the buffer is at least data_size bytes long, as the header says, and
            // stays alive and exclusively borrowed for the duration of the call.
            let r = unsafe {
                libc::ioctl(
                    self.control.as_raw_fd(),
                    cmd.request() as libc::Ioctl,
                    b.as_mut_ptr(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if b.flags() & flags::BUFFER_FULL != 0 && size < (64 << 20) {
                size *= 4;
                continue;
            }
            return Ok(b);
        }
    }

    fn simple(&self, cmd: Cmd, name: &str, fl: u32, payload: &[u8]) -> io::Result<Buffer> {
        self.call(cmd, |size| Buffer::new(name, fl, payload, size))
    }

    /// The kernel's dm interface version.
    pub fn version(&self) -> Result<[u32; 3]> {
        let b = self
            .simple(Cmd::Version, "", 0, &[])
            .map_err(|e| Error::from_os("DM_VERSION", &e))?;
        Ok(b.version())
    }

    /// Registered target types and their versions.
    pub fn target_versions(&self) -> Result<Vec<(String, [u32; 3])>> {
        let b = self
            .simple(Cmd::ListVersions, "", 0, &[])
            .map_err(|e| Error::from_os("DM_LIST_VERSIONS", &e))?;
        Ok(ioctl::decode_versions(b.output()))
    }

    /// Every dm device: (name, dev).
    pub fn list(&self) -> Result<Vec<(String, u64)>> {
        let b = self
            .simple(Cmd::ListDevices, "", 0, &[])
            .map_err(|e| Error::from_os("DM_LIST_DEVICES", &e))?;
        Ok(ioctl::decode_name_list(b.output()))
    }

    /// DM_DEV_STATUS; `None` if there is no such device.
    pub fn info(&self, name: &str) -> Result<Option<Info>> {
        match self.simple(Cmd::DevStatus, name, 0, &[]) {
            Ok(b) => Ok(Some(Info {
                dev: b.dev(),
                open_count: b.open_count(),
                event_nr: b.event_nr(),
                suspended: b.flags() & flags::SUSPEND != 0,
                live_table: b.flags() & flags::ACTIVE_PRESENT != 0,
                inactive_table: b.flags() & flags::INACTIVE_PRESENT != 0,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            Err(e) => Err(Error::from_os(&format!("device {name}"), &e)),
        }
    }

    /// Create an empty device; returns its dev.
    pub fn create(&self, name: &str) -> Result<u64> {
        let b = self
            .simple(Cmd::DevCreate, name, 0, &[])
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => {
                    Error::Exists(format!("device-mapper device {name}"))
                }
                _ => Error::from_os(&format!("creating device {name}"), &e),
            })?;
        Ok(b.dev())
    }

    /// Load a table into the inactive slot.  EINVAL usually means the target refused its
    /// arguments (the kernel log says why) or does not exist.
    pub fn load(&self, name: &str, lines: &[TargetLine]) -> Result<()> {
        let payload = ioctl::encode_table(lines).map_err(|e| crate::other!("{e}"))?;
        self.call(Cmd::TableLoad, |size| {
            let mut b = Buffer::new(name, 0, &payload, size);
            b.set_target_count(lines.len() as u32);
            b
        })
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => crate::other!(
                "loading the table of {name}: the kernel refused it (see dmesg): {}",
                lines
                    .iter()
                    .map(|l| format!("{} {} {} {}", l.start, l.length, l.target_type, l.params))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => Error::from_os(&format!("loading the table of {name}"), &e),
        })?;
        Ok(())
    }

    /// Drop the inactive table (after a failed reload).
    pub fn clear(&self, name: &str) -> Result<()> {
        self.simple(Cmd::TableClear, name, 0, &[])
            .map_err(|e| Error::from_os(&format!("clearing the table of {name}"), &e))?;
        Ok(())
    }

    /// Suspend (flushing unless `noflush`).
    pub fn suspend(&self, name: &str, noflush: bool) -> Result<()> {
        let fl = flags::SUSPEND | if noflush { flags::NOFLUSH } else { 0 };
        self.simple(Cmd::DevSuspend, name, fl, &[])
            .map_err(|e| Error::from_os(&format!("suspending {name}"), &e))?;
        Ok(())
    }

    /// Resume, making a loaded table live; returns the device's dev.
    pub fn resume(&self, name: &str) -> Result<u64> {
        let b = self
            .simple(Cmd::DevSuspend, name, 0, &[])
            .map_err(|e| Error::from_os(&format!("resuming {name}"), &e))?;
        Ok(b.dev())
    }

    /// Remove a device.  A device that is still open is retried a few times: a tool that just
    /// closed it (blkid, udev) may hold it for a moment.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut tries = 0;
        loop {
            match self.simple(Cmd::DevRemove, name, 0, &[]) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 5 => {
                    tries += 1;
                    sleep(Duration::from_millis(100));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(()),
                Err(e) => return Err(Error::from_os(&format!("device {name}"), &e)),
            }
        }
    }

    /// The live table's status lines (`table` = the table lines instead).
    pub fn status(&self, name: &str, table: bool, noflush: bool) -> Result<Vec<TargetLine>> {
        let fl =
            if table { flags::STATUS_TABLE } else { 0 } | if noflush { flags::NOFLUSH } else { 0 };
        let b =
            self.simple(Cmd::TableStatus, name, fl, &[])
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ENXIO) => Error::NotFound(format!("no device-mapper device {name}")),
                    _ => Error::from_os(&format!("status of {name}"), &e),
                })?;
        Ok(ioctl::decode_table(b.output(), b.target_count()))
    }

    /// Send a message to sector 0 of `name`; returns the target's reply text, if any.
    pub fn message(&self, name: &str, msg: &str) -> io::Result<Option<String>> {
        let payload = ioctl::encode_message(0, msg);
        let b = self.simple(Cmd::TargetMsg, name, 0, &payload)?;
        Ok((b.flags() & flags::DATA_OUT != 0).then(|| ioctl::decode_string(b.output())))
    }

    /// Sleep until the device's event counter differs from `event_nr`; returns the new counter.
    pub fn wait(&self, name: &str, event_nr: u32) -> Result<u32> {
        let b = self
            .call(Cmd::DevWait, |size| {
                let mut b = Buffer::new(name, flags::NOFLUSH, &[], size);
                b.set_event_nr(event_nr);
                b
            })
            .map_err(|e| Error::from_os(&format!("waiting for events of {name}"), &e))?;
        Ok(b.event_nr())
    }

    /// Remember the global event counter on this descriptor (DM_DEV_ARM_POLL): a later
    /// [`Dm::poll`] returns as soon as any dm device raises an event after this call.
    pub fn arm_poll(&self) -> Result<()> {
        self.simple(Cmd::DevArmPoll, "", 0, &[])
            .map_err(|e| Error::from_os("DM_DEV_ARM_POLL", &e))?;
        Ok(())
    }

    /// Wait up to `timeout` for an event since [`Dm::arm_poll`]; true if one came.
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                return Ok(false);
            }
            return Err(crate::other!("poll on {CONTROL}: {e}"));
        }
        Ok(r > 0 && fds[0].revents & libc::POLLIN != 0)
    }
}
