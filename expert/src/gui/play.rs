//! The replay window of `shoulder play`: the device's screen as of any
//! moment of a recorded session, a timeline to play, pause and seek, and
//! what happened beside it.
//!
//! The record is read once in the background: its chain is checked (the
//! signature is not: `shoulder verify` does that with the device
//! certificate), its chunks are indexed, and all of them are applied once
//! to list the session's events and keep keyframes — the replay's state
//! every [`KEY_EVERY_MS`] of session time or every [`KEY_EVERY_SCREENS`]
//! screen chunks, whichever comes first (spaced wider on a long record:
//! at most [`MAX_KEYFRAMES`] are kept, and at most [`KEYFRAME_BUDGET`]
//! bytes of pictures). Seeking restores the nearest keyframe at or before the
//! target (unless the state shown is already between the two) and applies
//! the chunks from there, so it costs at most a keyframe's worth of chunks
//! however long the record.
//!
//! With `SHOULDER_TRACE_VIEW` set, the window says on stderr (as the app's
//! other screens do, see [`Tracer`]): `replay-time` (ms), `replay-state`
//! (`reading`, `paused`, `playing`), `replay-events` (event lines listed),
//! `replay-chain`, `replay-shows` (`screen`, `no-screen`, `not-yet`),
//! `replay-screen` (the picture's rectangle) and where its controls are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eframe::egui::{
    self, Align2, Color32, ColorImage, FontId, Pos2, Rect, RichText, Sense, TextureHandle,
    TextureOptions, Vec2,
};
use serde_json::Value;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::record::{Chunk, ChunkKind, MAGIC, chunks, verify};

use super::Tracer;
use crate::printable::printable;
use crate::record::{Player, Step, duration, start_info};

/// A keyframe at least every this much session time (while the screen
/// changes)…
const KEY_EVERY_MS: u64 = 2000;
/// …or every this many screen chunks, whichever comes first.
const KEY_EVERY_SCREENS: u32 = 200;
/// Keyframes kept at most: past that, every other one goes and the
/// spacing doubles.
const MAX_KEYFRAMES: usize = 64;
/// The keyframes' pictures together, at most (a large screen keeps fewer
/// than [`MAX_KEYFRAMES`]), unless there are only [`MIN_KEYFRAMES`].
const KEYFRAME_BUDGET: usize = 512 << 20;
const MIN_KEYFRAMES: usize = 8;
/// What the arrow keys step.
const STEP_MS: u64 = 5000;
/// Playback speeds offered.
const SPEEDS: [u32; 4] = [1, 2, 4, 8];
/// Red, as the other screens say what went wrong.
const RED: Color32 = Color32::from_rgb(230, 80, 70);
const AMBER: Color32 = Color32::from_rgb(230, 190, 80);

/// Opens the replay window for `record` (its bytes in `file`).
pub fn run(record: PathBuf, file: Vec<u8>) -> Result<(), String> {
    if !file.starts_with(MAGIC) {
        return Err(format!(
            "{} is not a Shoulder session record (it does not start with the record header).",
            record.display()
        ));
    }
    super::no_display(&format!("`shoulder play {} --png DIR`", record.display()))?;
    let name = record.file_name().map_or_else(
        || record.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let title = format!("Shoulder — replay of {name}");
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(title.clone())
            .with_app_id("shoulder")
            .with_inner_size([1100.0, 760.0])
            .with_min_inner_size([480.0, 320.0]),
        ..Default::default()
    };
    eframe::run_native(
        &title,
        options,
        Box::new(move |_cc| Ok(Box::new(Replay::new(&record, file)))),
    )
    .map_err(super::window_failed)
}

/// One chunk of the record, found again in the file without reading it
/// from the start.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Session time: the chunk's milliseconds, never less than an earlier
    /// chunk's (so the timeline is ordered even if a clock stepped back).
    time: u64,
    seq: u32,
    kind: ChunkKind,
    offset: usize,
    payload_at: usize,
    payload_len: usize,
}

impl Entry {
    fn chunk<'a>(&self, file: &'a [u8]) -> Chunk<'a> {
        Chunk {
            seq: self.seq,
            kind: self.kind,
            millis: self.time,
            payload: &file[self.payload_at..self.payload_at + self.payload_len],
            offset: self.offset,
        }
    }
}

