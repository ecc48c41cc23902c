//! The glue between the device session machine and the input pieces, with
//! no I/O of its own: feed it the machine's injection outputs and the local
//! events, and feed what it returns back into the machine.
//!
//! | session output / event           | call                                  |
//! | -------------------------------- | ------------------------------------- |
//! | `DeviceOutput::EnableInjection(t)` | [`InputControl::enable`]            |
//! | `DeviceOutput::Inject(ev)`       | [`InputControl::inject`]              |
//! | `DeviceOutput::ReleaseAll`       | [`InputControl::release_all`]         |
//! | `DeviceOutput::DisableInjection` | [`InputControl::disable`]             |
//! | the person used a local device   | [`InputControl::local_activity`]      |
//! | the screen mode changed          | [`InputControl::set_screen`]          |
//! | the panel's rotation changed     | [`InputControl::set_rotation`]        |
//! | the expert switched screens      | [`InputControl::set_placement`]       |
//! | [`InputControl::poll_timeout`] passed | [`InputControl::handle_timeout`] |
//! | agent shutdown                   | [`InputControl::shutdown`] (and drop) |
//!
//! After each call, hand every [`InputControl::poll_session_input`] to
//! `DeviceSession::handle`: `LocalUserActive(_)` (local input wins) and
//! `InjectionFault(_)` (the virtual devices failed; the machine then ends
//! control).
//!
//! This is the one place where local input wins: the person's activity
//! releases what the expert holds and drops the expert's input until the
//! person has been idle for the hold-back window. Keys that act on the
//! device itself are kept from the devices here too ([`KeyPolicy`]).
//! Hotkeys are not here: the agent's banner task reads them with the
//! prompt's keys ([`crate::HotkeyDetector`]).

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoulder_proto::consent::ControlConsent;
use shoulder_proto::rotation::Rotation;
use shoulder_proto::session::{DeviceInput, InjectEvent};

use crate::holdback::{DEFAULT_HOLDBACK, Holdback, HoldbackOutput};
use crate::inject::{InjectMode, Injected, ScreenSize, SinkStats};
use crate::policy::{BlockedKey, KeyFilter, KeyPolicy, KeyVerdict};
use crate::sink::InputSink;
use crate::uinput::UinputSink;
use crate::{InputError, RecordingSink};

/// Makes the sink for one grant.
pub type SinkFactory = Box<
    dyn FnMut(&ControlConsent, InjectMode, ScreenSize) -> Result<Box<dyn InputSink>, InputError>
        + Send,
>;

/// A factory for uinput sinks on `path` (usually
/// [`DEFAULT_UINPUT_PATH`](crate::DEFAULT_UINPUT_PATH)).
pub fn uinput_factory(path: impl Into<PathBuf>) -> SinkFactory {
    let path = path.into();
    Box::new(move |consent, mode, screen| {
        let s = UinputSink::open(consent, &path, mode, screen.width, screen.height)?;
        Ok(Box::new(s) as Box<dyn InputSink>)
    })
}

/// A factory for recording sinks; `on_create` gets each sink's log.
pub fn recording_factory(
    mut on_create: impl FnMut(crate::RecordLog) + Send + 'static,
) -> SinkFactory {
    Box::new(move |consent, mode, screen| {
        let s = RecordingSink::recording(consent, mode, screen.width, screen.height)?;
        on_create(s.backend().log());
        Ok(Box::new(s) as Box<dyn InputSink>)
    })
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct InputControlConfig {
    pub mode: InjectMode,
    /// How long expert input waits after local activity (zero: never).
    pub holdback: Duration,
    /// Key families the expert may press (power, SysRq, VT switching are
    /// kept from the devices unless allowed).
    pub keys: KeyPolicy,
}

impl Default for InputControlConfig {
    fn default() -> Self {
        Self {
            mode: InjectMode::Pointer,
            holdback: DEFAULT_HOLDBACK,
            keys: KeyPolicy::default(),
        }
    }
}

/// What became of an expert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectOutcome {
    /// The sink took it (forwarded, or dropped as invalid).
    Sink(Injected),
    /// The person at the device is using it: dropped.
    HeldBack,
    /// A key the [`KeyPolicy`] keeps from the device: dropped, control goes
    /// on. `first`: the first time this key was blocked in this grant.
    Blocked(BlockedKey),
    /// Injection is off (no grant, or the devices failed).
    Disabled,
    /// The consent was withdrawn.
    Refused,
    /// The devices failed; the session is told and injection is off.
    Failed,
}

