//! The person at the device: the consent banner (`shoulder-banner`) and the
//! local input devices (`shoulder-input`), in one task.
//!
//! - Session outputs (prompt, phase, chat) update a [`BannerState`]; the task
//!   renders its view and shows it through a scanout presenter, again at
//!   every countdown second, and takes it down when there is nothing to show.
//! - While a prompt is open the local devices are grabbed (if configured and
//!   a banner is on screen), and taps and Enter/Esc answer it: each answer
//!   names the prompt on screen, is taken only from [`PROMPT_ARMING`] after
//!   the prompt appeared (the buttons are greyed out until then), and needs
//!   a press and a release on the same button while that prompt is up, so
//!   an Enter from a barcode scanner or a tap timed to the prompt's
//!   appearance answers nothing.
//! - The stop/end hotkeys become decisions; any local activity holds expert
//!   input back for `local_idle`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::Point;
use shoulder_banner::present::{
    BannerPresenter, DrmScanoutPresenter, FbdevPresenter, PresentError, ScanoutThread,
};
use shoulder_banner::{
    BannerState, KeyBindings, Layout, Renderer, ScreenSpec, Style, answer_key, answer_tap,
};
use shoulder_capture::SourceSpec;
use shoulder_input::local::{LocalEventKind, LocalInput, LocalInputConfig, PointerButton};
use shoulder_input::{HotkeyDetector, Hotkeys, ScreenSize};
use shoulder_proto::session::{LocalDecision, Phase, Prompt, PromptId};
use tokio::sync::mpsc;

use crate::backends::{ACTIVITY_EVERY, LocalEvent, Presenter};
use crate::config::{Config, InputConfig, PresenterKind, RotationSetting};
use shoulder_proto::rotation::Rotation;

/// Session outputs queued for the banner (a handful per session step).
const UI_QUEUE: usize = 64;
/// Local events queued for the agent (decisions and activity changes are
/// rare; the reader drops and counts raw events beyond its own queue).
const LOCAL_EVENTS: usize = 64;
/// Screen size assumed until the display tells (positions of taps only).
const FALLBACK_SCREEN: (u16, u16) = (1920, 1080);
/// A prompt takes no answer for this long after it appears: long enough
/// that input already on its way (a scanner's Enter, a tap aimed at where
/// the prompt was expected) lands before it counts, short enough not to
/// make the person wait.
pub const PROMPT_ARMING: Duration = Duration::from_secs(1);

/// The prompt on screen, as far as answering it goes.
#[derive(Debug, Clone, Copy)]
struct Answering {
    id: PromptId,
    armed_at: Instant,
    /// The press that an answer's release must match.
    pressed: Option<Press>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Press {
    Key(u16, LocalDecision),
    Tap(LocalDecision),
}

enum UiCommand {
    Prompt(Prompt),
    HidePrompt,
    Phase(Phase),
    Chat(String),
    Rotate(Rotation),
    Help(Option<(Instant, String)>),
    File(Option<shoulder_proto::session::FileAsk>),
}

/// The session side: forwards to the UI task without blocking.
#[derive(Debug)]
pub struct UiPresenter {
    tx: mpsc::Sender<UiCommand>,
}

impl std::fmt::Debug for UiCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UiCommand::Prompt(_) => "Prompt",
            UiCommand::HidePrompt => "HidePrompt",
            UiCommand::Phase(_) => "Phase",
            UiCommand::Chat(_) => "Chat",
            UiCommand::Rotate(_) => "Rotate",
            UiCommand::Help(_) => "Help",
            UiCommand::File(_) => "File",
        })
    }
}

impl UiPresenter {
    fn send(&self, c: UiCommand) {
        if let Err(e) = self.tx.try_send(c) {
            tracing::warn!(error = %e, "banner update dropped");
        }
    }
}

impl Presenter for UiPresenter {
    fn show_prompt(&mut self, prompt: &Prompt) {
        self.send(UiCommand::Prompt(prompt.clone()));
    }
    fn hide_prompt(&mut self) {
        self.send(UiCommand::HidePrompt);
    }
    fn phase(&mut self, phase: &Phase) {
        self.send(UiCommand::Phase(phase.clone()));
    }
    fn chat(&mut self, from_expert: bool, text: &str) {
        if from_expert {
            self.send(UiCommand::Chat(text.to_string()));
        }
    }
    fn rotation(&mut self, rotation: Rotation) {
        self.send(UiCommand::Rotate(rotation));
    }
    fn help(&mut self, asked: Option<(Instant, String)>) {
        self.send(UiCommand::Help(asked));
    }
    fn file(&mut self, file: Option<&shoulder_proto::session::FileAsk>) {
        self.send(UiCommand::File(file.cloned()));
    }
}

