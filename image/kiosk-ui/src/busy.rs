//! Busy drawing: what an application that never stands still does to its
//! screen, in place, one stroke at a time: boxes moving across it,
//! rectangles (buttons, text, a caret), a pane of text scrolling (rows moved
//! with `memmove`, the exposed rows written fresh), whole new pages, and
//! photo-like content where every byte changes.
//!
//! Screen capture has to keep up with this while it reads the same memory:
//! the kiosk app draws it into its one DRM buffer (`--busy-file`), and tests
//! draw it into a raw file the agent captures, both at full speed. Seeded,
//! so a seed names the sequence of strokes (where they land relative to the
//! reader still depends on timing).

use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use embedded_graphics::text::{Baseline, Text};

use crate::{CanvasError, Xrgb8888Canvas};

/// Boxes that move across the screen.
const SPRITES: usize = 4;
/// A stroke's kind is picked by a number below this: 12 in 32 move the
/// boxes, 8 draw a rectangle, 7 scroll, 3 draw a page and 2 a photo.
const ROLLS: usize = 32;
/// The rolls below this draw strokes that leave most of the screen alone.
const SMALL_ROLLS: usize = 27;
/// Words the scrolling pane writes, a log line at a time.
const WORDS: [&str; 16] = [
    "order", "4711", "shipped", "pump", "2", "pressure", "OK", "valve", "closed", "12:03:17",
    "batch", "0042", "warning", "temp", "81.5C", "done",
];

/// One kind of change, as [`BusyPainter::stroke`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    /// Every box moved one step and was drawn at its new place.
    MovingBoxes,
    /// A rectangle, solid or patterned.
    Rectangle,
    /// A region scrolled vertically; the rows it exposed got a line of text.
    Scroll,
    /// A whole new page: coloured bands with headings.
    Page,
    /// Every byte of the screen new (the padding byte X too, as a sloppy
    /// photo viewer writes it).
    Photo,
}

#[derive(Debug, Clone, Copy)]
struct Sprite {
    x: i32,
    y: i32,
    dx: i32,
    dy: i32,
    color: Rgb888,
}

/// Draws busy strokes into an XRGB8888 buffer; see the module docs.
#[derive(Debug, Clone)]
pub struct BusyPainter {
    rng: u64,
    sprites: [Sprite; SPRITES],
}

