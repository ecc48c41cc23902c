//! The cursor plane: where it is and the image it shows.

// The parent module allows unsafe for its ioctls; none is needed here.
#![deny(unsafe_code)]

use std::os::fd::AsFd;

use drm::control::{Device as ControlDevice, plane};
use drm_ffi as ffi;

use super::DrmDisplay;
use crate::cursor::{CursorImage, CursorState};
use crate::error::CaptureError;
use crate::format::PixelFormat;

impl DrmDisplay {
    /// The cursor plane's state and image now; `None`: no cursor plane.
    pub fn read_cursor(
        &mut self,
    ) -> Result<Option<(CursorState, Option<CursorImage>)>, CaptureError> {
        let Some(cp) = self.cursor_plane else {
            return Ok(None);
        };
        let hidden = CursorState {
            x: 0,
            y: 0,
            visible: false,
        };
        let p = match ffi::mode::get_plane(self.card.as_fd(), cp.plane, None) {
            Ok(p) => p,
            Err(_) => return Ok(Some((hidden, None))),
        };
        if p.fb_id == 0 || Some(p.crtc_id) != self.crtc {
            return Ok(Some((hidden, None)));
        }
        let handle = drm::control::from_u32::<plane::Handle>(cp.plane);
        let props = match handle.map(|h| self.card.get_properties(h)) {
            Some(Ok(p)) => p,
            _ => return Ok(Some((hidden, None))),
        };
        let value = |prop: Option<drm::control::property::Handle>| -> i64 {
            prop.and_then(|h| props.iter().find(|(p, _)| **p == h).map(|(_, v)| *v as i64))
                .unwrap_or(0)
        };
        let (cx, cy) = (value(cp.crtc_x), value(cp.crtc_y));
        let (hx, hy) = (value(cp.hotspot_x).max(0), value(cp.hotspot_y).max(0));
        let index = self.mapping(p.fb_id)?;
        let m = &self.maps[index];
        let l = m.layout;
        let (w, h) = (l.width.min(256), l.height.min(256));
        let mut argb = Vec::with_capacity(w as usize * h as usize * 4);
        {
            let _sync = self.sync_guard(index, false)?;
            let bytes = m.map.bytes();
            let bpp = l.format.bytes_per_pixel();
            // Cursor buffers are linear in practice; a tiled one is read
            // pixel by pixel (at most 256 × 256 of them).
            let tiled = l.tiled();
            for y in 0..h as usize {
                for x in 0..w as usize {
                    let at = l.offset as usize + tiled.offset(x, y);
                    let px = &bytes[at..at + bpp];
                    let rgb = crate::convert::pixel_to_xrgb(l.format, px).to_le_bytes();
                    let alpha = match l.format {
                        PixelFormat::Argb8888 | PixelFormat::Abgr8888 => px[3],
                        _ => 0xff,
                    };
                    argb.extend_from_slice(&[rgb[0], rgb[1], rgb[2], alpha]);
                }
            }
        }
        let (sw, sh) = self.screen_size;
        let clamp = |v: i64, max: u32| v.clamp(0, i64::from(max.saturating_sub(1))) as u16;
        let state = CursorState {
            x: clamp(cx + hx, sw),
            y: clamp(cy + hy, sh),
            visible: cx + hx >= 0
                && cy + hy >= 0
                && (cx + hx) < i64::from(sw)
                && (cy + hy) < i64::from(sh),
        };
        let image = CursorImage {
            width: w as u16,
            height: h as u16,
            hot_x: hx.min(i64::from(w) - 1) as u16,
            hot_y: hy.min(i64::from(h) - 1) as u16,
            argb,
        };
        Ok(Some((state, Some(image))))
    }
}
