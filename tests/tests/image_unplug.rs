//! An input device unplugged while a consent prompt is up, on a real kernel.
//!
//! The VM gets a second virtio keyboard behind a PCIe root port, so QMP
//! `device_del` really unplugs it (devices on q35's root bus are not
//! hot-pluggable): the guest kernel ejects the slot and the evdev node goes
//! away under the agent, which holds it grabbed for the prompt. Then the
//! prompt must still be answerable — by a tap with the remaining tablet, or
//! through the control socket — the session must go on to viewing, the grab
//! must be released (the kiosk app gets keys and taps again), and the agent
//! must log the removal once, without warnings or a read loop.
//!
//! Needs the image with the agent (`image/build`); without it these tests
//! print why and pass, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::{Duration, Instant};

use embedded_graphics::primitives::Rectangle;
use serde_json::json;
use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::msg::ConsentKind;
use shoulder_proto::session::LocalDecision;
use shoulder_proto::session::expert::ExpertState;
use shoulder_testkit::agent_vm::{agent_toml, agent_vm_config, boot_agent_or_skip, expect_state};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{DISPLAY_ID, Vm};
use shoulder_testkit::screens::{center, prompt_button, wait_for_prompt};
use shoulder_testkit::wait::wait_until;

/// Screen size the tests run the kiosk at.
const SCREEN: (u32, u32) = (1024, 768);
/// Longest wait for one step (a consent round trip, a log line, a key
/// reaching the app); generous because emulation on a loaded machine is
/// slow, short enough that a stuck step fails the test well within its
/// time budget.
const STEP: Duration = Duration::from_secs(15);
/// Longest wait for QEMU to remove the unplugged device: QEMU's ACPI PCI
/// hotplug (the q35 default) ejects at once, native PCIe hotplug waits out
/// the 5 s attention-button delay first.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a key that must not reach the app is given to show up anyway
/// (a delivered key is logged by the app within milliseconds).
const NOT_DELIVERED_WITHIN: Duration = Duration::from_secs(1);
/// Agent log lines allowed between the unplug and the end of the checks: a
/// device task that spins on a removed node logs far more than this.
const MAX_AGENT_LINES_AFTER_UNPLUG: usize = 40;
/// Expert name on the certificate (shown in the prompt).
const EXPERT_NAME: &str = "Ann Expert";
/// QEMU id of the keyboard the tests unplug, and of its root port.
const UNPLUGGED: &str = "kbd2";
const ROOT_PORT: &str = "rp1";
/// QEMU id of the keyboard plugged into the freed slot during the prompt.
const REPLUGGED: &str = "kbd3";
/// Agent log prefix of the local input reader.
const LOCAL_INPUT_LOG: &str = "shoulder_input::local: local input:";

// --- setup -------------------------------------------------------------------

/// A plant CA and an expert identity issued by it.
fn pki() -> Pki {
    Pki::with_expert("Test plant CA", EXPERT_NAME, 30).unwrap_or_else(|e| panic!("{e}"))
}

/// Boots the image with a second keyboard behind a PCIe root port (so it
/// can be unplugged), bound to the same display as the first one. The agent
/// takes offers from the test CA, captures (and draws its banner on) the
/// DRM scanout and grabs local devices while a prompt is open (the
/// default).
fn boot(test: &str, pki: &Pki) -> Option<Vm> {
    let config = agent_vm_config(
        SCREEN,
        "--paused",
        agent_toml("Test kiosk", ""),
        pki.ca_pem.as_bytes(),
    )
    .qemu_args([
        "-device".to_string(),
        format!("pcie-root-port,id={ROOT_PORT},chassis=1,slot=1"),
        "-device".to_string(),
        format!("virtio-keyboard-pci,id={UNPLUGGED},bus={ROOT_PORT},display={DISPLAY_ID}"),
    ]);
    let vm = boot_agent_or_skip(test, config)?;
    assert!(
        vm.ready_line().contains("kiosk=yes"),
        "the kiosk did not start: {}\n{}",
        vm.ready_line(),
        vm.serial_log()
    );
    Some(vm)
}

/// Waits until the expert's state satisfies `pred`; panics with the events
/// seen and the serial log.
fn wait_state(vm: &Vm, expert: &ClientExpert, what: &str, pred: impl Fn(ExpertState) -> bool) {
    expect_state(vm, expert, STEP, what, pred);
}

/// Where the view prompt's Accept button is, as the agent lays it out.
fn accept_button() -> Rectangle {
    prompt_button(
        SCREEN,
        EXPERT_NAME,
        ConsentKind::View,
        LocalDecision::Accept,
    )
}

