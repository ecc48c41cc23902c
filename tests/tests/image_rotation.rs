//! A kiosk on a panel mounted sideways, in the real kernel: the app draws its
//! UI turned into the framebuffer (`shoulder-kiosk --rotate 90`, as a
//! compositor with a rotated output does) and the agent knows, either told
//! by its config (`rotation = 90`) or reading it from the kernel (the
//! connector's `panel orientation`, set here with
//! `video=Virtual-1:panel_orientation=left_side_up` as a device builder does
//! for a TV mounted in portrait). The person sees the consent prompt upright
//! and accepts it by touching where it shows; the expert sees the screen
//! upright, equal to it pixel for pixel; the expert's click lands on the
//! button it aimed at.

use std::time::Duration;

use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::msg::ConsentKind;
use shoulder_proto::rotation::Rotation;
use shoulder_proto::session::LocalDecision;
use shoulder_proto::session::expert::ExpertState;
use shoulder_testkit::agent_vm::{
    agent_toml, agent_vm_config, boot_agent_or_skip, control_granted_by_ctl, expect_state,
};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{Screen, Vm};
use shoulder_testkit::screens::{
    PROMPT_ARMED_AFTER, center, expert_click_lands, kiosk_screen, prompt_button, shows_strip,
};
use shoulder_testkit::wait::wait_until;

/// The framebuffer; the person sees it turned, 768×1024.
const SCREEN: (u32, u32) = (1024, 768);
const TURN: Rotation = Rotation::Deg90;
/// Generous: emulation on a loaded machine.
const STEP: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const EXPERT_NAME: &str = "Ann Expert";

fn upright_size() -> (u32, u32) {
    TURN.upright_size(SCREEN.0, SCREEN.1)
}

/// The screendump as the person sees it.
fn upright(dump: &Screen) -> Screen {
    let (uw, uh) = upright_size();
    let mut rgb = Vec::with_capacity(uw as usize * uh as usize * 3);
    for y in 0..uh {
        for x in 0..uw {
            let (bx, by) = TURN.to_buffer(x, y, SCREEN.0, SCREEN.1);
            rgb.extend_from_slice(&dump.pixel(bx, by));
        }
    }
    Screen {
        width: uw,
        height: uh,
        rgb,
    }
}

fn wait_state(vm: &Vm, expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    expect_state(vm, expert, STEP, what, pred);
}

/// How the agent learns that the panel is turned.
enum Told {
    /// `rotation = 90` in the agent config.
    Config,
    /// The kernel's `panel orientation` (the config says nothing: "auto").
    Kernel,
}

#[test]
fn image_sideways_panel_reads_upright_for_the_person_and_the_expert() {
    sideways(
        "image_sideways_panel_reads_upright_for_the_person_and_the_expert",
        Told::Config,
    );
}

#[test]
fn image_a_panel_orientation_the_kernel_knows_needs_no_config() {
    sideways(
        "image_a_panel_orientation_the_kernel_knows_needs_no_config",
        Told::Kernel,
    );
}

fn sideways(test: &str, told: Told) {
    let pki = Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"));
    let settings = match told {
        Told::Config => "allow_control = true\nrotation = 90",
        Told::Kernel => "allow_control = true",
    };
    let toml = agent_toml("Sideways kiosk", settings);
    let mut config = agent_vm_config(SCREEN, "--rotate 90 --paused", toml, pki.ca_pem.as_bytes());
    if let Told::Kernel = told {
        config = config.kernel_arg("video=Virtual-1:panel_orientation=left_side_up");
    }
    let Some(mut vm) = boot_agent_or_skip(test, config) else {
        return;
    };
    if let Told::Kernel = told {
        // What a device builder runs on new hardware says the same.
        // Once the agent has made its key (it may do so after READY).
        vm.wait_serial(0, "shoulder-agent running", STEP)
            .expect("the agent runs");
        let out = vm
            .exec("shoulder-agent doctor", STEP)
            .unwrap_or_else(|e| panic!("doctor: {e}"));
        assert_eq!(out.status, 0, "doctor failed a check:\n{}", out.output);
        for want in [
            "panel orientation Left Side Up",
            "turned 90°; rotation: auto",
            "ok    injection",
            "ok    display      drm /dev/dri/card0",
            "tablet",
        ] {
            assert!(
                out.output.contains(want),
                "doctor does not say {want:?}:\n{}",
                out.output
            );
        }
    }
    let (uw, uh) = upright_size();
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    wait_state(&vm, &expert, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });

    // The prompt reads upright: where the upright layout puts Accept, the
    // app's upright picture is covered.
    let accept = prompt_button(
        (uw, uh),
        EXPERT_NAME,
        ConsentKind::View,
        LocalDecision::Accept,
    );
    let (ax, ay) = center(accept);
    let app = kiosk_screen(&KioskUi::new(uw, uh));
    let shown = wait_until(STEP, POLL, || {
        upright(&vm.screendump().expect("screendump")).pixel(ax, ay) != app.pixel(ax, ay)
    });
    assert!(
        shown,
        "no prompt where the person sees Accept:\n{}",
        vm.serial_log()
    );
    std::thread::sleep(PROMPT_ARMED_AFTER);

    // The person touches Accept where it shows (the touchscreen, mounted
    // with the panel, reports the framebuffer's coordinates).
    let (bx, by) = TURN.to_buffer(ax, ay, SCREEN.0, SCREEN.1);
    vm.click(bx, by, SCREEN).expect("tap");
    wait_state(&vm, &expert, "viewing", viewing);

    // The expert sees the screen upright, pixel for pixel, strip included.
    let mut last = None;
    // Both with the strip: right after Accept the banner may still be
    // between the prompt and the strip.
    let same = wait_until(STEP, POLL, || {
        let person = upright(&vm.screendump().expect("screendump"));
        let same = expert.screen().is_some_and(|mine| mine == person)
            && shows_strip(&person, (uw, uh), EXPERT_NAME);
        last = Some(person);
        same
    });
    assert!(
        same,
        "the expert's view ({:?}) never equalled the upright screen with the strip on it",
        expert.screen().map(|s| s.size())
    );
    let person = last.expect("a screendump");
    assert!(
        shows_strip(&person, (uw, uh), EXPERT_NAME),
        "no strip along the person's top edge"
    );

    // Control: the expert clicks the counter button where it sees it, and
    // the app gets the tap on that button.
    control_granted_by_ctl(&mut vm, &expert, STEP);
    let counter = center(KioskUi::new(uw, uh).layout().counter_button);
    let mark = expert_click_lands(&mut vm, &expert, counter, STEP);
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("the counter button counted the click");
    drop(expert);
    vm.shutdown();
}