/// The banner on screen: presenter and renderer for the current screen.
struct Screen {
    presenter: ScanoutThread,
    /// Lays the banner out for the screen as the person sees it (upright).
    renderer: Renderer,
    /// The device records its sessions (the banner says so).
    recorded: bool,
    /// How the framebuffer is turned for the person, and its size.
    rotation: Rotation,
    buffer: (u32, u32),
    layout: Option<Layout>,
    /// The moment the banner on screen shows (the view was taken then).
    /// The next redraw is due at the first change after it, not after the
    /// end of drawing: on a slow device a change (a prompt arming, a notice
    /// running out) can fall inside the drawing itself.
    drawn_at: Option<Instant>,
    /// The presenter's last error, logged once: a display that went away
    /// fails a few times a second until it is back.
    failing: Option<String>,
}

impl Screen {
    /// `spec`: the framebuffer's size and format.
    fn new(
        presenter: ScanoutThread,
        spec: ScreenSpec,
        rotation: Rotation,
        recorded: bool,
    ) -> Option<Self> {
        match upright_renderer(spec, rotation, recorded) {
            Ok(renderer) => Some(Screen {
                presenter,
                renderer,
                rotation,
                recorded,
                buffer: (spec.width, spec.height),
                layout: None,
                drawn_at: None,
                failing: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "no on-screen banner");
                None
            }
        }
    }
}

/// A renderer for the screen the person sees: the framebuffer `spec` turned
/// upright.
fn upright_renderer(
    spec: ScreenSpec,
    rotation: Rotation,
    recorded: bool,
) -> Result<Renderer, shoulder_banner::RenderError> {
    let (width, height) = rotation.upright_size(spec.width, spec.height);
    Renderer::new(
        ScreenSpec {
            width,
            height,
            ..spec
        },
        style(recorded),
    )
}

/// The banner's style: "This session is recorded" on recording devices.
/// (Without the `record` feature the flag is always false, and building
/// the style as before keeps 2 KB out of the device binary.)
fn style(recorded: bool) -> Style {
    #[cfg(feature = "record")]
    return Style {
        recorded,
        ..Style::default()
    };
    #[cfg(not(feature = "record"))]
    {
        let _ = recorded;
        Style::default()
    }
}

/// Starts the banner and local input as configured. Returns the presenter
/// for the session and the decisions/activity for the agent. Must be called
/// inside a tokio runtime.
pub fn start(config: &Config) -> (Box<dyn Presenter>, Option<mpsc::Receiver<LocalEvent>>) {
    let retry = has_banner_display(config);
    let lit = lit_outputs(&config.capture);
    let screens = match open_banner(config, &lit) {
        Ok(s) => s,
        Err(e) if retry => {
            tracing::warn!(
                error = %e,
                "no on-screen banner for now; the display is looked for again at the next session"
            );
            Vec::new()
        }
        Err(e) => {
            tracing::info!(error = %e, "no on-screen banner; prompts go to the control socket");
            Vec::new()
        }
    };
    // Taps answer on the first screen (see `UiTask::layout`).
    let (w, h) = screens
        .first()
        .map(|(_, spec)| {
            (
                u16::try_from(spec.width).unwrap_or(u16::MAX),
                u16::try_from(spec.height).unwrap_or(u16::MAX),
            )
        })
        .unwrap_or(FALLBACK_SCREEN);
    let local = open_local_input(config, w, h).map(|l| Box::new(l) as Box<dyn LocalDevices>);
    // A display that was not there at start-up (its driver still loading,
    // the agent started before the kiosk app lit it) is looked for again
    // when a session needs the banner, and so is a screen lit or gone out
    // since (a second monitor, an app that lights its outputs late).
    let later = retry.then(|| {
        let config = config.clone();
        // What the screens were opened from: the same list, so a screen lit
        // while they opened is not taken as seen.
        let mut shown = (!screens.is_empty()).then_some(lit);
        Box::new(move || {
            let now = lit_outputs(&config.capture);
            if shown.as_ref() == Some(&now) {
                return Ok(Vec::new());
            }
            let opened = open_banner(&config, &now)?;
            shown = Some(now);
            Ok(opened)
        }) as ScreenOpener
    });
    // "auto": the service asks the display and turns the banner before the
    // first prompt (`Presenter::rotation`).
    let rotation = match config.rotation {
        RotationSetting::Fixed(r) => r,
        RotationSetting::Auto => Rotation::Deg0,
    };
    let (presenter, events) = start_with(
        screens,
        later,
        local,
        &config.input,
        rotation,
        config.records(),
    );
    (presenter, Some(events))
}

