//! # shoulder-agent
//!
//! The device side of Shoulder: a TLS 1.3 service (ALPN `shoulder/1`, port
//! 7575) that drives one [`shoulder_proto::session::DeviceSession`] per
//! connection, authenticates experts by plant-CA certificate (offers) or
//! invitation password, asks the person at the device before anything is
//! shown or controlled, and audits every step.
//!
//! ```text
//!  TCP ─ TLS 1.3 (rustls, ring) ─ pre-auth limit ─ DeviceSession ─┬─ capture thread (ViewConsent)
//!                                                                 ├─ input sink (ControlConsent)
//!  control socket (JSON lines) ─ Hub (one session slot) ──────────┼─ presenter (banner)
//!                                                                 └─ audit log (JSON lines, fsync)
//! ```
//!
//! The binary (`shoulder-agent run`) wires the real backends; tests call
//! [`run`] in-process on port 0 with [`backends::Backends::for_tests`].

pub mod audit;
pub mod backends;
pub mod capture;
pub mod config;
pub mod control;
pub mod fsutil;
pub mod hub;
pub mod identity;
pub mod invites;
pub mod service;
pub mod tls;
pub mod ui;
pub mod util;
pub mod wiring;

pub use backends::Backends;
pub use config::Config;
pub use service::{bind, run};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    #[error(transparent)]
    Store(#[from] invites::StoreError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error(
        "cannot listen on {addr}: {source} (fix: check `listen` in the config; is another agent running?)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
