//! Layout and rendering of the banner: where each part goes on a screen of
//! a given size, the buttons' hit rectangles, and the pixels.
//!
//! Layout first builds a small display list per screen region (fills,
//! frames, text lines already truncated to fit); rendering only paints it.
//! Sizes derive from the screen's shorter side `d`, so a 320×240 panel and a
//! 4K kiosk get the same picture at their own scale.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyleBuilder, Rectangle, StrokeAlignment};
use shoulder_proto::msg::ConsentKind;
use shoulder_proto::rotation::Rotation;
use shoulder_proto::session::LocalDecision;

use crate::pixel::{BufferError, MAX_DIMENSION, PixelBuffer, PixelFormat, Surface};
use crate::text::Font;
use crate::view::{StripMode, View, format_elapsed};

/// Chat lines from the expert are wrapped to at most this many screen lines:
/// enough for a sentence, small enough not to hide the app.
pub const MAX_CHAT_LINES: usize = 2;

/// The screen the banner is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenSpec {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

/// Which screen edge the session strip sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Edge {
    #[default]
    Top,
    Bottom,
}

/// Every fixed text of the banner, so a device builder can translate them.
/// `{}` marks where a value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub header: String,
    pub wants_view: String,
    pub wants_control: String,
    /// A file to be copied off the device (its name and size follow on a
    /// line of their own).
    pub wants_file_get: String,
    /// A file to be put on the device.
    pub wants_file_put: String,
    /// The button that allows this file and every later one of the session.
    pub allow_files: String,
    pub identified_by: String,
    /// After "identified by …": the name the expert gave themselves.
    pub says: String,
    pub accept: String,
    pub decline: String,
    /// The key that accepts, as shown in the Accept button.
    pub accept_key: String,
    pub decline_key: String,
    pub declines_in: String,
    pub viewed_by: String,
    pub controlled_by: String,
    pub reconnecting: String,
    pub stops_control: String,
    pub stop_control: String,
    pub end_session: String,
    /// On the strip while a file goes: `{}` is its name.
    pub sending_file: String,
    pub receiving_file: String,
    /// The strip's button that stops the file transfer under way.
    pub cancel_file: String,
    pub expert_says: String,
    /// Above a request to see the screen that answers the person's help
    /// request: how long ago they asked (their text follows after ": ").
    pub asked_for_help: String,
    /// On every prompt and the strip when the device records its sessions
    /// (`Style::recorded`).
    pub recorded: String,
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            header: "Remote assistance".into(),
            wants_view: "wants to see this screen".into(),
            wants_control: "wants to control this screen".into(),
            wants_file_get: "wants a copy of a file".into(),
            wants_file_put: "wants to send you a file".into(),
            allow_files: "Allow all files this session".into(),
            identified_by: "Identified by {}".into(),
            says: "says: {}".into(),
            accept: "Accept".into(),
            decline: "Decline".into(),
            accept_key: "Enter".into(),
            decline_key: "Esc".into(),
            declines_in: "Declines automatically in {} s".into(),
            viewed_by: "Viewed by {}".into(),
            controlled_by: "Controlled by {}".into(),
            reconnecting: "Waiting for {} to reconnect".into(),
            stops_control: "{} stops control".into(),
            stop_control: "Stop control".into(),
            end_session: "End session".into(),
            sending_file: "Copying {} from this device".into(),
            receiving_file: "Receiving {}".into(),
            cancel_file: "Cancel file".into(),
            expert_says: "Expert: {}".into(),
            asked_for_help: "You asked for help {} ago".into(),
            recorded: "This session is recorded".into(),
        }
    }
}

fn fill_in(template: &str, value: &str) -> String {
    template.replacen("{}", value, 1)
}

/// What a prompt asks, in the person's words.
fn question(l: &Labels, p: &crate::view::PromptView) -> String {
    match (&p.file, p.kind) {
        (Some(f), _) if f.to_device => l.wants_file_put.clone(),
        (Some(_), _) => l.wants_file_get.clone(),
        (None, ConsentKind::Control) => l.wants_control.clone(),
        (None, ConsentKind::View | ConsentKind::Files) => l.wants_view.clone(),
    }
}

/// A file prompt's file: its name, shortened to fit `width` if need be,
/// and its size, which always shows.
fn file_line(f: &shoulder_proto::session::FileAsk, font: Font, width: u32) -> String {
    let size = format!(" ({})", shoulder_proto::human_size(f.size));
    let name = font.truncate(&f.name, width.saturating_sub(font.width(&size)));
    format!("{name}{size}")
}

/// Rendering settings besides the screen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Style {
    pub edge: Edge,
    pub labels: Labels,
    /// The device records its sessions (`[record]` in agent.toml): every
    /// prompt and the strip say so (in builds with the `record` feature).
    pub recorded: bool,
}

