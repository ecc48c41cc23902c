//! Sessions through a real Mosquitto (Debian's) on loopback with TLS,
//! client certificates and the shipped ACL (`broker/mosquitto/acl`): the
//! device and the expert both connect out to the broker, and the session
//! (the same TLS, consent and resume as a direct one) runs through it.
//! An observer allowed to read every topic shows what the broker sees.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes_free::contains;
use shoulder::client::ClientEvent;
use shoulder::client::broker::BrokerRoute;
use shoulder::target::Target;
use shoulder_agent::config::BrokerConfig;
use shoulder_agent::control::Request;
use shoulder_broker::{Link, LinkConfig, Presence};
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_session::{Session, accept_all, controlling, viewing};
use shoulder_testkit::expert::connect_options;
use shoulder_testkit::mosquitto::{Mosquitto, shipped_acl};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::synthetic::Synthetic;

/// A chat line that must reach the device and never show at the broker.
const SECRET: &str = "printer jammed in tray 2, serial 4471-XK";

mod bytes_free {
    /// Whether `needle` occurs in `hay`.
    pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
        !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
    }
}

fn broker_config(m: &Mosquitto) -> BrokerConfig {
    BrokerConfig {
        address: m.address(),
        ca: vec![m.ca()],
        prefix: "shoulder".into(),
        site: "Hall 3".into(),
        keepalive: Duration::from_secs(30),
        help_expires: Duration::from_secs(3600),
    }
}

/// A device whose certificate the plant CA signed for `name` (the broker
/// knows it by that name), showing `screen`, with `tweak` applied.
async fn plant_device(
    pki: &Pki,
    screen: &Synthetic,
    name: &str,
    tweak: impl FnOnce(&mut shoulder_agent::Config),
) -> Agent {
    Agent::plant_signed(pki, screen.backends(), name, tweak).await
}

/// Ann's offer to `device` through the broker `m`.
fn offer_through(pki: &Pki, m: &Mosquitto, device: &str, known: &std::path::Path) -> Session {
    let identity = pki.expert_identity().unwrap();
    let mut opts = connect_options(
        Target::Offer {
            host: device.into(),
            port: shoulder_proto::DEFAULT_PORT,
        },
        Some(identity),
        None,
        pki.expert_name(),
        known.join("known_devices"),
    );
    let mut route = BrokerRoute::parse(&m.address()).unwrap();
    route.ca = Some(m.ca());
    opts.broker = Some(route);
    Session::with_options(opts)
}

/// Topics and payloads as the broker passed them on.
type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Everything published under `shoulder/` as the broker passes it on,
/// read by a client the test's ACL lets read it all.
struct Observer {
    _link: Link,
    seen: Seen,
}

impl Observer {
    async fn start(pki: &Pki, m: &Mosquitto) -> Self {
        let cert = pki.expert("observer", false);
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(rustls_pem_cert(
                &pki.ca_pem,
            )))
            .unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(cert.chain.clone(), cert.key())
        .unwrap();
        let (link, mut other) = Link::start(LinkConfig {
            host: "127.0.0.1".into(),
            port: m.port,
            tls: Arc::new(tls),
            client_id: "observer".into(),
            keep_alive: Duration::from_secs(30),
            will: None,
            subscriptions: vec!["shoulder/#".into()],
            announce: None,
        });
        link.wait_up(WAIT).await.unwrap();
        let seen: Seen = Arc::default();
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some((topic, payload)) = other.recv().await {
                s.lock().unwrap().push((topic, payload.to_vec()));
            }
        });
        Self { _link: link, seen }
    }

    fn presence(&self, device: &str) -> Option<Presence> {
        let topic = format!("shoulder/dev/{device}/presence");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(t, _)| *t == topic)
            .and_then(|(_, p)| serde_json::from_slice(p).ok())
    }
}

