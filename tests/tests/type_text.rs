//! Text typed for the person at the device (`shoulder type`, the client's
//! "Type text…"): the real `shoulder` binary against the real agent over
//! TLS on loopback. What the agent injects is read back through the host's
//! libxkbcommon, as a compositor would (independent of the agent's
//! tables); the real kernel and Weston are in `image_weston`.

use shoulder_agent::control::Request;
use shoulder_proto::Key;
use shoulder_proto::session::InjectEvent;
use shoulder_testkit::agent::{Agent, event};
use shoulder_testkit::client_cli::{CliExpert, assert_fails_with, stderr};
use shoulder_testkit::xkb::typed_text;

const PW: &str = "blue-harbour-42";

/// 200 characters with every printable ASCII character in it.
fn every_printable_ascii_in_200() -> String {
    let ascii: String = (0x20u8..=0x7e).map(char::from).collect();
    let s = format!("{ascii}{ascii}{}", &ascii[..10]);
    assert_eq!(s.chars().count(), 200);
    s
}

fn injected_keys(agent: &Agent) -> Vec<Key> {
    agent
        .sink
        .injected()
        .into_iter()
        .filter_map(|e| match e {
            InjectEvent::Key(k) => Some(k),
            _ => None,
        })
        .collect()
}

async fn type_with(layout: &str, xkb: (&str, &str), text: &str) {
    let agent = Agent::pattern(None, |c| {
        c.input.keyboard_layout = layout.into();
    })
    .await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(2, true).await;
    let o = ex.run(&["type", &inv, "--password-file", &pw, text]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let keys = injected_keys(&agent);
    assert_eq!(
        typed_text(xkb.0, xkb.1, &keys),
        text,
        "{layout}: what XKB makes of the keys the agent pressed"
    );
    let records = agent.stop().await;
    let typed = records
        .iter()
        .find(|r| r["event"] == "type-text")
        .expect("typing is audited");
    assert_eq!(typed["chars"], text.chars().count());
    assert_eq!(typed["layout"], layout);
    // The text itself is never in the audit log: it may be a password.
    let log = serde_json::to_string(&records).unwrap();
    assert!(
        !log.contains("0123456789:;<=>?@ABC"),
        "the text was audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_printable_ascii_character_types_exactly_in_us_and_german() {
    let text = every_printable_ascii_in_200();
    type_with("us", ("us", ""), &text).await;
    type_with("de", ("de", ""), &text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn european_letters_and_lines_type_exactly_in_french_and_swiss_german() {
    type_with(
        "fr",
        ("fr", ""),
        "ça coûte 12 € à Besançon, où l'été est doux.\nÉtape 2 : « 5 % » ~ ^ ` @ # { } [ ] | \\",
    )
    .await;
    type_with(
        "ch",
        ("ch", ""),
        "Grüezi! Bärn, Zürich; größer? 3 × 4 = 12 \"quote\" 'apostrophe' ~^`",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untypable_characters_are_named_and_nothing_is_typed() {
    let agent = Agent::pattern(None, |c| {
        c.input.keyboard_layout = "us".into();
    })
    .await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(2, true).await;
    let o = ex
        .run(&["type", &inv, "--password-file", &pw, "Grüße aus Köln"])
        .await;
    assert_fails_with(
        &o,
        "Nothing typed: the device's keyboard layout (us) has no keys for: ü ß ö",
    );
    answers.await.unwrap();
    assert!(injected_keys(&agent).is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_typed_when_the_person_keeps_control() {
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    // Yes to the view, no to control.
    let mut device = agent.ctl().await;
    let _ = device.request(&Request::Status).await;
    let args = ["type", &inv, "--password-file", &pw, "secret"];
    let run = ex.run(&args);
    let decline = async {
        for accept in [true, false] {
            let asked = event(&mut device, "consent-requested").await;
            assert_eq!(asked["kind"], if accept { "view" } else { "control" });
            let req = if accept {
                Request::Accept { prompt: None }
            } else {
                Request::Decline { prompt: None }
            };
            device.request(&req).await.unwrap();
        }
    };
    let (o, ()) = tokio::join!(run, decline);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("declined"),
        "the technician hears control was declined: {}",
        stderr(&o)
    );
    assert!(injected_keys(&agent).is_empty());
    agent.stop().await;
}

/// The person takes control back while a long text is being typed: typing
/// stops, every key pressed was let go, and the technician hears how far
/// it got (not just that control ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_control_midway_stops_the_typing_and_says_how_far_it_got() {
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "kiosk.shoulder", PW).await;
    let answers = agent.answer_prompts(2, true).await;
    let text = "abcdefghij".repeat(40);
    let args = ["type", &inv, "--password-file", &pw, &text];
    let run = ex.run(&args);
    let stop = async {
        answers.await.unwrap();
        let t0 = std::time::Instant::now();
        while injected_keys(&agent).len() < 20 {
            assert!(
                t0.elapsed() < shoulder_testkit::agent::WAIT,
                "nothing typed"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        agent.ctl_ok(Request::StopControl).await;
    };
    let (o, ()) = tokio::join!(run, stop);
    assert!(!o.status.success(), "{}", stderr(&o));
    let said = shoulder_testkit::client_cli::sentence(&o);
    assert!(
        said.starts_with("Typing stopped after ") && said.contains("control ended"),
        "{}",
        stderr(&o)
    );
    let keys = injected_keys(&agent);
    assert!(
        keys.len() < 800,
        "typed on after control ended: {}",
        keys.len()
    );
    // Nothing held: every press was followed by its release.
    assert_eq!(keys.iter().filter(|k| k.down).count() * 2, keys.len());
    agent.stop().await;
}
