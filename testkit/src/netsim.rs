//! A deterministic network simulator for whole sessions.
//!
//! Two smoltcp interfaces (device 10.0.0.1, expert 10.0.0.2) are joined by an
//! in-memory link. Each side's port is wrapped in smoltcp's `FaultInjector`
//! (loss, corruption); the link itself adds delay, jitter (which reorders),
//! duplication, a bandwidth limit and outages. Over a smoltcp TCP connection
//! run real TLS 1.3 (rustls, sans-I/O), the real session machines of both
//! ends, and the real tile encoder on a changing kiosk screen. Everything runs
//! on virtual time and is deterministic for a seed.
//!
//! The agent's and client's tokio glue is not in this loop (it would not run
//! on virtual time); [`netsim_live`](crate::netsim_live) runs those programs
//! themselves over the same link, in real time.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shoulder_capture::scenarios::{Scenario as Screen, ScenarioFrames};
use shoulder_capture::source::{Frame, PixelFormat, ScreenGeometry};
use shoulder_capture::{Encoder, LinkEstimate, Pacer, PacingConfig};
use shoulder_proto::consent::ViewConsent;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::encode;
use shoulder_proto::session::*;
use shoulder_proto::{Auth, ByeReason, ResumeToken};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, FaultInjector, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

/// What the link between device and expert does to packets.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Percent of packets dropped, each direction.
    pub loss_pct: u8,
    /// Percent of packets with a byte flipped, each direction.
    pub corrupt_pct: u8,
    /// One-way delay (RTT is twice this).
    pub delay: Duration,
    /// Extra random delay up to this much; packets overtake each other.
    pub jitter: Duration,
    /// Percent of packets delivered twice.
    pub duplicate_pct: u8,
    /// Bits per second each direction (`None`: unlimited).
    pub bandwidth_bps: Option<u64>,
    /// Whether IP/TCP checksums are checked. Off, corrupted packets reach TCP
    /// and TLS, which must notice them itself.
    pub verify_checksums: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            loss_pct: 0,
            corrupt_pct: 0,
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            duplicate_pct: 0,
            bandwidth_bps: None,
            verify_checksums: true,
        }
    }
}

/// A scenario to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub link: LinkConfig,
    /// The link is down (every packet lost) from `.0` for `.1`.
    pub outage: Option<(Duration, Duration)>,
    /// Virtual time the session runs.
    pub duration: Duration,
    /// The device screen changes this often.
    pub screen_period: Duration,
    /// What the device screen shows (a benchmark sequence of the encoder).
    pub screen: Screen,
    /// Frames to show instead of `screen` (screens rendered by real
    /// programs): each `screen_period` the next, the last one stays.
    pub frames: Option<Arc<Frames>>,
    /// The device sends photo-like areas lossy for an expert that takes it,
    /// at the quality its link estimate picks, as the agent does.
    pub lossy: bool,
    /// Whether the expert resumes the session over a new connection after
    /// the old one died (the device keeps it for the resume grace period).
    pub resume: bool,
    pub seed: u64,
}

/// XRGB8888 frames of one size.
#[derive(Debug, Clone)]
pub struct Frames {
    pub width: u32,
    pub height: u32,
    pub frames: Vec<Vec<u8>>,
}

/// When an expert's view is good enough to work with although not exact:
/// the mean error per colour channel at most this (of 255)…
pub const USABLE_MEAN_ERROR: f64 = 3.0;
/// …and at most one pixel in 100 off by more than [`USABLE_PIXEL_ERROR`] in
/// a channel (JPEG rings at sharp edges).
pub const USABLE_OUTLIERS_PER_MILLE: usize = 10;
pub const USABLE_PIXEL_ERROR: u8 = 48;

