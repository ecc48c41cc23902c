//! Sans-I/O session state machines, one per side.
//!
//! Both follow the same shape (after quinn-proto): feed received bytes and
//! local events with [`DeviceSession::handle`] / [`ExpertSession::handle`],
//! call `handle_timeout(now)` when [`poll_timeout`](DeviceSession::poll_timeout)
//! says so, and drain `poll_output()`. The machines never read a clock, never
//! touch a socket and never block.
//!
//! ```text
//!  device:  AwaitHello → AwaitAuth → Authenticating → AwaitViewConsent
//!              → Active{ control: None | Pending | Granted } → Closed
//!  expert:  AwaitHello → AwaitConsent → Active{ control: None | Requested |
//!              Granted } → Closed
//! ```

use std::time::Duration;

pub mod device;
pub mod expert;

pub use device::{
    AuditEvent, AuthMethod, AuthRequest, DeviceConfig, DeviceInput, DeviceOutput, DeviceSession,
    ExpertIdentity, FileAsk, FilesOffered, INVITATION_HEADLINE, InjectEvent, LocalCommand,
    LocalDecision, MIN_VIEW_REPORT_INTERVAL, Outcome, Phase, Prompt, PromptId, hint_name,
};
#[cfg(feature = "files")]
pub use device::{FileAudit, FileInput, FileOutput, FileRequest};
pub use expert::{
    ControlState, ExpertConfig, ExpertEvent, ExpertInput, ExpertSession, ExpertState, UserAction,
};

/// Peers must finish `Hello` and `Auth` within this time: unauthenticated
/// connections are cheap to open, so they must be cheap to drop.
pub const DEFAULT_PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// A prompt nobody answers declines by itself after this long.
pub const DEFAULT_CONSENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Each side pings when it has sent nothing for this long.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// A peer silent for this long is gone (three missed keepalives).
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// After a dropped connection the same expert may come back this long without
/// a new prompt: long enough for a Wi-Fi roam or a cable re-plug, short
/// enough that the person at the device is not surprised by a return.
pub const DEFAULT_RESUME_GRACE: Duration = Duration::from_secs(20);
/// Resume tokens kept for an expert whose resumed connection died before it
/// could have received the next token (each such resume adds one): a flaky
/// link may break a few resumes in a row; more is not a link worth keeping.
pub const MAX_UNCONFIRMED_RESUME_TOKENS: usize = 4;
/// Expert input events per second before the device drops them. A fast
/// typist makes ~20 key events a second and a dragged mouse 125–250 pointer
/// events; 300 leaves room for both while capping a flood.
pub const DEFAULT_MAX_INPUT_RATE: u32 = 300;
/// After a declined control request the expert waits this long before the
/// person is asked again (doubling with each no in a row): an expert cannot
/// put the prompt back up the moment it was answered, hoping for a tap
/// meant for something else.
pub const DEFAULT_CONTROL_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between control requests after several noes in a row.
pub const MAX_CONTROL_BACKOFF: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests;

#[cfg(test)]
mod props;

#[cfg(all(test, feature = "files"))]
mod tests_files;
