//! The network service: accept loops, pre-authentication limits, and one
//! task per connection driving a [`DeviceSession`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value, json};
use shoulder_proto::consent::ControlConsent;
use shoulder_proto::frame::{FrameBoundaries, encode_into};
use shoulder_proto::session::{
    AuditEvent, AuthMethod, AuthRequest, DeviceConfig, DeviceInput, DeviceOutput, DeviceSession,
    ExpertIdentity, Phase,
};
use shoulder_proto::{ByeReason, ConsentKind, Message, ResumeToken};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::AgentError;
use crate::admission::{Admission, AdmissionConfig, HashRefused, PreAuthTicket, pre_auth_log_path};
use crate::audit::{AuditLog, Context};
use crate::backends::{Backends, CaptureBackend, InputSink, LocalEvent, Presenter};
use crate::capture::CaptureHandle;
use crate::config::Config;
use crate::control::ControlServer;
use crate::hub::{Hub, PromptInfo, SessionCommand, SlotGuard, kind_name};
use crate::invites::{InvitationStore, Issuer, advertised_addresses};
use crate::tls::{ALPN, PlantTrust};
use crate::transport::{Event as TransportEvent, Transport};
use crate::util::{fingerprint_text, hex, random_bytes, unix_now};

/// Bytes read from TLS per call.
const READ_CHUNK: usize = 16 * 1024;
/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Time to send close_notify after the last message.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// "Ignored message" records audited per session; more are only counted
/// (an authenticated peer could otherwise fill the disk with fsyncs).
const MAX_IGNORED_AUDITED: u64 = 20;
/// Chat lines audited in full per session; later ones are only counted in
/// the `bye` record (chat is allowed before the view is consented to, so an
/// expert the device never let in could otherwise fill the disk with
/// fsyncs).
const MAX_CHATS_AUDITED: u64 = 50;
/// Capture messages queued towards the socket: a few update parts; the
/// capture thread blocks when the peer reads slowly.
const CAPTURE_QUEUE: usize = 4;
/// Encoded messages the session may hold while the writer's queue is full.
/// Screen updates are not taken while anything waits, so only replies
/// (pongs, consent news) collect here; this much means the expert has not
/// read for a long time while sending plenty.
const MAX_UNSENT: usize = 1024 * 1024;

/// Everything the connection tasks share.
struct Shared {
    config: Config,
    device: DeviceConfig,
    acceptor: TlsAcceptor,
    trust: PlantTrust,
    store: InvitationStore,
    audit: Arc<AuditLog>,
    hub: Arc<Hub>,
    capture: Arc<dyn CaptureBackend>,
    input: Mutex<Box<dyn InputSink>>,
    presenter: Mutex<Box<dyn Presenter>>,
    admission: Arc<Admission>,
    sessions: AtomicU64,
    /// The session on hold after its connection dropped (one session at a
    /// time, so at most one).
    parked: Mutex<Option<Parked>>,
}

/// A session on hold, waiting for its expert to come back.
struct Parked {
    /// The parked session's connection number.
    number: u64,
    /// The tokens that resume it (see `DeviceSession::resume_tokens`).
    tokens: Vec<ResumeToken>,
    expert: ExpertIdentity,
    handover: oneshot::Sender<Handover>,
}

/// A byte stream the agent serves one connection on: TCP in production;
/// tests and the network simulator bring their own (see [`run_on`]).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An accepted connection and the address of its peer.
pub type Incoming = (Box<dyn Stream>, SocketAddr);

/// A new connection that proved it may continue a parked session.
struct Handover {
    transport: Transport,
    peer: SocketAddr,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    fingerprint: Option<String>,
}

/// Binds TCP listeners for `addrs` (IPv6 ones IPv6-only, so `0.0.0.0:P`
/// and `[::]:P` can both be listed). An address whose family the kernel
/// lacks (IPv6 compiled out) is skipped with a warning as long as another
/// one binds. Needs a tokio runtime.
pub fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, AgentError> {
    let mut listeners = Vec::new();
    let mut skipped = Vec::new();
    for &addr in addrs {
        match bind_one(addr) {
            Ok(l) => listeners.push(l),
            Err(source) if family_unavailable(&source) => skipped.push((addr, source)),
            Err(source) => return Err(AgentError::Listen { addr, source }),
        }
    }
    if listeners.is_empty() && !skipped.is_empty() {
        let (addr, source) = skipped.swap_remove(0);
        return Err(AgentError::Listen { addr, source });
    }
    for (addr, e) in skipped {
        tracing::warn!(%addr, error = %e, "not listening on this address: the kernel does not support it");
    }
    Ok(listeners)
}

