//! The client core shared by the GUI and the CLI: connect (TCP + TLS 1.3,
//! device verification), then drive the sans-I/O [`ExpertSession`] and apply
//! screen updates to a [`Framebuffer`].
//!
//! The driver owns the connection. The UI talks to it through a bounded
//! channel of [`UserAction`]s and hears back through [`ClientEvent`]s; the
//! framebuffer, cursor and statistics are in a [`SharedView`] the UI reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::{self, HEADER_LEN, MAX_FRAME_LEN};
use shoulder_proto::session::{
    ControlState, ExpertConfig, ExpertEvent, ExpertInput, ExpertSession, ExpertState, UserAction,
};
use shoulder_proto::{ALPN, Fingerprint};
use shoulder_proto::{
    Auth, ByeReason, ControlEndReason, CursorShape, DeclineReason, MAX_PASSWORD_LEN, Message,
    ResumeToken, ScreenInfo, text,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::identity::{Identity, common_name};
use crate::target::{Target, host_port};
use crate::trust::{AcceptNew, DevicePolicy, DeviceVerifier, KnownHosts, Verdict, fingerprint_of};

/// TCP connect, per address: long enough for a slow plant Wi-Fi, short
/// enough to move on to the invitation's next address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// The TLS handshake is a few round trips.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Our own latency probes: often enough for a live ping figure, rare enough
/// to cost nothing (a ping is 10 bytes).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the view checks itself against the device (a hash per band of
/// the framebuffer, about 2 ms at 1080p; the device answers and sends again
/// what differs).
pub const VIEW_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The device takes one view report a second; asked more often (the
/// technician pressing "refresh"), the client waits this long in between.
const MIN_VIEW_CHECK_GAP: Duration = shoulder_proto::session::MIN_VIEW_REPORT_INTERVAL;
/// Probe nonces have the top bit set so they never collide with the session
/// machine's keepalive nonces (which count up from 1).
const PROBE_BIT: u64 = 1 << 63;
/// Read chunk: large enough for update bursts, small enough to stay cheap.
const READ_CHUNK: usize = 64 * 1024;
/// First pause between reconnection attempts after a drop; it doubles up to
/// [`RECONNECT_MAX_PAUSE`]. Short, because the device keeps the session only
/// for its grace period (20 s by default).
pub const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// Longest pause between reconnection attempts.
pub const RECONNECT_MAX_PAUSE: Duration = Duration::from_secs(2);
/// Actions queued from the UI before the driver picks them up. The UI sends
/// a few per frame; a full queue drops pointer moves, never key releases.
pub const ACTION_QUEUE: usize = 1024;

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub target: Target,
    /// Invitation password.
    pub password: Option<String>,
    /// Expert identity: required for offers, optional otherwise.
    pub identity: Option<Arc<Identity>>,
    /// First contact without a plant CA.
    pub accept_new: AcceptNew,
    /// Known-hosts file for first contacts; `None` uses the config dir.
    pub known_hosts: Option<PathBuf>,
    /// Self-declared expert name (a hint for the device's prompt).
    pub name: String,
}

/// A byte stream the client runs a session over: TCP, or whatever a
/// [`Dialer`] opens (the network simulator brings its own).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// What [`Dialer::dial`] returns.
pub type Dialing<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Stream>>> + Send + 'a>,
>;

/// Opens the byte stream to a device address.
pub trait Dialer: Send + Sync {
    fn dial(&self, addr: SocketAddr) -> Dialing<'_>;
}

/// TCP with Nagle off (input events are small and latency-bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> Dialing<'_> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }
}

/// A connected, verified TLS stream.
pub struct Connected {
    pub stream: tokio_rustls::client::TlsStream<Box<dyn Stream>>,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// Device name from the invitation or the certificate.
    pub device_name: String,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("addr", &self.addr)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// What the driver reports to the UI.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Trying this address.
    Connecting(String),
    /// TLS is up and the device verified.
    Connected {
        device_name: String,
        fingerprint: Fingerprint,
    },
    State(ExpertState),
    /// A new screen size; the framebuffer was reset.
    Screen(ScreenInfo),
    /// An update was fully applied (`last` part). `t_mono_us` is
    /// CLOCK_MONOTONIC when it was applied; `bytes` counts its frames on the
    /// wire (after framing, before TLS).
    UpdateApplied {
        seq: u32,
        bytes: u64,
        rects: u32,
        t_mono_us: u64,
    },
    ScreenUnavailable(String),
    /// The device compared the view with what it sent: `differing` of
    /// `compared` bands of the screen differed and are being sent again
    /// (the view repairs itself). `asked`: the technician asked for this
    /// check (refresh), rather than the periodic one.
    ViewChecked {
        compared: u16,
        differing: u16,
        asked: bool,
    },
    ControlDeclined(String),
    ControlEnded(String),
    Chat(String),
    /// The connection dropped and the device keeps the session until
    /// `until`: the client is reconnecting (attempt `attempt`, after
    /// `last_error` if an attempt failed). The view keeps the last picture;
    /// input is not sent meanwhile. A `State(Viewing)` follows on success.
    Reconnecting {
        attempt: u32,
        until: Instant,
        last_error: Option<String>,
    },
    /// A new connection is up and resuming the session (no new prompt).
    Resuming,
    /// The session is over. `None` means the expert disconnected.
    Ended(Option<ClientError>),
}

