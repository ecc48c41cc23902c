//! The scanout presenter: draw the banner into the buffer the display is
//! showing, and keep it there while another process owns the display.
//!
//! The kiosk app is normally DRM master, so nothing else can set a plane.
//! What any root process can do is map the framebuffer that is being
//! scanned out and write into it (linear buffers only). The app will paint
//! over the banner when it repaints that area, and a page-flipping app shows
//! a different buffer every frame, so the presenter is driven by a fast loop
//! ([`ScanoutPresenter::tick`], every 2–5 ms while a banner is up) that
//!
//! 1. asks the target which buffer is scanned out now (one cheap ioctl);
//! 2. if that buffer has not got the current banner, saves the pixels under
//!    the banner's regions and draws it;
//! 3. otherwise reads a sparse grid of probe pixels (a few hundred reads)
//!    and one stripe of every n-th row of the banner (about
//!    [`SCAN_BYTES_PER_TICK`], so all rows are compared every few ticks),
//!    the whole banner after [`BannerPresenter::refresh`], and redraws
//!    wherever the app painted over it, remembering the app's new pixels as
//!    the ones to restore;
//! 4. after `hide`, puts the saved pixels back wherever the banner is still
//!    intact (the app's next repaint would do the same; an app that never
//!    repaints gets its own pixels back), for each buffer the display shows
//!    within [`RESTORE_WINDOW`].
//!
//! The target is a small trait, [`ScanoutTarget`], implemented over DRM
//! (by the capture side, which already finds and maps the scanned-out
//! framebuffer) and over fbdev ([`super::fbdev`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::{BannerPresenter, PresentError};
use crate::layout::{Banner, Patch};
use crate::pixel::{PixelBuffer, PixelFormat, Surface};

/// Identifies one buffer the display can show: the DRM framebuffer id, or
/// for fbdev the pan offset. Stable while the buffer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u64);

/// Access to the buffers being scanned out, for [`ScanoutPresenter`].
///
/// Contract for implementations:
/// - [`current`](Self::current) is called on every tick while a banner is up
///   (every 2–5 ms) and must be cheap: re-query the plane's or CRTC's
///   framebuffer id (apps page-flip), nothing more.
/// - [`with_buffer`](Self::with_buffer) gives a writable view of the whole
///   buffer, mapped `PROT_READ | PROT_WRITE`; keep mappings cached per
///   buffer id, so calling it every tick costs no syscall. For dma-buf
///   mappings bracket `f` with `DMA_BUF_IOCTL_SYNC` (start/end, read+write).
///   Return `Ok(None)` when that buffer no longer exists.
/// - [`flush`](Self::flush) is called after the presenter wrote to a buffer;
///   implement it where writes need a nudge to reach the screen.
pub trait ScanoutTarget {
    /// The buffer scanned out now, or `None` when the display shows nothing.
    fn current(&mut self) -> Result<Option<BufferId>, PresentError>;

