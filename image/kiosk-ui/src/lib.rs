//! The demo kiosk screen, drawn with embedded-graphics.
//!
//! This crate is pure: no I/O, no clock, no allocation beyond the typed text.
//! The same screen is drawn by the demo kiosk app (`shoulder-kiosk`, into DRM
//! dumb buffers) and by the agent's synthetic frame source (into a plain
//! buffer), so both show exactly the same pixels for the same state and time.
//!
//! # Usage
//!
//! ```
//! use std::time::Duration;
//! use shoulder_kiosk_ui::{Action, KioskUi, Xrgb8888Canvas};
//!
//! let (w, h) = (640, 480);
//! let mut ui = KioskUi::new(w, h);
//!
//! // A tap (screen coordinates) on the counter button increments the counter.
//! let button = ui.layout().counter_button;
//! let (x, y) = (button.top_left.x + 5, button.top_left.y + 5);
//! assert_eq!(ui.tap(x, y), Some(Action::Increment));
//! assert_eq!(ui.counter(), 1);
//!
//! // Keys are Linux evdev codes with the evdev value (1 press, 0 release, 2 repeat).
//! ui.key(30, 1); // KEY_A
//! assert_eq!(ui.text(), "a");
//!
//! // Render into an XRGB8888 little-endian buffer (bytes B, G, R, 0 per pixel).
//! let pitch = w as usize * 4;
//! let mut pixels = vec![0u8; pitch * h as usize];
//! let mut canvas = Xrgb8888Canvas::new(&mut pixels, w, h, pitch).unwrap();
//! ui.draw(&mut canvas, Duration::from_secs(12 * 3600));
//! ```
//!
//! `now` passed to [`KioskUi::draw`] drives everything that moves: the clock
//! shows `now` modulo one day as `HH:MM:SS`, the progress bar cycles every
//! [`PROGRESS_PERIOD_MS`] and the text caret blinks every [`CARET_BLINK_MS`].
//! Drawing twice with the same state and the same `now` gives the same pixels.
//!
//! [`busy`] draws what an app that never stands still does to its screen
//! (the kiosk's `--busy-file` mode, and writers racing capture in tests).

pub mod busy;

use core::convert::Infallible;
use core::fmt::Write as _;
use core::time::Duration;

use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::mono_font::{MonoFont, MonoTextStyle};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle, RoundedRectangle};
use embedded_graphics::text::{Baseline, Text};

/// Longest text the text field keeps; further keys are ignored (the field is a
/// demo, and a bound keeps drawing cost and memory fixed).
pub const MAX_TEXT_LEN: usize = 64;
/// Period of the animated progress bar.
pub const PROGRESS_PERIOD_MS: u128 = 4_000;
/// Half period of the blinking text caret.
pub const CARET_BLINK_MS: u128 = 500;
/// Smallest screen the layout is made for; smaller sizes still draw, cramped.
pub const MIN_SIZE: (u32, u32) = (320, 240);

/// Names of the menu pages, in menu order.
pub const PAGES: [&str; 3] = ["Home", "Orders", "Settings"];

const FONT: &MonoFont<'static> = &FONT_10X20;

const BACKGROUND: Rgb888 = Rgb888::new(0x1e, 0x27, 0x33);
const HEADER: Rgb888 = Rgb888::new(0x10, 0x4e, 0x8b);
const MENU: Rgb888 = Rgb888::new(0x2b, 0x36, 0x45);
const MENU_SELECTED: Rgb888 = Rgb888::new(0xf0, 0xa2, 0x02);
const TEXT: Rgb888 = Rgb888::new(0xff, 0xff, 0xff);
const TEXT_DARK: Rgb888 = Rgb888::new(0x10, 0x10, 0x10);
const COUNTER_BUTTON: Rgb888 = Rgb888::new(0x2e, 0x9e, 0x4f);
const FIELD: Rgb888 = Rgb888::new(0xf4, 0xf4, 0xf4);
const CLEAR_BUTTON: Rgb888 = Rgb888::new(0xc0, 0x39, 0x2b);
const PROGRESS_TRACK: Rgb888 = Rgb888::new(0x3a, 0x46, 0x57);
const PROGRESS_FILL: Rgb888 = Rgb888::new(0x3d, 0xa5, 0xd9);
/// Tint of the main area per page, so a page switch changes most of the screen.
const PAGE_BACKGROUND: [Rgb888; 3] = [
    BACKGROUND,
    Rgb888::new(0x33, 0x1e, 0x2c),
    Rgb888::new(0x1e, 0x33, 0x2a),
];

