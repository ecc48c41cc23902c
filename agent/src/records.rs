//! What the service writes: audit records and control-socket events, as
//! types. This is the one statement of both formats; tests and scripts
//! parse them, so a change here is a format change.
//!
//! Both are JSON objects whose keys come out sorted (they pass through a
//! `serde_json::Map`). Audit records also carry the context fields `time`,
//! `session`, `source`, `expert`, `method` and `fingerprint` (see
//! [`crate::audit`]). Reasons are written as the names listed under
//! [`AuditName`].
//!
//! Audit records (`event`: fields):
//! - `identity-created`: `device_fingerprint`
//! - `agent-started`: `version`, `listening` (addresses), `device_fingerprint`,
//!   `enabled`, `pre_auth_log`
//! - `agent-stopped`: none
//! - `connect`: `tls` (`"1.3"`), `alpn` (`"shoulder/1"`), `client_certificate`
//! - `hello`: `software`, `software_version`
//! - `auth-ok`: `how`, `issuer` (plant CA of an offer, else null), `says`
//!   (the name the expert gave themselves, when it differs from the
//!   identified one; else absent)
//! - `auth-failed`: `reason`, `detail`
//! - `resume-handover`: none (the connection continues a session on hold)
//! - `consent-asked`: `kind` (`view`/`control`)
//! - `consent-answered`: `kind`, `granted`, `reason` (a decline reason or null)
//! - `control-granted`: none
//! - `control-revoked`: `reason` (a control end reason), and `while`
//!   (`"reconnecting"`) if control ended while the connection was down
//! - `chat`: `from` (`expert`/`device`), `text` (the first 50 lines of a
//!   session; the rest are counted in `bye`)
//! - `input-rate-limited`: none
//! - `type-text`: `chars`, `layout` (never the text: it may be a password)
//! - `type-stopped`: `typed` (characters typed before), `why`
//!   (`local-user-active`, `control-ended`, `stopped`, `connection-lost`)
//! - `injection-failed`: `detail`
//! - `stale-answer`: `prompt`, `open_prompt` (or null)
//! - `suspended`: `detail`
//! - `resumed`: none
//! - transfers (feature `files`): `file-asked`: `direction` (`get`/`put`),
//!   `name`, `size`; `file-answered`: `granted`, `for_session`;
//!   `file-ended`: `direction`, `name`, `size`, `sha256` (when every byte
//!   went), `outcome`; `file-listed`: `dir` (empty: the readable
//!   directories), `entries` (null if refused; the first 50 listings of a
//!   session)
//! - with `[record]` (feature `record`): `record-closed`: `file`, `chunks`,
//!   `bytes`, `hash` (the chain hash the device signed), `signature` (hex),
//!   `scheme` (TLS signature scheme), `complete` (the signed end was
//!   written), `screen` (`recorded`, `stopped`, `not recorded`),
//!   `events_lost`; `record-degraded`: `file`, `why` (the screen is no
//!   longer recorded); `record-failed`: `file`, `detail`
//! - `ignored`: `message`, `state` (the first 20 of a session; the rest
//!   are counted in `bye`)
//! - `bye`: `reason`, `detail`, `bytes_sent`, `bytes_received`,
//!   `ignored_messages`, `chats_not_audited`, `held_back_inputs`,
//!   `duration_ms`
//!
//! Records of control-socket commands (with `via`: `"control-socket"` and
//! the caller's `uid` where known):
//! - `control-refused`: `command`, `error`
//! - `local-command`: `command`, and `text` (chat) or `prompt` (an answer
//!   naming its prompt)
//! - `invitation-created`: `id`, `expires_unix`, `for` (whom it is for, when
//!   given)
//! - `invitation-revoked`: `id`
//! - `call-placed`: `address`, `peer` (`ctl call`, or `ctl help` calling
//!   the `help_desk`); `call-failed`: `address`, `detail`
//! - `help-requested`: `id`, `text`, `expires_unix` (`ctl help`); then
//!   one of `help-withdrawn`: `id` (`ctl help --withdraw`, or a new
//!   request), `help-expired`: `id` (without `via`), `help-answered`:
//!   `id`, `expert` (the person let that expert see the screen; without
//!   `via`)
//! - `rotation-changed`: `degrees` (`ctl rotate`)
//! - `rotation-follows-display`: (`ctl rotate auto`)
//!
//! Records about the logs and unauthenticated connections:
//! - `log-repaired`: `bytes_removed` (a torn last line cut off at open)
//! - `pre-auth-records-not-kept`: `records` (held records of a connection
//!   that authenticated late, beyond those kept)
//! - in the pre-auth log (see [`crate::admission`]), per interval:
//!   `pre-auth-summary` (`source` in the context): `connections`,
//!   `failures`, `reasons` (count per reason name), `last_detail`,
//!   `fingerprints`, `first`, `last`; and `pre-auth-totals`: `sources`,
//!   `connections`, `failures`, `hashes`, `most_hashes_at_once`,
//!   `hash_queue_full`, `hash_wait_expired`
//!
//! Control-socket events (`event`: fields), sent only by the session that
//! holds the device's session slot, except `lagged`:
//! - `session-started`: `session`, `expert`, `how`, `source`
//! - `consent-requested`: `kind`, `expert`, `how`, `says` (as in
//!   `auth-ok`), `timeout_secs`, and `help` (the text of the person's open
//!   help request, which a request to see the screen recalls)
//! - `prompt-closed`: none
//! - `view-granted`, `control-granted`, `control-revoked`: none
//! - `reconnecting`: `grace_secs`
//! - `resumed`: `phase` (`viewing`/`controlling`)
//! - `chat`: `from` (`expert`/`device`), `text`
//! - `session-ended`: `reason`, `sentence`, `detail`
//! - `lagged`: `missed` (events this subscriber missed by reading slowly)
//!
//! Control-socket replies are [`ControlReply`]s (see [`crate::control`]); the
//! `status` reply shows the agent as [`AgentInfo`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use shoulder_proto::{ByeReason, ControlEndReason, DeclineReason};

