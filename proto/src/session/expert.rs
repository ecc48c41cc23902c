//! The expert side of a session.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::frame::{FrameDecoder, FrameError, decode_payload, peek_hello_versions};
use crate::msg::*;

use super::device::versions_compatible;
use super::*;

/// Settings of the expert session.
#[derive(Debug, Clone)]
pub struct ExpertConfig {
    /// Self-declared name (a hint; the device trusts only the certificate).
    pub name: String,
    pub software_version: String,
    pub auth: Auth,
    /// Time for the device's hello and the authentication answer.
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub peer_timeout: Duration,
    /// Whether lossy rectangles ([`crate::msg::Encoding::Jpeg`]) are welcome:
    /// on by default; off, every update is exact (`--lossless`).
    pub lossy: bool,
}

impl ExpertConfig {
    pub fn new(name: &str, auth: Auth) -> Self {
        Self {
            name: name.into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            auth,
            connect_timeout: DEFAULT_PRE_AUTH_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            lossy: true,
        }
    }
}

/// Where the session is, as the expert's UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertState {
    /// Connected, exchanging hellos and authenticating.
    Connecting,
    /// Waiting for the person at the device to accept; the prompt declines by
    /// itself at `deadline`.
    WaitingForConsent {
        deadline: Instant,
    },
    /// Seeing the screen.
    Viewing {
        control: ControlState,
    },
    Closed,
}

/// Control while viewing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlState {
    None,
    /// Asked; waiting for the person at the device (`deadline` as above).
    Requested {
        deadline: Option<Instant>,
    },
    Granted {
        local_user_active: bool,
    },
}

/// What the expert (GUI or CLI) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    RequestControl,
    ReleaseControl,
    Chat(String),
    Pointer(Pointer),
    Key(Key),
    Touch(Touch),
    /// Ask for the whole screen again (e.g. after a local glitch).
    RefreshScreen,
    /// Check the view now (the technician's "refresh"): the glue, which
    /// holds the framebuffer, turns it into [`UserAction::ReportView`]; the
    /// machine itself ignores it.
    CheckView,
    /// Send this self-check of the framebuffer (made by the glue, which
    /// holds the pixels) to the device. Dropped unless viewing and the
    /// device speaks [`VIEW_CHECK_VERSION`].
    ReportView(Box<ViewReport>),
    /// Show screen `index` of the device's [`ExpertEvent::Screens`] list.
    /// Dropped unless viewing and the device listed that many screens.
    SelectScreen(u8),
    /// Have the device type `text` with its keyboard layout (while
    /// controlling; an empty text stops the typing under way). Answered by
    /// [`ExpertEvent::Typed`] with the same `id` (at once, with
    /// [`TypeOutcome::NotControlling`] or [`TypeOutcome::Unsupported`],
    /// when it cannot be sent). Longer texts go in parts
    /// ([`type_text_parts`]), each after the last was typed.
    TypeText {
        id: u32,
        text: Box<Text<MAX_TYPE_TEXT_LEN>>,
    },
    /// Exact pictures only from now on: the device sends what is
    /// approximate exact at once and no lossy rectangle after (devices of
    /// protocol [`EXACT_VERSION`] on; see [`ExpertSession::exact_only_supported`]).
    /// A resumed connection keeps it.
    ExactOnly,
    /// A file transfer step ([`crate::files`]): `Get`, `Put`, `Data`,
    /// `Ack` or `Cancel`. Sent only while viewing a device that offers
    /// files; a `Get` or `Put` that cannot be sent is answered at once by
    /// [`ExpertEvent::File`] with a `Done`.
    #[cfg(feature = "files")]
    File(Box<crate::files::FileMsg>),
    Disconnect,
}

/// `text` in parts of at most [`MAX_TYPE_TEXT_LEN`] bytes, split between
/// characters (never inside a CR LF line end).
pub fn type_text_parts(text: &str) -> Vec<Box<Text<MAX_TYPE_TEXT_LEN>>> {
    let mut parts = Vec::new();
    let mut part = Box::new(Text::<MAX_TYPE_TEXT_LEN>::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let crlf = c == '\r' && chars.peek() == Some(&'\n');
        let need = c.len_utf8() + usize::from(crlf);
        if part.len() + need > MAX_TYPE_TEXT_LEN {
            parts.push(std::mem::take(&mut part));
        }
        // Cannot fail: the part was emptied when it had no room.
        let _ = part.push(c);
        if crlf {
            let _ = part.push('\n');
            chars.next();
        }
    }
    if !part.is_empty() {
        parts.push(part);
    }
    parts
}

