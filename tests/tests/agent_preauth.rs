//! Work and audit before authentication are bounded device-wide: password
//! hashes run one at a time, failures are counted before the work (so cut
//! short attempts count), and unauthenticated noise is summed up in a log of
//! its own instead of rotating session records out of the audit log.

use std::path::Path;

use shoulder_proto::session::{ExpertEvent, ExpertState, UserAction};
use shoulder_proto::{ByeReason, InvitationId};
use shoulder_testkit::agent::*;
use shoulder_testkit::pki::*;
use shoulder_testkit::tls_expert::*;
use tokio::io::AsyncWriteExt;

/// Every record of the audit log and its rotated files.
fn all_audit_records(audit: &Path) -> Vec<serde_json::Value> {
    let mut out = audit_records(audit);
    for n in 1..=4 {
        let mut p = audit.as_os_str().to_owned();
        p.push(format!(".{n}"));
        out.extend(audit_records(Path::new(&p)));
    }
    out
}

async fn guess(agent: &Agent, id: InvitationId, password: &str) -> ByeReason {
    let mut e = TlsExpert::invitation(agent, id, password).await;
    e.closed().await.0
}

/// A guess ("guess" for invitation `id`) on a connection of its own,
/// running alongside others.
fn spawn_guess(agent: &Agent, id: InvitationId) -> tokio::task::JoinHandle<ByeReason> {
    let (addr, fp) = (agent.addr, agent.fingerprint);
    tokio::spawn(async move {
        let mut e = TlsExpert::connect(
            addr,
            fp,
            None,
            shoulder_proto::Auth::Invitation {
                id,
                password: shoulder_proto::text("guess"),
            },
        )
        .await;
        e.closed().await.0
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_hash_one_at_a_time() {
    let agent = Agent::start(None, |c| {
        // Slow enough for the attempts to overlap.
        c.argon2.memory_kib = 8 * 1024;
        c.argon2.iterations = 2;
        c.password_failures_per_minute = 1000;
    })
    .await;
    let unknown = InvitationId([7; 8]);
    let mut tasks = Vec::new();
    for _ in 0..24 {
        tasks.push(spawn_guess(&agent, unknown));
    }
    let mut unknown_answers = 0;
    for t in tasks {
        let reason = t.await.unwrap();
        assert!(
            matches!(
                reason,
                ByeReason::InvitationUnknown
                    | ByeReason::RateLimited { .. }
                    | ByeReason::AuthTimeout
            ),
            "{reason:?}"
        );
        unknown_answers += u32::from(reason == ByeReason::InvitationUnknown);
    }
    assert!(unknown_answers >= 1, "some guesses were checked");
    let (records, pre) = agent.stop_with_pre_auth().await;
    let totals = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-totals")
        .expect("a pre-auth-totals record");
    assert!(totals["hashes"].as_u64().unwrap() >= 1, "{totals}");
    assert_eq!(totals["most_hashes_at_once"], 1, "{totals}");
    let summary = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-summary" && r["source"] == "127.0.0.1")
        .expect("a summary for the guessing source");
    assert_eq!(summary["connections"], 24, "{summary}");
    assert!(summary["failures"].as_u64().unwrap() >= 1, "{summary}");
    // The guesses left nothing in the session audit log.
    assert!(!records.iter().any(|r| r["event"] == "auth-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_attempts_count_as_failures() {
    let agent = Agent::start(None, |c| {
        c.max_pre_auth_connections = 1;
        c.auth_failures_per_minute = 3;
        // A hash long enough to be cut short by the next connection.
        c.argon2.memory_kib = 64 * 1024;
        c.argon2.iterations = 4;
    })
    .await;
    let id = agent.invite("10m", "tulip-garden-42").await;
    // Each connection sends a wrong password and is evicted by the next one
    // while its password is being checked.
    let mut evicted = Vec::new();
    for _ in 0..3 {
        evicted.push(TlsExpert::invitation(&agent, id, "wrong").await);
    }
    for mut e in evicted {
        let _ = e.closed().await;
    }
    let reason = guess(&agent, id, "also-wrong").await;
    assert!(
        matches!(reason, ByeReason::RateLimited { .. }),
        "three evicted attempts used up the limit of 3, got {reason:?}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_does_not_rotate_session_records_out() {
    let agent = Agent::start(None, |c| {
        // Small rotation: a few KiB per file, one rotated file kept.
        c.audit_max_bytes = 4096;
        c.audit_keep = 1;
        c.password_failures_per_minute = 100_000;
        c.auth_failures_per_minute = 100_000;
    })
    .await;
    let id = agent.invite("10m", "tulip-garden-42").await;
    let unknown = InvitationId([9; 8]);
    for _ in 0..15 {
        let mut batch = Vec::new();
        for _ in 0..10 {
            batch.push(spawn_guess(&agent, unknown));
        }
        for t in batch {
            t.await.unwrap();
        }
    }
    // The invitation still works after the flood, and its creation is
    // still on record.
    let mut e = TlsExpert::invitation(&agent, id, "tulip-garden-42").await;
    e.wait_for("consent pending", |ev| {
        matches!(
            ev,
            ExpertEvent::StateChanged(ExpertState::WaitingForConsent { .. })
        )
    })
    .await;
    e.act(UserAction::Disconnect).await;
    let audit = agent.audit.clone();
    // Read before the agent's directory goes with it.
    let all_before = all_audit_records(&audit);
    let (records, pre) = agent.stop_with_pre_auth().await;
    let all = all_before;
    assert!(
        all.iter().any(|r| r["event"] == "invitation-created"),
        "the invitation-created record was rotated out: {:?}",
        all.iter().map(|r| &r["event"]).collect::<Vec<_>>()
    );
    // The successful expert's pre-auth records are kept one by one.
    for step in ["connect", "hello", "auth-ok"] {
        assert!(records.iter().any(|r| r["event"] == step), "no {step}");
    }
    let summary = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-summary" && r["source"] == "127.0.0.1")
        .expect("a summary of the flood");
    assert_eq!(summary["connections"], 150, "{summary}");
    // Checked, or told to retry while the hash queue was full.
    let answers: u64 = summary["reasons"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(answers, 150, "{summary}");
    assert!(summary["reasons"]["InvitationUnknown"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_is_audited_up_to_a_cap() {
    let pki = Pki::new("Plant CA");
    let ann = pki.expert("Ann Expert", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    let mut device = agent.ctl().await;
    let mut e = TlsExpert::offer(&agent, Some(&ann)).await;
    event(&mut device, "consent-requested").await;
    // Before the person at the device has let the expert see anything
    // (written raw: the client only chats once viewing, the device takes
    // chat while it asks).
    let mut raw = Vec::new();
    for i in 0..60 {
        raw.extend(
            shoulder_proto::frame::encode(&shoulder_proto::Message::Chat {
                text: shoulder_proto::text(&format!("hello {i}")),
            })
            .unwrap(),
        );
    }
    e.tls.write_all(&raw).await.unwrap();
    e.tls.flush().await.unwrap();
    // The device reads the chat lines before the goodbye that follows them.
    e.act(UserAction::Disconnect).await;
    event(&mut device, "session-ended").await;
    let records = agent.stop().await;
    let chats = records.iter().filter(|r| r["event"] == "chat").count();
    assert_eq!(chats, 50);
    let bye = records
        .iter()
        .find(|r| r["event"] == "bye")
        .expect("a bye record");
    assert_eq!(bye["chats_not_audited"], 10, "{bye}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_failures_are_summed_up_with_their_fingerprint() {
    let pki = Pki::new("Plant CA");
    let other = Pki::new("Other CA");
    let mallory = other.expert("Mallory", false);
    let agent = Agent::start(Some(&pki.ca_pem), |_| {}).await;
    for _ in 0..3 {
        let mut e = TlsExpert::offer(&agent, Some(&mallory)).await;
        assert_eq!(e.closed().await.0, ByeReason::UnknownCa);
    }
    let (_, pre) = agent.stop_with_pre_auth().await;
    let s = pre
        .iter()
        .find(|r| r["event"] == "pre-auth-summary")
        .expect("summary");
    assert_eq!(s["connections"], 3, "{s}");
    assert_eq!(s["failures"], 3, "{s}");
    assert_eq!(s["reasons"]["UnknownCa"], 3, "{s}");
    let fp = shoulder_proto::Fingerprint(mallory.fingerprint).colon_hex();
    assert_eq!(s["fingerprints"][0], fp, "{s}");
}