/// What a tap or click on the screen does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The big counter button: count one more.
    Increment,
    /// A menu entry: show page `n` (index into [`PAGES`]).
    SelectPage(usize),
    /// The button next to the text field: empty it.
    ClearText,
}

/// Where everything is on a screen of a given size, in screen pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Screen size.
    pub size: Size,
    /// Text scale factor (1 = 10×20 pixel characters).
    pub scale: u32,
    /// The title bar across the top.
    pub header: Rectangle,
    /// Where the clock is drawn, inside the header.
    pub clock: Rectangle,
    /// The menu column on the left.
    pub menu: Rectangle,
    /// One entry per page of [`PAGES`], inside the menu.
    pub menu_items: [Rectangle; 3],
    /// The main area right of the menu.
    pub main: Rectangle,
    /// The big counter button.
    pub counter_button: Rectangle,
    /// The text field that shows typed keys.
    pub text_field: Rectangle,
    /// The button that clears the text field.
    pub clear_button: Rectangle,
    /// The animated progress bar along the bottom.
    pub progress: Rectangle,
}

impl Layout {
    /// Computes the layout for a `width`×`height` screen. Sizes below
    /// [`MIN_SIZE`] are cramped but valid; a zero size gives empty rectangles.
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as i32, height as i32);
        let scale = (height / 270).clamp(1, 8);
        let s = scale as i32;
        let pad = (h / 60).max(2);

        let header_h = (h / 8).max(FONT.character_size.height as i32 * s + 2 * pad);
        let header = rect(0, 0, w, header_h);
        let clock_w = 8 * FONT.character_size.width as i32 * s + 2 * pad;
        let clock = rect(w - clock_w, 0, clock_w, header_h);

        let progress_h = (h / 16).max(6);
        let progress = rect(pad, h - progress_h - pad, w - 2 * pad, progress_h);

        let body_top = header_h;
        let body_h = progress.top_left.y - pad - body_top;
        // Wide enough for the longest page name plus padding.
        let menu_w = (w / 4).max(9 * char_w(scale) + 4 * pad);
        let menu = rect(0, body_top, menu_w, body_h);
        let item_h = body_h / 3;
        let menu_items = core::array::from_fn(|i| {
            rect(
                pad,
                body_top + pad + i as i32 * item_h,
                menu_w - 2 * pad,
                item_h - 2 * pad,
            )
        });

        let main = rect(menu_w, body_top, w - menu_w, body_h);
        let inner_x = menu_w + 2 * pad;
        let inner_w = w - menu_w - 4 * pad;
        let counter_h = body_h * 11 / 20;
        let counter_button = rect(inner_x, body_top + 2 * pad, inner_w, counter_h - 2 * pad);
        let field_y = body_top + counter_h + 2 * pad;
        let field_h = (body_h - counter_h - 4 * pad).min(FONT.character_size.height as i32 * s * 2);
        let clear_w = (inner_w / 4).max(FONT.character_size.width as i32 * s * 5 + 2 * pad);
        let text_field = rect(inner_x, field_y, inner_w - clear_w - pad, field_h);
        let clear_button = rect(inner_x + inner_w - clear_w, field_y, clear_w, field_h);

        Self {
            size: Size::new(width, height),
            scale,
            header,
            clock,
            menu,
            menu_items,
            main,
            counter_button,
            text_field,
            clear_button,
            progress,
        }
    }

    /// What a tap at screen point (`x`, `y`) would do.
    pub fn hit_test(&self, x: i32, y: i32) -> Option<Action> {
        let p = Point::new(x, y);
        if self.counter_button.contains(p) {
            return Some(Action::Increment);
        }
        if self.clear_button.contains(p) {
            return Some(Action::ClearText);
        }
        self.menu_items
            .iter()
            .position(|r| r.contains(p))
            .map(Action::SelectPage)
    }
}

