//! The scanout presenter on a real kernel: the QEMU image's kiosk app is DRM
//! master and page-flips at 30 Hz; `examples/banner_demo` (static build)
//! draws the banner into whatever is scanned out. Checked with QMP
//! screendumps: the banner is in at least 95 of 100, and gone within a
//! second after it is hidden.
//!
//! Needs the image (`image/build`) and the demo built for the guest:
//!
//! ```sh
//! cargo build -p shoulder-banner --example banner_demo --release --target x86_64-unknown-linux-musl
//! cargo test -p shoulder-tests --test image_banner
//! ```
//!
//! Without the image the tests print why and pass, unless
//! `SHOULDER_REQUIRE_IMAGE=1`; without the demo binary likewise, unless
//! `SHOULDER_REQUIRE_BANNER_DEMO=1`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use shoulder_banner::{
    Banner, PixelFormat, PromptView, Renderer, ScreenSpec, StripMode, StripView, Style, View,
};
use shoulder_proto::msg::ConsentKind;
use shoulder_testkit::qemu::{Screen, Vm, VmConfig, image_or_skip};

/// Screendumps taken while the banner is up.
const SAMPLES: usize = 100;
/// The issue's bar: the banner shows in at least this many of them.
const MIN_VISIBLE: usize = 95;
/// After hiding, the banner must be gone within this time.
const GONE_WITHIN: Duration = Duration::from_secs(1);
/// Generous bound for the guest to start things under emulation.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn demo_binary(test: &str) -> Option<Vec<u8>> {
    let path = std::env::var_os("SHOULDER_BANNER_DEMO")
        .map(PathBuf::from)
        .or_else(|| {
            // target/<profile>/deps/<this test> → target/
            let exe = std::env::current_exe().ok()?;
            let target = exe.parent()?.parent()?.parent()?;
            Some(target.join("x86_64-unknown-linux-musl/release/examples/banner_demo"))
        })?;
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            let why = format!(
                "{}: {e}; build it with `cargo build -p shoulder-banner --example banner_demo --release --target x86_64-unknown-linux-musl`",
                path.display()
            );
            if std::env::var("SHOULDER_REQUIRE_BANNER_DEMO").is_ok_and(|v| v == "1") {
                panic!("{test}: {why}");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

/// A few pixels of the banner that no text covers: the top-left corner of
/// each region and of each button (frames and fills), as screen points with
/// their colours.
fn markers(b: &Banner) -> Vec<(Point, [u8; 3])> {
    let mut out = Vec::new();
    for p in &b.patches {
        for (dx, dy) in [(0, 0), (1, 1), (p.rect.size.width as i32 - 1, 0)] {
            let c = p.pixels.pixel(dx as u32, dy as u32).unwrap();
            out.push((p.rect.top_left + Point::new(dx, dy), [c.r(), c.g(), c.b()]));
        }
    }
    for btn in &b.layout.buttons {
        let patch = b
            .patches
            .iter()
            .find(|p| p.rect.contains(btn.rect.top_left))
            .unwrap();
        for d in [Point::new(0, 0), Point::new(6, 6)] {
            let at = btn.rect.top_left + d;
            let local = at - patch.rect.top_left;
            let c = patch.pixels.pixel(local.x as u32, local.y as u32).unwrap();
            out.push((at, [c.r(), c.g(), c.b()]));
        }
    }
    out
}

fn matching(screen: &Screen, markers: &[(Point, [u8; 3])]) -> usize {
    markers
        .iter()
        .filter(|(p, c)| screen.pixel(p.x as u32, p.y as u32) == *c)
        .count()
}

fn shows(screen: &Screen, markers: &[(Point, [u8; 3])]) -> bool {
    matching(screen, markers) == markers.len()
}

fn wait_log(vm: &mut Vm, needle: &str) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = vm
            .exec("cat /tmp/banner.log", Duration::from_secs(10))
            .expect("reading the demo's log")
            .output;
        if out.contains(needle) {
            return out;
        }
        assert!(
            !out.contains("banner-demo: ") || out.contains("shown"),
            "the demo failed: {out}"
        );
        assert!(
            Instant::now() < deadline,
            "no '{needle}' in the demo's log: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `exact`: the app is paused, so after hiding the screen must equal the one
/// from before the banner, pixel for pixel.
/// `kiosk`: the kiosk app's arguments, or `None` to boot without it
/// (then the text console is on screen, its blinking cursor turned off).
fn run(test: &str, kiosk: Option<&str>, demo_args: &str, view: View, exact: bool) {
    let Some(image) = image_or_skip(test) else {
        return;
    };
    let Some(demo) = demo_binary(test) else {
        return;
    };
    let config = VmConfig::default()
        .env("AGENT=0")
        .file("/usr/bin/banner-demo", demo, 0o755);
    let config = match kiosk {
        Some(args) => config.kiosk_args(args),
        None => config.env("KIOSK=0"),
    };
    let mut vm = Vm::boot(&image, config).expect("booting the image");
    if kiosk.is_none() {
        // The console cursor blinks at the top-left corner, under the strip.
        vm.exec(
            "echo 0 > /sys/class/graphics/fbcon/cursor_blink; printf '\\033[?25l' > /dev/tty1; true",
            Duration::from_secs(10),
        )
        .expect("turning the console cursor off");
        std::thread::sleep(Duration::from_millis(500));
    }
    let before = vm.screendump().expect("screendump");
    let (w, h) = before.size();
    let renderer = Renderer::new(
        ScreenSpec {
            width: w,
            height: h,
            format: PixelFormat::Xrgb8888,
        },
        Style::default(),
    )
    .unwrap();
    let banner = renderer.render(&view).unwrap();
    let marks = markers(&banner);
    assert!(
        !shows(&before, &marks),
        "banner colours already on screen before the demo"
    );

    vm.exec(
        &format!("banner-demo {demo_args} >/tmp/banner.log 2>&1 &"),
        Duration::from_secs(10),
    )
    .expect("starting the demo");
    wait_log(&mut vm, "banner-demo: shown");

    let mut visible = 0;
    let mut first_missing = None;
    for i in 0..SAMPLES {
        let s = vm.screendump().expect("screendump");
        if shows(&s, &marks) {
            visible += 1;
        } else if first_missing.is_none() {
            first_missing = Some((i, s));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if visible < MIN_VISIBLE
        && let Some((i, s)) = &first_missing
    {
        let path = std::env::temp_dir().join(format!("{test}-missing-{i}.ppm"));
        let _ = s.write_ppm(&path);
        let wrong: Vec<_> = marks
            .iter()
            .filter(|(p, c)| s.pixel(p.x as u32, p.y as u32) != *c)
            .map(|(p, c)| (p, c, s.pixel(p.x as u32, p.y as u32)))
            .collect();
        eprintln!(
            "first screendump without the banner: {}; wrong markers (at, want, got): {wrong:?}",
            path.display()
        );
    }
    assert!(
        visible >= MIN_VISIBLE,
        "banner visible in {visible} of {SAMPLES} screendumps (need {MIN_VISIBLE})"
    );

    let log = wait_log(&mut vm, "banner-demo: hidden");
    eprintln!("{log}");
    let hidden_seen = Instant::now();
    loop {
        let s = vm.screendump().expect("screendump");
        // Gone: no more banner colours at the markers than the app had
        // there by itself before.
        if matching(&s, &marks) <= matching(&before, &marks) && (!exact || s == before) {
            break;
        }
        if hidden_seen.elapsed() >= GONE_WITHIN {
            let path = std::env::temp_dir().join(format!("{test}-after-hide.ppm"));
            let _ = s.write_ppm(&path);
            panic!(
                "banner still on screen {GONE_WITHIN:?} after the demo hid it ({} of {} marker pixels): {}",
                matching(&s, &marks),
                marks.len(),
                path.display()
            );
        }
    }
    let log = wait_log(&mut vm, "ticks/s");
    eprintln!("{test}: banner in {visible}/{SAMPLES} screendumps, gone after hide\n{log}");
    vm.shutdown();
}

#[test]
fn prompt_stays_up_over_a_page_flipping_app_and_goes_away() {
    let view = View {
        prompt: Some(PromptView {
            kind: ConsentKind::View,
            expert: "Jane Expert".into(),
            how: "plant certificate".into(),
            says: None,
            seconds_left: 30,
            arming: false,
            help: None,
            file: None,
        }),
        ..View::default()
    };
    run(
        "prompt_stays_up_over_a_page_flipping_app_and_goes_away",
        Some("--fps 30"),
        "--seconds 30 --view prompt",
        view,
        false,
    );
}

/// A single-buffer app that does not repaint under the banner (paused):
/// the banner stays, and hiding gives back exactly the app's pixels. (An
/// app repainting under the banner in place 30 times a second is another
/// matter: see PRESENTERS.md, "Timing".)
#[test]
fn strip_over_a_single_buffer_app_restores_its_pixels_exactly() {
    run(
        "strip_over_a_single_buffer_app_restores_its_pixels_exactly",
        Some("--single-buffer --paused"),
        "--seconds 30 --view strip",
        strip_view(),
        true,
    );
}

fn strip_view() -> View {
    View {
        strip: Some(StripView {
            mode: StripMode::Controlling,
            expert: "Jane Expert".into(),
            elapsed: Duration::ZERO,
            stop_hotkey: "Ctrl+Alt+Pause".into(),
            file: None,
        }),
        chat: Some("Checking the printer settings.".into()),
        ..View::default()
    }
}

/// No kiosk app: the text console owns the screen through DRM's fbdev
/// emulation, and the fbdev presenter draws into `/dev/fb0`.
#[test]
fn fbdev_presenter_draws_over_the_console() {
    run(
        "fbdev_presenter_draws_over_the_console",
        None,
        "--seconds 20 --view strip --fbdev /dev/fb0",
        strip_view(),
        false,
    );
}

/// No kiosk app, so no DRM master: the KMS presenter becomes master and
/// shows the banner on a plane of its own (bochs has no overlay: the
/// primary plane), then gives the console its framebuffer back.
#[test]
fn kms_presenter_takes_the_screen_when_nobody_is_master() {
    let view = View {
        prompt: Some(PromptView {
            kind: ConsentKind::View,
            expert: "Jane Expert".into(),
            how: "plant certificate".into(),
            says: None,
            seconds_left: 20,
            arming: false,
            help: None,
            file: None,
        }),
        ..View::default()
    };
    run(
        "kms_presenter_takes_the_screen_when_nobody_is_master",
        None,
        "--seconds 20 --view prompt --kms /dev/dri/card0",
        view,
        false,
    );
}