// --- the scenario --------------------------------------------------------------

/// The evdev node of the keyboard behind the root port: the only input
/// device whose sysfs path passes through a PCI bridge.
fn unplugged_node(vm: &mut Vm) -> String {
    let out = vm
        .exec(
            "for e in /sys/class/input/event*; do \
               readlink -f \"$e/device\" | grep -Eq 'pci0000:00/[^/]+/0000:[0-9a-f]{2}:' \
                 && echo \"/dev/input/${e##*/}\"; \
             done",
            STEP,
        )
        .expect("listing input devices in the guest");
    let nodes: Vec<&str> = out
        .output
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/input/event"))
        .collect();
    assert_eq!(
        nodes.len(),
        1,
        "expected one input device behind the root port, found {nodes:?} ({})",
        out.output
    );
    nodes[0].to_string()
}

/// Asserts that no key-30 line of the app appears after `mark` within
/// [`NOT_DELIVERED_WITHIN`]: the local devices are grabbed.
fn assert_key_not_delivered(vm: &Vm, mark: usize, why: &str) {
    if let Ok(line) = vm.wait_serial(mark, "kiosk: key 30", NOT_DELIVERED_WITHIN) {
        panic!(
            "{why}: the key reached the kiosk app ({line}); serial log:\n{}",
            vm.serial_log()
        );
    }
}

/// Boots, opens the view prompt (devices grabbed), checks the grab, then
/// unplugs the extra keyboard and checks the agent saw it go, once. Returns
/// the VM, the waiting expert and the serial offset of the unplug.
fn prompt_then_unplug(test: &str, pki: &Pki) -> Option<(Vm, ClientExpert, usize)> {
    let mut vm = boot(test, pki)?;
    let node = unplugged_node(&mut vm);
    vm.wait_serial(0, &format!("{LOCAL_INPUT_LOG} reading {node} "), STEP)
        .expect("the agent reads the keyboard behind the root port");

    let expert = ClientExpert::offer(vm.agent_addr(), pki);
    wait_state(&vm, &expert, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    });
    wait_for_prompt(&mut vm, accept_button(), SCREEN, STEP);
    // The prompt is drawn after the grab was asked for: keys go to the
    // agent only. QEMU sends keys to the keyboard the guest enabled last:
    // the one about to be unplugged.
    let mark = vm.serial_mark();
    vm.tap_key("a").expect("key a");
    assert_key_not_delivered(&vm, mark, "before the unplug, with the prompt up");

    let unplug_mark = vm.serial_mark();
    let started = Instant::now();
    vm.device_del(UNPLUGGED, UNPLUG_TIMEOUT)
        .expect("QMP device_del of the keyboard");
    vm.wait_serial(unplug_mark, &format!("{LOCAL_INPUT_LOG} {node} gone"), STEP)
        .expect("the agent notices the unplugged keyboard");
    eprintln!(
        "{test}: {node} unplugged and dropped by the agent after {:?}",
        started.elapsed()
    );
    let gone = vm
        .exec(&format!("test -e {node}; echo exists=$?"), STEP)
        .expect("checking the node");
    assert!(
        gone.output.contains("exists=1"),
        "{node} is still there after the unplug: {}",
        gone.output
    );

    // Keys now go to the first keyboard: still grabbed, and the prompt is
    // still open.
    let mark = vm.serial_mark();
    vm.tap_key("a").expect("key a");
    assert_key_not_delivered(&vm, mark, "after the unplug, with the prompt up");
    assert!(
        matches!(expert.state(), ExpertState::WaitingForConsent { .. }),
        "the prompt closed by itself after the unplug: {:?}",
        expert.event_summary()
    );
    Some((vm, expert, unplug_mark))
}

