//! The desktop app (eframe/egui): start screen, live view, control, chat.
//!
//! The network runs on a small tokio runtime beside the UI thread; the UI
//! reads the shared framebuffer and sends [`UserAction`]s. Nothing here
//! blocks the UI thread on the network.

mod events;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use eframe::egui::{
    self, Color32, ColorImage, Event, Key, PointerButton, Pos2, Rect, RichText, Sense,
    TextureHandle, TextureOptions, Vec2,
};
use shoulder_proto::invite::Invitation;
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_proto::{Buttons, Fingerprint, TouchPhase, human_duration};
use tokio::sync::mpsc;

use self::events::{UI_EVENT_QUEUE, UiEventReceiver, ui_events};
use crate::client::{
    self, ACTION_QUEUE, ClientEvent, ConnectOptions, SessionHandle, SharedView, Stats,
};
use crate::error::ClientError;
use crate::identity::{self, Identity};
use crate::input::HeldInput;
use crate::keymap::{SpecialKeys, evdev_code};
use crate::printable::printable;
use crate::target::{Target, host_port, read_invitation_file, split_host_port};
use crate::trust::AcceptNew;

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
}

/// Opens the window and runs until it is closed.
pub fn run(start: GuiStart) -> Result<(), String> {
    #[cfg(all(unix, not(target_os = "macos")))]
    if std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_none()
        && std::env::var_os("WAYLAND_SOCKET").is_none()
    {
        return Err(
            "No display to open the window on (neither DISPLAY nor WAYLAND_DISPLAY is set) — run it on a desktop, or use snapshot, watch or chat, which need no window."
                .into(),
        );
    }
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
    .map_err(|e| {
        format!("Cannot open the window: {e} — check that a display is available (DISPLAY or WAYLAND_DISPLAY).")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTab {
    Offer,
    Invitation,
}

/// A device on the recent list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recent {
    Offer { device: String, identity: String },
    Invitation { path: String, label: String },
}

impl Recent {
    fn line(&self) -> String {
        match self {
            Recent::Offer { device, identity } => format!("offer\t{device}\t{identity}"),
            Recent::Invitation { path, label } => format!("invitation\t{path}\t{label}"),
        }
    }

    fn parse(line: &str) -> Option<Self> {
        let mut p = line.split('\t');
        match (p.next()?, p.next()?, p.next().unwrap_or("")) {
            ("offer", d, i) => Some(Recent::Offer {
                device: d.into(),
                identity: i.into(),
            }),
            ("invitation", path, label) => Some(Recent::Invitation {
                path: path.into(),
                label: label.into(),
            }),
            _ => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Recent::Offer { device, identity } if identity.is_empty() => format!("Offer: {device}"),
            Recent::Offer { device, identity } => format!("Offer: {device} as {identity}"),
            Recent::Invitation { label, .. } => format!("Invitation: {label}"),
        }
    }
}

fn recent_path() -> Option<PathBuf> {
    identity::config_dir().ok().map(|d| d.join("recent"))
}

fn load_recent() -> Vec<Recent> {
    let Some(p) = recent_path() else {
        return Vec::new();
    };
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(Recent::parse)
        .take(MAX_RECENT)
        .collect()
}

fn remember(list: &mut Vec<Recent>, r: Recent) {
    list.retain(|x| *x != r);
    list.insert(0, r);
    list.truncate(MAX_RECENT);
    if let Some(p) = recent_path() {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let text: String = list.iter().map(|r| r.line() + "\n").collect();
        // The recent list is a convenience: failing to save it is not worth
        // interrupting the expert for.
        let _ = std::fs::write(p, text);
    }
}

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
}

impl StartForm {
    fn new() -> Self {
        let identities = identity::list_identities();
        Self {
            tab: StartTab::Offer,
            device: String::new(),
            identity: identities.first().cloned().unwrap_or_default(),
            identities,
            invitation_text: String::new(),
            invitation_path: String::new(),
            invitation: None,
            password: String::new(),
            error: None,
            recent: load_recent(),
        }
    }

    fn load_invitation_file(&mut self, path: &Path) {
        self.tab = StartTab::Invitation;
        self.error = None;
        self.invitation_path = path.display().to_string();
        self.invitation = Some(
            read_invitation_file(path)
                .map(|i| (i, Some(path.to_owned())))
                .map_err(|e| e.sentence()),
        );
    }
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
    texture: Option<TextureHandle>,
    fit: bool,
    fullscreen: bool,
    chat_open: bool,
    chat: Vec<(bool, String)>,
    chat_input: String,
    unread: usize,
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

impl SessionUi {
    fn start(ctx: &egui::Context, rt: &tokio::runtime::Runtime, opts: ConnectOptions) -> Self {
        let view = SharedView::default();
        let (tx, rx) = mpsc::channel(ACTION_QUEUE);
        let (etx, erx) = ui_events(UI_EVENT_QUEUE);
        let repaint = ctx.clone();
        let emit = Box::new(move |e: ClientEvent| {
            // Frame updates come fast; the UI reads the framebuffer itself,
            // so they may be dropped while it does not draw (see `events`).
            etx.send(e);
            repaint.request_repaint();
        });
        let _guard = rt.enter();
        rt.spawn(client::run(opts.clone(), view.clone(), rx, emit));
        let device_name = match &opts.target {
            Target::Offer { host, port } => host_port(host, *port),
            Target::Invitation(i) => printable(&i.device_name),
        };
        Self {
            handle: SessionHandle {
                actions: tx,
                view,
                runtime: rt.handle().clone(),
            },
            events: erx,
            opts,
            phase: Phase::Connecting(String::new()),
            device_name,
            fingerprint: None,
            screen_unavailable: None,
            texture: None,
            fit: true,
            fullscreen: false,
            chat_open: false,
            chat: Vec::new(),
            chat_input: String::new(),
            unread: 0,
            held: HeldInput::new(),
            touch_mode: false,
            notice: None,
            wheel: Vec2::ZERO,
            last_pos: None,
            confirm_device: None,
            view_rect: None,
            cursor_texture: None,
            end_error: None,
        }
    }

    fn controlling(&self) -> bool {
        matches!(
            self.phase,
            Phase::Viewing(ControlState::Granted {
                local_user_active: false
            })
        )
    }

    fn send(&self, a: UserAction) {
        self.handle.send(a);
    }

    fn release_all(&mut self) {
        for a in self.held.release_all() {
            self.handle.send(a);
        }
        self.wheel = Vec2::ZERO;
    }

    fn notice(&mut self, s: String) {
        self.notice = Some((s, Instant::now()));
    }

    fn poll_events(&mut self) {
        for e in self.events.take_all() {
            match e {
                ClientEvent::Connecting(a) => self.phase = Phase::Connecting(a),
                ClientEvent::Connected {
                    device_name,
                    fingerprint,
                } => {
                    // egui draws no escape sequences, but line breaks and
                    // bidi overrides still mislead.
                    self.device_name = printable(&device_name);
                    self.fingerprint = Some(fingerprint);
                }
                ClientEvent::State(s) => {
                    let was_controlling = self.controlling();
                    self.phase = match s {
                        ExpertState::Connecting => Phase::Connecting(String::new()),
                        ExpertState::WaitingForConsent { deadline } => Phase::Waiting { deadline },
                        ExpertState::Viewing { control } => Phase::Viewing(control),
                        ExpertState::Closed => self.phase.clone(),
                    };
                    if was_controlling && !self.controlling() {
                        self.release_all();
                    }
                }
                ClientEvent::Screen(_) => self.screen_unavailable = None,
                ClientEvent::UpdateApplied { .. } => {}
                ClientEvent::ViewChecked {
                    compared,
                    differing,
                    asked,
                } => {
                    if differing > 0 {
                        self.notice(format!(
                            "View repaired: {differing} of {compared} strips differed from the device screen and were sent again."
                        ));
                    } else if asked && compared == 0 {
                        self.notice(
                            "The screen is changing; the view is checked again in a few seconds."
                                .into(),
                        );
                    } else if asked {
                        self.notice("View checked: it matches the device screen.".into());
                    }
                }
                ClientEvent::ScreenUnavailable(s) => self.screen_unavailable = Some(s),
                ClientEvent::ControlDeclined(s) | ClientEvent::ControlEnded(s) => {
                    self.release_all();
                    self.notice(s);
                }
                ClientEvent::Reconnecting {
                    until,
                    attempt,
                    last_error,
                } => {
                    // The device released everything when the link died;
                    // forget what we held without sending releases.
                    self.held = HeldInput::new();
                    self.wheel = Vec2::ZERO;
                    self.phase = Phase::Reconnecting {
                        until,
                        attempt,
                        last_error,
                    };
                }
                ClientEvent::Resuming => {}
                ClientEvent::Chat(t) => {
                    self.chat.push((false, printable(&t)));
                    if self.chat.len() > MAX_CHAT_HISTORY {
                        self.chat.remove(0);
                    }
                    if !self.chat_open {
                        self.unread += 1;
                    }
                }
                ClientEvent::Ended(end) => {
                    self.held = HeldInput::new();
                    self.end_error = end.clone();
                    if let Some(ClientError::UnknownDevice { host, got }) = &end {
                        self.confirm_device = Some((host.clone(), *got));
                        self.phase = Phase::Ended(Some(UNKNOWN_DEVICE.into()));
                        continue;
                    }
                    self.phase = Phase::Ended(end.map(|e| e.sentence()));
                }
            }
        }
    }

    /// Uploads what changed in the framebuffer to the texture.
    fn upload(&mut self, ctx: &egui::Context) {
        let mut v = self.handle.view.lock();
        let Some(dirty) = v.dirty.take() else {
            return;
        };
        let Some(fb) = &v.fb else {
            return;
        };
        let (w, h) = (usize::from(fb.width()), usize::from(fb.height()));
        let options = TextureOptions {
            // Crisp pixels when enlarged; smooth when shrunk to fit.
            magnification: egui::TextureFilter::Nearest,
            minification: egui::TextureFilter::Linear,
            ..TextureOptions::NEAREST
        };
        let region = |x0: usize, y0: usize, x1: usize, y1: usize| {
            let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
            for y in y0..y1 {
                let row = &fb.pixels()[(y * w + x0) * 4..(y * w + x1) * 4];
                for p in row.chunks_exact(4) {
                    rgba.extend_from_slice(&[p[2], p[1], p[0], 255]);
                }
            }
            ColorImage::from_rgba_unmultiplied([x1 - x0, y1 - y0], &rgba)
        };
        let full = self.texture.as_ref().is_none_or(|t| t.size() != [w, h]);
        if full {
            let img = region(0, 0, w, h);
            self.texture = Some(ctx.load_texture("device-screen", img, options));
        } else if let Some(tex) = &mut self.texture {
            let (x0, y0) = (usize::from(dirty.x0).min(w), usize::from(dirty.y0).min(h));
            let (x1, y1) = (usize::from(dirty.x1).min(w), usize::from(dirty.y1).min(h));
            if x1 > x0 && y1 > y0 {
                tex.set_partial([x0, y0], region(x0, y0, x1, y1), options);
            }
        }
    }

    fn screenshot(&mut self) {
        let v = self.handle.view.lock();
        let Some(fb) = &v.fb else {
            drop(v);
            self.notice("No screen yet to save.".into());
            return;
        };
        let dir = directories::UserDirs::new()
            .and_then(|u| u.picture_dir().map(Path::to_owned))
            .filter(|d| d.is_dir())
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name: String = self
            .device_name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("shoulder-{name}-{secs}.png"));
        let r = client::save_png(fb, &path);
        drop(v);
        match r {
            Ok(()) => self.notice(format!("Screenshot saved to {}.", path.display())),
            Err(e) => self.notice(e.sentence()),
        }
    }

    fn status_text(&self) -> (String, Color32) {
        let now = Instant::now();
        match &self.phase {
            Phase::Connecting(a) if a.is_empty() => ("Connecting…".into(), Color32::GRAY),
            Phase::Connecting(a) => (format!("Connecting to {a}…"), Color32::GRAY),
            Phase::Waiting { deadline } => {
                let left = deadline
                    .saturating_duration_since(now + CONSENT_SLACK)
                    .as_secs();
                (
                    format!("Waiting for the person at the device to accept… {left} s"),
                    Color32::from_rgb(200, 160, 40),
                )
            }
            Phase::Viewing(ControlState::None) => {
                ("Viewing".into(), Color32::from_rgb(80, 160, 220))
            }
            Phase::Viewing(ControlState::Requested { deadline }) => {
                let left = deadline
                    .map(|d| format!(" {} s", d.saturating_duration_since(now).as_secs()))
                    .unwrap_or_default();
                (
                    format!("Waiting for control…{left}"),
                    Color32::from_rgb(200, 160, 40),
                )
            }
            Phase::Viewing(ControlState::Granted {
                local_user_active: false,
            }) => ("Controlling".into(), Color32::from_rgb(60, 180, 90)),
            Phase::Viewing(ControlState::Granted {
                local_user_active: true,
            }) => (
                "The person at the device is using it — your input waits".into(),
                Color32::from_rgb(200, 160, 40),
            ),
            Phase::Reconnecting { until, .. } => {
                let left = until.saturating_duration_since(now).as_secs();
                (
                    format!("Connection lost — reconnecting… {left} s"),
                    Color32::from_rgb(230, 190, 80),
                )
            }
            Phase::Ended(_) => ("Ended".into(), Color32::GRAY),
        }
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

impl ViewInput<'_> {
    fn device_pos(&self, p: Pos2) -> (u16, u16) {
        let (w, h) = (f32::from(self.size.0), f32::from(self.size.1));
        let x = ((p.x - self.rect.min.x) / self.rect.width() * w).clamp(0.0, w - 1.0);
        let y = ((p.y - self.rect.min.y) / self.rect.height() * h).clamp(0.0, h - 1.0);
        (x as u16, y as u16)
    }

    fn translate(&mut self, events: &[Event], out: &mut Vec<UserAction>) {
        for e in events {
            match e {
                Event::PointerMoved(p) => {
                    let inside = self.rect.contains(*p);
                    if !inside && self.held.buttons() == 0 && self.held.is_idle() {
                        continue;
                    }
                    let (x, y) = self.device_pos(*p);
                    if *self.last_pos == Some((x, y)) {
                        continue;
                    }
                    *self.last_pos = Some((x, y));
                    if self.touch {
                        if let Some(t) = self.held.touch(x, y, TouchPhase::Move) {
                            out.push(UserAction::Touch(t));
                        }
                    } else {
                        let b = self.held.buttons();
                        out.push(UserAction::Pointer(self.held.pointer(x, y, b, 0, 0)));
                    }
                }
                Event::PointerButton {
                    pos,
                    button,
                    pressed,
                    ..
                } => {
                    if *pressed && !self.rect.contains(*pos) {
                        continue;
                    }
                    let (x, y) = self.device_pos(*pos);
                    *self.last_pos = Some((x, y));
                    if self.touch {
                        if *button == PointerButton::Primary {
                            let phase = if *pressed {
                                TouchPhase::Down
                            } else {
                                TouchPhase::Up
                            };
                            if let Some(t) = self.held.touch(x, y, phase) {
                                out.push(UserAction::Touch(t));
                            }
                        }
                        continue;
                    }
                    let bit = match button {
                        PointerButton::Primary => Buttons::LEFT,
                        PointerButton::Secondary => Buttons::RIGHT,
                        PointerButton::Middle => Buttons::MIDDLE,
                        _ => continue,
                    };
                    if !*pressed && self.held.buttons() & bit == 0 {
                        continue;
                    }
                    out.push(UserAction::Pointer(self.held.button(x, y, bit, *pressed)));
                }
                Event::MouseWheel { unit, delta, .. } => {
                    let Some((x, y)) = *self.last_pos else {
                        continue;
                    };
                    let clicks = match unit {
                        egui::MouseWheelUnit::Point => *delta / POINTS_PER_WHEEL_CLICK,
                        egui::MouseWheelUnit::Line => *delta,
                        egui::MouseWheelUnit::Page => *delta * 3.0,
                    };
                    *self.wheel += clicks;
                    let wy = self.wheel.y.trunc().clamp(-127.0, 127.0);
                    let wx = self.wheel.x.trunc().clamp(-127.0, 127.0);
                    if wy != 0.0 || wx != 0.0 {
                        self.wheel.y -= wy;
                        self.wheel.x -= wx;
                        let b = self.held.buttons();
                        // egui: positive y moves content down (wheel away
                        // from the user); positive x moves content right
                        // (wheel to the left).
                        out.push(UserAction::Pointer(
                            self.held.pointer(x, y, b, wy as i8, -wx as i8),
                        ));
                    }
                }
                Event::Key {
                    key,
                    physical_key,
                    pressed,
                    ..
                } if self.keyboard => {
                    if let Some(code) = evdev_code(physical_key.unwrap_or(*key))
                        && let Some(k) = self.held.key(code, *pressed)
                    {
                        out.push(UserAction::Key(k));
                    }
                }
                // Ctrl+C/X/V become clipboard events before they reach us;
                // their key releases still arrive as keys.
                Event::Copy | Event::Cut | Event::Paste(_) if self.keyboard => {
                    let code = match e {
                        Event::Copy => 46,
                        Event::Cut => 45,
                        _ => 47,
                    };
                    if let Some(k) = self.held.key(code, true) {
                        out.push(UserAction::Key(k));
                    }
                }
                _ => {}
            }
        }
    }
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
            GuiStart::Connect {
                opts,
                needs_password,
            } => {
                if needs_password {
                    let mut form = StartForm::new();
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

    fn start_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let ppp = ctx.pixels_per_point();
        let tracer = &mut self.tracer;
        let rt = &self.rt;
        let picker = &mut self.picker;
        let Screen::Start(form) = &mut self.screen else {
            return;
        };
        tracer.note("state", "start".into());
        if let Some(rx) = picker {
            match rx.try_recv() {
                Ok(Some(p)) => {
                    form.load_invitation_file(&p);
                    *picker = None;
                }
                Ok(None) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    form.error = Some(
                        "No file chosen — if no dialog appeared, type the path or drop the file on this window."
                            .into(),
                    );
                    *picker = None;
                }
                Err(std_mpsc::TryRecvError::Empty) => {}
            }
        }
        // Dropped invitation files, from anywhere in the window.
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_owned())
                .collect()
        });
        if let Some(p) = dropped.first() {
            form.load_invitation_file(p);
        }
        let mut connect: Option<ConnectOptions> = None;
        egui::CentralPanel::default().show(ui, |ui| {
            ui.vertical_centered(|ui| {
                ui.add_space(16.0);
                ui.heading(RichText::new("Shoulder").size(28.0));
                ui.label("See and help at a device — only when the person there says yes.");
                ui.add_space(12.0);
            });
            ui.horizontal(|ui| {
                ui.selectable_value(&mut form.tab, StartTab::Offer, "Offer help");
                ui.selectable_value(&mut form.tab, StartTab::Invitation, "Open an invitation");
            });
            ui.separator();
            match form.tab {
                StartTab::Offer => {
                    egui::Grid::new("offer").num_columns(2).spacing([12.0, 8.0]).show(ui, |ui| {
                        ui.label("Device");
                        let r = ui.add(
                            egui::TextEdit::singleline(&mut form.device)
                                .hint_text("host or host:port, e.g. kiosk-12 or 10.0.0.5:7575")
                                .desired_width(360.0),
                        );
                        ui.end_row();
                        ui.label("Identity");
                        if form.identities.is_empty() {
                            ui.add(
                                egui::TextEdit::singleline(&mut form.identity)
                                    .hint_text("identity directory (expert.crt, expert.key)")
                                    .desired_width(360.0),
                            );
                        } else {
                            egui::ComboBox::from_id_salt("identity")
                                .selected_text(form.identity.clone())
                                .show_ui(ui, |ui| {
                                    for id in &form.identities {
                                        ui.selectable_value(&mut form.identity, id.clone(), id);
                                    }
                                });
                        }
                        ui.end_row();
                        ui.label("");
                        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                        if ui.button("Connect").clicked() || enter {
                            match offer_options(&form.device, &form.identity) {
                                Ok(o) => {
                                    remember(
                                        &mut form.recent,
                                        Recent::Offer {
                                            device: form.device.trim().to_string(),
                                            identity: form.identity.clone(),
                                        },
                                    );
                                    connect = Some(o);
                                }
                                Err(e) => form.error = Some(e.sentence()),
                            }
                        }
                        ui.end_row();
                    });
                    if form.identities.is_empty() {
                        ui.label(
                            RichText::new(
                                "No identity yet: create one with `shoulder pki issue-expert --ca DIR --name \"Your Name\"`.",
                            )
                            .weak(),
                        );
                    }
                }
                StartTab::Invitation => {
                    ui.label("Drop an invitation file on this window, type its path, or paste its text.");
                    ui.horizontal(|ui| {
                        ui.add(
                            egui::TextEdit::singleline(&mut form.invitation_path)
                                .hint_text("path/to/invitation.shoulder")
                                .desired_width(360.0),
                        );
                        if ui.button("Load file").clicked() {
                            let p = PathBuf::from(form.invitation_path.trim());
                            form.load_invitation_file(&p);
                        }
                        let choose = ui.add_enabled(picker.is_none(), egui::Button::new("Choose…"));
                        if choose.clicked() {
                            // The platform's file dialog (the desktop portal
                            // on Linux), off the UI thread.
                            let (tx, rx) = std_mpsc::channel();
                            let repaint = ctx.clone();
                            rt.spawn(async move {
                                let file = rfd::AsyncFileDialog::new()
                                    .set_title("Open a Shoulder invitation")
                                    .add_filter("Shoulder invitation", &["shoulder"])
                                    .pick_file()
                                    .await;
                                let _ = tx.send(file.map(|f| f.path().to_owned()));
                                repaint.request_repaint();
                            });
                            *picker = Some(rx);
                        }
                    });
                    let r = ui.add(
                        egui::TextEdit::multiline(&mut form.invitation_text)
                            .hint_text("SHOULDER1-…")
                            .desired_rows(3)
                            .desired_width(f32::INFINITY),
                    );
                    if r.changed() && !form.invitation_text.trim().is_empty() {
                        form.invitation = Some(
                            Invitation::from_text(form.invitation_text.trim())
                                .map(|i| (i, None))
                                .map_err(|e| e.to_string()),
                        );
                    }
                    match &form.invitation {
                        Some(Ok((inv, _))) => {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0);
                            let left = inv.remaining_secs(now);
                            let when = if left >= 0 {
                                format!("expires in {}", human_duration(left as u64))
                            } else {
                                format!(
                                    "expired {} ago — ask for a new one",
                                    human_duration(left.unsigned_abs())
                                )
                            };
                            let addrs: Vec<&str> = inv.addresses.iter().map(|a| a.as_str()).collect();
                            ui.label(format!(
                                "Device \"{}\" at {} port {} — {when}.",
                                printable(&inv.device_name),
                                addrs.join(", "),
                                inv.port
                            ));
                            ui.horizontal(|ui| {
                                ui.label("Password");
                                let r = ui.add(
                                    egui::TextEdit::singleline(&mut form.password)
                                        .password(true)
                                        .desired_width(220.0),
                                );
                                tracer.rect("field-password", r.rect, ppp);
                                let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                                if ui.button("Connect").clicked() || enter {
                                    let mut opts = self.pending.take().unwrap_or_else(|| {
                                        invitation_options(inv.clone())
                                    });
                                    opts.target = Target::Invitation(Box::new(inv.clone()));
                                    opts.password = Some(form.password.clone());
                                    if let Some(Ok((_, Some(p)))) = &form.invitation {
                                        let r = Recent::Invitation {
                                            path: p.display().to_string(),
                                            label: printable(&inv.device_name),
                                        };
                                        remember(&mut form.recent, r);
                                    }
                                    connect = Some(opts);
                                }
                            });
                        }
                        Some(Err(e)) => {
                            ui.colored_label(Color32::from_rgb(220, 80, 60), e);
                        }
                        None => {}
                    }
                }
            }
            if let Some(e) = &form.error {
                ui.add_space(8.0);
                ui.colored_label(Color32::from_rgb(220, 80, 60), e);
            }
            if !form.recent.is_empty() {
                ui.add_space(16.0);
                ui.label(RichText::new("Recent devices").strong());
                let mut pick = None;
                for r in &form.recent {
                    if ui.link(r.label()).clicked() {
                        pick = Some(r.clone());
                    }
                }
                match pick {
                    Some(Recent::Offer { device, identity }) => {
                        form.tab = StartTab::Offer;
                        form.device = device;
                        if !identity.is_empty() {
                            form.identity = identity;
                        }
                    }
                    Some(Recent::Invitation { path, .. }) => {
                        form.load_invitation_file(Path::new(&path));
                    }
                    None => {}
                }
            }
        });
        if let Some(o) = connect {
            self.connect(&ctx, o);
        }
    }

    fn session_ui(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        let ppp = ctx.pixels_per_point();
        let tracer = &mut self.tracer;
        let Screen::Session(s) = &mut self.screen else {
            return;
        };
        s.poll_events();
        s.upload(&ctx);

        // Focus loss: let go of everything held on the device.
        let focused = ctx.input(|i| i.focused);
        let lost_focus = ctx.input(|i| {
            i.events
                .iter()
                .any(|e| matches!(e, Event::WindowFocused(false)))
        });
        if (!focused || lost_focus) && !s.held.is_idle() {
            s.release_all();
        }

        let mut back_to_start = false;
        let mut reconnect: Option<ConnectOptions> = None;
        let mut retry_password = false;
        let viewing = matches!(s.phase, Phase::Viewing(_));
        let controlling = s.controlling();

        egui::Panel::top("toolbar").show(ui, |ui| {
            ui.horizontal(|ui| {
                match s.phase {
                    Phase::Viewing(ControlState::None) => {
                        let r = ui.button("Request control");
                        tracer.rect("button-request-control", r.rect, ppp);
                        if r.clicked() {
                            s.send(UserAction::RequestControl);
                        }
                    }
                    Phase::Viewing(ControlState::Requested { .. }) => {
                        if ui.button("Cancel request").clicked() {
                            s.send(UserAction::ReleaseControl);
                        }
                    }
                    Phase::Viewing(ControlState::Granted { .. }) => {
                        if ui.button("Release control").clicked() {
                            s.release_all();
                            s.send(UserAction::ReleaseControl);
                        }
                    }
                    _ => {
                        ui.add_enabled(false, egui::Button::new("Request control"));
                    }
                }
                let chat_label = if s.unread > 0 {
                    format!("Chat ({})", s.unread)
                } else {
                    "Chat".into()
                };
                let r = ui.selectable_label(s.chat_open, chat_label);
                tracer.rect("button-chat", r.rect, ppp);
                if r.clicked() {
                    s.chat_open = !s.chat_open;
                    s.unread = 0;
                }
                let r = ui.add_enabled(viewing, egui::Button::new("Screenshot"));
                tracer.rect("button-screenshot", r.rect, ppp);
                if r.clicked() {
                    s.screenshot();
                }
                let r = ui
                    .add_enabled(viewing, egui::Button::new("Refresh"))
                    .on_hover_text(
                        "Check the view against the device screen; what differs is sent again",
                    );
                tracer.rect("button-refresh", r.rect, ppp);
                if r.clicked() {
                    s.send(UserAction::CheckView);
                }
                ui.separator();
                if ui.selectable_label(s.fit, "Fit").clicked() {
                    s.fit = true;
                }
                let r = ui.selectable_label(!s.fit, "1:1");
                tracer.rect("button-one-to-one", r.rect, ppp);
                if r.clicked() {
                    s.fit = false;
                }
                if ui.selectable_label(s.fullscreen, "Fullscreen").clicked() {
                    s.fullscreen = !s.fullscreen;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(s.fullscreen));
                }
                ui.separator();
                ui.add_enabled_ui(controlling, |ui| {
                    ui.menu_button("Special keys", |ui| {
                        for k in SpecialKeys::ALL {
                            if ui.button(k.label()).clicked() {
                                for key in k.events() {
                                    s.send(UserAction::Key(key));
                                }
                                ui.close();
                            }
                        }
                    });
                    ui.checkbox(&mut s.touch_mode, "Send touch");
                });
                ui.separator();
                if matches!(s.phase, Phase::Ended(_)) {
                    if ui.button("Back to start").clicked() {
                        back_to_start = true;
                    }
                } else {
                    let r = ui.button("Disconnect");
                    tracer.rect("button-disconnect", r.rect, ppp);
                    if r.clicked() {
                        s.release_all();
                        s.send(UserAction::Disconnect);
                    }
                }
            });
        });

        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                let (text, color) = s.status_text();
                tracer.note("state", phase_name(&s.phase).into());
                ui.colored_label(color, RichText::new(text).strong());
                ui.separator();
                ui.label(&s.device_name);
                let stats: Stats = s.handle.view.lock().stats;
                if viewing {
                    ui.separator();
                    match stats.rtt {
                        Some(r) => ui.label(format_ping(r)),
                        None => ui.label("ping –"),
                    };
                    ui.label(format!("{:.0} fps", stats.fps));
                    ui.label(format_rate(stats.bytes_per_sec));
                    if stats.view_repairs > 0 {
                        ui.label(RichText::new(format!("repaired {}×", stats.view_repairs)).weak())
                            .on_hover_text(format!(
                                "The view differed from the device screen {} times in {} checks and was repaired each time",
                                stats.view_repairs, stats.view_checks
                            ));
                    }
                }
                if let Some(fp) = s.fingerprint {
                    ui.separator();
                    ui.label(RichText::new(format!("{}…", &fp.to_string()[..30])).weak())
                        .on_hover_text(fp.to_string());
                }
            });
        });

        if s.chat_open {
            egui::Panel::right("chat")
                .default_size(280.0)
                .show(ui, |ui| {
                    ui.heading("Chat");
                    let input_h = 36.0;
                    egui::ScrollArea::vertical()
                        .max_height(ui.available_height() - input_h)
                        .stick_to_bottom(true)
                        .show(ui, |ui| {
                            for (mine, line) in &s.chat {
                                let who = if *mine { "You" } else { "Device" };
                                ui.label(RichText::new(format!("{who}: {line}")));
                            }
                        });
                    ui.horizontal(|ui| {
                        let r = ui.add(
                            egui::TextEdit::singleline(&mut s.chat_input)
                                .hint_text("Message")
                                .desired_width(ui.available_width() - 60.0),
                        );
                        tracer.rect("field-chat", r.rect, ppp);
                        let enter = r.lost_focus() && ui.input(|i| i.key_pressed(Key::Enter));
                        if (ui.button("Send").clicked() || enter) && !s.chat_input.trim().is_empty()
                        {
                            let t = std::mem::take(&mut s.chat_input);
                            s.send(UserAction::Chat(t.clone()));
                            s.chat.push((true, t));
                            r.request_focus();
                        }
                    });
                });
        }

        egui::CentralPanel::default().show(ui, |ui| {
            if let Some((n, at)) = &s.notice {
                if at.elapsed() < NOTICE_TIME {
                    tracer.note("notice", n.clone());
                    ui.colored_label(Color32::from_rgb(230, 190, 80), n);
                    ctx.request_repaint_after(Duration::from_millis(500));
                } else {
                    s.notice = None;
                }
            }
            if let Some(u) = &s.screen_unavailable {
                ui.colored_label(
                    Color32::from_rgb(230, 190, 80),
                    format!("The screen is not available: {u}"),
                );
            }
            match s.phase.clone() {
                Phase::Connecting(_) | Phase::Waiting { .. } => {
                    ui.centered_and_justified(|ui| {
                        ui.vertical_centered(|ui| {
                            ui.add_space(ui.available_height() / 3.0);
                            ui.spinner();
                            ui.label(RichText::new(s.status_text().0).size(18.0));
                        });
                    });
                    ctx.request_repaint_after(Duration::from_millis(250));
                }
                Phase::Viewing(_) => {
                    self_view(ui, s);
                    if let Some(r) = s.view_rect {
                        tracer.rect("view", r, ppp);
                    }
                }
                Phase::Reconnecting {
                    until,
                    attempt,
                    last_error,
                } => {
                    // The last picture stays, under a line saying why it
                    // does not move. (The first event carries how the link
                    // died, which the line already says.)
                    let left = until.saturating_duration_since(Instant::now()).as_secs();
                    let mut line = format!(
                        "The connection to the device was lost. Reconnecting — the device keeps the session for {left} more s."
                    );
                    if attempt > 1
                        && let Some(e) = last_error
                    {
                        line.push_str(&format!(" Attempt {attempt}; the last one: {e}"));
                    }
                    ui.colored_label(Color32::from_rgb(230, 190, 80), line);
                    self_view(ui, s);
                    ctx.request_repaint_after(Duration::from_millis(250));
                }
                Phase::Ended(sentence) => {
                    tracer.note(
                        "ended",
                        sentence
                            .clone()
                            .unwrap_or_else(|| "You disconnected.".into()),
                    );
                    ui.vertical_centered(|ui| {
                        ui.add_space(ui.available_height() / 4.0);
                        let (text, color) = match &sentence {
                            None => ("You disconnected.".to_string(), Color32::GRAY),
                            Some(t) => (t.clone(), Color32::from_rgb(230, 110, 90)),
                        };
                        ui.label(RichText::new(text).size(18.0).color(color));
                        ui.add_space(12.0);
                        let wrong_password = matches!(
                            s.end_error,
                            Some(ClientError::Session {
                                reason: shoulder_proto::ByeReason::WrongPassword { .. },
                                ..
                            })
                        );
                        let invitation = matches!(s.opts.target, Target::Invitation(_));
                        if wrong_password {
                            if ui.button("Try again with another password").clicked() {
                                retry_password = true;
                            }
                        } else if invitation {
                            // Invitations are single-use: a new attempt
                            // needs a new one.
                            if ui.button("Open another invitation").clicked() {
                                back_to_start = true;
                            }
                        } else if s.confirm_device.is_none() && ui.button("Connect again").clicked()
                        {
                            reconnect = Some(s.opts.clone());
                        }
                    });
                }
            }
        });

        if let Some((host, fp)) = s.confirm_device.clone() {
            egui::Modal::new(egui::Id::unique("confirm-device")).show(&ctx, |ui| {
                ui.heading("First connection to this device");
                ui.label(format!("The device at {host} presents this certificate fingerprint:"));
                ui.monospace(fp.to_string());
                ui.label("Compare it with the fingerprint shown on the device (shoulder-agent status). Connect only if they are the same.");
                ui.horizontal(|ui| {
                    let r = ui.button("They match — trust and connect");
                    tracer.rect("button-trust-device", r.rect, ppp);
                    if r.clicked() {
                        let mut o = s.opts.clone();
                        o.accept_new = AcceptNew::Only(fp);
                        reconnect = Some(o);
                    }
                    if ui.button("Cancel").clicked() {
                        s.confirm_device = None;
                    }
                });
            });
        }

        if retry_password && let Screen::Session(s) = &self.screen {
            let mut opts = s.opts.clone();
            opts.password = None;
            let mut form = StartForm::new();
            if let Target::Invitation(inv) = &opts.target {
                form.tab = StartTab::Invitation;
                form.invitation = Some(Ok(((**inv).clone(), None)));
            }
            self.pending = Some(opts);
            self.screen = Screen::Start(Box::new(form));
        } else if back_to_start {
            self.screen = Screen::Start(Box::new(StartForm::new()));
        } else if let Some(o) = reconnect {
            self.connect(&ctx, o);
        }
    }
}

