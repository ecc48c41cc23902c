//! Faults from an authenticated peer and from the device, over real TLS on
//! loopback: input floods are rate-limited, a failing input device revokes
//! control with a reason while viewing goes on.

use std::time::{Duration, Instant};

use shoulder_agent::backends::{Call, CaptureBackend, CaptureError, FrameSource};
use shoulder_agent::control::Request;
use shoulder_capture::{Frame, ScreenGeometry};
use shoulder_proto::session::{ExpertEvent, InjectEvent, UserAction};
use shoulder_proto::{ControlEndReason, Key};
use shoulder_testkit::agent::*;
use shoulder_testkit::pki::*;
use shoulder_testkit::tls_expert::*;

fn injected(agent: &Agent) -> Vec<InjectEvent> {
    agent.sink.injected()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_flood_is_rate_limited_and_releases_always_pass() {
    const RATE: u32 = 100;
    const FLOOD: u16 = 3000;
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.max_input_rate = RATE).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let t0 = Instant::now();
    for i in 0..FLOOD {
        let code = 2 + (i % 50);
        expert.act(UserAction::Key(Key { code, down: true })).await;
        expert.act(UserAction::Key(Key { code, down: false })).await;
    }
    // Everything sent has been handled once a round trip comes back.
    expert.act(UserAction::Chat("done".into())).await;
    event(&mut device, "chat").await;
    let elapsed = t0.elapsed().as_secs_f64();
    let events = injected(&agent);
    let presses = events
        .iter()
        .filter(|e| matches!(e, InjectEvent::Key(k) if k.down))
        .count();
    let releases = events
        .iter()
        .filter(|e| matches!(e, InjectEvent::Key(k) if !k.down))
        .count();
    let allowed = f64::from(RATE) * (1.0 + elapsed) + 1.0;
    assert!(
        (presses as f64) <= allowed,
        "{presses} presses in {elapsed:.2}s passed a limit of {RATE}/s"
    );
    assert!(
        presses >= RATE as usize / 2,
        "only {presses} presses passed"
    );
    assert_eq!(releases, usize::from(FLOOD), "every release passes");
    agent.ctl_ok(Request::End).await;
    let records = agent.stop().await;
    let limited = records
        .iter()
        .filter(|r| r["event"] == "input-rate-limited")
        .count();
    assert!(
        (1..=20).contains(&limited),
        "audited per burst, not per event: {limited}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_input_device_revokes_control_and_viewing_goes_on() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    agent.sink.fail_injection(true);
    expert
        .act(UserAction::Key(Key {
            code: 30,
            down: true,
        }))
        .await;
    expert
        .wait_for("control ended", |e| {
            matches!(e, ExpertEvent::ControlEnded(ControlEndReason::DeviceFault))
        })
        .await;
    event(&mut device, "control-revoked").await;
    // Still viewing: updates keep coming.
    let before = expert.updates;
    expert.act(UserAction::RefreshScreen).await;
    expert.wait_updates(before + 1).await;
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["phase"], "viewing");
    tokio::time::sleep(Duration::from_millis(50)).await;
    agent.ctl_ok(Request::End).await;
    let records = agent.stop().await;
    let failed = records
        .iter()
        .find(|r| r["event"] == "injection-failed")
        .expect("injection-failed record");
    assert!(
        failed["detail"]
            .as_str()
            .unwrap()
            .contains("No such device"),
        "{failed}"
    );
    let revoked = records
        .iter()
        .find(|r| r["event"] == "control-revoked")
        .expect("control-revoked record");
    assert_eq!(revoked["reason"], "DeviceFault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_sessions() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    // /dev/full: every write fails with "No space left on device".
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.audit_log = "/dev/full".into();
    })
    .await;
    let mut expert = TlsExpert::offer(&agent, Some(&ann)).await;
    let (reason, detail, _) = expert.closed().await;
    assert_eq!(reason, shoulder_proto::ByeReason::AuditFailure);
    assert!(detail.contains("audit"), "{detail}");
    let status = agent.ctl_ok(Request::Status).await;
    assert!(status["session"].is_null(), "{status}");
    // Not stopped through `stop`: its final flush fails on /dev/full too.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_failing_mid_session_ends_it_with_a_reason() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    // Rotation will fail: the rotated name is taken by a non-empty directory.
    std::fs::create_dir_all(dir.path().join("audit.jsonl.1/taken")).unwrap();
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.audit_log = log.clone();
        c.audit_max_bytes = 8 * 1024;
        c.audit_keep = 1;
    })
    .await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let line = "x".repeat(400);
    let mut sent = 0;
    let ended = loop {
        assert!(sent < 100, "the session outlived a failing audit log");
        expert.act(UserAction::Chat(line.clone())).await;
        sent += 1;
        event(&mut device, "chat").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = agent.ctl_ok(Request::Status).await;
        if status["session"].is_null() {
            break expert.closed().await;
        }
    };
    assert_eq!(ended.0, shoulder_proto::ByeReason::AuditFailure);
    // Injection stopped and keys went up before the end.
    assert!(agent.sink.calls().contains(&Call::ReleaseAll));
    // New sessions are refused while the log cannot be written.
    let mut next = TlsExpert::offer(&agent, Some(&ann)).await;
    assert_eq!(
        next.closed().await.0,
        shoulder_proto::ByeReason::AuditFailure
    );
    // Every line in the log is whole.
    let records = audit_records(&log);
    assert!(records.iter().any(|r| r["event"] == "chat"));
}

