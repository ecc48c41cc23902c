//! GPU-tiled scanout buffers: which format modifiers we can read, where a
//! pixel of such a buffer lives, and copying between a tiled buffer and a
//! linear picture (detile for capture, retile of the banner's rectangle).
//!
//! Kiosks on Intel GPUs and on the Raspberry Pi scan out buffers their GPU
//! drew in its own tiled layout. The three layouts here are plain byte
//! shuffles that the CPU can undo; compressed layouts (Intel CCS, ARM AFBC,
//! AMD DCC, …) are not, and [`Tiling::from_modifier`] refuses them with the
//! compositor setting that avoids them.
//!
//! Geometry, in bytes (the same for 2 and 4 bytes per pixel), from the
//! kernel's `include/uapi/drm/drm_fourcc.h` and Mesa's tiling code:
//!
//! - **Intel X** (`I915_FORMAT_MOD_X_TILED`): 4 KiB tiles of 512 bytes × 8
//!   rows, rows linear inside the tile, tiles row-major; the pitch is a
//!   whole number of tiles.
//! - **Intel Y** (`I915_FORMAT_MOD_Y_TILED`): 4 KiB tiles of 128 bytes × 32
//!   rows, made of eight 16-byte-wide columns of 32 rows each, column after
//!   column: byte `xb` of row `y` of a tile is at `(xb/16)*512 + y*16 + xb%16`.
//! - **Broadcom VC4 T** (`DRM_FORMAT_MOD_BROADCOM_VC4_T_TILED`): 4 KiB tiles
//!   (32×32 pixels at 4 bytes, 64×32 at 2) of four 1 KiB subtiles (2×2), each
//!   a 4×4 grid of 64-byte micro-tiles (16 bytes × 4 rows, raster order).
//!   On even tile rows the subtiles are in memory as (bottom-left, top-left,
//!   top-right, bottom-right) and tiles go left to right; on odd tile rows
//!   (top-right, bottom-right, bottom-left, top-left) and right to left.
//!   "Bottom" is GL's origin, the start of memory: the first rows of the
//!   buffer, the top of the screen. The pitch is bytes per row such that
//!   `pitch * 32` is one row of tiles.
//!
//! The Intel layouts are those of gen 8 and later (and Valleyview); older
//! chips may swizzle address bit 6, which the modifier does not describe.
//! Checked against reference layouts written from those documents only: no
//! Intel or Raspberry Pi hardware was at hand.
//!
//! Copies go span by span: a span is the longest run of a row that is also
//! contiguous in the tiled buffer (a 512-byte tile row for X, a 16-byte
//! column or micro-tile row for Y and T), copied with one `copy_from_slice`.

use std::fmt;
use std::ops::Range;

/// `DRM_FORMAT_MOD_LINEAR`.
pub const MOD_LINEAR: u64 = 0;
/// `DRM_FORMAT_MOD_INVALID`: no explicit modifier, which for the buffers we
/// can map (dumb, shmem) means linear.
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;
/// `I915_FORMAT_MOD_X_TILED`.
pub const MOD_INTEL_X_TILED: u64 = mod_code(VENDOR_INTEL, 1);
/// `I915_FORMAT_MOD_Y_TILED`.
pub const MOD_INTEL_Y_TILED: u64 = mod_code(VENDOR_INTEL, 2);
/// `DRM_FORMAT_MOD_BROADCOM_VC4_T_TILED`.
pub const MOD_BROADCOM_VC4_T_TILED: u64 = mod_code(VENDOR_BROADCOM, 1);

const VENDOR_INTEL: u64 = 0x01;
const VENDOR_AMD: u64 = 0x02;
const VENDOR_NVIDIA: u64 = 0x03;
const VENDOR_BROADCOM: u64 = 0x07;
const VENDOR_ARM: u64 = 0x08;

/// `fourcc_mod_code(vendor, code)`: the vendor in the top byte.
const fn mod_code(vendor: u64, code: u64) -> u64 {
    (vendor << 56) | (code & 0x00ff_ffff_ffff_ffff)
}

