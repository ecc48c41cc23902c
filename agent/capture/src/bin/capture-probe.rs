//! capture-probe: check a capture source on a device, and play test frames.
//!
//! ```text
//! capture-probe show SOURCE [-o FILE.ppm]
//!     Opens SOURCE (drm, drm:/dev/dri/card0@HDMI-A-1, fbdev:/dev/fb0,
//!     rawfile:PATH@WxH:FORMAT, synthetic:WxH), prints what it shows (size,
//!     format, cursor) and writes one frame as a PPM picture.
//! capture-probe watch SOURCE [--count N] [--interval-ms MS]
//!     Captures N times (default 20, every 100 ms) and prints per capture the
//!     time it took, the frame hash (xxh3-64 of XRGB8888 rows with the X byte
//!     zero, the `fb_hash` of `shoulder watch --stats-json`) and whether it
//!     changed: shows that page flips and single-buffer drawing are both seen.
//! capture-probe looks SOURCE [--count N] [--interval-ms MS]
//!     Captures once, then asks N times (default 1000, every 4 ms) which
//!     buffer is on screen without capturing, as an idle session does
//!     between its polls (DRM: one GETCRTC), and prints what a look costs
//!     (median, p99, max) and how many page flips the looks saw.
//! capture-probe play SCENARIO FILE [--size WxH] [--fps F] [--count N]
//!     Writes the frames of a benchmark scenario (menu, typing, scroll, clock,
//!     page-switch, noise) into FILE in place, XRGB8888, one JSON line per
//!     frame on stdout: {"frame":i,"t_mono_us":T,"fb_hash":"…"} with T the
//!     CLOCK_MONOTONIC time right after the frame was written. Capture the
//!     file with rawfile:FILE@WxH:XRGB8888 and match hashes to measure latency.
//! capture-probe play dir:DIR FILE [--size WxH] [--fps F] [--count N]
//!     The same with recorded frames: the files `*.xrgb` of DIR in name order
//!     (raw XRGB8888 of --size, no padding; the X byte is written as zero),
//!     each played once unless --count asks for more (then from the start
//!     again). Each file is read before its frame is due.
//! ```

use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shoulder_capture::rawfile::frame_files;
use shoulder_capture::scenarios::ScenarioFrames;
use shoulder_capture::{Frame, FrameSource, SourceSpec};
use xxhash_rust::xxh3::xxh3_64;

/// Most captures `watch` makes, so a typo cannot make it run for ever.
const MAX_COUNT: u64 = 1_000_000;

fn usage() -> String {
    "usage:\n  capture-probe show SOURCE [-o FILE.ppm]\n  capture-probe watch SOURCE [--count N] [--interval-ms MS]\n  capture-probe looks SOURCE [--count N] [--interval-ms MS]\n  capture-probe play SCENARIO|dir:DIR FILE [--size WxH] [--fps F] [--count N]\n\
     SOURCE: drm[:DEVICE[@CONNECTOR]] | fbdev[:DEVICE] | rawfile:PATH@WxH:FORMAT | synthetic[:WxH]\n\
     SCENARIO: menu | typing | scroll | clock | page-switch | noise"
        .into()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capture-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Value of option `name` in `args`, parsed.
fn opt<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let v = args
                .get(i + 1)
                .ok_or_else(|| format!("{name} needs a value"))?;
            v.parse()
                .map(Some)
                .map_err(|_| format!("{name} {v:?} is not valid"))
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("show") => {
            let spec = source_arg(args)?;
            let out: PathBuf = opt(args, "-o")?.unwrap_or_else(|| PathBuf::from("capture.ppm"));
            show(&spec, &out)
        }
        Some("watch") => {
            let spec = source_arg(args)?;
            let count: u64 = opt(args, "--count")?.unwrap_or(20).min(MAX_COUNT);
            let interval: u64 = opt(args, "--interval-ms")?.unwrap_or(100);
            watch(&spec, count, Duration::from_millis(interval))
        }
        Some("looks") => {
            let spec = source_arg(args)?;
            let count: u64 = opt(args, "--count")?.unwrap_or(1000).clamp(1, MAX_COUNT);
            let interval: u64 = opt(args, "--interval-ms")?.unwrap_or(4);
            looks(&spec, count, Duration::from_millis(interval))
        }
        Some("play") => {
            let what = args.get(1).ok_or_else(usage)?;
            let file = PathBuf::from(args.get(2).ok_or_else(usage)?);
            let size: String = opt(args, "--size")?.unwrap_or_else(|| "1920x1080".into());
            let (w, h) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .filter(|&(w, h)| (1..=8192).contains(&w) && (1..=8192).contains(&h))
                .ok_or_else(|| format!("--size {size:?} is not WxH, e.g. 1920x1080"))?;
            let fps: f64 = opt(args, "--fps")?.unwrap_or(10.0);
            if !(fps > 0.0 && fps <= 1000.0) {
                return Err(format!("--fps {fps} must be between 0 and 1000"));
            }
            let count: Option<u64> = opt(args, "--count")?;
            let frames = match what.strip_prefix("dir:") {
                Some(dir) => PlayFrames::Dir(frame_files(std::path::Path::new(dir), (w, h))?),
                None => PlayFrames::Scenario(ScenarioFrames::new(what.parse()?, w, h)),
            };
            let count = match (&frames, count) {
                (_, Some(n)) => n,
                (PlayFrames::Dir(files), None) => files.len() as u64,
                (PlayFrames::Scenario(_), None) => 100,
            };
            play(&frames, &file, (w, h), fps, count.min(MAX_COUNT))
        }
        _ => Err(usage()),
    }
}

