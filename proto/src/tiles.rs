//! The tile stream inside an [`Encoding::Deflate`](crate::msg::Encoding)
//! rectangle, before deflate: the rectangle cut into tiles of [`TILE_EDGE`]
//! pixels (row by row; the last column and row of tiles may be smaller),
//! each tile a header byte and its pixels in the cheapest of five forms.
//! Pixels are 3 bytes, B, G, R (an XRGB8888 pixel's little-endian bytes
//! without the X byte). The forms are those of RFB's ZRLE (RFC 6143,
//! 7.7.6), which suit screens of user interfaces: flat areas, text in few
//! colours, long runs.
//!
//! | header `k` | tile |
//! | --- | --- |
//! | 0 | raw: every pixel |
//! | 1 | solid: one pixel |
//! | 2–16 | `k` palette pixels, then per tile row the indices packed MSB first at 1 bit (`k` = 2), 2 bits (3–4) or 4 bits (5–16), each row from a new byte |
//! | 17 | predicted raw: every pixel's bytes as their difference (mod 256) from a prediction made of the tile's pixels left of it, above it and above-left (see below) |
//! | 128 | plain runs: a pixel, then its length |
//! | 130–255 | `k - 128` palette pixels, then runs: a byte `i` is one pixel of index `i`; `i + 128` is index `i` followed by a length |
//!
//! Form 17 suits photographs: deflate finds little to match in their raw
//! bytes, and a quarter to a third more in what prediction leaves. Each of
//! the B, G and R bytes is predicted on its own, from the same byte of the
//! pixel to the left (`a`), above (`b`) and above-left (`c`), all inside
//! the tile: the tile's first pixel from 0, the rest of its first row from
//! `a`, the rest of its first column from `b`, and every other pixel by
//! LOCO-I's median rule (`min(a, b)` when `c ≥ max(a, b)`, `max(a, b)`
//! when `c ≤ min(a, b)`, else `a + b - c`). An encoder uses it only for an
//! expert that announced [`crate::msg::Capabilities::DEFLATE_STREAM`].
//!
//! A length is bytes of 255 ended by one below 255, their sum plus one.
//! Runs carry on from one row of the tile to the next and end exactly at the
//! tile's end. Anything else (an index past the palette, a run past the
//! tile, bytes left over) is an error.

/// Edge of a tile in pixels.
pub const TILE_EDGE: usize = 64;
/// Most colours of a palette of runs (header 255).
const MAX_RUN_PALETTE: usize = 127;
/// Most colours of a packed palette.
const MAX_PACKED_PALETTE: usize = 16;

/// Why a tile stream could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("the tile stream ends inside tile {0}")]
    Truncated(usize),
    #[error("tile {0} has header {1}, which is no tile form")]
    BadHeader(usize, u8),
    #[error("tile {0} uses a colour index past its palette")]
    BadIndex(usize),
    #[error("a run in tile {0} goes past the tile's end")]
    LongRun(usize),
    #[error("{0} bytes are left after the last tile")]
    TrailingBytes(usize),
}

/// Longest tile stream of a `w`×`h` rectangle: every tile raw.
pub fn max_stream_len(w: usize, h: usize) -> usize {
    w * h * 3 + w.div_ceil(TILE_EDGE) * h.div_ceil(TILE_EDGE)
}

/// The tiles of a `w`×`h` rectangle, row by row: `(x, y, tw, th)`.
fn tiles(w: usize, h: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..h).step_by(TILE_EDGE).flat_map(move |y| {
        (0..w)
            .step_by(TILE_EDGE)
            .map(move |x| (x, y, TILE_EDGE.min(w - x), TILE_EDGE.min(h - y)))
    })
}

/// Bits per index of a packed palette of `k` colours.
fn packed_bits(k: usize) -> usize {
    match k {
        0..=2 => 1,
        3..=4 => 2,
        _ => 4,
    }
}

fn push_len(out: &mut Vec<u8>, run: usize) {
    let mut rest = run - 1;
    while rest >= 255 {
        out.push(255);
        rest -= 255;
    }
    out.push(rest as u8);
}

/// Colours of one tile, up to [`MAX_RUN_PALETTE`], with a small open
/// addressing table from colour to index.
struct Palette {
    colours: Vec<u32>,
    slots: [u16; 256],
}