/// An event line: what happened, when.
#[derive(Debug)]
struct Line {
    time: u64,
    /// The chunk that said it.
    chunk: usize,
    text: String,
    /// The expert's input (listed only on request: pointer moves are many).
    input: bool,
}

/// The replay's state once `at` chunks are applied.
#[derive(Debug)]
struct Keyframe {
    at: usize,
    player: Player,
}

fn picture_bytes(p: &Player) -> usize {
    p.framebuffer().map_or(0, |f| f.pixels().len())
}

/// What reading the record found.
#[derive(Debug)]
struct Loaded {
    file: Vec<u8>,
    entries: Vec<Entry>,
    lines: Vec<Line>,
    /// The first keeps the state before any chunk; ordered by `at`.
    keyframes: Vec<Keyframe>,
    /// The chain's problems, as sentences (empty: intact).
    problems: Vec<String>,
    /// Some chunk held a screen.
    has_screen: bool,
    /// Screen data that could not be applied.
    errors: u32,
}

/// Reads the record (in the background): checks the chain while indexing
/// and applying the chunks; `progress` follows the bytes applied.
fn prepare(file: Vec<u8>, progress: &AtomicU64) -> Loaded {
    let (problems, index) = std::thread::scope(|s| {
        let check = s.spawn(|| verify(&file, |_, _, _| Ok(())));
        let index = index(&file, progress);
        let problems = match check.join() {
            Ok(Ok(_)) => Vec::new(),
            Ok(Err(p)) => p.iter().map(ToString::to_string).collect(),
            Err(_) => vec!["the chain could not be checked".to_string()],
        };
        (problems, index)
    });
    let (entries, lines, keyframes, has_screen, errors) = index;
    Loaded {
        file,
        entries,
        lines,
        keyframes,
        problems,
        has_screen,
        errors,
    }
}

type Index = (Vec<Entry>, Vec<Line>, Vec<Keyframe>, bool, u32);

fn index(file: &[u8], progress: &AtomicU64) -> Index {
    // Where each chunk is (a chunk that cannot be read ends the replay
    // there; the chain check names the problem).
    let base = file.as_ptr().addr();
    let mut time = 0u64;
    let entries: Vec<Entry> = chunks(file)
        .map_while(Result::ok)
        .map(|c| {
            time = time.max(c.millis);
            Entry {
                time,
                seq: c.seq,
                kind: c.kind,
                offset: c.offset,
                payload_at: c.payload.as_ptr().addr() - base,
                payload_len: c.payload.len(),
            }
        })
        .collect();
    // Keyframes spaced so that a long record does not make (and thin out)
    // many more than are kept.
    let screens = entries
        .iter()
        .filter(|e| e.kind == ChunkKind::Screen)
        .count();
    let most = MAX_KEYFRAMES as u64;
    let mut every_ms = KEY_EVERY_MS.max(time / most);
    let mut every_screens =
        KEY_EVERY_SCREENS.max(u32::try_from(screens as u64 / most).unwrap_or(u32::MAX));
    let (mut key_time, mut screens_since) = (0u64, 0u32);
    let mut keyframes = vec![Keyframe {
        at: 0,
        player: Player::new(),
    }];
    let mut lines = Vec::new();
    let mut player = Player::new();
    let mut has_screen = false;
    for (i, e) in entries.iter().enumerate() {
        if let Some(Step::Said(text)) = player.apply(&e.chunk(file)) {
            lines.push(Line {
                time: e.time,
                chunk: i,
                text,
                input: e.kind == ChunkKind::Input,
            });
        }
        if e.kind == ChunkKind::Screen {
            screens_since += 1;
            has_screen |= player.framebuffer().is_some();
        }
        if screens_since > 0 && (e.time - key_time >= every_ms || screens_since >= every_screens) {
            keyframes.push(Keyframe {
                at: i + 1,
                player: player.clone(),
            });
            key_time = e.time;
            screens_since = 0;
            let bytes: usize = keyframes.iter().map(|k| picture_bytes(&k.player)).sum();
            if keyframes.len() > MAX_KEYFRAMES
                || (bytes > KEYFRAME_BUDGET && keyframes.len() > MIN_KEYFRAMES)
            {
                // Keep the first (the state before any chunk) and every
                // other one.
                let mut n = 0;
                keyframes.retain(|_| {
                    n += 1;
                    n % 2 == 1
                });
                every_ms = every_ms.saturating_mul(2);
                every_screens = every_screens.saturating_mul(2);
            }
        }
        if i % 64 == 0 {
            progress.store(e.offset as u64, Ordering::Relaxed);
        }
    }
    (entries, lines, keyframes, has_screen, player.errors)
}

