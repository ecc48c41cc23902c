//! The real backends behind the service's traits: screen capture from
//! `shoulder-capture` (DRM/KMS, fbdev, raw file, synthetic kiosk screen)
//! and injection through `shoulder-input` (uinput, consent-gated).

use std::sync::Arc;

use shoulder_capture::{CaptureError, FrameSource, SourceSpec};
use shoulder_input::control::uinput_factory;
use shoulder_input::{
    Batch, InjectMode, InputBackend, InputError, InputSink, ScreenSize, Sink, SinkFactory,
};

use crate::backends::{Backends, CaptureBackend, LogPresenter};
use crate::config::{Config, Injection};

/// The backends the config asks for: capture, uinput injection (or none),
/// and the banner with local input ([`crate::ui`]). Must be called inside a
/// tokio runtime.
pub fn backends(config: &Config) -> Backends {
    let input = match config.input.inject {
        Injection::None => null_factory(),
        Injection::Uinput => uinput_factory(shoulder_input::DEFAULT_UINPUT_PATH),
    };
    let (presenter, local_events) = crate::ui::start(config);
    Backends {
        capture: Arc::new(Capture {
            spec: config.capture.clone(),
            positions: config.screens.clone(),
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
    fn rotation(&mut self, rotation: shoulder_proto::rotation::Rotation) {
        self.0.rotation(rotation);
    }
}

/// Opens the `shoulder-capture` source the config names; with DRM and no
/// connector named, every lit output is a screen the expert can choose.
#[derive(Debug, Clone)]
pub struct Capture {
    pub spec: SourceSpec,
    /// Where the config places screens (`[[screens]]`).
    pub positions: Vec<crate::config::ScreenPosition>,
}

impl CaptureBackend for Capture {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        shoulder_capture::open(&self.spec)
    }

    fn screens(&self) -> Vec<crate::screens::Screen> {
        let SourceSpec::Drm {
            device,
            connector: None,
        } = &self.spec
        else {
            return Vec::new();
        };
        match shoulder_capture::drm::outputs(device.as_deref()) {
            Ok(outputs) if outputs.len() > 1 => crate::screens::arrange(&outputs, &self.positions),
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the screens; showing the first");
                Vec::new()
            }
        }
    }
}

/// Sinks for `inject = "none"`: the expert's input is tracked as a real sink
/// tracks it (what is held, what is impossible) and then dropped.
fn null_factory() -> SinkFactory {
    Box::new(|consent, mode, screen: ScreenSize| {
        let sink = Sink::create(consent, mode, screen.width, screen.height, Discard)?;
        Ok(Box::new(sink) as Box<dyn InputSink>)
    })
}

/// Writes nowhere.
#[derive(Debug)]
struct Discard;

impl InputBackend for Discard {
    fn create(&mut self, _: InjectMode, _: ScreenSize) -> Result<(), InputError> {
        tracing::info!("input injection is off (inject = \"none\"): the expert's input is dropped");
        Ok(())
    }
    fn write(&mut self, batch: &Batch) -> Result<(), InputError> {
        tracing::debug!(?batch, "input injection is off (inject = \"none\")");
        Ok(())
    }
    fn destroy(&mut self) -> Result<(), InputError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::msg::Key;
    use shoulder_proto::session::InjectEvent;
    use shoulder_proto::testing::granted_control;

    #[test]
    fn with_injection_off_input_is_tracked_and_dropped() {
        let (_pair, token) = granted_control();
        let mut sink = null_factory()(
            &token,
            InjectMode::Pointer,
            ScreenSize::new(100, 100).unwrap(),
        )
        .unwrap();
        let a = InjectEvent::Key(Key {
            code: 30,
            down: true,
        });
        assert!(sink.inject(&token, a).is_ok());
        assert!(sink.is_holding());
        sink.close().unwrap();
        assert!(!sink.is_holding());
    }

    #[test]
    fn missing_uinput_names_the_fix() {
        let (_pair, token) = granted_control();
        let e = uinput_factory("/nonexistent/uinput")(
            &token,
            InjectMode::Pointer,
            ScreenSize::new(1024, 768).unwrap(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("modprobe uinput"), "{e}");
    }
}