/// Whether `view` is a usable picture of `screen` (both XRGB8888, X byte
/// ignored).
pub fn usable(view: &[u8], screen: &[u8]) -> bool {
    if view.len() != screen.len() {
        return false;
    }
    let (mut sum, mut outliers, mut n) = (0u64, 0usize, 0usize);
    for (a, b) in view.chunks_exact(4).zip(screen.chunks_exact(4)) {
        let mut worst = 0;
        for c in 0..3 {
            let d = a[c].abs_diff(b[c]);
            sum += u64::from(d);
            worst = worst.max(d);
        }
        outliers += usize::from(worst > USABLE_PIXEL_ERROR);
        n += 1;
    }
    n > 0
        && sum as f64 / (3 * n) as f64 <= USABLE_MEAN_ERROR
        && outliers * 1000 <= n * USABLE_OUTLIERS_PER_MILLE
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub name: &'static str,
    /// Both ends still in session at the end.
    pub survived: bool,
    /// Why a side ended, if it did.
    pub ended: Option<String>,
    /// From start until the expert's view first equalled the device screen.
    pub first_sync: Option<Duration>,
    /// After the outage: until the view equalled the device screen again.
    pub resync_after_outage: Option<Duration>,
    /// Longest time the view lagged the device screen after the first sync.
    pub longest_lag: Duration,
    /// TLS bytes device → expert and expert → device.
    pub bytes_to_expert: u64,
    pub bytes_to_device: u64,
    pub updates_applied: u64,
    /// Completed updates that left the view showing something the device
    /// never showed (must be zero).
    pub corrupt_views: u64,
    /// Screen updates that failed to apply (must be zero: TLS protects them).
    pub apply_errors: u64,
    /// Connections that died and were resumed without a new prompt.
    pub resumes: u64,
    /// Consent prompts shown on the device (1 when resumes need none).
    pub prompts: u64,
    /// After the screen last changed: until the view was a usable picture
    /// of it ([`usable`]), and until it was exact.
    pub usable_after_last_change: Option<Duration>,
    pub exact_after_last_change: Option<Duration>,
    /// Lossy rectangles sent, and the device's link estimate at the end.
    pub jpeg_rects: u64,
    pub estimated_bps: Option<u64>,
    /// `bytes_to_expert` when the screen last changed.
    pub bytes_to_expert_at_last_change: u64,
}

/// A tiny deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pct(&mut self, pct: u8) -> bool {
        self.next() % 100 < u64::from(pct)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One direction of the link: packets in flight with their arrival times.
#[derive(Debug, Default)]
struct Lane {
    /// Arrival time (µs) → packets; BTreeMap keeps arrival order.
    in_flight: BTreeMap<(i64, u64), Vec<u8>>,
    /// When the sender's serializer is free again (bandwidth limit).
    busy_until: i64,
    arrived: VecDeque<Vec<u8>>,
    counter: u64,
}

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) cfg: LinkConfig,
    rng: Rng,
    lanes: [Lane; 2],
    pub(crate) down: bool,
    /// Virtual time, read by the ports (FaultInjector hides them).
    pub(crate) now_us: i64,
}

impl Link {
    pub(crate) fn new(cfg: LinkConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: Rng(seed | 1),
            lanes: Default::default(),
            down: false,
            now_us: 0,
        }
    }

    fn send(&mut self, now_us: i64, dir: usize, pkt: Vec<u8>) {
        if self.down {
            return;
        }
        let lane = &mut self.lanes[dir];
        let mut start = now_us;
        if let Some(bps) = self.cfg.bandwidth_bps {
            start = start.max(lane.busy_until);
            let tx_us = (pkt.len() as u64 * 8 * 1_000_000 / bps.max(1)) as i64;
            lane.busy_until = start + tx_us;
            start += tx_us;
        }
        let jitter = self.rng.below(self.cfg.jitter.as_micros() as u64) as i64;
        let at = start + self.cfg.delay.as_micros() as i64 + jitter;
        let copies = if self.rng.pct(self.cfg.duplicate_pct) {
            2
        } else {
            1
        };
        for i in 0..copies {
            lane.counter += 1;
            lane.in_flight
                .insert((at + i * 100, lane.counter), pkt.clone());
        }
    }

    pub(crate) fn deliver(&mut self, now_us: i64) {
        for lane in &mut self.lanes {
            while let Some(entry) = lane.in_flight.first_entry() {
                if entry.key().0 > now_us {
                    break;
                }
                let pkt = entry.remove();
                if !self.down {
                    lane.arrived.push_back(pkt);
                }
            }
        }
    }
}