impl Palette {
    const EMPTY: u16 = u16::MAX;

    fn new() -> Self {
        Self {
            colours: Vec::with_capacity(MAX_RUN_PALETTE),
            slots: [Self::EMPTY; 256],
        }
    }

    fn clear(&mut self) {
        self.colours.clear();
        self.slots = [Self::EMPTY; 256];
    }

    fn slot(c: u32) -> usize {
        (c.wrapping_mul(0x9E37_79B1) >> 24) as usize
    }

    /// Index of `c`, adding it when there is room; `None` when full.
    fn index_or_add(&mut self, c: u32) -> Option<u8> {
        let mut s = Self::slot(c);
        loop {
            match self.slots[s] {
                Self::EMPTY => {
                    if self.colours.len() == MAX_RUN_PALETTE {
                        return None;
                    }
                    self.slots[s] = self.colours.len() as u16;
                    self.colours.push(c);
                    return Some((self.colours.len() - 1) as u8);
                }
                i if self.colours[usize::from(i)] == c => return Some(i as u8),
                _ => s = (s + 1) & 255,
            }
        }
    }
}

/// A pixel's colour: its B, G, R bytes (the X byte dropped).
#[inline(always)]
fn rgb(p: &[u8]) -> u32 {
    u32::from_le_bytes([p[0], p[1], p[2], p[3]]) & 0x00ff_ffff
}

/// Appends to `out` the tile stream of a `w`×`h` rectangle given as rows of
/// XRGB8888 pixels (`w * 4` bytes each), without the predicted form.
pub fn encode(xrgb: &[u8], w: usize, h: usize, out: &mut Vec<u8>) {
    debug_assert_eq!(xrgb.len(), w * h * 4);
    encode_rows(xrgb, w * 4, w, h, false, out);
}

/// LOCO-I's median predictor of a byte from its left (`a`), upper (`b`)
/// and upper-left (`c`) neighbours.
/// Without branches: the rule is `a + b - c` held between `min(a, b)` and
/// `max(a, b)`.
#[inline(always)]
fn med(a: u8, b: u8, c: u8) -> u8 {
    let (a, b, c) = (i16::from(a), i16::from(b), i16::from(c));
    (a + b - c).clamp(a.min(b), a.max(b)) as u8
}

/// The residuals (form 17) of one tile row of `tw` 4-byte pixels into
/// `dst` (3 bytes a pixel), given the row above (`None` on the tile's first
/// row).
fn residual_row(row: &[u8], above: Option<&[u8]>, dst: &mut [u8]) {
    match above {
        None => {
            dst[..3].copy_from_slice(&row[..3]);
            for ((d, p), l) in dst[3..]
                .chunks_exact_mut(3)
                .zip(row[4..].chunks_exact(4))
                .zip(row.chunks_exact(4))
            {
                for ch in 0..3 {
                    d[ch] = p[ch].wrapping_sub(l[ch]);
                }
            }
        }
        Some(b) => {
            for ch in 0..3 {
                dst[ch] = row[ch].wrapping_sub(b[ch]);
            }
            for (((d, p), l), (u, ul)) in dst[3..]
                .chunks_exact_mut(3)
                .zip(row[4..].chunks_exact(4))
                .zip(row.chunks_exact(4))
                .zip(b[4..].chunks_exact(4).zip(b.chunks_exact(4)))
            {
                for ch in 0..3 {
                    d[ch] = p[ch].wrapping_sub(med(l[ch], u[ch], ul[ch]));
                }
            }
        }
    }
}

/// The inverse of [`residual_row`]: one tile row of 3-byte pixels into
/// `row`, from its residuals `d` and the row above (3 bytes a pixel).
fn unpredict_row(d: &[u8], above: Option<&[u8]>, row: &mut [u8]) {
    let n = d.len();
    match above {
        None => {
            row[..3].copy_from_slice(&d[..3]);
            for i in 3..n {
                row[i] = d[i].wrapping_add(row[i - 3]);
            }
        }
        Some(b) => {
            for ch in 0..3 {
                row[ch] = d[ch].wrapping_add(b[ch]);
            }
            for i in 3..n {
                row[i] = d[i].wrapping_add(med(row[i - 3], b[i], b[i - 3]));
            }
        }
    }
}

