//! The local control socket: JSON lines over a unix socket, for the person at
//! the device, kiosk apps and scripts.
//!
//! # Trust boundary
//!
//! The socket decides who answers consent prompts and who opens the device
//! to outsiders, so it checks who is calling, twice:
//!
//! - **Reaching it**: the socket is mode 0660 and its directory 0750, both
//!   owned by root and `control_group`. When the directory is the agent's
//!   own (it created it, or it is the service's `RuntimeDirectory=`, named
//!   in `$RUNTIME_DIRECTORY`) the agent hands it to the group, so members
//!   can get through; anyone else cannot even connect.
//! - **Using it**: every connection's peer credentials (`SO_PEERCRED`: uid,
//!   gid, and the supplementary groups from `/proc/PID/status`) are checked
//!   again, so a socket put in a too-open directory still refuses
//!   strangers. What a caller may do depends on its [`Role`]
//!   ([`Access::role`], a pure function of uid, groups and config):
//!
//! | caller | may |
//! | --- | --- |
//! | root | everything |
//! | member of `control_group` (the kiosk app) | `status`, `accept`, `decline`, `allow-files`, `cancel-file`, `stop-control`, `end`, `chat` |
//! | member of `invite_group` | `status`, `invite`, `invite-list`, `invite-revoke` |
//! | anyone else | nothing: one refusal, then the connection closes |
//!
//! Invitations need root by default (`invite_group` empty): an invitation
//! lets someone from outside ask for the screen. Every refusal is a reply
//! that names the fix, and is audited (`control-refused`).
//!
//! Requests, one object per line: `{"cmd":"status"}`,
//! `{"cmd":"accept","prompt":ID}`, `{"cmd":"decline","prompt":ID}` (ID from
//! `status`; without it the prompt open when the request is read, never a
//! later one), `{"cmd":"allow-files","prompt":ID}` (yes to a file prompt
//! and to every later file of the session), `{"cmd":"cancel-file"}`,
//! `{"cmd":"stop-control"}`, `{"cmd":"end"}`,
//! `{"cmd":"chat","text":"…"}`, `{"cmd":"invite","expires":"30m",
//! "password":"…"}` (password optional: generated), `{"cmd":"invite-list"}`,
//! `{"cmd":"invite-revoke","id":"…"}`, `{"cmd":"rotate","degrees":90}` (a
//! kiosk app that turned its UI; the expert's view, pointer and the banner
//! follow at once), `{"cmd":"rotate-auto"}` (follow what the display says
//! again, from the next session on).
//!
//! Every request gets one reply line `{"reply":CMD,"ok":true,…}` or
//! `{"reply":CMD,"ok":false,"error":"…"}`. Decisions are answered once the
//! session has taken them: `"changed":false` with a `"detail"` sentence when
//! there was nothing to change (stop control while only viewing), and
//! `"ok":false` when an answer's prompt is no longer open. Events are pushed to every
//! connected client as `{"event":NAME,…}` lines: `consent-requested`,
//! `prompt-closed` (a file prompt's `consent-requested` has `"kind":"file"`
//! and `"file":{"to_device","name","size"}`), `session-started`, `view-granted`, `control-granted`,
//! `control-revoked`, `session-ended`, `chat`.

