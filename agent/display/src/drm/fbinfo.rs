//! What `GETFB2` says about a framebuffer, and whether we can map and read
//! it: format, modifier (linear or a tiling we can undo), pitch.

// The parent module allows unsafe for its ioctls; none is needed here.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::AsFd;

use drm_ffi as ffi;

use super::{DrmDisplay, FbLayout};
use crate::error::CaptureError;
use crate::format::{PixelFormat, fourcc_name};
use crate::tiling::{TiledLayout, Tiling};

impl DrmDisplay {
    /// `GETFB2`, or on kernels before 5.7 (no GETFB2) `GETFB` with the
    /// format inferred from depth and bits per pixel (always linear then).
    pub(super) fn framebuffer_info(&self, fb: u32) -> Result<ffi::drm_mode_fb_cmd2, CaptureError> {
        let errno = |e: &io::Error| e.raw_os_error().map(rustix::io::Errno::from_raw_os_error);
        let gone = || Self::display_off(format!("framebuffer {fb} went away"));
        let e = match ffi::mode::get_framebuffer2(self.card.as_fd(), fb) {
            Ok(i) => return Ok(i),
            Err(e) => e,
        };
        match errno(&e) {
            Some(rustix::io::Errno::NOENT) => return Err(gone()),
            Some(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOTTY | rustix::io::Errno::NOSYS,
            ) => {}
            _ => return Err(self.io("GETFB2")(e)),
        }
        let v1 = match ffi::mode::get_framebuffer(self.card.as_fd(), fb) {
            Ok(i) => i,
            Err(e) if errno(&e) == Some(rustix::io::Errno::NOENT) => return Err(gone()),
            Err(e) => return Err(self.io("GETFB")(e)),
        };
        let format = match (v1.bpp, v1.depth) {
            (32, 24) => PixelFormat::Xrgb8888,
            (32, 32) => PixelFormat::Argb8888,
            (16, 16) => PixelFormat::Rgb565,
            (bpp, depth) => {
                if v1.handle != 0 {
                    let _ = ffi::gem::close(self.card.as_fd(), v1.handle);
                }
                return Err(CaptureError::UnsupportedFormat {
                    path: self.path.clone(),
                    format: format!("{bpp} bits per pixel, depth {depth}"),
                });
            }
        };
        Ok(ffi::drm_mode_fb_cmd2 {
            fb_id: fb,
            width: v1.width,
            height: v1.height,
            pixel_format: format.fourcc(),
            flags: 0,
            handles: [v1.handle, 0, 0, 0],
            pitches: [v1.pitch, 0, 0, 0],
            offsets: [0; 4],
            modifier: [0; 4],
        })
    }

    pub(super) fn layout(&self, info: &ffi::drm_mode_fb_cmd2) -> Result<FbLayout, CaptureError> {
        if info.handles[0] == 0 {
            return Err(CaptureError::MissingCapSysAdmin {
                path: self.path.clone(),
            });
        }
        let format = PixelFormat::from_fourcc(info.pixel_format).ok_or_else(|| {
            CaptureError::UnsupportedFormat {
                path: self.path.clone(),
                format: fourcc_name(info.pixel_format),
            }
        })?;
        // Without the modifiers flag the kernel has no explicit layout: for
        // the buffers that come that way (dumb, shmem, GETFB) it is linear.
        let tiling = if info.flags & ffi::DRM_MODE_FB_MODIFIERS != 0 {
            Tiling::from_modifier(info.modifier[0]).map_err(|reason| {
                CaptureError::UnsupportedModifier {
                    path: self.path.clone(),
                    format: format.name().to_owned(),
                    reason,
                }
            })?
        } else {
            Tiling::Linear
        };
        if info.width == 0 || info.height == 0 {
            return Err(Self::display_off("the framebuffer is empty"));
        }
        if (info.pitches[0] as usize) < info.width as usize * format.bytes_per_pixel() {
            return Err(CaptureError::Unsupported {
                path: self.path.clone(),
                detail: format!(
                    "framebuffer pitch {} is shorter than a row of {} {format} pixels",
                    info.pitches[0], info.width
                ),
            });
        }
        TiledLayout::new(tiling, info.pitches[0] as usize, format.bytes_per_pixel()).map_err(
            |e| CaptureError::Unsupported {
                path: self.path.clone(),
                detail: format!("framebuffer {}: {e}", info.fb_id),
            },
        )?;
        Ok(FbLayout {
            width: info.width,
            height: info.height,
            format,
            pitch: info.pitches[0],
            offset: info.offsets[0],
            tiling,
        })
    }
}