/// An audit record's event and fields.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum AuditRecord<'a> {
    IdentityCreated {
        device_fingerprint: &'a str,
    },
    AgentStarted {
        version: &'static str,
        listening: Vec<String>,
        device_fingerprint: &'a str,
        enabled: bool,
        pre_auth_log: String,
    },
    AgentStopped,
    Connect {
        tls: &'static str,
        alpn: &'static str,
        client_certificate: bool,
    },
    Hello {
        software: String,
        software_version: String,
    },
    AuthOk {
        how: String,
        issuer: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        says: Option<String>,
    },
    AuthFailed {
        #[serde(serialize_with = "audit_name")]
        reason: ByeReason,
        detail: String,
    },
    ResumeHandover,
    ConsentAsked {
        kind: &'static str,
    },
    ConsentAnswered {
        kind: &'static str,
        granted: bool,
        #[serde(serialize_with = "audit_name_or_null")]
        reason: Option<DeclineReason>,
    },
    ControlGranted,
    ControlRevoked {
        #[serde(serialize_with = "audit_name")]
        reason: ControlEndReason,
        /// `Some("reconnecting")` when control ended while away.
        #[serde(rename = "while", skip_serializing_if = "Option::is_none")]
        during: Option<&'static str>,
    },
    Chat {
        from: &'static str,
        text: String,
    },
    InputRateLimited,
    TypeText {
        chars: usize,
        layout: &'static str,
    },
    TypeStopped {
        typed: u16,
        why: &'static str,
    },
    /// The person is asked about a file (or it was allowed for the session).
    #[cfg(feature = "files")]
    FileAsked {
        direction: &'static str,
        name: String,
        size: u64,
    },
    #[cfg(feature = "files")]
    FileAnswered {
        granted: bool,
        for_session: bool,
    },
    /// A transfer ended: `sha256` is the digest of the bytes that went,
    /// when all did.
    /// A readable directory was listed for the expert (`entries`: how
    /// many it had, none if refused).
    #[cfg(feature = "files")]
    FileListed {
        dir: String,
        entries: Option<usize>,
    },
    #[cfg(feature = "files")]
    FileEnded {
        direction: &'static str,
        name: String,
        size: u64,
        sha256: Option<String>,
        outcome: String,
    },
    InjectionFailed {
        detail: String,
    },
    StaleAnswer {
        prompt: u64,
        open_prompt: Option<u64>,
    },
    Suspended {
        detail: String,
    },
    Resumed,
    Ignored {
        message: &'static str,
        state: &'static str,
    },
    /// A control-socket command the caller's role may not use.
    ControlRefused {
        command: &'a str,
        error: &'a str,
    },
    /// A command from the person at the device (or their scripts).
    LocalCommand {
        command: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        prompt: Option<u64>,
    },
    InvitationCreated {
        id: String,
        expires_unix: u64,
        #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
        for_whom: Option<String>,
    },
    InvitationRevoked {
        id: String,
    },
    /// `ctl call`: the device called a technician's `shoulder listen`.
    CallPlaced {
        address: String,
        peer: String,
    },
    CallFailed {
        address: String,
        detail: String,
    },
    /// `ctl help`: the person asked for a technician.
    HelpRequested {
        id: String,
        text: String,
        expires_unix: u64,
    },
    HelpWithdrawn {
        id: String,
    },
    HelpExpired {
        id: String,
    },
    /// The person let `expert` see the screen while the request was open.
    HelpAnswered {
        id: String,
        expert: String,
    },
    /// `ctl rotate`: the panel is turned `degrees` clockwise from now on.
    RotationChanged {
        degrees: u16,
    },
    /// `ctl rotate auto`: the rotation follows the display again.
    RotationFollowsDisplay,
    /// A torn last line cut off when the log was opened.
    LogRepaired {
        bytes_removed: u64,
    },
    /// Records of a connection that authenticated after this many were
    /// held: the rest were only counted.
    PreAuthRecordsNotKept {
        records: u64,
    },
    /// Connections from one source (`source` in the context) that never
    /// authenticated, per interval (pre-auth log).
    PreAuthSummary {
        connections: u64,
        failures: u64,
        /// How many ended for each reason (the part of the name before ` {`).
        reasons: &'a BTreeMap<String, u64>,
        last_detail: Option<&'a str>,
        fingerprints: &'a [String],
        first: String,
        last: String,
    },
    /// All sources of an interval and the password-hash gate (pre-auth
    /// log).
    PreAuthTotals {
        sources: usize,
        connections: u64,
        failures: u64,
        hashes: u64,
        most_hashes_at_once: usize,
        hash_queue_full: u64,
        hash_wait_expired: u64,
    },
    Bye {
        #[serde(serialize_with = "audit_name")]
        reason: ByeReason,
        detail: String,
        bytes_sent: u64,
        bytes_received: u64,
        ignored_messages: u64,
        chats_not_audited: u64,
        held_back_inputs: u64,
        duration_ms: u64,
    },
}

