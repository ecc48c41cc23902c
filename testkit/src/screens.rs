//! What the tests expect on the device's screen: the demo kiosk app's own
//! drawing, and where the agent's banner puts its prompt buttons and its
//! session strip (the same renderer and default style as the agent).

use std::time::{Duration, Instant};

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use shoulder_banner::{
    PixelFormat, PromptView, RegionKind, Renderer, ScreenSpec, StripMode, StripView, Style, View,
};
use shoulder_kiosk_ui::{KioskUi, Xrgb8888Canvas};
use shoulder_proto::msg::ConsentKind;
use shoulder_proto::session::LocalDecision;
use shoulder_proto::session::expert::ExpertState;

use crate::expert::ClientExpert;
use crate::qemu::{Screen, Vm};
use crate::wait::wait_until;

/// How often [`wait_for_prompt`] takes a screendump.
const PROMPT_POLL: Duration = Duration::from_millis(50);

/// The kiosk screen as the app draws it at time zero (what a paused app
/// shows).
pub fn kiosk_screen(ui: &KioskUi) -> Screen {
    let size = ui.layout().size;
    let pitch = size.width as usize * 4;
    let mut buf = vec![0u8; pitch * size.height as usize];
    let mut canvas = Xrgb8888Canvas::new(&mut buf, size.width, size.height, pitch)
        .expect("a canvas of the layout's own size");
    ui.draw(&mut canvas, Duration::ZERO)
        .expect("drawing into memory");
    Screen::from_xrgb8888(size.width, size.height, &buf)
}

/// The centre of `r`, in screen pixels.
pub fn center(r: Rectangle) -> (u32, u32) {
    let c = r.center();
    (c.x as u32, c.y as u32)
}

/// The banner renderer the agent uses on a `screen`-sized scanout.
fn banner_renderer(screen: (u32, u32)) -> Renderer {
    Renderer::new(
        ScreenSpec {
            width: screen.0,
            height: screen.1,
            format: PixelFormat::Xrgb8888,
        },
        Style::default(),
    )
    .expect("renderer")
}

/// The banner while a prompt of `kind` from `expert` (certificate name) is
/// open, armed.
fn prompt_view(kind: ConsentKind, expert: &str) -> View {
    View {
        prompt: Some(PromptView {
            kind,
            expert: expert.into(),
            how: "plant certificate".into(),
            says: None,
            seconds_left: 60,
            arming: false,
            help: None,
            file: None,
        }),
        ..View::default()
    }
}

/// Where the banner's button for `decision` is while a prompt of `kind`
/// from `expert` (certificate name) is open.
pub fn prompt_button(
    screen: (u32, u32),
    expert: &str,
    kind: ConsentKind,
    decision: LocalDecision,
) -> Rectangle {
    banner_renderer(screen)
        .layout(&prompt_view(kind, expert))
        .button(decision)
        .expect("the prompt has this button")
}

/// Where the session strip is while `expert` views the screen.
pub fn strip_region(screen: (u32, u32), expert: &str) -> Rectangle {
    let view = View {
        strip: Some(StripView {
            mode: StripMode::Viewing,
            expert: expert.into(),
            elapsed: Duration::from_secs(1),
            stop_hotkey: "Ctrl+Alt+Shift+S".into(),
            file: None,
        }),
        ..View::default()
    };
    banner_renderer(screen)
        .layout(&view)
        .region(RegionKind::Strip)
        .expect("a strip while viewing")
}

/// Whether `dump` of a `screen`-sized kiosk shows the session strip of
/// `expert`: most of the strip's pixels outside the app's animated areas
/// are not the app's.
pub fn shows_strip(dump: &Screen, screen: (u32, u32), expert: &str) -> bool {
    let ui = KioskUi::new(screen.0, screen.1);
    let kiosk = kiosk_screen(&ui);
    let l = ui.layout();
    let animated = [l.clock, l.progress, l.text_field];
    let points: Vec<Point> = strip_region(screen, expert)
        .points()
        .step_by(7)
        .filter(|p| !animated.iter().any(|a| a.contains(*p)))
        .collect();
    let app = points
        .iter()
        .filter(|p| dump.pixel(p.x as u32, p.y as u32) == kiosk.pixel(p.x as u32, p.y as u32))
        .count();
    app * 2 < points.len()
}

