//! Consent under a hostile expert, over real TLS on loopback: the person's
//! decisions name their prompt and win at once, whatever the expert does
//! (stops reading, floods), and a session on hold keeps what the person
//! took back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoulder_agent::backends::{Call, CaptureBackend, CaptureError, FrameSource, LocalEvent};
use shoulder_agent::control::Request;
use shoulder_capture::{Frame, PixelFormat, ScreenGeometry};
use shoulder_proto::frame::encode;
use shoulder_proto::session::{ExpertEvent, InjectEvent, LocalCommand, UserAction};
use shoulder_proto::{Auth, ByeReason, Key, Message, Pointer};
use shoulder_testkit::agent::*;
use shoulder_testkit::pki::*;
use shoulder_testkit::tls_expert::*;
use tokio::io::AsyncWriteExt;

/// How long the device may take to act on the person's decision in these
/// tests: generous for a loaded machine, far below the expert's timeouts
/// (the bug this guards against waited for `peer_timeout`, 60 s here).
const ACTS_WITHIN: Duration = Duration::from_secs(8);

/// A screen of noise that changes at every capture: every update is a few
/// MB that compress to nothing, so an expert that does not read fills the
/// socket within a frame or two.
struct Noise;

struct NoiseSource {
    seed: u64,
    pixels: Vec<u8>,
}

const NW: u32 = 1280;
const NH: u32 = 720;
const GEOMETRY: ScreenGeometry = ScreenGeometry {
    width: NW,
    height: NH,
    format: PixelFormat::Xrgb8888,
};

impl CaptureBackend for Noise {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        Ok(Box::new(NoiseSource {
            seed: 0x9e37_79b9_7f4a_7c15,
            pixels: vec![0; NW as usize * NH as usize * 4],
        }))
    }
}

impl FrameSource for NoiseSource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(GEOMETRY)
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        for b in self.pixels.chunks_exact_mut(8) {
            // xorshift64: cheap bytes no compressor can shrink.
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            b.copy_from_slice(&self.seed.to_le_bytes());
        }
        Frame::new(&self.pixels, GEOMETRY, NW as usize * 4).map_err(|source| CaptureError::Frame {
            path: "noise".into(),
            source,
        })
    }

    fn describe(&self) -> String {
        "noise".into()
    }
}

/// An agent showing noise, with an expert timeout far longer than any wait
/// the tests allow.
async fn noisy_agent(pki: &Pki) -> Agent {
    Agent::start_with_capture(
        Some(&pki.ca_pem),
        |c| {
            c.peer_timeout = Duration::from_secs(60);
            c.max_fps = 60;
        },
        Some(Arc::new(Noise)),
    )
    .await
}