/// Every tiled layout here has 4 KiB tiles.
const TILE_BYTES: usize = 4096;
/// Intel X: a tile is 512 bytes wide and 8 rows high.
const X_TILE_WIDTH: usize = 512;
const X_TILE_ROWS: usize = 8;
/// Intel Y and VC4 T: a tile is 128 bytes wide and 32 rows high.
const Y_TILE_WIDTH: usize = 128;
const Y_TILE_ROWS: usize = 32;
/// Intel Y columns and VC4 micro-tile rows: 16 bytes.
const SPAN: usize = 16;
/// VC4 T: subtile and micro-tile sizes.
const T_SUBTILE_BYTES: usize = 1024;
const T_SUBTILE_WIDTH: usize = 64;
const T_SUBTILE_ROWS: usize = 16;
const T_UTILE_BYTES: usize = 64;
const T_UTILE_ROWS: usize = 4;
/// VC4 T: the place in memory (in subtiles) of the subtile at
/// `[upper][right]` of a tile, where "upper" is the second 16 rows. Even
/// tile rows hold (BL, TL, TR, BR), odd ones (TR, BR, BL, TL).
const T_EVEN_SUBTILES: [[usize; 2]; 2] = [[0, 3], [1, 2]];
const T_ODD_SUBTILES: [[usize; 2]; 2] = [[2, 1], [3, 0]];

/// How a scanout buffer's bytes are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tiling {
    /// Row after row, `pitch` bytes apart.
    Linear,
    /// Intel X-tiled: 512-byte × 8-row tiles.
    IntelX,
    /// Intel Y-tiled: 128-byte × 32-row tiles of 16-byte columns.
    IntelY,
    /// Broadcom VC4 T-tiled (Raspberry Pi 0–3 GPU, and Pi 4 buffers for it).
    Vc4T,
}

impl Tiling {
    /// The layout of a buffer with `modifier`, if the CPU can read it.
    pub fn from_modifier(modifier: u64) -> Result<Self, UnsupportedModifier> {
        match modifier {
            MOD_LINEAR | MOD_INVALID => Ok(Tiling::Linear),
            MOD_INTEL_X_TILED => Ok(Tiling::IntelX),
            MOD_INTEL_Y_TILED => Ok(Tiling::IntelY),
            MOD_BROADCOM_VC4_T_TILED => Ok(Tiling::Vc4T),
            _ => Err(UnsupportedModifier { modifier }),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Tiling::Linear => "linear",
            Tiling::IntelX => "Intel X-tiled",
            Tiling::IntelY => "Intel Y-tiled",
            Tiling::Vc4T => "Broadcom VC4 T-tiled",
        }
    }

    /// Bytes wide and rows high of one tile; `(1, 1)` for linear.
    pub const fn tile_size(self) -> (usize, usize) {
        match self {
            Tiling::Linear => (1, 1),
            Tiling::IntelX => (X_TILE_WIDTH, X_TILE_ROWS),
            Tiling::IntelY | Tiling::Vc4T => (Y_TILE_WIDTH, Y_TILE_ROWS),
        }
    }
}

impl fmt::Display for Tiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format modifier the CPU cannot read: compressed, or a layout we do not
/// know. Its message names the modifier and how to avoid it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "modifier 0x{modifier:016x} ({}) is a layout the agent cannot read (it reads linear, \
     Intel X/Y-tiled and Broadcom VC4 T-tiled buffers). Make the compositor scan out \
     linear buffers: Weston: the pixman renderer (--use-pixman); wlroots/cage: \
     WLR_DRM_NO_MODIFIERS=1; Xorg modesetting: Option \"AccelMethod\" \"none\"",
    describe_modifier(*modifier)
)]
pub struct UnsupportedModifier {
    pub modifier: u64,
}

