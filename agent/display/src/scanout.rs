//! The buffer the display scans out: read by capture, written by the banner.

use std::fmt;

use crate::error::CaptureError;
use crate::format::ScreenGeometry;
use crate::mmap::SyncGuard;

/// The scanned-out buffer, mapped for reading. Row `y` starts at
/// `y * pitch`. The application may be drawing into it meanwhile (see
/// [`crate::mmap::Mapping`]).
pub struct Scanout<'a> {
    pub pixels: &'a [u8],
    pub geometry: ScreenGeometry,
    pub pitch: usize,
    /// As [`ScanoutMut::buffer_id`].
    pub buffer_id: u32,
    /// The dma-buf access bracket, ended when dropped: keep it as long as
    /// `pixels` is read.
    pub sync: Option<SyncGuard<'a>>,
}

impl fmt::Debug for Scanout<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Scanout({}, pitch {}, buffer {})",
            self.geometry, self.pitch, self.buffer_id
        )
    }
}

/// Write access to the buffer the display is scanning out, for presenters
/// that draw a banner straight into it (DRM dumb/linear buffers, fbdev).
///
/// The buffer belongs to another process (the kiosk app) which may repaint or
/// flip at any time: callers redraw whenever [`ScanoutMut::buffer_id`] changes
/// or the pixels under the banner no longer match what was drawn.
pub trait ScanoutAccess {
    /// Maps the buffer on screen now for reading and writing.
    fn scanout_mut(&mut self) -> Result<ScanoutMut<'_>, CaptureError>;

    /// Tells the display that pixels in the rectangle changed, for drivers
    /// that copy from the buffer only when told (DIRTYFB). Best effort: the
    /// kernel may refuse it to non-masters; drivers that scan out the buffer
    /// directly do not need it.
    fn flush(&mut self, x: u32, y: u32, w: u32, h: u32) -> Result<(), CaptureError>;
}

/// The scanned-out buffer, mapped writable. Row `y` starts at `y * pitch`.
pub struct ScanoutMut<'a> {
    pub pixels: &'a mut [u8],
    pub geometry: ScreenGeometry,
    pub pitch: usize,
    /// Identifies the buffer: the DRM framebuffer id, or for fbdev the byte
    /// offset of the visible area in video memory. Changes when the
    /// application flips (or pans) to another buffer.
    pub buffer_id: u32,
    pub(crate) _sync: Option<SyncGuard<'a>>,
}

impl fmt::Debug for ScanoutMut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ScanoutMut({}, pitch {}, buffer {})",
            self.geometry, self.pitch, self.buffer_id
        )
    }
}

impl<'a> ScanoutMut<'a> {
    /// A view of plain memory (no dma-buf bracket): for in-memory
    /// [`ScanoutAccess`] implementations such as test fakes.
    pub fn new(
        pixels: &'a mut [u8],
        geometry: ScreenGeometry,
        pitch: usize,
        buffer_id: u32,
    ) -> Self {
        Self {
            pixels,
            geometry,
            pitch,
            buffer_id,
            _sync: None,
        }
    }
}
