//! The expert's view never stays wrong while the application draws during a
//! capture: a writer keeps changing a shared frame (rectangles, scrolls,
//! whole-screen changes) while the encoder reads it; once the writer stops,
//! the client's framebuffer equals the frame within a bounded number of
//! polls, and then nothing more is sent. With lossy rectangles on, the
//! view is exact once the refinements of what went lossy are due and sent
//! (polls are 100 ms apart on a virtual clock).
//!
//! Two writers: a thread drawing at its own pace (what an application does;
//! where it lands depends on scheduling), and one that draws between the
//! encoder's row reads at seeded points ([`Frame::interleave`]), which finds
//! the same faults on any machine and replays exactly.
//!
//! Seeded: a failure names its seed and writer, and `RACE_SEED=<seed>` reruns
//! only that seed (the thread's races still depend on timing).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use shoulder_capture::lossy::{Lossy, REFINE_AFTER};
use shoulder_capture::{Compression, Encoder, Frame, PixelFormat, Probing, ScreenGeometry};
use shoulder_proto::consent::ViewConsent;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::msg::{Encoding, Message};

/// Seeded runs per pixel format and writer: enough that draws between reads
/// of one update happen many times per CI run (each run has several polls
/// racing the writer), few enough that all formats take seconds.
const RUNS_PER_FORMAT: u64 = 800;
/// The interleaved writer draws before one row read in this many, so a
/// poll sees several draws at different points of its work.
const READS_PER_DRAW: usize = 24;
/// Largest frame edges: big enough that an encode takes long enough for the
/// writer to land inside it, small enough for thousands of runs.
const MAX_W: usize = 256;
const MAX_H: usize = 160;
thread_local! {
    /// Lossy rectangles sent by this test's runs: the lossy path must
    /// have been taken, not just allowed.
    static JPEG_RECTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Deflate stream pieces that continued the stream (not restarts).
    static CONTINUED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Virtual time between polls (what lossy refinement waits on).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Polls made while the writer runs, at most.
const MAX_RACING_POLLS: u64 = 8;

/// splitmix64: a tiny seeded generator, so a seed names one run.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The screen memory both threads see: bytes read and written atomically.
struct Screen {
    px: Vec<AtomicU8>,
    g: ScreenGeometry,
    pitch: usize,
}

impl Screen {
    fn new(g: ScreenGeometry, pitch: usize) -> Self {
        let len = pitch * (g.height as usize - 1) + g.width as usize * g.format.bytes_per_pixel();
        Self {
            px: (0..len).map(|i| AtomicU8::new((i / 3) as u8)).collect(),
            g,
            pitch,
        }
    }

    fn frame(&self) -> Frame<'_> {
        Frame::shared(&self.px, self.g, self.pitch).expect("the screen fits its geometry")
    }

    fn set(&self, i: usize, v: u8) {
        self.px[i].store(v, Ordering::Relaxed);
    }

    fn get(&self, i: usize) -> u8 {
        self.px[i].load(Ordering::Relaxed)
    }

    /// One change of the kind kiosk screens make, drawn byte by byte (a
    /// reader sees it half done, as it sees an application drawing).
    fn draw(&self, rng: &mut Rng) {
        let (w, h) = (self.g.width as usize, self.g.height as usize);
        let bpp = self.g.format.bytes_per_pixel();
        let at = |x: usize, y: usize| y * self.pitch + x * bpp;
        match rng.below(16) {
            // Rectangles: buttons, text, a caret (solid or patterned), mostly
            // small: they leave most of a row as it was.
            0..=10 => {
                let (x, y) = (rng.below(w), rng.below(h));
                let (rw, rh) = (
                    1 + rng.below((w - x).min(w / 4 + 1)),
                    1 + rng.below((h - y).min(h / 4 + 1)),
                );
                let v = rng.next() as u8;
                // Flat, a busy pattern, or two colours like text.
                let style = rng.below(3);
                for yy in y..y + rh {
                    for xx in x..x + rw {
                        for b in 0..bpp {
                            let p = match style {
                                0 => 0,
                                1 => (xx ^ yy) as u8,
                                _ => u8::from((xx * 3 + yy) % 5 < 2) * 0x40,
                            };
                            self.set(at(xx, yy) + b, v.wrapping_add(p).wrapping_add(b as u8));
                        }
                    }
                }
            }
            // A vertical scroll of a region; the exposed rows get new content.
            11 | 12 => {
                let (x0, y0) = (rng.below(w), rng.below(h));
                let (x1, y1) = (x0 + 1 + rng.below(w - x0), y0 + 1 + rng.below(h - y0));
                let dy = rng.below(2 * (y1 - y0)) as isize - (y1 - y0) as isize;
                let rows: Box<dyn Iterator<Item = usize>> = if dy > 0 {
                    Box::new(y0..y1)
                } else {
                    Box::new((y0..y1).rev())
                };
                let fresh = rng.next() as u8;
                for y in rows {
                    let src = y as isize + dy;
                    for i in at(x0, y)..at(x1, y) {
                        let v = if (y0 as isize..y1 as isize).contains(&src) {
                            self.get((i as isize + dy * self.pitch as isize) as usize)
                        } else {
                            fresh.wrapping_add(i as u8)
                        };
                        self.set(i, v);
                    }
                }
            }
            // Page switch: a new structured screen.
            13 | 14 => {
                let base = rng.next() as u8;
                for y in 0..h {
                    let band = (y / 16) as u8;
                    for i in at(0, y)..at(w, y) {
                        self.set(i, base.wrapping_add(band).wrapping_add((i % 97) as u8));
                    }
                }
            }
            // Photo-like content: every byte new.
            _ => {
                let mut r = Rng(rng.next());
                for y in 0..h {
                    for i in at(0, y)..at(w, y) {
                        self.set(i, r.next() as u8);
                    }
                }
            }
        }
    }
}

