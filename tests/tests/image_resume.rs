//! A dropped connection as the person at the device sees it, on a real
//! kernel: the expert (the client library, reconnecting by itself) reaches
//! the agent in the QEMU image through a relay that can pull the cable.
//! While the expert is away the banner strip says the session waits for
//! them to reconnect; when they are back it is the view strip again, with
//! no new prompt; when they stay away past the grace period the session
//! ends and the banner goes.
//!
//! Needs the image with the agent (`image/build`); without it this test
//! prints why and passes, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::Duration;

use shoulder_banner::layout::palette::{RECONNECT_STRIP, VIEW_STRIP};
use shoulder_proto::session::expert::ExpertState;
use shoulder_testkit::agent_vm::{
    agent_toml, agent_vm_config, boot_agent_or_skip, expect_state, guest_ok,
};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::Vm;
use shoulder_testkit::relay::Relay;
use shoulder_testkit::screens::{shows_strip, strip_share, wait_same_pixels};
use shoulder_testkit::wait::wait_until;

/// Screen size the test runs the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step; generous because emulation on a loaded
/// machine is slow.
const STEP: Duration = Duration::from_secs(20);
/// How often the waits below take a screendump.
const POLL: Duration = Duration::from_millis(100);
/// Expert name on the certificate (shown on the strip).
const EXPERT_NAME: &str = "Ann Expert";
/// The agent's grace period for this test: long enough for the resume
/// step on a slow machine, short enough to wait out.
const GRACE: Duration = Duration::from_secs(8);
/// The agent's log line for each consent prompt.
const PROMPT_LOG: &str = "consent prompt: answer with";

/// Waits until a screendump satisfies `pred`; panics naming `what`, with the
/// expert's events and the serial log.
fn wait_screen(
    vm: &mut Vm,
    expert: &ClientExpert,
    what: &str,
    within: Duration,
    pred: impl Fn(&shoulder_testkit::qemu::Screen) -> bool,
) {
    let seen = wait_until(within, POLL, || pred(&vm.screendump().expect("screendump")));
    assert!(
        seen,
        "waiting for {what}; expert events {:?}\nserial log:\n{}",
        expert.event_summary(),
        vm.serial_log()
    );
}

fn wait_state(vm: &Vm, expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    expect_state(vm, expert, STEP, what, pred);
}

/// Runs `command` in the guest and returns its output.
fn guest(vm: &mut Vm, command: &str) -> String {
    guest_ok(vm, command, STEP)
}

#[test]
fn image_banner_shows_reconnecting_while_the_expert_is_away() {
    let test = "image_banner_shows_reconnecting_while_the_expert_is_away";
    let pki = Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"));
    let toml = agent_toml(
        "Test kiosk",
        &format!("resume_grace = \"{}s\"", GRACE.as_secs()),
    );
    let config = agent_vm_config(SCREEN, "--paused", toml, pki.ca_pem.as_bytes());
    let Some(mut vm) = boot_agent_or_skip(test, config) else {
        return;
    };
    let relay = Relay::start(vm.agent_addr()).expect("relay");
    let expert = ClientExpert::offer(relay.addr(), &pki);
    wait_state(&vm, &expert, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    guest(&mut vm, "shoulder-agent ctl accept");
    wait_state(&vm, &expert, "viewing", viewing);
    wait_screen(&mut vm, &expert, "the view strip", STEP, |d| {
        strip_share(d, EXPERT_NAME, VIEW_STRIP) > 0.5
    });

    // The cable is pulled and stays out: the strip says so.
    relay.refuse(true);
    relay.cut();
    wait_screen(&mut vm, &expert, "the reconnecting strip", GRACE, |d| {
        strip_share(d, EXPERT_NAME, RECONNECT_STRIP) > 0.5
    });
    let status: serde_json::Value =
        serde_json::from_str(guest(&mut vm, "shoulder-agent ctl status").trim())
            .expect("ctl status prints JSON");
    assert_eq!(status["session"]["phase"], "reconnecting", "{status}");

    // Back within the grace period: the session goes on where it was, with
    // no new prompt.
    relay.refuse(false);
    wait_screen(&mut vm, &expert, "the view strip again", STEP, |d| {
        strip_share(d, EXPERT_NAME, VIEW_STRIP) > 0.5
    });
    wait_state(&vm, &expert, "viewing after the resume", viewing);
    wait_same_pixels(&mut vm, &expert, STEP);
    assert!(relay.accepted() >= 2, "no reconnect went through the relay");
    assert_eq!(vm.serial_log().matches(PROMPT_LOG).count(), 1);

    // Away for longer than the grace period: the session ends, the banner
    // goes, and the client says why.
    relay.refuse(true);
    relay.cut();
    wait_screen(&mut vm, &expert, "the reconnecting strip", GRACE, |d| {
        strip_share(d, EXPERT_NAME, RECONNECT_STRIP) > 0.5
    });
    wait_screen(
        &mut vm,
        &expert,
        "the kiosk app's own screen",
        GRACE + STEP,
        |d| !shows_strip(d, SCREEN, EXPERT_NAME),
    );
    assert!(
        wait_until(STEP, POLL, || expert.ended().is_some()),
        "the client kept trying: {:?}",
        expert.event_summary()
    );
    let ended = expert.ended().unwrap_or_default();
    assert!(ended.contains("ReconnectFailed"), "{ended}");
    let status: serde_json::Value =
        serde_json::from_str(guest(&mut vm, "shoulder-agent ctl status").trim())
            .expect("ctl status prints JSON");
    assert!(status["session"].is_null(), "{status}");
    assert_eq!(vm.serial_log().matches(PROMPT_LOG).count(), 1);
    drop(expert);
    vm.shutdown();
}
