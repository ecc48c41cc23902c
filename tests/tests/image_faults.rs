//! Device faults under a live session, on a real kernel.
//!
//! **The display goes away.** The DRM driver of the QEMU image's display is
//! unbound through sysfs (as a driver reload, a GPU reset on some drivers or
//! an unplugged USB display does it): the card node disappears, every ioctl
//! on an open descriptor fails with ENODEV, and the kiosk app dies of it.
//! Then the driver is bound again (the agent finds it first, showing the
//! console) and the kiosk app restarted, as a service manager would; it must
//! be able to become DRM master, which the agent's reopening could have
//! taken. Through all of it the agent must keep the session: the expert is
//! told once that the screen is unavailable, then gets the new screen
//! (announced afresh), equal to what the display shows, with the banner
//! strip drawn on it again; the agent process stays the same and logs the
//! outage once. The same with the fbdev fallback: `/dev/fb0` goes and comes
//! back with the driver, the text console with the strip on it.
//!
//! **uinput fails.** With `/dev/uinput` gone when control is granted, the
//! agent cannot make its input devices: control ends with the device-fault
//! reason and the expert keeps watching; once it is back, control can be
//! requested again and the expert's keys reach the app.
//!
//! **Start-up order.** The agent started before the kiosk app must leave it
//! DRM master; the agent started before the display exists must find it
//! when a session needs the banner.
//!
//! Needs the image with the agent (`image/build`); without it these tests
//! print why and pass, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::Duration;

use shoulder_banner::layout::palette::VIEW_STRIP;
use shoulder_proto::session::expert::{ControlState, ExpertState, UserAction};
use shoulder_testkit::agent_vm::{
    agent_image_or_skip, agent_toml, agent_vm_config, boot_agent_or_skip, expect_state, guest_ok,
};
use shoulder_testkit::expert::{ClientExpert, control_granted, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{Vm, VmConfig};
use shoulder_testkit::screens::{
    center, shows_strip, strip_share, view_prompt_on_screen, wait_same_pixels,
};
use shoulder_testkit::wait::wait_until;

/// Screen size the test runs the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step (a consent round trip, the outage reaching the
/// expert, the display coming back); generous because emulation on a
/// loaded machine is slow.
const STEP: Duration = Duration::from_secs(20);
/// evdev code of the key the expert presses.
const KEY_A: u16 = 30;
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
    guest_ok(vm, command, STEP).trim().to_string()
}

/// Waits for `cond`, else panics naming `what`, with the expert's events and
/// the serial log.
fn wait(vm: &Vm, expert: &ClientExpert, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(STEP, POLL, cond),
        "waiting for {what}; expert events {:?}\nserial log:\n{}",
        expert.event_summary(),
        vm.serial_log()
    );
}

/// Starts the kiosk app in the guest once the card node is there, as a
/// service manager would (re)start it; panics unless it shows a frame within
/// 10 s (it cannot without DRM master).
fn start_kiosk(vm: &mut Vm) {
    guest(
        vm,
        &format!(
            "for i in $(seq 50); do test -e /dev/dri/card0 && break; sleep 0.1; done; \
             rm -f /run/kiosk.ready; \
             setsid shoulder-kiosk --ready-file /run/kiosk.ready --mode {}x{} --paused \
               </dev/null >/dev/console 2>&1 & \
             for i in $(seq 100); do test -e /run/kiosk.ready && exit 0; sleep 0.1; done; exit 1",
            SCREEN.0, SCREEN.1
        ),
    );
}

/// The display's DRM card in sysfs, so its driver can be unbound (the card
/// goes away as if unplugged) and bound again.
struct DisplayDevice {
    pci: String,
    driver: String,
}

impl DisplayDevice {
    /// The device behind `/dev/dri/card0`.
    fn of(vm: &mut Vm) -> Self {
        let pci = guest(
            vm,
            "basename \"$(readlink -f /sys/class/drm/card0/device)\"",
        );
        let driver = guest(
            vm,
            "basename \"$(readlink -f /sys/class/drm/card0/device/driver)\"",
        );
        Self { pci, driver }
    }

    /// Unbinds the driver; panics unless `node` is gone with it.
    fn unbind(&self, vm: &mut Vm, node: &str) {
        let Self { pci, driver } = self;
        guest(
            vm,
            &format!("echo {pci} > /sys/bus/pci/drivers/{driver}/unbind && ! test -e {node}"),
        );
    }

    fn bind(&self, vm: &mut Vm) {
        let Self { pci, driver } = self;
        guest(
            vm,
            &format!("echo {pci} > /sys/bus/pci/drivers/{driver}/bind"),
        );
    }
}

/// Waits until the expert's state satisfies `pred`; panics with the events
/// and the serial log.
fn wait_state(vm: &Vm, expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    expect_state(vm, expert, STEP, what, pred);
}

fn pki() -> Pki {
    Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"))
}