/// Encodes one update from the screen as it is now and applies it the way
/// the expert does. Whether an update was made.
fn poll(
    consent: &ViewConsent,
    enc: &mut Encoder,
    frame: &Frame<'_>,
    fb: &mut Option<Framebuffer>,
    full: bool,
    clock: &mut Instant,
) -> bool {
    *clock += POLL_INTERVAL;
    let Some(update) = enc
        .encode_at(consent, frame, full, *clock)
        .expect("consent is live")
    else {
        return false;
    };
    JPEG_RECTS.with(|n| n.set(n.get() + update.stats.jpeg));
    let continued = update
        .parts
        .iter()
        .flat_map(|p| &p.rects)
        .filter(|r| matches!(r.encoding, Encoding::DeflateStream { restart: false, .. }))
        .count();
    CONTINUED.with(|n| n.set(n.get() + continued));
    for msg in update.into_messages() {
        match msg {
            Message::ScreenInfo(info) => {
                *fb = Some(Framebuffer::new(&info).expect("valid screen info"));
            }
            Message::Update(part) => fb
                .as_mut()
                .expect("screen info comes first")
                .apply(&part)
                .expect("updates fit the screen"),
            other => panic!("unexpected {}", other.name()),
        }
    }
    true
}

#[derive(Debug, Clone, Copy)]
enum Writer {
    Thread,
    Interleaved,
}