mod client;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoulder_proto::session::{LocalDecision, Outcome, PromptId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::audit::{AuditLog, Context};
use crate::hub::{CommandError, Hub, SessionCommand};
use crate::invites::Issuer;
use crate::records::{AuditRecord, ControlEvent, ControlReply, ReplyBody};
use shoulder_proto::rotation::Rotation;

pub use client::Client;

/// A request line longer than this is refused (a chat line is 512 bytes).
pub const MAX_LINE: usize = 16 * 1024;
/// Control clients connected at once.
const MAX_CLIENTS: usize = 16;
/// How long a decision waits for the session to say what it did. The
/// session loop never waits on the network, so this is only reached when
/// the session is ending as the command arrives.
const DECISION_REPLY_WAIT: Duration = Duration::from_secs(5);

/// A control request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    Accept {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<u64>,
    },
    Decline {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<u64>,
    },
    StopControl,
    End,
    /// Yes to the file prompt, and to every later file of the session
    /// (agents built with `files`).
    #[cfg(feature = "files")]
    AllowFiles {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<u64>,
    },
    /// Cancel the file transfer under way.
    #[cfg(feature = "files")]
    CancelFile,
    Chat {
        text: String,
    },
    Invite {
        expires: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        /// Whom it is for: the consent prompt's headline.
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        for_whom: Option<String>,
    },
    InviteList,
    InviteRevoke {
        id: String,
    },
    /// The panel's rotation: degrees its framebuffer's picture turns
    /// clockwise to read upright (0, 90, 180, 270).
    Rotate {
        degrees: u16,
    },
    /// Follow what the display says again (`rotation = "auto"`), from the
    /// next session on.
    RotateAuto,
    /// Ask a technician for help through the plant's broker (`text`: what
    /// the matter is, may be empty).
    Help {
        #[serde(default)]
        text: String,
    },
    /// Withdraw the open help request.
    HelpWithdraw,
    /// Call a technician's `shoulder listen` (`address`: host[:port];
    /// none: the configured `help_desk`).
    Call {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Accept { .. } => "accept",
            Request::Decline { .. } => "decline",
            Request::StopControl => "stop-control",
            Request::End => "end",
            #[cfg(feature = "files")]
            Request::AllowFiles { .. } => "allow-files",
            #[cfg(feature = "files")]
            Request::CancelFile => "cancel-file",
            Request::Chat { .. } => "chat",
            Request::Invite { .. } => "invite",
            Request::InviteList => "invite-list",
            Request::InviteRevoke { .. } => "invite-revoke",
            Request::Rotate { .. } => "rotate",
            Request::RotateAuto => "rotate-auto",
            Request::Help { .. } => "help",
            Request::HelpWithdraw => "help-withdraw",
            Request::Call { .. } => "call",
        }
    }
}

/// Control socket errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot create the control socket {path}: {source} (fix: check `control_socket` and that the agent runs as root)"
    )]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another agent is already serving {0} (fix: stop it first, or set another `control_socket`)"
    )]
    InUse(PathBuf),
    #[error("unknown group `{group}` in `{key}` (fix: create it, or use a numeric gid)")]
    UnknownGroup { key: &'static str, group: String },
    #[error(
        "cannot reach the agent at {path}: {source} (fix: is `shoulder-agent run` running? are you root or in the control group?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent closed the control connection")]
    Closed,
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the agent sent something that is not JSON: {0}")]
    BadReply(String),
}

/// The bound control socket and who may use it (see the module docs).
#[derive(Debug)]
pub struct ControlListener {
    pub listener: UnixListener,
    pub access: Access,
}

/// Binds the socket `config.control_socket`: socket 0660 and, when the
/// directory is the agent's own, directory 0750, both given to
/// `control_group`. A stale socket from a crash is replaced; a live one is
/// not. The groups are resolved here, so a wrong name stops the start.
pub async fn bind(config: &crate::Config) -> Result<ControlListener, ControlError> {
    let path = config.control_socket.as_path();
    let access = Access::resolve(&config.control_group, &config.invite_group)?;
    let bind_err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    let gid = access.control.as_ref().map(|g| g.gid);
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let created = !dir.exists();
        if created {
            std::fs::create_dir_all(dir).map_err(bind_err)?;
        }
        let runtime_dirs = std::env::var_os("RUNTIME_DIRECTORY");
        if created || is_runtime_directory(dir, runtime_dirs.as_deref()) {
            // systemd makes RuntimeDirectory= root:root; members of the group
            // must get through it to the socket.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .map_err(bind_err)?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(bind_err)?;
            }
        } else if let Some(g) = &access.control {
            warn_if_unreachable(dir, g);
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.into()));
        }
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(bind_err)?;
    }
    Ok(ControlListener { listener, access })
}

/// Whether `dir` is one of the service's runtime directories
/// (`$RUNTIME_DIRECTORY`, colon-separated, set by systemd for
/// `RuntimeDirectory=`): made for the agent alone, so it may set its owner.
fn is_runtime_directory(dir: &Path, runtime_dirs: Option<&std::ffi::OsStr>) -> bool {
    let Some(list) = runtime_dirs.and_then(|l| l.to_str()) else {
        return false;
    };
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let dir = canon(dir);
    list.split(':')
        .filter(|d| !d.is_empty())
        .any(|d| canon(Path::new(d)) == dir)
}

/// A directory the agent does not own may keep group members out; say so
/// at start rather than leave them with "permission denied".
fn warn_if_unreachable(dir: &Path, group: &Group) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.mode();
    let reachable = mode & 0o001 != 0 || (meta.gid() == group.gid && mode & 0o010 != 0);
    if !reachable {
        tracing::warn!(
            "members of group {} cannot reach the control socket: its directory {} is not searchable by them (fix: `chgrp {} {}` and `chmod g+x` it, or put control_socket in a directory of its own)",
            group.name,
            dir.display(),
            group.name,
            dir.display(),
        );
    }
}

