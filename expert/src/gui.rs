//! The desktop app (eframe/egui): start screen, live view, control, chat.
//!
//! The network runs on a small tokio runtime beside the UI thread; the UI
//! reads the shared framebuffer and sends [`UserAction`]s. Nothing here
//! blocks the UI thread on the network.
//!
//! The screens' state lives here; their code in `start` (the start
//! screen), `session` (a session and its screen), `view` (the live view
//! and input over it) and `events` (the driver's events on their way in).

mod events;
mod files;
mod play;
mod session;
mod start;
mod view;

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Rect, TextureHandle, Vec2};
use shoulder_proto::Fingerprint;
use shoulder_proto::invite::Invitation;
use shoulder_proto::session::{ControlState, UserAction};

use self::events::UiEventReceiver;
use crate::client::broker::BrokerRoute;
use crate::client::{ConnectOptions, SessionHandle};
use crate::error::ClientError;
use crate::input::HeldInput;
use crate::target::Target;

/// Shown behind the first-contact question (the CLI's sentence names a flag).
const UNKNOWN_DEVICE: &str =
    "This device is not known yet — compare its fingerprint with the one shown on the device.";
/// Recent devices kept on the start screen.
const MAX_RECENT: usize = 10;
/// Chat lines kept in the panel; older ones scroll away for good.
const MAX_CHAT_HISTORY: usize = 500;
/// How long a notice (control declined, screenshot saved) stays up.
const NOTICE_TIME: Duration = Duration::from_secs(8);
/// Wheel: egui reports pixels for smooth devices; this many make one click.
const POINTS_PER_WHEEL_CLICK: f32 = 40.0;
/// The session machine adds this to the device's prompt time before it gives
/// up; the countdown shows the device's own deadline.
const CONSENT_SLACK: Duration = shoulder_proto::session::DEFAULT_PRE_AUTH_TIMEOUT;

/// What the GUI opens with.
#[derive(Debug, Clone)]
pub enum GuiStart {
    StartScreen,
    Connect {
        opts: Box<ConnectOptions>,
        /// The password must still be typed.
        needs_password: bool,
    },
    /// The device list of the plant's broker, read at once
    /// (`shoulder devices --window`).
    Devices {
        route: BrokerRoute,
        /// The identity argument (a directory or a name).
        identity: String,
    },
}

/// `shoulder play FILE`: the replay window of a session record.
pub fn play(record: PathBuf, file: Vec<u8>) -> Result<(), String> {
    play::run(record, file)
}

/// Why no window can open (no display to open it on), saying what works
/// `instead` without one.
fn no_display(instead: &str) -> Result<(), String> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
        && std::env::var_os("WAYLAND_SOCKET").is_none()
    {
        return Err(format!(
            "No display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set) — run it on a desktop, or use {instead}, which need no window."
        ));
    }
    let _ = instead;
    Ok(())
}

/// eframe could not open the window.
fn window_failed(e: eframe::Error) -> String {
    format!(
        "Cannot open the window: {e} — check that a display is available (DISPLAY or WAYLAND_DISPLAY)."
    )
}

/// Opens the window and runs until it is closed.
pub fn run(start: GuiStart) -> Result<(), String> {
    no_display("snapshot, watch or chat")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("shoulder-net")
        .enable_all()
        .build()
        .map_err(|e| format!("Cannot start the network runtime: {e}."))?;
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Shoulder")
            .with_app_id("shoulder")
            .with_inner_size([1100.0, 760.0])
            .with_min_inner_size([480.0, 320.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Shoulder",
        options,
        Box::new(move |cc| Ok(Box::new(App::new(&cc.egui_ctx, rt, start)))),
    )
    .map_err(window_failed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTab {
    Offer,
    Invitation,
    /// The device list of the plant's broker.
    Devices,
}

/// A device on the recent list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recent {
    /// `broker`: the broker it was reached through, empty for direct.
    Offer {
        device: String,
        identity: String,
        broker: String,
    },
    Invitation {
        path: String,
        label: String,
    },
}

/// The device list as read from the broker (device, its presence), or why
/// it could not be read.
type Directory = Result<shoulder_broker::Directory, String>;

/// The start screen's form.
#[derive(Debug)]
struct StartForm {
    tab: StartTab,
    device: String,
    identities: Vec<String>,
    identity: String,
    invitation_text: String,
    invitation_path: String,
    invitation: Option<Result<(Invitation, Option<PathBuf>), String>>,
    password: String,
    error: Option<String>,
    recent: Vec<Recent>,
    /// Every update exact (`--lossless`): no approximate pictures first.
    exact: bool,
    /// The plant's broker (`host[:port]`); empty: offers go direct.
    broker: String,
    /// The broker's CA file and topic prefix, when the command line named
    /// them (else the identity's plant CA and `shoulder`).
    broker_ca: Option<PathBuf>,
    broker_prefix: String,
    /// The device list as last read, and a read under way.
    directory: Option<Directory>,
    directory_rx: Option<std_mpsc::Receiver<Directory>>,
    /// Read the list at the next frame.
    refresh: bool,
    filter: String,
    online_only: bool,
}

/// What the session screen shows.
#[derive(Debug, Clone)]
enum Phase {
    Connecting(String),
    Waiting {
        deadline: Instant,
    },
    Viewing(ControlState),
    /// The connection dropped; the client reconnects until `until` while
    /// the last picture stays up.
    Reconnecting {
        until: Instant,
        attempt: u32,
        last_error: Option<String>,
    },
    Ended(Option<String>),
}

/// A running (or ended) session.
struct SessionUi {
    handle: SessionHandle,
    events: UiEventReceiver,
    opts: ConnectOptions,
    phase: Phase,
    device_name: String,
    fingerprint: Option<Fingerprint>,
    screen_unavailable: Option<String>,
    /// The device said it records its sessions.
    recorded: bool,
    /// The device's screens when it has several, and which one is shown.
    screens: Option<shoulder_proto::ScreenList>,
    texture: Option<TextureHandle>,
    fit: bool,
    fullscreen: bool,
    chat_open: bool,
    chat: Vec<(bool, String)>,
    chat_input: String,
    unread: usize,
    /// "Type text…": the panel, what is written in it, and the text being
    /// typed on the device.
    type_open: bool,
    type_input: String,
    typing: Option<session::Typing>,
    type_ids: u32,
    /// "Files": copy from and send to the device.
    files: files::FilesPanel,
    held: HeldInput,
    touch_mode: bool,
    notice: Option<(String, Instant)>,
    wheel: Vec2,
    last_pos: Option<(u16, u16)>,
    /// First contact: the device's fingerprint awaiting the expert's answer.
    confirm_device: Option<(String, Fingerprint)>,
    view_rect: Option<Rect>,
    cursor_texture: Option<(TextureHandle, Vec2)>,
    end_error: Option<ClientError>,
}

impl std::fmt::Debug for SessionUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionUi")
            .field("phase", &self.phase)
            .finish()
    }
}