/// The DRM outputs lit now (card and connector), to tell when screens came
/// or went; empty for other sources.
fn lit_outputs(capture: &SourceSpec) -> Vec<shoulder_capture::drm::Output> {
    match capture {
        SourceSpec::Drm { device, .. } => {
            shoulder_capture::drm::outputs(device.as_deref()).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Opens the banner's displays: a presenter thread and the size of each
/// screen a person could be looking at (none: the screens did not change
/// since the last call).
pub type ScreenOpener = Box<dyn FnMut() -> Result<Vec<(ScanoutThread, ScreenSpec)>, String> + Send>;

/// Starts the UI task on given banner threads (one per screen, each with
/// its screen's size) and local devices; [`start`] opens them from the
/// config, tests pass fakes. The banner shows on every screen; taps answer
/// on the first. `open_later` is tried whenever a session needs the banner
/// while there are no `screens` (from the first prompt on), and at each
/// view prompt, so screens lit since are found. `rotation`:
/// how the framebuffer is turned for the person (the banner is drawn
/// upright for them, taps are mapped back). `recorded`: the device records
/// its sessions, and every prompt and the strip say so.
pub fn start_with(
    screens: Vec<(ScanoutThread, ScreenSpec)>,
    open_later: Option<ScreenOpener>,
    local: Option<Box<dyn LocalDevices>>,
    input: &InputConfig,
    rotation: Rotation,
    recorded: bool,
) -> (Box<dyn Presenter>, mpsc::Receiver<LocalEvent>) {
    let screens = screens
        .into_iter()
        .filter_map(|(presenter, spec)| Screen::new(presenter, spec, rotation, recorded))
        .collect();
    let hotkeys = Hotkeys::parse(&input.stop_hotkey, &input.end_hotkey).unwrap_or_default();
    let (ui_tx, ui_rx) = mpsc::channel(UI_QUEUE);
    let (tx, rx) = mpsc::channel(LOCAL_EVENTS);
    let task = UiTask {
        screens,
        open_later,
        open_error: None,
        state: BannerState::new(&input.stop_hotkey),
        local,
        grab_during_prompt: input.grab_during_prompt,
        grab: None,
        rotation,
        recorded,
        hot: HotkeyDetector::new(hotkeys),
        activity_sent: None,
        keys: KeyBindings::default(),
        tx,
        prompt_open: false,
        answering: None,
    };
    tokio::spawn(task.run(ui_rx));
    (Box::new(UiPresenter { tx: ui_tx }), rx)
}

/// The local input devices as the UI task uses them.
pub trait LocalDevices: Send {
    /// The next event; None when the reader stopped.
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<LocalEventKind>> + Send + '_>>;
    /// Grabs the devices until the returned guard is dropped.
    fn grab(&self) -> Box<dyn Send>;
    /// The screen's size now, for the positions of taps and clicks (after a
    /// mode change, or once the display is found).
    fn set_screen(&self, _width: u32, _height: u32) {}
}

impl LocalDevices for LocalInput {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<LocalEventKind>> + Send + '_>> {
        Box::pin(async move { LocalInput::next(self).await.map(|e| e.kind) })
    }
    fn grab(&self) -> Box<dyn Send> {
        Box::new(LocalInput::grab(self))
    }
    fn set_screen(&self, width: u32, height: u32) {
        let size = ScreenSize::new(
            u16::try_from(width).unwrap_or(u16::MAX),
            u16::try_from(height).unwrap_or(u16::MAX),
        );
        if let Some(size) = size {
            LocalInput::set_screen(self, size);
        }
    }
}

/// Whether the configuration puts the banner on a display at all (a raw
/// file or the synthetic screen has none; `presenter = "none"` wants none).
fn has_banner_display(config: &Config) -> bool {
    config.banner.presenter != PresenterKind::None
        && matches!(
            config.capture,
            SourceSpec::Drm { .. } | SourceSpec::Fbdev { .. }
        )
}

/// The banner's presenters: on each of `lit` (the DRM outputs lit now)
/// when there are several and the config names no connector, else on the
/// configured screen.
fn open_banner(
    config: &Config,
    lit: &[shoulder_capture::drm::Output],
) -> Result<Vec<(ScanoutThread, ScreenSpec)>, String> {
    if config.banner.presenter == PresenterKind::None {
        return Err("banner presenter \"none\" is configured".into());
    }
    if let SourceSpec::Drm {
        connector: None, ..
    } = &config.capture
        && lit.len() > 1
    {
        let outputs = lit;
        let mut opened = Vec::new();
        for o in outputs.iter().take(shoulder_proto::MAX_SCREENS) {
            let spec = SourceSpec::Drm {
                device: Some(o.card.clone()),
                connector: Some(o.connector.clone()),
            };
            match open_one(&spec) {
                Ok(s) => opened.push(s),
                Err(e) => {
                    tracing::warn!(screen = %o.connector, error = %e, "no banner on this screen")
                }
            }
        }
        if !opened.is_empty() {
            tracing::info!(screens = opened.len(), "the banner shows on every screen");
            return Ok(opened);
        }
    }
    open_one(&config.capture).map(|s| vec![s])
}

/// The banner's presenter for one screen.
fn open_one(capture: &SourceSpec) -> Result<(ScanoutThread, ScreenSpec), String> {
    let opened: Result<ScanoutThread, String> = match capture {
        SourceSpec::Fbdev { device } => FbdevPresenter::open(device)
            .map_err(|e| e.to_string())
            .and_then(|p| ScanoutThread::spawn(p).map_err(|e| e.to_string())),
        SourceSpec::Drm { device, connector } => {
            DrmScanoutPresenter::open_drm(device.as_deref(), connector.as_deref())
                .map_err(|e| e.to_string())
                .and_then(|p| ScanoutThread::spawn(p).map_err(|e| e.to_string()))
        }
        spec => Err(format!(
            "capture {spec} has no screen to draw the banner on; prompts go to the control socket"
        )),
    };
    let presenter = opened?;
    let spec = screen_spec(capture).map_err(|e| format!("the screen size is unknown: {e}"))?;
    Ok((presenter, spec))
}

/// The screen's size and format, read once from the capture source.
fn screen_spec(spec: &SourceSpec) -> Result<ScreenSpec, String> {
    let mut source = shoulder_capture::open(spec).map_err(|e| e.to_string())?;
    let g = source.geometry().map_err(|e| e.to_string())?;
    Ok(ScreenSpec {
        width: g.width,
        height: g.height,
        format: g.format,
    })
}

fn open_local_input(config: &Config, w: u16, h: u16) -> Option<LocalInput> {
    if config.input.local_input.as_os_str().is_empty() {
        return None;
    }
    let mut cfg = LocalInputConfig::new(ScreenSize::new(w, h)?);
    cfg.dir = config.input.local_input.clone();
    match LocalInput::start(cfg) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "local input is not watched (no hotkeys, no taps, no hold-back)");
            None
        }
    }
}

