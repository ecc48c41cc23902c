//! A display with a cursor plane, in the real kernel: virtio-gpu, where the
//! kiosk app shows an arrow through the legacy cursor ioctl (as simple DRM
//! apps do; the kernel puts it on the CRTC's cursor plane) and moves it to
//! each tap. The agent captures the scanout buffer and, apart from it, the
//! cursor plane: the expert gets the arrow's image and follows where it is,
//! also after their own click moved it.
//!
//! virtio-gpu buffers reach the host only when flushed, so QMP screendumps
//! cannot be compared here: the expert's view is compared with the picture
//! the kiosk app draws (paused, so it stands still).

use std::time::Duration;

use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::session::expert::ExpertState;
use shoulder_testkit::agent_vm::{
    agent_toml, agent_vm_config, boot_agent_or_skip, control_granted_by_ctl, expect_state, guest_ok,
};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{DisplayDevice, Vm};
use shoulder_testkit::screens::{center, expert_click_lands, kiosk_screen, strip_region};
use shoulder_testkit::wait::wait_until;

const SCREEN: (u32, u32) = (1024, 768);
/// Where the kiosk's `--cursor` starts (its `CURSOR_START`).
const CURSOR_START: (u16, u16) = (100, 100);
/// Generous: emulation on a loaded machine.
const STEP: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const EXPERT_NAME: &str = "Ann Expert";

fn wait_state(vm: &Vm, expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    expect_state(vm, expert, STEP, what, pred);
}

fn guest(vm: &mut Vm, command: &str) {
    guest_ok(vm, command, STEP);
}

#[test]
fn image_the_cursor_plane_reaches_the_expert_and_follows_the_pointer() {
    let pki = Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"));
    let toml = agent_toml("Cursor kiosk", "allow_control = true");
    let mut config = agent_vm_config(SCREEN, "--paused --cursor", toml, pki.ca_pem.as_bytes());
    config.display = DisplayDevice::VirtioGpu {
        width: SCREEN.0,
        height: SCREEN.1,
    };
    let Some(mut vm) = boot_agent_or_skip(
        "image_the_cursor_plane_reaches_the_expert_and_follows_the_pointer",
        config,
    ) else {
        return;
    };
    let serial = vm.serial_log();
    assert!(
        serial.contains("kiosk: cursor at 100,100"),
        "the kiosk has no cursor on this display:\n{serial}"
    );

    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    wait_state(&vm, &expert, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    guest(&mut vm, "shoulder-agent ctl accept");
    wait_state(&vm, &expert, "viewing", viewing);

    // The picture: what the app drew, below the header (the strip covers
    // most of it, and its clock shows the time) and above the parts that
    // show the time (caret, progress bar).
    let app = kiosk_screen(&KioskUi::new(SCREEN.0, SCREEN.1));
    let ui = KioskUi::new(SCREEN.0, SCREEN.1);
    let layout = ui.layout();
    let strip = strip_region(SCREEN, EXPERT_NAME);
    let below = (strip.top_left.y + strip.size.height as i32)
        .max(layout.header.top_left.y + layout.header.size.height as i32)
        .max(0) as u32;
    let above = layout.text_field.top_left.y.max(0) as u32;
    let same = wait_until(STEP, POLL, || {
        expert.screen().is_some_and(|mine| {
            mine.size() == SCREEN && mine.diff_in(&app, 0, below, SCREEN.0, above - below) == 0
        })
    });
    assert!(
        same,
        "the expert's view never showed what the app drew (size {:?})",
        expert.screen().map(|s| s.size())
    );

    // The cursor plane, apart from the picture: the arrow (64×64, tip at
    // its corner) where the app put it.
    let shown = wait_until(STEP, POLL, || {
        expert.cursor()
            == (
                Some((64, 64, 0, 0)),
                Some((CURSOR_START.0, CURSOR_START.1, true)),
            )
    });
    assert!(
        shown,
        "the expert does not have the device's cursor: {:?}\nserial log:\n{}",
        expert.cursor(),
        vm.serial_log()
    );

    // The expert clicks the counter button: the app moves its cursor there,
    // and the expert sees it move.
    control_granted_by_ctl(&mut vm, &expert, STEP);
    let (cx, cy) = center(KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button);
    // The click lands where it was aimed (clicked again while the app is
    // still opening the expert's new input devices), and the app puts its
    // cursor there.
    let mark = expert_click_lands(&mut vm, &expert, (cx, cy), STEP);
    vm.wait_serial(mark, &format!("kiosk: cursor at {cx},{cy}"), STEP)
        .unwrap_or_else(|e| panic!("the app did not move its cursor: {e}"));
    let (x, y) = (cx as u16, cy as u16);
    let followed = wait_until(STEP, POLL, || expert.cursor().1 == Some((x, y, true)));
    assert!(
        followed,
        "the expert's cursor stayed at {:?}, the app moved it to {x},{y}",
        expert.cursor().1
    );
    drop(expert);
    vm.shutdown();
}
