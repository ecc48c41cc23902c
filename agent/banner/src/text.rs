//! Text: font choice by pixel size, measuring, ellipsis, wrapping.
//!
//! The banner must be readable at arm's length from a 320×240 panel up to a
//! 4K kiosk. embedded-graphics' mono fonts stop at 10×20 px and scaled up they
//! look like a terminal, so the banner uses FreeUniversal Bold (SIL Open Font
//! License, via the `u8g2-fonts` crate) at seven sizes from 11 to 42 px: a
//! clean proportional bold face with umlauts and accents (Latin-1), one bit per
//! pixel so it stays crisp and high-contrast on any background. Sizes above
//! 42 px draw a smaller size with each font pixel as an N×N block, which at
//! 4K is still sharp. The seven sizes cost about 47 KiB of read-only data.

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use u8g2_fonts::FontRenderer;
use u8g2_fonts::fonts;
use u8g2_fonts::types::{FontColor, VerticalPosition};

/// The sizes linked into the binary, in pixels, with their renderers.
static SIZES: [(u32, FontRenderer); 7] = [
    (11, FontRenderer::new::<fonts::u8g2_font_fub11_tf>()),
    (14, FontRenderer::new::<fonts::u8g2_font_fub14_tf>()),
    (17, FontRenderer::new::<fonts::u8g2_font_fub17_tf>()),
    (20, FontRenderer::new::<fonts::u8g2_font_fub20_tf>()),
    (25, FontRenderer::new::<fonts::u8g2_font_fub25_tf>()),
    (30, FontRenderer::new::<fonts::u8g2_font_fub30_tf>()),
    (42, FontRenderer::new::<fonts::u8g2_font_fub42_tf>()),
];

/// Past this many pixels a size is drawn scaled up rather than picked:
/// the largest real size plus a little, so 44 px stays the crisp 42.
const LARGEST_UNSCALED: u32 = 46;

/// What replaces the cut-off end of a long text. The fonts cover Latin-1
/// only, which has no "…" glyph.
pub const ELLIPSIS: &str = "...";

/// A font at one size: a bitmap face and an integer pixel scale.
#[derive(Clone, Copy)]
pub struct Font {
    face: &'static FontRenderer,
    nominal: u32,
    scale: u32,
}

impl std::fmt::Debug for Font {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Font({} px x{})", self.nominal, self.scale)
    }
}

impl Font {
    /// The font closest to `px` pixels tall without going over (at least the
    /// smallest size, 11 px).
    pub fn for_size(px: u32) -> Font {
        let scale = if px > LARGEST_UNSCALED {
            px.div_ceil(SIZES[SIZES.len() - 1].0)
        } else {
            1
        };
        let per = px / scale;
        let (nominal, face) = SIZES
            .iter()
            .rev()
            .find(|(size, _)| *size <= per)
            .unwrap_or(&SIZES[0]);
        Font {
            face,
            nominal: *nominal,
            scale,
        }
    }

    /// Nominal size times scale, in pixels.
    pub fn size(&self) -> u32 {
        self.nominal * self.scale
    }

    fn ascent(&self) -> i32 {
        i32::from(self.face.get_ascent()) * self.scale as i32
    }

    fn descent(&self) -> i32 {
        -i32::from(self.face.get_descent()) * self.scale as i32
    }

    /// Height of one line box (ascent + descent): text drawn at `top` stays
    /// within `top .. top + line_height()`.
    pub fn line_height(&self) -> u32 {
        (self.ascent() + self.descent()).max(1) as u32
    }

    /// Horizontal advance of `text`, in pixels.
    pub fn width(&self, text: &str) -> u32 {
        let text = displayable(text);
        match self.face.get_rendered_dimensions(
            text.as_str(),
            Point::zero(),
            VerticalPosition::Baseline,
        ) {
            Ok(d) => {
                let bbox_right = d
                    .bounding_box
                    .map(|b| b.top_left.x + b.size.width as i32)
                    .unwrap_or(0);
                d.advance.x.max(bbox_right).max(0) as u32 * self.scale
            }
            Err(_) => 0,
        }
    }

    /// Draws one line with its line box's top-left corner at `top_left`.
    pub fn draw<D>(&self, text: &str, top_left: Point, color: Rgb888, target: &mut D)
    where
        D: DrawTarget<Color = Rgb888>,
    {
        let text = displayable(text);
        let fc = FontColor::Transparent(color);
        // Glyph lookups cannot fail after `displayable`, and drawing errors are
        // the target's (ours are infallible): nothing useful to report.
        if self.scale == 1 {
            let baseline = top_left + Point::new(0, self.ascent());
            let _ = self.face.render(
                text.as_str(),
                baseline,
                VerticalPosition::Baseline,
                fc,
                target,
            );
        } else {
            let mut scaled = Scaled {
                inner: target,
                origin: top_left,
                n: self.scale,
            };
            let baseline = Point::new(0, i32::from(self.face.get_ascent()));
            let _ = self.face.render(
                text.as_str(),
                baseline,
                VerticalPosition::Baseline,
                fc,
                &mut scaled,
            );
        }
    }

