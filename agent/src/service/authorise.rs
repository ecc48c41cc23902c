//! Authorisation: the quick refusals (disabled, busy, rate limited, policy),
//! the credential check off the session task, and what passing it means
//! (the pre-auth limit is left, the session slot taken, the invitation
//! used up).

use std::time::{Duration, Instant};

use rustls::pki_types::UnixTime;
use shoulder_proto::ByeReason;
use shoulder_proto::session::{
    AuthMethod, AuthRequest, DeviceInput, ExpertIdentity, INVITATION_HEADLINE,
};
use tokio::sync::oneshot;

use super::session::Session;
use crate::admission::{HashRefused, PreAuthTicket};
use crate::records::AuditName as _;
use crate::util::unix_now;

/// How long a connection that finds the session slot taken waits for it to
/// be freed before it is told the device is busy. An expert who ends a
/// session and reconnects at once needs only a handshake and a hello to ask
/// again, and may do so before the device has read their goodbye (the
/// expert does not wait for the device to close); a technician must not be
/// told "another expert is connected" about their own old session. Short,
/// so a second expert still hears "busy" promptly.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// An expert's identity, or why they may not in.
pub(super) type AuthResult = Result<ExpertIdentity, (ByeReason, String)>;

/// What a connection holds until its peer has authenticated.
pub(super) struct PreAuth {
    /// Counts against the pre-auth limits; its records are held until the
    /// peer authenticates.
    pub(super) ticket: Option<PreAuthTicket>,
    /// Fires when the ticket is evicted to make room for others.
    pub(super) evicted: Option<oneshot::Receiver<()>>,
    /// The running credential check.
    pub(super) check: Option<oneshot::Receiver<AuthResult>>,
    /// The request, back once the session slot was freed or [`SLOT_WAIT`]
    /// passed.
    pub(super) slot_wait: Option<oneshot::Receiver<AuthRequest>>,
    /// Whether this connection waited for the slot already (once only).
    pub(super) waited_for_slot: bool,
}

