//! The banner as pictures: every prompt and strip at four screen sizes,
//! compared pixel-exactly with the PNGs in `golden/`.
//!
//! After an intended change, regenerate them with
//! `SHOULDER_BLESS=1 cargo test -p shoulder-banner --test golden` and look
//! at the new PNGs before committing. A mismatch writes the actual picture
//! next to the target dir and names it in the failure.

use std::path::PathBuf;
use std::time::Duration;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use shoulder_banner::{
    Edge, PixelBuffer, PixelFormat, PromptView, Renderer, ScreenSpec, StripMode, StripView, Style,
    View,
};
use shoulder_proto::msg::ConsentKind;
use shoulder_proto::session::LocalDecision;

const SIZES: [(u32, u32); 4] = [(320, 240), (800, 480), (1280, 800), (1920, 1080)];

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn prompt(kind: ConsentKind, expert: &str, how: &str, secs: u32) -> PromptView {
    PromptView {
        kind,
        expert: expert.into(),
        how: how.into(),
        says: None,
        seconds_left: secs,
        arming: false,
        help: None,
        file: None,
    }
}

fn strip(mode: StripMode, expert: &str, secs: u64) -> StripView {
    StripView {
        mode,
        expert: expert.into(),
        elapsed: Duration::from_secs(secs),
        stop_hotkey: "Ctrl+Alt+Pause".into(),
        file: None,
    }
}

/// The scenes, by file name stem.
fn scenes() -> Vec<(&'static str, View)> {
    let long = "Maximilian Alexander von und zu Hohenberg-Schwarzenfels (Field Service)";
    vec![
        (
            "view_prompt",
            View {
                prompt: Some(prompt(
                    ConsentKind::View,
                    "Jane Expert",
                    "plant certificate",
                    57,
                )),
                ..View::default()
            },
        ),
        (
            "control_prompt",
            View {
                // An invitation made for nobody in particular: the headline
                // says so, the id is how they got in, and what they call
                // themselves is a hint beside it.
                prompt: Some(PromptView {
                    says: Some("Ann Expert".into()),
                    ..prompt(
                        ConsentKind::Control,
                        shoulder_proto::session::INVITATION_HEADLINE,
                        "invitation 0123456789abcdef",
                        42,
                    )
                }),
                strip: Some(strip(
                    StripMode::Viewing,
                    shoulder_proto::session::INVITATION_HEADLINE,
                    125,
                )),
                ..View::default()
            },
        ),
        (
            "strip_viewed_chat",
            View {
                strip: Some(strip(StripMode::Viewing, "Jane Expert", 754)),
                chat: Some(
                    "Please tap Settings, then Network, and read me the address shown at the top."
                        .into(),
                ),
                ..View::default()
            },
        ),
        (
            "strip_controlled_chat",
            View {
                strip: Some(strip(StripMode::Controlling, "Jane Expert", 3723)),
                chat: Some("I am changing the printer settings now.".into()),
                ..View::default()
            },
        ),
        (
            "strip_viewed_notice",
            View {
                strip: Some(strip(StripMode::Viewing, "Jane Expert", 61)),
                notice: Some("Control stopped".into()),
                ..View::default()
            },
        ),
        (
            "strip_reconnecting",
            View {
                strip: Some(strip(StripMode::Reconnecting, "Jane Expert", 312)),
                ..View::default()
            },
        ),
        (
            "session_ended",
            View {
                notice: Some("Session ended: connection lost".into()),
                ..View::default()
            },
        ),
        (
            // The person asked for help; an expert answers it.
            "view_prompt_help",
            View {
                prompt: Some(PromptView {
                    help: Some(shoulder_banner::HelpAsked {
                        secs_ago: 130,
                        text: "printer jammed in tray 2".into(),
                    }),
                    ..prompt(ConsentKind::View, "Ann Expert", "plant certificate", 57)
                }),
                ..View::default()
            },
        ),
        (
            // A file to copy off the device, asked while the expert views.
            "file_get_prompt",
            View {
                prompt: Some(PromptView {
                    file: Some(shoulder_proto::session::FileAsk {
                        to_device: false,
                        name: "kiosk.log".into(),
                        size: 84_213,
                    }),
                    ..prompt(ConsentKind::Files, "Ann Expert", "plant certificate", 42)
                }),
                strip: Some(strip(StripMode::Viewing, "Ann Expert", 125)),
                ..View::default()
            },
        ),
        (
            // A file to put on the device, with a long name.
            "file_put_prompt",
            View {
                prompt: Some(PromptView {
                    file: Some(shoulder_proto::session::FileAsk {
                        to_device: true,
                        name: "firmware-update-2026-12-04-release-candidate-3.bin".into(),
                        size: 48_300_000,
                    }),
                    ..prompt(
                        ConsentKind::Files,
                        "Ann Expert",
                        "invitation 0123456789abcdef",
                        58,
                    )
                }),
                strip: Some(strip(StripMode::Controlling, "Ann Expert", 300)),
                ..View::default()
            },
        ),
        (
            // A file going while the expert controls: the strip names it
            // and offers to cancel it.
            "file_transfer_strip",
            View {
                strip: Some(shoulder_banner::StripView {
                    file: Some(shoulder_proto::session::FileAsk {
                        to_device: false,
                        name: "kiosk.log".into(),
                        size: 84_213,
                    }),
                    ..strip(StripMode::Controlling, "Ann Expert", 200)
                }),
                ..View::default()
            },
        ),
        (
            "long_name",
            View {
                prompt: Some(prompt(ConsentKind::Control, long, "plant certificate", 9)),
                strip: Some(strip(StripMode::Controlling, long, 5)),
                ..View::default()
            },
        ),
    ]
}

