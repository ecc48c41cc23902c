//! The display going away under a live session, on a real kernel.
//!
//! The DRM driver of the QEMU image's display is unbound through sysfs (as
//! a driver reload, a GPU reset on some drivers or an unplugged USB display
//! does it): the card node disappears, every ioctl on an open descriptor
//! fails with ENODEV, and the kiosk app dies of it. Then the driver is bound
//! again (the agent finds it first, showing the console) and the kiosk app
//! restarted, as a service manager would; it must be able to become DRM
//! master, which the agent's reopening could have taken. Through
//! all of it the agent must keep the session: the expert is told once that
//! the screen is unavailable, then gets the new screen (announced afresh),
//! equal to what the display shows, with the banner strip drawn on it
//! again; the agent process stays the same and logs the outage once.
//!
//! Needs the image with the agent (`image/build`); without it this test
//! prints why and passes, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::Duration;

use shoulder_proto::session::expert::ExpertState;
use shoulder_tests::agent_vm::{agent_toml, agent_vm_config, boot_agent_or_skip};
use shoulder_tests::expert::{Expert, viewing};
use shoulder_tests::pki::Pki;
use shoulder_tests::qemu::Vm;
use shoulder_tests::screens::{shows_strip, wait_same_pixels};
use shoulder_tests::wait::wait_until;

/// Screen size the test runs the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step (a consent round trip, the outage reaching the
/// expert, the display coming back); generous because emulation on a
/// loaded machine is slow.
const STEP: Duration = Duration::from_secs(20);
/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(100);
/// Expert name on the certificate (shown on the strip).
const EXPERT_NAME: &str = "Ann Expert";
/// The agent's warning when capture fails (once per outage).
const UNAVAILABLE_LOG: &str = "the screen is unavailable; retrying";
/// The agent's note when capture works again.
const READABLE_LOG: &str = "the screen is readable again";

/// Runs `command` in the guest; panics with its output unless it succeeds.
fn guest(vm: &mut Vm, command: &str) -> String {
    let out = vm
        .exec(command, STEP)
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(
        out.status,
        0,
        "{command} failed: {}\nserial log:\n{}",
        out.output,
        vm.serial_log()
    );
    out.output.trim().to_string()
}

/// Waits for `cond`, else panics naming `what`, with the expert's events and
/// the serial log.
fn wait(vm: &Vm, expert: &Expert, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(STEP, POLL, cond),
        "waiting for {what}; expert events {:?}\nserial log:\n{}",
        expert.event_summary(),
        vm.serial_log()
    );
}

#[test]
fn image_display_gone_and_back_keeps_the_session() {
    let test = "image_display_gone_and_back_keeps_the_session";
    let pki = Pki::new("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"));
    let config = agent_vm_config(
        SCREEN,
        "--paused",
        agent_toml("Test kiosk", ""),
        pki.ca_pem(),
    );
    let Some(mut vm) = boot_agent_or_skip(test, config) else {
        return;
    };

    // A session the person at the device accepted: the expert sees exactly
    // the screen, strip included.
    let expert = Expert::offer(vm.agent_addr(), &pki);
    if let Err(e) = expert.wait_state(STEP, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    }) {
        panic!("{e}\nserial log:\n{}", vm.serial_log());
    }
    guest(&mut vm, "shoulder-agent ctl accept");
    if let Err(e) = expert.wait_state(STEP, "viewing", viewing) {
        panic!("{e}\nserial log:\n{}", vm.serial_log());
    }
    wait_same_pixels(&mut vm, &expert, STEP);
    assert!(shows_strip(
        &vm.screendump().expect("screendump"),
        SCREEN,
        EXPERT_NAME
    ));
    let agent_pid = guest(&mut vm, "pidof shoulder-agent");
    assert_eq!(expert.screen_announcements(), 1);

    // The driver goes away: the card node with it, the kiosk app dies.
    let pci = guest(
        &mut vm,
        "basename \"$(readlink -f /sys/class/drm/card0/device)\"",
    );
    let driver = guest(
        &mut vm,
        "basename \"$(readlink -f /sys/class/drm/card0/device/driver)\"",
    );
    let mark = vm.serial_mark();
    guest(
        &mut vm,
        &format!("echo {pci} > /sys/bus/pci/drivers/{driver}/unbind && ! test -e /dev/dri/card0"),
    );
    wait(&vm, &expert, "screen unavailable at the expert", || {
        !expert.unavailable_reports().is_empty()
    });
    vm.wait_serial(mark, "kiosk: error:", STEP)
        .expect("the kiosk app noticed its display was gone");
    // The session goes on without a picture.
    std::thread::sleep(Duration::from_secs(2));
    assert!(expert.ended().is_none(), "{:?}", expert.event_summary());
    assert!(viewing(expert.state()), "{:?}", expert.state());
    let status = guest(&mut vm, "shoulder-agent ctl status");
    assert!(status.contains("viewing"), "{status}");

    // The driver is back and the kiosk app restarted: the expert gets the
    // new screen, announced afresh, and it equals the display, with the
    // strip drawn on it again.
    guest(
        &mut vm,
        &format!("echo {pci} > /sys/bus/pci/drivers/{driver}/bind"),
    );
    // The agent finds the card again before the app is back (the console
    // is on it now), so it must leave DRM master for the app.
    vm.wait_serial(mark, READABLE_LOG, STEP)
        .expect("the agent captures the display again");
    guest(
        &mut vm,
        &format!(
            "for i in $(seq 50); do test -e /dev/dri/card0 && break; sleep 0.1; done; \
             rm -f /run/kiosk.ready; \
             setsid shoulder-kiosk --ready-file /run/kiosk.ready --mode {}x{} --paused \
               </dev/null >/dev/console 2>&1 & \
             for i in $(seq 100); do test -e /run/kiosk.ready && exit 0; sleep 0.1; done; exit 1",
            SCREEN.0, SCREEN.1
        ),
    );
    wait(&vm, &expert, "the screen announced again", || {
        expert.screen_announcements() >= 2
    });
    assert!(
        wait_until(STEP, POLL, || shows_strip(
            &vm.screendump().expect("screendump"),
            SCREEN,
            EXPERT_NAME
        )),
        "no strip on the display after it came back\nserial log:\n{}",
        vm.serial_log()
    );
    wait_same_pixels(&mut vm, &expert, STEP);

    // One agent throughout, one outage reported, nothing alarming logged.
    assert_eq!(guest(&mut vm, "pidof shoulder-agent"), agent_pid);
    let reports = expert.unavailable_reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let log = vm.serial_log();
    let after = log.get(mark.min(log.len())..).unwrap_or("");
    assert_eq!(after.matches(UNAVAILABLE_LOG).count(), 1, "{after}");
    assert!(!after.contains("panicked"), "{after}");
    assert!(!after.contains("Resource busy"), "{after}");
    assert!(expert.ended().is_none(), "{:?}", expert.event_summary());
    drop(expert);
    vm.shutdown();
}