    /// Runs `f` on a writable view of buffer `id`.
    fn with_buffer<R>(
        &mut self,
        id: BufferId,
        f: impl FnOnce(&mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError>;

    /// Runs `f` on the buffer scanned out now, with its id; `Ok(None)` when
    /// the display shows nothing (or the app flipped in between). The
    /// presenter calls only this on each tick; override it when one call
    /// can find and map the buffer (saves an ioctl per tick).
    fn with_current<R>(
        &mut self,
        f: impl FnOnce(BufferId, &mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let Some(id) = self.current()? else {
            return Ok(None);
        };
        self.with_buffer(id, |s| f(id, s))
    }

    /// The presenter wrote `rects` of buffer `id`.
    fn flush(&mut self, _id: BufferId, _rects: &[Rectangle]) -> Result<(), PresentError> {
        Ok(())
    }
}

/// Bytes of banner rows compared with what was drawn on each tick, besides
/// the probes: every n-th row, a different stripe each tick, so a small
/// repaint (a clock, a caret) over the banner is found within a few ticks.
/// At 1080p a full pass over the strip takes 6 ticks (~20 ms), over a strip
/// and an open prompt about 32 (~100 ms), reading at most ~40 MB/s.
pub const SCAN_BYTES_PER_TICK: usize = 128 * 1024;

/// The stripe stride never exceeds this, so even a huge banner is fully
/// compared within 64 ticks (~200 ms).
pub const MAX_SCAN_STRIDE: u32 = 64;

/// After `hide`, buffers still showing the banner are restored when they
/// come on screen within this time; later the app has surely repainted.
pub const RESTORE_WINDOW: Duration = Duration::from_secs(2);

/// Buffers remembered at once: apps use two or three (double, triple
/// buffering); one spare for a buffer being replaced.
pub const MAX_TRACKED_BUFFERS: usize = 4;

/// Probe pixels read every tick, at most: a few microseconds even from
/// uncached (write-combined) memory, and enough to notice any repaint of a
/// sizeable part of the banner.
pub const MAX_PROBES: usize = 384;

/// The poll period the agent should run [`ScanoutPresenter::tick`] at while
/// a banner is up: a flip is answered within a fraction of a 60 Hz frame.
pub const TICK_INTERVAL: Duration = Duration::from_millis(3);

/// Counters of what the loop did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickStats {
    pub ticks: u64,
    pub drawn: u64,
    pub repaired: u64,
    pub restored: u64,
    /// Longest single tick, in microseconds.
    pub max_tick_us: u64,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing shown and nothing left to restore: the agent may stop ticking.
    Idle,
    /// The banner is intact on the current buffer.
    Unchanged,
    /// The banner was drawn on a buffer that did not have it (new buffer,
    /// flip, or new banner).
    Drawn,
    /// The app had painted over part of the banner; it was redrawn.
    Repaired,
    /// The banner was taken off the current buffer.
    Restored,
    /// The display shows nothing now.
    NoBuffer,
}

/// What one tick did on the buffer it looked at.
struct Step {
    id: BufferId,
    outcome: TickOutcome,
    dirty: Vec<Rectangle>,
    want: Option<Arc<Banner>>,
    verified: bool,
}

/// The pixels under one patch, saved before drawing over them.
#[derive(Debug)]
struct Saved {
    rows: Vec<u8>,
}

#[derive(Debug)]
struct Record {
    id: BufferId,
    /// The banner as drawn on this buffer (in the buffer's format).
    drawn: Arc<Banner>,
    saved: Vec<Saved>,
    last_used: u64,
}

/// Draws the banner into the scanned-out buffer of a [`ScanoutTarget`] and
/// keeps it there. See the module docs.
#[derive(Debug)]
pub struct ScanoutPresenter<T> {
    target: T,
    /// The banner to show, as given to `show`.
    banner: Option<Arc<Banner>>,
    /// The same converted to the buffers' format, when that differs.
    converted: Option<Arc<Banner>>,
    probes: Vec<(usize, u32, u32)>,
    records: Vec<Record>,
    last_id: Option<BufferId>,
    verify_due: bool,
    scan_stride: u32,
    scan_phase: u32,
    hidden_at: Option<Instant>,
    uses: u64,
    stats: TickStats,
}

impl<T: ScanoutTarget> ScanoutPresenter<T> {
    pub fn new(target: T) -> Self {
        Self {
            target,
            banner: None,
            converted: None,
            probes: Vec::new(),
            records: Vec::new(),
            last_id: None,
            verify_due: false,
            scan_stride: 1,
            scan_phase: 0,
            hidden_at: None,
            uses: 0,
            stats: TickStats::default(),
        }
    }

    pub fn target(&self) -> &T {
        &self.target
    }

    pub fn target_mut(&mut self) -> &mut T {
        &mut self.target
    }

    /// True while something is shown or left to restore: keep ticking.
    pub fn busy(&self) -> bool {
        self.banner.is_some() || !self.records.is_empty()
    }

    /// [`tick_at`](Self::tick_at) with the current time.
    pub fn tick(&mut self) -> Result<TickOutcome, PresentError> {
        let start = Instant::now();
        let outcome = self.tick_at(start);
        let us = start.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        self.stats.max_tick_us = self.stats.max_tick_us.max(us);
        outcome
    }

    /// What the loop did so far.
    pub fn stats(&self) -> TickStats {
        self.stats
    }

    /// One round of the loop: see the module docs. Call every
    /// [`TICK_INTERVAL`] while [`busy`](Self::busy).
    pub fn tick_at(&mut self, now: Instant) -> Result<TickOutcome, PresentError> {
        self.stats.ticks += 1;
        if !self.busy() {
            return Ok(TickOutcome::Idle);
        }
        if let Some(t) = self.hidden_at
            && now.saturating_duration_since(t) >= RESTORE_WINDOW
        {
            self.records.clear();
            self.hidden_at = None;
            return Ok(TickOutcome::Idle);
        }
        self.uses += 1;
        let uses = self.uses;
        let last_id = self.last_id;
        let verify_due = self.verify_due;
        let (stride, phase) = (self.scan_stride, self.scan_phase);
        self.scan_phase = (phase + 1) % stride.max(1);
        let banner = self.banner.clone();
        let converted = self.converted.clone();
        let probes = std::mem::take(&mut self.probes);
        let records = &mut self.records;
        let result = self
            .target
            .with_current(|id, s| -> Result<Step, PresentError> {
                let step = |outcome, dirty, want, verified| Step {
                    id,
                    outcome,
                    dirty,
                    want,
                    verified,
                };
                let Some(banner) = banner else {
                    // Hidden: restore this buffer if it still shows the banner.
                    let Some(pos) = records.iter().position(|r| r.id == id) else {
                        let outcome = if records.is_empty() {
                            TickOutcome::Idle
                        } else {
                            TickOutcome::Unchanged
                        };
                        return Ok(step(outcome, Vec::new(), None, false));
                    };
                    let rec = records.swap_remove(pos);
                    let dirty = if same_screen(&rec.drawn, s) {
                        restore(s, &rec)
                    } else {
                        Vec::new()
                    };
                    return Ok(step(TickOutcome::Restored, dirty, None, false));
                };
                if banner.layout.screen != s.size() {
                    return Err(PresentError::ScreenChanged {
                        width: s.width(),
                        height: s.height(),
                    });
                }
                let want = match &converted {
                    Some(c) if banner_format(c) == Some(s.format()) => c.clone(),
                    _ if banner_format(&banner) == Some(s.format())
                        || banner.patches.is_empty() =>
                    {
                        banner.clone()
                    }
                    _ => Arc::new(convert(&banner, s.format())?),
                };
                if !same_screen(&want, s) {
                    return Err(PresentError::Unsupported(
                        "the banner's patches do not fit the screen: render it with Renderer"
                            .into(),
                    ));
                }
                let verify = verify_due || last_id != Some(id);
                let pos = records.iter().position(|r| r.id == id);
                match pos {
                    Some(i) if Arc::ptr_eq(&records[i].drawn, &want) => {
                        let rec = &mut records[i];
                        rec.last_used = uses;
                        if !verify
                            && !probes_differ(s, &rec.drawn, &probes)
                            && !stripe_differs(s, &rec.drawn, stride, phase)
                        {
                            return Ok(step(TickOutcome::Unchanged, Vec::new(), Some(want), false));
                        }
                        let dirty = repair(s, rec);
                        let outcome = if dirty.is_empty() {
                            TickOutcome::Unchanged
                        } else {
                            TickOutcome::Repaired
                        };
                        Ok(step(outcome, dirty, Some(want), true))
                    }
                    Some(i) => {
                        // This buffer shows an older banner: swap it for the new
                        // one without showing the app in between.
                        let (saved, dirty) = transition(s, &records[i], &want);
                        records[i] = Record {
                            id,
                            drawn: want.clone(),
                            saved,
                            last_used: uses,
                        };
                        Ok(step(TickOutcome::Drawn, dirty, Some(want), true))
                    }
                    None => {
                        let saved = draw(s, &want);
                        if records.len() >= MAX_TRACKED_BUFFERS
                            && let Some(lru) = records
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, r)| r.last_used)
                                .map(|(i, _)| i)
                        {
                            records.swap_remove(lru);
                        }
                        records.push(Record {
                            id,
                            drawn: want.clone(),
                            saved,
                            last_used: uses,
                        });
                        let dirty = want.patches.iter().map(|p| p.rect).collect();
                        Ok(step(TickOutcome::Drawn, dirty, Some(want), true))
                    }
                }
            });
        self.probes = probes;
        let step = match result? {
            Some(step) => step?,
            None => {
                // The display shows nothing, or the app flipped while we
                // looked: next tick. Records stay (a vanished buffer's record
                // ages out: least recently used, or the restore window).
                self.last_id = None;
                return Ok(TickOutcome::NoBuffer);
            }
        };
        let Step {
            id,
            outcome,
            dirty,
            want,
            verified,
        } = step;
        self.last_id = Some(id);
        if let (Some(want), Some(banner)) = (want, &self.banner)
            && !Arc::ptr_eq(&want, banner)
        {
            self.converted = Some(want);
        }
        if verified {
            self.verify_due = false;
        }
        match outcome {
            TickOutcome::Drawn => self.stats.drawn += 1,
            TickOutcome::Repaired => self.stats.repaired += 1,
            TickOutcome::Restored => self.stats.restored += 1,
            _ => {}
        }
        if !dirty.is_empty() {
            self.target.flush(id, &dirty)?;
        }
        Ok(outcome)
    }
}

