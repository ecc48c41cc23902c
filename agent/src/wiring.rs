//! The real backends behind the service's traits: screen capture from
//! `shoulder-capture` (DRM/KMS, fbdev, raw file, synthetic kiosk screen with
//! its change-detecting encoder) and injection through `shoulder-input`
//! (uinput, consent-gated).

use std::sync::Arc;

use shoulder_capture::{Encoder, FrameSource, Probing, SourceSpec};
use shoulder_input::{InjectMode, InputSink as _, Sink, UinputBackend};
use shoulder_proto::consent::{ControlConsent, ViewConsent};
use shoulder_proto::session::InjectEvent;

use crate::backends::{
    Backends, CaptureBackend, CaptureError, Captured, InputError, InputSink, LogPresenter,
    NullSink, ScreenCapture,
};
use crate::config::Config;

/// The backends the config asks for: capture, uinput injection, and the
/// banner with local input ([`crate::ui`]). Must be called inside a tokio
/// runtime.
pub fn backends(config: &Config) -> Backends {
    let input: Box<dyn InputSink> = match config.input.inject.as_str() {
        "none" => Box::new(NullSink),
        _ => Box::new(UinputInput::new(shoulder_input::DEFAULT_UINPUT_PATH)),
    };
    let (presenter, local_events) = crate::ui::start(config);
    Backends {
        capture: Arc::new(Capture {
            spec: config.capture.clone(),
        }),
        input,
        presenter: Box::new(Logged(presenter)),
        local_events,
    }
}

/// Logs what the person at the device is shown, then shows it.
struct Logged(Box<dyn crate::backends::Presenter>);

impl crate::backends::Presenter for Logged {
    fn show_prompt(&mut self, p: &shoulder_proto::session::Prompt) {
        LogPresenter.show_prompt(p);
        self.0.show_prompt(p);
    }
    fn hide_prompt(&mut self) {
        self.0.hide_prompt();
    }
    fn phase(&mut self, phase: &shoulder_proto::session::Phase) {
        LogPresenter.phase(phase);
        self.0.phase(phase);
    }
    fn chat(&mut self, from_expert: bool, text: &str) {
        LogPresenter.chat(from_expert, text);
        self.0.chat(from_expert, text);
    }
}

/// Opens a `shoulder-capture` source with a fresh (sparsely probing)
/// encoder per viewing.
#[derive(Debug, Clone)]
pub struct Capture {
    pub spec: SourceSpec,
}

impl CaptureBackend for Capture {
    fn open(&self) -> Result<Box<dyn ScreenCapture>, CaptureError> {
        let source = shoulder_capture::open(&self.spec).map_err(|e| CaptureError(e.to_string()))?;
        Ok(Box::new(OpenCapture {
            source,
            // Sparse probing: an unchanged screen (most polls) costs about a
            // sixth of a full compare; thin changes are still found within a
            // few polls.
            encoder: Encoder::with_probing(Probing::default()),
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

    fn cursor(&mut self) -> Vec<shoulder_proto::Message> {
        match self.source.cursor() {
            Ok(Some(u)) => u.into_messages().collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                // The screen itself still streams; the expert just sees no
                // cursor until it reads again.
                tracing::debug!(error = %e, "cannot read the cursor plane");
                Vec::new()
            }
        }
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