/// EAFNOSUPPORT / EADDRNOTAVAIL: the address family or address is not
/// there on this device.
fn family_unavailable(e: &std::io::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    e.kind() == std::io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

/// Runs the agent on `listeners` until `shutdown` completes: every session
/// is then closed with "the device agent is shutting down", keys are
/// released and the audit log is flushed.
pub async fn run(
    listeners: Vec<TcpListener>,
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let acceptors = listeners.into_iter().map(Acceptor::Tcp).collect();
    serve(acceptors, bound, config, backends, shutdown).await
}

/// [`run`] on connections from elsewhere than TCP listeners (a network
/// simulator, an in-memory pipe): each `(stream, peer)` received is served
/// as an accepted TCP connection would be (TLS handshake, authentication,
/// session). `listening` is what the agent reports and puts into
/// invitations as its addresses.
pub async fn run_on(
    incoming: mpsc::Receiver<Incoming>,
    listening: Vec<SocketAddr>,
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    serve(
        vec![Acceptor::Streams(incoming)],
        listening,
        config,
        backends,
        shutdown,
    )
    .await
}

async fn serve(
    acceptors: Vec<Acceptor>,
    bound: Vec<SocketAddr>,
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let device_name = config.device_name();
    let (identity, created) = crate::identity::ensure(&config.state_dir, &device_name)?;
    let audit = Arc::new(AuditLog::open(
        &config.audit_log,
        config.audit_max_bytes,
        config.audit_keep,
    )?);
    let fp = fingerprint_text(&identity.fingerprint);
    if created {
        tracing::info!(fingerprint = %fp, "created the device key and certificate");
        audit_or_log(
            &audit,
            "identity-created",
            &Context::default(),
            json!({"device_fingerprint": fp}),
        );
    }
    let trust = PlantTrust::load(&config.plant_ca, config.allowed_experts())?;
    let tls = crate::tls::server_config(&identity, &trust)?;
    let store = InvitationStore::new(&config.state_dir, &config.argon2)?;
    let port = bound
        .first()
        .map_or(crate::config::DEFAULT_PORT, |a| a.port());
    let issuer = Arc::new(Issuer {
        store: store.clone(),
        device_name: device_name.clone(),
        addresses: advertised_addresses(&config.advertise, &bound),
        port,
        fingerprint: identity.fingerprint,
        max_lifetime: config.max_invitation_lifetime,
    });
    let hub = Hub::new(json!({
        "device_name": device_name,
        "enabled": config.enabled,
        "allow_offers": config.allow_offers,
        "allow_invitations": config.allow_invitations,
        "allow_control": config.allow_control,
        "fingerprint": fp,
        "listening": bound.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let control = crate::control::bind(&config).await?;
    let control_server = ControlServer {
        hub: hub.clone(),
        issuer,
        audit: audit.clone(),
    };
    let control_task = tokio::spawn(control_server.serve(control, stop_rx.clone()));
    if let Some(mut local) = backends.local_events {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(e) = local.recv().await {
                let cmd = match e {
                    LocalEvent::Decision(command) => SessionCommand::Local {
                        command,
                        reply: None,
                    },
                    LocalEvent::UserActive(a) => SessionCommand::UserActive(a),
                };
                // No session or no prompt: a stray tap, nothing to do.
                let _ = hub.command(cmd);
            }
        });
    }
    if !config.enabled {
        tracing::warn!(
            "remote assistance is disabled (enabled = false): experts are told so and turned away"
        );
    }
    let device = DeviceConfig {
        device_name: device_name.clone(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        pre_auth_timeout: config.pre_auth_timeout,
        consent_timeout: config.consent_timeout,
        allow_control: config.allow_control,
        resume_grace: config.resume_grace,
        peer_timeout: config.peer_timeout,
        keepalive_interval: config.keepalive_interval,
        max_input_rate: config.max_input_rate,
        control_backoff: config.control_backoff,
    };
    // Unauthenticated connections are summed up in a log of their own, so
    // their noise never rotates session records out of the audit log. It
    // holds no session record: without it the agent still runs.
    let pre_auth_log = pre_auth_log_path(&config.audit_log);
    let pre_auth_audit =
        match AuditLog::open(&pre_auth_log, config.audit_max_bytes, config.audit_keep) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                tracing::error!(error = %e, "pre-auth summaries go to this log only");
                None
            }
        };
    let admission = Arc::new(Admission::new(
        AdmissionConfig {
            max_pre_auth_connections: config.max_pre_auth_connections,
            auth_failures_per_minute: config.auth_failures_per_minute,
            password_failures_per_minute: config.password_failures_per_minute,
            max_concurrent_hashes: config.max_concurrent_hashes,
        },
        pre_auth_audit,
    ));
    let summaries = tokio::spawn(admission.clone().summaries(stop_rx.clone()));
    let shared = Arc::new(Shared {
        admission,
        config,
        device,
        acceptor: TlsAcceptor::from(tls),
        trust,
        store,
        audit: audit.clone(),
        hub,
        capture: backends.capture,
        input: Mutex::new(backends.input),
        presenter: Mutex::new(backends.presenter),
        sessions: AtomicU64::new(0),
        parked: Mutex::new(None),
    });
    audit_or_log(
        &audit,
        "agent-started",
        &Context::default(),
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listening": bound.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "device_fingerprint": fp,
            "enabled": shared.config.enabled,
            "pre_auth_log": pre_auth_log.display().to_string(),
        }),
    );
    tracing::info!(listening = ?bound, fingerprint = %fp, "shoulder-agent running");

    // Every connection task holds a clone; when all are gone, recv() ends.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for acceptor in acceptors {
        let shared = shared.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        accept_tasks.push(tokio::spawn(accept_loop(acceptor, shared, stop, done)));
    }
    drop(done_tx);
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in accept_tasks {
        let _ = t.await;
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, done_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not end within {SHUTDOWN_GRACE:?}");
    }
    // Belt and braces: whatever happened, no key stays pressed.
    if let Ok(mut input) = shared.input.lock()
        && let Err(e) = input.release_all()
    {
        tracing::warn!(error = %e, "releasing input at shutdown failed");
    }
    let _ = control_task.await;
    let _ = summaries.await;
    shared.admission.flush_summaries();
    let _ = std::fs::remove_file(&shared.config.control_socket);
    audit_or_log(&audit, "agent-stopped", &Context::default(), json!({}));
    audit.flush()?;
    Ok(())
}

