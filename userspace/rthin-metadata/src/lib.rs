//! The dm-rthin metadata engine, built from the very files the kernel module compiles.
//! `#![no_std]` without `extern crate alloc` proves the engine needs neither.
#![no_std]

#[path = "../../../rust/metadata/mod.rs"]
mod engine;
pub use engine::*;