/// The test pattern, or "device gone" while `down` (open and capture).
struct Flaky {
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    inner: shoulder_agent::backends::PatternCapture,
}

/// ENODEV, as reads of a DRM device that went away fail.
fn gone() -> std::io::Error {
    std::io::Error::from_raw_os_error(19)
}

impl Flaky {
    /// An agent whose screen source is gone while `down` is set.
    async fn agent(pki: &Pki, down: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Agent {
        let capture = Flaky {
            down: down.clone(),
            inner: shoulder_agent::backends::PatternCapture::new(64, 48),
        };
        Agent::start_with_capture(
            Some(&pki.ca_pem),
            |_| {},
            Some(std::sync::Arc::new(capture)),
        )
        .await
    }
}

struct FlakySource {
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    inner: Box<dyn FrameSource>,
}

impl CaptureBackend for Flaky {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CaptureError::Open {
                path: "/dev/dri/card0".into(),
                source: gone(),
            });
        }
        Ok(Box::new(FlakySource {
            down: self.down.clone(),
            inner: self.inner.open()?,
        }))
    }
}

impl FrameSource for FlakySource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        self.inner.geometry()
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CaptureError::Io {
                what: "reading the framebuffer",
                path: "/dev/dri/card0".into(),
                source: gone(),
            });
        }
        self.inner.capture()
    }

    fn describe(&self) -> String {
        "flaky test pattern".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expert_sees_screen_unavailable_once_and_the_screen_again() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let down = std::sync::Arc::new(AtomicBool::new(false));
    let agent = Flaky::agent(&pki, &down).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    expert.wait_updates(1).await;
    down.store(true, Ordering::SeqCst);
    let gone = expert
        .wait_for("screen unavailable", |e| {
            matches!(e, ExpertEvent::ScreenUnavailable(_))
        })
        .await;
    let ExpertEvent::ScreenUnavailable(detail) = gone else {
        unreachable!()
    };
    assert!(detail.contains("No such device"), "{detail}");
    // Down for a few retries: the expert is told once; the session lives.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    down.store(false, Ordering::SeqCst);
    expert
        .wait_for("screen back", |e| matches!(e, ExpertEvent::Screen(_)))
        .await;
    let before = expert.updates;
    expert.wait_updates(before + 1).await;
    assert!(
        !expert
            .events
            .iter()
            .any(|e| matches!(e, ExpertEvent::ScreenUnavailable(_))),
        "told more than once: {:?}",
        expert.events
    );
    agent.ctl_ok(Request::End).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_request_storm_is_coalesced_and_paced() {
    use tokio::io::AsyncWriteExt;
    const FPS: u32 = 20;
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.max_fps = FPS).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    expert.wait_updates(1).await;
    // 20000 full-screen requests in one burst, straight onto the wire.
    let one = shoulder_proto::frame::encode(&shoulder_proto::Message::UpdateRequest {
        incremental: false,
    })
    .unwrap();
    let storm: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * 20_000)
        .collect();
    let t0 = Instant::now();
    expert.tls.write_all(&storm).await.unwrap();
    expert.tls.flush().await.unwrap();
    let before = expert.updates;
    expert.wait_updates(before + 10).await;
    let elapsed = t0.elapsed();
    // At most one update per 1/FPS: ten take at least nine intervals.
    let floor = Duration::from_secs(9) / FPS;
    assert!(
        elapsed >= floor.mul_f32(0.9),
        "10 updates in {elapsed:?}: not paced to {FPS}/s"
    );
    // Still responsive, and still the same session.
    expert.act(UserAction::Chat("still here".into())).await;
    let chat = event(&mut device, "chat").await;
    assert_eq!(chat["text"], "still here");
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["phase"], "controlling");
    agent.ctl_ok(Request::End).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_required_false_lets_sessions_run_on_a_full_disk() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.audit_log = "/dev/full".into();
        c.audit_required = false;
    })
    .await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    expert.wait_updates(1).await;
    agent.ctl_ok(Request::End).await;
    assert_eq!(
        expert.closed().await.0,
        shoulder_proto::ByeReason::EndedByUser
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_granted_before_the_first_screen_starts_with_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    // No screen yet when control is granted (a display still coming up, or
    // a person answering both prompts faster than the first capture).
    let down = std::sync::Arc::new(AtomicBool::new(true));
    let agent = Flaky::agent(&pki, &down).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    down.store(false, Ordering::SeqCst);
    expert
        .wait_for("the screen", |e| matches!(e, ExpertEvent::Screen(_)))
        .await;
    expert
        .act(UserAction::Key(Key {
            code: 30,
            down: true,
        }))
        .await;
    expert
        .act(UserAction::Key(Key {
            code: 30,
            down: false,
        }))
        .await;
    let t0 = Instant::now();
    while injected(&agent).len() < 2 {
        assert!(
            t0.elapsed() < WAIT,
            "the key never reached the device: {:?}",
            agent.sink.calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !expert
            .events
            .iter()
            .any(|e| matches!(e, ExpertEvent::ControlEnded(_))),
        "control was not revoked: {:?}",
        expert.events
    );
    agent.ctl_ok(Request::End).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_sent_right_before_releasing_control_is_injected() {
    use shoulder_proto::session::ExpertInput;
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    // The last keystrokes and the release leave in one write, so the agent
    // reads them together.
    for code in [30u16, 31, 32] {
        for down in [true, false] {
            expert.session.handle(
                Instant::now(),
                ExpertInput::Action(UserAction::Key(Key { code, down })),
            );
        }
    }
    expert.act(UserAction::ReleaseControl).await;
    expert
        .wait_for("control released", |e| {
            matches!(e, ExpertEvent::ControlEnded(ControlEndReason::Released))
        })
        .await;
    let keys: Vec<(u16, bool)> = injected(&agent)
        .into_iter()
        .filter_map(|e| match e {
            InjectEvent::Key(k) => Some((k.code, k.down)),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        [
            (30, true),
            (30, false),
            (31, true),
            (31, false),
            (32, true),
            (32, false)
        ]
    );
    agent.ctl_ok(Request::End).await;
    let records = agent.stop().await;
    assert!(
        !records.iter().any(|r| r["event"] == "injection-failed"),
        "a release is not a device fault: {records:?}"
    );
}
