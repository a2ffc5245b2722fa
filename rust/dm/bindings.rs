// SPDX-License-Identifier: GPL-2.0

//! Raw bindings for device-mapper, generated at build time by the module's Kbuild.
//!
//! The generated file covers `<linux/device-mapper.h>`, `<linux/dm-bufio.h>` and the C shim
//! (`dm_shim.h`). Types those headers only use (`bio`, `block_device`, `queue_limits`, ...) come
//! from `kernel::bindings`, so the two binding sets share one definition of each C type.
//!
//! Only the glue in `rust/dm/` may use this module; targets use the safe types around it.

#[allow(
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::ptr_as_ptr,
    clippy::ref_as_ptr,
    clippy::as_underscore,
    clippy::cast_lossless
)]
#[cfg_attr(not(CONFIG_RUSTC_HAS_UNNECESSARY_TRANSMUTES), allow(unknown_lints))]
#[allow(unnecessary_transmutes)]
mod generated {
    include!(concat!(
        env!("RTHIN_OBJDIR"),
        "/rust/dm/dm_bindings_generated.rs"
    ));
}

pub(crate) use generated::*;
