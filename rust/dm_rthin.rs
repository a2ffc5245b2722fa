// SPDX-License-Identifier: GPL-2.0

//! dm-rthin: device-mapper thin provisioning written in Rust.
//!
//! Registers the targets `rthin-pool` and `rthin`, which take the same table lines as dm-thin's
//! `thin-pool` and `thin` (version 1.24).
//!
//! Layers:
//! - [`dm`]: safe device-mapper glue (the only place with FFI and `unsafe`);
//! - `pool`, `thin`: the two targets, policy only;
//! - [`metadata`]: the `no_std` metadata engine, the same source files as the userspace crate
//!   `rthin-metadata` (hence `pub`: its API is complete whether or not the targets use all of it).

pub mod dm;
#[path = "metadata/mod.rs"]
pub mod metadata;
mod pool;
mod thin;

use kernel::{prelude::*, sync::Arc};

module! {
    type: RthinModule,
    name: "dm_rthin",
    authors: ["dm-rthin developers"],
    description: "device-mapper thin provisioning targets (rthin-pool, rthin) in Rust",
    license: "GPL",
    alias: ["dm-rthin-pool", "dm-rthin"],
}

/// Module state: the two target registrations. Dropping it unregisters both targets.
struct RthinModule {
    _pool: Pin<KBox<dm::Registration<pool::PoolTarget>>>,
    _thin: Pin<KBox<dm::Registration<thin::ThinTarget>>>,
}

impl kernel::Module for RthinModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        // Both targets share the registry of pool objects: thin tables find their pool there.
        let registry: Arc<pool::PoolRegistry> = pool::PoolRegistry::new()?;
        let pool = KBox::pin_init(
            dm::Registration::register(module, registry.clone()),
            GFP_KERNEL,
        )?;
        let thin = KBox::pin_init(dm::Registration::register(module, registry), GFP_KERNEL)?;
        Ok(Self {
            _pool: pool,
            _thin: thin,
        })
    }
}
