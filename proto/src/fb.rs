//! The expert's copy of the device screen, and how updates apply to it.

use crate::msg::{
    Encoding, MAX_SCREEN_EDGE, Rect, ScreenInfo, UpdatePart, VIEW_CHECK_BANDS, ViewReport,
};
use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Rows per band of a [`ViewReport`] for a screen `height` rows tall: the
/// screen cut into at most [`VIEW_CHECK_BANDS`] bands of this many rows (the
/// last one may be shorter). 17 rows at 1080p: a band that differs costs one
/// strip of the screen, not the whole screen.
pub fn view_band_rows(height: u16) -> usize {
    usize::from(height).div_ceil(VIEW_CHECK_BANDS).max(1)
}

/// How many bands a screen `height` rows tall has in a [`ViewReport`].
pub fn view_bands(height: u16) -> usize {
    usize::from(height).div_ceil(view_band_rows(height))
}

/// The rows of band `band` of a screen `height` rows tall.
pub fn view_band(height: u16, band: usize) -> core::ops::Range<usize> {
    let rows = view_band_rows(height);
    let start = (band * rows).min(usize::from(height));
    start..(start + rows).min(usize::from(height))
}

/// Folds one XRGB8888 row into a band hash (start a band with 0): sets the
/// X byte of every pixel in `row` to 0, then xxh3-64 of the row seeded with
/// the hash so far. Device and expert both hash with this, so their band
/// hashes agree exactly when the pixels do.
pub fn hash_row(hash: u64, row: &mut [u8]) -> u64 {
    for px in row.chunks_exact_mut(4) {
        px[3] = 0;
    }
    xxhash_rust::xxh3::xxh3_64_with_seed(row, hash)
}

/// Why an update could not be applied. The framebuffer is unchanged by the
/// failing rectangle (earlier rectangles of the same part stay applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("rectangle {x},{y} {w}×{h} lies outside the {width}×{height} screen")]
    OutOfBounds {
        x: u16,
        y: u16,
        w: u16,
        h: u16,
        width: u16,
        height: u16,
    },
    #[error("rectangle data has {got} bytes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("compressed rectangle does not decompress: {0}")]
    Decompress(String),
    /// The compressed data expands to more than the rectangle holds; found
    /// before anything is allocated for it.
    #[error("compressed rectangle expands to more than its {max} bytes")]
    TooLarge { max: usize },
    #[error("screen size {0}×{1} is not possible")]
    BadSize(u16, u16),
}

/// XRGB8888 pixels, `width * 4` bytes per row, no padding: byte order B, G, R, X.
/// Also the state of the screen's deflate stream
/// ([`Encoding::DeflateStream`]), which is not part of the picture: two
/// framebuffers are equal when their pictures are.
#[derive(Clone)]
pub struct Framebuffer {
    width: u16,
    height: u16,
    pixels: Vec<u8>,
    /// The deflate stream rectangles continue: `None` before its first
    /// piece, and after any rectangle failed to apply (a piece may have been
    /// half-used or skipped, so what follows could decode to wrong pixels
    /// without an error) until the device restarts it.
    stream: Option<Box<InflateState>>,
    /// Where the picture is approximate: drawn from lossy rectangles
    /// ([`Encoding::Jpeg`]) and not drawn exact since. Disjoint; at most
    /// [`MAX_APPROX_AREAS`] (past that, the box around them all).
    approx: Vec<Area>,
}

/// Disjoint approximate areas tracked one by one; more collapse into the
/// box around them (which may then call a few exact pixels approximate).
const MAX_APPROX_AREAS: usize = 256;

/// A rectangle of the screen, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Area {
    x: u16,
    y: u16,
    w: u16,
    h: u16,
}

impl Area {
    fn right(&self) -> u16 {
        self.x + self.w
    }

    fn bottom(&self) -> u16 {
        self.y + self.h
    }

    fn intersect(&self, o: &Area) -> Option<Area> {
        let (x, y) = (self.x.max(o.x), self.y.max(o.y));
        let (r, b) = (self.right().min(o.right()), self.bottom().min(o.bottom()));
        (x < r && y < b).then(|| Area {
            x,
            y,
            w: r - x,
            h: b - y,
        })
    }

    /// What is left of `self` outside `cut`: up to four rectangles.
    fn minus(&self, cut: &Area, out: &mut Vec<Area>) {
        let Some(i) = self.intersect(cut) else {
            out.push(*self);
            return;
        };
        let mut piece = |x, y, w, h| {
            if w > 0 && h > 0 {
                out.push(Area { x, y, w, h });
            }
        };
        piece(self.x, self.y, self.w, i.y - self.y);
        piece(self.x, i.bottom(), self.w, self.bottom() - i.bottom());
        piece(self.x, i.y, i.x - self.x, i.h);
        piece(i.right(), i.y, self.right() - i.right(), i.h);
    }
}

