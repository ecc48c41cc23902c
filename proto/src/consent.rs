//! Consent as a type.
//!
//! Capture needs a [`ViewConsent`] and injection a [`ControlConsent`]. Only the
//! device session machine ([`crate::session::device::DeviceSession`]) can make
//! them, and only after the person at the device said yes. They cannot be
//! cloned or built elsewhere, and the machine withdraws them on revoke or close,
//! so a token kept past its time is also refused at run time
//! ([`ControlConsent::is_live`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The machine's half of a grant: flipping it withdraws the token.
#[derive(Debug, Clone)]
pub(crate) struct Revoker(Arc<AtomicBool>);

impl Revoker {
    pub(crate) fn revoke(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[derive(Debug)]
struct Grant {
    live: Arc<AtomicBool>,
    epoch: u64,
}

impl Grant {
    fn mint(epoch: u64) -> (Self, Revoker) {
        let live = Arc::new(AtomicBool::new(true));
        (
            Self {
                live: live.clone(),
                epoch,
            },
            Revoker(live),
        )
    }
}

/// Proof that the person at the device agreed to show the screen.
#[derive(Debug)]
pub struct ViewConsent(Grant);

impl ViewConsent {
    pub(crate) fn mint(epoch: u64) -> (Self, Revoker) {
        let (g, r) = Grant::mint(epoch);
        (Self(g), r)
    }

    /// False once the session stopped viewing or closed.
    pub fn is_live(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }

    /// Distinguishes successive grants within one agent run.
    pub fn epoch(&self) -> u64 {
        self.0.epoch
    }
}

/// Proof that the person at the device agreed to be controlled. Every inject
/// method of an input sink takes one.
#[derive(Debug)]
pub struct ControlConsent(Grant);

impl ControlConsent {
    pub(crate) fn mint(epoch: u64) -> (Self, Revoker) {
        let (g, r) = Grant::mint(epoch);
        (Self(g), r)
    }

    /// False once control was stopped, released or the session closed; sinks
    /// must refuse to inject then.
    pub fn is_live(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }

    /// Distinguishes successive grants within one agent run.
    pub fn epoch(&self) -> u64 {
        self.0.epoch
    }
}

#[cfg(feature = "files")]
/// Proof that the person at the device agreed to one file transfer (or to
/// files for the session). The agent reads or writes the transfer's file
/// only while it is live.
#[derive(Debug)]
pub struct FileConsent(Grant);

#[cfg(feature = "files")]
impl FileConsent {
    pub(crate) fn mint(epoch: u64) -> (Self, Revoker) {
        let (g, r) = Grant::mint(epoch);
        (Self(g), r)
    }

    /// False once the transfer was cancelled or ended, or the session
    /// closed or lost its connection.
    pub fn is_live(&self) -> bool {
        self.0.live.load(Ordering::Acquire)
    }
}