/// The live view (fit or 1:1) and the input over it.
fn self_view(ui: &mut egui::Ui, s: &mut SessionUi) {
    let Some(tex) = s.texture.clone() else {
        ui.centered_and_justified(|ui| {
            ui.spinner();
        });
        return;
    };
    let [w, h] = tex.size();
    let ppp = ui.ctx().pixels_per_point();
    let controlling = s.controlling();
    let mut show = |ui: &mut egui::Ui, size: Vec2| {
        let (rect, response) = ui.allocate_exact_size(size, Sense::click_and_drag());
        let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
        ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
        s.view_rect = Some(rect);
        // The device's cursor, where the device says it is, in its own
        // image when the device sent one.
        let (cursor, shape_changed) = {
            let mut v = s.handle.view.lock();
            let changed = std::mem::take(&mut v.cursor_changed);
            let shape = if changed { v.cursor.clone() } else { None };
            (v.cursor_pos, (changed, shape))
        };
        if let (true, shape) = shape_changed {
            s.cursor_texture = shape.and_then(|c| cursor_texture(ui.ctx(), &c));
        }
        if let Some((cx, cy, true)) = cursor {
            let sx = rect.width() / w as f32;
            let sy = rect.height() / h as f32;
            let p = Pos2::new(
                rect.min.x + f32::from(cx) * sx,
                rect.min.y + f32::from(cy) * sy,
            );
            match &s.cursor_texture {
                Some((tex, hot)) => {
                    let size = tex.size_vec2() * Vec2::new(sx, sy);
                    let min = p - *hot * Vec2::new(sx, sy);
                    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
                    ui.painter().image(
                        tex.id(),
                        Rect::from_min_size(min, size),
                        uv,
                        Color32::WHITE,
                    );
                }
                None => draw_cursor(ui.painter(), p),
            }
        }
        if controlling {
            if response.clicked()
                || response.drag_started()
                || response.hovered() && !ui.ctx().egui_wants_keyboard_input()
            {
                response.request_focus();
            }
            ui.memory_mut(|m| {
                m.set_focus_lock_filter(
                    response.id,
                    egui::EventFilter {
                        tab: true,
                        horizontal_arrows: true,
                        vertical_arrows: true,
                        escape: true,
                    },
                )
            });
            let keyboard = response.has_focus();
            let events = ui.input(|i| i.events.clone());
            let mut out = Vec::new();
            ViewInput {
                rect,
                size: (w as u16, h as u16),
                held: &mut s.held,
                touch: s.touch_mode,
                keyboard,
                wheel: &mut s.wheel,
                last_pos: &mut s.last_pos,
            }
            .translate(&events, &mut out);
            for a in out {
                s.handle.send(a);
            }
            if response.hovered() {
                ui.ctx().set_cursor_icon(egui::CursorIcon::Crosshair);
            }
        }
    };
    if s.fit {
        let avail = ui.available_size();
        let scale = (avail.x / w as f32).min(avail.y / h as f32).max(0.01);
        let size = Vec2::new(w as f32 * scale, h as f32 * scale);
        ui.vertical_centered(|ui| {
            ui.add_space(((avail.y - size.y) / 2.0).max(0.0));
            show(ui, size);
        });
    } else {
        let size = Vec2::new(w as f32 / ppp, h as f32 / ppp);
        egui::ScrollArea::both()
            .scroll_source(egui::containers::scroll_area::ScrollSource {
                mouse_wheel: !controlling,
                ..egui::containers::scroll_area::ScrollSource::ALL
            })
            .show(ui, |ui| show(ui, size));
    }
}

