//! The local control socket: JSON lines over a unix socket (mode 0660, root
//! or `control_group`), for the person at the device, kiosk apps and scripts.
//!
//! Requests, one object per line: `{"cmd":"status"}`,
//! `{"cmd":"accept","prompt":ID}`, `{"cmd":"decline","prompt":ID}` (ID from
//! `status`; without it the prompt open when the request is read, never a
//! later one), `{"cmd":"stop-control"}`, `{"cmd":"end"}`,
//! `{"cmd":"chat","text":"…"}`, `{"cmd":"invite","expires":"30m",
//! "password":"…"}` (password optional: generated), `{"cmd":"invite-list"}`,
//! `{"cmd":"invite-revoke","id":"…"}`.
//!
//! Every request gets one reply line `{"reply":CMD,"ok":true,…}` or
//! `{"reply":CMD,"ok":false,"error":"…"}`. Decisions are answered once the
//! session has taken them: `"changed":false` with a `"detail"` sentence when
//! there was nothing to change (stop control while only viewing), and
//! `"ok":false` when an answer's prompt is no longer open. Events are pushed to every
//! connected client as `{"event":NAME,…}` lines: `consent-requested`,
//! `prompt-closed`, `session-started`, `view-granted`, `control-granted`,
//! `control-revoked`, `session-ended`, `chat`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoulder_proto::session::{LocalDecision, Outcome, PromptId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};