fn rect(x: i32, y: i32, w: i32, h: i32) -> Rectangle {
    Rectangle::new(
        Point::new(x, y),
        Size::new(w.max(0) as u32, h.max(0) as u32),
    )
}

/// The state of the demo kiosk screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KioskUi {
    layout: Layout,
    counter: u32,
    text: String,
    page: usize,
    shift_held: bool,
}

impl KioskUi {
    /// A fresh screen of `width`×`height` pixels: counter 0, empty text, first page.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            layout: Layout::new(width, height),
            counter: 0,
            text: String::new(),
            page: 0,
            shift_held: false,
        }
    }

    /// Changes the screen size, keeping the state.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.layout = Layout::new(width, height);
    }

    /// Where everything is drawn.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// How many times the counter button was tapped (wraps at `u32::MAX`).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The text typed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Index of the shown page in [`PAGES`].
    pub fn page(&self) -> usize {
        self.page
    }

    /// What a tap at screen point (`x`, `y`) would do, without doing it.
    pub fn hit_test(&self, x: i32, y: i32) -> Option<Action> {
        self.layout.hit_test(x, y)
    }

    /// Applies an action.
    pub fn apply(&mut self, action: Action) {
        match action {
            Action::Increment => self.counter = self.counter.wrapping_add(1),
            Action::SelectPage(page) if page < PAGES.len() => self.page = page,
            Action::SelectPage(_) => {}
            Action::ClearText => self.text.clear(),
        }
    }

    /// A tap or click at screen point (`x`, `y`): hit test, then apply.
    /// Returns the action taken, if the point was on something.
    pub fn tap(&mut self, x: i32, y: i32) -> Option<Action> {
        let action = self.hit_test(x, y)?;
        self.apply(action);
        Some(action)
    }

    /// A key event with a Linux evdev key code (`KEY_*`) and the evdev value
    /// (0 release, 1 press, 2 autorepeat). Letters, digits, space, a few
    /// punctuation keys and Backspace edit the text field; Enter clears it;
    /// Shift gives capitals. Returns whether the visible state changed.
    pub fn key(&mut self, code: u16, value: i32) -> bool {
        const KEY_BACKSPACE: u16 = 14;
        const KEY_ENTER: u16 = 28;
        const KEY_LEFTSHIFT: u16 = 42;
        const KEY_RIGHTSHIFT: u16 = 54;
        if code == KEY_LEFTSHIFT || code == KEY_RIGHTSHIFT {
            self.shift_held = value != 0;
            return false;
        }
        if value == 0 {
            return false;
        }
        match code {
            KEY_BACKSPACE => self.text.pop().is_some(),
            KEY_ENTER => {
                let changed = !self.text.is_empty();
                self.text.clear();
                changed
            }
            _ => match key_char(code, self.shift_held) {
                Some(c) if self.text.len() < MAX_TEXT_LEN => {
                    self.text.push(c);
                    true
                }
                _ => false,
            },
        }
    }

    /// Draws the whole screen at time `now` (see the crate docs for what
    /// `now` drives). Drawing is clipped to the target; errors of the target
    /// are returned as they are.
    pub fn draw<D>(&self, target: &mut D, now: Duration) -> Result<(), D::Error>
    where
        D: DrawTarget<Color = Rgb888>,
    {
        let l = &self.layout;
        let s = l.scale;
        target.clear(BACKGROUND)?;

        // Header: title on the left, clock on the right.
        target.fill_solid(&l.header, HEADER)?;
        let title_pos = Point::new(
            l.header.top_left.x + (l.header.size.height as i32 - char_h(s)) / 2,
            l.header.top_left.y + (l.header.size.height as i32 - char_h(s)) / 2,
        );
        draw_text(target, "Shoulder Kiosk", title_pos, s, TEXT)?;
        let mut clock = String::with_capacity(8);
        let day_secs = now.as_secs() % 86_400;
        // Writing into a String cannot fail.
        let _ = write!(
            clock,
            "{:02}:{:02}:{:02}",
            day_secs / 3600,
            day_secs / 60 % 60,
            day_secs % 60
        );
        draw_text_centered(target, &clock, l.clock.center(), s, TEXT)?;

        // Menu.
        target.fill_solid(&l.menu, MENU)?;
        for (i, (item, name)) in l.menu_items.iter().zip(PAGES).enumerate() {
            let (fill, ink) = if i == self.page {
                (MENU_SELECTED, TEXT_DARK)
            } else {
                (HEADER, TEXT)
            };
            rounded(target, item, fill, s)?;
            draw_text_centered(target, name, item.center(), s, ink)?;
        }

        // Main area, tinted per page.
        target.fill_solid(&l.main, PAGE_BACKGROUND[self.page % PAGE_BACKGROUND.len()])?;

        // Counter button: caption and the count, big.
        let button = &l.counter_button;
        rounded(target, button, COUNTER_BUTTON, s)?;
        let caption_y = button.top_left.y + button.size.height as i32 / 4;
        let caption = match self.page {
            0 => "Tap to count",
            1 => "Tap to add order",
            _ => "Tap to count settings",
        };
        draw_text_centered(
            target,
            caption,
            Point::new(button.center().x, caption_y),
            s,
            TEXT,
        )?;
        let mut count = String::with_capacity(10);
        let _ = write!(count, "{}", self.counter);
        let count_scale = (button.size.height / 2 / FONT.character_size.height).clamp(1, 3 * s);
        draw_text_centered(
            target,
            &count,
            Point::new(
                button.center().x,
                button.top_left.y + button.size.height as i32 * 5 / 8,
            ),
            count_scale,
            TEXT,
        )?;

        // Text field with the typed text (its tail if it does not fit) and a
        // blinking caret.
        let field = &l.text_field;
        target.fill_solid(field, FIELD)?;
        let pad = (field.size.height as i32 - char_h(s)).max(0) / 2;
        let room = (field.size.width as i32 - 2 * pad - char_w(s)).max(0) / char_w(s);
        let shown = tail(&self.text, room as usize);
        let text_pos = Point::new(field.top_left.x + pad, field.top_left.y + pad);
        draw_text(target, shown, text_pos, s, TEXT_DARK)?;
        if (now.as_millis() / CARET_BLINK_MS).is_multiple_of(2) {
            let caret = rect(
                text_pos.x + shown.len() as i32 * char_w(s),
                text_pos.y,
                (s as i32 * 2).max(2),
                char_h(s),
            );
            target.fill_solid(&caret, TEXT_DARK)?;
        }
        rounded(target, &l.clear_button, CLEAR_BUTTON, s)?;
        draw_text_centered(target, "Clear", l.clear_button.center(), s, TEXT)?;

        // Progress bar.
        let bar = &l.progress;
        target.fill_solid(bar, PROGRESS_TRACK)?;
        let done = (now.as_millis() % PROGRESS_PERIOD_MS) as u64 * u64::from(bar.size.width)
            / PROGRESS_PERIOD_MS as u64;
        target.fill_solid(
            &Rectangle::new(bar.top_left, Size::new(done as u32, bar.size.height)),
            PROGRESS_FILL,
        )?;
        Ok(())
    }
}

