//! The expert's framebuffer against a naive reference: every rectangle, valid
//! or not, must do exactly what a pixel-by-pixel model of the protocol says
//! (`msg::Encoding` docs). After each rectangle both agree on whether it was
//! an error and on every pixel (X byte masked: it may be anything).
//!
//! The model is deliberately slow and obvious: a `Vec<u32>`, loops over
//! pixels, Copy reads its whole source into a temporary before writing
//! (memmove semantics without reasoning about row order), Lz4 through
//! `lz4_flex::block::decompress` with the rectangle's size as the cap,
//! Deflate through `miniz_oxide`'s inflate to a growing vector with the
//! rectangle's longest tile stream as the limit, then tiles read bit by bit.
//! Jpeg is lossy and decoders may round differently, so there the model
//! decodes with the same decoder, without the framebuffer's limits, and
//! checks the size itself; JPEGs made by the device's encoder must apply
//! and look like what was encoded. DeflateStream pieces come from one
//! compressor that runs across the script's rectangles (restarted where a
//! piece says so), real, damaged, ending the stream or made up; the model
//! decodes every piece since the last restart again from the start, in one
//! go, and takes what the newest one added.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, compress, create_comp_flags_from_zip_params,
};
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::{Encoding, Payload, Rect, ScreenInfo, UpdatePart, WireFormat};

/// Largest screen edge tried: big enough for multi-row copies and lz4
/// matches, small enough for many executions per second.
const MAX_EDGE: u8 = 64;
/// Generated pixel data is cut at this many bytes: a rectangle larger than
/// the largest screen is out of bounds whatever its data, and a 65535×65535
/// one must not allocate 16 GiB in the harness.
const MAX_GENERATED: usize = 64 * 64 * 4 + 64;
/// Rectangles per input; more adds time, not states.
const MAX_RECTS: usize = 48;

#[derive(Debug, Arbitrary)]
struct Script {
    width: u8,
    height: u8,
    rects: Vec<FuzzRect>,
}

#[derive(Debug, Arbitrary)]
struct FuzzRect {
    x: Coord,
    y: Coord,
    w: Coord,
    h: Coord,
    body: Body,
}

/// Mostly values near the screen (in bounds, on the edge, just past it),
/// sometimes anything (sums that overflow u16).
#[derive(Debug, Arbitrary)]
enum Coord {
    Near(u8),
    Any(u16),
}