struct UiTask {
    /// Every screen with a banner; taps are read on the first.
    screens: Vec<Screen>,
    /// Finds the display when there was none at start-up.
    open_later: Option<ScreenOpener>,
    /// Why the last try of `open_later` failed (logged once per reason).
    open_error: Option<String>,
    state: BannerState,
    local: Option<Box<dyn LocalDevices>>,
    grab_during_prompt: bool,
    grab: Option<Box<dyn Send>>,
    rotation: Rotation,
    /// Prompts and the strip say "This session is recorded".
    recorded: bool,
    hot: HotkeyDetector,
    /// When local activity was last passed on (see [`ACTIVITY_EVERY`]).
    activity_sent: Option<Instant>,
    keys: KeyBindings,
    tx: mpsc::Sender<LocalEvent>,
    prompt_open: bool,
    answering: Option<Answering>,
}

impl UiTask {
    async fn run(mut self, mut commands: mpsc::Receiver<UiCommand>) {
        loop {
            let now = Instant::now();
            let redraw = self
                .screens
                .first()
                .and_then(|s| self.state.next_change(s.drawn_at.unwrap_or(now)));
            let timer = redraw;
            tokio::select! {
                c = commands.recv() => {
                    let Some(c) = c else { return };
                    self.command(c);
                    self.render();
                }
                ev = next_local(&mut self.local) => {
                    match ev {
                        Some(kind) => self.local_event(kind).await,
                        None => self.local = None,
                    }
                }
                _ = sleep_until(timer) => self.render(),
            }
        }
    }