impl Session {
    pub(super) fn start_auth(&mut self, req: AuthRequest) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let ip = self.peer.ip();
        let quick: Option<(ByeReason, String)> = if !cfg.enabled {
            Some((
                ByeReason::Disabled,
                "remote assistance is disabled on this device".into(),
            ))
        } else if shared.hub.is_busy() && !matches!(req, AuthRequest::Resume { .. }) {
            if !self.pre_auth.waited_for_slot {
                self.pre_auth.waited_for_slot = true;
                return self.wait_for_slot(req);
            }
            Some((ByeReason::Busy, "another expert is connected".into()))
        } else if let Some(Err(retry)) = self.pre_auth.ticket.as_mut().map(|t| {
            // Counted as a failure before any work, refunded in `auth_done`
            // if it succeeds: attempts cut short count too.
            t.charge(
                matches!(req, AuthRequest::Invitation { .. }),
                Instant::now(),
            )
        }) {
            Some((
                ByeReason::RateLimited {
                    retry_after_secs: retry,
                },
                format!("too many failed attempts from {ip} or on this device"),
            ))
        } else {
            match &req {
                AuthRequest::Offer if !cfg.allow_offers => Some((
                    ByeReason::OffersDisabled,
                    "offers are disabled on this device".into(),
                )),
                AuthRequest::Invitation { .. } if !cfg.allow_invitations => Some((
                    ByeReason::InvitationsDisabled,
                    "invitations are disabled on this device".into(),
                )),
                AuthRequest::Resume { token } => match self.take_parked(token) {
                    Some(to) => {
                        self.resume.hand_to = Some(to);
                        self.leave_pre_auth();
                        return;
                    }
                    None => Some((
                        ByeReason::ResumeRejected,
                        "no session on hold for this token and expert (it expired, was used, \
                         or belongs to someone else)"
                            .into(),
                    )),
                },
                _ => None,
            }
        };
        if let Some(e) = quick {
            return self.auth_done(Err(e));
        }
        let (mut tx, rx) = oneshot::channel();
        self.pre_auth.check = Some(rx);
        let certs = self.peer_certs.clone();
        // No slot for the hash within the pre-auth timeout: the peer gives
        // up (the session machine's own deadline is later).
        let deadline = Instant::now() + cfg.pre_auth_timeout;
        tokio::spawn(async move {
            let result = match req {
                AuthRequest::Offer => shared.trust.check_offer(certs.as_deref(), UnixTime::now()),
                AuthRequest::Invitation { id, password } => {
                    let store = shared.store.clone();
                    let pw = password.to_string();
                    let checked = shared
                        .admission
                        .hash(ip, deadline, tx.closed(), move || {
                            store.check(id, &pw, unix_now())
                        })
                        .await;
                    match checked {
                        Ok(Ok(made_for)) => Ok(ExpertIdentity {
                            // Whom it was made for, as the person who made
                            // it wrote it; never the bare id.
                            name: made_for.unwrap_or_else(|| INVITATION_HEADLINE.into()),
                            method: AuthMethod::Invitation { id },
                            // The session machine adds the expert's hello.
                            says: None,
                        }),
                        Ok(Err(e)) => Err(e),
                        Err(HashRefused::QueueFull { retry_after_secs }) => Err((
                            ByeReason::RateLimited { retry_after_secs },
                            "the device is checking other passwords; try again shortly".into(),
                        )),
                        Err(HashRefused::Expired) => Err((
                            ByeReason::AuthTimeout,
                            "the device was busy checking other passwords; try again".into(),
                        )),
                        // Nobody is left to tell.
                        Err(HashRefused::Gone) => return,
                        Err(HashRefused::Failed) => {
                            Err((ByeReason::InternalError, "the password check failed".into()))
                        }
                    }
                }
                AuthRequest::Resume { .. } => Err((
                    ByeReason::ResumeRejected,
                    "resumption is decided without a task".into(),
                )),
            };
            let _ = tx.send(result);
        });
    }

    /// Asks again with `req` once the slot is free or [`SLOT_WAIT`] passed
    /// (the session loop calls [`Session::start_auth`] with it).
    fn wait_for_slot(&mut self, req: AuthRequest) {
        let (mut tx, rx) = oneshot::channel();
        self.pre_auth.slot_wait = Some(rx);
        let hub = self.shared.hub.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = hub.wait_until_free(SLOT_WAIT) => {}
                // The connection ended meanwhile.
                _ = tx.closed() => return,
            }
            let _ = tx.send(req);
        });
    }

    pub(super) fn auth_done(&mut self, result: AuthResult) {
        let result = result.and_then(|expert| {
            self.leave_pre_auth();
            if self.audit_failed {
                // Refused before the invitation is used up.
                return Err((
                    ByeReason::AuditFailure,
                    "the device cannot write its audit log".into(),
                ));
            }
            self.claim(expert)
        });
        if let (Err((reason, detail)), Some(t)) = (&result, self.pre_auth.ticket.as_mut()) {
            t.auth_failed(&reason.audit_name(), detail, counts_as_failure(*reason));
        }
        self.machine
            .handle(Instant::now(), DeviceInput::AuthDecided(result));
    }

    /// The peer proved who it is: no longer subject to the pre-auth limit,
    /// its failure charge is refunded, and its held records (connect,
    /// hello) go to the audit log as they were.
    fn leave_pre_auth(&mut self) {
        self.pre_auth.evicted = None;
        let Some(ticket) = self.pre_auth.ticket.take() else {
            return;
        };
        for (event, fields) in ticket.authenticated() {
            self.audit_parts(&event, fields);
        }
    }

    /// Takes the session slot (and uses the invitation up).
    fn claim(&mut self, expert: ExpertIdentity) -> AuthResult {
        let how = expert.how();
        let session = self.ctx.session.clone().unwrap_or_default();
        let Some((guard, commands)) =
            self.shared
                .hub
                .claim(&session, &expert.name, &how, &self.peer.to_string())
        else {
            return Err((ByeReason::Busy, "another expert is connected".into()));
        };
        if let AuthMethod::Invitation { id } = &expert.method {
            // Small file update under a lock; fine to do inline.
            self.shared.store.consume(*id, unix_now())?;
        }
        self.ctx.expert = Some(expert.name.clone());
        self.ctx.method = Some(match &expert.method {
            AuthMethod::Offer { .. } => "offer".into(),
            AuthMethod::Invitation { id } => format!("invitation {id}"),
        });
        self.slot = Some(guard);
        self.commands = Some(commands);
        Ok(expert)
    }
}

/// Auth failures that count towards the per-address limit: guesses and
/// wrong credentials, not policy answers.
fn counts_as_failure(r: ByeReason) -> bool {
    !matches!(
        r,
        ByeReason::Busy
            | ByeReason::Disabled
            | ByeReason::OffersDisabled
            | ByeReason::InvitationsDisabled
            | ByeReason::RateLimited { .. }
            | ByeReason::InternalError
            | ByeReason::ResumeRejected
            | ByeReason::AuditFailure
    )
}
