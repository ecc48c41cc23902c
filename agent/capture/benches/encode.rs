//! Encoder benchmark on deterministic 1920×1080 kiosk-like sequences.
//!
//! `cargo bench -p shoulder-capture` prints, per scenario: encode time per
//! frame, bytes per frame on the wire (framed messages, before TLS), and the
//! cost of checking an unchanged frame, next to one `memcmp` of a frame.
//! Extra arguments filter scenarios by name (`cargo bench -p shoulder-capture
//! -- scroll typing`). Run as a test (`cargo test --benches`), it does one
//! small frame per scenario as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use shoulder_capture::scenarios::{Scenario, ScenarioFrames};
use shoulder_capture::{Encoder, Frame, PixelFormat, Probing, Rotation, ScreenGeometry};
use shoulder_proto::consent::ViewConsent;

/// Frames encoded per scenario (after the first, full one): enough for a
/// stable median, few enough that the whole run takes well under a minute.
const FRAMES: usize = 60;
/// Noise frames are 8 MB of incompressible pixels each: fewer suffice.
const NOISE_FRAMES: usize = 12;
/// Repetitions of the memcmp and unchanged-check timings (median taken).
const REPEATS: usize = 31;

struct Row {
    name: &'static str,
    frames: usize,
    encode: Vec<Duration>,
    bytes: Vec<usize>,
    rects: Vec<usize>,
    unchanged: Vec<Duration>,
    /// Mean cost of an unchanged check with sparse probing.
    probed: Duration,
}

fn median<T: Copy + Ord>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn p95<T: Copy + Ord>(v: &[T]) -> T {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * 95 / 100).min(s.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn wire_bytes(update: shoulder_capture::EncodedUpdate) -> usize {
    update
        .into_messages()
        .map(|m| shoulder_proto::frame::encode(&m).map_or(0, |f| f.len()))
        .sum()
}

fn run(consent: &ViewConsent, sc: Scenario, w: u32, h: u32, frames: usize) -> Row {
    let g = ScreenGeometry {
        width: w,
        height: h,
        format: PixelFormat::Xrgb8888,
    };
    let pitch = w as usize * 4;
    let seq = ScenarioFrames::new(sc, w, h);
    let mut buf = seq.buffer();
    let mut enc = Encoder::new();
    seq.render(0, &mut buf);
    let first = Frame::new(&buf, g, pitch).expect("scenario frames fit");
    enc.encode(consent, &first, true).expect("consent is live");
    drop(first);
    let mut row = Row {
        name: sc.name(),
        frames,
        encode: Vec::new(),
        bytes: Vec::new(),
        rects: Vec::new(),
        unchanged: Vec::new(),
        probed: Duration::ZERO,
    };
    for i in 1..=frames {
        seq.render(i, &mut buf);
        let frame = Frame::new(&buf, g, pitch).expect("scenario frames fit");
        let t = Instant::now();
        let update = enc.encode(consent, &frame, false).expect("consent is live");
        row.encode.push(t.elapsed());
        let update = update.expect("every scenario frame changes the screen");
        row.rects.push(update.stats.rects);
        row.bytes.push(wire_bytes(update));
        let t = Instant::now();
        let again = enc.encode(consent, &frame, false).expect("consent is live");
        row.unchanged.push(t.elapsed());
        assert!(
            again.is_none(),
            "{sc}: an unchanged frame produced an update"
        );
    }
    // Sparse probing on the last frame: the mean over whole cycles of
    // probes and full compares.
    let frame = Frame::new(&buf, g, pitch).expect("scenario frames fit");
    let mut probing = Encoder::with_probing(Probing::default());
    probing
        .encode(consent, &frame, true)
        .expect("consent is live");
    // Median over cycles (a cycle: `full_every` checks, one of them full),
    // so a preemption does not dominate the mean.
    let cycle = Probing::default().full_every;
    let cycles: Vec<Duration> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..cycle {
                let u = probing
                    .encode(consent, &frame, false)
                    .expect("consent is live");
                assert!(black_box(u).is_none());
            }
            t.elapsed()
        })
        .collect();
    row.probed = median(&cycles) / cycle;
    row
}

fn memcmp_time(w: u32, h: u32) -> Duration {
    let seq = ScenarioFrames::new(Scenario::Menu, w, h);
    let mut a = seq.buffer();
    seq.render(0, &mut a);
    let b = a.clone();
    let times: Vec<Duration> = (0..REPEATS)
        .map(|_| {
            let t = Instant::now();
            let eq = black_box(&a[..]) == black_box(&b[..]);
            let d = t.elapsed();
            assert!(black_box(eq));
            d
        })
        .collect();
    median(&times)
}

/// The first frame of the menu scenario, XRGB8888 with packed rows.
fn menu_screen(w: u32, h: u32) -> (ScreenGeometry, Vec<u8>) {
    let g = ScreenGeometry {
        width: w,
        height: h,
        format: PixelFormat::Xrgb8888,
    };
    let seq = ScenarioFrames::new(Scenario::Menu, w, h);
    let mut buf = seq.buffer();
    seq.render(0, &mut buf);
    (g, buf)
}

