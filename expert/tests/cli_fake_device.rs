//! The real `shoulder` binary against a small device built from the proto's
//! device session machine over real TLS on loopback: snapshots, watch
//! statistics, chat, and the failures the device reports, each with its own
//! sentence and a non-zero exit.
//!
//! (The full agent is exercised in `tests/tests/client_agent_e2e.rs`; this device isolates the
//! client from agent policy.)

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shoulder_proto::Fingerprint;
use shoulder_proto::frame::encode;
use shoulder_proto::invite::Invitation;
use shoulder_proto::session::{
    AuthMethod, AuthRequest, DeviceConfig, DeviceInput, DeviceOutput, DeviceSession,
    ExpertIdentity, LocalCommand,
};
use shoulder_proto::{
    ByeReason, Encoding, InvitationId, Message, Payload, Rect, ScreenInfo, UpdatePart, WireFormat,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const W: u16 = 64;
const H: u16 = 32;
const PASSWORD: &str = "correct horse";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Accept,
    Decline,
    /// Nobody answers: the prompt times out.
    Ignore,
}

#[derive(Debug, Clone)]
struct Behavior {
    answer: Answer,
    /// Refuse authentication with this reason whatever the password.
    refuse: Option<ByeReason>,
    consent_timeout: Duration,
}

impl Default for Behavior {
    fn default() -> Self {
        Self {
            answer: Answer::Accept,
            refuse: None,
            consent_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct Observed {
    chats: Vec<String>,
}

struct FakeDevice {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    observed: Arc<Mutex<Observed>>,
}

/// The first full frame: a gradient, so every pixel differs.
fn pattern() -> Vec<u8> {
    let mut v = Vec::new();
    for y in 0..H {
        for x in 0..W {
            v.extend_from_slice(&[(x * 4) as u8, (y * 8) as u8, (x + y) as u8, 0x77]);
        }
    }
    v
}

/// The framebuffer after the full frame and `n` incremental updates.
fn expected_fb(n: u32) -> Vec<u8> {
    let mut fb = pattern();
    for i in 1..=n {
        let color = 0x0010_2030u32 * i;
        for y in 0..4usize {
            for x in 0..8usize {
                let o = (y * usize::from(W) + x + 8 * i as usize) * 4;
                fb[o..o + 4].copy_from_slice(&color.to_le_bytes());
            }
        }
    }
    for px in fb.chunks_exact_mut(4) {
        px[3] = 0;
    }
    fb
}

fn update(seq: u32, rect: Rect) -> Message {
    let mut rects = heapless::Vec::new();
    rects.push(rect).unwrap();
    Message::Update(Box::new(UpdatePart {
        seq,
        generation: 1,
        last: true,
        rects,
    }))
}

impl FakeDevice {
    fn start(behavior: Behavior) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["fake-device".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der: CertificateDer<'static> = cert.der().clone();
        let fingerprint = shoulder::trust::fingerprint_of(&der);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![shoulder_proto::ALPN.to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let observed = Arc::new(Mutex::new(Observed::default()));
        let obs = observed.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let acceptor = acceptor.clone();
                    let b = behavior.clone();
                    let obs = obs.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            serve(tls, b, obs).await;
                        }
                    });
                }
            });
        });
        Self {
            addr,
            fingerprint,
            observed,
        }
    }

    fn invitation(&self, fingerprint: Fingerprint) -> Invitation {
        let expires = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        Invitation::new(
            InvitationId([7; 8]),
            "fake-kiosk",
            &["127.0.0.1".into()],
            self.addr.port(),
            fingerprint,
            expires,
        )
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    b: Behavior,
    obs: Arc<Mutex<Observed>>,
) {
    let config = DeviceConfig {
        device_name: "fake-kiosk".into(),
        consent_timeout: b.consent_timeout,
        ..DeviceConfig::default()
    };
    let mut s = DeviceSession::new(Instant::now(), config, 1);
    let mut view = None;
    let mut sent_updates = 0u32;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut out = Vec::new();
        let mut close = false;
        while let Some(o) = s.poll_output() {
            let now = Instant::now();
            match o {
                DeviceOutput::Send(m) => out.extend(encode(&m).unwrap()),
                DeviceOutput::Authenticate(req) => {
                    let result = match (&req, b.refuse) {
                        (_, Some(r)) => Err((r, "refused by the test".to_string())),
                        (AuthRequest::Invitation { id, password }, None)
                            if password.as_str() == PASSWORD =>
                        {
                            Ok(ExpertIdentity {
                                name: format!("invitation {id}"),
                                method: AuthMethod::Invitation { id: *id },
                                says: None,
                            })
                        }
                        _ => Err((
                            ByeReason::WrongPassword { tries_left: 2 },
                            "wrong password".to_string(),
                        )),
                    };
                    s.handle(now, DeviceInput::AuthDecided(result));
                }
                DeviceOutput::ShowPrompt(p) => match b.answer {
                    Answer::Accept | Answer::Decline => {
                        let accept = matches!(b.answer, Answer::Accept);
                        let c = LocalCommand::Answer {
                            prompt: p.id,
                            accept,
                        };
                        s.handle(now, DeviceInput::Local(c))
                    }
                    Answer::Ignore => {}
                },
                DeviceOutput::StartCapture(token) => {
                    view = Some(token);
                    out.extend(
                        encode(&Message::ScreenInfo(ScreenInfo {
                            width: W,
                            height: H,
                            format: WireFormat::Xrgb8888,
                            generation: 1,
                        }))
                        .unwrap(),
                    );
                }
                DeviceOutput::UpdateRequested { incremental }
                    if view.as_ref().is_some_and(|v| v.is_live()) =>
                {
                    if !incremental {
                        out.extend(
                            encode(&update(
                                1,
                                Rect {
                                    x: 0,
                                    y: 0,
                                    w: W,
                                    h: H,
                                    encoding: Encoding::Raw(Payload(pattern())),
                                },
                            ))
                            .unwrap(),
                        );
                    } else if sent_updates < 5 {
                        sent_updates += 1;
                        out.extend(
                            encode(&update(
                                1 + sent_updates,
                                Rect {
                                    x: 8 * sent_updates as u16,
                                    y: 0,
                                    w: 8,
                                    h: 4,
                                    encoding: Encoding::Solid(0x0010_2030 * sent_updates),
                                },
                            ))
                            .unwrap(),
                        );
                    }
                }
                DeviceOutput::ShowChat(t) => obs.lock().unwrap().chats.push(t),
                DeviceOutput::Close { .. } => close = true,
                _ => {}
            }
        }
        if !out.is_empty() && tls.write_all(&out).await.is_err() {
            return;
        }
        if close {
            let _ = tls.shutdown().await;
            return;
        }
        let deadline = s
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            r = tls.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    s.handle(Instant::now(), DeviceInput::PeerClosed { error: None });
                    return;
                }
                Ok(n) => s.handle(Instant::now(), DeviceInput::Received(buf[..n].to_vec())),
            },
            _ = tokio::time::sleep_until(deadline.into()) => s.handle_timeout(Instant::now()),
        }
    }
}

