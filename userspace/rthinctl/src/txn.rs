//! Crash-safe pool changes, as Docker and LVM make them.
//!
//! Every change that sends a message to the pool (`create_thin`, `create_snap`, `delete`) is
//! bracketed:
//!
//! 1. the state file records the change as `pending`, with the pool's transaction id T;
//! 2. the message is sent;
//! 3. `set_transaction_id T T+1` is sent;
//! 4. the state file records the result, transaction id T+1, nothing pending.
//!
//! The kernel commits after each message, so after a crash the pool's transaction id tells
//! which side of step 3 we were on: T+1 means the change is in the pool (roll the state
//! forward), T means it may or may not be (creates are rolled back by deleting the id, which
//! is harmless if it never got created; deletes are finished).

use std::io;

use crate::error::{Error, Result};
use crate::pools::{self, Loaded};
use crate::state::{Pending, ThinState};
use crate::sys::Sys;
use crate::tables::{msg, PoolStatus};

/// Test hook for the crash tests: with `RTHINCTL_TEST_KILL_AT=STEP`, the process kills itself
/// with SIGKILL when it reaches STEP (`begin`: change recorded, message not sent; `message`:
/// message sent, transaction id not moved; `advance`: transaction id moved, state not
/// updated; `suspended`: a snapshot's origin suspended), exactly as `kill -9` would.
pub fn crash_point(step: &str) {
    if std::env::var("RTHINCTL_TEST_KILL_AT").is_ok_and(|v| v == step) {
        // SAFETY: kill(2) on our own pid has no memory effects.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// The pool's transaction id, which must be the one the state file expects.  A pool that
/// cannot take messages is reported with what to do about it.
pub fn current(sys: &mut Sys, l: &Loaded) -> Result<u64> {
    let st = pools::status(sys, l.name())?;
    check_writable(l.name(), &st)?;
    if st.transaction_id != l.state.transaction_id {
        return Err(Error::Inconsistent(format!(
            "pool {} is at transaction {} but its state file {} expects {}: something other than rthinctl changed the pool",
            l.name(),
            st.transaction_id,
            l.path.display(),
            l.state.transaction_id
        )));
    }
    Ok(st.transaction_id)
}

/// Refuse changes a pool cannot take, naming the reason.
pub fn check_writable(name: &str, st: &PoolStatus) -> Result<()> {
    match st.mode.as_str() {
        "fail" => Err(crate::other!(
            "pool {name} has failed (status Fail): deactivate it and repair its metadata offline"
        )),
        "ro" if st.metadata_used >= st.metadata_total => Err(Error::PoolFull(name.into())),
        "ro" => Err(crate::other!(
            "pool {name} is read-only{}: deactivate it and check its metadata (rthinctl check)",
            if st.needs_check {
                " and needs a check"
            } else {
                ""
            }
        )),
        "out_of_data_space" => Err(Error::PoolFull(name.into())),
        _ => Ok(()),
    }
}

/// Send one pool message, turning the kernel's errno into an actionable error.
pub fn send(sys: &mut Sys, pool: &str, m: &str) -> Result<()> {
    match sys.message(pool, m)? {
        Ok(()) => Ok(()),
        Err(e) => Err(message_error(pool, m, &e)),
    }
}

/// What a failed message means.
pub fn message_error(pool: &str, m: &str, e: &io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => crate::other!(
            "pool {pool} refused {m:?}: it is read-only or out of metadata space (see `rthinctl pool status {pool}`)"
        ),
        Some(libc::EBUSY) => Error::Busy(format!("the volume of message {m:?} on pool {pool}")),
        Some(libc::ENOSPC) => Error::PoolFull(pool.into()),
        _ => crate::other!("message {m:?} to pool {pool}: {e}"),
    }
}

/// Step 1: record `pending`.
pub fn begin(sys: &Sys, l: &mut Loaded, pending: Pending) -> Result<()> {
    l.state.pending = Some(pending);
    l.save(sys)?;
    crash_point("begin");
    Ok(())
}

/// Step 3: move the pool's transaction id from `tx` to `tx + 1`.
pub fn advance(sys: &mut Sys, pool: &str, tx: u64) -> Result<()> {
    crash_point("message");
    send(sys, pool, &msg::set_transaction_id(tx, tx + 1))?;
    crash_point("advance");
    Ok(())
}

/// Apply a pending change to the state (its messages are in the pool).
fn apply(l: &mut Loaded, p: &Pending) {
    match p {
        Pending::Create {
            name,
            id,
            size,
            origin,
            from_transaction,
        } => {
            l.state.thins.insert(
                name.clone(),
                ThinState {
                    id: *id,
                    size: *size,
                    origin: origin.clone(),
                    active: true,
                },
            );
            l.state.transaction_id = from_transaction + 1;
        }
        Pending::Delete {
            name,
            from_transaction,
            ..
        } => {
            l.state.thins.remove(name);
            l.state.transaction_id = from_transaction + 1;
        }
    }
    l.state.pending = None;
}

/// Step 4: the change is done.
pub fn finish(sys: &Sys, l: &mut Loaded) -> Result<()> {
    if let Some(p) = l.state.pending.clone() {
        apply(l, &p);
    }
    l.save(sys)
}

/// Undo a create whose `set_transaction_id` was not sent: delete the id (harmless if the
/// create never reached the pool).
fn roll_back_create(sys: &mut Sys, pool: &str, id: u32) -> Result<()> {
    match sys.message(pool, &msg::delete(id))? {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(()),
        Err(e) => Err(message_error(pool, &msg::delete(id), &e)),
    }
}

/// Bring a pool whose last change was interrupted back to a consistent state, then make the
/// devices match the state file.  Needs the pool active; does nothing otherwise.
pub fn recover(sys: &mut Sys, l: &mut Loaded) -> Result<()> {
    if pools::active(sys, l.name())?.is_none() {
        return Ok(());
    }
    let pool = l.name().to_string();
    if let Some(p) = l.state.pending.clone() {
        // A snapshot interrupted with its origin suspended: resume the origin first.
        if let Pending::Create {
            origin: Some(o), ..
        } = &p
        {
            if let Some(i) = sys.info(o)? {
                if i.suspended {
                    sys.resume(o)?;
                }
            }
        }
        let st = pools::status(sys, &pool)?;
        check_writable(&pool, &st)?;
        let from = p.from_transaction();
        let (what, how) = match (&p, st.transaction_id) {
            (_, t) if t == from + 1 => {
                apply(l, &p);
                ("finished", "rolled forward")
            }
            (Pending::Create { id, .. }, t) if t == from => {
                roll_back_create(sys, &pool, *id)?;
                l.state.pending = None;
                ("undone", "rolled back")
            }
            (Pending::Delete { id, .. }, t) if t == from => {
                roll_back_create(sys, &pool, *id)?;
                advance(sys, &pool, from)?;
                apply(l, &p);
                ("finished", "rolled forward")
            }
            (_, t) => {
                return Err(Error::Inconsistent(format!(
                "pool {pool} is at transaction {t}, but its interrupted change started at {from}: \
                     something other than rthinctl changed the pool; fix {} by hand",
                l.path.display()
            )))
            }
        };
        l.save(sys)?;
        eprintln!("rthinctl: an interrupted change to pool {pool} was {what} ({how}): {p:?}");
    }
    reconcile(sys, l)
}

/// Make the dm devices match the state: half-made devices (no table) go, suspended ones are
/// resumed, volumes that should be active are activated.
fn reconcile(sys: &mut Sys, l: &mut Loaded) -> Result<()> {
    let names: Vec<(String, bool)> = l
        .state
        .thins
        .iter()
        .map(|(n, t)| (n.clone(), t.active))
        .collect();
    for (name, should_be_active) in names {
        let info = sys.info(&name)?;
        match info {
            Some(i) if !i.live_table => sys.remove_device(&name)?,
            Some(i) if i.suspended => sys.resume(&name)?,
            Some(_) => continue,
            None => {}
        }
        if should_be_active && pools::active(sys, &name)?.is_none() {
            crate::thin::activate_device(sys, l, &name)?;
        }
    }
    Ok(())
}