impl PartialEq for Framebuffer {
    fn eq(&self, other: &Self) -> bool {
        (self.width, self.height) == (other.width, other.height) && self.pixels == other.pixels
    }
}

impl Eq for Framebuffer {}

impl core::fmt::Debug for Framebuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Framebuffer({}×{})", self.width, self.height)
    }
}

impl Framebuffer {
    /// A black screen of the given size.
    pub fn new(info: &ScreenInfo) -> Result<Self, ApplyError> {
        let (w, h) = (info.width, info.height);
        if w == 0 || h == 0 || w > MAX_SCREEN_EDGE || h > MAX_SCREEN_EDGE {
            return Err(ApplyError::BadSize(w, h));
        }
        Ok(Self {
            width: w,
            height: h,
            pixels: vec![0; usize::from(w) * usize::from(h) * 4],
            stream: None,
            approx: Vec::new(),
        })
    }

    /// How many pixels are approximate: drawn from lossy pictures the
    /// device has not made exact yet (it does once they stop changing, or
    /// at once for an expert who asks for exact pictures only). Zero when
    /// every pixel is exact.
    pub fn approximate_pixels(&self) -> u64 {
        self.approx
            .iter()
            .map(|a| u64::from(a.w) * u64::from(a.h))
            .sum()
    }

    /// `area` is now exact.
    fn mark_exact(&mut self, area: Area) {
        if self.approx.iter().all(|a| a.intersect(&area).is_none()) {
            return;
        }
        let mut left = Vec::with_capacity(self.approx.len() + 4);
        for a in &self.approx {
            a.minus(&area, &mut left);
        }
        self.approx = left;
        self.bound_approx();
    }

    /// `areas` (disjoint) are now approximate.
    fn mark_approx(&mut self, areas: &[Area]) {
        for a in areas {
            self.mark_exact(*a);
        }
        self.approx.extend_from_slice(areas);
        self.bound_approx();
    }

    fn bound_approx(&mut self) {
        if self.approx.len() <= MAX_APPROX_AREAS {
            return;
        }
        let x = self.approx.iter().map(|a| a.x).min().unwrap_or(0);
        let y = self.approx.iter().map(|a| a.y).min().unwrap_or(0);
        let r = self.approx.iter().map(Area::right).max().unwrap_or(0);
        let b = self.approx.iter().map(Area::bottom).max().unwrap_or(0);
        self.approx = vec![Area {
            x,
            y,
            w: r - x,
            h: b - y,
        }];
    }

    /// Keeps [`Self::approximate_pixels`] true after `r` was drawn.
    fn track_approx(&mut self, r: &Rect) {
        let area = Area {
            x: r.x,
            y: r.y,
            w: r.w,
            h: r.h,
        };
        match &r.encoding {
            Encoding::Jpeg(_) => self.mark_approx(&[area]),
            Encoding::Copy { src_x, src_y } => {
                // Approximate pixels move with the copy.
                let src = Area {
                    x: *src_x,
                    y: *src_y,
                    w: r.w,
                    h: r.h,
                };
                let moved: Vec<Area> = self
                    .approx
                    .iter()
                    .filter_map(|a| a.intersect(&src))
                    .map(|a| Area {
                        x: a.x - src.x + area.x,
                        y: a.y - src.y + area.y,
                        ..a
                    })
                    .collect();
                self.mark_exact(area);
                self.mark_approx(&moved);
            }
            _ => self.mark_exact(area),
        }
    }

    pub fn width(&self) -> u16 {
        self.width
    }

    pub fn height(&self) -> u16 {
        self.height
    }

    /// The pixels, XRGB8888 rows. The X byte may be anything; see
    /// [`Self::normalized`].
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Pixels with every X byte set to zero (the form that hashes compare).
    pub fn normalized(&self) -> Vec<u8> {
        let mut p = self.pixels.clone();
        for px in p.chunks_exact_mut(4) {
            px[3] = 0;
        }
        p
    }

