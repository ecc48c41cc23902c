//! What the service needs from the hardware, as small traits: a screen
//! source, an input sink and a consent presenter. The binary wires the real
//! backends (`shoulder-capture`, `shoulder-input`, `shoulder-banner`); tests
//! pass the in-crate ones below ([`PatternCapture`], [`RecordingSink`],
//! [`NullPresenter`]).

use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use shoulder_capture::ViewCheck;
use shoulder_proto::consent::{ControlConsent, ViewConsent};
use shoulder_proto::session::{InjectEvent, LocalCommand, Phase, Prompt};
use shoulder_proto::{
    Encoding, MAX_RECTS_PER_PART, Message, Rect, ScreenInfo, UpdatePart, ViewReport, WireFormat,
};
use tokio::sync::mpsc;

/// A screen-source failure (device gone, busy, unsupported format).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CaptureError(pub String);

/// The result of one capture.
#[derive(Debug)]
pub enum Captured {
    /// Nothing changed since the last capture.
    Unchanged,
    /// These parts bring the expert's copy up to date (one `seq`, `last` set
    /// on the final part).
    Update(Vec<UpdatePart>),
    /// The screen's size or format changed: a new `ScreenInfo`, then a full
    /// update.
    NewScreen(ScreenInfo, Vec<UpdatePart>),
}

/// An open screen source with its damage tracking and encoder. Called from a
/// blocking thread, never from async code.
pub trait ScreenCapture: Send {
    /// Grabs the screen now and encodes what changed since the previous call
    /// (everything if `full`). The first call after opening returns
    /// [`Captured::NewScreen`]. Encoding needs the live view consent.
    fn capture(&mut self, view: &ViewConsent, full: bool) -> Result<Captured, CaptureError>;

    /// The pointer cursor as messages for the expert (`CursorShape` when the
    /// image changed, then `CursorPosition` when it moved), for sources that
    /// show it apart from the screen pixels (a DRM cursor plane). Empty when
    /// nothing changed or the source has no separate cursor. Called right
    /// after [`ScreenCapture::capture`]; a source opened anew sends all.
    fn cursor(&mut self) -> Vec<Message> {
        Vec::new()
    }

    /// Compares the expert's view self-check with what this source's
    /// encoder sent, and sends again with the next capture what differs.
    /// `None`: this source keeps no copy of what it sent and cannot check.
    fn check_view(&mut self, report: &ViewReport) -> Option<ViewCheck> {
        let _ = report;
        None
    }
}

/// Opens a screen source when a session starts viewing (so the display is
/// only touched while someone watches).
pub trait CaptureBackend: Send + Sync {
    fn open(&self) -> Result<Box<dyn ScreenCapture>, CaptureError>;
}

/// An injection failure: control is revoked with this detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Where expert input goes (uinput on a device). Every injection needs the
/// live control consent the session machine handed out.
pub trait InputSink: Send {
    /// Control was granted: get ready (e.g. create the virtual devices, with
    /// ranges for a `width`×`height` screen).
    fn enable(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        let _ = (consent, width, height);
        Ok(())
    }
    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError>;
    /// The screen's size changed while control is on: absolute coordinates
    /// must map to the new size (uinput ranges are fixed when a device is
    /// made, so the devices are made anew; what the expert holds is released
    /// first). A failure ends control as an injection fault.
    fn resize(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        let _ = (consent, width, height);
        Ok(())
    }
    /// Release every key, button and touch the expert holds.
    fn release_all(&mut self) -> Result<(), InputError>;
    /// Control ended: release everything and tear down what `enable` made.
    fn disable(&mut self) {
        let _ = self.release_all();
    }
}

/// Shows the person at the device what is going on and asks them. Answers
/// come back through the [`LocalEvent`] channel in [`Backends`].
pub trait Presenter: Send {
    fn show_prompt(&mut self, prompt: &Prompt);
    fn hide_prompt(&mut self);
    fn phase(&mut self, phase: &Phase);
    fn chat(&mut self, from_expert: bool, text: &str);
}

/// Something the person at the device did, from banner or local input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEvent {
    /// A decision; an answer names the prompt that was on screen.
    Decision(LocalCommand),
    /// The person is using local input (expert input is held back).
    UserActive(bool),
}

/// The hardware side of the agent.
pub struct Backends {
    pub capture: Arc<dyn CaptureBackend>,
    pub input: Box<dyn InputSink>,
    pub presenter: Box<dyn Presenter>,
    /// Decisions and activity from the banner and local input devices.
    pub local_events: Option<mpsc::Receiver<LocalEvent>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}

impl Backends {
    /// Test pattern screen, recording sink, no banner.
    pub fn for_tests(width: u16, height: u16) -> (Self, RecordingSink) {
        let sink = RecordingSink::default();
        (
            Self {
                capture: Arc::new(PatternCapture::new(width, height)),
                input: Box::new(sink.clone()),
                presenter: Box::new(NullPresenter),
                local_events: None,
            },
            sink,
        )
    }
}

/// A moving test pattern: a background whose colour steps every
/// [`PatternCapture::STEP_MS`] and a white square that moves. Cheap, exact
/// and checkable pixel by pixel.
#[derive(Debug, Clone)]
pub struct PatternCapture {
    width: u16,
    height: u16,
}