/// After the prompt was answered: the session views, the grab is gone (a
/// key and a tap reach the app), and the agent logged the removal once and
/// nothing alarming since.
fn after_answer(test: &str, vm: &mut Vm, expert: &ClientExpert, unplug_mark: usize) {
    wait_state(vm, expert, "viewing", viewing);
    assert!(
        wait_until(STEP, Duration::from_millis(20), || expert.has_frame()),
        "the expert got no picture: {:?}",
        expert.event_summary()
    );

    // The grab is released: a key and a tap reach the kiosk app again.
    let mark = vm.serial_mark();
    vm.tap_key("a").expect("key a");
    vm.wait_serial(mark, "kiosk: key 30 down", STEP)
        .expect("a key reaches the app after the prompt (grab released)");
    let counter = KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button;
    let (cx, cy) = center(counter);
    let mark = vm.serial_mark();
    vm.click(cx, cy, SCREEN).expect("tap");
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("a tap reaches the app after the prompt (grab released)");

    // The removal is logged once; no warnings, no read loop, and nothing
    // written past the agent's logger (a library printing to stderr).
    let log = vm.serial_log();
    let after = log.get(unplug_mark..).unwrap_or("");
    let stray: Vec<&str> = after
        .lines()
        .filter(|l| !l.starts_with("kiosk: ") && !is_agent_log_line(l))
        .collect();
    assert!(
        stray.is_empty(),
        "lines on the console after the unplug that are neither the app's nor the agent's log: {stray:#?}"
    );
    let agent_lines: Vec<&str> = after.lines().filter(|l| l.contains(" shoulder_")).collect();
    let gone = agent_lines.iter().filter(|l| l.contains(" gone")).count();
    assert_eq!(gone, 1, "removal logged {gone} times:\n{after}");
    let alarming: Vec<&&str> = agent_lines
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        alarming.is_empty(),
        "the agent warned after the unplug: {alarming:#?}"
    );
    assert!(
        agent_lines.len() <= MAX_AGENT_LINES_AFTER_UNPLUG,
        "{} agent log lines after the unplug:\n{after}",
        agent_lines.len()
    );
    eprintln!(
        "{test}: {} agent log lines after the unplug",
        agent_lines.len()
    );
}

/// Whether `line` comes from the agent's logger: `<RFC 3339 time>Z LEVEL
/// target: message`, the target one of our crates.
fn is_agent_log_line(line: &str) -> bool {
    line.split_once(' ').is_some_and(|(time, rest)| {
        time.len() >= 20
            && time.ends_with('Z')
            && time.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && rest
                .trim_start()
                .split_once(' ')
                .is_some_and(|(level, rest)| {
                    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level)
                        && rest.starts_with("shoulder_")
                })
    })
}

// --- tests -------------------------------------------------------------------

/// A keyboard unplugged while the view prompt is up: the person taps Accept
/// with the tablet that is still there.
#[test]
fn image_unplug_during_prompt_answered_by_tap() {
    let test = "image_unplug_during_prompt_answered_by_tap";
    let pki = pki();
    let Some((mut vm, expert, unplug_mark)) = prompt_then_unplug(test, &pki) else {
        return;
    };
    let (ax, ay) = center(accept_button());
    vm.click(ax, ay, SCREEN).expect("tap Accept");
    after_answer(test, &mut vm, &expert, unplug_mark);
    drop(expert);
    vm.shutdown();
}

/// A keyboard unplugged while the view prompt is up, and another one
/// plugged into the same slot: the newcomer is grabbed too; the prompt is
/// accepted through the control socket (`shoulder-agent ctl accept`).
#[test]
fn image_unplug_during_prompt_answered_by_control_socket() {
    let test = "image_unplug_during_prompt_answered_by_control_socket";
    let pki = pki();
    let Some((mut vm, expert, unplug_mark)) = prompt_then_unplug(test, &pki) else {
        return;
    };
    // A keyboard plugged in while the prompt is up. QEMU sends its keys to
    // the keyboard the guest enabled last: this one.
    let mark = vm.serial_mark();
    vm.qmp(
        "device_add",
        Some(json!({
            "driver": "virtio-keyboard-pci",
            "id": REPLUGGED,
            "bus": ROOT_PORT,
            "display": DISPLAY_ID,
        })),
    )
    .expect("QMP device_add of a keyboard");
    let line = vm
        .wait_serial(mark, &format!("{LOCAL_INPUT_LOG} reading "), STEP)
        .expect("the agent reads the keyboard plugged in during the prompt");
    let node = unplugged_node(&mut vm);
    assert!(line.contains(&format!(" {node} ")), "{line}");
    // The app opens it too (it rescans every second): grabbed, it gets
    // nothing.
    vm.wait_serial(mark, &format!("kiosk: input {node} "), STEP)
        .expect("the kiosk app opens the new keyboard");
    let mark = vm.serial_mark();
    vm.tap_key("a").expect("key a");
    assert_key_not_delivered(&vm, mark, "on the keyboard plugged in during the prompt");

    let answer = vm
        .exec("shoulder-agent ctl accept", STEP)
        .expect("ctl accept");
    assert_eq!(answer.status, 0, "ctl accept failed: {}", answer.output);
    after_answer(test, &mut vm, &expert, unplug_mark);
    drop(expert);
    vm.shutdown();
}
