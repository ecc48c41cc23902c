//! Change detection and encoding of screen updates (sans-I/O).
//!
//! The [`Encoder`] keeps one shadow copy of the screen as the expert has it
//! (in the source's own pixel format, rows packed). Each [`Encoder::encode`]:
//!
//! 1. compares the frame with the shadow row by row (one `memcmp` of the frame
//!    when nothing changed); each row that differs is copied once, straight
//!    into the shadow, after setting the shadow's old row aside; finds which
//!    [`TILE`]-pixel columns differ between the two;
//! 2. looks for moved content in each band of changed rows ([`crate::scroll`]:
//!    a strip of the column that changed most votes for a vertical shift,
//!    matching rows grow sideways to the exact edges of what moved) and
//!    turns it into `Copy` rectangles;
//! 3. merges what is left into rectangles (one per run of changed tile
//!    columns per tile row, joined vertically, trimmed to what differs);
//! 4. encodes each rectangle from the shadow, converted to XRGB8888, as
//!    `Solid` when it is one colour, else as `Deflate` (the tile stream of
//!    [`shoulder_proto::tiles`], deflated) for an expert that takes it
//!    (as `DeflateStream`, pieces of one stream across rectangles and
//!    updates, for one that takes that), or `Lz4` for one that does not,
//!    or `Raw` when that is no smaller; with
//!    lossy rectangles on ([`Encoder::set_lossy`], an expert that takes
//!    them on a slow link), photo-like areas go as `Jpeg` and are sent
//!    exact once they stop changing ([`crate::lossy`]);
//! 5. packs rectangles into [`UpdatePart`]s within the protocol's limits
//!    ([`MAX_RECTS_PER_PART`], [`MAX_UPDATE_PAYLOAD`]), copies first.
//!
//! The expert now and then reports hashes of its framebuffer, band by band
//! ([`Encoder::check_view`]); bands that no later update touched are
//! compared with the shadow, and those that differ are sent whole with the
//! next update. Whatever made the expert's copy wrong (a bug, a lost
//! update, a decoder fault), the view heals.
//!
//! Because the shadow is what the expert was last sent, everything that
//! changed since the previous update is coalesced into the next one, however
//! long the client took to ask for it.
//!
//! The live frame is read only in step 1. The application may draw while it
//! is read, so two reads of a row can differ; if the damage came from one
//! read and the shadow from another, a pixel drawn in between would enter
//! the shadow without being sent, and the expert's view would stay wrong for
//! as long as the screen stays still. With one copy that is compared,
//! searched, sent and kept, the shadow is exactly what was sent; anything
//! drawn after the copy differs from the shadow and goes out next time.

use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
};
use shoulder_proto::consent::ViewConsent;
use shoulder_proto::fb::{hash_row, view_band, view_bands};
use shoulder_proto::frame::MAX_UPDATE_PAYLOAD;
use shoulder_proto::msg::{
    Encoding, MAX_RECTS_PER_PART, Message, Payload, Rect, ScreenInfo, UpdatePart, ViewReport,
    WireFormat,
};

use crate::lossy::{Approx, Lossy};
use crate::scroll::{Area, Screens, ScrollSearch, first_diff, last_diff};
use crate::source::{Frame, MAX_EDGE, ScreenGeometry};
use shoulder_display::convert::{pixel_to_xrgb, row_to_xrgb8888};
use std::time::Instant;

/// Edge of a damage tile in pixels. Damage is tracked per row at this column
/// granularity and rectangles are grouped per band of this many rows: small
/// enough that typing one character sends a few hundred pixels, large enough
/// that the per-row column mask fits one `u128` at the largest screen.
pub const TILE: usize = 64;
/// Tile columns of the widest screen; must fit the `u128` row mask.
const MAX_TILE_COLS: usize = (MAX_EDGE as usize).div_ceil(TILE);
const _: () = assert!(MAX_TILE_COLS <= 128);
/// Largest XRGB8888 payload of one rectangle before compression. Bigger
/// rectangles are cut into row slices: lz4's window is 64 KiB, so larger
/// slices would not compress better, and four of them still fit one part.
pub const MAX_RECT_BYTES: usize = 256 * 1024;
/// The same for deflate, whose rectangles compress better the larger they
/// are (more context; a whole page switch is 12 % smaller as one
/// rectangle than in slices of 256 KiB). Compressed, a slice is at most its
/// tile stream, 3 bytes a pixel and a header per tile: 786,688 bytes, under
/// [`MAX_UPDATE_PAYLOAD`].
pub const MAX_DEFLATE_RECT_BYTES: usize = 1024 * 1024;
const _: () = assert!(
    MAX_DEFLATE_RECT_BYTES / 4 * 3 + MAX_DEFLATE_RECT_BYTES / 4 / 64 + 1024 < MAX_UPDATE_PAYLOAD
);
/// Row-precise damage is used while it needs at most this many rectangles;
/// busier damage is sent as tile bands, whose fewer, larger rectangles
/// compress better and cost fewer headers.
const MAX_FINE_AREAS: usize = 96;

/// Deflate level of photo-like areas: 1 is miniz's fast path; higher
/// levels take twice the time and more for a few percent there
/// (BENCHMARKS.md, "Compression").
const DEFLATE_LEVEL_PHOTO: u8 = 1;
/// Deflate level of user interfaces (tile streams of at most a byte a
/// pixel): 2 has all but 1 % of what 9 gets there.
const DEFLATE_LEVEL_UI: u8 = 2;

/// Deflate level of the stream of user interfaces: lazy matching (miniz's
/// level 4) finds 6 % more on page switches and clocks than level 2, for
/// about 1.3 ms more per 1080p page (BENCHMARKS.md, "Compression"); worth
/// it once earlier pieces are there to match.
const DEFLATE_LEVEL_STREAM: u8 = 4;

/// Photo-like tile streams of at least this many bytes are deflated with
/// miniz's fast path, on their own: below it, the thorough level costs
/// under a few ms, and the stream's back-references pay.
const FAST_PATH_FROM: usize = 64 * 1024;

/// Updates of at least this many pixels are made on two threads (when the
/// machine has two cores): the tile streams of the next slices while the
/// earlier ones are deflated. A quarter of a 1080p screen: a page switch,
/// a photograph; typing and clocks stay on one.
const PIPELINE_FROM_PIXELS: usize = 512 * 1024;

/// `previous_at` entry of a row that did not change.
const UNCHANGED: u32 = u32::MAX;

/// Why an update could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("the view consent was withdrawn: no more screen updates may be sent")]
    ConsentWithdrawn,
    /// The early sink of [`Encoder::encode_into`] refused a part (the view
    /// ended or its receiver closed) mid-update; the next update is a full
    /// screen.
    #[error("the update was cut short: its receiver stopped taking parts")]
    Refused,
}

/// What one update contained, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeStats {
    pub rects: usize,
    pub solid: usize,
    pub copy: usize,
    pub lz4: usize,
    pub deflate: usize,
    /// Lossy rectangles.
    pub jpeg: usize,
    /// Exact rectangles sent for tiles the expert had only approximately.
    pub refined: usize,
    pub raw: usize,
    /// Pixel payload bytes (compressed or raw) in all parts.
    pub payload_bytes: usize,
    /// Pixels covered by rectangles.
    pub pixels: usize,
    /// Made on two threads (a large update, see [`Encoder::set_threads`]).
    pub two_threads: bool,
}

/// One screen update: optional new screen info, then one or more parts with
/// the same `seq`, the last with `last = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedUpdate {
    /// Set when the screen size or format changed (or for the first update):
    /// send it before the parts; the expert's framebuffer restarts.
    pub screen: Option<ScreenInfo>,
    pub parts: Vec<UpdatePart>,
    pub stats: EncodeStats,
}

impl EncodedUpdate {
    /// The messages to send, in order.
    pub fn into_messages(self) -> impl Iterator<Item = Message> {
        self.screen
            .map(Message::ScreenInfo)
            .into_iter()
            .chain(self.parts.into_iter().map(|p| Message::Update(Box::new(p))))
    }
}

/// What [`Encoder::check_view`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewCheck {
    /// Bands compared: those no update after the reported one changed.
    pub compared: u16,
    /// Bands whose hash differed from the shadow's: sent whole with the next
    /// update.
    pub differing: u16,
    /// The report was for another screen (generation), for an update not
    /// sent yet, or had the wrong number of bands: nothing was compared.
    pub stale: bool,
}

/// Change detector and update encoder. Memory: one shadow frame, the
/// previous content of changed rows (at most one more frame, kept for
/// reuse), per-row bookkeeping and scratch of at most [`MAX_RECT_BYTES`]-sized
/// buffers.
#[derive(Debug, Default)]
pub struct Encoder {
    geometry: Option<ScreenGeometry>,
    generation: u32,
    seq: u32,
    /// The screen as the expert has it, rows packed, source format.
    shadow: Vec<u8>,
    /// During an update: what the expert had in the rows that changed (the
    /// shadow holds their new copy), packed in screen order, for the scroll
    /// search and the trim. Only the first `previous_used` rows belong to
    /// this update; the rest is kept so rows are not zeroed before each copy.
    previous: Vec<u8>,
    previous_used: usize,
    /// Per row: its index in `previous`, or [`UNCHANGED`] when the row did
    /// not change.
    previous_at: Vec<u32>,
    /// Per row: which tile columns changed.
    masks: Vec<u128>,
    scroll: ScrollSearch,
    scratch: Vec<u8>,
    compressed: Vec<u8>,
    /// The tile stream of a rectangle, before deflate.
    tiles: Vec<u8>,
    /// Set when the expert takes [`Encoding::Deflate`] (and maybe
    /// [`Encoding::DeflateStream`]).
    deflate: Option<Deflater>,
    probing: Option<Probing>,
    /// Incremental checks since the last full scan (probing only).
    checks: u32,
    /// The source's buffer on screen at the last check, when it names one.
    last_buffer: Option<u32>,
    /// Per row: the `seq` of the last update that changed it (what a view
    /// report may be compared against).
    row_seq: Vec<u32>,
    /// Rows to send whole with the next update, whether or not they changed
    /// (bands a view report found wrong), as sorted, disjoint ranges.
    forced: Vec<std::ops::Range<usize>>,
    /// Photo-like areas go lossy (an expert that takes JPEG, a slow link).
    lossy: Option<Lossy>,
    /// Tiles the expert has only approximately.
    approx: Approx,
    /// Large updates may use a second thread (see [`PIPELINE_FROM_PIXELS`]).
    threads: bool,
}