/// A changed region of the framebuffer, for partial texture uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    pub x0: u16,
    pub y0: u16,
    pub x1: u16,
    pub y1: u16,
}

impl Dirty {
    fn add(this: &mut Option<Dirty>, x: u16, y: u16, w: u16, h: u16) {
        if w == 0 || h == 0 {
            return;
        }
        let (x1, y1) = (x.saturating_add(w), y.saturating_add(h));
        *this = Some(match *this {
            None => Dirty {
                x0: x,
                y0: y,
                x1,
                y1,
            },
            Some(d) => Dirty {
                x0: d.x0.min(x),
                y0: d.y0.min(y),
                x1: d.x1.max(x1),
                y1: d.y1.max(y1),
            },
        });
    }
}

/// Live figures for the status bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub rtt: Option<Duration>,
    pub fps: f32,
    pub bytes_per_sec: f64,
    pub updates_total: u64,
    pub bytes_total: u64,
    /// View self-checks the device answered, and those that found the view
    /// wrong (and repaired it).
    pub view_checks: u64,
    pub view_repairs: u64,
}

/// The device screen as the UI shows it.
#[derive(Debug, Default)]
pub struct View {
    pub fb: Option<Framebuffer>,
    /// Changed since the UI last took it; a new screen dirties all of it.
    pub dirty: Option<Dirty>,
    pub cursor: Option<CursorShape>,
    /// Set when `cursor` changed, until the UI takes it.
    pub cursor_changed: bool,
    pub cursor_pos: Option<(u16, u16, bool)>,
    pub stats: Stats,
}

/// The view shared between the driver and the UI.
#[derive(Debug, Default, Clone)]
pub struct SharedView(Arc<Mutex<View>>);

impl SharedView {
    pub fn lock(&self) -> MutexGuard<'_, View> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// CLOCK_MONOTONIC in microseconds (what `watch --stats-json` records), so
/// other programs on the same machine can compare times with ours.
#[cfg(unix)]
pub fn monotonic_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1000
}

/// Without CLOCK_MONOTONIC: microseconds since this process first asked.
#[cfg(not(unix))]
pub fn monotonic_us() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// xxh3-64 (seed 0) of the framebuffer as B,G,R,0 rows, 16 lowercase hex
/// digits: the hash `watch --stats-json` writes.
pub fn fb_hash(fb: &Framebuffer) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Normalize X to 0 in slices so no full copy of the frame is needed.
    let mut chunk = [0u8; 16 * 1024];
    for piece in fb.pixels().chunks(chunk.len()) {
        let out = &mut chunk[..piece.len()];
        out.copy_from_slice(piece);
        for px in out.chunks_exact_mut(4) {
            px[3] = 0;
        }
        h.update(out);
    }
    format!("{:016x}", h.digest())
}

fn decline_sentence(r: DeclineReason) -> String {
    match r {
        DeclineReason::Declined => "The person at the device declined control.".into(),
        DeclineReason::TimedOut => {
            "Nobody at the device answered the control request in time — ask them to stand by and try again.".into()
        }
        DeclineReason::ViewOnly => "This device is view-only: control is turned off.".into(),
        DeclineReason::AlreadyPending => "A control request is already waiting.".into(),
        DeclineReason::TooSoon { retry_after_secs } => format!(
            "Control was declined a moment ago; you can ask again in {retry_after_secs} s."
        ),
    }
}

fn control_end_sentence(r: ControlEndReason) -> String {
    match r {
        ControlEndReason::StoppedByUser => {
            "The person at the device took control back — you can still watch.".into()
        }
        ControlEndReason::Hotkey => {
            "The person at the device took control back with the hotkey — you can still watch."
                .into()
        }
        ControlEndReason::Released => "You released control.".into(),
        ControlEndReason::DeviceFault => {
            "Input could not be injected on the device, so control ended — try requesting it again."
                .into()
        }
    }
}