/// The record being read, or read.
enum Load {
    Reading {
        rx: mpsc::Receiver<Loaded>,
        progress: Arc<AtomicU64>,
        len: u64,
    },
    Ready(Box<Playback>),
    Failed(String),
}

/// The window.
struct Replay {
    /// The record's path, as given.
    record: String,
    /// From the record's start: device, expert, when, what was recorded.
    header: String,
    /// The record says it holds no screen (`mode: metadata`).
    metadata_only: bool,
    load: Load,
    tracer: Tracer,
}

/// A record read, and where the replay is in it.
struct Playback {
    rec: Loaded,
    /// The state with `next` chunks applied.
    player: Player,
    next: usize,
    /// The playhead (ms of session time); every chunk at or before it is
    /// applied.
    time: u64,
    /// Milliseconds not yet added to `time` while playing.
    carry: f64,
    playing: Option<Instant>,
    speed: u32,
    texture: Option<TextureHandle>,
    /// The picture changed since it was uploaded.
    dirty: bool,
    show_input: bool,
    /// The lines listed (indices into `rec.lines`, in order).
    shown: Vec<usize>,
    /// The listed line last highlighted, to scroll to it when it changes.
    highlighted: Option<usize>,
    scroll_to: Option<usize>,
}

impl Replay {
    fn new(record: &Path, file: Vec<u8>) -> Self {
        let info = start_info(&file);
        let field = |k: &str| {
            info.as_ref()
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(printable)
        };
        let metadata_only = field("mode").as_deref() == Some("metadata");
        let header = if info.is_some() {
            let parts: Vec<String> = [
                ("Device", "device"),
                ("Expert", "expert"),
                ("Started", "started"),
                ("Recorded", "mode"),
            ]
            .iter()
            .map(|(label, key)| format!("{label}: {}", field(key).unwrap_or_else(|| "–".into())))
            .collect();
            parts.join("   ·   ")
        } else {
            "The record's start is missing or unreadable: who and when is not known.".into()
        };
        let len = file.len() as u64;
        let progress = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let p = progress.clone();
        let spawned = std::thread::Builder::new()
            .name("shoulder-replay".into())
            .spawn(move || {
                let _ = tx.send(prepare(file, &p));
            });
        let load = match spawned {
            Ok(_) => Load::Reading { rx, progress, len },
            Err(e) => Load::Failed(format!("Cannot read {}: {e}.", record.display())),
        };
        Self {
            record: record.display().to_string(),
            header,
            metadata_only,
            load,
            tracer: Tracer {
                enabled: std::env::var_os("SHOULDER_TRACE_VIEW").is_some(),
                ..Tracer::default()
            },
        }
    }
}

impl Playback {
    fn new(rec: Loaded) -> Self {
        let mut p = Self {
            rec,
            player: Player::new(),
            next: 0,
            time: 0,
            carry: 0.0,
            playing: None,
            speed: 1,
            texture: None,
            dirty: true,
            show_input: false,
            shown: Vec::new(),
            highlighted: None,
            scroll_to: None,
        };
        p.list();
        p.seek(0);
        p
    }

    /// The session time of the last chunk.
    fn end(&self) -> u64 {
        self.rec.entries.last().map_or(0, |e| e.time)
    }

    fn list(&mut self) {
        self.shown = (0..self.rec.lines.len())
            .filter(|&i| self.show_input || !self.rec.lines[i].input)
            .collect();
        self.highlighted = None;
    }

    /// Shows the record with its first `target` chunks applied.
    fn goto(&mut self, target: usize) {
        let target = target.min(self.rec.entries.len());
        let k = self
            .rec
            .keyframes
            .partition_point(|k| k.at <= target)
            .saturating_sub(1);
        let key = &self.rec.keyframes[k];
        // From the keyframe, unless what is shown is already between it
        // and the target.
        if self.next > target || self.next < key.at {
            self.player = key.player.clone();
            self.next = key.at;
            self.dirty = true;
        }
        while self.next < target {
            let c = self.rec.entries[self.next].chunk(&self.rec.file);
            let cursor = self.player.cursor;
            let step = self.player.apply(&c);
            // A whole update or a new screen; or a part of an update (the
            // target may fall between parts), told from a cursor move by
            // the cursor staying put.
            if matches!(step, Some(Step::Screen))
                || (step.is_none() && c.kind == ChunkKind::Screen && self.player.cursor == cursor)
            {
                self.dirty = true;
            }
            self.next += 1;
        }
    }