    /// The self-check report of this framebuffer, which shows update `seq`
    /// of screen `generation` (see [`ViewReport`]). Costs one pass over the
    /// pixels (about 2 ms at 1080p).
    pub fn view_report(&self, generation: u32, seq: u32) -> ViewReport {
        let stride = usize::from(self.width) * 4;
        let mut row = vec![0u8; stride];
        let mut hashes = heapless::Vec::new();
        for band in 0..view_bands(self.height) {
            let mut h = 0;
            for y in view_band(self.height, band) {
                row.copy_from_slice(&self.pixels[y * stride..(y + 1) * stride]);
                h = hash_row(h, &mut row);
            }
            // Cannot fail: view_bands is at most VIEW_CHECK_BANDS.
            let _ = hashes.push(h);
        }
        ViewReport {
            generation,
            seq,
            hashes,
        }
    }

    /// Applies every rectangle of `part` in order.
    pub fn apply(&mut self, part: &UpdatePart) -> Result<(), ApplyError> {
        for r in &part.rects {
            self.apply_rect(r)?;
        }
        Ok(())
    }

    /// Applies one rectangle. After an error, rectangles that continue the
    /// deflate stream are refused until one restarts it (ask for the whole
    /// screen: its first rectangle does).
    pub fn apply_rect(&mut self, r: &Rect) -> Result<(), ApplyError> {
        let applied = self.apply_rect_inner(r);
        match applied {
            Ok(()) => self.track_approx(r),
            Err(_) => self.stream = None,
        }
        applied
    }

    fn apply_rect_inner(&mut self, r: &Rect) -> Result<(), ApplyError> {
        self.check_bounds(r.x, r.y, r.w, r.h)?;
        let stride = usize::from(self.width) * 4;
        let row_bytes = usize::from(r.w) * 4;
        let x0 = usize::from(r.x) * 4;
        match &r.encoding {
            Encoding::Solid(px) => {
                let b = px.to_le_bytes();
                for row in 0..usize::from(r.h) {
                    let start = (usize::from(r.y) + row) * stride + x0;
                    for p in self.pixels[start..start + row_bytes].chunks_exact_mut(4) {
                        p.copy_from_slice(&b);
                    }
                }
            }
            Encoding::Copy { src_x, src_y } => {
                self.check_bounds(*src_x, *src_y, r.w, r.h)?;
                let sx0 = usize::from(*src_x) * 4;
                let rows: Box<dyn Iterator<Item = usize>> = if src_y < &r.y {
                    // Moving down: copy bottom-up so sources are read before
                    // they are overwritten.
                    Box::new((0..usize::from(r.h)).rev())
                } else {
                    Box::new(0..usize::from(r.h))
                };
                for row in rows {
                    let src = (usize::from(*src_y) + row) * stride + sx0;
                    let dst = (usize::from(r.y) + row) * stride + x0;
                    self.pixels.copy_within(src..src + row_bytes, dst);
                }
            }
            Encoding::Raw(data) => self.blit(r, &data.0)?,
            Encoding::Lz4(data) => {
                let expected = row_bytes * usize::from(r.h);
                // The block's own lengths say what it expands to: check that
                // against the rectangle before giving it any memory, so a
                // few bytes cannot make the client allocate a screenful.
                let got = lz4_expanded_len(&data.0, expected)?;
                if got != expected {
                    return Err(ApplyError::WrongLength { got, expected });
                }
                let mut raw = vec![0; expected];
                let n = lz4_flex::block::decompress_into(&data.0, &mut raw)
                    .map_err(|e| ApplyError::Decompress(e.to_string()))?;
                if n != expected {
                    return Err(ApplyError::WrongLength { got: n, expected });
                }
                self.blit(r, &raw)?;
            }
            Encoding::Deflate(data) => {
                let (w, h) = (usize::from(r.w), usize::from(r.h));
                // The output room is the longest tile stream of the
                // rectangle: a stream that would expand further stops there.
                let mut tiles = vec![0; crate::tiles::max_stream_len(w, h)];
                let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
                    &mut tiles,
                    std::iter::once(&data.0[..]),
                    false,
                    true,
                )
                .map_err(|e| ApplyError::Decompress(format!("deflate: {e:?}")))?;
                self.blit_tiles(r, &tiles[..n])?;
            }
            Encoding::Jpeg(data) => {
                let raw = decode_jpeg(&data.0, r.w, r.h)?;
                self.blit(r, &raw)?;
            }
            Encoding::DeflateStream { restart, data } => {
                let (w, h) = (usize::from(r.w), usize::from(r.h));
                if *restart {
                    match self.stream.as_mut() {
                        Some(s) => s.reset(DataFormat::Raw),
                        None => self.stream = Some(InflateState::new_boxed(DataFormat::Raw)),
                    }
                }
                let Some(state) = self.stream.as_mut() else {
                    return Err(ApplyError::Decompress(
                        "a deflate stream rectangle continues a stream that was not started \
                         or broke earlier"
                            .into(),
                    ));
                };
                let max = crate::tiles::max_stream_len(w, h);
                let mut tiles = vec![0; max + 1];
                let n = inflate_piece(state, &data.0, &mut tiles, max)?;
                self.blit_tiles(r, &tiles[..n])?;
            }
        }
        Ok(())
    }

    /// Decodes the tile stream of rectangle `r` and draws it.
    fn blit_tiles(&mut self, r: &Rect, tiles: &[u8]) -> Result<(), ApplyError> {
        let (w, h) = (usize::from(r.w), usize::from(r.h));
        let mut raw = vec![0; w * h * 4];
        crate::tiles::decode(tiles, w, h, &mut raw)
            .map_err(|e| ApplyError::Decompress(e.to_string()))?;
        self.blit(r, &raw)
    }

    fn blit(&mut self, r: &Rect, data: &[u8]) -> Result<(), ApplyError> {
        let stride = usize::from(self.width) * 4;
        let row_bytes = usize::from(r.w) * 4;
        let expected = row_bytes * usize::from(r.h);
        if data.len() != expected {
            return Err(ApplyError::WrongLength {
                got: data.len(),
                expected,
            });
        }
        for (row, src) in data.chunks_exact(row_bytes.max(1)).enumerate() {
            let start = (usize::from(r.y) + row) * stride + usize::from(r.x) * 4;
            self.pixels[start..start + row_bytes].copy_from_slice(src);
        }
        Ok(())
    }

    fn check_bounds(&self, x: u16, y: u16, w: u16, h: u16) -> Result<(), ApplyError> {
        if u32::from(x) + u32::from(w) > u32::from(self.width)
            || u32::from(y) + u32::from(h) > u32::from(self.height)
        {
            return Err(ApplyError::OutOfBounds {
                x,
                y,
                w,
                h,
                width: self.width,
                height: self.height,
            });
        }
        Ok(())
    }
}