/// The share (0 to 1) of the pixels where the session strip of `expert`
/// goes on `dump` that have the background `colour`
/// (`shoulder_banner::layout::palette`: `VIEW_STRIP`, `RECONNECT_STRIP`, …):
/// well over half when that strip is drawn (its text and edge take the
/// rest), about zero without it. Unlike [`shows_strip`] this needs no
/// picture of what is under the strip (a text console, say).
pub fn strip_share(dump: &Screen, expert: &str, colour: Rgb888) -> f64 {
    let want = [colour.r(), colour.g(), colour.b()];
    let points: Vec<Point> = strip_region(dump.size(), expert)
        .points()
        .step_by(7)
        .collect();
    let hits = points
        .iter()
        .filter(|p| dump.pixel(p.x as u32, p.y as u32) == want)
        .count();
    hits as f64 / points.len().max(1) as f64
}

/// The share (0 to 1) of the pixels where the view prompt for `expert`
/// goes on `dump` that have one of the prompt's own colours (its card,
/// frame, text and buttons; `shoulder_banner::layout::palette`): most of
/// them while the prompt is drawn, few without it. Like [`strip_share`] it
/// needs no picture of what is under the prompt (a compositor's clients).
pub fn prompt_share(dump: &Screen, expert: &str) -> f64 {
    use shoulder_banner::layout::palette as p;
    let region = banner_renderer(dump.size())
        .layout(&prompt_view(ConsentKind::View, expert))
        .region(RegionKind::Prompt)
        .expect("a prompt region");
    let colours: Vec<[u8; 3]> = [
        p::CARD,
        p::CARD_FRAME,
        p::TEXT,
        p::TEXT_DIM,
        p::ACCENT,
        p::ACCEPT,
        p::DECLINE,
        p::ARMING,
        p::ARMING_TEXT,
        p::BUTTON_FRAME,
    ]
    .iter()
    .map(|c| [c.r(), c.g(), c.b()])
    .collect();
    let points: Vec<Point> = region.points().step_by(7).collect();
    let hits = points
        .iter()
        .filter(|pt| colours.contains(&dump.pixel(pt.x as u32, pt.y as u32)))
        .count();
    hits as f64 / points.len().max(1) as f64
}

/// Takes screendumps until the pixel at the centre of `button` is no
/// longer the kiosk app's own (a `screen`-sized kiosk at time zero): the
/// prompt is drawn.
///
/// # Panics
/// After `within`, with the serial log.
pub fn wait_for_prompt(vm: &mut Vm, button: Rectangle, screen: (u32, u32), within: Duration) {
    let (x, y) = center(button);
    let kiosk = kiosk_screen(&KioskUi::new(screen.0, screen.1)).pixel(x, y);
    let drawn = wait_until(within, PROMPT_POLL, || {
        vm.screendump().expect("screendump").pixel(x, y) != kiosk
    });
    assert!(drawn, "no prompt on screen:\n{}", vm.serial_log());
    // A fresh prompt takes no answer until it is armed (its buttons light
    // up): a person reads it first, and so do the tests.
    std::thread::sleep(PROMPT_ARMED_AFTER);
}

/// How long after a prompt appears the tests answer it: its arming time
/// and a margin for the slow emulated machine.
pub const PROMPT_ARMED_AFTER: Duration =
    Duration::from_millis(shoulder_agent::ui::PROMPT_ARMING.as_millis() as u64 + 500);

