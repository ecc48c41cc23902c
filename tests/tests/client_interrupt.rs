//! Headless commands end cleanly when interrupted: on SIGTERM or SIGINT
//! `shoulder watch` says goodbye, so the device frees its one session slot
//! at once instead of holding the session for the resume grace period and
//! telling the next expert it is busy.

use std::time::{Duration, Instant};

use shoulder_agent::control::Request;
use shoulder_testkit::agent::{Agent, WAIT};
use shoulder_testkit::client_cli::{CliExpert, stderr};

const PW: &str = "blue-harbour-42";

async fn interrupted_watch_says_goodbye(signal: &str, said: &str) {
    // A long grace: a session merely dropped would still be held when the
    // test looks.
    let agent = Agent::pattern(None, |c| c.resume_grace = Duration::from_secs(600)).await;
    let ex = CliExpert::new();
    let (inv, pw) = ex.invited(&agent, "w.shoulder", PW).await;
    let stats = ex.path("stats.jsonl");
    let answers = agent.answer_prompts(1, true).await;
    let child = ex
        .command(&CliExpert::watch_args(&inv, &pw, stats.to_str().unwrap()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Watching: updates arrive.
    let t0 = Instant::now();
    while std::fs::read_to_string(&stats).map_or(true, |s| s.lines().count() < 2) {
        assert!(t0.elapsed() < WAIT, "no updates written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answers.await.unwrap();
    let killed = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("watch did not stop")
    .unwrap();
    // Stopping a watch this way is its normal end: the stats are the result.
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{said}: ending the session")),
        "{}",
        stderr(&out)
    );
    // The device ended the session on the goodbye: nothing is held for a
    // resume, and the next expert finds the device free.
    let t0 = Instant::now();
    loop {
        let status = agent.ctl_ok(Request::Status).await;
        if status["session"].is_null() {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "the device still holds the session: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = agent.stop().await;
    let bye = records
        .iter()
        .rfind(|r| r["event"] == "bye")
        .expect("a bye record");
    assert_eq!(bye["reason"], "Normal", "{bye}");
    assert!(
        !records.iter().any(|r| r["event"] == "suspended"),
        "the session was held for a resume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watch_with_a_goodbye() {
    interrupted_watch_says_goodbye("-TERM", "Terminated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_ends_watch_with_a_goodbye() {
    interrupted_watch_says_goodbye("-INT", "Interrupted").await;
}