/// Sparse probing of unchanged screens (see [`Encoder::with_probing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probing {
    /// Compare every `stride`-th row per check, starting at a row that moves
    /// on every check, so all rows are covered within `stride` checks.
    pub stride: u32,
    /// Every this many checks, compare all rows anyway: any change, however
    /// thin, is found within this many checks.
    pub full_every: u32,
}

impl Default for Probing {
    /// One row in 16 (a typed character, a caret, a moved list: anything 16
    /// rows tall is found at the first check; the probed rows move by 7 a
    /// check, so every row is compared within 16 checks, 0.8 s at the
    /// idle poll interval, [`crate::PacingConfig::idle_interval`]), and all
    /// rows every 64th check as a safety net. Cold frame memory makes the
    /// compares most of an idle session's cost (BENCHMARKS.md).
    fn default() -> Self {
        Self {
            stride: 16,
            full_every: 64,
        }
    }
}

impl Encoder {
    /// An encoder that compares every row of every frame: any change is found
    /// by the first check after it.
    pub fn new() -> Self {
        Self {
            threads: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
            ..Self::default()
        }
    }

    /// Whether large updates may be made on two threads (on by default when
    /// the machine has two cores or more). The bytes are the same either way.
    pub fn set_threads(&mut self, on: bool) {
        self.threads = on;
    }

    /// An encoder that checks frames sparsely (x11vnc's scan lines): an
    /// unchanged frame costs about `1/stride` of a full compare, most changes
    /// are still found at once, and a change that misses every probed row
    /// (less than `stride` rows tall) is found within `full_every` checks.
    /// When a probe finds a change, the whole frame is compared as usual.
    pub fn with_probing(probing: Probing) -> Self {
        Self {
            probing: Some(Probing {
                stride: probing.stride.max(1),
                full_every: probing.full_every.max(1),
            }),
            ..Self::new()
        }
    }

    /// How rectangles are compressed: as the expert takes them. Takes
    /// effect from the next rectangle (a deflate stream starts anew).
    pub fn set_compression(&mut self, c: Compression) {
        self.deflate =
            (c != Compression::Lz4).then(|| Deflater::new(c == Compression::DeflateStream));
    }

    /// How rectangles are compressed.
    pub fn compression(&self) -> Compression {
        match &self.deflate {
            None => Compression::Lz4,
            Some(Deflater { stream: None, .. }) => Compression::Deflate,
            Some(Deflater {
                stream: Some(_), ..
            }) => Compression::DeflateStream,
        }
    }

    /// Sends photo-like areas as JPEG of `lossy.quality` (`Some`, for an
    /// expert that announced [`shoulder_proto::msg::Capabilities::JPEG`],
    /// on a link too slow for exact photographs) or everything exact
    /// (`None`). Tiles sent lossy are sent exact once they stop changing,
    /// whatever the setting is by then. Lossy areas need deflate on (the
    /// tile stream tells what is photo-like).
    pub fn set_lossy(&mut self, lossy: Option<Lossy>) {
        self.lossy = lossy;
    }

    fn refine_after(&self) -> std::time::Duration {
        self.lossy
            .map_or(crate::lossy::REFINE_AFTER, |l| l.refine_after)
    }

    /// Whether some tiles on the expert's screen are still approximate.
    pub fn approximate(&self) -> bool {
        !self.approx.is_empty()
    }

    /// Whether a sparse probe of `frame` sees no change (so a full compare
    /// can be skipped this time).
    fn probe_unchanged(&mut self, frame: &Frame<'_>) -> bool {
        let Some(p) = self.probing else { return false };
        self.checks = self.checks.wrapping_add(1);
        if self.checks.is_multiple_of(p.full_every) {
            return false;
        }
        let rb = frame.row_bytes();
        // The probed rows move by a prime step per check, so successive
        // checks do not keep hitting the same rows.
        let phase = (self.checks.wrapping_mul(7) % p.stride) as usize;
        (phase..frame.height() as usize)
            .step_by(p.stride as usize)
            .all(|y| frame.row_eq(y as u32, &self.shadow[y * rb..(y + 1) * rb]))
    }

    /// The buffer of the last frame encoded, when its source names buffers
    /// ([`Frame::buffer`]).
    pub fn last_buffer(&self) -> Option<u32> {
        self.last_buffer
    }

    /// The screen the expert currently has, once the first update was made.
    pub fn screen_info(&self) -> Option<ScreenInfo> {
        let g = self.geometry?;
        Some(ScreenInfo {
            width: g.width as u16,
            height: g.height as u16,
            format: WireFormat::Xrgb8888,
            generation: self.generation,
        })
    }

    /// Forgets what the expert has (new session, or resumed one): the next
    /// update is a full screen with screen info. Keeps the generation counter
    /// increasing so stale updates stay recognisable.
    pub fn reset(&mut self) {
        self.geometry = None;
        self.shadow = Vec::new();
        self.previous = Vec::new();
        self.previous_used = 0;
        self.previous_at = Vec::new();
        self.masks = Vec::new();
        self.row_seq = Vec::new();
        self.forced.clear();
        self.approx = Approx::default();
        self.last_buffer = None;
        if let Some(d) = self.deflate.as_mut() {
            d.restart = true;
        }
    }

    /// Compares the expert's view report with the shadow as the expert has
    /// it (see [`ViewReport`]), and marks the bands that differ to be sent
    /// whole with the next update. Bands changed by an update after the
    /// reported one are not compared: the expert had not applied it yet
    /// (they are checked by a later report). Costs a conversion and hash of
    /// the compared rows: about one pass over the shadow.
    pub fn check_view(&mut self, report: &ViewReport) -> ViewCheck {
        let stale = ViewCheck {
            stale: true,
            ..ViewCheck::default()
        };
        let Some(g) = self.geometry else { return stale };
        let height = g.height as u16;
        // `seq` counts updates sent; a report from the future is nonsense.
        let ahead = report.seq.wrapping_sub(self.seq) as i32 > 0;
        if report.generation != self.generation
            || ahead
            || report.hashes.len() != view_bands(height)
            || self.row_seq.len() != usize::from(height)
        {
            return stale;
        }
        let (w, rb, _) = self.layout();
        let mut xrgb = std::mem::take(&mut self.scratch);
        xrgb.resize(w * 4, 0);
        let mut out = ViewCheck::default();
        for (band, &theirs) in report.hashes.iter().enumerate() {
            let rows = view_band(height, band);
            // Changed after the reported update: the expert has not seen it.
            let newer = |&s: &u32| s.wrapping_sub(report.seq) as i32 > 0;
            if self.row_seq[rows.clone()].iter().any(newer) {
                continue;
            }
            // Sent lossy: the expert's pixels are meant to differ until the
            // exact ones follow (checked by a later report).
            if !self.approx.rows_exact(rows.clone()) {
                continue;
            }
            out.compared += 1;
            let mut ours = 0;
            for y in rows.clone() {
                let row = &mut xrgb[..w * 4];
                row_to_xrgb8888(g.format, &self.shadow[y * rb..(y + 1) * rb], row);
                ours = hash_row(ours, row);
            }
            if ours != theirs {
                out.differing += 1;
                self.force_rows(rows);
            }
        }
        self.scratch = xrgb;
        out
    }

    /// Sends `rows` whole with the next update.
    fn force_rows(&mut self, rows: std::ops::Range<usize>) {
        match self.forced.last_mut() {
            Some(last) if last.end >= rows.start => last.end = last.end.max(rows.end),
            _ => self.forced.push(rows),
        }
    }

    /// Encodes what changed since the previous update. `None` when nothing
    /// changed and `full` is false. With `full`, the whole screen is sent.
    /// A size or format change sends new screen info and the whole screen.
    pub fn encode(
        &mut self,
        consent: &ViewConsent,
        frame: &Frame<'_>,
        full: bool,
    ) -> Result<Option<EncodedUpdate>, EncodeError> {
        self.encode_at(consent, frame, full, Instant::now())
    }

    /// [`Self::encode`] at `now` (when lossy tiles are due to be refined).
    /// Also an update, with nothing changed, when tiles sent lossy are due.
    pub fn encode_at(
        &mut self,
        consent: &ViewConsent,
        frame: &Frame<'_>,
        full: bool,
        now: Instant,
    ) -> Result<Option<EncodedUpdate>, EncodeError> {
        if !consent.is_live() {
            return Err(EncodeError::ConsentWithdrawn);
        }
        self.encode_frame_with(frame, full, now, None)
    }

    /// [`Self::encode_at`], handing parts to `early` as soon as they hold
    /// [`EARLY_PART_BYTES`] (the screen info before the first): the expert
    /// decodes the start of a large update while the rest is encoded. Each
    /// goes only while `consent` is live. The update returned holds what
    /// was not sent early: the last part at least, and the screen info if
    /// no part went before. Fails with [`EncodeError::Refused`] when the
    /// consent ended or `early` refused mid-update.
    pub fn encode_into(
        &mut self,
        consent: &ViewConsent,
        frame: &Frame<'_>,
        full: bool,
        now: Instant,
        early: EarlySink<'_>,
    ) -> Result<Option<EncodedUpdate>, EncodeError> {
        if !consent.is_live() {
            return Err(EncodeError::ConsentWithdrawn);
        }
        let mut live = |m: Message| consent.is_live() && early(m);
        self.encode_frame_with(frame, full, now, Some(&mut live))
    }

    /// Whether `frame` differs from what the expert was last sent, without
    /// changing anything (costs one frame compare).
    pub fn differs(&self, frame: &Frame<'_>) -> bool {
        let Some(g) = self.geometry else { return true };
        if g != frame.geometry() {
            return true;
        }
        let rb = frame.row_bytes();
        (0..frame.height()).any(|y| {
            let start = y as usize * rb;
            !frame.row_eq(y, &self.shadow[start..start + rb])
        })
    }

    /// [`Self::encode_frame_at`] now (tests: no consent needed).
    #[cfg(test)]
    fn encode_frame(&mut self, frame: &Frame<'_>, full: bool) -> Option<EncodedUpdate> {
        self.encode_frame_at(frame, full, Instant::now())
    }

    /// The update of `frame` at `now`, all parts at the end (tests).
    #[cfg(test)]
    fn encode_frame_at(
        &mut self,
        frame: &Frame<'_>,
        full: bool,
        now: Instant,
    ) -> Option<EncodedUpdate> {
        self.encode_frame_with(frame, full, now, None)
            .expect("no early sink to refuse")
    }

