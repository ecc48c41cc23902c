//! The device side of a session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::consent::{ControlConsent, Revoker, ViewConsent};
use crate::frame::{
    FrameDecoder, FrameError, MAX_FRAME_LEN, MAX_PRE_AUTH_FRAME_LEN, decode_payload,
    peek_hello_versions,
};
use crate::keyboard::{Layout, Stroke};
use crate::msg::*;

use super::*;

#[cfg(feature = "files")]
mod files;
#[cfg(feature = "files")]
pub use files::{FileAudit, FileInput, FileOutput, FileRequest};

/// Settings of the device session, from the agent's config.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub device_name: String,
    pub software_version: String,
    pub pre_auth_timeout: Duration,
    pub consent_timeout: Duration,
    pub keepalive_interval: Duration,
    pub peer_timeout: Duration,
    /// False makes the device view-only: control requests are declined.
    pub allow_control: bool,
    /// How long a session whose connection dropped waits for the same expert
    /// to resume it (zero: no resumption).
    pub resume_grace: Duration,
    /// Expert input events per second (a one-second burst) before presses and
    /// moves are dropped; releases always pass so nothing stays held.
    pub max_input_rate: u32,
    /// After a control request was declined (or ran out, or was withdrawn),
    /// the next one waits this long; each further decline in a row doubles
    /// it, up to [`MAX_CONTROL_BACKOFF`]. Zero: no waiting.
    pub control_backoff: Duration,
    /// The layout `TypeText` is typed with; `None` answers
    /// [`TypeOutcome::NoLayout`].
    pub keyboard: Option<Layout>,
    /// Which ways files may go (nothing by default; an agent built
    /// without the `files` feature offers none whatever this says).
    pub files: FilesOffered,
    /// The device records its sessions: its hello says so
    /// ([`Capabilities::RECORDED`]).
    pub recorded: bool,
}

/// Which ways the device's config lets files go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesOffered {
    /// Files may be copied from the readable directories.
    pub get: bool,
    /// Files may be dropped into the drop directory.
    pub put: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            device_name: "device".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            pre_auth_timeout: DEFAULT_PRE_AUTH_TIMEOUT,
            consent_timeout: DEFAULT_CONSENT_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            allow_control: true,
            resume_grace: DEFAULT_RESUME_GRACE,
            max_input_rate: DEFAULT_MAX_INPUT_RATE,
            control_backoff: DEFAULT_CONTROL_BACKOFF,
            keyboard: None,
            files: FilesOffered::default(),
            recorded: false,
        }
    }
}

/// How the expert was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMethod {
    /// Client certificate chaining to the plant CA; its SHA-256 fingerprint.
    Offer { fingerprint: crate::Fingerprint },
    /// A device-made invitation unlocked with its password.
    Invitation { id: InvitationId },
}

/// Who the expert is, as established by the glue's authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertIdentity {
    /// The headline a person can judge: the certificate's name, or whom
    /// the invitation was made for ([`INVITATION_HEADLINE`] when it names
    /// nobody); never a bare id.
    pub name: String,
    pub method: AuthMethod,
    /// The name the expert gave themselves (their hello), when it says
    /// more than `name`: a hint, always shown next to how they were
    /// identified, never in its place.
    pub says: Option<String>,
}

/// A self-declared name as a person may be shown it: control characters
/// (and so terminal escapes) dropped, runs of whitespace made one space.
pub fn hint_name(raw: &str) -> String {
    raw.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The headline of an invitation made for nobody in particular.
pub const INVITATION_HEADLINE: &str = "Someone with an invitation";

impl ExpertIdentity {
    /// "certificate" or "invitation 0123…", for prompts.
    pub fn how(&self) -> String {
        match &self.method {
            AuthMethod::Offer { .. } => "plant certificate".into(),
            AuthMethod::Invitation { id } => format!("invitation {id}"),
        }
    }
}

/// What the glue must check; it answers with [`DeviceInput::AuthDecided`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    Offer,
    Invitation {
        id: InvitationId,
        password: Text<MAX_PASSWORD_LEN>,
    },
    Resume {
        token: ResumeToken,
    },
}

/// What the person at the device pressed (a banner button, a key, a
/// control-socket command), before it is tied to a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalDecision {
    /// Answer the prompt with yes.
    Accept,
    /// Answer the prompt with no.
    Decline,
    /// Take control back; viewing goes on.
    StopControl,
    /// Take control back with the hotkey.
    StopControlHotkey,
    /// End the whole session.
    End,
    /// Answer a file prompt with yes, and yes to every later file of the
    /// session.
    AllowFiles,
    /// Cancel the file transfer under way.
    CancelFile,
}

impl LocalDecision {
    /// The command this decision makes when `prompt` is the prompt the
    /// person saw (the one on screen, or named by a control-socket client).
    /// An answer with no prompt to name is no command at all.
    pub fn on(self, prompt: Option<PromptId>) -> Option<LocalCommand> {
        Some(match self {
            LocalDecision::Accept => LocalCommand::Answer {
                prompt: prompt?,
                accept: true,
            },
            LocalDecision::Decline => LocalCommand::Answer {
                prompt: prompt?,
                accept: false,
            },
            LocalDecision::StopControl => LocalCommand::StopControl,
            LocalDecision::StopControlHotkey => LocalCommand::StopControlHotkey,
            LocalDecision::End => LocalCommand::End,
            LocalDecision::AllowFiles => LocalCommand::AllowFiles { prompt: prompt? },
            LocalDecision::CancelFile => LocalCommand::CancelFile,
        })
    }
}

/// Names one consent prompt. Unique within an agent run (numbered from the
/// session's epoch base), so an answer can never reach a prompt that was
/// not on screen when it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromptId(pub u64);

impl core::fmt::Display for PromptId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A decision of the person at the device, as the session takes it. Only
/// taking something back (stop control, end) needs no prompt: it can never
/// grant more than there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCommand {
    /// Answers prompt `prompt`; dropped (and audited) if that prompt is not
    /// the one open when the session gets it.
    Answer { prompt: PromptId, accept: bool },
    /// Take control back; viewing goes on (also while reconnecting).
    StopControl,
    /// Take control back with the hotkey.
    StopControlHotkey,
    /// End the whole session.
    End,
    /// Answers file prompt `prompt` with yes, and allows every later file
    /// of the session without asking (`accept` is always true).
    AllowFiles { prompt: PromptId },
    /// Cancel the file transfer under way (a question about one declines).
    CancelFile,
}

/// What a [`LocalCommand`] did, for whoever gave it (the control socket
/// tells its client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session changed as asked.
    Applied,
    /// The answer named a prompt that is no longer (or never was) open;
    /// `open` is the one that is, if any. Nothing changed.
    Stale {
        prompt: PromptId,
        open: Option<PromptId>,
    },
    /// There was nothing to change (e.g. stop control while viewing only).
    Unchanged { why: &'static str },
}