/// Where the screen the expert sees sits among the device's screens: the
/// virtual devices span the whole desktop (as compositors map an absolute
/// device over all their outputs) and the expert's positions are moved to
/// the screen's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The screen's top-left corner in the desktop.
    pub x: u16,
    pub y: u16,
    /// The desktop: every screen's rectangle inside it.
    pub desktop: ScreenSize,
}

struct Active {
    consent: ControlConsent,
    sink: Box<dyn InputSink>,
}

/// Injection, hold-back and hotkeys for one agent.
pub struct InputControl {
    factory: SinkFactory,
    mode: InjectMode,
    /// The screen as the expert sees it (upright).
    screen: ScreenSize,
    /// How the framebuffer is turned for the person: the expert's
    /// coordinates are upright, the devices' are the framebuffer's.
    rotation: Rotation,
    /// One of several screens: where it sits (None: the only one).
    placement: Option<Placement>,
    active: Option<Active>,
    holdback: Holdback,
    keys: KeyFilter,
    out: VecDeque<DeviceInput>,
    /// Stats of sinks already closed, added up.
    past: SinkStats,
}

impl fmt::Debug for InputControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputControl")
            .field("mode", &self.mode)
            .field("screen", &self.screen)
            .field("rotation", &self.rotation)
            .field("placement", &self.placement)
            .field("active", &self.active.is_some())
            .field("holdback", &self.holdback)
            .finish()
    }
}

/// Session inputs queued at most; each call queues a handful, and the glue
/// drains after every call. Beyond this the oldest are dropped.
const MAX_QUEUED: usize = 64;

impl InputControl {
    pub fn new(config: InputControlConfig, screen: ScreenSize, factory: SinkFactory) -> Self {
        Self {
            factory,
            mode: config.mode,
            screen,
            rotation: Rotation::Deg0,
            placement: None,
            active: None,
            holdback: Holdback::new(config.holdback),
            keys: KeyFilter::new(config.keys),
            out: VecDeque::new(),
            past: SinkStats::default(),
        }
    }

    /// Control was granted: make the virtual devices. On failure the
    /// session is told (`InjectionFault`) and ends control.
    pub fn enable(&mut self, consent: ControlConsent) {
        self.disable();
        self.keys.new_grant();
        let range = self.device_range();
        match (self.factory)(&consent, self.mode, range) {
            Ok(sink) => self.active = Some(Active { consent, sink }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot enable injection; revoking control");
                self.push(DeviceInput::InjectionFault(format!(
                    "cannot create the virtual input devices: {e}"
                )));
            }
        }
    }

    /// An expert event to inject, unless the person at the device is using
    /// it (then it is held back and dropped).
    pub fn inject(&mut self, now: Instant, ev: InjectEvent) -> InjectOutcome {
        self.drain_holdback(now);
        if self.active.is_none() {
            return InjectOutcome::Disabled;
        }
        let admitted = self.holdback.admit(now);
        self.drain_holdback(now);
        if !admitted {
            return InjectOutcome::HeldBack;
        }
        let buffer = self.buffer_size();
        let Some(active) = self.active.as_mut() else {
            return InjectOutcome::Disabled;
        };
        if let InjectEvent::Key(k) = ev
            && let KeyVerdict::Blocked(b) = self.keys.key(k.code, k.down)
        {
            if b.first {
                tracing::warn!(
                    key = %crate::keys::key_name(b.code),
                    family = %b.family,
                    "an expert key was not injected: it {}; to allow it, add \"{}\" to [input] allow_keys",
                    b.family.effect(),
                    b.family,
                );
            }
            return InjectOutcome::Blocked(b);
        }
        let ev = place(turn(ev, self.screen, self.rotation), buffer, self.placement);
        match active.sink.inject(&active.consent, ev) {
            Ok(r) => {
                if let Injected::Dropped(reason) = r {
                    tracing::debug!("expert input dropped: {reason}");
                }
                InjectOutcome::Sink(r)
            }
            Err(InputError::ControlWithdrawn | InputError::WrongGrant { .. }) => {
                InjectOutcome::Refused
            }
            Err(e) => {
                self.fault(e);
                InjectOutcome::Failed
            }
        }
    }