/// Inputs of the expert machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertInput {
    Received(Vec<u8>),
    Action(UserAction),
    PeerClosed { error: Option<String> },
}

/// What the glue and UI must do, in order.
// Chat text (512 bytes) is the largest inline variant; messages are moved
// a handful of times, so boxing it would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertEvent {
    Send(Message),
    StateChanged(ExpertState),
    /// A new screen: reset the framebuffer to this size.
    Screen(ScreenInfo),
    ScreenUnavailable(String),
    /// Apply to the framebuffer; `last` completes an update.
    Update(Box<UpdatePart>),
    CursorShape(Box<CursorShape>),
    CursorPosition {
        x: u16,
        y: u16,
        visible: bool,
    },
    /// The device's screens and which one is shown (only from devices with
    /// more than one).
    Screens(Box<ScreenList>),
    ControlDeclined(DeclineReason),
    ControlEnded(ControlEndReason),
    Chat(String),
    /// Round-trip time measured by a keepalive.
    Rtt(Duration),
    /// The device compared a [`UserAction::ReportView`] with what it sent:
    /// `differing` of `compared` bands differed and are being sent again.
    ViewChecked {
        seq: u32,
        compared: u16,
        differing: u16,
    },
    ResumeOffer {
        token: ResumeToken,
        grace: Duration,
    },
    /// How a [`UserAction::TypeText`] ended, after `typed` characters
    /// ([`TypeOutcome::sentence`] says it for the user).
    Typed {
        id: u32,
        typed: u16,
        outcome: TypeOutcome,
    },
    /// A file transfer step from the device.
    #[cfg(feature = "files")]
    File(Box<crate::files::FileMsg>),
    /// The session is over. `sentence` is for the user.
    Closed {
        reason: ByeReason,
        detail: String,
        sentence: String,
    },
}

/// The expert end of one session.
#[derive(Debug)]
pub struct ExpertSession {
    config: ExpertConfig,
    state: ExpertState,
    decoder: FrameDecoder,
    out: VecDeque<ExpertEvent>,
    /// Connect/consent deadline before viewing.
    deadline: Option<Instant>,
    got_hello: bool,
    last_received: Instant,
    last_sent: Instant,
    ping: Option<(u64, Instant)>,
    nonce: u64,
    generation: Option<u32>,
    /// The device offered a resume token: a dead connection may be resumed.
    resumable: bool,
    /// The session closed because the connection died (no `Bye` either way).
    connection_lost: bool,
    /// The device's protocol version (from its `Hello`).
    peer_version: u16,
    /// How many screens the device listed (0: it sent no list).
    screens: usize,
    /// The device's hello announced [`Capabilities::FILES`].
    peer_files: bool,
    /// The device's hello announced [`Capabilities::RECORDED`].
    peer_records: bool,
    /// The device's hello announced [`Capabilities::FILE_LIST`].
    peer_lists: bool,
}

impl ExpertSession {
    /// A session on a freshly connected transport. Queues `Hello` and `Auth`.
    pub fn new(now: Instant, config: ExpertConfig) -> Self {
        let mut s = Self {
            state: ExpertState::Connecting,
            decoder: FrameDecoder::default(),
            out: VecDeque::new(),
            deadline: Some(now + config.connect_timeout),
            got_hello: false,
            peer_version: 0,
            screens: 0,
            peer_files: false,
            peer_records: false,
            peer_lists: false,
            last_received: now,
            last_sent: now,
            ping: None,
            nonce: 0,
            generation: None,
            resumable: false,
            connection_lost: false,
            config,
        };
        let mut hello = Hello::new(
            Role::Expert,
            "shoulder",
            &s.config.software_version,
            &s.config.name,
        );
        if !s.config.lossy {
            hello.capabilities = Capabilities(hello.capabilities.0 & !Capabilities::JPEG.0);
        }
        #[cfg(feature = "files")]
        {
            hello.capabilities = hello.capabilities | Capabilities::FILES;
        }
        s.send(now, Message::Hello(hello));
        s.send(now, Message::Auth(s.config.auth.clone()));
        s
    }

