//! End-to-end tests across crates.

pub mod qemu;
