//! fbdev display access (`/dev/fb0`), for devices without KMS. The visible part of
//! the (possibly larger, panned) virtual framebuffer is read through one
//! shared mapping; the screen info is re-read on every capture so panning
//! (double buffering by `FBIOPAN_DISPLAY`) and mode changes are followed.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::ioctl::{Getter, ioctl};

use crate::error::CaptureError;
use crate::format::{PixelFormat, ScreenGeometry, check_frame};
use crate::mmap::Mapping;
use crate::scanout::{Scanout, ScanoutAccess, ScanoutMut};

/// `struct fb_bitfield` from `<linux/fb.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FbBitfield {
    pub offset: u32,
    pub length: u32,
    pub msb_right: u32,
}

/// `struct fb_var_screeninfo` from `<linux/fb.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FbVarScreeninfo {
    pub xres: u32,
    pub yres: u32,
    pub xres_virtual: u32,
    pub yres_virtual: u32,
    pub xoffset: u32,
    pub yoffset: u32,
    pub bits_per_pixel: u32,
    pub grayscale: u32,
    pub red: FbBitfield,
    pub green: FbBitfield,
    pub blue: FbBitfield,
    pub transp: FbBitfield,
    pub nonstd: u32,
    pub activate: u32,
    pub height: u32,
    pub width: u32,
    pub accel_flags: u32,
    pub pixclock: u32,
    pub left_margin: u32,
    pub right_margin: u32,
    pub upper_margin: u32,
    pub lower_margin: u32,
    pub hsync_len: u32,
    pub vsync_len: u32,
    pub sync: u32,
    pub vmode: u32,
    pub rotate: u32,
    pub colorspace: u32,
    pub reserved: [u32; 4],
}

/// `struct fb_fix_screeninfo` from `<linux/fb.h>`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FbFixScreeninfo {
    pub id: [u8; 16],
    pub smem_start: std::ffi::c_ulong,
    pub smem_len: u32,
    pub kind: u32,
    pub type_aux: u32,
    pub visual: u32,
    pub xpanstep: u16,
    pub ypanstep: u16,
    pub ywrapstep: u16,
    pub line_length: u32,
    pub mmio_start: std::ffi::c_ulong,
    pub mmio_len: u32,
    pub accel: u32,
    pub capabilities: u16,
    pub reserved: [u16; 2],
}

pub const FBIOGET_VSCREENINFO: rustix::ioctl::Opcode = 0x4600;
pub const FBIOGET_FSCREENINFO: rustix::ioctl::Opcode = 0x4602;
/// `FB_TYPE_PACKED_PIXELS`: the only layout we can read.
pub const FB_TYPE_PACKED_PIXELS: u32 = 0;

/// `FBIOGET_VSCREENINFO`: the variable screen info of an open fbdev device.
pub fn var_info(file: &File) -> std::io::Result<FbVarScreeninfo> {
    // SAFETY: FBIOGET_VSCREENINFO fills exactly a `struct
    // fb_var_screeninfo`, which `FbVarScreeninfo` mirrors (repr(C)); `file`
    // is an open descriptor for the call's duration.
    Ok(unsafe {
        ioctl(
            file.as_fd(),
            Getter::<FBIOGET_VSCREENINFO, FbVarScreeninfo>::new(),
        )
    }?)
}

/// `FBIOGET_FSCREENINFO`: the fixed screen info of an open fbdev device.
pub fn fix_info(file: &File) -> std::io::Result<FbFixScreeninfo> {
    // SAFETY: FBIOGET_FSCREENINFO fills exactly a `struct
    // fb_fix_screeninfo`, which `FbFixScreeninfo` mirrors (repr(C), with
    // `unsigned long` as c_ulong); `file` is open for the call's duration.
    Ok(unsafe {
        ioctl(
            file.as_fd(),
            Getter::<FBIOGET_FSCREENINFO, FbFixScreeninfo>::new(),
        )
    }?)
}

fn bf(offset: u32, length: u32) -> FbBitfield {
    FbBitfield {
        offset,
        length,
        msb_right: 0,
    }
}

/// The pixel format the bitfields describe, if we support it.
fn format_of(var: &FbVarScreeninfo) -> Option<PixelFormat> {
    let (r, g, b) = (var.red, var.green, var.blue);
    match var.bits_per_pixel {
        32 if (r, g, b) == (bf(16, 8), bf(8, 8), bf(0, 8)) => Some(PixelFormat::Xrgb8888),
        32 if (r, g, b) == (bf(0, 8), bf(8, 8), bf(16, 8)) => Some(PixelFormat::Xbgr8888),
        16 if (r, g, b) == (bf(11, 5), bf(5, 6), bf(0, 5)) => Some(PixelFormat::Rgb565),
        _ => None,
    }
}

/// An fbdev device and its mapped video memory.
#[derive(Debug)]
pub struct FbdevDisplay {
    path: PathBuf,
    file: File,
    writable: bool,
    map: Option<Mapping>,
    fix: FbFixScreeninfo,
}

struct View {
    geometry: ScreenGeometry,
    start: usize,
    pitch: usize,
}

