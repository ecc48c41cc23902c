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
//! [`run`] in-process on port 0 with [`backends::Backends::for_tests`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoulder_agent::AgentError> {
//! use shoulder_agent::{Config, backends::Backends};
//!
//! let mut config = Config::load("/etc/shoulder/agent.toml".as_ref(), false)?;
//! config.listen = vec!["127.0.0.1:0".parse().unwrap()];
//! let listeners = shoulder_agent::bind(&config.listen)?;
//! let (backends, recorded_input) = Backends::for_tests(320, 200);
//! // Or the real ones: shoulder_agent::wiring::backends(&config)
//! shoulder_agent::run(listeners, config, backends, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! A dropped connection (closed, failed, or silent past `peer_timeout`)
//! first releases the expert's keys and stops injection and capture; a
//! session that was viewing then stays on hold for `resume_grace`: the
//! banner and control socket show "reconnecting", other experts are told
//! the device is busy, and the same expert may continue on a new connection
//! with the single-use resume token the device offered (bound to their
//! client certificate for offers), without a new prompt. After the grace
//! period the session is over.
//!
//! `run` returns when the shutdown future completes and every session has
//! said goodbye (`ShuttingDown`), keys are released and the audit log is
//! flushed.
//!
//! Every audit record and control-socket event, with its fields, is listed
//! in one place: the doc of `agent/src/records.rs`.

pub mod admission;
pub mod audit;
pub mod backends;
#[cfg(feature = "broker")]
pub mod broker;
pub mod call;
pub mod capture;
pub mod cli;
pub mod config;
pub mod control;
pub mod doctor;
#[cfg(feature = "files")]
pub mod files;
pub mod fsutil;
pub mod help;
pub mod hub;
pub mod identity;
pub mod invites;
pub mod log;
#[cfg(feature = "record")]
pub mod recorder;
mod records;
pub mod screens;
pub mod service;
pub mod tls;
pub mod transport;
pub mod ui;
pub mod util;
pub mod wiring;

pub use backends::Backends;
pub use config::Config;
pub use service::{bind, run, run_on};

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
    #[error("broker: {0}")]
    Broker(String),
    #[error(
        "cannot listen on {addr}: {source} (fix: check `listen` in the config; is another agent running?)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}
