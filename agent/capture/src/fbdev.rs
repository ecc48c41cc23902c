//! fbdev capture (`/dev/fb0`), for devices without KMS, read through
//! [`shoulder_display::fbdev::FbdevDisplay`] (panning and mode changes are
//! followed there).

use std::path::{Path, PathBuf};

use shoulder_display::fbdev::FbdevDisplay;

use crate::source::{CaptureError, Frame, FrameSource, ScreenGeometry};

/// The fbdev frame source.
#[derive(Debug)]
pub struct FbdevSource {
    display: FbdevDisplay,
    /// The device node, for errors (kept apart: the frame borrows `display`).
    path: PathBuf,
}

impl FbdevSource {
    /// Opens `path` for capture (read-only).
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        Ok(Self {
            display: FbdevDisplay::open(path)?,
            path: path.to_owned(),
        })
    }
}

impl FrameSource for FbdevSource {
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        self.display.geometry()
    }

    fn capture(&mut self) -> Result<Frame<'_>, CaptureError> {
        let s = self.display.scanout()?;
        Frame::new(s.pixels, s.geometry, s.pitch)
            .map(|f| f.with_buffer(s.buffer_id))
            .map_err(|source| CaptureError::Frame {
                path: self.path.clone(),
                source,
            })
    }

    fn describe(&self) -> String {
        self.display.describe()
    }
}
