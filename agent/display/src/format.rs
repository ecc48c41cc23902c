//! How screen pixels are laid out: the [`PixelFormat`], the
//! [`ScreenGeometry`] and the bounds check of a frame in a buffer.

use std::fmt;
use std::str::FromStr;

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};

use crate::error::SpecError;

/// Largest screen edge a source may report; the wire cannot carry more.
pub const MAX_EDGE: u32 = shoulder_proto::msg::MAX_SCREEN_EDGE as u32;

/// Pixel layouts the capture and the banner understand. All are linear (not
/// tiled) and little-endian, named as DRM fourccs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Bytes B, G, R, X. The wire format.
    Xrgb8888,
    /// Bytes B, G, R, A (alpha ignored: the scanout shows it opaque; the
    /// banner writes opaque alpha).
    Argb8888,
    /// Bytes R, G, B, X.
    Xbgr8888,
    /// Bytes R, G, B, A (alpha ignored).
    Abgr8888,
    /// 16 bits little-endian: red 5 (high), green 6, blue 5 (low).
    Rgb565,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Xrgb8888,
        PixelFormat::Argb8888,
        PixelFormat::Xbgr8888,
        PixelFormat::Abgr8888,
        PixelFormat::Rgb565,
    ];

    /// DRM fourcc codes (`drm_fourcc.h`).
    pub const FOURCC_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
    pub const FOURCC_ARGB8888: u32 = u32::from_le_bytes(*b"AR24");
    pub const FOURCC_XBGR8888: u32 = u32::from_le_bytes(*b"XB24");
    pub const FOURCC_ABGR8888: u32 = u32::from_le_bytes(*b"AB24");
    pub const FOURCC_RGB565: u32 = u32::from_le_bytes(*b"RG16");

    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb565 => 2,
            _ => 4,
        }
    }

    /// The DRM fourcc code of this format.
    pub const fn fourcc(self) -> u32 {
        match self {
            PixelFormat::Xrgb8888 => Self::FOURCC_XRGB8888,
            PixelFormat::Argb8888 => Self::FOURCC_ARGB8888,
            PixelFormat::Xbgr8888 => Self::FOURCC_XBGR8888,
            PixelFormat::Abgr8888 => Self::FOURCC_ABGR8888,
            PixelFormat::Rgb565 => Self::FOURCC_RGB565,
        }
    }

    /// The format with DRM fourcc `code`, if we support it.
    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            PixelFormat::Xrgb8888 => "XRGB8888",
            PixelFormat::Argb8888 => "ARGB8888",
            PixelFormat::Xbgr8888 => "XBGR8888",
            PixelFormat::Abgr8888 => "ABGR8888",
            PixelFormat::Rgb565 => "RGB565",
        }
    }

    /// Writes one opaque pixel; `out` has [`bytes_per_pixel`](Self::bytes_per_pixel) bytes.
    #[inline]
    pub fn encode(self, c: Rgb888, out: &mut [u8]) {
        let (r, g, b) = (c.r(), c.g(), c.b());
        match self {
            Self::Xrgb8888 | Self::Argb8888 => out[..4].copy_from_slice(&[b, g, r, 0xff]),
            Self::Xbgr8888 | Self::Abgr8888 => out[..4].copy_from_slice(&[r, g, b, 0xff]),
            Self::Rgb565 => {
                let v = (u16::from(r >> 3) << 11) | (u16::from(g >> 2) << 5) | u16::from(b >> 3);
                out[..2].copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Reads one pixel (RGB565 is widened by repeating the high bits).
    #[inline]
    pub fn decode(self, px: &[u8]) -> Rgb888 {
        match self {
            Self::Xrgb8888 | Self::Argb8888 => Rgb888::new(px[2], px[1], px[0]),
            Self::Xbgr8888 | Self::Abgr8888 => Rgb888::new(px[0], px[1], px[2]),
            Self::Rgb565 => {
                let v = u16::from_le_bytes([px[0], px[1]]);
                let r = ((v >> 11) & 0x1f) as u8;
                let g = ((v >> 5) & 0x3f) as u8;
                let b = (v & 0x1f) as u8;
                Rgb888::new(
                    (r << 3) | (r >> 2),
                    (g << 2) | (g >> 4),
                    (b << 3) | (b >> 2),
                )
            }
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| SpecError::UnknownFormat(s.to_owned()))
    }
}

/// Prints a DRM fourcc as its four characters (`XR24`), or hex when it is not
/// printable.
pub fn fourcc_name(code: u32) -> String {
    let b = code.to_le_bytes();
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{} (0x{code:08x})", String::from_utf8_lossy(&b).trim_end())
    } else {
        format!("0x{code:08x}")
    }
}

/// Size and format of the screen as a source shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScreenGeometry {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

impl ScreenGeometry {
    /// The upright geometry of a buffer turned by `r`.
    pub fn turned(self, r: shoulder_proto::rotation::Rotation) -> Self {
        let (width, height) = r.upright_size(self.width, self.height);
        Self {
            width,
            height,
            ..self
        }
    }
}

impl fmt::Display for ScreenGeometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{} {}", self.width, self.height, self.format)
    }
}

/// Why pixels cannot be viewed as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("screen size {width}×{height} is not possible (each side 1..={MAX_EDGE})")]
    BadSize { width: u32, height: u32 },
    #[error("pitch {pitch} bytes is smaller than one row of {width} {format} pixels")]
    PitchTooSmall {
        pitch: usize,
        width: u32,
        format: PixelFormat,
    },
    #[error(
        "pixel buffer has {len} bytes, a {width}×{height} frame with pitch {pitch} needs {needed}"
    )]
    TooShort {
        len: usize,
        needed: usize,
        width: u32,
        height: u32,
        pitch: usize,
    },
}

/// Bytes needed for `height` rows of `row_bytes`, `pitch` apart (the last row
/// need not be padded).
pub fn frame_len(pitch: usize, row_bytes: usize, height: u32) -> Option<usize> {
    pitch
        .checked_mul(height.checked_sub(1)? as usize)?
        .checked_add(row_bytes)
}

/// Whether a `geometry` frame with rows `pitch` bytes apart fits in `len`
/// bytes, and its size is one the wire can carry.
pub fn check_frame(len: usize, geometry: ScreenGeometry, pitch: usize) -> Result<(), FrameError> {
    let ScreenGeometry {
        width,
        height,
        format,
    } = geometry;
    if width == 0 || height == 0 || width > MAX_EDGE || height > MAX_EDGE {
        return Err(FrameError::BadSize { width, height });
    }
    let row = width as usize * format.bytes_per_pixel();
    if pitch < row {
        return Err(FrameError::PitchTooSmall {
            pitch,
            width,
            format,
        });
    }
    // Cannot overflow: width, height ≤ 8192 and pitch is a real buffer's.
    let needed = frame_len(pitch, row, height).unwrap_or(usize::MAX);
    if len < needed {
        return Err(FrameError::TooShort {
            len,
            needed,
            width,
            height,
            pitch,
        });
    }
    Ok(())
}