impl Coord {
    fn value(&self) -> u16 {
        match *self {
            Coord::Near(v) => u16::from(v % (MAX_EDGE + 3)),
            Coord::Any(v) => v,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Body {
    Solid(u32),
    Copy {
        src_x: Coord,
        src_y: Coord,
    },
    /// Pixels of the rectangle's size (or off by `len`).
    Raw {
        pixels: Pattern,
        len: Len,
    },
    RawBytes(Vec<u8>),
    /// A real compression of generated pixels (of the right size or not).
    Lz4 {
        pixels: Pattern,
        len: Len,
    },
    /// A real compression with one byte changed or the end cut off: near
    /// misses that reach deep into the decompressor.
    Lz4Damaged {
        pixels: Pattern,
        at: u16,
        damage: Damage,
    },
    Lz4Garbage(Vec<u8>),
    /// Deflate of the tile stream of generated pixels (of the rectangle's
    /// size or not), real, damaged or made up; and deflate of made-up tile
    /// streams, which reach the tile parser.
    Deflate {
        pixels: Pattern,
        len: Len,
        level: u8,
    },
    DeflateDamaged {
        pixels: Pattern,
        at: u16,
        damage: Damage,
    },
    DeflatedTiles(Vec<u8>),
    DeflateGarbage(Vec<u8>),
    /// A JPEG of generated pixels as the device's encoder makes it (of the
    /// rectangle's size or not), damaged, or made up.
    Jpeg {
        pixels: Pattern,
        len: Len,
        quality: u8,
    },
    JpegDamaged {
        pixels: Pattern,
        at: u16,
        damage: Damage,
    },
    JpegGarbage(Vec<u8>),
    /// The next piece of the script's deflate stream: the tile stream of
    /// generated pixels (of the rectangle's size or not), as the device's
    /// encoder makes it, damaged (the compressor goes on as if it were
    /// not), ending the stream, or made up.
    Stream {
        restart: bool,
        pixels: Pattern,
        len: Len,
        level: u8,
    },
    StreamDamaged {
        restart: bool,
        pixels: Pattern,
        at: u16,
        damage: Damage,
    },
    StreamEnding {
        restart: bool,
        pixels: Pattern,
    },
    StreamGarbage {
        restart: bool,
        bytes: Vec<u8>,
    },
}

/// The device's side of the deflate stream: one compressor for the script.
struct Pieces(Box<CompressorOxide>);

impl Pieces {
    fn new() -> Self {
        Self(Box::new(CompressorOxide::new(create_comp_flags_from_zip_params(1, -15, 0))))
    }

    fn piece(&mut self, restart: bool, level: u8, tiles: &[u8], flush: TDEFLFlush) -> Vec<u8> {
        if restart {
            self.0.reset();
        }
        self.0.set_compression_level_raw(level % 10);
        let mut out = vec![0; tiles.len() + tiles.len() / 8192 + 64];
        let (_, _, n) = compress(&mut self.0, tiles, &mut out, flush);
        out.truncate(n);
        out
    }
}

#[derive(Debug, Arbitrary)]
enum Len {
    Exact,
    Off(i8),
}

#[derive(Debug, Arbitrary)]
enum Damage {
    Xor(u8),
    Truncate,
}

/// Pixel data the encoder could plausibly send: flat areas and gradients
/// compress well (long matches), noise does not (long literals).
#[derive(Debug, Arbitrary)]
enum Pattern {
    Flat(u32),
    Gradient(u32, u8),
    Noise(u32),
    Stripes(u32, u32, u8),
}

impl Pattern {
    fn bytes(&self, len: usize) -> Vec<u8> {
        let len = len.min(MAX_GENERATED);
        let mut out = Vec::with_capacity(len + 4);
        let mut state = match *self {
            Pattern::Noise(seed) => seed | 1,
            _ => 0,
        };
        let mut i = 0u32;
        while out.len() < len {
            let px = match *self {
                Pattern::Flat(p) => p,
                Pattern::Gradient(base, step) => base.wrapping_add(i.wrapping_mul(u32::from(step))),
                Pattern::Noise(_) => {
                    // xorshift32
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state
                }
                Pattern::Stripes(a, b, period) => {
                    if (i / u32::from(period.max(1))) % 2 == 0 {
                        a
                    } else {
                        b
                    }
                }
            };
            out.extend_from_slice(&px.to_le_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }
}

fn sized(len: &Len, exact: usize) -> usize {
    match *len {
        Len::Exact => exact,
        Len::Off(d) => exact.saturating_add_signed(isize::from(d)),
    }
}

impl FuzzRect {
    fn to_rect(&self, pieces: &mut Pieces) -> Rect {
        let (w, h) = (self.w.value(), self.h.value());
        let exact = usize::from(w) * usize::from(h) * 4;
        let encoding = match &self.body {
            Body::Solid(p) => Encoding::Solid(*p),
            Body::Copy { src_x, src_y } => Encoding::Copy {
                src_x: src_x.value(),
                src_y: src_y.value(),
            },
            Body::Raw { pixels, len } => Encoding::Raw(Payload(pixels.bytes(sized(len, exact)))),
            Body::RawBytes(b) => Encoding::Raw(Payload(b.clone())),
            Body::Lz4 { pixels, len } => Encoding::Lz4(Payload(lz4_flex::block::compress(
                &pixels.bytes(sized(len, exact)),
            ))),
            Body::Lz4Damaged { pixels, at, damage } => {
                let c = lz4_flex::block::compress(&pixels.bytes(exact));
                Encoding::Lz4(Payload(damaged(c, *at, damage)))
            }
            Body::Lz4Garbage(b) => Encoding::Lz4(Payload(b.clone())),
            Body::Deflate { pixels, len, level } => {
                let (tw, th) = match len {
                    Len::Exact => (usize::from(w), usize::from(h)),
                    Len::Off(d) => (usize::from(w), usize::from(h).saturating_add_signed(isize::from(*d))),
                };
                let tiles = tile_stream(&pixels.bytes(tw.saturating_mul(th).saturating_mul(4)), tw, th);
                Encoding::Deflate(Payload(miniz_oxide::deflate::compress_to_vec(&tiles, level % 10)))
            }
            Body::DeflateDamaged { pixels, at, damage } => {
                let (tw, th) = (usize::from(w), usize::from(h));
                let tiles = tile_stream(&pixels.bytes(tw.saturating_mul(th).saturating_mul(4)), tw, th);
                let c = miniz_oxide::deflate::compress_to_vec(&tiles, 1);
                Encoding::Deflate(Payload(damaged(c, *at, damage)))
            }
            Body::DeflateGarbage(b) => Encoding::Deflate(Payload(b.clone())),
            Body::DeflatedTiles(b) => {
                Encoding::Deflate(Payload(miniz_oxide::deflate::compress_to_vec(b, 1)))
            }
            Body::Jpeg { pixels, len, quality } => {
                let th = match len {
                    Len::Exact => h,
                    Len::Off(d) => h.saturating_add_signed(i16::from(*d)),
                };
                Encoding::Jpeg(Payload(jpeg(pixels, w, th, *quality)))
            }
            Body::JpegDamaged { pixels, at, damage } => {
                Encoding::Jpeg(Payload(damaged(jpeg(pixels, w, h, 75), *at, damage)))
            }
            Body::JpegGarbage(b) => Encoding::Jpeg(Payload(b.clone())),
            Body::Stream { restart, pixels, len, level } => {
                let (tw, th) = match len {
                    Len::Exact => (usize::from(w), usize::from(h)),
                    Len::Off(d) => (usize::from(w), usize::from(h).saturating_add_signed(isize::from(*d))),
                };
                let tiles = tile_stream_as(&pixels.bytes(tw.saturating_mul(th).saturating_mul(4)), tw, th, true);
                let data = pieces.piece(*restart, *level, &tiles, TDEFLFlush::Sync);
                Encoding::DeflateStream { restart: *restart, data: Payload(data) }
            }
            Body::StreamDamaged { restart, pixels, at, damage } => {
                let (tw, th) = (usize::from(w), usize::from(h));
                let tiles = tile_stream_as(&pixels.bytes(tw.saturating_mul(th).saturating_mul(4)), tw, th, true);
                let data = pieces.piece(*restart, 2, &tiles, TDEFLFlush::Sync);
                Encoding::DeflateStream { restart: *restart, data: Payload(damaged(data, *at, damage)) }
            }
            Body::StreamEnding { restart, pixels } => {
                let (tw, th) = (usize::from(w), usize::from(h));
                let tiles = tile_stream(&pixels.bytes(tw.saturating_mul(th).saturating_mul(4)), tw, th);
                let data = pieces.piece(*restart, 1, &tiles, TDEFLFlush::Finish);
                // A finished compressor takes nothing more: the next piece
                // starts it again whatever it says.
                pieces.0.reset();
                Encoding::DeflateStream { restart: *restart, data: Payload(data) }
            }
            Body::StreamGarbage { restart, bytes } => Encoding::DeflateStream {
                restart: *restart,
                data: Payload(bytes.clone()),
            },
        };
        Rect {
            x: self.x.value(),
            y: self.y.value(),
            w,
            h,
            encoding,
        }
    }
}

/// `c` with one byte changed or the end cut off at `at` (taken modulo its
/// length).
fn damaged(mut c: Vec<u8>, at: u16, damage: &Damage) -> Vec<u8> {
    let at = usize::from(at) % c.len().max(1);
    match damage {
        Damage::Xor(x) if at < c.len() => c[at] ^= (*x).max(1),
        Damage::Xor(_) => {}
        Damage::Truncate => c.truncate(at),
    }
    c
}

/// What the device's encoder sends for `w`×`h` generated pixels (nothing
/// for sizes the harness does not generate or the encoder refuses).
fn jpeg(pixels: &Pattern, w: u16, h: u16, quality: u8) -> Vec<u8> {
    let n = usize::from(w) * usize::from(h) * 4;
    let mut out = Vec::new();
    if n == 0 || n > MAX_GENERATED {
        return out;
    }
    let mut px = pixels.bytes(n);
    px.resize(n, 0x5a);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    if enc.encode(&px, w, h, jpeg_encoder::ColorType::Bgra).is_err() {
        out.clear();
    }
    out
}

/// A JPEG as XRGB8888 pixels if it is exactly `w`×`h`, with the decoder the
/// client uses but none of its limits.
fn model_jpeg(data: &[u8], w: usize, h: usize) -> Result<Vec<u32>, ()> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::BGRA)
        .set_strict_mode(true);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
    let px = d.decode().map_err(|_| ())?;
    let info = d.info().ok_or(())?;
    if (usize::from(info.width), usize::from(info.height)) != (w, h) {
        return Err(());
    }
    pixels_of(&px, w * h)
}

/// The reference: what the protocol says, one pixel at a time.
struct Model {
    width: usize,
    height: usize,
    pixels: Vec<u32>,
    /// The deflate stream's pieces since its last restart, all applied;
    /// `None` before the first and after any rectangle failed.
    stream: Option<Vec<u8>>,
}

impl Model {
    fn new(width: u16, height: u16) -> Self {
        let (width, height) = (usize::from(width), usize::from(height));
        Self {
            width,
            height,
            pixels: vec![0; width * height],
            stream: None,
        }
    }

    /// A rectangle is on the screen when it ends at or before each edge
    /// (an empty one may sit on the right or bottom edge).
    fn inside(&self, x: u16, y: u16, w: u16, h: u16) -> bool {
        usize::from(x) + usize::from(w) <= self.width
            && usize::from(y) + usize::from(h) <= self.height
    }

    /// `Err` leaves the pixels untouched and the deflate stream broken.
    fn apply(&mut self, r: &Rect) -> Result<(), ()> {
        let applied = self.apply_pixels(r);
        if applied.is_err() {
            self.stream = None;
        }
        applied
    }

    /// A deflate stream piece as the tile stream it adds: everything since
    /// the restart inflated again, in one go, less what came before.
    fn stream_piece(&mut self, restart: bool, piece: &[u8], w: usize, h: usize) -> Result<Vec<u8>, ()> {
        use miniz_oxide::inflate::stream::{InflateState, inflate};
        let mut all = if restart { Vec::new() } else { self.stream.take().ok_or(())? };
        let inflate_all = |data: &[u8], limit: usize| -> Result<Vec<u8>, ()> {
            let mut state = InflateState::new_boxed(miniz_oxide::DataFormat::Raw);
            let mut out = vec![0; limit];
            let r = inflate(&mut state, data, &mut out, miniz_oxide::MZFlush::None);
            match r.status {
                Ok(miniz_oxide::MZStatus::Ok) | Err(miniz_oxide::MZError::Buf) => {}
                _ => return Err(()),
            }
            if r.bytes_consumed != data.len() {
                return Err(());
            }
            out.truncate(r.bytes_written);
            Ok(out)
        };
        let before = inflate_all(&all, 1 << 26)?.len();
        all.extend_from_slice(piece);
        let max = w * h * 3 + w.div_ceil(64) * h.div_ceil(64);
        let out = inflate_all(&all, before + max + 1)?;
        if out.len() > before + max {
            return Err(());
        }
        let added = out[before..].to_vec();
        self.stream = Some(all);
        Ok(added)
    }

    fn apply_pixels(&mut self, r: &Rect) -> Result<(), ()> {
        if !self.inside(r.x, r.y, r.w, r.h) {
            return Err(());
        }
        let (w, h) = (usize::from(r.w), usize::from(r.h));
        let source: Vec<u32> = match &r.encoding {
            Encoding::Solid(p) => vec![*p; w * h],
            Encoding::Copy { src_x, src_y } => {
                if !self.inside(*src_x, *src_y, r.w, r.h) {
                    return Err(());
                }
                let mut tmp = Vec::with_capacity(w * h);
                for dy in 0..h {
                    for dx in 0..w {
                        let (sx, sy) = (usize::from(*src_x) + dx, usize::from(*src_y) + dy);
                        tmp.push(self.pixels[sy * self.width + sx]);
                    }
                }
                tmp
            }
            Encoding::Raw(data) => pixels_of(&data.0, w * h)?,
            Encoding::Lz4(data) => {
                let raw = lz4_flex::block::decompress(&data.0, w * h * 4).map_err(|_| ())?;
                pixels_of(&raw, w * h)?
            }
            Encoding::Deflate(data) => {
                let stream = miniz_oxide::inflate::decompress_to_vec_with_limit(
                    &data.0,
                    w * h * 3 + w.div_ceil(64) * h.div_ceil(64),
                )
                .map_err(|_| ())?;
                model_tiles(&stream, w, h)?
            }
            Encoding::Jpeg(data) => model_jpeg(&data.0, w, h)?,
            Encoding::DeflateStream { restart, data } => {
                let tiles = self.stream_piece(*restart, &data.0, w, h)?;
                model_tiles(&tiles, w, h)?
            }
        };
        for dy in 0..h {
            for dx in 0..w {
                let (x, y) = (usize::from(r.x) + dx, usize::from(r.y) + dy);
                self.pixels[y * self.width + x] = source[dy * w + dx];
            }
        }
        Ok(())
    }

    fn assert_same(&self, fb: &Framebuffer, what: &str) {
        let got: Vec<u32> = fb
            .normalized()
            .chunks_exact(4)
            .map(|p| u32::from_le_bytes(p.try_into().unwrap()))
            .collect();
        assert_eq!(got.len(), self.pixels.len());
        for (i, (g, m)) in got.iter().zip(&self.pixels).enumerate() {
            assert_eq!(
                *g,
                m & 0x00ff_ffff,
                "{what}: pixel ({}, {}) differs from the model",
                i % self.width,
                i / self.width
            );
        }
    }
}

/// The encoder's tile stream of `w`×`h` XRGB8888 pixels (cut or padded
/// to that size), or nothing for an empty rectangle.
fn tile_stream(xrgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    tile_stream_as(xrgb, w, h, false)
}

/// The same, with raw tiles predicted (form 17) when `predicted`.
fn tile_stream_as(xrgb: &[u8], w: usize, h: usize, predicted: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if w.saturating_mul(h).saturating_mul(4) <= MAX_GENERATED {
        let mut px = xrgb.to_vec();
        px.resize(w * h * 4, 0x5a);
        shoulder_proto::tiles::encode_rows(&px, w * 4, w, h, predicted, &mut out);
    }
    out
}

/// The tile stream read the slow, obvious way (`shoulder_proto::tiles`
/// docs): tiles of 64, row by row; within a tile pixels in row order.
fn model_tiles(s: &[u8], w: usize, h: usize) -> Result<Vec<u32>, ()> {
    let mut out = vec![0u32; w * h];
    let mut at = 0usize;
    let mut next = |n: usize| -> Result<Vec<u8>, ()> {
        let v = s.get(at..at + n).ok_or(())?.to_vec();
        at += n;
        Ok(v)
    };
    let colour = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], 0]);
    for ty in (0..h).step_by(64) {
        for tx in (0..w).step_by(64) {
            let (tw, th) = (64.min(w - tx), 64.min(h - ty));
            let mut tile: Vec<u32> = Vec::new();
            let k = next(1)?[0];
            match k {
                0 => tile = next(tw * th * 3)?.chunks(3).map(colour).collect(),
                1 => tile = vec![colour(&next(3)?); tw * th],
                17 => {
                    // Each byte from its left, upper and upper-left
                    // neighbours in the tile, by the median rule.
                    let d = next(tw * th * 3)?;
                    let mut v = vec![0u8; tw * th * 3];
                    for y in 0..th {
                        for x in 0..tw {
                            for ch in 0..3 {
                                let at = |x: usize, y: usize| v[(y * tw + x) * 3 + ch];
                                let pred = if x == 0 && y == 0 {
                                    0
                                } else if y == 0 {
                                    at(x - 1, y)
                                } else if x == 0 {
                                    at(x, y - 1)
                                } else {
                                    let (a, b, c) = (at(x - 1, y), at(x, y - 1), at(x - 1, y - 1));
                                    if c >= a.max(b) {
                                        a.min(b)
                                    } else if c <= a.min(b) {
                                        a.max(b)
                                    } else {
                                        (i16::from(a) + i16::from(b) - i16::from(c)) as u8
                                    }
                                };
                                v[(y * tw + x) * 3 + ch] = d[(y * tw + x) * 3 + ch].wrapping_add(pred);
                            }
                        }
                    }
                    tile = v.chunks(3).map(colour).collect();
                }
                2..=16 => {
                    let pal: Vec<u32> = next(3 * usize::from(k))?.chunks(3).map(colour).collect();
                    let bits = if k == 2 { 1 } else if k <= 4 { 2 } else { 4 };
                    for _ in 0..th {
                        let row = next((tw * bits).div_ceil(8))?;
                        for x in 0..tw {
                            let mut i = 0usize;
                            for b in 0..bits {
                                let bit = x * bits + b;
                                i = (i << 1) | usize::from((row[bit / 8] >> (7 - bit % 8)) & 1);
                            }
                            tile.push(*pal.get(i).ok_or(())?);
                        }
                    }
                }
                128 | 130..=255 => {
                    let pal: Vec<u32> = next(3 * usize::from(k - 128))?.chunks(3).map(colour).collect();
                    while tile.len() < tw * th {
                        let (c, long) = if k == 128 {
                            (colour(&next(3)?), true)
                        } else {
                            let b = next(1)?[0];
                            (*pal.get(usize::from(b & 127)).ok_or(())?, b >= 128)
                        };
                        let mut run = 1usize;
                        while long {
                            let b = next(1)?[0];
                            run += usize::from(b);
                            if run > tw * th || b != 255 {
                                break;
                            }
                        }
                        if tile.len() + run > tw * th {
                            return Err(());
                        }
                        tile.extend(std::iter::repeat_n(c, run));
                    }
                }
                _ => return Err(()),
            }
            for (i, c) in tile.into_iter().enumerate() {
                out[(ty + i / tw) * w + tx + i % tw] = c;
            }
        }
    }
    if at != s.len() {
        return Err(());
    }
    Ok(out)
}