/// The banner was rendered for this surface's size, and every patch lies
/// inside it with pixels of its rectangle's size (a hand-made `Banner` might
/// not: then it is refused rather than written out of bounds).
fn same_screen(banner: &Banner, s: &Surface<'_>) -> bool {
    let bounds = s.bounds();
    banner.layout.screen == s.size()
        && banner.patches.iter().all(|p| {
            bounds.intersection(&p.rect) == p.rect
                && p.pixels.size() == p.rect.size
                && p.pixels.format().bytes_per_pixel() == s.format().bytes_per_pixel()
        })
}

fn banner_format(b: &Banner) -> Option<PixelFormat> {
    b.patches.first().map(|p| p.pixels.format())
}

fn convert(b: &Banner, format: PixelFormat) -> Result<Banner, PresentError> {
    let mut patches = Vec::with_capacity(b.patches.len());
    for p in &b.patches {
        let mut pixels = PixelBuffer::new(p.pixels.width(), p.pixels.height(), format)
            .map_err(|e| PresentError::Unsupported(e.to_string()))?;
        crate::layout::blit(&p.pixels, Point::zero(), &mut pixels.surface());
        patches.push(Patch {
            rect: p.rect,
            pixels,
        });
    }
    Ok(Banner {
        layout: b.layout.clone(),
        patches,
    })
}

/// Sparse probe points: up to [`MAX_PROBES`] spread over the patches in
/// proportion to their area, on a grid offset from the edges.
fn make_probes(b: &Banner) -> Vec<(usize, u32, u32)> {
    let total: u64 = b
        .patches
        .iter()
        .map(|p| p.rect.size.width as u64 * p.rect.size.height as u64)
        .sum();
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    for (i, p) in b.patches.iter().enumerate() {
        let (w, h) = (p.rect.size.width, p.rect.size.height);
        let share = ((MAX_PROBES as u64 * w as u64 * h as u64) / total).max(1);
        // A grid of cols × rows ≈ share with the patch's aspect ratio.
        let cols = ((share as f64 * w as f64 / h as f64).sqrt().round() as u32).clamp(1, w);
        let rows = ((share as u32) / cols).clamp(1, h);
        for r in 0..rows {
            for c in 0..cols {
                let x = (2 * c + 1) * w / (2 * cols);
                let y = (2 * r + 1) * h / (2 * rows);
                out.push((i, x.min(w - 1), y.min(h - 1)));
            }
        }
    }
    out
}