/// A group name or number to a gid, from /etc/group (no libc needed).
fn resolve_group(key: &'static str, group: &str) -> Result<u32, ControlError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| ControlError::UnknownGroup {
            key,
            group: group.into(),
        })
}

/// A configured group: its name as written in the config (for messages)
/// and its gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// Who may use the control socket: root, and the configured groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `control_group`: the session commands.
    pub control: Option<Group>,
    /// `invite_group`: the invitation commands.
    pub invite: Option<Group>,
}

/// What a caller of the control socket may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    /// Root: everything, also commands no role lists yet.
    pub root: bool,
    /// Read the status.
    pub status: bool,
    /// Answer prompts, stop control, end the session, chat.
    pub session: bool,
    /// Create, list and revoke invitations.
    pub invite: bool,
}

impl Role {
    pub const ROOT: Role = Role {
        root: true,
        status: true,
        session: true,
        invite: true,
    };
    pub const NONE: Role = Role {
        root: false,
        status: false,
        session: false,
        invite: false,
    };

    /// Whether the caller may do anything at all (else the connection is
    /// refused at its first request).
    pub fn any(self) -> bool {
        self.root || self.status || self.session || self.invite
    }
}

/// The control commands a `control_group` member may send.
const SESSION_COMMANDS: [&str; 12] = [
    "accept",
    "decline",
    "allow-files",
    "cancel-file",
    "stop-control",
    "end",
    "chat",
    "rotate",
    "rotate-auto",
    "help",
    "help-withdraw",
    "call",
];
/// The invitation commands.
const INVITE_COMMANDS: [&str; 3] = ["invite", "invite-list", "invite-revoke"];

impl Access {
    /// Resolves the configured group names (empty: root only).
    pub fn resolve(control_group: &str, invite_group: &str) -> Result<Self, ControlError> {
        let group = |key, name: &str| -> Result<Option<Group>, ControlError> {
            if name.is_empty() {
                return Ok(None);
            }
            Ok(Some(Group {
                name: name.into(),
                gid: resolve_group(key, name)?,
            }))
        };
        Ok(Self {
            control: group("control_group", control_group)?,
            invite: group("invite_group", invite_group)?,
        })
    }

    /// What a caller with user id `uid` and groups `gids` (primary and
    /// supplementary) may do.
    pub fn role(&self, uid: u32, gids: &[u32]) -> Role {
        if uid == 0 {
            return Role::ROOT;
        }
        let member = |g: &Option<Group>| g.as_ref().is_some_and(|g| gids.contains(&g.gid));
        let session = member(&self.control);
        let invite = member(&self.invite);
        Role {
            root: false,
            status: session || invite,
            session,
            invite,
        }
    }

    /// Whether `role` may send the command `cmd` (a [`Request::name`]); the
    /// refusal names the fix.
    pub fn check(&self, role: Role, cmd: &str) -> Result<(), String> {
        let allowed = match cmd {
            "status" => role.status,
            c if SESSION_COMMANDS.contains(&c) => role.session,
            c if INVITE_COMMANDS.contains(&c) => role.invite,
            // A command this table does not know yet: root only, until
            // someone decides who else may use it.
            _ => role.root,
        };
        if allowed {
            return Ok(());
        }
        let needs = |g: &Option<Group>, key: &str| match g {
            Some(g) => format!("root or membership of group {} (config {key})", g.name),
            None => format!("root (config {key} is empty: root only)"),
        };
        let who = if cmd == "status" {
            format!(
                "{} or {}",
                needs(&self.control, "control_group"),
                needs(&self.invite, "invite_group")
            )
        } else if SESSION_COMMANDS.contains(&cmd) {
            needs(&self.control, "control_group")
        } else if INVITE_COMMANDS.contains(&cmd) {
            needs(&self.invite, "invite_group")
        } else {
            "root".into()
        };
        Err(format!("{cmd} needs {who}"))
    }
}

/// The caller at the other end of a control connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The primary gid and the supplementary groups.
    pub gids: Vec<u32>,
}