    /// Moves the playhead to `time` (every chunk up to it applied).
    fn seek(&mut self, time: u64) {
        let time = time.min(self.end());
        self.time = time;
        self.carry = 0.0;
        let target = self.rec.entries.partition_point(|e| e.time <= time);
        self.goto(target);
    }

    /// Moves the playhead to listed line `row`: every chunk up to its
    /// time applied, but not a later listed line of the same millisecond
    /// (so the line is the one highlighted).
    fn seek_row(&mut self, row: usize) {
        let Some(&i) = self.shown.get(row) else {
            return;
        };
        let time = self.rec.lines[i].time;
        let next_line = self
            .shown
            .get(row + 1)
            .map_or(usize::MAX, |&n| self.rec.lines[n].chunk);
        let target = self
            .rec
            .entries
            .partition_point(|e| e.time <= time)
            .min(next_line);
        self.time = time;
        self.carry = 0.0;
        self.goto(target);
    }

    /// The listed line the replay is at: the last one applied.
    fn current_row(&self) -> Option<usize> {
        self.shown
            .partition_point(|&i| self.rec.lines[i].chunk < self.next)
            .checked_sub(1)
    }

    fn next_row(&self) -> Option<usize> {
        let r = self.current_row().map_or(0, |r| r + 1);
        (r < self.shown.len()).then_some(r)
    }

    /// The line before: the current one when the playhead has moved past
    /// it, else the one before it.
    fn previous_row(&self) -> Option<usize> {
        let r = self.current_row()?;
        let line = &self.rec.lines[self.shown[r]];
        if self.time > line.time {
            Some(r)
        } else {
            r.checked_sub(1)
        }
    }

    fn previous(&mut self) {
        match self.previous_row() {
            Some(r) => self.seek_row(r),
            None => self.seek(0),
        }
    }

    fn toggle_play(&mut self) {
        if self.playing.is_some() {
            self.playing = None;
        } else {
            if self.time >= self.end() {
                self.seek(0);
            }
            self.playing = Some(Instant::now());
        }
    }

    /// Advances the playhead by the real time since the last frame ×
    /// speed; stops at the end.
    fn tick(&mut self) {
        let Some(last) = self.playing else {
            return;
        };
        let now = Instant::now();
        self.carry += now.duration_since(last).as_secs_f64() * 1000.0 * f64::from(self.speed);
        self.playing = Some(now);
        let whole = self.carry.floor();
        self.carry -= whole;
        let end = self.end();
        self.time = self.time.saturating_add(whole as u64).min(end);
        let target = self.rec.entries.partition_point(|e| e.time <= self.time);
        if target > self.next {
            self.goto(target);
        }
        if self.time >= end {
            self.playing = None;
        }
    }

    /// Uploads the picture when it changed.
    fn upload(&mut self, ctx: &egui::Context) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let Some(fb) = self.player.framebuffer() else {
            self.texture = None;
            return;
        };
        let img = color_image(fb);
        let options = TextureOptions {
            // Crisp pixels when enlarged; smooth when shrunk to fit.
            magnification: egui::TextureFilter::Nearest,
            minification: egui::TextureFilter::Linear,
            ..TextureOptions::NEAREST
        };
        match &mut self.texture {
            Some(t) if t.size() == img.size => t.set(img, options),
            _ => self.texture = Some(ctx.load_texture("replay-screen", img, options)),
        }
    }
}

/// The framebuffer's pixels (B, G, R, X) as an image.
fn color_image(fb: &Framebuffer) -> ColorImage {
    let (w, h) = (usize::from(fb.width()), usize::from(fb.height()));
    let pixels = fb
        .pixels()
        .chunks_exact(4)
        .map(|p| Color32::from_rgb(p[2], p[1], p[0]))
        .collect();
    ColorImage::new([w, h], pixels)
}

