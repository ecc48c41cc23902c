//! Demo kiosk app: DRM master, page flips, evdev input.
//!
//! The kind of program a kiosk runs: it owns the display (DRM master on
//! `/dev/dri/card0`), draws a touch UI (the `shoulder-kiosk-ui` screen) into
//! dumb buffers and page-flips between them at a steady rate, or, with
//! `--single-buffer`, draws into one buffer in place and never flips: the
//! two kinds of app screen capture has to handle. Taps, clicks and keys from
//! every evdev device (hot-plugged ones included) drive the UI.
//!
//! Keys besides typing: F2 switches to the next mode of `--modes` (a
//! resolution change while running), F3 pauses/resumes the animation.
//!
//! With `--busy-file`, while that file exists the single-buffered app draws
//! busy content in place as fast as it can (moving boxes, rectangles,
//! scrolling text, new pages, photo-like noise: `shoulder_kiosk_ui::busy`),
//! the hardest case for screen capture. When the file goes it stops and
//! leaves that last picture on screen, still, until the next input brings
//! its UI back.
//!
//! With `--rotate 90|180|270` it plays a compositor driving a panel mounted
//! sideways: the UI is laid out for the panel as the person sees it and
//! drawn turned into the buffer (the buffer's picture turns that far
//! clockwise to read upright), and taps, which the touchscreen reports in
//! the buffer's orientation, are turned back before they reach the UI.
//!
//! It logs one line per event of interest to stderr (the image's serial
//! console), e.g. `kiosk: counter=3`, which end-to-end tests wait for.

/// `eprintln!` with one write per line: std's writes the pieces of a
/// formatted line separately (stderr is unbuffered), and the serial console
/// then splits the kiosk's lines with the agent's, which tests that read
/// the console line by line take for stray output.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

mod display;
mod input;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use rustix::event::{PollFd, PollFlags};
use shoulder_kiosk_ui::busy::BusyPainter;
use shoulder_kiosk_ui::{
    Action, CARET_BLINK_MS, KioskUi, PAGES, PROGRESS_PERIOD_MS, Xrgb8888Canvas,
};

use display::{Display, MAX_BUFFERS};
use input::{Inputs, UserInput};

/// Highest frame rate: a kiosk UI has no use for more, and under emulation
/// every frame costs real CPU.
const MAX_FPS: u32 = 60;
/// How long to wait for a page-flip event before assuming it was lost.
const FLIP_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the frame rate is logged.
const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// While busy, a stroke that may repaint the whole screen (a new page, a
/// photo) comes at most this often, smaller strokes in between: the picture
/// left when the app stops was mostly drawn by small strokes, so a part of
/// a viewer's copy that went wrong late is not painted over by chance.
const BUSY_WHOLE_SCREEN_EVERY: Duration = Duration::from_millis(700);
const KEY_F2: u16 = 60;
const KEY_F3: u16 = 61;

/// Demo kiosk app: owns the display, draws a touch UI, reads evdev input.
#[derive(Debug, Parser)]
#[command(name = "shoulder-kiosk", version)]
struct Args {
    /// DRM card to drive.
    #[arg(long, default_value = "/dev/dri/card0")]
    card: PathBuf,
    /// Directory of evdev devices.
    #[arg(long, default_value = "/dev/input")]
    input_dir: PathBuf,
    /// Mode to start in, WIDTHxHEIGHT (default: the connector's preferred mode).
    #[arg(long, value_parser = parse_size)]
    mode: Option<(u32, u32)>,
    /// Modes F2 cycles through, comma-separated WIDTHxHEIGHT.
    #[arg(long, value_delimiter = ',', value_parser = parse_size,
          default_value = "1024x768,800x600,1280x720")]
    modes: Vec<(u32, u32)>,
    /// Draw into one buffer in place and never page-flip.
    #[arg(long)]
    single_buffer: bool,
    /// Number of buffers to page-flip between (2 to 4).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=MAX_BUFFERS as i64))]
    buffers: u8,
    /// Frames per second (1 to 60).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=MAX_FPS as i64))]
    fps: u32,
    /// While this file exists, the animation (clock, progress bar, caret)
    /// stands still, so the screen is pixel-stable for comparisons.
    #[arg(long)]
    pause_file: Option<PathBuf>,
    /// Start with the animation paused (F3 toggles).
    #[arg(long)]
    paused: bool,
    /// Create this file once the first frame is on screen.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// While this file exists, draw busy content in place as fast as
    /// possible instead of the UI (needs --single-buffer); when it goes, the
    /// last busy picture stays until the next input.
    #[arg(long, requires = "single_buffer")]
    busy_file: Option<PathBuf>,
    /// Degrees (0, 90, 180, 270) the buffer's picture turns clockwise to
    /// read upright: a panel mounted sideways.
    #[arg(long, default_value_t = 0, value_parser = parse_turn)]
    rotate: u16,
    /// Show an arrow on the CRTC's cursor plane (drivers that have one,
    /// e.g. virtio-gpu), starting at `CURSOR_START`; it moves to each tap.
    #[arg(long)]
    cursor: bool,
    /// This screen's place among several, WIDTHxHEIGHT+X+Y: absolute
    /// devices span the whole WIDTHxHEIGHT desktop (as a compositor maps
    /// them over all its outputs), and taps outside this screen's part of
    /// it are another screen's.
    #[arg(long, value_parser = parse_desktop)]
    desktop: Option<Desktop>,
}

