//! One connection's session: the loop that drives the [`DeviceSession`]
//! with bytes, timers, the person's decisions and screen updates, and the
//! dispatch of what the machine asks for (prompts, capture, injection,
//! audit, control-socket news).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use serde_json::{Map, Value};
use shoulder_proto::consent::ControlConsent;
use shoulder_proto::frame::{FrameBoundaries, encode_into};
use shoulder_proto::session::{
    AuditEvent, AuthMethod, DeviceInput, DeviceOutput, DeviceSession, Phase,
};
use shoulder_proto::{ByeReason, ConsentKind, Message};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::server::TlsStream;

use super::authorise::PreAuth;
use super::resume::{ResumeLink, refuse_late_resume};
use super::{CLOSE_GRACE, Shared, Stream, lock};
use crate::audit::Context;
use crate::backends::Presenter;
use crate::capture::CaptureHandle;
use crate::hub::{PromptInfo, SessionCommand, SlotGuard, kind_name};
use crate::records::{AuditRecord, ControlEvent, chat_from, type_stop_name};
use crate::transport::{Event as TransportEvent, Transport};
use shoulder_input::{InjectOutcome, InputControl, ScreenSize};
use shoulder_proto::rotation::Rotation;

/// Bytes read from TLS per call.
const READ_CHUNK: usize = 16 * 1024;
/// "Ignored message" records audited per session; more are only counted
/// (an authenticated peer could otherwise fill the disk with fsyncs).
const MAX_IGNORED_AUDITED: u64 = 20;
/// Chat lines audited in full per session; later ones are only counted in
/// the `bye` record (chat is allowed before the view is consented to, so an
/// expert the device never let in could otherwise fill the disk with
/// fsyncs).
const MAX_CHATS_AUDITED: u64 = 50;
/// Capture messages queued towards the socket: a few update parts; the
/// capture thread blocks when the peer reads slowly.
const CAPTURE_QUEUE: usize = 4;
/// Expert input kept while control waits for the first screen size: the
/// input budget's one-second burst (`DEFAULT_MAX_INPUT_RATE`), far more than
/// the few milliseconds of that wait bring.
const MAX_HELD_INPUTS: usize = 300;
/// Encoded messages the session may hold while the writer's queue is full.
/// Screen updates are not taken while anything waits, so only replies
/// (pongs, consent news) collect here; this much means the expert has not
/// read for a long time while sending plenty.
const MAX_UNSENT: usize = 1024 * 1024;

pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) machine: DeviceSession,
    /// This connection's number (unique in this run).
    pub(super) number: u64,
    /// Who and where the records are about.
    pub(super) ctx: Context,
    pub(super) peer: SocketAddr,
    pub(super) peer_certs: Option<Vec<CertificateDer<'static>>>,
    pub(super) pre_auth: PreAuth,
    pub(super) resume: ResumeLink,
    /// The device's one session slot, once authenticated, and the commands
    /// the person at the device sends through it.
    pub(super) slot: Option<SlotGuard>,
    pub(super) commands: Option<mpsc::Receiver<SessionCommand>>,
    pub(super) devices: Devices,
    /// The file transfer under way.
    pub(super) files: super::files::FileGlue,
    /// This session's record (`[record]`), from its authentication on;
    /// dropped (closed and signed) with the session.
    #[cfg(feature = "record")]
    pub(super) record: Option<crate::recorder::Recorder>,
    /// Encoded messages not yet taken by the writer.
    pub(super) out: Vec<u8>,
    pub(super) closing: Option<(ByeReason, String)>,
    /// The phase last announced (None before the first).
    pub(super) phase: Option<Phase>,
    pub(super) stop_seen: bool,
    pub(super) audit_failed: bool,
    pub(super) tally: Tally,
}

/// The screen and input side of a session.
#[derive(Default)]
pub(super) struct Devices {
    capture: Option<CaptureHandle>,
    capture_rx: Option<mpsc::Receiver<Message>>,
    /// This session made the expert's input devices (and must close them).
    controlling: bool,
    /// Control granted before the first screen size was known (a quick
    /// answer right after the view started): input devices are made, with
    /// the right ranges, as soon as the size is.
    control_pending: Option<ControlConsent>,
    /// Expert input that came while `control_pending` waited for the
    /// screen size (a text typed the moment control was granted): injected
    /// in order once the devices exist, so its first key is not lost.
    held_inputs: Vec<shoulder_proto::session::InjectEvent>,
    /// The screen size last announced to the expert (for input ranges).
    screen: Option<(u16, u16)>,
    /// The panel's rotation this session's capture and input use.
    rotation: Rotation,
}