    fn encode_frame_with(
        &mut self,
        frame: &Frame<'_>,
        full: bool,
        now: Instant,
        early: Option<EarlySink<'_>>,
    ) -> Result<Option<EncodedUpdate>, EncodeError> {
        let g = frame.geometry();
        let (w, h) = (g.width as usize, g.height as usize);
        let rb = frame.row_bytes();
        let mut screen = None;
        let mut copies = Vec::new();
        let mut refine = Vec::new();
        let areas;
        let forced = std::mem::take(&mut self.forced);
        // A page flip (another buffer on screen) is a new picture: compare
        // it whole rather than probe it.
        let flipped = frame.buffer().is_some() && frame.buffer() != self.last_buffer;
        self.last_buffer = frame.buffer();
        if self.geometry != Some(g) {
            self.geometry = Some(g);
            self.generation = self.generation.wrapping_add(1);
            self.shadow.clear();
            self.shadow.resize(rb * h, 0);
            for (y, row) in self.shadow.chunks_exact_mut(rb).enumerate() {
                frame.read_row(y as u32, row);
            }
            self.previous.clear();
            self.previous_used = 0;
            self.previous_at = vec![UNCHANGED; h];
            self.masks = vec![0; h];
            self.row_seq = vec![0; h];
            self.approx.reset(w, h);
            screen = self.screen_info();
            areas = vec![Area { x: 0, y: 0, w, h }];
        } else {
            let forcing = !forced.is_empty();
            let refine_after = self.refine_after();
            let refining = self.approx.any_due(now, refine_after);
            if !full && !forcing && !refining && !flipped && self.probe_unchanged(frame) {
                return Ok(None);
            }
            let changed = self.find_damage(frame);
            if !changed && !full && !forcing && !refining {
                return Ok(None);
            }
            if changed && !full {
                // Clears from the masks the tile columns the copies fix.
                let (width, _, bpp) = self.layout();
                let screens = Screens {
                    new: &self.shadow,
                    previous: &self.previous,
                    previous_at: &self.previous_at,
                    unchanged: UNCHANGED,
                    width,
                    bpp,
                };
                copies = self.scroll.find(&screens, &mut self.masks);
                for c in &copies {
                    self.approx.copied(c.dst, c.src_y, now);
                }
            }
            // Forced rows go whole (after the copies, which may write
            // into them): no damage of their own.
            for r in &forced {
                self.masks[r.clone()].iter_mut().for_each(|m| *m = 0);
            }
            areas = if full {
                copies.clear();
                vec![Area { x: 0, y: 0, w, h }]
            } else {
                let areas = match self.row_areas(w, h) {
                    Some(fine) => fine,
                    None => self.damage_areas(w, h),
                };
                let areas: Vec<Area> = areas.into_iter().map(|a| self.trim(a)).collect();
                let mut areas = join_bands(areas);
                areas.extend(forced.iter().map(|r| Area {
                    x: 0,
                    y: r.start,
                    w,
                    h: r.len(),
                }));
                areas
            };
            if refining && !full {
                let budget = self.lossy.map_or(usize::MAX, |l| l.refine_pixels);
                let masks = &self.masks;
                let changed = |tr: usize| {
                    masks[tr * TILE..((tr + 1) * TILE).min(h)]
                        .iter()
                        .fold(0, |a, m| a | m)
                };
                refine = self.approx.due(now, refine_after, budget, changed);
            }
            if !changed && !full && forced.is_empty() && refine.is_empty() {
                return Ok(None);
            }
        }

        // A new screen or a full update starts the deflate stream anew: the
        // expert's framebuffer is new, or it asked for everything because
        // its copy (and maybe its stream) went wrong.
        if (screen.is_some() || full)
            && let Some(d) = self.deflate.as_mut()
        {
            d.restart = true;
        }
        let mut stats = EncodeStats::default();
        self.seq = self.seq.wrapping_add(1);
        // What changed in this update, for view reports (below).
        let whole = screen.is_some() || full;
        let mut rects = Packer::new(self.seq, self.generation, early);
        rects.screen = screen;
        for c in &copies {
            stats.copy += 1;
            stats.pixels += c.dst.w * c.dst.h;
            stats.rects += 1;
            rects.push(Rect {
                x: c.dst.x as u16,
                y: c.dst.y as u16,
                w: c.dst.w as u16,
                h: c.dst.h as u16,
                encoding: Encoding::Copy {
                    src_x: c.dst.x as u16,
                    src_y: c.src_y as u16,
                },
            });
        }
        // Refinements first: they are tiles no damage of this update touches.
        // Their rows change on the expert's side although not on the
        // screen: a view report from before this update is not compared
        // there (it saw the approximation).
        let refined_rows: Vec<std::ops::Range<usize>> =
            refine.iter().map(|a| a.y..a.y + a.h).collect();
        let refine = refine.into_iter().map(|a| (a, true));
        let most = if self.deflate.is_some() {
            MAX_DEFLATE_RECT_BYTES
        } else {
            MAX_RECT_BYTES
        };
        let mut slices = Vec::new();
        for (area, refinement) in refine.chain(areas.into_iter().map(|a| (a, false))) {
            if area.w == 0 || area.h == 0 {
                continue;
            }
            let rows_per_slice = (most / (area.w * 4)).max(1);
            let mut y = area.y;
            while y < area.y + area.h {
                let h = rows_per_slice.min(area.y + area.h - y);
                slices.push((Area { y, h, ..area }, refinement));
                y += h;
            }
        }
        let Some(g) = self.geometry else {
            unreachable!("areas exist only once a frame was seen")
        };
        let prep = Preparer::new(&self.shadow, g, self.deflate.as_ref(), self.lossy);
        let pixels: usize = slices.iter().map(|(a, _)| a.w * a.h).sum();
        let pipelined = self.deflate.is_some() && self.threads && pixels >= PIPELINE_FROM_PIXELS;
        stats.two_threads = pipelined;
        let approx = &mut self.approx;
        // Counts a slice's rectangle in and hands it on; false once the
        // early sink refused (the rest is not worth making).
        let mut record = |slice: Area, refinement: bool, encoding: Encoding| {
            if matches!(encoding, Encoding::Jpeg(_)) {
                approx.mark(slice, now);
            } else {
                if refinement {
                    stats.refined += 1;
                }
                approx.exact(slice);
            }
            count(&mut stats, &encoding, slice.w * slice.h);
            stats.rects += 1;
            rects.push(Rect {
                x: slice.x as u16,
                y: slice.y as u16,
                w: slice.w as u16,
                h: slice.h as u16,
                encoding,
            });
            !rects.refused
        };
        if pipelined {
            // Large updates on two threads: the next slices' tile streams
            // are made while the earlier ones are deflated (in order).
            let (deflate, out) = (self.deflate.as_mut(), &mut self.compressed);
            std::thread::scope(|scope| {
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                let (back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
                let slices = &slices;
                scope.spawn(move || {
                    let (mut scratch, mut work) = (Vec::new(), Vec::new());
                    for &(slice, refinement) in slices {
                        let mut tiles = spare.try_recv().unwrap_or_default();
                        let p =
                            prep.prepare(slice, !refinement, &mut tiles, &mut scratch, &mut work);
                        // The receiver is gone when the update was cut short.
                        if tx.send((slice, refinement, p, tiles)).is_err() {
                            break;
                        }
                    }
                });
                let mut deflate = deflate;
                for (slice, refinement, p, tiles) in rx {
                    let e = prep.finish(deflate.as_deref_mut(), slice, p, &tiles, out);
                    let _ = back.send(tiles);
                    if !record(slice, refinement, e) {
                        break;
                    }
                }
            });
        } else {
            for (slice, refinement) in slices {
                let (tiles, scratch, out) =
                    (&mut self.tiles, &mut self.scratch, &mut self.compressed);
                let p = prep.prepare(slice, !refinement, tiles, scratch, out);
                let e = prep.finish(self.deflate.as_mut(), slice, p, tiles, out);
                if !record(slice, refinement, e) {
                    break;
                }
            }
        }
        // What changed in this update, for view reports: rows that differed,
        // rows sent whole, everything when the whole screen went.
        for (y, s) in self.row_seq.iter_mut().enumerate() {
            if whole || self.previous_at[y] != UNCHANGED {
                *s = self.seq;
            }
        }
        for r in forced.iter().chain(&refined_rows) {
            self.row_seq[r.clone()]
                .iter_mut()
                .for_each(|s| *s = self.seq);
        }
        let (parts, screen, refused) = rects.finish();
        if refused {
            // The expert has part of this update at most: whatever comes
            // next must not build on it.
            self.reset();
            return Err(EncodeError::Refused);
        }
        Ok(Some(EncodedUpdate {
            screen,
            parts,
            stats,
        }))
    }

    /// Copies the rows of `frame` that differ from the shadow into the
    /// shadow, their old content into `previous`, and fills `masks` with the
    /// tile columns in which the two differ; true if any. The only full read
    /// of the frame in an update.
    fn find_damage(&mut self, frame: &Frame<'_>) -> bool {
        let rb = frame.row_bytes();
        let tile_bytes = TILE * frame.format().bytes_per_pixel();
        let mut any = false;
        self.previous_used = 0;
        for (y, mask) in self.masks.iter_mut().enumerate() {
            self.previous_at[y] = UNCHANGED;
            *mask = 0;
            let shadow = &mut self.shadow[y * rb..(y + 1) * rb];
            // A compare in place is the cheap common case; a row that
            // differs is read again, once, and only that copy counts.
            if frame.row_eq(y as u32, shadow) {
                continue;
            }
            let at = self.previous_used * rb;
            if self.previous.len() < at + rb {
                self.previous.resize(at + rb, 0);
            }
            let old = &mut self.previous[at..at + rb];
            old.copy_from_slice(shadow);
            frame.read_row(y as u32, shadow);
            let (old, new) = (&*old, &*shadow);
            if new == old {
                // Drawn back between the two reads: nothing to send.
                continue;
            }
            // Cannot overflow: at most MAX_EDGE rows.
            self.previous_at[y] = self.previous_used as u32;
            self.previous_used += 1;
            any = true;
            let mut m = 0u128;
            for (i, (a, b)) in new
                .chunks(tile_bytes)
                .zip(old.chunks(tile_bytes))
                .enumerate()
            {
                if a != b {
                    m |= 1 << i;
                }
            }
            *mask = m;
        }
        any
    }

    /// Rectangles covering every changed tile: per band of [`TILE`] rows, one
    /// per run of changed tile columns, trimmed to the rows that changed, then
    /// joined with the rectangle right above when they line up.
    fn damage_areas(&self, w: usize, h: usize) -> Vec<Area> {
        let mut done: Vec<Area> = Vec::new();
        let mut open: Vec<Area> = Vec::new();
        for band in (0..h).step_by(TILE) {
            let rows = band..(band + TILE).min(h);
            let or = self.masks[rows.clone()].iter().fold(0u128, |a, m| a | m);
            let mut next_open = Vec::new();
            let mut bits = or;
            while bits != 0 {
                let b0 = bits.trailing_zeros() as usize;
                let run_len = (!(bits >> b0)).trailing_zeros() as usize;
                let b1 = b0 + run_len;
                let run_mask = if run_len >= 128 {
                    u128::MAX
                } else {
                    ((1u128 << run_len) - 1) << b0
                };
                bits &= !run_mask;
                let changed = |y: &usize| self.masks[*y] & run_mask != 0;
                // Both exist: the run came from these rows' masks.
                let y0 = rows.clone().find(changed).unwrap_or(rows.start);
                let y1 = rows.clone().rev().find(changed).unwrap_or(y0) + 1;
                let x0 = b0 * TILE;
                let x1 = (b1 * TILE).min(w);
                let mut area = Area {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                };
                if let Some(i) = open
                    .iter()
                    .position(|a| a.x == x0 && a.w == area.w && a.y + a.h == y0)
                {
                    let above = open.swap_remove(i);
                    area = Area {
                        y: above.y,
                        h: above.h + area.h,
                        ..area
                    };
                }
                if y1 == rows.end {
                    next_open.push(area);
                } else {
                    done.push(area);
                }
            }
            done.append(&mut open);
            open = next_open;
        }
        done.append(&mut open);
        done.sort_by_key(|a| (a.y, a.x));
        done
    }

    /// Rectangles at row precision: rows with the same changed tile columns
    /// form a group, each run of columns in a group a rectangle, joined with
    /// the one right above when they line up. Tighter than
    /// [`Self::damage_areas`] for thin changes (a focus ring, a caret), but
    /// many rectangles for busy changes: `None` beyond [`MAX_FINE_AREAS`],
    /// and the caller uses the coarse ones.
    fn row_areas(&self, w: usize, h: usize) -> Option<Vec<Area>> {
        let mut done: Vec<Area> = Vec::new();
        let mut open: Vec<Area> = Vec::new();
        let mut y = 0;
        while y < h {
            let m = self.masks[y];
            let y0 = y;
            while y < h && self.masks[y] == m {
                y += 1;
            }
            let mut next_open = Vec::new();
            for (x0, x1) in bit_runs(m) {
                let (x0, x1) = (x0 * TILE, (x1 * TILE).min(w));
                let mut area = Area {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y - y0,
                };
                if let Some(i) = open
                    .iter()
                    .position(|a| a.x == x0 && a.w == area.w && a.y + a.h == y0)
                {
                    let above = open.swap_remove(i);
                    area.h += area.y - above.y;
                    area.y = above.y;
                }
                next_open.push(area);
            }
            done.append(&mut open);
            open = next_open;
            if done.len() + open.len() > MAX_FINE_AREAS {
                return None;
            }
        }
        done.append(&mut open);
        done.sort_by_key(|a| (a.y, a.x));
        Some(done)
    }

    /// Shrinks `a` to the columns and rows where the old screen and the new
    /// one differ. Unchanged areas come back with zero width.
    fn trim(&self, a: Area) -> Area {
        let (_, rb, bpp) = self.layout();
        let (mut left, mut right) = (a.x + a.w, a.x);
        let (mut top, mut bottom) = (a.y + a.h, a.y);
        for y in a.y..a.y + a.h {
            let old = &self.old_row(y)[a.x * bpp..(a.x + a.w) * bpp];
            let new = &self.shadow[y * rb + a.x * bpp..y * rb + (a.x + a.w) * bpp];
            if old == new {
                continue;
            }
            // Both exist: the rows differ.
            let first = first_diff(old, new).unwrap_or(0) / bpp;
            let last = last_diff(old, new).unwrap_or(0) / bpp;
            left = left.min(a.x + first);
            right = right.max(a.x + last + 1);
            top = top.min(y);
            bottom = bottom.max(y + 1);
        }
        if left >= right || top >= bottom {
            return Area { w: 0, h: 0, ..a };
        }
        Area {
            x: left,
            y: top,
            w: right - left,
            h: bottom - top,
        }
    }

    /// Width in pixels, bytes per row and per pixel of the current screen.
    fn layout(&self) -> (usize, usize, usize) {
        let Some(g) = self.geometry else {
            unreachable!("the layout is used only once a frame was seen")
        };
        let bpp = g.format.bytes_per_pixel();
        (g.width as usize, g.width as usize * bpp, bpp)
    }

    /// Row `y` as the expert has it before this update: set aside when it
    /// changed, else the shadow's.
    fn old_row(&self, y: usize) -> &[u8] {
        let (_, rb, _) = self.layout();
        match self.previous_at[y] {
            UNCHANGED => &self.shadow[y * rb..(y + 1) * rb],
            i => &self.previous[i as usize * rb..(i as usize + 1) * rb],
        }
    }
}

/// Prepares areas of the shadow for the wire, up to their deflate (which
/// is sequential, the stream's pieces in order): reads only, so a second
/// thread can prepare the next areas while the first ones are deflated.
#[derive(Clone, Copy)]
struct Preparer<'a> {
    shadow: &'a [u8],
    format: crate::PixelFormat,
    row_bytes: usize,
    deflate: bool,
    predicted: bool,
    lossy: Option<Lossy>,
}

