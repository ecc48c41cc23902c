//! Session records (`[record]`): the real agent records a session over real
//! TLS on loopback; the real `shoulder` binary replays it (`play --png`) to
//! the screen the expert saw and checks it (`verify`) against the device's
//! certificate, finding a changed byte, a removed chunk, a cut file and a
//! record signed by another device.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoulder::target::Target;
use shoulder_agent::config::RecordMode;
use shoulder_proto::record::{ChunkKind, chunks};
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_cli::{CliExpert, stderr};
use shoulder_testkit::expert::ClientExpert;
use shoulder_testkit::synthetic::{Synthetic, capture_backends, raw_screen};
use shoulder_testkit::wait::wait_until;

const PW: &str = "blue-harbour-42";
const POLL: Duration = Duration::from_millis(20);

/// xxh3 of a device frame with its X bytes zeroed: the hash `watch
/// --stats-json` and `play` print for that picture.
fn frame_hash(frame: &[u8]) -> String {
    let mut f = frame.to_vec();
    for px in f.chunks_exact_mut(4) {
        px[3] = 0;
    }
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&f))
}

/// The `record-closed` audit record, once the session's record is signed.
async fn closed_record(agent: &Agent) -> Value {
    let start = Instant::now();
    loop {
        if let Some(r) = agent
            .audit_records()
            .into_iter()
            .find(|r| r["event"] == "record-closed")
        {
            return r;
        }
        assert!(start.elapsed() < WAIT, "no record-closed audit record");
        tokio::time::sleep(POLL).await;
    }
}

fn device_cert(agent: &Agent) -> PathBuf {
    agent.config.state_dir.join("device.crt")
}

/// `shoulder play FILE --png DIR --every-ms 0`: its output, and the final
/// screen hash it printed.
async fn play(ex: &CliExpert, record: &Path, dir: &Path) -> (String, String) {
    let o = ex
        .run(&[
            "play",
            record.to_str().unwrap(),
            "--png",
            dir.to_str().unwrap(),
            "--every-ms",
            "0",
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let hash = out
        .rsplit_once("Final screen hash: ")
        .map(|(_, h)| h.trim().to_string())
        .unwrap_or_else(|| panic!("no final hash in {out}"));
    (out, hash)
}

async fn verify(ex: &CliExpert, record: &Path, cert: &Path) -> std::process::Output {
    ex.run(&[
        "verify",
        record.to_str().unwrap(),
        "--device-cert",
        cert.to_str().unwrap(),
    ])
    .await
}

/// Byte ranges of each chunk in a record file.
fn chunk_spans(file: &[u8]) -> Vec<(ChunkKind, usize, usize)> {
    let starts: Vec<(ChunkKind, usize)> = chunks(file)
        .map(|c| c.map(|c| (c.kind, c.offset)).unwrap())
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(i, &(k, at))| (k, at, starts.get(i + 1).map_or(file.len(), |n| n.1)))
        .collect()
}

/// Noise no compressor shrinks.
fn xorshift(seed: u32) -> impl FnMut() -> u32 {
    let mut x = seed.max(1);
    move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    }
}