/// What the `bye` record sums up.
pub(super) struct Tally {
    pub(super) started: Instant,
    pub(super) bytes_sent: u64,
    pub(super) bytes_received: u64,
    /// Ignored messages, audited or not.
    pub(super) ignored: u64,
    /// Chat lines, audited or not.
    pub(super) chats: u64,
    /// Expert input dropped while the person used local input.
    pub(super) held_back: u64,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes_sent: 0,
            bytes_received: 0,
            ignored: 0,
            chats: 0,
            held_back: 0,
        }
    }
}

impl Session {
    pub(super) async fn run(
        &mut self,
        tls: TlsStream<Box<dyn Stream>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut frames = FrameBoundaries::new();
        let write_timeout = self.shared.device.peer_timeout;
        // None while the session is on hold after its connection dropped.
        let mut transport = Some(Transport::new(tls, write_timeout));
        loop {
            self.process_outputs();
            if self.machine.is_suspended() && transport.is_some() {
                // A silent peer's connection may still be open: drop it,
                // the expert comes back on a new one.
                transport = None;
            }
            self.park();
            match transport.as_ref() {
                // On hold: nobody to send to.
                None => self.out.clear(),
                Some(t) if !self.out.is_empty() => {
                    if let Err(back) = t.try_send(std::mem::take(&mut self.out)) {
                        self.out = back;
                    }
                }
                Some(_) => {}
            }
            if self.out.len() > MAX_UNSENT {
                // Only small messages pile up here (screen updates wait in
                // the capture queue): an expert this far behind is gone.
                transport = None;
                self.out.clear();
                self.stop_capture();
                self.machine.handle(
                    Instant::now(),
                    DeviceInput::PeerClosed {
                        error: Some("the expert stopped reading".into()),
                    },
                );
                continue;
            }
            if self.closing.is_some() {
                // The device side is done before the expert can see the
                // end (the Bye and the close still to go): an expert who
                // reconnects at once finds the slot free.
                self.end_locally();
                if let Some(t) = transport.take() {
                    t.close(std::mem::take(&mut self.out), CLOSE_GRACE).await;
                }
                break;
            }
            if let Some(to) = self.resume.hand_to.take() {
                let Some(t) = transport.take() else {
                    break;
                };
                // What this connection still has to say (its hello) goes
                // ahead of the resumed session's messages.
                if !self.out.is_empty() && t.try_send(std::mem::take(&mut self.out)).is_err() {
                    break;
                }
                match self.hand_over(to, t) {
                    Ok(()) => return,
                    Err(t) => transport = Some(t),
                }
                continue;
            }
            let deadline = self.machine.poll_timeout();
            let input_deadline = self.input_timeout();
            let now = Instant::now();
            let unsent = !self.out.is_empty();
            // Screen updates only while the writer keeps up: the capture
            // thread then waits in its own small queue.
            let take_capture = !unsent && transport.as_ref().is_some_and(Transport::has_room);
            // Biased: the person's decisions, shutdown and timers come
            // before anything the expert sends or the screen produces; the
            // screen before the expert's input, which a flood keeps ready
            // all the time (capture is paced, so it cannot starve reading).
            tokio::select! {
                biased;
                cmd = recv_opt(&mut self.commands), if self.commands.is_some() => {
                    match cmd {
                        Some(c) => self.command(c),
                        None => self.commands = None,
                    }
                }
                r = stop.changed(), if !self.stop_seen => {
                    self.stop_seen = true;
                    let _ = r;
                    self.machine.handle(Instant::now(), DeviceInput::Shutdown);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.machine.handle_timeout(Instant::now().max(now));
                }
                _ = sleep_until(input_deadline), if input_deadline.is_some() => {
                    self.with_input(|i| i.handle_timeout(Instant::now().max(now)));
                }
                evicted = recv_opt(&mut self.pre_auth.evicted), if self.pre_auth.evicted.is_some() => {
                    self.pre_auth.evicted = None;
                    // A dropped sender means the ticket was released: not
                    // an eviction.
                    if evicted.is_none() {
                        continue;
                    }
                    self.machine.handle(Instant::now(), DeviceInput::Abort {
                        reason: ByeReason::AuthTimeout,
                        detail: "too many connections are authenticating; try again".into(),
                    });
                }
                req = recv_opt(&mut self.pre_auth.slot_wait), if self.pre_auth.slot_wait.is_some() => {
                    self.pre_auth.slot_wait = None;
                    match req {
                        Some(req) => self.start_auth(req),
                        None => self.auth_done(Err((ByeReason::InternalError, "authentication task failed".into()))),
                    }
                }
                r = recv_opt(&mut self.pre_auth.check), if self.pre_auth.check.is_some() => {
                    self.pre_auth.check = None;
                    let r = r.unwrap_or_else(|| Err((ByeReason::InternalError, "authentication task failed".into())));
                    self.auth_done(r);
                }
                h = recv_opt(&mut self.resume.arrivals), if self.resume.arrivals.is_some() => {
                    self.resume.arrivals = None;
                    if let Some(h) = h {
                        if !self.machine.is_suspended() {
                            // The expert gave up on a connection that still
                            // looks open here (half-open TCP after a link
                            // loss): it is dead.
                            transport = None;
                            self.stop_capture();
                            self.machine.handle(Instant::now(), DeviceInput::PeerClosed {
                                error: Some("the expert reconnected on a new connection".into()),
                            });
                            self.process_outputs();
                            self.out.clear();
                        }
                        if self.machine.is_suspended() {
                            transport = Some(self.resumed(h));
                            frames = FrameBoundaries::new();
                        } else {
                            tokio::spawn(refuse_late_resume(h));
                        }
                    }
                }
                msg = recv_opt(&mut self.devices.capture_rx), if self.devices.capture_rx.is_some() && take_capture => {
                    match msg {
                        Some(m) => {
                            if let Message::ScreenInfo(info) = &m {
                                let (w, h) = (info.width, info.height);
                                let old = self.devices.screen.replace((w, h));
                                // uinput ranges are fixed per device: follow the mode.
                                if self.devices.controlling
                                    && old.is_some_and(|o| o != (w, h))
                                    && let Some(size) = ScreenSize::new(w, h)
                                {
                                    self.with_input(|i| i.set_screen(size));
                                }
                                if let Some(token) = self.devices.control_pending.take() {
                                    self.enable_injection(token);
                                    let held = std::mem::take(&mut self.devices.held_inputs);
                                    if self.devices.controlling {
                                        for event in held {
                                            self.inject(event);
                                        }
                                    }
                                }
                            }
                            if let Message::Screens(list) = &m {
                                let placement = crate::screens::placement(list);
                                self.with_input(|i| i.set_placement(placement));
                                // An older expert is shown the first screen
                                // and never told of the others; an empty
                                // list (down to one screen) is for us only.
                                if !self.machine.screens_supported() || list.screens.is_empty() {
                                    continue;
                                }
                            }
                            self.queue(&m);
                        }
                        None => self.devices.capture_rx = None,
                    }
                }
                // File data after the screen: an update never waits
                // behind more than one chunk.
                e = self.files.next(), if self.files.ready(take_capture) => self.file_event(e),
                ev = next_opt(&mut transport, &mut buf, unsent), if transport.is_some() => {
                    let input = match ev {
                        TransportEvent::Room => continue,
                        TransportEvent::Failed(e) => DeviceInput::PeerClosed { error: Some(e) },
                        TransportEvent::Read(Ok(0)) => DeviceInput::PeerClosed { error: None },
                        TransportEvent::Read(Ok(n)) => {
                            self.tally.bytes_received += n as u64;
                            // One frame at a time, acting on each before the
                            // next: input read together with a release of
                            // control is injected before control ends.
                            let mut start = 0;
                            for end in frames.ends(&buf[..n]) {
                                self.machine
                                    .handle(Instant::now(), DeviceInput::Received(buf[start..end].to_vec()));
                                self.process_outputs();
                                start = end;
                            }
                            DeviceInput::Received(buf[start..n].to_vec())
                        }
                        TransportEvent::Read(Err(e)) => DeviceInput::PeerClosed { error: Some(format!("read failed: {e}")) },
                    };
                    if matches!(input, DeviceInput::PeerClosed { .. }) {
                        transport = None;
                        self.out.clear();
                        self.stop_capture();
                    }
                    self.machine.handle(Instant::now(), input);
                }
            }
        }
        self.end_locally();
        tracing::info!(peer = %self.peer, session = ?self.ctx.session, sent = self.tally.bytes_sent, "connection closed");
    }

