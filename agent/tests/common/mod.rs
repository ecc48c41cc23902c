//! Test harness: a plant PKI made with rcgen, an agent started in-process on
//! port 0 (or as a real process), and an expert driving the real
//! `ExpertSession` over tokio-rustls.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use shoulder_agent::backends::{Backends, RecordingSink};
use shoulder_agent::control::{Client, Request};
use shoulder_agent::{Config, identity};
use shoulder_proto::Fingerprint;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::encode;
use shoulder_proto::session::{
    ControlState, ExpertConfig, ExpertEvent, ExpertInput, ExpertSession, ExpertState, UserAction,
};
use shoulder_proto::{Auth, ByeReason, InvitationId, text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(20);

/// A CA and the certificates it issued.
pub struct Pki {
    pub ca_pem: String,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
}

/// A client identity: chain and key.
pub struct ExpertCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub fingerprint: [u8; 32],
}

impl ExpertCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_params: params,
            ca_key: key,
        }
    }

    /// SHA-256 of the CA certificate, as `ca:` allow-list entries name it.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        shoulder_agent::util::sha256(&der)
    }

    /// An expert certificate with CN `cn`; `expired` makes one whose validity
    /// ended in 2020.
    pub fn expert(&self, cn: &str, expired: bool) -> ExpertCert {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.issue(params)
    }

    /// A client certificate for `params` (any subject), signed by this CA.
    pub fn issue(&self, mut params: rcgen::CertificateParams) -> ExpertCert {
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let der = cert.der().clone();
        ExpertCert {
            fingerprint: shoulder_agent::util::sha256(&der),
            chain: vec![der],
            key_der: key.serialize_der(),
        }
    }
}

/// An agent running in this process.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    pub sink: RecordingSink,
    /// Banner taps, hotkeys and local activity, as the local backends send them.
    pub local: tokio::sync::mpsc::Sender<shoulder_agent::backends::LocalEvent>,
    pub control: PathBuf,
    pub audit: PathBuf,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shoulder_agent::AgentError>>>,
}

/// The config every test starts from: enabled, loopback, fast argon2, the
/// plant CA in `ca_pem`.
pub fn test_config(dir: &Path, ca_pem: Option<&str>) -> Config {
    let mut c = Config {
        enabled: true,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        state_dir: dir.join("state"),
        audit_log: dir.join("audit.jsonl"),
        control_socket: dir.join("run/control.sock"),
        device_name: "test-kiosk".into(),
        ..Config::default()
    };
    c.argon2.memory_kib = 1024;
    c.argon2.iterations = 1;
    c.consent_timeout = Duration::from_secs(30);
    c.auth_failures_per_minute = 1000;
    if let Some(pem) = ca_pem {
        let p = dir.join("plant-ca.pem");
        std::fs::write(&p, pem).unwrap();
        c.plant_ca = vec![p];
    }
    c
}

impl Agent {
    pub async fn start(ca_pem: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_capture(ca_pem, tweak, None).await
    }