/// An agent recording a raw-file screen an application draws into, and
/// `shoulder watch` (with `watch_args`) viewing it.
struct Watched {
    agent: Agent,
    ex: CliExpert,
    raw: shoulder_capture::rawfile::RawFileScreen,
    stats: PathBuf,
    watch: tokio::task::JoinHandle<std::process::Output>,
    answers: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Watched {
    async fn start(
        (w, h): (u32, u32),
        tweak: impl FnOnce(&mut shoulder_agent::config::Config),
        watch_args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (raw, spec) = raw_screen(&dir.path().join("screen.raw"), w, h);
        let agent = Agent::with_backends(None, capture_backends(&spec), |c| {
            c.record.mode = RecordMode::Screen;
            tweak(c);
        })
        .await;
        let ex = CliExpert::new();
        let (inv, pw) = ex.invited(&agent, "kiosk.shoulder", PW).await;
        let answers = agent.answer_prompts(1, true).await;
        let stats = ex.path("stats.jsonl");
        let mut args = CliExpert::watch_args(&inv, &pw, stats.to_str().unwrap());
        args.extend(watch_args);
        let mut c = ex.command(&args);
        let watch = tokio::task::spawn_blocking(move || c.output().unwrap());
        Self {
            agent,
            ex,
            raw,
            stats,
            watch,
            answers,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_to_the_screen_the_expert_saw_and_any_change_is_caught() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |c| {
        c.record.mode = RecordMode::Screen;
    })
    .await;
    let ex = CliExpert::new();
    let (invitation, _) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(2, true).await;
    let expert = ClientExpert::start(
        Target::parse(&invitation).unwrap(),
        None,
        Some(PW),
        "Ann Expert",
    );
    let view = tokio::task::spawn_blocking({
        let screen = screen.clone();
        move || {
            assert!(
                wait_until(WAIT, POLL, || expert.has_frame()),
                "no first picture: {:?} {:?}",
                expert.ended(),
                expert.event_summary()
            );
            expert.send(UserAction::RequestControl);
            assert!(
                wait_until(WAIT, POLL, || matches!(
                    expert.state(),
                    ExpertState::Viewing {
                        control: ControlState::Granted { .. }
                    }
                )),
                "control was not granted"
            );
            // The expert clicks the kiosk's button three times; the
            // screen changes with each.
            let (x, y) = screen.controls.counter_button_centre();
            for n in 1..=3 {
                expert.click(u32::from(x), u32::from(y));
                assert!(
                    wait_until(WAIT, POLL, || screen.controls.counter() == n),
                    "click {n} did not reach the kiosk"
                );
            }
            // What the expert sees settles on the device's screen.
            let device = screen.frame();
            let seen = wait_until(WAIT, POLL, || {
                expert.screen().is_some_and(|s| {
                    s == shoulder_testkit::qemu::Screen::from_xrgb8888(320, 200, &device)
                })
            });
            assert!(seen, "the expert's view never matched the device screen");
            expert.send(UserAction::Disconnect);
            frame_hash(&device)
        }
    });
    let seen_hash = view.await.unwrap();
    answers.await.unwrap();
    let closed = closed_record(&agent).await;
    assert_eq!(closed["complete"], true, "{closed}");
    assert_eq!(closed["screen"], "recorded", "{closed}");
    assert_eq!(closed["expert"], "Someone with an invitation", "{closed}");
    let record = PathBuf::from(closed["file"].as_str().unwrap());
    assert!(record.starts_with(agent.config.state_dir.join("records")));
    let file = std::fs::read(&record).unwrap();
    let kinds: Vec<ChunkKind> = chunk_spans(&file).iter().map(|s| s.0).collect();
    assert!(kinds.contains(&ChunkKind::Input), "the clicks are recorded");
    assert!(kinds.iter().filter(|k| **k == ChunkKind::Screen).count() > 3);

    // Replayed, the record ends on the picture the expert saw.
    let (out, hash) = play(&ex, &record, &ex.path("frames")).await;
    assert_eq!(hash, seen_hash, "{out}");
    assert!(out.contains("consent-answered"), "{out}");
    assert!(out.contains("input: pointer at"), "{out}");
    let pngs = std::fs::read_dir(ex.path("frames")).unwrap().count();
    assert!(pngs >= 4, "one picture per change: {pngs}");

    // Whole, it verifies, and names the hash the audit log holds.
    let cert = device_cert(&agent);
    let o = verify(&ex, &record, &cert).await;
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{said}{}", stderr(&o));
    assert!(said.contains("whole and signed by the device"), "{said}");
    assert!(
        said.contains(closed["hash"].as_str().unwrap()),
        "{said} vs {closed}"
    );
    assert!(
        said.contains("Expert: Someone with an invitation"),
        "{said}"
    );

    let spans = chunk_spans(&file);
    let screen_chunk = spans.iter().find(|s| s.0 == ChunkKind::Screen).unwrap();
    let bad = |name: &str, bytes: Vec<u8>| {
        let p = ex.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // One byte of a screen update changed.
    let mut changed = file.clone();
    changed[screen_chunk.1 + 40] ^= 0x01;
    // An input chunk taken out (a click hidden).
    let input = spans.iter().find(|s| s.0 == ChunkKind::Input).unwrap();
    let mut removed = file[..input.1].to_vec();
    removed.extend_from_slice(&file[input.2..]);
    // The end cut off.
    let cut = file[..file.len() - 100].to_vec();
    for (name, bytes, expected) in [
        ("changed.shrec", changed, "was changed"),
        ("removed.shrec", removed, "removed before byte"),
        ("cut.shrec", cut, "is cut off"),
    ] {
        let p = bad(name, bytes);
        let o = verify(&ex, &p, &cert).await;
        assert!(!o.status.success(), "{name} verified");
        let e = stderr(&o);
        assert!(
            e.contains("FAILED verification") && e.contains(expected),
            "{name}: {e}"
        );
    }
    // Another device's certificate did not sign it.
    let other = Agent::pattern(None, |_| {}).await;
    let o = verify(&ex, &record, &device_cert(&other)).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("signature does not match"),
        "{}",
        stderr(&o)
    );
    other.stop().await;
    // Nobody's notes: a record is not a certificate.
    let o = verify(&ex, &record, &record).await;
    assert!(
        stderr(&o).contains("is not a device certificate"),
        "{}",
        stderr(&o)
    );
    agent.stop().await;
}

/// A careless application redraws the framebuffer at random while the
/// expert watches with `shoulder watch`; the replay ends on the hash of the
/// last picture `watch` applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_redrawn_by_an_application_replays_to_what_watch_saw() {
    let (w, h) = (480u32, 320u32);
    let Watched {
        agent,
        ex,
        raw,
        stats,
        watch,
        answers,
        _dir,
    } = Watched::start((w, h), |_| {}, &["--duration", "6"]).await;
    // Random rectangles of noise and flat colour for two seconds, then
    // still: the last picture is the one the expert ends on.
    let mut rnd = xorshift(0x9e37_79b9);
    let mut frame = vec![0u8; (w * h * 4) as usize];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let (rx, ry) = (rnd() % (w - 64), rnd() % (h - 48));
        let (rw, rh) = (16 + rnd() % 48, 8 + rnd() % 40);
        let noisy = rnd().is_multiple_of(2);
        let flat = rnd();
        for y in ry..ry + rh {
            for x in rx..rx + rw {
                let px = if noisy { rnd() } else { flat };
                let at = ((y * w + x) * 4) as usize;
                frame[at..at + 4].copy_from_slice(&px.to_le_bytes());
            }
        }
        raw.write_at(&frame, 0).unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let o = watch.await.unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("This device records its sessions"),
        "the expert is told: {}",
        stderr(&o)
    );
    answers.await.unwrap();
    let text = std::fs::read_to_string(&stats).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert!(text.lines().count() > 5, "the screen changed: {text}");
    assert_eq!(
        last["fb_hash"],
        frame_hash(&frame).as_str(),
        "watch saw the last picture"
    );

