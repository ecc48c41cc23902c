//! Files with consent (`shoulder get`, `shoulder put`): the real `shoulder`
//! binary against the real agent over TLS on loopback, and a raw protocol
//! peer for what a hostile or vanishing expert does. Each transfer is asked
//! of the person at the device; only the allowed directories are reachable;
//! nothing half-written stays on either side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::digest::{SHA256, digest};
use serde_json::Value;
use shoulder_agent::control::Request;
use shoulder_proto::files::{FILE_CHUNK, FILE_WINDOW, FileMsg, FileOutcome, FileRefusal};
use shoulder_proto::msg::{Payload, text};
use shoulder_proto::session::{ExpertEvent, UserAction};
use shoulder_testkit::agent::{Agent, WAIT, event};
use shoulder_testkit::client_cli::{CliExpert, assert_fails_with, stderr};
use shoulder_testkit::tls_expert::TlsExpert;

const PW: &str = "blue-harbour-42";

/// The device's directories: `logs/` readable, `incoming/` the drop, and a
/// secret beside them.
struct Device {
    root: tempfile::TempDir,
}

impl Device {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for d in ["logs/old", "incoming"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(root.path().join("secret.key"), b"do not copy").unwrap();
        Self { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn at(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    async fn agent(&self, tweak: impl FnOnce(&mut shoulder_agent::config::Config)) -> Agent {
        let (logs, incoming) = (self.path("logs"), self.path("incoming"));
        Agent::pattern(None, |c| {
            c.files.readable = vec![logs];
            c.files.drop = incoming;
            c.files.keep_free_mib = 0;
            tweak(c);
        })
        .await
    }

    /// What is in the drop directory, hidden files included.
    fn incoming(&self) -> Vec<String> {
        names(&self.path("incoming"))
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Bytes no compressor shrinks and no off-by-one hides: 300 KB is four
/// and a bit chunks.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    let mut d = [0u8; 32];
    d.copy_from_slice(digest(&SHA256, b).as_ref());
    shoulder_proto::Fingerprint(d).hex()
}

/// `shoulder get|put INVITATION --password-file PW ARGS…`, with a fresh
/// invitation from `agent`; returns once the device has ended the session
/// too, so the next command never finds its one session slot still taken.
async fn transfer(ex: &CliExpert, agent: &Agent, cmd: &str, args: &[&str]) -> std::process::Output {
    let (inv, pw) = ex.invited(agent, "kiosk.shoulder", PW).await;
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await;
    let mut all = vec![cmd, inv.as_str(), "--password-file", pw.as_str()];
    all.extend_from_slice(args);
    let o = ex.run(&all).await;
    tokio::time::timeout(WAIT, ctl.wait_event("session-ended"))
        .await
        .unwrap_or_else(|_| panic!("the session did not end: {}", stderr(&o)))
        .unwrap();
    o
}

fn records_of<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["event"] == event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_is_copied_from_the_device_exactly_once_the_person_says_yes() {
    let dev = Device::new();
    let log = content(300_001, 1);
    std::fs::write(dev.path("logs/old/kiosk.log"), &log).unwrap();
    let agent = dev.agent(|_| {}).await;
    let ex = CliExpert::new();
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await;
    let answers = agent.answer_prompts(2, true).await;
    let out_dir = ex.path("downloads");
    std::fs::create_dir_all(&out_dir).unwrap();
    let o = transfer(
        &ex,
        &agent,
        "get",
        &[
            &dev.at("logs/old/kiosk.log"),
            &out_dir.display().to_string(),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    assert_eq!(names(&out_dir), ["kiosk.log"], "no temporary file stays");
    assert!(std::fs::read(out_dir.join("kiosk.log")).unwrap() == log);
    // The person was asked by name and size.
    let _view = event(&mut ctl, "consent-requested").await;
    let asked = event(&mut ctl, "consent-requested").await;
    assert_eq!(asked["kind"], "file");
    assert_eq!(asked["file"]["name"], "kiosk.log");
    assert_eq!(asked["file"]["size"], 300_001);
    assert_eq!(asked["file"]["to_device"], false);
    let records = agent.stop().await;
    let ended = records_of(&records, "file-ended");
    assert_eq!(ended.len(), 1, "{records:?}");
    assert_eq!(ended[0]["outcome"], "done");
    assert_eq!(ended[0]["direction"], "from-device");
    assert_eq!(ended[0]["size"], 300_001);
    assert_eq!(ended[0]["sha256"], sha_hex(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_to_the_device_lands_whole_and_verified() {
    let dev = Device::new();
    let agent = dev.agent(|_| {}).await;
    let ex = CliExpert::new();
    let body = content(1_000_003, 2);
    let local = ex.path("update.bin");
    std::fs::write(&local, &body).unwrap();
    let answers = agent.answer_prompts(2, true).await;
    let o = transfer(&ex, &agent, "put", &[&local.display().to_string()]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    answers.await.unwrap();
    assert_eq!(dev.incoming(), ["update.bin"]);
    assert!(std::fs::read(dev.path("incoming/update.bin")).unwrap() == body);
    // Sending it again does not overwrite it; nobody is asked.
    let answers = agent.answer_prompts(1, true).await;
    let o = transfer(&ex, &agent, "put", &[&local.display().to_string()]).await;
    assert_fails_with(&o, &FileRefusal::Exists.sentence());
    answers.await.unwrap();
    let records = agent.stop().await;
    let ended = records_of(&records, "file-ended");
    assert_eq!(ended[0]["outcome"], "done");
    assert_eq!(ended[0]["direction"], "to-device");
    assert_eq!(ended[0]["name"], "update.bin");
    assert_eq!(ended[0]["sha256"], sha_hex(&body));
}

/// Runs `shoulder get PATH` with the view allowed; the file question, if
/// any, is answered yes.
async fn get_fails(dev: &Device, agent: &Agent, ex: &CliExpert, path: &str, expected: &str) {
    let answers = agent.answer_prompts(2, true).await;
    let out = ex.path("got");
    let o = transfer(ex, agent, "get", &[path, &out.display().to_string()]).await;
    assert_fails_with(&o, expected);
    answers.abort();
    assert!(!out.exists(), "{path}: nothing was written");
    let _ = dev;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_allowed_directories_are_refused_through_links_and_dots() {
    let dev = Device::new();
    std::fs::write(dev.path("logs/kiosk.log"), b"ok").unwrap();
    std::os::unix::fs::symlink(dev.path("secret.key"), dev.path("logs/link-out")).unwrap();
    std::os::unix::fs::symlink("../secret.key", dev.path("logs/rel-out")).unwrap();
    std::os::unix::fs::symlink(dev.path("."), dev.path("logs/old/dir-out")).unwrap();
    let agent = dev.agent(|_| {}).await;
    let ex = CliExpert::new();
    let outside = FileRefusal::OutsideAllowed.sentence();
    for path in [
        dev.at("secret.key"),
        dev.at("logs/link-out"),
        dev.at("logs/rel-out"),
        dev.at("logs/old/dir-out/secret.key"),
        format!("{}/../secret.key", dev.at("logs")),
        "/etc/passwd".into(),
    ] {
        get_fails(&dev, &agent, &ex, &path, &outside).await;
    }
    get_fails(
        &dev,
        &agent,
        &ex,
        &dev.at("logs/none.log"),
        &FileRefusal::NotFound.sentence(),
    )
    .await;
    let records = agent.stop().await;
    // Refused before anyone was asked: no file prompt, nothing audited as
    // sent.
    assert!(records_of(&records, "file-asked").is_empty(), "{records:?}");
    assert!(
        records
            .iter()
            .filter(|r| r["event"] == "consent-asked")
            .all(|r| r["kind"] == "view")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_file_leaves_nothing_on_either_side() {
    let dev = Device::new();
    std::fs::write(dev.path("logs/kiosk.log"), content(10_000, 3)).unwrap();
    let agent = dev.agent(|_| {}).await;
    let ex = CliExpert::new();
    let mut ctl = agent.ctl().await;
    let _ = ctl.request(&Request::Status).await;
    let person = tokio::spawn(async move {
        let _ = ctl.wait_event("consent-requested").await;
        let _ = ctl.request(&Request::Accept { prompt: None }).await;
        let _ = ctl.wait_event("consent-requested").await;
        let _ = ctl.request(&Request::Decline { prompt: None }).await;
    });
    let out = ex.path("got.log");
    let o = transfer(
        &ex,
        &agent,
        "get",
        &[&dev.at("logs/kiosk.log"), &out.display().to_string()],
    )
    .await;
    assert_fails_with(&o, &FileOutcome::Declined.sentence());
    person.await.unwrap();
    assert!(names(&ex.path("")).iter().all(|n| !n.contains("got.log")));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_would_fill_the_disk_is_refused_before_any_byte_is_sent() {
    let dev = Device::new();
    // The reserve is larger than any disk this runs on: the drop is "full".
    let agent = dev.agent(|c| c.files.keep_free_mib = 1 << 40).await;
    let ex = CliExpert::new();
    let local = ex.path("big.bin");
    std::fs::write(&local, content(5000, 4)).unwrap();
    let answers = agent.answer_prompts(1, true).await;
    let o = transfer(&ex, &agent, "put", &[&local.display().to_string()]).await;
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("too little free space"),
        "{}",
        stderr(&o)
    );
    answers.await.unwrap();
    assert!(dev.incoming().is_empty());
    let records = agent.stop().await;
    assert!(records_of(&records, "file-asked").is_empty());
}

/// A raw expert viewing the device, with files.
async fn raw_expert(agent: &Agent) -> TlsExpert {
    let id = agent.invite("30m", PW).await;
    let answers = agent.answer_prompts(1, true).await;
    let mut ex = TlsExpert::invitation(agent, id, PW).await;
    ex.wait_for(
        "viewing",
        |e| matches!(e, ExpertEvent::StateChanged(s) if shoulder_testkit::expert::viewing(*s)),
    )
    .await;
    answers.await.unwrap();
    ex
}

async fn file_event(ex: &mut TlsExpert, what: &str, f: impl Fn(&FileMsg) -> bool) -> FileMsg {
    match ex
        .wait_for(what, |e| matches!(e, ExpertEvent::File(m) if f(m)))
        .await
    {
        ExpertEvent::File(m) => *m,
        _ => unreachable!(),
    }
}

/// Starts a 1 MiB put and sends its first two chunks.
async fn half_sent_put(agent: &Agent, dev: &Device) -> TlsExpert {
    let mut ex = raw_expert(agent).await;
    let size = 16 * FILE_CHUNK as u64;
    let answers = agent.answer_prompts(1, true).await;
    ex.act(UserAction::File(Box::new(FileMsg::Put {
        id: 7,
        name: text("half.bin"),
        size,
        sha256: [0; 32],
    })))
    .await;
    file_event(&mut ex, "accepted", |m| {
        matches!(m, FileMsg::Accepted { .. })
    })
    .await;
    answers.await.unwrap();
    for i in 0..2u64 {
        ex.act(UserAction::File(Box::new(FileMsg::Data {
            id: 7,
            offset: i * FILE_CHUNK as u64,
            data: Payload(vec![1; FILE_CHUNK]),
        })))
        .await;
    }
    file_event(
        &mut ex,
        "two chunks stored",
        |m| matches!(m, FileMsg::Ack { received, .. } if *received == 2 * FILE_CHUNK as u64),
    )
    .await;
    assert_eq!(
        dev.incoming().len(),
        1,
        "the temporary file is being written"
    );
    assert!(dev.incoming()[0].starts_with('.'), "{:?}", dev.incoming());
    ex
}

/// The device says transfer `id` ended with `outcome` and keeps nothing of
/// it; then the expert leaves.
async fn ends_with(mut ex: TlsExpert, dev: &Device, id: u32, outcome: FileOutcome) {
    let done = file_event(&mut ex, "done", |m| matches!(m, FileMsg::Done { .. })).await;
    assert_eq!(done, FileMsg::Done { id, outcome });
    drop_dir_empties(dev).await;
    ex.act(UserAction::Disconnect).await;
}

/// Waits (generously) until the drop directory is empty.
async fn drop_dir_empties(dev: &Device) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dev.incoming().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            dev.incoming()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cancelled_by_either_side_or_cut_off_leaves_nothing_half_written() {
    let dev = Device::new();
    let agent = dev.agent(|_| {}).await;

    // The expert cancels.
    let mut ex = half_sent_put(&agent, &dev).await;
    ex.act(UserAction::File(Box::new(FileMsg::Cancel { id: 7 })))
        .await;
    ends_with(ex, &dev, 7, FileOutcome::CancelledByExpert).await;

    // The person at the device cancels.
    let ex = half_sent_put(&agent, &dev).await;
    let r = agent.ctl_ok(Request::CancelFile).await;
    assert_eq!(r["changed"], true, "{r}");
    ends_with(ex, &dev, 7, FileOutcome::CancelledOnDevice).await;

    // The expert vanishes mid-transfer.
    let ex = half_sent_put(&agent, &dev).await;
    drop(ex);
    drop_dir_empties(&dev).await;

    let records = agent.stop().await;
    let outcomes: Vec<&str> = records_of(&records, "file-ended")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| *o != "done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expert_that_reads_but_never_acknowledges_gets_one_window_and_the_person_can_still_cancel()
 {
    let dev = Device::new();
    std::fs::write(dev.path("logs/big.bin"), content(8 << 20, 5)).unwrap();
    let agent = dev.agent(|_| {}).await;
    let mut ex = raw_expert(&agent).await;
    let answers = agent.answer_prompts(1, true).await;
    ex.act(UserAction::File(Box::new(FileMsg::Get {
        id: 5,
        path: text(&dev.at("logs/big.bin")),
    })))
    .await;
    file_event(&mut ex, "accepted", |m| {
        matches!(m, FileMsg::Accepted { .. })
    })
    .await;
    answers.await.unwrap();
    // The expert reads everything but never acknowledges, for a second;
    // then the person cancels.
    let _ = tokio::time::timeout(Duration::from_secs(1), ex.wait_for("nothing", |_| false)).await;
    let r = agent.ctl_ok(Request::CancelFile).await;
    assert_eq!(r["changed"], true, "{r}");
    let done = file_event(&mut ex, "done", |m| matches!(m, FileMsg::Done { .. })).await;
    assert_eq!(
        done,
        FileMsg::Done {
            id: 5,
            outcome: FileOutcome::CancelledOnDevice
        }
    );
    // Without an acknowledgement the device sent one window, no more.
    let sent: u64 = ex
        .events
        .iter()
        .filter_map(|e| match e {
            ExpertEvent::File(m) => match &**m {
                FileMsg::Data { data, .. } => Some(data.0.len() as u64),
                _ => None,
            },
            _ => None,
        })
        .sum();
    assert!(sent > 0, "some data went before the window closed");
    assert!(
        sent <= FILE_WINDOW,
        "{sent} bytes sent without an acknowledgement"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_do_not_match_the_announced_digest_are_not_kept() {
    let dev = Device::new();
    let agent = dev.agent(|_| {}).await;
    let mut ex = raw_expert(&agent).await;
    let answers = agent.answer_prompts(1, true).await;
    ex.act(UserAction::File(Box::new(FileMsg::Put {
        id: 1,
        name: text("forged.bin"),
        size: 10,
        sha256: [9; 32],
    })))
    .await;
    file_event(&mut ex, "accepted", |m| {
        matches!(m, FileMsg::Accepted { .. })
    })
    .await;
    answers.await.unwrap();
    ex.act(UserAction::File(Box::new(FileMsg::Data {
        id: 1,
        offset: 0,
        data: Payload(vec![0; 10]),
    })))
    .await;
    ends_with(ex, &dev, 1, FileOutcome::HashMismatch).await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_directories_offers_no_files() {
    let agent = Agent::pattern(None, |_| {}).await;
    let ex = CliExpert::new();
    let answers = agent.answer_prompts(1, true).await;
    let o = transfer(
        &ex,
        &agent,
        "get",
        &["/var/log/syslog", &ex.path("x").display().to_string()],
    )
    .await;
    assert_fails_with(&o, &FileRefusal::NotOffered.sentence());
    answers.await.unwrap();
    agent.stop().await;
}

/// `shoulder ls`: the readable directories, then what one holds; links
/// (which could lead out) and what lies outside are never listed, and
/// each listing is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readable_directories_are_listed_and_nothing_outside_them() {
    let dev = Device::new();
    std::fs::write(dev.path("logs/kiosk.log"), content(1234, 3)).unwrap();
    std::fs::write(dev.path("logs/.hidden"), b"x").unwrap();
    std::os::unix::fs::symlink(dev.path("secret.key"), dev.path("logs/link-out")).unwrap();
    std::os::unix::fs::symlink(dev.path("."), dev.path("logs/old/dir-out")).unwrap();
    let agent = dev.agent(|_| {}).await;
    let ex = CliExpert::new();
    let answers = agent.answer_prompts(5, true).await;
    let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();

    let o = transfer(&ex, &agent, "ls", &[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("{}/", dev.at("logs"))),
        "{}",
        stdout(&o)
    );

    let o = transfer(&ex, &agent, "ls", &[&dev.at("logs")]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].trim_start().starts_with("dir") && lines[0].ends_with("old/"));
    assert!(lines[1].ends_with(".hidden"));
    assert!(
        lines[2].contains("1.2 KB") && lines[2].ends_with("kiosk.log"),
        "{lines:?}"
    );
    assert!(!stdout(&o).contains("link-out"), "links are not listed");

    // Below a readable directory, through no link.
    let outside = FileRefusal::OutsideAllowed.sentence();
    let o = transfer(&ex, &agent, "ls", &[&dev.at("logs/old/dir-out")]).await;
    assert_fails_with(&o, &outside);
    let o = transfer(&ex, &agent, "ls", &[&dev.at("logs/../")]).await;
    assert_fails_with(&o, &outside);
    let o = transfer(&ex, &agent, "ls", &[&dev.at("logs/kiosk.log")]).await;
    assert_fails_with(&o, &FileRefusal::NotADirectory.sentence());
    answers.await.unwrap();

    let records = agent.stop().await;
    let listed = records_of(&records, "file-listed");
    assert_eq!(listed.len(), 5, "{listed:?}");
    assert_eq!(listed[1]["dir"], dev.at("logs").as_str());
    assert_eq!(listed[1]["entries"], 3);
    assert!(listed[2]["entries"].is_null(), "a refusal: {}", listed[2]);
}
