//! Password guessing against the real agent daemon on loopback: many
//! parallel connections, each a TLS handshake, a `Hello` and an invitation
//! attempt with a wrong password (for an id the device does not know, which
//! costs the device the same hash as a real one), reconnecting as soon as
//! the device says no, for a fixed time. The agent's VmRSS, VmHWM and
//! thread count are read from `/proc/PID/status` meanwhile (VmHWM is reset
//! through `/proc/PID/clear_refs` once the agent is idle, so the peak is the
//! flood's, not start-up's).
//!
//! ```text
//! cargo build --release -p shoulder-agent -p shoulder-tests --bin guess_flood
//! target/release/guess_flood --sources 1
//! target/release/guess_flood --sources 50
//! target/release/guess_flood --sources 50 --limits off
//! ```
//!
//! Options: `--connections N` parallel connections (default 200), spread
//! round-robin over `--sources S` source addresses 127.0.0.2 … (default 1,
//! at most 200); `--seconds T` of flooding (default 20); `--limits off`
//! lifts the failure limits (per source and device-wide) so that only the
//! hash gate holds the flood back; `--agent PATH` (default
//! `target/release/shoulder-agent` next to this binary); `--malloc default`
//! runs the agent without the glibc malloc setting of the shipped systemd
//! unit (`GLIBC_TUNABLES`). The agent runs with its default argon2 cost
//! and `max_concurrent_hashes`.
//!
//! Prints the idle and peak memory of the agent, the hashes it ran (from
//! its `pre-auth-totals` records), the answers the guessers got, and the
//! records written to the audit log and to the pre-auth log.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use shoulder_proto::frame::encode;
use shoulder_proto::session::{ExpertConfig, ExpertEvent, ExpertInput, ExpertSession};
use shoulder_proto::{Auth, InvitationId, text};
use shoulder_testkit::tls_expert::Pinned;

/// How often the agent's memory is read: often enough to catch a hash's
/// peak (a quarter second or more).
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Longest a guesser waits for one step (connect, read) before giving up
/// on the connection.
const STEP: Duration = Duration::from_secs(30);
/// Most source addresses: 127.0.0.2 … 127.0.0.201.
const MAX_SOURCES: usize = 200;
/// Most parallel connections (one thread each).
const MAX_CONNECTIONS: usize = 1000;
/// The malloc setting of the shipped systemd unit (`Environment=` in
/// shoulder-agent.service): a fixed mmap threshold, so glibc does not raise
/// it after the first freed argon2 buffer and then keep up to twice that
/// cached in every arena.
const GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072";
/// Time for the agent to come up, and to stop after SIGTERM.
const AGENT_WAIT: Duration = Duration::from_secs(30);

struct Args {
    connections: usize,
    sources: usize,
    seconds: u64,
    limits: bool,
    tunable: bool,
    agent: PathBuf,
}