impl AuditRecord<'_> {
    /// The event name and the fields, as [`crate::audit::AuditLog::record`]
    /// takes them.
    pub(crate) fn into_parts(self) -> (String, Map<String, Value>) {
        let mut fields = match serde_json::to_value(&self) {
            Ok(Value::Object(m)) => m,
            // Only maps of plain values above: cannot happen.
            _ => Map::new(),
        };
        let event = match fields.remove("event") {
            Some(Value::String(e)) => e,
            _ => String::new(),
        };
        (event, fields)
    }
}

/// A session's news on the control socket.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub(crate) enum ControlEvent<'a> {
    SessionStarted {
        session: Option<&'a str>,
        expert: &'a str,
        how: String,
        source: String,
    },
    ConsentRequested {
        kind: &'static str,
        expert: &'a str,
        how: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        says: Option<&'a str>,
        timeout_secs: u64,
        /// The open help request this prompt recalls: its text.
        #[serde(skip_serializing_if = "Option::is_none")]
        help: Option<String>,
        /// A file prompt's file: `{"to_device", "name", "size"}`.
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<Value>,
    },
    PromptClosed,
    ViewGranted,
    ControlGranted,
    ControlRevoked,
    Reconnecting {
        grace_secs: u64,
    },
    Resumed {
        phase: &'static str,
    },
    Chat {
        from: &'static str,
        text: &'a str,
    },
    SessionEnded {
        #[serde(serialize_with = "audit_name")]
        reason: ByeReason,
        sentence: String,
        detail: &'a str,
    },
    /// This subscriber missed events (it read too slowly).
    Lagged {
        missed: u64,
    },
}

