//! [`ScanoutTarget`] over `shoulder-display`'s [`ScanoutAccess`], which finds
//! the framebuffer the display scans out (re-querying the plane every call,
//! apps page-flip), maps it writable (dumb map or PRIME with
//! `DMA_BUF_IOCTL_SYNC`) and caches the mappings per framebuffer.

use embedded_graphics::primitives::Rectangle;
use shoulder_display::drm::{DrmDisplay, DrmOptions};
use shoulder_display::{CaptureError, ScanoutAccess};

use super::PresentError;
use super::reopen::Reopening;
use super::scanout::{BufferId, ScanoutPresenter, ScanoutTarget};
use crate::pixel::Surface;

/// The default presenter: draws into whatever the DRM display scans out,
/// reopening the card when it went away.
pub type DrmScanoutPresenter = ScanoutPresenter<Reopening<CaptureScanout<DrmDisplay>>>;

impl DrmScanoutPresenter {
    /// Opens the display for drawing the banner: `device` default the first
    /// card with a lit display, `connector` default its first active CRTC.
    /// Use a separate source from the capture loop's (its own mappings).
    pub fn open_drm(
        device: Option<&std::path::Path>,
        connector: Option<&str>,
    ) -> Result<Self, PresentError> {
        let opts = DrmOptions {
            device: device.map(std::path::Path::to_path_buf),
            connector: connector.map(str::to_string),
            writable: true,
        };
        let target = Reopening::new(Box::new(move || {
            DrmDisplay::open_with(opts.clone())
                .map(CaptureScanout::new)
                .map_err(capture_error)
        }))?;
        Ok(ScanoutPresenter::new(target))
    }
}

/// Adapts any [`ScanoutAccess`] (DRM, fbdev) to the scanout presenter.
#[derive(Debug)]
pub struct CaptureScanout<S> {
    inner: S,
}

impl<S: ScanoutAccess> CaptureScanout<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn capture_error(e: CaptureError) -> PresentError {
    PresentError::Capture(Box::new(e))
}

impl<S: ScanoutAccess> ScanoutTarget for CaptureScanout<S> {
    fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
        match self.inner.scanout_mut() {
            Ok(m) => Ok(Some(BufferId(u64::from(m.buffer_id)))),
            Err(CaptureError::DisplayOff { .. }) => Ok(None),
            Err(e) => Err(capture_error(e)),
        }
    }

    fn with_buffer<R>(
        &mut self,
        id: BufferId,
        f: impl FnOnce(&mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let m = match self.inner.scanout_mut() {
            Ok(m) => m,
            Err(CaptureError::DisplayOff { .. }) => return Ok(None),
            Err(e) => return Err(capture_error(e)),
        };
        if u64::from(m.buffer_id) != id.0 {
            return Ok(None);
        }
        let g = m.geometry;
        let mut surface = Surface::new(g.width, g.height, m.pitch, g.format, m.pixels)
            .map_err(|e| PresentError::Unsupported(format!("the scanout mapping: {e}")))?;
        Ok(Some(f(&mut surface)))
    }

    /// One `scanout_mut` per tick: it re-queries the CRTC and maps.
    fn with_current<R>(
        &mut self,
        f: impl FnOnce(BufferId, &mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let m = match self.inner.scanout_mut() {
            Ok(m) => m,
            Err(CaptureError::DisplayOff { .. }) => return Ok(None),
            Err(e) => return Err(capture_error(e)),
        };
        let id = BufferId(u64::from(m.buffer_id));
        let g = m.geometry;
        let mut surface = Surface::new(g.width, g.height, m.pitch, g.format, m.pixels)
            .map_err(|e| PresentError::Unsupported(format!("the scanout mapping: {e}")))?;
        Ok(Some(f(id, &mut surface)))
    }

    /// Every rectangle, even after DIRTYFB was refused: for a tiled buffer
    /// `flush` is also what writes the drawn copy back (the DRM display
    /// remembers the refusal and does not ask the kernel again).
    fn flush(&mut self, _id: BufferId, rects: &[Rectangle]) -> Result<(), PresentError> {
        for r in rects {
            let (x, y) = (r.top_left.x.max(0) as u32, r.top_left.y.max(0) as u32);
            // Refused DIRTYFB (not master): drivers that scan out the buffer
            // directly show the pixels anyway; the others cannot be helped
            // (PRESENTERS.md).
            let _ = self.inner.flush(x, y, r.size.width, r.size.height);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Renderer, ScreenSpec, Style};
    use crate::present::{BannerPresenter, TickOutcome};
    use crate::view::{StripMode, StripView, View};
    use shoulder_display::{PixelFormat, ScanoutMut, ScreenGeometry};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A fake display behind the capture crate's trait.
    struct Fake {
        pixels: Vec<u8>,
        id: u32,
        flushes: usize,
        refuse_flush: bool,
    }

    impl ScanoutAccess for Fake {
        fn scanout_mut(&mut self) -> Result<ScanoutMut<'_>, CaptureError> {
            Ok(ScanoutMut::new(
                &mut self.pixels,
                ScreenGeometry {
                    width: 320,
                    height: 240,
                    format: PixelFormat::Xrgb8888,
                },
                320 * 4,
                self.id,
            ))
        }
        fn flush(&mut self, _x: u32, _y: u32, _w: u32, _h: u32) -> Result<(), CaptureError> {
            self.flushes += 1;
            if self.refuse_flush {
                return Err(CaptureError::Unsupported {
                    path: "/dev/dri/card0".into(),
                    detail: "not master".into(),
                });
            }
            Ok(())
        }
    }

    #[test]
    fn draws_through_the_capture_crate_and_keeps_flushing_when_refused() {
        let fake = Fake {
            pixels: vec![0x55; 320 * 240 * 4],
            id: 42,
            flushes: 0,
            refuse_flush: true,
        };
        let mut p = ScanoutPresenter::new(CaptureScanout::new(fake));
        let r = Renderer::new(
            ScreenSpec {
                width: 320,
                height: 240,
                format: PixelFormat::Xrgb8888,
            },
            Style::default(),
        )
        .unwrap();
        let view = View {
            strip: Some(StripView {
                mode: StripMode::Viewing,
                expert: "Jane".into(),
                elapsed: Duration::from_secs(3),
                stop_hotkey: String::new(),
                file: None,
            }),
            ..View::default()
        };
        let banner = Arc::new(r.render(&view).unwrap());
        let t0 = Instant::now();
        assert_eq!(p.show_at(banner.clone(), t0).unwrap(), TickOutcome::Drawn);
        let strip = banner.layout.regions[0].rect;
        let mut frame = p.target().inner().pixels.clone();
        let mut expected = vec![0x55u8; 320 * 240 * 4];
        let mut s = Surface::new(320, 240, 1280, PixelFormat::Xrgb8888, &mut expected).unwrap();
        banner.composite_into(&mut s);
        assert_eq!(frame, expected, "the banner is in the scanned-out pixels");
        assert!(strip.size.height > 0);
        let flushes = p.target().inner().flushes;
        assert!(flushes >= 1, "the drawn rectangles are flushed");
        // A redraw is flushed again although the last flush was refused:
        // tiled buffers get their pixels back through it.
        p.target_mut().inner_mut().pixels.fill(0x55);
        p.tick_at(t0 + Duration::from_millis(5)).unwrap();
        assert!(
            p.target().inner().flushes > flushes,
            "flushed after a refusal"
        );
        p.hide().unwrap();
        frame.clone_from(&p.target().inner().pixels);
        assert!(frame.iter().all(|&b| b == 0x55), "restored");
    }
}
