//! The buffers the banner is drawn into, in the display's [`PixelFormat`].
//!
//! [`PixelBuffer`] owns its bytes (the rendered banner patches); [`Surface`]
//! borrows someone else's (a mapped scanout buffer, a captured frame). Both
//! are embedded-graphics [`DrawTarget`]s with `Rgb888` colours, converted to
//! the buffer's format on write.

use std::convert::Infallible;

use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

/// Largest width or height a buffer may have. Screens top out at 8K; anything
/// larger is a corrupt mode or a caller bug, and would make allocations huge.
pub const MAX_DIMENSION: u32 = 8192;

/// The display's pixel format: the banner draws in the screen's own format.
pub use shoulder_display::PixelFormat;

/// Why a buffer description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    #[error(
        "buffer size {width}x{height} is out of range (1..={MAX_DIMENSION} each): check the screen mode"
    )]
    BadSize { width: u32, height: u32 },
    #[error(
        "buffer pitch {pitch} is smaller than a row of {width} pixels of {bpp} bytes: the mapping description is wrong"
    )]
    BadPitch {
        pitch: usize,
        width: u32,
        bpp: usize,
    },
    #[error(
        "buffer has {have} bytes but {width}x{height} with pitch {pitch} needs {need}: the mapping is too short"
    )]
    TooShort {
        have: usize,
        need: usize,
        width: u32,
        height: u32,
        pitch: usize,
    },
}

fn check_layout(
    width: u32,
    height: u32,
    pitch: usize,
    format: PixelFormat,
    len: usize,
) -> Result<(), BufferError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(BufferError::BadSize { width, height });
    }
    let bpp = format.bytes_per_pixel();
    if pitch < width as usize * bpp {
        return Err(BufferError::BadPitch { pitch, width, bpp });
    }
    let need = pitch * (height as usize - 1) + width as usize * bpp;
    if len < need {
        return Err(BufferError::TooShort {
            have: len,
            need,
            width,
            height,
            pitch,
        });
    }
    Ok(())
}

