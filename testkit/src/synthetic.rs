//! Screens for the agent in process: the synthetic kiosk screen, whose
//! counter button reacts to injected clicks ([`Synthetic`]), or a screen
//! source as the agent's config names one (`capture = "rawfile:…"`),
//! through the agent's own wiring ([`capture_backends`]).

use std::sync::Arc;
use std::time::Duration;

use shoulder_agent::backends::{
    Backends, CaptureBackend, CaptureError, InputError, InputSink, LocalEvent, NullPresenter,
    NullSink,
};
use shoulder_capture::synthetic::{Clock, SyntheticControls, SyntheticScreen};
use shoulder_capture::{FrameSource, SourceSpec};
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
            input: Box::new(SyntheticInput(self.controls.clone())),
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
struct SyntheticInput(SyntheticControls);

impl InputSink for SyntheticInput {
    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        if !consent.is_live() {
            return Err(InputError("control consent withdrawn".into()));
        }
        match *event {
            InjectEvent::Pointer(p) => {
                self.0.pointer(p.x, p.y, p.buttons.0);
            }
            InjectEvent::Key(k) => {
                self.0.key(k.code, k.down);
            }
            InjectEvent::Touch(t) => {
                self.0
                    .touch(t.x, t.y, !matches!(t.phase, shoulder_proto::TouchPhase::Up));
            }
        }
        Ok(())
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        Ok(())
    }
}

/// Backends that capture `spec` (as `capture = "…"` in the agent's config
/// names a source) through the agent's own wiring, the code the agent
/// binary runs; no injection, no banner.
pub fn capture_backends(spec: &str) -> Backends {
    let spec: SourceSpec = spec
        .parse()
        .unwrap_or_else(|e| panic!("capture spec {spec:?}: {e}"));
    Backends {
        capture: Arc::new(shoulder_agent::wiring::Capture { spec }),
        input: Box::new(NullSink),
        presenter: Box::new(NullPresenter),
        local_events: None,
    }
}
