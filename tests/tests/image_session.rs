//! Whole sessions against the real kernel: the agent in the QEMU image
//! captures the kiosk app (DRM master, page-flipping or single-buffered),
//! draws its banner into the scanout, takes taps and keys from the virtio
//! tablet and keyboard (driven through QMP as the person at the device), and
//! injects the expert's input through uinput. The expert is the client
//! library, in process. The app drawing busily in its one buffer while the
//! agent reads it must not leave the expert's view wrong (issue #15).
//!
//! Needs the image with the agent (`image/build`); without it these tests
//! print why and pass, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use shoulder::target::Target;
use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::invite::{Invitation, TEXT_PREFIX};
use shoulder_proto::msg::text;
use shoulder_proto::session::expert::{ControlState, ExpertState, UserAction};
use shoulder_testkit::agent_vm::{agent_toml, agent_vm_config, boot_agent_or_skip};
use shoulder_testkit::expert::{ClientExpert, control_granted, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{Screen, Vm};
use shoulder_testkit::screens::{self, center, kiosk_screen, shows_strip, wait_same_pixels};
use shoulder_testkit::wait::wait_until;

/// Screen size the tests run the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step of a session (a consent round trip, a screen
/// update, an injected click showing up); generous because emulation on a
/// loaded machine is slow.
const STEP: Duration = Duration::from_secs(20);
/// The bound for the expert's view to match the screen.
const SAME_PIXELS_WITHIN: Duration = Duration::from_secs(1);
/// Expert name on the certificate (shown in the prompt).
const EXPERT_NAME: &str = "Ann Expert";
/// The file whose presence makes the kiosk draw busily (`--busy-file`).
const BUSY_FILE: &str = "/run/kiosk.busy";
/// Rounds of busy drawing in one session, and how long each lasts: several
/// seconds of the app racing the agent's reads of the buffer it draws in.
const BUSY_ROUNDS: u32 = 3;
const BUSY_FOR: Duration = Duration::from_secs(4);
/// The bound for the view to equal the screen once the app stopped:
/// generous (emulation on a loaded machine is slow, and the agent backs off
/// polling); the view being right at all is what is tested.
const VIEW_RIGHT_WITHIN: Duration = Duration::from_secs(30);
/// Fewer strokes than this in a round means the app hardly drew.
const MIN_BUSY_STROKES: u64 = 20;
/// How often the expert asks for a view check while the app draws (the
/// client sends at most one a second).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// evdev codes used below.
const KEY_A: u16 = 30;
const KEY_LEFTALT: u16 = 56;
const KEY_F2: u16 = 60;

// --- setup -------------------------------------------------------------------

/// A plant CA and an expert identity issued by it.
fn pki() -> Pki {
    Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"))
}

/// Boots the image with the agent and the kiosk app (`kiosk_args` added).
/// The agent takes offers from the test CA, invitations and control, and
/// captures the DRM scanout.
fn boot(test: &str, pki: &Pki, kiosk_args: &str) -> Option<Vm> {
    let toml = agent_toml(
        "Test kiosk",
        "allow_invitations = true\nallow_control = true",
    );
    boot_agent_or_skip(
        test,
        agent_vm_config(SCREEN, kiosk_args, toml, pki.ca_pem.as_bytes()),
    )
}

/// Waits until the expert's state satisfies `pred`; panics with the events
/// seen.
fn wait_state(expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    if let Err(e) = expert.wait_state(STEP, what, pred) {
        panic!("{e}");
    }
}

// --- screens -----------------------------------------------------------------

/// Taps (QMP tablet click) the centre of `area`.
fn tap(vm: &mut Vm, area: Rectangle) {
    let (x, y) = center(area);
    vm.click(x, y, SCREEN).expect("tap");
}

/// The person taps the kiosk's counter button (its first count, `kiosk:
/// counter=1`); the expert's view must equal the screen within
/// [`SAME_PIXELS_WITHIN`] (else "`seen` after …"). Returns the button.
fn local_tap_seen(vm: &mut Vm, expert: &ClientExpert, seen: &str) -> Rectangle {
    let counter = KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button;
    let mark = vm.serial_mark();
    tap(vm, counter);
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("local tap counted");
    let took = wait_same_pixels(vm, expert, STEP);
    assert!(took <= SAME_PIXELS_WITHIN, "{seen} after {took:?}");
    counter
}

/// The expert clicks the centre of the counter button of the kiosk at
/// `screen`, until a click arrives; the app must see it at exactly those
/// coordinates.
fn expert_click_lands(vm: &mut Vm, expert: &ClientExpert, screen: (u32, u32)) {
    let counter = KioskUi::new(screen.0, screen.1).layout().counter_button;
    screens::expert_click_lands(vm, expert, center(counter), STEP);
}

// --- tests -------------------------------------------------------------------

/// Offer → tap Accept → the expert sees exactly the screen (banner included)
/// → control requested, accepted by key → the expert clicks the counter →
/// the stop hotkey takes control back → the expert's input no longer
/// arrives → disconnect → the banner is gone.
#[test]
fn image_offer_session_view_control_stop_disconnect() {
    let test = "image_offer_session_view_control_stop_disconnect";
    let pki = pki();
    let Some(mut vm) = boot(test, &pki, "--paused") else {
        return;
    };
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);

    // The person taps Accept on the banner.
    let accept = view_prompt_on_screen(&mut vm, &expert);
    tap(&mut vm, accept);
    wait_state(&expert, "viewing", viewing);

    // The expert sees what the person sees, pixel for pixel, banner strip
    // included (the kiosk animation is paused).
    let took = wait_same_pixels(&mut vm, &expert, STEP);
    eprintln!("{test}: expert view equal to the screen {took:?} after accepting");
    // And again after a change on the device: within a second.
    let counter = local_tap_seen(&mut vm, &expert, "the expert saw the change");

    // Control: requested by the expert, accepted by Enter at the device.
    expert.send(UserAction::RequestControl);
    std::thread::sleep(Duration::from_millis(500) + screens::PROMPT_ARMED_AFTER);
    let mark = vm.serial_mark();
    vm.tap_key("ret").expect("Enter");
    wait_state(&expert, "control granted", control_granted);
    // Enter answered the prompt and did not reach the app.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !vm.serial_log()[mark..].contains("kiosk: key 28"),
        "Enter leaked to the app"
    );

    // The expert clicks the counter button: the app counts it.
    let mark = vm.serial_mark();
    let (x, y) = center(counter);
    let deadline = Instant::now() + STEP;
    loop {
        expert.click(x, y);
        if vm
            .wait_serial(mark, "kiosk: counter=2", Duration::from_secs(2))
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expert's click never arrived:\n{}",
            vm.serial_log()
        );
    }
    wait_same_pixels(&mut vm, &expert, STEP);

    // Local input wins: the person moves the pointer, the expert is told
    // the local user is active, then it passes once the person is idle.
    vm.pointer_move(10, 10, SCREEN).expect("local pointer move");
    wait_state(&expert, "local user active", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Granted {
                    local_user_active: true
                }
            }
        )
    });
    wait_state(&expert, "local user idle again", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::Granted {
                    local_user_active: false
                }
            }
        )
    });

    // The stop hotkey (Ctrl+Alt+Shift+S) takes control back at once.
    for k in ["ctrl", "alt", "shift", "s"] {
        vm.key(k, true).expect("hotkey down");
    }
    for k in ["s", "shift", "alt", "ctrl"] {
        vm.key(k, false).expect("hotkey up");
    }
    wait_state(&expert, "control ended", |s| {
        matches!(
            s,
            ExpertState::Viewing {
                control: ControlState::None
            }
        )
    });
    let mark = vm.serial_mark();
    expert.click(x, y);
    expert.key(KEY_A, true);
    expert.key(KEY_A, false);
    std::thread::sleep(Duration::from_secs(2));
    let after = &vm.serial_log()[mark..];
    assert!(
        !after.contains("kiosk: counter=3"),
        "a click arrived after stop: {after}"
    );
    assert!(
        !after.contains("kiosk: key 30"),
        "a key arrived after stop: {after}"
    );

    // Disconnect: the banner goes away (the screen is the kiosk's again).
    drop(expert);
    let mut ui = KioskUi::new(SCREEN.0, SCREEN.1);
    ui.tap(center(counter).0 as i32, center(counter).1 as i32);
    ui.tap(center(counter).0 as i32, center(counter).1 as i32);
    assert!(
        wait_until(STEP, Duration::from_millis(100), || {
            banner_free(&vm.screendump().expect("screendump"), &ui)
        }),
        "the banner stayed after disconnect"
    );
    vm.shutdown();
}