/// A stable name for each phase (trace lines).
fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::Connecting(_) => "connecting",
        Phase::Waiting { .. } => "waiting-for-consent",
        Phase::Viewing(ControlState::None) => "viewing",
        Phase::Viewing(ControlState::Requested { .. }) => "waiting-for-control",
        Phase::Viewing(ControlState::Granted {
            local_user_active: false,
        }) => "controlling",
        Phase::Viewing(ControlState::Granted {
            local_user_active: true,
        }) => "local-user-active",
        Phase::Reconnecting { .. } => "reconnecting",
        Phase::Ended(_) => "ended",
    }
}

/// The device's cursor image (ARGB8888, bytes B,G,R,A) as a texture, with
/// its hotspot.
fn cursor_texture(
    ctx: &egui::Context,
    c: &shoulder_proto::CursorShape,
) -> Option<(TextureHandle, Vec2)> {
    let (w, h) = (usize::from(c.width), usize::from(c.height));
    if w == 0 || h == 0 || c.pixels.0.len() != w * h * 4 {
        return None;
    }
    let rgba: Vec<u8> = c
        .pixels
        .0
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0], p[3]])
        .collect();
    let img = ColorImage::from_rgba_unmultiplied([w, h], &rgba);
    let tex = ctx.load_texture("device-cursor", img, TextureOptions::NEAREST);
    Some((tex, Vec2::new(f32::from(c.hot_x), f32::from(c.hot_y))))
}

