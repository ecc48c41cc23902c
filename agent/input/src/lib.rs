//! uinput injection and evdev local input.
//!
//! - **Injection** ([`InputSink`]): the expert's pointer, key and touch
//!   events go to virtual devices made with uinput ([`UinputSink`]) or to a
//!   recorder for tests ([`RecordingSink`]). Every inject call takes the
//!   [`ControlConsent`](shoulder_proto::consent::ControlConsent) the session
//!   machine handed out, and is refused once that consent is withdrawn. The
//!   sink tracks what is held and releases it on every way out.
//! - **Local input** ([`local::LocalInput`]): the person at the device's own
//!   keyboards, mice, tablets and touchscreens, as typed events; grabbed
//!   while a consent prompt is open.
//! - **Local input wins** ([`InputControl`], timing in [`Holdback`]): expert
//!   input waits while the person at the device is using it.
//! - **Hotkeys** ([`HotkeyDetector`]): chords that stop control or end the
//!   session.
//! - **Key policy** ([`KeyFilter`]): keys that would power off, reboot, reach
//!   SysRq or switch VTs are not injected unless the config allows them.
//!
//! ```text
//!  expert ─► DeviceSession ─Inject(ev)─► InputControl: hold-back, key policy ─► InputSink::inject(&consent, ev) ─► uinput
//!                 ▲                          ▲
//!                 │ LocalUserActive,         │ local_activity(now)
//!                 │ StopControlHotkey, End   │
//!  evdev ─► LocalInput ─► LocalEvent ───────┴─► HotkeyDetector::key (the banner task)
//! ```
//!
//! [`InputControl`] bundles the sink, the hold-back and the key policy
//! behind the device session machine's outputs. The agent's glue, in short:
//!
//! ```no_run
//! use std::time::Instant;
//!
//! use shoulder_input::control::uinput_factory;
//! use shoulder_input::local::{self, LocalInput, LocalInputConfig, TouchChoice};
//! use shoulder_input::{DEFAULT_UINPUT_PATH, InputControl, InputControlConfig, ScreenSize};
//! use shoulder_proto::session::{DeviceOutput, DeviceSession};
//!
//! async fn glue(session: &mut DeviceSession, screen: ScreenSize) -> Result<(), shoulder_input::InputError> {
//!     // Touch injection when the only local pointing devices are touchscreens.
//!     let found = local::enumerate(local::DEFAULT_INPUT_DIR.as_ref()).unwrap_or_default();
//!     let config = InputControlConfig {
//!         mode: local::choose_inject_mode(TouchChoice::Auto, &found),
//!         ..InputControlConfig::default() // 750 ms hold-back, no power/SysRq/VT keys
//!     };
//!     let mut input = InputControl::new(config, screen, uinput_factory(DEFAULT_UINPUT_PATH));
//!     let mut local = LocalInput::start(LocalInputConfig::new(screen))?;
//!     let mut grab = None;
//!     loop {
//!         let now = Instant::now();
//!         while let Some(out) = session.poll_output() {
//!             match out {
//!                 DeviceOutput::EnableInjection(consent) => input.enable(consent),
//!                 DeviceOutput::Inject(ev) => {
//!                     input.inject(now, ev);
//!                 }
//!                 DeviceOutput::ReleaseAll => input.release_all(),
//!                 DeviceOutput::DisableInjection => input.disable(),
//!                 // Taps and keys answer the prompt, not the kiosk app.
//!                 DeviceOutput::ShowPrompt(_) => grab = Some(local.grab()),
//!                 DeviceOutput::HidePrompt => grab = None,
//!                 _ => {}
//!             }
//!         }
//!         while let Some(i) = input.poll_session_input() {
//!             session.handle(now, i);
//!         }
//!         let wake = input.poll_timeout().map(tokio::time::Instant::from_std);
//!         tokio::select! {
//!             Some(ev) = local.next() => {
//!                 if ev.kind.is_activity() {
//!                     input.local_activity(Instant::now());
//!                 }
//!             }
//!             _ = async { tokio::time::sleep_until(wake.unwrap()).await }, if wake.is_some() => {
//!                 input.handle_timeout(Instant::now())
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! and once at start-up, so a panic anywhere releases what the expert holds:
//!
//! ```no_run
//! let default = std::panic::take_hook();
//! std::panic::set_hook(Box::new(move |info| {
//!     shoulder_input::emergency_release();
//!     default(info);
//! }));
//! ```
//!
//! Even without that, the kernel destroys the devices when the process dies
//! (their file closes) and sends releases for keys still down.

pub mod codes;
pub mod control;
pub mod holdback;
pub mod hotkey;
pub mod inject;
pub mod keys;
pub mod local;
pub mod policy;
mod recording;
mod sink;
pub mod uinput;

use std::path::PathBuf;

pub use control::{InjectOutcome, InputControl, InputControlConfig, Placement, SinkFactory};
pub use holdback::{DEFAULT_HOLDBACK, Holdback, HoldbackOutput};
pub use hotkey::{Chord, HotkeyDetector, HotkeyError, Hotkeys};
pub use inject::{
    Batch, DropReason, InjectMode, Injected, MAX_TOUCH_SLOTS, RawEvent, ScreenSize, SinkStats,
    VirtualDevice,
};
pub use policy::{BlockedKey, KeyFamily, KeyFilter, KeyPolicy, KeyVerdict, UnknownKeyFamily};
pub use recording::{Call, CallLog, EventRecorder, RecordLog, Recorded, Recorder, RecordingSink};
pub use sink::{InputBackend, InputSink, Sink};
pub use uinput::{DEFAULT_UINPUT_PATH, UinputBackend, UinputSink, emergency_release};

/// What can go wrong with input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("control was withdrawn: the expert's input is no longer allowed")]
    ControlWithdrawn,
    #[error(
        "this control consent is for grant {got}, but the input devices were made for grant {expected}"
    )]
    WrongGrant { expected: u64, got: u64 },
    #[error("the virtual input devices are closed")]
    Closed,
    #[error("screen size {width}x{height} is invalid: both sides must be at least 1 pixel")]
    InvalidScreen { width: u16, height: u16 },
    #[error(
        "cannot open {}: {source}; load the uinput module (modprobe uinput) and give the agent write access to it",
        path.display()
    )]
    OpenUinput {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create the virtual device \"{device}\": {source}")]
    CreateDevice {
        device: &'static str,
        source: std::io::Error,
    },
    #[error("cannot write to the virtual device \"{device}\": {source}")]
    Write {
        device: &'static str,
        source: std::io::Error,
    },
    #[error("short write to the virtual device \"{device}\": {written} of {expected} events")]
    ShortWrite {
        device: &'static str,
        written: usize,
        expected: usize,
    },
    #[error("cannot destroy the virtual device \"{device}\": {source}")]
    Destroy {
        device: &'static str,
        source: std::io::Error,
    },
    #[error(
        "cannot list input devices in {}: {source}; is devtmpfs mounted on /dev?",
        path.display()
    )]
    InputDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local input needs a tokio runtime: start it from within the agent's runtime")]
    NoRuntime,
}
