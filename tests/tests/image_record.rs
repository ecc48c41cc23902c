//! Session records against the real kernel: the agent in the QEMU image
//! records a session with the kiosk app (real DRM capture, a tap by the
//! person changing the screen), the technician fetches the record over the
//! files channel in a second session (listed, asked, copied), and it
//! verifies against the device's certificate and replays to the very
//! picture the expert saw.
//!
//! Needs the image with the agent built with `files` and `record`
//! (`image/build`); without it this prints why and passes, unless
//! `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::{Duration, Instant};

use shoulder::client::files::{Download, Step};
use shoulder_kiosk_ui::KioskUi;
use shoulder_proto::files::FileMsg;
use shoulder_proto::record::chunks;
use shoulder_proto::session::expert::UserAction;
use shoulder_testkit::agent_vm::{
    agent_toml, agent_vm_config, boot_agent_or_skip, expect_state, guest_ok,
};
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::pki::Pki;
use shoulder_testkit::qemu::{Screen, Vm};
use shoulder_testkit::screens::{center, wait_same_pixels};

const SCREEN: (u32, u32) = (800, 600);
/// Longest wait for one step (a consent round trip, a screen update);
/// generous because emulation on a loaded machine is slow.
const STEP: Duration = Duration::from_secs(30);
const RECORDS: &str = "/var/lib/shoulder/records";
/// Rows at the top of the screen the banner's strip may take (its clock
/// ticks each second).
const STRIP_ROWS: u32 = 120;

