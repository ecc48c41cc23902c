//! A two-party harness: a [`DeviceSession`] and an [`ExpertSession`] joined by
//! an in-memory link, on virtual time. Used by this crate's tests and (with
//! the `testing` feature) by other crates that need real consent tokens.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::consent::{ControlConsent, ViewConsent};
use crate::fb::Framebuffer;
use crate::frame::encode;
use crate::msg::*;
use crate::session::*;

/// What the device machine asked for, without the tokens (for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRecord {
    Send(&'static str),
    Authenticate,
    ShowPrompt(ConsentKind),
    HidePrompt,
    Phase(Phase),
    StartCapture,
    StopCapture,
    EnableInjection,
    DisableInjection,
    ReleaseAll,
    /// `live` says whether a live control consent was held when it came.
    Inject {
        event: InjectEvent,
        live: bool,
    },
    UpdateRequested,
    /// A view self-check for update `seq`, answered by the fake capture
    /// ("all bands compared, none differed").
    CheckView {
        seq: u32,
    },
    /// The expert chose screen `index` (the fake capture has two, 4×2 each,
    /// side by side, and lists them to experts that take the list).
    SelectScreen(u8),
    ExactOnly,
    ShowChat(String),
    Audit(AuditEvent),
    Close(ByeReason),
    /// A file step for the agent (kept whole in [`Pair::files`]).
    File,
    /// The strip names a transfer under way (`true`) or no longer.
    FileActivity(bool),
}

type Authenticator = Box<dyn FnMut(&AuthRequest) -> Result<ExpertIdentity, (ByeReason, String)>>;

/// Both ends of a session and the link between them.
pub struct Pair {
    pub now: Instant,
    pub device: DeviceSession,
    pub expert: ExpertSession,
    pub device_log: Vec<DeviceRecord>,
    pub expert_log: Vec<ExpertEvent>,
    pub view: Option<ViewConsent>,
    pub control: Option<ControlConsent>,
    pub prompt: Option<Prompt>,
    /// The expert's framebuffer, fed by the updates the harness's fake
    /// capture sends.
    pub framebuffer: Option<Framebuffer>,
    /// While false, bytes in flight are dropped (cable pulled).
    pub link_up: bool,
    pub authenticate: Authenticator,
    d2e: VecDeque<Vec<u8>>,
    e2d: VecDeque<Vec<u8>>,
    device_transport_closed: bool,
    expert_transport_closed: bool,
    update_seq: u32,
    update_wanted: bool,
    screen_changed: bool,
    /// File steps the device asked of the agent, in order.
    #[cfg(feature = "files")]
    pub files: Vec<crate::session::FileOutput>,
}

impl core::fmt::Debug for Pair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pair")
            .field("device", &self.device.state_name())
            .field("expert", &self.expert.state())
            .finish()
    }
}

/// The name the [`Pair`]'s expert gives itself in its hello.
pub const PAIR_EXPERT_NAME: &str = "Ann";

/// An expert identity as an offer would produce it, with the hint the
/// device machine adds from the [`Pair`]'s hello.
pub fn offer_identity(name: &str) -> ExpertIdentity {
    ExpertIdentity {
        name: name.into(),
        method: AuthMethod::Offer {
            fingerprint: crate::Fingerprint([7; 32]),
        },
        says: Some(PAIR_EXPERT_NAME.to_owned()).filter(|s| s != name),
    }
}

impl Pair {
    /// A pair whose device accepts any offer as "Ann Expert".
    pub fn new(device: DeviceConfig) -> Self {
        Self::with_auth(
            device,
            Auth::Offer,
            Box::new(|_| Ok(offer_identity("Ann Expert"))),
        )
    }

    pub fn with_auth(device: DeviceConfig, auth: Auth, authenticate: Authenticator) -> Self {
        let now = Instant::now();
        Self {
            now,
            device: DeviceSession::new(now, device, 0),
            expert: ExpertSession::new(now, ExpertConfig::new(PAIR_EXPERT_NAME, auth)),
            device_log: Vec::new(),
            expert_log: Vec::new(),
            view: None,
            control: None,
            prompt: None,
            framebuffer: None,
            link_up: true,
            authenticate,
            d2e: VecDeque::new(),
            e2d: VecDeque::new(),
            device_transport_closed: false,
            expert_transport_closed: false,
            update_seq: 0,
            update_wanted: false,
            screen_changed: false,
            #[cfg(feature = "files")]
            files: Vec::new(),
        }
    }

