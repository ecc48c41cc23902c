//! Encoder benchmark on screens made by real programs.
//!
//! `cargo bench -p shoulder-capture --bench real -- DIR...` encodes, per
//! directory, its `*.xrgb` frames in name order (raw 1920×1080 XRGB8888,
//! rows packed, as `scripts/real-content/render` writes them) as one
//! sequence, one core, lz4, deflate per rectangle and one deflate stream, and prints per sequence: encode time per frame
//! (median, p90, max), the client's time to apply the update (median),
//! bytes per frame on the wire (length-prefixed
//! postcard frames, before TLS) and how many were `Copy` rectangles. Every
//! update is applied to a client framebuffer and checked against the frame:
//! a mismatch fails the run. Without directories it looks in
//! `$CARGO_TARGET_DIR/real-content/` (or `target/real-content/`), and when
//! there are none it says so and does nothing (as in `cargo test --benches`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoulder_capture::{Compression, Encoder, Frame, PixelFormat, ScreenGeometry};
use shoulder_proto::fb::Framebuffer;

const W: u32 = 1920;
const H: u32 = 1080;

/// The sequence's frames: at least two of 1920×1080.
fn frames_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let v = shoulder_capture::rawfile::frame_files(dir, (W, H))?;
    if v.len() < 2 {
        return Err(format!(
            "{} has {} .xrgb frames; a sequence needs at least 2",
            dir.display(),
            v.len()
        ));
    }
    Ok(v)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn pct<T: Copy + Ord>(v: &[T], p: usize) -> T {
    let mut s = v.to_vec();
    s.sort();
    s[(s.len() * p / 100).min(s.len() - 1)]
}

fn run(dir: &Path, compression: Compression, threads: bool) -> Result<String, String> {
    let files = frames_in(dir)?;
    let g = ScreenGeometry {
        width: W,
        height: H,
        format: PixelFormat::Xrgb8888,
    };
    let (_pair, consent) = shoulder_proto::testing::granted_view();
    let mut enc = Encoder::new();
    enc.set_compression(compression);
    enc.set_threads(threads);
    let mut fb: Option<Framebuffer> = None;
    let (mut times, mut bytes, mut copies) = (Vec::new(), Vec::new(), 0usize);
    let mut apply_times = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let buf = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let frame = Frame::new(&buf, g, W as usize * 4).map_err(|e| {
            format!(
                "{}: not a {W}×{H} XRGB8888 frame ({} bytes): {e}",
                f.display(),
                buf.len()
            )
        })?;
        let t = Instant::now();
        let update = enc
            .encode(&consent, &frame, i == 0)
            .map_err(|e| e.to_string())?;
        let took = t.elapsed();
        let Some(update) = update else {
            continue;
        };
        if let Some(info) = &update.screen {
            fb = Some(Framebuffer::new(info).map_err(|e| e.to_string())?);
        }
        let fbm = fb.as_mut().ok_or("an update came before the screen info")?;
        let t = Instant::now();
        for p in &update.parts {
            fbm.apply(p).map_err(|e| format!("{}: {e}", f.display()))?;
        }
        let applied = t.elapsed();
        if fbm.normalized() != frame.to_xrgb8888() {
            return Err(format!(
                "{}: the client's view differs from the frame",
                f.display()
            ));
        }
        if i > 0 {
            if std::env::var_os("REAL_DEBUG").is_some() {
                eprintln!("{}: {:?}", f.display(), update.stats);
            }
            times.push(took);
            apply_times.push(applied);
            copies += update.stats.copy;
            bytes.push(
                update
                    .into_messages()
                    .map(|m| shoulder_proto::frame::encode(&m).map_or(0, |f| f.len()))
                    .sum::<usize>(),
            );
        }
    }
    if times.is_empty() {
        return Err(format!("{}: no frame changed the screen", dir.display()));
    }
    let n = times.len();
    Ok(format!(
        "| {} | {}{} | {n} | {} | {} | {} | {:.1} | {:.1} | {copies} | {} |",
        dir.file_name()
            .map_or_else(|| dir.display().to_string(), |s| s.to_string_lossy().into()),
        match compression {
            Compression::Lz4 => "lz4",
            Compression::Deflate => "deflate",
            Compression::DeflateStream => "deflate stream",
        },
        if threads { ", 2 threads" } else { "" },
        ms(pct(&times, 50)),
        ms(pct(&times, 90)),
        ms(*times.iter().max().unwrap_or(&Duration::ZERO)),
        bytes.iter().sum::<usize>() as f64 / n as f64 / 1024.0,
        *bytes.iter().max().unwrap_or(&0) as f64 / 1024.0,
        ms(pct(&apply_times, 50)),
    ))
}

fn main() {
    let mut dirs: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    if dirs.is_empty() {
        let root = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from("target"), PathBuf::from)
            .join("real-content");
        if let Ok(rd) = std::fs::read_dir(&root) {
            dirs = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            dirs.sort();
        }
        if dirs.is_empty() {
            println!(
                "no frame directories given and none in {} (make them with scripts/real-content/render)",
                root.display()
            );
            return;
        }
    }
    println!(
        "\nshoulder-capture encoder on real content, {W}×{H} XRGB8888, one core (\", 2 threads\": large updates' tile streams made on a second thread)\n"
    );
    println!(
        "| sequence | compression | changed frames | encode median ms | p90 ms | max ms | KB/frame mean | KB/frame max | copies | client apply median ms |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failed = false;
    for d in &dirs {
        for (c, threads) in [
            (Compression::Lz4, false),
            (Compression::Deflate, false),
            (Compression::Deflate, true),
            (Compression::DeflateStream, false),
            (Compression::DeflateStream, true),
        ] {
            match run(d, c, threads) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("real: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