/// Turns egui input over the view into device input.
struct ViewInput<'a> {
    rect: Rect,
    size: (u16, u16),
    held: &'a mut HeldInput,
    touch: bool,
    keyboard: bool,
    wheel: &'a mut Vec2,
    last_pos: &'a mut Option<(u16, u16)>,
}

/// With `SHOULDER_TRACE_VIEW` set, the app prints where its device view and
/// main buttons are (window pixels) and which state it shows, one line per
/// change on stderr, so automated desktop tests can click the real buttons.
#[derive(Debug, Default)]
struct Tracer {
    enabled: bool,
    last: std::collections::HashMap<&'static str, String>,
}

impl Tracer {
    fn note(&mut self, key: &'static str, value: String) {
        if self.enabled && self.last.get(key) != Some(&value) {
            eprintln!("shoulder-{key} {value}");
            self.last.insert(key, value);
        }
    }

    fn rect(&mut self, key: &'static str, r: Rect, ppp: f32) {
        if self.enabled {
            self.note(
                key,
                format!(
                    "x={:.0} y={:.0} w={:.0} h={:.0}",
                    r.min.x * ppp,
                    r.min.y * ppp,
                    r.width() * ppp,
                    r.height() * ppp
                ),
            );
        }
    }
}

enum Screen {
    Start(Box<StartForm>),
    Session(Box<SessionUi>),
}

struct App {
    rt: tokio::runtime::Runtime,
    screen: Screen,
    /// A password still to type before connecting (`shoulder open` without
    /// `--password-file`).
    pending: Option<ConnectOptions>,
    tracer: Tracer,
    /// The open file dialog's answer, when one is open.
    picker: Option<std_mpsc::Receiver<Option<PathBuf>>>,
}

impl App {
    fn new(ctx: &egui::Context, rt: tokio::runtime::Runtime, start: GuiStart) -> Self {
        let tracer = Tracer {
            enabled: std::env::var_os("SHOULDER_TRACE_VIEW").is_some(),
            ..Tracer::default()
        };
        let mut app = Self {
            rt,
            screen: Screen::Start(Box::new(StartForm::new())),
            pending: None,
            tracer,
            picker: None,
        };
        match start {
            GuiStart::StartScreen => {}
            GuiStart::Devices { route, identity } => {
                let mut form = StartForm::new();
                form.tab = StartTab::Devices;
                form.broker = route.label();
                form.broker_ca = route.ca;
                form.broker_prefix = route.prefix;
                form.identity = identity;
                form.refresh = true;
                app.screen = Screen::Start(Box::new(form));
            }
            GuiStart::Connect {
                opts,
                needs_password,
            } => {
                if needs_password {
                    let mut form = StartForm::new();
                    // `--lossless` on the command line ticks the box.
                    form.exact = opts.lossless;
                    if let Target::Invitation(inv) = &opts.target {
                        form.tab = StartTab::Invitation;
                        form.invitation = Some(Ok(((**inv).clone(), None)));
                    }
                    app.screen = Screen::Start(Box::new(form));
                    app.pending = Some(*opts);
                } else {
                    app.screen = Screen::Session(Box::new(SessionUi::start(ctx, &app.rt, *opts)));
                }
            }
        }
        app
    }

    fn connect(&mut self, ctx: &egui::Context, opts: ConnectOptions) {
        self.screen = Screen::Session(Box::new(SessionUi::start(ctx, &self.rt, opts)));
    }
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        match self.screen {
            Screen::Start(_) => self.start_ui(ui),
            Screen::Session(_) => self.session_ui(ui),
        }
        // Countdowns and live figures tick even without new frames.
        ui.ctx().request_repaint_after(Duration::from_secs(1));
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        if let Screen::Session(s) = &mut self.screen {
            s.release_all();
            s.send(UserAction::Disconnect);
        }
        // Give the Bye a moment to leave.
        std::thread::sleep(Duration::from_millis(150));
    }
}