/// `--desktop`: the desktop's size and this screen's top-left corner in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Desktop {
    size: (u32, u32),
    at: (i32, i32),
}

fn parse_desktop(s: &str) -> Result<Desktop, String> {
    let err = || format!("'{s}' is not a place: expected WIDTHxHEIGHT+X+Y, e.g. 1824x768+1024+0");
    let (size, at) = s.trim().split_once('+').ok_or_else(err)?;
    let (x, y) = at.split_once('+').ok_or_else(err)?;
    Ok(Desktop {
        size: parse_size(size)?,
        at: (x.parse().map_err(|_| err())?, y.parse().map_err(|_| err())?),
    })
}

/// Where `--cursor` puts the arrow's tip first (buffer coordinates).
const CURSOR_START: (i32, i32) = (100, 100);

/// A white arrow with a black outline, tip at (0, 0), on a transparent
/// `CURSOR_EDGE`² ARGB8888 image.
fn cursor_arrow() -> Vec<u32> {
    let edge = display::CURSOR_EDGE as usize;
    let mut px = vec![0u32; edge * edge];
    for y in 0..32usize {
        // A right triangle: row y spans x = 0..=y/2 (about 27° wide).
        let end = y / 2;
        for x in 0..=end {
            let outline = x == 0 || x == end || y == 31;
            px[y * edge + x] = if outline { 0xff00_0000 } else { 0xffff_ffff };
        }
    }
    px
}

fn parse_turn(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(d @ (0 | 90 | 180 | 270)) => Ok(d),
        _ => Err(format!("'{s}' is not 0, 90, 180 or 270")),
    }
}

/// The UI's size for a `w`×`h` buffer turned `turn` degrees.
fn upright_size(turn: u16, (w, h): (u32, u32)) -> (u32, u32) {
    if turn % 180 == 90 { (h, w) } else { (w, h) }
}

