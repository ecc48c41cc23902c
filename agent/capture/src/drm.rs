//! DRM/KMS capture: the buffer a CRTC is scanning out, whoever drew it, read
//! through [`shoulder_display::drm::DrmDisplay`] (which finds the card and
//! CRTC and maps the framebuffers), plus the cursor plane.

use std::path::{Path, PathBuf};

use shoulder_display::KernelOrientation;
use shoulder_display::drm::DrmDisplay;
pub use shoulder_display::drm::{DrmOptions, Output, outputs};

use crate::cursor::{CursorTracker, CursorUpdate};
use crate::source::{CaptureError, Frame, FrameSource, ScreenGeometry};

/// The DRM/KMS frame source.
#[derive(Debug)]
pub struct DrmSource {
    display: DrmDisplay,
    /// The card node, for errors (kept apart: the frame borrows `display`).
    path: PathBuf,
    cursor: CursorTracker,
}

impl DrmSource {
    /// Opens `device` (or the first card with a display) for capture; picks
    /// `connector`'s CRTC (or the first active one) on first capture.
    pub fn open(device: Option<&Path>, connector: Option<&str>) -> Result<Self, CaptureError> {
        Ok(Self::new(DrmDisplay::open(device, connector)?))
    }

    pub fn open_with(opts: DrmOptions) -> Result<Self, CaptureError> {
        Ok(Self::new(DrmDisplay::open_with(opts)?))
    }

    /// Captures from an already open display.
    pub fn new(display: DrmDisplay) -> Self {
        Self {
            path: display.path().to_owned(),
            display,
            cursor: CursorTracker::new(),
        }
    }

    /// The CRTC being captured, once chosen.
    pub fn crtc(&self) -> Option<u32> {
        self.display.crtc()
    }
}

impl FrameSource for DrmSource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        self.display.geometry()
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        let s = self.display.scanout()?;
        let frame =
            Frame::new(s.pixels, s.geometry, s.pitch).map_err(|source| CaptureError::Frame {
                path: self.path.clone(),
                source,
            })?;
        Ok(frame.with_sync(s.sync).with_buffer(s.buffer_id))
    }

    fn cursor(&mut self) -> Result<Option<CursorUpdate>, CaptureError> {
        let Some((state, image)) = self.display.read_cursor()? else {
            return Ok(None);
        };
        Ok(Some(self.cursor.observe(state, image.as_ref())))
    }

    fn buffer_on_screen(&mut self) -> Option<u32> {
        self.display.fb_on_screen()
    }

    fn describe(&self) -> String {
        self.display.describe()
    }

    fn orientation(&mut self) -> Option<Result<KernelOrientation, CaptureError>> {
        Some(self.display.orientation())
    }
}
