//! The agent as a service, over real TLS on loopback: offers, invitations,
//! consent through the control socket, limits, and the audit trail.

use std::sync::Arc;
use std::time::Duration;

use shoulder_agent::backends::{Call, PatternCapture, PatternScreens};
use shoulder_agent::control::Request;
use shoulder_proto::session::{ControlState, ExpertEvent, ExpertState, InjectEvent, UserAction};
use shoulder_proto::{Auth, ByeReason, ControlEndReason, DeclineReason, InvitationId, Key};
use shoulder_testkit::agent::*;
use shoulder_testkit::pki::*;
use shoulder_testkit::tls_expert::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn is_state(e: &ExpertEvent, want: fn(&ExpertState) -> bool) -> bool {
    matches!(e, ExpertEvent::StateChanged(s) if want(s))
}

async fn wait_viewing(expert: &mut TlsExpert) {
    expert
        .wait_for("viewing", |e| {
            is_state(e, |s| matches!(s, ExpertState::Viewing { .. }))
        })
        .await;
}

async fn wait_consent_pending(expert: &mut TlsExpert) {
    expert
        .wait_for("waiting for consent", |e| {
            is_state(e, |s| matches!(s, ExpertState::WaitingForConsent { .. }))
        })
        .await;
}

async fn wait_controlling(expert: &mut TlsExpert) {
    expert
        .wait_for("control", |e| {
            is_state(e, |s| {
                matches!(
                    s,
                    ExpertState::Viewing {
                        control: ControlState::Granted { .. }
                    }
                )
            })
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_with_plant_certificate_views_and_controls_with_consent() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;

    let mut expert = TlsExpert::offer(&agent, Some(&ann)).await;
    wait_consent_pending(&mut expert).await;
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["kind"], "view");
    assert_eq!(asked["expert"], "Ann Expert");
    assert_eq!(asked["how"], "plant certificate");

    // The control socket is for root and the configured group only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&agent.control)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);

    // Status shows who is waiting.
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["expert"], "Ann Expert");
    assert_eq!(status["session"]["prompt"]["kind"], "view");

    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut expert).await;
    expert.wait_updates(2).await;
    // The expert's copy is the test pattern: background of some frame, and
    // the white square at y=4.
    let fb = expert.fb.as_ref().expect("screen info arrived");
    assert_eq!((fb.width(), fb.height()), (64, 48));
    let px = &fb.pixels()[(40 * 64) * 4..(40 * 64) * 4 + 4];
    let bg = u32::from_le_bytes([px[0], px[1], px[2], 0]);
    assert_eq!(
        bg & 0x0020_2020,
        0x0020_2020,
        "background from the pattern: {bg:06x}"
    );

    // Control needs its own yes.
    expert.act(UserAction::RequestControl).await;
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["kind"], "control");
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_controlling(&mut expert).await;
    event(&mut device, "control-granted").await;
    let key = Key {
        code: 30,
        down: true,
    };
    expert.act(UserAction::Key(key)).await;
    let t0 = std::time::Instant::now();
    while !agent
        .sink
        .calls()
        .contains(&Call::Injected(InjectEvent::Key(key)))
    {
        assert!(
            t0.elapsed() < WAIT,
            "key not injected: {:?}",
            agent.sink.calls()
        );
        expert.wait_updates(expert.updates + 1).await;
    }

    // The person at the device stops control: keys are released first.
    expert
        .act(UserAction::Chat("hello from the expert".into()))
        .await;
    let chat = event(&mut device, "chat").await;
    assert_eq!(chat["text"], "hello from the expert");
    agent
        .ctl_ok(Request::Chat {
            text: "hi, I see you".into(),
        })
        .await;
    expert
        .wait_for(
            "chat",
            |e| matches!(e, ExpertEvent::Chat(t) if t == "hi, I see you"),
        )
        .await;
    agent.ctl_ok(Request::StopControl).await;
    expert
        .wait_for("control ended", |e| {
            matches!(
                e,
                ExpertEvent::ControlEnded(ControlEndReason::StoppedByUser)
            )
        })
        .await;
    event(&mut device, "control-revoked").await;
    let events = agent.sink.calls();
    let release = events.iter().rposition(|e| *e == Call::ReleaseAll);
    assert!(release.is_some(), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Call::Refused(_))));

    // Input after the stop is never injected.
    let before = agent.sink.calls().len();
    expert
        .act(UserAction::Key(Key {
            code: 31,
            down: true,
        }))
        .await;
    expert.wait_updates(expert.updates + 1).await;
    assert!(
        !agent.sink.calls()[before..]
            .iter()
            .any(|e| matches!(e, Call::Injected(_)))
    );

    agent.ctl_ok(Request::End).await;
    let (reason, _, sentence) = expert.closed().await;
    assert_eq!(reason, ByeReason::EndedByUser);
    assert_eq!(sentence, "The person at the device ended the session.");
    let received = expert.received;
    let ended = event(&mut device, "session-ended").await;
    assert_eq!(ended["reason"], "EndedByUser");

    let records = agent.stop().await;
    let connect = records
        .iter()
        .find(|r| r["event"] == "connect" && r["fingerprint"].is_string())
        .expect("connect record");
    let session = connect["session"].as_str().unwrap().to_string();
    let fp = shoulder_proto::Fingerprint(ann.fingerprint).colon_hex();
    assert_eq!(connect["fingerprint"], fp.as_str());
    assert!(
        connect["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let names = session_events(&records, &session);
    for step in [
        "connect",
        "hello",
        "auth-ok",
        "consent-asked",
        "consent-answered",
        "control-granted",
        "chat",
        "control-revoked",
        "bye",
    ] {
        assert!(names.iter().any(|n| n == step), "no {step} in {names:?}");
    }
    let auth = records
        .iter()
        .find(|r| r["event"] == "auth-ok" && r["session"] == session.as_str())
        .unwrap();
    assert_eq!(auth["expert"], "Ann Expert");
    assert_eq!(auth["method"], "offer");
    let bye = records
        .iter()
        .find(|r| r["event"] == "bye" && r["session"] == session.as_str())
        .unwrap();
    assert_eq!(bye["reason"], "EndedByUser");
    // At least what the expert read: hello, consent messages and the
    // updates of the pattern.
    assert!(received > 0);
    assert!(bye["bytes_sent"].as_u64().unwrap() >= received, "{bye}");
    for r in &records {
        assert!(r["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "local-command" && r["command"] == "accept")
    );
    assert_eq!(records.last().unwrap()["event"], "agent-stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_failures_have_distinct_reasons() {
    let pki = Pki::new("Plant CA");
    let other = Pki::new("Someone else's CA");
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;

    let mut e = TlsExpert::offer(&agent, Some(&other.expert("Mallory", false))).await;
    let (reason, _, unknown_ca) = e.closed().await;
    assert_eq!(reason, ByeReason::UnknownCa);

    let mut e = TlsExpert::offer(&agent, Some(&pki.expert("Old Ann", true))).await;
    let (reason, detail, expired) = e.closed().await;
    assert_eq!(reason, ByeReason::CertificateExpired);
    assert!(detail.contains("Old Ann"), "{detail}");

    let mut e = TlsExpert::offer(&agent, None).await;
    let (reason, _, no_cert) = e.closed().await;
    assert_eq!(reason, ByeReason::NoCertificate);
    let (records, pre) = agent.stop_with_pre_auth().await;

    // An allow-list narrows the plant CA down.
    let bob = pki.expert("Bob", false);
    let ann = pki.expert("Ann Expert", false);
    let fp = shoulder_proto::Fingerprint(bob.fingerprint).colon_hex();
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.allowed_experts = vec![format!("sha256:{fp}"), "cn:Carol".into()];
    })
    .await;
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    let (reason, _, not_allowed) = e.closed().await;
    assert_eq!(reason, ByeReason::NotAllowed);
    let mut e = TlsExpert::offer(&agent, Some(&bob)).await;
    wait_consent_pending(&mut e).await;

    let sentences = [&unknown_ca, &expired, &no_cert, &not_allowed];
    for (i, a) in sentences.iter().enumerate() {
        for b in &sentences[i + 1..] {
            assert_ne!(a, b);
        }
    }
    // Connections that never authenticated are summed up per source in the
    // pre-auth log, not recorded one by one.
    assert!(!records.iter().any(|r| r["event"] == "auth-failed"));
    let summary = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-summary")
        .expect("a pre-auth summary");
    for reason in ["UnknownCa", "CertificateExpired", "NoCertificate"] {
        assert_eq!(summary["reasons"][reason], 1, "{summary}");
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_refused_when_disabled_by_policy() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.allow_offers = false).await;
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    assert_eq!(e.closed().await.0, ByeReason::OffersDisabled);
    agent.stop().await;
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.enabled = false).await;
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    assert_eq!(e.closed().await.0, ByeReason::Disabled);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_made_for_someone_is_headed_by_their_name() {
    let agent = Agent::start(None, |_| {}).await;
    let mut device = agent.ctl().await;
    let r = agent
        .invite_for("10m", "tulip-garden-42", Some("Ann from the service desk"))
        .await;
    assert_eq!(r["for"], "Ann from the service desk", "{r}");
    let id = shoulder_proto::invite::Invitation::from_text(r["text"].as_str().unwrap())
        .unwrap()
        .id;
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    wait_consent_pending(&mut e).await;
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["expert"], "Ann from the service desk");
    assert_eq!(asked["how"], format!("invitation {id}"));
    assert_eq!(asked["says"], "Ann");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_right_password_works_once() {
    let agent = Agent::start(None, |_| {}).await;
    let mut device = agent.ctl().await;
    let id = agent.invite("10m", "tulip-garden-42").await;

    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    wait_consent_pending(&mut e).await;
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["how"], format!("invitation {id}"));
    // Never a bare id as the headline; what they call themselves is a hint.
    assert_eq!(asked["expert"], "Someone with an invitation");
    assert_eq!(asked["says"], "Ann");
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    e.wait_updates(1).await;
    e.act(UserAction::Disconnect).await;
    event(&mut device, "session-ended").await;

    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    let (reason, _, sentence) = e.closed().await;
    assert_eq!(reason, ByeReason::InvitationUsed);
    assert!(sentence.contains("already used"), "{sentence}");
    let records = agent.stop().await;
    assert!(records.iter().any(|r| r["event"] == "invitation-created"));
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "auth-ok" && r["method"] == format!("invitation {id}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_burn_the_invitation() {
    let agent = Agent::start(None, |_| {}).await;
    let id = agent.invite("10m", "tulip-garden-42").await;
    for left in (1..=4).rev() {
        let mut e = TlsExpert::invitation(&agent, id, "guess").await;
        let (reason, _, sentence) = e.closed().await;
        assert_eq!(reason, ByeReason::WrongPassword { tries_left: left });
        assert!(sentence.starts_with("Wrong password"), "{sentence}");
    }
    let mut e = TlsExpert::invitation(&agent, id, "guess").await;
    assert_eq!(e.closed().await.0, ByeReason::InvitationBurned);
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    assert_eq!(e.closed().await.0, ByeReason::InvitationBurned);
    let list = agent.ctl_ok(Request::InviteList).await;
    assert_eq!(list["invitations"][0]["state"], "burned");
    let mut e = TlsExpert::invitation(&agent, InvitationId([7; 8]), "tulip-garden-42").await;
    assert_eq!(e.closed().await.0, ByeReason::InvitationUnknown);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_revoked_invitations_fail() {
    let agent = Agent::start(None, |_| {}).await;
    let expiring = agent.invite("1s", "tulip-garden-42").await;
    let revoked = agent.invite("10m", "tulip-garden-42").await;
    agent
        .ctl_ok(Request::InviteRevoke {
            id: revoked.to_string(),
        })
        .await;
    let mut e = TlsExpert::invitation(&agent, revoked, "tulip-garden-42").await;
    let (reason, _, sentence) = e.closed().await;
    assert_eq!(reason, ByeReason::InvitationRevoked);
    assert!(sentence.contains("revoked"), "{sentence}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut e = TlsExpert::invitation(&agent, expiring, "tulip-garden-42").await;
    let (reason, _, sentence) = e.closed().await;
    assert!(
        matches!(reason, ByeReason::InvitationExpired { .. }),
        "{reason:?}"
    );
    assert!(sentence.starts_with("Invitation expired"), "{sentence}");
    // Too long a lifetime is refused with the limit named.
    let mut c = agent.ctl().await;
    let r = c
        .request(&Request::Invite {
            expires: "3d".into(),
            password: Some("tulip-garden-42".into()),
            for_whom: None,
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], false);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("max_invitation_lifetime"),
        "{r}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_a_device_whose_certificate_does_not_match() {
    let agent = Agent::start(None, |_| {}).await;
    let mut wrong = agent.fingerprint;
    wrong.0[0] ^= 1;
    let err = connect_tls(agent.addr, wrong, None)
        .await
        .expect_err("the pinned fingerprint differs");
    assert!(err.to_string().contains("fingerprint"), "{err}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_rate_limited_per_address() {
    let agent = Agent::start(None, |c| c.auth_failures_per_minute = 2).await;
    let id = agent.invite("10m", "tulip-garden-42").await;
    for _ in 0..2 {
        let mut e = TlsExpert::invitation(&agent, id, "guess").await;
        assert!(matches!(
            e.closed().await.0,
            ByeReason::WrongPassword { .. }
        ));
    }
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    let (reason, _, sentence) = e.closed().await;
    assert!(
        matches!(
            reason,
            ByeReason::RateLimited {
                retry_after_secs: 1..=30
            }
        ),
        "{reason:?}"
    );
    assert!(sentence.contains("wait"), "{sentence}");
    // The rate limit did not count as a wrong password.
    let list = agent.ctl_ok(Request::InviteList).await;
    assert_eq!(list["invitations"][0]["wrong_passwords"], 2);
    agent.stop().await;
}

/// A TLS 1.2-only ClientHello (no supported_versions extension).
fn tls12_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x42; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]); // ECDHE-ECDSA/RSA-AES128-GCM
    body.extend([0x01, 0x00]); // null compression
    let mut ext = Vec::new();
    ext.extend([0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]); // sig algs
    ext.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]); // groups: x25519
    ext.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // point formats
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_client_is_refused() {
    let agent = Agent::start(None, |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(agent.addr).await.unwrap();
    tcp.write_all(&tls12_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut reply)).await;
    // An alert record (21), fatal (2), protocol_version (70); no ServerHello.
    assert!(reply.len() >= 7, "{reply:?}");
    assert_eq!(reply[0], 21, "{reply:?}");
    assert_eq!(&reply[5..7], &[2, 70], "{reply:?}");
    agent.stop().await;
}

/// Sends `payload_frames` after a valid Hello and returns the device's Bye.
async fn bye_after(agent: &Agent, raw: Vec<u8>) -> (ByeReason, String) {
    use shoulder_proto::frame::{FrameDecoder, encode};
    use shoulder_proto::{Hello, Message, Role};
    let mut tls = connect_tls(agent.addr, agent.fingerprint, None)
        .await
        .unwrap();
    let mut out = encode(&Message::Hello(Hello::new(
        Role::Expert,
        "shoulder",
        "0",
        "x",
    )))
    .unwrap();
    out.extend(raw);
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
    let mut dec = FrameDecoder::default();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed without a Bye");
        dec.push(&buf[..n]).unwrap();
        while let Some(m) = dec.next_message().unwrap() {
            if let Message::Bye { reason, detail } = m {
                return (reason, detail.to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_garbage_frames_close_with_a_reason() {
    let agent = Agent::start(None, |_| {}).await;
    let (reason, detail) = bye_after(&agent, 5000u32.to_le_bytes().to_vec()).await;
    assert_eq!(reason, ByeReason::ProtocolError);
    assert!(detail.contains("over the limit"), "{detail}");
    let mut garbage = 3u32.to_le_bytes().to_vec();
    garbage.extend([200, 1, 2]);
    let (reason, detail) = bye_after(&agent, garbage).await;
    assert_eq!(reason, ByeReason::ProtocolError);
    assert!(detail.contains("unknown message type"), "{detail}");
    let (_, pre) = agent.stop_with_pre_auth().await;
    // Neither authenticated: both are summed up in the pre-auth log.
    let summary = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-summary")
        .expect("a pre-auth summary");
    assert_eq!(summary["reasons"]["ProtocolError"], 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_pre_auth_flood_does_not_block_a_session() {
    let agent = Agent::start(None, |c| c.max_pre_auth_connections = 32).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    // Some of them even finish TLS and then say nothing.
    for _ in 0..10 {
        idle.push_tls(
            connect_tls(agent.addr, agent.fingerprint, None)
                .await
                .unwrap(),
        );
    }
    let id = agent.invite("10m", "tulip-garden-42").await;
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    wait_consent_pending(&mut e).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    e.wait_updates(3).await;
    // A new flood while the session runs does not disturb it.
    for _ in 0..100 {
        idle.push(tokio::net::TcpStream::connect(agent.addr).await.unwrap());
    }
    let n = e.updates;
    e.wait_updates(n + 3).await;
    agent.stop().await;
}

trait PushTls {
    fn push_tls(&mut self, t: ClientTls);
}

impl PushTls for Vec<tokio::net::TcpStream> {
    fn push_tls(&mut self, t: ClientTls) {
        // Keep the connection open: leak the TLS state into a task that holds it.
        tokio::spawn(async move {
            let _t = t;
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_expert_is_told_busy() {
    let pki = Pki::new("Plant CA");
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut first = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    wait_consent_pending(&mut first).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut first).await;
    let mut second = TlsExpert::offer(&agent, Some(&pki.expert("Bob", false))).await;
    let (reason, _, sentence) = second.closed().await;
    assert_eq!(reason, ByeReason::Busy);
    assert!(sentence.contains("Another expert"), "{sentence}");
    // The first session is undisturbed.
    let n = first.updates;
    first.wait_updates(n + 2).await;
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["expert"], "Ann Expert");
    assert_eq!(status["session"]["phase"], "viewing");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_only_device_declines_control() {
    let pki = Pki::new("Plant CA");
    let agent = Agent::start(Some(&pki.ca_pem), |c| c.allow_control = false).await;
    let mut e = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    wait_consent_pending(&mut e).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    e.act(UserAction::RequestControl).await;
    e.wait_for("declined", |ev| {
        matches!(ev, ExpertEvent::ControlDeclined(DeclineReason::ViewOnly))
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_view_ends_the_session() {
    let agent = Agent::start(None, |_| {}).await;
    let id = agent.invite("10m", "tulip-garden-42").await;
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    wait_consent_pending(&mut e).await;
    // Accepting with nothing to accept is an error for the control client.
    agent.ctl_ok(Request::Decline { prompt: None }).await;
    assert_eq!(e.closed().await.0, ByeReason::Declined);
    let mut c = agent.ctl().await;
    let r = c.request(&Request::Accept { prompt: None }).await.unwrap();
    assert_eq!(r["ok"], false);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_session_with_a_reason() {
    let pki = Pki::new("Plant CA");
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut e = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    wait_consent_pending(&mut e).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    let mut device = agent.ctl().await;
    e.act(UserAction::RequestControl).await;
    event(&mut device, "consent-requested").await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    e.wait_for("control", |ev| {
        is_state(ev, |s| {
            matches!(
                s,
                ExpertState::Viewing {
                    control: ControlState::Granted { .. }
                }
            )
        })
    })
    .await;
    let sink = agent.sink.clone();
    let stopping = tokio::spawn(agent.stop());
    let (reason, _, _) = e.closed().await;
    assert_eq!(reason, ByeReason::ShuttingDown);
    let records = stopping.await.unwrap();
    assert!(sink.calls().contains(&Call::ReleaseAll));
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "bye" && r["reason"] == "ShuttingDown")
    );
    assert_eq!(records.last().unwrap()["event"], "agent-stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_input_wins_and_the_hotkey_stops_control() {
    use shoulder_agent::backends::LocalEvent;
    use shoulder_proto::session::LocalCommand;
    let pki = Pki::new("Plant CA");
    // A hold-back window long enough that the expert's key surely arrives
    // inside it on a loaded machine.
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.input.local_idle = Duration::from_secs(4)
    })
    .await;
    let mut device = agent.ctl().await;
    let mut e = TlsExpert::offer(&agent, Some(&pki.expert("Ann Expert", false))).await;
    wait_consent_pending(&mut e).await;
    // A tap on the banner answers the prompt on screen.
    let prompt = open_prompt(&agent).await;
    agent
        .local
        .send(LocalEvent::Decision(LocalCommand::Answer {
            prompt,
            accept: true,
        }))
        .await
        .unwrap();
    wait_viewing(&mut e).await;
    e.act(UserAction::RequestControl).await;
    loop {
        let asked = event(&mut device, "consent-requested").await;
        if asked["kind"] == "control" {
            break;
        }
    }
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    e.wait_for("control", |ev| {
        is_state(ev, |s| {
            matches!(
                s,
                ExpertState::Viewing {
                    control: ControlState::Granted { .. }
                }
            )
        })
    })
    .await;
    // The person at the device uses the keyboard: the expert is told and
    // their input is held back.
    agent.local.send(LocalEvent::Activity).await.unwrap();
    e.wait_for("local user active", |ev| {
        is_state(ev, |s| {
            matches!(
                s,
                ExpertState::Viewing {
                    control: ControlState::Granted {
                        local_user_active: true
                    }
                }
            )
        })
    })
    .await;
    let key = Key {
        code: 44,
        down: true,
    };
    e.act(UserAction::Key(key)).await;
    e.wait_updates(e.updates + 2).await;
    assert!(
        !agent
            .sink
            .calls()
            .contains(&Call::Injected(InjectEvent::Key(key)))
    );
    // The person stops: after the window the expert may type again.
    e.wait_for("local user idle", |ev| {
        is_state(ev, |s| {
            matches!(
                s,
                ExpertState::Viewing {
                    control: ControlState::Granted {
                        local_user_active: false
                    }
                }
            )
        })
    })
    .await;
    e.act(UserAction::Key(key)).await;
    let t0 = std::time::Instant::now();
    while !agent
        .sink
        .calls()
        .contains(&Call::Injected(InjectEvent::Key(key)))
    {
        assert!(
            t0.elapsed() < WAIT,
            "key not injected after the person stopped"
        );
        e.wait_updates(e.updates + 1).await;
    }
    // The stop hotkey.
    agent
        .local
        .send(LocalEvent::Decision(LocalCommand::StopControlHotkey))
        .await
        .unwrap();
    e.wait_for("hotkey", |ev| {
        matches!(ev, ExpertEvent::ControlEnded(ControlEndReason::Hotkey))
    })
    .await;
    let records = agent.stop().await;
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "control-revoked" && r["reason"] == "Hotkey")
    );
    let bye = records.iter().find(|r| r["event"] == "bye").unwrap();
    assert_eq!(bye["held_back_inputs"], 1);
}

#[test]
fn pattern_background_is_distinct_per_frame() {
    assert_ne!(PatternCapture::background(1), PatternCapture::background(2));
    let _ = Auth::Offer;
}

/// A kiosk app that turns its UI tells the agent (`ctl rotate`): the expert
/// is sent the screen turned the new way at once, in the same session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_rotate_turns_the_view_within_the_session() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    wait_consent_pending(&mut e).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    e.wait_for(
        "the screen",
        |ev| matches!(ev, ExpertEvent::Screen(s) if (s.width, s.height) == (64, 48)),
    )
    .await;

    let r = agent.ctl_ok(Request::Rotate { degrees: 90 }).await;
    assert_eq!(r["changed"], true, "{r}");
    e.wait_for(
        "the turned screen",
        |ev| matches!(ev, ExpertEvent::Screen(s) if (s.width, s.height) == (48, 64)),
    )
    .await;
    e.wait_updates(e.updates + 1).await;

    let again = agent.ctl_ok(Request::Rotate { degrees: 90 }).await;
    assert_eq!(again["changed"], false, "{again}");
    let mut c = agent.ctl().await;
    let bad = c.request(&Request::Rotate { degrees: 45 }).await.unwrap();
    assert_eq!(bad["ok"], false);
    assert!(
        bad["error"].as_str().unwrap().contains("0, 90, 180, 270"),
        "{bad}"
    );
    let records = agent.stop().await;
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "rotation-changed" && r["degrees"] == 90)
    );
}

/// One session with the pattern's display: the screen size the expert is
/// sent (the pattern is 64×48; turned a quarter it is 48×64).
async fn session_screen(agent: &Agent, ann: &ExpertCert) -> (u32, u32) {
    let mut e = TlsExpert::offer(agent, Some(ann)).await;
    wait_consent_pending(&mut e).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_viewing(&mut e).await;
    let ExpertEvent::Screen(screen) = e
        .wait_for("the screen", |ev| matches!(ev, ExpertEvent::Screen(_)))
        .await
    else {
        unreachable!()
    };
    agent.ctl_ok(Request::End).await;
    let _ = e.closed().await;
    let t0 = std::time::Instant::now();
    while !agent.ctl_ok(Request::Status).await["session"].is_null() {
        assert!(t0.elapsed() < WAIT, "the session did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (u32::from(screen.width), u32::from(screen.height))
}

/// `rotation = "auto"` (the default): the agent follows what the display
/// says (the DRM panel orientation and plane rotation), asked again when a
/// session starts; `ctl rotate` and a configured rotation win over it; a
/// mirrored plane is not followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_follows_how_the_display_says_it_is_turned() {
    use shoulder_capture::{KernelOrientation, PanelOrientation};
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let says = |panel, plane| {
        Some(KernelOrientation {
            plane_rotation: plane,
            panel: Some(panel),
            panel_raw: None,
        })
    };
    let display = Arc::new(std::sync::Mutex::new(says(
        PanelOrientation::LeftSideUp,
        None,
    )));
    let capture = || -> Option<Arc<dyn shoulder_agent::backends::CaptureBackend>> {
        Some(Arc::new(
            PatternCapture::new(64, 48).with_orientation(display.clone()),
        ))
    };
    let agent = Agent::start_with_capture(Some(&pki.ca_pem), |_| {}, capture()).await;
    assert_eq!(
        session_screen(&agent, &ann).await,
        (48, 64),
        "panel left side up"
    );

    // The compositor turned its plane a quarter counter-clockwise to make
    // up for the panel: the picture in the buffer is upright.
    *display.lock().unwrap() = says(PanelOrientation::LeftSideUp, Some(1 << 1));
    assert_eq!(session_screen(&agent, &ann).await, (64, 48), "compensated");

    // A mirror is not a turn: the agent says so and keeps what it had.
    *display.lock().unwrap() = says(PanelOrientation::Normal, Some(1 | (1 << 4)));
    assert_eq!(session_screen(&agent, &ann).await, (64, 48), "mirrored");

    // `ctl rotate` pins the rotation: the display no longer moves it.
    agent.ctl_ok(Request::Rotate { degrees: 180 }).await;
    *display.lock().unwrap() = says(PanelOrientation::RightSideUp, None);
    assert_eq!(session_screen(&agent, &ann).await, (64, 48), "pinned");

    // `ctl rotate auto` hands it back to the display.
    let r = agent.ctl_ok(Request::RotateAuto).await;
    assert_eq!(r["changed"], true, "{r}");
    assert_eq!(session_screen(&agent, &ann).await, (48, 64), "auto again");
    let again = agent.ctl_ok(Request::RotateAuto).await;
    assert_eq!(again["changed"], false, "{again}");
    let records = agent.stop().await;
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "rotation-follows-display"),
        "not audited"
    );

    // So does the config.
    let agent = Agent::start_with_capture(
        Some(&pki.ca_pem),
        |c| {
            c.rotation = shoulder_agent::config::RotationSetting::Fixed(
                shoulder_proto::rotation::Rotation::Deg0,
            )
        },
        capture(),
    )
    .await;
    assert_eq!(session_screen(&agent, &ann).await, (64, 48), "configured");
    agent.stop().await;
}

/// A device with two screens: the expert is told both, switches to the
/// second, sees it, and their click lands on it (the virtual pointer spans
/// both screens, as the compositor maps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expert_switches_between_two_screens_and_input_lands_on_the_one_shown() {
    use shoulder_proto::msg::{Buttons, Pointer};
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start_with_capture(
        Some(&pki.ca_pem),
        |_| {},
        Some(Arc::new(PatternScreens::new(&[(64, 48), (80, 48)]))),
    )
    .await;
    let mut device = agent.ctl().await;
    let mut expert = TlsExpert::offer(&agent, Some(&ann)).await;
    wait_consent_pending(&mut expert).await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    let listed = expert
        .wait_for("the screen list", |e| matches!(e, ExpertEvent::Screens(_)))
        .await;
    let ExpertEvent::Screens(list) = listed else {
        unreachable!()
    };
    assert_eq!(list.current, 0);
    assert_eq!(
        list.screens
            .iter()
            .map(|s| (s.name.as_str(), s.width, s.x))
            .collect::<Vec<_>>(),
        vec![("Virtual-1", 64, 0), ("Virtual-2", 80, 64)]
    );
    expert.wait_updates(1).await;
    assert_eq!(expert.fb.as_ref().map(|f| f.width()), Some(64));

    expert.act(UserAction::SelectScreen(1)).await;
    expert
        .wait_for(
            "the second screen",
            |e| matches!(e, ExpertEvent::Screen(i) if i.width == 80),
        )
        .await;
    let n = expert.updates;
    expert.wait_updates(n + 1).await;
    assert_eq!(expert.fb.as_ref().map(|f| f.width()), Some(80));

    expert.act(UserAction::RequestControl).await;
    while event(&mut device, "consent-requested").await["kind"] != "control" {}
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    wait_controlling(&mut expert).await;
    let at = |x, y| Pointer {
        x,
        y,
        buttons: Buttons(0),
        wheel: 0,
        hwheel: 0,
    };
    expert.act(UserAction::Pointer(at(10, 20))).await;
    let landed = Call::Injected(InjectEvent::Pointer(at(64 + 10, 20)));
    let t0 = std::time::Instant::now();
    while !agent.sink.calls().contains(&landed) {
        assert!(
            t0.elapsed() < WAIT,
            "the click did not land on the second screen: {:?}",
            agent.sink.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop().await;
}
