//! What the service needs from the hardware: a screen source
//! ([`CaptureBackend`], opening a `shoulder-capture` [`FrameSource`]), the
//! input sinks (a `shoulder-input` [`SinkFactory`], behind the agent's one
//! [`shoulder_input::InputControl`]) and a consent presenter. The binary
//! wires the real backends ([`crate::wiring`]); tests pass the test pattern
//! ([`PatternCapture`]), a [`CallLog`] and the [`NullPresenter`].

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use shoulder_capture::{CaptureError, FrameSource, ViewCheck};
use shoulder_capture::{Frame, KernelOrientation, PixelFormat, ScreenGeometry};
pub use shoulder_input::{Call, CallLog, SinkFactory};
use shoulder_proto::session::{LocalCommand, Phase, Prompt};
use tokio::sync::mpsc;

/// Opens the screen when a session starts viewing (so the display is only
/// touched while someone watches). The capture thread puts the source
/// behind a [`shoulder_capture::Capturer`] (damage tracking, encoder, view
/// checks); [`CaptureError::is_transient`] decides whether it retries.
pub trait CaptureBackend: Send + Sync {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError>;

    /// The screens the expert can choose from, looked up when capture
    /// (re)starts: more than one when several outputs are lit and the
    /// config names no connector; empty: just the screen `open` opens.
    fn screens(&self) -> Vec<crate::screens::Screen> {
        Vec::new()
    }

    /// Opens one of the screens `screens` listed.
    fn open_screen(
        &self,
        screen: &crate::screens::Screen,
    ) -> Result<Box<dyn FrameSource>, CaptureError> {
        shoulder_capture::open(&screen.spec())
    }
}

/// Shows the person at the device what is going on and asks them. Answers
/// come back through the [`LocalEvent`] channel in [`Backends`].
pub trait Presenter: Send {
    fn show_prompt(&mut self, prompt: &Prompt);
    fn hide_prompt(&mut self);
    fn phase(&mut self, phase: &Phase);
    fn chat(&mut self, from_expert: bool, text: &str);
    /// The panel was turned (`ctl rotate`): draw upright the new way.
    fn rotation(&mut self, rotation: shoulder_proto::rotation::Rotation) {
        let _ = rotation;
    }
    /// The person's open help request (when it was made, its text), which
    /// the next prompt to see the screen recalls; `None`: none.
    fn help(&mut self, asked: Option<(std::time::Instant, String)>) {
        let _ = asked;
    }
    /// A file transfer started (`Some`: the strip names it and offers to
    /// cancel it) or ended.
    fn file(&mut self, file: Option<&shoulder_proto::session::FileAsk>) {
        let _ = file;
    }
}

/// How often the banner task passes local activity on at most.
pub const ACTIVITY_EVERY: Duration = Duration::from_millis(100);

/// Something the person at the device did, from banner or local input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEvent {
    /// A decision; an answer names the prompt that was on screen.
    Decision(LocalCommand),
    /// The person used a local keyboard, mouse or touchscreen, not to
    /// answer a prompt (expert input is held back a while). Sent at most
    /// every [`ACTIVITY_EVERY`], so it cannot crowd out decisions.
    Activity,
}

