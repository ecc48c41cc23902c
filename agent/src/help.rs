//! "Get help": the person at the device (or the kiosk app, `ctl help
//! "printer jammed"`) asks for a technician. The request goes to the
//! technicians' clients through the plant's broker (a retained record on
//! the device's help topic), expires, can be withdrawn, and is answered
//! when the person lets an expert see the screen; the next request to see
//! the screen recalls it ("You asked for help 2 minutes ago: …"). Every
//! step is audited.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::audit::{AuditLog, Context};
use crate::records::AuditRecord;
use crate::util::{hex, random_bytes};

/// Longest help text kept (the rest is cut at a character boundary).
pub const MAX_HELP_TEXT: usize = 200;

/// An open help request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpRequest {
    pub id: String,
    pub text: String,
    pub asked: Instant,
    pub asked_unix: u64,
    pub expires: Instant,
    pub expires_unix: u64,
}

/// The record technicians' clients read (`shoulder help-requests`).
#[derive(Debug, Serialize)]
struct Record<'a> {
    id: &'a str,
    text: &'a str,
    asked_unix: u64,
    expires_unix: u64,
}

/// The device's help request, at most one at a time.
#[derive(Debug)]
pub struct HelpDesk {
    current: Mutex<Option<HelpRequest>>,
    /// The retained payload of the device's help topic (empty: none), when
    /// the agent has a broker.
    publish: Option<watch::Sender<Vec<u8>>>,
    lifetime: Duration,
    audit: Arc<AuditLog>,
    changed: Notify,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HelpDesk {
    /// A help desk publishing through `publish` (`None`: no broker, so
    /// nobody would hear a request and [`HelpDesk::ask`] refuses).
    pub fn new(
        publish: Option<watch::Sender<Vec<u8>>>,
        lifetime: Duration,
        audit: Arc<AuditLog>,
    ) -> Arc<Self> {
        Arc::new(Self {
            current: Mutex::new(None),
            publish,
            lifetime,
            audit,
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<HelpRequest>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, r: AuditRecord<'_>, via_socket: bool) {
        let (event, mut m) = r.into_parts();
        if via_socket {
            m.insert("via".into(), "control-socket".into());
        }
        if let Err(e) = self.audit.record(&event, &Context::default(), m) {
            tracing::error!(error = %e, "audit record failed");
        }
    }

    fn announce(&self, req: Option<&HelpRequest>) {
        let Some(p) = &self.publish else { return };
        let payload = req
            .and_then(|r| {
                serde_json::to_vec(&Record {
                    id: &r.id,
                    text: &r.text,
                    asked_unix: r.asked_unix,
                    expires_unix: r.expires_unix,
                })
                .ok()
            })
            .unwrap_or_default();
        p.send_replace(payload);
    }

    /// Whether requests reach anyone (the agent has a broker).
    pub fn has_broker(&self) -> bool {
        self.publish.is_some()
    }

    /// Asks for help with `text` (a new request replaces an open one).
    pub fn ask(&self, text: &str) -> Result<HelpRequest, String> {
        if self.publish.is_none() {
            return Err(
                "help requests reach technicians through the plant's broker, and this agent has no [broker] (fix: configure one, see docs/fleet.md)".into(),
            );
        }
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
            .trim()
            .to_string();
        if text.len() > MAX_HELP_TEXT {
            let mut cut = MAX_HELP_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let mut id = [0u8; 8];
        random_bytes(&mut id).map_err(|e| format!("no randomness for an id: {e}"))?;
        let now = Instant::now();
        let now_unix = unix_now();
        let req = HelpRequest {
            id: hex(&id),
            text,
            asked: now,
            asked_unix: now_unix,
            expires: now + self.lifetime,
            expires_unix: now_unix + self.lifetime.as_secs(),
        };
        let old = self.lock().replace(req.clone());
        if let Some(old) = old {
            self.record(AuditRecord::HelpWithdrawn { id: old.id }, true);
        }
        self.record(
            AuditRecord::HelpRequested {
                id: req.id.clone(),
                text: req.text.clone(),
                expires_unix: req.expires_unix,
            },
            true,
        );
        self.announce(Some(&req));
        self.changed.notify_waiters();
        Ok(req)
    }

    /// Withdraws the open request; `None` if there was none.
    pub fn withdraw(&self) -> Option<HelpRequest> {
        let old = self.lock().take()?;
        self.record(AuditRecord::HelpWithdrawn { id: old.id.clone() }, true);
        self.announce(None);
        self.changed.notify_waiters();
        Some(old)
    }

    /// The person let `expert` see the screen: the open request (if any)
    /// is answered.
    pub fn answered(&self, expert: &str) {
        let Some(old) = self.lock().take() else {
            return;
        };
        self.record(
            AuditRecord::HelpAnswered {
                id: old.id,
                expert: expert.to_string(),
            },
            false,
        );
        self.announce(None);
        self.changed.notify_waiters();
    }

    /// The open request, if any.
    pub fn current(&self) -> Option<HelpRequest> {
        self.lock().clone()
    }

    /// Ends requests when they expire. Runs until the task is dropped.
    pub async fn expire(self: Arc<Self>) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let due = self.lock().as_ref().map(|r| r.expires);
            match due {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {
                            let expired = {
                                let mut cur = self.lock();
                                match cur.as_ref() {
                                    Some(r) if r.expires <= Instant::now() => cur.take(),
                                    _ => None,
                                }
                            };
                            if let Some(r) = expired {
                                self.record(AuditRecord::HelpExpired { id: r.id }, false);
                                self.announce(None);
                            }
                        }
                        _ = &mut changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}