    /// Ends the session on the device: nothing can resume it, the screen
    /// is no longer read, the expert's input devices are gone, and the
    /// one session slot is free for the next expert. Idempotent.
    fn end_locally(&mut self) {
        if let Some(h) = self.unpark() {
            // A resuming connection got in just as the session ended.
            tokio::spawn(refuse_late_resume(h));
        }
        self.stop_capture();
        if std::mem::take(&mut self.devices.controlling) {
            self.with_input(|i| i.disable());
        }
        self.devices.control_pending = None;
        self.devices.held_inputs.clear();
        self.commands = None;
        self.slot = None;
    }

    pub(super) fn process_outputs(&mut self) {
        while let Some(o) = self.machine.poll_output() {
            match o {
                DeviceOutput::Send(m) => self.queue(&m),
                DeviceOutput::Authenticate(req) => self.start_auth(req),
                DeviceOutput::ShowPrompt(p) => {
                    // A request to see the screen recalls the person's
                    // open help request.
                    let help = self
                        .shared
                        .help
                        .current()
                        .filter(|_| p.kind == shoulder_proto::ConsentKind::View);
                    let asked = help.as_ref().map(|h| (h.asked, h.text.clone()));
                    self.with_presenter(|pr| {
                        pr.help(asked);
                        pr.show_prompt(&p);
                    });
                    if let Some(slot) = &self.slot {
                        slot.set_prompt(Some(PromptInfo {
                            id: p.id,
                            kind: p.kind,
                            deadline: p.deadline,
                        }));
                    }
                    let timeout = p
                        .deadline
                        .saturating_duration_since(Instant::now())
                        .as_secs();
                    self.publish(ControlEvent::ConsentRequested {
                        kind: kind_name(p.kind),
                        expert: &p.expert.name,
                        how: p.expert.how(),
                        says: p.expert.says.as_deref(),
                        timeout_secs: timeout,
                        help: help.map(|h| h.text),
                        file: file_prompt(&p),
                    });
                }
                DeviceOutput::HidePrompt => {
                    self.with_presenter(|pr| pr.hide_prompt());
                    if let Some(slot) = &self.slot {
                        slot.set_prompt(None);
                    }
                    self.publish(ControlEvent::PromptClosed);
                }
                DeviceOutput::Phase(p) => self.phase(p),
                DeviceOutput::StartCapture(view) => {
                    self.stop_capture();
                    // Placed again if the capture finds several screens.
                    self.with_input(|i| i.set_placement(None));
                    // `ctl rotate` may have turned the panel since the last
                    // session.
                    let rotation = self.shared.hub.rotation();
                    self.devices.rotation = rotation;
                    self.with_input(|i| i.set_rotation(rotation));
                    let (tx, rx) = mpsc::channel(CAPTURE_QUEUE);
                    self.devices.capture = Some(CaptureHandle::start(
                        view,
                        self.shared.capture.clone(),
                        tx,
                        self.shared.config.max_fps,
                        rotation,
                        crate::capture::Decodes::for_expert(
                            self.machine.deflate_supported(),
                            self.machine.deflate_stream_supported(),
                            self.machine.jpeg_supported(),
                            self.shared.config.lossy,
                        ),
                    ));
                    self.devices.capture_rx = Some(rx);
                }
                DeviceOutput::StopCapture => self.stop_capture(),
                DeviceOutput::EnableInjection(token) => {
                    if self.devices.screen.is_some() {
                        self.enable_injection(token);
                    } else {
                        tracing::debug!(
                            "control granted before the first screen; enabling with it"
                        );
                        self.devices.control_pending = Some(token);
                    }
                }
                DeviceOutput::DisableInjection => {
                    self.devices.control_pending = None;
                    self.devices.held_inputs.clear();
                    if std::mem::take(&mut self.devices.controlling) {
                        self.with_input(|i| i.disable());
                    }
                }
                DeviceOutput::ReleaseAll => self.with_input(|i| i.release_all()),
                DeviceOutput::Inject(event) => {
                    if self.devices.controlling {
                        self.inject(event);
                    } else if self.devices.control_pending.is_some()
                        && self.devices.held_inputs.len() < MAX_HELD_INPUTS
                    {
                        self.devices.held_inputs.push(event);
                    }
                }
                DeviceOutput::UpdateRequested { incremental } => {
                    if let Some(c) = &self.devices.capture {
                        c.request(!incremental);
                    }
                }
                DeviceOutput::CheckView(report) => {
                    if let Some(c) = &self.devices.capture {
                        c.check_view(report);
                    }
                }
                DeviceOutput::SelectScreen(index) => {
                    if let Some(c) = &self.devices.capture {
                        c.select_screen(index);
                    }
                }
                DeviceOutput::ExactOnly => {
                    // A capture started later asks the machine again
                    // (`jpeg_supported` is false from now on).
                    if let Some(c) = &self.devices.capture {
                        c.exact_only();
                    }
                }
                DeviceOutput::ShowChat(text) => {
                    self.with_presenter(|pr| pr.chat(true, &text));
                    self.publish(ControlEvent::Chat {
                        from: chat_from(true),
                        text: &text,
                    });
                }
                DeviceOutput::FileActivity(f) => self.with_presenter(|p| p.file(f.as_ref())),
                DeviceOutput::Audit(e) => self.audit_event(e),
                #[cfg(feature = "files")]
                DeviceOutput::File(f) => self.file_output(f),
                DeviceOutput::Close { reason, detail } => {
                    tracing::info!(peer = %self.peer, ?reason, %detail, "session closing");
                    self.closing = Some((reason, detail));
                }
            }
        }
    }