/// Vendor and kind of a modifier, as far as `drm_fourcc.h` names it.
fn describe_modifier(modifier: u64) -> String {
    let vendor = modifier >> 56;
    let code = modifier & 0x00ff_ffff_ffff_ffff;
    let what = match (vendor, code) {
        (VENDOR_INTEL, 3) => "Intel Yf-tiled",
        (VENDOR_INTEL, 4 | 5) => "Intel Y/Yf-tiled with render compression (CCS)",
        (VENDOR_INTEL, 6 | 8) => "Intel gen12 Y-tiled with render compression (CCS)",
        (VENDOR_INTEL, 7) => "Intel gen12 Y-tiled with media compression (CCS)",
        (VENDOR_INTEL, 9) => "Intel Tile 4",
        (VENDOR_INTEL, 10..=17) => "Intel Tile 4 with compression (CCS)",
        (VENDOR_INTEL, _) => "Intel, unknown",
        (VENDOR_AMD, _) => "AMD tiled, possibly compressed (DCC)",
        (VENDOR_NVIDIA, _) => "NVIDIA tiled or block-linear",
        (VENDOR_BROADCOM, _) => match code & 0xff {
            2..=5 => "Broadcom SAND (video columns)",
            6 => "Broadcom UIF",
            _ => "Broadcom, unknown",
        },
        (VENDOR_ARM, _) => "ARM AFBC or other ARM compressed layout",
        (0, _) => "no vendor, unknown",
        _ => "unknown vendor",
    };
    format!("vendor 0x{vendor:02x}: {what}")
}

/// Why a tiled layout does not fit a framebuffer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("{tiling} framebuffer pitch {pitch} is not a whole number of {tile_width}-byte tiles")]
    Pitch {
        tiling: Tiling,
        pitch: usize,
        tile_width: usize,
    },
    #[error("{tiling} buffers are read here with 2 or 4 bytes per pixel, not {bpp}")]
    PixelSize { tiling: Tiling, bpp: usize },
    #[error("a {needed}-byte {tiling} buffer was expected, {len} bytes were given")]
    TooShort {
        tiling: Tiling,
        needed: usize,
        len: usize,
    },
    #[error("{width_bytes} bytes of a row do not fit the pitch of {pitch}")]
    WiderThanPitch { width_bytes: usize, pitch: usize },
    #[error("rectangle {rect:?} is outside the linear picture at {origin:?}")]
    OutsidePicture { rect: Rect, origin: (usize, usize) },
}

/// A rectangle of pixels in buffer coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// A tiling with the pitch and pixel size of one buffer: where its pixels
/// are, and copies between it and linear pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TiledLayout {
    tiling: Tiling,
    pitch: usize,
    bpp: usize,
}

impl TiledLayout {
    /// `pitch`: bytes from one row to the next, as `GETFB2` reports it (for
    /// tiled layouts a whole number of tiles); `bpp`: bytes per pixel.
    pub fn new(tiling: Tiling, pitch: usize, bpp: usize) -> Result<Self, LayoutError> {
        let (tile_width, _) = tiling.tile_size();
        if pitch == 0 || !pitch.is_multiple_of(tile_width) {
            return Err(LayoutError::Pitch {
                tiling,
                pitch,
                tile_width,
            });
        }
        // Micro-tiles are 16 bytes wide whatever the pixel size; the
        // layouts are defined per byte only for these sizes.
        if tiling != Tiling::Linear && bpp != 2 && bpp != 4 {
            return Err(LayoutError::PixelSize { tiling, bpp });
        }
        Ok(Self { tiling, pitch, bpp })
    }

    pub fn tiling(&self) -> Tiling {
        self.tiling
    }

    pub fn pitch(&self) -> usize {
        self.pitch
    }

    pub fn bytes_per_pixel(&self) -> usize {
        self.bpp
    }

    /// Bytes a buffer of `width` × `height` pixels spans: for tiled
    /// layouts whole rows of tiles (the height rounded up to the tile's).
    pub fn buffer_len(&self, width: usize, height: usize) -> usize {
        if height == 0 {
            return 0;
        }
        match self.tiling {
            Tiling::Linear => (height - 1) * self.pitch + width * self.bpp,
            t => {
                let rows = t.tile_size().1;
                height.div_ceil(rows) * rows * self.pitch
            }
        }
    }

