//! The [`FrameSource`] trait, the frame view it hands out, and how a source is
//! named in the configuration ([`SourceSpec`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use shoulder_display::mmap::SyncGuard;
// The display's types, named here too so that `source::{…}` keeps naming
// everything a source deals in.
pub use shoulder_display::{
    CaptureError, FrameError, MAX_EDGE, PixelFormat, ScanoutAccess, ScanoutMut, ScreenGeometry,
    SpecError, check_frame, fourcc_name, frame_len,
};

use crate::cursor::CursorUpdate;

/// A borrowed view of the screen's current pixels. For mapped sources this is
/// the live mapping itself (no copy), which the application may be drawing
/// into while it is read: two reads of one row can disagree. So the frame
/// offers no lasting borrow of its rows, only a compare ([`Frame::row_eq`]) and
/// a copy ([`Frame::read_row`]); whoever needs a row's content more than once
/// copies it once and works on the copy.
pub struct Frame<'a> {
    pixels: Pixels<'a>,
    geometry: ScreenGeometry,
    pitch: usize,
    /// Called with the row before each read of it (see [`Frame::interleave`]).
    before_read: Option<&'a (dyn Fn(u32) + Sync)>,
    _sync: Option<SyncGuard<'a>>,
}

/// Where a frame's bytes live.
#[derive(Clone, Copy)]
enum Pixels<'a> {
    /// Mappings and buffers: read with plain loads (`memcmp`, `memcpy`).
    Plain(&'a [u8]),
    /// Memory another thread of this process writes meanwhile: every byte is
    /// read with an atomic load, so racing with the writer is defined.
    Shared(&'a [AtomicU8]),
}

impl fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({}, pitch {})", self.geometry, self.pitch)
    }
}

impl<'a> Frame<'a> {
    /// Views `data` as a frame: row `y` starts at `y * pitch`.
    pub fn new(data: &'a [u8], geometry: ScreenGeometry, pitch: usize) -> Result<Self, FrameError> {
        check_frame(data.len(), geometry, pitch)?;
        Ok(Self {
            pixels: Pixels::Plain(data),
            geometry,
            pitch,
            before_read: None,
            _sync: None,
        })
    }

    /// Views memory that another thread keeps writing while the frame is
    /// read (an in-process screen, a test's racing writer): each byte is read
    /// atomically, one at a time, so this is slower than [`Frame::new`].
    pub fn shared(
        data: &'a [AtomicU8],
        geometry: ScreenGeometry,
        pitch: usize,
    ) -> Result<Self, FrameError> {
        check_frame(data.len(), geometry, pitch)?;
        Ok(Self {
            pixels: Pixels::Shared(data),
            geometry,
            pitch,
            before_read: None,
            _sync: None,
        })
    }

    /// Calls `f(y)` before every read of row `y` ([`Frame::row_eq`],
    /// [`Frame::read_row`]), so that a test can draw into a
    /// [`Frame::shared`] frame between any two reads of the encoder, the way
    /// an application drawing at the same time can, but reproducibly.
    pub fn interleave(mut self, f: &'a (dyn Fn(u32) + Sync)) -> Self {
        self.before_read = Some(f);
        self
    }

    pub(crate) fn with_sync(mut self, sync: Option<SyncGuard<'a>>) -> Self {
        self._sync = sync;
        self
    }

    pub fn geometry(&self) -> ScreenGeometry {
        self.geometry
    }
    pub fn width(&self) -> u32 {
        self.geometry.width
    }
    pub fn height(&self) -> u32 {
        self.geometry.height
    }
    pub fn format(&self) -> PixelFormat {
        self.geometry.format
    }
    /// Bytes from one row to the next.
    pub fn pitch(&self) -> usize {
        self.pitch
    }
    /// Bytes of pixels in one row (without padding).
    pub fn row_bytes(&self) -> usize {
        self.geometry.width as usize * self.geometry.format.bytes_per_pixel()
    }