/// Where connections come from.
enum Acceptor {
    Tcp(TcpListener),
    Streams(mpsc::Receiver<Incoming>),
}

impl Acceptor {
    /// The next connection; `None` when no more can come.
    async fn accept(&mut self) -> Option<std::io::Result<Incoming>> {
        match self {
            Acceptor::Tcp(l) => Some(l.accept().await.map(|(tcp, peer)| {
                let _ = tcp.set_nodelay(true);
                (Box::new(tcp) as Box<dyn Stream>, peer)
            })),
            Acceptor::Streams(rx) => rx.recv().await.map(Ok),
        }
    }
}

async fn accept_loop(
    mut acceptor: Acceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let accepted = tokio::select! {
            r = acceptor.accept() => r,
            _ = stop.changed() => return,
        };
        match accepted {
            Some(Ok((stream, peer))) => {
                let shared = shared.clone();
                let stop = stop.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    connection(shared, stream, peer, stop).await;
                    drop(done);
                });
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => {
                // The source is gone; wait for the stop like the others.
                let _ = stop.changed().await;
                return;
            }
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let (mut ticket, mut evicted) = shared.admission.admit(peer.ip());
    let handshake = tokio::time::timeout(
        shared.config.pre_auth_timeout,
        shared.acceptor.accept(stream),
    );
    // Handshakes that go nowhere are counted in the pre-auth summary; the
    // evicted and the timed out also as failures of their source.
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return ticket.ended("tls-handshake-failed", false);
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return ticket.ended("tls-handshake-timeout", true);
            }
        },
        _ = &mut evicted => {
            tracing::debug!(%peer, "dropped during the TLS handshake: too many unauthenticated connections");
            return ticket.ended("evicted", true);
        }
        _ = stop.changed() => return ticket.ended("shutting-down", false),
    };
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(ALPN) {
        tracing::info!(%peer, "client does not speak shoulder/1 (ALPN); closing");
        return ticket.ended("no-alpn", false);
    }
    let peer_certs: Option<Vec<CertificateDer<'static>>> = conn
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
    let mut id = [0u8; 8];
    let _ = random_bytes(&mut id);
    let ctx = Context {
        session: Some(hex(&id)),
        source: Some(peer.to_string()),
        fingerprint: peer_certs
            .as_ref()
            .and_then(|c| c.first())
            .map(|c| fingerprint_text(&crate::util::sha256(c))),
        ..Context::default()
    };
    ticket.set_fingerprint(ctx.fingerprint.clone());
    let n = shared.sessions.fetch_add(1, Ordering::Relaxed);
    // Consent token epochs stay unique across the sessions of one run.
    let epoch_base = n.saturating_mul(1 << 20);
    let mut machine = DeviceSession::new(Instant::now(), shared.device.clone(), epoch_base);
    if !shared.device.resume_grace.is_zero()
        && let Some(token) = fresh_resume_token()
    {
        machine = machine.with_resume_token(token);
    }
    let mut s = Session {
        shared,
        machine,
        number: n,
        resume: None,
        handover_to: None,
        ctx,
        peer,
        peer_certs,
        ticket: Some(ticket),
        evicted: Some(evicted),
        slot: None,
        commands: None,
        auth: None,
        capture: None,
        capture_rx: None,
        control: None,
        control_pending: None,
        screen: None,
        out: Vec::new(),
        bytes_sent: 0,
        bytes_received: 0,
        started: Instant::now(),
        closing: None,
        audit_failed: false,
        ignored: 0,
        chats: 0,
        phase: "",
        stop_seen: false,
        local_active: false,
        held_back: 0,
    };
    s.audit(
        "connect",
        json!({"tls": "1.3", "alpn": "shoulder/1",
        "client_certificate": s.ctx.fingerprint.is_some()}),
    );
    s.run(tls, stop).await;
}

type AuthResult = Result<ExpertIdentity, (ByeReason, String)>;

