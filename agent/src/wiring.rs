//! The real backends behind the service's traits: screen capture from
//! `shoulder-capture` (DRM/KMS, fbdev, raw file, synthetic kiosk screen with
//! its change-detecting encoder) and injection through `shoulder-input`
//! (uinput, consent-gated).

use std::sync::Arc;
use std::time::Instant;

use shoulder_capture::{Encoder, FrameSource, SourceSpec};
use shoulder_input::local::{LocalEventKind, LocalInput, LocalInputConfig};
use shoulder_input::{
    Holdback, HoldbackOutput, HotkeyDetector, Hotkeys, InjectMode, InputSink as _, ScreenSize,
    Sink, UinputBackend,
};
use shoulder_proto::consent::{ControlConsent, ViewConsent};
use shoulder_proto::session::InjectEvent;
use tokio::sync::mpsc;

use crate::backends::{
    Backends, CaptureBackend, CaptureError, Captured, InputError, InputSink, LocalEvent,
    LogPresenter, NullSink, ScreenCapture,
};
use crate::config::Config;

/// The backends the config asks for. The banner presenter is not wired yet:
/// prompts are logged and answered through the control socket. Local input
/// (hotkeys, hold-back of expert input) is watched when configured; must be
/// called inside a tokio runtime.
pub fn backends(config: &Config) -> Backends {
    let input: Box<dyn InputSink> = match config.input.inject.as_str() {
        "none" => Box::new(NullSink),
        _ => Box::new(UinputInput::new(shoulder_input::DEFAULT_UINPUT_PATH)),
    };
    Backends {
        capture: Arc::new(Capture {
            spec: config.capture.clone(),
        }),
        input,
        presenter: Box::new(LogPresenter),
        local_events: start_local_input(config),
    }
}

/// Watches the local evdev devices: the stop/end hotkeys become decisions,
/// activity holds expert input back for `local_idle`.
pub fn start_local_input(config: &Config) -> Option<mpsc::Receiver<LocalEvent>> {
    if config.input.local_input.as_os_str().is_empty() {
        return None;
    }
    let hotkeys = match Hotkeys::parse(&config.input.stop_hotkey, &config.input.end_hotkey) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "bad hotkeys; local input is not watched");
            return None;
        }
    };
    // Positions matter only for banner taps; the size is updated per session.
    let screen = ScreenSize::new(1920, 1080)?;
    let mut cfg = LocalInputConfig::new(screen);
    cfg.dir = config.input.local_input.clone();
    let mut local = match LocalInput::start(cfg) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "local input is not watched (no hotkeys, no hold-back)");
            return None;
        }
    };
    let (tx, rx) = mpsc::channel(LOCAL_EVENTS);
    let window = config.input.local_idle;
    tokio::spawn(async move {
        let mut hot = HotkeyDetector::new(hotkeys);
        let mut hold = Holdback::new(window);
        loop {
            let timer = hold.poll_timeout();
            tokio::select! {
                ev = local.next() => {
                    let Some(ev) = ev else { return };
                    if let LocalEventKind::Key { code, down } = ev.kind
                        && let Some(d) = hot.key(code, down)
                        && tx.send(LocalEvent::Decision(d)).await.is_err()
                    {
                        return;
                    }
                    if ev.kind.is_activity() {
                        hold.local_activity(Instant::now());
                    }
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    hold.handle_timeout(Instant::now());
                }
            }
            while let Some(o) = hold.poll_output() {
                // Releasing the expert's input is done by the session when
                // it hears the person is active.
                if let HoldbackOutput::LocalUserActive(a) = o
                    && tx.send(LocalEvent::UserActive(a)).await.is_err()
                {
                    return;
                }
            }
        }
    });
    Some(rx)
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

/// Local events queued for the agent (decisions and activity changes are
/// rare; the reader drops and counts raw events beyond its own queue).
const LOCAL_EVENTS: usize = 64;

/// Opens a `shoulder-capture` source with a fresh encoder per viewing.
#[derive(Debug, Clone)]
pub struct Capture {
    pub spec: SourceSpec,
}

impl CaptureBackend for Capture {
    fn open(&self) -> Result<Box<dyn ScreenCapture>, CaptureError> {
        let source = shoulder_capture::open(&self.spec).map_err(|e| CaptureError(e.to_string()))?;
        Ok(Box::new(OpenCapture {
            source,
            encoder: Encoder::new(),
        }))
    }
}

struct OpenCapture {
    source: Box<dyn FrameSource>,
    encoder: Encoder,
}

impl ScreenCapture for OpenCapture {
    fn capture(&mut self, view: &ViewConsent, full: bool) -> Result<Captured, CaptureError> {
        let frame = self
            .source
            .capture()
            .map_err(|e| CaptureError(e.to_string()))?;
        let update = self
            .encoder
            .encode(view, &frame, full)
            .map_err(|e| CaptureError(e.to_string()))?;
        Ok(match update {
            None => Captured::Unchanged,
            Some(u) => match u.screen {
                Some(info) => Captured::NewScreen(info, u.parts),
                None => Captured::Update(u.parts),
            },
        })
    }
}

/// uinput devices made per control grant, destroyed when control ends.
#[derive(Debug)]
pub struct UinputInput {
    path: std::path::PathBuf,
    sink: Option<Sink<UinputBackend>>,
}

impl UinputInput {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            path: path.into(),
            sink: None,
        }
    }
}

impl InputSink for UinputInput {
    fn enable(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        self.disable();
        let sink = Sink::create(
            consent,
            InjectMode::Pointer,
            width,
            height,
            UinputBackend::new(&self.path),
        )
        .map_err(|e| InputError(e.to_string()))?;
        self.sink = Some(sink);
        Ok(())
    }

    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        let sink = self
            .sink
            .as_mut()
            .ok_or_else(|| InputError("the virtual input devices are not set up".into()))?;
        sink.inject(consent, *event)
            .map(|_| ())
            .map_err(|e| InputError(e.to_string()))
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        match self.sink.as_mut() {
            Some(s) => s.release_all().map_err(|e| InputError(e.to_string())),
            None => Ok(()),
        }
    }

    fn disable(&mut self) {
        if let Some(mut s) = self.sink.take()
            && let Err(e) = s.close()
        {
            tracing::warn!(error = %e, "closing the virtual input devices failed");
        }
    }
}
