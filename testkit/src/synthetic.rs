//! Screens for the agent in process: the synthetic kiosk screen, whose
//! counter button reacts to injected clicks ([`Synthetic`]), or a screen
//! source as the agent's config names one (`capture = "rawfile:…"`),
//! through the agent's own wiring ([`capture_backends`]).

use std::sync::Arc;
use std::time::Duration;

use shoulder_agent::backends::{
    Backends, CaptureBackend, CaptureError, LocalEvent, NullPresenter, SinkFactory,
};
use shoulder_capture::rawfile::RawFileScreen;
use shoulder_capture::synthetic::{Clock, SyntheticControls, SyntheticScreen};
use shoulder_capture::{FrameSource, PixelFormat, ScreenGeometry, SourceSpec};
use shoulder_input::{CallLog, Injected, InputError, InputSink, SinkStats};
use shoulder_proto::consent::ControlConsent;
use shoulder_proto::session::InjectEvent;

/// The synthetic kiosk screen shared by capture and input.
#[derive(Clone, Debug)]
pub struct Synthetic {
    pub controls: SyntheticControls,
}

/// A frozen clock: the screen changes only through input, so the
/// screenshots compare cleanly.
const CLOCK: Clock = Clock::Fixed(Duration::from_secs(9 * 3600));

impl Synthetic {
    pub fn new(w: u32, h: u32) -> Self {
        Self {
            controls: SyntheticControls::new(w, h),
        }
    }

    fn screen(&self) -> SyntheticScreen {
        self.controls.screen().with_clock(CLOCK)
    }

    /// The screen as the device shows it now (XRGB8888 rows).
    pub fn frame(&self) -> Vec<u8> {
        self.screen().capture().unwrap().to_xrgb8888()
    }

    /// Backends plus a channel playing the person at the device using
    /// their own touch screen or keyboard.
    pub fn backends_with_local(&self) -> (Backends, tokio::sync::mpsc::Sender<LocalEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut b = self.backends();
        b.local_events = Some(rx);
        (b, tx)
    }

    pub fn backends(&self) -> Backends {
        Backends {
            capture: Arc::new(self.clone()),
            input: SyntheticInput::factory(self.controls.clone()),
            presenter: Box::new(NullPresenter),
            local_events: None,
        }
    }
}

impl CaptureBackend for Synthetic {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        Ok(Box::new(self.screen()))
    }
}

/// Injected input goes to the synthetic screen, as a uinput device would
/// reach the kiosk app.
#[derive(Debug)]
struct SyntheticInput {
    controls: SyntheticControls,
    stats: SinkStats,
}

impl SyntheticInput {
    fn factory(controls: SyntheticControls) -> SinkFactory {
        Box::new(move |consent, _mode, _screen| {
            if !consent.is_live() {
                return Err(InputError::ControlWithdrawn);
            }
            Ok(Box::new(SyntheticInput {
                controls: controls.clone(),
                stats: SinkStats::default(),
            }) as Box<dyn InputSink>)
        })
    }
}

impl InputSink for SyntheticInput {
    fn inject(
        &mut self,
        consent: &ControlConsent,
        event: InjectEvent,
    ) -> Result<Injected, InputError> {
        if !consent.is_live() {
            self.stats.refused += 1;
            return Err(InputError::ControlWithdrawn);
        }
        match event {
            InjectEvent::Pointer(p) => {
                self.controls.pointer(p.x, p.y, p.buttons.0);
            }
            InjectEvent::Key(k) => {
                self.controls.key(k.code, k.down);
            }
            InjectEvent::Touch(t) => {
                self.controls
                    .touch(t.x, t.y, !matches!(t.phase, shoulder_proto::TouchPhase::Up));
            }
        }
        self.stats.injected += 1;
        Ok(Injected::Forwarded)
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        Ok(())
    }

    fn set_screen(&mut self, _width: u16, _height: u16) -> Result<(), InputError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), InputError> {
        Ok(())
    }

    fn is_holding(&self) -> bool {
        false
    }

    fn stats(&self) -> SinkStats {
        self.stats
    }
}

/// A `w`×`h` XRGB8888 screen in a raw file at `path`, which the test draws
/// into as an application draws into the buffer on screen, and the agent's
/// `capture` spec that reads it (for [`capture_backends`]).
///
/// # Panics
/// When the file cannot be made (the test cannot run).
pub fn raw_screen(path: &std::path::Path, w: u32, h: u32) -> (RawFileScreen, String) {
    let geometry = ScreenGeometry {
        width: w,
        height: h,
        format: PixelFormat::Xrgb8888,
    };
    let screen = RawFileScreen::create(path, geometry, w as usize * 4)
        .unwrap_or_else(|e| panic!("raw screen {}: {e}", path.display()));
    (
        screen,
        format!("rawfile:{}@{w}x{h}:XRGB8888", path.display()),
    )
}

/// Backends that capture `spec` (as `capture = "…"` in the agent's config
/// names a source) through the agent's own wiring, the code the agent
/// binary runs; no injection, no banner.
pub fn capture_backends(spec: &str) -> Backends {
    let spec: SourceSpec = spec
        .parse()
        .unwrap_or_else(|e| panic!("capture spec {spec:?}: {e}"));
    Backends {
        capture: Arc::new(shoulder_agent::wiring::Capture {
            spec,
            positions: Vec::new(),
        }),
        // Recorded, never injected.
        input: CallLog::default().factory(),
        presenter: Box::new(NullPresenter),
        local_events: None,
    }
}

/// The frames of a directory `scripts/real-content/render` made
/// (`NNNN.xrgb`, `w`×`h` XRGB8888), in order; an error names a missing or
/// empty directory.
pub fn real_content(dir: &std::path::Path, (w, h): (u32, u32)) -> Result<Vec<Vec<u8>>, String> {
    let names = shoulder_capture::rawfile::frame_files(dir, (w, h))?;
    if names.is_empty() {
        return Err(format!(
            "{} has no .xrgb frames (make them with scripts/real-content/render)",
            dir.display()
        ));
    }
    names
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
        .collect()
}

/// An application drawing: `frames` played in a loop into a raw-file
/// screen, `fps` a second, until dropped.
#[derive(Debug)]
pub struct Playing {
    on: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Playing {
    pub fn start(screen: RawFileScreen, frames: Vec<Vec<u8>>, fps: u64) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let on = Arc::new(AtomicBool::new(true));
        let still = on.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            let start = std::time::Instant::now();
            while still.load(Ordering::Relaxed) {
                let _ = screen.write_at(&frames[i % frames.len()], 0);
                i += 1;
                let next = start + Duration::from_micros(i as u64 * 1_000_000 / fps);
                std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
            }
        });
        Self {
            on,
            thread: Some(thread),
        }
    }
}

impl Drop for Playing {
    fn drop(&mut self) {
        self.on.store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