/// The hardware side of the agent.
pub struct Backends {
    pub capture: Arc<dyn CaptureBackend>,
    /// Makes the expert's input devices for each control grant.
    pub input: SinkFactory,
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
    /// Test pattern screen, input recorded into the returned log, no banner.
    pub fn for_tests(width: u16, height: u16) -> (Self, CallLog) {
        let sink = CallLog::default();
        (
            Self {
                capture: Arc::new(PatternCapture::new(width, height)),
                input: sink.factory(),
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
    /// What the pattern's "display" says about its orientation (as a DRM
    /// display would); tests change it while the agent runs.
    orientation: Arc<std::sync::Mutex<Option<KernelOrientation>>>,
}

impl PatternCapture {
    pub const STEP_MS: u128 = 100;

    pub fn new(width: u16, height: u16) -> Self {
        Self {
            width: width.max(16),
            height: height.max(16),
            orientation: Arc::default(),
        }
    }

    /// The pattern's display reports what `orientation` holds when asked
    /// (`None`: it cannot tell, like fbdev).
    pub fn with_orientation(
        mut self,
        orientation: Arc<std::sync::Mutex<Option<KernelOrientation>>>,
    ) -> Self {
        self.orientation = orientation;
        self
    }

    /// Background colour of frame `n`.
    pub fn background(n: u64) -> u32 {
        let v = (n as u32).wrapping_mul(0x0001_0307) & 0x00ff_ffff;
        v | 0x0020_2020
    }

    /// The pattern with frames numbered by `frame` instead of the clock
    /// (tests that decide when the screen changes).
    pub fn source_with(&self, frame: impl FnMut() -> u64 + Send + 'static) -> PatternSource {
        PatternSource {
            geometry: ScreenGeometry {
                width: u32::from(self.width),
                height: u32::from(self.height),
                format: PixelFormat::Xrgb8888,
            },
            pixels: vec![0; usize::from(self.width) * usize::from(self.height) * 4],
            drawn: None,
            frame: Box::new(frame),
            orientation: self.orientation.clone(),
        }
    }
}

impl CaptureBackend for PatternCapture {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        let start = Instant::now();
        Ok(Box::new(self.source_with(move || {
            (start.elapsed().as_millis() / Self::STEP_MS) as u64
        })))
    }
}

/// Several test-pattern screens side by side (`Virtual-1`, `Virtual-2`,
/// …), as a device with several lit outputs: each screen is the pattern at
/// its own size.
#[derive(Debug, Clone)]
pub struct PatternScreens {
    sizes: Vec<(u16, u16)>,
}

impl PatternScreens {
    pub fn new(sizes: &[(u16, u16)]) -> Self {
        Self {
            sizes: sizes.to_vec(),
        }
    }
}

impl CaptureBackend for PatternScreens {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        let (w, h) = self.sizes.first().copied().unwrap_or((64, 48));
        PatternCapture::new(w, h).open()
    }

    fn screens(&self) -> Vec<crate::screens::Screen> {
        let mut x = 0;
        self.sizes
            .iter()
            .enumerate()
            .map(|(i, &(w, h))| {
                let s = crate::screens::Screen {
                    name: format!("Virtual-{}", i + 1),
                    card: "/dev/dri/card0".into(),
                    connector: format!("Virtual-{}", i + 1),
                    width: u32::from(w),
                    height: u32::from(h),
                    x,
                    y: 0,
                };
                x += u32::from(w);
                s
            })
            .collect()
    }

    fn open_screen(
        &self,
        screen: &crate::screens::Screen,
    ) -> Result<Box<dyn FrameSource>, CaptureError> {
        PatternCapture::new(screen.width as u16, screen.height as u16).open()
    }
}

/// The test pattern as a screen source.
pub struct PatternSource {
    geometry: ScreenGeometry,
    pixels: Vec<u8>,
    drawn: Option<u64>,
    frame: Box<dyn FnMut() -> u64 + Send>,
    orientation: Arc<std::sync::Mutex<Option<KernelOrientation>>>,
}

impl std::fmt::Debug for PatternSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PatternSource {
    fn draw(&mut self, n: u64) {
        let w = self.geometry.width as usize;
        let bg = PatternCapture::background(n).to_le_bytes();
        for px in self.pixels.chunks_exact_mut(4) {
            px.copy_from_slice(&bg);
        }
        let sq = 8usize;
        let x = (n as usize).wrapping_mul(3) % (w - sq);
        for y in 4..4 + sq {
            let row = &mut self.pixels[(y * w + x) * 4..(y * w + x + sq) * 4];
            for px in row.chunks_exact_mut(4) {
                px.copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
            }
        }
        self.drawn = Some(n);
    }
}

impl FrameSource for PatternSource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.geometry)
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        let n = (self.frame)();
        if self.drawn != Some(n) {
            self.draw(n);
        }
        let pitch = self.geometry.width as usize * 4;
        Frame::new(&self.pixels, self.geometry, pitch).map_err(|source| CaptureError::Frame {
            path: "test pattern".into(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!("test pattern {}", self.geometry)
    }

    fn orientation(&mut self) -> Option<Result<KernelOrientation, CaptureError>> {
        let o = *self.orientation.lock().unwrap_or_else(|p| p.into_inner());
        o.map(Ok)
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
            says = p.expert.says.as_deref().unwrap_or(""),
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