/// The character an evdev key code types on a US layout, if any.
fn key_char(code: u16, shift: bool) -> Option<char> {
    const DIGITS: &[u8] = b"1234567890";
    const DIGITS_SHIFTED: &[u8] = b"!@#$%^&*()";
    const ROW_Q: &[u8] = b"qwertyuiop";
    const ROW_A: &[u8] = b"asdfghjkl";
    const ROW_Z: &[u8] = b"zxcvbnm";
    let c = match code {
        2..=11 if shift => DIGITS_SHIFTED[usize::from(code - 2)],
        2..=11 => DIGITS[usize::from(code - 2)],
        16..=25 => ROW_Q[usize::from(code - 16)],
        30..=38 => ROW_A[usize::from(code - 30)],
        44..=50 => ROW_Z[usize::from(code - 44)],
        12 => {
            if shift {
                b'_'
            } else {
                b'-'
            }
        }
        51 => b',',
        52 => b'.',
        57 => b' ',
        _ => return None,
    };
    let c = char::from(c);
    Some(if shift { c.to_ascii_uppercase() } else { c })
}

/// The last `max_chars` characters of `text` (which is ASCII).
fn tail(text: &str, max_chars: usize) -> &str {
    let skip = text.len().saturating_sub(max_chars);
    text.get(skip..).unwrap_or("")
}