fn usage() -> ! {
    eprintln!(
        "usage: guess_flood [--connections N] [--sources S] [--seconds T] [--limits default|off] [--malloc unit|default] [--agent PATH]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let default_agent = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("shoulder-agent")))
        .unwrap_or_else(|| "target/release/shoulder-agent".into());
    let mut a = Args {
        connections: 200,
        sources: 1,
        seconds: 20,
        limits: true,
        tunable: true,
        agent: default_agent,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--connections" => a.connections = v.parse().unwrap_or_else(|_| usage()),
            "--sources" => a.sources = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage()),
            "--limits" => {
                a.limits = match v.as_str() {
                    "default" => true,
                    "off" => false,
                    _ => usage(),
                }
            }
            "--agent" => a.agent = v.into(),
            "--malloc" => {
                a.tunable = match v.as_str() {
                    "unit" => true,
                    "default" => false,
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    if !(1..=MAX_CONNECTIONS).contains(&a.connections)
        || !(1..=MAX_SOURCES).contains(&a.sources)
        || a.seconds == 0
    {
        usage();
    }
    a
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(&args) {
        eprintln!("guess_flood: {e}");
        std::process::exit(1);
    }
}

/// Memory and threads of the agent, from /proc/PID/status.
#[derive(Debug, Default, Clone, Copy)]
struct Status {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

fn status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Status {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
    })
}

fn run(args: &Args) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("shoulder-guess-flood-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let config = write_config(dir.path(), port, args.limits)?;
    let mut agent = start_agent(&args.agent, &config, dir.path(), args.tunable)?;
    let pid = agent.id();
    let result = flood(args, dir.path(), port, pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let t0 = Instant::now();
    while agent.try_wait().ok().flatten().is_none() && t0.elapsed() < AGENT_WAIT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let _ = agent.wait();
    let report = result?;
    let audit = dir.path().join("audit.jsonl");
    let main_records = count_lines(&audit);
    let pre_auth = dir.path().join("audit.pre-auth.jsonl");
    let pre_records = read_records(&pre_auth);
    let hashes: u64 = pre_records
        .iter()
        .filter(|r| r["event"] == "pre-auth-totals")
        .filter_map(|r| r["hashes"].as_u64())
        .sum();
    let most_at_once = pre_records
        .iter()
        .filter_map(|r| r["most_hashes_at_once"].as_u64())
        .max()
        .unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "guess_flood: {} connections from {} source(s) for {} s, limits {}, malloc {}",
        args.connections,
        args.sources,
        args.seconds,
        if args.limits { "default" } else { "off" },
        if args.tunable {
            "as in the unit"
        } else {
            "glibc default"
        }
    );
    println!(
        "agent memory: idle VmRSS {:.1} MiB (VmHWM {:.1} after reset), peak VmHWM {:.1} MiB ({:.1} MiB above idle), most threads {}",
        mib(report.idle.rss_kib),
        mib(report.idle.hwm_kib),
        mib(report.peak.hwm_kib),
        mib(report.peak.hwm_kib.saturating_sub(report.idle.rss_kib)),
        report.peak.threads
    );
    println!(
        "guesses: {} connections answered, {} failed; hashes {} ({:.1}/s), most at once {}",
        report.answered,
        report.failed,
        hashes,
        hashes as f64 / report.elapsed.as_secs_f64(),
        most_at_once
    );
    println!("answers: {:?}", report.reasons);
    println!(
        "audit: {} records in audit.jsonl (rotated files: {}), {} in audit.pre-auth.jsonl ({} pre-auth-summary)",
        main_records,
        rotated_files(&audit),
        pre_records.len(),
        pre_records
            .iter()
            .filter(|r| r["event"] == "pre-auth-summary")
            .count()
    );
    println!(
        "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {:.1} | {} | {} |",
        args.connections,
        args.sources,
        if args.limits { "default" } else { "off" },
        mib(report.idle.rss_kib),
        mib(report.peak.hwm_kib),
        mib(report.peak.hwm_kib.saturating_sub(report.idle.rss_kib)),
        report.peak.threads,
        report.answered,
        hashes as f64 / report.elapsed.as_secs_f64(),
        main_records,
        pre_records.len(),
    );
    Ok(())
}

fn write_config(dir: &Path, port: u16, limits: bool) -> Result<PathBuf, String> {
    let limits = if limits {
        String::new()
    } else {
        "auth_failures_per_minute = 1000000\npassword_failures_per_minute = 1000000\n".into()
    };
    let text = format!(
        "enabled = true\n\
         listen = [\"127.0.0.1:{port}\"]\n\
         device_name = \"guess-flood\"\n\
         state_dir = \"{d}/state\"\n\
         audit_log = \"{d}/audit.jsonl\"\n\
         control_socket = \"{d}/control.sock\"\n\
         capture = \"synthetic\"\n\
         {limits}\
         [banner]\npresenter = \"none\"\n\
         [input]\ninject = \"none\"\nlocal_input = \"\"\n",
        d = dir.display()
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).map_err(|e| format!("agent.toml: {e}"))?;
    Ok(path)
}

fn start_agent(agent: &Path, config: &Path, dir: &Path, tunable: bool) -> Result<Child, String> {
    let log = std::fs::File::create(dir.join("agent.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(agent);
    if tunable {
        cmd.env("GLIBC_TUNABLES", GLIBC_TUNABLES);
    }
    let child = cmd
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {}: {e} (fix: cargo build --release -p shoulder-agent, or pass --agent)",
                agent.display()
            )
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let socket = dir.join("control.sock");
    rt.block_on(async {
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = shoulder_agent::control::Client::connect(&socket).await {
                // A real invitation, so the audit log holds a record worth
                // keeping (invitation-created).
                let r = c
                    .request(&shoulder_agent::control::Request::Invite {
                        expires: "1h".into(),
                        password: Some("tulip-garden-42".into()),
                        for_whom: None,
                    })
                    .await
                    .map_err(|e| format!("invite: {e}"))?;
                if r["ok"] != true {
                    return Err(format!("invite refused: {r}"));
                }
                return Ok(());
            }
            if t0.elapsed() > AGENT_WAIT {
                return Err(format!(
                    "the agent did not start; see {}",
                    dir.join("agent.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })?;
    Ok(child)
}

struct Report {
    idle: Status,
    peak: Status,
    answered: u64,
    failed: u64,
    reasons: BTreeMap<String, u64>,
    elapsed: Duration,
}

fn flood(args: &Args, _dir: &Path, port: u16, pid: u32) -> Result<Report, String> {
    // Let start-up settle (first invitation hash, TLS setup) before idle.
    std::thread::sleep(Duration::from_secs(2));
    // Start-up peaks (the invitation's own hash) are not the flood's: reset
    // VmHWM to the current VmRSS ("5" in clear_refs, Linux 4.0+).
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("guess_flood: cannot reset VmHWM ({e}); the peak includes start-up");
    }
    let idle = status(pid).ok_or("the agent is gone")?;
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(Mutex::new(idle));
    let sampler = {
        let stop = stop.clone();
        let peak = peak.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = status(pid) {
                    let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                    p.rss_kib = p.rss_kib.max(s.rss_kib);
                    p.hwm_kib = p.hwm_kib.max(s.hwm_kib);
                    p.threads = p.threads.max(s.threads);
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let tls = Arc::new(client_config());
    let reasons = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next_id = Arc::new(AtomicU64::new(1));
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let device = SocketAddr::from(([127, 0, 0, 1], port));
    let mut workers = Vec::new();
    for i in 0..args.connections {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % args.sources) as u8);
        let (tls, reasons, answered, failed, next_id) = (
            tls.clone(),
            reasons.clone(),
            answered.clone(),
            failed.clone(),
            next_id.clone(),
        );
        workers.push(std::thread::spawn(move || {
            while Instant::now() < until {
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                match guess(&tls, source, device, id) {
                    Ok(reason) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                        *reasons
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(reason)
                            .or_default() += 1;
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // A refused connect (backlog full): do not spin.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.join();
    }
    let elapsed = start.elapsed();
    // The last hashes finish after their guessers are gone.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    let reasons = reasons.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report {
        idle,
        peak,
        answered: answered.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        reasons,
        elapsed,
    })
}

/// One guess: returns the device's answer (the `ByeReason` variant), or an
/// error when the connection broke without one.
fn guess(
    tls: &Arc<rustls::ClientConfig>,
    source: Ipv4Addr,
    device: SocketAddr,
    id: u64,
) -> io::Result<String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    sock.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    sock.connect_timeout(&device.into(), STEP)?;
    let tcp: std::net::TcpStream = sock.into();
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
    let conn = rustls::ClientConnection::new(tls.clone(), ServerName::try_from("device").unwrap())
        .map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let auth = Auth::Invitation {
        id: InvitationId(id.to_be_bytes()),
        password: text("not-the-password"),
    };
    let mut session = ExpertSession::new(Instant::now(), ExpertConfig::new("guesser", auth));
    let deadline = Instant::now() + STEP;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let mut out = Vec::new();
        while let Some(e) = session.poll_output() {
            match e {
                ExpertEvent::Send(m) => out.extend(encode(&m).map_err(io::Error::other)?),
                ExpertEvent::Closed { reason, .. } => {
                    let name = format!("{reason:?}");
                    let variant = name.split([' ', '{']).next().unwrap_or("").to_string();
                    return Ok(variant);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            stream.flush()?;
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        match stream.read(&mut buf) {
            Ok(0) => session.handle(Instant::now(), ExpertInput::PeerClosed { error: None }),
            Ok(n) => session.handle(Instant::now(), ExpertInput::Received(buf[..n].to_vec())),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                session.handle_timeout(Instant::now());
            }
            Err(e) => return Err(e),
        }
    }
}

fn client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3 is supported")
        .dangerous()
        // A guesser does not care whom it talks to.
        .with_custom_certificate_verifier(Arc::new(Pinned::any_device()))
        .with_no_client_auth();
    c.alpn_protocols = vec![shoulder_proto::ALPN.to_vec()];
    c
}

fn read_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn rotated_files(path: &Path) -> usize {
    (1..=16)
        .filter(|n| {
            let mut p = path.as_os_str().to_owned();
            p.push(format!(".{n}"));
            Path::new(&p).exists()
        })
        .count()
}