/// [`encode`] of a rectangle inside a larger buffer: its rows of `w`
/// XRGB8888 pixels start every `stride` bytes from the start of `xrgb`
/// (the X byte may be anything). Reads the pixels in place. With
/// `predicted`, tiles that would go raw go as form 17 (only for an expert
/// that takes it).
///
/// # Panics
/// If the rows do not fit `xrgb` (`stride` under `w * 4`, or too few bytes).
pub fn encode_rows(
    xrgb: &[u8],
    stride: usize,
    w: usize,
    h: usize,
    predicted: bool,
    out: &mut Vec<u8>,
) {
    assert!(
        stride >= w * 4 && (h == 0 || xrgb.len() >= (h - 1) * stride + w * 4),
        "the rows lie outside the buffer"
    );
    let put = |out: &mut Vec<u8>, c: u32| out.extend_from_slice(&c.to_le_bytes()[..3]);
    let mut pal = Palette::new();
    let mut idx = vec![0u8; TILE_EDGE * TILE_EDGE];
    // (colour, palette index, length): at most a run per pixel.
    let mut runs: Vec<(u32, u8, u16)> = Vec::with_capacity(TILE_EDGE * TILE_EDGE);
    for (tx, ty, tw, th) in tiles(w, h) {
        let row_of = |y: usize| &xrgb[y * stride + tx * 4..y * stride + (tx + tw) * 4];
        // One colour (backgrounds, most tiles of an interface): found with
        // a compare per pixel, before any palette work.
        let first = rgb(&row_of(ty)[..4]);
        if (ty..ty + th).all(|y| row_of(y).chunks_exact(4).all(|p| rgb(p) == first)) {
            out.push(1);
            put(out, first);
            continue;
        }
        pal.clear();
        runs.clear();
        let mut full = false;
        // The tile as runs of one colour (carrying on across its rows):
        // pixels equal to the one before (most of them, on a user
        // interface) cost one compare, no palette lookup and no store.
        let (mut prev, mut prev_index, mut run_len) = (u32::MAX, 0u8, 0u16);
        for y in ty..ty + th {
            for p in row_of(y).chunks_exact(4) {
                let c = rgb(p);
                if c != prev {
                    if run_len > 0 {
                        runs.push((prev, prev_index, run_len));
                    }
                    prev = c;
                    run_len = 0;
                    if !full {
                        match pal.index_or_add(c) {
                            Some(i) => prev_index = i,
                            None => full = true,
                        }
                    }
                }
                run_len += 1;
            }
        }
        runs.push((prev, prev_index, run_len));
        let singles = runs.iter().filter(|r| r.2 == 1).count();
        let n = tw * th;
        let k = pal.colours.len();
        if !full && k == 1 {
            out.push(1);
            put(out, pal.colours[0]);
            continue;
        }
        // Estimated sizes; a run longer than one costs its index and (at
        // least) one length byte.
        let raw = 3 * n;
        let plain = 4 * runs.len();
        let packed = if !full && k <= MAX_PACKED_PALETTE {
            3 * k + th * (tw * packed_bits(k)).div_ceil(8)
        } else {
            usize::MAX
        };
        let run_pal = if !full {
            3 * k + singles + 2 * (runs.len() - singles)
        } else {
            usize::MAX
        };
        let best = raw.min(plain).min(packed).min(run_pal);
        if best == packed {
            out.push(k as u8);
            pal.colours.iter().for_each(|&c| put(out, c));
            let mut at = 0;
            for &(_, i, len) in &runs {
                idx[at..at + usize::from(len)].fill(i);
                at += usize::from(len);
            }
            let bits = packed_bits(k);
            for row in idx[..n].chunks(tw) {
                let (mut acc, mut filled) = (0u8, 0usize);
                for &i in row {
                    acc = (acc << bits) | i;
                    filled += bits;
                    if filled == 8 {
                        out.push(acc);
                        (acc, filled) = (0, 0);
                    }
                }
                if filled > 0 {
                    out.push(acc << (8 - filled));
                }
            }
        } else if best == run_pal {
            out.push(128 + k as u8);
            pal.colours.iter().for_each(|&c| put(out, c));
            for &(_, i, len) in &runs {
                if len == 1 {
                    out.push(i);
                } else {
                    out.push(i | 128);
                    push_len(out, usize::from(len));
                }
            }
        } else if best == plain {
            out.push(128);
            for &(c, _, len) in &runs {
                put(out, c);
                push_len(out, usize::from(len));
            }
        } else if predicted {
            out.push(17);
            let start = out.len();
            out.resize(start + 3 * n, 0);
            let rows = out[start..].chunks_exact_mut(3 * tw);
            for (y, dst) in (ty..ty + th).zip(rows) {
                residual_row(row_of(y), (y > ty).then(|| row_of(y - 1)), dst);
            }
        } else {
            out.push(0);
            let start = out.len();
            out.resize(start + 3 * n, 0);
            let rows = out[start..].chunks_exact_mut(3 * tw);
            for (y, dst) in (ty..ty + th).zip(rows) {
                let row = row_of(y);
                for (d, s) in dst.chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                    d.copy_from_slice(&s[..3]);
                }
            }
        }
    }
}