impl ControlEvent<'_> {
    /// The event as the hub broadcasts it.
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The agent as `status` on the control socket shows it (its `agent`).
#[derive(Debug, Serialize)]
pub(crate) struct AgentInfo<'a> {
    pub(crate) device_name: &'a str,
    pub(crate) enabled: bool,
    pub(crate) allow_offers: bool,
    pub(crate) allow_invitations: bool,
    pub(crate) allow_control: bool,
    pub(crate) fingerprint: &'a str,
    pub(crate) listening: &'a [String],
}

impl AgentInfo<'_> {
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A reply on the control socket: `{"reply":CMD,"ok":true,…}` with what
/// the command answers, or `{"reply":CMD,"ok":false,"error":…}`. Its keys
/// come out sorted, as those of events do: replies are sent as a [`Value`].
#[derive(Debug, Serialize)]
pub(crate) struct ControlReply {
    reply: &'static str,
    ok: bool,
    #[serde(flatten)]
    body: ReplyBody,
}

/// What a reply says besides `reply` and `ok`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum ReplyBody {
    /// The command failed (`ok` is false); a sentence for a person.
    Error { error: String },
    /// The command was done; nothing more to say.
    Done {},
    /// A decision or chat line the session took (`changed`), or why there
    /// was nothing to change (`detail`).
    Taken {
        changed: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// `status`.
    Status(AgentStatus),
    /// `invite`: the new invitation; `password` only when generated.
    Invitation {
        id: String,
        expires_unix: u64,
        text: String,
        file: String,
        password: Option<String>,
        /// Whom it is for (`--for`), as the prompt will show it.
        #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
        for_whom: Option<String>,
    },
    /// `invite-list`.
    Invitations {
        invitations: Vec<crate::invites::InvitationSummary>,
    },
}

impl ControlReply {
    /// `ok` is false exactly for [`ReplyBody::Error`].
    pub(crate) fn new(reply: &'static str, body: ReplyBody) -> Self {
        let ok = !matches!(body, ReplyBody::Error { .. });
        Self { reply, ok, body }
    }

    pub(crate) fn error(reply: &'static str, error: impl Into<String>) -> Self {
        Self::new(
            reply,
            ReplyBody::Error {
                error: error.into(),
            },
        )
    }

    /// The reply as it goes on the socket (keys sorted).
    pub(crate) fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The `status` reply: the agent (an [`AgentInfo`]) and the session in the
/// slot, if any.
#[derive(Debug, Serialize)]
pub(crate) struct AgentStatus {
    pub(crate) agent: Value,
    pub(crate) session: Option<SessionStatus>,
    /// The link to the plant's broker, when the agent has one: `state`
    /// (`connecting`, `up`, `down`, `refused`) and `detail` (why, with the
    /// fix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) broker: Option<Value>,
}

/// The session in the slot, as `status` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct SessionStatus {
    pub(crate) id: String,
    pub(crate) expert: String,
    pub(crate) how: String,
    pub(crate) source: String,
    pub(crate) phase: &'static str,
    pub(crate) since_secs: u64,
    pub(crate) prompt: Option<PromptStatus>,
}

/// The open consent prompt, as `status` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct PromptStatus {
    pub(crate) id: u64,
    pub(crate) kind: &'static str,
    pub(crate) remaining_secs: u64,
}