/// The boot: the kiosk app at [`SCREEN`], the agent taking offers from
/// `pki`'s CA and allowing control, with the default uinput injection.
fn vm_config(pki: &Pki) -> VmConfig {
    agent_vm_config(
        SCREEN,
        "--paused",
        agent_toml("Test kiosk", "allow_control = true"),
        pki.ca_pem.as_bytes(),
    )
}

/// Boots the image and starts a session the person at the device accepted
/// through the control socket; `None` when `test` is skipped.
fn viewing_session(test: &str) -> Option<(Vm, ClientExpert)> {
    let pki = pki();
    let mut vm = boot_agent_or_skip(test, vm_config(&pki))?;
    let expert = accepted_offer(&mut vm, &pki);
    Some((vm, expert))
}

/// An offer from `pki`'s expert that the person at the device accepted
/// through the control socket; the expert views.
fn accepted_offer(vm: &mut Vm, pki: &Pki) -> ClientExpert {
    let expert = ClientExpert::offer(vm.agent_addr(), pki);
    wait_state(vm, &expert, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    guest(vm, "shoulder-agent ctl accept");
    wait_state(vm, &expert, "viewing", viewing);
    expert
}

/// The expert asks for control and the person at the device accepts
/// through the control socket.
fn grant_control(vm: &mut Vm, expert: &ClientExpert) {
    expert.send(UserAction::RequestControl);
    wait_state(vm, expert, "the control prompt", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Requested { .. }
            }
        )
    });
    guest(vm, "shoulder-agent ctl accept");
}

#[test]
fn image_display_gone_and_back_keeps_the_session() {
    let Some((mut vm, expert)) = viewing_session("image_display_gone_and_back_keeps_the_session")
    else {
        return;
    };
    // The expert sees exactly the screen, strip included.
    wait_same_pixels(&mut vm, &expert, STEP);
    assert!(shows_strip(
        &vm.screendump().expect("screendump"),
        SCREEN,
        EXPERT_NAME
    ));
    let agent_pid = guest(&mut vm, "pidof shoulder-agent");
    assert_eq!(expert.screen_announcements(), 1);

    // The driver goes away: the card node with it, the kiosk app dies.
    let display = DisplayDevice::of(&mut vm);
    let mark = vm.serial_mark();
    display.unbind(&mut vm, "/dev/dri/card0");
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
    display.bind(&mut vm);
    // The agent finds the card again before the app is back (the console
    // is on it now), so it must leave DRM master for the app.
    vm.wait_serial(mark, READABLE_LOG, STEP)
        .expect("the agent captures the display again");
    start_kiosk(&mut vm);
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

#[test]
fn image_uinput_failure_ends_control_and_viewing_goes_on() {
    let Some((mut vm, expert)) =
        viewing_session("image_uinput_failure_ends_control_and_viewing_goes_on")
    else {
        return;
    };
    wait_same_pixels(&mut vm, &expert, STEP);

    // No uinput when control is granted: control ends with the reason, the
    // view goes on.
    guest(&mut vm, "mv /dev/uinput /dev/uinput.away");
    let mark = vm.serial_mark();
    grant_control(&mut vm, &expert);
    wait(&vm, &expert, "control ended by the device fault", || {
        expert
            .event_summary()
            .iter()
            .any(|e| e.contains("ControlEnded") && e.contains("could not be injected"))
    });
    vm.wait_serial(mark, "cannot enable injection; revoking control", STEP)
        .expect("the agent says why");
    wait_state(&vm, &expert, "viewing without control", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::None
            }
        )
    });
    let status = guest(&mut vm, "shoulder-agent ctl status");
    assert!(status.contains("viewing"), "{status}");
    wait_same_pixels(&mut vm, &expert, STEP);

    // uinput is back: control again, and the expert's key reaches the app.
    guest(&mut vm, "mv /dev/uinput.away /dev/uinput");
    grant_control(&mut vm, &expert);
    wait_state(&vm, &expert, "control", control_granted);
    let mark = vm.serial_mark();
    // The app picks the new input devices up within moments; press until a
    // key arrives.
    assert!(
        wait_until(STEP, Duration::from_millis(500), || {
            expert.key(KEY_A, true);
            expert.key(KEY_A, false);
            vm.serial_log()
                .get(mark.min(vm.serial_log().len())..)
                .is_some_and(|l| l.contains("kiosk: key 30 down"))
        }),
        "the expert's key never arrived:\n{}",
        vm.serial_log()
    );
    assert!(expert.ended().is_none(), "{:?}", expert.event_summary());
    drop(expert);
    vm.shutdown();
}

/// The person at the device taps Accept on the view prompt once it is on
/// screen; the expert then views and sees exactly the screen.
fn accept_on_screen(vm: &mut Vm, expert: &ClientExpert) {
    let accept = view_prompt_on_screen(vm, expert, SCREEN, EXPERT_NAME, STEP);
    let (x, y) = center(accept);
    vm.click(x, y, SCREEN).expect("tap");
    wait_state(vm, expert, "viewing", viewing);
    wait_same_pixels(vm, expert, STEP);
}