fn char_w(scale: u32) -> i32 {
    (FONT.character_size.width + FONT.character_spacing) as i32 * scale as i32
}

fn char_h(scale: u32) -> i32 {
    FONT.character_size.height as i32 * scale as i32
}

fn rounded<D>(target: &mut D, area: &Rectangle, color: Rgb888, scale: u32) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let r = 6 * scale;
    RoundedRectangle::with_equal_corners(*area, Size::new(r, r))
        .into_styled(PrimitiveStyle::with_fill(color))
        .draw(target)
}

/// Draws `text` with its top-left corner at `top_left`, each font pixel
/// scaled to `scale`×`scale` screen pixels.
fn draw_text<D>(
    target: &mut D,
    text: &str,
    top_left: Point,
    scale: u32,
    color: Rgb888,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let mut scaled = Scaled {
        inner: target,
        origin: top_left,
        scale: scale.max(1),
    };
    Text::with_baseline(
        text,
        Point::zero(),
        MonoTextStyle::new(FONT, color),
        Baseline::Top,
    )
    .draw(&mut scaled)?;
    Ok(())
}

/// Draws `text` centred on `center`.
fn draw_text_centered<D>(
    target: &mut D,
    text: &str,
    center: Point,
    scale: u32,
    color: Rgb888,
) -> Result<(), D::Error>
where
    D: DrawTarget<Color = Rgb888>,
{
    let width = text.len() as i32 * char_w(scale) - FONT.character_spacing as i32 * scale as i32;
    let top_left = Point::new(center.x - width / 2, center.y - char_h(scale) / 2);
    draw_text(target, text, top_left, scale, color)
}

/// Draw target adapter that blows each pixel up to a `scale`×`scale` square,
/// placed at `origin`: embedded-graphics' bitmap fonts are small, and a kiosk
/// is read at arm's length.
struct Scaled<'a, D> {
    inner: &'a mut D,
    origin: Point,
    scale: u32,
}

impl<D: DrawTarget<Color = Rgb888>> Dimensions for Scaled<'_, D> {
    fn bounding_box(&self) -> Rectangle {
        let outer = self.inner.bounding_box();
        let s = self.scale as i32;
        let tl = outer.top_left - self.origin;
        Rectangle::new(
            Point::new(tl.x.div_euclid(s), tl.y.div_euclid(s)),
            Size::new(
                outer.size.width.div_ceil(self.scale) + 1,
                outer.size.height.div_ceil(self.scale) + 1,
            ),
        )
    }
}

