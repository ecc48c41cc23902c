//! Session records, measured: what recording the screen costs the live
//! session (screen updates the expert gets a second, CPU of the whole
//! process), how fast the record grows, and how fast `verify` checks it
//! and `play` replays it.
//!
//! The screen is rendered by a real program: a frame directory of
//! `scripts/real-content/render` (1920x1080 XRGB8888, `NNNN.xrgb`), played
//! in a loop into the raw file the agent captures, 30 frames a second.
//! Each run views it for `SECS` seconds with `[record]` off, then with
//! `mode = "screen"`.
//!
//! ```text
//! cargo run --release -p shoulder-tests --bin record_cost -- \
//!     target/real-content/terminal [SECS]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoulder::target::Target;
use shoulder_agent::config::RecordMode;
use shoulder_proto::session::UserAction;
use shoulder_testkit::agent::Agent;
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::synthetic::{Playing, capture_backends, raw_screen, real_content};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
const FPS: u64 = 30;
const PW: &str = "bench-password-1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().filter(|a| !a.starts_with('-')) else {
        eprintln!("usage: record_cost FRAME_DIR [SECS]   (see the source's header)");
        std::process::exit(2);
    };
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let frames = real_content(Path::new(dir), (WIDTH, HEIGHT)).unwrap_or_else(|e| {
        eprintln!("record_cost: {e}");
        std::process::exit(1);
    });
    println!(
        "| record | screen updates/s | CPU (% of one core, whole process) | record MB/min | screen kept |"
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let mut recorded = None;
    for mode in [RecordMode::Off, RecordMode::Screen] {
        let r = run(&frames, mode, Duration::from_secs(secs));
        let mb_min = r.record_bytes as f64 / 1e6 / (r.secs / 60.0);
        println!(
            "| {} | {:.1} | {:.0} | {} | {} |",
            if mode == RecordMode::Off {
                "off"
            } else {
                "screen"
            },
            r.rate,
            r.cpu * 100.0,
            if mode == RecordMode::Off {
                "—".to_string()
            } else {
                format!("{mb_min:.1}")
            },
            r.screen,
        );
        if mode == RecordMode::Screen {
            recorded = r.file;
        }
    }
    if let Some((file, cert, _work)) = recorded {
        check(&file, &cert);
    }
}

struct Run {
    rate: f64,
    cpu: f64,
    secs: f64,
    record_bytes: u64,
    screen: String,
    file: Option<(PathBuf, PathBuf, tempfile::TempDir)>,
}

/// CPU seconds this process has used (user + system).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn run(frames: &[Vec<u8>], mode: RecordMode, time: Duration) -> Run {
    let work = tempfile::tempdir().expect("temp dir");
    let (screen, spec) = raw_screen(&work.path().join("screen.raw"), WIDTH, HEIGHT);
    let playing = Playing::start(screen, frames.to_vec(), FPS);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let records = work.path().join("records");
    let agent = rt.block_on(Agent::with_backends(None, capture_backends(&spec), |c| {
        c.record.mode = mode;
        // Outside the agent's directory, which goes with it.
        c.record.dir = records.clone();
        c.record.max_session_mib = 4096;
        c.record.max_total_mib = 4096;
        c.max_fps = 60;
    }));
    let (_, file) = rt.block_on(agent.invite_file("30m", PW));
    let inv = work.path().join("bench.shoulder");
    std::fs::write(&inv, file).expect("invitation");
    let answers = rt.block_on(agent.answer_prompts(1, true));
    let ex = ClientExpert::start(
        Target::parse(&inv.display().to_string()).expect("target"),
        None,
        Some(PW),
        "Bench",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !viewing(ex.state()) {
        assert!(Instant::now() < deadline, "never viewing: {:?}", ex.state());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (u0, c0, t0) = (ex.updates_applied(), cpu_secs(), Instant::now());
    std::thread::sleep(time);
    let (u1, c1, secs) = (ex.updates_applied(), cpu_secs(), t0.elapsed().as_secs_f64());
    ex.send(UserAction::Disconnect);
    drop(ex);
    drop(playing);
    let cert = work.path().join("device.crt");
    std::fs::copy(agent.config.state_dir.join("device.crt"), &cert).expect("the certificate");
    let records = rt.block_on(async {
        let _ = answers.await;
        agent.stop().await
    });
    let closed = records.iter().find(|r| r["event"] == "record-closed");
    let (record_bytes, screen, file) = match closed {
        Some(c) => (
            c["bytes"].as_u64().unwrap_or(0),
            c["screen"].as_str().unwrap_or("?").to_string(),
            Some((
                PathBuf::from(c["file"].as_str().unwrap_or_default()),
                cert,
                work,
            )),
        ),
        None => (0, "—".into(), None),
    };
    Run {
        rate: (u1 - u0) as f64 / secs,
        cpu: (c1 - c0) / secs,
        secs,
        record_bytes,
        screen,
        file,
    }
}

/// How long `shoulder verify` and the headless replay take on the record.
fn check(file: &Path, cert: &Path) {
    let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let t = Instant::now();
    let verified = shoulder::record::verify_file(file, cert);
    let verify_secs = t.elapsed().as_secs_f64();
    assert!(verified.is_ok(), "{verified:?}");
    let out = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let hash =
        shoulder::record::export(file, out.path(), 1000, &mut std::io::sink()).expect("replay");
    let play_secs = t.elapsed().as_secs_f64();
    println!();
    println!(
        "record of {:.1} MB: verify {:.2} s ({:.0} MB/s), replay with a PNG a second {:.2} s, final screen {}",
        len as f64 / 1e6,
        verify_secs,
        len as f64 / 1e6 / verify_secs,
        play_secs,
        hash.unwrap_or_default()
    );
}
