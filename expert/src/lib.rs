//! Shoulder expert client: the core shared by the desktop GUI and the CLI.
//!
//! - [`client`]: connect (TCP + TLS 1.3, ALPN `shoulder/1`), verify the
//!   device ([`trust`]), drive the sans-I/O session and apply screen updates.
//! - [`identity`]: expert identities, the config directory, plant PKI helpers.
//! - [`keymap`] and [`input`]: keyboard and pointer input while controlling.
//! - [`gui`]: the egui/eframe desktop app; [`cli`]: the command line.
//! - [`printable`]: device-controlled text made safe to show.
//! - [`record`]: session records a device signed (`shoulder verify`,
//!   `shoulder play`).

pub mod cli;
pub mod client;
pub mod error;
pub mod gui;
pub mod identity;
pub mod input;
pub mod keymap;
pub mod printable;
pub mod record;
pub mod screens;
pub mod target;
pub mod trust;

pub use error::ClientError;