fn source_arg(args: &[String]) -> Result<SourceSpec, String> {
    let s = args.get(1).ok_or_else(usage)?;
    s.parse().map_err(|e| format!("{e}"))
}

fn open(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, String> {
    shoulder_capture::open(spec).map_err(|e| e.to_string())
}

fn show(spec: &SourceSpec, out: &PathBuf) -> Result<(), String> {
    let mut source = open(spec)?;
    let describe = source.describe();
    let t = Instant::now();
    let frame = source.capture().map_err(|e| e.to_string())?;
    let took = t.elapsed();
    let xrgb = frame.to_xrgb8888();
    let (w, h) = (frame.width(), frame.height());
    println!("source:   {describe}");
    println!(
        "screen:   {w}×{h} {} pitch {} bytes",
        frame.format(),
        frame.pitch()
    );
    println!("capture:  {:.3} ms", took.as_secs_f64() * 1e3);
    println!("fb_hash:  {:016x}", xxh3_64(&xrgb));
    drop(frame);
    match source.cursor() {
        Ok(None) => println!("cursor:   none (no cursor plane)"),
        Ok(Some(c)) => {
            if let Some(p) = c.position {
                println!("cursor:   at {},{} visible {}", p.x, p.y, p.visible);
            }
            if let Some(s) = &c.shape {
                println!(
                    "cursor:   image {}×{} hot spot {},{}",
                    s.width, s.height, s.hot_x, s.hot_y
                );
            }
        }
        Err(e) => println!("cursor:   {e}"),
    }
    let mut ppm = format!("P6\n{w} {h}\n255\n").into_bytes();
    ppm.reserve(xrgb.len() / 4 * 3);
    for px in xrgb.chunks_exact(4) {
        ppm.extend_from_slice(&[px[2], px[1], px[0]]);
    }
    std::fs::write(out, ppm).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("picture:  {}", out.display());
    Ok(())
}

fn watch(spec: &SourceSpec, count: u64, interval: Duration) -> Result<(), String> {
    let mut source = open(spec)?;
    println!("source: {}", source.describe());
    let mut last: Option<u64> = None;
    for i in 0..count {
        let t = Instant::now();
        match source.capture() {
            Ok(frame) => {
                let took = t.elapsed();
                let hash = xxh3_64(&frame.to_xrgb8888());
                println!(
                    "{i:>4}  {}  {:.3} ms  {:016x}  {}",
                    frame.geometry(),
                    took.as_secs_f64() * 1e3,
                    hash,
                    match last {
                        None => "first",
                        Some(h) if h != hash => "changed",
                        _ => "same",
                    }
                );
                last = Some(hash);
            }
            Err(e) => println!(
                "{i:>4}  {e}{}",
                if e.is_transient() { " (waiting)" } else { "" }
            ),
        }
        std::thread::sleep(interval);
    }
    Ok(())
}

fn looks(spec: &SourceSpec, count: u64, interval: Duration) -> Result<(), String> {
    let mut source = open(spec)?;
    // The first capture chooses what to show (DRM: the CRTC).
    let first = source.capture().map_err(|e| e.to_string())?.buffer();
    let describe = source.describe();
    let first = first.ok_or_else(|| {
        format!("{describe} does not name its buffers: an idle session polls it (no looks)")
    })?;
    println!("source: {describe}");
    let mut took = Vec::with_capacity(count as usize);
    let (mut last, mut flips, mut unknown) = (first, 0u64, 0u64);
    for _ in 0..count {
        let t = Instant::now();
        let on_screen = source.buffer_on_screen();
        took.push(t.elapsed());
        match on_screen {
            Some(id) if id != last => {
                flips += 1;
                last = id;
            }
            Some(_) => {}
            None => unknown += 1,
        }
        std::thread::sleep(interval);
    }
    took.sort_unstable();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "looks: {count} every {} ms, median {:.1} us, p99 {:.1} us, max {:.1} us; \
         buffer changes seen: {flips}; not told: {unknown}",
        interval.as_millis(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}

fn mono_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1_000
}

/// What `play` writes: a benchmark scenario, or recorded frames.
enum PlayFrames {
    Scenario(ScenarioFrames),
    /// The `*.xrgb` files of a directory, in name order.
    Dir(Vec<PathBuf>),
}

impl PlayFrames {
    /// Puts frame `i` into `px` (width × height × 4 bytes).
    fn fill(&self, i: u64, px: &mut [u8]) -> Result<(), String> {
        match self {
            PlayFrames::Scenario(seq) => {
                seq.render(i as usize, px);
                Ok(())
            }
            PlayFrames::Dir(files) => {
                let path = &files[(i % files.len() as u64) as usize];
                let data = std::fs::read(path)
                    .map_err(|e| format!("cannot read frame {}: {e}", path.display()))?;
                if data.len() != px.len() {
                    return Err(format!(
                        "frame {} has {} bytes, not {} (width × height × 4 of --size): \
                         render the frames at that size or pass the right --size",
                        path.display(),
                        data.len(),
                        px.len()
                    ));
                }
                px.copy_from_slice(&data);
                // The X byte is padding: zero, as the expert's fb_hash counts it.
                for p in px.chunks_exact_mut(4) {
                    p[3] = 0;
                }
                Ok(())
            }
        }
    }
}

fn play(
    frames: &PlayFrames,
    path: &PathBuf,
    (w, h): (u32, u32),
    fps: f64,
    count: u64,
) -> Result<(), String> {
    let mut px = vec![0u8; w as usize * h as usize * 4];
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.set_len(px.len() as u64)
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    let period = Duration::from_secs_f64(1.0 / fps);
    let start = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for i in 0..count {
        frames.fill(i, &mut px)?;
        let due = start + period * u32::try_from(i).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        file.write_all_at(&px, 0)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let t = mono_us();
        let line = format!(
            "{{\"frame\":{i},\"t_mono_us\":{t},\"fb_hash\":\"{:016x}\"}}",
            xxh3_64(&px)
        );
        writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
    }
    // Keep the check of the frames honest: every frame was a valid frame.
    let g = shoulder_capture::ScreenGeometry {
        width: w,
        height: h,
        format: shoulder_capture::PixelFormat::Xrgb8888,
    };
    Frame::new(&px, g, w as usize * 4).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_dir_is_checked() {
        let dir = std::env::temp_dir().join(format!("capture-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = frame_files(&dir, (2, 2)).unwrap_err();
        assert!(err.contains("no *.xrgb files"), "{err}");
        std::fs::write(dir.join("0001.xrgb"), [7u8; 16]).unwrap();
        std::fs::write(dir.join("0000.xrgb"), [9u8; 16]).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a frame").unwrap();
        let files = frame_files(&dir, (2, 2)).unwrap();
        assert_eq!(files.len(), 2);
        assert!(files[0].ends_with("0000.xrgb"));
        let frames = PlayFrames::Dir(files);
        let mut px = [0u8; 16];
        frames.fill(1, &mut px).unwrap();
        assert_eq!(px, [7, 7, 7, 0, 7, 7, 7, 0, 7, 7, 7, 0, 7, 7, 7, 0]);
        frames.fill(2, &mut px).unwrap();
        assert_eq!(px[0], 9);
        std::fs::write(dir.join("0002.xrgb"), [1u8; 15]).unwrap();
        let err = frame_files(&dir, (2, 2)).unwrap_err();
        assert!(err.contains("has 15 bytes, not 16"), "{err}");
        let err = frame_files(&dir.join("missing"), (2, 2)).unwrap_err();
        assert!(err.contains("cannot list the frame directory"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