    /// Whether row `y` (without padding) equals `other` at the moment it is
    /// read. Panics if `y` is out of range or `other` is not
    /// [`Frame::row_bytes`] long (callers loop over `0..height`).
    #[inline]
    pub fn row_eq(&self, y: u32, other: &[u8]) -> bool {
        if let Some(f) = self.before_read {
            f(y);
        }
        let range = self.row_range(y);
        assert_eq!(other.len(), range.len(), "row compare of unequal lengths");
        match self.pixels {
            Pixels::Plain(data) => &data[range] == other,
            Pixels::Shared(data) => data[range]
                .iter()
                .zip(other)
                .all(|(a, b)| a.load(Ordering::Relaxed) == *b),
        }
    }

    /// Copies row `y` (without padding) into `dst`, which must be
    /// [`Frame::row_bytes`] long. Panics if `y` is out of range.
    #[inline]
    pub fn read_row(&self, y: u32, dst: &mut [u8]) {
        if let Some(f) = self.before_read {
            f(y);
        }
        let range = self.row_range(y);
        match self.pixels {
            Pixels::Plain(data) => dst.copy_from_slice(&data[range]),
            Pixels::Shared(data) => {
                assert_eq!(dst.len(), range.len(), "row copy of unequal lengths");
                for (d, s) in dst.iter_mut().zip(&data[range]) {
                    *d = s.load(Ordering::Relaxed);
                }
            }
        }
    }

    fn row_range(&self, y: u32) -> std::ops::Range<usize> {
        let start = y as usize * self.pitch;
        start..start + self.row_bytes()
    }

    /// The whole frame as XRGB8888 rows, `width * 4` bytes each, with the X
    /// byte zero: what the expert's framebuffer holds after an update.
    pub fn to_xrgb8888(&self) -> Vec<u8> {
        let w = self.geometry.width as usize;
        let mut out = vec![0u8; w * 4 * self.geometry.height as usize];
        let mut row = vec![0u8; self.row_bytes()];
        for (y, dst) in out.chunks_exact_mut(w * 4).enumerate() {
            self.read_row(y as u32, &mut row);
            shoulder_display::convert::row_to_xrgb8888(self.format(), &row, dst);
            shoulder_display::convert::zero_x(dst);
        }
        out
    }
}

/// Where the screen's pixels come from.
///
/// `capture` is called on every poll tick and must re-read the live screen
/// (DRM: re-query the plane's current framebuffer, apps page-flip; raw file:
/// re-check its size). The returned frame borrows the source until dropped.
pub trait FrameSource: Send {
    /// Size and format of the screen now. A change (mode switch) shows up here
    /// and in the next frame; the encoder then starts a new screen generation.
    fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError>;

    /// The current pixels.
    fn capture(&mut self) -> Result<Frame<'_>, CaptureError>;

    /// The pointer cursor, when the source shows one apart from the frame (DRM
    /// cursor plane). `None`: no separate cursor. The shape is included only
    /// when it changed since the previous call.
    fn cursor(&mut self) -> Result<Option<CursorUpdate>, CaptureError> {
        Ok(None)
    }

    /// A short description for logs: "drm /dev/dri/card0 crtc 41", "rawfile /tmp/x".
    fn describe(&self) -> String;
}

/// A capture source as named in configuration and on command lines.
///
/// - `drm` or `drm:DEVICE` or `drm:DEVICE@CONNECTOR` (e.g.
///   `drm:/dev/dri/card0@HDMI-A-1`; default: first card, first active CRTC)
/// - `fbdev` or `fbdev:DEVICE` (default `/dev/fb0`)
/// - `rawfile:PATH@WxH:FORMAT` (e.g. `rawfile:/tmp/screen.raw@1920x1080:XRGB8888`;
///   FORMAT is one of XRGB8888, ARGB8888, XBGR8888, ABGR8888, RGB565;
///   rows are packed, or add `:PITCH` in bytes)
/// - `synthetic` or `synthetic:WxH` (the demo kiosk screen, default 1280x720)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Drm {
        device: Option<PathBuf>,
        connector: Option<String>,
    },
    Fbdev {
        device: PathBuf,
    },
    RawFile {
        path: PathBuf,
        geometry: ScreenGeometry,
        pitch: usize,
    },
    Synthetic {
        width: u32,
        height: u32,
    },
}