impl PatternCapture {
    pub const STEP_MS: u128 = 100;

    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width: width.max(16),
            height: height.max(16),
        }
    }

    /// Background colour of frame `n`.
    pub fn background(n: u64) -> u32 {
        let v = (n as u32).wrapping_mul(0x0001_0307) & 0x00ff_ffff;
        v | 0x0020_2020
    }
}

impl CaptureBackend for PatternCapture {
    fn open(&self) -> Result<Box<dyn ScreenCapture>, CaptureError> {
        Ok(Box::new(PatternSource {
            width: self.width,
            height: self.height,
            start: Instant::now(),
            last_frame: None,
            seq: 0,
        }))
    }
}

#[derive(Debug)]
struct PatternSource {
    width: u16,
    height: u16,
    start: Instant,
    last_frame: Option<u64>,
    seq: u32,
}

impl ScreenCapture for PatternSource {
    fn capture(&mut self, view: &ViewConsent, full: bool) -> Result<Captured, CaptureError> {
        if !view.is_live() {
            return Err(CaptureError("the view consent was withdrawn".into()));
        }
        let frame = (self.start.elapsed().as_millis() / PatternCapture::STEP_MS) as u64;
        let first = self.last_frame.is_none();
        if !full && self.last_frame == Some(frame) {
            return Ok(Captured::Unchanged);
        }
        self.last_frame = Some(frame);
        self.seq = self.seq.wrapping_add(1);
        let mut rects = heapless::Vec::<Rect, MAX_RECTS_PER_PART>::new();
        let _ = rects.push(Rect {
            x: 0,
            y: 0,
            w: self.width,
            h: self.height,
            encoding: Encoding::Solid(PatternCapture::background(frame)),
        });
        let sq = 8u16;
        let x = (frame as u16).wrapping_mul(3) % (self.width - sq);
        let mut px = Vec::with_capacity(usize::from(sq) * usize::from(sq) * 4);
        for _ in 0..u32::from(sq) * u32::from(sq) {
            px.extend_from_slice(&0x00ff_ffffu32.to_le_bytes());
        }
        let _ = rects.push(Rect {
            x,
            y: 4,
            w: sq,
            h: sq,
            encoding: Encoding::Raw(shoulder_proto::Payload(px)),
        });
        let parts = vec![UpdatePart {
            seq: self.seq,
            generation: 1,
            last: true,
            rects,
        }];
        if first {
            let info = ScreenInfo {
                width: self.width,
                height: self.height,
                format: WireFormat::Xrgb8888,
                generation: 1,
            };
            return Ok(Captured::NewScreen(info, parts));
        }
        Ok(Captured::Update(parts))
    }
}

/// What a [`RecordingSink`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Injected(InjectEvent),
    ReleaseAll,
    /// An injection attempted with a consent that was no longer live:
    /// refused (and a bug if it ever shows up).
    Refused(InjectEvent),
}

/// An input sink that records what it is asked to do (tests, `inject =
/// "none"` shows it in the logs).
#[derive(Debug, Clone, Default)]
pub struct RecordingSink {
    log: Arc<Mutex<Vec<Recorded>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl RecordingSink {
    pub fn events(&self) -> Vec<Recorded> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Makes injection fail as a vanished uinput device does (tests of
    /// device faults); releasing still works.
    pub fn fail_injection(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

impl InputSink for RecordingSink {
    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(InputError(
                "writing to the virtual input device failed: No such device (os error 19)".into(),
            ));
        }
        let mut log = self.log.lock().map_err(|_| InputError("poisoned".into()))?;
        if consent.is_live() {
            log.push(Recorded::Injected(*event));
            Ok(())
        } else {
            log.push(Recorded::Refused(*event));
            Err(InputError("control consent is no longer live".into()))
        }
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        let mut log = self.log.lock().map_err(|_| InputError("poisoned".into()))?;
        log.push(Recorded::ReleaseAll);
        Ok(())
    }
}

/// No banner: prompts are answered through the control socket only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullPresenter;

impl Presenter for NullPresenter {
    fn show_prompt(&mut self, _: &Prompt) {}
    fn hide_prompt(&mut self) {}
    fn phase(&mut self, _: &Phase) {}
    fn chat(&mut self, _: bool, _: &str) {}
}

/// Logs prompts and phases through `tracing` (the fallback when no banner
/// presenter is available).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogPresenter;

impl Presenter for LogPresenter {
    fn show_prompt(&mut self, p: &Prompt) {
        tracing::info!(
            kind = ?p.kind,
            expert = %p.expert.name,
            how = %p.expert.how(),
            "consent prompt: answer with `shoulder-agent ctl accept` or `ctl decline`"
        );
    }
    fn hide_prompt(&mut self) {
        tracing::debug!("prompt closed");
    }
    fn phase(&mut self, phase: &Phase) {
        tracing::info!(?phase, "session phase");
    }
    fn chat(&mut self, from_expert: bool, text: &str) {
        tracing::info!(from_expert, %text, "chat");
    }
}

/// A sink that drops everything (for `inject = "none"`), logging once.
#[derive(Debug, Default)]
pub struct NullSink;

impl InputSink for NullSink {
    fn inject(&mut self, _: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        tracing::debug!(?event, "input injection is off (inject = \"none\")");
        Ok(())
    }
    fn release_all(&mut self) -> Result<(), InputError> {
        Ok(())
    }
}