    pub(super) fn queue(&mut self, m: &Message) {
        if self.closing.is_some() && !matches!(m, Message::Bye { .. }) {
            return;
        }
        let before = self.out.len();
        match encode_into(m, &mut self.out) {
            Ok(()) => {
                self.tally.bytes_sent += (self.out.len() - before) as u64;
                #[cfg(feature = "record")]
                if let Some(r) = &self.record
                    && matches!(
                        m,
                        Message::ScreenInfo(_)
                            | Message::ScreenUnavailable { .. }
                            | Message::Update(_)
                            | Message::CursorShape(_)
                            | Message::CursorPosition { .. }
                            | Message::Screens(_)
                    )
                {
                    r.screen(&self.out[before + shoulder_proto::frame::HEADER_LEN..]);
                }
            }
            Err(e) => {
                self.out.truncate(before);
                tracing::error!(error = %e, message = m.name(), "cannot encode a message");
            }
        }
    }

    pub(super) fn command(&mut self, c: SessionCommand) {
        // A rotation that found the command queue full is picked up with
        // the next command.
        let rotation = self.shared.hub.rotation();
        if rotation != self.devices.rotation && !matches!(c, SessionCommand::Rotate(_)) {
            self.rotate(rotation);
        }
        let input = match c {
            SessionCommand::Local { command, reply } => {
                let outcome = self.machine.decide(Instant::now(), command);
                if let Some(r) = reply {
                    let _ = r.send(outcome);
                }
                return;
            }
            SessionCommand::Chat(text) => {
                self.with_presenter(|pr| pr.chat(false, &text));
                self.publish(ControlEvent::Chat {
                    from: chat_from(false),
                    text: &text,
                });
                DeviceInput::SendChat(text)
            }
            SessionCommand::Activity => {
                // Local input wins (InputControl): the expert's held keys go
                // up at once and their input is dropped until the person
                // stops; the session machine tells the expert.
                if let Some(c) = &self.devices.capture {
                    // The person's input changes the screen too.
                    c.input();
                }
                self.with_input(|i| i.local_activity(Instant::now()));
                return;
            }
            SessionCommand::Rotate(r) => {
                self.rotate(r);
                return;
            }
        };
        self.machine.handle(Instant::now(), input);
    }