    /// `text` shortened with [`ELLIPSIS`] so it is at most `max_width` wide.
    pub fn truncate(&self, text: &str, max_width: u32) -> String {
        let text = displayable(text);
        if self.width(&text) <= max_width {
            return text;
        }
        let chars: Vec<char> = text.chars().collect();
        // Binary search for the longest prefix that fits with the ellipsis.
        let (mut lo, mut hi) = (0usize, chars.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let candidate: String = chars[..mid].iter().collect();
            if self.width(&format!("{}{ELLIPSIS}", candidate.trim_end())) <= max_width {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let prefix: String = chars[..lo].iter().collect();
        let out = format!("{}{ELLIPSIS}", prefix.trim_end());
        if self.width(&out) <= max_width {
            out
        } else {
            String::new()
        }
    }

    /// Breaks `text` into at most `max_lines` lines of at most `max_width`
    /// pixels, at spaces where possible; the last line ends in an ellipsis
    /// when text was left over.
    pub fn wrap(&self, text: &str, max_width: u32, max_lines: usize) -> Vec<String> {
        let text = displayable(text);
        let mut lines = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() && lines.len() < max_lines {
            if lines.len() + 1 == max_lines || self.width(rest) <= max_width {
                lines.push(self.truncate(rest, max_width));
                break;
            }
            // Longest prefix ending at a space that fits; else cut mid-word.
            let mut cut = None;
            for (i, c) in rest.char_indices() {
                if c == ' ' {
                    if self.width(&rest[..i]) <= max_width {
                        cut = Some(i);
                    } else {
                        break;
                    }
                }
            }
            let cut = cut.unwrap_or_else(|| {
                let mut end = 0;
                for (i, c) in rest.char_indices() {
                    let next = i + c.len_utf8();
                    if self.width(&rest[..next]) > max_width {
                        break;
                    }
                    end = next;
                }
                end.max(rest.chars().next().map_or(0, char::len_utf8))
            });
            lines.push(rest[..cut].trim_end().to_string());
            rest = rest[cut..].trim_start();
        }
        lines
    }
}

/// The text with every character the fonts cannot draw (outside printable
/// Latin-1, control characters, newlines) replaced by `?`, so nothing
/// silently disappears from a name.
pub fn displayable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' | '\u{a0}'..='\u{ff}' => c,
            '\t' | '\n' | '\r' => ' ',
            '\u{2026}' => '.',
            _ => '?',
        })
        .collect()
}

/// Draws each pixel of the inner drawing as an n×n block at `origin + p·n`.
struct Scaled<'a, D> {
    inner: &'a mut D,
    origin: Point,
    n: u32,
}

impl<D: DrawTarget<Color = Rgb888>> OriginDimensions for Scaled<'_, D> {
    fn size(&self) -> Size {
        let s = self.inner.bounding_box().size;
        Size::new(s.width.div_ceil(self.n), s.height.div_ceil(self.n))
    }
}

impl<D: DrawTarget<Color = Rgb888>> DrawTarget for Scaled<'_, D> {
    type Color = Rgb888;
    type Error = D::Error;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), D::Error> {
        let n = self.n as i32;
        for Pixel(p, c) in pixels {
            Rectangle::new(
                self.origin + Point::new(p.x * n, p.y * n),
                Size::new(self.n, self.n),
            )
            .into_styled(PrimitiveStyle::with_fill(c))
            .draw(self.inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_picked_without_going_over() {
        assert_eq!(Font::for_size(5).size(), 11);
        assert_eq!(Font::for_size(16).size(), 14);
        assert_eq!(Font::for_size(42).size(), 42);
        assert_eq!(Font::for_size(46).size(), 42);
        assert_eq!(Font::for_size(60).size(), 60, "30 px scaled by 2");
        assert_eq!(Font::for_size(90).size(), 90, "30 px scaled by 3");
    }

    #[test]
    fn scaled_text_is_proportionally_wider() {
        let a = Font::for_size(30).width("Accept");
        let b = Font::for_size(60).width("Accept");
        assert_eq!(b, 2 * a);
        assert!(a > 60, "30 px bold 'Accept' is wide: {a}");
    }

    #[test]
    fn truncation_fits_and_ends_in_an_ellipsis() {
        let f = Font::for_size(20);
        let name = "Maximilian Alexander von und zu Hohenberg-Schwarzenfels";
        let t = f.truncate(name, 200);
        assert!(t.ends_with(ELLIPSIS), "{t}");
        assert!(f.width(&t) <= 200);
        assert!(t.len() > 8, "keeps as much as fits: {t}");
        assert_eq!(f.truncate("Jane", 200), "Jane");
        assert_eq!(f.truncate("Jane", 1), "", "nothing fits at all");
    }

    #[test]
    fn undrawable_characters_become_question_marks() {
        assert_eq!(displayable("Zoë 李\u{7}"), "Zoë ??");
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_bounds_the_lines() {
        let f = Font::for_size(14);
        let lines = f.wrap(
            "please press the green button on the left side of the screen",
            150,
            2,
        );
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| f.width(l) <= 150), "{lines:?}");
        assert!(lines[0].starts_with("please press"));
        assert!(lines[1].ends_with(ELLIPSIS));
        let one = f.wrap("ok", 150, 3);
        assert_eq!(one, vec!["ok".to_string()]);
        let long_word = f.wrap(&"x".repeat(200), 100, 3);
        assert_eq!(long_word.len(), 3);
        assert!(long_word.iter().all(|l| f.width(l) <= 100));
    }
}