/// Default size of the synthetic screen: small enough for quick demos.
pub const SYNTHETIC_DEFAULT_SIZE: (u32, u32) = (1280, 720);

fn parse_size(s: &str) -> Result<(u32, u32), SpecError> {
    let bad = || SpecError::BadSize(s.to_owned());
    let (w, h) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if w == 0 || h == 0 || w > MAX_EDGE || h > MAX_EDGE {
        return Err(bad());
    }
    Ok((w, h))
}

impl FromStr for SourceSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        let s = s.trim();
        let (kind, rest) = match s.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (s, None),
        };
        let device = |rest: Option<&str>| -> Result<Option<String>, SpecError> {
            match rest {
                None => Ok(None),
                Some("") => Err(SpecError::EmptyDevice(s.to_owned())),
                Some(r) => Ok(Some(r.to_owned())),
            }
        };
        match kind {
            "drm" => {
                let (device, connector) = match device(rest)? {
                    None => (None, None),
                    Some(r) => match r.rsplit_once('@') {
                        Some((d, c)) if !c.is_empty() => (
                            (!d.is_empty()).then(|| PathBuf::from(d)),
                            Some(c.to_owned()),
                        ),
                        _ => (Some(PathBuf::from(r)), None),
                    },
                };
                Ok(SourceSpec::Drm { device, connector })
            }
            "fbdev" => Ok(SourceSpec::Fbdev {
                device: device(rest)?.map_or_else(|| PathBuf::from("/dev/fb0"), PathBuf::from),
            }),
            "synthetic" => {
                let (width, height) = match rest {
                    None | Some("") => SYNTHETIC_DEFAULT_SIZE,
                    Some(r) => parse_size(r)?,
                };
                Ok(SourceSpec::Synthetic { width, height })
            }
            "rawfile" => {
                let rest = rest.unwrap_or("");
                let (path, tail) = rest
                    .rsplit_once('@')
                    .ok_or_else(|| SpecError::MissingSize(s.to_owned()))?;
                if path.is_empty() {
                    return Err(SpecError::EmptyPath);
                }
                let mut fields = tail.split(':');
                let size = fields.next().unwrap_or("");
                let (width, height) = parse_size(size)?;
                let format: PixelFormat = fields
                    .next()
                    .filter(|f| !f.is_empty())
                    .ok_or_else(|| SpecError::MissingFormat(s.to_owned()))?
                    .parse()?;
                let row = width as usize * format.bytes_per_pixel();
                let pitch = match fields.next() {
                    None => row,
                    Some(p) => match p.parse::<usize>() {
                        Ok(p) if p >= row => p,
                        _ => return Err(SpecError::BadPitch(p.to_owned())),
                    },
                };
                if let Some(extra) = fields.next() {
                    return Err(SpecError::BadPitch(extra.to_owned()));
                }
                Ok(SourceSpec::RawFile {
                    path: PathBuf::from(path),
                    geometry: ScreenGeometry {
                        width,
                        height,
                        format,
                    },
                    pitch,
                })
            }
            other => Err(SpecError::UnknownKind(other.to_owned())),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Drm { device, connector } => {
                f.write_str("drm")?;
                if device.is_some() || connector.is_some() {
                    f.write_str(":")?;
                }
                if let Some(d) = device {
                    write!(f, "{}", d.display())?;
                }
                if let Some(c) = connector {
                    write!(f, "@{c}")?;
                }
                Ok(())
            }
            SourceSpec::Fbdev { device } => write!(f, "fbdev:{}", device.display()),
            SourceSpec::RawFile {
                path,
                geometry,
                pitch,
            } => {
                write!(
                    f,
                    "rawfile:{}@{}x{}:{}",
                    path.display(),
                    geometry.width,
                    geometry.height,
                    geometry.format
                )?;
                if *pitch != geometry.width as usize * geometry.format.bytes_per_pixel() {
                    write!(f, ":{pitch}")?;
                }
                Ok(())
            }
            SourceSpec::Synthetic { width, height } => write!(f, "synthetic:{width}x{height}"),
        }
    }
}