/// One end's network port: sends into lane `dir`, receives from the other.
pub(crate) struct Port {
    pub(crate) link: Rc<RefCell<Link>>,
    pub(crate) dir: usize,
    pub(crate) checksums: bool,
}

impl Device for Port {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1500;
        if !self.checksums {
            caps.checksum = ChecksumCapabilities::ignored();
        }
        caps
    }

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let pkt = self.link.borrow_mut().lanes[1 - self.dir]
            .arrived
            .pop_front()?;
        Some((RxToken(pkt), TxToken(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(self))
    }
}

pub(crate) struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

pub(crate) struct TxToken<'a>(&'a mut Port);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        let mut link = self.0.link.borrow_mut();
        let now = link.now_us;
        link.send(now, self.0.dir, buf);
        r
    }
}

/// One end: interface, socket, TLS.
struct End {
    iface: Interface,
    port: FaultInjector<Port>,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
    tls: rustls::Connection,
    /// Plaintext waiting for room in TLS.
    out: Vec<u8>,
    tls_bytes_out: u64,
    failed: Option<String>,
    stale: Vec<SocketHandle>,
}

impl End {
    fn new(
        link: &Rc<RefCell<Link>>,
        dir: usize,
        ip: Ipv4Address,
        tls: rustls::Connection,
        seed: u32,
    ) -> Self {
        let cfg = link.borrow().cfg.clone();
        let port = Port {
            link: link.clone(),
            dir,
            checksums: cfg.verify_checksums,
        };
        let mut port = FaultInjector::new(port, seed);
        port.set_drop_chance(cfg.loss_pct);
        port.set_corrupt_chance(cfg.corrupt_pct);
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut port,
            Instant::from_millis(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
        });
        let mut sockets = SocketSet::new(Vec::new());
        // 256 KiB windows: enough for a long fat link, bounded.
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        let tcp = sockets.add(sock);
        Self {
            iface,
            port,
            sockets,
            tcp,
            tls,
            out: Vec::new(),
            tls_bytes_out: 0,
            failed: None,
            stale: Vec::new(),
        }
    }

    /// Drops the connection (abort) and starts a new one on a fresh socket:
    /// listening on `listen`, or connecting to `connect` from `local_port`.
    fn reset(
        &mut self,
        tls: rustls::Connection,
        listen: Option<u16>,
        connect: Option<(Ipv4Address, u16, u16)>,
    ) {
        self.sockets.get_mut::<tcp::Socket>(self.tcp).abort();
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        );
        // The aborted socket still sends its RST on the next poll; keep it
        // until then, drop the one before.
        let old = std::mem::replace(&mut self.tcp, self.sockets.add(sock));
        self.stale.push(old);
        while self.stale.len() > 1 {
            let h = self.stale.remove(0);
            self.sockets.remove(h);
        }
        self.tls = tls;
        self.out.clear();
        self.failed = None;
        let sock = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        if let Some(port) = listen {
            let _ = sock.listen(port);
        }
        if let Some((ip, port, local)) = connect {
            let _ = sock.connect(self.iface.context(), (IpAddress::Ipv4(ip), port), local);
        }
    }

    fn poll(&mut self, now_us: i64) {
        self.iface.poll(
            Instant::from_micros(now_us),
            &mut self.port,
            &mut self.sockets,
        );
    }

    /// Moves bytes between TCP, TLS and the application. Returns received
    /// plaintext.
    fn pump(&mut self) -> Vec<u8> {
        let mut plain = Vec::new();
        if self.failed.is_some() {
            return plain;
        }
        // Network → TLS → application. rustls holds at most 16 KiB of
        // decrypted plaintext, so drain it between reads.
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..10_000 {
            loop {
                match self.tls.reader().read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => plain.extend_from_slice(&buf[..n]),
                }
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(self.tcp);
            if !sock.can_recv() {
                break;
            }
            let res = sock.recv(|data| {
                let mut rd: &[u8] = data;
                let n = self.tls.read_tls(&mut rd).unwrap_or(0);
                (n, n)
            });
            if let Err(e) = self.tls.process_new_packets() {
                trace(0, &format!("TLS error: {e}"));
                self.failed = Some(format!("TLS error: {e}"));
                // Tell the peer, as a real stack would.
                let _ = self.flush_tls();
                let sock = self.sockets.get_mut::<tcp::Socket>(self.tcp);
                sock.close();
                return plain;
            }
            if !matches!(res, Ok(n) if n > 0) {
                // rustls took nothing: drain what it decrypted, then stop.
                loop {
                    match self.tls.reader().read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => plain.extend_from_slice(&buf[..n]),
                    }
                }
                break;
            }
        }
        // Application → TLS, as much as TLS buffers.
        if !self.out.is_empty() && !self.tls.is_handshaking() {
            let n = self.tls.writer().write(&self.out).unwrap_or(0);
            self.out.drain(..n);
        }
        let _ = self.flush_tls();
        let sock = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        if !sock.is_open() && self.failed.is_none() && !matches!(sock.state(), tcp::State::Listen) {
            self.failed = Some(format!("TCP connection {}", sock.state()));
        }
        plain
    }

    fn flush_tls(&mut self) -> std::io::Result<()> {
        let sock = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        while self.tls.wants_write() && sock.can_send() {
            let mut w = SockWriter(sock, 0);
            self.tls.write_tls(&mut w)?;
            self.tls_bytes_out += w.1 as u64;
            if w.1 == 0 {
                break;
            }
        }
        Ok(())
    }
}