struct Session {
    shared: Arc<Shared>,
    machine: DeviceSession,
    /// This connection's number (unique in this run).
    number: u64,
    /// While on hold: where a resuming connection arrives.
    resume: Option<oneshot::Receiver<Handover>>,
    /// This connection resumes a parked session: hand the transport over.
    handover_to: Option<oneshot::Sender<Handover>>,
    ctx: Context,
    peer: SocketAddr,
    peer_certs: Option<Vec<CertificateDer<'static>>>,
    /// Held while unauthenticated (counts against the pre-auth limit).
    ticket: Option<PreAuthTicket>,
    evicted: Option<oneshot::Receiver<()>>,
    slot: Option<SlotGuard>,
    commands: Option<mpsc::Receiver<SessionCommand>>,
    auth: Option<oneshot::Receiver<AuthResult>>,
    capture: Option<CaptureHandle>,
    capture_rx: Option<mpsc::Receiver<Message>>,
    control: Option<ControlConsent>,
    /// Control granted before the first screen size was known (a quick
    /// answer right after the view started): input devices are made, with
    /// the right ranges, as soon as the size is.
    control_pending: Option<ControlConsent>,
    /// The screen size last announced to the expert (for input ranges).
    screen: Option<(u16, u16)>,
    out: Vec<u8>,
    bytes_sent: u64,
    bytes_received: u64,
    started: Instant,
    closing: Option<(ByeReason, String)>,
    audit_failed: bool,
    ignored: u64,
    /// Chat lines this session, audited or not.
    chats: u64,
    phase: &'static str,
    stop_seen: bool,
    /// The person at the device is using local input: expert input waits.
    local_active: bool,
    held_back: u64,
}

impl Session {
    async fn run(&mut self, tls: TlsStream<Box<dyn Stream>>, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut frames = FrameBoundaries::new();
        let write_timeout = self.shared.device.peer_timeout;
        // None while the session is on hold after its connection dropped.
        let mut transport = Some(Transport::new(tls, write_timeout));
        loop {
            self.process_outputs();
            if self.machine.is_suspended() && transport.is_some() {
                // A silent peer's connection may still be open: drop it,
                // the expert comes back on a new one.
                transport = None;
            }
            self.park();
            match transport.as_ref() {
                // On hold: nobody to send to.
                None => self.out.clear(),
                Some(t) if !self.out.is_empty() => {
                    if let Err(back) = t.try_send(std::mem::take(&mut self.out)) {
                        self.out = back;
                    }
                }
                Some(_) => {}
            }
            if self.out.len() > MAX_UNSENT {
                // Only small messages pile up here (screen updates wait in
                // the capture queue): an expert this far behind is gone.
                transport = None;
                self.out.clear();
                self.stop_capture();
                self.machine.handle(
                    Instant::now(),
                    DeviceInput::PeerClosed {
                        error: Some("the expert stopped reading".into()),
                    },
                );
                continue;
            }
            if self.closing.is_some() {
                if let Some(t) = transport.take() {
                    t.close(std::mem::take(&mut self.out), CLOSE_GRACE).await;
                }
                break;
            }
            if let Some(to) = self.handover_to.take() {
                let Some(t) = transport.take() else {
                    break;
                };
                // What this connection still has to say (its hello) goes
                // ahead of the resumed session's messages.
                if !self.out.is_empty() && t.try_send(std::mem::take(&mut self.out)).is_err() {
                    break;
                }
                let h = Handover {
                    transport: t,
                    peer: self.peer,
                    peer_certs: self.peer_certs.take(),
                    fingerprint: self.ctx.fingerprint.clone(),
                };
                match to.send(h) {
                    Ok(()) => {
                        self.audit("resume-handover", json!({}));
                        tracing::info!(peer = %self.peer, "connection continues a session on hold");
                        return;
                    }
                    Err(h) => {
                        // The session ended in the meantime.
                        transport = Some(h.transport);
                        self.peer_certs = h.peer_certs;
                        self.auth_done(Err((
                            ByeReason::ResumeRejected,
                            "the session ended before it could be resumed".into(),
                        )));
                        continue;
                    }
                }
            }
            let deadline = self.machine.poll_timeout();
            let now = Instant::now();
            let unsent = !self.out.is_empty();
            // Screen updates only while the writer keeps up: the capture
            // thread then waits in its own small queue.
            let take_capture = !unsent && transport.as_ref().is_some_and(Transport::has_room);
            // Biased: the person's decisions, shutdown and timers come
            // before anything the expert sends or the screen produces; the
            // screen before the expert's input, which a flood keeps ready
            // all the time (capture is paced, so it cannot starve reading).
            tokio::select! {
                biased;
                cmd = recv_cmd(&mut self.commands), if self.commands.is_some() => {
                    match cmd {
                        Some(c) => self.command(c),
                        None => self.commands = None,
                    }
                }
                r = stop.changed(), if !self.stop_seen => {
                    self.stop_seen = true;
                    let _ = r;
                    self.machine.handle(Instant::now(), DeviceInput::Shutdown);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.machine.handle_timeout(Instant::now().max(now));
                }
                _ = recv_evict(&mut self.evicted), if self.evicted.is_some() => {
                    self.evicted = None;
                    self.machine.handle(Instant::now(), DeviceInput::Abort {
                        reason: ByeReason::AuthTimeout,
                        detail: "too many connections are authenticating; try again".into(),
                    });
                }
                r = recv_opt(&mut self.auth), if self.auth.is_some() => {
                    self.auth = None;
                    let r = r.unwrap_or_else(|| Err((ByeReason::InternalError, "authentication task failed".into())));
                    self.auth_done(r);
                }
                h = recv_opt(&mut self.resume), if self.resume.is_some() => {
                    self.resume = None;
                    if let Some(h) = h {
                        if !self.machine.is_suspended() {
                            // The expert gave up on a connection that still
                            // looks open here (half-open TCP after a link
                            // loss): it is dead.
                            transport = None;
                            self.stop_capture();
                            self.machine.handle(Instant::now(), DeviceInput::PeerClosed {
                                error: Some("the expert reconnected on a new connection".into()),
                            });
                            self.process_outputs();
                            self.out.clear();
                        }
                        if self.machine.is_suspended() {
                            transport = Some(h.transport);
                            frames = FrameBoundaries::new();
                            self.resumed(h.peer, h.peer_certs, h.fingerprint);
                        } else {
                            tokio::spawn(refuse_late_resume(h));
                        }
                    }
                }
                msg = recv_msg(&mut self.capture_rx), if self.capture_rx.is_some() && take_capture => {
                    match msg {
                        Some(m) => {
                            if let Message::ScreenInfo(info) = &m {
                                let (w, h) = (info.width, info.height);
                                let old = self.screen.replace((w, h));
                                // uinput ranges are fixed per device: follow the mode.
                                if let Some(t) = &self.control
                                    && old.is_some_and(|o| o != (w, h))
                                    && let Err(e) = self.with_input(|i| i.resize(t, w, h))
                                {
                                    tracing::warn!(error = %e, "resizing the input devices failed");
                                    self.machine
                                        .handle(Instant::now(), DeviceInput::InjectionFault(e.0));
                                }
                                if let Some(token) = self.control_pending.take() {
                                    self.enable_injection(token);
                                }
                            }
                            self.queue(&m);
                        }
                        None => self.capture_rx = None,
                    }
                }
                ev = next_opt(&mut transport, &mut buf, unsent), if transport.is_some() => {
                    let input = match ev {
                        TransportEvent::Room => continue,
                        TransportEvent::Failed(e) => DeviceInput::PeerClosed { error: Some(e) },
                        TransportEvent::Read(Ok(0)) => DeviceInput::PeerClosed { error: None },
                        TransportEvent::Read(Ok(n)) => {
                            self.bytes_received += n as u64;
                            // One frame at a time, acting on each before the
                            // next: input read together with a release of
                            // control is injected before control ends.
                            let mut start = 0;
                            for end in frames.ends(&buf[..n]) {
                                self.machine
                                    .handle(Instant::now(), DeviceInput::Received(buf[start..end].to_vec()));
                                self.process_outputs();
                                start = end;
                            }
                            DeviceInput::Received(buf[start..n].to_vec())
                        }
                        TransportEvent::Read(Err(e)) => DeviceInput::PeerClosed { error: Some(format!("read failed: {e}")) },
                    };
                    if matches!(input, DeviceInput::PeerClosed { .. }) {
                        transport = None;
                        self.out.clear();
                        self.stop_capture();
                    }
                    self.machine.handle(Instant::now(), input);
                }
            }
        }
        if let Some(h) = self.unpark() {
            // A resuming connection got in just as the session ended.
            tokio::spawn(refuse_late_resume(h));
        }
        self.stop_capture();
        if self.control.take().is_some() {
            self.with_input(|i| i.disable());
        }
        tracing::info!(peer = %self.peer, session = ?self.ctx.session, sent = self.bytes_sent, "connection closed");
    }