/// Takes screendumps until the expert's framebuffer equals one of them
/// (both sampled right after each other); returns how long that took.
///
/// # Panics
/// After `within`, with both pictures saved in the temporary directory.
pub fn wait_same_pixels(vm: &mut Vm, expert: &ClientExpert, within: Duration) -> Duration {
    wait_same_pixels_on(vm, crate::qemu::DISPLAY_ID, expert, within)
}

/// [`wait_same_pixels`] with the display device whose QEMU id is `device`.
///
/// # Panics
/// After `within`, with both pictures saved in the temporary directory.
pub fn wait_same_pixels_on(
    vm: &mut Vm,
    device: &str,
    expert: &ClientExpert,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let last;
    loop {
        let dump = vm.screendump_of(device).expect("screendump");
        if let Some(mine) = expert.screen()
            && mine == dump
        {
            return start.elapsed();
        }
        if start.elapsed() > within {
            let mine = expert.screen();
            let differing = mine.as_ref().filter(|m| m.size() == dump.size()).map(|m| {
                (
                    m.diff_in(&dump, 0, 0, dump.width, dump.height),
                    m.first_difference(&dump),
                )
            });
            let dir = std::env::temp_dir();
            let _ = dump.write_ppm(&dir.join("shoulder-session-device.ppm"));
            if let Some(m) = &mine {
                let _ = m.write_ppm(&dir.join("shoulder-session-expert.ppm"));
            }
            last = Some((mine.map(|m| m.size()), dump.size(), differing));
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!(
        "the expert's view did not equal the screen within {within:?}: \
         (expert size, screen size, (differing pixels, first at (x, y))) = {last:?}; \
         pictures in {}",
        std::env::temp_dir().display()
    );
}

/// Waits until `expert` waits for consent and the view prompt for
/// `expert_name` (the name on its certificate) is on a `screen`-sized
/// display (the kiosk's own pixels at its Accept button are covered);
/// returns where the Accept button is.
///
/// # Panics
/// After `within` for either, with the expert's events or the serial log.
pub fn view_prompt_on_screen(
    vm: &mut Vm,
    expert: &ClientExpert,
    screen: (u32, u32),
    expert_name: &str,
    within: Duration,
) -> Rectangle {
    if let Err(e) = expert.wait_state(within, "the consent prompt", |s| {
        matches!(s, ExpertState::WaitingForConsent { .. })
    }) {
        panic!("{e}\nserial log:\n{}", vm.serial_log());
    }
    let accept = prompt_button(
        screen,
        expert_name,
        ConsentKind::View,
        LocalDecision::Accept,
    );
    wait_for_prompt(vm, accept, screen, within);
    accept
}

/// The expert clicks (`x`, `y`) until the kiosk app sees a tap at exactly
/// those coordinates of its (upright) UI (`kiosk: tap x=… y=…` on the
/// serial console), for at most `within`. A click sent while the app is
/// still opening the new remote devices may not reach it at all, so it is
/// clicked again; a tap elsewhere is recorded, clicked again, and reported
/// if no click ever lands right. Returns the serial mark from before the
/// click that landed.
pub fn expert_click_lands(
    vm: &mut Vm,
    expert: &ClientExpert,
    (x, y): (u32, u32),
    within: Duration,
) -> usize {
    let want = format!("kiosk: tap x={x} y={y}");
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let mark = vm.serial_mark();
        expert.click(x, y);
        if vm
            .wait_serial(mark, "kiosk: tap ", Duration::from_secs(2))
            .is_ok()
        {
            let log = vm.serial_log();
            let tap = log[mark..]
                .lines()
                .find(|l| l.contains("kiosk: tap "))
                .unwrap_or_default()
                .trim_end()
                .to_owned();
            if tap.ends_with(&want) {
                return mark;
            }
            seen.push(tap);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expert clicked ({x}, {y}); the app saw {seen:?}:\n{}",
            vm.serial_log()
        );
    }
}