/// On a device that records its sessions (`Style::recorded`): golden
/// pictures of these; the layout checks run every scene recorded too.
fn recorded_scenes() -> Vec<(&'static str, View)> {
    let scene = |name: &str| scenes().into_iter().find(|s| s.0 == name).unwrap().1;
    vec![
        ("recorded_view_prompt", scene("view_prompt")),
        // With the strip behind it where there is room.
        ("recorded_control_prompt", scene("control_prompt")),
        ("recorded_file_put_prompt", scene("file_put_prompt")),
        (
            "recorded_strip",
            View {
                strip: Some(strip(StripMode::Viewing, "Ann Expert", 125)),
                ..View::default()
            },
        ),
        // The hotkey and the file already under the first line.
        ("recorded_file_transfer_strip", scene("file_transfer_strip")),
    ]
}

/// Whether layouts are checked with the recorded line too (the `record`
/// feature draws it; without it `Style::recorded` changes nothing).
const RECORDED: &[bool] = if cfg!(feature = "record") {
    &[false, true]
} else {
    &[false]
};

fn recorded() -> Style {
    Style {
        recorded: true,
        ..Style::default()
    }
}

/// A stand-in for the app's screen, so the pictures show where the banner
/// sits: a grey field with a grid.
fn backdrop(w: u32, h: u32, format: PixelFormat) -> PixelBuffer {
    let mut b = PixelBuffer::new(w, h, format).unwrap();
    b.clear(Rgb888::new(0xe8, 0xea, 0xee));
    let step = (w.min(h) / 8).max(8);
    let line = Rgb888::new(0xb8, 0xbe, 0xc8);
    for x in (0..w).step_by(step as usize) {
        let _ = Rectangle::new(Point::new(x as i32, 0), Size::new(1, h))
            .into_styled(PrimitiveStyle::with_fill(line))
            .draw(&mut b);
    }
    for y in (0..h).step_by(step as usize) {
        let _ = Rectangle::new(Point::new(0, y as i32), Size::new(w, 1))
            .into_styled(PrimitiveStyle::with_fill(line))
            .draw(&mut b);
    }
    b
}

fn screenshot(view: &View, w: u32, h: u32, format: PixelFormat, style: Style) -> PixelBuffer {
    let r = Renderer::new(
        ScreenSpec {
            width: w,
            height: h,
            format,
        },
        style,
    )
    .unwrap();
    let banner = r.render(view).unwrap();
    let mut screen = backdrop(w, h, format);
    banner.composite_into(&mut screen.surface());
    screen
}

fn encode_png(img: &PixelBuffer) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::Best);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&img.to_rgb8()).unwrap();
    w.finish().unwrap();
    out
}

fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(bytes);
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(
        info.color_type,
        png::ColorType::Rgb,
        "golden PNGs are 8-bit RGB"
    );
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Compares with `golden/<name>.png`, or rewrites it under SHOULDER_BLESS=1.
/// Returns a failure description instead of panicking, so one run reports
/// every mismatch.
fn check(name: &str, img: &PixelBuffer) -> Option<String> {
    let path = golden_dir().join(format!("{name}.png"));
    if std::env::var_os("SHOULDER_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, encode_png(img)).unwrap();
        return None;
    }
    let Ok(bytes) = std::fs::read(&path) else {
        return Some(format!(
            "{}: missing; run with SHOULDER_BLESS=1 to create it",
            path.display()
        ));
    };
    let (w, h, want) = decode_png(&bytes);
    let got = img.to_rgb8();
    if (w, h) == (img.width(), img.height()) && want == got {
        return None;
    }
    let differing = want
        .chunks_exact(3)
        .zip(got.chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    let actual_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("golden-actual");
    std::fs::create_dir_all(&actual_dir).unwrap();
    let actual = actual_dir.join(format!("{name}.png"));
    std::fs::write(&actual, encode_png(img)).unwrap();
    Some(format!(
        "{name}: {differing} pixels differ (golden {w}x{h}, actual {}x{}); actual picture: {}",
        img.width(),
        img.height(),
        actual.display()
    ))
}

#[test]
fn every_scene_matches_its_golden_picture() {
    let mut failures = Vec::new();
    for (name, view) in scenes() {
        let sizes: &[(u32, u32)] = if name == "long_name" {
            &[(320, 240), (1920, 1080)]
        } else {
            &SIZES
        };
        for &(w, h) in sizes {
            let img = screenshot(&view, w, h, PixelFormat::Xrgb8888, Style::default());
            failures.extend(check(&format!("{name}_{w}x{h}"), &img));
        }
    }
    for (name, view) in recorded_scenes() {
        if !cfg!(feature = "record") {
            break;
        }
        for &(w, h) in &SIZES {
            let img = screenshot(&view, w, h, PixelFormat::Xrgb8888, recorded());
            failures.extend(check(&format!("{name}_{w}x{h}"), &img));
        }
    }
    // Small panels often scan out RGB565; and kiosks may want the strip at
    // the bottom.
    let (_, control) = &scenes()[1];
    let img = screenshot(control, 320, 240, PixelFormat::Rgb565, Style::default());
    failures.extend(check("control_prompt_320x240_rgb565", &img));
    let (_, chat) = &scenes()[3];
    let bottom = Style {
        edge: Edge::Bottom,
        ..Style::default()
    };
    let img = screenshot(chat, 800, 480, PixelFormat::Xrgb8888, bottom);
    failures.extend(check("strip_controlled_chat_800x480_bottom", &img));
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}

/// Every text line inside its region, regions on screen and apart,
/// buttons on the banner and big enough for a finger.
/// Recorded: the prompt and, unless a prompt needs its room, the strip
/// say so.
fn check_layout(name: &str, view: &View, w: u32, h: u32, edge: Edge, recorded: bool) {
    let r = Renderer::new(
        ScreenSpec {
            width: w,
            height: h,
            format: PixelFormat::Xrgb8888,
        },
        Style {
            edge,
            recorded,
            ..Style::default()
        },
    )
    .unwrap();
    let screen = Rectangle::new(Point::zero(), Size::new(w, h));
    let layout = r.layout(view);
    for (region, text, s) in r.text_boxes(view) {
        assert!(!s.is_empty(), "{name} {w}x{h}: an empty line");
        assert!(
            region.intersection(&text) == text,
            "{name} {w}x{h} {edge:?}: '{s}' {text:?} sticks out of {region:?}"
        );
        assert!(
            screen.intersection(&region) == region,
            "{name} {w}x{h}: off screen"
        );
        for b in &layout.buttons {
            let inside = b.rect.intersection(&text) == text;
            let apart = b.rect.intersection(&text).is_zero_sized();
            assert!(
                inside || apart,
                "{name} {w}x{h} {edge:?}: '{s}' runs into {b:?}"
            );
        }
    }
    for (i, a) in layout.regions.iter().enumerate() {
        for b in &layout.regions[i + 1..] {
            assert!(
                a.rect.intersection(&b.rect).is_zero_sized(),
                "{name} {w}x{h}: {a:?} overlaps {b:?}"
            );
        }
    }
    for b in &layout.buttons {
        assert!(
            layout.covers(b.rect.center()),
            "{name}: button off the banner"
        );
        assert!(
            b.rect.size.height >= 36 && b.rect.size.width >= 60,
            "{name} {w}x{h}: {b:?} too small for a finger"
        );
    }
    if view.prompt.is_some() {
        assert!(layout.prompt_open);
        assert!(layout.buttons.len() >= 2);
    }
    if view.strip.is_some() && view.prompt.is_none() {
        assert!(
            layout.button(LocalDecision::End).is_some(),
            "{name} {w}x{h}: the strip is shown"
        );
    }
    // Shortened only on screens narrower than the golden ones.
    let says = r.text_boxes(view).iter().any(|t| {
        t.2.contains("This session is recorded") || (w < 320 && t.2.starts_with("This session"))
    });
    let should = view.prompt.is_some() || view.strip.is_some();
    if recorded && should {
        assert!(says, "{name} {w}x{h} {edge:?}: recorded is not said");
    }
    assert!(recorded || !says);
}

#[test]
fn no_text_is_cut_off_and_buttons_fit_fingers() {
    let more = [
        (3840, 2160),
        (1080, 1920),
        (480, 800),
        (320, 200),
        (200, 320),
        (240, 320),
        (1024, 600),
    ];
    for (name, view) in scenes() {
        for &(w, h) in SIZES.iter().chain(&more) {
            for edge in [Edge::Top, Edge::Bottom] {
                for &recorded in RECORDED {
                    check_layout(name, &view, w, h, edge, recorded);
                }
            }
        }
    }
}

#[test]
fn any_screen_size_lays_out_cleanly() {
    // A sweep of odd sizes between the smallest and 4K, both orientations.
    let scenes = scenes();
    for w in (200..=3840).step_by(331) {
        for h in (200..=2160).step_by(263) {
            if w.max(h) < 320 {
                continue;
            }
            for (name, view) in &scenes {
                for &recorded in RECORDED {
                    check_layout(name, view, w, h, Edge::Top, recorded);
                }
            }
        }
    }
}

#[test]
fn long_names_are_shortened_with_an_ellipsis() {
    let (_, view) = scenes().pop().unwrap();
    let r = Renderer::new(
        ScreenSpec {
            width: 320,
            height: 240,
            format: PixelFormat::Xrgb8888,
        },
        Style::default(),
    )
    .unwrap();
    let texts: Vec<String> = r.text_boxes(&view).into_iter().map(|t| t.2).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Maximilian") && t.ends_with("...")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Controlled by Maxim") && t.ends_with("... · 0:05")),
        "the name gives way, the time stays: {texts:?}"
    );
    assert!(
        texts.contains(&"wants to control this screen".to_string()),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t == "Declines automatically in 9 s"),
        "{texts:?}"
    );
}