impl eframe::App for Replay {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        if let Load::Reading { rx, .. } = &self.load {
            match rx.try_recv() {
                Ok(rec) => self.load = Load::Ready(Box::new(Playback::new(rec))),
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.load = Load::Failed("Reading the record failed.".into());
                }
            }
        }
        let ppp = ctx.pixels_per_point();
        let tracer = &mut self.tracer;
        egui::Panel::top("replay-header").show(ui, |ui| {
            ui.add_space(2.0);
            ui.label(RichText::new(&self.header).strong());
            match &self.load {
                Load::Reading { .. } => {
                    ui.label(RichText::new("Checking the chain…").weak());
                }
                Load::Failed(_) => {}
                Load::Ready(p) => chain_line(ui, p, &self.record, tracer),
            }
            ui.add_space(2.0);
        });
        let p = match &mut self.load {
            Load::Reading { progress, len, .. } => {
                tracer.note("replay-state", "reading".into());
                let done = progress.load(Ordering::Relaxed) as f32 / (*len).max(1) as f32;
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.vertical_centered(|ui| {
                        ui.add_space(ui.available_height() / 3.0);
                        ui.spinner();
                        ui.label(format!("Reading the record… {:.0} %", done * 100.0));
                    });
                });
                ctx.request_repaint_after(Duration::from_millis(100));
                return;
            }
            Load::Failed(e) => {
                let e = e.clone();
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.colored_label(RED, e);
                });
                return;
            }
            Load::Ready(p) => p,
        };

        // Keys, unless a widget has the keyboard: Space plays and pauses,
        // the arrows step 5 s.
        if !ctx.egui_wants_keyboard_input() && ctx.memory(|m| m.focused().is_none()) {
            let (space, left, right) = ctx.input(|i| {
                (
                    i.key_pressed(egui::Key::Space),
                    i.key_pressed(egui::Key::ArrowLeft),
                    i.key_pressed(egui::Key::ArrowRight),
                )
            });
            if space {
                p.toggle_play();
            }
            if left {
                p.seek(p.time.saturating_sub(STEP_MS));
            }
            if right {
                p.seek(p.time.saturating_add(STEP_MS));
            }
        }
        p.tick();
        p.upload(&ctx);

        egui::Panel::bottom("replay-timeline").show(ui, |ui| timeline(ui, p, tracer, ppp));
        egui::Panel::right("replay-events")
            .default_size(340.0)
            .show(ui, |ui| events(ui, p, tracer));
        egui::CentralPanel::default().show(ui, |ui| screen(ui, p, self.metadata_only, tracer, ppp));

        tracer.note("replay-time", p.time.to_string());
        tracer.note(
            "replay-state",
            if p.playing.is_some() {
                "playing"
            } else {
                "paused"
            }
            .into(),
        );
        if p.playing.is_some() {
            ctx.request_repaint();
        }
    }
}

fn chain_line(ui: &mut egui::Ui, p: &Playback, record: &str, tracer: &mut Tracer) {
    match p.rec.problems.first() {
        None => {
            tracer.note("replay-chain", "intact".into());
            ui.horizontal_wrapped(|ui| {
                ui.spacing_mut().item_spacing.x = 0.0;
                ui.label("Chain intact — not yet checked against the device certificate (");
                ui.monospace(format!("shoulder verify {record} --device-cert CRT"));
                ui.label(")");
            });
        }
        Some(first) => {
            tracer.note("replay-chain", format!("damaged: {first}"));
            let more = p.rec.problems.len() - 1;
            let mut line = format!("Damaged record: {first}");
            if more > 0 {
                line.push_str(&format!(" (and {more} more problem(s))"));
            }
            ui.colored_label(RED, line)
                .on_hover_text(p.rec.problems.join("\n"));
        }
    }
    if p.rec.errors > 0 {
        ui.colored_label(
            AMBER,
            format!(
                "{} screen update(s) could not be applied: the picture may be wrong in places.",
                p.rec.errors
            ),
        );
    }
}