    let closed = closed_record(&agent).await;
    let record = PathBuf::from(closed["file"].as_str().unwrap());
    let (out, hash) = play(&ex, &record, &ex.path("frames")).await;
    assert_eq!(last["fb_hash"], hash.as_str(), "{out}");
    let o = verify(&ex, &record, &device_cert(&agent)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    agent.stop().await;
}

/// A session past its cap goes on; its record stops taking the screen,
/// says why, and still verifies. Metadata-only records hold no screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_cap_a_record_keeps_the_metadata_and_the_session_goes_on() {
    let (w, h) = (640u32, 480u32);
    let Watched {
        agent,
        ex,
        raw,
        stats,
        watch,
        answers,
        _dir,
    } = Watched::start(
        (w, h),
        |c| {
            c.record.max_session_mib = 1;
            c.record.max_total_mib = 1;
        },
        &["--frames", "12"],
    )
    .await;
    // Noise no compressor shrinks: each frame is about 1.2 MB.
    let mut rnd = xorshift(1);
    let writer = tokio::spawn(async move {
        for _ in 0..400 {
            let frame: Vec<u8> = (0..w * h).flat_map(|_| rnd().to_le_bytes()).collect();
            if raw.write_at(&frame, 0).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let o = watch.await.unwrap();
    writer.abort();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&stats).unwrap().lines().count(), 12);
    answers.await.unwrap();
    let closed = closed_record(&agent).await;
    assert_eq!(closed["screen"], "stopped", "{closed}");
    assert_eq!(closed["complete"], true, "{closed}");
    assert!(closed["bytes"].as_u64().unwrap() < (1 << 20) + (4 << 20));
    let degraded: Vec<Value> = agent
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "record-degraded")
        .collect();
    assert_eq!(degraded.len(), 1);
    assert!(
        degraded[0]["why"]
            .as_str()
            .unwrap()
            .contains("max_session_mib")
    );
    let record = PathBuf::from(closed["file"].as_str().unwrap());
    let o = verify(&ex, &record, &device_cert(&agent)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = ex
        .run(&[
            "play",
            record.to_str().unwrap(),
            "--png",
            ex.path("f").to_str().unwrap(),
        ])
        .await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("screen=stopped"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    agent.stop().await;

    // Metadata only: who did what, no picture.
    let agent = Agent::pattern(None, |c| c.record.mode = RecordMode::Metadata).await;
    let (inv, pw) = ex.invited(&agent, "m.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let o = ex
        .run(&["chat", &inv, "--password-file", &pw, "hello from Ann"])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let closed = closed_record(&agent).await;
    assert_eq!(closed["screen"], "not recorded");
    let file = std::fs::read(closed["file"].as_str().unwrap()).unwrap();
    let kinds: Vec<ChunkKind> = chunk_spans(&file).iter().map(|s| s.0).collect();
    assert!(!kinds.contains(&ChunkKind::Screen), "{kinds:?}");
    let events: Vec<String> = chunks(&file)
        .filter_map(|c| c.ok())
        .filter(|c| c.kind == ChunkKind::Event)
        .map(|c| String::from_utf8_lossy(c.payload).into_owned())
        .collect();
    assert!(
        events.iter().any(|e| e.contains("hello from Ann")),
        "{events:?}"
    );
    agent.stop().await;
}

/// Old records are removed to make room for a new session's cap, oldest
/// first; an agent without `[record]` writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_records_make_room_and_an_unrecorded_device_keeps_none() {
    let agent = Agent::pattern(None, |c| {
        c.record.mode = RecordMode::Metadata;
        c.record.max_session_mib = 2;
        c.record.max_total_mib = 3;
    })
    .await;
    let dir = agent.config.record_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("2020-01-01T000000Z-old.shrec"), vec![0u8; 1 << 20]).unwrap();
    std::fs::write(
        dir.join("2021-01-01T000000Z-newer.shrec"),
        vec![0u8; 1 << 20],
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), b"kept").unwrap();
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "m.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let o = ex.run(&["chat", &inv, "--password-file", &pw, "hi"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    closed_record(&agent).await;
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        names[0], "2021-01-01T000000Z-newer.shrec",
        "the oldest went"
    );
    assert_eq!(names[2], "notes.txt");
    agent.stop().await;

    let agent = Agent::pattern(None, |_| {}).await;
    let (inv, pw) = ex.invited(&agent, "n.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let o = ex.run(&["chat", &inv, "--password-file", &pw, "hi"]).await;
    assert!(o.status.success());
    assert!(!stderr(&o).contains("records its sessions"));
    answers.await.unwrap();
    assert!(!agent.config.record_dir().exists());
    agent.stop().await;
}