/// Writes the pixels of one tile in row order into the rectangle.
struct TileWriter<'a> {
    xrgb: &'a mut [u8],
    /// Byte offset of the next pixel, and its column in the tile.
    at: usize,
    col: usize,
    tile_w: usize,
    /// Bytes from the end of a tile row to the start of the next.
    skip: usize,
}

impl<'a> TileWriter<'a> {
    fn new(xrgb: &'a mut [u8], w: usize, tx: usize, ty: usize, tile_w: usize) -> Self {
        Self {
            xrgb,
            at: (ty * w + tx) * 4,
            col: 0,
            tile_w,
            skip: (w - tile_w) * 4,
        }
    }

    /// The next pixel; the caller writes at most the tile's pixels.
    fn put(&mut self, p: [u8; 4]) {
        self.xrgb[self.at..self.at + 4].copy_from_slice(&p);
        self.at += 4;
        self.col += 1;
        if self.col == self.tile_w {
            self.col = 0;
            self.at += self.skip;
        }
    }

    /// A whole tile row of 3-byte pixels (at the start of a row).
    fn put_row(&mut self, rgb: &[u8]) {
        debug_assert_eq!((self.col, rgb.len()), (0, self.tile_w * 3));
        for (d, s) in self.xrgb[self.at..self.at + 4 * self.tile_w]
            .chunks_exact_mut(4)
            .zip(rgb.chunks_exact(3))
        {
            d.copy_from_slice(&[s[0], s[1], s[2], 0]);
        }
        self.at += 4 * self.tile_w + self.skip;
    }

    /// `len` pixels of `p`, a row piece at a time.
    fn run(&mut self, p: [u8; 4], mut len: usize) {
        while len > 0 {
            let k = len.min(self.tile_w - self.col);
            for d in self.xrgb[self.at..self.at + 4 * k].chunks_exact_mut(4) {
                d.copy_from_slice(&p);
            }
            len -= k;
            self.at += 4 * k;
            self.col += k;
            if self.col == self.tile_w {
                self.col = 0;
                self.at += self.skip;
            }
        }
    }
}