/// Play/pause, events back and forth, speed, and the slider.
fn timeline(ui: &mut egui::Ui, p: &mut Playback, tracer: &mut Tracer, ppp: f32) {
    let end = p.end();
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        let r = ui
            .add_enabled(
                p.previous_row().is_some() || p.time > 0,
                egui::Button::new((icon("◀"), "event")),
            )
            .on_hover_text("Back to the previous event");
        tracer.rect("button-previous-event", r.rect, ppp);
        if r.clicked() {
            p.previous();
        }
        let label = if p.playing.is_some() {
            (icon("‖"), "Pause")
        } else {
            (icon("▶"), "Play")
        };
        let r = ui
            .add_enabled(end > 0, egui::Button::new(label))
            .on_hover_text("Space; the arrow keys step 5 s");
        tracer.rect("button-play", r.rect, ppp);
        if r.clicked() {
            p.toggle_play();
        }
        let r = ui
            .add_enabled(
                p.next_row().is_some(),
                egui::Button::new(("event", icon("▶"))),
            )
            .on_hover_text("On to the next event");
        tracer.rect("button-next-event", r.rect, ppp);
        if r.clicked()
            && let Some(row) = p.next_row()
        {
            p.seek_row(row);
        }
        ui.separator();
        for s in SPEEDS {
            let r = ui.selectable_label(p.speed == s, format!("{s}×"));
            if r.clicked() {
                p.speed = s;
            }
        }
        ui.separator();
        ui.monospace(format!("{} / {}", duration(p.time), duration(end)));
    });
    bar(ui, p, tracer, ppp);
    ui.add_space(4.0);
}

/// A symbol for a button: the monospace font has the media symbols
/// (the proportional one does not).
fn icon(symbol: &str) -> RichText {
    RichText::new(symbol).monospace()
}

/// The timeline's bar: the session from start to end, a tick per event
/// listed, the playhead; a click or a drag seeks.
fn bar(ui: &mut egui::Ui, p: &mut Playback, tracer: &mut Tracer, ppp: f32) {
    let end = p.end();
    let size = Vec2::new(ui.available_width(), 22.0);
    let sense = if end > 0 {
        Sense::click_and_drag()
    } else {
        Sense::hover()
    };
    let (rect, r) = ui.allocate_exact_size(size, sense);
    tracer.rect("replay-slider", rect, ppp);
    // Room for the handle at both ends.
    let rail = rect.shrink2(Vec2::new(8.0, 0.0));
    let time_at = |x: f32| {
        let f = ((x - rail.left()) / rail.width().max(1.0)).clamp(0.0, 1.0);
        (f64::from(f) * end as f64).round() as u64
    };
    let x_of = |t: u64| rail.left() + rail.width() * (t as f64 / end.max(1) as f64) as f32;
    if (r.clicked() || r.dragged() || r.is_pointer_button_down_on())
        && let Some(pos) = r.interact_pointer_pos()
    {
        let t = time_at(pos.x);
        if t != p.time {
            p.seek(t);
        }
    }
    let v = ui.visuals();
    let painter = ui.painter();
    let y = rect.center().y;
    let track = Rect::from_min_max(
        Pos2::new(rail.left(), y - 3.0),
        Pos2::new(rail.right(), y + 3.0),
    );
    painter.rect_filled(track, 3.0, v.extreme_bg_color);
    let at = x_of(p.time);
    painter.rect_filled(
        Rect::from_min_max(track.min, Pos2::new(at, track.max.y)),
        3.0,
        v.selection.bg_fill,
    );
    let tick = v.weak_text_color();
    let mut last_x = f32::NEG_INFINITY;
    for &i in &p.shown {
        let x = x_of(p.rec.lines[i].time).round();
        if x > last_x {
            painter.line_segment(
                [Pos2::new(x, rect.top() + 2.0), Pos2::new(x, y - 4.0)],
                egui::Stroke::new(1.0, tick),
            );
            last_x = x;
        }
    }
    let handle = if r.hovered() || r.dragged() {
        v.widgets.hovered.fg_stroke.color
    } else {
        v.widgets.inactive.fg_stroke.color
    };
    painter.circle_filled(Pos2::new(at, y), 7.0, handle);
    if end > 0
        && let Some(pos) = r.hover_pos()
    {
        r.on_hover_text_at_pointer(duration(time_at(pos.x)));
    }
}

