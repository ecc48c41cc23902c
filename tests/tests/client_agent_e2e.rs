//! The real `shoulder` CLI against the real agent (in-process, port 0):
//! success paths and every failure the agent can answer with, each with its
//! own sentence and a non-zero exit.

use std::time::Duration;

use shoulder_agent::control::Request;
use shoulder_proto::invite::Invitation;
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_cli::{CliExpert, assert_fails_with, sentence, stderr};
use shoulder_testkit::picture::{frame_rgb, read_png_rgb};
use shoulder_testkit::synthetic::Synthetic;

const PW: &str = "blue-harbour-42";

/// `shoulder pki` makes a plant CA and an expert identity.
fn plant(expert: &CliExpert, ca: &str, name: &str) -> (String, String) {
    let ca_dir = expert.path(ca);
    let id_dir = expert.path(&format!("{ca}-{name}"));
    let o = expert
        .command(&["pki", "init-ca", ca_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = expert
        .command(&[
            "pki",
            "issue-expert",
            "--ca",
            ca_dir.to_str().unwrap(),
            "--name",
            name,
            "--out",
            id_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (ca_dir.display().to_string(), id_dir.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_snapshot_and_chat_work() {
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("kiosk.shoulder", &file);
    let pw = ex.write("pw", PW);
    let png = ex.path("shot.png");
    let answers = agent.answer_prompts(2, true).await;
    let o = ex
        .run(&[
            "snapshot",
            &inv,
            "--password-file",
            &pw,
            "-o",
            png.to_str().unwrap(),
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let info = decoder.read_info().unwrap();
    assert_eq!((info.info().width, info.info().height), (64, 48));
    // An invitation is single-use: the second session needs a new one.
    let o = ex
        .run(&["chat", &inv, "hello", "--password-file", &pw])
        .await;
    assert_fails_with(&o, "The invitation was already used — ask for a new one.");
    answers.abort();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitation_failures_have_their_own_sentences() {
    let agent = Agent::pattern(None, |c| {
        c.consent_timeout = Duration::from_secs(1);
    })
    .await;
    let ex = CliExpert::new();
    let pw = ex.write("pw", PW);
    let bad_pw = ex.write("bad", "not-the-password");
    let png = ex.path("x.png");
    let png = png.to_str().unwrap().to_string();
    let snap = |inv: String, pw: String| {
        let png = png.clone();
        let ex = &ex;
        async move {
            ex.run(&["snapshot", &inv, "--password-file", &pw, "-o", &png])
                .await
        }
    };

    // Wrong password: the device counts down the tries.
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("a.shoulder", &file);
    let o = snap(inv.clone(), bad_pw.clone()).await;
    assert!(!o.status.success());
    let s = sentence(&o);
    assert!(
        s.starts_with("Wrong password (") && s.ends_with(" left)."),
        "{}",
        stderr(&o)
    );

    // Declined.
    let answers = agent.answer_prompts(1, false).await;
    let o = snap(inv.clone(), pw.clone()).await;
    assert_fails_with(&o, "The device declined.");
    answers.await.unwrap();

    // Nobody answers.
    let (_, file) = agent.invite_file("30m", PW).await;
    let inv = ex.write("b.shoulder", &file);
    let o = snap(inv, pw.clone()).await;
    assert_fails_with(
        &o,
        "Nobody at the device answered in time — ask someone to stand by and try again.",
    );

    // Revoked.
    let (id, file) = agent.invite_file("30m", PW).await;
    agent.ctl_ok(Request::InviteRevoke { id }).await;
    let inv = ex.write("c.shoulder", &file);
    let o = snap(inv, pw.clone()).await;
    assert_fails_with(
        &o,
        "The invitation was revoked on the device — ask for a new one.",
    );

    // Expired.
    let (_, file) = agent.invite_file("1s", PW).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let inv = ex.write("d.shoulder", &file);
    let o = snap(inv, pw.clone()).await;
    assert!(!o.status.success());
    let s = sentence(&o);
    assert!(
        s.starts_with("Invitation expired ") && s.ends_with(" ago — ask for a new one."),
        "{}",
        stderr(&o)
    );

    // Wrong fingerprint: an invitation pinning another certificate.
    let (_, file) = agent.invite_file("30m", PW).await;
    let mut inv = Invitation::from_file(&file).unwrap();
    inv.fingerprint = shoulder_proto::Fingerprint([0x42; 32]);
    let o = snap(inv.to_text(), pw.clone()).await;
    assert_fails_with(
        &o,
        "The device's certificate does not match the invitation — do not connect; ask for a new invitation.",
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_expert_is_told_the_device_is_busy() {
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let pw = ex.write("pw", PW);
    let (_, first) = agent.invite_file("30m", PW).await;
    let (_, second) = agent.invite_file("30m", PW).await;
    let first = ex.write("first.shoulder", &first);
    let second = ex.write("second.shoulder", &second);
    let answers = agent.answer_prompts(1, true).await;
    let stats = ex.path("stats.jsonl");
    let watcher = ex
        .command(&[
            "watch",
            &first,
            "--password-file",
            &pw,
            "--stats-json",
            stats.to_str().unwrap(),
            "--duration",
            "20",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first expert sees the screen.
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&stats)
        .unwrap_or_default()
        .is_empty()
    {
        assert!(t0.elapsed() < WAIT, "the first session never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answers.await.unwrap();
    let png = ex.path("x.png");
    let o = ex
        .run(&[
            "snapshot",
            &second,
            "--password-file",
            &pw,
            "-o",
            png.to_str().unwrap(),
        ])
        .await;
    assert_fails_with(
        &o,
        "Another expert is already connected to this device — try again later.",
    );
    // The person at the device ends the first session: watch reports it.
    agent.ctl_ok(Request::End).await;
    let o = tokio::task::spawn_blocking(move || watcher.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_fails_with(&o, "The person at the device ended the session.");
    let lines = std::fs::read_to_string(&stats).unwrap();
    for l in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["fb_hash"].as_str().unwrap().len(), 16);
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_check_both_sides_certificates() {
    let ex = CliExpert::new();
    let (_plant_ca, ann) = plant(&ex, "plant", "Ann Expert");
    let (_other_ca, eve) = plant(&ex, "other", "Eve Outsider");
    let plant_crt = std::path::Path::new(&ex.path("plant")).join("ca.crt");
    let agent = Agent::pattern(Some(&plant_crt), |_| {}).await;
    let device = agent.addr.to_string();
    let png = ex.path("o.png");
    let png = png.to_str().unwrap();

    // The device's certificate is self-signed, not from the plant CA: an
    // identity that knows the plant CA refuses it.
    let o = ex
        .run(&["snapshot", &device, "--identity", &ann, "-o", png])
        .await;
    assert!(!o.status.success());
    assert!(
        sentence(&o).starts_with("The device's certificate was not issued by your plant CA"),
        "{}",
        stderr(&o)
    );

    // Without the plant CA in the identity: first contact is refused until
    // confirmed…
    std::fs::remove_file(std::path::Path::new(&ann).join("ca.crt")).unwrap();
    std::fs::remove_file(std::path::Path::new(&eve).join("ca.crt")).unwrap();
    let o = ex
        .run(&["snapshot", &device, "--identity", &ann, "-o", png])
        .await;
    assert!(!o.status.success());
    assert!(
        sentence(&o).starts_with(&format!("The device at {device} is not known yet")),
        "{}",
        stderr(&o)
    );

    // …an expert from another CA is turned away by the device…
    let o = ex
        .run(&[
            "snapshot",
            &device,
            "--identity",
            &eve,
            "--accept-new",
            "-o",
            png,
        ])
        .await;
    assert_fails_with(
        &o,
        "The device does not trust the CA that issued your certificate.",
    );

    // …and the plant's expert gets in, now remembering the device.
    let answers = agent.answer_prompts(1, true).await;
    let o = ex
        .run(&["snapshot", &device, "--identity", &ann, "-o", png])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();

    // A different device at the same address is refused loudly.
    let known = ex.path("config").join("known_devices");
    let text = std::fs::read_to_string(&known).unwrap();
    let forged: String = text
        .lines()
        .map(|l| {
            let (host, _) = l.split_once(' ').unwrap();
            format!("{host} {}\n", "ab".repeat(32))
        })
        .collect();
    std::fs::write(&known, forged).unwrap();
    let o = ex
        .run(&["snapshot", &device, "--identity", &ann, "-o", png])
        .await;
    assert!(!o.status.success());
    assert!(
        sentence(&o).starts_with("WARNING: the device at"),
        "{}",
        stderr(&o)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_snapshot_reproduce_the_device_screen_exactly() {
    let screen = Synthetic::new(320, 200);
    let agent = Agent::with_backends(None, screen.backends(), |_| {}).await;
    let ex = CliExpert::new();
    let mut device = screen.frame();
    for px in device.chunks_exact_mut(4) {
        px[3] = 0;
    }
    let expected_hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&device));

    let (inv, pw) = ex.invited(&agent, "w.shoulder", PW).await;
    let stats = ex.path("stats.jsonl");
    let answers = agent.answer_prompts(1, true).await;
    let mut args = CliExpert::watch_args(&inv, &pw, stats.to_str().unwrap());
    args.extend(["--frames", "1"]);
    let o = ex.run(&args).await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let line = std::fs::read_to_string(&stats).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["fb_hash"], expected_hash.as_str(), "{line}");
    assert!(v["bytes"].as_u64().unwrap() > 0 && v["rects"].as_u64().unwrap() > 0);

    let (inv, pw) = ex.invited(&agent, "s.shoulder", PW).await;
    let png_path = ex.path("s.png");
    let answers = agent.answer_prompts(1, true).await;
    let o = ex
        .run(&[
            "snapshot",
            &inv,
            "--password-file",
            &pw,
            "-o",
            png_path.to_str().unwrap(),
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let (w, h, rgb) = read_png_rgb(&png_path);
    assert_eq!((w, h), (320, 200));
    assert!(
        rgb == frame_rgb(&device),
        "snapshot differs from the device screen"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plant_signed_device_is_trusted_without_asking() {
    let ex = CliExpert::new();
    let (ca, ann) = plant(&ex, "plant", "Ann Expert");
    let ca_crt = std::path::Path::new(&ca).join("ca.crt");
    let shoulder = shoulder_testkit::bins::client();
    let config_dir = ex.path("config");
    let ca2 = ca.clone();
    let (backends, _) = shoulder_agent::Backends::for_tests(64, 48);
    let agent = Agent::with_backends_prepared(
        Some(&ca_crt),
        backends,
        |_| {},
        move |state| {
            // The device's CSR, signed with `shoulder pki sign-device`, replaces
            // its self-signed certificate.
            let csr = state.join("device.csr");
            shoulder_agent::identity::csr_for_existing(state, "test-kiosk", &csr).unwrap();
            let o = std::process::Command::new(shoulder)
                .args(["pki", "sign-device", "--ca", &ca2, csr.to_str().unwrap()])
                .args(["--out", state.join("device.crt").to_str().unwrap()])
                .env("SHOULDER_CONFIG_DIR", &config_dir)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
        },
    )
    .await;
    let answers = agent.answer_prompts(1, true).await;
    let png = ex.path("p.png");
    let o = ex
        .run(&[
            "snapshot",
            &agent.addr.to_string(),
            "--identity",
            &ann,
            "-o",
            png.to_str().unwrap(),
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    // Not asked, but remembered: the plant CA signs every kiosk, so the
    // address is pinned to this one.
    let known = std::fs::read_to_string(ex.path("config").join("known_devices")).unwrap();
    assert!(known.contains(&agent.addr.to_string()), "{known}");
    agent.stop().await;
}

/// `shoulder snapshot --screen SCREEN` of the invitation `(file, password
/// file)` into `png`.
async fn snapshot_of_screen(
    ex: &CliExpert,
    (inv, pw): (&str, &str),
    screen: &str,
    png: &std::path::Path,
) -> std::process::Output {
    ex.run(&[
        "snapshot",
        inv,
        "--password-file",
        pw,
        "--screen",
        screen,
        "-o",
        png.to_str().unwrap(),
    ])
    .await
}

/// A device with two screens: `--screen 2` saves the second, the list is
/// told on stderr, and a screen the device does not have is an error that
/// names those it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_the_second_screen() {
    let agent = Agent::start_with_capture(
        None,
        |_| {},
        Some(std::sync::Arc::new(
            shoulder_agent::backends::PatternScreens::new(&[(64, 48), (80, 40)]),
        )),
    )
    .await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "two.shoulder", PW).await;
    let png = ex.path("second.png");
    let answers = agent.answer_prompts(1, true).await;
    let o = snapshot_of_screen(&ex, (&inv, &pw), "2", &png).await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    let (w, h, _) = read_png_rgb(&png);
    assert_eq!((w, h), (80, 40), "the first screen was saved");
    assert!(
        stderr(&o)
            .contains("The device has 2 screens: 1 Virtual-1 64×48 (shown), 2 Virtual-2 80×40."),
        "{}",
        stderr(&o)
    );

    let (inv, pw) = ex.invited(&agent, "three.shoulder", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let o = snapshot_of_screen(&ex, (&inv, &pw), "3", &png).await;
    answers.await.unwrap();
    assert_fails_with(
        &o,
        "The device has no screen 3; it has: 1 Virtual-1 64×48 (shown), 2 Virtual-2 80×40.",
    );
    agent.stop().await;
}