/// Reads a tile stream into `xrgb` (rows of `w * 4` bytes, `h` rows; the
/// X byte of every pixel set to 0).
pub fn decode(stream: &[u8], w: usize, h: usize, xrgb: &mut [u8]) -> Result<(), TileError> {
    debug_assert_eq!(xrgb.len(), w * h * 4);
    let mut at = 0usize;
    for (t, (tx, ty, tw, th)) in tiles(w, h).enumerate() {
        let mut take = |n: usize| -> Result<&[u8], TileError> {
            let s = stream.get(at..at + n).ok_or(TileError::Truncated(t))?;
            at += n;
            Ok(s)
        };
        let pixel = |b: &[u8]| [b[0], b[1], b[2], 0];
        let n = tw * th;
        let mut out = TileWriter::new(xrgb, w, tx, ty, tw);
        let header = take(1)?[0];
        match header {
            0 => {
                for p in take(n * 3)?.chunks_exact(3) {
                    out.put(pixel(p));
                }
            }
            1 => out.run(pixel(take(3)?), n),
            17 => {
                let d = take(n * 3)?;
                let (mut row, mut above) = ([0u8; TILE_EDGE * 3], [0u8; TILE_EDGE * 3]);
                for (j, d) in d.chunks_exact(tw * 3).enumerate() {
                    unpredict_row(d, (j > 0).then_some(&above[..tw * 3]), &mut row[..tw * 3]);
                    out.put_row(&row[..tw * 3]);
                    std::mem::swap(&mut row, &mut above);
                }
            }
            2..=16 => {
                let k = usize::from(header);
                let palette: Vec<[u8; 4]> = take(3 * k)?.chunks_exact(3).map(pixel).collect();
                let bits = packed_bits(k);
                let row_bytes = (tw * bits).div_ceil(8);
                let mask = (1u8 << bits) - 1;
                for _ in 0..th {
                    let row = take(row_bytes)?;
                    for x in 0..tw {
                        let bit = x * bits;
                        let i = (row[bit / 8] >> (8 - bits - bit % 8)) & mask;
                        out.put(*palette.get(usize::from(i)).ok_or(TileError::BadIndex(t))?);
                    }
                }
            }
            128 | 130..=255 => {
                let palette: Vec<[u8; 4]> = if header == 128 {
                    Vec::new()
                } else {
                    take(3 * usize::from(header - 128))?
                        .chunks_exact(3)
                        .map(pixel)
                        .collect()
                };
                let mut i = 0;
                while i < n {
                    let (p, long) = if header == 128 {
                        (pixel(take(3)?), true)
                    } else {
                        let b = take(1)?[0];
                        let p = *palette
                            .get(usize::from(b & 127))
                            .ok_or(TileError::BadIndex(t))?;
                        (p, b & 128 != 0)
                    };
                    let mut run = 1;
                    if long {
                        loop {
                            let b = take(1)?[0];
                            run += usize::from(b);
                            if run > n {
                                return Err(TileError::LongRun(t));
                            }
                            if b != 255 {
                                break;
                            }
                        }
                    }
                    if i + run > n {
                        return Err(TileError::LongRun(t));
                    }
                    out.run(p, run);
                    i += run;
                }
            }
            _ => return Err(TileError::BadHeader(t, header)),
        }
    }
    match stream.len() - at {
        0 => Ok(()),
        left => Err(TileError::TrailingBytes(left)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XRGB8888 rows of `w`×`h` pixels from `f(x, y)`.
    fn picture(w: usize, h: usize, f: impl Fn(usize, usize) -> u32) -> Vec<u8> {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .flat_map(|(x, y)| (f(x, y) & 0x00ff_ffff).to_le_bytes())
            .collect()
    }

    fn round_trip(w: usize, h: usize, xrgb: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        encode(xrgb, w, h, &mut s);
        assert!(s.len() <= max_stream_len(w, h));
        let mut back = vec![0xaa; w * h * 4];
        decode(&s, w, h, &mut back).unwrap();
        assert_eq!(back, xrgb);
        // The same with the predicted form, read from a wider buffer whose
        // X bytes are not zero: the same length, the same pixels.
        let stride = w * 4 + 12;
        let mut wide = vec![0x77u8; stride * h];
        for y in 0..h {
            wide[y * stride..y * stride + w * 4].copy_from_slice(&xrgb[y * w * 4..(y + 1) * w * 4]);
        }
        let mut p = Vec::new();
        encode_rows(&wide, stride, w, h, true, &mut p);
        assert_eq!(p.len(), s.len());
        let mut back = vec![0xaa; w * h * 4];
        decode(&p, w, h, &mut back).unwrap();
        assert_eq!(back, xrgb);
        s
    }

    #[test]
    fn prediction_leaves_photographs_smaller_after_deflate() {
        // A smooth picture with grain, as a camera makes.
        let (w, h) = (192, 128);
        let xrgb = picture(w, h, |x, y| {
            let g = ((x * 7919) ^ (y * 104_729)).wrapping_mul(2_654_435_761) >> 29 & 7;
            let (b, gr, r) = (40 + x / 2 + g, 60 + y / 2 + g, 100 + (x + y) / 8 + g);
            (r << 16 | gr << 8 | b) as u32
        });
        let (mut plain, mut predicted) = (Vec::new(), Vec::new());
        encode(&xrgb, w, h, &mut plain);
        encode_rows(&xrgb, w * 4, w, h, true, &mut predicted);
        assert_eq!((plain[0], predicted[0]), (0, 17), "the first tile goes raw");
        let deflated = |s: &[u8]| miniz_oxide::deflate::compress_to_vec(s, 1).len();
        assert!(
            deflated(&predicted) * 3 < deflated(&plain) * 2,
            "{} against {}",
            deflated(&predicted),
            deflated(&plain)
        );
        let mut back = vec![0; w * h * 4];
        decode(&predicted, w, h, &mut back).unwrap();
        assert_eq!(back, xrgb);
    }

    #[test]
    fn every_form_round_trips_at_odd_sizes() {
        let mut rng = 0x2545_f491u32;
        let mut noise = move || {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            rng
        };
        let noisy: Vec<u32> = (0..200 * 150).map(|_| noise()).collect();
        type Picture = Box<dyn Fn(usize, usize) -> u32>;
        let cases: Vec<(&str, Picture)> = vec![
            ("solid", Box::new(|_, _| 0x123456)),
            (
                "two colours",
                Box::new(|x, y| if (x + y) % 3 == 0 { 0 } else { 0xffffff }),
            ),
            ("four", Box::new(|x, _| [1, 2, 3, 4][x % 4])),
            (
                "sixteen",
                Box::new(|x, y| ((x * 7 + y) % 16) as u32 * 0x10101),
            ),
            (
                "text-like",
                Box::new(|x, y| {
                    if x % 9 < 2 && y % 13 < 9 {
                        (x * 31 % 90) as u32
                    } else {
                        0xf0f0f0
                    }
                }),
            ),
            ("gradient rows", Box::new(|x, y| (y * 2000 + x / 40) as u32)),
            ("noise", Box::new(move |x, y| noisy[y * 200 + x])),
        ];
        for (name, f) in &cases {
            for (w, h) in [(1, 1), (63, 65), (64, 64), (130, 70), (200, 150)] {
                let s = round_trip(w, h, &picture(w, h, f));
                if *name == "solid" {
                    assert_eq!(s.len(), w.div_ceil(64) * h.div_ceil(64) * 4, "{name}");
                }
            }
        }
        // Few colours cost a fraction of the raw pixels.
        let two = round_trip(128, 128, &picture(128, 128, &cases[1].1));
        assert!(two.len() < 128 * 128 / 4, "{}", two.len());
    }

    #[test]
    fn malformed_streams_are_errors() {
        let (w, h) = (70, 3);
        let mut out = vec![0u8; w * h * 4];
        let mut good = Vec::new();
        encode(&picture(w, h, |x, _| (x % 3) as u32), w, h, &mut good);
        assert_eq!(decode(&good, w, h, &mut out), Ok(()));
        assert_eq!(
            decode(&good[..good.len() - 1], w, h, &mut out),
            Err(TileError::Truncated(1))
        );
        let mut more = good.clone();
        more.push(0);
        assert_eq!(
            decode(&more, w, h, &mut out),
            Err(TileError::TrailingBytes(1))
        );
        assert_eq!(
            decode(&[18], w, h, &mut out),
            Err(TileError::BadHeader(0, 18))
        );
        assert_eq!(
            decode(&[129], w, h, &mut out),
            Err(TileError::BadHeader(0, 129))
        );
        // A palette of 2 whose packed index... 1 bit cannot go past it; a
        // palette of 3 can (index 3 of 2 bits).
        let mut bad = vec![3, 0, 0, 0, 1, 1, 1, 2, 2, 2];
        bad.extend(std::iter::repeat_n(0xff, 16 * 3));
        assert_eq!(
            decode(&bad, 64, 3, &mut vec![0; 64 * 3 * 4]),
            Err(TileError::BadIndex(0))
        );
        // Runs: one past the tile, and a length that never ends.
        let long = [128, 9, 9, 9, 255, 255, 255];
        assert_eq!(
            decode(&long, 8, 8, &mut vec![0; 256]),
            Err(TileError::LongRun(0))
        );
        let open = [128, 9, 9, 9, 255];
        assert_eq!(
            decode(&open, 64, 64, &mut vec![0; 64 * 64 * 4]),
            Err(TileError::Truncated(0))
        );
        let bad_index = [130, 1, 1, 1, 2, 2, 2, 5];
        assert_eq!(
            decode(&bad_index, 1, 1, &mut [0; 4]),
            Err(TileError::BadIndex(0))
        );
    }
}