    /// Once the expert holds a resume token (viewing, controlling, or on
    /// hold), lets a resuming connection find this session: also while the
    /// old connection still looks alive here, as after a half-open TCP.
    fn park(&mut self) {
        if !matches!(self.phase, "viewing" | "controlling" | "reconnecting") {
            return;
        }
        let tokens = self.machine.resume_tokens();
        if self.resume.is_some() {
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
        self.resume = Some(rx);
    }

    /// The session is over: its token no longer resumes anything. Returns
    /// a connection handed over in the last instant, to be turned away.
    fn unpark(&mut self) -> Option<Handover> {
        {
            let mut parked = lock(&self.shared.parked);
            if parked.as_ref().is_some_and(|p| p.number == self.number) {
                *parked = None;
            }
        }
        let mut rx = self.resume.take()?;
        rx.close();
        rx.try_recv().ok()
    }

    /// Takes the parked session that `token` resumes, if this connection is
    /// its expert: the same client certificate for offers; for invitations
    /// the token alone (single use, 32 random bytes, sent only inside TLS).
    fn take_parked(&self, token: &ResumeToken) -> Option<oneshot::Sender<Handover>> {
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
                .is_some_and(|c| bool::from(crate::util::sha256(c).ct_eq(fingerprint))),
            AuthMethod::Invitation { .. } => true,
        };
        if !(token_ok & identity_ok) {
            return None;
        }
        parked.take().map(|p| p.handover)
    }

