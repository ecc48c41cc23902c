//! The network service: accept loops, pre-authentication limits, and one
//! task per connection driving a [`DeviceSession`].
//!
//! - this module: start-up, the accept loops, each connection's start;
//! - `session`: the session loop and what it does for the machine;
//! - `authorise`: who may in;
//! - `resume`: sessions on hold and the hand-over to a new connection;
//! - `crate::records`: the audit records and control-socket events it
//!   writes.

mod authorise;
mod files;
mod resume;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use shoulder_proto::session::{DeviceConfig, DeviceSession};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use self::authorise::PreAuth;
use self::resume::{Parked, ResumeLink, fresh_resume_token};
use self::session::{Devices, Session, Tally};
use crate::AgentError;
use crate::admission::{Admission, AdmissionConfig, pre_auth_log_path};
use crate::audit::{AuditLog, Context};
use crate::backends::{Backends, CaptureBackend, LocalEvent, Presenter};
use crate::config::{Config, RotationSetting};
use crate::control::ControlServer;
use crate::hub::{Hub, SessionCommand};
use crate::invites::{InvitationStore, Issuer, advertised_addresses};
use crate::records::{AgentInfo, AuditRecord};
use crate::tls::{ALPN, PlantTrust};
use crate::util::{fingerprint_of, hex, lock, random_bytes};
use shoulder_input::{InjectMode, InputControl, InputControlConfig, KeyPolicy, ScreenSize};

/// How long shutdown waits for sessions to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Time to send close_notify after the last message.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

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
    /// The expert's input: sinks per grant, hold-back, key policy.
    input: Mutex<InputControl>,
    presenter: Mutex<Box<dyn Presenter>>,
    admission: Arc<Admission>,
    sessions: AtomicU64,
    /// The session on hold after its connection dropped (one session at a
    /// time, so at most one).
    parked: Mutex<Option<Parked>>,
    /// The person's help request (`ctl help`).
    help: Arc<crate::help::HelpDesk>,
    /// Sessions are recorded (`[record]`).
    #[cfg(feature = "record")]
    record: Option<Arc<crate::recorder::RecordSetup>>,
}

impl Shared {
    fn follow_display(&self) {
        follow_display(&self.hub, &*self.capture);
    }
}

/// `rotation = "auto"` and nothing pinned it: asks the display how it is
/// turned now (a compositor may have turned its plane since), and a change
/// turns the running session's view, input and banner.
fn follow_display(hub: &Hub, capture: &dyn CaptureBackend) {
    if !hub.follows_display() {
        return;
    }
    if let Some(r) = crate::capture::display_rotation(capture)
        && hub.follow_display(r)
    {
        tracing::info!(
            degrees = r.degrees(),
            "the display says the person sees its picture turned {r}°"
        );
    }
}

