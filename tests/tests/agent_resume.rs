//! Resumption over real TLS on loopback: an expert whose connection drops
//! comes back within the grace period and continues without a new prompt;
//! the resume token is single-use, bound to the expert, and dies with the
//! grace period.

use std::time::Duration;

use shoulder_agent::backends::Call;
use shoulder_agent::control::{Client, Request};
use shoulder_proto::session::{ExpertEvent, ExpertState, InjectEvent, UserAction};
use shoulder_proto::{Auth, ByeReason, Key, ResumeToken};
use shoulder_testkit::agent::*;
use shoulder_testkit::pki::*;
use shoulder_testkit::tls_expert::*;

fn is_state(e: &ExpertEvent, want: fn(&ExpertState) -> bool) -> bool {
    matches!(e, ExpertEvent::StateChanged(s) if want(s))
}

/// Control-socket events up to and including the one named `name`.
async fn events_until(client: &mut Client, name: &str) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {name} event; saw {seen:?}"))
            .unwrap();
        let done = e["event"] == name;
        seen.push(e);
        if done {
            return seen;
        }
    }
}

async fn refused(agent: &Agent, cert: Option<&ExpertCert>, token: &ResumeToken) -> ByeReason {
    let mut e = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        cert,
        Auth::Resume {
            token: token.clone(),
        },
    )
    .await;
    e.closed().await.0
}