/// Whether the screen shows only the kiosk (no banner pixels), outside the
/// kiosk's animated areas.
fn banner_free(screen: &Screen, ui: &KioskUi) -> bool {
    let l = ui.layout();
    let animated = [l.clock, l.progress, l.text_field];
    let want = kiosk_screen(ui);
    Rectangle::new(Point::zero(), l.size)
        .points()
        .filter(|p| !animated.iter().any(|a| a.contains(*p)))
        .all(|p| screen.pixel(p.x as u32, p.y as u32) == want.pixel(p.x as u32, p.y as u32))
}

/// Waits until the view prompt is on screen; returns where its Accept
/// button is.
fn view_prompt_on_screen(vm: &mut Vm, expert: &ClientExpert) -> Rectangle {
    screens::view_prompt_on_screen(vm, expert, SCREEN, EXPERT_NAME, STEP)
}

/// Accepts the open prompt from the device's keyboard (Enter), once it is
/// on screen.
fn accept_by_key(vm: &mut Vm, expert: &ClientExpert) {
    view_prompt_on_screen(vm, expert);
    vm.tap_key("ret").expect("Enter");
    wait_state(expert, "viewing", viewing);
}

/// An invitation made on the device (`shoulder-agent ctl invite`) with a
/// password: a wrong password gets nowhere, the right one reaches the
/// person, who accepts; the expert then sees the screen.
#[test]
fn image_invitation_session_with_password() {
    let test = "image_invitation_session_with_password";
    let pki = pki();
    let Some(mut vm) = boot(test, &pki, "--paused") else {
        return;
    };
    let made = vm
        .exec(
            // The agent opens its control socket just after it listens.
            "for i in $(seq 100); do [ -S /run/shoulder/control.sock ] && break; usleep 100000; done; \
             printf 'correct horse battery\\n' >/tmp/pw && \
             shoulder-agent ctl invite --expires 30m --password-file /tmp/pw",
            STEP,
        )
        .expect("ctl invite");
    assert_eq!(made.status, 0, "ctl invite failed: {}", made.output);
    let line = made
        .output
        .lines()
        .find(|l| l.trim_start().starts_with(TEXT_PREFIX))
        .unwrap_or_else(|| panic!("no invitation text in: {}", made.output));
    let mut invitation = Invitation::from_text(line.trim()).expect("invitation parses");
    // The invitation names the guest's address and port; from the host the
    // agent is behind QEMU's port forward.
    invitation.addresses.clear();
    let _ = invitation.addresses.push(text("127.0.0.1"));
    invitation.port = vm.agent_addr().port();

    let wrong = ClientExpert::start(
        Target::Invitation(Box::new(invitation.clone())),
        None,
        Some("wrong password"),
        EXPERT_NAME,
    );
    let deadline = Instant::now() + STEP;
    while wrong.ended().is_none() {
        assert!(
            Instant::now() < deadline,
            "a wrong password was not refused"
        );
        assert!(
            !matches!(
                wrong.state(),
                ExpertState::WaitingForConsent { .. } | ExpertState::Viewing { .. }
            ),
            "a wrong password reached the person at the device"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let reason = wrong.ended().unwrap_or_default();
    assert!(
        reason.contains("WrongPassword"),
        "refused, but not for the password: {reason}"
    );
    drop(wrong);

    let expert = ClientExpert::start(
        Target::Invitation(Box::new(invitation)),
        None,
        Some("correct horse battery"),
        EXPERT_NAME,
    );
    accept_by_key(&mut vm, &expert);
    wait_same_pixels(&mut vm, &expert, STEP);
    vm.shutdown();
}

/// A kiosk app that draws into one buffer and never flips is captured
/// (a local change shows within a second), a resolution change mid-session
/// reaches the expert, the expert's clicks land where they were made before
/// and after a mode change under control, Alt+F2 (VT switching) from the
/// expert is not injected, and a key the expert holds when disconnecting is
/// released in the app.
#[test]
fn image_single_buffer_app_mode_change_and_key_release() {
    let test = "image_single_buffer_app_mode_change_and_key_release";
    let pki = pki();
    let kiosk_args = "--single-buffer --paused --modes 1024x768,800x600";
    let Some(mut vm) = boot(test, &pki, kiosk_args) else {
        return;
    };
    assert!(
        vm.serial_log().contains("single-buffer"),
        "{}",
        vm.serial_log()
    );
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept_by_key(&mut vm, &expert);
    wait_same_pixels(&mut vm, &expert, STEP);

    local_tap_seen(&mut vm, &expert, "single-buffer change seen");

    // F2: the app switches to 800x600; the expert gets the new screen.
    let mark = vm.serial_mark();
    vm.tap_key("f2").expect("F2");
    vm.wait_serial(mark, "kiosk: mode 800x600", STEP)
        .expect("mode switch");
    assert!(
        wait_until(STEP, Duration::from_millis(50), || {
            expert.screen().map(|s| s.size()) == Some((800, 600))
        }),
        "the expert never got the 800x600 screen: {:?}",
        expert.event_summary()
    );
    wait_same_pixels(&mut vm, &expert, STEP);

    // Control, a key held by the expert, then the expert disconnects: the
    // app sees the release.
    expert.send(UserAction::RequestControl);
    let deadline = Instant::now() + STEP;
    while !control_granted(expert.state()) {
        vm.tap_key("ret").expect("Enter");
        assert!(
            Instant::now() < deadline,
            "control not granted: {:?}",
            expert.event_summary()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Clicks land where the expert clicked, also after the app changes
    // mode while the expert has control (the virtual pointer's range
    // follows the screen).
    expert_click_lands(&mut vm, &expert, (800, 600));
    let mark = vm.serial_mark();
    vm.tap_key("f2").expect("F2");
    vm.wait_serial(mark, "kiosk: mode 1024x768", STEP)
        .expect("mode switch back");
    assert!(
        wait_until(STEP, Duration::from_millis(50), || {
            expert.screen().map(|s| s.size()) == Some((1024, 768))
        }),
        "the expert never got the 1024x768 screen: {:?}",
        expert.event_summary()
    );
    // The app opens the re-made pointer as any hot-plugged device; a click
    // made before that would reach only the old one.
    let _ = vm.wait_serial(mark, "\"Shoulder remote pointer\"", STEP);
    expert_click_lands(&mut vm, &expert, SCREEN);

    // Alt+F2 from the expert would switch VTs on the console: Alt reaches
    // the app, F2 (which would also switch the app's mode) does not.
    let mark = vm.serial_mark();
    expert.key(KEY_LEFTALT, true);
    expert.key(KEY_F2, true);
    expert.key(KEY_F2, false);
    expert.key(KEY_LEFTALT, false);
    vm.wait_serial(mark, "kiosk: key 56 up", STEP)
        .expect("the expert's Alt reached the app");
    let after = &vm.serial_log()[mark..];
    assert!(
        !after.contains("kiosk: key 60") && !after.contains("kiosk: mode"),
        "Alt+F2 from the expert was injected: {after}"
    );

    let mark = vm.serial_mark();
    let deadline = Instant::now() + STEP;
    loop {
        expert.key(KEY_A, true);
        if vm
            .wait_serial(mark, "kiosk: key 30 down", Duration::from_secs(2))
            .is_ok()
        {
            break;
        }
        expert.key(KEY_A, false);
        assert!(
            Instant::now() < deadline,
            "the expert's key never arrived:\n{}",
            vm.serial_log()
        );
    }
    let mark = vm.serial_mark();
    drop(expert);
    vm.wait_serial(mark, "kiosk: key 30 up", STEP)
        .expect("the held key was released when the expert left");
    vm.shutdown();
}

/// While the app page-flips at 30 Hz, the banner strip is on screen in at
/// least 95 % of 100 screendumps.
#[test]
fn image_banner_stays_visible_over_an_animating_app() {
    let test = "image_banner_stays_visible_over_an_animating_app";
    let pki = pki();
    let Some(mut vm) = boot(test, &pki, "--fps 30") else {
        return;
    };
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept_by_key(&mut vm, &expert);
    let shows_banner = |dump: &Screen| shows_strip(dump, SCREEN, EXPERT_NAME);
    // Let the strip appear first.
    assert!(
        wait_until(STEP, Duration::from_millis(50), || {
            shows_banner(&vm.screendump().expect("screendump"))
        }),
        "no banner strip on screen"
    );
    let mut visible = 0;
    for _ in 0..100 {
        if shows_banner(&vm.screendump().expect("screendump")) {
            visible += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{test}: banner visible in {visible} of 100 screendumps");
    assert!(
        visible >= 95,
        "banner visible in only {visible} of 100 screendumps"
    );
    assert!(vm.serial_log().contains("flipping"));
    drop(expert);
    vm.shutdown();
}

/// The expert's view never stays wrong (issue #15) on the real kernel: the
/// single-buffered app draws busy content in place, as fast as it can
/// (moving boxes, rectangles, scrolling text, new pages, photo-like noise),
/// while the agent reads that same buffer for the expert, on two virtual
/// CPUs (the app and the agent run at once, as on a multi-core device);
/// once it stops, leaving its last picture, the expert's view must equal a
/// QMP screendump, banner strip included, within [`VIEW_RIGHT_WITHIN`],
/// and no view self-check may have found it wrong meanwhile. Three rounds
/// in one session; the app logs each round's seed and strokes.
#[test]
fn image_view_right_after_a_single_buffer_app_draws_busily() {
    let test = "image_view_right_after_a_single_buffer_app_draws_busily";
    let pki = pki();
    let kiosk_args = format!("--single-buffer --paused --busy-file {BUSY_FILE}");
    let toml = agent_toml(
        "Test kiosk",
        "allow_invitations = true\nallow_control = true",
    );
    let mut config = agent_vm_config(SCREEN, &kiosk_args, toml, pki.ca_pem.as_bytes());
    config.smp = 2;
    let Some(mut vm) = boot_agent_or_skip(test, config) else {
        return;
    };
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept_by_key(&mut vm, &expert);
    wait_same_pixels(&mut vm, &expert, STEP);

    for round in 1..=BUSY_ROUNDS {
        let mark = vm.serial_mark();
        let updates = expert.updates_applied();
        guest(&mut vm, &format!("touch {BUSY_FILE}"));
        let on = vm
            .wait_serial(mark, "kiosk: busy on", STEP)
            .expect("the app started drawing");
        // The technician pressing "refresh" meanwhile: view checks while
        // the app draws under the agent's reads.
        let busy_until = Instant::now() + BUSY_FOR;
        while Instant::now() < busy_until {
            expert.send(UserAction::CheckView);
            std::thread::sleep(CHECK_EVERY);
        }
        guest(&mut vm, &format!("rm {BUSY_FILE}"));
        // From this line on the app's pixels stand still (its last busy
        // picture); only the banner changes (its strip's clock).
        let off = vm
            .wait_serial(mark, "kiosk: busy off", STEP)
            .expect("the app stopped drawing");
        let strokes: u64 = off
            .rsplit("strokes=")
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no stroke count in {off:?}"));
        let raced = expert.updates_applied() - updates;
        assert!(
            strokes >= MIN_BUSY_STROKES,
            "round {round}: the app drew only {strokes} strokes ({on})"
        );
        // Named before the wait, whose failure does not know the round.
        eprintln!(
            "{test}: round {round} of {BUSY_ROUNDS} ({on}, {strokes} strokes, \
             {raced} updates while drawing): the app stopped"
        );
        let took = wait_same_pixels(&mut vm, &expert, VIEW_RIGHT_WITHIN);
        // The device's view self-check repairs a wrong view within seconds,
        // so the pixels alone would not tell: no check may have found it
        // wrong.
        let (checks, repairs) = (expert.view_checks(), expert.view_repairs());
        assert_eq!(
            repairs, 0,
            "round {round} ({on}): the device's view self-check found the expert's view \
             wrong in {repairs} of {checks} checks (and repaired it): the capture left it wrong"
        );
        eprintln!(
            "{test}: round {round}: the view was right {took:?} after the app stopped; \
             {checks} view checks so far, none found it wrong"
        );
        assert!(
            raced > 0,
            "round {round}: no update reached the expert while the app drew"
        );
    }
    drop(expert);
    vm.shutdown();
}

/// Runs `command` in the guest; panics with its output unless it succeeds.
fn guest(vm: &mut Vm, command: &str) {
    let out = vm
        .exec(command, STEP)
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    assert_eq!(out.status, 0, "{command}: {}", out.output);
}
