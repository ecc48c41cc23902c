//! The expert in process: the client library (`shoulder::client::run`) on
//! its own runtime, driven from a test thread, with its events and state
//! recorded for the test to wait on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoulder::client::{self, ClientEvent, ConnectOptions, SharedView};
use shoulder::identity::Identity;
use shoulder::target::Target;
use shoulder::trust::AcceptNew;
use shoulder_proto::msg::{Buttons, Key, Pointer};
use shoulder_proto::session::expert::{ControlState, ExpertState, UserAction};

use crate::pki::Pki;
use crate::qemu::Screen;

/// How often a wait re-reads the expert's state.
const POLL: Duration = Duration::from_millis(20);
/// Time the client gets to send its `Bye` after a disconnect before its
/// runtime is dropped.
const DISCONNECT_GRACE: Duration = Duration::from_millis(50);

/// A cursor shape's width, height and hotspot (x, y).
pub type CursorSize = (u16, u16, u16, u16);
/// Where the cursor is: x, y and whether it shows.
pub type CursorAt = (u16, u16, bool);

/// An offer to the device at `addr`.
pub fn offer_target(addr: SocketAddr) -> Target {
    Target::Offer {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// Connect options of a test expert named `name`: a device's own key is
/// trusted on first use (as `--accept-new` does) and remembered in
/// `known_hosts`, never in the user's config.
pub fn connect_options(
    target: Target,
    identity: Option<Arc<Identity>>,
    password: Option<&str>,
    name: &str,
    known_hosts: PathBuf,
) -> ConnectOptions {
    ConnectOptions {
        target,
        password: password.map(str::to_string),
        identity,
        accept_new: AcceptNew::Any,
        known_hosts: Some(known_hosts),
        name: name.into(),
        lossless: false,
        broker: None,
        listen: None,
    }
}

/// Whether the expert views the screen (with or without control).
pub fn viewing(s: ExpertState) -> bool {
    matches!(s, ExpertState::Viewing { .. })
}

/// Whether the expert has control.
pub fn control_granted(s: ExpertState) -> bool {
    matches!(
        s,
        ExpertState::Viewing {
            control: ControlState::Granted { .. }
        }
    )
}

/// An expert using the client library in process: a session run by
/// `shoulder::client::run` on its own runtime; dropping it disconnects.
/// (The `shoulder` binary as a process is [`crate::client_cli::CliExpert`];
/// a raw protocol peer is [`crate::tls_expert::TlsExpert`].)
pub struct ClientExpert {
    _rt: tokio::runtime::Runtime,
    actions: tokio::sync::mpsc::Sender<UserAction>,
    view: SharedView,
    events: Arc<Mutex<Vec<ClientEvent>>>,
    state: Arc<Mutex<ExpertState>>,
    _known: tempfile::TempDir,
}

impl std::fmt::Debug for ClientExpert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expert")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl ClientExpert {
    /// Connects to `target` as `name`, with a certificate (`identity`) or an
    /// invitation `password`, trusting the device on first use.
    ///
    /// # Panics
    /// When the runtime or the known-hosts directory cannot be made (the
    /// test cannot run).
    pub fn start(
        target: Target,
        identity: Option<Arc<Identity>>,
        password: Option<&str>,
        name: &str,
    ) -> Self {
        let known = tempfile::Builder::new()
            .prefix("shoulder-known-")
            .tempdir()
            .expect("temp dir");
        let opts = connect_options(
            target,
            identity,
            password,
            name,
            known.path().join("known_devices"),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (tx, rx) = tokio::sync::mpsc::channel(client::ACTION_QUEUE);
        let view = SharedView::default();
        let events = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Mutex::new(ExpertState::Connecting));
        let (ev, st) = (events.clone(), state.clone());
        let emit = Box::new(move |e: ClientEvent| {
            if let ClientEvent::State(s) = &e {
                *lock(&st) = *s;
            }
            lock(&ev).push(e);
        });
        let view2 = view.clone();
        rt.spawn(async move {
            client::run(opts, view2, rx, emit).await;
        });
        Self {
            _rt: rt,
            actions: tx,
            view,
            events,
            state,
            _known: known,
        }
    }

    /// Offers help to the device at `addr` with `pki`'s expert certificate.
    ///
    /// # Panics
    /// As [`ClientExpert::start`], and when the expert identity does not load.
    pub fn offer(addr: SocketAddr, pki: &Pki) -> Self {
        let identity = pki.expert_identity().unwrap_or_else(|e| panic!("{e}"));
        Self::start(offer_target(addr), Some(identity), None, pki.expert_name())
    }

    /// The latest state the client reported.
    pub fn state(&self) -> ExpertState {
        *lock(&self.state)
    }

    /// Waits up to `within` until the state satisfies `pred`. The error
    /// names `what` was awaited, the state and the events seen; the wait
    /// also fails as soon as the session has ended.
    pub fn wait_state(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(ExpertState) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline && self.ended().is_none() {
            if pred(self.state()) {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        Err(format!(
            "expert: waiting for {what}, state {:?}, events {:?}",
            self.state(),
            self.event_summary()
        ))
    }

    /// Why the session ended (the client's error, debug-printed; `None`
    /// inside when the expert disconnected), or `None` while it runs.
    pub fn ended(&self) -> Option<String> {
        lock(&self.events).iter().find_map(|e| match e {
            ClientEvent::Ended(reason) => Some(format!("{reason:?}")),
            _ => None,
        })
    }

    /// The events so far, screen updates left out.
    pub fn event_summary(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter(|e| !matches!(e, ClientEvent::UpdateApplied { .. }))
            .map(|e| format!("{e:?}"))
            .collect()
    }

    /// The details of every "screen unavailable" the device sent.
    pub fn unavailable_reports(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .filter_map(|e| match e {
                ClientEvent::ScreenUnavailable(detail) => Some(detail.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many times the device announced a screen (size and format; the
    /// first one, and again after a mode change or a lost display).
    pub fn screen_announcements(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| matches!(e, ClientEvent::Screen(_)))
            .count()
    }

    /// The device's last list of screens (devices with several).
    pub fn screens(&self) -> Option<shoulder_proto::ScreenList> {
        lock(&self.events).iter().rev().find_map(|e| match e {
            ClientEvent::Screens(l) => Some((**l).clone()),
            _ => None,
        })
    }

    /// How many screen updates the client applied so far.
    pub fn updates_applied(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| matches!(e, ClientEvent::UpdateApplied { .. }))
            .count()
    }

    /// The device's file steps from the `from`-th on (counting file steps
    /// only), and how many there were in all.
    pub fn file_steps(&self, from: usize) -> (Vec<shoulder_proto::files::FileMsg>, usize) {
        let events = lock(&self.events);
        let mut n = 0;
        let mut new = Vec::new();
        for e in events.iter() {
            if let ClientEvent::File(f) = e {
                if n >= from {
                    new.push((**f).clone());
                }
                n += 1;
            }
        }
        (new, n)
    }

    /// How many of the device's view self-checks found the view wrong (and
    /// had the device send those bands again).
    pub fn view_repairs(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| matches!(e, ClientEvent::ViewChecked { differing, .. } if *differing > 0))
            .count()
    }

    /// How many view self-checks the device answered.
    pub fn view_checks(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| matches!(e, ClientEvent::ViewChecked { .. }))
            .count()
    }

    /// Whether a picture arrived.
    pub fn has_frame(&self) -> bool {
        self.view.lock().fb.is_some()
    }

    /// The device's cursor as the expert has it: the shape's size and
    /// hotspot, and where it is.
    pub fn cursor(&self) -> (Option<CursorSize>, Option<CursorAt>) {
        let view = self.view.lock();
        (
            view.cursor
                .as_ref()
                .map(|c| (c.width, c.height, c.hot_x, c.hot_y)),
            view.cursor_pos,
        )
    }

    /// The expert's framebuffer as a screen (RGB).
    pub fn screen(&self) -> Option<Screen> {
        let view = self.view.lock();
        let fb = view.fb.as_ref()?;
        Some(Screen::from_xrgb8888(
            u32::from(fb.width()),
            u32::from(fb.height()),
            fb.pixels(),
        ))
    }

    /// Does what the expert's UI would do for `action`.
    pub fn send(&self, action: UserAction) {
        // The test thread is outside the runtime: a blocking send is fine.
        let _ = self.actions.blocking_send(action);
    }

    /// A left click at (`x`, `y`) of the device's screen: move, press,
    /// release.
    pub fn click(&self, x: u32, y: u32) {
        let at = |buttons| {
            UserAction::Pointer(Pointer {
                x: x as u16,
                y: y as u16,
                buttons: Buttons(buttons),
                wheel: 0,
                hwheel: 0,
            })
        };
        self.send(at(0));
        self.send(at(Buttons::LEFT));
        self.send(at(0));
    }

    /// Has the device type `text` (at most `MAX_TYPE_TEXT_LEN` bytes) as
    /// request `id`; [`ClientExpert::typed`] has the answer.
    pub fn type_text(&self, id: u32, text: &str) {
        let text = Box::new(shoulder_proto::msg::text(text));
        self.send(UserAction::TypeText { id, text });
    }

    /// How the device said typing request `id` ended (characters typed,
    /// outcome), once it did.
    pub fn typed(&self, id: u32) -> Option<(u16, shoulder_proto::msg::TypeOutcome)> {
        lock(&self.events).iter().find_map(|e| match e {
            ClientEvent::Typed {
                id: i,
                typed,
                outcome,
            } if *i == id => Some((*typed, outcome.clone())),
            _ => None,
        })
    }

    /// A key press (`down`) or release, evdev `code`.
    pub fn key(&self, code: u16, down: bool) {
        self.send(UserAction::Key(Key { code, down }));
    }
}

impl Drop for ClientExpert {
    fn drop(&mut self) {
        self.send(UserAction::Disconnect);
        std::thread::sleep(DISCONNECT_GRACE);
    }
}

/// A lock that survives a panicked holder (the data is plain records).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
