//! The Windows build of `shoulder` under Wine, against the real agent
//! (in-process, loopback): an invitation snapshot reproduces the device
//! screen pixel for pixel, and a wrong password gets its own sentence and a
//! non-zero exit, as on Linux. `tests/windows/run.sh` builds the
//! .exe, installs Wine and runs this file.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use shoulder_testkit::agent::Agent;
use shoulder_testkit::client_cli::CliExpert;
use shoulder_testkit::picture::{frame_rgb, read_png_rgb};
use shoulder_testkit::synthetic::Synthetic;

const PW: &str = "blue-harbour-42";

/// `shoulder.exe ARGS` under Wine, with its own config directory.
async fn windows(ex: &CliExpert, args: &[&str]) -> Output {
    let exe = PathBuf::from(
        std::env::var_os("SHOULDER_WINDOWS_EXE")
            .expect("SHOULDER_WINDOWS_EXE: run tests/windows/run.sh"),
    );
    let wine = std::env::var_os("SHOULDER_WINE").unwrap_or_else(|| "wine64".into());
    let mut c = Command::new(wine);
    c.arg(exe)
        .args(args)
        .env("SHOULDER_CONFIG_DIR", ex.path("config"))
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || c.output().expect("wine runs"))
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the Windows build and Wine: run tests/windows/run.sh"]
async fn the_windows_client_snapshots_the_device_screen_exactly() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let ex = CliExpert::new();
    let pw = ex.write("pw", PW);

    let o = windows(&ex, &["--version"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("shoulder "),
        "{o:?}"
    );

    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("kiosk.shoulder", &file);
    let png_path = ex.path("shot.png");
    let answers = agent.answer_prompts(1, true).await;
    let o = windows(
        &ex,
        &[
            "snapshot",
            &inv,
            "--password-file",
            &pw,
            "-o",
            png_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();

    let (w, h, rgb) = read_png_rgb(&png_path);
    assert_eq!((w, h), (320, 200));
    assert!(
        rgb == frame_rgb(&screen.frame()),
        "the snapshot differs from the device screen"
    );

    // A wrong password: the same sentence as on Linux, and a failure exit.
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("again.shoulder", &file);
    let wrong = ex.write("wrong", "not-the-password");
    let never = ex.path("never.png");
    let o = windows(
        &ex,
        &[
            "snapshot",
            &inv,
            "--password-file",
            &wrong,
            "-o",
            never.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!o.status.success(), "{o:?}");
    let last = stderr(&o).lines().last().unwrap_or("").to_string();
    assert!(
        last.starts_with("Wrong password (") && last.ends_with(" left)."),
        "full stderr:\n{}",
        stderr(&o)
    );
    assert!(!never.exists(), "no picture without a session");
    agent.stop().await;
}