/// An agent stopping mid-session signs and closes the record before it
/// says it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_closes_the_record_of_the_session_it_ends() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |c| {
        c.record.mode = RecordMode::Screen;
    })
    .await;
    let ex = CliExpert::new();
    let (invitation, _) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let expert = ClientExpert::start(Target::parse(&invitation).unwrap(), None, Some(PW), "Ann");
    let expert = tokio::task::spawn_blocking(move || {
        assert!(wait_until(WAIT, POLL, || expert.has_frame()), "no picture");
        expert
    })
    .await
    .unwrap();
    answers.await.unwrap();
    let records = agent.stop().await;
    let names: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    let closed = names.iter().position(|n| *n == "record-closed");
    let stopped = names.iter().position(|n| *n == "agent-stopped");
    assert!(
        closed.is_some() && closed < stopped,
        "record-closed before agent-stopped: {names:?}"
    );
    let closed = &records[closed.unwrap()];
    assert_eq!(closed["complete"], true, "{closed}");
    // Its drop blocks (it says goodbye): off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(expert))
        .await
        .unwrap();
}

/// The audit log keeps a session's first 50 chat lines; the record, which
/// is bounded on its own, keeps them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_keeps_every_chat_line_the_audit_log_only_counts() {
    let agent = Agent::pattern(None, |c| c.record.mode = RecordMode::Metadata).await;
    let ex = CliExpert::new();
    let (invitation, _) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let expert = ClientExpert::start(Target::parse(&invitation).unwrap(), None, Some(PW), "Ann");
    tokio::task::spawn_blocking(move || {
        assert!(wait_until(
            WAIT,
            POLL,
            || shoulder_testkit::expert::viewing(expert.state())
        ));
        for i in 0..60 {
            expert.send(UserAction::Chat(format!("line {i}")));
        }
        expert.send(UserAction::Disconnect);
    })
    .await
    .unwrap();
    answers.await.unwrap();
    let closed = closed_record(&agent).await;
    let file = std::fs::read(closed["file"].as_str().unwrap()).unwrap();
    let lines: Vec<String> = chunks(&file)
        .filter_map(|c| c.ok())
        .filter(|c| c.kind == ChunkKind::Event)
        .filter_map(|c| serde_json::from_slice::<Value>(c.payload).ok())
        .filter(|v| v["event"] == "chat")
        .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(lines.len(), 60, "{lines:?}");
    assert_eq!(lines[59], "line 59");
    let audited = agent
        .audit_records()
        .into_iter()
        .filter(|r| r["event"] == "chat")
        .count();
    assert_eq!(audited, 50);
    agent.stop().await;
}