/// Inflates one piece of a deflate stream (all of `input`) into `out`;
/// how many bytes it expanded to. A piece that would expand past `max`
/// bytes (`out` has one byte more, so a piece that fits leaves no output
/// pending), or that ends the stream (the device never does), is an error.
fn inflate_piece(
    state: &mut InflateState,
    input: &[u8],
    out: &mut [u8],
    max: usize,
) -> Result<usize, ApplyError> {
    let (mut read, mut written) = (0, 0);
    loop {
        let r = inflate(state, &input[read..], &mut out[written..], MZFlush::None);
        read += r.bytes_consumed;
        written += r.bytes_written;
        if written > max {
            return Err(ApplyError::TooLarge { max });
        }
        match r.status {
            // Buf: no progress possible, which is fine once all is read.
            Ok(MZStatus::Ok) | Err(MZError::Buf) => {}
            Ok(MZStatus::StreamEnd) => {
                return Err(ApplyError::Decompress(
                    "deflate stream: a rectangle ended the stream".into(),
                ));
            }
            Ok(s) => return Err(ApplyError::Decompress(format!("deflate stream: {s:?}"))),
            Err(e) => return Err(ApplyError::Decompress(format!("deflate stream: {e:?}"))),
        }
        if read == input.len() {
            return Ok(written);
        }
        if r.bytes_consumed == 0 && r.bytes_written == 0 {
            return Err(ApplyError::Decompress(format!(
                "deflate stream: stuck after {read} of {} bytes",
                input.len()
            )));
        }
    }
}

/// Decodes a JPEG that must be exactly `w`×`h` pixels into XRGB8888 rows.
/// The size is checked from the header before any pixel memory is given.
fn decode_jpeg(data: &[u8], w: u16, h: u16) -> Result<Vec<u8>, ApplyError> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let bad = |e: &dyn core::fmt::Display| ApplyError::Decompress(format!("jpeg: {e}"));
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::BGRA)
        .set_max_width(usize::from(w).max(1))
        .set_max_height(usize::from(h).max(1))
        .set_strict_mode(true);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
    d.decode_headers().map_err(|e| bad(&e))?;
    let info = d.info().ok_or_else(|| bad(&"no image header"))?;
    if (info.width, info.height) != (w, h) {
        return Err(ApplyError::Decompress(format!(
            "jpeg of {}×{} for a {w}×{h} rectangle",
            info.width, info.height
        )));
    }
    let expected = usize::from(w) * usize::from(h) * 4;
    if d.output_buffer_size() != Some(expected) {
        return Err(bad(&"the image does not decode to 4-byte pixels"));
    }
    let mut raw = vec![0; expected];
    d.decode_into(&mut raw).map_err(|e| bad(&e))?;
    Ok(raw)
}