/// The colours: saturated backgrounds with white or black text, at least
/// 7:1 contrast everywhere (WCAG AAA), and a control strip that cannot be
/// mistaken for the view strip.
pub mod palette {
    use embedded_graphics::pixelcolor::Rgb888;
    pub const CARD: Rgb888 = Rgb888::new(0x12, 0x1a, 0x2e);
    pub const CARD_FRAME: Rgb888 = Rgb888::new(0xff, 0xc4, 0x00);
    pub const TEXT: Rgb888 = Rgb888::new(0xff, 0xff, 0xff);
    pub const TEXT_DIM: Rgb888 = Rgb888::new(0xd0, 0xd8, 0xe8);
    pub const ACCENT: Rgb888 = Rgb888::new(0xff, 0xd5, 0x4f);
    pub const ACCEPT: Rgb888 = Rgb888::new(0x0b, 0x6e, 0x2e);
    pub const DECLINE: Rgb888 = Rgb888::new(0x3a, 0x3f, 0x4b);
    /// Both buttons while a fresh prompt is not answerable yet.
    pub const ARMING: Rgb888 = Rgb888::new(0x2a, 0x2d, 0x35);
    pub const ARMING_TEXT: Rgb888 = Rgb888::new(0x80, 0x86, 0x94);
    pub const BUTTON_FRAME: Rgb888 = Rgb888::new(0xff, 0xff, 0xff);
    pub const VIEW_STRIP: Rgb888 = Rgb888::new(0x0a, 0x3d, 0x91);
    pub const CONTROL_STRIP: Rgb888 = Rgb888::new(0xa5, 0x10, 0x10);
    pub const RECONNECT_STRIP: Rgb888 = Rgb888::new(0x3a, 0x3f, 0x4b);
    pub const STRIP_EDGE: Rgb888 = Rgb888::new(0xff, 0xc4, 0x00);
    pub const STRIP_BUTTON: Rgb888 = Rgb888::new(0xff, 0xff, 0xff);
    pub const STRIP_BUTTON_TEXT: Rgb888 = Rgb888::new(0x10, 0x10, 0x10);
    pub const CHAT: Rgb888 = Rgb888::new(0x1c, 0x1c, 0x1c);
    pub const NOTICE: Rgb888 = Rgb888::new(0xff, 0xc4, 0x00);
    pub const NOTICE_TEXT: Rgb888 = Rgb888::new(0x00, 0x00, 0x00);
}

/// What a part of the banner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    Strip,
    Chat,
    Notice,
    Prompt,
}

/// One opaque rectangle of the screen the banner covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub kind: RegionKind,
    pub rect: Rectangle,
}

/// A button and the decision a tap on it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Button {
    pub decision: LocalDecision,
    pub rect: Rectangle,
}

/// Where the banner is on screen: for matching taps and for noticing when
/// the app painted over it. Regions never overlap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub screen: Size,
    pub regions: Vec<Region>,
    pub buttons: Vec<Button>,
    /// A consent prompt is open (keys answer it, taps elsewhere do nothing).
    pub prompt_open: bool,
}

impl Layout {
    /// The region of `kind`, if shown.
    pub fn region(&self, kind: RegionKind) -> Option<Rectangle> {
        self.regions.iter().find(|r| r.kind == kind).map(|r| r.rect)
    }

    /// The button making `decision`, if shown.
    pub fn button(&self, decision: LocalDecision) -> Option<Rectangle> {
        self.buttons
            .iter()
            .find(|b| b.decision == decision)
            .map(|b| b.rect)
    }

    /// Whether `p` is on the banner.
    pub fn covers(&self, p: Point) -> bool {
        self.regions.iter().any(|r| r.rect.contains(p))
    }
}

/// Sizes for one screen.
#[derive(Debug, Clone, Copy)]
struct Metrics {
    pad: u32,
    gap: u32,
    border: u32,
    title: Font,
    body: Font,
    prompt_button_h: u32,
    prompt_button_font: Font,
    strip_button_h: u32,
    strip_font: Font,
}

impl Metrics {
    fn new(screen: &ScreenSpec) -> Self {
        let d = screen.width.min(screen.height);
        let pad = (d / 60).max(4);
        let prompt_button_h = (d / 9).max(40);
        let strip_button_h = (d / 14).max(36);
        Self {
            pad,
            gap: (pad / 2).max(2),
            border: (d / 270).max(2),
            title: Font::for_size((d / 24).max(14)),
            body: Font::for_size((d / 34).max(11)),
            prompt_button_h,
            prompt_button_font: Font::for_size(prompt_button_h * 2 / 5),
            strip_button_h,
            strip_font: Font::for_size((d / 30).max(14)),
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    Fill(Rectangle, Rgb888),
    Frame(Rectangle, Rgb888, u32),
    Text(Font, String, Point, Rgb888),
}

#[derive(Debug, Clone)]
struct Plan {
    region: Region,
    items: Vec<Item>,
    buttons: Vec<Button>,
}

/// A rendered part of the banner: pixels for one screen rectangle, in the
/// screen's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub rect: Rectangle,
    pub pixels: PixelBuffer,
}

/// The rendered banner: what to put where, and where the buttons are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banner {
    pub layout: Layout,
    pub patches: Vec<Patch>,
}