fn probes_differ(s: &Surface<'_>, drawn: &Banner, probes: &[(usize, u32, u32)]) -> bool {
    if probes.is_empty() {
        return true;
    }
    let bpp = s.format().bytes_per_pixel();
    probes.iter().any(|&(i, x, y)| {
        let Some(p) = drawn.patches.get(i) else {
            return true;
        };
        let want = &p.pixels.row(y)[x as usize * bpp..(x as usize + 1) * bpp];
        let sx = p.rect.top_left.x as u32 + x;
        let sy = p.rect.top_left.y as u32 + y;
        s.span(sx, sy, 1) != want
    })
}

/// Whether any row `phase, phase + stride, …` of any patch differs from
/// what was drawn (whole-row compares: memcmp speed).
fn stripe_differs(s: &Surface<'_>, drawn: &Banner, stride: u32, phase: u32) -> bool {
    drawn.patches.iter().any(|p| {
        let (x, y, w) = (
            p.rect.top_left.x as u32,
            p.rect.top_left.y as u32,
            p.rect.size.width,
        );
        (phase..p.rect.size.height)
            .step_by(stride.max(1) as usize)
            .any(|r| s.span(x, y + r, w) != p.pixels.row(r))
    })
}

/// The stride that keeps a stripe within [`SCAN_BYTES_PER_TICK`].
fn scan_stride(b: &Banner) -> u32 {
    let bytes: usize = b.patches.iter().map(|p| p.pixels.bytes().len()).sum();
    (bytes.div_ceil(SCAN_BYTES_PER_TICK) as u32).clamp(1, MAX_SCAN_STRIDE)
}

/// Saves what is under each patch and draws the banner. The banner was
/// rendered for this screen size, so every patch lies inside the surface.
fn draw(s: &mut Surface<'_>, b: &Banner) -> Vec<Saved> {
    let bpp = s.format().bytes_per_pixel();
    b.patches
        .iter()
        .map(|p| {
            let (x, y, w) = (
                p.rect.top_left.x as u32,
                p.rect.top_left.y as u32,
                p.rect.size.width,
            );
            let mut rows = Vec::with_capacity(w as usize * bpp * p.rect.size.height as usize);
            for r in 0..p.rect.size.height {
                let dst = s.span_mut(x, y + r, w);
                rows.extend_from_slice(dst);
                dst.copy_from_slice(p.pixels.row(r));
            }
            Saved { rows }
        })
        .collect()
}

/// Replaces the banner `old` shows on this buffer by `new`. Patches at the
/// same place (the usual case: the countdown or the clock ticked) are
/// overwritten in place, keeping what was saved under them (updated where the
/// app painted since); the others are restored first, then the new ones
/// drawn. Nothing flashes: no pixel shows the app between two banners.
fn transition(s: &mut Surface<'_>, old: &Record, new: &Banner) -> (Vec<Saved>, Vec<Rectangle>) {
    let bpp = s.format().bytes_per_pixel();
    let mut dirty = Vec::new();
    let same = |r: &Rectangle| new.patches.iter().position(|p| p.rect == *r);
    // 1. Take off old patches that have no twin in the new banner.
    for (p, saved) in old.drawn.patches.iter().zip(&old.saved) {
        if same(&p.rect).is_none() {
            restore_patch(s, p, saved, bpp);
            dirty.push(p.rect);
        }
    }
    // 2. Draw the new patches, carrying over what was under twins.
    let mut out = Vec::with_capacity(new.patches.len());
    for p in &new.patches {
        let twin = old
            .drawn
            .patches
            .iter()
            .zip(&old.saved)
            .find(|(o, _)| o.rect == p.rect);
        let (x, y, w) = (
            p.rect.top_left.x as u32,
            p.rect.top_left.y as u32,
            p.rect.size.width,
        );
        let row_len = w as usize * bpp;
        let mut rows = Vec::with_capacity(row_len * p.rect.size.height as usize);
        for r in 0..p.rect.size.height {
            let cur = s.span_mut(x, y + r, w);
            match twin {
                Some((o, saved)) => {
                    let drawn = o.pixels.row(r);
                    let under = &saved.rows[r as usize * row_len..(r as usize + 1) * row_len];
                    let start = rows.len();
                    rows.extend_from_slice(under);
                    if cur != drawn {
                        keep_app_pixels(cur, drawn, &mut rows[start..], bpp);
                    }
                }
                None => rows.extend_from_slice(cur),
            }
            cur.copy_from_slice(p.pixels.row(r));
        }
        out.push(Saved { rows });
        dirty.push(p.rect);
    }
    (out, dirty)
}

fn restore_patch(s: &mut Surface<'_>, p: &Patch, saved: &Saved, bpp: usize) {
    let (x, y, w) = (
        p.rect.top_left.x as u32,
        p.rect.top_left.y as u32,
        p.rect.size.width,
    );
    let row_len = w as usize * bpp;
    for r in 0..p.rect.size.height {
        let drawn = p.pixels.row(r);
        let under = &saved.rows[r as usize * row_len..(r as usize + 1) * row_len];
        let cur = s.span_mut(x, y + r, w);
        if cur == drawn {
            cur.copy_from_slice(under);
        } else {
            put_back_where_intact(cur, drawn, under, bpp);
        }
    }
}