    /// Like [`Agent::start`], with another screen source than the pattern.
    pub async fn start_with_capture(
        ca_pem: Option<&str>,
        tweak: impl FnOnce(&mut Config),
        capture: Option<Arc<dyn shoulder_agent::backends::CaptureBackend>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), ca_pem);
        tweak(&mut config);
        let (id, _) = identity::ensure(&config.state_dir, "test-kiosk").unwrap();
        let listeners = shoulder_agent::bind(&config.listen).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let (mut backends, sink) = Backends::for_tests(64, 48);
        if let Some(c) = capture {
            backends.capture = c;
        }
        let (local, local_rx) = tokio::sync::mpsc::channel(16);
        backends.local_events = Some(local_rx);
        let (stop_tx, stop_rx) = oneshot::channel();
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            shoulder_agent::run(listeners, cfg, backends, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let control = config.control_socket.clone();
        // Wait for the control socket: the agent is then serving.
        let t0 = Instant::now();
        while Client::connect(&control).await.is_err() {
            assert!(t0.elapsed() < WAIT, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Agent {
            addr,
            fingerprint: id.fingerprint,
            sink,
            audit: config.audit_log.clone(),
            local,
            control,
            config,
            dir,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub async fn ctl(&self) -> Client {
        Client::connect(&self.control).await.unwrap()
    }

    /// Sends a control request and asserts it succeeded.
    pub async fn ctl_ok(&self, req: Request) -> serde_json::Value {
        let mut c = self.ctl().await;
        let r = c.request(&req).await.unwrap();
        assert_eq!(r["ok"], true, "{req:?} failed: {r}");
        r
    }

    /// Creates an invitation through the control socket.
    pub async fn invite(&self, expires: &str, password: &str) -> InvitationId {
        let r = self
            .ctl_ok(Request::Invite {
                expires: expires.into(),
                password: Some(password.into()),
            })
            .await;
        let inv =
            shoulder_proto::invite::Invitation::from_text(r["text"].as_str().unwrap()).unwrap();
        assert_eq!(inv.fingerprint, self.fingerprint);
        inv.id
    }

    pub async fn stop(self) -> Vec<serde_json::Value> {
        self.stop_with_pre_auth().await.0
    }

    /// Like [`Agent::stop`], also returning the records of the pre-auth
    /// log (read before the agent's directory goes).
    pub async fn stop_with_pre_auth(mut self) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let pre_auth = shoulder_agent::admission::pre_auth_log_path(&self.audit);
        (audit_records(&self.audit), audit_records(&pre_auth))
    }

    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        audit_records(&self.audit)
    }
}

/// Parses the audit log, asserting every line is whole JSON.
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "audit log ends mid-line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// Pins the device certificate by fingerprint, as the expert client does.
#[derive(Debug)]
pub struct Pinned {
    pub fingerprint: Fingerprint,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl Pinned {
    pub fn new(fingerprint: Fingerprint) -> Self {
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
        if shoulder_agent::util::fingerprint_of(end_entity) == self.fingerprint {
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

/// An expert driving the real session machine over TLS.
pub struct Expert {
    pub tls: ClientTls,
    pub session: ExpertSession,
    pub events: VecDeque<ExpertEvent>,
    pub fb: Option<Framebuffer>,
    pub updates: u32,
    closed: bool,
}

impl Expert {
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
                        Ok(n) => ExpertInput::Received(buf[..n].to_vec()),
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
                        Ok(n) => self.session.handle(Instant::now(), ExpertInput::Received(buf[..n].to_vec())),
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

/// Waits for a control-socket event named `name`.
pub async fn event(client: &mut Client, name: &str) -> serde_json::Value {
    tokio::time::timeout(WAIT, client.wait_event(name))
        .await
        .unwrap_or_else(|_| panic!("no {name} event"))
        .unwrap()
}

/// Waits until the expert has control.
pub async fn wait_controlling(expert: &mut Expert) {
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
pub async fn controlling_session(agent: &Agent, cert: &ExpertCert, device: &mut Client) -> Expert {
    let mut expert = Expert::offer(agent, Some(cert)).await;
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

/// The events of one session in the audit log, by name.
pub fn session_events(records: &[serde_json::Value], session: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["session"] == session)
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The id of the prompt open now, from `status` (waits for one).
pub async fn open_prompt(agent: &Agent) -> shoulder_proto::session::PromptId {
    let t0 = std::time::Instant::now();
    loop {
        let st = agent.ctl_ok(Request::Status).await;
        if let Some(id) = st["session"]["prompt"]["id"].as_u64() {
            return shoulder_proto::session::PromptId(id);
        }
        assert!(t0.elapsed() < WAIT, "no prompt opened");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits for the resume token the device offers once viewing.
pub async fn resume_offer(expert: &mut Expert) -> (shoulder_proto::ResumeToken, Duration) {
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
