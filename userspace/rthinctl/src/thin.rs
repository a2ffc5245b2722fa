//! `rthinctl thin ...`: thin volumes and snapshots.

use crate::error::{Error, Result};
use crate::pools::{self, Loaded};
use crate::state::{self, Pending};
use crate::sys::Sys;
use crate::tables::{msg, thin_line};
use crate::txn;

/// Load the table of volume `name` (pool must be active).  Returns its dev.
pub fn activate_device(sys: &mut Sys, l: &Loaded, name: &str) -> Result<u64> {
    let t = l
        .state
        .thins
        .get(name)
        .ok_or_else(|| crate::other!("no volume {name} in pool {}", l.name()))?;
    let pool_dev = if sys.dry() {
        match pools::active(sys, l.name())? {
            Some(i) => pools::pool_dev_string(&i),
            None => format!("/dev/mapper/{}", l.name()),
        }
    } else {
        pools::pool_dev_string(&pools::require_active(sys, l.name())?)
    };
    let line = thin_line(l.state.target, t.size / 512, &pool_dev, t.id);
    sys.create_device(name, &line)
}

fn check_new_name(sys: &mut Sys, name: &str) -> Result<()> {
    state::check_name("volume", name)?;
    for p in state::registered() {
        if p == name {
            return Err(Error::Exists(format!("pool {name}")));
        }
        if let Ok(l) = pools::find(&p) {
            if l.state.thins.contains_key(name) {
                return Err(Error::Exists(format!("volume {name} (in pool {p})")));
            }
        }
    }
    if sys.info(name)?.is_some() {
        return Err(Error::Exists(format!("device-mapper device {name}")));
    }
    Ok(())
}

/// Send `create_thin`/`create_snap` with a free id, trying the next id when the pool already
/// has one the state file did not know about.  Returns the id used.
fn create_in_pool(
    sys: &mut Sys,
    l: &mut Loaded,
    name: &str,
    size: u64,
    origin: Option<(&str, u32)>,
    tx: u64,
) -> Result<u32> {
    let mut id = l.state.free_id();
    for _ in 0..64 {
        txn::begin(
            sys,
            l,
            Pending::Create {
                name: name.into(),
                id,
                size,
                origin: origin.map(|o| o.0.to_string()),
                from_transaction: tx,
            },
        )?;
        let m = match origin {
            Some((_, oid)) => msg::create_snap(id, oid),
            None => msg::create_thin(id),
        };
        match sys.message(l.name(), &m)? {
            Ok(()) => return Ok(id),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                id += 1;
                while l.state.thins.values().any(|t| t.id == id) {
                    id += 1;
                }
            }
            Err(e) => {
                l.state.pending = None;
                l.save(sys)?;
                return Err(txn::message_error(l.name(), &m, &e));
            }
        }
    }
    l.state.pending = None;
    l.save(sys)?;
    Err(crate::other!(
        "no free device id found in pool {}",
        l.name()
    ))
}

/// After the message: move the transaction id, record the result, activate.  If activation
/// fails the volume is deleted again, so a failed command leaves nothing behind.
fn complete_create(
    sys: &mut Sys,
    l: &mut Loaded,
    name: &str,
    tx: u64,
    activate: bool,
) -> Result<()> {
    txn::advance(sys, l.name(), tx)?;
    txn::finish(sys, l)?;
    if !activate {
        if let Some(t) = l.state.thins.get_mut(name) {
            t.active = false;
        }
        return l.save(sys);
    }
    if let Err(e) = activate_device(sys, l, name) {
        let _ = delete_in_pool(sys, l, name);
        return Err(e);
    }
    Ok(())
}

