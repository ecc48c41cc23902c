//! The real backends behind the service's traits: screen capture from
//! `shoulder-capture` (DRM/KMS, fbdev, raw file, synthetic kiosk screen with
//! its change-detecting encoder) and injection through `shoulder-input`
//! (uinput, consent-gated).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoulder_capture::{CaptureError, FrameSource, SourceSpec};
use shoulder_input::{
    InjectMode, InputSink as _, KeyFilter, KeyPolicy, KeyVerdict, Sink, UinputBackend,
};
use shoulder_proto::consent::ControlConsent;
use shoulder_proto::session::InjectEvent;

use crate::backends::{Backends, CaptureBackend, InputError, InputSink, LogPresenter, NullSink};
use crate::config::{Config, Injection};

/// The backends the config asks for: capture, uinput injection behind the
/// key policy (`[input] allow_keys`), and the banner with local input
/// ([`crate::ui`]). Must be called inside a tokio runtime.
pub fn backends(config: &Config) -> Backends {
    let sink: Box<dyn InputSink> = match config.input.inject {
        Injection::None => Box::new(NullSink),
        Injection::Uinput => Box::new(UinputInput::new(shoulder_input::DEFAULT_UINPUT_PATH)),
    };
    // The config was checked at load; should a bad name slip through, allow
    // nothing rather than everything.
    let policy = KeyPolicy::parse(&config.input.allow_keys).unwrap_or_default();
    let input = Box::new(KeyPolicySink::new(sink, policy));
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

/// Opens the `shoulder-capture` source the config names.
#[derive(Debug, Clone)]
pub struct Capture {
    pub spec: SourceSpec,
}

impl CaptureBackend for Capture {
    fn open(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        shoulder_capture::open(&self.spec)
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

    fn resize(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        if !consent.is_live() {
            return Err(InputError(
                shoulder_input::InputError::ControlWithdrawn.to_string(),
            ));
        }
        sink.set_screen(width, height)
            .map_err(|e| InputError(format!("following the new screen size: {e}")))
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

/// Keeps keys that act on the device itself (power, SysRq, VT switching; see
/// [`shoulder_input::policy`]) from whatever sink it wraps, unless the config
/// allows their family. Blocked keys are not an injection error: the expert
/// keeps control, the key just does not arrive. Each blocked key is logged
/// once per control grant; [`KeyPolicySink::blocked`] counts every blocked
/// event.
pub struct KeyPolicySink {
    inner: Box<dyn InputSink>,
    filter: KeyFilter,
    blocked: Arc<AtomicU64>,
}

impl std::fmt::Debug for KeyPolicySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPolicySink")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl KeyPolicySink {
    pub fn new(inner: Box<dyn InputSink>, policy: KeyPolicy) -> Self {
        Self {
            inner,
            filter: KeyFilter::new(policy),
            blocked: Arc::default(),
        }
    }

    /// Key events blocked so far, readable while the sink is in use.
    pub fn blocked(&self) -> Arc<AtomicU64> {
        self.blocked.clone()
    }
}

impl InputSink for KeyPolicySink {
    fn enable(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        self.filter.new_grant();
        self.inner.enable(consent, width, height)
    }

    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        if let InjectEvent::Key(k) = event
            && let KeyVerdict::Blocked(b) = self.filter.key(k.code, k.down)
        {
            self.blocked.fetch_add(1, Ordering::Relaxed);
            if b.first {
                tracing::warn!(
                    key = %shoulder_input::keys::key_name(b.code),
                    family = %b.family,
                    "an expert key was not injected: it {}; to allow it, add \"{}\" to [input] allow_keys",
                    b.family.effect(),
                    b.family,
                );
            }
            return Ok(());
        }
        self.inner.inject(consent, event)
    }

    fn resize(
        &mut self,
        consent: &ControlConsent,
        width: u16,
        height: u16,
    ) -> Result<(), InputError> {
        // The filter keeps what it thinks is held: should a sink release
        // keys here, a modifier still counted as held only blocks more.
        self.inner.resize(consent, width, height)
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        self.filter.released_all();
        self.inner.release_all()
    }

    fn disable(&mut self) {
        self.filter.released_all();
        self.inner.disable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{Recorded, RecordingSink};
    use shoulder_input::KeyFamily;
    use shoulder_input::codes::{KEY_LEFTALT, KEY_LEFTCTRL, KEY_POWER, KEY_SYSRQ};
    use shoulder_proto::msg::Key;
    use shoulder_proto::testing::granted_control;

    const KEY_A: u16 = 30;
    const KEY_F1: u16 = 59;

    fn key(code: u16, down: bool) -> InjectEvent {
        InjectEvent::Key(Key { code, down })
    }

    fn wrapped(policy: KeyPolicy) -> (KeyPolicySink, RecordingSink) {
        let rec = RecordingSink::default();
        (KeyPolicySink::new(Box::new(rec.clone()), policy), rec)
    }

    fn injected(rec: &RecordingSink) -> Vec<InjectEvent> {
        rec.events()
            .into_iter()
            .filter_map(|e| match e {
                Recorded::Injected(ev) => Some(ev),
                _ => None,
            })
            .collect()
    }

    /// The sequence an expert would use to power off, reboot through SysRq
    /// and switch to VT 1; none of the dangerous keys reach the sink, and
    /// nothing is an error (control goes on).
    fn hostile(sink: &mut KeyPolicySink, token: &ControlConsent) {
        let seq = [
            key(KEY_POWER, true),
            key(KEY_POWER, false),
            key(KEY_LEFTALT, true),
            key(KEY_SYSRQ, true),
            key(48, true), // B: reboot, with SysRq down
            key(48, false),
            key(KEY_SYSRQ, false),
            key(KEY_LEFTCTRL, true),
            key(KEY_F1, true),
            key(KEY_F1, false),
            key(KEY_LEFTCTRL, false),
            key(KEY_LEFTALT, false),
            key(KEY_A, true),
            key(KEY_A, false),
        ];
        for ev in seq {
            sink.inject(token, &ev)
                .expect("a blocked key is not an error");
        }
    }

    #[test]
    fn the_policy_sink_drops_device_keys_by_default() {
        let (_pair, token) = granted_control();
        let (mut sink, rec) = wrapped(KeyPolicy::default());
        sink.enable(&token, 100, 100).unwrap();
        hostile(&mut sink, &token);
        assert_eq!(
            injected(&rec),
            vec![
                key(KEY_LEFTALT, true),
                key(48, true),
                key(48, false),
                key(KEY_LEFTCTRL, true),
                key(KEY_LEFTCTRL, false),
                key(KEY_LEFTALT, false),
                key(KEY_A, true),
                key(KEY_A, false),
            ]
        );
        assert_eq!(sink.blocked().load(Ordering::Relaxed), 6);
    }

    #[test]
    fn allow_keys_lets_each_family_through() {
        let (_pair, token) = granted_control();
        let all = KeyPolicy::default()
            .allow(KeyFamily::Power)
            .allow(KeyFamily::Sysrq)
            .allow(KeyFamily::VtSwitch);
        let (mut sink, rec) = wrapped(all);
        sink.enable(&token, 100, 100).unwrap();
        hostile(&mut sink, &token);
        assert_eq!(injected(&rec).len(), 14);
        assert_eq!(sink.blocked().load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_policy_sink_wraps_the_null_sink_too() {
        let (_pair, token) = granted_control();
        let mut sink = KeyPolicySink::new(Box::new(NullSink), KeyPolicy::default());
        hostile(&mut sink, &token);
        assert_eq!(sink.blocked().load(Ordering::Relaxed), 6);
    }

    #[test]
    fn release_all_passes_through_and_resets_the_chord() {
        let (_pair, token) = granted_control();
        let (mut sink, rec) = wrapped(KeyPolicy::default());
        sink.inject(&token, &key(KEY_LEFTALT, true)).unwrap();
        sink.release_all().unwrap();
        // Alt is up on the device now: F1 alone is an ordinary key.
        sink.inject(&token, &key(KEY_F1, true)).unwrap();
        assert_eq!(
            rec.events(),
            vec![
                Recorded::Injected(key(KEY_LEFTALT, true)),
                Recorded::ReleaseAll,
                Recorded::Injected(key(KEY_F1, true)),
            ]
        );
    }

    #[test]
    fn uinput_resize_without_devices_is_nothing_to_do() {
        let (_pair, token) = granted_control();
        let mut sink = UinputInput::new("/nonexistent/uinput");
        assert!(sink.resize(&token, 800, 600).is_ok());
        let e = sink.enable(&token, 1024, 768).unwrap_err();
        assert!(e.0.contains("modprobe uinput"), "{e}");
    }
}