/// The expert asks for full screens and never reads them.
async fn stop_reading(expert: &mut TlsExpert, requests: usize) {
    let mut out = Vec::new();
    for _ in 0..requests {
        out.extend(encode(&Message::UpdateRequest { incremental: false }).unwrap());
    }
    expert.tls.write_all(&out).await.unwrap();
    expert.tls.flush().await.unwrap();
    // Long enough for the device to fill the socket buffers both ways.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The expert presses key `code` and keeps it down; returns once the device
/// injected it.
async fn hold_key(agent: &Agent, expert: &mut TlsExpert, code: u16) -> Key {
    // A screen first: the device makes its input devices once it knows
    // the screen's size, and input before that is dropped.
    expert.wait_updates(1).await;
    let key = Key { code, down: true };
    expert.act(UserAction::Key(key)).await;
    until("the key is injected", WAIT, || {
        agent
            .sink
            .calls()
            .contains(&Call::Injected(InjectEvent::Key(key)))
    })
    .await;
    key
}

fn released_after_key(agent: &Agent, key: Key) -> bool {
    let ev = agent.sink.calls();
    ev.iter()
        .position(|e| *e == Call::Injected(InjectEvent::Key(key)))
        .is_some_and(|i| ev[i..].contains(&Call::ReleaseAll))
}

fn audited(agent: &Agent, event: &str) -> bool {
    agent.audit_records().iter().any(|r| r["event"] == event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_control_and_end_win_at_once_over_an_expert_that_stops_reading() {
    let pki = Pki::new("Plant CA");
    let agent = noisy_agent(&pki).await;
    let mut device = agent.ctl().await;
    let mut expert =
        controlling_session(&agent, &pki.expert("Ann Expert", false), &mut device).await;
    // The expert holds a key down, then stops reading.
    let key = hold_key(&agent, &mut expert, 30).await;
    stop_reading(&mut expert, 40).await;

    // Stop control: keys up, injection off, audited, without waiting for
    // the expert.
    let t0 = Instant::now();
    let reply = agent.ctl_ok(Request::StopControl).await;
    assert_eq!(reply["changed"], true, "{reply}");
    until("keys released after stop-control", ACTS_WITHIN, || {
        released_after_key(&agent, key)
    })
    .await;
    let took = t0.elapsed();
    until("control-revoked audited", ACTS_WITHIN, || {
        audited(&agent, "control-revoked")
    })
    .await;
    println!("stop-control took effect after {took:?}");

    // End: the session is over for the device at once.
    let t0 = Instant::now();
    agent.ctl_ok(Request::End).await;
    until("the session ended", ACTS_WITHIN, || {
        agent
            .audit_records()
            .iter()
            .any(|r| r["event"] == "bye" && r["reason"] == "EndedByUser")
    })
    .await;
    let took = t0.elapsed();
    println!("end took effect after {took:?}");
    let status = agent.ctl_ok(Request::Status).await;
    let t0 = Instant::now();
    let mut status = status;
    while !status["session"].is_null() {
        assert!(
            t0.elapsed() < ACTS_WITHIN,
            "the slot is still held: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = agent.ctl_ok(Request::Status).await;
    }
    drop(expert);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_control_wins_over_an_input_flood() {
    let pki = Pki::new("Plant CA");
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.max_input_rate = 10_000).await;
    let mut device = agent.ctl().await;
    let mut expert =
        controlling_session(&agent, &pki.expert("Ann Expert", false), &mut device).await;
    let key = hold_key(&agent, &mut expert, 31).await;
    // A flood of pointer moves, written as fast as the socket takes them.
    let mut chunk = Vec::new();
    for i in 0..2000u16 {
        chunk.extend(
            encode(&Message::Pointer(Pointer {
                x: i % 64,
                y: i % 48,
                buttons: shoulder_proto::Buttons(0),
                wheel: 0,
                hwheel: 0,
            }))
            .unwrap(),
        );
    }
    let (_read, mut write) = tokio::io::split(expert.tls);
    let flood = tokio::spawn(async move {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            if write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    agent.ctl_ok(Request::StopControl).await;
    until("keys released during the flood", ACTS_WITHIN, || {
        released_after_key(&agent, key)
    })
    .await;
    let took = t0.elapsed();
    println!("stop-control during a flood took effect after {took:?}");
    // Nothing is injected after control ended.
    let n = agent.sink.calls().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<_> = agent.sink.calls()[n..].to_vec();
    assert!(
        !after.iter().any(|e| matches!(e, Call::Injected(_))),
        "injected after stop: {after:?}"
    );
    flood.abort();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_tap_on_the_view_prompt_cannot_grant_control() {
    let pki = Pki::new("Plant CA");
    let agent = noisy_agent(&pki).await;
    let mut device = agent.ctl().await;
    let mut expert = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    event(&mut device, "consent-requested").await;
    let view_prompt = open_prompt(&agent).await;
    // The person taps Accept on the view prompt.
    let tap = LocalEvent::Decision(LocalCommand::Answer {
        prompt: view_prompt,
        accept: true,
    });
    agent.local.send(tap).await.unwrap();
    event(&mut device, "view-granted").await;
    // The expert piles up screen requests, queues a control request right
    // behind them and stops reading.
    let mut out = Vec::new();
    for _ in 0..40 {
        out.extend(encode(&Message::UpdateRequest { incremental: false }).unwrap());
    }
    out.extend(encode(&Message::RequestControl).unwrap());
    expert.tls.write_all(&out).await.unwrap();
    expert.tls.flush().await.unwrap();
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["kind"], "control", "{asked}");
    // The person, having seen no reaction, taps Accept again: the tap
    // names the view prompt they saw, not the control prompt now up.
    agent.local.send(tap).await.unwrap();
    until("the second tap is audited as stale", WAIT, || {
        audited(&agent, "stale-answer")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!audited(&agent, "control-granted"));
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["prompt"]["kind"], "control", "{status}");
    // Answering the old prompt by its id through the control socket is
    // refused with a sentence too.
    let mut c = agent.ctl().await;
    let r = c
        .request(&Request::Accept {
            prompt: Some(view_prompt.0),
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not open"), "{r}");
    // And a made-up id of a prompt still to come is refused outright.
    let r = c
        .request(&Request::Accept {
            prompt: Some(view_prompt.0 + 100),
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(!audited(&agent, "control-granted"));
    drop(expert);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_control_while_reconnecting_holds_after_the_resume() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let (token, _) = resume_offer(&mut expert).await;
    // The link dies; while the expert is away the person stops control.
    drop(expert);
    event(&mut device, "reconnecting").await;
    let reply = agent.ctl_ok(Request::StopControl).await;
    assert_eq!(reply["changed"], true, "{reply}");
    // Asked again, it says nothing changed.
    let reply = agent.ctl_ok(Request::StopControl).await;
    assert_eq!(reply["changed"], false, "{reply}");
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("nothing changed"),
        "{reply}"
    );

    // The expert comes back: viewing only.
    let mut expert = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        Some(&ann),
        Auth::Resume { token },
    )
    .await;
    let resumed = event(&mut device, "resumed").await;
    assert_eq!(resumed["phase"], "viewing", "{resumed}");
    expert.wait_updates(expert.updates + 1).await;
    let key = Key {
        code: 32,
        down: true,
    };
    expert.act(UserAction::Key(key)).await;
    expert.wait_updates(expert.updates + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !agent
            .sink
            .calls()
            .contains(&Call::Injected(InjectEvent::Key(key))),
        "a key was injected after the person stopped control"
    );
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["phase"], "viewing", "{status}");
    agent.ctl_ok(Request::End).await;
    assert_eq!(expert.closed().await.0, ByeReason::EndedByUser);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_says_when_a_command_changed_nothing() {
    let pki = Pki::new("Plant CA");
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut expert = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    event(&mut device, "consent-requested").await;
    let r = agent.ctl_ok(Request::Accept { prompt: None }).await;
    assert_eq!(r["changed"], true, "{r}");
    expert
        .wait_for("viewing", |e| {
            matches!(
                e,
                ExpertEvent::StateChanged(shoulder_proto::session::ExpertState::Viewing { .. })
            )
        })
        .await;
    let r = agent.ctl_ok(Request::StopControl).await;
    assert_eq!(r["changed"], false, "{r}");
    agent.ctl_ok(Request::End).await;
    agent.stop().await;
}
