//! The fbdev presenter: a [`ScanoutPresenter`] over `/dev/fbN`.
//!
//! fbdev has one buffer in video memory; double-buffering apps pan the
//! visible window within a taller virtual screen (`yoffset`). The buffer id
//! is that pan offset, so a pan counts as a flip. Writes go straight to the
//! screen (or, for DRM's fbdev emulation, through its deferred-I/O page
//! tracking), so nothing needs flushing.
//!
//! The ioctls and the mapping are `shoulder-display`'s; no unsafe here.

use shoulder_display::fbdev::{FB_TYPE_PACKED_PIXELS, FbVarScreeninfo, fix_info, var_info};
use shoulder_display::mmap::Mapping;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::PresentError;
use super::reopen::Reopening;
use super::scanout::{BufferId, ScanoutPresenter, ScanoutTarget};
use crate::pixel::{PixelFormat, Surface};

/// The default framebuffer device.
pub const DEFAULT_DEVICE: &str = "/dev/fb0";

/// Largest framebuffer mapping accepted (an 8K screen at 32 bits, double
/// buffered): a bigger `smem_len` is a driver oddity we do not map.
pub const MAX_MAP_LEN: usize = 8192 * 8192 * 4 * 2;

/// A [`ScanoutPresenter`] drawing into an fbdev device, reopening it when
/// it went away.
pub type FbdevPresenter = ScanoutPresenter<Reopening<FbdevTarget>>;

impl FbdevPresenter {
    /// Opens `/dev/fbN` for drawing the banner.
    pub fn open(path: &Path) -> Result<Self, PresentError> {
        let path = path.to_path_buf();
        let target = Reopening::new(Box::new(move || FbdevTarget::open(&path)))?;
        Ok(ScanoutPresenter::new(target))
    }
}

fn format_of(v: &FbVarScreeninfo) -> Option<PixelFormat> {
    match (
        v.bits_per_pixel,
        v.red.offset,
        v.green.offset,
        v.blue.offset,
    ) {
        (32, 16, 8, 0) if v.transp.length > 0 => Some(PixelFormat::Argb8888),
        (32, 16, 8, 0) => Some(PixelFormat::Xrgb8888),
        (32, 0, 8, 16) if v.transp.length > 0 => Some(PixelFormat::Abgr8888),
        (32, 0, 8, 16) => Some(PixelFormat::Xbgr8888),
        (16, 11, 5, 0) => Some(PixelFormat::Rgb565),
        _ => None,
    }
}

/// `/dev/fbN` as a [`ScanoutTarget`].
#[derive(Debug)]
pub struct FbdevTarget {
    path: PathBuf,
    file: File,
    map: Mapping,
    line_length: usize,
    var: FbVarScreeninfo,
    format: PixelFormat,
}

impl FbdevTarget {
    pub fn open(path: &Path) -> Result<Self, PresentError> {
        let dev = |what: &str, source| PresentError::Device {
            what: format!("{what} {}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| dev("opening", e))?;
        let fix = fix_info(&file).map_err(|e| dev("FBIOGET_FSCREENINFO on", e))?;
        let var = var_info(&file).map_err(|e| dev("FBIOGET_VSCREENINFO on", e))?;
        if fix.kind != FB_TYPE_PACKED_PIXELS {
            return Err(PresentError::Unsupported(format!(
                "{}: framebuffer type {} is not packed pixels; the banner cannot draw into it",
                path.display(),
                fix.kind
            )));
        }
        let format = format_of(&var).ok_or_else(|| {
            PresentError::Unsupported(format!(
                "{}: {} bits per pixel with red at bit {} is not a format the banner draws (32-bit XRGB/XBGR or RGB565)",
                path.display(),
                var.bits_per_pixel,
                var.red.offset
            ))
        })?;
        let len = fix.smem_len as usize;
        let line_length = fix.line_length as usize;
        let need = line_length * var.yres_virtual.max(var.yres) as usize;
        if len == 0 || len > MAX_MAP_LEN || need > len {
            return Err(PresentError::Unsupported(format!(
                "{}: framebuffer memory of {len} bytes does not fit {}x{} lines of {line_length} bytes",
                path.display(),
                var.xres_virtual,
                var.yres_virtual
            )));
        }
        let map = Mapping::new(file.as_fd(), 0, len, true).map_err(|e| dev("mapping", e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            map,
            line_length,
            var,
            format,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The visible size and the pixel format, for rendering the banner.
    pub fn screen(&self) -> (u32, u32, PixelFormat) {
        (self.var.xres, self.var.yres, self.format)
    }
}

fn id_of(v: &FbVarScreeninfo) -> BufferId {
    BufferId((u64::from(v.yoffset) << 32) | u64::from(v.xoffset))
}

impl ScanoutTarget for FbdevTarget {
    fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
        let var = var_info(&self.file).map_err(|source| PresentError::Device {
            what: format!("FBIOGET_VSCREENINFO on {}", self.path.display()),
            source,
        })?;
        if (var.xres, var.yres, var.bits_per_pixel)
            != (self.var.xres, self.var.yres, self.var.bits_per_pixel)
        {
            // A mode change: the mapping and the banner are for the old mode.
            return Err(PresentError::ScreenChanged {
                width: var.xres,
                height: var.yres,
            });
        }
        self.var = var;
        Ok(Some(id_of(&var)))
    }

    fn with_buffer<R>(
        &mut self,
        id: BufferId,
        f: impl FnOnce(&mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let v = self.var;
        if id != id_of(&v) {
            return Ok(None);
        }
        let bpp = self.format.bytes_per_pixel();
        let start = v.yoffset as usize * self.line_length + v.xoffset as usize * bpp;
        let Some(bytes) = self.map.bytes_mut() else {
            unreachable!("the framebuffer is mapped writable")
        };
        let Some(window) = bytes.get_mut(start..) else {
            return Ok(None);
        };
        let mut surface = Surface::new(v.xres, v.yres, self.line_length, self.format, window)
            .map_err(|e| PresentError::Unsupported(format!("{}: {e}", self.path.display())))?;
        Ok(Some(f(&mut surface)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_bitfields() {
        let mut v = FbVarScreeninfo {
            bits_per_pixel: 32,
            ..Default::default()
        };
        v.red.offset = 16;
        v.green.offset = 8;
        assert_eq!(format_of(&v), Some(PixelFormat::Xrgb8888));
        v.bits_per_pixel = 16;
        v.red.offset = 11;
        v.green.offset = 5;
        assert_eq!(format_of(&v), Some(PixelFormat::Rgb565));
        v.bits_per_pixel = 24;
        assert_eq!(format_of(&v), None, "24-bit packed is not drawn");
    }

    #[test]
    fn a_missing_device_is_a_readable_error() {
        let err = FbdevPresenter::open(Path::new("/nonexistent/fb9")).unwrap_err();
        assert!(
            err.to_string().contains("opening /nonexistent/fb9"),
            "{err}"
        );
    }
}