    /// Byte offset of pixel (`x`, `y`) in the buffer.
    pub fn offset(&self, x: usize, y: usize) -> usize {
        let xb = x * self.bpp;
        let mut at = 0;
        self.for_each_span(y, xb..xb + 1, |_, off, _| at = off);
        at
    }

    /// Copies pixel columns `x0..x0 + width` of buffer rows `rows` from the
    /// tiled `src` into the linear `dst`, `dst_pitch` bytes per row (row
    /// `rows.start` first).
    pub fn detile_rows(
        &self,
        src: &[u8],
        x0: usize,
        width: usize,
        rows: Range<usize>,
        dst: &mut [u8],
        dst_pitch: usize,
    ) -> Result<(), LayoutError> {
        let xbs = x0 * self.bpp..(x0 + width) * self.bpp;
        self.check_len(src.len(), x0 + width, rows.end)?;
        let n = rows.len();
        let row_bytes = xbs.len();
        if n > 0 && dst.len() < (n - 1) * dst_pitch + row_bytes {
            return Err(LayoutError::TooShort {
                tiling: Tiling::Linear,
                needed: (n - 1) * dst_pitch + row_bytes,
                len: dst.len(),
            });
        }
        for (i, y) in rows.enumerate() {
            let line = &mut dst[i * dst_pitch..i * dst_pitch + row_bytes];
            self.for_each_run(
                y,
                xbs.clone(),
                |line: &mut [u8], xb, off, len| {
                    copy_span(&mut line[xb - xbs.start..], &src[off..], len)
                },
                |line: &mut [u8], xb, start, pieces| {
                    let tile: &[u8; TILE_BYTES] =
                        src[start..start + TILE_BYTES].try_into().expect("4 KiB");
                    let out = &mut line[xb - xbs.start..][..Y_TILE_WIDTH];
                    for (k, &p) in pieces.iter().enumerate() {
                        out[k * SPAN..(k + 1) * SPAN].copy_from_slice(&tile[p..p + SPAN]);
                    }
                },
                line,
            );
        }
        Ok(())
    }

    /// Copies `rect` (buffer coordinates) from the linear `src`, whose
    /// first byte is pixel `origin` and rows `src_pitch` apart, into the
    /// tiled `dst`. Bytes outside the rectangle are not touched.
    pub fn retile_rect(
        &self,
        src: &[u8],
        src_pitch: usize,
        origin: (usize, usize),
        rect: Rect,
        dst: &mut [u8],
    ) -> Result<(), LayoutError> {
        if rect.width == 0 || rect.height == 0 {
            return Ok(());
        }
        let outside = LayoutError::OutsidePicture { rect, origin };
        if rect.x < origin.0 || rect.y < origin.1 {
            return Err(outside);
        }
        let (sx, sy) = ((rect.x - origin.0) * self.bpp, rect.y - origin.1);
        let row_bytes = rect.width * self.bpp;
        if src.len() < (sy + rect.height - 1) * src_pitch + sx + row_bytes {
            return Err(outside);
        }
        self.check_len(dst.len(), rect.x + rect.width, rect.y + rect.height)?;
        let xbs = rect.x * self.bpp..rect.x * self.bpp + row_bytes;
        for (i, y) in (rect.y..rect.y + rect.height).enumerate() {
            let start = (sy + i) * src_pitch + sx;
            let line = &src[start..start + row_bytes];
            self.for_each_run(
                y,
                xbs.clone(),
                |dst: &mut [u8], xb, off, len| {
                    copy_span(&mut dst[off..], &line[xb - xbs.start..], len)
                },
                |dst: &mut [u8], xb, start, pieces| {
                    let tile: &mut [u8; TILE_BYTES] = (&mut dst[start..start + TILE_BYTES])
                        .try_into()
                        .expect("4 KiB");
                    let from = &line[xb - xbs.start..][..Y_TILE_WIDTH];
                    for (k, &p) in pieces.iter().enumerate() {
                        tile[p..p + SPAN].copy_from_slice(&from[k * SPAN..(k + 1) * SPAN]);
                    }
                },
                dst,
            );
        }
        Ok(())
    }