/// `from` of a chat line.
/// Why typing stopped before the end, as `type-stopped` records say it.
pub(crate) fn type_stop_name(outcome: &shoulder_proto::msg::TypeOutcome) -> &'static str {
    use shoulder_proto::msg::TypeOutcome as T;
    match outcome {
        T::LocalUserActive => "local-user-active",
        T::ControlEnded => "control-ended",
        T::Stopped => "stopped",
        T::ConnectionLost => "connection-lost",
        _ => "other",
    }
}

/// A file transfer's audit record.
#[cfg(feature = "files")]
pub(crate) fn file_record(f: shoulder_proto::session::FileAudit) -> AuditRecord<'static> {
    use shoulder_proto::files::{Direction, FileOutcome};
    use shoulder_proto::session::FileAudit as F;
    let way = |d| match d {
        Direction::Get => "from-device",
        Direction::Put => "to-device",
    };
    match f {
        F::Asked {
            direction,
            name,
            size,
        } => AuditRecord::FileAsked {
            direction: way(direction),
            name,
            size,
        },
        F::Answered {
            granted,
            for_session,
        } => AuditRecord::FileAnswered {
            granted,
            for_session,
        },
        F::Listed { dir, entries } => AuditRecord::FileListed { dir, entries },
        F::Ended {
            direction,
            name,
            size,
            sha256,
            outcome,
        } => AuditRecord::FileEnded {
            direction: way(direction),
            name,
            size,
            sha256: sha256.map(|h| crate::util::hex(&h)),
            outcome: match outcome {
                FileOutcome::Done => "done".into(),
                o => o.sentence(),
            },
        },
    }
}

pub(crate) fn chat_from(from_expert: bool) -> &'static str {
    if from_expert { "expert" } else { "device" }
}

/// The name a reason has in audit records and control-socket events: the
/// variant's name, with its fields as `Name { field: value }`.
///
/// - [`ByeReason`]: `Normal`, `EndedByUser`, `Declined`, `ConsentTimeout`,
///   `Busy`, `Disabled`, `OffersDisabled`, `InvitationsDisabled`,
///   `UnknownCa`, `CertificateExpired`, `NotAllowed`, `NoCertificate`,
///   `WrongPassword { tries_left: N }`, `InvitationUnknown`,
///   `InvitationExpired { secs_ago: N }`, `InvitationRevoked`,
///   `InvitationUsed`, `InvitationBurned`,
///   `RateLimited { retry_after_secs: N }`,
///   `IncompatibleVersion { min: N, max: N }`, `ProtocolError`,
///   `AuthTimeout`, `PeerTimeout`, `ShuttingDown`, `AuditFailure`,
///   `ResumeRejected`, `InternalError`
/// - [`DeclineReason`]: `Declined`, `TimedOut`, `ViewOnly`,
///   `AlreadyPending`, `TooSoon { retry_after_secs: N }`
/// - [`ControlEndReason`]: `StoppedByUser`, `Hotkey`, `Released`,
///   `DeviceFault`
///
/// The pre-auth summaries keep the part before ` {` (see
/// [`crate::admission`]).
pub(crate) trait AuditName {
    fn audit_name(&self) -> Cow<'static, str>;
}