impl FbdevDisplay {
    /// Opens `path` for capture (read-only).
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        Self::open_with(path, false)
    }

    /// Opens `path`, writable too when `writable` (for [`ScanoutAccess`]).
    pub fn open_with(path: &Path, writable: bool) -> Result<Self, CaptureError> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|source| CaptureError::Open {
                path: path.to_owned(),
                source,
            })?;
        let mut src = Self {
            path: path.to_owned(),
            file,
            writable,
            map: None,
            fix: FbFixScreeninfo::default(),
        };
        src.view()?;
        Ok(src)
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> CaptureError {
        CaptureError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn view(&mut self) -> Result<View, CaptureError> {
        let var = var_info(&self.file).map_err(|e| self.io("FBIOGET_VSCREENINFO", e))?;
        let fix = fix_info(&self.file).map_err(|e| self.io("FBIOGET_FSCREENINFO", e))?;
        let unsupported = |detail: String| CaptureError::Unsupported {
            path: self.path.clone(),
            detail,
        };
        if fix.kind != FB_TYPE_PACKED_PIXELS || var.nonstd != 0 || var.grayscale != 0 {
            return Err(unsupported(format!(
                "framebuffer type {} (nonstd {}, grayscale {}) is not packed true-colour pixels",
                fix.kind, var.nonstd, var.grayscale
            )));
        }
        let format = format_of(&var).ok_or_else(|| CaptureError::UnsupportedFormat {
            path: self.path.clone(),
            format: format!(
                "{} bpp with red {}:{}, green {}:{}, blue {}:{} (offset:length)",
                var.bits_per_pixel,
                var.red.offset,
                var.red.length,
                var.green.offset,
                var.green.length,
                var.blue.offset,
                var.blue.length
            ),
        })?;
        if var.xres == 0 || var.yres == 0 {
            return Err(CaptureError::DisplayOff {
                detail: format!("{} reports a 0×0 screen", self.path.display()),
            });
        }
        let pitch = fix.line_length as usize;
        let bpp = format.bytes_per_pixel();
        let start = var.yoffset as usize * pitch + var.xoffset as usize * bpp;
        let geometry = ScreenGeometry {
            width: var.xres,
            height: var.yres,
            format,
        };
        let changed = fix.smem_len != self.fix.smem_len || fix.line_length != self.fix.line_length;
        if changed || self.map.is_none() {
            self.map = None;
            let len = fix.smem_len as usize;
            self.map = Some(
                Mapping::new(self.file.as_fd(), 0, len, self.writable)
                    .map_err(|e| self.io("mmap", e))?,
            );
            self.fix = fix;
        }
        Ok(View {
            geometry,
            start,
            pitch,
        })
    }
}

impl FbdevDisplay {
    /// The device node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size and format of the screen now.
    pub fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.view()?.geometry)
    }

    /// The visible part of video memory now, for reading.
    pub fn scanout(&mut self) -> Result<Scanout<'_>, CaptureError> {
        let v = self.view()?;
        let bytes = self.map.as_ref().map(Mapping::bytes).unwrap_or_default();
        Ok(Scanout {
            pixels: &bytes[v.start.min(bytes.len())..],
            geometry: v.geometry,
            pitch: v.pitch,
            buffer_id: u32::try_from(v.start).unwrap_or(u32::MAX),
            sync: None,
        })
    }

    /// A short description for logs: "fbdev /dev/fb0 (virtio_gpudrmfb)".
    pub fn describe(&self) -> String {
        let id = String::from_utf8_lossy(&self.fix.id);
        format!(
            "fbdev {} ({})",
            self.path.display(),
            id.trim_end_matches('\0')
        )
    }
}

impl ScanoutAccess for FbdevDisplay {
    fn scanout_mut(&mut self) -> Result<ScanoutMut<'_>, CaptureError> {
        let v = self.view()?;
        let path = self.path.clone();
        let bytes = self
            .map
            .as_mut()
            .and_then(Mapping::bytes_mut)
            .ok_or_else(|| CaptureError::Unsupported {
                path,
                detail: "opened for capture only; use FbdevDisplay::open_with(path, true) to draw on the screen".into(),
            })?;
        let len = bytes.len();
        check_frame(len.saturating_sub(v.start), v.geometry, v.pitch).map_err(|source| {
            CaptureError::Frame {
                path: self.path.clone(),
                source,
            }
        })?;
        Ok(ScanoutMut {
            pixels: &mut bytes[v.start.min(len)..],
            geometry: v.geometry,
            pitch: v.pitch,
            // Panning moves the visible area: a new "buffer" to draw into.
            buffer_id: u32::try_from(v.start).unwrap_or(u32::MAX),
            _sync: None,
        })
    }

    /// fbdev shows the memory directly: nothing to flush.
    fn flush(&mut self, _x: u32, _y: u32, _w: u32, _h: u32) -> Result<(), CaptureError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FbVarScreeninfo>(), 160);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), 80);
        #[cfg(target_pointer_width = "32")]
        assert_eq!(std::mem::size_of::<FbFixScreeninfo>(), 68);
    }

    #[test]
    fn bitfields_name_formats() {
        let mut var = FbVarScreeninfo {
            bits_per_pixel: 32,
            red: bf(16, 8),
            green: bf(8, 8),
            blue: bf(0, 8),
            ..Default::default()
        };
        assert_eq!(format_of(&var), Some(PixelFormat::Xrgb8888));
        var.red = bf(0, 8);
        var.blue = bf(16, 8);
        assert_eq!(format_of(&var), Some(PixelFormat::Xbgr8888));
        var.bits_per_pixel = 24;
        assert_eq!(format_of(&var), None);
        let var = FbVarScreeninfo {
            bits_per_pixel: 16,
            red: bf(11, 5),
            green: bf(5, 6),
            blue: bf(0, 5),
            ..Default::default()
        };
        assert_eq!(format_of(&var), Some(PixelFormat::Rgb565));
    }

    #[test]
    fn missing_device_names_the_path() {
        let err = FbdevDisplay::open(Path::new("/nonexistent/fb9")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fb9"), "{err}");
    }
}
