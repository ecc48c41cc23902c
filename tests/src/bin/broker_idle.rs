//! Idle devices on one Mosquitto: N simulated devices, each connected the
//! way `shoulder-agent` connects with a `[broker]` section
//! (`agent/src/broker.rs`): its own client certificate from the plant CA
//! (rcgen, one per device, CN = the device's name), MQTT 5 over TLS 1.3
//! through `shoulder_broker::Link` with the agent's `LinkConfig` (client id
//! `shoulder-dev-NAME`, keep-alive, a retained "offline" presence record as
//! its will, subscriptions to `shoulder/dev/NAME/open` and
//! `shoulder/dev/NAME/s/+/e`, a retained "online" presence record published
//! after each connect). The broker is Debian's Mosquitto as the tests run it
//! (`shoulder_testkit::mosquitto`: TLS listener on 127.0.0.1, client
//! certificates required, CN as user name, the shipped ACL), started fresh
//! for the run.
//!
//! Devices connect at most `--ramp` at a time (a plant's devices do not all
//! start in the same millisecond). Once all are up, the broker's and this
//! process's CPU are measured over `--idle-secs` (longer than the
//! keep-alive, so every device pings at least once), with the broker's
//! resident memory before the devices came and after the window, this
//! process's resident memory per link, and what the broker itself counts
//! (`$SYS/broker/...`, read by an observer the run's ACL lets read `$SYS`).
//! One JSON line on stdout; progress on stderr. Exit status 1 when not
//! every device was up within `--up-secs` or a device dropped during the
//! window (the line is printed all the same).
//!
//! ```text
//! ulimit -n 20000
//! cargo run --release -p shoulder-tests --bin broker_idle -- 1000 --idle-secs 40
//! ```
//!
//! Each run is one step; `scripts/bench-broker` runs steps of growing N in
//! fresh processes (freed memory is not given back to the system, so a
//! second step in the same process would measure less).
//!
//! `--client link` (the default) is the agent's own code. Each such link
//! holds about 14 MB: rumqttc 0.25's MQTT 5 event loop allocates its
//! outgoing in-flight table for `outgoing_inflight_upper_limit`, which
//! defaults to 65,535 slots (`EventLoop::new`, `MqttState::new`: `vec![None;
//! 65536]` of `Option<Publish>`), and `shoulder_broker::Link` does not set
//! it. That is the agent's cost too (BENCHMARKS.md), and it caps this
//! simulator at about a thousand links per 16 GB. `--client lean` is for
//! more: the same sessions as the broker sees them (TLS 1.3 with the
//! device's certificate, MQTT 5 CONNECT with clean start, the keep-alive,
//! the maximum packet size and the retained will; SUBSCRIBE to the two
//! topics at QoS 1; the retained presence PUBLISH at QoS 1; PINGREQ once
//! per keep-alive), written by hand over blocking rustls streams on a few
//! threads, at about 13 KiB a link. Its own CPU and memory are not the
//! agent's; the broker's figures are what it is for.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use shoulder_broker::{Link, LinkConfig, LinkState, Presence, Topics};
use shoulder_testkit::mosquitto::{Mosquitto, shipped_acl};
use shoulder_testkit::pki::Pki;
use tokio::sync::mpsc;

/// The broker's counters the observer reads.
const SYS_TOPICS: [&str; 4] = [
    "$SYS/broker/clients/connected",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/heap/current",
    "$SYS/broker/subscriptions/count",
];
/// The observer's name (its certificate's CN).
const OBSERVER: &str = "bench-observer";

