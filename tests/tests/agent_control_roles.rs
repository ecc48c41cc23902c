//! The control socket's trust boundary: who may connect and what each role
//! may do. The role decision is a pure function of uid, groups and config,
//! tested first; then the real binary, started as systemd starts it (its
//! runtime directory made beforehand, root:root 0750, named in
//! `$RUNTIME_DIRECTORY`), with `shoulder-agent ctl` run as other users.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use shoulder_agent::control::{Access, Client, Group, Request, Role, parse_proc_status};
use shoulder_testkit::agent::*;
use shoulder_testkit::bins;
use tokio::process::{Child, Command};

/// Ids no account on a test machine uses.
const KIOSK_GID: u32 = 4242;
const KIOSK_UID: u32 = 4244;
const STRANGER: u32 = 4243;
const ADMIN_GID: u32 = 4250;

fn access(control: Option<u32>, invite: Option<u32>) -> Access {
    let g = |name: &str, gid: Option<u32>| {
        gid.map(|gid| Group {
            name: name.into(),
            gid,
        })
    };
    Access {
        control: g("kiosk", control),
        invite: g("shoulder-admin", invite),
    }
}

const SESSION: [&str; 5] = ["accept", "decline", "stop-control", "end", "chat"];
const INVITE: [&str; 3] = ["invite", "invite-list", "invite-revoke"];

#[test]
fn root_may_do_everything_whatever_the_config() {
    for a in [access(None, None), access(Some(KIOSK_GID), Some(ADMIN_GID))] {
        let role = a.role(0, &[0]);
        assert_eq!(role, Role::ROOT);
        for cmd in ["status"].iter().chain(&SESSION).chain(&INVITE) {
            assert_eq!(a.check(role, cmd), Ok(()), "{cmd}");
        }
    }
}

#[test]
fn control_group_members_answer_prompts_but_do_not_invite() {
    let a = access(Some(KIOSK_GID), None);
    // Primary or supplementary group: the same.
    for gids in [&[KIOSK_GID][..], &[100, KIOSK_GID]] {
        let role = a.role(KIOSK_UID, gids);
        assert!(role.any());
        assert_eq!(a.check(role, "status"), Ok(()));
        for cmd in SESSION {
            assert_eq!(a.check(role, cmd), Ok(()), "{cmd}");
        }
        for cmd in INVITE {
            let e = a.check(role, cmd).unwrap_err();
            assert_eq!(
                e,
                format!("{cmd} needs root (config invite_group is empty: root only)")
            );
        }
    }
}

#[test]
fn invite_group_members_manage_invitations_only() {
    let a = access(Some(KIOSK_GID), Some(ADMIN_GID));
    let role = a.role(KIOSK_UID, &[ADMIN_GID]);
    assert_eq!(a.check(role, "status"), Ok(()));
    for cmd in INVITE {
        assert_eq!(a.check(role, cmd), Ok(()), "{cmd}");
    }
    let e = a.check(role, "accept").unwrap_err();
    assert_eq!(
        e,
        "accept needs root or membership of group kiosk (config control_group)"
    );
    // In both groups: both sets.
    let both = a.role(KIOSK_UID, &[KIOSK_GID, ADMIN_GID]);
    for cmd in SESSION.iter().chain(&INVITE) {
        assert_eq!(a.check(both, cmd), Ok(()), "{cmd}");
    }
    // A control_group member is not an inviter.
    let kiosk = a.role(KIOSK_UID, &[KIOSK_GID]);
    let e = a.check(kiosk, "invite").unwrap_err();
    assert_eq!(
        e,
        "invite needs root or membership of group shoulder-admin (config invite_group)"
    );
}

#[test]
fn strangers_may_do_nothing() {
    for a in [access(None, None), access(Some(KIOSK_GID), Some(ADMIN_GID))] {
        let role = a.role(STRANGER, &[STRANGER, 100]);
        assert_eq!(role, Role::NONE);
        assert!(!role.any());
        for cmd in ["status"].iter().chain(&SESSION).chain(&INVITE) {
            let e = a.check(role, cmd).unwrap_err();
            assert!(e.starts_with(&format!("{cmd} needs root")), "{e}");
        }
    }
    let e = access(Some(KIOSK_GID), None)
        .check(Role::NONE, "status")
        .unwrap_err();
    assert!(
        e.contains("membership of group kiosk (config control_group)"),
        "{e}"
    );
}

#[test]
fn commands_nobody_classified_are_root_only() {
    let a = access(Some(KIOSK_GID), Some(ADMIN_GID));
    let everything_but_root = a.role(KIOSK_UID, &[KIOSK_GID, ADMIN_GID]);
    assert_eq!(
        a.check(everything_but_root, "factory-reset"),
        Err("factory-reset needs root".into())
    );
    assert_eq!(a.check(Role::ROOT, "factory-reset"), Ok(()));
}