/// `thin create NAME --size SIZE`.
pub fn create(
    sys: &mut Sys,
    name: &str,
    size: u64,
    pool: Option<&str>,
    activate: bool,
) -> Result<()> {
    if size % 512 != 0 {
        return Err(Error::BadSize(format!(
            "{size} bytes is not a multiple of 512"
        )));
    }
    let mut l = pools::choose(pool)?;
    pools::require_active(sys, l.name())?;
    txn::recover(sys, &mut l)?;
    check_new_name(sys, name)?;
    let tx = txn::current(sys, &l)?;
    create_in_pool(sys, &mut l, name, size, None, tx)?;
    complete_create(sys, &mut l, name, tx, activate)?;
    if !sys.dry() {
        println!(
            "volume {name} created in pool {} ({})",
            l.name(),
            crate::size::human(size)
        );
    }
    Ok(())
}

/// `thin snapshot NAME --from ORIGIN`: an active origin is suspended around `create_snap`, so
/// the snapshot gets everything written to it so far and nothing in flight.
pub fn snapshot(
    sys: &mut Sys,
    name: &str,
    origin: &str,
    size: Option<u64>,
    activate: bool,
) -> Result<()> {
    let mut l = pools::with_thin(origin, None)?;
    pools::require_active(sys, l.name())?;
    txn::recover(sys, &mut l)?;
    check_new_name(sys, name)?;
    let o = l.state.thins[origin].clone();
    let size = size.unwrap_or(o.size);
    if size % 512 != 0 {
        return Err(Error::BadSize(format!(
            "{size} bytes is not a multiple of 512"
        )));
    }
    let tx = txn::current(sys, &l)?;
    let origin_active = pools::active(sys, origin)?.is_some();
    if origin_active {
        sys.suspend(origin)?;
        txn::crash_point("suspended");
    }
    let created = create_in_pool(sys, &mut l, name, size, Some((origin, o.id)), tx);
    if origin_active {
        // Resume whatever happened: a suspended origin would hang its users.
        sys.resume(origin)?;
    }
    created?;
    complete_create(sys, &mut l, name, tx, activate)?;
    if !sys.dry() {
        println!("snapshot {name} of {origin} created in pool {}", l.name());
    }
    Ok(())
}

/// Send `delete` for volume `name` (already deactivated), bracketed.
fn delete_in_pool(sys: &mut Sys, l: &mut Loaded, name: &str) -> Result<()> {
    let id = l.state.thins[name].id;
    let tx = txn::current(sys, l)?;
    txn::begin(
        sys,
        l,
        Pending::Delete {
            name: name.into(),
            id,
            from_transaction: tx,
        },
    )?;
    match sys.message(l.name(), &msg::delete(id))? {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
        Err(e) => {
            l.state.pending = None;
            l.save(sys)?;
            return Err(txn::message_error(l.name(), &msg::delete(id), &e));
        }
    }
    txn::advance(sys, l.name(), tx)?;
    txn::finish(sys, l)
}

/// `thin delete NAME`.
pub fn delete(sys: &mut Sys, name: &str, pool: Option<&str>) -> Result<()> {
    let mut l = pools::with_thin(name, pool)?;
    pools::require_active(sys, l.name())?;
    txn::recover(sys, &mut l)?;
    if sys.info(name)?.is_some() {
        sys.remove_device(name)?;
    }
    delete_in_pool(sys, &mut l, name)?;
    if !sys.dry() {
        println!("volume {name} deleted from pool {}", l.name());
    }
    Ok(())
}

/// `thin activate NAME`.
pub fn activate(sys: &mut Sys, name: &str, pool: Option<&str>) -> Result<()> {
    let mut l = pools::with_thin(name, pool)?;
    pools::require_active(sys, l.name())?;
    txn::recover(sys, &mut l)?;
    if pools::active(sys, name)?.is_none() {
        activate_device(sys, &l, name)?;
    }
    if let Some(t) = l.state.thins.get_mut(name) {
        t.active = true;
    }
    l.save(sys)
}

/// `thin deactivate NAME`.
pub fn deactivate(sys: &mut Sys, name: &str, pool: Option<&str>) -> Result<()> {
    let mut l = pools::with_thin(name, pool)?;
    txn::recover(sys, &mut l)?;
    sys.remove_device(name)?;
    if let Some(t) = l.state.thins.get_mut(name) {
        t.active = false;
    }
    l.save(sys)
}