/// The event lines, the current one highlighted; a click seeks there.
fn events(ui: &mut egui::Ui, p: &mut Playback, tracer: &mut Tracer) {
    tracer.note("replay-events", p.shown.len().to_string());
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.heading(format!("Events ({})", p.shown.len()));
        let inputs = p.rec.lines.iter().filter(|l| l.input).count();
        if inputs > 0
            && ui
                .checkbox(&mut p.show_input, format!("input ({inputs})"))
                .changed()
        {
            p.list();
        }
    });
    ui.separator();
    let current = p.current_row();
    if current != p.highlighted {
        p.highlighted = current;
        p.scroll_to = current;
    }
    let row_h = ui.text_style_height(&egui::TextStyle::Body) + 6.0;
    let step = row_h + ui.spacing().item_spacing.y;
    let mut area = egui::ScrollArea::vertical()
        .id_salt("replay-event-list")
        .auto_shrink([false, false]);
    if let Some(row) = p.scroll_to.take() {
        // Only when the row is out of sight (read from last frame).
        let id = ui.make_persistent_id("replay-event-list-view");
        let view: Option<(f32, f32)> = ui.data(|d| d.get_temp(id));
        let top = row as f32 * step;
        if view.is_none_or(|(offset, height)| top < offset || top + step > offset + height) {
            let height = view.map_or(0.0, |v| v.1);
            area = area.vertical_scroll_offset((top - height / 2.0).max(0.0));
        }
    }
    let mut clicked = None;
    let out = area.show_rows(ui, row_h, p.shown.len(), |ui, rows| {
        let font = FontId::proportional(ui.text_style_height(&egui::TextStyle::Body) - 1.0);
        let mono = FontId::monospace(font.size);
        for row in rows {
            let line = &p.rec.lines[p.shown[row]];
            let width = ui.available_width();
            let (rect, r) = ui.allocate_exact_size(Vec2::new(width, row_h), Sense::click());
            let selected = current == Some(row);
            let v = ui.visuals();
            let color = if selected {
                ui.painter().rect_filled(rect, 2.0, v.selection.bg_fill);
                v.selection.stroke.color
            } else {
                if r.hovered() {
                    ui.painter()
                        .rect_filled(rect, 2.0, v.widgets.hovered.weak_bg_fill);
                }
                v.text_color()
            };
            let painter = ui.painter().with_clip_rect(rect.intersect(ui.clip_rect()));
            painter.text(
                rect.left_center() + Vec2::new(4.0, 0.0),
                Align2::LEFT_CENTER,
                format!("{:>10}", duration(line.time)),
                mono.clone(),
                color,
            );
            painter.text(
                rect.left_center() + Vec2::new(4.0 + 11.0 * mono.size * 0.62, 0.0),
                Align2::LEFT_CENTER,
                &line.text,
                font.clone(),
                color,
            );
            if r.on_hover_text(&line.text).clicked() {
                clicked = Some(row);
            }
        }
    });
    let id = ui.make_persistent_id("replay-event-list-view");
    let view = (out.state.clamped_offset().y, out.inner_rect.height());
    ui.data_mut(|d| d.insert_temp(id, view));
    if let Some(row) = clicked {
        p.seek_row(row);
    }
}