    /// The expert is back on a new connection: continue where we were,
    /// with a fresh single-use token.
    fn resumed(
        &mut self,
        peer: SocketAddr,
        certs: Option<Vec<CertificateDer<'static>>>,
        fingerprint: Option<String>,
    ) {
        self.peer = peer;
        self.peer_certs = certs;
        self.ctx.source = Some(peer.to_string());
        self.ctx.fingerprint = fingerprint;
        tracing::info!(%peer, session = ?self.ctx.session, "expert resumed the session");
        self.machine.handle(
            Instant::now(),
            DeviceInput::Reattach {
                new_token: fresh_resume_token(),
            },
        );
    }

    fn process_outputs(&mut self) {
        while let Some(o) = self.machine.poll_output() {
            match o {
                DeviceOutput::Send(m) => self.queue(&m),
                DeviceOutput::Authenticate(req) => self.start_auth(req),
                DeviceOutput::ShowPrompt(p) => {
                    self.with_presenter(|pr| pr.show_prompt(&p));
                    if let Some(slot) = &self.slot {
                        slot.set_prompt(Some(PromptInfo {
                            id: p.id,
                            kind: p.kind,
                            deadline: p.deadline,
                        }));
                    }
                    let timeout = p
                        .deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs();
                    self.publish(
                        json!({"event": "consent-requested", "kind": kind_name(p.kind),
                        "expert": p.expert.name, "how": p.expert.how(), "timeout_secs": timeout}),
                    );
                }
                DeviceOutput::HidePrompt => {
                    self.with_presenter(|pr| pr.hide_prompt());
                    if let Some(slot) = &self.slot {
                        slot.set_prompt(None);
                    }
                    self.publish(json!({"event": "prompt-closed"}));
                }
                DeviceOutput::Phase(p) => self.phase(p),
                DeviceOutput::StartCapture(view) => {
                    self.stop_capture();
                    let (tx, rx) = mpsc::channel(CAPTURE_QUEUE);
                    self.capture = Some(CaptureHandle::start(
                        view,
                        self.shared.capture.clone(),
                        tx,
                        self.shared.config.max_fps,
                    ));
                    self.capture_rx = Some(rx);
                }
                DeviceOutput::StopCapture => self.stop_capture(),
                DeviceOutput::EnableInjection(token) => {
                    if self.screen.is_some() {
                        self.enable_injection(token);
                    } else {
                        tracing::debug!(
                            "control granted before the first screen; enabling with it"
                        );
                        self.control_pending = Some(token);
                    }
                }
                DeviceOutput::DisableInjection => {
                    self.control_pending = None;
                    if self.control.take().is_some() {
                        self.with_input(|i| i.disable());
                    }
                }
                DeviceOutput::ReleaseAll => {
                    if let Err(e) = self.with_input(|i| i.release_all()) {
                        tracing::error!(error = %e, "releasing expert input failed");
                    }
                }
                DeviceOutput::Inject(event) => {
                    if self.local_active {
                        self.held_back += 1;
                        continue;
                    }
                    let Some(token) = self.control.take() else {
                        continue;
                    };
                    let r = self.with_input(|i| i.inject(&token, &event));
                    self.control = Some(token);
                    if r.is_ok()
                        && let Some(c) = &self.capture
                    {
                        // The screen is about to change: poll fast.
                        c.input();
                    }
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "injection failed; revoking control");
                        self.audit("injection-failed", json!({"detail": e.0}));
                        self.machine
                            .handle(Instant::now(), DeviceInput::InjectionFault(e.0));
                    }
                }
                DeviceOutput::UpdateRequested { incremental } => {
                    if let Some(c) = &self.capture {
                        c.request(!incremental);
                    }
                }
                DeviceOutput::CheckView(report) => {
                    if let Some(c) = &self.capture {
                        c.check_view(report);
                    }
                }
                DeviceOutput::ShowChat(text) => {
                    self.with_presenter(|pr| pr.chat(true, &text));
                    self.publish(json!({"event": "chat", "from": "expert", "text": text}));
                }
                DeviceOutput::Audit(e) => self.audit_event(e),
                DeviceOutput::Close { reason, detail } => {
                    tracing::info!(peer = %self.peer, ?reason, %detail, "session closing");
                    self.closing = Some((reason, detail));
                }
            }
        }
    }

    fn queue(&mut self, m: &Message) {
        if self.closing.is_some() && !matches!(m, Message::Bye { .. }) {
            return;
        }
        let before = self.out.len();
        match encode_into(m, &mut self.out) {
            Ok(()) => self.bytes_sent += (self.out.len() - before) as u64,
            Err(e) => {
                self.out.truncate(before);
                tracing::error!(error = %e, message = m.name(), "cannot encode a message");
            }
        }
    }

    fn start_auth(&mut self, req: AuthRequest) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let ip = self.peer.ip();
        let quick: Option<(ByeReason, String)> = if !cfg.enabled {
            Some((
                ByeReason::Disabled,
                "remote assistance is disabled on this device".into(),
            ))
        } else if shared.hub.is_busy() && !matches!(req, AuthRequest::Resume { .. }) {
            Some((ByeReason::Busy, "another expert is connected".into()))
        } else if let Some(Err(retry)) = self.ticket.as_mut().map(|t| {
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
                        self.handover_to = Some(to);
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
        self.auth = Some(rx);
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
                        Ok(Ok(())) => Ok(ExpertIdentity {
                            name: format!("invitation {id}"),
                            method: AuthMethod::Invitation { id },
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

    fn auth_done(&mut self, result: AuthResult) {
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
        if let (Err((reason, detail)), Some(t)) = (&result, self.ticket.as_mut()) {
            t.auth_failed(&format!("{reason:?}"), detail, counts_as_failure(*reason));
        }
        self.machine
            .handle(Instant::now(), DeviceInput::AuthDecided(result));
    }

    /// The peer proved who it is: no longer subject to the pre-auth limit,
    /// its failure charge is refunded, and its held records (connect,
    /// hello) go to the audit log as they were.
    fn leave_pre_auth(&mut self) {
        self.evicted = None;
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        for (event, fields) in ticket.authenticated() {
            self.audit(&event, Value::Object(fields));
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

    fn command(&mut self, c: SessionCommand) {
        let input = match c {
            SessionCommand::Local { command, reply } => {
                let outcome = self.machine.decide(Instant::now(), command);
                if let Some(r) = reply {
                    let _ = r.send(outcome);
                }
                return;
            }
            SessionCommand::Chat(text) => {
                self.with_presenter(|pr| pr.chat(false, &text));
                self.publish(json!({"event": "chat", "from": "device", "text": text}));
                DeviceInput::SendChat(text)
            }
            SessionCommand::UserActive(a) => {
                // Local input wins: the expert's held keys go up at once and
                // their input is dropped until the person stops.
                self.local_active = a;
                if a && let Some(c) = &self.capture {
                    // The person's input changes the screen too.
                    c.input();
                }
                if a && self.control.is_some()
                    && let Err(e) = self.with_input(|i| i.release_all())
                {
                    tracing::warn!(error = %e, "releasing expert input failed");
                }
                DeviceInput::LocalUserActive(a)
            }
        };
        self.machine.handle(Instant::now(), input);
    }

    fn phase(&mut self, p: Phase) {
        self.with_presenter(|pr| pr.phase(&p));
        let (name, event) = match &p {
            Phase::AwaitingView { expert } => (
                "awaiting-view",
                json!({"event": "session-started", "session": self.ctx.session, "expert": expert.name,
                    "how": expert.how(), "source": self.peer.to_string()}),
            ),
            Phase::Viewing { .. } if self.phase == "reconnecting" => {
                ("viewing", json!({"event": "resumed", "phase": "viewing"}))
            }
            Phase::Controlling { .. } if self.phase == "reconnecting" => (
                "controlling",
                json!({"event": "resumed", "phase": "controlling"}),
            ),
            Phase::Viewing { .. } if self.phase == "controlling" => {
                ("viewing", json!({"event": "control-revoked"}))
            }
            Phase::Viewing { .. } => ("viewing", json!({"event": "view-granted"})),
            Phase::Controlling { .. } => ("controlling", json!({"event": "control-granted"})),
            Phase::Reconnecting { until, .. } => (
                "reconnecting",
                json!({"event": "reconnecting",
                    "grace_secs": until.saturating_duration_since(Instant::now()).as_secs()}),
            ),
            Phase::Closed { reason, detail } => (
                "closed",
                json!({"event": "session-ended", "reason": format!("{reason:?}"),
                    "sentence": reason.sentence(), "detail": detail}),
            ),
        };
        self.phase = name;
        if let Some(slot) = &self.slot {
            slot.set_phase(name);
        }
        // Only the session holding the slot talks to the device side; a
        // refused connection's "closed" is not news to anyone there.
        if self.slot.is_some() {
            self.shared.hub.publish(event);
        }
    }

    fn publish(&self, event: Value) {
        if self.slot.is_some() {
            self.shared.hub.publish(event);
        }
    }

    /// Makes the input devices for the known screen size; a failure revokes
    /// control with a reason.
    fn enable_injection(&mut self, token: ControlConsent) {
        let Some((w, h)) = self.screen else {
            return;
        };
        match self.with_input(|i| i.enable(&token, w, h)) {
            Ok(()) => self.control = Some(token),
            Err(e) => {
                tracing::warn!(error = %e, "cannot enable injection; revoking control");
                self.machine
                    .handle(Instant::now(), DeviceInput::InjectionFault(e.0));
            }
        }
    }

    fn stop_capture(&mut self) {
        if let Some(c) = self.capture.take() {
            c.stop();
        }
        self.capture_rx = None;
    }

    fn with_presenter(&self, f: impl FnOnce(&mut dyn Presenter)) {
        if self.slot.is_none() {
            return;
        }
        let mut p = lock(&self.shared.presenter);
        f(p.as_mut());
    }

    fn with_input<T>(&self, f: impl FnOnce(&mut dyn InputSink) -> T) -> T {
        let mut i = lock(&self.shared.input);
        f(i.as_mut())
    }

    fn audit_event(&mut self, e: AuditEvent) {
        let (name, fields) = match e {
            AuditEvent::Hello { software, version } => (
                "hello",
                json!({"software": software, "software_version": version}),
            ),
            AuditEvent::AuthOk { expert } => {
                // Which plant CA vouched for the expert (several may be trusted).
                let issuer = matches!(expert.method, AuthMethod::Offer { .. })
                    .then(|| self.shared.trust.issuer(self.peer_certs.as_deref()))
                    .flatten();
                ("auth-ok", json!({"how": expert.how(), "issuer": issuer}))
            }
            AuditEvent::AuthFailed { reason, detail } => (
                "auth-failed",
                json!({"reason": format!("{reason:?}"), "detail": detail}),
            ),
            AuditEvent::ConsentAsked { kind } => {
                ("consent-asked", json!({"kind": kind_name(kind)}))
            }
            AuditEvent::ConsentAnswered {
                kind,
                granted,
                reason,
            } => {
                self.audit(
                    "consent-answered",
                    json!({"kind": kind_name(kind), "granted": granted,
                        "reason": reason.map(|r| format!("{r:?}"))}),
                );
                if kind == ConsentKind::Control && granted {
                    ("control-granted", json!({}))
                } else {
                    return;
                }
            }
            AuditEvent::ControlEnded { reason } => {
                ("control-revoked", json!({"reason": format!("{reason:?}")}))
            }
            AuditEvent::Chat { from_expert, text } => {
                self.chats += 1;
                if self.chats > MAX_CHATS_AUDITED {
                    return;
                }
                (
                    "chat",
                    json!({"from": if from_expert { "expert" } else { "device" }, "text": text}),
                )
            }
            AuditEvent::InputRateLimited => ("input-rate-limited", json!({})),
            AuditEvent::StaleAnswer { prompt, open } => (
                "stale-answer",
                json!({"prompt": prompt.0, "open_prompt": open.map(|p| p.0)}),
            ),
            AuditEvent::ControlEndedWhileAway { reason } => (
                "control-revoked",
                json!({"reason": format!("{reason:?}"), "while": "reconnecting"}),
            ),
            AuditEvent::Suspended { detail } => ("suspended", json!({"detail": detail})),
            AuditEvent::Resumed => ("resumed", json!({})),
            AuditEvent::Ignored { message, state } => {
                self.ignored += 1;
                if self.ignored > MAX_IGNORED_AUDITED {
                    return;
                }
                ("ignored", json!({"message": message, "state": state}))
            }
            AuditEvent::Closed { reason, detail } => (
                "bye",
                json!({"reason": format!("{reason:?}"), "detail": detail,
                    "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                    "ignored_messages": self.ignored,
                    "chats_not_audited": self.chats.saturating_sub(MAX_CHATS_AUDITED),
                    "held_back_inputs": self.held_back,
                    "duration_ms": self.started.elapsed().as_millis() as u64}),
            ),
        };
        self.audit(name, fields);
    }

    fn audit(&mut self, event: &str, fields: Value) {
        let Value::Object(m) = fields else {
            return;
        };
        if let Some(t) = self.ticket.as_mut() {
            // Not authenticated (yet): held, and only summed up per source
            // if the peer never authenticates.
            t.hold(event, m);
            return;
        }
        if let Err(e) = self.shared.audit.record(event, &self.ctx, m) {
            tracing::error!(error = %e, "audit record failed");
            // Fail closed: no session runs unaudited (unless configured).
            if self.shared.config.audit_required && !self.audit_failed {
                self.audit_failed = true;
                self.machine.handle(
                    Instant::now(),
                    DeviceInput::Abort {
                        reason: ByeReason::AuditFailure,
                        detail: "the device cannot write its audit log".into(),
                    },
                );
            }
        }
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

/// A new single-use resume token: 32 bytes from the system random source.
/// None if that fails: the session then simply cannot be resumed.
fn fresh_resume_token() -> Option<ResumeToken> {
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
async fn refuse_late_resume(h: Handover) {
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

async fn next_opt(
    transport: &mut Option<Transport>,
    buf: &mut [u8],
    want_room: bool,
) -> TransportEvent {
    match transport {
        Some(t) => t.next(buf, want_room).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<oneshot::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.await.ok(),
        None => std::future::pending().await,
    }
}

async fn recv_evict(rx: &mut Option<oneshot::Receiver<()>>) {
    match rx {
        // A dropped sender means the ticket was released: not an eviction.
        Some(r) => {
            if r.await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn recv_cmd(rx: &mut Option<mpsc::Receiver<SessionCommand>>) -> Option<SessionCommand> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_msg(rx: &mut Option<mpsc::Receiver<Message>>) -> Option<Message> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn audit_or_log(audit: &AuditLog, event: &str, ctx: &Context, fields: Value) {
    let m: Map<String, Value> = match fields {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Err(e) = audit.record(event, ctx, m) {
        tracing::error!(error = %e, "audit record failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unavailable_addresses_are_skipped_if_another_binds() {
        let ok: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let absent: SocketAddr = "192.0.2.77:0".parse().unwrap();
        let l = bind(&[absent, ok]).unwrap();
        assert_eq!(l.len(), 1);
        let e = bind(&[absent]).unwrap_err().to_string();
        assert!(e.contains("192.0.2.77"), "{e}");
        let taken = l[0].local_addr().unwrap();
        assert!(bind(&[taken]).is_err(), "an address in use is an error");
    }
}