/// Inputs to the device machine besides received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceInput {
    /// Bytes received from the expert, in any chunking.
    Received(Vec<u8>),
    /// The answer to [`DeviceOutput::Authenticate`].
    AuthDecided(Result<ExpertIdentity, (ByeReason, String)>),
    Local(LocalCommand),
    /// The person at the device is (or stopped) using local input.
    LocalUserActive(bool),
    /// A chat line from the device side (control socket).
    SendChat(String),
    /// Injection failed on the device: control is revoked.
    InjectionFault(String),
    /// The transport closed or failed.
    PeerClosed {
        error: Option<String>,
    },
    /// The agent is shutting down.
    Shutdown,
    /// A fatal device-side error (e.g. audit log unwritable).
    Abort {
        reason: ByeReason,
        detail: String,
    },
    /// A suspended session gets a new connection: the glue checked that the
    /// resume token matched and the expert identity is the same. `new_token`
    /// is the next single-use token to offer.
    Reattach {
        new_token: Option<ResumeToken>,
    },
    /// The agent's answers about a file transfer.
    #[cfg(feature = "files")]
    File(FileInput),
}

/// A consent prompt for the person at the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// What an answer to this prompt must name.
    pub id: PromptId,
    pub kind: ConsentKind,
    pub expert: ExpertIdentity,
    /// When the prompt declines by itself.
    pub deadline: Instant,
    /// The file a [`ConsentKind::Files`] prompt asks about.
    pub file: Option<FileAsk>,
}

/// The file a prompt asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAsk {
    /// Sent to the device (else copied from it).
    pub to_device: bool,
    pub name: String,
    pub size: u64,
}

/// The session as the banner strip and control socket show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    AwaitingView {
        expert: ExpertIdentity,
    },
    Viewing {
        expert: ExpertIdentity,
        since: Instant,
    },
    Controlling {
        expert: ExpertIdentity,
        since: Instant,
    },
    /// The connection dropped; the expert may resume until `until`.
    Reconnecting {
        expert: ExpertIdentity,
        until: Instant,
    },
    Closed {
        reason: ByeReason,
        detail: String,
    },
}

impl Phase {
    /// The phase's one name, as the banner strip, control socket (`status`,
    /// `resumed` events) and audit show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::AwaitingView { .. } => "awaiting-view",
            Phase::Viewing { .. } => "viewing",
            Phase::Controlling { .. } => "controlling",
            Phase::Reconnecting { .. } => "reconnecting",
            Phase::Closed { .. } => "closed",
        }
    }
}

/// Expert input to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectEvent {
    Pointer(Pointer),
    Key(Key),
    Touch(Touch),
}

/// What happened, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    Hello {
        software: String,
        version: String,
    },
    AuthOk {
        expert: ExpertIdentity,
    },
    AuthFailed {
        reason: ByeReason,
        detail: String,
    },
    ConsentAsked {
        kind: ConsentKind,
    },
    ConsentAnswered {
        kind: ConsentKind,
        granted: bool,
        reason: Option<DeclineReason>,
    },
    ControlEnded {
        reason: ControlEndReason,
    },
    /// An answer for a prompt that was not the open one: dropped.
    StaleAnswer {
        prompt: PromptId,
        open: Option<PromptId>,
    },
    /// Control ended while the connection was down: the resume brings back
    /// viewing only.
    ControlEndedWhileAway {
        reason: ControlEndReason,
    },
    Chat {
        from_expert: bool,
        text: String,
    },
    /// Expert input over the rate limit was dropped (first drop of a burst).
    InputRateLimited,
    /// The expert had `chars` characters typed (the text itself is not
    /// recorded: it may be a password).
    TypeText {
        chars: usize,
        layout: &'static str,
    },
    /// Typing stopped before the end.
    TypeStopped {
        typed: u16,
        outcome: TypeOutcome,
    },
    /// The connection dropped; waiting for the expert to resume.
    Suspended {
        detail: String,
    },
    /// The expert came back on a new connection.
    Resumed,
    /// A message that made no sense in this state, ignored.
    Ignored {
        message: &'static str,
        state: &'static str,
    },
    Closed {
        reason: ByeReason,
        detail: String,
    },
    /// A file transfer asked, answered or ended.
    #[cfg(feature = "files")]
    File(FileAudit),
}

/// What the glue must do, in order.
// Chat text (512 bytes) is the largest inline variant; messages are moved
// a handful of times, so boxing it would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum DeviceOutput {
    Send(Message),
    Authenticate(AuthRequest),
    ShowPrompt(Prompt),
    HidePrompt,
    Phase(Phase),
    StartCapture(ViewConsent),
    StopCapture,
    EnableInjection(ControlConsent),
    DisableInjection,
    /// Release every key, button and touch the expert holds, now.
    ReleaseAll,
    Inject(InjectEvent),
    /// Send the next screen update (coalesced) when there is one, or the full
    /// screen now if not `incremental`.
    UpdateRequested {
        incremental: bool,
    },
    /// Compare the expert's self-check with what it was sent, answer with
    /// `ViewChecked` and send again the bands that differ. At most one per
    /// [`MIN_VIEW_REPORT_INTERVAL`].
    CheckView(Box<ViewReport>),
    /// Show the expert screen `index` of the list it was sent (capture
    /// switches; input goes there). An index past the list is ignored.
    SelectScreen(u8),
    /// Exact pictures only, for the rest of the session: no more lossy
    /// rectangles, and what was sent lossy is sent exact now.
    ExactOnly,
    ShowChat(String),
    /// A file transfer is under way (`Some`) or over: the strip names it,
    /// with a button that cancels it.
    FileActivity(Option<FileAsk>),
    Audit(AuditEvent),
    /// Flush what was sent, then close the transport. Nothing follows.
    Close {
        reason: ByeReason,
        detail: String,
    },
    /// The agent's part of a file transfer.
    #[cfg(feature = "files")]
    File(FileOutput),
}

#[derive(Debug)]
struct AwaitHello {
    deadline: Instant,
}

#[derive(Debug)]
struct AwaitAuth {
    deadline: Instant,
    /// The expert's self-declared name (hello).
    says: String,
}

#[derive(Debug)]
struct Authenticating {
    deadline: Instant,
    says: String,
}

#[derive(Debug)]
struct AwaitViewConsent {
    expert: ExpertIdentity,
    deadline: Instant,
    prompt: PromptId,
}

#[derive(Debug)]
enum Control {
    None,
    Pending { deadline: Instant, prompt: PromptId },
    Granted { revoker: Revoker },
}

#[derive(Debug)]
struct Active {
    expert: ExpertIdentity,
    since: Instant,
    view: Revoker,
    control: Control,
}

#[derive(Debug)]
struct Suspended {
    expert: ExpertIdentity,
    since: Instant,
    was_controlling: bool,
    deadline: Instant,
}

/// A `TypeText` being typed: one character per [`TYPE_STROKE_INTERVAL`].
#[derive(Debug)]
struct Typing {
    id: u32,
    strokes: VecDeque<Stroke>,
    typed: u16,
    next_at: Instant,
}

/// Between two typed characters: about 50 a second, slow enough for apps
/// and compositors under load to keep every key in order, and within the
/// default input rate even for characters that need Shift and AltGr.
pub const TYPE_STROKE_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug)]
enum State {
    AwaitHello(AwaitHello),
    AwaitAuth(AwaitAuth),
    Authenticating(Authenticating),
    AwaitViewConsent(AwaitViewConsent),
    Active(Active),
    Suspended(Suspended),
    Closed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitHello(_) => "awaiting hello",
            State::AwaitAuth(_) => "awaiting authentication",
            State::Authenticating(_) => "authenticating",
            State::AwaitViewConsent(_) => "awaiting view consent",
            State::Active(a) => match a.control {
                Control::None => "viewing",
                Control::Pending { .. } => "awaiting control consent",
                Control::Granted { .. } => "controlling",
            },
            State::Suspended(_) => "reconnecting",
            State::Closed => "closed",
        }
    }
}