/// Where buffer pixel (`x`, `y`) of a `w`×`h` buffer turned `turn` degrees
/// shows in the upright UI (taps; and, read the other way, which buffer
/// pixel each upright one goes to).
fn upright_tap(turn: u16, x: i32, y: i32, (w, h): (u32, u32)) -> (i32, i32) {
    let (x, y) = (x.clamp(0, w as i32 - 1), y.clamp(0, h as i32 - 1));
    let (x, y) = (x as u32, y as u32);
    // The inverse turn, applied to the buffer as if it were upright.
    let (ux, uy) = match turn {
        90 => (h - 1 - y, x),
        180 => (w - 1 - x, h - 1 - y),
        270 => (y, w - 1 - x),
        _ => (x, y),
    };
    (ux as i32, uy as i32)
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let err = || format!("'{s}' is not a size: expected WIDTHxHEIGHT, e.g. 1024x768");
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(err)?;
    let w: u32 = w.parse().map_err(|_| err())?;
    let h: u32 = h.parse().map_err(|_| err())?;
    if !(64..=8192).contains(&w) || !(64..=8192).contains(&h) {
        return Err(format!("size {w}x{h} out of range (64 to 8192 per side)"));
    }
    Ok((w, h))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiosk: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What moves on screen, quantised to what changes pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AnimKey {
    clock_secs: u64,
    progress_px: u64,
    caret_on: bool,
}

fn anim_key(ui: &KioskUi, now: Duration) -> AnimKey {
    let width = u64::from(ui.layout().progress.size.width);
    AnimKey {
        clock_secs: now.as_secs(),
        progress_px: (now.as_millis() % PROGRESS_PERIOD_MS) as u64 * width
            / PROGRESS_PERIOD_MS as u64,
        caret_on: (now.as_millis() / CARET_BLINK_MS).is_multiple_of(2),
    }
}

/// What a buffer holds: the UI state generation and the animation key.
type Drawn = Option<(u64, AnimKey)>;

struct Kiosk {
    ui: KioskUi,
    /// `--rotate`: the buffer's picture turns this far to read upright.
    turn: u16,
    /// The upright picture of a turned UI, and the state it shows.
    upright: Vec<u8>,
    upright_drawn: Drawn,
    /// Bumped on every visible state change.
    generation: u64,
    paused_by_key: bool,
    frozen_at: Option<Duration>,
}

impl Kiosk {
    /// The time to draw: the wall clock, or the moment the animation paused.
    fn now(&mut self, pause_file: Option<&Path>) -> Duration {
        let paused = self.paused_by_key || pause_file.is_some_and(Path::exists);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match (paused, self.frozen_at) {
            (true, Some(t)) => t,
            (true, None) => {
                self.frozen_at = Some(wall);
                eprintln!("kiosk: animation paused");
                wall
            }
            (false, Some(_)) => {
                self.frozen_at = None;
                eprintln!("kiosk: animation resumed");
                wall
            }
            (false, None) => wall,
        }
    }

    fn handle(&mut self, input: UserInput) -> Option<ModeRequest> {
        match input {
            UserInput::Tap { x, y } => {
                let action = self.ui.tap(x, y);
                eprintln!("kiosk: tap x={x} y={y}");
                match action {
                    Some(Action::Increment) => eprintln!("kiosk: counter={}", self.ui.counter()),
                    Some(Action::SelectPage(p)) => eprintln!("kiosk: page={}", PAGES[p]),
                    Some(Action::ClearText) => eprintln!("kiosk: text=\"\""),
                    None => {}
                }
                if action.is_some() {
                    self.generation += 1;
                }
            }
            UserInput::Key { code, value } => {
                match value {
                    0 => eprintln!("kiosk: key {code} up"),
                    1 => eprintln!("kiosk: key {code} down"),
                    _ => {}
                }
                if value == 1 && code == KEY_F2 {
                    return Some(ModeRequest::Next);
                }
                if value == 1 && code == KEY_F3 {
                    self.paused_by_key = !self.paused_by_key;
                    return None;
                }
                if self.ui.key(code, value) {
                    self.generation += 1;
                    eprintln!("kiosk: text=\"{}\"", self.ui.text());
                }
            }
        }
        None
    }
}

enum ModeRequest {
    Next,
}

/// Draws the UI into `target`: all of it if the buffer holds another state,
/// only the animated areas if just time moved, nothing if it is current.
fn render(kiosk: &mut Kiosk, target: display::Target<'_>, drawn: &mut Drawn, now: Duration) {
    let want = (kiosk.generation, anim_key(&kiosk.ui, now));
    if *drawn == Some(want) {
        return;
    }
    if kiosk.turn != 0 {
        // Draw upright, then the whole picture turned into the buffer.
        let size = target.size;
        let (uw, uh) = upright_size(kiosk.turn, size);
        kiosk.upright.resize(uw as usize * uh as usize * 4, 0);
        let mut upright = std::mem::take(&mut kiosk.upright);
        let mut upright_drawn = kiosk.upright_drawn;
        draw(
            kiosk,
            &mut upright,
            (uw, uh),
            uw as usize * 4,
            &mut upright_drawn,
            now,
        );
        for (y, row) in target
            .pixels
            .chunks_mut(target.pitch)
            .take(size.1 as usize)
            .enumerate()
        {
            for (x, px) in row[..size.0 as usize * 4].chunks_exact_mut(4).enumerate() {
                let (ux, uy) = upright_tap(kiosk.turn, x as i32, y as i32, size);
                let i = (uy as usize * uw as usize + ux as usize) * 4;
                px.copy_from_slice(&upright[i..i + 4]);
            }
        }
        kiosk.upright = upright;
        kiosk.upright_drawn = upright_drawn;
        *drawn = Some(want);
        return;
    }
    let (w, h) = target.size;
    draw(kiosk, target.pixels, (w, h), target.pitch, drawn, now);
}

/// Draws the UI into `pixels` (`size`, rows `pitch` apart): all of it if they
/// hold another state, only the animated areas if just time moved.
fn draw(
    kiosk: &Kiosk,
    pixels: &mut [u8],
    (w, h): (u32, u32),
    pitch: usize,
    drawn: &mut Drawn,
    now: Duration,
) {
    let want = (kiosk.generation, anim_key(&kiosk.ui, now));
    if *drawn == Some(want) {
        return;
    }
    let Ok(mut canvas) = Xrgb8888Canvas::new(pixels, w, h, pitch) else {
        eprintln!("kiosk: error: buffer smaller than its mode");
        return;
    };
    let full = drawn.is_none_or(|(generation, _)| generation != kiosk.generation);
    if full {
        let _ = kiosk.ui.draw(&mut canvas, now);
    } else {
        let l = kiosk.ui.layout();
        let mut clipped = Clipped {
            inner: &mut canvas,
            areas: [l.clock, l.progress, l.text_field],
        };
        let _ = kiosk.ui.draw(&mut clipped, now);
    }
    *drawn = Some(want);
}

/// Draw target that only lets pixels inside `areas` through, so a frame in
/// which only the clock and progress bar moved rewrites only those.
struct Clipped<'a, 'b> {
    inner: &'a mut Xrgb8888Canvas<'b>,
    areas: [Rectangle; 3],
}

impl Dimensions for Clipped<'_, '_> {
    fn bounding_box(&self) -> Rectangle {
        self.inner.bounding_box()
    }
}

impl DrawTarget for Clipped<'_, '_> {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let areas = self.areas;
        self.inner.draw_iter(
            pixels
                .into_iter()
                .filter(|Pixel(p, _)| areas.iter().any(|a| a.contains(*p))),
        )
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        for clip in self.areas {
            self.inner.fill_solid(&area.intersection(&clip), color)?;
        }
        Ok(())
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let flipping = !args.single_buffer;
    let mut display = Display::open(&args.card, args.mode, usize::from(args.buffers), flipping)?;
    let (w, h) = display.size();
    let (uw, uh) = upright_size(args.rotate, (w, h));
    let mut kiosk = Kiosk {
        ui: KioskUi::new(uw, uh),
        turn: args.rotate,
        upright: Vec::new(),
        upright_drawn: None,
        generation: 0,
        paused_by_key: args.paused,
        frozen_at: None,
    };
    let mut drawn: Vec<Drawn> = vec![None; display.buffer_count()];
    let pause_file = args.pause_file.as_deref();

    // First frame: draw buffer 0 and light up the CRTC with it.
    show_first(&mut display, &mut kiosk, &mut drawn, pause_file)?;
    let mut cursor = false;
    if args.cursor {
        match display
            .set_cursor(&cursor_arrow())
            .and_then(|()| display.move_cursor(CURSOR_START.0, CURSOR_START.1))
        {
            Ok(()) => {
                cursor = true;
                eprintln!("kiosk: cursor at {},{}", CURSOR_START.0, CURSOR_START.1);
            }
            Err(e) => eprintln!("kiosk: no cursor ({e})"),
        }
    }
    eprintln!(
        "kiosk: ready {w}x{h} buffers={} {} fps={}",
        display.buffer_count(),
        if flipping {
            "flipping"
        } else {
            "single-buffer"
        },
        args.fps
    );
    if let Some(path) = &args.ready_file
        && let Err(e) = std::fs::write(path, format!("{w}x{h}\n"))
    {
        eprintln!("kiosk: cannot write {}: {e}", path.display());
    }

    let mut inputs = Inputs::new(&args.input_dir);
    let interval = Duration::from_secs(1) / args.fps;
    let mut next_frame = Instant::now() + interval;
    let mut flip_started = Instant::now();
    let mut frames: u64 = 0;
    let mut stats_since = Instant::now();
    let mut events = Vec::new();
    let mut mode_request = None;
    let mut busy: Option<Busy> = None;
    // After busy drawing: the picture stays until the next input.
    let mut holding_busy_picture = false;

    loop {
        let now = Instant::now();
        inputs.rescan(now);

        let mut deadline = inputs.next_scan();
        if !display.flip_pending() {
            deadline = deadline.min(next_frame);
        } else {
            deadline = deadline.min(flip_started + FLIP_TIMEOUT);
        }
        // Busy: no waiting, only a look at input and the card.
        if busy.is_some() {
            deadline = now;
        }
        let timeout = deadline.saturating_duration_since(now);
        let card_ready = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(1 + input::MAX_DEVICES);
            fds.push(PollFd::new(display.card(), PollFlags::IN));
            fds.extend(
                inputs
                    .fds()
                    .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)),
            );
            let timeout = rustix::event::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(format!("poll failed: {e}").into()),
            }
            fds[0].revents().contains(PollFlags::IN)
        };
        if card_ready {
            display.handle_events()?;
        }
        if display.flip_pending() && flip_started.elapsed() >= FLIP_TIMEOUT {
            eprintln!("kiosk: page flip event lost; going on");
            display.handle_events().ok();
            // Forget the pending flip: the next flip either works or fails loudly.
            display.forget_pending_flip();
        }

        events.clear();
        // Absolute devices span the desktop; taps are ours only on our part.
        let span = args.desktop.map_or(display.size(), |d| d.size);
        inputs.read(span, &mut events);
        for mut input in events.drain(..) {
            if let (Some(d), UserInput::Tap { x, y }) = (args.desktop, &mut input) {
                (*x, *y) = (*x - d.at.0, *y - d.at.1);
                let (w, h) = display.size();
                if *x < 0 || *y < 0 || *x >= w as i32 || *y >= h as i32 {
                    continue;
                }
            }
            if let (true, UserInput::Tap { x, y }) = (cursor, &input) {
                match display.move_cursor(*x, *y) {
                    Ok(()) => eprintln!("kiosk: cursor at {x},{y}"),
                    Err(e) => eprintln!("kiosk: cannot move the cursor: {e}"),
                }
            }
            if let UserInput::Tap { x, y } = &mut input {
                (*x, *y) = upright_tap(kiosk.turn, *x, *y, display.size());
            }
            if holding_busy_picture {
                holding_busy_picture = false;
                drawn = vec![None; display.buffer_count()];
            }
            if let Some(request) = kiosk.handle(input) {
                mode_request = Some(request);
            }
        }

        if mode_request.is_some() && !display.flip_pending() {
            mode_request = None;
            let current = display.size();
            let next = next_mode(&args.modes, current);
            match display.set_mode(next) {
                Ok(()) => {
                    let (uw, uh) = upright_size(kiosk.turn, next);
                    kiosk.ui.resize(uw, uh);
                    kiosk.upright_drawn = None;
                    kiosk.generation += 1;
                    drawn = vec![None; display.buffer_count()];
                    show_first(&mut display, &mut kiosk, &mut drawn, pause_file)?;
                    eprintln!("kiosk: mode {}x{}", next.0, next.1);
                }
                Err(e) => eprintln!("kiosk: cannot switch to {}x{}: {e}", next.0, next.1),
            }
        }

        let busy_now = args.busy_file.as_deref().is_some_and(Path::exists);
        match (busy_now, &mut busy) {
            (true, None) => {
                let seed = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1);
                eprintln!("kiosk: busy on seed={seed}");
                busy = Some(Busy {
                    painter: BusyPainter::new(seed),
                    strokes: 0,
                    last_whole_screen: Instant::now(),
                });
            }
            (true, Some(b)) => {
                let target = display.back();
                let (w, h) = target.size;
                let drawn_stroke = if b.last_whole_screen.elapsed() >= BUSY_WHOLE_SCREEN_EVERY {
                    b.last_whole_screen = Instant::now();
                    b.painter.stroke(target.pixels, w, h, target.pitch)
                } else {
                    b.painter.small_stroke(target.pixels, w, h, target.pitch)
                };
                if let Err(e) = drawn_stroke {
                    return Err(format!("busy drawing: {e}").into());
                }
                b.strokes += 1;
            }
            (false, Some(b)) => {
                // Nothing more is drawn until the next input: from this
                // line on, the app's pixels stand still.
                eprintln!("kiosk: busy off strokes={}", b.strokes);
                busy = None;
                holding_busy_picture = true;
            }
            (false, None) => {}
        }

        let now = Instant::now();
        if busy.is_none() && !holding_busy_picture && now >= next_frame && !display.flip_pending() {
            let t = kiosk.now(pause_file);
            let target = display.back();
            let index = target.index;
            render(&mut kiosk, target, &mut drawn[index], t);
            display.flip()?;
            flip_started = now;
            frames += 1;
            next_frame += interval;
            if next_frame < now {
                // Fell behind (slow emulation): skip frames rather than burst.
                next_frame = now + interval;
            }
        }
        if stats_since.elapsed() >= STATS_INTERVAL {
            let secs = stats_since.elapsed().as_secs_f64();
            eprintln!("kiosk: fps={:.1}", frames as f64 / secs);
            frames = 0;
            stats_since = Instant::now();
        }
    }
}