impl Banner {
    /// Copies the banner onto `surface` (a captured frame, or a screen the
    /// presenter owns). Parts outside the surface are clipped.
    pub fn composite_into(&self, surface: &mut Surface<'_>) {
        for patch in &self.patches {
            blit(&patch.pixels, patch.rect.top_left, surface);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patches.is_empty()
    }

    /// This banner, rendered upright for a `upright_w`×`upright_h` screen,
    /// as the framebuffer of a panel turned by `r` must hold it: each patch
    /// turned back and moved to where the person sees it, and the layout
    /// (regions, buttons) in framebuffer coordinates, where presenters look
    /// for app repaints and taps arrive from a touchscreen mounted with the
    /// panel.
    pub fn turned_back(&self, r: Rotation, upright_w: u32, upright_h: u32) -> Banner {
        if r == Rotation::Deg0 {
            return self.clone();
        }
        let (bw, bh) = r.inverse().upright_size(upright_w, upright_h);
        let turn = |rect: Rectangle| turn_rect(rect, r, bw, bh);
        let patches = self
            .patches
            .iter()
            .map(|p| Patch {
                rect: turn(p.rect),
                pixels: p.pixels.turned_back(r),
            })
            .collect();
        let l = &self.layout;
        let layout = Layout {
            screen: Size::new(bw, bh),
            regions: l
                .regions
                .iter()
                .map(|g| Region {
                    rect: turn(g.rect),
                    ..*g
                })
                .collect(),
            buttons: l
                .buttons
                .iter()
                .map(|b| Button {
                    rect: turn(b.rect),
                    ..*b
                })
                .collect(),
            prompt_open: l.prompt_open,
        };
        Banner { layout, patches }
    }
}

/// Where an upright rectangle lies in a `bw`×`bh` framebuffer turned by `r`.
fn turn_rect(rect: Rectangle, r: Rotation, bw: u32, bh: u32) -> Rectangle {
    if rect.is_zero_sized() {
        return rect;
    }
    let (x0, y0) = (rect.top_left.x.max(0) as u32, rect.top_left.y.max(0) as u32);
    let (x1, y1) = (x0 + rect.size.width - 1, y0 + rect.size.height - 1);
    let (ax, ay) = r.to_buffer(x0, y0, bw, bh);
    let (bx, by) = r.to_buffer(x1, y1, bw, bh);
    Rectangle::new(
        Point::new(ax.min(bx) as i32, ay.min(by) as i32),
        Size::new(ax.abs_diff(bx) + 1, ay.abs_diff(by) + 1),
    )
}

/// Copies `src` to `dst` at `at`, converting the format if they differ.
pub fn blit(src: &PixelBuffer, at: Point, dst: &mut Surface<'_>) {
    let rect = Rectangle::new(at, src.size()).intersection(&dst.bounds());
    if rect.is_zero_sized() {
        return;
    }
    let (sx, sy) = (
        (rect.top_left.x - at.x) as u32,
        (rect.top_left.y - at.y) as u32,
    );
    let (sbpp, dbpp) = (
        src.format().bytes_per_pixel(),
        dst.format().bytes_per_pixel(),
    );
    let (sf, df) = (src.format(), dst.format());
    for row in 0..rect.size.height {
        let from = &src.row(sy + row)[sx as usize * sbpp..(sx + rect.size.width) as usize * sbpp];
        let to = dst.span_mut(
            rect.top_left.x as u32,
            rect.top_left.y as u32 + row,
            rect.size.width,
        );
        if sf == df {
            to.copy_from_slice(from);
        } else {
            for (s, d) in from.chunks_exact(sbpp).zip(to.chunks_exact_mut(dbpp)) {
                df.encode(sf.decode(s), d);
            }
        }
    }
}

/// Why the banner cannot be rendered for a screen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    #[error(
        "screen {width}x{height} is too small for the banner (at least {MIN_WIDTH}x{MIN_HEIGHT}) or too large (at most {MAX_DIMENSION} each)"
    )]
    ScreenSize { width: u32, height: u32 },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

/// The smallest screen the banner is laid out for (QVGA).
pub const MIN_WIDTH: u32 = 320;
pub const MIN_HEIGHT: u32 = 200;

/// Lays out and renders banners for one screen.
#[derive(Debug, Clone)]
pub struct Renderer {
    screen: ScreenSpec,
    style: Style,
    m: Metrics,
}

impl Renderer {
    pub fn new(screen: ScreenSpec, style: Style) -> Result<Self, RenderError> {
        let (w, h) = (screen.width, screen.height);
        // Portrait screens are fine: the check is on the shorter/longer side.
        if w.min(h) < MIN_HEIGHT.min(MIN_WIDTH)
            || w.max(h) < MIN_WIDTH
            || w > MAX_DIMENSION
            || h > MAX_DIMENSION
        {
            return Err(RenderError::ScreenSize {
                width: w,
                height: h,
            });
        }
        Ok(Self {
            screen,
            m: Metrics::new(&screen),
            style,
        })
    }

    pub fn screen(&self) -> ScreenSpec {
        self.screen
    }

    /// Where everything goes, without drawing.
    pub fn layout(&self, view: &View) -> Layout {
        self.plan(view).0
    }