    fn command(&mut self, c: UiCommand) {
        let now = Instant::now();
        match c {
            UiCommand::Prompt(p) => {
                if p.kind == shoulder_proto::ConsentKind::View && !self.screens.is_empty() {
                    // A new session: on the screens lit now (with none,
                    // they are looked for below).
                    self.open_screen();
                }
                let armed_at = now + PROMPT_ARMING;
                self.answering = Some(Answering {
                    id: p.id,
                    armed_at,
                    pressed: None,
                });
                self.state.show_prompt_arming(p, armed_at);
                self.prompt_open = true;
            }
            UiCommand::HidePrompt => {
                self.state.hide_prompt();
                self.prompt_open = false;
                self.answering = None;
            }
            UiCommand::Phase(p) => {
                if matches!(p, Phase::Closed { .. }) {
                    self.prompt_open = false;
                    self.answering = None;
                }
                self.state.set_phase(p, now);
            }
            UiCommand::Chat(t) => self.state.chat(t, now),
            UiCommand::Help(h) => self.state.set_help(h),
            UiCommand::File(f) => self.state.set_file(f),
            UiCommand::Rotate(r) if r == self.rotation => {}
            UiCommand::Rotate(r) => {
                self.rotation = r;
                for s in &mut self.screens {
                    let spec = ScreenSpec {
                        width: s.buffer.0,
                        height: s.buffer.1,
                        format: s.renderer.screen().format,
                    };
                    match upright_renderer(spec, r, self.recorded) {
                        Ok(renderer) => {
                            s.renderer = renderer;
                            s.rotation = r;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot lay the banner out for the turned panel")
                        }
                    }
                }
            }
        }
        if self.screens.is_empty() && !self.state.view(now).is_empty() {
            self.open_screen();
        }
        // Grab only when the person can see what they are answering.
        let want_grab = self.prompt_open && self.grab_during_prompt && !self.screens.is_empty();
        match (&self.local, want_grab, self.grab.is_some()) {
            (Some(l), true, false) => self.grab = Some(l.grab()),
            (_, false, true) => self.grab = None,
            _ => {}
        }
    }