/// A byte stream the agent serves one connection on: TCP in production;
/// tests and the network simulator bring their own (see [`run_on`]).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// An accepted connection and the address of its peer.
pub type Incoming = (Box<dyn Stream>, SocketAddr);

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
    let fp = identity.fingerprint.colon_hex();
    if created {
        tracing::info!(fingerprint = %fp, "created the device key and certificate");
        audit_or_log(
            &audit,
            AuditRecord::IdentityCreated {
                device_fingerprint: &fp,
            },
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
        broker: invitation_route(&config, &identity),
    });
    let listening: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
    let hub = Hub::new(
        AgentInfo {
            device_name: &device_name,
            enabled: config.enabled,
            allow_offers: config.allow_offers,
            allow_invitations: config.allow_invitations,
            allow_control: config.allow_control,
            fingerprint: &fp,
            listening: &listening,
        }
        .to_value(),
    );
    match config.rotation {
        RotationSetting::Fixed(r) => {
            hub.set_rotation(r);
        }
        RotationSetting::Auto => follow_display(&hub, &*backends.capture),
    }
    let mut acceptors = acceptors;
    #[cfg(feature = "broker")]
    let broker = match &config.broker {
        Some(b) => {
            let (link, incoming) = crate::broker::start(&config, b, &identity, hub.clone())?;
            acceptors.push(Acceptor::Streams(incoming));
            Some(link)
        }
        None => None,
    };
    #[cfg(feature = "broker")]
    let help_publisher = broker.as_ref().map(|b| b.help.clone());
    #[cfg(not(feature = "broker"))]
    let help_publisher = None;
    let help = crate::help::HelpDesk::new(
        help_publisher,
        config
            .broker
            .as_ref()
            .map_or(Duration::from_secs(3600), |b| b.help_expires),
        audit.clone(),
    );
    let help_task = tokio::spawn(help.clone().expire());
    let (stop_tx, stop_rx) = watch::channel(false);
    let control = crate::control::bind(&config).await?;
    // Calls placed by `ctl call` are served like accepted connections.
    let (calls_tx, calls_rx) = mpsc::channel::<Incoming>(4);
    acceptors.push(Acceptor::Streams(calls_rx));
    let caller = Arc::new(crate::call::Caller {
        tx: calls_tx,
        help_desk: Some(config.help_desk.trim().to_string()).filter(|h| !h.is_empty()),
        hub: hub.clone(),
        audit: audit.clone(),
    });
    let control_server = ControlServer {
        hub: hub.clone(),
        issuer,
        audit: audit.clone(),
        help: help.clone(),
        caller,
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
                    LocalEvent::Activity => SessionCommand::Activity,
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
        keyboard: config.keyboard_layout(),
        #[cfg(feature = "files")]
        files: shoulder_proto::session::FilesOffered {
            get: !config.files.readable.is_empty(),
            put: !config.files.drop.as_os_str().is_empty(),
        },
        #[cfg(not(feature = "files"))]
        files: shoulder_proto::session::FilesOffered::default(),
        recorded: config.records(),
    };
    #[cfg(feature = "record")]
    let record = match rustls::crypto::ring::sign::any_supported_type(&identity.key) {
        Ok(key) => {
            crate::recorder::RecordSetup::new(&config, key, audit.clone(), fp.clone()).map(Arc::new)
        }
        // The TLS config took the same key.
        Err(e) => return Err(crate::tls::TlsError::DeviceCert(e.to_string()).into()),
    };
    #[cfg(feature = "files")]
    if !config.files.drop.as_os_str().is_empty() {
        crate::files::clean_drop_dir(&config.files.drop);
    }
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
    let mut input = InputControl::new(
        InputControlConfig {
            mode: InjectMode::Pointer,
            holdback: config.input.local_idle,
            // Checked at load; should a bad name slip through, allow nothing
            // rather than everything.
            keys: KeyPolicy::parse(&config.input.allow_keys).unwrap_or_default(),
        },
        // Set from the first screen before any devices are made.
        ScreenSize::MIN,
        backends.input,
    );
    // The expert points at the upright picture; the devices take the
    // framebuffer's coordinates.
    input.set_rotation(hub.rotation());
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
        input: Mutex::new(input),
        presenter: Mutex::new(backends.presenter),
        sessions: AtomicU64::new(0),
        parked: Mutex::new(None),
        help,
        #[cfg(feature = "record")]
        record,
    });
    audit_or_log(
        &audit,
        AuditRecord::AgentStarted {
            version: env!("CARGO_PKG_VERSION"),
            listening,
            device_fingerprint: &fp,
            enabled: shared.config.enabled,
            pre_auth_log: pre_auth_log.display().to_string(),
        },
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
    if let Ok(mut input) = shared.input.lock() {
        input.shutdown();
    }
    help_task.abort();
    #[cfg(feature = "broker")]
    if let Some(b) = broker {
        b.close().await;
    }
    let _ = control_task.await;
    let _ = summaries.await;
    shared.admission.flush_summaries();
    // Records of the sessions that just ended are signed and closed before
    // the agent says it stopped.
    #[cfg(feature = "record")]
    if let Some(r) = &shared.record {
        let r = r.clone();
        let _ = tokio::task::spawn_blocking(move || r.finish(SHUTDOWN_GRACE)).await;
    }
    let _ = std::fs::remove_file(&shared.config.control_socket);
    audit_or_log(&audit, AuditRecord::AgentStopped);
    audit.flush()?;
    Ok(())
}

/// The broker route invitations name, when the config has a `[broker]`:
/// the broker's address, the device's name there (its certificate's
/// common name) and the prefix.
pub fn invitation_route(
    config: &Config,
    identity: &crate::identity::DeviceIdentity,
) -> Option<shoulder_proto::invite::BrokerRoute> {
    let b = config.broker.as_ref()?;
    let leaf = identity.chain.first()?;
    let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
    let device = crate::tls::common_name(ee.subject())?;
    Some(shoulder_proto::invite::BrokerRoute {
        broker: shoulder_proto::text(b.address.trim()),
        device: shoulder_proto::text(&device),
        prefix: shoulder_proto::text(b.prefix.trim_matches('/')),
    })
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
            .map(|c| fingerprint_of(c).colon_hex()),
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
        ctx,
        peer,
        peer_certs,
        pre_auth: PreAuth {
            ticket: Some(ticket),
            evicted: Some(evicted),
            check: None,
            slot_wait: None,
            waited_for_slot: false,
        },
        resume: ResumeLink::default(),
        slot: None,
        commands: None,
        devices: Devices::default(),
        files: files::FileGlue::default(),
        #[cfg(feature = "record")]
        record: None,
        out: Vec::new(),
        closing: None,
        phase: None,
        stop_seen: false,
        audit_failed: false,
        tally: Tally::new(),
    };
    s.audit(AuditRecord::Connect {
        tls: "1.3",
        alpn: "shoulder/1",
        client_certificate: s.ctx.fingerprint.is_some(),
    });
    s.run(tls, stop).await;
}

/// Audits a record about the agent itself (no session).
fn audit_or_log(audit: &AuditLog, record: AuditRecord<'_>) {
    let (event, fields) = record.into_parts();
    if let Err(e) = audit.record(&event, &Context::default(), fields) {
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