/// The device end of one session.
#[derive(Debug)]
pub struct DeviceSession {
    config: DeviceConfig,
    state: State,
    decoder: FrameDecoder,
    out: VecDeque<DeviceOutput>,
    last_received: Instant,
    last_sent: Instant,
    next_epoch: u64,
    ping_nonce: u64,
    ignored: u64,
    resume_token: Option<ResumeToken>,
    /// Tokens handed out on reattached connections that may have died before
    /// the expert got the next one: they still resume, until the expert shows
    /// it has the current token (its first `UpdateRequest` after a resume).
    resume_unconfirmed: VecDeque<ResumeToken>,
    input_budget: f64,
    input_refilled: Instant,
    rate_limited: u64,
    limiting: bool,
    /// Pointer buttons held as far as injected events go: an event that
    /// lets one go is a release, and releases pass the rate limit.
    pointer_buttons: u8,
    /// The last prompt id handed out.
    last_prompt: u64,
    /// Control requests declined (or run out, or withdrawn) in a row, and
    /// when the next one may come.
    control_declines: u32,
    control_not_before: Option<Instant>,
    /// When the last view self-check was passed on.
    last_view_report: Option<Instant>,
    /// The expert's protocol version (from its `Hello`; 0 before).
    peer_version: u16,
    /// What the expert's `Hello` said it takes (none before).
    peer_capabilities: Capabilities,
    /// The text being typed, while controlling.
    typing: Option<Typing>,
    /// A text whose typing the dropped connection cut short (id, typed):
    /// answered on the resumed one.
    typing_cut: Option<(u32, u16)>,
    /// The expert asked for exact pictures only ([`Message::ExactOnly`]):
    /// kept for the session, resumed connections included.
    exact_only: bool,
    /// The file transfer under way, if any.
    #[cfg(feature = "files")]
    files: files::Files,
}

impl DeviceSession {
    /// Whether the expert takes [`Message::Screens`] (protocol
    /// [`SCREENS_VERSION`] on); an older one is shown the first screen only.
    pub fn screens_supported(&self) -> bool {
        self.peer_version >= SCREENS_VERSION
    }

    /// Whether the expert takes [`crate::msg::Encoding::Deflate`]
    /// rectangles; an older one gets lz4.
    pub fn deflate_supported(&self) -> bool {
        self.peer_capabilities.contains(Capabilities::DEFLATE)
    }

    /// Whether the expert takes [`crate::msg::Encoding::DeflateStream`]
    /// rectangles; an older one gets a deflate stream per rectangle.
    pub fn deflate_stream_supported(&self) -> bool {
        self.peer_capabilities
            .contains(Capabilities::DEFLATE_STREAM)
    }

    /// Whether the expert takes lossy [`crate::msg::Encoding::Jpeg`]
    /// rectangles (it leaves the capability out to see only exact pixels).
    pub fn jpeg_supported(&self) -> bool {
        self.peer_capabilities.contains(Capabilities::JPEG) && !self.exact_only
    }
}

/// View self-checks closer together than this are dropped (each costs the
/// device a pass over its copy of the expert's screen).
pub const MIN_VIEW_REPORT_INTERVAL: Duration = Duration::from_secs(1);

impl DeviceSession {
    /// A session on a freshly accepted connection. Queues our `Hello`.
    /// `epoch_base` makes consent tokens unique across sessions of one agent.
    pub fn new(now: Instant, config: DeviceConfig, epoch_base: u64) -> Self {
        let mut s = Self {
            state: State::AwaitHello(AwaitHello {
                deadline: now + config.pre_auth_timeout,
            }),
            decoder: FrameDecoder::new(MAX_PRE_AUTH_FRAME_LEN),
            out: VecDeque::new(),
            last_received: now,
            last_sent: now,
            next_epoch: epoch_base,
            ping_nonce: 0,
            ignored: 0,
            resume_token: None,
            resume_unconfirmed: VecDeque::new(),
            input_budget: f64::from(config.max_input_rate),
            input_refilled: now,
            rate_limited: 0,
            limiting: false,
            pointer_buttons: 0,
            last_prompt: epoch_base,
            control_declines: 0,
            control_not_before: None,
            last_view_report: None,
            peer_version: 0,
            peer_capabilities: Capabilities(0),
            typing: None,
            typing_cut: None,
            exact_only: false,
            #[cfg(feature = "files")]
            files: files::Files::default(),
            config,
        };
        let mut hello = Hello::new(
            Role::Device,
            "shoulder-agent",
            &s.config.software_version,
            &s.config.device_name,
        );
        if s.config.recorded {
            hello.capabilities = hello.capabilities | Capabilities::RECORDED;
        }
        #[cfg(feature = "files")]
        if s.config.files.get || s.config.files.put {
            hello.capabilities = hello.capabilities | Capabilities::FILES;
        }
        #[cfg(feature = "files")]
        if s.config.files.get {
            hello.capabilities = hello.capabilities | Capabilities::FILE_LIST;
        }
        s.send(now, Message::Hello(hello));
        s
    }

    /// Is the session over? (Then only draining outputs is left.)
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The state's name, for logs and the control socket.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// Messages ignored because they came in the wrong state.
    pub fn ignored_count(&self) -> u64 {
        self.ignored
    }

    /// Expert input events dropped by the rate limit.
    pub fn rate_limited_count(&self) -> u64 {
        self.rate_limited
    }

    /// Makes the session resumable: `token` is offered to the expert once
    /// viewing (single use; [`DeviceInput::Reattach`] brings the next one).
    pub fn with_resume_token(mut self, token: ResumeToken) -> Self {
        self.resume_token = Some(token);
        self
    }

    /// The token that resumes this session, while it is resumable.
    pub fn resume_token(&self) -> Option<&ResumeToken> {
        self.resume_token.as_ref()
    }

    /// Every token that resumes this session now: the current one, and
    /// after a resume whose connection died before the expert could have
    /// received the next token, the ones it may still hold. A token stops
    /// working once the expert shows it has a newer one.
    pub fn resume_tokens(&self) -> Vec<ResumeToken> {
        self.resume_token
            .iter()
            .chain(self.resume_unconfirmed.iter())
            .cloned()
            .collect()
    }

    /// Whether the connection dropped and the session waits for a resume.
    pub fn is_suspended(&self) -> bool {
        matches!(self.state, State::Suspended(_))
    }

    /// The authenticated expert, once known.
    pub fn expert(&self) -> Option<&ExpertIdentity> {
        match &self.state {
            State::AwaitViewConsent(s) => Some(&s.expert),
            State::Active(a) => Some(&a.expert),
            State::Suspended(s) => Some(&s.expert),
            _ => None,
        }
    }

