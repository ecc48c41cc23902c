//! Slow links: a screen switch on the simulated network (real TLS, real
//! session machines, the real encoder and link estimate, virtual time) at
//! 256 kbit/s, 2 Mbit/s and 20 Mbit/s with a 50 ms round trip, exact pixels
//! only and with lossy rectangles: how long after the switch the expert's
//! view is a usable picture of the new screen (`netsim::usable`: mean error
//! at most 3 of 255 per channel, at most 1 % of pixels off by more than 48)
//! and how long until it is exact; bytes sent from the switch on.
//!
//! The screens are rendered by real programs: frame directories of
//! `scripts/real-content/render` (1920x1080 XRGB8888, `NNNN.xrgb`); each
//! directory's first frame is shown, then its second.
//!
//! ```text
//! cargo run --release -p shoulder-tests --bin slow_links -- \
//!     target/real-content/page-switch target/real-content/photos
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoulder_capture::scenarios::Scenario as Screen;
use shoulder_testkit::netsim::{Frames, LinkConfig, Scenario, run};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
/// The first screen is up this long before the switch: long enough for
/// the session to start and the first screen to be exact at 20 Mbit/s,
/// and for the link estimate to have seen updates at every speed.
const SWITCH_AT: Duration = Duration::from_secs(60);

fn load(dir: &Path) -> Result<Frames, String> {
    let names = shoulder_capture::rawfile::frame_files(dir, (WIDTH, HEIGHT))?;
    if names.len() < 2 {
        return Err(format!(
            "{} has fewer than two .xrgb frames (make them with scripts/real-content/render)",
            dir.display()
        ));
    }
    let mut frames = Vec::new();
    for p in &names[..2] {
        frames.push(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?);
    }
    Ok(Frames {
        width: WIDTH,
        height: HEIGHT,
        frames,
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn main() {
    let dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() || dirs.iter().any(|d| d.starts_with('-')) {
        eprintln!("usage: slow_links FRAME_DIR...   (see the source's header)");
        std::process::exit(2);
    }
    println!(
        "| screens | link | mode | usable after | exact after | KB after the switch | JPEG rects | estimate |"
    );
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for dir in &dirs {
        let frames = match load(Path::new(dir)) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                eprintln!("slow_links: {e}");
                std::process::exit(1);
            }
        };
        let name = Path::new(dir)
            .file_name()
            .map_or(dir.clone(), |n| n.to_string_lossy().into_owned());
        for (bps, label, tail) in [
            (256_000u64, "256 kbit/s", 240u64),
            (2_000_000, "2 Mbit/s", 60),
            (20_000_000, "20 Mbit/s", 20),
        ] {
            for lossy in [false, true] {
                let link = LinkConfig {
                    delay: Duration::from_millis(25),
                    bandwidth_bps: Some(bps),
                    ..LinkConfig::default()
                };
                let started = Instant::now();
                let r = run(&Scenario {
                    name: "slow link",
                    link,
                    outage: None,
                    duration: SWITCH_AT + Duration::from_secs(tail),
                    screen_period: SWITCH_AT,
                    screen: Screen::Clock,
                    frames: Some(frames.clone()),
                    lossy,
                    resume: false,
                    seed: 7,
                });
                let after = r
                    .bytes_to_expert
                    .saturating_sub(r.bytes_to_expert_at_last_change);
                println!(
                    "| {name} | {label} | {} | {} | {} | {:.1} | {} | {} |",
                    if lossy { "lossy" } else { "exact only" },
                    secs(r.usable_after_last_change),
                    secs(r.exact_after_last_change),
                    after as f64 / 1000.0,
                    r.jpeg_rects,
                    r.estimated_bps
                        .map_or("—".into(), |b| format!("{:.2} Mbit/s", b as f64 / 1e6)),
                );
                eprintln!(
                    "slow_links: {name} {label} lossy={lossy}: {:.0} s; ended {:?}",
                    started.elapsed().as_secs_f64(),
                    r.ended
                );
            }
        }
    }
}