/// How many bytes an LZ4 block (no size prefix) expands to, read from its
/// sequence headers without decompressing. Stops with
/// [`ApplyError::TooLarge`] as soon as the total passes `max`. Whether the
/// matches are valid is left to the decompressor.
fn lz4_expanded_len(block: &[u8], max: usize) -> Result<usize, ApplyError> {
    let truncated = || ApplyError::Decompress("the block ends inside a sequence".into());
    // A length nibble of 15 continues in bytes of 255 until a smaller one.
    let extend = |mut len: usize, at: &mut usize| -> Result<usize, ApplyError> {
        loop {
            let b = *block.get(*at).ok_or_else(truncated)?;
            *at += 1;
            len = len.saturating_add(usize::from(b));
            if b != 255 {
                return Ok(len);
            }
        }
    };
    let mut at = 0usize;
    let mut total = 0usize;
    loop {
        let token = *block.get(at).ok_or_else(truncated)?;
        at += 1;
        let mut literals = usize::from(token >> 4);
        if literals == 15 {
            literals = extend(literals, &mut at)?;
        }
        total = total.saturating_add(literals);
        if total > max {
            return Err(ApplyError::TooLarge { max });
        }
        at = at.saturating_add(literals);
        if at > block.len() {
            return Err(truncated());
        }
        if at == block.len() {
            // The last sequence has literals only.
            return Ok(total);
        }
        // Two offset bytes, then the match length (4 at least).
        at += 2;
        if at > block.len() {
            return Err(truncated());
        }
        let mut matched = usize::from(token & 15);
        if matched == 15 {
            matched = extend(matched, &mut at)?;
        }
        total = total.saturating_add(matched + 4);
        if total > max {
            return Err(ApplyError::TooLarge { max });
        }
        if at >= block.len() {
            // Every block ends with literals.
            return Err(truncated());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Payload, WireFormat};

    fn fb(w: u16, h: u16) -> Framebuffer {
        Framebuffer::new(&ScreenInfo {
            width: w,
            height: h,
            format: WireFormat::Xrgb8888,
            generation: 0,
        })
        .unwrap()
    }

    fn px(fb: &Framebuffer, x: usize, y: usize) -> u32 {
        let i = (y * usize::from(fb.width()) + x) * 4;
        u32::from_le_bytes(fb.pixels()[i..i + 4].try_into().unwrap())
    }

    fn rect(x: u16, y: u16, w: u16, h: u16, encoding: Encoding) -> Rect {
        Rect {
            x,
            y,
            w,
            h,
            encoding,
        }
    }

    fn jpeg() -> Encoding {
        Encoding::Jpeg(Payload(vec![0xff, 0xd8]))
    }

    #[test]
    fn lossy_areas_stay_approximate_until_drawn_exact() {
        let mut f = fb(200, 100);
        assert_eq!(f.approximate_pixels(), 0);
        // Two photos, lossy (tracked as drawn; the bytes are not decoded here).
        f.track_approx(&rect(0, 0, 100, 50, jpeg()));
        f.track_approx(&rect(50, 25, 100, 50, jpeg()));
        // 5000 + 5000, overlapping in 50×25.
        assert_eq!(f.approximate_pixels(), 5000 + 5000 - 50 * 25);
        // Part of the first made exact: the rest stays approximate.
        f.track_approx(&rect(0, 0, 50, 50, Encoding::Solid(7)));
        assert_eq!(f.approximate_pixels(), 2500 + 5000 - 50 * 25);
        // A scroll by 10 rows moves approximate pixels with it: of the
        // first photo's 50×25 left, the 50×15 below row 10 (the rest
        // scrolled out), and all of the second.
        f.track_approx(&rect(
            0,
            0,
            200,
            90,
            Encoding::Copy {
                src_x: 0,
                src_y: 10,
            },
        ));
        assert_eq!(f.approximate_pixels(), 50 * 15 + 5000);
        // The refinement: every pixel exact again.
        f.track_approx(&rect(0, 0, 200, 100, Encoding::Solid(0)));
        assert_eq!(f.approximate_pixels(), 0);
    }

    #[test]
    fn many_small_lossy_areas_are_bounded() {
        let mut f = fb(1000, 1000);
        for i in 0..(MAX_APPROX_AREAS as u16 + 50) {
            f.track_approx(&rect((i % 30) * 32, (i / 30) * 32, 16, 16, jpeg()));
        }
        assert!(f.approx.len() <= MAX_APPROX_AREAS);
        assert!(f.approximate_pixels() >= 16 * 16 * (MAX_APPROX_AREAS as u64 + 50));
        f.track_approx(&rect(0, 0, 1000, 1000, Encoding::Solid(0)));
        assert_eq!(f.approximate_pixels(), 0);
    }

    #[test]
    fn view_bands_cover_every_row_once_within_the_limit() {
        for h in [1u16, 2, 63, 64, 65, 480, 1080, 1081, 2160, MAX_SCREEN_EDGE] {
            let n = view_bands(h);
            assert!((1..=VIEW_CHECK_BANDS).contains(&n), "{h} rows: {n} bands");
            let mut next = 0;
            for b in 0..n {
                let r = view_band(h, b);
                assert_eq!(r.start, next, "{h} rows, band {b}");
                assert!(!r.is_empty(), "{h} rows, band {b} is empty");
                next = r.end;
            }
            assert_eq!(next, usize::from(h));
        }
    }

    #[test]
    fn view_report_ignores_the_x_byte_and_names_the_band_that_differs() {
        let mut a = fb(40, 100);
        let b = a.clone();
        // X bytes differ everywhere: no band differs.
        a.apply_rect(&Rect {
            x: 0,
            y: 0,
            w: 40,
            h: 100,
            encoding: Encoding::Solid(0xff00_0000),
        })
        .unwrap();
        assert_eq!(a.view_report(1, 2), b.view_report(1, 2));
        // One pixel in row 70.
        a.apply_rect(&Rect {
            x: 39,
            y: 70,
            w: 1,
            h: 1,
            encoding: Encoding::Solid(0x0000_0001),
        })
        .unwrap();
        let (ra, rb) = (a.view_report(1, 2), b.view_report(1, 2));
        let differing: Vec<usize> = (0..ra.hashes.len())
            .filter(|&i| ra.hashes[i] != rb.hashes[i])
            .collect();
        assert_eq!(differing.len(), 1);
        assert!(view_band(100, differing[0]).contains(&70));
    }

    #[test]
    fn solid_raw_lz4_and_copy_apply() {
        let mut f = fb(8, 8);
        f.apply_rect(&Rect {
            x: 0,
            y: 0,
            w: 8,
            h: 8,
            encoding: Encoding::Solid(0x112233),
        })
        .unwrap();
        assert_eq!(px(&f, 7, 7), 0x112233);
        let raw: Vec<u8> = (0..16u32).flat_map(|i| i.to_le_bytes()).collect();
        f.apply_rect(&Rect {
            x: 2,
            y: 2,
            w: 4,
            h: 4,
            encoding: Encoding::Raw(Payload(raw.clone())),
        })
        .unwrap();
        assert_eq!(px(&f, 5, 5), 15);
        let lz = lz4_flex::block::compress(&raw);
        f.apply_rect(&Rect {
            x: 4,
            y: 0,
            w: 4,
            h: 4,
            encoding: Encoding::Lz4(Payload(lz)),
        })
        .unwrap();
        assert_eq!(px(&f, 7, 3), 15);
        // Scroll up by one row, overlapping.
        let before = px(&f, 5, 5);
        f.apply_rect(&Rect {
            x: 0,
            y: 0,
            w: 8,
            h: 7,
            encoding: Encoding::Copy { src_x: 0, src_y: 1 },
        })
        .unwrap();
        assert_eq!(px(&f, 5, 4), before);
        // Scroll down by one row, overlapping.
        let before = px(&f, 5, 4);
        f.apply_rect(&Rect {
            x: 0,
            y: 1,
            w: 8,
            h: 7,
            encoding: Encoding::Copy { src_x: 0, src_y: 0 },
        })
        .unwrap();
        assert_eq!(px(&f, 5, 5), before);
    }

    #[test]
    fn deflate_rects_apply_and_a_stream_that_expands_too_far_is_refused() {
        let mut f = fb(8, 8);
        let xrgb: Vec<u8> = (0..12u32).flat_map(|i| [i as u8, 7, 200, 0]).collect();
        let mut stream = Vec::new();
        crate::tiles::encode(&xrgb, 3, 4, &mut stream);
        let rect = |data: Vec<u8>| Rect {
            x: 5,
            y: 4,
            w: 3,
            h: 4,
            encoding: Encoding::Deflate(Payload(data)),
        };
        f.apply_rect(&rect(miniz_oxide::deflate::compress_to_vec(&stream, 1)))
            .unwrap();
        assert_eq!(px(&f, 5, 4), 0x00c8_0700);
        assert_eq!(px(&f, 7, 7), 0x00c8_070b);
        // A few hundred bytes of deflate that expand to 1 MB: stopped at the
        // rectangle's longest tile stream, nothing written.
        let bomb = miniz_oxide::deflate::compress_to_vec(&vec![0u8; 1 << 20], 9);
        assert!(bomb.len() < 2000);
        assert!(matches!(
            f.apply_rect(&rect(bomb)),
            Err(ApplyError::Decompress(_))
        ));
        let short = miniz_oxide::deflate::compress_to_vec(&stream[..stream.len() - 1], 1);
        assert!(matches!(
            f.apply_rect(&rect(short)),
            Err(ApplyError::Decompress(e)) if e.contains("ends inside tile 0")
        ));
        assert!(f.apply_rect(&rect(vec![0xff; 9])).is_err());
        assert_eq!(px(&f, 7, 7), 0x00c8_070b);
    }

    /// Pieces of one raw deflate stream, each ended by a sync flush, as the
    /// device's encoder makes them.
    struct Pieces(Box<miniz_oxide::deflate::core::CompressorOxide>);

    impl Pieces {
        fn new() -> Self {
            use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
            Self(Box::new(CompressorOxide::new(
                create_comp_flags_from_zip_params(2, -15, 0),
            )))
        }

        fn piece(&mut self, data: &[u8], flush: miniz_oxide::deflate::core::TDEFLFlush) -> Vec<u8> {
            let mut out = vec![0; data.len() * 2 + 64];
            let (status, read, n) =
                miniz_oxide::deflate::core::compress(&mut self.0, data, &mut out, flush);
            assert_eq!(read, data.len(), "{status:?}");
            out.truncate(n);
            out
        }

        fn next(&mut self, data: &[u8]) -> Vec<u8> {
            self.piece(data, miniz_oxide::deflate::core::TDEFLFlush::Sync)
        }
    }

    #[test]
    fn deflate_stream_pieces_refer_back_and_a_broken_stream_waits_for_a_restart() {
        let (w, h) = (40u16, 30u16);
        let mut f = fb(w, h);
        // Text-like content: the same busy glyph row repeated, so later
        // pieces are mostly back-references into earlier ones.
        let xrgb: Vec<u8> = (0..usize::from(w) * usize::from(h))
            .flat_map(|i| [(i % 40 * 37 % 251) as u8, (i % 40 * 11) as u8, 9, 0])
            .collect();
        let mut stream = Vec::new();
        crate::tiles::encode(&xrgb, usize::from(w), usize::from(h), &mut stream);
        let rect = |restart: bool, data: Vec<u8>| Rect {
            x: 0,
            y: 0,
            w,
            h,
            encoding: Encoding::DeflateStream {
                restart,
                data: Payload(data),
            },
        };
        let want = f.pixels().len();
        let mut pieces = Pieces::new();
        let first = pieces.next(&stream);
        let second = pieces.next(&stream);
        assert!(
            second.len() * 4 < first.len(),
            "a repeat refers back: {} then {} bytes",
            first.len(),
            second.len()
        );
        // A continuation with no stream started: refused, nothing drawn.
        let mut fresh = fb(w, h);
        assert!(matches!(
            fresh.apply_rect(&rect(false, first.clone())),
            Err(ApplyError::Decompress(e)) if e.contains("not started")
        ));
        assert!(fresh.pixels().iter().all(|&b| b == 0));
        f.apply_rect(&rect(true, first.clone())).unwrap();
        f.apply_rect(&rect(false, second)).unwrap();
        assert_eq!(f.normalized(), xrgb);
        assert_eq!(f.pixels().len(), want);
        // A damaged piece fails; so does every continuation after it (it
        // could decode to wrong pixels), until the device restarts.
        let mut third = pieces.next(&stream);
        let fourth = pieces.next(&stream);
        third[0] ^= 0x5a;
        third.truncate(third.len() / 2);
        assert!(f.apply_rect(&rect(false, third)).is_err());
        assert!(matches!(
            f.apply_rect(&rect(false, fourth)),
            Err(ApplyError::Decompress(e)) if e.contains("broke earlier")
        ));
        let mut again = Pieces::new();
        f.apply_rect(&rect(true, again.next(&stream))).unwrap();
        f.apply_rect(&rect(false, again.next(&stream))).unwrap();
        assert_eq!(f.normalized(), xrgb);
        // An error elsewhere (a rectangle off the screen) breaks it too: the
        // expert skips the rest of that update.
        let off = Rect {
            x: 1,
            ..rect(false, again.next(&stream))
        };
        assert!(matches!(
            f.apply_rect(&off),
            Err(ApplyError::OutOfBounds { .. })
        ));
        assert!(f.apply_rect(&rect(false, again.next(&stream))).is_err());
        // A piece that ends the stream, and a bomb: errors, not panics.
        let mut ending = Pieces::new();
        let last = ending.piece(&stream, miniz_oxide::deflate::core::TDEFLFlush::Finish);
        assert!(matches!(
            f.apply_rect(&rect(true, last)),
            Err(ApplyError::Decompress(e)) if e.contains("ended the stream")
        ));
        let mut bomb = Pieces::new();
        let bomb = bomb.next(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4000);
        assert!(matches!(
            f.apply_rect(&rect(true, bomb)),
            Err(ApplyError::TooLarge { .. })
        ));
        assert!(f.apply_rect(&rect(true, vec![0xff; 9])).is_err());
        // Cloned framebuffers go on decoding their own copy of the stream.
        let mut a = fb(w, h);
        let mut p = Pieces::new();
        a.apply_rect(&rect(true, p.next(&stream))).unwrap();
        let mut b = a.clone();
        let next = p.next(&stream);
        a.apply_rect(&rect(false, next.clone())).unwrap();
        b.apply_rect(&rect(false, next)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.normalized(), xrgb);
    }

    #[test]
    fn bad_rects_are_errors_not_panics() {
        let mut f = fb(4, 4);
        assert!(matches!(
            f.apply_rect(&Rect {
                x: 3,
                y: 0,
                w: 2,
                h: 1,
                encoding: Encoding::Solid(0)
            }),
            Err(ApplyError::OutOfBounds { .. })
        ));
        assert!(matches!(
            f.apply_rect(&Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 2,
                encoding: Encoding::Raw(Payload(vec![0; 3]))
            }),
            Err(ApplyError::WrongLength { .. })
        ));
        assert!(matches!(
            f.apply_rect(&Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 2,
                encoding: Encoding::Lz4(Payload(vec![0xff; 5]))
            }),
            Err(ApplyError::Decompress(_))
        ));
        assert!(matches!(
            f.apply_rect(&Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 2,
                encoding: Encoding::Copy { src_x: 3, src_y: 3 }
            }),
            Err(ApplyError::OutOfBounds { .. })
        ));
        // Expands to fewer bytes than the rectangle: the rest would be stale.
        assert_eq!(
            f.apply_rect(&Rect {
                x: 0,
                y: 0,
                w: 2,
                h: 2,
                encoding: Encoding::Lz4(Payload(lz4_flex::block::compress(&[1; 12])))
            }),
            Err(ApplyError::WrongLength {
                got: 12,
                expected: 16
            })
        );
        assert!(
            Framebuffer::new(&ScreenInfo {
                width: 0,
                height: 5,
                format: WireFormat::Xrgb8888,
                generation: 0
            })
            .is_err()
        );
    }

    /// An LZ4 block whose sequence headers claim `len` bytes: one literal,
    /// then one long match (its length continued in 255s).
    fn claiming(len: usize) -> Vec<u8> {
        let mut b = vec![0x1f, 0, 1, 0];
        let mut rest = len - 1 - 19;
        while rest >= 255 {
            b.push(255);
            rest -= 255;
        }
        b.push(rest as u8);
        b.extend_from_slice(&[0x50, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn lz4_expansion_is_known_before_decompressing() {
        for data in [vec![], vec![7u8; 1], (0..=255).cycle().take(5000).collect()] {
            let block = lz4_flex::block::compress(&data);
            assert_eq!(lz4_expanded_len(&block, usize::MAX), Ok(data.len()));
        }
        assert_eq!(lz4_expanded_len(&claiming(1000), usize::MAX), Ok(1000 + 5));
        // 1 GiB claimed into 64 bytes: refused without decompressing.
        assert_eq!(
            lz4_expanded_len(&claiming(1 << 30), 64),
            Err(ApplyError::TooLarge { max: 64 })
        );
        // The same claim into a whole large screen: refused as too large
        // (found by `lz4_expanded_len`, before the rectangle's buffer is
        // allocated), not as a failed decompression into that buffer.
        let mut f = fb(4096, 4096);
        assert_eq!(
            f.apply_rect(&Rect {
                x: 0,
                y: 0,
                w: 4096,
                h: 4096,
                encoding: Encoding::Lz4(Payload(claiming(1 << 30)))
            }),
            Err(ApplyError::TooLarge {
                max: 4096 * 4096 * 4
            })
        );
        assert!(matches!(
            lz4_expanded_len(&[0x1f, 0, 1], 64),
            Err(ApplyError::Decompress(_))
        ));
        assert!(matches!(
            lz4_expanded_len(&[0x30, 1], 64),
            Err(ApplyError::Decompress(_))
        ));
    }
}