/// How the device is checked for these options.
fn policy_for(opts: &ConnectOptions, host: &str, port: u16) -> Result<DevicePolicy, ClientError> {
    match &opts.target {
        Target::Invitation(inv) => Ok(DevicePolicy::Pinned(inv.fingerprint)),
        Target::Offer { .. } => {
            let path = match &opts.known_hosts {
                Some(p) => p.clone(),
                None => crate::identity::known_hosts_path()?,
            };
            let kh = KnownHosts::load(&path)?;
            let key = host_port(host, port);
            let known = kh.get(&key);
            // With a plant CA the address is still pinned: the CA signs every
            // kiosk, so without the pin one kiosk's key would pass for all.
            if let Some(roots) = opts.identity.as_ref().and_then(|i| i.plant_ca.clone()) {
                return Ok(DevicePolicy::PlantCa {
                    roots,
                    host: key,
                    known,
                    known_hosts: path,
                });
            }
            Ok(DevicePolicy::FirstContact {
                known,
                host: key,
                accept_new: opts.accept_new,
                known_hosts: path,
            })
        }
    }
}

fn tls_config(
    opts: &ConnectOptions,
    verifier: Arc<DeviceVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls {
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &opts.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| {
                ClientError::Local(format!(
                    "The identity in {} cannot be used: {e} — check that expert.crt and expert.key belong together.",
                    id.dir.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

fn server_name(host: &str) -> ServerName<'static> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.to_string())
        // Names are not checked (see `trust`); any valid SNI will do.
        .unwrap_or_else(|_| ServerName::try_from("shoulder-device").expect("valid DNS name"))
}

/// Connects to one `host:port`, verifying the device (against `pin` when
/// set: the device of a session being resumed).
async fn connect_one(
    opts: &ConnectOptions,
    host: &str,
    port: u16,
    pin: Option<Fingerprint>,
    dialer: &dyn Dialer,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    let label = host_port(host, port);
    emit(ClientEvent::Connecting(label.clone()));
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(_)) => {
                return Err(ClientError::UnknownHost {
                    host: host.to_string(),
                });
            }
            Err(_) => return Err(ClientError::ConnectTimeout { addr: label }),
        };
    let mut last = ClientError::UnknownHost {
        host: host.to_string(),
    };
    for addr in addrs {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, dialer.dial(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = ClientError::from_connect(&label, &e);
                continue;
            }
            Err(_) => {
                last = ClientError::ConnectTimeout {
                    addr: label.clone(),
                };
                continue;
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let policy = match pin {
            Some(fp) => DevicePolicy::Pinned(fp),
            None => policy_for(opts, host, port)?,
        };
        let verifier = Arc::new(DeviceVerifier::new(policy.clone(), &provider));
        let config = tls_config(opts, verifier.clone(), provider)?;
        let connector = TlsConnector::from(Arc::new(config));
        let handshake = connector.connect(server_name(host), tcp);
        let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Some(Verdict::Refused(err)) = verifier.verdict() {
                    return Err(match (pin, err) {
                        (Some(expected), ClientError::FingerprintMismatch { got, .. }) => {
                            ClientError::ChangedOnReconnect { expected, got }
                        }
                        (_, err) => err,
                    });
                }
                return Err(ClientError::from_tls(&label, &e));
            }
            Err(_) => return Err(ClientError::ConnectTimeout { addr: label }),
        };
        let (_, conn) = stream.get_ref();
        if conn.alpn_protocol() != Some(ALPN) {
            return Err(ClientError::NotShoulder {
                addr: label,
                detail: "no shoulder/1 ALPN".into(),
            });
        }
        let leaf = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        let fingerprint = match verifier.verdict() {
            Some(Verdict::Accepted(fp)) => fp,
            Some(Verdict::AcceptedNew(fp)) => {
                if let Some((host, known_hosts)) = policy.remembers() {
                    KnownHosts::load(known_hosts)?.add(host, fp)?;
                }
                fp
            }
            _ => fingerprint_of(&leaf),
        };
        let device_name = match &opts.target {
            Target::Invitation(inv) => inv.device_name.to_string(),
            Target::Offer { .. } => common_name(&leaf).unwrap_or_else(|| host.to_string()),
        };
        return Ok(Connected {
            stream,
            addr,
            fingerprint,
            device_name,
        });
    }
    Err(last)
}

/// Connects to the target (each address of an invitation in turn).
pub async fn connect(
    opts: &ConnectOptions,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    connect_to(opts, None, &TcpDialer, emit).await
}

/// [`connect`], optionally pinned to the device of an earlier connection.
async fn connect_to(
    opts: &ConnectOptions,
    pin: Option<Fingerprint>,
    dialer: &dyn Dialer,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    match &opts.target {
        Target::Offer { host, port } => {
            if opts.identity.is_none() {
                return Err(ClientError::Local(
                    "Offers need your expert identity — pick one (--identity DIR) or create it with `shoulder pki issue-expert`.".into(),
                ));
            }
            connect_one(opts, host, *port, pin, dialer, emit).await
        }
        Target::Invitation(inv) => {
            let mut last = ClientError::Local("The invitation lists no device address.".into());
            for a in &inv.addresses {
                match connect_one(opts, a, inv.port, pin, dialer, emit).await {
                    Ok(c) => return Ok(c),
                    Err(e) if e.is_transient() || matches!(e, ClientError::UnknownHost { .. }) => {
                        last = e
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(last)
        }
    }
}

/// The session's authentication for these options.
pub fn auth_for(opts: &ConnectOptions) -> Result<Auth, ClientError> {
    match &opts.target {
        Target::Offer { .. } => Ok(Auth::Offer),
        Target::Invitation(inv) => {
            let pw = opts.password.as_deref().unwrap_or("");
            if pw.is_empty() {
                return Err(ClientError::Local(
                    "This invitation needs its password — type the one the person at the device gave you.".into(),
                ));
            }
            if pw.len() > MAX_PASSWORD_LEN {
                return Err(ClientError::Local(format!(
                    "That password is too long (over {MAX_PASSWORD_LEN} bytes) — check it."
                )));
            }
            Ok(Auth::Invitation {
                id: inv.id,
                password: text(pw),
            })
        }
    }
}

/// Connects and runs a whole session. Returns the same value as the final
/// [`ClientEvent::Ended`].
///
/// When the connection dies (no `Bye` either way) after the device offered
/// a resume, the client reconnects by itself, to the same device only, and
/// resumes the session without a new prompt; see [`ClientEvent::Reconnecting`].
pub async fn run(
    opts: ConnectOptions,
    view: SharedView,
    actions: mpsc::Receiver<UserAction>,
    emit: Box<dyn FnMut(ClientEvent) + Send>,
) -> Option<ClientError> {
    run_via(opts, &TcpDialer, view, actions, emit).await
}

/// [`run`] over the streams `dialer` opens instead of TCP.
pub async fn run_via(
    opts: ConnectOptions,
    dialer: &dyn Dialer,
    view: SharedView,
    mut actions: mpsc::Receiver<UserAction>,
    mut emit: Box<dyn FnMut(ClientEvent) + Send>,
) -> Option<ClientError> {
    let end = run_session(&opts, dialer, &view, &mut actions, &mut *emit).await;
    emit(ClientEvent::Ended(end.clone()));
    end
}

async fn run_session(
    opts: &ConnectOptions,
    dialer: &dyn Dialer,
    view: &SharedView,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Option<ClientError> {
    let auth = match auth_for(opts) {
        Ok(a) => a,
        Err(e) => return Some(e),
    };
    let mut conn = match connect_to(opts, None, dialer, emit).await {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    emit(ClientEvent::Connected {
        device_name: conn.device_name.clone(),
        fingerprint: conn.fingerprint,
    });
    let device = conn.fingerprint;
    let mut session = ExpertSession::new(Instant::now(), ExpertConfig::new(&opts.name, auth));
    // The resume under way: its token, the end of the device's grace period
    // and its length. The device answers a resume with a new offer; until
    // then a connection that dies again retries the same token.
    let mut resuming: Option<(ResumeToken, Instant, Duration)> = None;
    loop {
        let label = conn.addr.to_string();
        let out = drive(conn.stream, &label, session, view.clone(), actions, emit).await;
        let (token, until, grace) = match (out.resume, resuming.take()) {
            (Some(chance), _) => (chance.token, Instant::now() + chance.grace, chance.grace),
            (None, Some(r)) if out.lost && Instant::now() < r.1 => r,
            _ => return out.end,
        };
        conn = match reconnect(opts, dialer, device, until, grace, out.end, actions, emit).await {
            Ok(c) => c,
            Err(end) => return end,
        };
        emit(ClientEvent::Resuming);
        resuming = Some((token.clone(), until, grace));
        let auth = Auth::Resume { token };
        session = ExpertSession::new(Instant::now(), ExpertConfig::new(&opts.name, auth));
    }
}

/// Reconnects to `device` before `until`, the end of the device's `grace`
/// period, after a drop (`lost` says how the connection died). `Err(None)`
/// means the expert chose to disconnect meanwhile.
#[allow(clippy::too_many_arguments)]
async fn reconnect(
    opts: &ConnectOptions,
    dialer: &dyn Dialer,
    device: Fingerprint,
    until: Instant,
    grace: Duration,
    lost: Option<ClientError>,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, Option<ClientError>> {
    let mut last = lost.map(|e| e.sentence());
    let mut pause = RECONNECT_FIRST_PAUSE;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        emit(ClientEvent::Reconnecting {
            attempt,
            until,
            last_error: last.clone(),
        });
        let deadline = tokio::time::Instant::from_std(until);
        // Progress events of the attempts would send the UI back to its
        // start screen: the Reconnecting events stand for them.
        let mut quiet = |_: ClientEvent| {};
        let attempt_fut =
            tokio::time::timeout_at(deadline, connect_to(opts, Some(device), dialer, &mut quiet));
        tokio::pin!(attempt_fut);
        let result = loop {
            tokio::select! {
                r = &mut attempt_fut => break r,
                a = actions.recv() => {
                    if matches!(a, None | Some(UserAction::Disconnect)) {
                        return Err(None);
                    }
                    // Nothing can reach the device now; input is dropped
                    // (the device released everything when the link died).
                }
            }
        };
        match result {
            Ok(Ok(c)) => return Ok(c),
            // A question of trust does not change by trying again.
            Ok(Err(
                e @ (ClientError::ChangedOnReconnect { .. }
                | ClientError::DeviceNotTrusted { .. }
                | ClientError::ExpertNotTrusted
                | ClientError::ExpertCertExpired
                | ClientError::Local(_)),
            )) => return Err(Some(e)),
            // Anything else may be the flaky link itself (a handshake record
            // mangled on the way fails TLS): try again while there is time.
            Ok(Err(e)) => last = Some(e.sentence()),
            Err(_) => {}
        }
        let now = Instant::now();
        if now >= until {
            return Err(Some(ClientError::ReconnectFailed {
                secs: grace.as_secs(),
                detail: last
                    .map(|s| s.trim_end_matches('.').to_string())
                    .unwrap_or_else(|| "no answer".into()),
            }));
        }
        // The last attempt comes right at the end of the grace period.
        let sleep = tokio::time::sleep(pause.min(until - now));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                a = actions.recv() => {
                    if matches!(a, None | Some(UserAction::Disconnect)) {
                        return Err(None);
                    }
                }
            }
        }
        pause = (pause * 2).min(RECONNECT_MAX_PAUSE);
    }
}

/// How [`drive`] ended.
#[derive(Debug)]
pub struct DriveEnd {
    /// `None`: the expert disconnected.
    pub end: Option<ClientError>,
    /// Set when the connection died while the device was keeping the
    /// session for a resume: reconnect within `grace` and authenticate
    /// with `token`.
    pub resume: Option<ResumeChance>,
    /// The connection died (no `Bye` either way), resumable or not.
    pub lost: bool,
}

/// The device's offer to resume a dropped session.
#[derive(Debug, Clone)]
pub struct ResumeChance {
    pub token: ResumeToken,
    pub grace: Duration,
}

/// Per-connection bookkeeping of the driver.
struct Driver<'a> {
    view: SharedView,
    emit: &'a mut (dyn FnMut(ClientEvent) + Send),
    wbuf: Vec<u8>,
    /// Wire bytes of the update being received (all its parts so far).
    update_bytes: u64,
    update_rects: u32,
    end: Option<Option<ClientError>>,
    transport_error: Option<ClientError>,
    probe: Option<(u64, Instant)>,
    probe_nonce: u64,
    window_start: Instant,
    window_updates: u32,
    window_bytes: u64,
    viewing: bool,
    /// The device's latest resume offer.
    resume: Option<ResumeChance>,
    /// The update the framebuffer shows, once fully applied: (generation,
    /// seq). None after a new screen until its first update is complete.
    applied: Option<(u32, u32)>,
    /// An update's parts are arriving: its framebuffer is half-made.
    mid_update: bool,
    /// A view check is wanted (periodic or asked for) once allowed.
    check_wanted: bool,
    /// The technician asked for the pending check (or the one in flight).
    check_asked: bool,
    /// When the last view report was sent.
    last_check: Option<Instant>,
}

impl Driver<'_> {
    /// Drains the machine's outputs. `frame_len` is the wire size of the frame
    /// that produced them (0 for non-network inputs).
    fn outputs(&mut self, session: &mut ExpertSession, frame_len: u64) {
        while let Some(ev) = session.poll_output() {
            match ev {
                ExpertEvent::Send(m) => {
                    if let Err(e) = frame::encode_into(&m, &mut self.wbuf) {
                        tracing::warn!("cannot send {}: {e}", m.name());
                    }
                }
                ExpertEvent::StateChanged(s) => {
                    self.viewing = matches!(s, ExpertState::Viewing { .. });
                    (self.emit)(ClientEvent::State(s));
                }
                ExpertEvent::Screen(info) => {
                    self.applied = None;
                    self.mid_update = false;
                    let mut v = self.view.lock();
                    match Framebuffer::new(&info) {
                        Ok(fb) => {
                            v.dirty = Some(Dirty {
                                x0: 0,
                                y0: 0,
                                x1: fb.width(),
                                y1: fb.height(),
                            });
                            v.fb = Some(fb);
                        }
                        Err(e) => tracing::warn!("bad screen: {e}"),
                    }
                    drop(v);
                    (self.emit)(ClientEvent::Screen(info));
                }
                ExpertEvent::ScreenUnavailable(s) => (self.emit)(ClientEvent::ScreenUnavailable(s)),
                ExpertEvent::Update(part) => {
                    self.update_bytes += frame_len;
                    let failed = {
                        let mut v = self.view.lock();
                        let View { fb, dirty, .. } = &mut *v;
                        let mut failed = None;
                        if let Some(fb) = fb.as_mut() {
                            for r in &part.rects {
                                match fb.apply_rect(r) {
                                    Ok(()) => {
                                        self.update_rects += 1;
                                        Dirty::add(dirty, r.x, r.y, r.w, r.h);
                                    }
                                    Err(e) => {
                                        failed = Some(e);
                                        break;
                                    }
                                }
                            }
                        }
                        failed
                    };
                    self.mid_update = !part.last;
                    if failed.is_none() && part.last {
                        self.applied = Some((part.generation, part.seq));
                    }
                    if let Some(e) = failed {
                        // Ask for the whole screen again rather than show a
                        // wrong picture.
                        self.applied = None;
                        tracing::warn!("bad screen update: {e}");
                        session.handle(
                            Instant::now(),
                            ExpertInput::Action(UserAction::RefreshScreen),
                        );
                    }
                    if part.last {
                        let t_mono_us = monotonic_us();
                        let (bytes, rects) = (self.update_bytes, self.update_rects);
                        self.update_bytes = 0;
                        self.update_rects = 0;
                        self.window_updates += 1;
                        self.view.lock().stats.updates_total += 1;
                        (self.emit)(ClientEvent::UpdateApplied {
                            seq: part.seq,
                            bytes,
                            rects,
                            t_mono_us,
                        });
                    }
                }
                ExpertEvent::CursorShape(c) => {
                    let mut v = self.view.lock();
                    v.cursor = Some(*c);
                    v.cursor_changed = true;
                }
                ExpertEvent::CursorPosition { x, y, visible } => {
                    self.view.lock().cursor_pos = Some((x, y, visible))
                }
                ExpertEvent::ControlDeclined(r) => {
                    (self.emit)(ClientEvent::ControlDeclined(decline_sentence(r)))
                }
                ExpertEvent::ControlEnded(r) => {
                    (self.emit)(ClientEvent::ControlEnded(control_end_sentence(r)))
                }
                ExpertEvent::Chat(t) => (self.emit)(ClientEvent::Chat(t)),
                ExpertEvent::Rtt(d) => self.view.lock().stats.rtt = Some(d),
                ExpertEvent::ViewChecked {
                    seq,
                    compared,
                    differing,
                } => {
                    {
                        let mut v = self.view.lock();
                        v.stats.view_checks += 1;
                        if differing > 0 {
                            v.stats.view_repairs += 1;
                        }
                    }
                    if differing > 0 {
                        tracing::info!(
                            seq,
                            compared,
                            differing,
                            "the view differed from the device screen; the device sends those parts again"
                        );
                    } else {
                        tracing::debug!(seq, compared, "view checked: it matches the device");
                    }
                    let asked = std::mem::take(&mut self.check_asked);
                    (self.emit)(ClientEvent::ViewChecked {
                        compared,
                        differing,
                        asked,
                    });
                }
                ExpertEvent::ResumeOffer { token, grace } => {
                    self.resume = (!grace.is_zero()).then_some(ResumeChance { token, grace });
                }
                ExpertEvent::Closed {
                    reason, sentence, ..
                } => {
                    let end = if let Some(t) = self.transport_error.take() {
                        Some(t)
                    } else if sentence == "You disconnected." {
                        None
                    } else if reason == ByeReason::Normal
                        && sentence == "The connection to the device was lost."
                    {
                        Some(ClientError::Lost {
                            detail: "the device closed the connection".into(),
                        })
                    } else {
                        Some(ClientError::Session { reason, sentence })
                    };
                    self.end = Some(end);
                }
            }
        }
    }

    /// Sends a view report when one is wanted and may go: viewing, between
    /// updates, at most one per [`MIN_VIEW_CHECK_GAP`]. A device too old
    /// for checks gets a full refresh when the technician asks.
    fn check_view(&mut self, session: &mut ExpertSession, now: Instant) {
        if !self.check_wanted || !self.viewing || self.mid_update {
            return;
        }
        if !session.view_check_supported() {
            self.check_wanted = false;
            if std::mem::take(&mut self.check_asked) {
                session.handle(now, ExpertInput::Action(UserAction::RefreshScreen));
            }
            return;
        }
        if self
            .last_check
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_VIEW_CHECK_GAP)
        {
            return;
        }
        let Some((generation, seq)) = self.applied else {
            return;
        };
        let report = match self.view.lock().fb.as_ref() {
            Some(fb) => fb.view_report(generation, seq),
            None => return,
        };
        self.check_wanted = false;
        self.last_check = Some(now);
        session.handle(
            now,
            ExpertInput::Action(UserAction::ReportView(Box::new(report))),
        );
    }

    fn tick_stats(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.window_start);
        if dt >= PROBE_INTERVAL {
            let secs = dt.as_secs_f64();
            let mut v = self.view.lock();
            v.stats.fps = (f64::from(self.window_updates) / secs) as f32;
            v.stats.bytes_per_sec = self.window_bytes as f64 / secs;
            self.window_start = now;
            self.window_updates = 0;
            self.window_bytes = 0;
        }
    }
}