/// An owned image in one [`PixelFormat`], rows `pitch` bytes apart.
#[derive(Clone, PartialEq, Eq)]
pub struct PixelBuffer {
    width: u32,
    height: u32,
    pitch: usize,
    format: PixelFormat,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for PixelBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PixelBuffer")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pitch", &self.pitch)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl PixelBuffer {
    /// A black image with tightly packed rows.
    pub fn new(width: u32, height: u32, format: PixelFormat) -> Result<Self, BufferError> {
        let pitch = width as usize * format.bytes_per_pixel();
        check_layout(width, height, pitch, format, usize::MAX)?;
        let mut buf = Self {
            width,
            height,
            pitch,
            format,
            bytes: vec![0; pitch * height as usize],
        };
        buf.clear(Rgb888::BLACK);
        Ok(buf)
    }

    /// Wraps existing bytes (e.g. a captured frame).
    pub fn from_bytes(
        width: u32,
        height: u32,
        pitch: usize,
        format: PixelFormat,
        bytes: Vec<u8>,
    ) -> Result<Self, BufferError> {
        check_layout(width, height, pitch, format, bytes.len())?;
        Ok(Self {
            width,
            height,
            pitch,
            format,
            bytes,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn pitch(&self) -> usize {
        self.pitch
    }
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// A borrowed, drawable view of the whole buffer.
    pub fn surface(&mut self) -> Surface<'_> {
        Surface {
            width: self.width,
            height: self.height,
            pitch: self.pitch,
            format: self.format,
            bytes: &mut self.bytes,
        }
    }

    /// The bytes of row `y` (only the pixels, not the pitch padding).
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.pitch;
        &self.bytes[start..start + self.width as usize * self.format.bytes_per_pixel()]
    }

    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let bpp = self.format.bytes_per_pixel();
        let i = y as usize * self.pitch + x as usize * bpp;
        Some(self.format.decode(&self.bytes[i..i + bpp]))
    }

    /// This upright image as a framebuffer turned by `r` holds it (see
    /// [`Rotation`](shoulder_proto::rotation::Rotation)): what to write into
    /// a sideways panel's buffer so the person reads it upright.
    pub fn turned_back(&self, r: shoulder_proto::rotation::Rotation) -> Self {
        let (bw, bh) = r.inverse().upright_size(self.width, self.height);
        let bpp = self.format.bytes_per_pixel();
        let pitch = bw as usize * bpp;
        let mut bytes = vec![0; pitch * bh as usize];
        for (by, row) in bytes.chunks_exact_mut(pitch).enumerate() {
            for (bx, px) in row.chunks_exact_mut(bpp).enumerate() {
                let (ux, uy) = r.to_upright(bx as u32, by as u32, bw, bh);
                let i = uy as usize * self.pitch + ux as usize * bpp;
                px.copy_from_slice(&self.bytes[i..i + bpp]);
            }
        }
        Self {
            width: bw,
            height: bh,
            pitch,
            format: self.format,
            bytes,
        }
    }

    /// The image as packed 8-bit RGB triplets (for PNG files and comparisons).
    pub fn to_rgb8(&self) -> Vec<u8> {
        let bpp = self.format.bytes_per_pixel();
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        for y in 0..self.height {
            for px in self.row(y).chunks_exact(bpp) {
                let c = self.format.decode(px);
                out.extend_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        out
    }
}

impl OriginDimensions for PixelBuffer {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for PixelBuffer {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = embedded_graphics::Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        self.surface().draw_iter(pixels)
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Infallible> {
        self.surface().fill_solid(area, color)
    }
}

/// A drawable view of pixels owned elsewhere (a mapped scanout buffer, a
/// captured frame). Rows are `pitch` bytes apart.
#[derive(Debug)]
pub struct Surface<'a> {
    width: u32,
    height: u32,
    pitch: usize,
    format: PixelFormat,
    bytes: &'a mut [u8],
}

impl<'a> Surface<'a> {
    pub fn new(
        width: u32,
        height: u32,
        pitch: usize,
        format: PixelFormat,
        bytes: &'a mut [u8],
    ) -> Result<Self, BufferError> {
        check_layout(width, height, pitch, format, bytes.len())?;
        Ok(Self {
            width,
            height,
            pitch,
            format,
            bytes,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }
    pub fn pitch(&self) -> usize {
        self.pitch
    }
    pub fn format(&self) -> PixelFormat {
        self.format
    }
    pub fn bounds(&self) -> Rectangle {
        Rectangle::new(Point::zero(), Size::new(self.width, self.height))
    }

    /// Bytes of `len` pixels of row `y` starting at column `x`; the caller
    /// has clipped the span to the surface.
    pub(crate) fn span(&self, x: u32, y: u32, len: u32) -> &[u8] {
        let bpp = self.format.bytes_per_pixel();
        let start = y as usize * self.pitch + x as usize * bpp;
        &self.bytes[start..start + len as usize * bpp]
    }

    pub(crate) fn span_mut(&mut self, x: u32, y: u32, len: u32) -> &mut [u8] {
        let bpp = self.format.bytes_per_pixel();
        let start = y as usize * self.pitch + x as usize * bpp;
        &mut self.bytes[start..start + len as usize * bpp]
    }

    pub fn pixel(&self, x: u32, y: u32) -> Option<Rgb888> {
        if x >= self.width || y >= self.height {
            return None;
        }
        Some(self.format.decode(self.span(x, y, 1)))
    }

    pub fn clear(&mut self, color: Rgb888) {
        let area = self.bounds();
        let _ = self.fill_solid(&area, color);
    }

    /// Sets `area` to all-zero bytes: fully transparent in the formats with
    /// alpha (an overlay plane shows what is below).
    pub fn clear_transparent(&mut self, area: &Rectangle) {
        let area = area.intersection(&self.bounds());
        let Some(bottom_right) = area.bottom_right() else {
            return;
        };
        let (x0, w) = (area.top_left.x as u32, area.size.width);
        for y in area.top_left.y as u32..=bottom_right.y as u32 {
            self.span_mut(x0, y, w).fill(0);
        }
    }
}

impl PixelBuffer {
    pub fn clear(&mut self, color: Rgb888) {
        self.surface().clear(color);
    }
}

impl OriginDimensions for Surface<'_> {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Surface<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I: IntoIterator<Item = embedded_graphics::Pixel<Rgb888>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Infallible> {
        let bpp = self.format.bytes_per_pixel();
        for embedded_graphics::Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= self.width || p.y as u32 >= self.height {
                continue;
            }
            let i = p.y as usize * self.pitch + p.x as usize * bpp;
            self.format.encode(c, &mut self.bytes[i..i + bpp]);
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Rgb888) -> Result<(), Infallible> {
        let area = area.intersection(&self.bounds());
        let Some(bottom_right) = area.bottom_right() else {
            return Ok(());
        };
        let bpp = self.format.bytes_per_pixel();
        let mut px = [0u8; 4];
        self.format.encode(color, &mut px);
        let (x0, w) = (area.top_left.x as u32, area.size.width);
        for y in area.top_left.y as u32..=bottom_right.y as u32 {
            for out in self.span_mut(x0, y, w).chunks_exact_mut(bpp) {
                out.copy_from_slice(&px[..bpp]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_primary_colours() {
        for f in [
            PixelFormat::Xrgb8888,
            PixelFormat::Argb8888,
            PixelFormat::Xbgr8888,
            PixelFormat::Abgr8888,
            PixelFormat::Rgb565,
        ] {
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
            for c in [
                Rgb888::RED,
                Rgb888::GREEN,
                Rgb888::BLUE,
                Rgb888::WHITE,
                Rgb888::BLACK,
            ] {
                let mut b = [0u8; 4];
                f.encode(c, &mut b);
                assert_eq!(f.decode(&b), c, "{f:?}");
            }
        }
    }

    #[test]
    fn xrgb_byte_order_matches_the_wire_format() {
        let mut b = [0u8; 4];
        PixelFormat::Xrgb8888.encode(Rgb888::new(1, 2, 3), &mut b);
        assert_eq!(b, [3, 2, 1, 0xff]);
    }

    #[test]
    fn bad_layouts_are_refused_with_a_reason() {
        let mut bytes = vec![0u8; 100];
        let e = Surface::new(10, 10, 40, PixelFormat::Xrgb8888, &mut bytes).unwrap_err();
        assert!(matches!(e, BufferError::TooShort { need: 400, .. }));
        assert!(e.to_string().contains("too short"));
        assert!(matches!(
            Surface::new(10, 1, 20, PixelFormat::Xrgb8888, &mut bytes),
            Err(BufferError::BadPitch { .. })
        ));
        assert!(matches!(
            PixelBuffer::new(0, 10, PixelFormat::Rgb565),
            Err(BufferError::BadSize { .. })
        ));
        assert!(PixelBuffer::new(MAX_DIMENSION + 1, 1, PixelFormat::Rgb565).is_err());
    }

    #[test]
    fn drawing_is_clipped_and_respects_pitch() {
        // 3x2 pixels with 4 bytes of padding per row.
        let mut bytes = vec![0xaau8; 16 * 2];
        let mut s = Surface::new(3, 2, 16, PixelFormat::Xrgb8888, &mut bytes).unwrap();
        s.fill_solid(
            &Rectangle::new(Point::new(-5, -5), Size::new(100, 100)),
            Rgb888::WHITE,
        )
        .unwrap();
        s.draw_iter([embedded_graphics::Pixel(Point::new(7, 0), Rgb888::RED)])
            .unwrap();
        assert_eq!(s.pixel(2, 1), Some(Rgb888::WHITE));
        assert_eq!(&bytes[12..16], &[0xaa; 4], "padding untouched");
        assert_eq!(&bytes[28..32], &[0xaa; 4], "padding untouched");
    }
}