impl AuditName for ByeReason {
    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match *self {
            ByeReason::Normal => "Normal",
            ByeReason::EndedByUser => "EndedByUser",
            ByeReason::Declined => "Declined",
            ByeReason::ConsentTimeout => "ConsentTimeout",
            ByeReason::Busy => "Busy",
            ByeReason::Disabled => "Disabled",
            ByeReason::OffersDisabled => "OffersDisabled",
            ByeReason::InvitationsDisabled => "InvitationsDisabled",
            ByeReason::UnknownCa => "UnknownCa",
            ByeReason::CertificateExpired => "CertificateExpired",
            ByeReason::NotAllowed => "NotAllowed",
            ByeReason::NoCertificate => "NoCertificate",
            ByeReason::WrongPassword { tries_left } => {
                return format!("WrongPassword {{ tries_left: {tries_left} }}").into();
            }
            ByeReason::InvitationUnknown => "InvitationUnknown",
            ByeReason::InvitationExpired { secs_ago } => {
                return format!("InvitationExpired {{ secs_ago: {secs_ago} }}").into();
            }
            ByeReason::InvitationRevoked => "InvitationRevoked",
            ByeReason::InvitationUsed => "InvitationUsed",
            ByeReason::InvitationBurned => "InvitationBurned",
            ByeReason::RateLimited { retry_after_secs } => {
                return format!("RateLimited {{ retry_after_secs: {retry_after_secs} }}").into();
            }
            ByeReason::IncompatibleVersion { min, max } => {
                return format!("IncompatibleVersion {{ min: {min}, max: {max} }}").into();
            }
            ByeReason::ProtocolError => "ProtocolError",
            ByeReason::AuthTimeout => "AuthTimeout",
            ByeReason::PeerTimeout => "PeerTimeout",
            ByeReason::ShuttingDown => "ShuttingDown",
            ByeReason::AuditFailure => "AuditFailure",
            ByeReason::ResumeRejected => "ResumeRejected",
            ByeReason::InternalError => "InternalError",
        })
    }
}

impl AuditName for DeclineReason {
    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match *self {
            DeclineReason::Declined => "Declined",
            DeclineReason::TimedOut => "TimedOut",
            DeclineReason::ViewOnly => "ViewOnly",
            DeclineReason::AlreadyPending => "AlreadyPending",
            DeclineReason::TooSoon { retry_after_secs } => {
                return format!("TooSoon {{ retry_after_secs: {retry_after_secs} }}").into();
            }
        })
    }
}

impl AuditName for ControlEndReason {
    fn audit_name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match *self {
            ControlEndReason::StoppedByUser => "StoppedByUser",
            ControlEndReason::Hotkey => "Hotkey",
            ControlEndReason::Released => "Released",
            ControlEndReason::DeviceFault => "DeviceFault",
        })
    }
}

fn audit_name<T: AuditName, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.audit_name())
}