struct SockWriter<'a, 'b>(&'a mut tcp::Socket<'b>, usize);

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.send_slice(buf).unwrap_or(0);
        self.1 += n;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// TLS configs, made once per process so every run uses the same
/// certificates. Ed25519 signatures have a fixed length, which keeps byte
/// counts, and so whole runs, deterministic.
fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: std::sync::OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        std::sync::OnceLock::new();
    CONFIGS.get_or_init(make_tls_configs).clone()
}

fn make_tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ca key");
    let ca = ca_params.self_signed(&ca_key).expect("ca cert");
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("leaf key");
    let leaf = rcgen::CertificateParams::new(vec!["device.test".into()])
        .expect("leaf params")
        .signed_by(&leaf_key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .expect("leaf cert");
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key"),
        )
        .expect("server config");
    server.send_tls13_tickets = 0;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca.der().to_vec()))
        .expect("root");
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // No TLS session resumption across runs: the cached ticket would make
    // the second run's handshake differ from the first.
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(server), Arc::new(client))
}

fn trace(now_us: i64, what: &str) {
    if std::env::var_os("NETSIM_TRACE").is_some() {
        eprintln!("{:>10.3} s  {what}", now_us as f64 / 1e6);
    }
}

/// Runs one scenario to its end and reports.
pub fn run(s: &Scenario) -> Report {
    let (server_cfg, client_cfg) = tls_configs();
    let link = Rc::new(RefCell::new(Link::new(s.link.clone(), s.seed)));
    let dev_ip = Ipv4Address::new(10, 0, 0, 1);
    let exp_ip = Ipv4Address::new(10, 0, 0, 2);
    let server = rustls::ServerConnection::new(server_cfg.clone()).expect("server conn");
    let client = rustls::ClientConnection::new(
        client_cfg.clone(),
        ServerName::try_from("device.test").expect("name"),
    )
    .expect("client conn");
    let mut dev = End::new(&link, 0, dev_ip, server.into(), s.seed as u32 ^ 0x5eed);
    let mut exp = End::new(&link, 1, exp_ip, client.into(), s.seed as u32 ^ 0xfeed);
    dev.sockets
        .get_mut::<tcp::Socket>(dev.tcp)
        .listen(7575)
        .expect("listen");
    exp.sockets
        .get_mut::<tcp::Socket>(exp.tcp)
        .connect(exp.iface.context(), (IpAddress::Ipv4(dev_ip), 7575), 49152)
        .expect("connect");

    let t0 = StdInstant::now();
    let at = |us: i64| t0 + Duration::from_micros(us as u64);
    let mut device: Option<DeviceSession> = None;
    let mut fresh: Option<DeviceSession> = None;
    let mut early: Vec<u8> = Vec::new();
    let mut expert: Option<ExpertSession> = None;
    let mut offered: Option<(ResumeToken, i64)> = None;
    let mut resume_with: Option<ResumeToken> = None;
    let mut reconnect_at: Option<i64> = None;
    let mut local_port = 49152u16;
    let (width, height) = s
        .frames
        .as_ref()
        .map_or((320, 240), |f| (f.width, f.height));
    let screen = ScenarioFrames::new(s.screen, width, height);
    let mut frame_index = 0usize;
    let show = |i: usize, pixels: &mut Vec<u8>| match &s.frames {
        Some(f) => pixels.clone_from(&f.frames[i.min(f.frames.len() - 1)]),
        None => screen.render(i, pixels),
    };
    let mut pixels = screen.buffer();
    show(frame_index, &mut pixels);
    let geometry = ScreenGeometry {
        width,
        height,
        format: PixelFormat::Xrgb8888,
    };
    let mut link_estimate = LinkEstimate::new();
    let mut last_change_us = 0i64;
    let mut shown = HashSet::new();
    let hash = |p: &[u8]| {
        let mut n = p.to_vec();
        for px in n.chunks_exact_mut(4) {
            px[3] = 0;
        }
        xxhash_rust::xxh3::xxh3_64(&n)
    };
    let mut device_hash = hash(&pixels);
    shown.insert(device_hash);
    let mut encoder = Encoder::new();
    let mut view: Option<ViewConsent> = None;
    // When to capture, as the agent's capture thread decides: fast after a
    // change, backing off on a still screen.
    let mut pacer = Pacer::new(PacingConfig::default());
    let mut fb: Option<Framebuffer> = None;
    // Hash of the expert's view, updated when an update completes.
    let mut view_hash: Option<u64> = None;
    let mut report = Report {
        name: s.name,
        survived: false,
        ended: None,
        first_sync: None,
        resync_after_outage: None,
        longest_lag: Duration::ZERO,
        bytes_to_expert: 0,
        bytes_to_device: 0,
        updates_applied: 0,
        corrupt_views: 0,
        apply_errors: 0,
        resumes: 0,
        prompts: 0,
        usable_after_last_change: None,
        exact_after_last_change: None,
        jpeg_rects: 0,
        estimated_bps: None,
        bytes_to_expert_at_last_change: 0,
    };
    let mut in_sync = false;
    let mut lag_since: Option<i64> = None;
    let mut next_change = s.screen_period.as_micros() as i64;
    let end_us = s.duration.as_micros() as i64;
    let step = 1000i64;
    let mut now_us = 0i64;

    while now_us <= end_us {
        // Outage on/off.
        if let Some((start, len)) = s.outage {
            let down =
                now_us >= start.as_micros() as i64 && now_us < (start + len).as_micros() as i64;
            link.borrow_mut().down = down;
        }
        link.borrow_mut().deliver(now_us);
        link.borrow_mut().now_us = now_us;
        for end in [&mut dev, &mut exp] {
            end.poll(now_us);
        }

        // Machines start once TLS is up.
        // The expert reconnects (and retries until it gets through); before the
        // check below, so no machine starts on the dead connection.
        if let Some(t) = reconnect_at
            && now_us >= t
        {
            reconnect_at = None;
            if expert.is_none() {
                local_port += 1;
                let client = rustls::ClientConnection::new(
                    client_cfg.clone(),
                    ServerName::try_from("device.test").expect("name"),
                )
                .expect("client conn");
                trace(now_us, "expert: reconnecting");
                exp.reset(client.into(), None, Some((dev_ip, 7575, local_port)));
                reconnect_at = Some(now_us + 2_000_000);
            }
        }

        let dev_up = !dev.tls.is_handshaking()
            && dev.sockets.get::<tcp::Socket>(dev.tcp).state() == tcp::State::Established;
        if device.is_none() && dev_up {
            let mut d = DeviceSession::new(at(now_us), DeviceConfig::default(), 0);
            if s.resume {
                d = d.with_resume_token(ResumeToken([1; 32]));
            }
            device = Some(d);
        }
        // A new connection while the session waits for its expert: a fresh
        // machine takes the hello and auth, as the agent does.
        if device.as_ref().is_some_and(|d| d.is_suspended()) && fresh.is_none() && dev_up {
            trace(now_us, "device: new connection while suspended");
            fresh = Some(DeviceSession::new(
                at(now_us),
                DeviceConfig::default(),
                1000,
            ));
        }
        if expert.is_none()
            && !exp.tls.is_handshaking()
            && exp.sockets.get::<tcp::Socket>(exp.tcp).state() == tcp::State::Established
        {
            let auth = match resume_with.take() {
                Some(token) => Auth::Resume { token },
                None => Auth::Offer,
            };
            expert = Some(ExpertSession::new(
                at(now_us),
                ExpertConfig::new("sim", auth),
            ));
        }
        // The fresh device machine: hello, auth, then hand over or refuse.
        let mut handover = false;
        if let Some(f) = fresh.as_mut() {
            let plain = dev.pump();
            if !plain.is_empty() {
                f.handle(at(now_us), DeviceInput::Received(plain));
            }
            while let Some(o) = f.poll_output() {
                match o {
                    DeviceOutput::Send(m) => dev.out.extend(encode(&m).unwrap_or_default()),
                    DeviceOutput::Authenticate(AuthRequest::Resume { token })
                        if device
                            .as_ref()
                            .is_some_and(|d| d.resume_tokens().contains(&token)) =>
                    {
                        handover = true;
                    }
                    DeviceOutput::Authenticate(_) => f.handle(
                        at(now_us),
                        DeviceInput::AuthDecided(Err((
                            ByeReason::ResumeRejected,
                            "no such session".into(),
                        ))),
                    ),
                    _ => {}
                }
            }
        }
        if handover {
            trace(now_us, "device: resume accepted");
            fresh = None;
            report.resumes += 1;
            if let Some(d) = device.as_mut() {
                d.handle(
                    at(now_us),
                    DeviceInput::Reattach {
                        new_token: Some(ResumeToken([report.resumes as u8 + 1; 32])),
                    },
                );
            }
        }

        // Device side.
        let mut plain = if fresh.is_none() {
            dev.pump()
        } else {
            Vec::new()
        };
        if device.is_none() {
            // Data can come with the handshake's last flight, before the
            // machine exists: keep it for the machine.
            early.append(&mut plain);
        } else if !early.is_empty() {
            let mut rest = std::mem::take(&mut early);
            rest.append(&mut plain);
            plain = rest;
        }
        if let Some(d) = device.as_mut() {
            if !plain.is_empty() {
                d.handle(at(now_us), DeviceInput::Received(plain));
            }
            if let Some(e) = &dev.failed
                && !d.is_suspended()
            {
                d.handle(
                    at(now_us),
                    DeviceInput::PeerClosed {
                        error: Some(e.clone()),
                    },
                );
            }
            if d.poll_timeout().is_some_and(|t| t <= at(now_us)) {
                d.handle_timeout(at(now_us));
            }
            while let Some(o) = d.poll_output() {
                match o {
                    DeviceOutput::Send(m) => dev.out.extend(encode(&m).unwrap_or_default()),
                    DeviceOutput::Authenticate(_) => d.handle(
                        at(now_us),
                        DeviceInput::AuthDecided(Ok(shoulder_proto::testing::offer_identity(
                            "sim",
                        ))),
                    ),
                    // The person at the device accepts at once.
                    DeviceOutput::ShowPrompt(p) => {
                        report.prompts += 1;
                        let accept = LocalCommand::Answer {
                            prompt: p.id,
                            accept: true,
                        };
                        d.handle(at(now_us), DeviceInput::Local(accept))
                    }
                    // The agent drops the dead connection and listens again.
                    DeviceOutput::Phase(Phase::Reconnecting { .. }) => {
                        trace(now_us, "device: suspended, listening again");
                        let server =
                            rustls::ServerConnection::new(server_cfg.clone()).expect("server conn");
                        dev.reset(server.into(), Some(7575), None);
                    }
                    DeviceOutput::StartCapture(v) => {
                        encoder.reset();
                        encoder.set_compression(shoulder_capture::Compression::for_expert(
                            d.deflate_supported(),
                            d.deflate_stream_supported(),
                        ));
                        view = Some(v);
                    }
                    DeviceOutput::StopCapture => {
                        view = None;
                        pacer.stop();
                    }
                    DeviceOutput::UpdateRequested { incremental } => {
                        link_estimate.requested(at(now_us));
                        pacer.request(at(now_us), incremental);
                    }
                    DeviceOutput::Close { reason, detail } => {
                        report
                            .ended
                            .get_or_insert(format!("device: {reason:?}: {detail}"));
                        dev.sockets.get_mut::<tcp::Socket>(dev.tcp).close();
                    }
                    _ => {}
                }
            }
        }
        // The screen changes.
        if now_us >= next_change {
            next_change += s.screen_period.as_micros() as i64;
            frame_index += 1;
            show(frame_index, &mut pixels);
            let h = hash(&pixels);
            if h != device_hash {
                last_change_us = now_us;
                report.bytes_to_expert_at_last_change = dev.tls_bytes_out;
                report.usable_after_last_change = None;
                report.exact_after_last_change = None;
            }
            device_hash = h;
            shown.insert(device_hash);
        }
        // Client-paced updates, only with a live consent, only when the
        // previous one left the TLS buffer (no backlog on a slow link).
        if let Some(v) = view.as_ref()
            && dev.out.len() < 64 * 1024
            && pacer.should_capture(at(now_us))
        {
            let full = pacer.full_requested();
            let frame = Frame::new(&pixels, geometry, width as usize * 4).expect("frame");
            if s.lossy && device.as_ref().is_some_and(|d| d.jpeg_supported()) {
                encoder.set_lossy(shoulder_capture::lossy::policy(
                    link_estimate.bits_per_second(),
                ));
            }
            if let Ok(Some(u)) = encoder.encode_at(v, &frame, full, at(now_us)) {
                report.jpeg_rects += u.stats.jpeg as u64;
                link_estimate.sent(at(now_us), u.stats.payload_bytes + u.stats.rects * 16 + 64);
                for m in u.into_messages() {
                    dev.out.extend(encode(&m).unwrap_or_default());
                }
                pacer.captured(at(now_us), true);
            } else {
                pacer.captured(at(now_us), false);
            }
        }
        dev.pump();

        // Expert side.
        let mut drop_expert = false;
        let plain = exp.pump();
        if let Some(e) = expert.as_mut() {
            if !plain.is_empty() {
                e.handle(at(now_us), ExpertInput::Received(plain));
            }
            if let Some(err) = &exp.failed {
                e.handle(
                    at(now_us),
                    ExpertInput::PeerClosed {
                        error: Some(err.clone()),
                    },
                );
            }
            if e.poll_timeout().is_some_and(|t| t <= at(now_us)) {
                e.handle_timeout(at(now_us));
            }
            while let Some(ev) = e.poll_output() {
                match ev {
                    ExpertEvent::Send(m) => exp.out.extend(encode(&m).unwrap_or_default()),
                    ExpertEvent::Screen(info) => {
                        fb = Framebuffer::new(&info).ok();
                        view_hash = None;
                    }
                    ExpertEvent::Update(part) => {
                        if let Some(f) = fb.as_mut() {
                            if f.apply(&part).is_err() {
                                report.apply_errors += 1;
                            }
                            if part.last {
                                report.updates_applied += 1;
                                let h = hash(f.pixels());
                                view_hash = Some(h);
                                let since = Duration::from_micros((now_us - last_change_us) as u64);
                                if h == device_hash {
                                    report.exact_after_last_change.get_or_insert(since);
                                    report.usable_after_last_change.get_or_insert(since);
                                } else if s.lossy
                                    && report.usable_after_last_change.is_none()
                                    && usable(f.pixels(), &pixels)
                                {
                                    report.usable_after_last_change = Some(since);
                                }
                                // A lossy view is a picture of the screen,
                                // not the screen: judged by `usable` only.
                                if !s.lossy && !shown.contains(&h) {
                                    report.corrupt_views += 1;
                                }
                            }
                        }
                    }
                    ExpertEvent::ResumeOffer { token, grace } => {
                        offered = Some((token, now_us + grace.as_micros() as i64));
                    }
                    ExpertEvent::Closed { reason, detail, .. } => {
                        let resumable = s.resume
                            && matches!(reason, ByeReason::PeerTimeout | ByeReason::Normal)
                            && offered.as_ref().is_some_and(|(_, until)| now_us < *until);
                        trace(now_us, &format!("expert: closed {reason:?} {detail}"));
                        if resumable {
                            resume_with = offered.take().map(|(t, _)| t);
                            reconnect_at = Some(now_us);
                            drop_expert = true;
                        } else {
                            report
                                .ended
                                .get_or_insert(format!("expert: {reason:?}: {detail}"));
                            exp.sockets.get_mut::<tcp::Socket>(exp.tcp).close();
                        }
                    }
                    _ => {}
                }
            }
        }
        if drop_expert {
            expert = None;
        }
        exp.pump();

        // Is the expert's view the device screen?
        let synced = view_hash == Some(device_hash);
        if synced && !in_sync {
            report
                .first_sync
                .get_or_insert(Duration::from_micros(now_us as u64));
            if let Some((start, len)) = s.outage {
                let back = (start + len).as_micros() as i64;
                if now_us >= back && report.resync_after_outage.is_none() {
                    report.resync_after_outage =
                        Some(Duration::from_micros((now_us - back) as u64));
                }
            }
            if let Some(since) = lag_since.take() {
                report.longest_lag = report
                    .longest_lag
                    .max(Duration::from_micros((now_us - since) as u64));
            }
        }
        if !synced && in_sync {
            lag_since = Some(now_us);
        }
        in_sync = synced;
        now_us += step;
    }
    if let Some(since) = lag_since {
        report.longest_lag = report
            .longest_lag
            .max(Duration::from_micros((end_us - since) as u64));
    }
    report.estimated_bps = link_estimate.bits_per_second();
    report.bytes_to_expert = dev.tls_bytes_out;
    report.bytes_to_device = exp.tls_bytes_out;
    report.survived = device
        .as_ref()
        .is_some_and(|d| !d.is_closed() && d.state_name() == "viewing")
        && expert.as_ref().is_some_and(|e| !e.is_closed());
    report
}