/// The person at the device accepts the open prompt (`ctl accept`).
fn accept(vm: &mut Vm, expert: &ClientExpert, what: &str) {
    let deadline = Instant::now() + STEP;
    loop {
        let out = vm
            .exec("shoulder-agent ctl accept", STEP)
            .unwrap_or_else(|e| panic!("ctl accept: {e}"));
        if out.status == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} prompt to accept: {} (expert: {:?})",
            out.output,
            expert.event_summary()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the guest's audit log to have `n` `record-closed` records.
fn records_closed(vm: &mut Vm, n: usize) {
    let deadline = Instant::now() + STEP;
    loop {
        let out = guest_ok(
            vm,
            "grep -c record-closed /var/lib/shoulder/audit.jsonl || true",
            STEP,
        );
        if out.trim().parse::<usize>().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no record-closed: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn image_a_recorded_session_is_fetched_verified_and_replayed_to_what_the_expert_saw() {
    let test = "image_a_recorded_session_is_fetched_verified_and_replayed_to_what_the_expert_saw";
    let pki = Pki::with_expert("Test plant CA", "Ann Expert", 30).unwrap_or_else(|e| panic!("{e}"));
    let toml = agent_toml(
        "Test kiosk",
        &format!("[record]\nmode = \"screen\"\n[files]\nreadable = [\"{RECORDS}\"]"),
    );
    let Some(mut vm) = boot_agent_or_skip(
        test,
        agent_vm_config(SCREEN, "--paused", toml, pki.ca_pem.as_bytes()),
    ) else {
        return;
    };

    // Session 1: the expert watches while the person taps the kiosk.
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept(&mut vm, &expert, "view");
    expect_state(&vm, &expert, STEP, "viewing", viewing);
    wait_same_pixels(&mut vm, &expert, STEP);
    let counter = KioskUi::new(SCREEN.0, SCREEN.1).layout().counter_button;
    let mark = vm.serial_mark();
    let (x, y) = center(counter);
    vm.click(x, y, SCREEN).expect("tap");
    vm.wait_serial(mark, "kiosk: counter=1", STEP)
        .expect("the tap was counted");
    // The app's answer to the tap settles (its button lights up while
    // pressed) before the expert's last picture is taken: after it only
    // the strip's clock changes.
    std::thread::sleep(Duration::from_secs(2));
    wait_same_pixels(&mut vm, &expert, STEP);
    let seen = expert.screen().expect("the expert's picture");
    expert.send(UserAction::Disconnect);
    drop(expert);
    records_closed(&mut vm, 1);
    let name = guest_ok(&mut vm, &format!("ls {RECORDS}"), STEP);
    let name = name.lines().next().expect("a record").trim().to_string();

    // Session 2: the technician lists the records and fetches the first
    // (the person is asked about the file).
    let expert = ClientExpert::offer(vm.agent_addr(), &pki);
    accept(&mut vm, &expert, "view");
    expect_state(&vm, &expert, STEP, "viewing", viewing);
    let (_, mut seen_steps) = expert.file_steps(0);
    expert.send(shoulder::client::files::list(1, RECORDS));
    let deadline = Instant::now() + STEP;
    let listing = loop {
        let (steps, n) = expert.file_steps(seen_steps);
        seen_steps = n;
        if let Some(l) = steps.into_iter().find_map(|m| match m {
            FileMsg::Listing(l) => Some(l),
            _ => None,
        }) {
            break l;
        }
        assert!(Instant::now() < deadline, "no listing");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        listing.entries.iter().any(|e| e.name.as_str() == name),
        "{listing:?}"
    );
    let local = tempfile::tempdir().unwrap();
    let path = format!("{RECORDS}/{name}");
    let (mut down, first) = Download::start(2, &path, local.path()).expect("download");
    expert.send(first);
    let deadline = Instant::now() + 3 * STEP;
    let mut asked = false;
    'transfer: loop {
        assert!(Instant::now() < deadline, "the record did not arrive");
        let (steps, n) = expert.file_steps(seen_steps);
        seen_steps = n;
        for m in steps {
            match down.on(&m) {
                Step::Go(actions) => actions.into_iter().for_each(|a| expert.send(a)),
                Step::Asking { .. } if !asked => {
                    asked = true;
                    accept(&mut vm, &expert, "file");
                }
                Step::Finished(Ok(_)) => break 'transfer,
                Step::Finished(Err(e)) => panic!("the copy failed: {e}"),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    expert.send(UserAction::Disconnect);
    drop(expert);
    let record = local.path().join(&name);
    let cert = local.path().join("device.crt");
    std::fs::write(
        &cert,
        guest_ok(&mut vm, "cat /var/lib/shoulder/device.crt", STEP),
    )
    .unwrap();

    // Whole and signed by this device.
    let report = shoulder::record::verify_file(&record, &cert)
        .unwrap_or_else(|e| panic!("the record does not verify: {e}"));
    eprintln!("{test}: {report}");
    // Replayed, it shows the very picture the expert saw last. After it
    // the record may hold one more update the device sent while the
    // expert was leaving (the strip's clock ticks each second): only the
    // strip may differ there.
    let file = std::fs::read(&record).unwrap();
    let mut player = shoulder::record::Player::new();
    let mut seen_at = None;
    let mut after = Vec::new();
    for (i, c) in chunks(&file).enumerate() {
        if player.apply(&c.unwrap()) != Some(shoulder::record::Step::Screen) {
            continue;
        }
        let fb = player.framebuffer().expect("a screen");
        let shown =
            Screen::from_xrgb8888(u32::from(fb.width()), u32::from(fb.height()), fb.pixels());
        if shown == seen {
            seen_at = Some(i);
            after.clear();
        } else if seen_at.is_some() {
            after.push(shown);
        }
    }
    assert_eq!(player.errors, 0);
    assert!(
        seen_at.is_some(),
        "the replay never shows what the expert saw"
    );
    for later in &after {
        let last_row = (0..seen.height)
            .rev()
            .find(|&y| later.diff_in(&seen, 0, y, seen.width, 1) > 0)
            .unwrap_or(0);
        assert!(
            last_row < STRIP_ROWS,
            "after the expert's last picture the record changes row {last_row}, below the strip"
        );
    }
    eprintln!(
        "{test}: {} update(s) after the expert's last picture, in the strip only",
        after.len()
    );
    // It holds the tap's consequence and the consent.
    let events: Vec<String> = chunks(&file)
        .filter_map(|c| c.ok())
        .filter_map(|c| player_line(&c))
        .collect();
    assert!(
        events.iter().any(|e| e.starts_with("consent-answered")),
        "{events:?}"
    );
}

fn player_line(c: &shoulder_proto::record::Chunk<'_>) -> Option<String> {
    match shoulder::record::Player::new().apply(c)? {
        shoulder::record::Step::Said(s) => Some(s),
        shoulder::record::Step::Screen => None,
    }
}