    /// Runs both machines until nothing moves.
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = self.drain_device();
            moved |= self.drain_expert();
            moved |= self.deliver();
            if !moved {
                return;
            }
        }
        panic!("sessions did not settle");
    }

    /// Advances virtual time by `dt` in small steps, firing timers.
    pub fn advance(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            self.drive();
            let next = [self.device.poll_timeout(), self.expert.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.device.handle_timeout(self.now);
                    self.expert.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        self.drive();
    }

    pub fn device_input(&mut self, input: DeviceInput) {
        self.device.handle(self.now, input);
        self.drive();
    }

    /// The person at the device decides; an answer goes to the prompt open
    /// now (as a tap on the prompt on screen would).
    pub fn local(&mut self, d: LocalDecision) {
        if let Some(c) = d.on(self.device.open_prompt()) {
            self.device_input(DeviceInput::Local(c));
        }
    }

    /// The person answers prompt `prompt`, whichever is open now.
    pub fn answer(&mut self, prompt: PromptId, accept: bool) -> Outcome {
        let o = self
            .device
            .decide(self.now, LocalCommand::Answer { prompt, accept });
        self.drive();
        o
    }

    pub fn expert_action(&mut self, a: UserAction) {
        self.expert.handle(self.now, ExpertInput::Action(a));
        self.drive();
    }

    /// Sends raw bytes to the device as if from the expert.
    pub fn inject_to_device(&mut self, bytes: Vec<u8>) {
        self.device.handle(self.now, DeviceInput::Received(bytes));
        self.drive();
    }

    /// Connect, accept view: returns when the expert is viewing.
    pub fn establish_view(&mut self) {
        self.drive();
        self.local(LocalDecision::Accept);
    }

    /// Connect, accept view and control.
    pub fn establish_control(&mut self) {
        self.establish_view();
        self.expert_action(UserAction::RequestControl);
        self.local(LocalDecision::Accept);
    }

    /// A pair whose device session can be resumed (token `[1; 32]`).
    pub fn resumable() -> Self {
        let mut p = Self::new(DeviceConfig::default());
        let now = p.now;
        p.device = DeviceSession::new(now, DeviceConfig::default(), 0)
            .with_resume_token(ResumeToken([1; 32]));
        p
    }

    /// The resume token the expert was offered last, if any.
    pub fn offered_token(&self) -> Option<ResumeToken> {
        self.expert_log.iter().rev().find_map(|e| match e {
            ExpertEvent::ResumeOffer { token, .. } => Some(token.clone()),
            _ => None,
        })
    }

    /// The expert reconnects on a new connection presenting `token` as
    /// `identity`. Plays the agent's part: a fresh device machine handles the
    /// new connection's hello and auth; if the token and identity match the
    /// suspended session, that session continues on the new connection.
    /// Returns whether the resume was accepted.
    pub fn reconnect(&mut self, token: ResumeToken, identity: &ExpertIdentity) -> bool {
        self.link_up = true;
        self.d2e.clear();
        self.e2d.clear();
        self.device_transport_closed = false;
        self.expert_transport_closed = false;
        self.expert_log.clear();
        self.expert = ExpertSession::new(
            self.now,
            ExpertConfig::new(
                PAIR_EXPERT_NAME,
                Auth::Resume {
                    token: token.clone(),
                },
            ),
        );
        let mut fresh = DeviceSession::new(self.now, DeviceConfig::default(), 1000);
        let mut request = None;
        for _ in 0..8 {
            while let Some(o) = fresh.poll_output() {
                match o {
                    DeviceOutput::Send(m) => self.send_d2e(&m),
                    DeviceOutput::Authenticate(r) => request = Some(r),
                    _ => {}
                }
            }
            while let Some(e) = self.expert.poll_output() {
                if let ExpertEvent::Send(m) = e
                    && let Ok(b) = encode(&m)
                {
                    fresh.handle(self.now, DeviceInput::Received(b));
                }
            }
        }
        let accepted = matches!(&request, Some(AuthRequest::Resume { token: t }) if *t == token)
            && self.device.is_suspended()
            && self.device.resume_tokens().contains(&token)
            && self.device.expert() == Some(identity);
        if accepted {
            let next = ResumeToken([token.0[0].wrapping_add(1); 32]);
            self.device.handle(
                self.now,
                DeviceInput::Reattach {
                    new_token: Some(next),
                },
            );
        } else {
            fresh.handle(
                self.now,
                DeviceInput::AuthDecided(Err((
                    ByeReason::ResumeRejected,
                    "unknown or used resume token".into(),
                ))),
            );
            while let Some(o) = fresh.poll_output() {
                match o {
                    DeviceOutput::Send(m) => self.send_d2e(&m),
                    DeviceOutput::Close { .. } => self.device_transport_closed = true,
                    _ => {}
                }
            }
        }
        // Hellos crossed; deliver what is in flight.
        self.drive();
        accepted
    }

    /// Whether the device logged `r`.
    pub fn device_did(&self, r: &DeviceRecord) -> bool {
        self.device_log.contains(r)
    }

    /// The reason the expert saw when the session closed.
    pub fn expert_close(&self) -> Option<(ByeReason, String)> {
        self.expert_log.iter().find_map(|e| match e {
            ExpertEvent::Closed {
                reason, sentence, ..
            } => Some((*reason, sentence.clone())),
            _ => None,
        })
    }

    /// The reason the device closed with.
    pub fn device_close(&self) -> Option<ByeReason> {
        self.device_log.iter().find_map(|e| match e {
            DeviceRecord::Close(r) => Some(*r),
            _ => None,
        })
    }

    fn drain_device(&mut self) -> bool {
        let mut moved = false;
        while let Some(o) = self.device.poll_output() {
            moved = true;
            let rec = match o {
                DeviceOutput::Send(m) => {
                    let name = m.name();
                    self.send_d2e(&m);
                    DeviceRecord::Send(name)
                }
                DeviceOutput::Authenticate(req) => {
                    let result = (self.authenticate)(&req);
                    self.device_log.push(DeviceRecord::Authenticate);
                    self.device
                        .handle(self.now, DeviceInput::AuthDecided(result));
                    continue;
                }
                DeviceOutput::ShowPrompt(p) => {
                    let k = p.kind;
                    self.prompt = Some(p);
                    DeviceRecord::ShowPrompt(k)
                }
                DeviceOutput::HidePrompt => {
                    self.prompt = None;
                    DeviceRecord::HidePrompt
                }
                DeviceOutput::Phase(p) => {
                    // The agent closes the transport of a suspended session.
                    if matches!(p, Phase::Reconnecting { .. }) {
                        self.device_transport_closed = true;
                    }
                    DeviceRecord::Phase(p)
                }
                DeviceOutput::StartCapture(t) => {
                    self.view = Some(t);
                    if self.device.screens_supported() {
                        self.send_d2e(&Message::Screens(Box::new(two_screens(0))));
                    }
                    self.send_d2e(&Message::ScreenInfo(ScreenInfo {
                        width: 4,
                        height: 2,
                        format: WireFormat::Xrgb8888,
                        generation: 1,
                    }));
                    DeviceRecord::StartCapture
                }
                DeviceOutput::StopCapture => {
                    self.view = None;
                    DeviceRecord::StopCapture
                }
                DeviceOutput::EnableInjection(t) => {
                    self.control = Some(t);
                    DeviceRecord::EnableInjection
                }
                DeviceOutput::DisableInjection => {
                    self.control = None;
                    DeviceRecord::DisableInjection
                }
                DeviceOutput::ReleaseAll => DeviceRecord::ReleaseAll,
                DeviceOutput::Inject(event) => {
                    let live = self.control.as_ref().is_some_and(|c| c.is_live());
                    DeviceRecord::Inject { event, live }
                }
                DeviceOutput::UpdateRequested { incremental } => {
                    self.update_wanted = true;
                    if !incremental {
                        self.screen_changed = true;
                    }
                    self.send_update_if_due();
                    DeviceRecord::UpdateRequested
                }
                DeviceOutput::CheckView(r) => {
                    let compared = r.hashes.len() as u16;
                    self.send_d2e(&Message::ViewChecked {
                        seq: r.seq,
                        compared,
                        differing: 0,
                    });
                    DeviceRecord::CheckView { seq: r.seq }
                }
                DeviceOutput::SelectScreen(index) => {
                    if index < 2 {
                        self.send_d2e(&Message::Screens(Box::new(two_screens(index))));
                        self.send_d2e(&Message::ScreenInfo(ScreenInfo {
                            width: 4,
                            height: 2,
                            format: WireFormat::Xrgb8888,
                            generation: 2 + u32::from(index),
                        }));
                    }
                    DeviceRecord::SelectScreen(index)
                }
                DeviceOutput::ExactOnly => DeviceRecord::ExactOnly,
                DeviceOutput::ShowChat(t) => DeviceRecord::ShowChat(t),
                DeviceOutput::Audit(a) => DeviceRecord::Audit(a),
                DeviceOutput::FileActivity(f) => DeviceRecord::FileActivity(f.is_some()),
                #[cfg(feature = "files")]
                DeviceOutput::File(f) => {
                    self.files.push(f);
                    DeviceRecord::File
                }
                DeviceOutput::Close { reason, .. } => {
                    self.device_transport_closed = true;
                    DeviceRecord::Close(reason)
                }
            };
            self.device_log.push(rec);
        }
        moved
    }

    /// The device screen changes: the fake capture sends an update when the
    /// expert asked for one.
    pub fn change_screen(&mut self) {
        self.screen_changed = true;
        self.send_update_if_due();
        self.drive();
    }

    /// The fake capture: one update per request, only when something changed
    /// and only with a live view consent.
    fn send_update_if_due(&mut self) {
        if self.update_wanted
            && self.screen_changed
            && self.view.as_ref().is_some_and(|v| v.is_live())
        {
            self.update_wanted = false;
            self.screen_changed = false;
            self.update_seq += 1;
            let mut rects = heapless::Vec::new();
            let _ = rects.push(Rect {
                x: 0,
                y: 0,
                w: 4,
                h: 2,
                encoding: Encoding::Solid(self.update_seq),
            });
            let part = UpdatePart {
                seq: self.update_seq,
                generation: 1,
                last: true,
                rects,
            };
            self.send_d2e(&Message::Update(Box::new(part)));
        }
    }

    fn drain_expert(&mut self) -> bool {
        let mut moved = false;
        while let Some(e) = self.expert.poll_output() {
            moved = true;
            match &e {
                ExpertEvent::Send(m) if !self.expert_transport_closed && self.link_up => {
                    if let Ok(b) = encode(m) {
                        self.e2d.push_back(b);
                    }
                }
                ExpertEvent::Screen(info) => self.framebuffer = Framebuffer::new(info).ok(),
                ExpertEvent::Update(part) => {
                    if let Some(fb) = &mut self.framebuffer {
                        let _ = fb.apply(part);
                    }
                }
                ExpertEvent::Closed { .. } => self.expert_transport_closed = true,
                _ => {}
            }
            // Updates are not worth keeping in the log.
            if !matches!(e, ExpertEvent::Update(_)) {
                self.expert_log.push(e);
            }
        }
        moved
    }

    fn send_d2e(&mut self, m: &Message) {
        if !self.device_transport_closed
            && self.link_up
            && let Ok(b) = encode(m)
        {
            self.d2e.push_back(b);
        }
    }

    fn deliver(&mut self) -> bool {
        let mut moved = false;
        if !self.link_up {
            self.d2e.clear();
            self.e2d.clear();
            return false;
        }
        while let Some(b) = self.d2e.pop_front() {
            moved = true;
            self.expert.handle(self.now, ExpertInput::Received(b));
        }
        while let Some(b) = self.e2d.pop_front() {
            moved = true;
            self.device.handle(self.now, DeviceInput::Received(b));
        }
        // A closed transport reaches the other side as a closed connection.
        if self.device_transport_closed && !self.expert.is_closed() {
            moved = true;
            self.expert
                .handle(self.now, ExpertInput::PeerClosed { error: None });
        }
        if self.expert_transport_closed && !self.device.is_closed() && !self.device.is_suspended() {
            moved = true;
            self.device
                .handle(self.now, DeviceInput::PeerClosed { error: None });
        }
        moved
    }
}

/// The fake capture's two screens, `current` shown.
fn two_screens(current: u8) -> ScreenList {
    let mut screens = heapless::Vec::new();
    for (i, name) in ["Virtual-1", "Virtual-2"].into_iter().enumerate() {
        let _ = screens.push(ScreenEntry {
            name: text(name),
            width: 4,
            height: 2,
            x: 4 * i as u16,
            y: 0,
        });
    }
    ScreenList { current, screens }
}

/// A real control consent, minted by a real session whose person at the
/// device accepted view and control. For sink tests in other crates: keep the
/// `Pair` to revoke it (`pair.local(LocalDecision::StopControl)`).
pub fn granted_control() -> (Pair, ControlConsent) {
    let mut pair = Pair::new(DeviceConfig::default());
    pair.establish_control();
    let token = pair
        .control
        .take()
        .expect("the harness grants control when the person accepts");
    (pair, token)
}

/// A real view consent, as [`granted_control`] does for control.
pub fn granted_view() -> (Pair, ViewConsent) {
    let mut pair = Pair::new(DeviceConfig::default());
    pair.establish_view();
    let token = pair
        .view
        .take()
        .expect("the harness starts capture when the person accepts");
    (pair, token)
}