/// A sideways panel: the banner is laid out for the screen the person sees
/// and drawn turned back into the framebuffer. Read upright again, every
/// pixel equals the unturned picture; the pictures of the framebuffer (as
/// the compositor holds it, on its side) are goldens for a human to look at.
#[test]
fn on_a_turned_panel_the_banner_reads_upright() {
    use shoulder_proto::rotation::Rotation;
    let mut failures = Vec::new();
    let (_, control) = &scenes()[1];
    for r in Rotation::ALL {
        let (uw, uh) = (800, 480);
        let (bw, bh) = r.inverse().upright_size(uw, uh);
        let upright = screenshot(control, uw, uh, PixelFormat::Xrgb8888, Style::default());
        let banner = Renderer::new(
            ScreenSpec {
                width: uw,
                height: uh,
                format: PixelFormat::Xrgb8888,
            },
            Style::default(),
        )
        .unwrap()
        .render(control)
        .unwrap()
        .turned_back(r, uw, uh);
        // The app's picture, as the compositor keeps it turned back.
        let mut buffer = backdrop(uw, uh, PixelFormat::Xrgb8888).turned_back(r);
        assert_eq!((buffer.width(), buffer.height()), (bw, bh));
        banner.composite_into(&mut buffer.surface());
        for y in 0..uh {
            for x in 0..uw {
                let (bx, by) = r.to_buffer(x, y, bw, bh);
                assert_eq!(
                    buffer.pixel(bx, by),
                    upright.pixel(x, y),
                    "rotation {r}: upright pixel {x},{y}"
                );
            }
        }
        if r != Rotation::Deg0 {
            failures.extend(check(
                &format!("control_prompt_800x480_turned_{r}"),
                &buffer,
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches:\n{}",
        failures.join("\n")
    );
}
