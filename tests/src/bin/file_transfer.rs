//! Files with consent, measured: throughput of `get` and `put` over TLS on
//! loopback through the real agent and client library, and how many
//! screen updates the expert still gets while a transfer runs, with a
//! screen that changes 30 times a second.
//!
//! The screen is rendered by a real program: a frame directory of
//! `scripts/real-content/render` (1920x1080 XRGB8888, `NNNN.xrgb`), played
//! in a loop into the raw file the agent captures.
//!
//! ```text
//! cargo run --release -p shoulder-tests --bin file_transfer -- \
//!     target/real-content/terminal [MIB]
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use shoulder::client::files::{Download, Step, Upload};
use shoulder::target::Target;
use shoulder_proto::session::UserAction;
use shoulder_testkit::agent::Agent;
use shoulder_testkit::expert::{ClientExpert, viewing};
use shoulder_testkit::synthetic::{Playing, capture_backends, raw_screen, real_content};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;
/// Frames a second the screen plays at.
const FPS: u64 = 30;
/// How long the update rate is measured without a transfer.
const BASELINE: Duration = Duration::from_secs(5);
const PW: &str = "bench-password-1";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first().filter(|a| !a.starts_with('-')) else {
        eprintln!("usage: file_transfer FRAME_DIR [MIB]   (see the source's header)");
        std::process::exit(2);
    };
    let mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let frames = real_content(Path::new(dir), (WIDTH, HEIGHT)).unwrap_or_else(|e| {
        eprintln!("file_transfer: {e}");
        std::process::exit(1);
    });
    let work = tempfile::tempdir().expect("temp dir");
    for d in ["logs", "incoming", "local"] {
        std::fs::create_dir_all(work.path().join(d)).expect("dirs");
    }
    let (screen, spec) = raw_screen(&work.path().join("screen.raw"), WIDTH, HEIGHT);
    let playing = Playing::start(screen, frames, FPS);
    let body: Vec<u8> = (0..mib * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(work.path().join("logs/big.bin"), &body).expect("file");
    std::fs::write(work.path().join("local/up.bin"), &body).expect("file");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (logs, incoming) = (work.path().join("logs"), work.path().join("incoming"));
    let agent = rt.block_on(Agent::with_backends(None, capture_backends(&spec), |c| {
        c.files.readable = vec![logs];
        c.files.drop = incoming;
        c.files.keep_free_mib = 0;
        c.files.max_size_mib = 4096;
        c.max_fps = 60;
    }));
    let (_, file) = rt.block_on(agent.invite_file("30m", PW));
    let inv = work.path().join("bench.shoulder");
    std::fs::write(&inv, file).expect("invitation");
    let answers = rt.block_on(agent.answer_prompts(3, true));
    let target = Target::parse(&inv.display().to_string()).expect("target");
    let ex = ClientExpert::start(target, None, Some(PW), "Bench");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !viewing(ex.state()) {
        assert!(Instant::now() < deadline, "never viewing: {:?}", ex.state());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));

    let before = ex.updates_applied();
    std::thread::sleep(BASELINE);
    let idle_rate = (ex.updates_applied() - before) as f64 / BASELINE.as_secs_f64();

    let out = work.path().join("local/down.bin");
    let (mut down, first) = Download::start(
        1,
        &work.path().join("logs/big.bin").display().to_string(),
        &out,
    )
    .expect("download");
    let get = run(&ex, first, |m| down.on(m));
    assert!(
        std::fs::read(&out).expect("downloaded") == body,
        "the copy differs"
    );

    let (mut up, first) = Upload::start(2, &work.path().join("local/up.bin")).expect("upload");
    let put = run(&ex, first, |m| up.on(m));
    assert!(
        std::fs::read(work.path().join("incoming/up.bin")).expect("sent") == body,
        "the sent file differs"
    );

    println!(
        "| transfer | MiB | seconds | MiB/s | screen updates/s during (without: {idle_rate:.1}) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, (secs, rate)) in [
        ("get (device → expert)", get),
        ("put (expert → device)", put),
    ] {
        println!(
            "| {name} | {mib} | {secs:.2} | {:.1} | {rate:.1} |",
            mib as f64 / secs
        );
    }
    ex.send(UserAction::Disconnect);
    drop(ex);
    drop(playing);
    rt.block_on(async {
        let _ = answers.await;
        agent.stop().await;
    });
}

/// Sends `first`, feeds the device's file steps to `on` and sends what it
/// answers, until the transfer finishes; the seconds from the device's
/// yes to the end, and screen updates a second meanwhile.
fn run(
    ex: &ClientExpert,
    first: UserAction,
    mut on: impl FnMut(&shoulder_proto::files::FileMsg) -> Step,
) -> (f64, f64) {
    let (_, mut seen) = ex.file_steps(0);
    ex.send(first);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut started: Option<(Instant, usize)> = None;
    loop {
        assert!(Instant::now() < deadline, "the transfer did not finish");
        let (steps, n) = ex.file_steps(seen);
        seen = n;
        if steps.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for m in steps {
            if started.is_none() && matches!(m, shoulder_proto::files::FileMsg::Accepted { .. }) {
                started = Some((Instant::now(), ex.updates_applied()));
            }
            match on(&m) {
                Step::Go(actions) => actions.into_iter().for_each(|a| ex.send(a)),
                Step::Finished(Ok(_)) => {
                    let (t0, u0) = started.expect("accepted before the end");
                    let secs = t0.elapsed().as_secs_f64();
                    return (secs, (ex.updates_applied() - u0) as f64 / secs);
                }
                Step::Finished(Err(e)) => panic!("transfer failed: {e}"),
                Step::Asking { .. } | Step::Progress { .. } => {}
            }
        }
    }
}
