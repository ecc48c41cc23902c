//! Soak run: whole sessions back to back over the simulated network with
//! faults injected (loss, reordering, outages, corruption), for N minutes of
//! wall-clock time. Reports sessions, reconnects, bytes and the process's
//! resident memory over time.
//!
//! ```text
//! cargo run --release -p shoulder-tests --bin soak -- --minutes 30
//! ```

use std::time::{Duration, Instant};

use shoulder_capture::scenarios::Scenario as Screen;
use shoulder_testkit::netsim::{LinkConfig, Scenario, run};
use shoulder_testkit::run_args::RunArgs;

fn rss_kib() -> u64 {
    // /proc/self/statm: size resident shared ... in pages.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn usage() -> ! {
    eprintln!("usage: soak [--minutes N] [--seed S]   (N may be fractional, e.g. 0.5)");
    std::process::exit(2);
}

fn main() {
    let defaults = RunArgs {
        minutes: 2.0,
        seed: 1,
    };
    let RunArgs { minutes, seed } =
        RunArgs::parse(std::env::args().skip(1), defaults, true).unwrap_or_else(|| usage());
    let budget = Duration::from_secs_f64(minutes * 60.0);
    let start = Instant::now();
    let mut sessions = 0u64;
    let mut survived = 0u64;
    let mut ended_by_fault = 0u64;
    let mut bytes = 0u64;
    let mut updates = 0u64;
    let mut virtual_secs = 0u64;
    let mut corrupt = 0u64;
    let mut resumes = 0u64;
    let mut rss_samples = vec![(0u64, rss_kib())];
    let mut next_sample = Duration::from_secs(10);
    println!("soak: {minutes} min, seed {seed}");
    while start.elapsed() < budget {
        let n = sessions;
        let s = seed.wrapping_mul(6364136223846793005).wrapping_add(n);
        // A different fault mix for each session.
        let link = LinkConfig {
            loss_pct: (s % 6) as u8,
            delay: Duration::from_millis(1 + s % 80),
            jitter: Duration::from_millis(s % 20),
            duplicate_pct: (s % 3) as u8,
            bandwidth_bps: if s.is_multiple_of(4) {
                Some(512_000)
            } else {
                None
            },
            corrupt_pct: if s.is_multiple_of(7) { 1 } else { 0 },
            verify_checksums: !s.is_multiple_of(7),
        };
        let scenario = Scenario {
            name: "soak",
            link,
            outage: s
                .is_multiple_of(5)
                .then_some((Duration::from_secs(5), Duration::from_secs(8))),
            duration: Duration::from_secs(30),
            screen_period: Duration::from_millis(100),
            screen: if s.is_multiple_of(3) {
                Screen::Scroll
            } else {
                Screen::Typing
            },
            frames: None,
            lossy: false,
            resume: s.is_multiple_of(2),
            seed: s,
        };
        let r = run(&scenario);
        sessions += 1;
        virtual_secs += 30;
        bytes += r.bytes_to_expert + r.bytes_to_device;
        updates += r.updates_applied;
        corrupt += r.corrupt_views + r.apply_errors;
        resumes += r.resumes;
        if r.survived {
            survived += 1;
        } else {
            // The next session is the reconnect.
            ended_by_fault += 1;
        }
        if start.elapsed() >= next_sample {
            next_sample += Duration::from_secs(10);
            rss_samples.push((start.elapsed().as_secs(), rss_kib()));
        }
    }
    rss_samples.push((start.elapsed().as_secs(), rss_kib()));
    let max = rss_samples.iter().map(|s| s.1).max().unwrap_or(0);
    let min_after_warmup = rss_samples.iter().skip(1).map(|s| s.1).min().unwrap_or(0);
    println!(
        "soak: {sessions} sessions ({survived} survived their faults, {ended_by_fault} ended and were reconnected with a new session), {resumes} connections resumed without a prompt, {virtual_secs} s simulated, {updates} updates, {} MiB on the wire, {corrupt} corrupt views",
        bytes / (1024 * 1024)
    );
    println!("soak: RSS KiB over time (s, KiB): {rss_samples:?}");
    println!("soak: RSS min after warm-up {min_after_warmup} KiB, max {max} KiB");
    if corrupt > 0 {
        eprintln!("soak: FAILED: corrupt frames reached the view");
        std::process::exit(1);
    }
    // Bounded memory: the last sample is within 16 MiB of the first warm one.
    let last = rss_samples.last().map(|s| s.1).unwrap_or(0);
    if rss_samples.len() > 2 && last > min_after_warmup + 16 * 1024 {
        eprintln!("soak: FAILED: memory grew from {min_after_warmup} KiB to {last} KiB");
        std::process::exit(1);
    }
}
