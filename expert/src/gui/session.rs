//! A session: the events from the client driver, the session screen
//! (status, control, chat, screenshots) and the texture the view shows.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use eframe::egui::{self, Color32, ColorImage, Event, Key, RichText, TextureOptions, Vec2};
use shoulder_proto::msg::TypeOutcome;
use shoulder_proto::session::expert::type_text_parts;
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use tokio::sync::mpsc;

use crate::client::{
    self, ACTION_QUEUE, ClientEvent, ConnectOptions, SessionHandle, SharedView, Stats,
};
use crate::error::ClientError;
use crate::input::HeldInput;
use crate::keymap::SpecialKeys;
use crate::printable::printable;
use crate::target::{Target, host_port};
use crate::trust::AcceptNew;

use super::events::{UI_EVENT_QUEUE, ui_events};
use super::view::{format_ping, format_rate, phase_name, self_view};
use super::{
    App, CONSENT_SLACK, MAX_CHAT_HISTORY, NOTICE_TIME, Phase, Screen, SessionUi, StartForm,
    StartTab, UNKNOWN_DEVICE,
};

impl SessionUi {
    pub(super) fn start(
        ctx: &egui::Context,
        rt: &tokio::runtime::Runtime,
        opts: ConnectOptions,
    ) -> Self {
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
            recorded: false,
            screens: None,
            texture: None,
            fit: true,
            fullscreen: false,
            chat_open: false,
            chat: Vec::new(),
            chat_input: String::new(),
            unread: 0,
            type_open: false,
            type_input: String::new(),
            typing: None,
            type_ids: 0,
            files: super::files::FilesPanel::default(),
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

    pub(super) fn controlling(&self) -> bool {
        matches!(
            self.phase,
            Phase::Viewing(ControlState::Granted {
                local_user_active: false
            })
        )
    }

    pub(super) fn send(&self, a: UserAction) {
        self.handle.send(a);
    }

    pub(super) fn release_all(&mut self) {
        for a in self.held.release_all() {
            self.handle.send(a);
        }
        self.wheel = Vec2::ZERO;
    }

    fn notice(&mut self, s: String) {
        self.notice = Some((s, Instant::now()));
    }

    /// Starts typing what the "Type text" panel holds. The text stays in
    /// the panel until all of it was typed.
    fn start_typing(&mut self) {
        if self.typing.is_some() || self.type_input.is_empty() {
            return;
        }
        let mut rest: VecDeque<_> = type_text_parts(&self.type_input).into();
        let Some(first) = rest.pop_front() else {
            return;
        };
        self.type_ids += 1;
        let id = self.type_ids;
        self.send(UserAction::TypeText { id, text: first });
        self.typing = Some(Typing {
            id,
            rest,
            total: self.type_input.chars().filter(|&c| c != '\r').count(),
            typed: 0,
        });
    }

    /// Stops the typing under way (the device answers how far it got).
    fn stop_typing(&mut self) {
        if self.typing.is_some() {
            self.type_ids += 1;
            self.send(UserAction::TypeText {
                id: self.type_ids,
                text: Box::default(),
            });
        }
    }

    fn typed(&mut self, id: u32, n: u16, outcome: TypeOutcome) {
        let Some(t) = self.typing.as_mut().filter(|t| t.id == id) else {
            return;
        };
        t.typed += usize::from(n);
        if outcome == TypeOutcome::Done {
            if let Some(next) = t.rest.pop_front() {
                self.type_ids += 1;
                t.id = self.type_ids;
                let id = t.id;
                self.send(UserAction::TypeText { id, text: next });
                return;
            }
            let total = t.total;
            self.typing = None;
            self.type_input.clear();
            self.notice(format!("Typed {total} characters on the device."));
            return;
        }
        let (typed, total) = (t.typed, t.total);
        self.typing = None;
        let mut say = outcome.sentence(n);
        if typed > usize::from(n) {
            say = format!("{say} ({typed} of {total} characters were typed.)");
        }
        self.notice(say);
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
                ClientEvent::Recorded => self.recorded = true,
                ClientEvent::Screen(_) => self.screen_unavailable = None,
                ClientEvent::Screens(list) => self.screens = Some(*list),
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
                    self.files.connection_lost();
                    self.phase = Phase::Reconnecting {
                        until,
                        attempt,
                        last_error,
                    };
                }
                ClientEvent::Resuming => {}
                ClientEvent::Typed { id, typed, outcome } => self.typed(id, typed, outcome),
                ClientEvent::File(m) => {
                    let handle = &self.handle;
                    self.files.on(&m, &|a| handle.send(a));
                }
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
                    self.files.connection_lost();
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

impl App {
    pub(super) fn session_ui(&mut self, ui: &mut egui::Ui) {
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
                let r = ui
                    .selectable_label(s.type_open, "Type text…")
                    .on_hover_text("Have the device type a text for the person at it");
                tracer.rect("button-type-text", r.rect, ppp);
                if r.clicked() {
                    s.type_open = !s.type_open;
                }
                let label = if s.files.busy() {
                    "Files (1)"
                } else {
                    "Files…"
                };
                let r = ui
                    .selectable_label(s.files.open, label)
                    .on_hover_text("Copy a file from the device or send one to it (drop it here)");
                tracer.rect("button-files", r.rect, ppp);
                if r.clicked() {
                    s.files.open = !s.files.open;
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
                if let Some(pick) = screen_picker(ui, s.screens.as_ref(), viewing) {
                    // Nothing stays pressed on the screen left behind.
                    s.release_all();
                    s.send(UserAction::SelectScreen(pick));
                }
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
                if s.recorded {
                    ui.label(RichText::new("● recorded").color(Color32::from_rgb(200, 60, 60)))
                        .on_hover_text("The device records this session (and tells the person at it): what you see and do is kept on the device, signed with its key.");
                    tracer.note("recorded", "yes".into());
                }
                let (stats, approx, offer): (Stats, u64, bool) = {
                    let v = s.handle.view.lock();
                    let approx = v.fb.as_ref().map_or(0, |f| f.approximate_pixels());
                    (v.stats, approx, v.exact_offer)
                };
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
                    if approx > 0 {
                        ui.separator();
                        let r = ui
                            .colored_label(egui::Color32::from_rgb(0xd0, 0x90, 0x00), "approximate")
                            .on_hover_text(
                                "Parts of the picture (photographs, video) came as lossy pictures on a slow link; \
                                 the device sends them exact once they stop changing",
                            );
                        tracer.rect("label-approximate", r.rect, ppp);
                        if offer {
                            let r = ui.small_button("Exact now").on_hover_text(
                                "Exact pictures only, for the rest of the session (more to send on a slow link)",
                            );
                            tracer.rect("button-exact-now", r.rect, ppp);
                            if r.clicked() {
                                s.send(UserAction::ExactOnly);
                            }
                        }
                    }
                }
                if let Some(fp) = s.fingerprint {
                    ui.separator();
                    ui.label(RichText::new(format!("{}…", &fp.to_string()[..30])).weak())
                        .on_hover_text(fp.to_string());
                }
            });
        });

        // A file dropped on the window goes to the device (asked there).
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        if let Some(p) = dropped.first()
            && viewing
        {
            s.files.open = true;
            let handle = &s.handle;
            s.files.put(p, &|a| handle.send(a));
        }
        if s.files.open {
            egui::Panel::right("files")
                .default_size(320.0)
                .show(ui, |ui| {
                    let handle = &s.handle;
                    s.files.ui(ui, viewing, &|a| handle.send(a), tracer, ppp);
                });
        }

        if s.type_open {
            egui::Panel::right("type-text")
                .default_size(300.0)
                .show(ui, |ui| type_panel(ui, s, controlling, tracer, ppp));
        }

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