    /// Releases everything the expert holds.
    pub fn release_all(&mut self) {
        self.keys.released_all();
        if let Some(a) = &mut self.active
            && let Err(e) = a.sink.release_all()
        {
            self.fault(e);
        }
    }

    /// Control ended: release and destroy the devices.
    pub fn disable(&mut self) {
        self.keys.released_all();
        if let Some(mut a) = self.active.take() {
            if let Err(e) = a.sink.close() {
                tracing::warn!("closing the virtual input devices: {e}");
            }
            self.add_past(a.sink.stats());
        }
    }

    /// The agent stops: same as [`InputControl::disable`].
    pub fn shutdown(&mut self) {
        self.disable();
    }

    /// The person at the device used a keyboard, mouse or touchscreen
    /// (not to answer a prompt): the expert's held input is released and
    /// their input held back until the person has been idle for the
    /// hold-back window.
    pub fn local_activity(&mut self, now: Instant) {
        self.holdback.local_activity(now);
        self.drain_holdback(now);
    }

    /// The screen size changed (mode set): the size the expert sees,
    /// upright.
    pub fn set_screen(&mut self, screen: ScreenSize) {
        self.screen = screen;
        self.follow_screen();
    }

    /// The panel's rotation changed: the expert's (upright) coordinates map
    /// to the framebuffer's through it. The framebuffer keeps its size; the
    /// upright screen turns with it.
    pub fn set_rotation(&mut self, rotation: Rotation) {
        if rotation == self.rotation {
            return;
        }
        let buffer = self.buffer_size();
        self.rotation = rotation;
        let (w, h) = rotation.upright_size(u32::from(buffer.width), u32::from(buffer.height));
        self.screen = ScreenSize::new(w as u16, h as u16).unwrap_or(buffer);
        self.follow_screen();
    }

    /// The expert switched to another of several screens (`None`: the
    /// device has one): their positions go to its place in the desktop.
    pub fn set_placement(&mut self, placement: Option<Placement>) {
        if placement != self.placement {
            self.placement = placement;
            self.follow_screen();
        }
    }

    /// The devices' ranges follow the framebuffer's size, or the desktop's
    /// with several screens.
    fn follow_screen(&mut self) {
        let range = self.device_range();
        if let Some(a) = &mut self.active
            && let Err(e) = a.sink.set_screen(range.width, range.height)
        {
            self.fault(e);
        }
    }

    /// What the virtual devices' absolute axes span.
    fn device_range(&self) -> ScreenSize {
        self.placement
            .map_or_else(|| self.buffer_size(), |p| p.desktop)
    }