struct Args {
    devices: usize,
    idle_secs: u64,
    up_secs: u64,
    keepalive: u64,
    ramp: usize,
    lean: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: broker_idle DEVICES [--idle-secs 40] [--up-secs 180] [--keepalive 30] [--ramp 100]\n\
         \x20                 [--client link|lean]\n\
         (see the source's header; raise `ulimit -n` above DEVICES first)"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut a = Args {
        devices: 0,
        idle_secs: 40,
        up_secs: 180,
        keepalive: 30,
        ramp: 100,
        lean: false,
    };
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>| -> u64 {
        v.and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or_else(|| usage())
    };
    while let Some(w) = it.next() {
        match w.as_str() {
            "--idle-secs" => a.idle_secs = num(it.next()),
            "--up-secs" => a.up_secs = num(it.next()),
            "--keepalive" => a.keepalive = num(it.next()),
            "--ramp" => a.ramp = num(it.next()) as usize,
            "--client" => match it.next().as_deref() {
                Some("link") => a.lean = false,
                Some("lean") => a.lean = true,
                _ => usage(),
            },
            s if !s.starts_with('-') && a.devices == 0 => a.devices = num(Some(s.into())) as usize,
            _ => usage(),
        }
    }
    if a.devices == 0 || !(5..=600).contains(&a.keepalive) {
        usage();
    }
    a
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = s.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The soft limit of open files of this process.
fn max_open_files() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let l = s.lines().find(|l| l.starts_with("Max open files"))?;
    l.split_whitespace().nth(3)?.parse().ok()
}

/// The process running Mosquitto with the configuration in `dir`.
fn mosquitto_pid(dir: &Path) -> Option<u32> {
    let conf = dir.join("mosquitto.conf");
    let conf = conf.to_string_lossy();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("mosquitto") && cmd.split('\0').any(|a| a == conf) {
            return Some(pid);
        }
    }
    None
}

/// A TLS client configuration for a certificate of `pki` with CN `cn`.
fn client_tls(pki: &Pki, roots: &rustls::RootCertStore, cn: &str) -> Arc<rustls::ClientConfig> {
    let cert = pki.expert(cn, false);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots.clone())
    .with_client_auth_cert(cert.chain.clone(), cert.key())
    .expect("a client certificate");
    Arc::new(tls)
}

fn presence(name: &str, online: bool) -> Vec<u8> {
    serde_json::to_vec(&Presence {
        online,
        name: name.to_string(),
        site: "Hall 3".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        offers: true,
        invitations: true,
        control: true,
    })
    .expect("a presence record")
}

fn up(l: &Link) -> bool {
    matches!(*l.state().borrow(), LinkState::Up { .. })
}

/// Reads the observer's messages: the newest value of each `$SYS` topic.
async fn read_sys(
    mut rx: mpsc::Receiver<shoulder_broker::link::Message>,
    out: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
) {
    while let Some((topic, payload)) = rx.recv().await {
        let v = String::from_utf8_lossy(&payload).trim().to_string();
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic, v);
    }
}

/// The simulated devices.
enum Fleet {
    /// `shoulder_broker::Link`s, with the receivers the agent keeps (a
    /// link drops what nobody reads).
    Links {
        links: Vec<Link>,
        _others: Vec<mpsc::Receiver<shoulder_broker::link::Message>>,
    },
    /// Hand-written MQTT clients on threads (`lean`).
    Lean,
}

impl Fleet {
    fn up(&self) -> usize {
        match self {
            Fleet::Links { links, .. } => links.iter().filter(|l| up(l)).count(),
            Fleet::Lean => lean::UP.load(Ordering::Relaxed),
        }
    }

    /// How many devices are in which state, for those not up.
    fn why_not_up(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        match self {
            Fleet::Links { links, .. } => {
                for l in links.iter().filter(|l| !up(l)) {
                    *m.entry(format!("{:?}", *l.state().borrow())).or_default() += 1;
                }
            }
            Fleet::Lean => {
                for (e, c) in lean::ERRORS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                {
                    m.insert(e.clone(), *c);
                }
            }
        }
        m
    }
}

