//! The client library against the real agent (in-process) through a TCP
//! relay that can cut every live connection, as a pulled cable or a Wi-Fi
//! roam does: the client reconnects by itself, to the same device only, and
//! the session goes on in the same state without a new prompt; it gives up
//! with a clear sentence when the device's grace period is over; and the
//! expert can still disconnect meanwhile.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoulder::client::{ClientEvent, fb_hash};
use shoulder::error::ClientError;
use shoulder_agent::control::Request;
use shoulder_proto::session::{ExpertState, UserAction};
use shoulder_proto::{Buttons, Pointer};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_session::{Session, accept_all, controlling, viewing};
use shoulder_testkit::relay::Relay;
use shoulder_testkit::synthetic::Synthetic;

async fn click(s: &Session, x: u16, y: u16) {
    for buttons in [1, 0] {
        s.actions
            .send(UserAction::Pointer(Pointer {
                x,
                y,
                buttons: Buttons(buttons),
                wheel: 0,
                hwheel: 0,
            }))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes_by_itself_in_the_same_state() {
    let screen = Synthetic::new(320, 240);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let relay = Relay::start(agent.addr).unwrap();
    let prompts = accept_all(&agent).await;
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, viewing).await;
    s.actions.send(UserAction::RequestControl).await.unwrap();
    s.wait("control", WAIT, controlling).await;
    s.in_sync(&screen).await;
    assert_eq!(
        prompts.load(Ordering::SeqCst),
        2,
        "view and control prompts"
    );

    let before_drop = s.seen.len();
    relay.cut();
    let (lost_at, e) = s
        .wait("reconnecting", WAIT, |e| {
            matches!(e, ClientEvent::Reconnecting { .. })
        })
        .await;
    let ClientEvent::Reconnecting { until, .. } = e else {
        unreachable!()
    };
    let grace = until.saturating_duration_since(lost_at);
    assert!(
        grace > Duration::from_secs(15) && grace <= Duration::from_secs(20),
        "the device's 20 s grace period: {grace:?}"
    );
    s.wait("resuming", WAIT, |e| matches!(e, ClientEvent::Resuming))
        .await;
    let (back_at, _) = s.wait("control again", WAIT, controlling).await;
    eprintln!("control back {:?} after the cut", back_at - lost_at);
    assert!(
        back_at - lost_at < Duration::from_secs(5),
        "resumed {:?} after the drop",
        back_at - lost_at
    );
    assert!(
        !s.seen[before_drop..]
            .iter()
            .any(|e| matches!(e, ClientEvent::State(ExpertState::WaitingForConsent { .. }))),
        "no new prompt on the expert's side: {:?}",
        &s.seen[before_drop..]
    );
    assert_eq!(
        prompts.load(Ordering::SeqCst),
        2,
        "no new prompt on the device"
    );
    assert_eq!(relay.accepted(), 2);

    // Control works on the new connection: a click on the kiosk's counter
    // button reaches the device, and the view follows.
    let (cx, cy) = screen.controls.counter_button_centre();
    click(&s, cx, cy).await;
    let t0 = Instant::now();
    while screen.controls.counter() == 0 {
        assert!(
            t0.elapsed() < WAIT,
            "the click after resuming never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.in_sync(&screen).await;
    let before = fb_hash(s.view.lock().fb.as_ref().unwrap());

    // A second drop resumes too (the token is renewed each time).
    relay.cut();
    s.wait("reconnecting again", WAIT, |e| {
        matches!(e, ClientEvent::Reconnecting { .. })
    })
    .await;
    s.wait("control after the second drop", WAIT, controlling)
        .await;
    s.in_sync(&screen).await;
    assert_eq!(fb_hash(s.view.lock().fb.as_ref().unwrap()), before);
    assert_eq!(prompts.load(Ordering::SeqCst), 2);
    let audit = std::fs::read_to_string(&agent.config.audit_log).unwrap();
    assert_eq!(audit.matches("\"resumed\"").count(), 2, "{audit}");

    // The person at the device ends the session: a goodbye, not a drop, so
    // the client does not try to come back.
    agent.ctl_ok(Request::End).await;
    let (_, end) = s.ended(WAIT).await;
    let end = end.expect("ended by the device");
    assert_eq!(
        end.sentence(),
        shoulder_proto::ByeReason::EndedByUser.sentence()
    );
    assert_eq!(
        s.seen
            .iter()
            .filter(|e| matches!(e, ClientEvent::Reconnecting { .. }))
            .count(),
        2
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_gives_up_when_the_grace_period_is_over() {
    let screen = Synthetic::new(320, 240);
    let agent = Agent::with_backends(None, screen.backends(), |c| {
        c.resume_grace = Duration::from_secs(3);
    })
    .await;
    let relay = Relay::start(agent.addr).unwrap();
    let prompts = accept_all(&agent).await;
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, viewing).await;
    s.in_sync(&screen).await;

    relay.refuse(true);
    relay.cut();
    let (lost_at, _) = s
        .wait("reconnecting", WAIT, |e| {
            matches!(e, ClientEvent::Reconnecting { .. })
        })
        .await;
    let (end_at, end) = s.ended(WAIT).await;
    let waited = end_at - lost_at;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(5),
        "gave up {waited:?} after the drop (grace 3 s)"
    );
    let end = end.expect("an error, not a disconnect");
    assert!(
        matches!(end, ClientError::ReconnectFailed { secs: 3, .. }),
        "{end:?}"
    );
    let sentence = end.sentence();
    assert!(
        sentence.starts_with(
            "The connection to the device was lost and could not be restored within 3 s ("
        ) && sentence.ends_with(
            "— check the network and connect again; the person at the device will be asked again."
        ),
        "{sentence}"
    );
    let attempts = s
        .seen
        .iter()
        .filter(|e| matches!(e, ClientEvent::Reconnecting { .. }))
        .count();
    assert!(attempts >= 3, "kept trying: {attempts} attempts");
    assert_eq!(prompts.load(Ordering::SeqCst), 1);

    // After the grace period the device needs consent again.
    relay.refuse(false);
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, viewing).await;
    assert_eq!(prompts.load(Ordering::SeqCst), 2, "a new prompt");
    s.actions.send(UserAction::Disconnect).await.unwrap();
    assert!(s.ended(WAIT).await.1.is_none());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expert_can_disconnect_while_reconnecting() {
    let screen = Synthetic::new(320, 240);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let relay = Relay::start(agent.addr).unwrap();
    let _prompts = accept_all(&agent).await;
    let mut s = Session::start(&agent, &relay).await;
    s.wait("viewing", WAIT, viewing).await;

    relay.refuse(true);
    relay.cut();
    s.wait("reconnecting", WAIT, |e| {
        matches!(e, ClientEvent::Reconnecting { .. })
    })
    .await;
    // Input meanwhile is dropped, not queued for later.
    click(&s, 10, 10).await;
    let t0 = Instant::now();
    s.actions.send(UserAction::Disconnect).await.unwrap();
    let (_, end) = s.ended(WAIT).await;
    assert!(end.is_none(), "{end:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(screen.controls.counter(), 0);
    agent.stop().await;
}