    pub fn state(&self) -> ExpertState {
        self.state
    }

    pub fn is_closed(&self) -> bool {
        self.state == ExpertState::Closed
    }

    /// Whether the session ended because the connection died (closed by
    /// the network, or the device went silent after offering a resume)
    /// rather than by a `Bye` from either side. Only such a session can be
    /// resumed over a new connection.
    pub fn connection_lost(&self) -> bool {
        self.connection_lost
    }

    pub fn poll_output(&mut self) -> Option<ExpertEvent> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let keepalive = (self.last_sent + self.config.keepalive_interval)
            .min(self.last_received + self.config.peer_timeout);
        Some(match self.deadline {
            Some(d) => d.min(keepalive),
            None => keepalive,
        })
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.is_closed() {
            return;
        }
        if let Some(d) = self.deadline
            && now >= d
        {
            let reason = if self.got_hello {
                ByeReason::ConsentTimeout
            } else {
                ByeReason::AuthTimeout
            };
            return self.close(
                now,
                reason,
                "the device did not answer in time".into(),
                true,
            );
        }
        if now >= self.last_received + self.config.peer_timeout {
            if self.resumable {
                // No Bye: the device keeps the session for a resume, which
                // a Bye would end.
                self.connection_lost = true;
                return self.finish(
                    ByeReason::PeerTimeout,
                    "no keepalive from the device".into(),
                    "The device stopped answering — reconnecting may resume the session.".into(),
                );
            }
            return self.close(
                now,
                ByeReason::PeerTimeout,
                "no keepalive from the device".into(),
                true,
            );
        }
        if now >= self.last_sent + self.config.keepalive_interval {
            self.nonce += 1;
            self.ping = Some((self.nonce, now));
            self.send(now, Message::Ping { nonce: self.nonce });
        }
    }

    pub fn handle(&mut self, now: Instant, input: ExpertInput) {
        if self.is_closed() {
            return;
        }
        match input {
            ExpertInput::Received(bytes) => self.receive(now, &bytes),
            ExpertInput::Action(a) => self.action(now, a),
            ExpertInput::PeerClosed { error } => {
                let detail = error.unwrap_or_else(|| "the connection closed".into());
                self.connection_lost = true;
                self.finish(
                    ByeReason::Normal,
                    detail,
                    "The connection to the device was lost.".into(),
                );
            }
        }
    }

    fn receive(&mut self, now: Instant, bytes: &[u8]) {
        self.last_received = now;
        if let Err(e) = self.decoder.push(bytes) {
            return self.protocol_error(now, e);
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
            match decode_payload(&payload) {
                Ok(m) => self.message(now, m),
                Err(e) => {
                    if !self.got_hello
                        && let Some((v, min)) = peek_hello_versions(&payload)
                        && !versions_compatible(v, min)
                    {
                        return self.incompatible(now, v, min);
                    }
                    return self.protocol_error(now, e);
                }
            }
        }
    }

    fn message(&mut self, now: Instant, msg: Message) {
        use ExpertState as S;
        let viewing = matches!(self.state, S::Viewing { .. });
        match msg {
            Message::Bye { reason, detail } => {
                let sentence = reason.sentence();
                self.finish(reason, detail.to_string(), sentence);
            }
            Message::Ping { nonce } => self.send(now, Message::Pong { nonce }),
            Message::Pong { nonce } => {
                if let Some((n, at)) = self.ping
                    && n == nonce
                {
                    self.ping = None;
                    self.push(ExpertEvent::Rtt(now.saturating_duration_since(at)));
                }
            }
            Message::Hello(h) if !self.got_hello => {
                if !versions_compatible(h.version, h.min_version) {
                    return self.incompatible(now, h.version, h.min_version);
                }
                if h.role != Role::Device {
                    return self.close(
                        now,
                        ByeReason::ProtocolError,
                        "peer is not a device".into(),
                        true,
                    );
                }
                self.got_hello = true;
                self.peer_version = h.version;
                self.peer_files = h.capabilities.contains(Capabilities::FILES);
                self.peer_records = h.capabilities.contains(Capabilities::RECORDED);
                self.peer_lists = h.capabilities.contains(Capabilities::FILE_LIST);
            }
            Message::ConsentPending {
                kind: ConsentKind::View,
                timeout_secs,
            } if self.got_hello && self.state == S::Connecting => {
                // The device declines by itself at its deadline; allow for
                // the network on top before giving up on it.
                let deadline = now
                    + Duration::from_secs(u64::from(timeout_secs))
                    + self.config.connect_timeout;
                self.deadline = Some(deadline);
                self.set_state(S::WaitingForConsent { deadline });
            }
            // A resumed session continues without a new prompt.
            Message::ConsentGranted {
                kind: ConsentKind::View,
            } if matches!(self.state, S::WaitingForConsent { .. })
                || (self.got_hello
                    && self.state == S::Connecting
                    && matches!(self.config.auth, Auth::Resume { .. })) =>
            {
                self.deadline = None;
                self.set_state(S::Viewing {
                    control: ControlState::None,
                });
                self.send(now, Message::UpdateRequest { incremental: false });
            }
            // A declined view is followed by a Bye that says why.
            Message::ConsentDeclined {
                kind: ConsentKind::View,
                ..
            } if matches!(self.state, S::WaitingForConsent { .. }) => {}
            Message::ConsentPending {
                kind: ConsentKind::Control,
                timeout_secs,
            } if viewing => {
                let deadline = Some(now + Duration::from_secs(u64::from(timeout_secs)));
                self.set_control(ControlState::Requested { deadline });
            }
            Message::ConsentGranted {
                kind: ConsentKind::Control,
            } if viewing => {
                self.set_control(ControlState::Granted {
                    local_user_active: false,
                });
            }
            Message::ConsentDeclined {
                kind: ConsentKind::Control,
                reason,
            } if viewing => {
                self.set_control(ControlState::None);
                self.push(ExpertEvent::ControlDeclined(reason));
            }
            Message::ControlEnded { reason } if viewing => {
                self.set_control(ControlState::None);
                self.push(ExpertEvent::ControlEnded(reason));
            }
            Message::LocalUserActive { active } if viewing => {
                if let S::Viewing {
                    control: ControlState::Granted { .. },
                } = self.state
                {
                    self.set_control(ControlState::Granted {
                        local_user_active: active,
                    });
                }
            }
            Message::ScreenInfo(info) if viewing => {
                if info.width == 0
                    || info.height == 0
                    || info.width > MAX_SCREEN_EDGE
                    || info.height > MAX_SCREEN_EDGE
                {
                    return self.close(
                        now,
                        ByeReason::ProtocolError,
                        format!("impossible screen size {}×{}", info.width, info.height),
                        true,
                    );
                }
                self.generation = Some(info.generation);
                self.push(ExpertEvent::Screen(info));
            }
            Message::ScreenUnavailable { detail } if viewing => {
                self.push(ExpertEvent::ScreenUnavailable(detail.to_string()));
            }
            Message::Update(part) if viewing => {
                // Updates for an older screen crossed a mode change: skip them.
                if self.generation != Some(part.generation) {
                    if part.last {
                        self.send(now, Message::UpdateRequest { incremental: true });
                    }
                    return;
                }
                let last = part.last;
                self.push(ExpertEvent::Update(part));
                if last {
                    self.send(now, Message::UpdateRequest { incremental: true });
                }
            }
            Message::ViewChecked {
                seq,
                compared,
                differing,
            } if viewing => self.push(ExpertEvent::ViewChecked {
                seq,
                compared,
                differing,
            }),
            Message::Typed { id, typed, outcome } if viewing => {
                self.push(ExpertEvent::Typed { id, typed, outcome })
            }
            Message::CursorShape(c) if viewing => self.push(ExpertEvent::CursorShape(c)),
            #[cfg(feature = "files")]
            Message::File(f) if self.got_hello && self.peer_files => {
                self.push(ExpertEvent::File(f))
            }
            Message::Screens(list) if viewing => {
                if list.screens.is_empty() || usize::from(list.current) >= list.screens.len() {
                    return self.close(
                        now,
                        ByeReason::ProtocolError,
                        format!(
                            "screen list names screen {} of {}",
                            list.current,
                            list.screens.len()
                        ),
                        true,
                    );
                }
                self.screens = list.screens.len();
                self.push(ExpertEvent::Screens(list));
            }
            Message::CursorPosition { x, y, visible } if viewing => {
                self.push(ExpertEvent::CursorPosition { x, y, visible })
            }
            Message::Chat { text } if self.got_hello => {
                self.push(ExpertEvent::Chat(text.to_string()))
            }
            // A resumed session gets its next token before the grant.
            Message::ResumeOffer { token, grace_secs }
                if viewing
                    || (self.got_hello
                        && self.state == S::Connecting
                        && matches!(self.config.auth, Auth::Resume { .. })) =>
            {
                self.resumable = grace_secs > 0;
                self.push(ExpertEvent::ResumeOffer {
                    token,
                    grace: Duration::from_secs(u64::from(grace_secs)),
                })
            }
            m => {
                let state = match self.state {
                    S::Connecting => "connecting",
                    S::WaitingForConsent { .. } => "waiting for consent",
                    S::Viewing { .. } => "viewing",
                    S::Closed => "closed",
                };
                self.close(
                    now,
                    ByeReason::ProtocolError,
                    format!("unexpected {} while {state}", m.name()),
                    true,
                );
            }
        }
    }

    fn action(&mut self, now: Instant, action: UserAction) {
        #[cfg(feature = "files")]
        if let UserAction::File(f) = action {
            return self.file_action(now, f);
        }
        let ExpertState::Viewing { control } = self.state else {
            if let UserAction::TypeText { id, .. } = action {
                self.push(ExpertEvent::Typed {
                    id,
                    typed: 0,
                    outcome: TypeOutcome::NotControlling,
                });
            }
            if action == UserAction::Disconnect {
                self.close(
                    now,
                    ByeReason::Normal,
                    "the expert disconnected".into(),
                    false,
                );
            }
            return;
        };
        let controlling = matches!(control, ControlState::Granted { .. });
        match action {
            UserAction::RequestControl => {
                if control == ControlState::None {
                    self.set_control(ControlState::Requested { deadline: None });
                    self.send(now, Message::RequestControl);
                }
            }
            UserAction::ReleaseControl => {
                if control != ControlState::None {
                    self.send(now, Message::ReleaseControl);
                }
            }
            UserAction::Chat(t) => self.send(now, Message::Chat { text: text(&t) }),
            // Input is only sent while control is granted.
            UserAction::Pointer(p) if controlling => self.send(now, Message::Pointer(p)),
            UserAction::Key(k) if controlling => self.send(now, Message::Key(k)),
            UserAction::Touch(t) if controlling => self.send(now, Message::Touch(t)),
            UserAction::Pointer(_) | UserAction::Key(_) | UserAction::Touch(_) => {}
            UserAction::RefreshScreen => {
                self.send(now, Message::UpdateRequest { incremental: false })
            }
            UserAction::CheckView => {}
            UserAction::SelectScreen(index) => {
                if usize::from(index) < self.screens {
                    self.send(now, Message::SelectScreen { index });
                }
            }
            UserAction::ReportView(r) => {
                if self.view_check_supported() {
                    self.send(now, Message::ViewReport(r));
                }
            }
            UserAction::TypeText { id, text } => {
                let outcome = if self.peer_version < TYPE_TEXT_VERSION {
                    TypeOutcome::Unsupported
                } else if !controlling {
                    TypeOutcome::NotControlling
                } else {
                    return self.send(now, Message::TypeText { id, text });
                };
                self.push(ExpertEvent::Typed {
                    id,
                    typed: 0,
                    outcome,
                });
            }
            UserAction::ExactOnly => {
                if self.config.lossy && self.exact_only_supported() {
                    self.config.lossy = false;
                    self.send(now, Message::ExactOnly);
                }
            }
            #[cfg(feature = "files")]
            UserAction::File(_) => {}
            UserAction::Disconnect => self.close(
                now,
                ByeReason::Normal,
                "the expert disconnected".into(),
                false,
            ),
        }
    }

    /// Whether the device offers files (its hello said so).
    pub fn files_supported(&self) -> bool {
        self.peer_files
    }

    /// Whether the device lists its readable directories (its hello said
    /// so).
    pub fn files_listed(&self) -> bool {
        self.peer_lists
    }

    /// Whether the device records this session (its hello said so).
    pub fn device_records(&self) -> bool {
        self.peer_records
    }

    /// Sends a file step while viewing a device that offers files; a
    /// request that cannot go is answered at once.
    #[cfg(feature = "files")]
    fn file_action(&mut self, now: Instant, f: Box<crate::files::FileMsg>) {
        use crate::files::{FileMsg, FileOutcome, FileRefusal};
        let viewing = matches!(self.state, ExpertState::Viewing { .. });
        let listing = matches!(*f, FileMsg::List { .. });
        if viewing && self.peer_files && (!listing || self.peer_lists) {
            return self.send(now, Message::File(f));
        }
        if let FileMsg::Get { id, .. } | FileMsg::Put { id, .. } | FileMsg::List { id, .. } = *f {
            let why = if viewing {
                FileRefusal::NotOffered
            } else {
                FileRefusal::NotViewing
            };
            self.push(ExpertEvent::File(Box::new(FileMsg::Done {
                id,
                outcome: FileOutcome::Refused(why),
            })));
        }
    }

    /// Whether the device takes [`UserAction::ExactOnly`] mid-session
    /// (protocol [`EXACT_VERSION`] on); an older one needs a new
    /// connection with `lossy` off.
    pub fn exact_only_supported(&self) -> bool {
        self.got_hello && self.peer_version >= EXACT_VERSION
    }

    /// Whether lossy pictures are still welcome (`lossy` in the config,
    /// until [`UserAction::ExactOnly`]).
    pub fn lossy(&self) -> bool {
        self.config.lossy
    }

    /// Whether the device takes [`UserAction::ReportView`] (protocol 2 on).
    pub fn view_check_supported(&self) -> bool {
        self.got_hello && self.peer_version >= VIEW_CHECK_VERSION
    }

    fn set_state(&mut self, s: ExpertState) {
        if self.state != s {
            self.state = s;
            self.push(ExpertEvent::StateChanged(s));
        }
    }

    fn set_control(&mut self, control: ControlState) {
        if matches!(self.state, ExpertState::Viewing { .. }) {
            self.set_state(ExpertState::Viewing { control });
        }
    }

    fn protocol_error(&mut self, now: Instant, e: FrameError) {
        self.close(now, ByeReason::ProtocolError, e.to_string(), true);
    }

    fn incompatible(&mut self, now: Instant, v: u16, min: u16) {
        let reason = ByeReason::IncompatibleVersion { min, max: v };
        let sentence = reason.sentence();
        self.send(
            now,
            Message::Bye {
                reason: ByeReason::IncompatibleVersion {
                    min: MIN_PROTOCOL_VERSION,
                    max: PROTOCOL_VERSION,
                },
                detail: text("incompatible version"),
            },
        );
        self.finish(
            reason,
            format!("device speaks protocol {min}–{v}"),
            sentence,
        );
    }

    /// Ends the session, telling the device. `our_fault_detail` marks errors
    /// found on this side (the sentence then says what we saw).
    fn close(&mut self, now: Instant, reason: ByeReason, detail: String, local_error: bool) {
        if self.is_closed() {
            return;
        }
        self.send(
            now,
            Message::Bye {
                reason,
                detail: text(&detail),
            },
        );
        let sentence = if local_error {
            match reason {
                ByeReason::ProtocolError => format!(
                    "The device sent something this client cannot use ({detail}) — check both sides run matching versions."
                ),
                ByeReason::PeerTimeout => {
                    "The device stopped answering — check the network.".into()
                }
                ByeReason::AuthTimeout => {
                    "The device did not answer — check the address and that the agent runs.".into()
                }
                ByeReason::ConsentTimeout => "Nobody at the device answered in time.".into(),
                r => r.sentence(),
            }
        } else {
            "You disconnected.".into()
        };
        self.finish(reason, detail, sentence);
    }

    fn finish(&mut self, reason: ByeReason, detail: String, sentence: String) {
        if self.is_closed() {
            return;
        }
        self.deadline = None;
        self.set_state(ExpertState::Closed);
        self.push(ExpertEvent::Closed {
            reason,
            detail,
            sentence,
        });
    }

    fn send(&mut self, now: Instant, m: Message) {
        self.last_sent = now;
        self.push(ExpertEvent::Send(m));
    }

    fn push(&mut self, e: ExpertEvent) {
        self.out.push_back(e);
    }
}
