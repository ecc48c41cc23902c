//! Tiled scanout buffers: capture and the banner see a linear copy of the
//! visible part (`DrmDisplay::staging`), detiled on every call; the banner's
//! rectangles go back into the buffer on `flush`.

// The parent module allows unsafe for its ioctls; none is needed here.
#![deny(unsafe_code)]

use super::{DrmDisplay, View, start_sync};
use crate::error::CaptureError;
use crate::scanout::{Scanout, ScanoutMut};
use crate::tiling::{LayoutError, Rect};

/// The part of a framebuffer the banner was handed as a linear copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Staged {
    fb: u32,
    origin: (usize, usize),
    width: usize,
    height: usize,
}

impl Staged {
    /// Screen rectangle (`x`, `y`, `w`, `h`) in framebuffer coordinates,
    /// cut to the part that was handed out.
    fn clip(&self, x: u32, y: u32, w: u32, h: u32) -> Rect {
        let (x, y) = (x as usize, y as usize);
        Rect {
            x: self.origin.0 + x.min(self.width),
            y: self.origin.1 + y.min(self.height),
            width: (w as usize).min(self.width.saturating_sub(x)),
            height: (h as usize).min(self.height.saturating_sub(y)),
        }
    }
}

impl DrmDisplay {
    /// Detiles the visible part of `v` into `staging`, inside a read
    /// bracket ended before returning.
    fn detile_view(&mut self, v: &View) -> Result<(), CaptureError> {
        let m = &self.maps[v.index];
        let layout = m.layout.tiled();
        let g = v.geometry;
        let _sync = start_sync(m.dmabuf.as_ref(), false, &self.path)?;
        let bytes = &m.map.bytes()[(m.layout.offset as usize).min(m.map.len())..];
        layout
            .detile_into(
                bytes,
                v.origin,
                (g.width as usize, g.height as usize),
                &mut self.staging,
            )
            .map_err(|e| self.layout_error(v.fb, e))
    }

    fn layout_error(&self, fb: u32, e: LayoutError) -> CaptureError {
        CaptureError::Unsupported {
            path: self.path.clone(),
            detail: format!("framebuffer {fb}: {e}"),
        }
    }

    /// [`DrmDisplay::scanout`] of a tiled buffer: a linear copy.
    pub(super) fn scanout_tiled(&mut self, v: &View) -> Result<Scanout<'_>, CaptureError> {
        self.staged = None;
        self.detile_view(v)?;
        Ok(Scanout {
            pixels: &self.staging,
            geometry: v.geometry,
            pitch: v.geometry.width as usize * v.geometry.format.bytes_per_pixel(),
            buffer_id: v.fb,
            sync: None,
        })
    }

    /// `scanout_mut` of a tiled buffer: a linear copy to draw on; `flush`
    /// writes the drawn rectangles back.
    pub(super) fn scanout_mut_tiled(&mut self, v: &View) -> Result<ScanoutMut<'_>, CaptureError> {
        self.staged = None;
        self.detile_view(v)?;
        let g = v.geometry;
        self.staged = Some(Staged {
            fb: v.fb,
            origin: v.origin,
            width: g.width as usize,
            height: g.height as usize,
        });
        let pitch = g.width as usize * g.format.bytes_per_pixel();
        Ok(ScanoutMut::new(&mut self.staging, g, pitch, v.fb))
    }

    /// Tiles rectangle (`x`, `y`, `w`, `h`) of the banner's copy (screen
    /// coordinates, as drawn) back into its framebuffer, inside a write
    /// bracket. Nothing to do for linear buffers (drawn in place) or when
    /// the framebuffer has gone.
    pub(super) fn retile_staged(
        &mut self,
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    ) -> Result<(), CaptureError> {
        let Some(s) = self.staged else {
            return Ok(());
        };
        let rect = s.clip(x, y, w, h);
        let Some(index) = self.maps.iter().position(|m| m.fb == s.fb) else {
            return Ok(());
        };
        let m = &mut self.maps[index];
        let layout = m.layout.tiled();
        let offset = m.layout.offset as usize;
        let _sync = start_sync(m.dmabuf.as_ref(), true, &self.path)?;
        let Some(bytes) = m.map.bytes_mut() else {
            unreachable!("writable sources map writable")
        };
        let pitch = s.width * layout.bytes_per_pixel();
        let len = bytes.len();
        let dst = &mut bytes[offset.min(len)..];
        let r = layout.retile_rect(&self.staging, pitch, s.origin, rect, dst);
        drop(_sync);
        r.map_err(|e| self.layout_error(s.fb, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_rectangles_are_cut_to_the_copy_and_moved_to_the_framebuffer() {
        let s = Staged {
            fb: 7,
            origin: (100, 50),
            width: 640,
            height: 480,
        };
        let r = |x, y, width, height| Rect {
            x,
            y,
            width,
            height,
        };
        assert_eq!(s.clip(0, 0, 640, 40), r(100, 50, 640, 40));
        assert_eq!(s.clip(600, 460, 100, 100), r(700, 510, 40, 20));
        assert_eq!(s.clip(700, 10, 5, 5).width, 0);
        assert_eq!(s.clip(10, 900, 5, 5).height, 0);
    }
}
