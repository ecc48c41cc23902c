//! End-to-end tests across crates.

pub mod netsim;
pub mod qemu;