    /// Looks for the displays a session needs the banner on (again when
    /// they changed); once found, taps are placed for the first one's size.
    fn open_screen(&mut self) {
        let Some(open) = self.open_later.as_mut() else {
            return;
        };
        match open() {
            Ok(found) if !found.is_empty() => {
                let (_, spec) = &found[0];
                tracing::info!(
                    width = spec.width,
                    height = spec.height,
                    screens = found.len(),
                    "found the display; the banner is on screen"
                );
                if let Some(l) = &self.local {
                    l.set_screen(spec.width, spec.height);
                }
                self.screens = found
                    .into_iter()
                    .filter_map(|(presenter, spec)| {
                        Screen::new(presenter, spec, self.rotation, self.recorded)
                    })
                    .collect();
            }
            Ok(_) => {}
            Err(e) => {
                if self.open_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, "no on-screen banner for this session; prompts go to the control socket");
                    self.open_error = Some(e);
                }
            }
        }
    }

    fn render(&mut self) {
        let drawn_at = Instant::now();
        let view = self.state.view(drawn_at);
        for (i, screen) in self.screens.iter_mut().enumerate() {
            // Taps are read on the first screen: it sets their range.
            let local = if i == 0 { self.local.as_deref() } else { None };
            render_on(screen, &view, drawn_at, local);
        }
    }
    async fn local_event(&mut self, kind: LocalEventKind) {
        let now = Instant::now();
        let mut decision = None;
        match &kind {
            LocalEventKind::Key { code, down } => {
                // Hotkeys take back (stop control, end): no prompt needed.
                decision = self.hot.key(*code, *down).and_then(|d| d.on(None));
                if decision.is_none() && self.prompt_open {
                    let answer = self.layout().and_then(|l| answer_key(l, *code, &self.keys));
                    decision =
                        self.press_or_release(answer.map(|d| Press::Key(*code, d)), *down, now);
                }
            }
            LocalEventKind::Button {
                button: PointerButton::Left,
                down,
                x,
                y,
            } if self.prompt_open => {
                let p = Point::new(i32::from(*x), i32::from(*y));
                let answer = self.layout().and_then(|l| answer_tap(l, p));
                decision = self.press_or_release(answer.map(Press::Tap), *down, now);
            }
            _ => {}
        }
        if let Some(d) = decision {
            let _ = self.tx.send(LocalEvent::Decision(d)).await;
        } else if kind.is_activity()
            && !self.prompt_open
            && self
                .activity_sent
                .is_none_or(|t| now.duration_since(t) >= ACTIVITY_EVERY)
        {
            // Answering a prompt is not using the device. The session holds
            // the expert's input back (shoulder_input::InputControl); a full
            // queue drops this one, the next follows soon.
            self.activity_sent = Some(now);
            let _ = self.tx.try_send(LocalEvent::Activity);
        }
    }

    /// A press on an answer (`press`: which key or button, None when it
    /// missed) remembers it once the prompt is armed; the release of the
    /// same key, or over the same button, answers the prompt on screen.
    fn press_or_release(
        &mut self,
        press: Option<Press>,
        down: bool,
        now: Instant,
    ) -> Option<shoulder_proto::session::LocalCommand> {
        let a = self.answering.as_mut()?;
        if down {
            a.pressed = press.filter(|_| now >= a.armed_at);
            return None;
        }
        let pressed = a.pressed.take()?;
        if Some(pressed) != press {
            // Released elsewhere (slid off the button, another key).
            return None;
        }
        let decision = match pressed {
            Press::Key(_, d) | Press::Tap(d) => d,
        };
        decision.on(Some(a.id))
    }

    /// The prompt as laid out on the first screen: local taps are read
    /// there (a touchscreen belongs to one screen; keys answer on any).
    fn layout(&self) -> Option<&Layout> {
        self.screens.first().and_then(|s| s.layout.as_ref())
    }
}

/// Draws (or takes down) the banner `view` on one screen, following a
/// mode change it reports; `local`: the devices whose taps it answers.
fn render_on(
    screen: &mut Screen,
    view: &shoulder_banner::View,
    drawn_at: Instant,
    local: Option<&dyn LocalDevices>,
) {
    let mut failing = false;
    for e in screen.presenter.take_errors() {
        if let PresentError::ScreenChanged { width, height } = e {
            let spec = ScreenSpec {
                width,
                height,
                format: screen.renderer.screen().format,
            };
            if let Some(l) = local {
                l.set_screen(width, height);
            }
            screen.buffer = (width, height);
            match upright_renderer(spec, screen.rotation, screen.recorded) {
                Ok(r) => screen.renderer = r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lay the banner out for the new screen")
                }
            }
        } else {
            let text = e.to_string();
            if screen.failing.as_deref() != Some(text.as_str()) {
                tracing::warn!(error = %text, "cannot draw the banner; retrying");
                screen.failing = Some(text);
            }
            failing = true;
        }
    }
    if !failing {
        screen.failing = None;
    }
    screen.drawn_at = Some(drawn_at);
    let result = if view.is_empty() {
        screen.layout = None;
        screen.presenter.hide()
    } else {
        match screen.renderer.render(view) {
            Ok(banner) => {
                // Drawn upright for the person, into the framebuffer as
                // it is turned; taps arrive in its coordinates too.
                let (uw, uh) = screen
                    .rotation
                    .upright_size(screen.buffer.0, screen.buffer.1);
                let banner = banner.turned_back(screen.rotation, uw, uh);
                screen.layout = Some(banner.layout.clone());
                screen.presenter.show(Arc::new(banner))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot render the banner");
                return;
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot show the banner");
    }
}

async fn next_local(local: &mut Option<Box<dyn LocalDevices>>) -> Option<LocalEventKind> {
    match local {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}
