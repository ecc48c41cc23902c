//! Why the display could not be read, written or named.

use std::path::PathBuf;

use crate::format::{FrameError, MAX_EDGE, ScreenGeometry};

/// Why a capture failed. [`CaptureError::is_transient`] tells whether to wait
/// and try again (display off, file being rewritten) or to give up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Nothing is on screen: no active CRTC, or its primary plane shows no
    /// framebuffer (display off, DPMS, between modesets). Transient: the agent
    /// reports "screen unavailable" and polls slowly until it comes back.
    #[error("the display is off: {detail}")]
    DisplayOff { detail: String },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} on {path} failed: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}: the framebuffer's handle is hidden from this process (GETFB2 returned handle 0): \
         capturing another process's buffer needs CAP_SYS_ADMIN (run the agent as root or grant it the capability)"
    )]
    MissingCapSysAdmin { path: PathBuf },
    #[error(
        "{path}: pixel format {format} is not supported (supported: XRGB8888, ARGB8888, XBGR8888, ABGR8888, RGB565)"
    )]
    UnsupportedFormat { path: PathBuf, format: String },
    #[error(
        "{path}: framebuffer {format} uses modifier 0x{modifier:016x} (tiled or compressed); only linear buffers can be read. \
         Make the application allocate linear scanout buffers"
    )]
    UnsupportedModifier {
        path: PathBuf,
        format: String,
        modifier: u64,
    },
    #[error("{path}: {detail}")]
    Unsupported { path: PathBuf, detail: String },
    #[error("{path}: no display found: {detail}")]
    NoDisplay { path: PathBuf, detail: String },
    #[error(
        "{path} has {len} bytes, a {geometry} frame needs {needed}: the file is shorter than the screen (being rewritten?)"
    )]
    FileTooShort {
        path: PathBuf,
        len: u64,
        needed: u64,
        geometry: ScreenGeometry,
    },
    #[error("{path}: {source}")]
    Frame {
        path: PathBuf,
        #[source]
        source: FrameError,
    },
    #[error("bad capture source: {0}")]
    Spec(#[from] SpecError),
}

impl CaptureError {
    /// Whether waiting may fix it (display off, file shorter for a moment);
    /// the agent then reports the screen unavailable and retries slowly.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CaptureError::DisplayOff { .. } | CaptureError::FileTooShort { .. }
        )
    }
}

/// Why a source name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    #[error(
        "unknown capture source kind {0:?}: use drm[:DEVICE[@CONNECTOR]], fbdev[:DEVICE], rawfile:PATH@WxH:FORMAT or synthetic[:WxH]"
    )]
    UnknownKind(String),
    #[error(
        "rawfile source {0:?} has no size: write rawfile:PATH@WxH:FORMAT, e.g. rawfile:/tmp/screen.raw@1920x1080:XRGB8888"
    )]
    MissingSize(String),
    #[error(
        "rawfile source {0:?} has no pixel format: add :FORMAT after the size, e.g. @1920x1080:XRGB8888"
    )]
    MissingFormat(String),
    #[error("rawfile source has an empty path: write rawfile:PATH@WxH:FORMAT")]
    EmptyPath,
    #[error("size {0:?} is not WIDTHxHEIGHT with both between 1 and {MAX_EDGE}, e.g. 1920x1080")]
    BadSize(String),
    #[error("unknown pixel format {0:?}: use XRGB8888, ARGB8888, XBGR8888, ABGR8888 or RGB565")]
    UnknownFormat(String),
    #[error("pitch {0:?} is not a number of bytes at least one row long")]
    BadPitch(String),
    #[error("{0:?}: empty device path after the colon")]
    EmptyDevice(String),
}