    pub(super) fn phase(&mut self, p: Phase) {
        if self.phase.is_none() {
            // The first prompt is drawn the way the display is turned now.
            self.shared.follow_display();
        }
        // `ctl rotate` may have turned the panel while no session ran.
        let rotation = self.shared.hub.rotation();
        self.with_presenter(|pr| {
            pr.rotation(rotation);
            pr.phase(&p);
        });
        let was_reconnecting = matches!(self.phase, Some(Phase::Reconnecting { .. }));
        let was_controlling = matches!(self.phase, Some(Phase::Controlling { .. }));
        let event = match &p {
            Phase::AwaitingView { expert } => ControlEvent::SessionStarted {
                session: self.ctx.session.as_deref(),
                expert: &expert.name,
                how: expert.how(),
                source: self.peer.to_string(),
            },
            Phase::Viewing { .. } | Phase::Controlling { .. } if was_reconnecting => {
                ControlEvent::Resumed { phase: p.as_str() }
            }
            Phase::Viewing { .. } if was_controlling => ControlEvent::ControlRevoked,
            Phase::Viewing { expert, .. } => {
                // The person let this expert see the screen: an open help
                // request is answered.
                self.shared.help.answered(&expert.name);
                ControlEvent::ViewGranted
            }
            Phase::Controlling { .. } => ControlEvent::ControlGranted,
            Phase::Reconnecting { until, .. } => ControlEvent::Reconnecting {
                grace_secs: until.saturating_duration_since(Instant::now()).as_secs(),
            },
            Phase::Closed { reason, detail } => ControlEvent::SessionEnded {
                reason: *reason,
                sentence: reason.sentence(),
                detail,
            },
        };
        if let Some(slot) = &self.slot {
            slot.set_phase(p.as_str());
        }
        // Only the session holding the slot talks to the device side; a
        // refused connection's "closed" is not news to anyone there.
        self.publish(event);
        self.phase = Some(p);
    }

