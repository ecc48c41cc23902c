//! The QEMU image boots, the demo kiosk app drives the real display and
//! answers real input: checked through QMP screendumps and input events.
//!
//! Needs the image (`image/build`); without it these tests print why and
//! pass, unless `SHOULDER_REQUIRE_IMAGE=1`.

use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use shoulder_kiosk_ui::KioskUi;
use shoulder_testkit::qemu::{Screen, Vm, VmConfig, image_or_skip};
use shoulder_testkit::screens::kiosk_screen;

/// How long a redraw may take to show in a screendump (the app draws at
/// 30 Hz; emulation on a loaded machine is slow).
const SHOW_TIMEOUT: Duration = Duration::from_secs(10);

/// Pixels differing between the screendump and the expected screen, outside
/// the animated areas (clock, progress bar, text field with its caret).
fn static_diff(screen: &Screen, ui: &KioskUi) -> usize {
    let want = kiosk_screen(ui);
    if screen.size() != want.size() {
        return usize::MAX;
    }
    let l = ui.layout();
    let animated = [l.clock, l.progress, l.text_field];
    Rectangle::new(Point::zero(), l.size)
        .points()
        .filter(|p| !animated.iter().any(|a| a.contains(*p)))
        .filter(|p| screen.pixel(p.x as u32, p.y as u32) != want.pixel(p.x as u32, p.y as u32))
        .count()
}