fn draw_cursor(p: &egui::Painter, at: Pos2) {
    let pts = vec![
        at,
        at + Vec2::new(0.0, 16.0),
        at + Vec2::new(4.5, 12.0),
        at + Vec2::new(11.0, 12.0),
    ];
    p.add(egui::Shape::convex_polygon(
        pts,
        Color32::WHITE,
        egui::Stroke::new(1.0, Color32::BLACK),
    ));
}

fn format_ping(rtt: Duration) -> String {
    let ms = rtt.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("ping {ms:.1} ms")
    } else {
        format!("ping {ms:.0} ms")
    }
}

fn format_rate(bps: f64) -> String {
    if bps >= 1_000_000.0 {
        format!("{:.1} MB/s", bps / 1_000_000.0)
    } else if bps >= 1000.0 {
        format!("{:.0} kB/s", bps / 1000.0)
    } else {
        format!("{bps:.0} B/s")
    }
}

fn expert_name(id: Option<&Identity>) -> String {
    id.map(|i| i.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "expert".into())
}

fn offer_options(device: &str, identity_arg: &str) -> Result<ConnectOptions, ClientError> {
    let device = device.trim();
    if device.is_empty() {
        return Err(ClientError::Local(
            "Type the device's address first.".into(),
        ));
    }
    let (host, port) = split_host_port(device)?;
    if identity_arg.trim().is_empty() {
        return Err(ClientError::Local(
            "Offers need your expert identity — pick one, or create it with `shoulder pki issue-expert`.".into(),
        ));
    }
    let id = Arc::new(Identity::load(&identity::resolve_identity(
        identity_arg.trim(),
    )?)?);
    Ok(ConnectOptions {
        target: Target::Offer { host, port },
        password: None,
        name: expert_name(Some(&id)),
        identity: Some(id),
        accept_new: AcceptNew::Ask,
        known_hosts: None,
    })
}