fn audit_name_or_null<T: AuditName, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(&v.audit_name()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_json(r: AuditRecord<'_>) -> String {
        let (event, fields) = r.into_parts();
        format!("{event} {}", Value::Object(fields))
    }

    #[test]
    fn records_keep_their_format() {
        assert_eq!(
            audit_json(AuditRecord::Connect {
                tls: "1.3",
                alpn: "shoulder/1",
                client_certificate: true
            }),
            r#"connect {"alpn":"shoulder/1","client_certificate":true,"tls":"1.3"}"#
        );
        assert_eq!(audit_json(AuditRecord::AgentStopped), "agent-stopped {}");
        assert_eq!(
            audit_json(AuditRecord::LocalCommand {
                command: "accept",
                text: None,
                prompt: Some(3)
            }),
            r#"local-command {"command":"accept","prompt":3}"#
        );
        assert_eq!(
            ControlEvent::Lagged { missed: 9 }.to_value().to_string(),
            r#"{"event":"lagged","missed":9}"#
        );
        assert_eq!(
            audit_json(AuditRecord::ConsentAnswered {
                kind: "control",
                granted: false,
                reason: None
            }),
            r#"consent-answered {"granted":false,"kind":"control","reason":null}"#
        );
        assert_eq!(
            audit_json(AuditRecord::ControlRevoked {
                reason: ControlEndReason::Hotkey,
                during: Some("reconnecting")
            }),
            r#"control-revoked {"reason":"Hotkey","while":"reconnecting"}"#
        );
        assert_eq!(
            audit_json(AuditRecord::ControlRevoked {
                reason: ControlEndReason::Released,
                during: None
            }),
            r#"control-revoked {"reason":"Released"}"#
        );
        assert_eq!(
            audit_json(AuditRecord::Bye {
                reason: ByeReason::WrongPassword { tries_left: 2 },
                detail: "wrong".into(),
                bytes_sent: 1,
                bytes_received: 2,
                ignored_messages: 3,
                chats_not_audited: 4,
                held_back_inputs: 5,
                duration_ms: 6,
            }),
            "bye {\"bytes_received\":2,\"bytes_sent\":1,\"chats_not_audited\":4,\
             \"detail\":\"wrong\",\"duration_ms\":6,\"held_back_inputs\":5,\
             \"ignored_messages\":3,\"reason\":\"WrongPassword { tries_left: 2 }\"}"
        );
        assert_eq!(
            ControlEvent::SessionEnded {
                reason: ByeReason::RateLimited {
                    retry_after_secs: 30
                },
                sentence: "s".into(),
                detail: "d",
            }
            .to_value()
            .to_string(),
            r#"{"detail":"d","event":"session-ended","reason":"RateLimited { retry_after_secs: 30 }","sentence":"s"}"#
        );
        assert_eq!(
            ControlEvent::Resumed { phase: "viewing" }
                .to_value()
                .to_string(),
            r#"{"event":"resumed","phase":"viewing"}"#
        );
    }

    fn assert_names<T: AuditName + std::fmt::Debug>(names: &[(T, &str)]) {
        for (r, name) in names {
            assert_eq!(r.audit_name(), *name, "{r:?}");
        }
    }

    /// Every reason's name, including those with fields: what the Debug
    /// text was when the audit format was derived from it.
    #[test]
    fn reason_names_are_stated() {
        use ByeReason as B;
        let bye = [
            (B::Normal, "Normal"),
            (B::EndedByUser, "EndedByUser"),
            (B::Declined, "Declined"),
            (B::ConsentTimeout, "ConsentTimeout"),
            (B::Busy, "Busy"),
            (B::Disabled, "Disabled"),
            (B::OffersDisabled, "OffersDisabled"),
            (B::InvitationsDisabled, "InvitationsDisabled"),
            (B::UnknownCa, "UnknownCa"),
            (B::CertificateExpired, "CertificateExpired"),
            (B::NotAllowed, "NotAllowed"),
            (B::NoCertificate, "NoCertificate"),
            (
                B::WrongPassword { tries_left: 2 },
                "WrongPassword { tries_left: 2 }",
            ),
            (B::InvitationUnknown, "InvitationUnknown"),
            (
                B::InvitationExpired { secs_ago: 90 },
                "InvitationExpired { secs_ago: 90 }",
            ),
            (B::InvitationRevoked, "InvitationRevoked"),
            (B::InvitationUsed, "InvitationUsed"),
            (B::InvitationBurned, "InvitationBurned"),
            (
                B::RateLimited {
                    retry_after_secs: 7,
                },
                "RateLimited { retry_after_secs: 7 }",
            ),
            (
                B::IncompatibleVersion { min: 1, max: 2 },
                "IncompatibleVersion { min: 1, max: 2 }",
            ),
            (B::ProtocolError, "ProtocolError"),
            (B::AuthTimeout, "AuthTimeout"),
            (B::PeerTimeout, "PeerTimeout"),
            (B::ShuttingDown, "ShuttingDown"),
            (B::AuditFailure, "AuditFailure"),
            (B::ResumeRejected, "ResumeRejected"),
            (B::InternalError, "InternalError"),
        ];
        assert_names(&bye);
        let decline = [
            (DeclineReason::Declined, "Declined"),
            (DeclineReason::TimedOut, "TimedOut"),
            (DeclineReason::ViewOnly, "ViewOnly"),
            (DeclineReason::AlreadyPending, "AlreadyPending"),
            (
                DeclineReason::TooSoon {
                    retry_after_secs: 3,
                },
                "TooSoon { retry_after_secs: 3 }",
            ),
        ];
        assert_names(&decline);
        let control = [
            (ControlEndReason::StoppedByUser, "StoppedByUser"),
            (ControlEndReason::Hotkey, "Hotkey"),
            (ControlEndReason::Released, "Released"),
            (ControlEndReason::DeviceFault, "DeviceFault"),
        ];
        assert_names(&control);
    }
}