impl Peer {
    /// The credentials the kernel recorded when the peer connected, and its
    /// supplementary groups from `/proc/PID/status` (only if that process
    /// still has the same uid: a pid reused since is not believed).
    fn of(stream: &UnixStream) -> std::io::Result<Self> {
        let cred = stream.peer_cred()?;
        let mut gids = vec![cred.gid()];
        if let Some(pid) = cred.pid().filter(|p| *p > 0)
            && let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some((uid, groups)) = parse_proc_status(&status)
            && uid == cred.uid()
        {
            gids.extend(groups);
        }
        Ok(Self {
            uid: cred.uid(),
            gids,
        })
    }
}

/// The effective uid and the supplementary groups in a `/proc/PID/status`
/// text (`Uid:` real, effective, saved, fs; `Groups:` space-separated).
pub fn parse_proc_status(status: &str) -> Option<(u32, Vec<u32>)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
    };
    let uid = field("Uid")?.split_whitespace().nth(1)?.parse().ok()?;
    let groups = field("Groups")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()
        .ok()?;
    Some((uid, groups))
}

/// What the control server works with.
#[derive(Debug, Clone)]
pub struct ControlServer {
    pub hub: Arc<Hub>,
    pub issuer: Arc<Issuer>,
    pub audit: Arc<AuditLog>,
    pub help: Arc<crate::help::HelpDesk>,
    pub caller: Arc<crate::call::Caller>,
}