    /// Detiles pixels `x0..x0 + width` of rows `y0..y0 + height` into
    /// `staging`, resized to exactly that linear picture (pitch `width *
    /// bpp`); its allocation is reused from call to call.
    pub fn detile_into(
        &self,
        src: &[u8],
        (x0, y0): (usize, usize),
        (width, height): (usize, usize),
        staging: &mut Vec<u8>,
    ) -> Result<(), LayoutError> {
        let pitch = width * self.bpp;
        staging.resize(pitch * height, 0);
        self.detile_rows(src, x0, width, y0..y0 + height, staging, pitch)
    }

    fn check_len(&self, len: usize, width: usize, height: usize) -> Result<(), LayoutError> {
        if width * self.bpp > self.pitch {
            return Err(LayoutError::WiderThanPitch {
                width_bytes: width * self.bpp,
                pitch: self.pitch,
            });
        }
        let needed = self.buffer_len(width, height);
        if len < needed {
            return Err(LayoutError::TooShort {
                tiling: self.tiling,
                needed,
                len,
            });
        }
        Ok(())
    }

    /// As [`Self::for_each_span`], but a row's whole Y or T tiles go to
    /// `whole(out, xb, tile_start, pieces)` instead: the row's 128 bytes
    /// from byte column `xb` are eight 16-byte pieces at `tile_start +
    /// pieces[k]`. `out` is what both callbacks write to.
    #[inline(always)]
    fn for_each_run<O: ?Sized>(
        &self,
        y: usize,
        xbs: Range<usize>,
        mut span: impl FnMut(&mut O, usize, usize, usize),
        mut whole: impl FnMut(&mut O, usize, usize, &[usize; 8]),
        out: &mut O,
    ) {
        let (Tiling::IntelY | Tiling::Vc4T) = self.tiling else {
            return self.for_each_span(y, xbs, |xb, off, len| span(out, xb, off, len));
        };
        let (first, last) = (xbs.start.div_ceil(Y_TILE_WIDTH), xbs.end / Y_TILE_WIDTH);
        if first >= last {
            return self.for_each_span(y, xbs, |xb, off, len| span(out, xb, off, len));
        }
        self.for_each_span(y, xbs.start..first * Y_TILE_WIDTH, |xb, off, len| {
            span(out, xb, off, len)
        });
        let y_in = y % Y_TILE_ROWS;
        let band = (y / Y_TILE_ROWS) * Y_TILE_ROWS * self.pitch;
        let odd = (y / Y_TILE_ROWS) % 2 == 1;
        let across = self.pitch / Y_TILE_WIDTH;
        let mut pieces = [0; 8];
        for (k, p) in pieces.iter_mut().enumerate() {
            *p = match self.tiling {
                Tiling::IntelY => k * SPAN * Y_TILE_ROWS + y_in * SPAN,
                _ => {
                    let map = if odd {
                        &T_ODD_SUBTILES
                    } else {
                        &T_EVEN_SUBTILES
                    };
                    map[y_in / T_SUBTILE_ROWS][k / 4] * T_SUBTILE_BYTES
                        + (y_in % T_SUBTILE_ROWS) / T_UTILE_ROWS * 4 * T_UTILE_BYTES
                        + (k % 4) * T_UTILE_BYTES
                        + (y_in % T_UTILE_ROWS) * SPAN
                }
            };
        }
        for tile in first..last {
            let column = if self.tiling == Tiling::Vc4T && odd {
                across - 1 - tile
            } else {
                tile
            };
            whole(
                out,
                tile * Y_TILE_WIDTH,
                band + column * TILE_BYTES,
                &pieces,
            );
        }
        self.for_each_span(y, last * Y_TILE_WIDTH..xbs.end, |xb, off, len| {
            span(out, xb, off, len)
        });
    }

