//! The view checks itself: when the expert's copy of the screen goes wrong
//! (here: scribbled on in the client, as a decoder bug or a lost update
//! would leave it), the device finds the bands that differ from what it
//! sent and sends them again — when the technician presses "refresh", and
//! by itself within a few seconds. Real agent, real client, TLS on
//! loopback.

use std::time::Duration;

use shoulder::client::ClientEvent;
use shoulder_proto::session::{ExpertState, UserAction};
use shoulder_proto::{Encoding, Rect};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_session::{Session, accept_all};
use shoulder_testkit::relay::Relay;
use shoulder_testkit::synthetic::Synthetic;

/// Paints a magenta block into the client's framebuffer only: the device
/// screen does not change, so no update would ever repair it.
fn scribble(s: &Session, x: u16, y: u16) {
    let mut v = s.view.lock();
    let fb = v.fb.as_mut().expect("viewing has a framebuffer");
    fb.apply_rect(&Rect {
        x,
        y,
        w: 50,
        h: 30,
        encoding: Encoding::Solid(0x00ff_00ff),
    })
    .unwrap();
}

fn differs(s: &Session, screen: &Synthetic) -> bool {
    let v = s.view.lock();
    v.fb.as_ref().map(|fb| fb.normalized()) != Some(screen.frame())
}

async fn viewing_in_sync(agent: &Agent, screen: &Synthetic) -> (Session, Relay) {
    let relay = Relay::start(agent.addr).unwrap();
    accept_all(agent).await;
    let mut s = Session::start(agent, &relay).await;
    s.wait("viewing", WAIT, |e| {
        matches!(e, ClientEvent::State(ExpertState::Viewing { .. }))
    })
    .await;
    s.in_sync(screen).await;
    (s, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_view_is_repaired_when_the_technician_refreshes() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let (mut s, _relay) = viewing_in_sync(&agent, &screen).await;

    scribble(&s, 10, 20);
    scribble(&s, 200, 150);
    assert!(differs(&s, &screen));
    s.actions.send(UserAction::CheckView).await.unwrap();
    let (_, e) = s
        .wait(
            "a check that finds the difference",
            WAIT,
            |e| matches!(e, ClientEvent::ViewChecked { differing, .. } if *differing > 0),
        )
        .await;
    let ClientEvent::ViewChecked {
        compared,
        differing,
        ..
    } = e
    else {
        unreachable!()
    };
    // Both scribbles, a handful of 4-row bands each, not the whole screen.
    assert!(
        (2..=30).contains(&differing) && compared >= differing,
        "{differing} of {compared} bands"
    );
    s.in_sync(&screen).await;
    assert!(s.view.lock().stats.view_repairs >= 1);

    // Asked again: the view matches now, and the answer says so.
    s.actions.send(UserAction::CheckView).await.unwrap();
    s.wait("a check asked for that finds nothing", WAIT, |e| {
        matches!(
            e,
            ClientEvent::ViewChecked {
                differing: 0,
                asked: true,
                compared,
            } if *compared > 0
        )
    })
    .await;
    s.actions.send(UserAction::Disconnect).await.unwrap();
    s.ended(WAIT).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_view_repairs_itself_without_being_asked() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let (mut s, _relay) = viewing_in_sync(&agent, &screen).await;

    // A technician pressing refresh as fast as they can meanwhile changes
    // nothing about the outcome (the client sends one report a second).
    for _ in 0..20 {
        s.actions.send(UserAction::CheckView).await.unwrap();
    }
    // The last of those asked-for checks has gone by then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    scribble(&s, 0, 0);
    assert!(differs(&s, &screen));
    // The periodic check (every few seconds) finds and repairs it.
    s.wait("the repair reported", WAIT, |e| {
        matches!(
            e,
            ClientEvent::ViewChecked {
                differing,
                asked: false,
                ..
            } if *differing > 0
        )
    })
    .await;
    s.in_sync(&screen).await;
    s.actions.send(UserAction::Disconnect).await.unwrap();
    s.ended(WAIT).await;
    agent.stop().await;
}