    fn publish(&self, event: ControlEvent<'_>) {
        if self.slot.is_some() {
            self.shared.hub.publish(event.to_value());
        }
    }

    /// The panel's rotation changed: the expert gets the picture turned the
    /// new way (a new screen, sent whole), their pointer maps through it,
    /// and the banner is drawn upright for the person again.
    pub(super) fn rotate(&mut self, r: Rotation) {
        self.devices.rotation = r;
        if let Some(c) = &self.devices.capture {
            c.rotate(r);
        }
        self.with_input(|i| i.set_rotation(r));
        self.with_presenter(|p| p.rotation(r));
    }

    /// Injects one event of the expert's (while controlling).
    fn inject(&mut self, event: shoulder_proto::session::InjectEvent) {
        match self.with_input(|i| i.inject(Instant::now(), event)) {
            InjectOutcome::Sink(_) => {
                #[cfg(feature = "record")]
                if let Some(r) = &self.record {
                    use shoulder_proto::session::InjectEvent;
                    let m = match event {
                        InjectEvent::Pointer(p) => Message::Pointer(p),
                        InjectEvent::Key(k) => Message::Key(k),
                        InjectEvent::Touch(t) => Message::Touch(t),
                    };
                    if let Ok(frame) = shoulder_proto::frame::encode(&m) {
                        r.input(&frame[shoulder_proto::frame::HEADER_LEN..]);
                    }
                }
                if let Some(c) = &self.devices.capture {
                    // The screen is about to change: poll fast.
                    c.input();
                }
            }
            InjectOutcome::HeldBack => self.tally.held_back += 1,
            _ => {}
        }
    }

    /// Makes the input devices for the known screen size; a failure revokes
    /// control with a reason.
    pub(super) fn enable_injection(&mut self, token: ControlConsent) {
        let Some(size) = self.devices.screen.and_then(|(w, h)| ScreenSize::new(w, h)) else {
            return;
        };
        // A failure comes back as an injection fault (see `with_input`).
        self.devices.controlling = self.with_input(|i| {
            i.set_screen(size);
            i.enable(token);
            i.is_enabled()
        });
    }