impl ControlServer {
    /// Serves clients until `shutdown` turns true.
    pub async fn serve(self, listener: ControlListener, mut shutdown: watch::Receiver<bool>) {
        let ControlListener { listener, access } = listener;
        let access = Arc::new(access);
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.changed() => return,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!("too many control clients; refusing one");
                continue;
            };
            let server = self.clone();
            let shutdown = shutdown.clone();
            let access = access.clone();
            tokio::spawn(async move {
                server.client(stream, &access, shutdown).await;
                drop(permit);
            });
        }
    }

    async fn client(
        &self,
        stream: UnixStream,
        access: &Access,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // No credentials, no trust: such a caller may do nothing.
        let peer = Peer::of(&stream).ok();
        let uid = peer.as_ref().map(|p| p.uid);
        let role = peer
            .as_ref()
            .map_or(Role::NONE, |p| access.role(p.uid, &p.gids));
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        // Strangers hear no events (names of experts, chat).
        let mut events = self.hub.subscribe();
        let events_on = role.any();
        // Bytes of the request being received; kept across select! rounds
        // (read_until is cancel-safe: partial reads stay in the buffer).
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let room = (MAX_LINE + 1).saturating_sub(pending.len()) as u64;
            let mut limited = (&mut reader).take(room);
            tokio::select! {
                r = limited.read_until(b'\n', &mut pending) => {
                    match r {
                        Ok(0) => return,
                        Ok(_) if pending.last() != Some(&b'\n') => {
                            if pending.len() > MAX_LINE {
                                let reply = ControlReply::error(
                                    "error",
                                    format!("request longer than {MAX_LINE} bytes"),
                                );
                                let _ = send_line(&mut write, &reply.to_value()).await;
                                return;
                            }
                        }
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&pending).into_owned();
                            pending.clear();
                            let reply = self.handle(line.trim(), uid, access, role).await;
                            if send_line(&mut write, &reply.to_value()).await.is_err() || !role.any() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                e = events.recv(), if events_on => {
                    let v = match e {
                        Ok(v) => v,
                        Err(broadcast::error::RecvError::Lagged(n)) => ControlEvent::Lagged { missed: n }.to_value(),
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if send_line(&mut write, &v).await.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn handle(
        &self,
        line: &str,
        uid: Option<u32>,
        access: &Access,
        role: Role,
    ) -> ControlReply {
        if line.is_empty() {
            return ControlReply::error("error", "empty request");
        }
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                return ControlReply::error(
                    "error",
                    format!("bad request: {e}; send e.g. {{\"cmd\":\"status\"}}"),
                );
            }
        };
        let name = req.name();
        if let Err(refusal) = access.check(role, name) {
            self.audit_local(
                AuditRecord::ControlRefused {
                    command: name,
                    error: &refusal,
                },
                uid,
            );
            return ControlReply::error(name, refusal);
        }
        let ok = |body| ControlReply::new(name, body);
        let fail = |e: String| ControlReply::error(name, e);
        let decided = |r: Result<(), String>| match r {
            Ok(()) => ok(ReplyBody::Taken {
                changed: true,
                detail: None,
            }),
            Err(e) => fail(e),
        };
        let result = match &req {
            Request::Status => return ok(ReplyBody::Status(self.hub.status())),
            Request::Accept { prompt } => {
                return self.decide(LocalDecision::Accept, *prompt, name, uid).await;
            }
            Request::Decline { prompt } => {
                return self
                    .decide(LocalDecision::Decline, *prompt, name, uid)
                    .await;
            }
            Request::StopControl => {
                return self
                    .decide(LocalDecision::StopControl, None, name, uid)
                    .await;
            }
            Request::End => return self.decide(LocalDecision::End, None, name, uid).await,
            #[cfg(feature = "files")]
            Request::AllowFiles { prompt } => {
                return self
                    .decide(LocalDecision::AllowFiles, *prompt, name, uid)
                    .await;
            }
            #[cfg(feature = "files")]
            Request::CancelFile => {
                return self
                    .decide(LocalDecision::CancelFile, None, name, uid)
                    .await;
            }
            Request::Chat { text } => {
                return decided(self.command(SessionCommand::Chat(text.clone()), name, uid));
            }
            Request::Help { text } => {
                if text.len() > 4 * crate::help::MAX_HELP_TEXT {
                    return fail(format!(
                        "the help text is too long ({} bytes; at most {} are kept)",
                        text.len(),
                        crate::help::MAX_HELP_TEXT
                    ));
                }
                // Without a broker, a configured help desk is called.
                if !self.help.has_broker() && self.caller.help_desk.is_some() {
                    let target = self.caller.target(None).unwrap_or_default();
                    return match self.caller.call(&target).await {
                        Ok(peer) => ok(ReplyBody::Taken {
                            changed: true,
                            detail: Some(format!(
                                "called the help desk at {target} ({peer}); the technician is asked to take it"
                            )),
                        }),
                        Err(e) => fail(e),
                    };
                }
                return match self.help.ask(text) {
                    Ok(r) => ok(ReplyBody::Taken {
                        changed: true,
                        detail: Some(format!(
                            "help request {} sent to the technicians; it expires in {} unless answered or withdrawn",
                            r.id,
                            shoulder_proto::human_duration(
                                r.expires_unix.saturating_sub(r.asked_unix)
                            )
                        )),
                    }),
                    Err(e) => fail(e),
                };
            }
            Request::Call { address } => {
                let target = match self.caller.target(address.as_deref()) {
                    Ok(t) => t,
                    Err(e) => return fail(e),
                };
                return match self.caller.call(&target).await {
                    Ok(peer) => ok(ReplyBody::Taken {
                        changed: true,
                        detail: Some(format!(
                            "called {target} ({peer}); the session starts when the technician's client answers, with the usual prompt"
                        )),
                    }),
                    Err(e) => fail(e),
                };
            }
            Request::HelpWithdraw => {
                let old = self.help.withdraw();
                return ok(ReplyBody::Taken {
                    changed: old.is_some(),
                    detail: Some(match old {
                        Some(r) => format!("help request {} withdrawn", r.id),
                        None => "nothing changed: no help request was open".into(),
                    }),
                });
            }
            Request::Invite {
                expires,
                password,
                for_whom,
            } => {
                let lifetime = match crate::util::parse_duration(expires) {
                    Ok(d) => d,
                    Err(e) => return fail(e),
                };
                let issuer = self.issuer.clone();
                let (pw, made_for) = (password.clone(), for_whom.clone());
                let issued = tokio::task::spawn_blocking(move || {
                    issuer.issue(lifetime, pw.as_deref(), made_for.as_deref())
                })
                .await;
                match issued {
                    Ok(Ok(i)) => {
                        let inv = &i.invitation;
                        self.audit_local(
                            AuditRecord::InvitationCreated {
                                id: inv.id.to_string(),
                                expires_unix: inv.expires_unix,
                                for_whom: i.for_whom.clone(),
                            },
                            uid,
                        );
                        return ok(ReplyBody::Invitation {
                            id: inv.id.to_string(),
                            expires_unix: inv.expires_unix,
                            text: inv.to_text(),
                            file: inv.to_file(),
                            password: i.generated_password,
                            for_whom: i.for_whom,
                        });
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Request::InviteList => match self.issuer.store.list() {
                Ok(invitations) => return ok(ReplyBody::Invitations { invitations }),
                Err(e) => Err(e.to_string()),
            },
            Request::Rotate { degrees } => match Rotation::from_degrees(*degrees) {
                Some(r) => {
                    let changed = self.hub.set_rotation(r);
                    if changed {
                        self.audit_local(AuditRecord::RotationChanged { degrees: *degrees }, uid);
                    }
                    return ok(ReplyBody::Taken {
                        changed,
                        detail: (!changed)
                            .then(|| format!("nothing changed: the panel is at {r} already")),
                    });
                }
                None => Err(format!(
                    "rotation {degrees} is not one of 0, 90, 180, 270 (degrees the picture in the framebuffer turns clockwise to read upright)"
                )),
            },
            Request::RotateAuto => {
                let changed = self.hub.unpin_rotation();
                if changed {
                    self.audit_local(AuditRecord::RotationFollowsDisplay, uid);
                }
                return ok(ReplyBody::Taken {
                    changed,
                    detail: Some(if changed {
                        "the rotation follows what the display says from the next session on".into()
                    } else {
                        "nothing changed: the rotation follows the display already".into()
                    }),
                });
            }
            Request::InviteRevoke { id } => match id.parse() {
                Ok(id) => match self.issuer.store.revoke(id, crate::util::unix_now()) {
                    Ok(()) => {
                        self.audit_local(
                            AuditRecord::InvitationRevoked { id: id.to_string() },
                            uid,
                        );
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(()) => ok(ReplyBody::Done {}),
            Err(e) => fail(e),
        }
    }

    fn command(&self, cmd: SessionCommand, name: &str, uid: Option<u32>) -> Result<(), String> {
        let text = match &cmd {
            SessionCommand::Chat(t) => Some(t.clone()),
            _ => None,
        };
        let r = self.hub.command(cmd);
        if r.is_ok() {
            let record = AuditRecord::LocalCommand {
                command: name,
                text: text.as_deref(),
                prompt: None,
            };
            self.audit_local(record, uid);
        }
        r.map_err(|e: CommandError| e.to_string())
    }

    /// Hands a decision to the session and replies with what it did.
    async fn decide(
        &self,
        decision: LocalDecision,
        prompt: Option<u64>,
        name: &'static str,
        uid: Option<u32>,
    ) -> ControlReply {
        let fail = |e: String| ControlReply::error(name, e);
        let outcome = match self.hub.decide(decision, prompt.map(PromptId)) {
            Ok(rx) => rx,
            Err(e) => return fail(e.to_string()),
        };
        let record = AuditRecord::LocalCommand {
            command: name,
            text: None,
            prompt,
        };
        self.audit_local(record, uid);
        match tokio::time::timeout(DECISION_REPLY_WAIT, outcome).await {
            Ok(Ok(Outcome::Applied)) => ControlReply::new(
                name,
                ReplyBody::Taken {
                    changed: true,
                    detail: None,
                },
            ),
            Ok(Ok(Outcome::Unchanged { why })) => ControlReply::new(
                name,
                ReplyBody::Taken {
                    changed: false,
                    detail: Some(format!("nothing changed: {why}")),
                },
            ),
            Ok(Ok(Outcome::Stale { prompt, open })) => fail(match open {
                Some(open) => format!(
                    "prompt {prompt} is not open (prompt {open} is); nothing changed — answer it by its id"
                ),
                None => format!("prompt {prompt} is no longer open; nothing changed"),
            }),
            // The session ended as the command arrived.
            Ok(Err(_)) => fail(CommandError::NoSession.to_string()),
            Err(_) => fail("the session did not take the command in time; check `status`".into()),
        }
    }

    fn audit_local(&self, record: AuditRecord<'_>, uid: Option<u32>) {
        let (event, mut m) = record.into_parts();
        m.insert("via".into(), "control-socket".into());
        if let Some(uid) = uid {
            m.insert("uid".into(), uid.into());
        }
        if let Err(e) = self.audit.record(&event, &Context::default(), m) {
            tracing::error!(error = %e, "audit record failed");
        }
    }
}

pub(super) async fn send_line(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    v: &Value,
) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::time::Instant;

    use serde_json::json;

    use shoulder_proto::ConsentKind;

    use crate::hub::PromptInfo;

    /// A server over `dir`, with a cheap argon2 cost.
    fn server(dir: &Path) -> ControlServer {
        let argon2 = crate::config::Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        let issuer = Issuer {
            store: crate::invites::InvitationStore::new(dir, &argon2).unwrap(),
            device_name: "kiosk".into(),
            addresses: vec!["10.0.0.2".into()],
            port: shoulder_proto::DEFAULT_PORT,
            fingerprint: shoulder_proto::Fingerprint([7; 32]),
            max_lifetime: Duration::from_secs(3600),
            broker: None,
        };
        let audit = Arc::new(AuditLog::open(&dir.join("audit.jsonl"), 1 << 20, 1).unwrap());
        let hub = Hub::new(json!({"device_name": "kiosk"}));
        ControlServer {
            caller: Arc::new(crate::call::Caller {
                tx: tokio::sync::mpsc::channel(1).0,
                help_desk: None,
                hub: hub.clone(),
                audit: audit.clone(),
            }),
            hub,
            issuer: Arc::new(issuer),
            help: crate::help::HelpDesk::new(None, Duration::from_secs(3600), audit.clone()),
            audit,
        }
    }

    async fn reply(s: &ControlServer, line: &str, role: Role) -> String {
        s.handle(line, Some(1000), &Access::default(), role)
            .await
            .to_value()
            .to_string()
    }

    /// The JSON text of every kind of reply, as scripts read it.
    #[tokio::test]
    async fn replies_keep_their_json() {
        let d = tempfile::tempdir().unwrap();
        let s = server(d.path());
        let root = Role::ROOT;
        for (line, role, want) in [
            (
                "",
                root,
                r#"{"error":"empty request","ok":false,"reply":"error"}"#,
            ),
            (
                "x",
                root,
                r#"{"error":"bad request: expected value at line 1 column 1; send e.g. {\"cmd\":\"status\"}","ok":false,"reply":"error"}"#,
            ),
            (
                r#"{"cmd":"status"}"#,
                Role::NONE,
                r#"{"error":"status needs root (config control_group is empty: root only) or root (config invite_group is empty: root only)","ok":false,"reply":"status"}"#,
            ),
            (
                r#"{"cmd":"status"}"#,
                root,
                r#"{"agent":{"device_name":"kiosk"},"ok":true,"reply":"status","session":null}"#,
            ),
            (
                r#"{"cmd":"chat","text":"hi"}"#,
                root,
                r#"{"error":"no session is running","ok":false,"reply":"chat"}"#,
            ),
            (
                r#"{"cmd":"accept"}"#,
                root,
                r#"{"error":"no session is running","ok":false,"reply":"accept"}"#,
            ),
            (
                r#"{"cmd":"invite","expires":"5x"}"#,
                root,
                r#"{"error":"`5x`: unknown unit `x` (use ms, s, m, h or d)","ok":false,"reply":"invite"}"#,
            ),
            (
                r#"{"cmd":"invite","expires":"5h"}"#,
                root,
                r#"{"error":"--expires 5h is longer than max_invitation_lifetime (1h) (fix: ask for less, or raise the limit in the config)","ok":false,"reply":"invite"}"#,
            ),
            (
                r#"{"cmd":"invite-revoke","id":"nope"}"#,
                root,
                r#"{"error":"an invitation id is 16 hexadecimal digits (as printed by `shoulder-agent invite --list`)","ok":false,"reply":"invite-revoke"}"#,
            ),
            (
                r#"{"cmd":"invite-list"}"#,
                root,
                r#"{"invitations":[],"ok":true,"reply":"invite-list"}"#,
            ),
        ] {
            assert_eq!(reply(&s, line, role).await, want, "{line}");
        }

        // Invitations: their ids, texts and times differ run to run.
        let given = reply(
            &s,
            r#"{"cmd":"invite","expires":"30m","password":"secret pw"}"#,
            root,
        )
        .await;
        let v: Value = serde_json::from_str(&given).unwrap();
        let field = |k: &str| v[k].to_string();
        assert_eq!(
            given,
            format!(
                r#"{{"expires_unix":{},"file":{},"id":{},"ok":true,"password":null,"reply":"invite","text":{}}}"#,
                field("expires_unix"),
                field("file"),
                field("id"),
                field("text")
            )
        );
        let generated = reply(&s, r#"{"cmd":"invite","expires":"30m"}"#, root).await;
        let g: Value = serde_json::from_str(&generated).unwrap();
        assert!(g["password"].is_string(), "{generated}");
        let id = v["id"].as_str().unwrap();
        let list = reply(&s, r#"{"cmd":"invite-list"}"#, root).await;
        let l: Value = serde_json::from_str(&list).unwrap();
        let first = &l["invitations"][0];
        assert_eq!(
            list.split(r#"},{"#).next().unwrap(),
            format!(
                r#"{{"invitations":[{{"created_unix":{},"expires_unix":{},"id":"{id}","state":"open","wrong_passwords":0"#,
                first["created_unix"], first["expires_unix"]
            )
        );
        assert_eq!(
            reply(
                &s,
                &format!(r#"{{"cmd":"invite-revoke","id":"{id}"}}"#),
                root
            )
            .await,
            r#"{"ok":true,"reply":"invite-revoke"}"#
        );

        // With a session, whose answers are scripted.
        let (slot, mut commands) = s.hub.claim("s1", "Ann", "offer", "10.0.0.9").unwrap();
        slot.set_prompt(Some(PromptInfo {
            id: PromptId(4),
            kind: ConsentKind::Control,
            deadline: Instant::now() + Duration::from_millis(30_500),
        }));
        let mut outcomes = vec![
            Outcome::Stale {
                prompt: PromptId(3),
                open: None,
            },
            Outcome::Stale {
                prompt: PromptId(3),
                open: Some(PromptId(4)),
            },
            Outcome::Unchanged {
                why: "only viewing",
            },
            Outcome::Applied,
        ];
        tokio::spawn(async move {
            while let Some(c) = commands.recv().await {
                if let SessionCommand::Local {
                    reply: Some(tx), ..
                } = c
                {
                    let _ = tx.send(outcomes.pop().unwrap());
                }
            }
        });
        for (line, want) in [
            (
                r#"{"cmd":"status"}"#,
                r#"{"agent":{"device_name":"kiosk"},"ok":true,"reply":"status","session":{"expert":"Ann","how":"offer","id":"s1","phase":"authenticated","prompt":{"id":4,"kind":"control","remaining_secs":30},"since_secs":0,"source":"10.0.0.9"}}"#,
            ),
            (
                r#"{"cmd":"accept"}"#,
                r#"{"changed":true,"ok":true,"reply":"accept"}"#,
            ),
            (
                r#"{"cmd":"stop-control"}"#,
                r#"{"changed":false,"detail":"nothing changed: only viewing","ok":true,"reply":"stop-control"}"#,
            ),
            (
                r#"{"cmd":"decline","prompt":3}"#,
                r#"{"error":"prompt 3 is not open (prompt 4 is); nothing changed — answer it by its id","ok":false,"reply":"decline"}"#,
            ),
            (
                r#"{"cmd":"end"}"#,
                r#"{"error":"prompt 3 is no longer open; nothing changed","ok":false,"reply":"end"}"#,
            ),
            (
                r#"{"cmd":"chat","text":"hi"}"#,
                r#"{"changed":true,"ok":true,"reply":"chat"}"#,
            ),
            (
                r#"{"cmd":"accept","prompt":9}"#,
                r#"{"error":"prompt 9 has not been shown; answer a prompt by the id `status` gives","ok":false,"reply":"accept"}"#,
            ),
        ] {
            assert_eq!(reply(&s, line, root).await, want, "{line}");
        }
    }

    /// A request line that never ends is refused in one reply line.
    #[tokio::test]
    async fn an_overlong_request_gets_one_error_line() {
        let d = tempfile::tempdir().unwrap();
        let s = server(d.path());
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let served = tokio::spawn(async move {
            s.client(theirs, &Access::default(), shutdown).await;
        });
        let (read, mut write) = ours.into_split();
        write.write_all(&vec![b'x'; MAX_LINE + 2]).await.unwrap();
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await.unwrap();
        assert_eq!(
            line,
            format!(
                "{{\"error\":\"request longer than {MAX_LINE} bytes\",\"ok\":false,\"reply\":\"error\"}}\n"
            )
        );
        served.await.unwrap();
    }

    #[test]
    fn only_the_services_runtime_directories_are_its_own() {
        let d = tempfile::tempdir().unwrap();
        let listed = format!("/run/other:{}", d.path().display());
        assert!(is_runtime_directory(d.path(), Some(OsStr::new(&listed))));
        // The same directory by another spelling.
        let dotted = format!("{}/.", d.path().display());
        assert!(is_runtime_directory(d.path(), Some(OsStr::new(&dotted))));
        assert!(!is_runtime_directory(d.path(), None));
        assert!(!is_runtime_directory(
            d.path(),
            Some(OsStr::new("/run/other:"))
        ));
        assert!(!is_runtime_directory(
            Path::new("/tmp"),
            Some(OsStr::new(""))
        ));
    }

    #[test]
    fn unknown_groups_name_the_key() {
        let e = Access::resolve("", "no-such-group-here").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown group `no-such-group-here` in `invite_group` (fix: create it, or use a numeric gid)"
        );
        let a = Access::resolve("4242", "").unwrap();
        assert_eq!(
            a.control,
            Some(Group {
                name: "4242".into(),
                gid: 4242
            })
        );
        assert_eq!(a.invite, None);
    }
}