fn rustls_pem_cert(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < WAIT, "no {what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_through_the_broker_views_controls_chats_and_survives_a_broker_restart() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let acl = format!("{}\nuser observer\ntopic read shoulder/#\n", shipped_acl());
    let mut m = Mosquitto::start(&pki, &acl);
    let observer = Observer::start(&pki, &m).await;
    let screen = Synthetic::new(320, 240);
    let agent = plant_device(&pki, &screen, "kiosk-b", |c| {
        c.broker = Some(broker_config(&m));
        c.resume_grace = Duration::from_secs(60);
    })
    .await;
    let t0 = Instant::now();
    while !observer.presence("kiosk-b").is_some_and(|p| p.online) {
        assert!(
            t0.elapsed() < WAIT,
            "no online presence record; the broker's log: {}",
            m.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = observer.presence("kiosk-b").unwrap();
    assert_eq!((p.site.as_str(), p.control), ("Hall 3", true));

    let prompts = accept_all(&agent).await;
    let known = tempfile::tempdir().unwrap();
    let mut s = offer_through(&pki, &m, "kiosk-b", known.path());
    s.wait("viewing", WAIT, viewing).await;
    s.in_sync(&screen).await;
    s.actions.send(UserAction::RequestControl).await.unwrap();
    s.wait("control", WAIT, controlling).await;
    let (cx, cy) = screen.controls.counter_button_centre();
    s.click(cx, cy).await;
    wait_for("the click on the device", || screen.controls.counter() > 0).await;
    s.in_sync(&screen).await;
    s.actions
        .send(UserAction::Chat(SECRET.into()))
        .await
        .unwrap();

    // The broker goes away and comes back: both links reconnect and the
    // session resumes on a new tunnel, without a new prompt.
    let before = s.seen.len();
    m.restart();
    s.wait("reconnecting", WAIT, |e| {
        matches!(e, ClientEvent::Reconnecting { .. })
    })
    .await;
    s.wait(
        "control after the broker came back",
        Duration::from_secs(60),
        controlling,
    )
    .await;
    assert!(
        !s.seen[before..]
            .iter()
            .any(|e| matches!(e, ClientEvent::State(ExpertState::WaitingForConsent { .. }))),
        "no new prompt: {:?}",
        &s.seen[before..]
    );
    assert_eq!(prompts.load(Ordering::SeqCst), 2, "view and control only");
    let clicks = screen.controls.counter();
    s.click(cx, cy).await;
    wait_for("a click after the restart", || {
        screen.controls.counter() > clicks
    })
    .await;
    s.in_sync(&screen).await;

    // The person stops control; the view goes on; then they end it.
    agent.ctl_ok(Request::StopControl).await;
    s.wait("view without control", WAIT, |e| {
        matches!(
            e,
            ClientEvent::State(ExpertState::Viewing {
                control: ControlState::None
            })
        )
    })
    .await;
    agent.ctl_ok(Request::End).await;
    let (_, end) = s.ended(WAIT).await;
    assert_eq!(
        end.unwrap().sentence(),
        shoulder_proto::ByeReason::EndedByUser.sentence()
    );

    // The chat reached the device…
    let audit = std::fs::read_to_string(&agent.config.audit_log).unwrap();
    assert!(audit.contains(SECRET), "the chat line was not audited");
    assert!(audit.contains("\"resumed\""), "{audit}");
    // …and the broker saw only ciphertext: neither the chat line nor a row
    // of the screen is in any message it passed on, or in its saved state.
    let seen = observer.seen.lock().unwrap().clone();
    let session_bytes: usize = seen
        .iter()
        .filter(|(t, _)| t.contains("/s/"))
        .map(|(_, p)| p.len())
        .sum();
    assert!(
        session_bytes > 2_000
            && seen.iter().any(|(t, _)| t.ends_with("/e"))
            && seen.iter().any(|(t, _)| t.ends_with("/d")),
        "the session went through the broker both ways: {session_bytes} bytes seen"
    );
    let frame = screen.frame();
    let row = 320 * 4;
    let pixels = &frame[100 * row + 40..100 * row + 40 + 64];
    for (topic, payload) in &seen {
        assert!(
            !contains(payload, SECRET.as_bytes()),
            "chat text on {topic}"
        );
        assert!(!contains(payload, pixels), "screen pixels on {topic}");
    }
    drop(agent);
    m.stop();
    let db = m.persistence();
    assert!(
        !contains(&db, SECRET.as_bytes()),
        "chat text in mosquitto.db"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_and_a_refusing_acl_are_told_apart() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let known = tempfile::tempdir().unwrap();

    // Nobody is there.
    let m = Mosquitto::start(&pki, &shipped_acl());
    let mut s = offer_through(&pki, &m, "kiosk-gone", known.path());
    let (_, end) = s.ended(WAIT).await;
    let e = end.expect("an error").sentence();
    assert!(
        e.contains("kiosk-gone is not connected to the broker"),
        "{e}"
    );
    drop(m);

    // The device is there, but the broker's ACL does not let experts ask.
    let acl: String = shipped_acl()
        .lines()
        .filter(|l| !l.contains("/open"))
        .map(|l| format!("{l}\n"))
        .collect();
    let m = Mosquitto::start(&pki, &acl);
    let screen = Synthetic::new(64, 48);
    let agent = plant_device(&pki, &screen, "kiosk-c", |c| {
        c.broker = Some(broker_config(&m));
    })
    .await;
    let _ = accept_all(&agent).await;
    let mut s = offer_through(&pki, &m, "kiosk-c", known.path());
    let (_, end) = s.ended(WAIT).await;
    let e = end.expect("an error").sentence();
    assert!(
        e.contains("refused to pass the request to kiosk-c") && e.contains("ACL"),
        "{e}"
    );
    drop(agent);
    drop(m);

    // The ACL forgets the devices' own trees: the device says so where its
    // owner looks (`ctl status`, and its log), with the fix.
    let acl: String = shipped_acl()
        .lines()
        .filter(|l| !l.contains("shoulder/dev/%u/#"))
        .map(|l| format!("{l}\n"))
        .collect();
    let m = Mosquitto::start(&pki, &acl);
    let agent = plant_device(&pki, &screen, "kiosk-r", |c| {
        c.broker = Some(broker_config(&m));
    })
    .await;
    let t0 = Instant::now();
    let broker = loop {
        let st = agent.ctl_ok(Request::Status).await;
        if st["broker"]["state"] == "refused" {
            break st["broker"].clone();
        }
        assert!(t0.elapsed() < WAIT, "the device never said: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let detail = broker["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused a message from this device")
            && detail.contains("ACL for the name kiosk-r"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_cannot_reach_its_broker_still_serves_direct_connections() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let screen = Synthetic::new(64, 48);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let ca = pki.ca_dir().join("ca.crt");
    let agent = plant_device(&pki, &screen, "kiosk-d", |c| {
        c.broker = Some(BrokerConfig {
            address: closed.to_string(),
            ca: vec![ca],
            prefix: "shoulder".into(),
            site: String::new(),
            keepalive: Duration::from_secs(30),
            help_expires: Duration::from_secs(3600),
        });
    })
    .await;
    let _ = accept_all(&agent).await;
    let known = tempfile::tempdir().unwrap();
    let opts = connect_options(
        shoulder_testkit::expert::offer_target(agent.addr),
        Some(pki.expert_identity().unwrap()),
        None,
        pki.expert_name(),
        known.path().join("known_devices"),
    );
    let mut s = Session::with_options(opts);
    s.wait("viewing directly", WAIT, viewing).await;
    s.in_sync(&screen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_crosses_a_site_broker_bridged_to_the_central_one() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let central_acl = format!(
        "{}\nuser bridge-site\ntopic readwrite shoulder/#\nuser observer\ntopic read shoulder/#\n",
        shipped_acl()
    );
    let central = Mosquitto::start(&pki, &central_acl);
    let site = Mosquitto::start_bridged(&pki, &shipped_acl(), &central);
    let observer = Observer::start(&pki, &central).await;
    let screen = Synthetic::new(320, 240);
    let agent = plant_device(&pki, &screen, "kiosk-s", |c| {
        c.broker = Some(broker_config(&site));
    })
    .await;
    // Asked at once, before the device's link is up.
    agent
        .ctl_ok(Request::Help {
            text: "label printer offline".into(),
        })
        .await;
    // The device is on the site broker; its presence reaches the central
    // one through the bridge.
    let t0 = Instant::now();
    while !observer.presence("kiosk-s").is_some_and(|p| p.online) {
        assert!(
            t0.elapsed() < WAIT,
            "no presence at the central broker; site log: {}\ncentral log: {}",
            site.log(),
            central.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A help request crosses the bridge too.
    let t0 = Instant::now();
    while !directory(&pki, &central).await.help.contains_key("kiosk-s") {
        assert!(
            t0.elapsed() < WAIT,
            "the help request never reached the central broker; site log: {}\ncentral log: {}",
            site.log(),
            central.log()
        );
    }
    let prompts = accept_all(&agent).await;
    let known = tempfile::tempdir().unwrap();
    // The expert is on the central broker.
    let mut s = offer_through(&pki, &central, "kiosk-s", known.path());
    s.wait("viewing", WAIT, viewing).await;
    s.in_sync(&screen).await;
    s.actions.send(UserAction::RequestControl).await.unwrap();
    s.wait("control", WAIT, controlling).await;
    let (cx, cy) = screen.controls.counter_button_centre();
    s.click(cx, cy).await;
    wait_for("the click on the device", || screen.controls.counter() > 0).await;
    s.in_sync(&screen).await;
    assert_eq!(prompts.load(Ordering::SeqCst), 2);
    agent.ctl_ok(Request::End).await;
    s.ended(WAIT).await;
}

/// The device list as Ann's client reads it from `m`.
async fn directory(pki: &Pki, m: &Mosquitto) -> shoulder_broker::Directory {
    let identity = pki.expert_identity().unwrap();
    let mut route = BrokerRoute::parse(&m.address()).unwrap();
    route.ca = Some(m.ca());
    shoulder::client::broker::read_directory(&route, &identity)
        .await
        .unwrap()
}

fn audit_events(agent: &Agent) -> Vec<String> {
    agent
        .audit_records()
        .iter()
        .filter_map(|r| r["event"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_help_request_reaches_the_technicians_and_the_prompt_recalls_it() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let m = Mosquitto::start(&pki, &shipped_acl());
    let screen = Synthetic::new(64, 48);
    let agent = plant_device(&pki, &screen, "kiosk-h", |c| {
        c.broker = Some(broker_config(&m));
    })
    .await;
    // The kiosk app asks for help through the control socket.
    let r = agent
        .ctl_ok(Request::Help {
            text: "printer jammed in tray 2".into(),
        })
        .await;
    assert!(
        r["detail"]
            .as_str()
            .unwrap()
            .contains("expires in 60 minutes"),
        "{r}"
    );
    let t0 = Instant::now();
    let asked = loop {
        if let Some(h) = directory(&pki, &m).await.help.get("kiosk-h") {
            break h.clone();
        }
        assert!(
            t0.elapsed() < WAIT,
            "the help request never reached the broker"
        );
    };
    assert_eq!(asked.text, "printer jammed in tray 2");

    // A technician takes it: the prompt recalls the request; accepting
    // answers it, and it leaves the technicians' list.
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await.unwrap();
    let known = tempfile::tempdir().unwrap();
    let mut s = offer_through(&pki, &m, "kiosk-h", known.path());
    let ev = tokio::time::timeout(WAIT, ctl.wait_event("consent-requested"))
        .await
        .expect("no prompt")
        .unwrap();
    assert_eq!(ev["help"], "printer jammed in tray 2", "{ev}");
    assert_eq!(ev["kind"], "view");
    ctl.request(&Request::Accept { prompt: None })
        .await
        .unwrap();
    s.wait("viewing", WAIT, viewing).await;
    let t0 = Instant::now();
    while directory(&pki, &m).await.help.contains_key("kiosk-h") {
        assert!(t0.elapsed() < WAIT, "the answered request stayed listed");
    }
    let answered = agent
        .audit_records()
        .into_iter()
        .find(|r| r["event"] == "help-answered")
        .expect("help-answered audited");
    assert_eq!(answered["id"], asked.id.as_str());
    assert_eq!(answered["expert"], "Ann Expert");
    agent.ctl_ok(Request::End).await;
    s.ended(WAIT).await;

    // Asked again and withdrawn.
    agent
        .ctl_ok(Request::Help {
            text: String::new(),
        })
        .await;
    let t0 = Instant::now();
    while !directory(&pki, &m).await.help.contains_key("kiosk-h") {
        assert!(t0.elapsed() < WAIT, "the second request never arrived");
    }
    let r = agent.ctl_ok(Request::HelpWithdraw).await;
    assert_eq!(r["changed"], true, "{r}");
    let t0 = Instant::now();
    while directory(&pki, &m).await.help.contains_key("kiosk-h") {
        assert!(t0.elapsed() < WAIT, "the withdrawn request stayed listed");
    }
    let events = audit_events(&agent);
    for e in ["help-requested", "help-answered", "help-withdrawn"] {
        assert!(events.iter().any(|x| x == e), "{e} not audited: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_requests_expire_and_need_a_broker() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let m = Mosquitto::start(&pki, &shipped_acl());
    let screen = Synthetic::new(64, 48);
    let agent = plant_device(&pki, &screen, "kiosk-x", |c| {
        let mut b = broker_config(&m);
        // Below what a config file may say, to see it end.
        b.help_expires = Duration::from_secs(2);
        c.broker = Some(b);
    })
    .await;
    agent
        .ctl_ok(Request::Help {
            text: "scanner dead".into(),
        })
        .await;
    let t0 = Instant::now();
    while !audit_events(&agent).iter().any(|e| e == "help-expired") {
        assert!(t0.elapsed() < WAIT, "the request never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!directory(&pki, &m).await.help.contains_key("kiosk-x"));

    // Without a broker nobody would hear it: refused, with the fix.
    let direct = plant_device(&pki, &screen, "kiosk-y", |_| {}).await;
    let mut c = direct.ctl().await;
    let r = c
        .request(&Request::Help {
            text: "hello?".into(),
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("[broker]"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_names_the_broker_route_and_the_client_falls_back_to_it() {
    let pki = Pki::with_expert("Plant CA", "Ann Expert", 30).unwrap();
    let m = Mosquitto::start(&pki, &shipped_acl());
    let screen = Synthetic::new(64, 48);
    let agent = plant_device(&pki, &screen, "kiosk-i", |c| {
        c.broker = Some(broker_config(&m));
        // Behind NAT: the address the device knows for itself is not one
        // the expert can reach (nothing answers there).
        c.advertise = vec!["127.0.0.2".into()];
    })
    .await;
    let _ = accept_all(&agent).await;
    let (_, file) = agent.invite_file("30m", "river-stone-7").await;
    let inv = shoulder_proto::invite::Invitation::from_file(&file).unwrap();
    let route = inv
        .broker
        .clone()
        .expect("the invitation names the broker route");
    assert_eq!(route.device.as_str(), "kiosk-i");
    assert_eq!(route.broker.as_str(), m.address());
    assert!(file.contains("through the broker"), "{file}");

    let known = tempfile::tempdir().unwrap();
    let mut opts = connect_options(
        Target::Invitation(Box::new(inv)),
        Some(pki.expert_identity().unwrap()),
        Some("river-stone-7"),
        "Ann Expert",
        known.path().join("known_devices"),
    );
    // The broker's CA (the test's plant CA; a plant identity carries it).
    let mut b = BrokerRoute::parse(&m.address()).unwrap();
    b.ca = Some(m.ca());
    opts.broker = Some(b);
    let mut s = Session::with_options(opts);
    s.wait("viewing through the broker", WAIT, viewing).await;
    s.in_sync(&screen).await;
    let tried: Vec<String> = s
        .seen
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Connecting(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(tried.len(), 2, "{tried:?}");
    assert!(
        tried[0].starts_with("127.0.0.2:"),
        "direct first: {tried:?}"
    );
    assert!(
        tried[1].starts_with("kiosk-i via "),
        "then the broker: {tried:?}"
    );
}
