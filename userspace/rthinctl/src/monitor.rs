//! `rthinctl pool monitor`: grow a pool before it fills, as LVM's dmeventd does.
//!
//! The pool's low water mark is set to the free-block count at which the threshold is crossed,
//! so the kernel raises an event exactly then; we sleep on device-mapper's event poll
//! (DM_DEV_ARM_POLL + poll on the control node) and also look every `interval` in case an
//! event was missed (the low water mark fires once per resume).

use std::time::Duration;

use crate::error::Result;
use crate::pool::{self, NewSize};
use crate::pools;
use crate::size::human;
use crate::sys::Sys;

/// Monitor settings.
pub struct Settings {
    /// Extend when data or metadata use reaches this percentage (100: never; LVM's meaning).
    pub threshold: u64,
    /// Grow by this percentage of the current size.
    pub percent: u64,
    /// Longest sleep between two looks.
    pub interval: Duration,
    /// Stop after this many extensions (for scripts and tests); none: run until killed.
    pub max_extends: Option<u64>,
}

/// The low water mark (free data blocks) at which `threshold` percent are used.
pub fn low_water_for(total_blocks: u64, threshold: u64) -> u64 {
    total_blocks * (100 - threshold.min(100)) / 100
}

fn used_at_least(used: u64, total: u64, threshold: u64) -> bool {
    total > 0 && used * 100 >= total * threshold
}

/// Run the monitor loop.
pub fn run(sys: &mut Sys, name: &str, s: &Settings) -> Result<()> {
    pools::require_active(sys, name)?;
    let mut extends = 0;
    let mut last_mode = String::new();
    println!(
        "monitoring pool {name}: extend by {}% at {}% use",
        s.percent, s.threshold
    );
    loop {
        sys.dm()?.arm_poll()?;
        let lock = crate::lock::hold()?;
        let mut l = pools::find(name)?;
        let st = pools::status(sys, name)?;
        if st.mode != last_mode {
            println!("pool {name}: mode {}", st.mode);
            last_mode = st.mode.clone();
        }
        if s.threshold < 100 {
            // Each device grows by `percent` once its use reaches the threshold; one reload
            // grows both when both are due.
            let due = |used, total, size: u64| {
                used_at_least(used, total, s.threshold).then(|| size + size * s.percent / 100)
            };
            let data = due(st.data_used, st.data_total, l.state.data_size);
            let metadata = due(st.metadata_used, st.metadata_total, l.state.metadata_size);
            for (what, used, total, new) in [
                ("data", st.data_used, st.data_total, data),
                ("metadata", st.metadata_used, st.metadata_total, metadata),
            ] {
                if let Some(new) = new {
                    println!(
                        "pool {name}: {what} {used}/{total} blocks used (>= {}%): extending {what} to {}",
                        s.threshold,
                        human(new)
                    );
                }
            }
            if data.is_some() || metadata.is_some() {
                let absolute = |n: Option<u64>| n.map(NewSize::Absolute);
                pool::extend(sys, name, absolute(data), absolute(metadata))?;
                extends += 1;
                l = pools::find(name)?;
            }
            let lwm = low_water_for(l.state.data_blocks(), s.threshold);
            if lwm != l.state.low_water_mark {
                pool::set_low_water_mark(sys, &mut l, lwm)?;
            }
        }
        drop(lock);
        if s.max_extends.is_some_and(|m| extends >= m) {
            return Ok(());
        }
        sys.dm()?.poll(s.interval)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_water_mark_fires_at_the_threshold() {
        assert_eq!(low_water_for(1000, 80), 200);
        assert_eq!(low_water_for(1000, 100), 0);
        assert!(used_at_least(800, 1000, 80));
        assert!(!used_at_least(799, 1000, 80));
        assert!(!used_at_least(0, 0, 80));
    }
}
