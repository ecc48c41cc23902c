//! Reverse connections without a broker: the technician's client waits
//! (`shoulder listen`, `client::Listen`), the device dials out (`ctl
//! call`), and inside TLS nothing changes: the device is the server the
//! expert verifies, the expert is authenticated by certificate, the person
//! is asked. After a drop the device calls again and the session resumes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoulder::client::{ClientEvent, Listen};
use shoulder::identity::Identity;
use shoulder::target::Target;
use shoulder_agent::control::Request;
use shoulder_proto::session::{ExpertState, UserAction};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_session::{Session, accept_all, controlling};
use shoulder_testkit::expert::connect_options;
use shoulder_testkit::pki::Pki;
use shoulder_testkit::relay::Relay;
use shoulder_testkit::synthetic::Synthetic;

/// A device whose certificate the plant CA signed (`signed`), or its own
/// self-signed one.
async fn device(pki: &Pki, screen: &Synthetic, name: &str, signed: bool) -> Agent {
    if signed {
        return Agent::plant_signed(pki, screen.backends(), name, |_| {}).await;
    }
    Agent::with_backends(
        Some(&pki.ca_dir().join("ca.crt")),
        screen.backends(),
        |_| {},
    )
    .await
}

/// Ann waits for calls on `listen`, trusting devices her plant CA signed.
fn waiting(pki: &Pki, listen: Listen, known: &std::path::Path) -> Session {
    let identity = Arc::new(Identity::load(pki.expert_dir()).unwrap());
    assert!(identity.plant_ca.is_some());
    let mut opts = connect_options(
        Target::Offer {
            host: "a device calling in".into(),
            port: 7576,
        },
        Some(identity),
        None,
        pki.expert_name(),
        known.join("known_devices"),
    );
    opts.accept_new = shoulder::trust::AcceptNew::Ask;
    opts.listen = Some(listen);
    Session::with_options(opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_calls_the_technician_and_calls_again_after_a_drop() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let screen = Synthetic::new(320, 240);
    let agent = device(&pki, &screen, "kiosk-c", true).await;
    let prompts = accept_all(&agent).await;
    let listen = Listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // Between device and technician, a link that can be cut.
    let relay = Relay::start(listen.local_addr().unwrap()).unwrap();
    let known = tempfile::tempdir().unwrap();
    let mut s = waiting(&pki, listen, known.path());

    let r = agent
        .ctl_ok(Request::Call {
            address: Some(relay.addr().to_string()),
        })
        .await;
    assert!(
        r["detail"].as_str().unwrap().contains("the usual prompt"),
        "{r}"
    );
    s.wait("viewing", WAIT, |e| {
        matches!(e, ClientEvent::State(ExpertState::Viewing { .. }))
    })
    .await;
    s.in_sync(&screen).await;
    s.actions.send(UserAction::RequestControl).await.unwrap();
    s.wait("control", WAIT, controlling).await;
    let (cx, cy) = screen.controls.counter_button_centre();
    s.click(cx, cy).await;
    let t0 = Instant::now();
    while screen.controls.counter() == 0 {
        assert!(t0.elapsed() < WAIT, "the click never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The line drops: nobody can reach the device, so it calls again.
    relay.cut();
    s.wait("reconnecting", WAIT, |e| {
        matches!(e, ClientEvent::Reconnecting { .. })
    })
    .await;
    s.wait("control after the device called again", WAIT, controlling)
        .await;
    assert_eq!(prompts.load(Ordering::SeqCst), 2, "no new prompt");
    let clicks = screen.controls.counter();
    s.click(cx, cy).await;
    let t0 = Instant::now();
    while screen.controls.counter() == clicks {
        assert!(
            t0.elapsed() < WAIT,
            "the click after resuming never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.in_sync(&screen).await;
    let audit = std::fs::read_to_string(&agent.config.audit_log).unwrap();
    assert!(audit.contains("\"call-placed\""), "{audit}");
    assert!(audit.contains("\"resumed\""), "{audit}");
    agent.ctl_ok(Request::End).await;
    s.ended(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_plant_did_not_sign_is_turned_away_and_the_next_call_taken() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let screen = Synthetic::new(64, 48);
    let stranger = device(&pki, &screen, "stranger", false).await;
    let kiosk = device(&pki, &screen, "kiosk-d", true).await;
    let _ = accept_all(&kiosk).await;
    let listen = Listen::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let at = listen.local_addr().unwrap().to_string();
    let known = tempfile::tempdir().unwrap();
    let mut s = waiting(&pki, listen, known.path());
    // The stranger's call connects at TCP, then fails the check.
    stranger
        .ctl_ok(Request::Call {
            address: Some(at.clone()),
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !s.seen
            .iter()
            .any(|e| matches!(e, ClientEvent::Connected { .. })),
        "{:?}",
        s.seen
    );
    kiosk
        .ctl_ok(Request::Call {
            address: Some(at.clone()),
        })
        .await;
    let (_, e) = s
        .wait("the kiosk connected", WAIT, |e| {
            matches!(e, ClientEvent::Connected { .. })
        })
        .await;
    let ClientEvent::Connected { device_name, .. } = e else {
        unreachable!()
    };
    assert_eq!(device_name, "kiosk-d");
    s.wait("viewing", WAIT, |e| {
        matches!(e, ClientEvent::State(ExpertState::Viewing { .. }))
    })
    .await;

    // A call nobody answers: the reason and the fix.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut c = stranger.ctl().await;
    let r = c
        .request(&Request::Call {
            address: Some(closed.to_string()),
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("shoulder listen"),
        "{r}"
    );
}