    /// Every text line as (region, line box, text): for tests that check
    /// nothing is cut off.
    #[doc(hidden)]
    pub fn text_boxes(&self, view: &View) -> Vec<(Rectangle, Rectangle, String)> {
        let (_, plans) = self.plan(view);
        let mut out = Vec::new();
        for plan in &plans {
            for item in &plan.items {
                if let Item::Text(font, text, at, _) = item {
                    let size = Size::new(font.width(text), font.line_height());
                    out.push((plan.region.rect, Rectangle::new(*at, size), text.clone()));
                }
            }
        }
        out
    }

    /// The banner's pixels and layout for `view`.
    pub fn render(&self, view: &View) -> Result<Banner, RenderError> {
        let (layout, plans) = self.plan(view);
        let mut patches = Vec::with_capacity(plans.len());
        for plan in plans {
            let rect = plan.region.rect;
            let mut pixels =
                PixelBuffer::new(rect.size.width, rect.size.height, self.screen.format)?;
            {
                let mut target = pixels.translated(-rect.top_left);
                for item in &plan.items {
                    paint(item, &mut target);
                }
            }
            patches.push(Patch { rect, pixels });
        }
        Ok(Banner { layout, patches })
    }

    fn plan(&self, view: &View) -> (Layout, Vec<Plan>) {
        let (w, h) = (self.screen.width, self.screen.height);
        let mut plans = Vec::new();
        // Bands stack from the strip's edge inwards.
        let mut bands: Vec<Plan> = Vec::new();
        if let Some(strip) = &view.strip {
            bands.push(self.strip(strip, false));
        }
        let mut extra: Vec<Plan> = Vec::new();
        if let Some(chat) = &view.chat {
            extra.push(self.chat(chat));
        }
        if let Some(notice) = &view.notice {
            extra.push(self.notice(notice));
        }
        let band_height = |bands: &[Plan]| -> u32 {
            bands.iter().map(|p| p.region.rect.size.height).sum::<u32>()
        };

        let mut card = None;
        if let Some(prompt) = &view.prompt {
            // The prompt wins when space is short: first chat and notices go,
            // then the card's header line, then the strip gets compact, and
            // on the tiniest screens it waits until the prompt is answered.
            let mut with_header = true;
            let mut compact = false;
            loop {
                let used = band_height(&bands) + band_height(&extra);
                let free = h.saturating_sub(used);
                let c = self.card_height(prompt, with_header);
                let last_resort = extra.is_empty() && !with_header && bands.is_empty();
                if c + 2 * self.m.pad <= free || last_resort {
                    let top_free = match self.style.edge {
                        Edge::Top => used as i32,
                        Edge::Bottom => 0,
                    };
                    let y = top_free + (free.saturating_sub(c) / 2) as i32;
                    card = Some(self.card(prompt, y, with_header));
                    break;
                }
                if !extra.is_empty() {
                    extra.pop();
                } else if with_header {
                    with_header = false;
                } else if let (false, Some(strip)) = (compact, &view.strip) {
                    compact = true;
                    bands = vec![self.strip(strip, true)];
                } else {
                    bands.clear();
                }
            }
        }

        // Stack the bands.
        let mut offset = 0u32;
        for mut plan in bands.into_iter().chain(extra) {
            let hgt = plan.region.rect.size.height;
            if offset + hgt > h {
                break; // chat and notices that do not fit wait for room
            }
            let y = match self.style.edge {
                Edge::Top => offset as i32,
                Edge::Bottom => (h - offset - hgt) as i32,
            };
            shift(&mut plan, y);
            offset += hgt;
            plans.push(plan);
        }
        if let Some(c) = card {
            plans.push(c);
        }
        let layout = Layout {
            screen: Size::new(w, h),
            regions: plans.iter().map(|p| p.region).collect(),
            buttons: plans
                .iter()
                .flat_map(|p| p.buttons.iter().copied())
                .collect(),
            prompt_open: view.prompt.is_some(),
        };
        (layout, plans)
    }

    /// Wide enough for the fixed sentences in full (only the name may be
    /// shortened), at most the screen minus a margin.
    fn card_width(&self, p: &crate::view::PromptView) -> u32 {
        let (w, h) = (self.screen.width, self.screen.height);
        let (m, l) = (&self.m, &self.style.labels);
        let d = w.min(h);
        let question = question(l, p);
        let text = m
            .title
            .width(&question)
            .max(m.body.width(&fill_in(&l.identified_by, &p.how)))
            .max(m.body.width(&fill_in(&l.declines_in, "000")))
            .max(self.recorded_line().map_or(0, |r| m.body.width(r)));
        let needed = text + 2 * (2 * m.pad + m.border);
        (d * 5 / 4).max(needed).min(w - 2 * m.pad)
    }

    /// The "recorded" line, if the device records (never in a build
    /// without the `record` feature, which leaves this code out).
    fn recorded_line(&self) -> Option<&str> {
        self.records().then_some(&*self.style.labels.recorded)
    }

    fn records(&self) -> bool {
        cfg!(feature = "record") && self.style.recorded
    }

    fn prompt_button_height(&self) -> u32 {
        let m = &self.m;
        let two_lines = m.prompt_button_font.line_height() + m.body.line_height() + m.gap;
        m.prompt_button_h.max(two_lines + 2 * m.border + 2 * m.gap)
    }