/// A connection cut mid-session (a pulled cable): the session resumes on a
/// new connection and its record goes on in the same file, which replays
/// to the picture the expert ends on and still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_stays_one_record_that_replays_to_its_end() {
    use shoulder_testkit::client_session::{Session, accept_all, controlling, viewing};
    let screen = Synthetic::new(320, 240);
    let agent = Agent::with_backends(None, screen.backends(), |c| {
        c.record.mode = RecordMode::Screen;
    })
    .await;
    let relay = shoulder_testkit::relay::Relay::start(agent.addr).unwrap();
    let _prompts = accept_all(&agent).await;
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, viewing).await;
    s.actions.send(UserAction::RequestControl).await.unwrap();
    s.wait("control", WAIT, controlling).await;
    s.in_sync(&screen).await;
    relay.cut();
    s.wait("resuming", WAIT, |e| {
        matches!(e, shoulder::client::ClientEvent::Resuming)
    })
    .await;
    s.wait("control again", WAIT, controlling).await;
    // A click on the new connection changes the screen.
    let (cx, cy) = screen.controls.counter_button_centre();
    for buttons in [1, 0] {
        s.actions
            .send(UserAction::Pointer(shoulder_proto::Pointer {
                x: cx,
                y: cy,
                buttons: shoulder_proto::Buttons(buttons),
                wheel: 0,
                hwheel: 0,
            }))
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    while screen.controls.counter() == 0 {
        assert!(t0.elapsed() < WAIT, "the click never arrived");
        tokio::time::sleep(POLL).await;
    }
    s.in_sync(&screen).await;
    let seen = shoulder::client::fb_hash(s.view.lock().fb.as_ref().unwrap());
    s.actions.send(UserAction::Disconnect).await.unwrap();
    s.ended(WAIT).await;

    let closed = closed_record(&agent).await;
    let records: Vec<_> = std::fs::read_dir(agent.config.record_dir())
        .unwrap()
        .collect();
    assert_eq!(records.len(), 1, "one session, one record");
    let record = PathBuf::from(closed["file"].as_str().unwrap());
    let ex = CliExpert::new();
    let (out, hash) = play(&ex, &record, &ex.path("frames")).await;
    assert_eq!(hash, seen, "{out}");
    assert!(
        out.contains("resumed"),
        "the resume is in the record: {out}"
    );
    let o = verify(&ex, &record, &device_cert(&agent)).await;
    assert!(o.status.success(), "{}", stderr(&o));
    agent.stop().await;
}