/// Takes screendumps until the static part equals `ui`'s drawing.
fn wait_for_screen(vm: &mut Vm, ui: &KioskUi, what: &str) -> Screen {
    let deadline = Instant::now() + SHOW_TIMEOUT;
    loop {
        let screen = vm.screendump().expect("screendump");
        let diff = static_diff(&screen, ui);
        if diff == 0 {
            return screen;
        }
        if Instant::now() >= deadline {
            let path = std::env::temp_dir().join(format!("shoulder-{what}.ppm"));
            let _ = screen.write_ppm(&path);
            panic!(
                "{what}: screen ({}x{}) differs from the expected kiosk screen in {diff} pixels; \
                 screendump saved to {}\nserial log:\n{}",
                screen.width,
                screen.height,
                path.display(),
                vm.serial_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn click_center(vm: &mut Vm, area: Rectangle, size: Size) {
    let c = area.center();
    vm.click(c.x as u32, c.y as u32, (size.width, size.height))
        .expect("click");
}

fn counter_clicks_show(kiosk_args: &str, test: &str) {
    let Some(image) = image_or_skip(test) else {
        return;
    };
    let mut vm = Vm::boot(&image, VmConfig::default().kiosk_args(kiosk_args)).expect("boot");
    eprintln!(
        "{test}: booted in {:?}: {}",
        vm.boot_time(),
        vm.ready_line()
    );
    assert!(vm.ready_line().contains("kiosk=yes"), "{}", vm.ready_line());

    let mut ui = KioskUi::new(1024, 768);
    let first = wait_for_screen(&mut vm, &ui, &format!("{test}-start"));
    assert!(!first.is_black());

    // A tablet click on the counter button counts, on screen and in the log.
    let mark = vm.serial_mark();
    let button = ui.layout().counter_button;
    click_center(&mut vm, button, ui.layout().size);
    vm.wait_serial(mark, "kiosk: counter=1", SHOW_TIMEOUT)
        .expect("the app counted the click");
    let c = button.center();
    ui.tap(c.x, c.y);
    let after = wait_for_screen(&mut vm, &ui, &format!("{test}-counter1"));
    let changed = first.diff_in(
        &after,
        button.top_left.x as u32,
        button.top_left.y as u32,
        button.size.width,
        button.size.height,
    );
    assert!(changed > 0, "the counter digits changed on screen");

    // Keys reach the text field.
    let mark = vm.serial_mark();
    vm.type_text("hi").expect("keys");
    vm.wait_serial(mark, "kiosk: text=\"hi\"", SHOW_TIMEOUT)
        .expect("the app received the keys");
    vm.shutdown();
}

#[test]
fn image_guest_shell_runs_commands() {
    let Some(image) = image_or_skip("image_guest_shell_runs_commands") else {
        return;
    };
    let mut vm = Vm::boot(&image, VmConfig::default().env("KIOSK=0")).expect("boot");
    assert!(vm.ready_line().contains("kiosk=no"), "{}", vm.ready_line());
    let t = Duration::from_secs(10);
    let release = vm.exec("uname -r", t).expect("uname");
    assert_eq!(release.status, 0);
    assert!(release.output.trim().ends_with("-amd64"), "{release:?}");
    let devices = vm.exec("ls /dev/dri /dev/uinput", t).expect("ls");
    assert!(devices.output.contains("card0"), "{devices:?}");
    assert!(devices.output.contains("/dev/uinput"), "{devices:?}");
    // Status and stderr come back; `exit` does not end the guest shell.
    let failed = vm.exec("echo oops >&2; exit 3", t).expect("exit 3");
    assert_eq!((failed.status, failed.output.trim()), (3, "oops"));
    let net = vm.exec("ip -4 addr show eth0", t).expect("ip");
    assert!(net.output.contains("10.0.2.15/24"), "{net:?}");
    vm.shutdown();
}

#[test]
fn image_kiosk_page_flipping_shows_and_counts_clicks() {
    counter_clicks_show(
        "--mode 1024x768",
        "image_kiosk_page_flipping_shows_and_counts_clicks",
    );
}

#[test]
fn image_kiosk_single_buffer_shows_and_counts_clicks() {
    counter_clicks_show(
        "--mode 1024x768 --single-buffer",
        "image_kiosk_single_buffer_shows_and_counts_clicks",
    );
}

#[test]
fn image_kiosk_switches_mode_mid_run() {
    let test = "image_kiosk_switches_mode_mid_run";
    let Some(image) = image_or_skip(test) else {
        return;
    };
    let config = VmConfig::default().kiosk_args("--mode 1024x768 --modes 1024x768,800x600");
    let mut vm = Vm::boot(&image, config).expect("boot");
    let mut ui = KioskUi::new(1024, 768);
    wait_for_screen(&mut vm, &ui, "mode-start");

    let mark = vm.serial_mark();
    vm.tap_key("f2").expect("F2");
    vm.wait_serial(mark, "kiosk: mode 800x600", SHOW_TIMEOUT)
        .expect("mode switch logged");
    ui.resize(800, 600);
    wait_for_screen(&mut vm, &ui, "mode-800x600");

    // Input is scaled to the new mode.
    let mark = vm.serial_mark();
    click_center(&mut vm, ui.layout().counter_button, ui.layout().size);
    vm.wait_serial(mark, "kiosk: counter=1", SHOW_TIMEOUT)
        .expect("click at the new resolution counted");
    vm.shutdown();
}

/// Runs `capture-probe looks drm` for about a second in the guest; returns
/// how many buffer changes its looks saw and its report.
fn looks_see_flips(vm: &mut Vm) -> (u64, String) {
    let out = vm
        .exec(
            "capture-probe looks drm --count 250 --interval-ms 4",
            Duration::from_secs(60),
        )
        .expect("capture-probe");
    assert_eq!(out.status, 0, "capture-probe looks: {}", out.output);
    let report = out
        .output
        .lines()
        .find(|l| l.starts_with("looks:"))
        .unwrap_or_else(|| panic!("no report in {:?}", out.output))
        .to_owned();
    let changes = report
        .split("buffer changes seen: ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {report:?}"));
    (changes, report)
}

/// An idle session looks at which framebuffer the CRTC shows between its
/// slower polls (one GETCRTC, no pixels read), so a page flip after a quiet
/// spell is captured at once. On the real kernel: the id changes with the
/// page-flipping app's flips, and stays put while a single-buffered app
/// draws in place (those changes are found by the polls). Prints what a
/// look costs under emulation.
#[test]
fn image_a_look_at_the_crtc_sees_page_flips_and_only_them() {
    let test = "image_a_look_at_the_crtc_sees_page_flips_and_only_them";
    let Some(image) = image_or_skip(test) else {
        return;
    };
    for (args, flipping) in [("--fps 10", true), ("--single-buffer", false)] {
        let config = VmConfig::default()
            .kiosk_args(&format!("--mode 1024x768 {args}"))
            .env("AGENT=0");
        let mut vm = Vm::boot(&image, config).expect("boot");
        let (changes, report) = looks_see_flips(&mut vm);
        eprintln!("{test}: kiosk {args}: {report}");
        if flipping {
            // 10 flips a second for about a second (fewer under a slow
            // emulation): some must be seen.
            assert!(changes >= 2, "the looks saw {changes} flips: {report}");
        } else {
            assert_eq!(changes, 0, "no flips, yet: {report}");
        }
        vm.shutdown();
    }
}