impl<D: DrawTarget<Color = Rgb888>> DrawTarget for Scaled<'_, D> {
    type Color = Rgb888;
    type Error = D::Error;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let s = self.scale as i32;
        for Pixel(p, color) in pixels {
            let area = Rectangle::new(
                self.origin + Point::new(p.x * s, p.y * s),
                Size::new(self.scale, self.scale),
            );
            self.inner.fill_solid(&area, color)?;
        }
        Ok(())
    }
}

/// Error of [`Xrgb8888Canvas::new`]: the buffer cannot hold the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanvasError {
    /// `pitch` is smaller than `width * 4`.
    PitchTooSmall {
        /// Requested width in pixels.
        width: u32,
        /// Given pitch in bytes.
        pitch: usize,
    },
    /// The buffer is shorter than `pitch * height`.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        len: usize,
    },
}

impl core::fmt::Display for CanvasError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PitchTooSmall { width, pitch } => write!(
                f,
                "pitch {pitch} bytes is too small for {width} XRGB8888 pixels per row \
                 (needs at least width * 4)"
            ),
            Self::BufferTooSmall { needed, len } => write!(
                f,
                "pixel buffer of {len} bytes is too small: the frame needs {needed} bytes \
                 (pitch * height)"
            ),
        }
    }
}

impl std::error::Error for CanvasError {}

/// A draw target over a caller's XRGB8888 little-endian pixel buffer: each
/// pixel is the bytes B, G, R, 0; rows start every `pitch` bytes. Drawing
/// outside the `width`×`height` frame is clipped.
#[derive(Debug)]
pub struct Xrgb8888Canvas<'a> {
    buf: &'a mut [u8],
    width: u32,
    height: u32,
    pitch: usize,
}

impl<'a> Xrgb8888Canvas<'a> {
    /// Wraps `buf` as a `width`×`height` frame with rows `pitch` bytes apart.
    pub fn new(
        buf: &'a mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<Self, CanvasError> {
        let row = width as usize * 4;
        if pitch < row {
            return Err(CanvasError::PitchTooSmall { width, pitch });
        }
        let needed = pitch
            .checked_mul(height as usize)
            .ok_or(CanvasError::BufferTooSmall {
                needed: usize::MAX,
                len: buf.len(),
            })?;
        if buf.len() < needed {
            return Err(CanvasError::BufferTooSmall {
                needed,
                len: buf.len(),
            });
        }
        Ok(Self {
            buf,
            width,
            height,
            pitch,
        })
    }

    /// The frame's pixels, as given to [`Xrgb8888Canvas::new`].
    pub fn pixels(&self) -> &[u8] {
        self.buf
    }

    /// The pixel at (`x`, `y`), if inside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = y as usize * self.pitch + x as usize * 4;
        let px = self.buf.get(i..i + 4)?;
        Some(Rgb888::new(px[2], px[1], px[0]))
    }
}

fn xrgb(color: Rgb888) -> [u8; 4] {
    [color.b(), color.g(), color.r(), 0]
}