/// `under[i] = cur[i]` wherever the app painted (`cur[i] != drawn[i]`).
/// Works on whole pixels as fixed-size arrays so it compiles to plain
/// word compares: this runs over the whole banner after every page flip.
fn keep_app_pixels(cur: &[u8], drawn: &[u8], under: &mut [u8], bpp: usize) {
    fn go<const N: usize>(cur: &[u8], drawn: &[u8], under: &mut [u8]) {
        let (c, _) = cur.as_chunks::<N>();
        let (d, _) = drawn.as_chunks::<N>();
        let (u, _) = under.as_chunks_mut::<N>();
        for ((c, d), u) in c.iter().zip(d).zip(u) {
            if c != d {
                *u = *c;
            }
        }
    }
    match bpp {
        2 => go::<2>(cur, drawn, under),
        _ => go::<4>(cur, drawn, under),
    }
}

/// `cur[i] = under[i]` wherever the banner is intact (`cur[i] == drawn[i]`).
fn put_back_where_intact(cur: &mut [u8], drawn: &[u8], under: &[u8], bpp: usize) {
    fn go<const N: usize>(cur: &mut [u8], drawn: &[u8], under: &[u8]) {
        let (c, _) = cur.as_chunks_mut::<N>();
        let (d, _) = drawn.as_chunks::<N>();
        let (u, _) = under.as_chunks::<N>();
        for ((c, d), u) in c.iter_mut().zip(d).zip(u) {
            if c == d {
                *c = *u;
            }
        }
    }
    match bpp {
        2 => go::<2>(cur, drawn, under),
        _ => go::<4>(cur, drawn, under),
    }
}

/// Puts the saved pixels back wherever the banner is still intact; pixels
/// the app has painted since are left alone. Returns the touched areas.
fn restore(s: &mut Surface<'_>, rec: &Record) -> Vec<Rectangle> {
    let bpp = s.format().bytes_per_pixel();
    for (p, saved) in rec.drawn.patches.iter().zip(&rec.saved) {
        restore_patch(s, p, saved, bpp);
    }
    rec.drawn.patches.iter().map(|p| p.rect).collect()
}

/// Redraws the banner where the app painted over it, keeping the app's new
/// pixels as the ones to restore later. Returns the patches that changed.
fn repair(s: &mut Surface<'_>, rec: &mut Record) -> Vec<Rectangle> {
    let bpp = s.format().bytes_per_pixel();
    let mut dirty = Vec::new();
    for (p, saved) in rec.drawn.patches.iter().zip(&mut rec.saved) {
        let (x, y, w) = (
            p.rect.top_left.x as u32,
            p.rect.top_left.y as u32,
            p.rect.size.width,
        );
        let row_len = w as usize * bpp;
        let mut changed = false;
        for r in 0..p.rect.size.height {
            let drawn = p.pixels.row(r);
            let cur = s.span_mut(x, y + r, w);
            if cur == drawn {
                continue;
            }
            changed = true;
            let under = &mut saved.rows[r as usize * row_len..(r as usize + 1) * row_len];
            keep_app_pixels(cur, drawn, under, bpp);
            cur.copy_from_slice(drawn);
        }
        if changed {
            dirty.push(p.rect);
        }
    }
    dirty
}

impl<T: ScanoutTarget> ScanoutPresenter<T> {
    /// [`BannerPresenter::show`] at a given time (tests use virtual time).
    pub fn show_at(
        &mut self,
        banner: Arc<Banner>,
        now: Instant,
    ) -> Result<TickOutcome, PresentError> {
        self.probes = make_probes(&banner);
        self.scan_stride = scan_stride(&banner);
        self.scan_phase = 0;
        self.banner = Some(banner);
        self.converted = None;
        self.hidden_at = None;
        self.tick_at(now)
    }

    /// [`BannerPresenter::hide`] at a given time.
    pub fn hide_at(&mut self, now: Instant) -> Result<TickOutcome, PresentError> {
        if self.banner.take().is_some() {
            self.converted = None;
            self.probes.clear();
            self.hidden_at = Some(now);
        }
        self.tick_at(now)
    }

    /// [`BannerPresenter::refresh`] at a given time.
    pub fn refresh_at(&mut self, now: Instant) -> Result<TickOutcome, PresentError> {
        self.verify_due = true;
        self.tick_at(now)
    }
}

impl<T: ScanoutTarget> BannerPresenter for ScanoutPresenter<T> {
    fn show(&mut self, banner: Arc<Banner>) -> Result<(), PresentError> {
        self.show_at(banner, Instant::now()).map(drop)
    }

    fn hide(&mut self) -> Result<(), PresentError> {
        self.hide_at(Instant::now()).map(drop)
    }

    fn refresh(&mut self) -> Result<(), PresentError> {
        self.refresh_at(Instant::now()).map(drop)
    }

    fn in_scanout(&self) -> bool {
        true
    }

    fn current(&self) -> Option<&Arc<Banner>> {
        self.banner.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Renderer, ScreenSpec, Style};
    use crate::view::{PromptView, StripMode, StripView, View};
    use embedded_graphics::pixelcolor::Rgb888;
    use shoulder_proto::msg::ConsentKind;
    use std::collections::HashMap;