/// An area made ready by [`Preparer::prepare`].
enum Prepared {
    /// Its encoding (solid, lossy, lz4 or raw).
    Done(Encoding),
    /// Its tile stream is in the caller's buffer, to be deflated.
    Tiles { photo_like: bool },
}

impl<'a> Preparer<'a> {
    /// Prepares areas of `shadow` (a screen of geometry `g`) for an expert
    /// that takes what `deflate` says, with `lossy` on or off.
    fn new(
        shadow: &'a [u8],
        g: ScreenGeometry,
        deflate: Option<&Deflater>,
        lossy: Option<Lossy>,
    ) -> Self {
        Self {
            shadow,
            format: g.format,
            row_bytes: g.width as usize * g.format.bytes_per_pixel(),
            deflate: deflate.is_some(),
            // Photographs' raw tiles go predicted to an expert that takes
            // it (one that takes the deflate stream).
            predicted: deflate.is_some_and(|d| d.stream.is_some()),
            lossy,
        }
    }

    /// The encoding of area `a`, prepared as `p` (its tile stream, if any,
    /// in `tiles`): deflated with `deflate`, or raw when that is no smaller.
    fn finish(
        &self,
        deflate: Option<&mut Deflater>,
        a: Area,
        p: Prepared,
        tiles: &[u8],
        out: &mut Vec<u8>,
    ) -> Encoding {
        match p {
            Prepared::Done(e) => e,
            Prepared::Tiles { photo_like } => deflate
                .and_then(|d| d.deflate(tiles, photo_like, a.w * 4 * a.h, out))
                .unwrap_or_else(|| {
                    let mut raw = Vec::new();
                    self.xrgb_into(a, &mut raw);
                    Encoding::Raw(Payload(raw))
                }),
        }
    }

    /// The pixels of row `y` of area `a`, in the source format.
    fn row(&self, a: Area, y: usize) -> &[u8] {
        let bpp = self.format.bytes_per_pixel();
        &self.shadow[y * self.row_bytes + a.x * bpp..y * self.row_bytes + (a.x + a.w) * bpp]
    }

    /// Area `a` as XRGB8888 rows in `out`.
    fn xrgb_into(&self, a: Area, out: &mut Vec<u8>) {
        out.resize(a.w * 4 * a.h, 0);
        for (i, dst) in out.chunks_exact_mut(a.w * 4).enumerate() {
            row_to_xrgb8888(self.format, self.row(a, a.y + i), dst);
        }
    }

