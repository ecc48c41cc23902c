//! The real `shoulder-agent` binary: CLI, the synthetic kiosk screen from
//! shoulder-capture, SIGKILL mid-session (the audit log stays whole) and
//! SIGTERM (clean shutdown).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use shoulder_agent::control::{Client, Request};
use shoulder_proto::invite::Invitation;
use shoulder_proto::session::{ExpertEvent, ExpertState};
use shoulder_proto::{Auth, Fingerprint};
use shoulder_testkit::agent::*;
use shoulder_testkit::bins;
use shoulder_testkit::tls_expert::*;
use tokio::process::{Child, Command};

/// The agent command: this build's binary, or `SHOULDER_AGENT_BIN` (e.g.
/// "qemu-aarch64-static target/aarch64-unknown-linux-musl/small/shoulder-agent"
/// to run these tests against a cross-built static binary).
fn agent_command() -> Command {
    let spec = std::env::var("SHOULDER_AGENT_BIN").unwrap_or_default();
    let mut words = spec.split_whitespace();
    let mut c = match words.next() {
        Some(program) => Command::new(program),
        None => Command::new(bins::agent()),
    };
    c.args(words);
    c
}

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("agent.toml");
    let text = format!(
        r#"enabled = true
listen = ["127.0.0.1:0"]
device_name = "kiosk-under-test"
state_dir = "{d}/state"
audit_log = "{d}/audit.jsonl"
control_socket = "{d}/run/control.sock"
capture = "synthetic:320x200"
consent_timeout = "30s"

[argon2]
memory_kib = 1024
iterations = 1

[input]
inject = "none"
local_input = ""
"#,
        d = dir.display()
    );
    std::fs::write(&p, text).unwrap();
    p
}

async fn cli(config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = agent_command()
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn spawn_agent(config: &Path, dir: &Path) -> (Child, std::net::SocketAddr, Fingerprint) {
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = agent_command()
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let sock = dir.join("run/control.sock");
    let t0 = Instant::now();
    let status = loop {
        if let Ok(mut c) = Client::connect(&sock).await
            && let Ok(s) = c.request(&Request::Status).await
        {
            break s;
        }
        assert!(
            t0.elapsed() < WAIT,
            "agent did not start: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let addr = status["agent"]["listening"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let fp = Fingerprint::parse(status["agent"]["fingerprint"].as_str().unwrap()).unwrap();
    (child, addr, fp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_survives_sigkill_mid_session_and_sigterm_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());

    // keygen prints the fingerprint and never overwrites.
    let (ok, out, err) = cli(&config, &["keygen"]).await;
    assert!(ok, "{err}");
    let fp_line = out
        .lines()
        .find(|l| l.starts_with("SHA-256 fingerprint:"))
        .unwrap();
    let (ok, _, err) = cli(&config, &["keygen"]).await;
    assert!(!ok);
    assert!(err.contains("never overwritten"), "{err}");
    let (ok, out, _) = cli(&config, &["fingerprint"]).await;
    assert!(ok);
    assert!(fp_line.ends_with(out.trim()), "{fp_line} vs {out}");

    let (mut child, addr, fp) = spawn_agent(&config, dir.path()).await;

    // An invitation through the running agent (right port), password from a file.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "tulip-garden-42\n").unwrap();
    let (ok, out, err) = cli(
        &config,
        &[
            "ctl",
            "invite",
            "--expires",
            "10m",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let text = out.lines().find(|l| l.starts_with("SHOULDER1-")).unwrap();
    let inv = Invitation::from_text(text).unwrap();
    assert_eq!(inv.fingerprint, fp);
    assert_eq!(inv.port, addr.port());
    assert_eq!(inv.addresses[0].as_str(), "127.0.0.1");
    let (ok, out, _) = cli(&config, &["invite", "--list"]).await;
    assert!(ok);
    assert!(
        out.contains(&inv.id.to_string()) && out.contains("open"),
        "{out}"
    );

    let mut expert = TlsExpert::connect(
        addr,
        fp,
        None,
        Auth::Invitation {
            id: inv.id,
            password: shoulder_proto::text("tulip-garden-42"),
        },
    )
    .await;
    expert
        .wait_for("consent pending", |e| {
            matches!(
                e,
                ExpertEvent::StateChanged(ExpertState::WaitingForConsent { .. })
            )
        })
        .await;
    let (ok, _, err) = cli(&config, &["ctl", "accept"]).await;
    assert!(ok, "{err}");
    expert
        .wait_for("viewing", |e| {
            matches!(e, ExpertEvent::StateChanged(ExpertState::Viewing { .. }))
        })
        .await;
    // The synthetic kiosk screen from shoulder-capture arrives.
    expert.wait_updates(2).await;
    let fb = expert.fb.as_ref().unwrap();
    assert_eq!((fb.width(), fb.height()), (320, 200));
    assert!(
        fb.pixels().chunks(4).any(|p| p[..3] != fb.pixels()[..3]),
        "a drawn screen, not one colour"
    );

    // Killed mid-session: no goodbye, but every audit line is whole.
    child.kill().await.unwrap();
    let records = audit_records(&dir.path().join("audit.jsonl"));
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    for step in [
        "agent-started",
        "invitation-created",
        "connect",
        "hello",
        "auth-ok",
        "consent-asked",
        "consent-answered",
    ] {
        assert!(names.contains(&step), "no {step} in {names:?}");
    }
    assert!(!names.contains(&"agent-stopped"));
    let (reason, _, _) = expert.closed().await;
    assert_eq!(reason, shoulder_proto::ByeReason::Normal, "connection lost");

    // A restart appends to the same log; SIGTERM stops cleanly.
    let (child, _, fp2) = spawn_agent(&config, dir.path()).await;
    assert_eq!(fp2, fp, "the device key survived");
    let pid = child.id().unwrap().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let records = audit_records(&dir.path().join("audit.jsonl"));
    assert_eq!(records.last().unwrap()["event"], "agent-stopped");
    assert_eq!(
        records
            .iter()
            .filter(|r| r["event"] == "agent-started")
            .count(),
        2
    );
    assert!(!dir.path().join("run/control.sock").exists());
}

#[tokio::test]
async fn bad_config_names_line_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, "enabled = true\n\n[argon2]\nmemory_mib = 19\n").unwrap();
    let (ok, _, err) = cli(&p, &["run"]).await;
    assert!(!ok);
    assert!(err.contains("agent.toml:4:1"), "{err}");
    assert!(err.contains("memory_mib"), "{err}");
    assert!(err.contains("fix:"), "{err}");
    let (ok, _, err) = cli(&dir.path().join("missing.toml"), &["ctl", "status"]).await;
    assert!(!ok);
    assert!(err.contains("cannot read the config file"), "{err}");
}