    const W: u32 = 320;
    const H: u32 = 240;

    /// A display with several buffers, and an "app" that paints and flips.
    #[derive(Debug, Default)]
    struct FakeDisplay {
        buffers: HashMap<BufferId, PixelBuffer>,
        current: Option<BufferId>,
        flushes: usize,
        maps: usize,
        /// The next `with_buffer` finds the buffer gone (the app flipped
        /// between `current` and `with_buffer`).
        flip_race: bool,
    }

    impl FakeDisplay {
        fn new(format: PixelFormat, ids: &[u64]) -> Self {
            let mut d = Self::default();
            for &id in ids {
                let mut b = PixelBuffer::new(W, H, format).unwrap();
                app_paint(&mut b, id as u8);
                d.buffers.insert(BufferId(id), b);
            }
            d.current = ids.first().map(|&i| BufferId(i));
            d
        }
        fn buf(&mut self, id: u64) -> &mut PixelBuffer {
            self.buffers.get_mut(&BufferId(id)).unwrap()
        }
    }

    /// The app's picture: a gradient that differs per frame number.
    fn app_paint(b: &mut PixelBuffer, frame: u8) {
        let mut s = b.surface();
        for y in 0..H {
            for x in 0..W {
                let c = Rgb888::new(x as u8, y as u8, frame.wrapping_mul(37));
                let _ = s.draw_iter([Pixel(Point::new(x as i32, y as i32), c)]);
            }
        }
    }

    impl ScanoutTarget for FakeDisplay {
        fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
            Ok(self.current)
        }
        fn with_buffer<R>(
            &mut self,
            id: BufferId,
            f: impl FnOnce(&mut Surface<'_>) -> R,
        ) -> Result<Option<R>, PresentError> {
            self.maps += 1;
            if std::mem::take(&mut self.flip_race) {
                return Ok(None);
            }
            Ok(self.buffers.get_mut(&id).map(|b| f(&mut b.surface())))
        }
        fn flush(&mut self, _id: BufferId, _rects: &[Rectangle]) -> Result<(), PresentError> {
            self.flushes += 1;
            Ok(())
        }
    }

    fn renderer(format: PixelFormat) -> Renderer {
        Renderer::new(
            ScreenSpec {
                width: W,
                height: H,
                format,
            },
            Style::default(),
        )
        .unwrap()
    }

    fn strip_view(secs: u64, notice: Option<&str>) -> View {
        View {
            strip: Some(StripView {
                mode: StripMode::Controlling,
                expert: "Jane".into(),
                elapsed: Duration::from_secs(secs),
                stop_hotkey: "F12".into(),
                file: None,
            }),
            notice: notice.map(str::to_string),
            ..View::default()
        }
    }

    fn banner(view: &View) -> Arc<Banner> {
        Arc::new(renderer(PixelFormat::Xrgb8888).render(view).unwrap())
    }

    /// Whether `buf` shows `banner` exactly, everywhere it should.
    fn shows(buf: &PixelBuffer, banner: &Banner) -> bool {
        banner.patches.iter().all(|p| {
            (0..p.rect.size.height).all(|r| {
                (0..p.rect.size.width).all(|c| {
                    buf.pixel(p.rect.top_left.x as u32 + c, p.rect.top_left.y as u32 + r)
                        == p.pixels.pixel(c, r)
                })
            })
        })
    }