/// The agent started before the kiosk app (a service order that puts the
/// agent first, or an app that starts late): the agent has the card open
/// for its banner from the start, yet the app becomes DRM master, and a
/// session then shows its prompt on the app's screen.
#[test]
fn image_agent_started_before_the_kiosk_app() {
    let test = "image_agent_started_before_the_kiosk_app";
    let pki = pki();
    let Some(mut vm) = boot_agent_or_skip(test, vm_config(&pki).env("KIOSK=0")) else {
        return;
    };
    let mark = vm.serial_mark();
    start_kiosk(&mut vm);
    let log = vm.serial_log();
    assert!(
        !log.get(mark.min(log.len())..)
            .unwrap_or("")
            .contains("Resource busy"),
        "{log}"
    );
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept_on_screen(&mut vm, &expert);
    drop(expert);
    vm.shutdown();
}

/// No display when the agent starts (the DRM driver not bound yet): the
/// agent runs anyway, and once the display is there, the first session's
/// prompt is drawn on it and answered by a tap (placed for its size).
#[test]
fn image_display_missing_when_the_agent_starts() {
    let test = "image_display_missing_when_the_agent_starts";
    let Some(image) = agent_image_or_skip(test) else {
        return;
    };
    let pki = pki();
    let mut vm = Vm::boot(&image, vm_config(&pki).env("KIOSK=0").env("AGENT=0")).expect("boot");
    let display = DisplayDevice::of(&mut vm);
    display.unbind(&mut vm, "/dev/dri/card0");
    // The agent as the image's init starts it, waiting until it listens
    // (port 7575 in LISTEN state, 0A, in /proc/net/tcp).
    guest(
        &mut vm,
        "setsid shoulder-agent run --config /etc/shoulder/agent.toml </dev/null >/dev/console 2>&1 & \
         for i in $(seq 100); do \
           grep -q ':1D97 [0-9A-F:]* 0A ' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.1; \
         done; exit 1",
    );
    let agent_pid = guest(&mut vm, "pidof shoulder-agent");
    display.bind(&mut vm);
    start_kiosk(&mut vm);
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept_on_screen(&mut vm, &expert);
    assert!(shows_strip(
        &vm.screendump().expect("screendump"),
        SCREEN,
        EXPERT_NAME
    ));
    assert_eq!(guest(&mut vm, "pidof shoulder-agent"), agent_pid);
    drop(expert);
    vm.shutdown();
}

/// The same outage with the fbdev fallback (`capture = "fbdev"`, the text
/// console on the DRM driver's fbdev emulation, no kiosk app): `/dev/fb0`
/// goes away with the driver and comes back with it, and the session sees
/// the console again with its strip.
#[test]
fn image_fbdev_display_gone_and_back_keeps_the_session() {
    let test = "image_fbdev_display_gone_and_back_keeps_the_session";
    let pki = pki();
    let toml = agent_toml("Test kiosk", "").replace("capture = \"drm\"", "capture = \"fbdev\"");
    let config = agent_vm_config(SCREEN, "", toml, pki.ca_pem.as_bytes())
        .env("KIOSK=0")
        // A still console: no cursor blinking, no kernel messages on it.
        .env("EXTRA_CMD=\"dmesg -n 1; echo 0 > /sys/class/graphics/fbcon/cursor_blink\"");
    let Some(mut vm) = boot_agent_or_skip(test, config) else {
        return;
    };
    guest(&mut vm, "printf '\\033[?25l\\033[2J' > /dev/tty1");
    let expert = accepted_offer(&mut vm, &pki);
    let strip_on_screen = |vm: &mut Vm| {
        wait_until(STEP, POLL, || {
            strip_share(
                &vm.screendump().expect("screendump"),
                EXPERT_NAME,
                VIEW_STRIP,
            ) > 0.5
        })
    };
    assert!(strip_on_screen(&mut vm), "no strip on the console");
    wait_same_pixels(&mut vm, &expert, STEP);
    let agent_pid = guest(&mut vm, "pidof shoulder-agent");

    let display = DisplayDevice::of(&mut vm);
    let mark = vm.serial_mark();
    display.unbind(&mut vm, "/dev/fb0");
    wait(&vm, &expert, "screen unavailable at the expert", || {
        !expert.unavailable_reports().is_empty()
    });
    display.bind(&mut vm);
    vm.wait_serial(mark, READABLE_LOG, STEP)
        .expect("the agent captures the console again");
    guest(
        &mut vm,
        "echo 0 > /sys/class/graphics/fbcon/cursor_blink; printf '\\033[?25l' > /dev/tty1",
    );
    assert!(
        strip_on_screen(&mut vm),
        "no strip on the console after it came back\nserial log:\n{}",
        vm.serial_log()
    );
    wait_same_pixels(&mut vm, &expert, STEP);
    assert_eq!(guest(&mut vm, "pidof shoulder-agent"), agent_pid);
    assert_eq!(expert.unavailable_reports().len(), 1);
    assert!(expert.ended().is_none(), "{:?}", expert.event_summary());
    drop(expert);
    vm.shutdown();
}