/// Runs `session` over `io` until it closes.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    label: &str,
    mut session: ExpertSession,
    view: SharedView,
    actions: &mut mpsc::Receiver<UserAction>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> DriveEnd {
    let mut d = Driver {
        view,
        emit,
        wbuf: Vec::new(),
        update_bytes: 0,
        update_rects: 0,
        end: None,
        transport_error: None,
        probe: None,
        probe_nonce: 0,
        window_start: Instant::now(),
        window_updates: 0,
        window_bytes: 0,
        viewing: false,
        resume: None,
        applied: None,
        mid_update: false,
        check_wanted: false,
        check_asked: false,
        last_check: None,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut rbuf = vec![0u8; READ_CHUNK];
    let mut probe_timer = tokio::time::interval(PROBE_INTERVAL);
    probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut actions_open = true;
    loop {
        d.outputs(&mut session, 0);
        d.check_view(&mut session, Instant::now());
        d.outputs(&mut session, 0);
        if !d.wbuf.is_empty() {
            let out = std::mem::take(&mut d.wbuf);
            let res = async {
                io.write_all(&out).await?;
                io.flush().await
            }
            .await;
            if let Err(e) = res {
                if d.end.is_none() {
                    d.transport_error = Some(ClientError::from_tls(label, &e));
                    session.handle(
                        Instant::now(),
                        ExpertInput::PeerClosed {
                            error: Some(e.to_string()),
                        },
                    );
                    d.outputs(&mut session, 0);
                }
                d.wbuf.clear();
            }
        }
        if let Some(end) = d.end.take() {
            // The Bye (if any) is written; close TLS politely, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
            let resume = if session.connection_lost() && actions_open {
                d.resume.take()
            } else {
                None
            };
            return DriveEnd {
                end,
                resume,
                lost: session.connection_lost(),
            };
        }
        let deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = io.read(&mut rbuf) => {
                let now = Instant::now();
                match r {
                    Ok(0) => session.handle(now, ExpertInput::PeerClosed { error: None }),
                    Ok(n) => {
                        d.window_bytes += n as u64;
                        d.view.lock().stats.bytes_total += n as u64;
                        pending.extend_from_slice(&rbuf[..n]);
                        feed_frames(&mut d, &mut session, &mut pending, now);
                    }
                    Err(e) => {
                        let err = ClientError::from_tls(label, &e);
                        d.transport_error = Some(err);
                        session.handle(now, ExpertInput::PeerClosed { error: Some(e.to_string()) });
                    }
                }
            }
            a = actions.recv(), if actions_open => {
                match a {
                    Some(UserAction::CheckView) => {
                        d.check_wanted = true;
                        d.check_asked = true;
                    }
                    Some(a) => session.handle(Instant::now(), ExpertInput::Action(a)),
                    None => {
                        actions_open = false;
                        session.handle(Instant::now(), ExpertInput::Action(UserAction::Disconnect));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                session.handle_timeout(Instant::now());
            }
            _ = probe_timer.tick() => {
                let now = Instant::now();
                d.tick_stats(now);
                if d.viewing
                    && d.last_check.is_none_or(|t| now.saturating_duration_since(t) >= VIEW_CHECK_INTERVAL)
                {
                    d.check_wanted = true;
                }
                if d.viewing && d.probe.is_none_or(|(_, at)| now.duration_since(at) > 4 * PROBE_INTERVAL) {
                    d.probe_nonce += 1;
                    let nonce = PROBE_BIT | d.probe_nonce;
                    d.probe = Some((nonce, now));
                    let _ = frame::encode_into(&Message::Ping { nonce }, &mut d.wbuf);
                }
            }
        }
    }
}

/// Splits `pending` into whole frames and feeds them to the session one by
/// one, so every update is charged its exact wire size.
fn feed_frames(
    d: &mut Driver<'_>,
    session: &mut ExpertSession,
    pending: &mut Vec<u8>,
    now: Instant,
) {
    let mut start = 0;
    loop {
        let frame_bytes = match frame::split_frame(&pending[start..], MAX_FRAME_LEN) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                // Let the machine report the oversize frame; never buffer it.
                session.handle(now, ExpertInput::Received(pending[start..].to_vec()));
                d.outputs(session, 0);
                pending.clear();
                return;
            }
        };
        let total = frame_bytes.len();
        // Our latency probes come back as Pong with the probe bit.
        if let Some(nonce) = frame::pong_nonce(&frame_bytes[HEADER_LEN..])
            && nonce & PROBE_BIT != 0
            && let Some((n, at)) = d.probe
            && n == nonce
        {
            d.probe = None;
            d.view.lock().stats.rtt = Some(now.saturating_duration_since(at));
        }
        session.handle(now, ExpertInput::Received(frame_bytes.to_vec()));
        d.outputs(session, total as u64);
        start += total;
        if session.is_closed() {
            break;
        }
    }
    pending.drain(..start);
}

