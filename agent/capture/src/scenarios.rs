//! Deterministic kiosk-like frame sequences, for the benchmarks, the encoder
//! tests and latency measurements (written into a raw file frame by frame).
//!
//! Every scenario draws the demo kiosk screen ([`shoulder_kiosk_ui`]) and
//! changes it the way kiosks change: a focus ring moving over the menu, a
//! form typed into one character per frame, a list scrolling 20 pixels per
//! frame, the clock and progress bar ticking, whole-page switches, and photo
//! noise as the worst case. Frame `i` of a scenario is always the same pixels.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use shoulder_kiosk_ui::{Action, KioskUi, PAGES, Xrgb8888Canvas};

/// Pixels the list scenario scrolls per frame.
pub const SCROLL_STEP: usize = 20;
/// Items in the scrolling list: enough for several hundred frames.
const LIST_ITEMS: usize = 400;
/// Height of one list item in pixels (before the UI scale).
const LIST_ITEM_HEIGHT: u32 = 56;
/// The time every scenario but the clock shows (12:00:00).
const NOON: Duration = Duration::from_secs(12 * 3600);
/// KEY_A .. KEY_L row and friends: what the typing scenario types, cycling.
const TYPED_KEYS: [u16; 12] = [30, 31, 32, 33, 34, 35, 36, 37, 38, 57, 16, 17];
/// Most characters typed before the typing scenario clears the field (Enter)
/// and starts over; fewer when the field is narrower (the scenario fills a
/// form field, it does not scroll text sideways).
const TYPED_PER_FORM: usize = 48;

/// One kind of screen activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A focus ring moves from menu entry to menu entry.
    Menu,
    /// One character typed into the text field per frame.
    Typing,
    /// A list in the main area scrolls by [`SCROLL_STEP`] pixels per frame.
    Scroll,
    /// The clock advances one second per frame; the progress bar moves.
    Clock,
    /// The page changes every frame (menu selection and main area).
    PageSwitch,
    /// Every pixel random, every frame (worst case).
    Noise,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Menu,
        Scenario::Typing,
        Scenario::Scroll,
        Scenario::Clock,
        Scenario::PageSwitch,
        Scenario::Noise,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Menu => "menu",
            Scenario::Typing => "typing",
            Scenario::Scroll => "scroll",
            Scenario::Clock => "clock",
            Scenario::PageSwitch => "page-switch",
            Scenario::Noise => "noise",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// Renders the frames of one scenario as XRGB8888 (bytes B, G, R, 0), rows
/// packed (`width * 4` bytes).
#[derive(Debug)]
pub struct ScenarioFrames {
    scenario: Scenario,
    width: u32,
    height: u32,
    /// The list, drawn once, as tall as all its items (scroll scenario).
    list: Vec<u8>,
    list_rect: Rectangle,
    /// Characters that fit the text field.
    per_form: usize,
}