fn invitation_options(inv: Invitation) -> ConnectOptions {
    ConnectOptions {
        target: Target::Invitation(Box::new(inv)),
        password: None,
        identity: None,
        accept_new: AcceptNew::Ask,
        known_hosts: None,
        name: expert_name(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view_input<'a>(
        held: &'a mut HeldInput,
        wheel: &'a mut Vec2,
        last: &'a mut Option<(u16, u16)>,
    ) -> ViewInput<'a> {
        ViewInput {
            rect: Rect::from_min_size(Pos2::new(100.0, 50.0), Vec2::new(400.0, 240.0)),
            size: (800, 480),
            held,
            touch: false,
            keyboard: true,
            wheel,
            last_pos: last,
        }
    }

    #[test]
    fn pointer_maps_to_device_pixels() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, None);
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let mut out = Vec::new();
        vi.translate(
            &[
                Event::PointerMoved(Pos2::new(300.0, 170.0)),
                Event::PointerButton {
                    pos: Pos2::new(300.0, 170.0),
                    button: PointerButton::Primary,
                    pressed: true,
                    modifiers: egui::Modifiers::NONE,
                },
                // Outside the view: ignored unless a button is held.
                Event::PointerMoved(Pos2::new(10.0, 10.0)),
            ],
            &mut out,
        );
        let UserAction::Pointer(p) = out[0] else {
            panic!("{out:?}")
        };
        assert_eq!((p.x, p.y, p.buttons.0), (400, 240, 0));
        let UserAction::Pointer(p) = out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(p.buttons.0, Buttons::LEFT);
        let UserAction::Pointer(p) = out[2] else {
            panic!("{out:?}")
        };
        assert_eq!((p.x, p.y), (0, 0), "clamped to the screen while dragging");
    }

    #[test]
    fn keys_use_the_physical_key_and_skip_repeats() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, None);
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let key = |key, physical, pressed| Event::Key {
            key,
            physical_key: physical,
            pressed,
            repeat: false,
            modifiers: egui::Modifiers::NONE,
        };
        let mut out = Vec::new();
        // AZERTY: the logical A sits on the physical Q key.
        vi.translate(
            &[
                key(Key::A, Some(Key::Q), true),
                key(Key::A, Some(Key::Q), true),
                key(Key::A, Some(Key::Q), false),
                Event::Copy,
            ],
            &mut out,
        );
        let codes: Vec<(u16, bool)> = out
            .iter()
            .map(|a| match a {
                UserAction::Key(k) => (k.code, k.down),
                _ => panic!("{a:?}"),
            })
            .collect();
        assert_eq!(codes, [(16, true), (16, false), (46, true)]);
    }

    #[test]
    fn wheel_accumulates_smooth_scrolling_into_clicks() {
        let (mut h, mut w, mut l) = (HeldInput::new(), Vec2::ZERO, Some((5, 5)));
        let mut vi = view_input(&mut h, &mut w, &mut l);
        let mut out = Vec::new();
        let wheel = |y| Event::MouseWheel {
            unit: egui::MouseWheelUnit::Point,
            delta: Vec2::new(0.0, y),
            phase: egui::TouchPhase::Move,
            source: egui::MouseWheelSource::Unknown,
            modifiers: egui::Modifiers::NONE,
        };
        vi.translate(&[wheel(25.0), wheel(25.0)], &mut out);
        assert_eq!(out.len(), 1);
        let UserAction::Pointer(p) = out[0] else {
            panic!()
        };
        assert_eq!(p.wheel, 1);
    }

    #[test]
    fn recent_entries_round_trip() {
        let r = Recent::Offer {
            device: "kiosk:7575".into(),
            identity: "ann".into(),
        };
        assert_eq!(Recent::parse(&r.line()), Some(r));
        assert_eq!(Recent::parse("junk"), None);
    }
}