impl OriginDimensions for Xrgb8888Canvas<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Xrgb8888Canvas<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, color) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
                continue;
            }
            let i = p.y as usize * self.pitch + p.x as usize * 4;
            if let Some(px) = self.buf.get_mut(i..i + 4) {
                px.copy_from_slice(&xrgb(color));
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        let area = area.intersection(&self.bounding_box());
        let Some(bottom_right) = area.bottom_right() else {
            return Ok(());
        };
        let px = xrgb(color);
        let (x0, x1) = (area.top_left.x as usize, bottom_right.x as usize + 1);
        for y in area.top_left.y as usize..=bottom_right.y as usize {
            let row = y * self.pitch;
            if let Some(span) = self.buf.get_mut(row + x0 * 4..row + x1 * 4) {
                for chunk in span.chunks_exact_mut(4) {
                    chunk.copy_from_slice(&px);
                }
            }
        }
        Ok(())
    }

    fn clear(&mut self, color: Self::Color) -> Result<(), Self::Error> {
        self.fill_solid(&self.bounding_box(), color)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: Duration = Duration::from_secs(12 * 3600);

    fn render(ui: &KioskUi, now: Duration) -> Vec<u8> {
        let size = ui.layout().size;
        let pitch = size.width as usize * 4;
        let mut buf = vec![0xaa; pitch * size.height as usize];
        let mut canvas = Xrgb8888Canvas::new(&mut buf, size.width, size.height, pitch).unwrap();
        ui.draw(&mut canvas, now).unwrap();
        buf
    }

    fn at(buf: &[u8], width: u32, x: i32, y: i32) -> Rgb888 {
        let i = (y as usize * width as usize + x as usize) * 4;
        Rgb888::new(buf[i + 2], buf[i + 1], buf[i])
    }

    fn count_color(buf: &[u8], width: u32, area: &Rectangle, color: Rgb888) -> usize {
        area.points()
            .filter(|p| at(buf, width, p.x, p.y) == color)
            .count()
    }

    #[test]
    fn tap_on_counter_button_increments() {
        let mut ui = KioskUi::new(800, 480);
        let c = ui.layout().counter_button.center();
        assert_eq!(ui.tap(c.x, c.y), Some(Action::Increment));
        assert_eq!(ui.tap(c.x, c.y), Some(Action::Increment));
        assert_eq!(ui.counter(), 2);
        // The header is not a button.
        assert_eq!(ui.tap(1, 1), None);
        assert_eq!(ui.counter(), 2);
    }

    #[test]
    fn menu_and_clear_buttons() {
        let mut ui = KioskUi::new(1024, 768);
        let orders = ui.layout().menu_items[1].center();
        assert_eq!(ui.tap(orders.x, orders.y), Some(Action::SelectPage(1)));
        assert_eq!(ui.page(), 1);
        ui.key(35, 1); // h
        ui.key(23, 1); // i
        assert_eq!(ui.text(), "hi");
        let clear = ui.layout().clear_button.center();
        assert_eq!(ui.tap(clear.x, clear.y), Some(Action::ClearText));
        assert_eq!(ui.text(), "");
        ui.apply(Action::SelectPage(99));
        assert_eq!(ui.page(), 1);
    }

    #[test]
    fn keys_edit_the_text_field() {
        let mut ui = KioskUi::new(640, 480);
        assert!(!ui.key(42, 1)); // shift down
        assert!(ui.key(35, 1)); // H
        assert!(!ui.key(35, 0)); // release does nothing
        ui.key(42, 0);
        ui.key(23, 1); // i
        ui.key(2, 2); // autorepeat of 1
        assert_eq!(ui.text(), "Hi1");
        assert!(ui.key(14, 1)); // backspace
        assert_eq!(ui.text(), "Hi");
        assert!(!ui.key(1, 1)); // Esc types nothing
        for _ in 0..200 {
            ui.key(30, 1);
        }
        assert_eq!(ui.text().len(), MAX_TEXT_LEN);
        assert!(ui.key(28, 1)); // Enter clears
        assert_eq!(ui.text(), "");
    }

    #[test]
    fn draw_fills_the_expected_areas() {
        for (w, h) in [(320, 240), (800, 480), (1024, 768), (1920, 1080)] {
            let mut ui = KioskUi::new(w, h);
            let buf = render(&ui, NOON);
            // Every pixel was written (the 0xaa fill had a non-zero X byte).
            assert!(buf.chunks_exact(4).all(|px| px[3] == 0), "{w}x{h}");
            let l = *ui.layout();
            let button = count_color(&buf, w, &l.counter_button, COUNTER_BUTTON);
            assert!(
                button * 10
                    > l.counter_button.size.width as usize
                        * l.counter_button.size.height as usize
                        * 6,
                "{w}x{h}: counter button mostly green"
            );
            let white_in_button = count_color(&buf, w, &l.counter_button, TEXT);
            assert!(white_in_button > 0, "{w}x{h}: counter text drawn");
            assert!(
                count_color(&buf, w, &l.clock, TEXT) > 0,
                "{w}x{h}: clock drawn"
            );
            assert!(count_color(&buf, w, &l.menu_items[0], MENU_SELECTED) > 0);
            // Every area lies inside the screen and they do not overlap.
            let screen = Rectangle::new(Point::zero(), Size::new(w, h));
            let areas = [
                l.counter_button,
                l.text_field,
                l.clear_button,
                l.progress,
                l.menu_items[2],
            ];
            for a in &areas {
                assert_eq!(a.intersection(&screen), *a, "{w}x{h}: {a:?} on screen");
                assert!(a.size.width > 0 && a.size.height > 0);
            }
            for (i, a) in areas.iter().enumerate() {
                for b in &areas[i + 1..] {
                    assert!(
                        a.intersection(b).is_zero_sized(),
                        "{w}x{h}: {a:?} overlaps {b:?}"
                    );
                }
            }

            // A tap changes the counter digits and nothing outside the button.
            let c = l.counter_button.center();
            ui.tap(c.x, c.y);
            let after = render(&ui, NOON);
            let changed: Vec<Point> = screen
                .points()
                .filter(|p| at(&buf, w, p.x, p.y) != at(&after, w, p.x, p.y))
                .collect();
            assert!(!changed.is_empty(), "{w}x{h}: counter redraw visible");
            assert!(changed.iter().all(|p| l.counter_button.contains(*p)));
        }
    }

    #[test]
    fn time_moves_clock_and_progress_only() {
        let ui = KioskUi::new(640, 480);
        let a = render(&ui, NOON);
        let b = render(&ui, NOON);
        assert_eq!(a, b, "drawing is deterministic");
        let c = render(&ui, NOON + Duration::from_millis(1_250));
        let l = ui.layout();
        let screen = Rectangle::new(Point::zero(), l.size);
        let mut changed = screen
            .points()
            .filter(|p| at(&a, 640, p.x, p.y) != at(&c, 640, p.x, p.y));
        assert!(
            changed
                .all(|p| l.clock.contains(p) || l.progress.contains(p) || l.text_field.contains(p))
        );
        assert_ne!(a, c);
    }

    #[test]
    fn canvas_rejects_small_buffers_and_clips() {
        let mut buf = vec![0u8; 10 * 4 * 10];
        assert!(matches!(
            Xrgb8888Canvas::new(&mut buf, 10, 10, 39),
            Err(CanvasError::PitchTooSmall { .. })
        ));
        assert!(matches!(
            Xrgb8888Canvas::new(&mut buf, 10, 11, 40),
            Err(CanvasError::BufferTooSmall {
                needed: 440,
                len: 400
            })
        ));
        let mut canvas = Xrgb8888Canvas::new(&mut buf, 10, 10, 40).unwrap();
        canvas
            .fill_solid(
                &Rectangle::new(Point::new(-5, 8), Size::new(100, 100)),
                Rgb888::new(1, 2, 3),
            )
            .unwrap();
        Pixel(Point::new(10, 0), Rgb888::RED)
            .draw(&mut canvas)
            .unwrap();
        assert_eq!(canvas.pixel(0, 9), Some(Rgb888::new(1, 2, 3)));
        assert_eq!(canvas.pixel(0, 7), Some(Rgb888::new(0, 0, 0)));
        assert_eq!(&canvas.pixels()[9 * 40..9 * 40 + 4], &[3, 2, 1, 0]);
        assert_eq!(canvas.pixel(10, 0), None);
    }

    #[test]
    fn padded_pitch_leaves_padding_alone() {
        let mut buf = vec![0x77u8; 48 * 4];
        let mut canvas = Xrgb8888Canvas::new(&mut buf, 10, 4, 48).unwrap();
        canvas.clear(Rgb888::WHITE).unwrap();
        for row in buf.chunks_exact(48) {
            assert_eq!(&row[40..], &[0x77; 8]);
            assert_eq!(&row[..4], &[0xff, 0xff, 0xff, 0]);
        }
    }
}