    /// Calls `f(xb, offset, len)` for each span of row `y` within byte
    /// columns `xbs`: `len` bytes from byte column `xb` are at `offset` in
    /// the buffer. Row terms are worked out once, spans by addition.
    #[inline(always)]
    fn for_each_span(&self, y: usize, xbs: Range<usize>, mut f: impl FnMut(usize, usize, usize)) {
        let (mut xb, end) = (xbs.start, xbs.end);
        match self.tiling {
            Tiling::Linear => {
                if xb < end {
                    f(xb, y * self.pitch + xb, end - xb);
                }
            }
            Tiling::IntelX => {
                let row =
                    (y / X_TILE_ROWS) * X_TILE_ROWS * self.pitch + (y % X_TILE_ROWS) * X_TILE_WIDTH;
                while xb < end {
                    let len = (X_TILE_WIDTH - xb % X_TILE_WIDTH).min(end - xb);
                    let tile = xb / X_TILE_WIDTH;
                    f(xb, row + tile * TILE_BYTES + xb % X_TILE_WIDTH, len);
                    xb += len;
                }
            }
            Tiling::IntelY => {
                // Column c of the row (16 bytes) is at c * 512 from the
                // start of its tile row: eight columns of 512 bytes make a
                // 4 KiB tile, and tiles follow each other.
                let row = (y / Y_TILE_ROWS) * Y_TILE_ROWS * self.pitch + (y % Y_TILE_ROWS) * SPAN;
                while xb < end {
                    let len = (SPAN - xb % SPAN).min(end - xb);
                    f(
                        xb,
                        row + (xb / SPAN) * (SPAN * Y_TILE_ROWS) + xb % SPAN,
                        len,
                    );
                    xb += len;
                }
            }
            Tiling::Vc4T => {
                let tile_row = y / Y_TILE_ROWS;
                let odd = tile_row % 2 == 1;
                let tiles_per_row = self.pitch / Y_TILE_WIDTH;
                let y_in = y % Y_TILE_ROWS;
                let upper = y_in / T_SUBTILE_ROWS;
                let map = if odd {
                    &T_ODD_SUBTILES
                } else {
                    &T_EVEN_SUBTILES
                };
                let subtile = [
                    map[upper][0] * T_SUBTILE_BYTES,
                    map[upper][1] * T_SUBTILE_BYTES,
                ];
                // Micro-tile row of the subtile, then the row in the
                // micro-tile.
                let row = tile_row * Y_TILE_ROWS * self.pitch
                    + (y_in % T_SUBTILE_ROWS) / T_UTILE_ROWS * 4 * T_UTILE_BYTES
                    + (y_in % T_UTILE_ROWS) * SPAN;
                while xb < end {
                    let len = (SPAN - xb % SPAN).min(end - xb);
                    let tile = xb / Y_TILE_WIDTH;
                    let column = if odd { tiles_per_row - 1 - tile } else { tile };
                    let x_in = xb % Y_TILE_WIDTH;
                    let off = row
                        + column * TILE_BYTES
                        + subtile[x_in / T_SUBTILE_WIDTH]
                        + (x_in % T_SUBTILE_WIDTH) / SPAN * T_UTILE_BYTES
                        + xb % SPAN;
                    f(xb, off, len);
                    xb += len;
                }
            }
        }
    }
}

/// `dst[..len] = src[..len]`, with the usual 16-byte span as a fixed-size
/// move (no call to memcpy).
#[inline(always)]
fn copy_span(dst: &mut [u8], src: &[u8], len: usize) {
    if len == SPAN {
        let s: &[u8; SPAN] = src[..SPAN].try_into().expect("16 bytes");
        dst[..SPAN].copy_from_slice(s);
    } else {
        dst[..len].copy_from_slice(&src[..len]);
    }
}

#[cfg(test)]
mod tests;
