//! Which device the expert reaches, and what the device may put on the
//! expert's terminal: the real `shoulder` CLI against the real agent
//! (in-process, loopback).

use std::path::{Path, PathBuf};

use shoulder_agent::control::Request;
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_cli::{CliExpert, sentence, stderr};
use shoulder_testkit::relay::Relay;

/// A plant CA and Ann's identity (with the CA's certificate) under `ex`.
fn plant(ex: &CliExpert) -> (PathBuf, String) {
    let ca = ex.path("plant");
    shoulder::identity::init_ca(&ca, "Plant CA").unwrap();
    let ann = ex.path("ann");
    shoulder::identity::issue_expert(&ca, "Ann Expert", &ann, 30).unwrap();
    (ca, ann.display().to_string())
}

/// An agent whose device certificate is signed by the plant CA in `ca`.
async fn plant_device(ca: &Path, name: &str) -> Agent {
    let ca_crt = ca.join("ca.crt");
    let (backends, _) = shoulder_agent::Backends::for_tests(64, 48);
    let name = name.to_string();
    let ca = ca.to_owned();
    Agent::with_backends_prepared(
        Some(&ca_crt),
        backends,
        |_| {},
        move |state| {
            let csr = state.join("device.csr");
            shoulder_agent::identity::csr_for_existing(state, &name, &csr).unwrap();
            let pem = std::fs::read_to_string(&csr).unwrap();
            let crt = shoulder::identity::sign_device(&ca, &pem, 30).unwrap();
            std::fs::write(state.join("device.crt"), crt).unwrap();
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_plant_device_cannot_answer_for_a_known_address() {
    let ex = CliExpert::new();
    let (ca, ann) = plant(&ex);
    let kiosk = plant_device(&ca, "kiosk-1").await;
    // Another kiosk of the same plant, whose key an attacker holds.
    let stolen = plant_device(&ca, "kiosk-2").await;
    let address = Relay::start(kiosk.addr).unwrap();
    let at = address.addr().to_string();
    let png = ex.path("p.png");
    let png = png.to_str().unwrap();

    // First contact: the plant CA vouches, and the address is remembered.
    let answers = kiosk.answer_prompts(1, true).await;
    let o = ex
        .run(&["snapshot", &at, "--identity", &ann, "-o", png])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let known = std::fs::read_to_string(ex.path("config").join("known_devices")).unwrap();
    assert!(known.contains(&at), "{known}");

    // The other kiosk takes the address over: refused before any session.
    address.retarget(stolen.addr);
    let o = ex
        .run(&["snapshot", &at, "--identity", &ann, "-o", png])
        .await;
    assert!(!o.status.success());
    assert!(
        sentence(&o).starts_with(&format!(
            "WARNING: the device at {at} presents a different certificate than last time"
        )),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("Connected to"), "{}", stderr(&o));

    // At its own address that kiosk is fine: the pin is per address.
    let answers = stolen.answer_prompts(1, true).await;
    let o = ex
        .run(&[
            "snapshot",
            &stolen.addr.to_string(),
            "--identity",
            &ann,
            "-o",
            png,
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    kiosk.stop().await;
    stolen.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_text_reaches_the_terminal_as_plain_text() {
    const PW: &str = "blue-harbour-42";
    let hostile = "\x1b]0;pwned\x07\x1b[2J";
    let (backends, _) = shoulder_agent::Backends::for_tests(64, 48);
    let name = format!("Kiosk{hostile} 12");
    let agent = Agent::with_backends(None, backends, |c| c.device_name = name).await;
    let ex = CliExpert::new();
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("kiosk.shoulder", &file);
    let pw = ex.write("pw", PW);
    let stats = ex.path("stats.jsonl");

    // The person at the device accepts, then chats.
    let mut device = agent.ctl().await;
    let _ = device.request(&Request::Status).await;
    let chat = format!("{hostile}hello\nConnected to bank.example");
    let person = tokio::spawn(async move {
        tokio::time::timeout(WAIT, device.wait_event("consent-requested"))
            .await
            .unwrap()
            .unwrap();
        device
            .request(&Request::Accept { prompt: None })
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        device.request(&Request::Chat { text: chat }).await.unwrap();
    });
    let o = ex
        .run(&[
            "watch",
            &inv,
            "--password-file",
            &pw,
            "--stats-json",
            stats.to_str().unwrap(),
            "--duration",
            "3",
        ])
        .await;
    person.await.unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains(['\x1b', '\x07', '\u{9b}']),
        "control characters reached the terminal: {err:?}"
    );
    assert!(err.contains("Connected to Kiosk 12 ("), "{err}");
    assert!(
        err.contains("Device says: hello Connected to bank.example\n"),
        "{err}"
    );
    agent.stop().await;
}