/// One `Link` per device, as `agent/src/broker.rs` starts it, at most
/// `args.ramp` connecting at a time. `false` when not all were up by
/// `deadline`.
async fn connect_links(
    names: &[String],
    tls: Vec<Arc<rustls::ClientConfig>>,
    port: u16,
    args: &Args,
    deadline: Instant,
) -> (
    Vec<Link>,
    Vec<mpsc::Receiver<shoulder_broker::link::Message>>,
    bool,
) {
    let topics = Topics::new("shoulder").expect("the default prefix");
    let t = Instant::now();
    let mut links = Vec::with_capacity(names.len());
    let mut others = Vec::with_capacity(names.len());
    let mut waiting: Vec<usize> = Vec::new();
    let mut reported = 0usize;
    for (name, tls) in names.iter().zip(tls) {
        let p = topics.presence(name);
        let (link, other) = Link::start(LinkConfig {
            host: "127.0.0.1".into(),
            port,
            tls,
            client_id: format!("shoulder-dev-{name}"),
            keep_alive: Duration::from_secs(args.keepalive),
            will: Some((p.clone(), presence(name, false))),
            subscriptions: vec![topics.open(name), topics.all_to_device(name)],
            announce: Some((p, presence(name, true))),
        });
        waiting.push(links.len());
        links.push(link);
        others.push(other);
        while waiting.len() >= args.ramp {
            waiting.retain(|&i| !up(&links[i]));
            if waiting.len() < args.ramp {
                break;
            }
            if Instant::now() > deadline {
                return (links, others, false);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let c = links.len() - waiting.len();
        if c / 1000 > reported / 1000 {
            eprintln!(
                "broker_idle: {c} up after {:.1} s",
                t.elapsed().as_secs_f64()
            );
        }
        reported = c;
    }
    while links.iter().any(|l| !up(l)) {
        if Instant::now() > deadline {
            return (links, others, false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (links, others, true)
}

/// Devices as the broker sees the agent's link, written by hand: MQTT 5
/// over blocking rustls streams, a few threads, no async runtime.
mod lean {
    use super::*;

    /// Devices connected, subscribed and announced (and not dropped since).
    pub static UP: AtomicUsize = AtomicUsize::new(0);
    /// Set when the run is over: the threads stop.
    pub static STOP: AtomicBool = AtomicBool::new(false);
    /// Why devices failed, counted.
    pub static ERRORS: std::sync::Mutex<BTreeMap<String, usize>> =
        std::sync::Mutex::new(BTreeMap::new());
    /// Threads: each connects its share of the devices one at a time,
    /// then keeps them alive.
    const THREADS: usize = 8;
    /// How often a thread reads what came and sends pings that are due.
    const TICK: Duration = Duration::from_millis(500);

    type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

    fn failed(why: String) {
        *ERRORS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(why)
            .or_default() += 1;
    }

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let mut b = (n % 128) as u8;
            n /= 128;
            if n > 0 {
                b |= 0x80;
            }
            out.push(b);
            if n == 0 {
                return;
            }
        }
    }

    fn string(s: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn packet(first: u8, body: &[u8]) -> Vec<u8> {
        let mut p = vec![first];
        varint(body.len(), &mut p);
        p.extend_from_slice(body);
        p
    }

    /// CONNECT as rumqttc sends it for the agent's `LinkConfig`: MQTT 5,
    /// clean start, the keep-alive, the maximum packet size, a retained
    /// QoS 1 will.
    fn connect_packet(client_id: &str, keepalive: u16, will: &(String, Vec<u8>)) -> Vec<u8> {
        let mut b = Vec::new();
        string(b"MQTT", &mut b);
        b.push(5);
        // clean start | will | will QoS 1 | will retain
        b.push(0x02 | 0x04 | 0x08 | 0x20);
        b.extend_from_slice(&keepalive.to_be_bytes());
        // Properties: maximum packet size.
        let mut props = vec![0x27];
        props.extend_from_slice(&shoulder_broker::link::MAX_PACKET.to_be_bytes());
        varint(props.len(), &mut b);
        b.extend_from_slice(&props);
        string(client_id.as_bytes(), &mut b);
        varint(0, &mut b); // will properties
        string(will.0.as_bytes(), &mut b);
        string(&will.1, &mut b);
        packet(0x10, &b)
    }

    fn subscribe_packet(pkid: u16, filters: &[String]) -> Vec<u8> {
        let mut b = pkid.to_be_bytes().to_vec();
        varint(0, &mut b);
        for f in filters {
            string(f.as_bytes(), &mut b);
            b.push(0x01); // QoS 1
        }
        packet(0x82, &b)
    }

    fn publish_packet(pkid: u16, topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        string(topic.as_bytes(), &mut b);
        b.extend_from_slice(&pkid.to_be_bytes());
        varint(0, &mut b);
        b.extend_from_slice(payload);
        // QoS 1, retained
        packet(0x30 | 0x02 | 0x01, &b)
    }

    /// What follows a property list (its length, then the properties).
    fn skip_properties(b: &[u8]) -> Option<&[u8]> {
        let (mut len, mut mul, mut i) = (0usize, 1usize, 0usize);
        loop {
            let c = *b.get(i)?;
            i += 1;
            len += (c & 0x7f) as usize * mul;
            if c & 0x80 == 0 {
                break;
            }
            mul *= 128;
        }
        b.get(i + len..)
    }

    /// Reads one packet (blocking): its first byte and body.
    fn read_packet(s: &mut Tls) -> std::io::Result<(u8, Vec<u8>)> {
        let mut first = [0u8; 1];
        s.read_exact(&mut first)?;
        let (mut len, mut mul) = (0usize, 1usize);
        loop {
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            len += (b[0] & 0x7f) as usize * mul;
            if b[0] & 0x80 == 0 {
                break;
            }
            mul *= 128;
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        Ok((first[0], body))
    }

    /// Reads packets until one of `kind` (the high nibble) comes.
    fn expect(s: &mut Tls, kind: u8) -> Result<Vec<u8>, String> {
        loop {
            let (first, body) = read_packet(s).map_err(|e| format!("read: {e}"))?;
            if first >> 4 == kind {
                return Ok(body);
            }
        }
    }

    /// One device: TLS, CONNECT, SUBSCRIBE, the presence PUBLISH, each
    /// answered; then non-blocking.
    fn device(
        name: &str,
        tls: Arc<rustls::ClientConfig>,
        port: u16,
        keepalive: u16,
    ) -> Result<Tls, String> {
        let topics = Topics::new("shoulder").expect("the default prefix");
        let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let server = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .expect("an address")
            .to_owned();
        let conn = rustls::ClientConnection::new(tls, server).map_err(|e| e.to_string())?;
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let p = topics.presence(name);
        let will = (p.clone(), presence(name, false));
        s.write_all(&connect_packet(
            &format!("shoulder-dev-{name}"),
            keepalive,
            &will,
        ))
        .map_err(|e| format!("TLS or CONNECT: {e}"))?;
        let ack = expect(&mut s, 2)?;
        if ack.get(1) != Some(&0) {
            return Err(format!("CONNACK reason {:?}", ack.get(1)));
        }
        s.write_all(&subscribe_packet(
            1,
            &[topics.open(name), topics.all_to_device(name)],
        ))
        .map_err(|e| format!("SUBSCRIBE: {e}"))?;
        let suback = expect(&mut s, 9)?;
        // Packet id (2 bytes), properties (a length, then them), reason
        // codes: one per filter, 0x80 and up a refusal.
        let codes = suback.get(2..).and_then(skip_properties).unwrap_or(&[]);
        if codes.len() != 2 || codes.iter().any(|&c| c >= 0x80) {
            return Err(format!("SUBACK {suback:?}"));
        }
        s.write_all(&publish_packet(2, &p, &presence(name, true)))
            .map_err(|e| format!("PUBLISH: {e}"))?;
        let puback = expect(&mut s, 4)?;
        if puback.len() > 2 && puback[2] >= 0x80 {
            return Err(format!("PUBACK reason {}", puback[2]));
        }
        s.sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// Connects every device on [`THREADS`] threads, which then keep them
    /// alive until [`STOP`]; returns once all are up (`true`) or at
    /// `deadline` (`false`).
    pub fn connect(
        names: &[String],
        tls: Vec<Arc<rustls::ClientConfig>>,
        port: u16,
        args: &Args,
        deadline: Instant,
    ) -> bool {
        let keepalive = args.keepalive as u16;
        let mut shares: Vec<Vec<(String, Arc<rustls::ClientConfig>)>> =
            (0..THREADS).map(|_| Vec::new()).collect();
        for (i, (n, t)) in names.iter().zip(tls).enumerate() {
            shares[i % THREADS].push((n.clone(), t));
        }
        let t = Instant::now();
        for share in shares {
            std::thread::spawn(move || keep(share, port, keepalive));
        }
        let mut reported = 0;
        loop {
            let up = UP.load(Ordering::Relaxed);
            if up == names.len() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            if up / 1000 > reported / 1000 {
                eprintln!(
                    "broker_idle: {up} up after {:.1} s",
                    t.elapsed().as_secs_f64()
                );
            }
            reported = up;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A thread's devices: connect each, then read what comes and ping
    /// once per keep-alive. The devices already up are served between
    /// connections too (a thread connecting a thousand devices takes longer
    /// than the broker waits for a ping).
    fn keep(share: Vec<(String, Arc<rustls::ClientConfig>)>, port: u16, keepalive: u16) {
        let every = Duration::from_secs(keepalive.into());
        let mut live: Vec<(Tls, Instant)> = Vec::with_capacity(share.len());
        let mut buf = vec![0u8; 4096];
        let mut served = Instant::now();
        for (name, tls) in share {
            if STOP.load(Ordering::Relaxed) {
                return;
            }
            match device(&name, tls, port, keepalive) {
                Ok(s) => {
                    live.push((s, Instant::now()));
                    UP.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => failed(e),
            }
            if served.elapsed() >= TICK {
                serve(&mut live, every, &mut buf);
                served = Instant::now();
            }
        }
        while !STOP.load(Ordering::Relaxed) {
            serve(&mut live, every, &mut buf);
            std::thread::sleep(TICK);
        }
    }

    /// Reads what came on each connection (PINGRESP) and pings those whose
    /// keep-alive is due; drops the closed ones.
    fn serve(live: &mut Vec<(Tls, Instant)>, every: Duration, buf: &mut [u8]) {
        let now = Instant::now();
        live.retain_mut(|(s, last)| {
            let mut alive = true;
            loop {
                match s.read(buf) {
                    Ok(0) => {
                        failed("the broker closed the connection".into());
                        alive = false;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        failed(format!("read: {e}"));
                        alive = false;
                        break;
                    }
                }
            }
            if alive && now.duration_since(*last) >= every {
                // PINGREQ
                if let Err(e) = s.write_all(&[0xc0, 0x00]).and_then(|()| s.flush()) {
                    failed(format!("ping: {e}"));
                    alive = false;
                }
                *last = now;
            }
            if !alive {
                UP.fetch_sub(1, Ordering::Relaxed);
            }
            alive
        });
    }
}

fn main() {
    let args = parse_args();
    let need = args.devices as u64 + 64;
    match max_open_files() {
        Some(n) if n < need => {
            eprintln!(
                "broker_idle: {} devices need about {need} open files, the limit is {n} (raise it: ulimit -n {need})",
                args.devices
            );
            std::process::exit(2);
        }
        _ => {}
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ok = rt.block_on(run(&args));
    // Dropping thousands of links and the broker: let the process end.
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run(args: &Args) -> bool {
    let n = args.devices;
    let hz = clock_ticks() as f64;
    let me = std::process::id();
    let pki = Pki::new("broker_idle plant CA");
    // The shipped ACL, and $SYS for the observer only.
    let acl = format!("{}\nuser {OBSERVER}\ntopic read $SYS/#\n", shipped_acl());
    let m = Mosquitto::start(&pki, &acl);
    let Some(mpid) = mosquitto_pid(m.dir.path()) else {
        eprintln!("broker_idle: cannot find the Mosquitto process");
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("the CA's PEM"))
        .expect("the CA");

    // The observer first: its own memory is not the devices'.
    let (observer, sys_rx) = Link::start(LinkConfig {
        host: "127.0.0.1".into(),
        port: m.port,
        tls: client_tls(&pki, &roots, OBSERVER),
        client_id: OBSERVER.into(),
        keep_alive: Duration::from_secs(args.keepalive),
        will: None,
        subscriptions: SYS_TOPICS.iter().map(|s| s.to_string()).collect(),
        announce: None,
    });
    if let Err(e) = observer.wait_up(Duration::from_secs(20)).await {
        eprintln!(
            "broker_idle: the observer could not connect: {e}\n{}",
            m.log()
        );
        return false;
    }
    let sys = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    tokio::spawn(read_sys(sys_rx, sys.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker_rss0 = status_kib(mpid, "VmRSS");

    // Certificates and TLS configurations: what each device holds.
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("idle-{i:05}")).collect();
    let tls: Vec<Arc<rustls::ClientConfig>> =
        names.iter().map(|c| client_tls(&pki, &roots, c)).collect();
    eprintln!(
        "broker_idle: {n} device certificates in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let client_rss0 = status_kib(me, "VmRSS");

    let t = Instant::now();
    let deadline = t + Duration::from_secs(args.up_secs);
    let (fleet, ok) = if args.lean {
        let ok = lean::connect(&names, tls, m.port, args, deadline);
        (Fleet::Lean, ok)
    } else {
        let (links, others, ok) = connect_links(&names, tls, m.port, args, deadline).await;
        (
            Fleet::Links {
                links,
                _others: others,
            },
            ok,
        )
    };
    let connect_secs = t.elapsed().as_secs_f64();
    let n_up = fleet.up();
    if !ok {
        eprintln!(
            "broker_idle: {n_up} of {n} devices up after {:.0} s; the others: {:?}",
            args.up_secs,
            fleet.why_not_up()
        );
    } else {
        eprintln!(
            "broker_idle: all {n} up in {connect_secs:.1} s; idle for {} s",
            args.idle_secs
        );
    }

    // The idle window: every device pings at least once in it.
    let client_rss1 = status_kib(me, "VmRSS");
    let (b0, c0, w0) = (cpu_ticks(mpid), cpu_ticks(me), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (b1, c1, secs) = (cpu_ticks(mpid), cpu_ticks(me), w0.elapsed().as_secs_f64());
    let still_up = fleet.up();
    let broker_rss = status_kib(mpid, "VmRSS");
    let client_rss = status_kib(me, "VmRSS");
    let pct = |ticks: u64| 100.0 * ticks as f64 / hz / secs;
    let sys = sys.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sysv = |k: &str| {
        sys.get(k).map_or(serde_json::Value::Null, |v| {
            serde_json::Value::String(v.clone())
        })
    };
    let per = |a: u64, b: u64| {
        if n_up == 0 {
            0.0
        } else {
            a.saturating_sub(b) as f64 / n_up as f64
        }
    };
    let line = serde_json::json!({
        "devices": n,
        "client": if args.lean { "lean" } else { "link" },
        "up": n_up,
        "still_up_after_idle": still_up,
        "connect_secs": (connect_secs * 10.0).round() / 10.0,
        "idle_secs": (secs * 10.0).round() / 10.0,
        "keepalive_secs": args.keepalive,
        "broker_rss_kib_before": broker_rss0,
        "broker_rss_kib": broker_rss,
        "broker_kib_per_device": (per(broker_rss, broker_rss0) * 10.0).round() / 10.0,
        "broker_cpu_pct": (pct(b1 - b0) * 100.0).round() / 100.0,
        "client_rss_kib_before": client_rss0,
        "client_rss_kib": client_rss,
        "client_kib_per_link": (per(client_rss.max(client_rss1), client_rss0) * 10.0).round() / 10.0,
        "client_cpu_pct": (pct(c1 - c0) * 100.0).round() / 100.0,
        "sys_clients_connected": sysv(SYS_TOPICS[0]),
        "sys_retained": sysv(SYS_TOPICS[1]),
        "sys_heap_bytes": sysv(SYS_TOPICS[2]),
        "sys_subscriptions": sysv(SYS_TOPICS[3]),
    });
    println!("{line}");
    lean::STOP.store(true, Ordering::Relaxed);
    drop(fleet);
    ok && still_up == n
}