struct Run {
    dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn invitation_file(&self, inv: &Invitation) -> String {
        let p = self.path("device.shoulder");
        std::fs::write(&p, inv.to_file()).unwrap();
        p.display().to_string()
    }

    fn password_file(&self, pw: &str) -> String {
        let p = self.path("password");
        std::fs::write(&p, format!("{pw}\n")).unwrap();
        p.display().to_string()
    }

    fn shoulder(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_shoulder"))
            .args(args)
            .env("SHOULDER_CONFIG_DIR", self.path("config"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails_with(o: &Output, sentence: &str) {
    assert!(!o.status.success(), "expected failure, got {o:?}");
    let err = stderr(o);
    assert_eq!(
        err.lines().last().unwrap_or(""),
        sentence,
        "full stderr:\n{err}"
    );
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn snapshot_writes_the_device_screen_as_png() {
    let dev = FakeDevice::start(Behavior::default());
    let run = Run::new();
    let inv = run.invitation_file(&dev.invitation(dev.fingerprint));
    let pw = run.password_file(PASSWORD);
    let out = run.path("shot.png");
    let o = run.shoulder(&[
        "snapshot",
        &inv,
        "--password-file",
        &pw,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (w, h, rgb) = read_png(&out);
    assert_eq!((w, h), (u32::from(W), u32::from(H)));
    let expected: Vec<u8> = pattern()
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    assert_eq!(rgb, expected);
}

#[test]
fn watch_writes_one_json_line_per_update_with_the_framebuffer_hash() {
    let dev = FakeDevice::start(Behavior::default());
    let run = Run::new();
    let inv = dev.invitation(dev.fingerprint).to_text();
    let pw = run.password_file(PASSWORD);
    let stats = run.path("stats.jsonl");
    let o = run.shoulder(&[
        "watch",
        &inv,
        "--password-file",
        &pw,
        "--stats-json",
        stats.to_str().unwrap(),
        "--frames",
        "4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&stats).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    let mut last_t = 0;
    for (i, l) in lines.iter().enumerate() {
        let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["bytes", "fb_hash", "rects", "t_mono_us", "t_recv_us"],
            "{l}"
        );
        let hash = format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(&expected_fb(i as u32))
        );
        assert_eq!(l["fb_hash"], hash.as_str(), "update {i}");
        assert_eq!(l["rects"], 1);
        let t = l["t_mono_us"].as_u64().unwrap();
        assert!(t >= last_t);
        last_t = t;
        // Read before it was applied.
        let read = l["t_recv_us"].as_u64().unwrap();
        assert!(read <= t, "{l}");
    }
    // The full frame: 4-byte length + tag/seq/… + raw pixels.
    let full = lines[0]["bytes"].as_u64().unwrap();
    let pixels = u64::from(W) * u64::from(H) * 4;
    assert!(full > pixels && full < pixels + 64, "{full}");
    let small = lines[1]["bytes"].as_u64().unwrap();
    assert!(small < 64, "a solid rect is a few bytes, got {small}");
}

#[test]
fn chat_reaches_the_device() {
    let dev = FakeDevice::start(Behavior::default());
    let run = Run::new();
    let inv = run.invitation_file(&dev.invitation(dev.fingerprint));
    let pw = run.password_file(PASSWORD);
    let o = run.shoulder(&["chat", &inv, "Hello from support", "--password-file", &pw]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if dev.observed.lock().unwrap().chats == ["Hello from support"] {
            break;
        }
        assert!(Instant::now() < deadline, "chat never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn failures_each_have_their_own_sentence() {
    let run = Run::new();
    let shot = run.path("x.png");
    let shot = shot.to_str().unwrap();
    let snapshot = |dev: &FakeDevice, fp: Fingerprint, pw: &str| {
        let inv = run.invitation_file(&dev.invitation(fp));
        let pw = run.password_file(pw);
        run.shoulder(&["snapshot", &inv, "--password-file", &pw, "-o", shot])
    };

    let dev = FakeDevice::start(Behavior::default());
    assert_fails_with(
        &snapshot(&dev, dev.fingerprint, "wrong"),
        "Wrong password (2 tries left).",
    );
    assert_fails_with(
        &snapshot(&dev, Fingerprint([0xaa; 32]), PASSWORD),
        "The device's certificate does not match the invitation — do not connect; ask for a new invitation.",
    );

    let dev = FakeDevice::start(Behavior {
        answer: Answer::Decline,
        ..Behavior::default()
    });
    assert_fails_with(
        &snapshot(&dev, dev.fingerprint, PASSWORD),
        "The device declined.",
    );

    let dev = FakeDevice::start(Behavior {
        answer: Answer::Ignore,
        consent_timeout: Duration::from_secs(1),
        ..Behavior::default()
    });
    assert_fails_with(
        &snapshot(&dev, dev.fingerprint, PASSWORD),
        "Nobody at the device answered in time — ask someone to stand by and try again.",
    );

    for (reason, sentence) in [
        (
            ByeReason::Busy,
            "Another expert is already connected to this device — try again later.",
        ),
        (
            ByeReason::InvitationExpired { secs_ago: 300 },
            "Invitation expired 5 minutes ago — ask for a new one.",
        ),
        (
            ByeReason::InvitationRevoked,
            "The invitation was revoked on the device — ask for a new one.",
        ),
    ] {
        let dev = FakeDevice::start(Behavior {
            refuse: Some(reason),
            ..Behavior::default()
        });
        assert_fails_with(&snapshot(&dev, dev.fingerprint, PASSWORD), sentence);
    }

    // Nothing listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dev = FakeDevice::start(Behavior::default());
    let mut inv = dev.invitation(dev.fingerprint);
    inv.port = port;
    let f = run.invitation_file(&inv);
    let pw = run.password_file(PASSWORD);
    assert_fails_with(
        &run.shoulder(&["snapshot", &f, "--password-file", &pw, "-o", shot]),
        &format!(
            "Nothing answers at 127.0.0.1:{port} — check the address and that the agent runs on the device."
        ),
    );
}

#[test]
fn version_names_the_protocol() {
    let o = Run::new().shoulder(&["--version"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.trim(),
        format!(
            "shoulder {} (protocol {})",
            env!("CARGO_PKG_VERSION"),
            shoulder_proto::PROTOCOL_VERSION
        )
    );
}

#[test]
fn the_app_without_a_display_says_what_to_do() {
    let run = Run::new();
    let o = Command::new(env!("CARGO_BIN_EXE_shoulder"))
        .env("SHOULDER_CONFIG_DIR", run.path("config"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("WAYLAND_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_fails_with(
        &o,
        "No display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set) — run it on a desktop, or use snapshot, watch or chat, which need no window.",
    );
}
