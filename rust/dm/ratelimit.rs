// SPDX-License-Identifier: GPL-2.0

//! [`RateLimit`]: a `struct ratelimit_state` for log messages on the I/O path.

use super::bindings as dm;
use kernel::{bindings, prelude::*, types::Opaque};

/// Limits how often a message is printed (the kernel default: 10 per 5 seconds).
///
/// Usable from any context, including `map` and interrupts (the state is protected by a raw
/// spinlock taken with `trylock`).
///
/// # Invariants
///
/// `state` was initialised by `ratelimit_state_init()` and is pinned.
#[pin_data]
pub struct RateLimit {
    #[pin]
    state: Opaque<bindings::ratelimit_state>,
}

// SAFETY: `___ratelimit()` serialises access to the state internally.
unsafe impl Send for RateLimit {}
// SAFETY: As above; `allow` only takes `&self`.
unsafe impl Sync for RateLimit {}

impl RateLimit {
    /// A new limiter with the kernel's default interval and burst.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            state <- Opaque::ffi_init(|slot: *mut bindings::ratelimit_state| {
                // SAFETY: `slot` is valid for writes and pinned; the shim initialises every
                // field, which establishes the type invariant.
                unsafe { dm::rthin_ratelimit_init(slot) }
            }),
        })
    }

    /// Whether a message may be printed now.
    pub fn allow(&self) -> bool {
        // SAFETY: By the type invariant the state is initialised and pinned.
        unsafe { dm::rthin_ratelimit_allow(self.state.get()) }
    }
}