/// Writes the framebuffer as an 8-bit RGB PNG. The file appears under
/// `path` only when complete (written next to it, then renamed).
pub fn save_png(fb: &Framebuffer, path: &std::path::Path) -> Result<(), ClientError> {
    let err = |e: &dyn std::fmt::Display| {
        ClientError::Local(format!("Cannot write {}: {e}.", path.display()))
    };
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let write = || -> Result<(), ClientError> {
        let file = std::fs::File::create(&part).map_err(|e| err(&e))?;
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(file),
            u32::from(fb.width()),
            u32::from(fb.height()),
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| err(&e))?;
        let rgb: Vec<u8> = fb
            .pixels()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        w.write_image_data(&rgb).map_err(|e| err(&e))?;
        w.finish().map_err(|e| err(&e))?;
        std::fs::rename(&part, path).map_err(|e| err(&e))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    r
}

/// The UI's handle on a running session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub actions: mpsc::Sender<UserAction>,
    pub view: SharedView,
    /// Where a blocked send waits for room (the UI thread has no runtime).
    pub runtime: tokio::runtime::Handle,
}

impl SessionHandle {
    /// Queues an action without blocking the UI. When the queue is full,
    /// plain pointer moves are dropped (the next one supersedes them);
    /// everything else (keys, buttons, releases) waits for room on the
    /// runtime, in order behind what is queued.
    pub fn send(&self, a: UserAction) {
        match self.actions.try_send(a) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(a)) => {
                let plain_move = matches!(
                    a,
                    UserAction::Pointer(p) if p.buttons.0 == 0 && p.wheel == 0 && p.hwheel == 0
                );
                if !plain_move {
                    let tx = self.actions.clone();
                    self.runtime.spawn(async move {
                        let _ = tx.send(a).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Whether the state allows sending input.
pub fn controlling(state: ExpertState) -> bool {
    matches!(
        state,
        ExpertState::Viewing {
            control: ControlState::Granted { .. }
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::{Encoding, Payload, Rect, UpdatePart, WireFormat};

    #[test]
    fn fb_hash_zeroes_the_x_byte() {
        let info = ScreenInfo {
            width: 3,
            height: 2,
            format: WireFormat::Xrgb8888,
            generation: 1,
        };
        let mut fb = Framebuffer::new(&info).unwrap();
        let mut rects = heapless::Vec::new();
        let raw: Vec<u8> = (0..24u8).collect();
        rects
            .push(Rect {
                x: 0,
                y: 0,
                w: 3,
                h: 2,
                encoding: Encoding::Raw(Payload(raw)),
            })
            .unwrap();
        fb.apply(&UpdatePart {
            seq: 1,
            generation: 1,
            last: true,
            rects,
        })
        .unwrap();
        let expected = xxhash_rust::xxh3::xxh3_64(&fb.normalized());
        assert_eq!(fb_hash(&fb), format!("{expected:016x}"));
        assert_eq!(fb_hash(&fb).len(), 16);
    }

    #[test]
    fn dirty_rects_merge() {
        let mut d = None;
        Dirty::add(&mut d, 10, 10, 5, 5);
        Dirty::add(&mut d, 0, 20, 2, 2);
        Dirty::add(&mut d, 0, 0, 0, 9);
        assert_eq!(
            d,
            Some(Dirty {
                x0: 0,
                y0: 10,
                x1: 15,
                y1: 22
            })
        );
    }
}