impl ScenarioFrames {
    /// Frames of `scenario` at `width`×`height` (each at least 1).
    pub fn new(scenario: Scenario, width: u32, height: u32) -> Self {
        let (width, height) = (width.max(1), height.max(1));
        let layout = *KioskUi::new(width, height).layout();
        let mut me = Self {
            scenario,
            width,
            height,
            list: Vec::new(),
            list_rect: layout.main,
            per_form: (layout.text_field.size.width / (10 * layout.scale.max(1)))
                .saturating_sub(2)
                .clamp(1, TYPED_PER_FORM as u32) as usize,
        };
        if scenario == Scenario::Scroll {
            me.draw_list(layout.scale);
        }
        me
    }

    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes of one frame.
    pub fn frame_len(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    /// A new frame buffer of the right size.
    pub fn buffer(&self) -> Vec<u8> {
        vec![0; self.frame_len()]
    }

    /// Draws frame `index` into `out` (`frame_len()` bytes; shorter buffers
    /// are left as they are).
    pub fn render(&self, index: usize, out: &mut [u8]) {
        let (w, h) = (self.width, self.height);
        let pitch = w as usize * 4;
        let Ok(mut canvas) = Xrgb8888Canvas::new(out, w, h, pitch) else {
            return;
        };
        let mut ui = KioskUi::new(w, h);
        let mut now = NOON;
        match self.scenario {
            Scenario::Menu | Scenario::Scroll | Scenario::Noise => {}
            Scenario::Typing => {
                for k in 0..index % self.per_form {
                    ui.key(TYPED_KEYS[k % TYPED_KEYS.len()], 1);
                }
            }
            Scenario::Clock => now += Duration::from_secs(index as u64),
            Scenario::PageSwitch => ui.apply(Action::SelectPage(index % PAGES.len())),
        }
        // Infallible: the canvas clips.
        let _ = ui.draw(&mut canvas, now);
        match self.scenario {
            Scenario::Menu => {
                let items = ui.layout().menu_items;
                let item = items[index % items.len()];
                let ring = PrimitiveStyle::with_stroke(Rgb888::new(0xff, 0xe0, 0x40), 4);
                let _ = item.into_styled(ring).draw(&mut canvas);
            }
            Scenario::Scroll => self.blit_list(index * SCROLL_STEP, out),
            Scenario::Noise => noise(index as u64, out),
            _ => {}
        }
    }

    fn draw_list(&mut self, scale: u32) {
        let r = self.list_rect;
        let (w, item_h) = (r.size.width, LIST_ITEM_HEIGHT * scale.max(1) / 2);
        let item_h = item_h.max(24);
        let total_h = item_h * LIST_ITEMS as u32 + r.size.height;
        let mut list = vec![0u8; w as usize * 4 * total_h as usize];
        if let Ok(mut canvas) = Xrgb8888Canvas::new(&mut list, w, total_h, w as usize * 4) {
            let _ = canvas.clear(Rgb888::new(0x1e, 0x27, 0x33));
            let text = MonoTextStyle::new(&FONT_10X20, Rgb888::new(0xf0, 0xf0, 0xf0));
            for i in 0..LIST_ITEMS {
                let y = (i as u32 * item_h) as i32;
                let bg = if i % 2 == 0 {
                    Rgb888::new(0x2b, 0x36, 0x45)
                } else {
                    Rgb888::new(0x24, 0x2e, 0x3b)
                };
                let _ = Rectangle::new(Point::new(0, y), Size::new(w, item_h - 2))
                    .into_styled(PrimitiveStyle::with_fill(bg))
                    .draw(&mut canvas);
                let line = format!(
                    "Order #{:05}   {} items   {:>4}.{:02} EUR   table {}",
                    10_234 + i * 7,
                    1 + i % 9,
                    (i * 37) % 300,
                    (i * 13) % 100,
                    1 + i % 24
                );
                let _ = Text::with_baseline(&line, Point::new(16, y + 8), text, Baseline::Top)
                    .draw(&mut canvas);
            }
        }
        self.list = list;
    }

    /// Copies the list window at `offset` into the main area of `out`.
    fn blit_list(&self, offset: usize, out: &mut [u8]) {
        let r = self.list_rect;
        let lw = r.size.width as usize * 4;
        if lw == 0 {
            return;
        }
        let list_h = self.list.len() / lw;
        let visible = r.size.height as usize;
        let max_offset = list_h.saturating_sub(visible).max(1);
        let offset = offset % max_offset;
        let pitch = self.width as usize * 4;
        let (x0, y0) = (r.top_left.x.max(0) as usize, r.top_left.y.max(0) as usize);
        for row in 0..visible.min(self.height as usize - y0.min(self.height as usize)) {
            let src = &self.list[(offset + row) * lw..(offset + row + 1) * lw];
            let dst = (y0 + row) * pitch + x0 * 4;
            if let Some(d) = out.get_mut(dst..dst + lw) {
                d.copy_from_slice(src);
            }
        }
    }
}

/// Random pixels from a fixed seed (xorshift64*), X byte zero.
fn noise(seed: u64, out: &mut [u8]) {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for px in out.chunks_exact_mut(8) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let v = s.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        px.copy_from_slice(&[v[0], v[1], v[2], 0, v[4], v[5], v[6], 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_deterministic_and_change() {
        for sc in Scenario::ALL {
            let f = ScenarioFrames::new(sc, 480, 270);
            let (mut a, mut b, mut c) = (f.buffer(), f.buffer(), f.buffer());
            f.render(1, &mut a);
            f.render(1, &mut b);
            f.render(2, &mut c);
            assert_eq!(a, b, "{sc}");
            assert_ne!(a, c, "{sc}");
            assert_eq!(sc.name().parse::<Scenario>().unwrap(), sc);
        }
        assert!(
            "slideshow"
                .parse::<Scenario>()
                .unwrap_err()
                .contains("page-switch")
        );
    }
}