/// Rows of XRGB8888 as pixels; exactly `n` of them or an error.
fn pixels_of(bytes: &[u8], n: usize) -> Result<Vec<u32>, ()> {
    if bytes.len() != n * 4 {
        return Err(());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|p| u32::from_le_bytes(p.try_into().unwrap()))
        .collect())
}

fuzz_target!(|script: Script| {
    let info = ScreenInfo {
        width: u16::from(script.width % MAX_EDGE) + 1,
        height: u16::from(script.height % MAX_EDGE) + 1,
        format: WireFormat::Xrgb8888,
        generation: 0,
    };
    let rects: Vec<Rect> = script
        .rects
        .iter()
        .take(MAX_RECTS)
        .scan(Pieces::new(), |pieces, r| Some(r.to_rect(pieces)))
        .collect();

    // One rectangle at a time.
    let mut fb = Framebuffer::new(&info).expect("small sizes are valid");
    let mut model = Model::new(info.width, info.height);
    for (i, (r, f)) in rects.iter().zip(&script.rects).enumerate() {
        let got = fb.apply_rect(r);
        let want = model.apply(r);
        assert_eq!(
            got.is_ok(),
            want.is_ok(),
            "rect {i} {r:?}: framebuffer says {got:?}, model says {want:?}"
        );
        model.assert_same(&fb, &format!("after rect {i}"));
        // What the device encodes, of the right size and on the screen,
        // applies, and at a high quality looks like what was encoded.
        if let Body::Jpeg { pixels, len: Len::Exact, quality } = &f.body
            && let Encoding::Jpeg(data) = &r.encoding
            && !data.0.is_empty()
            && model.inside(r.x, r.y, r.w, r.h)
        {
            assert!(got.is_ok(), "rect {i}: the device's own JPEG fails: {got:?}");
            let n = usize::from(r.w) * usize::from(r.h);
            if *quality >= 90 && n >= 64 {
                if let Pattern::Flat(p) = pixels {
                    let (x, y) = (usize::from(r.x), usize::from(r.y));
                    let got = model.pixels[y * model.width + x];
                    for s in [0, 8, 16] {
                        let (a, b) = ((got >> s) & 255, (p >> s) & 255);
                        assert!(a.abs_diff(b) <= 8, "rect {i}: flat {p:#x} came back as {got:#x}");
                    }
                }
            }
        }
    }

    // The same rectangles as one update part: applied in order up to the
    // first error, which is returned; the earlier ones stay applied.
    let mut part = UpdatePart {
        seq: 1,
        generation: 0,
        last: true,
        rects: Default::default(),
    };
    for r in &rects {
        if part.rects.push(r.clone()).is_err() {
            break;
        }
    }
    let mut fb = Framebuffer::new(&info).expect("small sizes are valid");
    let mut model = Model::new(info.width, info.height);
    let want = part.rects.iter().try_for_each(|r| model.apply(r));
    let got = fb.apply(&part);
    assert_eq!(
        got.is_ok(),
        want.is_ok(),
        "whole part: framebuffer says {got:?}"
    );
    model.assert_same(&fb, "after the whole part");
});
