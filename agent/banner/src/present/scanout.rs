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
//! 3. otherwise reads a sparse grid of probe pixels (a few hundred reads),
//!    and every [`VERIFY_INTERVAL`] or after [`BannerPresenter::refresh`]
//!    the whole regions, and redraws wherever the app painted over the
//!    banner, remembering the app's new pixels as the ones to restore;
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

    /// The presenter wrote `rects` of buffer `id`.
    fn flush(&mut self, _id: BufferId, _rects: &[Rectangle]) -> Result<(), PresentError> {
        Ok(())
    }
}

/// How often the whole banner area is compared with what was drawn, on top
/// of the probe pixels every tick: catches small repaints between probes at a
/// bounded cost (a full read of the regions four times a second).
pub const VERIFY_INTERVAL: Duration = Duration::from_millis(250);

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
    last_verify: Option<Instant>,
    hidden_at: Option<Instant>,
    uses: u64,
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
            last_verify: None,
            hidden_at: None,
            uses: 0,
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
        self.tick_at(Instant::now())
    }

    /// One round of the loop: see the module docs. Call every
    /// [`TICK_INTERVAL`] while [`busy`](Self::busy).
    pub fn tick_at(&mut self, now: Instant) -> Result<TickOutcome, PresentError> {
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
        let Some(id) = self.target.current()? else {
            self.last_id = None;
            return Ok(TickOutcome::NoBuffer);
        };
        let flipped = self.last_id != Some(id);
        self.last_id = Some(id);
        self.uses += 1;
        let uses = self.uses;

        let Some(banner) = self.banner.clone() else {
            // Hidden: restore this buffer if it still shows the banner.
            let Some(pos) = self.records.iter().position(|r| r.id == id) else {
                return Ok(if self.records.is_empty() {
                    TickOutcome::Idle
                } else {
                    TickOutcome::Unchanged
                });
            };
            let rec = self.records.swap_remove(pos);
            let dirty = self
                .target
                .with_buffer(id, |s| {
                    if same_screen(&rec.drawn, s) {
                        restore(s, &rec)
                    } else {
                        Vec::new()
                    }
                })?
                .unwrap_or_default();
            if !dirty.is_empty() {
                self.target.flush(id, &dirty)?;
            }
            return Ok(TickOutcome::Restored);
        };

        let verify = self.verify_due
            || flipped
            || self
                .last_verify
                .is_none_or(|t| now.saturating_duration_since(t) >= VERIFY_INTERVAL);
        let pos = self.records.iter().position(|r| r.id == id);
        let converted = self.converted.clone();
        let probes = std::mem::take(&mut self.probes);
        let result = {
            let records = &mut self.records;
            self.target
                .with_buffer(id, |s| -> Result<_, PresentError> {
                    if !same_screen(&banner, s) {
                        return Err(PresentError::ScreenChanged {
                            width: s.width(),
                            height: s.height(),
                        });
                    }
                    let want = match &converted {
                        Some(c)
                            if c.patches.first().map(|p| p.pixels.format()) == Some(s.format()) =>
                        {
                            c.clone()
                        }
                        _ if banner_format(&banner) == Some(s.format())
                            || banner.patches.is_empty() =>
                        {
                            banner.clone()
                        }
                        _ => Arc::new(convert(&banner, s.format())?),
                    };
                    match pos {
                        Some(i) if Arc::ptr_eq(&records[i].drawn, &want) => {
                            records[i].last_used = uses;
                            let rec = &mut records[i];
                            if !verify && !probes_differ(s, &rec.drawn, &probes) {
                                return Ok((TickOutcome::Unchanged, Vec::new(), want, false));
                            }
                            let dirty = repair(s, rec);
                            let outcome = if dirty.is_empty() {
                                TickOutcome::Unchanged
                            } else {
                                TickOutcome::Repaired
                            };
                            Ok((outcome, dirty, want, true))
                        }
                        Some(i) => {
                            // This buffer shows an older banner: take it off, then
                            // draw the new one.
                            let mut dirty = restore(s, &records[i]);
                            let saved = draw(s, &want);
                            dirty.extend(want.patches.iter().map(|p| p.rect));
                            records[i] = Record {
                                id,
                                drawn: want.clone(),
                                saved,
                                last_used: uses,
                            };
                            Ok((TickOutcome::Drawn, dirty, want, true))
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
                            Ok((TickOutcome::Drawn, dirty, want, true))
                        }
                    }
                })?
        };
        self.probes = probes;
        let Some(result) = result else {
            // The buffer went away between the two calls: next tick.
            self.records.retain(|r| r.id != id);
            return Ok(TickOutcome::NoBuffer);
        };
        let (outcome, dirty, want, verified) = result?;
        if !Arc::ptr_eq(&want, &banner) {
            self.converted = Some(want);
        }
        if verified {
            self.verify_due = false;
            self.last_verify = Some(now);
        }
        if !dirty.is_empty() {
            self.target.flush(id, &dirty)?;
        }
        Ok(outcome)
    }
}

fn same_screen(banner: &Banner, s: &Surface<'_>) -> bool {
    banner.layout.screen == s.size()
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

/// Puts the saved pixels back wherever the banner is still intact; pixels
/// the app has painted since are left alone. Returns the touched areas.
fn restore(s: &mut Surface<'_>, rec: &Record) -> Vec<Rectangle> {
    let bpp = s.format().bytes_per_pixel();
    let mut dirty = Vec::new();
    for (p, saved) in rec.drawn.patches.iter().zip(&rec.saved) {
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
                for ((c, d), u) in cur
                    .chunks_exact_mut(bpp)
                    .zip(drawn.chunks_exact(bpp))
                    .zip(under.chunks_exact(bpp))
                {
                    if c == d {
                        c.copy_from_slice(u);
                    }
                }
            }
        }
        dirty.push(p.rect);
    }
    dirty
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
            for ((c, d), u) in cur
                .chunks_exact_mut(bpp)
                .zip(drawn.chunks_exact(bpp))
                .zip(under.chunks_exact_mut(bpp))
            {
                if c != d {
                    u.copy_from_slice(c);
                    c.copy_from_slice(d);
                }
            }
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
