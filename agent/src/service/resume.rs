//! Resume hand-over: a session whose connection dropped waits on hold
//! ("parked") for its expert; a new connection that proves it is that
//! expert hands its transport over to the waiting session.

use std::net::SocketAddr;
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use shoulder_proto::frame::encode_into;
use shoulder_proto::session::{AuthMethod, DeviceInput, ExpertIdentity, Phase};
use shoulder_proto::{ByeReason, Message, ResumeToken};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::session::Session;
use super::{CLOSE_GRACE, lock};
use crate::records::AuditRecord;
use crate::transport::Transport;
use crate::util::{fingerprint_of, random_bytes};

/// A session on hold, waiting for its expert to come back.
pub(super) struct Parked {
    /// The parked session's connection number.
    number: u64,
    /// The tokens that resume it (see `DeviceSession::resume_tokens`).
    tokens: Vec<ResumeToken>,
    expert: ExpertIdentity,
    handover: oneshot::Sender<Handover>,
}

/// A new connection that proved it may continue a parked session.
pub(super) struct Handover {
    pub(super) transport: Transport,
    pub(super) peer: SocketAddr,
    pub(super) peer_certs: Option<Vec<CertificateDer<'static>>>,
    pub(super) fingerprint: Option<String>,
}

/// A session's ends of a hand-over.
#[derive(Default)]
pub(super) struct ResumeLink {
    /// While on hold: where a resuming connection arrives.
    pub(super) arrivals: Option<oneshot::Receiver<Handover>>,
    /// This connection resumes a parked session: hand the transport over.
    pub(super) hand_to: Option<oneshot::Sender<Handover>>,
}

impl Session {
    /// Once the expert holds a resume token (viewing, controlling, or on
    /// hold), lets a resuming connection find this session: also while the
    /// old connection still looks alive here, as after a half-open TCP.
    pub(super) fn park(&mut self) {
        if !matches!(
            self.phase,
            Some(Phase::Viewing { .. } | Phase::Controlling { .. } | Phase::Reconnecting { .. })
        ) {
            return;
        }
        let tokens = self.machine.resume_tokens();
        if self.resume.arrivals.is_some() {
            // Parked already: keep its tokens current (older ones stop
            // working once the expert has a newer one).
            let mut parked = lock(&self.shared.parked);
            if let Some(p) = parked.as_mut()
                && p.number == self.number
                && p.tokens != tokens
            {
                p.tokens = tokens;
            }
            return;
        }
        let Some(expert) = self.machine.expert().cloned() else {
            return;
        };
        if tokens.is_empty() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        *lock(&self.shared.parked) = Some(Parked {
            number: self.number,
            tokens,
            expert,
            handover: tx,
        });
        self.resume.arrivals = Some(rx);
    }

    /// The session is over: its token no longer resumes anything. Returns
    /// a connection handed over in the last instant, to be turned away.
    pub(super) fn unpark(&mut self) -> Option<Handover> {
        {
            let mut parked = lock(&self.shared.parked);
            if parked.as_ref().is_some_and(|p| p.number == self.number) {
                *parked = None;
            }
        }
        let mut rx = self.resume.arrivals.take()?;
        rx.close();
        rx.try_recv().ok()
    }

    /// Takes the parked session that `token` resumes, if this connection is
    /// its expert: the same client certificate for offers; for invitations
    /// the token alone (single use, 32 random bytes, sent only inside TLS).
    pub(super) fn take_parked(&self, token: &ResumeToken) -> Option<oneshot::Sender<Handover>> {
        let mut parked = lock(&self.shared.parked);
        let p = parked.as_ref()?;
        // Constant time per token, and every token is compared.
        let token_ok = p
            .tokens
            .iter()
            .fold(false, |ok, t| ok | bool::from(t.0.ct_eq(&token.0)));
        let identity_ok = match &p.expert.method {
            AuthMethod::Offer { fingerprint } => self
                .peer_certs
                .as_ref()
                .and_then(|c| c.first())
                .is_some_and(|c| fingerprint_of(c).ct_eq(fingerprint)),
            AuthMethod::Invitation { .. } => true,
        };
        if !(token_ok & identity_ok) {
            return None;
        }
        parked.take().map(|p| p.handover)
    }

    /// Gives this connection, authenticated by a resume token, to the
    /// parked session it resumes. If that session ended in the meantime,
    /// the connection is refused and given back to close.
    pub(super) fn hand_over(
        &mut self,
        to: oneshot::Sender<Handover>,
        transport: Transport,
    ) -> Result<(), Transport> {
        let h = Handover {
            transport,
            peer: self.peer,
            peer_certs: self.peer_certs.take(),
            fingerprint: self.ctx.fingerprint.clone(),
        };
        match to.send(h) {
            Ok(()) => {
                self.audit(AuditRecord::ResumeHandover);
                tracing::info!(peer = %self.peer, "connection continues a session on hold");
                Ok(())
            }
            Err(h) => {
                self.peer_certs = h.peer_certs;
                self.auth_done(Err((
                    ByeReason::ResumeRejected,
                    "the session ended before it could be resumed".into(),
                )));
                Err(h.transport)
            }
        }
    }

    /// The expert is back on a new connection: continue where we were,
    /// with a fresh single-use token. Returns the connection to go on with.
    pub(super) fn resumed(&mut self, h: Handover) -> Transport {
        self.peer = h.peer;
        self.peer_certs = h.peer_certs;
        self.ctx.source = Some(h.peer.to_string());
        self.ctx.fingerprint = h.fingerprint;
        tracing::info!(peer = %self.peer, session = ?self.ctx.session, "expert resumed the session");
        self.machine.handle(
            Instant::now(),
            DeviceInput::Reattach {
                new_token: fresh_resume_token(),
            },
        );
        h.transport
    }
}

/// A new single-use resume token: 32 bytes from the system random source.
/// None if that fails: the session then simply cannot be resumed.
pub(super) fn fresh_resume_token() -> Option<ResumeToken> {
    let mut t = [0u8; 32];
    match random_bytes(&mut t) {
        Ok(()) => Some(ResumeToken(t)),
        Err(e) => {
            tracing::error!(error = %e, "no resume token; the session will not be resumable");
            None
        }
    }
}

/// Tells a connection that came to resume a session that has just ended.
pub(super) async fn refuse_late_resume(h: Handover) {
    let bye = Message::Bye {
        reason: ByeReason::ResumeRejected,
        detail: shoulder_proto::text("the session ended before it could be resumed"),
    };
    let mut out = Vec::new();
    if encode_into(&bye, &mut out).is_err() {
        out.clear();
    }
    h.transport.close(out, CLOSE_GRACE).await;
}