/// The picture as of the playhead, fitted to the space, and the cursor.
fn screen(ui: &mut egui::Ui, p: &mut Playback, metadata_only: bool, tracer: &mut Tracer, ppp: f32) {
    let (Some(tex), Some(fb)) = (&p.texture, p.player.framebuffer()) else {
        let (key, text) = if !p.rec.has_screen {
            (
                "no-screen",
                if metadata_only {
                    "This record holds no screen (recorded as metadata)".to_string()
                } else {
                    "This record holds no screen".to_string()
                },
            )
        } else {
            (
                "not-yet",
                "No screen yet at this moment of the session".to_string(),
            )
        };
        tracer.note("replay-shows", key.into());
        tracer.note("replay-screen", "none".into());
        ui.centered_and_justified(|ui| {
            ui.label(RichText::new(text).size(18.0).weak());
        });
        return;
    };
    tracer.note("replay-shows", "screen".into());
    let (w, h) = (f32::from(fb.width()), f32::from(fb.height()));
    let avail = ui.available_size();
    let (area, _) = ui.allocate_exact_size(avail, Sense::hover());
    let scale = (area.width() / w).min(area.height() / h).max(0.01);
    let rect = Rect::from_center_size(area.center(), Vec2::new(w * scale, h * scale));
    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
    ui.painter().image(tex.id(), rect, uv, Color32::WHITE);
    tracer.rect("replay-screen", rect, ppp);
    if let Some((x, y)) = p.player.cursor {
        let at = rect.min + Vec2::new(f32::from(x), f32::from(y)) * scale;
        // The shape is not recorded: the app's own arrow.
        super::view::draw_cursor(&ui.painter().with_clip_rect(rect), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::record::ChainWriter;
    use shoulder_proto::{Encoding, Message, ScreenInfo, UpdatePart, WireFormat};

    fn payload(m: &Message) -> Vec<u8> {
        shoulder_proto::frame::encode(m).unwrap()[shoulder_proto::frame::HEADER_LEN..].to_vec()
    }

    /// A record of `n` updates, 300 ms apart, each painting a strip its
    /// own colour, and an event every tenth.
    fn record(n: u32) -> Vec<u8> {
        let mut w = ChainWriter::new();
        let mut out = ChainWriter::magic().to_vec();
        w.chunk(ChunkKind::Start, 0, br#"{"mode":"screen"}"#, &mut out)
            .unwrap();
        let info = Message::ScreenInfo(ScreenInfo {
            width: 64,
            height: 48,
            format: WireFormat::Xrgb8888,
            generation: 1,
        });
        w.chunk(ChunkKind::Screen, 0, &payload(&info), &mut out)
            .unwrap();
        for i in 0..n {
            let mut rects = heapless::Vec::new();
            let _ = rects.push(shoulder_proto::Rect {
                x: (i % 8) as u16 * 8,
                y: 0,
                w: 8,
                h: 48,
                encoding: Encoding::Solid(i * 7919),
            });
            let part = Message::Update(Box::new(UpdatePart {
                seq: i,
                generation: 1,
                last: true,
                rects,
            }));
            let t = u64::from(i) * 300;
            w.chunk(ChunkKind::Screen, t, &payload(&part), &mut out)
                .unwrap();
            if i % 10 == 0 {
                w.chunk(ChunkKind::Event, t, br#"{"event":"mark"}"#, &mut out)
                    .unwrap();
            }
        }
        w.end(u64::from(n) * 300, 0x0403, &[1; 8], &mut out);
        out
    }

    /// The picture after applying every chunk up to `time`, from the start.
    fn straight(file: &[u8], time: u64) -> Option<Vec<u8>> {
        let mut p = Player::new();
        for c in chunks(file).map_while(Result::ok) {
            if c.millis > time {
                break;
            }
            p.apply(&c);
        }
        p.framebuffer().map(|f| f.pixels().to_vec())
    }

    #[test]
    fn seeking_anywhere_shows_what_a_straight_replay_shows() {
        let file = record(3000);
        let rec = prepare(file.clone(), &AtomicU64::new(0));
        assert!(rec.problems.is_empty(), "{:?}", rec.problems);
        assert!(rec.keyframes.len() > 2 && rec.keyframes.len() <= MAX_KEYFRAMES);
        assert_eq!(rec.lines.len(), 302, "start, 300 events, end");
        let mut p = Playback::new(rec);
        let end = p.end();
        for t in [
            end, 0, 450_000, 449_999, 100, 899_700, 300_000, 12_345, end, 1,
        ] {
            p.seek(t);
            assert_eq!(
                p.player.framebuffer().map(|f| f.pixels().to_vec()),
                straight(&file, t),
                "at {t} ms"
            );
        }
        // Lines: forth and back, each landing on its own time.
        p.seek(0);
        assert_eq!(p.current_row(), Some(1), "the event at 0 ms");
        let row = p.next_row().unwrap();
        p.seek_row(row);
        assert_eq!((p.time, p.current_row()), (3000, Some(2)));
        p.seek(600_100);
        let r = p.current_row().unwrap();
        assert_eq!(p.rec.lines[p.shown[r]].time, 600_000);
        p.previous();
        assert_eq!(
            (p.time, p.current_row()),
            (600_000, Some(r)),
            "back to the line just passed"
        );
        p.previous();
        assert_eq!((p.time, p.current_row()), (597_000, Some(r - 1)));
    }

    #[test]
    fn playing_stops_at_the_end() {
        let mut p = Playback::new(prepare(record(20), &AtomicU64::new(0)));
        p.speed = 8;
        p.toggle_play();
        p.playing = Some(Instant::now() - Duration::from_secs(60));
        p.tick();
        assert_eq!(p.time, p.end());
        assert!(p.playing.is_none());
        // Play at the end starts over.
        p.toggle_play();
        assert_eq!(p.time, 0);
        assert!(p.playing.is_some());
    }
}