async fn injects(agent: &Agent, expert: &mut TlsExpert, code: u16) {
    let key = Key { code, down: true };
    expert.act(UserAction::Key(key)).await;
    let t0 = std::time::Instant::now();
    while !agent
        .sink
        .calls()
        .contains(&Call::Injected(InjectEvent::Key(key)))
    {
        assert!(t0.elapsed() < WAIT, "key {code} not injected");
        expert.wait_updates(expert.updates + 1).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_viewing_and_control_without_a_new_prompt() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let bob = pki.expert("Bob Other", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;

    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let (first, grace) = resume_offer(&mut expert).await;
    assert_eq!(grace, Duration::from_secs(20));
    injects(&agent, &mut expert, 30).await;

    // The link dies: no Bye, just a closed TCP connection.
    drop(expert);
    let hold = event(&mut device, "reconnecting").await;
    assert!(hold["grace_secs"].as_u64().unwrap() <= 20, "{hold}");
    let status = agent.ctl_ok(Request::Status).await;
    assert_eq!(status["session"]["phase"], "reconnecting");
    // Keys went up and injection stopped on the drop.
    assert_eq!(agent.sink.calls().last(), Some(&Call::ReleaseAll));

    // Another expert meanwhile: busy.
    let mut other = TlsExpert::offer(&agent, Some(&bob)).await;
    assert_eq!(other.closed().await.0, ByeReason::Busy);
    // The right token from another certificate: refused, and not used up.
    assert_eq!(
        refused(&agent, Some(&bob), &first).await,
        ByeReason::ResumeRejected
    );
    // A made-up token: refused.
    assert_eq!(
        refused(&agent, Some(&ann), &ResumeToken([7; 32])).await,
        ByeReason::ResumeRejected
    );

    // Ann comes back: viewing and controlling again, no prompt.
    let mut expert = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        Some(&ann),
        Auth::Resume {
            token: first.clone(),
        },
    )
    .await;
    wait_controlling(&mut expert).await;
    let seen = events_until(&mut device, "resumed").await;
    assert!(
        !seen.iter().any(|e| e["event"] == "consent-requested"),
        "{seen:?}"
    );
    assert_eq!(seen.last().unwrap()["phase"], "controlling");
    expert.wait_updates(expert.updates + 1).await;
    assert!(expert.fb.is_some(), "the screen is sent again");
    injects(&agent, &mut expert, 31).await;
    let (second, _) = resume_offer(&mut expert).await;
    assert_ne!(second, first, "each resume brings a new token");

    // Dropped again: the used token no longer works, the new one does.
    drop(expert);
    event(&mut device, "reconnecting").await;
    assert_eq!(
        refused(&agent, Some(&ann), &first).await,
        ByeReason::ResumeRejected
    );
    let mut expert = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        Some(&ann),
        Auth::Resume { token: second },
    )
    .await;
    wait_controlling(&mut expert).await;
    let seen = events_until(&mut device, "resumed").await;
    assert!(
        !seen.iter().any(|e| e["event"] == "consent-requested"),
        "{seen:?}"
    );
    injects(&agent, &mut expert, 32).await;

    agent.ctl_ok(Request::End).await;
    assert_eq!(expert.closed().await.0, ByeReason::EndedByUser);
    let records = agent.stop().await;
    let names: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "suspended").count(),
        2,
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "resumed").count(),
        2,
        "{names:?}"
    );
    // One session throughout: one view consent asked, one control consent.
    assert_eq!(
        names.iter().filter(|n| **n == "consent-asked").count(),
        2,
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_session_resumes_with_the_token_alone() {
    let agent = Agent::start(None, |_| {}).await;
    let mut device = agent.ctl().await;
    let id = agent.invite("1h", "correct horse").await;
    let mut expert = TlsExpert::invitation(&agent, id, "correct horse").await;
    event(&mut device, "consent-requested").await;
    agent.ctl_ok(Request::Accept { prompt: None }).await;
    let (token, _) = resume_offer(&mut expert).await;
    drop(expert);
    event(&mut device, "reconnecting").await;
    let mut expert =
        TlsExpert::connect(agent.addr, agent.fingerprint, None, Auth::Resume { token }).await;
    expert
        .wait_for("viewing", |e| {
            is_state(e, |s| matches!(s, ExpertState::Viewing { .. }))
        })
        .await;
    let seen = events_until(&mut device, "resumed").await;
    assert_eq!(seen.last().unwrap()["phase"], "viewing");
    assert!(!seen.iter().any(|e| e["event"] == "consent-requested"));
    agent.ctl_ok(Request::End).await;
    assert_eq!(expert.closed().await.0, ByeReason::EndedByUser);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_token_is_refused_and_consent_is_needed_again() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.resume_grace = Duration::from_secs(1);
    })
    .await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let (token, grace) = resume_offer(&mut expert).await;
    assert_eq!(grace, Duration::from_secs(1));
    drop(expert);
    event(&mut device, "reconnecting").await;
    let ended = event(&mut device, "session-ended").await;
    assert_eq!(ended["reason"], "PeerTimeout");
    assert_eq!(
        refused(&agent, Some(&ann), &token).await,
        ByeReason::ResumeRejected
    );
    // A new offer is a new session: it asks again.
    let _expert = TlsExpert::offer(&agent, Some(&ann)).await;
    let asked = event(&mut device, "consent-requested").await;
    assert_eq!(asked["kind"], "view");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumption_off_ends_the_session_on_a_drop() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.resume_grace = Duration::ZERO;
    })
    .await;
    let mut device = agent.ctl().await;
    let expert = controlling_session(&agent, &ann, &mut device).await;
    drop(expert);
    let seen = events_until(&mut device, "session-ended").await;
    assert!(
        !seen.iter().any(|e| e["event"] == "reconnecting"),
        "{seen:?}"
    );
    assert!(agent.sink.calls().contains(&Call::ReleaseAll));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_expert_is_detected_keys_released_and_it_can_resume() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |c| {
        c.keepalive_interval = Duration::from_secs(1);
        c.peer_timeout = Duration::from_secs(2);
    })
    .await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let (token, _) = resume_offer(&mut expert).await;
    injects(&agent, &mut expert, 30).await;
    // The expert goes silent with its connection still open.
    let t0 = std::time::Instant::now();
    event(&mut device, "reconnecting").await;
    let silent = t0.elapsed();
    assert!(
        silent >= Duration::from_millis(1500) && silent < Duration::from_secs(6),
        "detected after {silent:?}"
    );
    assert_eq!(agent.sink.calls().last(), Some(&Call::ReleaseAll));
    let records = agent.audit_records();
    let suspended = records
        .iter()
        .find(|r| r["event"] == "suspended")
        .expect("suspended record");
    assert_eq!(suspended["detail"], "no keepalive from the expert");
    drop(expert);
    let mut expert = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        Some(&ann),
        Auth::Resume { token },
    )
    .await;
    wait_controlling(&mut expert).await;
    injects(&agent, &mut expert, 31).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_at_the_device_can_end_a_session_on_hold() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut expert = controlling_session(&agent, &ann, &mut device).await;
    let (token, _) = resume_offer(&mut expert).await;
    drop(expert);
    event(&mut device, "reconnecting").await;
    agent.ctl_ok(Request::End).await;
    let ended = event(&mut device, "session-ended").await;
    assert_eq!(ended["reason"], "EndedByUser");
    assert_eq!(
        refused(&agent, Some(&ann), &token).await,
        ByeReason::ResumeRejected
    );
    let status = agent.ctl_ok(Request::Status).await;
    assert!(status["session"].is_null(), "{status}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_while_the_old_connection_still_looks_open_takes_over() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut old = controlling_session(&agent, &ann, &mut device).await;
    let (token, _) = resume_offer(&mut old).await;
    // Half-open: the expert gave up on `old`, the device has not noticed.
    let mut expert = TlsExpert::connect(
        agent.addr,
        agent.fingerprint,
        Some(&ann),
        Auth::Resume { token },
    )
    .await;
    wait_controlling(&mut expert).await;
    let seen = events_until(&mut device, "resumed").await;
    assert!(
        seen.iter().any(|e| e["event"] == "reconnecting"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|e| e["event"] == "consent-requested"),
        "{seen:?}"
    );
    // Keys went up when the old connection was given up.
    assert!(agent.sink.calls().contains(&Call::ReleaseAll));
    injects(&agent, &mut expert, 33).await;
    // The old connection is closed by the device.
    old.closed().await;
    agent.ctl_ok(Request::End).await;
    assert_eq!(expert.closed().await.0, ByeReason::EndedByUser);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_session_on_hold() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let expert = controlling_session(&agent, &ann, &mut device).await;
    drop(expert);
    event(&mut device, "reconnecting").await;
    let records = agent.stop().await;
    let bye = records
        .iter()
        .find(|r| r["event"] == "bye")
        .expect("bye record");
    assert_eq!(bye["reason"], "ShuttingDown");
}
