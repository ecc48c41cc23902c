//! Two screens in the real kernel: two bochs display heads (two DRM cards),
//! the kiosk app on each (1024×768 and 800×600, side by side in one
//! desktop, as a compositor would put them). The agent, with no connector
//! named, offers both: the expert is told the screens, sees the first,
//! switches to the second and sees it pixel for pixel; their click lands on
//! the second screen's app and not the first's; the session strip shows on
//! both screens and leaves both when the session ends.

use std::time::Duration;

use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::session::expert::{ExpertState, UserAction};
use shoulder_testkit::agent_vm::{
    agent_toml, agent_vm_config, boot_agent_or_skip, control_granted_by_ctl, expect_state, guest_ok,
};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::Vm;
use shoulder_testkit::screens::{center, shows_strip, wait_same_pixels_on};
use shoulder_testkit::wait::wait_until;

const FIRST: (u32, u32) = (1024, 768);
const SECOND: (u32, u32) = (800, 600);
/// QEMU's id of the second head.
const HEAD2: &str = "head2";
const HEAD1: &str = shoulder_testkit::qemu::DISPLAY_ID;
/// The desktop both kiosks share: side by side, top-aligned.
const DESKTOP: &str = "1824x768";
/// Generous: emulation on a loaded machine.
const STEP: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);
const EXPERT_NAME: &str = "Ann Expert";

fn guest(vm: &mut Vm, command: &str) -> String {
    guest_ok(vm, command, STEP)
}

/// Lines of the second kiosk's log that report a tap.
fn second_taps(vm: &mut Vm) -> Vec<String> {
    guest(vm, "cat /tmp/kiosk2.log")
        .lines()
        .filter(|l| l.contains("kiosk: tap "))
        .map(str::to_owned)
        .collect()
}

fn strip_on(vm: &mut Vm, head: &str, screen: (u32, u32)) -> bool {
    let dump = vm.screendump_of(head).expect("screendump");
    dump.size() == screen && shows_strip(&dump, screen, EXPERT_NAME)
}

#[test]
fn image_an_expert_picks_the_second_screen_and_input_lands_there() {
    let pki = Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"));
    let toml = agent_toml("Two-screen kiosk", "allow_control = true");
    let config = agent_vm_config(
        FIRST,
        &format!("--paused --desktop {DESKTOP}+0+0"),
        toml,
        pki.ca_pem.as_bytes(),
    )
    .qemu_args(["-device", &format!("bochs-display,id={HEAD2}")]);
    let Some(mut vm) = boot_agent_or_skip(
        "image_an_expert_picks_the_second_screen_and_input_lands_there",
        config,
    ) else {
        return;
    };
    // The second screen's app, started after the agent (a screen lit
    // late): its log goes to a file, so its taps are told from the first's.
    guest(
        &mut vm,
        &format!(
            "shoulder-kiosk --card /dev/dri/card1 --mode {}x{} --paused --desktop {DESKTOP}+{}+0 \
             >/tmp/kiosk2.log 2>&1 &",
            SECOND.0, SECOND.1, FIRST.0
        ),
    );
    let lit = wait_until(STEP, POLL, || {
        guest(&mut vm, "cat /tmp/kiosk2.log").contains("kiosk: ready")
    });
    assert!(
        lit,
        "the second kiosk did not start: {}",
        guest(&mut vm, "cat /tmp/kiosk2.log")
    );

    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    expect_state(&vm, &expert, STEP, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    guest(&mut vm, "shoulder-agent ctl accept");
    expect_state(&vm, &expert, STEP, "viewing", viewing);

    // Both screens are offered, where they sit.
    let listed = wait_until(STEP, POLL, || expert.screens().is_some());
    assert!(listed, "no screen list:\n{}", vm.serial_log());
    let list = expert.screens().unwrap_or_else(|| unreachable!());
    let seen: Vec<(String, u16, u16, u16)> = list
        .screens
        .iter()
        .map(|s| (s.name.to_string(), s.width, s.height, s.x))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("card0/Virtual-1".into(), 1024, 768, 0),
            ("card1/Virtual-2".into(), 800, 600, 1024),
        ]
    );
    assert_eq!(list.current, 0);

    // The strip is on both screens: a person could be at either.
    for (head, size) in [(HEAD1, FIRST), (HEAD2, SECOND)] {
        let shown = wait_until(STEP, POLL, || strip_on(&mut vm, head, size));
        if !shown {
            let dump = vm.screendump_of(head).expect("screendump");
            let path = std::env::temp_dir().join(format!("shoulder-screens-{head}.ppm"));
            let _ = dump.write_ppm(&path);
            let sys = guest(
                &mut vm,
                "shoulder-agent doctor --config /etc/shoulder/agent.toml; true",
            );
            panic!(
                "no session strip on {head} (its picture: {}):\n{sys}\n{}",
                path.display(),
                vm.serial_log()
            );
        }
    }
    wait_same_pixels_on(&mut vm, HEAD1, &expert, STEP);

    // The second screen, pixel for pixel.
    expert.send(UserAction::SelectScreen(1));
    wait_same_pixels_on(&mut vm, HEAD2, &expert, STEP);

    // A click on its counter button lands on the second app only.
    control_granted_by_ctl(&mut vm, &expert, STEP);
    let (cx, cy) = center(KioskUi::new(SECOND.0, SECOND.1).layout().counter_button);
    let first_mark = vm.serial_mark();
    let want = format!("kiosk: tap x={cx} y={cy}");
    let landed = wait_until(STEP, Duration::from_secs(2), || {
        expert.click(cx, cy);
        std::thread::sleep(Duration::from_millis(500));
        second_taps(&mut vm).iter().any(|l| l.ends_with(&want))
    });
    assert!(
        landed,
        "the second app did not see the click at {cx},{cy}: {:?}",
        second_taps(&mut vm)
    );
    assert!(
        !vm.serial_log()[first_mark..].contains("kiosk: tap "),
        "the first screen's app saw the click on the second screen:\n{}",
        &vm.serial_log()[first_mark..]
    );

    // The session ends: the strip leaves both screens.
    guest(&mut vm, "shoulder-agent ctl end");
    for (head, size) in [(HEAD1, FIRST), (HEAD2, SECOND)] {
        let gone = wait_until(STEP, POLL, || {
            let dump = vm.screendump_of(head).expect("screendump");
            !shows_strip(&dump, size, EXPERT_NAME)
        });
        assert!(gone, "the strip stayed on {head}:\n{}", vm.serial_log());
    }
    drop(expert);
    vm.shutdown();
}