    #[test]
    fn shows_and_restores_on_a_single_buffer_app() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[7]));
        let original = p.target_mut().buf(7).clone();
        let b = banner(&strip_view(5, None));
        assert_eq!(p.show_at(b.clone(), t0).unwrap(), TickOutcome::Drawn);
        assert!(shows(p.target_mut().buf(7), &b));
        assert!(p.target().flushes >= 1, "writes are flushed");
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(3)).unwrap(),
            TickOutcome::Unchanged
        );
        assert_eq!(
            p.hide_at(t0 + Duration::from_millis(6)).unwrap(),
            TickOutcome::Restored
        );
        assert_eq!(
            p.target_mut().buf(7),
            &original,
            "app's pixels back exactly"
        );
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(9)).unwrap(),
            TickOutcome::Idle
        );
        assert!(!p.busy());
    }

    #[test]
    fn follows_page_flips_and_repaints() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1, 2]));
        let b = banner(&strip_view(5, None));
        p.show_at(b.clone(), t0).unwrap();
        // The app paints a new frame into buffer 2 and flips to it.
        let mut t = t0;
        for frame in 0..6u8 {
            let back = if frame % 2 == 0 { 2 } else { 1 };
            app_paint(p.target_mut().buf(back), frame + 10);
            p.target_mut().current = Some(BufferId(back));
            t += Duration::from_millis(33);
            let outcome = p.tick_at(t).unwrap();
            assert!(
                matches!(outcome, TickOutcome::Drawn | TickOutcome::Repaired),
                "frame {frame}: {outcome:?}"
            );
            assert!(shows(p.target_mut().buf(back), &b), "frame {frame}");
        }
        // After hide the current buffer gets the app's latest pixels back.
        let cur = p.target().current.unwrap().0;
        let mut expected = PixelBuffer::new(W, H, PixelFormat::Xrgb8888).unwrap();
        app_paint(&mut expected, 5 + 10);
        p.hide_at(t).unwrap();
        assert_eq!(p.target_mut().buf(cur), &expected);
    }

    #[test]
    fn a_repaint_over_the_banner_is_noticed_by_probes() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let b = banner(&strip_view(5, None));
        p.show_at(b.clone(), t0).unwrap();
        // The app repaints the whole screen in place (no flip).
        app_paint(p.target_mut().buf(1), 99);
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(3)).unwrap(),
            TickOutcome::Repaired,
            "probes see it on the next tick"
        );
        assert!(shows(p.target_mut().buf(1), &b));
        // Hiding restores the app's new picture, not the one from before.
        p.hide_at(t0 + Duration::from_millis(6)).unwrap();
        let mut expected = PixelBuffer::new(W, H, PixelFormat::Xrgb8888).unwrap();
        app_paint(&mut expected, 99);
        assert_eq!(p.target_mut().buf(1), &expected);
    }

    #[test]
    fn a_small_repaint_is_caught_by_refresh_or_the_row_scan() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let b = banner(&View {
            prompt: Some(PromptView {
                kind: ConsentKind::View,
                expert: "Jane".into(),
                how: "plant certificate".into(),
                says: None,
                seconds_left: 30,
                arming: false,
                help: None,
                file: None,
            }),
            ..strip_view(5, None)
        });
        p.show_at(b.clone(), t0).unwrap();
        assert!(p.scan_stride > 1, "this banner is scanned in stripes");
        // A 1x1 "caret blink" on row 3 of the strip, between probes.
        let blink = Rectangle::new(Point::new(1, 3), Size::new(1, 1));
        let red = Rgb888::new(1, 2, 3);
        let _ = p.target_mut().buf(1).fill_solid(&blink, red);
        assert_eq!(
            p.refresh_at(t0 + Duration::from_millis(3)).unwrap(),
            TickOutcome::Repaired,
            "the capture loop saw damage"
        );
        assert!(shows(p.target_mut().buf(1), &b));
        let _ = p.target_mut().buf(1).fill_solid(&blink, red);
        let outcomes: Vec<_> = (0..p.scan_stride)
            .map(|i| {
                p.tick_at(t0 + Duration::from_millis(6 + 3 * u64::from(i)))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| **o == TickOutcome::Repaired)
                .count(),
            1,
            "exactly one stripe holds row 3: {outcomes:?}"
        );
        assert!(shows(p.target_mut().buf(1), &b));
    }

    #[test]
    fn a_new_banner_replaces_the_old_one_cleanly() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let original = p.target_mut().buf(1).clone();
        let with_notice = banner(&strip_view(5, Some("Control stopped")));
        p.show_at(with_notice.clone(), t0).unwrap();
        assert!(shows(p.target_mut().buf(1), &with_notice));
        let plain = banner(&strip_view(6, None));
        assert_eq!(p.show_at(plain.clone(), t0).unwrap(), TickOutcome::Drawn);
        assert!(shows(p.target_mut().buf(1), &plain));
        // Where the notice was, the app's pixels are back.
        let notice = with_notice
            .layout
            .region(crate::layout::RegionKind::Notice)
            .unwrap();
        let probe = notice.center();
        assert_eq!(
            p.target_mut().buf(1).pixel(probe.x as u32, probe.y as u32),
            original.pixel(probe.x as u32, probe.y as u32)
        );
        p.hide_at(t0).unwrap();
        assert_eq!(p.target_mut().buf(1), &original);
    }

    #[test]
    fn a_ticking_clock_rewrites_in_place_and_keeps_the_saved_pixels() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let original = p.target_mut().buf(1).clone();
        p.show_at(banner(&strip_view(5, None)), t0).unwrap();
        // The app paints a dot under the strip meanwhile (single buffer).
        let dot = Rectangle::new(Point::new(2, 2), Size::new(2, 2));
        let _ = p.target_mut().buf(1).fill_solid(&dot, Rgb888::new(9, 9, 9));
        let next = banner(&strip_view(6, None));
        assert_eq!(p.show_at(next.clone(), t0).unwrap(), TickOutcome::Drawn);
        assert!(shows(p.target_mut().buf(1), &next));
        p.hide_at(t0).unwrap();
        let mut expected = original;
        let _ = expected.fill_solid(&dot, Rgb888::new(9, 9, 9));
        assert_eq!(
            p.target_mut().buf(1),
            &expected,
            "the dot survives, the rest is original"
        );
    }

    #[test]
    fn a_back_buffer_still_showing_the_banner_is_restored_when_shown() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1, 2]));
        let b = banner(&View {
            prompt: Some(PromptView {
                kind: ConsentKind::View,
                expert: "Jane".into(),
                how: "plant certificate".into(),
                says: None,
                seconds_left: 30,
                arming: false,
                help: None,
                file: None,
            }),
            ..View::default()
        });
        let (orig1, orig2) = (p.target_mut().buf(1).clone(), p.target_mut().buf(2).clone());
        p.show_at(b.clone(), t0).unwrap();
        p.target_mut().current = Some(BufferId(2)); // flip without repaint (buffer age)
        p.tick_at(t0 + Duration::from_millis(3)).unwrap();
        assert!(shows(p.target_mut().buf(2), &b));
        p.hide_at(t0 + Duration::from_millis(6)).unwrap();
        assert_eq!(p.target_mut().buf(2), &orig2);
        assert!(
            shows(p.target_mut().buf(1), &b),
            "not on screen, not touched yet"
        );
        assert!(p.busy(), "buffer 1 still to restore");
        p.target_mut().current = Some(BufferId(1));
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(9)).unwrap(),
            TickOutcome::Restored
        );
        assert_eq!(p.target_mut().buf(1), &orig1);
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(12)).unwrap(),
            TickOutcome::Idle
        );
    }

    #[test]
    fn a_flip_racing_the_restore_keeps_the_buffer_to_restore() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1, 2]));
        let orig1 = p.target_mut().buf(1).clone();
        p.show_at(banner(&strip_view(1, None)), t0).unwrap();
        p.target_mut().current = Some(BufferId(2));
        p.tick_at(t0).unwrap();
        p.hide_at(t0).unwrap(); // restores 2
        p.target_mut().current = Some(BufferId(1));
        p.target_mut().flip_race = true;
        assert_eq!(p.tick_at(t0).unwrap(), TickOutcome::NoBuffer);
        assert!(p.busy(), "buffer 1 is still to restore");
        assert_eq!(p.tick_at(t0).unwrap(), TickOutcome::Restored);
        assert_eq!(p.target_mut().buf(1), &orig1);
        assert_eq!(p.stats().restored, 2);
    }

    #[test]
    fn a_flip_racing_a_redraw_keeps_the_record() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let orig = p.target_mut().buf(1).clone();
        p.show_at(banner(&strip_view(1, None)), t0).unwrap();
        p.target_mut().flip_race = true;
        assert_eq!(p.refresh_at(t0).unwrap(), TickOutcome::NoBuffer);
        p.hide_at(t0).unwrap();
        assert_eq!(p.target_mut().buf(1), &orig, "still restorable");
    }

    #[test]
    fn forgets_unshown_buffers_after_the_restore_window() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1, 2]));
        p.show_at(banner(&strip_view(1, None)), t0).unwrap();
        p.target_mut().current = Some(BufferId(2));
        p.tick_at(t0).unwrap();
        p.hide_at(t0).unwrap();
        assert!(p.busy());
        assert_eq!(p.tick_at(t0 + RESTORE_WINDOW).unwrap(), TickOutcome::Idle);
        assert!(!p.busy());
    }

    #[test]
    fn draws_into_rgb565_buffers() {
        let t0 = Instant::now();
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Rgb565, &[1]));
        let original = p.target_mut().buf(1).clone();
        let b = banner(&strip_view(5, None));
        p.show_at(b.clone(), t0).unwrap();
        let expected = renderer(PixelFormat::Rgb565)
            .render(&strip_view(5, None))
            .unwrap();
        assert!(shows(p.target_mut().buf(1), &expected));
        assert_eq!(
            p.tick_at(t0 + Duration::from_millis(3)).unwrap(),
            TickOutcome::Unchanged
        );
        p.hide_at(t0 + Duration::from_millis(6)).unwrap();
        assert_eq!(p.target_mut().buf(1), &original);
    }

    #[test]
    fn a_mode_change_asks_for_a_new_render() {
        let mut d = FakeDisplay::new(PixelFormat::Xrgb8888, &[1]);
        d.buffers.insert(
            BufferId(1),
            PixelBuffer::new(640, 480, PixelFormat::Xrgb8888).unwrap(),
        );
        let mut p = ScanoutPresenter::new(d);
        let err = p
            .show_at(banner(&strip_view(1, None)), Instant::now())
            .unwrap_err();
        assert!(
            matches!(
                err,
                PresentError::ScreenChanged {
                    width: 640,
                    height: 480
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_banner_is_refused_not_written_out_of_bounds() {
        let mut p = ScanoutPresenter::new(FakeDisplay::new(PixelFormat::Xrgb8888, &[1]));
        let mut b = (*banner(&strip_view(1, None))).clone();
        b.patches[0].rect.top_left = Point::new(W as i32 - 5, 0);
        let err = p.show_at(Arc::new(b), Instant::now()).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }

    #[test]
    fn waits_while_the_display_shows_nothing() {
        let mut d = FakeDisplay::new(PixelFormat::Xrgb8888, &[1]);
        d.current = None;
        let mut p = ScanoutPresenter::new(d);
        let t0 = Instant::now();
        assert_eq!(
            p.show_at(banner(&strip_view(1, None)), t0).unwrap(),
            TickOutcome::NoBuffer
        );
        p.target_mut().current = Some(BufferId(1));
        assert_eq!(p.tick_at(t0).unwrap(), TickOutcome::Drawn);
    }

    #[test]
    fn probes_cover_every_patch_within_the_bound() {
        let b = banner(&View {
            strip: strip_view(1, Some("x")).strip,
            chat: Some("hello".into()),
            notice: Some("x".into()),
            ..View::default()
        });
        let probes = make_probes(&b);
        assert!(probes.len() <= MAX_PROBES + b.patches.len());
        for i in 0..b.patches.len() {
            assert!(probes.iter().any(|p| p.0 == i), "patch {i} has probes");
        }
    }
}