    /// Next output for the glue.
    pub fn poll_output(&mut self) -> Option<DeviceOutput> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = |s: &Self| {
            (s.last_sent + s.config.keepalive_interval).min(s.last_received + s.config.peer_timeout)
        };
        match &self.state {
            State::AwaitHello(s) => Some(s.deadline),
            State::AwaitAuth(s) => Some(s.deadline),
            State::Authenticating(s) => Some(s.deadline),
            State::AwaitViewConsent(s) => Some(s.deadline.min(keepalive(self))),
            State::Active(a) => {
                let t = match a.control {
                    Control::Pending { deadline, .. } => deadline.min(keepalive(self)),
                    _ => self
                        .typing
                        .as_ref()
                        .map_or(keepalive(self), |t| t.next_at.min(keepalive(self))),
                };
                #[cfg(feature = "files")]
                let t = self.files.deadline().map_or(t, |d| d.min(t));
                Some(t)
            }
            State::Suspended(s) => Some(s.deadline),
            State::Closed => None,
        }
    }

    /// Handles expiring deadlines: pre-auth, prompts, keepalives.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::AwaitHello(s) if now >= s.deadline => {
                self.close(now, ByeReason::AuthTimeout, "no hello in time".into());
            }
            State::AwaitAuth(s) if now >= s.deadline => {
                self.close(
                    now,
                    ByeReason::AuthTimeout,
                    "no authentication in time".into(),
                );
            }
            State::Authenticating(s) if now >= s.deadline => {
                self.close(
                    now,
                    ByeReason::AuthTimeout,
                    "authentication took too long".into(),
                );
            }
            State::AwaitViewConsent(s) if now >= s.deadline => {
                self.decline_view(now, DeclineReason::TimedOut);
            }
            State::Active(Active {
                control: Control::Pending { deadline, .. },
                ..
            }) if now >= *deadline => {
                self.decline_control(now, DeclineReason::TimedOut);
            }
            State::Suspended(s) if now >= s.deadline => {
                self.close_silently(
                    ByeReason::PeerTimeout,
                    "the expert did not come back in time".into(),
                );
            }
            _ => {}
        }
        #[cfg(feature = "files")]
        if matches!(self.state, State::Active(_)) && self.files.deadline().is_some_and(|d| now >= d)
        {
            self.file_timed_out(now);
        }
        self.type_next(now);
        if matches!(self.state, State::AwaitViewConsent(_) | State::Active(_)) {
            if now >= self.last_received + self.config.peer_timeout {
                if self.suspend(now, "no keepalive from the expert") {
                    return;
                }
                self.close(
                    now,
                    ByeReason::PeerTimeout,
                    "no keepalive from the expert".into(),
                );
            } else if now >= self.last_sent + self.config.keepalive_interval {
                self.ping_nonce += 1;
                self.send(
                    now,
                    Message::Ping {
                        nonce: self.ping_nonce,
                    },
                );
            }
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: DeviceInput) {
        if self.is_closed() {
            return;
        }
        match input {
            DeviceInput::Received(bytes) => self.receive(now, &bytes),
            DeviceInput::AuthDecided(result) => self.auth_decided(now, result),
            DeviceInput::Local(c) => {
                self.decide(now, c);
            }
            DeviceInput::LocalUserActive(active) => {
                if let State::Active(Active {
                    control: Control::Granted { .. },
                    ..
                }) = self.state
                {
                    if active {
                        self.stop_typing(now, TypeOutcome::LocalUserActive);
                    }
                    self.send(now, Message::LocalUserActive { active });
                }
            }
            DeviceInput::SendChat(t) => {
                if matches!(self.state, State::Active(_) | State::AwaitViewConsent(_)) {
                    let t: Text<MAX_CHAT_LEN> = text(&t);
                    self.audit(AuditEvent::Chat {
                        from_expert: false,
                        text: t.to_string(),
                    });
                    self.send(now, Message::Chat { text: t });
                }
            }
            // The agent audits the fault's detail; the session ends control.
            DeviceInput::InjectionFault(_) => {
                if let State::Active(a) = &self.state
                    && matches!(a.control, Control::Granted { .. })
                {
                    self.end_control(now, ControlEndReason::DeviceFault);
                }
            }
            // A suspended session has no transport left to close.
            DeviceInput::PeerClosed { .. } if self.is_suspended() => {}
            DeviceInput::PeerClosed { error } => {
                let detail = error.unwrap_or_else(|| "the expert disconnected".into());
                if !self.suspend(now, &detail) {
                    self.close_silently(ByeReason::Normal, detail);
                }
            }
            DeviceInput::Reattach { new_token } => self.reattach(now, new_token),
            DeviceInput::Shutdown => {
                self.close(now, ByeReason::ShuttingDown, "the agent is stopping".into());
            }
            DeviceInput::Abort { reason, detail } => self.close(now, reason, detail),
            #[cfg(feature = "files")]
            DeviceInput::File(f) => self.file_input(now, f),
        }
    }

    fn receive(&mut self, now: Instant, bytes: &[u8]) {
        if self.is_suspended() {
            // The old transport is gone; bytes can only be stale.
            return;
        }
        self.last_received = now;
        if let Err(e) = self.decoder.push(bytes) {
            self.protocol_error(now, e);
            return;
        }
        loop {
            if self.is_closed() {
                return;
            }
            let payload = match self.decoder.next_payload() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => return self.protocol_error(now, e),
            };
            let msg = match decode_payload(&payload) {
                Ok(m) => m,
                Err(e) => {
                    if matches!(self.state, State::AwaitHello(_))
                        && let Some((v, min)) = peek_hello_versions(&payload)
                        && !versions_compatible(v, min)
                    {
                        return self.incompatible(now, v, min);
                    }
                    return self.protocol_error(now, e);
                }
            };
            self.message(now, msg);
        }
    }

    fn message(&mut self, now: Instant, msg: Message) {
        match msg {
            Message::Bye { reason, detail } => {
                return self.close_silently(reason, format!("the expert left: {detail}"));
            }
            Message::Ping { nonce } => return self.send(now, Message::Pong { nonce }),
            Message::Pong { .. } => return,
            _ => {}
        }
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match (state, msg) {
            (State::AwaitHello(_), Message::Hello(h)) => {
                if !versions_compatible(h.version, h.min_version) {
                    return self.incompatible(now, h.version, h.min_version);
                }
                self.peer_version = h.version;
                self.peer_capabilities = h.capabilities;
                if h.role != Role::Expert {
                    self.state = State::AwaitHello(AwaitHello { deadline: now });
                    return self.close(
                        now,
                        ByeReason::ProtocolError,
                        "peer is not an expert".into(),
                    );
                }
                self.audit(AuditEvent::Hello {
                    software: h.software.to_string(),
                    version: h.software_version.to_string(),
                });
                State::AwaitAuth(AwaitAuth {
                    deadline: now + self.config.pre_auth_timeout,
                    says: hint_name(&h.name),
                })
            }
            (State::AwaitAuth(s), Message::Auth(auth)) => {
                let req = match auth {
                    Auth::Offer => AuthRequest::Offer,
                    Auth::Invitation { id, password } => AuthRequest::Invitation { id, password },
                    Auth::Resume { token } => AuthRequest::Resume { token },
                };
                self.push(DeviceOutput::Authenticate(req));
                State::Authenticating(Authenticating {
                    // Password hashing takes time; allow it on top.
                    deadline: s.deadline + self.config.pre_auth_timeout,
                    says: s.says,
                })
            }
            (State::Active(a), Message::UpdateRequest { incremental }) => {
                // Sent after the expert took in a resume's new token (which
                // comes first): older tokens are spent.
                self.resume_unconfirmed.clear();
                self.push(DeviceOutput::UpdateRequested { incremental });
                State::Active(a)
            }
            (State::Active(a), Message::ViewReport(r)) => {
                if self
                    .last_view_report
                    .is_some_and(|t| now.saturating_duration_since(t) < MIN_VIEW_REPORT_INTERVAL)
                {
                    self.ignored("ViewReport", "too soon after the last one");
                } else {
                    self.last_view_report = Some(now);
                    self.push(DeviceOutput::CheckView(r));
                }
                State::Active(a)
            }
            (State::Active(a), Message::SelectScreen { index }) => {
                self.push(DeviceOutput::SelectScreen(index));
                State::Active(a)
            }
            (State::Active(a), Message::ExactOnly) => {
                // Once: a repeat would only ask for the whole screen again.
                if self.exact_only {
                    self.ignored("ExactOnly", "already exact only");
                } else {
                    self.exact_only = true;
                    self.push(DeviceOutput::ExactOnly);
                }
                State::Active(a)
            }
            (State::Active(a), Message::Pointer(p)) => {
                self.inject(now, a, InjectEvent::Pointer(p), "Pointer")
            }
            (State::Active(a), Message::Key(k)) => self.inject(now, a, InjectEvent::Key(k), "Key"),
            (State::Active(a), Message::Touch(t)) => {
                self.inject(now, a, InjectEvent::Touch(t), "Touch")
            }
            #[cfg(feature = "files")]
            (State::Active(a), Message::File(f)) => {
                self.state = State::Active(a);
                if !self.peer_capabilities.contains(Capabilities::FILES) {
                    return self.close(
                        now,
                        ByeReason::ProtocolError,
                        "File from an expert that did not announce files".into(),
                    );
                }
                return self.file_message(now, *f);
            }
            #[cfg(feature = "files")]
            (s @ (State::AwaitViewConsent(_) | State::Authenticating(_)), Message::File(f)) => {
                self.state = s;
                return self.file_before_consent(now, &f);
            }
            (State::Active(a), Message::TypeText { id, text }) => {
                let controlling = matches!(a.control, Control::Granted { .. });
                self.state = State::Active(a);
                return self.type_text(now, controlling, id, &text);
            }
            (State::Active(mut a), Message::RequestControl) => {
                match a.control {
                    Control::None if !self.config.allow_control => {
                        self.send(
                            now,
                            Message::ConsentDeclined {
                                kind: ConsentKind::Control,
                                reason: DeclineReason::ViewOnly,
                            },
                        );
                        self.audit(AuditEvent::ConsentAnswered {
                            kind: ConsentKind::Control,
                            granted: false,
                            reason: Some(DeclineReason::ViewOnly),
                        });
                    }
                    // Asked again too soon after a no: the person is not
                    // prompted again and again; the expert is told when.
                    Control::None if self.control_not_before.is_some_and(|t| now < t) => {
                        let wait = self
                            .control_not_before
                            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                        let retry_after_secs =
                            u16::try_from(wait.as_millis().div_ceil(1000)).unwrap_or(u16::MAX);
                        self.send(
                            now,
                            Message::ConsentDeclined {
                                kind: ConsentKind::Control,
                                reason: DeclineReason::TooSoon { retry_after_secs },
                            },
                        );
                        self.ignored("RequestControl", "too soon after a declined request");
                    }
                    // One question on screen at a time: a file prompt is.
                    Control::None if self.file_question_open() => {
                        self.send(
                            now,
                            Message::ConsentDeclined {
                                kind: ConsentKind::Control,
                                reason: DeclineReason::AlreadyPending,
                            },
                        );
                        self.ignored("RequestControl", "another question is on screen");
                    }
                    Control::None => {
                        let deadline = now + self.config.consent_timeout;
                        let prompt = self.next_prompt();
                        a.control = Control::Pending { deadline, prompt };
                        self.send(
                            now,
                            Message::ConsentPending {
                                kind: ConsentKind::Control,
                                timeout_secs: secs_u16(self.config.consent_timeout),
                            },
                        );
                        self.audit(AuditEvent::ConsentAsked {
                            kind: ConsentKind::Control,
                        });
                        self.push(DeviceOutput::ShowPrompt(Prompt {
                            id: prompt,
                            kind: ConsentKind::Control,
                            expert: a.expert.clone(),
                            deadline,
                            file: None,
                        }));
                    }
                    // Asked twice: the first request stands.
                    Control::Pending { .. } | Control::Granted { .. } => {
                        self.ignored("RequestControl", "control already asked for");
                    }
                }
                State::Active(a)
            }
            (State::Active(a), Message::ReleaseControl) => {
                let granted = matches!(a.control, Control::Granted { .. });
                let pending = matches!(a.control, Control::Pending { .. });
                self.state = State::Active(a);
                if granted {
                    self.end_control(now, ControlEndReason::Released);
                } else if pending {
                    // Withdrawn request: close the prompt. Asking and
                    // withdrawing must not flash prompts at the person any
                    // faster than asking and being declined.
                    if let State::Active(a) = &mut self.state {
                        a.control = Control::None;
                    }
                    self.control_declined(now);
                    self.push(DeviceOutput::HidePrompt);
                    self.audit(AuditEvent::ControlEnded {
                        reason: ControlEndReason::Released,
                    });
                } else {
                    self.ignored("ReleaseControl", "not controlling");
                }
                return;
            }
            (s @ (State::Active(_) | State::AwaitViewConsent(_)), Message::Chat { text }) => {
                self.audit(AuditEvent::Chat {
                    from_expert: true,
                    text: text.to_string(),
                });
                self.push(DeviceOutput::ShowChat(text.to_string()));
                s
            }
            // Harmless races: input or update requests that crossed a revoke
            // or arrived before consent. Never acted on.
            (
                s @ (State::AwaitViewConsent(_) | State::Authenticating(_)),
                m @ (Message::UpdateRequest { .. }
                | Message::ViewReport(_)
                | Message::SelectScreen { .. }
                | Message::ExactOnly
                | Message::Pointer(_)
                | Message::Key(_)
                | Message::Touch(_)
                | Message::TypeText { .. }
                | Message::ReleaseControl
                | Message::RequestControl),
            ) => {
                self.state = s;
                self.ignored(m.name(), "before consent");
                return;
            }
            (s, m) => {
                let state = s.name();
                self.state = s;
                self.close(
                    now,
                    ByeReason::ProtocolError,
                    format!("unexpected {} while {state}", m.name()),
                );
                return;
            }
        };
    }

    fn inject(&mut self, now: Instant, a: Active, input: InjectEvent, name: &'static str) -> State {
        if matches!(a.control, Control::Granted { .. }) {
            if let Some(input) = self.input_allowed(now, input) {
                self.push(DeviceOutput::Inject(input));
            }
        } else {
            self.ignored(name, "not controlling");
        }
        State::Active(a)
    }

    /// Starts typing `text` (or stops the typing under way, for an empty
    /// one), or answers why not.
    fn type_text(&mut self, now: Instant, controlling: bool, id: u32, text: &str) {
        let refuse = |s: &mut Self, outcome| {
            s.send(
                now,
                Message::Typed {
                    id,
                    typed: 0,
                    outcome,
                },
            );
        };
        if !controlling {
            self.ignored("TypeText", "not controlling");
            return refuse(self, TypeOutcome::NotControlling);
        }
        if text.is_empty() {
            if self.typing.is_some() {
                self.stop_typing(now, TypeOutcome::Stopped);
            }
            return;
        }
        if self.typing.is_some() {
            return refuse(self, TypeOutcome::Busy);
        }
        // Without the tables (feature `layouts`) no layout can be set:
        // the rest of typing is left out of the build.
        let Some(layout) = self.config.keyboard.filter(|_| cfg!(feature = "layouts")) else {
            return refuse(self, TypeOutcome::NoLayout);
        };
        match layout.strokes(text) {
            Ok(strokes) => {
                self.audit(AuditEvent::TypeText {
                    chars: strokes.len(),
                    layout: layout.name(),
                });
                self.typing = Some(Typing {
                    id,
                    strokes: strokes.into(),
                    typed: 0,
                    next_at: now,
                });
                self.type_next(now);
            }
            Err(e) => refuse(
                self,
                TypeOutcome::Untypable {
                    layout: crate::msg::text(layout.name()),
                    chars: crate::msg::text(&e.to_string()),
                },
            ),
        }
    }

    /// Types the next character when its time came and the input rate
    /// allows; answers `Typed` after the last.
    fn type_next(&mut self, now: Instant) {
        if !cfg!(feature = "layouts") {
            return;
        }
        let Some(t) = &self.typing else { return };
        if now < t.next_at {
            return;
        }
        if let Some(stroke) = t.strokes.front().copied() {
            let n = stroke.keys().count();
            if !self.take_input_budget(now, n) {
                // Over the rate (with the expert's own input): wait, never
                // drop a key of a text.
                if let Some(t) = &mut self.typing {
                    t.next_at = now + TYPE_STROKE_INTERVAL;
                }
                return;
            }
            for k in stroke.keys() {
                self.push(DeviceOutput::Inject(InjectEvent::Key(k)));
            }
            let Some(t) = &mut self.typing else { return };
            t.strokes.pop_front();
            t.typed = t.typed.saturating_add(1);
            t.next_at = now + TYPE_STROKE_INTERVAL;
        }
        if self.typing.as_ref().is_some_and(|t| t.strokes.is_empty()) {
            self.stop_typing(now, TypeOutcome::Done);
        }
    }

    /// Ends the typing under way, telling the expert how far it got.
    fn stop_typing(&mut self, now: Instant, outcome: TypeOutcome) {
        if !cfg!(feature = "layouts") {
            return;
        }
        if let Some(t) = self.typing.take() {
            if outcome != TypeOutcome::Done {
                self.audit(AuditEvent::TypeStopped {
                    typed: t.typed,
                    outcome: outcome.clone(),
                });
            }
            self.send(
                now,
                Message::Typed {
                    id: t.id,
                    typed: t.typed,
                    outcome,
                },
            );
        }
    }

    /// Takes `n` events from the input rate budget, if it has them.
    fn take_input_budget(&mut self, now: Instant, n: usize) -> bool {
        let rate = self.refill_input_budget(now);
        // A stroke costs at most 12 events; a rate set below that still
        // types, one stroke per full budget.
        let n = (n as f64).min(rate);
        if self.input_budget >= n {
            self.input_budget -= n;
            true
        } else {
            false
        }
    }

    /// Refills the input budget for the time since the last refill;
    /// returns the rate (events a second).
    fn refill_input_budget(&mut self, now: Instant) -> f64 {
        let rate = f64::from(self.config.max_input_rate.max(1));
        let dt = now
            .saturating_duration_since(self.input_refilled)
            .as_secs_f64();
        self.input_refilled = now;
        self.input_budget = (self.input_budget + dt * rate).min(rate);
        rate
    }

    /// Token bucket over expert input: a one-second burst of
    /// `max_input_rate`, refilled continuously. Over the limit, input is
    /// judged by what it presses, not by what it lets go: a release (of a
    /// key, a touch or a pointer button) still passes, so a flood can never
    /// leave anything held, and a pointer event that lets one button go
    /// while pressing another passes as the release alone. Returns what to
    /// inject, if anything.
    fn input_allowed(&mut self, now: Instant, input: InjectEvent) -> Option<InjectEvent> {
        let rate = self.refill_input_budget(now);
        let allowed = if self.input_budget >= 1.0 {
            self.input_budget -= 1.0;
            // A burst ends once the expert slowed down long enough for half
            // the budget to come back: a sustained flood is one burst.
            if self.input_budget >= rate / 2.0 {
                self.limiting = false;
            }
            Some(input)
        } else {
            match input {
                InjectEvent::Key(k) if !k.down => Some(input),
                InjectEvent::Touch(t) if t.phase == TouchPhase::Up => Some(input),
                // Only the letting go: buttons still held stay held, new
                // presses are dropped.
                InjectEvent::Pointer(mut p) if self.pointer_buttons & !p.buttons.0 != 0 => {
                    p.buttons.0 &= self.pointer_buttons;
                    Some(InjectEvent::Pointer(p))
                }
                _ => None,
            }
        };
        if let Some(InjectEvent::Pointer(p)) = &allowed {
            self.pointer_buttons = p.buttons.0;
        }
        if allowed.is_none() {
            if !self.limiting {
                // First drop of a burst: audit once, not per event.
                self.limiting = true;
                self.audit(AuditEvent::InputRateLimited);
            }
            self.rate_limited += 1;
        }
        allowed
    }

    /// On a dropped connection of a resumable, viewing session: stop
    /// injection and capture and wait for the expert. False when the session
    /// cannot be resumed (then it closes).
    fn suspend(&mut self, now: Instant, detail: &str) -> bool {
        if self.resume_token.is_none() || self.config.resume_grace.is_zero() {
            return false;
        }
        let State::Active(_) = self.state else {
            return false;
        };
        let State::Active(a) = std::mem::replace(&mut self.state, State::Closed) else {
            return false;
        };
        let was_controlling = matches!(a.control, Control::Granted { .. });
        // A transfer does not survive the connection: the expert sends or
        // asks again once back.
        #[cfg(feature = "files")]
        self.file_teardown();
        // Typing stops; the expert hears how far it got once back.
        if let Some(t) = self.typing.take() {
            self.audit(AuditEvent::TypeStopped {
                typed: t.typed,
                outcome: TypeOutcome::ConnectionLost,
            });
            self.typing_cut = Some((t.id, t.typed));
        }
        match a.control {
            Control::Granted { revoker } => {
                self.push_urgent(DeviceOutput::ReleaseAll);
                revoker.revoke();
                self.push_urgent(DeviceOutput::DisableInjection);
            }
            Control::Pending { .. } => self.push(DeviceOutput::HidePrompt),
            Control::None => {}
        }
        a.view.revoke();
        self.push(DeviceOutput::StopCapture);
        let until = now + self.config.resume_grace;
        self.audit(AuditEvent::Suspended {
            detail: detail.to_string(),
        });
        self.push(DeviceOutput::Phase(Phase::Reconnecting {
            expert: a.expert.clone(),
            until,
        }));
        self.state = State::Suspended(Suspended {
            expert: a.expert,
            since: a.since,
            was_controlling,
            deadline: until,
        });
        true
    }

    /// Continues a suspended session on a new connection, in the state it
    /// had, without a new prompt.
    fn reattach(&mut self, now: Instant, new_token: Option<ResumeToken>) {
        let State::Suspended(s) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        self.decoder = FrameDecoder::new(MAX_FRAME_LEN);
        self.last_received = now;
        if let Some(used) = std::mem::replace(&mut self.resume_token, new_token) {
            if self.resume_unconfirmed.len() == MAX_UNCONFIRMED_RESUME_TOKENS {
                self.resume_unconfirmed.pop_front();
            }
            self.resume_unconfirmed.push_back(used);
        }
        self.audit(AuditEvent::Resumed);
        // The new token first: when the expert answers the grant below, it
        // has the token, and the older ones can be forgotten.
        self.offer_resume(now);
        let (view, view_revoker) = ViewConsent::mint(self.epoch());
        self.send(
            now,
            Message::ConsentGranted {
                kind: ConsentKind::View,
            },
        );
        self.push(DeviceOutput::StartCapture(view));
        let mut control = Control::None;
        let mut phase = Phase::Viewing {
            expert: s.expert.clone(),
            since: s.since,
        };
        if s.was_controlling {
            let (token, revoker) = ControlConsent::mint(self.epoch());
            control = Control::Granted { revoker };
            self.send(
                now,
                Message::ConsentGranted {
                    kind: ConsentKind::Control,
                },
            );
            self.push(DeviceOutput::EnableInjection(token));
            phase = Phase::Controlling {
                expert: s.expert.clone(),
                since: s.since,
            };
        }
        self.push(DeviceOutput::Phase(phase));
        self.state = State::Active(Active {
            expert: s.expert,
            since: s.since,
            view: view_revoker,
            control,
        });
        if let Some((id, typed)) = self.typing_cut.take() {
            self.send(
                now,
                Message::Typed {
                    id,
                    typed,
                    outcome: TypeOutcome::ConnectionLost,
                },
            );
        }
    }

    fn offer_resume(&mut self, now: Instant) {
        if self.config.resume_grace.is_zero() {
            return;
        }
        if let Some(token) = self.resume_token.clone() {
            self.send(
                now,
                Message::ResumeOffer {
                    token,
                    grace_secs: secs_u16(self.config.resume_grace),
                },
            );
        }
    }

    fn ignored(&mut self, message: &'static str, state: &'static str) {
        self.ignored += 1;
        self.audit(AuditEvent::Ignored { message, state });
    }

    fn auth_decided(&mut self, now: Instant, result: Result<ExpertIdentity, (ByeReason, String)>) {
        let State::Authenticating(a) = &self.state else {
            return;
        };
        let says = a.says.clone();
        let result = result.map(|mut expert| {
            // A hint only where it adds something to the identified name.
            expert.says = Some(says).filter(|s| !s.is_empty() && *s != expert.name);
            expert
        });
        match result {
            Err((reason, detail)) => {
                self.audit(AuditEvent::AuthFailed {
                    reason,
                    detail: detail.clone(),
                });
                self.close(now, reason, detail);
            }
            Ok(expert) => {
                self.decoder.set_max_len(MAX_FRAME_LEN);
                self.audit(AuditEvent::AuthOk {
                    expert: expert.clone(),
                });
                let deadline = now + self.config.consent_timeout;
                self.send(
                    now,
                    Message::ConsentPending {
                        kind: ConsentKind::View,
                        timeout_secs: secs_u16(self.config.consent_timeout),
                    },
                );
                self.audit(AuditEvent::ConsentAsked {
                    kind: ConsentKind::View,
                });
                self.push(DeviceOutput::Phase(Phase::AwaitingView {
                    expert: expert.clone(),
                }));
                let prompt = self.next_prompt();
                self.push(DeviceOutput::ShowPrompt(Prompt {
                    id: prompt,
                    kind: ConsentKind::View,
                    expert: expert.clone(),
                    deadline,
                    file: None,
                }));
                self.state = State::AwaitViewConsent(AwaitViewConsent {
                    expert,
                    deadline,
                    prompt,
                });
            }
        }
    }

    /// The prompt open now, if any.
    pub fn open_prompt(&self) -> Option<PromptId> {
        match &self.state {
            State::AwaitViewConsent(s) => Some(s.prompt),
            State::Active(Active {
                control: Control::Pending { prompt, .. },
                ..
            }) => Some(*prompt),
            #[cfg(feature = "files")]
            State::Active(_) => self.files.prompt(),
            _ => None,
        }
    }

    /// Applies a decision of the person at the device and says what it
    /// did. An answer acts only on the prompt it names, and only while that
    /// prompt is open; taking control back or ending works in every state,
    /// reconnecting included.
    pub fn decide(&mut self, now: Instant, command: LocalCommand) -> Outcome {
        if self.is_closed() {
            return Outcome::Unchanged {
                why: "the session is over",
            };
        }
        match command {
            LocalCommand::End => {
                self.close(
                    now,
                    ByeReason::EndedByUser,
                    "the person at the device ended the session".into(),
                );
                Outcome::Applied
            }
            LocalCommand::Answer { prompt, accept } => self.answer(now, prompt, accept, false),
            LocalCommand::AllowFiles { prompt } => self.answer(now, prompt, true, true),
            LocalCommand::StopControl | LocalCommand::StopControlHotkey => {
                let reason = if command == LocalCommand::StopControl {
                    ControlEndReason::StoppedByUser
                } else {
                    ControlEndReason::Hotkey
                };
                match &mut self.state {
                    State::Active(Active {
                        control: Control::Granted { .. },
                        ..
                    }) => self.end_control(now, reason),
                    // Stopping a pending request declines it.
                    State::Active(Active {
                        control: Control::Pending { .. },
                        ..
                    }) => self.decline_control(now, DeclineReason::Declined),
                    // Away: control is gone for good; the resume brings
                    // back viewing only.
                    State::Suspended(s) if s.was_controlling => {
                        s.was_controlling = false;
                        self.audit(AuditEvent::ControlEndedWhileAway { reason });
                    }
                    _ => {
                        return Outcome::Unchanged {
                            why: "the expert does not have control",
                        };
                    }
                }
                Outcome::Applied
            }
            LocalCommand::CancelFile => {
                #[cfg(feature = "files")]
                if self.file_cancel_locally(now) {
                    return Outcome::Applied;
                }
                Outcome::Unchanged {
                    why: "no file transfer is under way",
                }
            }
        }
    }

    /// A question about a file is on screen.
    fn file_question_open(&self) -> bool {
        #[cfg(feature = "files")]
        return self.files.prompt().is_some();
        #[cfg(not(feature = "files"))]
        false
    }

    /// Answers prompt `prompt`, if it is the open one. `for_session`: yes
    /// to this file and every later one of the session.
    fn answer(
        &mut self,
        now: Instant,
        prompt: PromptId,
        accept: bool,
        for_session: bool,
    ) -> Outcome {
        let open = self.open_prompt();
        if open != Some(prompt) {
            self.audit(AuditEvent::StaleAnswer { prompt, open });
            return Outcome::Stale { prompt, open };
        }
        #[cfg(feature = "files")]
        if self.files.prompt() == Some(prompt) {
            self.file_answered(now, accept, for_session);
            return Outcome::Applied;
        }
        if for_session {
            return Outcome::Unchanged {
                why: "the open prompt is not about a file",
            };
        }
        match (&self.state, accept) {
            (State::AwaitViewConsent(_), true) => self.grant_view(now),
            (State::AwaitViewConsent(_), false) => self.decline_view(now, DeclineReason::Declined),
            (_, true) => self.grant_control(now),
            (_, false) => self.decline_control(now, DeclineReason::Declined),
        }
        Outcome::Applied
    }

    fn next_prompt(&mut self) -> PromptId {
        self.last_prompt += 1;
        PromptId(self.last_prompt)
    }

    /// A control request ended without a yes: the next one waits.
    fn control_declined(&mut self, now: Instant) {
        if self.config.control_backoff.is_zero() {
            return;
        }
        self.control_declines = self.control_declines.saturating_add(1);
        let factor = 1u32 << self.control_declines.saturating_sub(1).min(8);
        let wait = self
            .config
            .control_backoff
            .saturating_mul(factor)
            .min(MAX_CONTROL_BACKOFF);
        self.control_not_before = Some(now + wait);
    }

    fn grant_view(&mut self, now: Instant) {
        let State::AwaitViewConsent(s) = std::mem::replace(&mut self.state, State::Closed) else {
            return;
        };
        let (token, revoker) = ViewConsent::mint(self.epoch());
        self.push(DeviceOutput::HidePrompt);
        self.send(
            now,
            Message::ConsentGranted {
                kind: ConsentKind::View,
            },
        );
        self.audit(AuditEvent::ConsentAnswered {
            kind: ConsentKind::View,
            granted: true,
            reason: None,
        });
        self.push(DeviceOutput::StartCapture(token));
        self.push(DeviceOutput::Phase(Phase::Viewing {
            expert: s.expert.clone(),
            since: now,
        }));
        self.state = State::Active(Active {
            expert: s.expert,
            since: now,
            view: revoker,
            control: Control::None,
        });
        self.offer_resume(now);
    }

    fn decline_view(&mut self, now: Instant, reason: DeclineReason) {
        self.push(DeviceOutput::HidePrompt);
        self.send(
            now,
            Message::ConsentDeclined {
                kind: ConsentKind::View,
                reason,
            },
        );
        self.audit(AuditEvent::ConsentAnswered {
            kind: ConsentKind::View,
            granted: false,
            reason: Some(reason),
        });
        let (bye, detail) = match reason {
            DeclineReason::TimedOut => (ByeReason::ConsentTimeout, "nobody answered the prompt"),
            _ => (ByeReason::Declined, "the person at the device declined"),
        };
        self.close(now, bye, detail.into());
    }

    fn grant_control(&mut self, now: Instant) {
        let (token, revoker) = ControlConsent::mint(self.epoch());
        let State::Active(a) = &mut self.state else {
            return;
        };
        a.control = Control::Granted { revoker };
        self.control_declines = 0;
        self.control_not_before = None;
        let phase = Phase::Controlling {
            expert: a.expert.clone(),
            since: a.since,
        };
        self.push(DeviceOutput::HidePrompt);
        self.send(
            now,
            Message::ConsentGranted {
                kind: ConsentKind::Control,
            },
        );
        self.audit(AuditEvent::ConsentAnswered {
            kind: ConsentKind::Control,
            granted: true,
            reason: None,
        });
        self.push(DeviceOutput::EnableInjection(token));
        self.push(DeviceOutput::Phase(phase));
    }

    fn decline_control(&mut self, now: Instant, reason: DeclineReason) {
        let State::Active(a) = &mut self.state else {
            return;
        };
        a.control = Control::None;
        self.control_declined(now);
        self.push(DeviceOutput::HidePrompt);
        self.send(
            now,
            Message::ConsentDeclined {
                kind: ConsentKind::Control,
                reason,
            },
        );
        self.audit(AuditEvent::ConsentAnswered {
            kind: ConsentKind::Control,
            granted: false,
            reason: Some(reason),
        });
    }

    /// Revokes control: release first, then disable, then tell.
    fn end_control(&mut self, now: Instant, reason: ControlEndReason) {
        let State::Active(a) = &mut self.state else {
            return;
        };
        let Control::Granted { revoker } = std::mem::replace(&mut a.control, Control::None) else {
            return;
        };
        let phase = Phase::Viewing {
            expert: a.expert.clone(),
            since: a.since,
        };
        self.stop_typing(now, TypeOutcome::ControlEnded);
        self.push(DeviceOutput::ReleaseAll);
        revoker.revoke();
        self.push(DeviceOutput::DisableInjection);
        self.send(now, Message::ControlEnded { reason });
        self.audit(AuditEvent::ControlEnded { reason });
        self.push(DeviceOutput::Phase(phase));
    }

    /// Ends the session, telling the expert why.
    fn close(&mut self, now: Instant, reason: ByeReason, detail: String) {
        if self.is_closed() {
            return;
        }
        self.teardown();
        self.send(
            now,
            Message::Bye {
                reason,
                detail: text(&detail),
            },
        );
        self.finish(reason, detail);
    }

    /// Ends the session without a Bye (the peer is gone or already said bye).
    fn close_silently(&mut self, reason: ByeReason, detail: String) {
        if self.is_closed() {
            return;
        }
        self.teardown();
        self.finish(reason, detail);
    }

    fn teardown(&mut self) {
        self.typing = None;
        #[cfg(feature = "files")]
        self.file_teardown();
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Active(a) => {
                if let Control::Granted { revoker } = a.control {
                    self.push_urgent(DeviceOutput::ReleaseAll);
                    revoker.revoke();
                    self.push_urgent(DeviceOutput::DisableInjection);
                } else if matches!(a.control, Control::Pending { .. }) {
                    self.push(DeviceOutput::HidePrompt);
                }
                a.view.revoke();
                self.push(DeviceOutput::StopCapture);
            }
            State::AwaitViewConsent(_) => self.push(DeviceOutput::HidePrompt),
            _ => {}
        }
    }

    fn finish(&mut self, reason: ByeReason, detail: String) {
        self.audit(AuditEvent::Closed {
            reason,
            detail: detail.clone(),
        });
        self.push(DeviceOutput::Phase(Phase::Closed {
            reason,
            detail: detail.clone(),
        }));
        self.push(DeviceOutput::Close { reason, detail });
        self.state = State::Closed;
    }

    fn protocol_error(&mut self, now: Instant, e: FrameError) {
        self.close(now, ByeReason::ProtocolError, e.to_string());
    }

    fn incompatible(&mut self, now: Instant, v: u16, min: u16) {
        self.state = State::AwaitHello(AwaitHello { deadline: now });
        self.close(
            now,
            ByeReason::IncompatibleVersion {
                min: MIN_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            },
            format!(
                "incompatible version: expert speaks protocol {min}–{v}, device {MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION}"
            ),
        );
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    fn send(&mut self, now: Instant, m: Message) {
        self.last_sent = now;
        self.push(DeviceOutput::Send(m));
    }

    fn audit(&mut self, e: AuditEvent) {
        self.push(DeviceOutput::Audit(e));
    }

    fn push(&mut self, o: DeviceOutput) {
        self.out.push_back(o);
    }

    /// Safety outputs jump the queue: nothing already queued (an `Inject`
    /// among them) may run before injection is switched off.
    fn push_urgent(&mut self, o: DeviceOutput) {
        // Drop queued injections: consent is being withdrawn.
        self.out.retain(|o| !matches!(o, DeviceOutput::Inject(_)));
        self.out.push_back(o);
    }
}

/// Whether a peer announcing `[min, v]` overlaps our supported range.
pub fn versions_compatible(v: u16, min: u16) -> bool {
    v >= MIN_PROTOCOL_VERSION && min <= PROTOCOL_VERSION
}

fn secs_u16(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}