#[test]
fn proc_status_gives_the_effective_uid_and_groups() {
    let status = "Name:\tkiosk\nUid:\t1000\t4244\t4244\t4244\nGid:\t4242\t4242\t4242\t4242\nGroups:\t27 4242 4250 \n";
    assert_eq!(
        parse_proc_status(status),
        Some((4244, vec![27, 4242, 4250]))
    );
    assert_eq!(
        parse_proc_status("Uid:\t0\t0\t0\t0\nGroups:\t\n"),
        Some((0, vec![]))
    );
    assert_eq!(parse_proc_status("Uid:\t0\t0\t0\t0\n"), None);
    assert_eq!(parse_proc_status("Uid:\tx\nGroups:\t1\n"), None);
    assert_eq!(parse_proc_status("Uid:\t1\t2\nGroups:\t1 two\n"), None);
    // Our own status parses, with our own uid.
    let me = std::fs::read_to_string("/proc/self/status").unwrap();
    assert!(parse_proc_status(&me).is_some());
}

// --- the real binary -----------------------------------------------------------

fn write_config(dir: &Path) -> PathBuf {
    let p = dir.join("agent.toml");
    let text = format!(
        r#"enabled = true
listen = ["127.0.0.1:0"]
device_name = "kiosk-under-test"
state_dir = "{d}/state"
audit_log = "{d}/audit.jsonl"
control_socket = "{d}/run/control.sock"
control_group = "{KIOSK_GID}"
capture = "synthetic:320x200"

[argon2]
memory_kib = 1024
iterations = 1

[banner]
presenter = "none"

[input]
inject = "none"
local_input = ""
"#,
        d = dir.display()
    );
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    p
}

/// `shoulder-agent --config CONFIG ctl ARGS` as `uid`:`gid` (no
/// supplementary groups): (success, stderr).
async fn ctl_as(uid: u32, gid: u32, config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bins::agent())
        .arg("--config")
        .arg(config)
        .arg("ctl")
        .args(args)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts the agent as the systemd unit does: its runtime directory exists
/// already (root:root 0750) and is named in `$RUNTIME_DIRECTORY`.
async fn spawn_agent(config: &Path, dir: &Path) -> Child {
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = Command::new(bins::agent())
        .arg("--config")
        .arg(config)
        .arg("run")
        .env("RUNTIME_DIRECTORY", &run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let sock = run.join("control.sock");
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect(&sock).await
            && c.request(&Request::Status).await.is_ok()
        {
            return child;
        }
        assert!(
            t0.elapsed() < WAIT,
            "agent did not start: {}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_app_in_control_group_may_answer_but_not_invite_and_strangers_are_refused() {
    if !nix_root() {
        eprintln!("skipping: needs root to run clients as other users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Other users must reach the config and the socket's directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(dir.path());
    let mut agent = spawn_agent(&config, dir.path()).await;

    // The runtime directory was handed to the group.
    let run = dir.path().join("run");
    let meta = std::fs::metadata(&run).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o750, KIOSK_GID));
    }

    // A stranger cannot even reach the socket.
    let (ok, err) = ctl_as(STRANGER, STRANGER, &config, &["status"]).await;
    assert!(!ok && err.contains("cannot reach the agent"), "{err}");

    // The kiosk app's user reaches it and may answer prompts (none is open
    // here, so the agent says so: not a refusal of the caller).
    let (ok, err) = ctl_as(KIOSK_UID, KIOSK_GID, &config, &["status"]).await;
    assert!(ok, "a control_group member may read the status: {err}");
    let (ok, err) = ctl_as(KIOSK_UID, KIOSK_GID, &config, &["accept"]).await;
    assert!(!ok && err.contains("no session is running"), "{err}");
    // But it may not open the device to outsiders.
    let (ok, err) = ctl_as(
        KIOSK_UID,
        KIOSK_GID,
        &config,
        &["invite", "--expires", "30m"],
    )
    .await;
    assert!(!ok, "a control_group member created an invitation");
    assert!(
        err.contains("invite needs root (config invite_group is empty: root only)"),
        "{err}"
    );
    let sock = run.join("control.sock");
    assert!(
        Client::connect(&sock)
            .await
            .unwrap()
            .request(&Request::InviteList)
            .await
            .unwrap()["invitations"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "no invitation was made"
    );

    // Opened up by mistake (a socket put in a world-searchable directory,
    // mode changed by hand): the peer credentials still keep strangers out.
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = ctl_as(STRANGER, STRANGER, &config, &["end"]).await;
    assert!(!ok, "a stranger ended the session");
    assert!(
        err.contains("end needs root or membership of group 4242 (config control_group)"),
        "{err}"
    );

    // Root may invite.
    let r = Client::connect(&sock)
        .await
        .unwrap()
        .request(&Request::Invite {
            expires: "30m".into(),
            password: None,
            for_whom: None,
        })
        .await
        .unwrap();
    assert_eq!(r["ok"], true, "{r}");

    // Every refusal is audited, with the caller.
    let _ = agent.start_kill();
    let _ = tokio::time::timeout(WAIT, agent.wait()).await;
    let refused: Vec<_> = audit_records(&dir.path().join("audit.jsonl"))
        .into_iter()
        .filter(|r| r["event"] == "control-refused")
        .map(|r| (r["uid"].as_u64(), r["command"].as_str().map(String::from)))
        .collect();
    assert_eq!(
        refused,
        vec![
            (Some(u64::from(KIOSK_UID)), Some("invite".into())),
            (Some(u64::from(STRANGER)), Some("end".into())),
        ]
    );
}

/// Whether the tests run as root (clients can then be started as others).
fn nix_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_proc_status(&s))
        .is_some_and(|(uid, _)| uid == 0)
}