    /// The framebuffer's size: the upright screen turned back.
    fn buffer_size(&self) -> ScreenSize {
        let (w, h) = self
            .rotation
            .inverse()
            .upright_size(u32::from(self.screen.width), u32::from(self.screen.height));
        // Turning swaps sides, it never makes one zero or larger.
        ScreenSize::new(w as u16, h as u16).unwrap_or(self.screen)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.holdback.handle_timeout(now);
        self.drain_holdback(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.holdback.poll_timeout()
    }

    /// The next input for the session machine.
    pub fn poll_session_input(&mut self) -> Option<DeviceInput> {
        self.out.pop_front()
    }

    /// Whether injection is on (devices exist).
    pub fn is_enabled(&self) -> bool {
        self.active.is_some()
    }

    /// Whether the person at the device counts as active now.
    pub fn is_local_active(&self) -> bool {
        self.holdback.is_local_active()
    }

    /// Key events the [`KeyPolicy`] kept from the device so far.
    pub fn blocked_keys(&self) -> u64 {
        self.keys.blocked()
    }

    /// Counters over every grant so far, plus events held back.
    pub fn stats(&self) -> (SinkStats, u64) {
        let mut s = self.past;
        if let Some(a) = &self.active {
            add(&mut s, a.sink.stats());
        }
        (s, self.holdback.held_back())
    }

    fn drain_holdback(&mut self, _now: Instant) {
        while let Some(o) = self.holdback.poll_output() {
            match o {
                HoldbackOutput::ReleaseExpertInput => self.release_all(),
                HoldbackOutput::LocalUserActive(a) => self.push(DeviceInput::LocalUserActive(a)),
            }
        }
    }

    fn fault(&mut self, e: InputError) {
        tracing::warn!(error = %e, "injection failed; revoking control");
        // Close now: nothing may stay held on a half-broken device.
        self.disable();
        self.push(DeviceInput::InjectionFault(e.to_string()));
    }

    fn push(&mut self, i: DeviceInput) {
        if self.out.len() >= MAX_QUEUED {
            self.out.pop_front();
        }
        self.out.push_back(i);
    }

    fn add_past(&mut self, s: SinkStats) {
        add(&mut self.past, s);
    }
}

impl Drop for InputControl {
    fn drop(&mut self) {
        self.disable();
    }
}

/// An expert event in upright coordinates, as the framebuffer's: positions
/// off the screen are clamped to its edge first (as the sink would).
fn turn(ev: InjectEvent, upright: ScreenSize, r: Rotation) -> InjectEvent {
    if r == Rotation::Deg0 {
        return ev;
    }
    let (uw, uh) = (u32::from(upright.width), u32::from(upright.height));
    let (bw, bh) = r.inverse().upright_size(uw, uh);
    let at = |x: u16, y: u16| {
        let (x, y) = (u32::from(x).min(uw - 1), u32::from(y).min(uh - 1));
        let (bx, by) = r.to_buffer(x, y, bw, bh);
        // Inside a buffer whose sides fit in u16.
        (bx as u16, by as u16)
    };
    moved(ev, at)
}

/// A framebuffer position moved to the screen's place in the desktop;
/// positions off the screen stay on its edge, never on a neighbour.
fn place(ev: InjectEvent, screen: ScreenSize, placement: Option<Placement>) -> InjectEvent {
    let Some(p) = placement else {
        return ev;
    };
    let at = |x: u16, y: u16| {
        (
            x.min(screen.max_x())
                .saturating_add(p.x)
                .min(p.desktop.max_x()),
            y.min(screen.height - 1)
                .saturating_add(p.y)
                .min(p.desktop.height - 1),
        )
    };
    moved(ev, at)
}

/// `ev` with its position (pointer or touch) put through `at`; keys as
/// they are.
fn moved(ev: InjectEvent, at: impl Fn(u16, u16) -> (u16, u16)) -> InjectEvent {
    match ev {
        InjectEvent::Pointer(mut p) => {
            (p.x, p.y) = at(p.x, p.y);
            InjectEvent::Pointer(p)
        }
        InjectEvent::Touch(mut t) => {
            (t.x, t.y) = at(t.x, t.y);
            InjectEvent::Touch(t)
        }
        key => key,
    }
}

fn add(to: &mut SinkStats, s: SinkStats) {
    to.injected += s.injected;
    to.dropped_unknown += s.dropped_unknown;
    to.dropped_impossible += s.dropped_impossible;
    to.clamped += s.clamped;
    to.refused += s.refused;
}