    fn card_height(&self, p: &crate::view::PromptView, with_header: bool) -> u32 {
        let m = &self.m;
        let inner = 2 * m.pad;
        let mut hgt = inner * 2 + 2 * m.border;
        if with_header {
            hgt += m.body.line_height() + m.gap;
        }
        if p.help.is_some() {
            hgt += m.body.line_height() + m.gap;
        }
        hgt += 2 * m.title.line_height() + m.gap; // name, question
        if p.file.is_some() {
            hgt += m.body.line_height() + m.gap; // the file
        }
        hgt += m.body.line_height() + m.pad; // identified by
        if p.says.is_some() {
            hgt += m.body.line_height(); // says
        }
        if self.records() {
            hgt += m.body.line_height() + m.pad;
        }
        hgt += self.prompt_button_height() + m.pad;
        if p.file.is_some() {
            hgt += m.prompt_button_h + m.pad; // allow all files
        }
        hgt += m.body.line_height(); // countdown
        hgt
    }

    fn card(&self, p: &crate::view::PromptView, y: i32, with_header: bool) -> Plan {
        let m = &self.m;
        let l = &self.style.labels;
        let cw = self.card_width(p);
        let mut ch = self.card_height(p, with_header);
        // Taller than the screen even alone (a recorded file prompt on the
        // shortest screens): the countdown gives way.
        let countdown = ch <= self.screen.height;
        if !countdown {
            ch -= m.body.line_height();
        }
        let x = ((self.screen.width - cw) / 2) as i32;
        let rect = Rectangle::new(Point::new(x, y), Size::new(cw, ch));
        let mut buttons = Vec::new();
        let mut items = vec![
            Item::Fill(rect, palette::CARD),
            Item::Frame(rect, palette::CARD_FRAME, m.border),
        ];
        let inset = (2 * m.pad + m.border) as i32;
        let inner_w = cw - 2 * inset as u32;
        let left = x + inset;
        let mut ty = y + inset;
        let line = |items: &mut Vec<Item>, font: Font, text: &str, color, ty: &mut i32, after| {
            let t = font.truncate(text, inner_w);
            let tx = left + (inner_w.saturating_sub(font.width(&t)) / 2) as i32;
            items.push(Item::Text(font, t, Point::new(tx, *ty), color));
            *ty += (font.line_height() + after) as i32;
        };
        if with_header {
            line(
                &mut items,
                m.body,
                &l.header,
                palette::ACCENT,
                &mut ty,
                m.gap,
            );
        }
        if let Some(h) = &p.help {
            let mut asked = fill_in(
                &l.asked_for_help,
                &shoulder_proto::human_duration(h.secs_ago),
            );
            if !h.text.is_empty() {
                asked.push_str(": ");
                asked.push_str(&h.text);
            }
            line(&mut items, m.body, &asked, palette::TEXT, &mut ty, m.gap);
        }
        line(
            &mut items,
            m.title,
            &p.expert,
            palette::ACCENT,
            &mut ty,
            m.gap,
        );
        let question = question(l, p);
        line(&mut items, m.title, &question, palette::TEXT, &mut ty, 0);
        if let Some(f) = &p.file {
            ty += m.gap as i32;
            let what = file_line(f, m.body, inner_w);
            line(&mut items, m.body, &what, palette::ACCENT, &mut ty, m.gap);
        }
        // How they were identified, then, right under it, what they say
        // (a hint: shortened to the card's width, never in place of it).
        line(
            &mut items,
            m.body,
            &fill_in(&l.identified_by, &p.how),
            palette::TEXT_DIM,
            &mut ty,
            if p.says.is_some() { 0 } else { m.pad },
        );
        if let Some(says) = &p.says {
            line(
                &mut items,
                m.body,
                &fill_in(&l.says, says),
                palette::TEXT_DIM,
                &mut ty,
                m.pad,
            );
        }
        // Recorded: said where it is read before answering, above the buttons.
        if let Some(r) = self.recorded_line() {
            line(&mut items, m.body, r, palette::ACCENT, &mut ty, m.pad);
        }
        let bh = self.prompt_button_height();
        let bw = (inner_w - m.pad) / 2;
        let decline = Rectangle::new(Point::new(left, ty), Size::new(bw, bh));
        let accept = Rectangle::new(
            Point::new(left + (inner_w - bw) as i32, ty),
            Size::new(bw, bh),
        );
        for (rect, label, key, bg, decision) in [
            (
                decline,
                &l.decline,
                &l.decline_key,
                palette::DECLINE,
                LocalDecision::Decline,
            ),
            (
                accept,
                &l.accept,
                &l.accept_key,
                palette::ACCEPT,
                LocalDecision::Accept,
            ),
        ] {
            // Greyed out and not a target while arming: a tap there now
            // answers nothing.
            let (bg, fg) = if p.arming {
                (palette::ARMING, palette::ARMING_TEXT)
            } else {
                (bg, palette::TEXT)
            };
            self.button(
                &mut items,
                rect,
                bg,
                fg,
                label,
                Some(key),
                m.prompt_button_font,
            );
            if !p.arming {
                buttons.push(Button { decision, rect });
            }
        }
        ty += (bh + m.pad) as i32;
        if p.file.is_some() {
            // Below the two answers, full width: yes to this file and to
            // every later one, with no key of its own (a deliberate tap).
            let rect = Rectangle::new(Point::new(left, ty), Size::new(inner_w, m.prompt_button_h));
            let (bg, fg) = if p.arming {
                (palette::ARMING, palette::ARMING_TEXT)
            } else {
                (palette::DECLINE, palette::TEXT)
            };
            self.button(&mut items, rect, bg, fg, &l.allow_files, None, m.body);
            if !p.arming {
                buttons.push(Button {
                    decision: LocalDecision::AllowFiles,
                    rect,
                });
            }
            ty += (m.prompt_button_h + m.pad) as i32;
        }
        if countdown {
            let t = fill_in(&l.declines_in, &p.seconds_left.to_string());
            line(&mut items, m.body, &t, palette::TEXT, &mut ty, 0);
        }
        Plan {
            region: Region {
                kind: RegionKind::Prompt,
                rect,
            },
            items,
            buttons,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn button(
        &self,
        items: &mut Vec<Item>,
        rect: Rectangle,
        bg: Rgb888,
        fg: Rgb888,
        label: &str,
        key: Option<&String>,
        font: Font,
    ) {
        let m = &self.m;
        items.push(Item::Fill(rect, bg));
        items.push(Item::Frame(rect, palette::BUTTON_FRAME, m.border));
        let inner_w = rect.size.width.saturating_sub(2 * (m.border + m.gap));
        let label = font.truncate(label, inner_w);
        let key = key.map(|k| m.body.truncate(k, inner_w));
        let text_h = font.line_height() + key.as_ref().map_or(0, |_| m.body.line_height() + m.gap);
        let mut ty = rect.top_left.y + (rect.size.height.saturating_sub(text_h) / 2) as i32;
        let cx = |wid: u32| rect.top_left.x + (rect.size.width.saturating_sub(wid) / 2) as i32;
        items.push(Item::Text(
            font,
            label.clone(),
            Point::new(cx(font.width(&label)), ty),
            fg,
        ));
        ty += (font.line_height() + m.gap) as i32;
        if let Some(k) = key {
            items.push(Item::Text(
                m.body,
                k.clone(),
                Point::new(cx(m.body.width(&k)), ty),
                fg,
            ));
        }
    }

    /// The strip, laid out at y = 0 (the caller moves it to its edge).
    /// `compact` forces one row (names shortened harder) to leave room for
    /// a prompt on small screens.
    fn strip(&self, s: &crate::view::StripView, compact: bool) -> Plan {
        let m = &self.m;
        let l = &self.style.labels;
        let w = self.screen.width;
        let (bg, line1) = match s.mode {
            StripMode::Viewing => (palette::VIEW_STRIP, &l.viewed_by),
            StripMode::Controlling => (palette::CONTROL_STRIP, &l.controlled_by),
            StripMode::Reconnecting => (palette::RECONNECT_STRIP, &l.reconnecting),
        };
        // Line 1: who, and for how long; line 2 (controlled only): the hotkey.
        let elapsed = format!(" · {}", format_elapsed(s.elapsed));
        let hotkey = match s.mode {
            StripMode::Controlling if !s.stop_hotkey.is_empty() => {
                Some(fill_in(&l.stops_control, &s.stop_hotkey))
            }
            _ => None,
        };
        // A file going to or from the device is named before anything else.
        let file = s.file.as_ref().map(|f| {
            let template = if f.to_device {
                &l.receiving_file
            } else {
                &l.sending_file
            };
            fill_in(template, &f.name)
        });
        // Lines under the first: the file and the hotkey, then "recorded",
        // after them if the whole fits across the screen, else on its own.
        // None on a compact strip (a prompt needs the room): the prompt is
        // modal anyway, and says it is recorded.
        let mut notes = Vec::new();
        match (file, hotkey) {
            _ if compact => {}
            (Some(f), Some(h)) => notes.push(format!("{f} · {h}")),
            (f, h) => {
                if let Some(t) = f.or(h) {
                    notes.push(t)
                }
            }
        }
        if let (false, Some(r)) = (compact, self.recorded_line()) {
            match notes.last_mut() {
                Some(n)
                    if m.body.width(n) + m.body.width(r) + m.body.width(" · ") <= w - 2 * m.pad =>
                {
                    n.push_str(" · ");
                    n.push_str(r);
                }
                _ => notes.push(r.into()),
            }
        }
        let mut labels: Vec<(&str, LocalDecision)> = Vec::new();
        if s.file.is_some() {
            labels.push((&l.cancel_file, LocalDecision::CancelFile));
        }
        if s.mode == StripMode::Controlling {
            labels.push((&l.stop_control, LocalDecision::StopControl));
        }
        labels.push((&l.end_session, LocalDecision::End));
        let f = m.strip_font;
        let bh = m
            .strip_button_h
            .max(f.line_height() + 2 * (m.border + m.gap));
        let widths: Vec<u32> = labels
            .iter()
            .map(|(t, _)| (f.width(t) + 4 * m.pad + 2 * m.border).max(bh * 2))
            .collect();
        let row_w =
            |ws: &[u32]| ws.iter().sum::<u32>() + m.pad * (ws.len() as u32).saturating_sub(1);
        let buttons_w = row_w(&widths);
        let avail = w - 2 * m.pad;
        // Three buttons where two barely fit: the file's own gets a row of
        // its own above the others, so no label is cut short.
        let split =
            labels.len() > 2 && buttons_w > avail && labels[0].1 == LocalDecision::CancelFile;
        let extra_row = if split { bh + m.pad } else { 0 };
        let notes_h = notes.len() as u32 * (m.gap + m.body.line_height());
        let text_h = f.line_height() + notes_h;
        // One row when the lines under the first fit in full beside the
        // buttons and the first keeps room for a short name; else text
        // above, buttons below.
        let name_room = f.width(&fill_in(line1, "Jane Doe")) + f.width(&elapsed);
        let beside = w.saturating_sub(buttons_w + 3 * m.pad);
        let one_row = !split
            && (compact
                || (notes.iter().all(|t| m.body.width(t) <= beside) && name_room <= beside));
        let edge_line = m.border;
        let (height, text_w, text_y, buttons_y) = if one_row {
            let hgt = bh.max(text_h) + 2 * m.pad + edge_line;
            let content_top = match self.style.edge {
                Edge::Top => 0,
                Edge::Bottom => edge_line as i32,
            };
            let inner = hgt - edge_line;
            (
                hgt,
                beside,
                content_top + ((inner - text_h) / 2) as i32,
                content_top + ((inner - bh) / 2) as i32,
            )
        } else {
            let hgt = text_h + bh + 3 * m.pad + edge_line + extra_row;
            let content_top = match self.style.edge {
                Edge::Top => 0,
                Edge::Bottom => edge_line as i32,
            };
            (
                hgt,
                w - 2 * m.pad,
                content_top + m.pad as i32,
                content_top + (2 * m.pad + text_h) as i32,
            )
        };
        let rect = Rectangle::new(Point::zero(), Size::new(w, height));
        let edge_y = match self.style.edge {
            Edge::Top => (height - edge_line) as i32,
            Edge::Bottom => 0,
        };
        let mut items = vec![
            Item::Fill(rect, bg),
            // A bright line between strip and app, so the strip never looks
            // like part of the app.
            Item::Fill(
                Rectangle::new(Point::new(0, edge_y), Size::new(w, edge_line)),
                palette::STRIP_EDGE,
            ),
        ];
        let x = m.pad as i32;
        // The time is never cut: the name gives way.
        let elapsed_w = f.width(&elapsed);
        let who = f.truncate(&fill_in(line1, &s.expert), text_w.saturating_sub(elapsed_w));
        let t1 = if who.is_empty() {
            // Compact strip beside two buttons on a tiny screen: the time alone.
            elapsed.trim_start_matches([' ', '·']).to_string()
        } else {
            format!("{who}{elapsed}")
        };
        if f.width(&t1) <= text_w {
            items.push(Item::Text(f, t1, Point::new(x, text_y), palette::TEXT));
        }
        let mut ny = text_y + f.line_height() as i32;
        for t in notes {
            ny += m.gap as i32;
            let t = m.body.truncate(&t, text_w);
            if !t.is_empty() {
                items.push(Item::Text(m.body, t, Point::new(x, ny), palette::TEXT));
            }
            ny += m.body.line_height() as i32;
        }
        // Buttons right-aligned, in reading order; on screens too narrow for
        // them they share the row equally.
        let rows: Vec<(usize, usize)> = if split {
            vec![(0, 1), (1, labels.len())]
        } else {
            vec![(0, labels.len())]
        };
        let mut buttons = Vec::new();
        for (row, &(from, to)) in rows.iter().enumerate() {
            let ws = &widths[from..to];
            let n = ws.len() as u32;
            let shrink = row_w(ws) > avail || (split && row == 0);
            let mut bx = if shrink {
                m.pad as i32
            } else {
                (w - m.pad - row_w(ws)) as i32
            };
            let y = buttons_y + (row as u32 * (bh + m.pad)) as i32;
            for ((label, decision), bw) in labels[from..to].iter().zip(ws) {
                let bw = if shrink {
                    (avail - m.pad * (n - 1)) / n
                } else {
                    *bw
                };
                let r = Rectangle::new(Point::new(bx, y), Size::new(bw, bh));
                self.button(
                    &mut items,
                    r,
                    palette::STRIP_BUTTON,
                    palette::STRIP_BUTTON_TEXT,
                    label,
                    None,
                    f,
                );
                buttons.push(Button {
                    decision: *decision,
                    rect: r,
                });
                bx += (bw + m.pad) as i32;
            }
        }
        Plan {
            region: Region {
                kind: RegionKind::Strip,
                rect,
            },
            items,
            buttons,
        }
    }

    fn chat(&self, text: &str) -> Plan {
        let m = &self.m;
        let w = self.screen.width;
        let text = fill_in(&self.style.labels.expert_says, text);
        let lines = m.body.wrap(&text, w - 2 * m.pad, MAX_CHAT_LINES);
        let lh = m.body.line_height();
        let n = lines.len().max(1) as u32;
        let height = n * lh + (n - 1) * m.gap + 2 * m.pad;
        let rect = Rectangle::new(Point::zero(), Size::new(w, height));
        let mut items = vec![Item::Fill(rect, palette::CHAT)];
        for (i, line) in lines.into_iter().enumerate() {
            let y = m.pad + i as u32 * (lh + m.gap);
            items.push(Item::Text(
                m.body,
                line,
                Point::new(m.pad as i32, y as i32),
                palette::TEXT,
            ));
        }
        Plan {
            region: Region {
                kind: RegionKind::Chat,
                rect,
            },
            items,
            buttons: Vec::new(),
        }
    }

    fn notice(&self, text: &str) -> Plan {
        let m = &self.m;
        let w = self.screen.width;
        let f = m.strip_font;
        let height = f.line_height() + 2 * m.pad;
        let rect = Rectangle::new(Point::zero(), Size::new(w, height));
        let t = f.truncate(text, w - 2 * m.pad);
        let tx = ((w - f.width(&t)) / 2) as i32;
        Plan {
            region: Region {
                kind: RegionKind::Notice,
                rect,
            },
            items: vec![
                Item::Fill(rect, palette::NOTICE),
                Item::Text(f, t, Point::new(tx, m.pad as i32), palette::NOTICE_TEXT),
            ],
            buttons: Vec::new(),
        }
    }
}

/// Moves a band laid out at y = 0 down to `y`, with its buttons.
fn shift(plan: &mut Plan, y: i32) {
    let d = Point::new(0, y);
    plan.region.rect.top_left += d;
    for item in &mut plan.items {
        match item {
            Item::Fill(r, _) | Item::Frame(r, _, _) => r.top_left += d,
            Item::Text(_, _, p, _) => *p += d,
        }
    }
    for b in &mut plan.buttons {
        b.rect.top_left += d;
    }
}

fn paint<D: DrawTarget<Color = Rgb888>>(item: &Item, target: &mut D) {
    // Our targets are infallible; a failing one just leaves pixels unset.
    match item {
        Item::Fill(r, c) => {
            let _ = target.fill_solid(r, *c);
        }
        Item::Frame(r, c, width) => {
            let _ = r
                .into_styled(
                    PrimitiveStyleBuilder::new()
                        .stroke_color(*c)
                        .stroke_width(*width)
                        .stroke_alignment(StrokeAlignment::Inside)
                        .build(),
                )
                .draw(target);
        }
        Item::Text(font, text, at, c) => font.draw(text, *at, *c, target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::PromptView;

    /// On a recording device every prompt says so above its answers, which
    /// stay on screen, clear of that line, and answer a tap.
    #[test]
    #[cfg(feature = "record")]
    fn a_recorded_prompt_keeps_its_buttons_on_screen_and_clear_of_the_line() {
        let file = shoulder_proto::session::FileAsk {
            to_device: true,
            name: "update.bin".into(),
            size: 1000,
        };
        let style = Style {
            recorded: true,
            ..Style::default()
        };
        // The four golden sizes, and the shortest screen there is.
        for (w, h) in [
            (320, 240),
            (800, 480),
            (1280, 800),
            (1920, 1080),
            (320, 200),
        ] {
            let spec = ScreenSpec {
                width: w,
                height: h,
                format: PixelFormat::Xrgb8888,
            };
            let r = Renderer::new(spec, style.clone()).unwrap();
            let screen = Rectangle::new(Point::zero(), Size::new(w, h));
            for (kind, file) in [
                (ConsentKind::View, None),
                (ConsentKind::Control, None),
                (ConsentKind::Files, Some(file.clone())),
            ] {
                let view = View {
                    prompt: Some(PromptView {
                        kind,
                        expert: "Jane Expert".into(),
                        how: "plant certificate".into(),
                        says: None,
                        seconds_left: 60,
                        arming: false,
                        help: None,
                        file,
                    }),
                    ..View::default()
                };
                let layout = r.layout(&view);
                let card = layout.region(RegionKind::Prompt).unwrap();
                assert_eq!(screen.intersection(&card), card, "{kind:?} {w}x{h}");
                let lines: Vec<Rectangle> = r
                    .text_boxes(&view)
                    .into_iter()
                    .filter(|t| t.2 == "This session is recorded")
                    .map(|t| t.1)
                    .collect();
                assert_eq!(lines.len(), 1, "{kind:?} {w}x{h}: {lines:?}");
                let line = lines[0];
                assert_eq!(card.intersection(&line), line, "{kind:?} {w}x{h}");
                for d in [LocalDecision::Decline, LocalDecision::Accept] {
                    let b = layout.button(d).unwrap();
                    assert_eq!(card.intersection(&b), b, "{kind:?} {w}x{h}: {d:?}");
                    assert!(
                        line.bottom_right().unwrap().y < b.top_left.y,
                        "{kind:?} {w}x{h}: {d:?} {b:?} not below {line:?}"
                    );
                    assert_eq!(crate::answer_tap(&layout, b.center()), Some(d));
                }
            }
        }
    }
}
