//! The [`FrameSource`] trait, the frame view it hands out, and how a source is
//! named in the configuration ([`SourceSpec`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::cursor::CursorUpdate;
use crate::mmap::SyncGuard;

/// Largest screen edge a source may report; the wire cannot carry more.
pub const MAX_EDGE: u32 = shoulder_proto::msg::MAX_SCREEN_EDGE as u32;

/// Pixel layouts the capture understands. All are linear (not tiled) and
/// little-endian, named as DRM fourccs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Bytes B, G, R, X. The wire format.
    Xrgb8888,
    /// Bytes B, G, R, A (alpha ignored: the scanout shows it opaque).
    Argb8888,
    /// Bytes R, G, B, X.
    Xbgr8888,
    /// Bytes R, G, B, A (alpha ignored).
    Abgr8888,
    /// 16 bits little-endian: red 5 (high), green 6, blue 5 (low).
    Rgb565,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Xrgb8888,
        PixelFormat::Argb8888,
        PixelFormat::Xbgr8888,
        PixelFormat::Abgr8888,
        PixelFormat::Rgb565,
    ];

    pub const fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Rgb565 => 2,
            _ => 4,
        }
    }

    /// The DRM fourcc code of this format.
    pub const fn fourcc(self) -> u32 {
        const fn fourcc(c: &[u8; 4]) -> u32 {
            (c[0] as u32) | (c[1] as u32) << 8 | (c[2] as u32) << 16 | (c[3] as u32) << 24
        }
        match self {
            PixelFormat::Xrgb8888 => fourcc(b"XR24"),
            PixelFormat::Argb8888 => fourcc(b"AR24"),
            PixelFormat::Xbgr8888 => fourcc(b"XB24"),
            PixelFormat::Abgr8888 => fourcc(b"AB24"),
            PixelFormat::Rgb565 => fourcc(b"RG16"),
        }
    }

    /// The format with DRM fourcc `code`, if we support it.
    pub fn from_fourcc(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    pub const fn name(self) -> &'static str {
        match self {
            PixelFormat::Xrgb8888 => "XRGB8888",
            PixelFormat::Argb8888 => "ARGB8888",
            PixelFormat::Xbgr8888 => "XBGR8888",
            PixelFormat::Abgr8888 => "ABGR8888",
            PixelFormat::Rgb565 => "RGB565",
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PixelFormat {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| SpecError::UnknownFormat(s.to_owned()))
    }
}

/// Prints a DRM fourcc as its four characters (`XR24`), or hex when it is not
/// printable.
pub fn fourcc_name(code: u32) -> String {
    let b = code.to_le_bytes();
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("{} (0x{code:08x})", String::from_utf8_lossy(&b).trim_end())
    } else {
        format!("0x{code:08x}")
    }
}

/// Size and format of the screen as a source shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScreenGeometry {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

impl fmt::Display for ScreenGeometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{} {}", self.width, self.height, self.format)
    }
}

/// Why pixels cannot be viewed as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("screen size {width}×{height} is not possible (each side 1..={MAX_EDGE})")]
    BadSize { width: u32, height: u32 },
    #[error("pitch {pitch} bytes is smaller than one row of {width} {format} pixels")]
    PitchTooSmall {
        pitch: usize,
        width: u32,
        format: PixelFormat,
    },
    #[error(
        "pixel buffer has {len} bytes, a {width}×{height} frame with pitch {pitch} needs {needed}"
    )]
    TooShort {
        len: usize,
        needed: usize,
        width: u32,
        height: u32,
        pitch: usize,
    },
}

/// Bytes needed for `height` rows of `row_bytes`, `pitch` apart (the last row
/// need not be padded).
pub(crate) fn frame_len(pitch: usize, row_bytes: usize, height: u32) -> Option<usize> {
    pitch
        .checked_mul(height.checked_sub(1)? as usize)?
        .checked_add(row_bytes)
}

pub(crate) fn check_frame(
    len: usize,
    geometry: ScreenGeometry,
    pitch: usize,
) -> Result<(), FrameError> {
    let ScreenGeometry {
        width,
        height,
        format,
    } = geometry;
    if width == 0 || height == 0 || width > MAX_EDGE || height > MAX_EDGE {
        return Err(FrameError::BadSize { width, height });
    }
    let row = width as usize * format.bytes_per_pixel();
    if pitch < row {
        return Err(FrameError::PitchTooSmall {
            pitch,
            width,
            format,
        });
    }
    // Cannot overflow: width, height ≤ 8192 and pitch is a real buffer's.
    let needed = frame_len(pitch, row, height).unwrap_or(usize::MAX);
    if len < needed {
        return Err(FrameError::TooShort {
            len,
            needed,
            width,
            height,
            pitch,
        });
    }
    Ok(())
}

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
            crate::convert::row_to_xrgb8888(self.format(), &row, dst);
            crate::convert::zero_x(dst);
        }
        out
    }
}

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