    pub(super) fn stop_capture(&mut self) {
        if let Some(c) = self.devices.capture.take() {
            c.stop();
        }
        self.devices.capture_rx = None;
    }

    pub(super) fn with_presenter(&self, f: impl FnOnce(&mut dyn Presenter)) {
        if self.slot.is_none() {
            return;
        }
        let mut p = lock(&self.shared.presenter);
        f(p.as_mut());
    }

    /// Acts on the expert's input, then hands what that tells the session
    /// (local input wins, a device fault) to the session machine. Only the
    /// session holding the slot may touch it.
    pub(super) fn with_input<T>(&mut self, f: impl FnOnce(&mut InputControl) -> T) -> T {
        let (r, told) = {
            let mut i = lock(&self.shared.input);
            let r = f(&mut i);
            (
                r,
                std::iter::from_fn(|| i.poll_session_input()).collect::<Vec<_>>(),
            )
        };
        for input in told {
            if let DeviceInput::InjectionFault(detail) = &input {
                // InputControl logged it; the audit log keeps it.
                self.devices.controlling = false;
                self.audit(AuditRecord::InjectionFailed {
                    detail: detail.clone(),
                });
            }
            self.machine.handle(Instant::now(), input);
        }
        r
    }

    /// When the hold-back window of local input ends (only for the session
    /// holding the slot).
    pub(super) fn input_timeout(&self) -> Option<Instant> {
        self.slot.as_ref()?;
        lock(&self.shared.input).poll_timeout()
    }

    pub(super) fn audit_event(&mut self, e: AuditEvent) {
        let record = match e {
            AuditEvent::Hello { software, version } => AuditRecord::Hello {
                software,
                software_version: version,
            },
            AuditEvent::AuthOk { expert } => {
                // Which plant CA vouched for the expert (several may be trusted).
                let issuer = matches!(expert.method, AuthMethod::Offer { .. })
                    .then(|| self.shared.trust.issuer(self.peer_certs.as_deref()))
                    .flatten();
                AuditRecord::AuthOk {
                    how: expert.how(),
                    issuer,
                    says: expert.says.clone(),
                }
            }
            AuditEvent::AuthFailed { reason, detail } => AuditRecord::AuthFailed { reason, detail },
            AuditEvent::ConsentAsked { kind } => AuditRecord::ConsentAsked {
                kind: kind_name(kind),
            },
            AuditEvent::ConsentAnswered {
                kind,
                granted,
                reason,
            } => {
                self.audit(AuditRecord::ConsentAnswered {
                    kind: kind_name(kind),
                    granted,
                    reason,
                });
                if kind == ConsentKind::Control && granted {
                    AuditRecord::ControlGranted
                } else {
                    return;
                }
            }
            AuditEvent::ControlEnded { reason } => AuditRecord::ControlRevoked {
                reason,
                during: None,
            },
            AuditEvent::Chat { from_expert, text } => {
                self.tally.chats += 1;
                let line = AuditRecord::Chat {
                    from: chat_from(from_expert),
                    text,
                };
                if self.tally.chats > MAX_CHATS_AUDITED {
                    // Not audited (no fsync per line), but the record,
                    // which is bounded on its own, keeps every line.
                    #[cfg(feature = "record")]
                    if let Some(r) = &self.record {
                        let (event, fields) = line.into_parts();
                        r.event(&event, &fields);
                    }
                    return;
                }
                line
            }
            AuditEvent::InputRateLimited => AuditRecord::InputRateLimited,
            AuditEvent::TypeText { chars, layout } => AuditRecord::TypeText { chars, layout },
            AuditEvent::TypeStopped { typed, outcome } => AuditRecord::TypeStopped {
                typed,
                why: type_stop_name(&outcome),
            },
            AuditEvent::StaleAnswer { prompt, open } => AuditRecord::StaleAnswer {
                prompt: prompt.0,
                open_prompt: open.map(|p| p.0),
            },
            AuditEvent::ControlEndedWhileAway { reason } => AuditRecord::ControlRevoked {
                reason,
                during: Some("reconnecting"),
            },
            AuditEvent::Suspended { detail } => AuditRecord::Suspended { detail },
            AuditEvent::Resumed => AuditRecord::Resumed,
            AuditEvent::Ignored { message, state } => {
                self.tally.ignored += 1;
                if self.tally.ignored > MAX_IGNORED_AUDITED {
                    return;
                }
                AuditRecord::Ignored { message, state }
            }
            #[cfg(feature = "files")]
            AuditEvent::File(f) => crate::records::file_record(f),
            AuditEvent::Closed { reason, detail } => AuditRecord::Bye {
                reason,
                detail,
                bytes_sent: self.tally.bytes_sent,
                bytes_received: self.tally.bytes_received,
                ignored_messages: self.tally.ignored,
                chats_not_audited: self.tally.chats.saturating_sub(MAX_CHATS_AUDITED),
                held_back_inputs: self.tally.held_back,
                duration_ms: self.tally.started.elapsed().as_millis() as u64,
            },
        };
        self.audit(record);
    }