/// The busy drawing under way (`--busy-file`).
struct Busy {
    painter: BusyPainter,
    strokes: u64,
    last_whole_screen: Instant,
}

fn show_first(
    display: &mut Display,
    kiosk: &mut Kiosk,
    drawn: &mut [Drawn],
    pause_file: Option<&Path>,
) -> Result<(), display::DisplayError> {
    let t = kiosk.now(pause_file);
    render(kiosk, display.buffer(0), &mut drawn[0], t);
    display.show_first()
}

/// The mode after `current` in `modes` (the first if `current` is not there).
fn next_mode(modes: &[(u32, u32)], current: (u32, u32)) -> (u32, u32) {
    match modes.iter().position(|&m| m == current) {
        Some(i) => modes[(i + 1) % modes.len()],
        None => modes.first().copied().unwrap_or(current),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer pixel each upright pixel goes to, worked out by hand for a
    /// 3×2 buffer: turning it clockwise reads `da/eb/fc` (90°), `fed/cba`
    /// (180°), `cf/be/ad` (270°).
    #[test]
    fn turned_buffers_read_upright() {
        let buffer = ["abc", "def"];
        for (turn, upright) in [
            (0, vec!["abc", "def"]),
            (90, vec!["da", "eb", "fc"]),
            (180, vec!["fed", "cba"]),
            (270, vec!["cf", "be", "ad"]),
        ] {
            let (uw, uh) = upright_size(turn, (3, 2));
            let mut seen = vec![vec![' '; uw as usize]; uh as usize];
            for (y, row) in buffer.iter().enumerate() {
                for (x, c) in row.chars().enumerate() {
                    let (ux, uy) = upright_tap(turn, x as i32, y as i32, (3, 2));
                    seen[uy as usize][ux as usize] = c;
                }
            }
            let seen: Vec<String> = seen.into_iter().map(|r| r.into_iter().collect()).collect();
            assert_eq!(seen, upright, "{turn}");
        }
    }

    #[test]
    fn desktop_places_parse() {
        assert_eq!(
            parse_desktop("1824x768+1024+0"),
            Ok(Desktop {
                size: (1824, 768),
                at: (1024, 0)
            })
        );
        assert!(parse_desktop("1824x768").is_err());
        assert!(parse_desktop("1824x768+a+0").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024x768"), Ok((1024, 768)));
        assert_eq!(parse_size(" 800X600"), Ok((800, 600)));
        assert!(parse_size("800").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("0x0").unwrap_err().contains("out of range"));
    }

    #[test]
    fn modes_cycle() {
        let modes = [(1024, 768), (800, 600)];
        assert_eq!(next_mode(&modes, (1024, 768)), (800, 600));
        assert_eq!(next_mode(&modes, (800, 600)), (1024, 768));
        assert_eq!(next_mode(&modes, (640, 480)), (1024, 768));
    }

    #[test]
    fn partial_redraw_equals_full_redraw() {
        let (w, h) = (640u32, 480u32);
        let pitch = w as usize * 4;
        let mut kiosk = Kiosk {
            ui: KioskUi::new(w, h),
            turn: 0,
            upright: Vec::new(),
            upright_drawn: None,
            generation: 0,
            paused_by_key: false,
            frozen_at: None,
        };
        kiosk.ui.key(30, 1);
        let t0 = Duration::from_millis(1_000_000);
        let t1 = t0 + Duration::from_millis(1_700);
        let mut buf = vec![0u8; pitch * h as usize];
        let mut drawn = None;
        fn target(buf: &mut [u8], pitch: usize, size: (u32, u32)) -> display::Target<'_> {
            display::Target {
                index: 0,
                pixels: buf,
                pitch,
                size,
            }
        }
        render(&mut kiosk, target(&mut buf, pitch, (w, h)), &mut drawn, t0);
        render(&mut kiosk, target(&mut buf, pitch, (w, h)), &mut drawn, t1);
        let mut fresh = vec![0u8; pitch * h as usize];
        render(&mut kiosk, target(&mut fresh, pitch, (w, h)), &mut None, t1);
        assert!(buf == fresh, "clipped redraw must give the same pixels");
    }
}