    /// Area `a` as a solid fill, lossy, lz4 or raw; or, with deflate, as a
    /// tile stream in `tiles` to deflate. `may_lose`: a photo-like area may
    /// go lossy (when lossy is on). `scratch` and `out` are work buffers.
    fn prepare(
        &self,
        a: Area,
        may_lose: bool,
        tiles: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Prepared {
        let first_row = self.row(a, a.y);
        let px = &first_row[..self.format.bytes_per_pixel()];
        let solid = first_row
            .chunks_exact(self.format.bytes_per_pixel())
            .all(|p| p == px)
            && (a.y + 1..a.y + a.h).all(|y| self.row(a, y) == first_row);
        if solid {
            return Prepared::Done(Encoding::Solid(pixel_to_xrgb(self.format, px)));
        }
        let raw_len = a.w * 4 * a.h;
        if !self.deflate {
            self.xrgb_into(a, scratch);
            out.resize(lz4_flex::block::get_maximum_output_size(raw_len), 0);
            return Prepared::Done(match lz4_flex::block::compress_into(scratch, out) {
                Ok(n) if n < raw_len => Encoding::Lz4(Payload(out[..n].to_vec())),
                // Incompressible (or, never with a buffer of the maximum
                // output size, too small): raw is smaller or equal.
                _ => Encoding::Raw(Payload(scratch.clone())),
            });
        }
        tiles.clear();
        // B, G, R, X/A in memory (most scanouts): the tile stream reads the
        // shadow in place (it ignores the fourth byte); other formats are
        // converted first.
        let in_place = matches!(
            self.format,
            crate::PixelFormat::Xrgb8888 | crate::PixelFormat::Argb8888
        );
        if in_place {
            let bpp = self.format.bytes_per_pixel();
            let start = a.y * self.row_bytes + a.x * bpp;
            let (rb, w, h) = (self.row_bytes, a.w, a.h);
            shoulder_proto::tiles::encode_rows(
                &self.shadow[start..],
                rb,
                w,
                h,
                self.predicted,
                tiles,
            );
        } else {
            self.xrgb_into(a, scratch);
            shoulder_proto::tiles::encode_rows(scratch, a.w * 4, a.w, a.h, self.predicted, tiles);
        }
        // Photo-like areas: mostly raw tiles, over a byte a pixel.
        let photo_like = tiles.len() > a.w * a.h;
        if photo_like
            && may_lose
            && let Some(l) = self.lossy
            && tiles.len() >= l.exact_below_bytes
            && let Some(jpeg) = {
                if in_place {
                    self.xrgb_into(a, scratch);
                }
                jpeg(scratch, a.w, a.h, l.quality)
            }
        {
            return Prepared::Done(Encoding::Jpeg(Payload(jpeg)));
        }
        Prepared::Tiles { photo_like }
    }
}

impl Deflater {
    /// Deflates the tile stream of a `raw_len`-byte (as XRGB8888) area:
    /// user interfaces as the stream's next piece when the expert takes the
    /// stream, otherwise on its own. None when raw would be no larger.
    fn deflate(
        &mut self,
        tiles: &[u8],
        photo_like: bool,
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Option<Encoding> {
        // Room for the tile stream in stored blocks (5 bytes of header per
        // 64 KiB): deflate never fails for want of room.
        out.resize(tiles.len() + tiles.len() / 8192 + 64, 0);
        // User interfaces go as pieces of the stream when the expert takes
        // it: their glyphs, icons and pages come back. Large photo-like
        // areas rarely repeat byte for byte and want miniz's fast path,
        // which cannot share a stream with the thorough one: they go on
        // their own. Small ones (anti-aliased digits, icons) are cheap at
        // any level and do repeat.
        let fast = photo_like && tiles.len() >= FAST_PATH_FROM;
        if let Some(stream) = self.stream.as_mut()
            && !fast
        {
            let restart = std::mem::take(&mut self.restart);
            if restart {
                stream.reset();
            }
            // A piece, ended by a sync flush so the expert can decode it
            // alone; always sent (the stream has it now).
            let (status, read, n) = compress(stream, tiles, out, TDEFLFlush::Sync);
            if status == TDEFLStatus::Okay && read == tiles.len() {
                return Some(Encoding::DeflateStream {
                    restart,
                    data: Payload(out[..n].to_vec()),
                });
            }
            // Never with room for stored blocks; if it happens, what the
            // stream holds is unknown: the next piece starts anew.
            self.restart = true;
            return None;
        }
        // Photo-like areas gain little from a thorough search and would
        // take several times as long; user interfaces are a small stream
        // by then, and a thorough search is cheap there.
        self.single.reset();
        self.single.set_compression_level_raw(if photo_like {
            DEFLATE_LEVEL_PHOTO
        } else {
            DEFLATE_LEVEL_UI
        });
        let (status, read, n) = compress(&mut self.single, tiles, out, TDEFLFlush::Finish);
        (status == TDEFLStatus::Done && read == tiles.len() && n < raw_len)
            .then(|| Encoding::Deflate(Payload(out[..n].to_vec())))
    }
}

/// Counts `e` (the encoding of `pixels` pixels) into `stats`.
fn count(stats: &mut EncodeStats, e: &Encoding, pixels: usize) {
    stats.pixels += pixels;
    stats.payload_bytes += e.payload_len();
    match e {
        Encoding::Solid(_) => stats.solid += 1,
        Encoding::Lz4(_) => stats.lz4 += 1,
        Encoding::Raw(_) => stats.raw += 1,
        Encoding::Jpeg(_) => stats.jpeg += 1,
        Encoding::Deflate(_) | Encoding::DeflateStream { .. } => stats.deflate += 1,
        Encoding::Copy { .. } => stats.copy += 1,
    }
}

/// `xrgb` (`w`×`h` XRGB8888 pixels, B G R X in memory) as a baseline JPEG
/// of `quality`; `None` if the encoder refuses (never for valid sizes).
#[cfg(feature = "jpeg")]
fn jpeg(xrgb: &[u8], w: usize, h: usize, quality: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(w * h / 4);
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(
        xrgb,
        u16::try_from(w).ok()?,
        u16::try_from(h).ok()?,
        jpeg_encoder::ColorType::Bgra,
    )
    .ok()?;
    Some(out)
}

/// Built without lossy rectangles: every area goes exact.
#[cfg(not(feature = "jpeg"))]
fn jpeg(_: &[u8], _: usize, _: usize, _: u8) -> Option<Vec<u8>> {
    None
}

/// How rectangles are compressed, by what the expert takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// XRGB8888 rows, lz4 ([`Encoding::Lz4`]): every expert takes it.
    #[default]
    Lz4,
    /// A tile stream per rectangle, deflated on its own
    /// ([`Encoding::Deflate`]).
    Deflate,
    /// Tile streams as pieces of one deflate stream
    /// ([`Encoding::DeflateStream`]): repeated content (a clock's digits,
    /// a terminal's glyphs, a page seen before) costs a back-reference.
    DeflateStream,
}

impl Compression {
    /// The best an expert takes, from its capabilities.
    pub fn for_expert(deflate: bool, stream: bool) -> Self {
        match (deflate, stream) {
            (_, true) => Self::DeflateStream,
            (true, false) => Self::Deflate,
            (false, false) => Self::Lz4,
        }
    }
}

/// Deflate compressors, kept between rectangles (their tables are large).
struct Deflater {
    /// For rectangles compressed on their own, reset for each.
    single: Box<CompressorOxide>,
    /// The stream of user-interface rectangles (for an expert that takes
    /// [`Encoding::DeflateStream`]): its window is what later pieces refer
    /// back to. Always at [`DEFLATE_LEVEL_STREAM`]: miniz's fast path (its
    /// level 1) and its thorough one keep different state, and a stream
    /// that switches between them mid-way decodes short.
    stream: Option<Box<CompressorOxide>>,
    /// The next stream piece starts the stream anew.
    restart: bool,
}

impl Deflater {
    fn new(stream: bool) -> Self {
        let raw = |level: u8| create_comp_flags_from_zip_params(i32::from(level), -15, 0);
        Self {
            single: Box::new(CompressorOxide::new(raw(DEFLATE_LEVEL_PHOTO))),
            stream: stream.then(|| Box::new(CompressorOxide::new(raw(DEFLATE_LEVEL_STREAM)))),
            restart: true,
        }
    }
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deflater")
    }
}

/// Updates of at most this many changed pixels have their touching areas
/// joined ([`join_bands`]). Larger ones (page switches) are left as they
/// are: joining their areas cost up to 12 % more bytes (BENCHMARKS.md).
const JOIN_UP_TO_PIXELS: usize = 100_000;
/// Two areas are joined when their bounding box has at most this many
/// percent more pixels than the two together.
const JOIN_SLACK_PERCENT: usize = 50;