use crate::audit::{AuditLog, Context};
use crate::hub::{CommandError, Hub, SessionCommand};
use crate::invites::Issuer;

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
    Chat {
        text: String,
    },
    Invite {
        expires: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    InviteList,
    InviteRevoke {
        id: String,
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
            Request::Chat { .. } => "chat",
            Request::Invite { .. } => "invite",
            Request::InviteList => "invite-list",
            Request::InviteRevoke { .. } => "invite-revoke",
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
    #[error("unknown group `{0}` in `control_group` (fix: create it, or use a numeric gid)")]
    UnknownGroup(String),
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

/// Binds the socket: parent directory 0750, socket 0660, group as
/// configured. A stale socket from a crash is replaced; a live one is not.
pub async fn bind(path: &Path, group: &str) -> Result<UnixListener, ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.into(),
        source,
    };
    let gid = if group.is_empty() {
        None
    } else {
        Some(resolve_group(group)?)
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(bind_err)?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(bind_err)?;
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
    Ok(listener)
}

/// A group name or number to a gid, from /etc/group (no libc needed).
fn resolve_group(group: &str) -> Result<u32, ControlError> {
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
        .ok_or_else(|| ControlError::UnknownGroup(group.into()))
}

/// What the control server works with.
#[derive(Debug, Clone)]
pub struct ControlServer {
    pub hub: Arc<Hub>,
    pub issuer: Arc<Issuer>,
    pub audit: Arc<AuditLog>,
}

impl ControlServer {
    /// Serves clients until `shutdown` turns true.
    pub async fn serve(self, listener: UnixListener, mut shutdown: watch::Receiver<bool>) {
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
            tokio::spawn(async move {
                server.client(stream, shutdown).await;
                drop(permit);
            });
        }
    }

    async fn client(&self, stream: UnixStream, mut shutdown: watch::Receiver<bool>) {
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut events = self.hub.subscribe();
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
                                let _ = send_line(&mut write, &json!({"reply": "error", "ok": false,
                                    "error": format!("request longer than {MAX_LINE} bytes")})).await;
                                return;
                            }
                        }
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&pending).into_owned();
                            pending.clear();
                            let reply = self.handle(line.trim(), uid).await;
                            if send_line(&mut write, &reply).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
                e = events.recv() => {
                    let v = match e {
                        Ok(v) => v,
                        Err(broadcast::error::RecvError::Lagged(n)) => json!({"event": "lagged", "missed": n}),
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

    async fn handle(&self, line: &str, uid: Option<u32>) -> Value {
        if line.is_empty() {
            return json!({"reply": "error", "ok": false, "error": "empty request"});
        }
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                return json!({"reply": "error", "ok": false,
                    "error": format!("bad request: {e}; send e.g. {{\"cmd\":\"status\"}}")});
            }
        };
        let name = req.name();
        let ok = |extra: Value| {
            let mut v = json!({"reply": name, "ok": true});
            if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
                m.extend(e);
            }
            v
        };
        let fail = |e: String| json!({"reply": name, "ok": false, "error": e});
        let decided = |r: Result<(), String>| match r {
            Ok(()) => ok(json!({"changed": true})),
            Err(e) => fail(e),
        };
        let result = match &req {
            Request::Status => return ok(self.hub.status()),
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
            Request::Chat { text } => {
                return decided(self.command(SessionCommand::Chat(text.clone()), name, uid));
            }
            Request::Invite { expires, password } => {
                let lifetime = match crate::util::parse_duration(expires) {
                    Ok(d) => d,
                    Err(e) => return fail(e),
                };
                let issuer = self.issuer.clone();
                let pw = password.clone();
                let issued =
                    tokio::task::spawn_blocking(move || issuer.issue(lifetime, pw.as_deref()))
                        .await;
                match issued {
                    Ok(Ok(i)) => {
                        let inv = &i.invitation;
                        self.audit_local(
                            "invitation-created",
                            uid,
                            json!({"id": inv.id.to_string(),
                            "expires_unix": inv.expires_unix}),
                        );
                        return ok(json!({
                            "id": inv.id.to_string(),
                            "expires_unix": inv.expires_unix,
                            "text": inv.to_text(),
                            "file": inv.to_file(),
                            "password": i.generated_password,
                        }));
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
            Request::InviteList => match self.issuer.store.list() {
                Ok(list) => return ok(json!({"invitations": list})),
                Err(e) => Err(e.to_string()),
            },
            Request::InviteRevoke { id } => match id.parse() {
                Ok(id) => match self.issuer.store.revoke(id, crate::util::unix_now()) {
                    Ok(()) => {
                        self.audit_local("invitation-revoked", uid, json!({"id": id.to_string()}));
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(format!("{e}")),
            },
        };
        match result {
            Ok(()) => ok(json!({})),
            Err(e) => fail(e),
        }
    }

    fn command(&self, cmd: SessionCommand, name: &str, uid: Option<u32>) -> Result<(), String> {
        let mut fields = json!({"command": name});
        if let SessionCommand::Chat(t) = &cmd {
            fields["text"] = t.clone().into();
        }
        let r = self.hub.command(cmd);
        if r.is_ok() {
            self.audit_local("local-command", uid, fields);
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
    ) -> Value {
        let fail = |e: String| json!({"reply": name, "ok": false, "error": e});
        let outcome = match self.hub.decide(decision, prompt.map(PromptId)) {
            Ok(rx) => rx,
            Err(e) => return fail(e.to_string()),
        };
        let mut fields = json!({"command": name});
        if let Some(p) = prompt {
            fields["prompt"] = p.into();
        }
        self.audit_local("local-command", uid, fields);
        match tokio::time::timeout(DECISION_REPLY_WAIT, outcome).await {
            Ok(Ok(Outcome::Applied)) => json!({"reply": name, "ok": true, "changed": true}),
            Ok(Ok(Outcome::Unchanged { why })) => json!({"reply": name, "ok": true,
                "changed": false, "detail": format!("nothing changed: {why}")}),
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

    fn audit_local(&self, event: &str, uid: Option<u32>, fields: Value) {
        let mut m = match fields {
            Value::Object(m) => m,
            _ => Default::default(),
        };
        m.insert("via".into(), "control-socket".into());
        if let Some(uid) = uid {
            m.insert("uid".into(), uid.into());
        }
        if let Err(e) = self.audit.record(event, &Context::default(), m) {
            tracing::error!(error = %e, "audit record failed");
        }
    }
}

async fn send_line(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut s = v.to_string();
    s.push('\n');
    w.write_all(s.as_bytes()).await
}

/// A control-socket client (`shoulder-agent ctl`, tests, scripts).
#[derive(Debug)]
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
    /// Events received while waiting for a reply.
    pending_events: std::collections::VecDeque<Value>,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.into(),
                source,
            })?;
        let (r, w) = s.into_split();
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
            pending_events: Default::default(),
        })
    }

    /// Sends a request and returns its reply (events that arrive meanwhile
    /// are kept for [`Client::next_event`]).
    pub async fn request(&mut self, req: &Request) -> Result<Value, ControlError> {
        let v = serde_json::to_value(req).map_err(|e| ControlError::BadReply(e.to_string()))?;
        send_line(&mut self.writer, &v).await?;
        loop {
            let v = self.read_value().await?;
            if v.get("reply").is_some() {
                return Ok(v);
            }
            self.pending_events.push_back(v);
        }
    }

    /// The next pushed event.
    pub async fn next_event(&mut self) -> Result<Value, ControlError> {
        if let Some(v) = self.pending_events.pop_front() {
            return Ok(v);
        }
        loop {
            let v = self.read_value().await?;
            if v.get("event").is_some() {
                return Ok(v);
            }
        }
    }

    /// Waits for an event named `name`, skipping others.
    pub async fn wait_event(&mut self, name: &str) -> Result<Value, ControlError> {
        loop {
            let v = self.next_event().await?;
            if v["event"] == name {
                return Ok(v);
            }
        }
    }

    async fn read_value(&mut self) -> Result<Value, ControlError> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64 * 4)
            .read_line(&mut line)
            .await?;
        if n == 0 {
            return Err(ControlError::Closed);
        }
        serde_json::from_str(line.trim()).map_err(|e| ControlError::BadReply(e.to_string()))
    }
}
