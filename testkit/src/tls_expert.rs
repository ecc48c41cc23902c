//! An expert without the client library: the real `ExpertSession` machine
//! over tokio-rustls, pinning the device by fingerprint, so a test sees
//! every event the machine reports and can present any certificate.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use shoulder_agent::control::{Client, Request};
use shoulder_proto::Fingerprint;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::encode;
use shoulder_proto::session::{
    ControlState, ExpertConfig, ExpertEvent, ExpertInput, ExpertSession, ExpertState, UserAction,
};
use shoulder_proto::{Auth, ByeReason, InvitationId, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::agent::{Agent, WAIT, event};
use crate::pki::ExpertCert;

/// Pins the device certificate by fingerprint, as the expert client does,
/// or (for tools that do not care whom they talk to, such as a password
/// guesser) takes any device. TLS 1.3 signatures are checked either way, so
/// a handshake costs what it costs.
#[derive(Debug)]
pub struct Pinned {
    /// `None`: any device.
    pub fingerprint: Option<Fingerprint>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Pinned {
    pub fn new(fingerprint: Fingerprint) -> Self {
        Self::with(Some(fingerprint))
    }

    /// Any device certificate.
    pub fn any_device() -> Self {
        Self::with(None)
    }

    fn with(fingerprint: Option<Fingerprint>) -> Self {
        Self {
            fingerprint,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .fingerprint
            .is_none_or(|fp| shoulder_agent::util::fingerprint_of(end_entity) == fp)
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the device certificate does not match the invitation's fingerprint".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

pub type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS 1.3 connection to the agent with ALPN shoulder/1, pinning
/// `fingerprint`, with an optional client certificate.
pub async fn connect_tls(
    addr: SocketAddr,
    fingerprint: Fingerprint,
    cert: Option<&ExpertCert>,
) -> std::io::Result<ClientTls> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned::new(fingerprint)));
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![shoulder_proto::ALPN.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("device").unwrap(), tcp)
        .await
}

/// An expert driving the real session machine over TLS, without the
/// client library (that is [`crate::expert::ClientExpert`]).
#[derive(Debug)]
pub struct TlsExpert {
    pub tls: ClientTls,
    pub session: ExpertSession,
    pub events: VecDeque<ExpertEvent>,
    pub fb: Option<Framebuffer>,
    pub updates: u32,
    /// Bytes of plain text read from the device (framed messages).
    pub received: u64,
    closed: bool,
}

impl TlsExpert {
    pub async fn connect(
        addr: SocketAddr,
        fingerprint: Fingerprint,
        cert: Option<&ExpertCert>,
        auth: Auth,
    ) -> Self {
        let tls = connect_tls(addr, fingerprint, cert)
            .await
            .expect("TLS connects");
        let session = ExpertSession::new(Instant::now(), ExpertConfig::new("Ann", auth));
        let mut e = Self {
            tls,
            session,
            events: VecDeque::new(),
            fb: None,
            updates: 0,
            received: 0,
            closed: false,
        };
        e.flush().await;
        e
    }

    pub async fn offer(agent: &Agent, cert: Option<&ExpertCert>) -> Self {
        Self::connect(agent.addr, agent.fingerprint, cert, Auth::Offer).await
    }

    pub async fn invitation(agent: &Agent, id: InvitationId, password: &str) -> Self {
        Self::connect(
            agent.addr,
            agent.fingerprint,
            None,
            Auth::Invitation {
                id,
                password: text(password),
            },
        )
        .await
    }

    /// Writes what the machine wants sent, and collects its events.
    async fn flush(&mut self) {
        let mut out = Vec::new();
        while let Some(e) = self.session.poll_output() {
            match e {
                ExpertEvent::Send(m) => out.extend(encode(&m).unwrap()),
                ExpertEvent::Screen(info) => {
                    self.fb = Framebuffer::new(&info).ok();
                    self.events.push_back(ExpertEvent::Screen(info));
                }
                ExpertEvent::Update(part) => {
                    if let Some(fb) = &mut self.fb {
                        fb.apply(&part).expect("update applies");
                    }
                    if part.last {
                        self.updates += 1;
                    }
                }
                e => self.events.push_back(e),
            }
        }
        if !out.is_empty() && !self.closed {
            let _ = self.tls.write_all(&out).await;
            let _ = self.tls.flush().await;
        }
    }

    /// Runs the connection until `pred` matches an event (which is removed
    /// and returned) or `WAIT` passes.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&ExpertEvent) -> bool,
    ) -> ExpertEvent {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(i) = self.events.iter().position(&pred) {
                return self.events.remove(i).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events so far: {:?}",
                self.events
            );
            if self.session.is_closed() && self.closed {
                panic!("session closed while waiting for {what}: {:?}", self.events);
            }
            let timer = self
                .session
                .poll_timeout()
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                r = self.tls.read(&mut buf), if !self.closed => {
                    let input = match r {
                        Ok(0) => { self.closed = true; ExpertInput::PeerClosed { error: None } }
                        Ok(n) => {
                            self.received += n as u64;
                            ExpertInput::Received(buf[..n].to_vec())
                        }
                        Err(e) => { self.closed = true; ExpertInput::PeerClosed { error: Some(e.to_string()) } }
                    };
                    self.session.handle(Instant::now(), input);
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(timer)) => {
                    self.session.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }

    /// Waits for the session to close and returns why.
    pub async fn closed(&mut self) -> (ByeReason, String, String) {
        match self
            .wait_for("close", |e| matches!(e, ExpertEvent::Closed { .. }))
            .await
        {
            ExpertEvent::Closed {
                reason,
                detail,
                sentence,
            } => (reason, detail, sentence),
            _ => unreachable!(),
        }
    }

    pub async fn act(&mut self, a: UserAction) {
        self.session.handle(Instant::now(), ExpertInput::Action(a));
        self.flush().await;
    }

    /// Waits until at least `n` complete updates were applied.
    pub async fn wait_updates(&mut self, n: u32) {
        let deadline = Instant::now() + WAIT;
        while self.updates < n {
            assert!(
                Instant::now() < deadline,
                "only {} updates arrived",
                self.updates
            );
            // Pump with a short wait on a never-matching predicate slice.
            let mut buf = vec![0u8; 64 * 1024];
            let timer = self
                .session
                .poll_timeout()
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                r = self.tls.read(&mut buf), if !self.closed => {
                    match r {
                        Ok(0) | Err(_) => panic!("connection closed while waiting for updates: {:?}", self.events),
                        Ok(n) => {
                            self.received += n as u64;
                            self.session.handle(Instant::now(), ExpertInput::Received(buf[..n].to_vec()));
                        }
                    }
                }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(timer)) => {
                    self.session.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }
}

/// Waits until the expert has control.
pub async fn wait_controlling(expert: &mut TlsExpert) {
    expert
        .wait_for("control", |e| {
            matches!(
                e,
                ExpertEvent::StateChanged(ExpertState::Viewing {
                    control: ControlState::Granted { .. }
                })
            )
        })
        .await;
}

/// Offer, view and control granted through the control socket.
pub async fn controlling_session(
    agent: &Agent,
    cert: &ExpertCert,
    device: &mut Client,
) -> TlsExpert {
    let mut expert = TlsExpert::offer(agent, Some(cert)).await;
    event(device, "consent-requested").await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    expert
        .wait_for("viewing", |e| {
            matches!(e, ExpertEvent::StateChanged(ExpertState::Viewing { .. }))
        })
        .await;
    expert.act(UserAction::RequestControl).await;
    event(device, "consent-requested").await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_controlling(&mut expert).await;
    event(device, "control-granted").await;
    expert
}

/// Waits for the resume token the device offers once viewing.
pub async fn resume_offer(expert: &mut TlsExpert) -> (shoulder_proto::ResumeToken, Duration) {
    match expert
        .wait_for("resume offer", |e| {
            matches!(e, ExpertEvent::ResumeOffer { .. })
        })
        .await
    {
        ExpertEvent::ResumeOffer { token, grace } => (token, grace),
        _ => unreachable!(),
    }
}