    pub(super) fn audit(&mut self, record: AuditRecord<'_>) {
        let (event, fields) = record.into_parts();
        self.audit_parts(&event, fields);
    }

    /// Puts an audit record in the session's record, opening the record at
    /// the session's authentication (a resumed connection continues the
    /// record of the session it resumes).
    #[cfg(feature = "record")]
    fn record_event(&mut self, event: &str, fields: &Map<String, Value>) {
        if self.record.is_none()
            && event == "auth-ok"
            && let Some(setup) = &self.shared.record
        {
            self.record = crate::recorder::Recorder::start(setup, &self.ctx);
        }
        if let Some(r) = &self.record {
            r.event(event, fields);
        }
    }

    /// Audits a record (held instead while the peer is unauthenticated).
    pub(super) fn audit_parts(&mut self, event: &str, fields: Map<String, Value>) {
        if let Some(t) = self.pre_auth.ticket.as_mut() {
            // Not authenticated (yet): held, and only summed up per source
            // if the peer never authenticates.
            t.hold(event, fields);
            return;
        }
        #[cfg(feature = "record")]
        self.record_event(event, &fields);
        if let Err(e) = self.shared.audit.record(event, &self.ctx, fields) {
            tracing::error!(error = %e, "audit record failed");
            // Fail closed: no session runs unaudited (unless configured).
            if self.shared.config.audit_required && !self.audit_failed {
                self.audit_failed = true;
                self.machine.handle(
                    Instant::now(),
                    DeviceInput::Abort {
                        reason: ByeReason::AuditFailure,
                        detail: "the device cannot write its audit log".into(),
                    },
                );
            }
        }
    }
}

async fn next_opt(
    transport: &mut Option<Transport>,
    buf: &mut [u8],
    want_room: bool,
) -> TransportEvent {
    match transport {
        Some(t) => t.next(buf, want_room).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// A channel the session loop waits on while it has one.
trait Receiver {
    type Item;
    /// The next item; None when the sending side is gone.
    fn next_item(&mut self) -> impl Future<Output = Option<Self::Item>> + Send + '_;
}

impl<T: Send> Receiver for mpsc::Receiver<T> {
    type Item = T;
    async fn next_item(&mut self) -> Option<T> {
        self.recv().await
    }
}

impl<T: Send> Receiver for oneshot::Receiver<T> {
    type Item = T;
    async fn next_item(&mut self) -> Option<T> {
        self.await.ok()
    }
}

/// A file prompt's file, for the control socket.
#[cfg(feature = "files")]
fn file_prompt(p: &shoulder_proto::session::Prompt) -> Option<Value> {
    p.file.as_ref().map(|f| {
        serde_json::json!({
            "to_device": f.to_device,
            "name": f.name,
            "size": f.size,
        })
    })
}

#[cfg(not(feature = "files"))]
fn file_prompt(_: &shoulder_proto::session::Prompt) -> Option<Value> {
    None
}

/// Receives from `rx` if there is one; without, never completes (a
/// disabled `select!` branch). A oneshot must be set to None once it has
/// answered.
async fn recv_opt<R: Receiver>(rx: &mut Option<R>) -> Option<R::Item> {
    match rx {
        Some(r) => r.next_item().await,
        None => std::future::pending().await,
    }
}
