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
    /// A compressed or unknown modifier: the message says which and how to
    /// get linear buffers instead.
    #[error("{path}: framebuffer {format}: {reason}")]
    UnsupportedModifier {
        path: PathBuf,
        format: String,
        #[source]
        reason: crate::tiling::UnsupportedModifier,
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
    /// Whether waiting may fix it, so the agent reports the screen
    /// unavailable and retries about once a second: the display is off or
    /// between modesets, no output is connected, a raw file is being
    /// rewritten, or the device node is gone or busy for a moment (a driver
    /// reloading, a USB display replugged). Everything else (missing
    /// `CAP_SYS_ADMIN`, permissions, a pixel format or layout we cannot
    /// read, a bad source name) stays wrong until someone changes something,
    /// so retrying would only repeat the error.
    pub fn is_transient(&self) -> bool {
        match self {
            CaptureError::DisplayOff { .. }
            | CaptureError::FileTooShort { .. }
            | CaptureError::NoDisplay { .. } => true,
            CaptureError::Open { source, .. } | CaptureError::Io { source, .. } => {
                transient_io(source)
            }
            _ => false,
        }
    }
}

/// Device nodes that vanish or are busy for a while: ENOENT, ENODEV, ENXIO,
/// EBUSY, EAGAIN, EINTR.
fn transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::NotFound
            | ErrorKind::ResourceBusy
            | ErrorKind::WouldBlock
            | ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::NODEV.raw_os_error()
            || code == rustix::io::Errno::NXIO.raw_os_error()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(errno: rustix::io::Errno) -> CaptureError {
        CaptureError::Open {
            path: "/dev/dri/card0".into(),
            source: std::io::Error::from_raw_os_error(errno.raw_os_error()),
        }
    }

    #[test]
    fn waiting_helps_only_where_the_screen_can_come_back() {
        use rustix::io::Errno;
        for e in [
            Errno::NOENT,
            Errno::NODEV,
            Errno::NXIO,
            Errno::BUSY,
            Errno::AGAIN,
        ] {
            assert!(open(e).is_transient(), "{e:?}");
        }
        assert!(
            CaptureError::DisplayOff {
                detail: "crtc 41 is inactive".into()
            }
            .is_transient()
        );
        assert!(!open(Errno::ACCESS).is_transient());
        assert!(
            !CaptureError::MissingCapSysAdmin {
                path: "/dev/dri/card0".into()
            }
            .is_transient()
        );
        assert!(
            !CaptureError::UnsupportedFormat {
                path: "/dev/fb0".into(),
                format: "YUYV".into()
            }
            .is_transient()
        );
    }
}