/// One seeded run; `Err` says how the view stayed wrong.
fn run(format: PixelFormat, seed: u64, writer: Writer) -> Result<(), String> {
    let mut rng = Rng(seed);
    let bpp = format.bytes_per_pixel();
    let (w, h) = (1 + rng.below(MAX_W), 1 + rng.below(MAX_H));
    let pad = [0, bpp, 5][rng.below(3)];
    let g = ScreenGeometry {
        width: w as u32,
        height: h as u32,
        format,
    };
    let screen = Arc::new(Screen::new(g, w * bpp + pad));
    let probing = rng.below(2) == 0;
    let mut enc = if probing {
        Encoder::with_probing(Probing::default())
    } else {
        Encoder::new()
    };
    // Every compression: lz4 and deflate per rectangle for older experts,
    // one deflate stream for current ones, and that with lossy photo-like
    // areas, refined a tile or all at once.
    let compression = rng.below(4);
    enc.set_compression(
        [
            Compression::Lz4,
            Compression::Deflate,
            Compression::DeflateStream,
            Compression::DeflateStream,
        ][compression],
    );
    let lossy = (compression == 3).then(|| Lossy {
        quality: 1 + rng.below(100) as u8,
        refine_after: REFINE_AFTER,
        refine_pixels: [1, usize::MAX][rng.below(2)],
        exact_below_bytes: [0, 4096][rng.below(2)],
    });
    enc.set_lossy(lossy);
    // Without probing every poll compares all rows, so one poll of the
    // settled screen sends all that is left and the next sees it is done;
    // probing may miss a thin change until its next full compare. Lossy
    // tiles are refined once still for REFINE_AFTER, one tile per poll at
    // the smallest budget.
    let mut settle_polls = if probing {
        Probing::default().full_every as usize + 1
    } else {
        2
    };
    if lossy.is_some() {
        let tiles = w.div_ceil(64) * h.div_ceil(64);
        settle_polls += (REFINE_AFTER.as_millis() / POLL_INTERVAL.as_millis()) as usize + tiles;
    }
    let mut clock = Instant::now();
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let mut fb = None;

    let racing = 1 + rng.below(MAX_RACING_POLLS as usize);
    let fulls: Vec<bool> = (0..racing).map(|_| rng.below(8) == 0).collect();
    let writer_rng = Rng(rng.next());
    match writer {
        Writer::Thread => {
            let stop = Arc::new(AtomicBool::new(false));
            let started = Arc::new(AtomicBool::new(false));
            let handle = {
                let (screen, stop, started) = (screen.clone(), stop.clone(), started.clone());
                let mut rng = writer_rng;
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        screen.draw(&mut rng);
                        started.store(true, Ordering::Relaxed);
                    }
                })
            };
            // The polls below are to race the writer, not to run before it.
            while !started.load(Ordering::Relaxed) {
                thread::yield_now();
            }
            for &full in &fulls {
                poll(
                    &consent,
                    &mut enc,
                    &screen.frame(),
                    &mut fb,
                    full,
                    &mut clock,
                );
            }
            stop.store(true, Ordering::Relaxed);
            handle.join().expect("the writer does not panic");
        }
        Writer::Interleaved => {
            let rng = Mutex::new(writer_rng);
            let draw = |_row: u32| {
                let mut rng = rng.lock().expect("the writer does not panic");
                if rng.below(READS_PER_DRAW) == 0 {
                    screen.draw(&mut rng);
                }
            };
            for &full in &fulls {
                let frame = screen.frame().interleave(&draw);
                poll(&consent, &mut enc, &frame, &mut fb, full, &mut clock);
            }
        }
    }

    let want = screen.frame().to_xrgb8888();
    // A poll of the settled screen.
    let still = |enc: &mut Encoder, fb: &mut Option<Framebuffer>, clock: &mut Instant| {
        poll(&consent, enc, &screen.frame(), fb, false, clock)
    };
    let mut matched = None;
    for n in 1..=settle_polls {
        still(&mut enc, &mut fb, &mut clock);
        if fb.as_ref().is_some_and(|fb| fb.normalized() == want) {
            matched = Some(n);
            break;
        }
    }
    let Some(n) = matched else {
        let differ = fb.as_ref().map_or(0, |fb| {
            fb.normalized()
                .chunks_exact(4)
                .zip(want.chunks_exact(4))
                .filter(|(a, b)| a != b)
                .count()
        });
        return Err(format!(
            "{w}×{h} {format} (probing {probing}, lossy {lossy:?}): view differs in {differ} \
             pixels after {settle_polls} polls of the settled screen"
        ));
    };
    // The encoder comes to rest: what it believes the expert has is the
    // screen. Changes only in bytes the view ignores (the alpha byte of a
    // 32-bit format) may still go out first, found by the next compare of
    // every row, and must leave the view as it is.
    for _ in 0..settle_polls + 1 {
        let sent = still(&mut enc, &mut fb, &mut clock);
        if fb.as_ref().is_none_or(|fb| fb.normalized() != want) {
            return Err(format!(
                "{w}×{h} {format}: the view matched, then an update broke it"
            ));
        }
        if !sent {
            return Ok(());
        }
    }
    Err(format!(
        "{w}×{h} {format} (probing {probing}): updates go on after the view matched (matched \
         at poll {n})"
    ))
}

fn check_format(format: PixelFormat) {
    let seeds: Vec<u64> = match std::env::var("RACE_SEED") {
        Ok(s) => vec![s.parse().expect("RACE_SEED is a number")],
        Err(_) => (0..RUNS_PER_FORMAT)
            .map(|i| i * 0x1_0000 + format as u64)
            .collect(),
    };
    let failures: Vec<String> = [Writer::Interleaved, Writer::Thread]
        .into_iter()
        .flat_map(|writer| seeds.iter().map(move |&seed| (writer, seed)))
        .filter_map(|(writer, seed)| {
            run(format, seed, writer)
                .err()
                .map(|e| format!("seed {seed}, {writer:?} writer: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} runs left the view wrong:\n{}",
        failures.len(),
        2 * seeds.len(),
        failures.join("\n")
    );
    let jpeg = JPEG_RECTS.with(|n| n.get());
    assert!(
        seeds.len() < RUNS_PER_FORMAT as usize || jpeg > 100,
        "only {jpeg} lossy rectangles were sent: the lossy path is not exercised"
    );
    let continued = CONTINUED.with(|n| n.get());
    assert!(
        seeds.len() < RUNS_PER_FORMAT as usize || continued > 50,
        "only {continued} rectangles continued a deflate stream"
    );
}

#[test]
fn settles_xrgb8888() {
    check_format(PixelFormat::Xrgb8888);
}

#[test]
fn settles_argb8888() {
    check_format(PixelFormat::Argb8888);
}

#[test]
fn settles_xbgr8888() {
    check_format(PixelFormat::Xbgr8888);
}

#[test]
fn settles_abgr8888() {
    check_format(PixelFormat::Abgr8888);
}

#[test]
fn settles_rgb565() {
    check_format(PixelFormat::Rgb565);
}