/// The view self-check at this size: the expert's report (a hash per band
/// of its framebuffer), the device's comparison of it with its shadow, and
/// the update that repairs one wrong band. Medians of [`REPEATS`].
fn view_check_times(consent: &ViewConsent, w: u32, h: u32) -> (Duration, Duration, Duration) {
    let (g, buf) = menu_screen(w, h);
    let frame = Frame::new(&buf, g, w as usize * 4).expect("scenario frames fit");
    let mut enc = Encoder::new();
    let first = enc
        .encode(consent, &frame, true)
        .expect("consent is live")
        .expect("a first update");
    let info = first.screen.expect("the first update has screen info");
    let mut fb = shoulder_proto::fb::Framebuffer::new(&info).expect("a valid size");
    let mut last_seq = first.parts.last().map_or(0, |p| p.seq);
    for p in &first.parts {
        fb.apply(p).expect("own updates apply");
    }
    let mut report_t = Vec::new();
    let mut check_t = Vec::new();
    let mut repair_t = Vec::new();
    for _ in 0..REPEATS {
        let t = Instant::now();
        let report = black_box(fb.view_report(info.generation, last_seq));
        report_t.push(t.elapsed());
        let t = Instant::now();
        let c = enc.check_view(&report);
        check_t.push(t.elapsed());
        assert_eq!(c.differing, 0, "a view equal to the screen differs");
        // One band wrong: compare, then the update that repairs it.
        let mut wrong = report.clone();
        wrong.hashes[0] ^= 1;
        let t = Instant::now();
        assert_eq!(enc.check_view(&wrong).differing, 1);
        let u = enc.encode(consent, &frame, false).expect("consent is live");
        repair_t.push(t.elapsed());
        let u = black_box(u).expect("the wrong band is sent again");
        for p in &u.parts {
            fb.apply(p).expect("own updates apply");
            last_seq = p.seq;
        }
    }
    (median(&report_t), median(&check_t), median(&repair_t))
}

/// A sideways panel: the same buffer read upright at each rotation (rows
/// gathered from the buffer as they are read). Medians of [`REPEATS`]: the
/// first (full) update, a check of an unchanged frame, and an update for one
/// changed pixel.
fn rotation_times(consent: &ViewConsent, w: u32, h: u32) -> Vec<(Rotation, [Duration; 3])> {
    let (g, buf) = menu_screen(w, h);
    Rotation::ALL
        .into_iter()
        .map(|r| {
            let (mut full, mut same, mut one) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..REPEATS {
                let mut enc = Encoder::new();
                let frame = Frame::new(&buf, g, w as usize * 4)
                    .expect("fits")
                    .rotated(r);
                let t = Instant::now();
                black_box(enc.encode(consent, &frame, false).expect("live"));
                full.push(t.elapsed());
                let t = Instant::now();
                assert!(black_box(enc.encode(consent, &frame, false).expect("live")).is_none());
                same.push(t.elapsed());
                let mut changed = buf.clone();
                let at = (i * 4096) % changed.len();
                changed[at] ^= 0x5a;
                let frame = Frame::new(&changed, g, w as usize * 4)
                    .expect("fits")
                    .rotated(r);
                let t = Instant::now();
                assert!(black_box(enc.encode(consent, &frame, false).expect("live")).is_some());
                one.push(t.elapsed());
            }
            (r, [median(&full), median(&same), median(&one)])
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let (w, h) = if bench { (1920, 1080) } else { (320, 180) };
    let (_pair, consent) = shoulder_proto::testing::granted_view();

    let memcmp = memcmp_time(w, h);
    let mut rows = Vec::new();
    for sc in Scenario::ALL {
        if !filters.is_empty() && !filters.iter().any(|f| sc.name().contains(f.as_str())) {
            continue;
        }
        let frames = match (bench, sc) {
            (false, _) => 2,
            (true, Scenario::Noise) => NOISE_FRAMES,
            (true, _) => FRAMES,
        };
        rows.push(run(&consent, sc, w, h, frames));
    }

    println!("\nshoulder-capture encoder, {w}×{h} XRGB8888, one core");
    println!(
        "memcmp of one frame: {} ms (median of {REPEATS})\n",
        ms(memcmp)
    );
    println!(
        "| scenario | frames | encode median ms | encode p95 ms | encode max ms | bytes/frame mean | bytes/frame max | rects/frame mean | unchanged check median ms | unchanged / memcmp | unchanged, probing ms (mean of a cycle) | probing / memcmp |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let n = r.frames.max(1);
        let unchanged = median(&r.unchanged);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {:.2} | {} | {:.2} |",
            r.name,
            r.frames,
            ms(median(&r.encode)),
            ms(p95(&r.encode)),
            ms(*r.encode.iter().max().unwrap_or(&Duration::ZERO)),
            r.bytes.iter().sum::<usize>() / n,
            r.bytes.iter().max().unwrap_or(&0),
            r.rects.iter().sum::<usize>() as f64 / n as f64,
            ms(unchanged),
            unchanged.as_secs_f64() / memcmp.as_secs_f64().max(1e-9),
            ms(r.probed),
            r.probed.as_secs_f64() / memcmp.as_secs_f64().max(1e-9),
        );
    }

    let (report, check, repair) = view_check_times(&consent, w, h);
    println!("\nview self-check at {w}×{h} (median of {REPEATS}):\n");
    println!(
        "| expert: report (hash per band) ms | device: compare with shadow ms | device: compare + encode one wrong band ms |"
    );
    println!("|---:|---:|---:|");
    println!("| {} | {} | {} |", ms(report), ms(check), ms(repair));

    println!("\nrotated panels at {w}×{h}, menu screen (median of {REPEATS}):\n");
    println!("| rotation | first (full) update ms | unchanged check ms | one changed pixel ms |");
    println!("|---:|---:|---:|---:|");
    for (r, [full, same, one]) in rotation_times(&consent, w, h) {
        println!("| {r} | {} | {} | {} |", ms(full), ms(same), ms(one));
    }
}