/// The device's screens to choose from, when it has several: the one
/// picked, if the technician picked another.
fn screen_picker(
    ui: &mut egui::Ui,
    list: Option<&shoulder_proto::ScreenList>,
    enabled: bool,
) -> Option<u8> {
    let list = list.filter(|l| l.screens.len() > 1)?;
    let label = |i: usize| {
        let s = &list.screens[i];
        format!(
            "{} {} ({}×{})",
            i + 1,
            printable(&s.name),
            s.width,
            s.height
        )
    };
    let current = usize::from(list.current);
    let mut picked = None;
    ui.add_enabled_ui(enabled, |ui| {
        egui::ComboBox::from_id_salt("screen")
            .selected_text(format!("Screen {}", label(current)))
            .show_ui(ui, |ui| {
                for i in 0..list.screens.len() {
                    if ui.selectable_label(i == current, label(i)).clicked() && i != current {
                        picked = u8::try_from(i).ok();
                    }
                }
            });
    });
    ui.separator();
    picked
}

/// A text being typed on the device, part by part.
#[derive(Debug)]
pub(crate) struct Typing {
    /// The part in flight.
    id: u32,
    rest: VecDeque<Box<shoulder_proto::msg::Text<{ shoulder_proto::msg::MAX_TYPE_TEXT_LEN }>>>,
    total: usize,
    typed: usize,
}

/// The "Type text" panel: a text the device types for the person, with
/// its keyboard layout, while the technician has control.
fn type_panel(
    ui: &mut egui::Ui,
    s: &mut SessionUi,
    controlling: bool,
    tracer: &mut super::Tracer,
    ppp: f32,
) {
    ui.heading("Type text");
    ui.label(
        RichText::new("The device types this with its own keyboard layout, as if on its keyboard.")
            .weak(),
    );
    let busy = s.typing.is_some();
    let r = ui.add_enabled(
        !busy,
        egui::TextEdit::multiline(&mut s.type_input)
            .hint_text("Text to type on the device")
            .desired_rows(6)
            .desired_width(f32::INFINITY),
    );
    tracer.rect("field-type-text", r.rect, ppp);
    ui.horizontal(|ui| {
        if let Some(t) = &s.typing {
            ui.spinner();
            ui.label(format!("Typing {} characters…", t.total));
            if ui.button("Stop").clicked() {
                s.stop_typing();
            }
        } else {
            let r = ui.add_enabled(
                controlling && !s.type_input.is_empty(),
                egui::Button::new("Type on the device"),
            );
            tracer.rect("button-type", r.rect, ppp);
            if r.clicked() {
                s.start_typing();
            }
            if !controlling {
                ui.label(RichText::new("Needs control").weak());
            }
        }
    });
}