impl BusyPainter {
    /// A painter whose strokes follow from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = seed;
        let sprites = core::array::from_fn(|_| Sprite {
            x: (splitmix(&mut rng) % 4096) as i32,
            y: (splitmix(&mut rng) % 4096) as i32,
            dx: 3 + (splitmix(&mut rng) % 12) as i32,
            dy: 2 + (splitmix(&mut rng) % 9) as i32,
            color: color(splitmix(&mut rng)),
        });
        Self { rng, sprites }
    }

    /// The next number of the painter's generator, for callers that make
    /// strokes of their own from the same seed.
    pub fn random(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.random() % n.max(1) as u64) as usize
    }

    /// Draws one stroke of any kind into `pixels`, a `width`×`height` frame
    /// with rows `pitch` bytes apart.
    pub fn stroke(
        &mut self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<Stroke, CanvasError> {
        let roll = self.below(ROLLS);
        self.draw(roll, pixels, width, height, pitch)
    }

    /// Like [`BusyPainter::stroke`], but never a whole new screen (no
    /// [`Stroke::Page`], no [`Stroke::Photo`]): most of the screen stays as
    /// it was, so a part the reader got wrong stays wrong unless it catches
    /// it.
    pub fn small_stroke(
        &mut self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<Stroke, CanvasError> {
        let roll = self.below(SMALL_ROLLS);
        self.draw(roll, pixels, width, height, pitch)
    }

    /// Draws the stroke that `roll` (below [`ROLLS`]) picks.
    fn draw(
        &mut self,
        roll: usize,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<Stroke, CanvasError> {
        // Checks the buffer once for every kind of stroke.
        Xrgb8888Canvas::new(pixels, width, height, pitch)?;
        let (w, h) = (width as usize, height as usize);
        Ok(match roll {
            0..=11 => {
                self.move_boxes(pixels, width, height, pitch)?;
                Stroke::MovingBoxes
            }
            12..=19 => {
                let (x, y) = (self.below(w), self.below(h));
                let rw = 1 + self.below((w - x).min(w / 4 + 1));
                let rh = 1 + self.below((h - y).min(h / 4 + 1));
                let c = color(self.random());
                let mut canvas = Xrgb8888Canvas::new(pixels, width, height, pitch)?;
                let area = Rectangle::new(
                    Point::new(x as i32, y as i32),
                    Size::new(rw as u32, rh as u32),
                );
                if self.below(2) == 0 {
                    let _ = canvas.fill_solid(&area, c);
                } else {
                    let other = color(self.random());
                    let _ = canvas.draw_iter(
                        area.points()
                            .map(|p| Pixel(p, if (p.x ^ p.y) & 4 == 0 { c } else { other })),
                    );
                }
                Stroke::Rectangle
            }
            20..=26 => {
                self.scroll(pixels, width, height, pitch)?;
                Stroke::Scroll
            }
            27..=29 => {
                self.page(pixels, width, height, pitch)?;
                Stroke::Page
            }
            _ => {
                let mut r = self.random();
                for y in 0..h {
                    let row = &mut pixels[y * pitch..y * pitch + w * 4];
                    for chunk in row.chunks_mut(8) {
                        let v = splitmix(&mut r).to_le_bytes();
                        chunk.copy_from_slice(&v[..chunk.len()]);
                    }
                }
                Stroke::Photo
            }
        })
    }

    fn move_boxes(
        &mut self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<(), CanvasError> {
        let size = Size::new((width / 10).max(1), (height / 10).max(1));
        let (max_x, max_y) = ((width - size.width) as i32, (height - size.height) as i32);
        let mut canvas = Xrgb8888Canvas::new(pixels, width, height, pitch)?;
        for s in &mut self.sprites {
            s.x = bounce(s.x + s.dx, max_x, &mut s.dx);
            s.y = bounce(s.y + s.dy, max_y, &mut s.dy);
            let body = Rectangle::new(Point::new(s.x, s.y), size);
            let _ = canvas.fill_solid(&body, Rgb888::WHITE);
            let _ = canvas.fill_solid(&body.offset(-2), s.color);
        }
        Ok(())
    }

    /// A pane of text scrolling up or down: rows moved in place (a
    /// `memmove` per row, as a terminal or a log view does), then a line of
    /// text written into the rows it exposed.
    fn scroll(
        &mut self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<(), CanvasError> {
        let (w, h) = (width as usize, height as usize);
        let x0 = self.below(w / 2);
        let x1 = x0 + 1 + self.below(w - x0);
        let y0 = self.below(h / 2);
        let y1 = y0 + 2 + self.below(h - y0 - 1);
        let y1 = y1.min(h);
        let rows = y1 - y0;
        let line = FONT_10X20.character_size.height as usize + 2;
        let k = 1 + self.below(line.min(rows - 1).max(1));
        let up = self.below(2) == 0;
        let (b0, b1) = (x0 * 4, x1 * 4);
        if up {
            for y in y0..y1 - k {
                let src = (y + k) * pitch;
                pixels.copy_within(src + b0..src + b1, y * pitch + b0);
            }
        } else {
            for y in (y0 + k..y1).rev() {
                let src = (y - k) * pitch;
                pixels.copy_within(src + b0..src + b1, y * pitch + b0);
            }
        }
        let exposed_y = if up { y1 - k } else { y0 };
        let exposed = Rectangle::new(
            Point::new(x0 as i32, exposed_y as i32),
            Size::new((x1 - x0) as u32, k as u32),
        );
        let ink = color(self.random());
        let paper = color(self.random());
        let mut canvas = Xrgb8888Canvas::new(pixels, width, height, pitch)?;
        let mut clipped = canvas.clipped(&exposed);
        let _ = clipped.fill_solid(&exposed, paper);
        // A line of text whose top or bottom rows show in the exposed strip,
        // as a line of a log scrolls in.
        let text_y = if up {
            exposed_y as i32
        } else {
            (exposed_y + k) as i32 - line as i32
        };
        let mut x = x0 as i32 + 2;
        for _ in 0..6 {
            let word = WORDS[self.below(WORDS.len())];
            let style = MonoTextStyle::new(&FONT_10X20, ink);
            let _ = Text::with_baseline(word, Point::new(x, text_y), style, Baseline::Top)
                .draw(&mut clipped);
            x += (word.len() as i32 + 1) * 11;
        }
        Ok(())
    }

    /// A new page: horizontal bands, each with a heading.
    fn page(
        &mut self,
        pixels: &mut [u8],
        width: u32,
        height: u32,
        pitch: usize,
    ) -> Result<(), CanvasError> {
        let mut canvas = Xrgb8888Canvas::new(pixels, width, height, pitch)?;
        let band = 24 + self.below(64) as u32;
        let mut y = 0;
        while y < height {
            let area = Rectangle::new(Point::new(0, y as i32), Size::new(width, band));
            let _ = canvas.fill_solid(&area, color(self.random()));
            let style = MonoTextStyle::new(&FONT_10X20, color(self.random()));
            let word = WORDS[self.below(WORDS.len())];
            let _ = Text::with_baseline(word, Point::new(8, y as i32 + 2), style, Baseline::Top)
                .draw(&mut canvas);
            y += band;
        }
        Ok(())
    }
}

/// Keeps `pos` within `0..=max`, turning `d` around at the edges.
fn bounce(pos: i32, max: i32, d: &mut i32) -> i32 {
    let max = max.max(0);
    if pos < 0 {
        *d = d.abs();
        0
    } else if pos > max {
        *d = -d.abs();
        max
    } else {
        pos
    }
}

fn color(v: u64) -> Rgb888 {
    Rgb888::new(v as u8, (v >> 8) as u8, (v >> 16) as u8)
}

/// splitmix64: a tiny seeded generator, so a seed names one sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: u32, pitch: usize) -> Vec<u8> {
        (0..pitch * h as usize).map(|i| (i / 7) as u8).collect()
    }

    #[test]
    fn every_stroke_kind_draws_and_a_seed_names_the_sequence() {
        let (w, h, pitch) = (200, 120, 208 * 4);
        let (mut a, mut b) = (frame(h, pitch), frame(h, pitch));
        let (mut pa, mut pb) = (BusyPainter::new(7), BusyPainter::new(7));
        let mut seen = Vec::new();
        for _ in 0..400 {
            let before = a.clone();
            let s = pa.stroke(&mut a, w, h, pitch).unwrap();
            assert_eq!(pb.stroke(&mut b, w, h, pitch).unwrap(), s);
            if !seen.contains(&s) {
                seen.push(s);
            }
            // Padding past each row's pixels is never written.
            for y in 0..h as usize {
                assert_eq!(
                    a[y * pitch + w as usize * 4..(y + 1) * pitch],
                    before[y * pitch + w as usize * 4..(y + 1) * pitch],
                    "{s:?} wrote into the padding of row {y}"
                );
            }
        }
        assert_eq!(a, b, "same seed, same pixels");
        assert_eq!(seen.len(), 5, "{seen:?}");
        for _ in 0..200 {
            let s = pa.small_stroke(&mut a, w, h, pitch).unwrap();
            assert!(!matches!(s, Stroke::Page | Stroke::Photo), "{s:?}");
        }
        let mut c = frame(h, pitch);
        let mut pc = BusyPainter::new(8);
        for _ in 0..400 {
            pc.stroke(&mut c, w, h, pitch).unwrap();
        }
        assert_ne!(a, c, "another seed, other pixels");
    }

    #[test]
    fn a_scroll_moves_rows_and_small_screens_work() {
        // Tiny screens: no stroke may index out of bounds.
        for (w, h) in [(1, 1), (1, 3), (3, 1), (8, 2), (33, 17)] {
            let pitch = w as usize * 4;
            let mut px = frame(h, pitch);
            let mut p = BusyPainter::new(u64::from(w * 31 + h));
            for _ in 0..300 {
                p.stroke(&mut px, w, h, pitch).unwrap();
            }
        }
        let mut short = vec![0; 10];
        assert!(BusyPainter::new(1).stroke(&mut short, 4, 4, 16).is_err());
    }
}