/// Joins areas that touch or overlap row to row and share columns into
/// their bounding box, when it adds few unchanged pixels, in small
/// updates. A progress bar's rounded ends and anti-aliased label cut its
/// damage into row bands of different widths; each band would be a
/// rectangle with its own header and deflate flush, and tiles a row or two
/// high, in which neither the tile forms nor deflate see the bar's rows
/// together. Joined, a dashboard's clock tick went from 2.55 to 1.86 KB.
/// The pixels the box adds are sent as they are, so the expert's view is
/// the same.
fn join_bands(areas: Vec<Area>) -> Vec<Area> {
    let pixels = |a: &Area| a.w * a.h;
    if areas.iter().map(pixels).sum::<usize>() > JOIN_UP_TO_PIXELS {
        return areas;
    }
    let mut out: Vec<Area> = Vec::with_capacity(areas.len());
    for a in areas {
        if pixels(&a) == 0 {
            out.push(a);
            continue;
        }
        let touching = out.iter().rposition(|m| {
            pixels(m) > 0
                && a.y <= m.y + m.h
                && m.y <= a.y + a.h
                && a.x < m.x + m.w
                && m.x < a.x + a.w
        });
        if let Some(i) = touching {
            let m = out[i];
            let (x0, y0) = (m.x.min(a.x), m.y.min(a.y));
            let (x1, y1) = ((m.x + m.w).max(a.x + a.w), (m.y + m.h).max(a.y + a.h));
            let joined = Area {
                x: x0,
                y: y0,
                w: x1 - x0,
                h: y1 - y0,
            };
            if pixels(&joined) * 100 <= (pixels(&m) + pixels(&a)) * (100 + JOIN_SLACK_PERCENT) {
                out[i] = joined;
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// The runs of set bits of `m`, as `(first, end)` bit indices.
fn bit_runs(mut m: u128) -> impl Iterator<Item = (usize, usize)> {
    std::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let b0 = m.trailing_zeros() as usize;
        let len = (!(m >> b0)).trailing_zeros() as usize;
        let run = if len >= 128 {
            u128::MAX
        } else {
            ((1u128 << len) - 1) << b0
        };
        m &= !run;
        Some((b0, b0 + len))
    })
}

/// Packs rectangles, in order, into parts of at most [`MAX_RECTS_PER_PART`]
/// rectangles and [`MAX_UPDATE_PAYLOAD`] payload bytes. Always at least one
/// part (an empty one for a full update of nothing is never made, but a
/// caller-visible update always ends with `last = true`).
#[cfg(test)]
fn pack_parts(seq: u32, generation: u32, rects: Vec<Rect>) -> Vec<UpdatePart> {
    let mut p = Packer::new(seq, generation, None);
    for r in rects {
        p.push(r);
    }
    p.finish().0
}

/// Where the parts of an update go before its end (see
/// [`Encoder::encode_into`]); false when they cannot be taken any more.
pub type EarlySink<'a> = &'a mut dyn FnMut(Message) -> bool;

/// A part holding at least this many payload bytes goes out before the
/// update is finished (with an early sink): the expert decodes it while
/// the rest is encoded. Typing and clocks stay one part.
pub const EARLY_PART_BYTES: usize = 8 * 1024;

/// Packs an update's rectangles into parts as they are made; with an early
/// sink, full parts (and parts of [`EARLY_PART_BYTES`]) go to it at once,
/// the new screen info first.
struct Packer<'a> {
    seq: u32,
    generation: u32,
    cur: UpdatePart,
    bytes: usize,
    parts: Vec<UpdatePart>,
    early: Option<EarlySink<'a>>,
    /// Screen info to send before the first early part.
    screen: Option<ScreenInfo>,
    /// The early sink refused a message: nothing more goes to it.
    refused: bool,
}

impl<'a> Packer<'a> {
    fn new(seq: u32, generation: u32, early: Option<EarlySink<'a>>) -> Self {
        Self {
            seq,
            generation,
            cur: Self::part(seq, generation),
            bytes: 0,
            parts: Vec::new(),
            early,
            screen: None,
            refused: false,
        }
    }

    fn part(seq: u32, generation: u32) -> UpdatePart {
        UpdatePart {
            seq,
            generation,
            last: false,
            rects: heapless::Vec::new(),
        }
    }

    fn push(&mut self, r: Rect) {
        let len = r.encoding.payload_len();
        if self.cur.rects.len() == MAX_RECTS_PER_PART
            || (!self.cur.rects.is_empty() && self.bytes + len > MAX_UPDATE_PAYLOAD)
        {
            self.flush();
        }
        self.bytes += len;
        // Cannot fail: the part was flushed above when full.
        let _ = self.cur.rects.push(r);
        if self.early.is_some() && self.bytes >= EARLY_PART_BYTES {
            self.flush();
        }
    }

    /// Ends the current part (not the last one).
    fn flush(&mut self) {
        let part = std::mem::replace(&mut self.cur, Self::part(self.seq, self.generation));
        self.bytes = 0;
        match self.early.as_mut() {
            None => self.parts.push(part),
            Some(_) if self.refused => {}
            Some(sink) => {
                let screen_went = match self.screen.take() {
                    Some(info) => sink(Message::ScreenInfo(info)),
                    None => true,
                };
                self.refused = !(screen_went && sink(Message::Update(Box::new(part))));
            }
        }
    }

    /// The parts not sent early (the last among them), the screen info if
    /// it was not, and whether the early sink refused anything.
    fn finish(mut self) -> (Vec<UpdatePart>, Option<ScreenInfo>, bool) {
        self.cur.last = true;
        self.parts.push(self.cur);
        (self.parts, self.screen, self.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{PixelFormat, Rotation};
    use shoulder_proto::fb::Framebuffer;

    fn geometry(w: u32, h: u32, format: PixelFormat) -> ScreenGeometry {
        ScreenGeometry {
            width: w,
            height: h,
            format,
        }
    }

    /// Applies an update to the client framebuffer (creating it on screen info).
    fn apply(fb: &mut Option<Framebuffer>, u: &EncodedUpdate) {
        if let Some(info) = &u.screen {
            *fb = Some(Framebuffer::new(info).unwrap());
        }
        let fb = fb.as_mut().unwrap();
        for (i, p) in u.parts.iter().enumerate() {
            assert_eq!(p.last, i + 1 == u.parts.len());
            assert!(p.rects.len() <= MAX_RECTS_PER_PART);
            assert!(p.payload_len() <= MAX_UPDATE_PAYLOAD);
            fb.apply(p).unwrap();
        }
    }

    fn pattern(w: u32, h: u32, seed: u32) -> Vec<u8> {
        (0..w * h)
            .flat_map(|i| {
                let v = i.wrapping_mul(2_654_435_761).wrapping_add(seed);
                [(v >> 8) as u8, (v >> 16) as u8, (v >> 24) as u8, 0]
            })
            .collect()
    }

    #[test]
    fn bands_of_a_bar_one_above_the_other_go_as_one_rectangle() {
        // A progress bar drawn as a gradient along its length (every pixel
        // changes when it grows), its two top and two bottom rows shorter
        // (rounded ends) and its left end across a boundary of the damage
        // columns: three bands of different widths.
        let (w, h) = (256u32, 40u32);
        let bar = |len: usize| {
            let mut px = vec![0xffu8; (w * h * 4) as usize];
            for y in 10..24usize {
                let inset = if (12..22).contains(&y) { 0 } else { 4 };
                for x in 62 + inset..62 + len - inset {
                    let v = ((x - 62) * 200 / len + len) as u8;
                    let i = (y * w as usize + x) * 4;
                    px[i..i + 4].copy_from_slice(&[v, 128, 255 - v, 0]);
                }
            }
            px
        };
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let mut enc = Encoder::new();
        enc.set_compression(Compression::DeflateStream);
        let mut fb = None;
        let (before, after) = (bar(150), bar(176));
        let first = enc.encode_frame(&Frame::new(&before, g, w as usize * 4).unwrap(), false);
        apply(&mut fb, &first.unwrap());
        let frame = Frame::new(&after, g, w as usize * 4).unwrap();
        let u = enc.encode_frame(&frame, false).unwrap();
        assert_eq!(u.stats.rects, 1, "{:?}", u.stats);
        apply(&mut fb, &u);
        assert_eq!(fb.unwrap().normalized(), frame.to_xrgb8888());
    }

    #[test]
    fn pack_respects_rect_and_payload_limits() {
        let rect = |n: usize| Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
            encoding: Encoding::Raw(Payload(vec![0; n])),
        };
        let rects: Vec<Rect> = (0..200).map(|_| rect(4)).collect();
        let parts = pack_parts(7, 1, rects);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.seq == 7 && p.rects.len() <= 64));
        assert!(parts.last().unwrap().last && !parts[0].last);
        let big: Vec<Rect> = (0..5).map(|_| rect(MAX_RECT_BYTES + 100)).collect();
        let parts = pack_parts(1, 1, big);
        assert!(parts.len() >= 2);
        for p in &parts {
            assert!(p.payload_len() <= MAX_UPDATE_PAYLOAD);
        }
    }

    /// The upright picture of `xrgb` (a `w`×`h` XRGB8888 buffer) turned by
    /// hand, pixel by pixel: what the expert must see.
    fn turned_by_hand(xrgb: &[u8], w: u32, h: u32, r: Rotation) -> Vec<u8> {
        let (uw, uh) = r.upright_size(w, h);
        let mut out = Vec::with_capacity(xrgb.len());
        for y in 0..uh {
            for x in 0..uw {
                let (bx, by) = r.to_buffer(x, y, w, h);
                let i = (by * w + bx) as usize * 4;
                out.extend_from_slice(&xrgb[i..i + 4]);
            }
        }
        out
    }

    #[test]
    fn a_sideways_panel_is_sent_upright_and_changes_land_where_the_person_sees_them() {
        for format in PixelFormat::ALL {
            for rotation in Rotation::ALL {
                let (w, h) = (64 + 17, 64 * 2 + 5);
                let bpp = format.bytes_per_pixel();
                // Padded rows, as scanout buffers have.
                let pitch = w as usize * bpp + 24;
                let mut pixels: Vec<u8> = pattern(w, h * 2, 3)
                    .into_iter()
                    .take(pitch * h as usize)
                    .collect();
                let g = geometry(w, h, format);
                let flat = |px: &[u8]| Frame::new(px, g, pitch).unwrap().to_xrgb8888();
                let mut enc = Encoder::new();
                let mut fb = None;
                let first = enc
                    .encode_frame(
                        &Frame::new(&pixels, g, pitch).unwrap().rotated(rotation),
                        false,
                    )
                    .unwrap();
                let info = first.screen.unwrap();
                let (uw, uh) = rotation.upright_size(w, h);
                assert_eq!((u32::from(info.width), u32::from(info.height)), (uw, uh));
                apply(&mut fb, &first);
                let expected = turned_by_hand(&flat(&pixels), w, h, rotation);
                assert_eq!(
                    fb.as_ref().unwrap().normalized(),
                    expected,
                    "{format} {rotation}"
                );
                // The person's top-left corner, wherever it is in the buffer.
                let (bx, by) = rotation.to_buffer(0, 0, w, h);
                pixels[by as usize * pitch + bx as usize * bpp] ^= 0x5a;
                let frame = Frame::new(&pixels, g, pitch).unwrap().rotated(rotation);
                let u = enc.encode_frame(&frame, false).unwrap();
                let r = &u.parts[0].rects[0];
                assert_eq!((r.x, r.y, r.w, r.h), (0, 0, 1, 1), "{format} {rotation}");
                apply(&mut fb, &u);
                assert_eq!(
                    fb.as_ref().unwrap().normalized(),
                    turned_by_hand(&flat(&pixels), w, h, rotation),
                    "{format} {rotation}"
                );
                assert!(enc.encode_frame(&frame, false).is_none());
            }
        }
    }

    #[test]
    fn single_pixel_change_in_every_tile_and_edges_is_sent_exactly() {
        for format in PixelFormat::ALL {
            single_pixel_changes(format);
        }
    }

    fn single_pixel_changes(format: PixelFormat) {
        // Odd sizes: the last tile column and row are partial.
        let (w, h) = (64 * 3 + 17, 64 * 2 + 5);
        let bpp = format.bytes_per_pixel();
        let pitch = w as usize * bpp;
        // Any bytes are valid pixels in every format.
        let mut pixels: Vec<u8> = pattern(w, h, 1)
            .into_iter()
            .take(pitch * h as usize)
            .collect();
        let g = geometry(w, h, format);
        let mut enc = Encoder::new();
        let mut fb = None;
        let first = enc
            .encode_frame(&Frame::new(&pixels, g, pitch).unwrap(), false)
            .unwrap();
        assert!(first.screen.is_some());
        apply(&mut fb, &first);
        let mut points = Vec::new();
        for ty in 0..(h as usize).div_ceil(TILE) {
            for tx in 0..(w as usize).div_ceil(TILE) {
                for (dx, dy) in [(0, 0), (TILE - 1, TILE - 1), (7, 33)] {
                    points.push((tx * TILE + dx, ty * TILE + dy));
                }
            }
        }
        points.extend([
            (w as usize - 1, 0),
            (0, h as usize - 1),
            (w as usize - 1, h as usize - 1),
        ]);
        for (x, y) in points {
            if x >= w as usize || y >= h as usize {
                continue;
            }
            // Flip bits that every format shows (not the X/alpha byte).
            pixels[y * pitch + x * bpp] ^= 0x5a;
            let frame = Frame::new(&pixels, g, pitch).unwrap();
            let u = enc
                .encode_frame(&frame, false)
                .unwrap_or_else(|| panic!("{format}: change at {x},{y} not seen"));
            assert!(u.screen.is_none());
            // Damage is local: one rectangle, exactly that pixel.
            assert_eq!(u.stats.rects, 1, "{format} at {x},{y}");
            let r = &u.parts[0].rects[0];
            assert_eq!((r.x, r.y, r.w, r.h), (x as u16, y as u16, 1, 1), "{format}");
            apply(&mut fb, &u);
            assert_eq!(
                fb.as_ref().unwrap().normalized(),
                frame.to_xrgb8888(),
                "{format} at {x},{y}"
            );
            assert!(enc.encode_frame(&frame, false).is_none());
        }
    }

    #[test]
    fn probing_finds_thin_changes_within_full_every_checks() {
        let (w, h) = (200u32, 100u32);
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let mut px = pattern(w, h, 4);
        let probing = Probing::default();
        let mut enc = Encoder::with_probing(probing);
        let mut fb = None;
        apply(
            &mut fb,
            &enc.encode_frame(&Frame::new(&px, g, 800).unwrap(), false)
                .unwrap(),
        );
        // A tall change is found at the first check.
        for y in 10..40 {
            px[y * 800 + 4] ^= 1;
        }
        let u = enc
            .encode_frame(&Frame::new(&px, g, 800).unwrap(), false)
            .unwrap();
        apply(&mut fb, &u);
        // A one-pixel change may be missed by probes, but not for long.
        px[57 * 800 + 8] ^= 0x40;
        let frame = Frame::new(&px, g, 800).unwrap();
        let found =
            (1..=probing.full_every).find_map(|n| enc.encode_frame(&frame, false).map(|u| (n, u)));
        let (_, u) = found.expect("found within full_every checks");
        apply(&mut fb, &u);
        assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        // A full request never relies on probes.
        let mut enc = Encoder::with_probing(probing);
        let _ = enc.encode_frame(&frame, false);
        assert!(enc.encode_frame(&frame, true).is_some());
        drop(frame);
        // Nor does a page flip: another buffer on screen with a one-pixel
        // change is found at the first check, each time; the same buffer
        // again is probed as before.
        let mut enc = Encoder::with_probing(probing);
        let mut fb = None;
        for (i, id) in [7u32, 8, 7, 8, 7].into_iter().enumerate() {
            px[(60 + i) * 800 + 12] ^= 0x11;
            let frame = Frame::new(&px, g, 800).unwrap().with_buffer(id);
            let u = enc
                .encode_frame(&frame, false)
                .expect("a flip is seen at once");
            apply(&mut fb, &u);
            assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        }
        let frame = Frame::new(&px, g, 800).unwrap().with_buffer(7);
        assert!(
            enc.encode_frame(&frame, false).is_none(),
            "no flip, no change"
        );
    }

    #[test]
    fn vertical_scroll_becomes_a_copy() {
        let (w, h) = (256u32, 300u32);
        let list = pattern(w, 2000, 9);
        let row = w as usize * 4;
        // A static header (40 rows), then a list window that scrolls.
        let screen = |offset: usize| {
            let mut p = vec![0x20u8; row * h as usize];
            for y in 40..h as usize {
                let src = (y - 40 + offset) * row;
                p[y * row..(y + 1) * row].copy_from_slice(&list[src..src + row]);
            }
            p
        };
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let mut enc = Encoder::new();
        let mut fb = None;
        let s0 = screen(0);
        apply(
            &mut fb,
            &enc.encode_frame(&Frame::new(&s0, g, row).unwrap(), false)
                .unwrap(),
        );
        for (step, offset) in [20usize, 40, 25, 5, 200].into_iter().enumerate() {
            let s = screen(offset);
            let frame = Frame::new(&s, g, row).unwrap();
            let u = enc.encode_frame(&frame, false).unwrap();
            apply(&mut fb, &u);
            assert_eq!(
                fb.as_ref().unwrap().normalized(),
                frame.to_xrgb8888(),
                "step {step}"
            );
            if step < 4 {
                assert_eq!(u.stats.copy, 1, "step {step}: {:?}", u.stats);
                assert!(matches!(
                    u.parts[0].rects[0].encoding,
                    Encoding::Copy { .. }
                ));
                // Only the newly exposed rows are sent as pixels.
                let moved = offset.abs_diff([0, 20, 40, 25, 5][step]);
                assert!(
                    u.stats.pixels - (h as usize - 40 - moved) * w as usize <= moved * w as usize
                );
            }
        }
    }

    /// A browser's layout: a fixed header, a fixed sidebar whose edge is not
    /// on a tile boundary and whose highlight moves, a main area that
    /// scrolls, and a scrollbar whose thumb moves by another amount. The
    /// main area still goes as one copy per update, cut exactly at the
    /// sidebar's and the scrollbar's edges.
    #[test]
    fn a_scroll_between_a_changing_sidebar_and_a_moving_scrollbar_is_a_copy() {
        let (w, h) = (640usize, 400usize);
        let (side, bar, head) = (157usize, 627usize, 37usize);
        let page = pattern(w as u32, 3000, 4);
        let side_px = pattern(w as u32, h as u32, 5);
        let screen = |offset: usize, step: usize| {
            let mut p = vec![0x30u8; w * 4 * h];
            for y in 0..h {
                let row = &mut p[y * w * 4..(y + 1) * w * 4];
                if y < head {
                    continue;
                }
                row[..side * 4].copy_from_slice(&side_px[y * w * 4..(y * w + side) * 4]);
                if (100 + step * 20..120 + step * 20).contains(&y) {
                    row[..side * 4].fill(0xc0);
                }
                let src = (y - head + offset) * w * 4;
                row[side * 4..bar * 4].copy_from_slice(&page[src + side * 4..src + bar * 4]);
                let thumb = (head + step * 3..head + 60 + step * 3).contains(&y);
                row[bar * 4..].fill(if thumb { 0x80 } else { 0xf0 });
            }
            p
        };
        let g = geometry(w as u32, h as u32, PixelFormat::Xrgb8888);
        let mut enc = Encoder::new();
        let mut fb = None;
        let s0 = screen(0, 0);
        apply(
            &mut fb,
            &enc.encode_frame(&Frame::new(&s0, g, w * 4).unwrap(), false)
                .unwrap(),
        );
        for step in 1..6 {
            let s = screen(step * 21, step);
            let frame = Frame::new(&s, g, w * 4).unwrap();
            let u = enc.encode_frame(&frame, false).unwrap();
            apply(&mut fb, &u);
            assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
            let copies: Vec<&Rect> = u.parts[0]
                .rects
                .iter()
                .filter(|r| matches!(r.encoding, Encoding::Copy { .. }))
                .collect();
            assert_eq!(copies.len(), 1, "step {step}: {:?}", u.stats);
            let c = copies[0];
            assert_eq!((c.x as usize, c.x as usize + c.w as usize), (side, bar));
            assert_eq!(c.h as usize, h - head - 21);
            // Pixels: the rows that scrolled in, the sidebar's highlight
            // (two bands of 20 rows) and the scrollbar.
            let sent = u.stats.pixels - c.w as usize * c.h as usize;
            let most = 21 * (bar - side) + 40 * side + (h - head) * (w - bar);
            assert!(
                sent <= most,
                "step {step}: {sent} pixels sent, at most {most}"
            );
        }
    }

    /// The seq of the update that brought the expert's framebuffer to where
    /// it is.
    fn seq_of(u: &EncodedUpdate) -> u32 {
        u.parts.last().unwrap().seq
    }

    #[test]
    fn a_view_that_went_wrong_is_found_and_healed_band_by_band() {
        for format in PixelFormat::ALL {
            let (w, h) = (200u32, 130u32);
            let bpp = format.bytes_per_pixel();
            let pitch = w as usize * bpp;
            let pixels: Vec<u8> = pattern(w, h, 3)
                .into_iter()
                .take(pitch * h as usize)
                .collect();
            let g = geometry(w, h, format);
            let frame = Frame::new(&pixels, g, pitch).unwrap();
            let mut enc = Encoder::with_probing(Probing::default());
            let mut fb = None;
            let u = enc.encode_frame(&frame, false).unwrap();
            let generation = u.screen.unwrap().generation;
            let seq = seq_of(&u);
            apply(&mut fb, &u);
            let view = fb.as_mut().unwrap();
            // A view that matches: everything compared, nothing differs.
            let ok = enc.check_view(&view.view_report(generation, seq));
            assert_eq!(ok.compared as usize, view_bands(h as u16), "{format:?}");
            assert_eq!((ok.differing, ok.stale), (0, false), "{format:?}");
            assert!(enc.encode_frame(&frame, false).is_none(), "nothing to heal");

            // Two pixels of the expert's copy go wrong (rows 5 and 100):
            // nothing on the device changed, so only the check can find it.
            for (x, y) in [(7u16, 5u16), (199, 100)] {
                view.apply_rect(&Rect {
                    x,
                    y,
                    w: 1,
                    h: 1,
                    encoding: Encoding::Solid(0x00ab_cdef),
                })
                .unwrap();
            }
            assert_ne!(view.normalized(), frame.to_xrgb8888());
            let found = enc.check_view(&view.view_report(generation, seq));
            assert_eq!(found.differing, 2, "{format:?}: {found:?}");
            let heal = enc
                .encode_frame(&frame, false)
                .expect("the bands are sent again");
            // Only the two bands, not the screen.
            let band = shoulder_proto::fb::view_band_rows(h as u16);
            assert_eq!(heal.stats.pixels, 2 * band * w as usize, "{format:?}");
            apply(&mut fb, &heal);
            let view = fb.as_ref().unwrap();
            assert_eq!(view.normalized(), frame.to_xrgb8888(), "{format:?}");
            let again = enc.check_view(&view.view_report(generation, seq_of(&heal)));
            assert_eq!(again.differing, 0, "{format:?}");
            assert!(enc.encode_frame(&frame, false).is_none());
        }
    }

    #[test]
    fn a_view_report_is_compared_only_where_the_expert_is_up_to_date() {
        let (w, h) = (64u32, 128u32);
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let pitch = w as usize * 4;
        let mut pixels = pattern(w, h, 5);
        let mut enc = Encoder::new();
        let mut fb = None;
        let first = enc
            .encode_frame(&Frame::new(&pixels, g, pitch).unwrap(), false)
            .unwrap();
        let generation = first.screen.unwrap().generation;
        apply(&mut fb, &first);
        let report = fb.as_ref().unwrap().view_report(generation, seq_of(&first));
        // The device sends an update for rows 0..10 that the expert has not
        // applied when its report (for the first update) arrives.
        pixels[..pitch * 10].iter_mut().for_each(|b| *b ^= 0x55);
        let later = enc
            .encode_frame(&Frame::new(&pixels, g, pitch).unwrap(), false)
            .unwrap();
        let c = enc.check_view(&report);
        // Rows 0..10 are in the first 5 bands of 2 rows: not compared, and
        // not found wrong although the report's hashes differ there.
        assert_eq!(c.differing, 0, "{c:?}");
        assert_eq!(c.compared as usize, view_bands(h as u16) - 5, "{c:?}");
        // A report for another screen or from the future compares nothing.
        let mut other = report.clone();
        other.generation += 1;
        assert!(enc.check_view(&other).stale);
        let mut future = report.clone();
        future.seq = seq_of(&later) + 1;
        assert!(enc.check_view(&future).stale);
        let mut short = report;
        short.hashes.pop();
        assert!(enc.check_view(&short).stale);
        // Nothing was forced by any of them.
        assert!(
            enc.encode_frame(&Frame::new(&pixels, g, pitch).unwrap(), false)
                .is_none()
        );
    }

    #[test]
    fn solid_and_full_and_geometry_change() {
        let g = geometry(100, 50, PixelFormat::Rgb565);
        let mut enc = Encoder::new();
        let mut fb = None;
        let px = [0x1fu8, 0xf8].repeat(100 * 50);
        let frame = Frame::new(&px, g, 200).unwrap();
        let u = enc.encode_frame(&frame, false).unwrap();
        assert_eq!(u.stats.solid, u.stats.rects);
        assert_eq!(u.screen.unwrap().generation, 1);
        apply(&mut fb, &u);
        assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        assert!(enc.encode_frame(&frame, false).is_none());
        let again = enc.encode_frame(&frame, true).unwrap();
        assert!(again.screen.is_none());
        assert_eq!(again.stats.pixels, 100 * 50);
        // A mode change: new screen info with the next generation.
        let g2 = geometry(60, 40, PixelFormat::Xrgb8888);
        let px2 = pattern(60, 40, 3);
        let u = enc
            .encode_frame(&Frame::new(&px2, g2, 240).unwrap(), false)
            .unwrap();
        assert_eq!(u.screen.unwrap().generation, 2);
        assert_eq!(
            (u.screen.unwrap().width, u.screen.unwrap().height),
            (60, 40)
        );
        apply(&mut fb, &u);
        assert_eq!(
            fb.as_ref().unwrap().normalized(),
            Frame::new(&px2, g2, 240).unwrap().to_xrgb8888()
        );
    }

    #[test]
    fn padded_pitch_is_respected() {
        let (w, h, pitch) = (70u32, 20u32, 70 * 4 + 36);
        let mut px = vec![0xeeu8; pitch * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                px[y * pitch + x * 4..y * pitch + x * 4 + 4]
                    .copy_from_slice(&[x as u8, y as u8, 3, 0]);
            }
        }
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let frame = Frame::new(&px, g, pitch).unwrap();
        let mut enc = Encoder::new();
        let mut fb = None;
        apply(&mut fb, &enc.encode_frame(&frame, false).unwrap());
        assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        drop(frame);
        // Padding changes are not screen changes.
        px[pitch - 1] = 1;
        assert!(
            enc.encode_frame(&Frame::new(&px, g, pitch).unwrap(), false)
                .is_none()
        );
    }

    fn stream_pieces(u: &EncodedUpdate) -> Vec<bool> {
        u.parts
            .iter()
            .flat_map(|p| &p.rects)
            .filter_map(|r| match r.encoding {
                Encoding::DeflateStream { restart, .. } => Some(restart),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_deflate_stream_refers_back_and_restarts_with_every_full_update() {
        let (w, h) = (400u32, 120u32);
        let g = geometry(w, h, PixelFormat::Xrgb8888);
        let pitch = w as usize * 4;
        // A clock: the same few glyphs (busy, two-coloured) come and go.
        let glyph = |d: usize, x: usize, y: usize| ((x * 7 + y * 3 + d * 5) % 11 < 4) as u8;
        let clock = |t: usize| {
            let mut px = vec![0xeeu8; pitch * h as usize];
            for (i, d) in [t / 10 % 6, t % 10].into_iter().enumerate() {
                for y in 20..100 {
                    for x in 0..60 {
                        let o = y * pitch + (100 + i * 70 + x) * 4;
                        let v = glyph(d, x, y) * 0xaa;
                        px[o..o + 3].copy_from_slice(&[v, v / 2, 0x30]);
                    }
                }
            }
            px
        };
        let mut per_rect = Encoder::new();
        per_rect.set_compression(Compression::Deflate);
        let mut enc = Encoder::new();
        enc.set_compression(Compression::DeflateStream);
        let (mut fb, mut fb_rects) = (None, None);
        let (mut bytes, mut bytes_rects) = (0, 0);
        for t in 0..40 {
            let px = clock(t);
            let frame = Frame::new(&px, g, pitch).unwrap();
            let u = enc.encode_frame(&frame, false).unwrap();
            let restarts = stream_pieces(&u);
            assert!(!restarts.is_empty());
            // Only the first piece of the first update restarts.
            assert_eq!(restarts[0], t == 0, "update {t}");
            assert!(restarts[1..].iter().all(|r| !r));
            apply(&mut fb, &u);
            assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
            let v = per_rect.encode_frame(&frame, false).unwrap();
            apply(&mut fb_rects, &v);
            if t >= 10 {
                // Every digit was seen once by now.
                bytes += u.stats.payload_bytes;
                bytes_rects += v.stats.payload_bytes;
            }
        }
        assert!(
            bytes * 2 < bytes_rects,
            "digits seen before cost back-references: {bytes} bytes against {bytes_rects}"
        );
        // The expert's copy broke (a decoder fault, a lost piece): it asks
        // for everything, and that update starts the stream anew, so a
        // fresh framebuffer decodes it and what follows.
        let px = clock(41);
        let frame = Frame::new(&px, g, pitch).unwrap();
        let u = enc.encode_frame(&frame, true).unwrap();
        assert!(stream_pieces(&u)[0], "the stream restarts");
        let mut fresh = Some(Framebuffer::new(&enc.screen_info().unwrap()).unwrap());
        apply(&mut fresh, &u);
        let px = clock(42);
        let frame = Frame::new(&px, g, pitch).unwrap();
        let u = enc.encode_frame(&frame, false).unwrap();
        assert!(stream_pieces(&u).iter().all(|r| !r));
        apply(&mut fresh, &u);
        assert_eq!(fresh.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        // A reset (a new session) starts over too, with new screen info.
        enc.reset();
        let u = enc.encode_frame(&frame, false).unwrap();
        assert!(u.screen.is_some());
        assert!(stream_pieces(&u)[0], "the stream restarts");
    }

    /// A kiosk screen with a photograph: flat background, smooth colours
    /// with grain at (64, 32) 192×128, shifted up by `scroll` rows.
    fn with_photo(w: usize, h: usize, seed: usize, scroll: usize) -> Vec<u8> {
        let mut px = vec![0xf0u8; w * h * 4];
        for y in 32..160 {
            let sy = y + scroll;
            for x in 64..256 {
                let grain =
                    (((x * 7919) ^ (sy * 104_729) ^ seed).wrapping_mul(2_654_435_761) >> 29) & 7;
                let i = (y * w + x) * 4;
                px[i] = (40 + x / 2 + sy / 4 + grain) as u8;
                px[i + 1] = (60 + sy / 2 + seed % 50 + grain) as u8;
                px[i + 2] = (100 + (x + sy) / 8 + grain) as u8;
            }
        }
        px
    }

    #[test]
    fn photographs_go_lossy_and_are_made_exact_once_still() {
        use crate::lossy::Lossy;
        use std::time::Duration;
        let (w, h) = (320usize, 200usize);
        let g = geometry(w as u32, h as u32, PixelFormat::Xrgb8888);
        let budget = 2 * TILE * TILE;
        let after = Duration::from_millis(300);
        let mut enc = Encoder::new();
        enc.set_compression(Compression::DeflateStream);
        enc.set_lossy(Some(Lossy {
            quality: 50,
            refine_after: after,
            refine_pixels: budget,
            exact_below_bytes: 0,
        }));
        let ms = |n: u64| Duration::from_millis(n);
        let t0 = Instant::now();
        let mut fb = None;
        let px = with_photo(w, h, 1, 0);
        let frame = Frame::new(&px, g, w * 4).unwrap();
        let want = frame.to_xrgb8888();
        let u = enc.encode_frame_at(&frame, false, t0).unwrap();
        assert!(u.stats.jpeg > 0, "the photograph goes lossy: {:?}", u.stats);
        apply(&mut fb, &u);
        let view = fb.as_ref().unwrap().normalized();
        assert_ne!(view, want);
        let err: u64 = view
            .iter()
            .zip(&want)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        let mean = err as f64 / (w * h * 3) as f64;

        assert!(mean < 3.0, "a usable picture: mean error {mean:.1}");
        assert!(enc.approximate());
        // The expert's view check does not count the approximation as wrong.
        let report = fb.as_ref().unwrap().view_report(enc.generation, enc.seq);
        let check = enc.check_view(&report);
        assert_eq!(check.differing, 0, "{check:?}");
        // Not still for long enough yet: nothing to send.
        assert!(enc.encode_frame_at(&frame, false, t0 + ms(200)).is_none());
        // Due: refined a budget at a time, until exact and quiet.
        let mut t = t0 + after;
        let mut updates = 0;
        while let Some(u) = enc.encode_frame_at(&frame, false, t) {
            assert_eq!(u.stats.jpeg, 0);
            assert!(
                u.stats.refined > 0 && u.stats.pixels <= budget,
                "{:?}",
                u.stats
            );
            apply(&mut fb, &u);
            updates += 1;
            assert!(updates <= 20, "refinement never ends");
            t += ms(20);
        }
        assert!(updates >= 2, "the budget splits the refinement");
        assert_eq!(fb.as_ref().unwrap().normalized(), want);
        assert!(!enc.approximate());
        // A report the expert made of the approximation, arriving after the
        // refinement: those rows changed since, on the expert's side.
        let late = enc.check_view(&report);
        assert_eq!(late.differing, 0, "{late:?}");
        let now = fb.as_ref().unwrap().view_report(enc.generation, enc.seq);
        let check = enc.check_view(&now);
        assert_eq!(
            (check.compared as usize, check.differing),
            (view_bands(h as u16), 0)
        );

        // A new picture, then scrolled while still approximate: the copy
        // carries the approximation along, and it is refined too.
        let px = with_photo(w, h, 99, 0);
        let t1 = t + ms(1000);
        let u = enc
            .encode_frame_at(&Frame::new(&px, g, w * 4).unwrap(), false, t1)
            .unwrap();
        assert!(u.stats.jpeg > 0);
        apply(&mut fb, &u);
        let px = with_photo(w, h, 99, 24);
        let frame = Frame::new(&px, g, w * 4).unwrap();
        let u = enc.encode_frame_at(&frame, false, t1 + ms(50)).unwrap();
        assert!(u.stats.copy > 0, "the scroll is a copy: {:?}", u.stats);
        apply(&mut fb, &u);
        let mut t = t1 + ms(50) + after;
        let mut updates = 0;
        while let Some(u) = enc.encode_frame_at(&frame, false, t) {
            apply(&mut fb, &u);
            updates += 1;
            assert!(updates <= 20, "refinement never ends");
            t += ms(20);
        }
        assert_eq!(fb.as_ref().unwrap().normalized(), frame.to_xrgb8888());
        assert!(!enc.approximate());
    }
}
