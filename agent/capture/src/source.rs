//! The [`FrameSource`] trait, the frame view it hands out, and how a source is
//! named in the configuration ([`SourceSpec`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

use shoulder_display::KernelOrientation;
use shoulder_display::mmap::SyncGuard;
// The display's types, named here too so that `source::{…}` keeps naming
// everything a source deals in.
pub use shoulder_display::{
    CaptureError, FrameError, MAX_EDGE, PixelFormat, Rotation, ScanoutAccess, ScanoutMut,
    ScreenGeometry, SpecError, check_frame, fourcc_name, frame_len,
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
    /// The buffer's own geometry (before [`Frame::rotated`]).
    geometry: ScreenGeometry,
    pitch: usize,
    /// How the buffer's picture is turned to read upright: rows and sizes
    /// are those of the upright picture.
    rotation: Rotation,
    /// Called with the row before each read of it (see [`Frame::interleave`]).
    before_read: Option<&'a (dyn Fn(u32) + Sync)>,
    _sync: Option<SyncGuard<'a>>,
    /// Which of the source's buffers is on screen (a DRM framebuffer id,
    /// an fbdev panning offset), when it says.
    buffer: Option<u32>,
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
        write!(
            f,
            "Frame({}, pitch {}, rotation {})",
            self.geometry, self.pitch, self.rotation
        )
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
            rotation: Rotation::Deg0,
            before_read: None,
            _sync: None,
            buffer: None,
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
            rotation: Rotation::Deg0,
            before_read: None,
            _sync: None,
            buffer: None,
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

    /// The same buffer seen upright (see [`Rotation`]): sizes, rows and
    /// reads are those of the upright picture, gathered from the buffer as
    /// they are read (no copy of the frame). Turning an already turned
    /// frame turns it further.
    pub fn rotated(mut self, rotation: Rotation) -> Self {
        self.rotation = self.rotation.then(rotation);
        self
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    pub(crate) fn with_sync(mut self, sync: Option<SyncGuard<'a>>) -> Self {
        self._sync = sync;
        self
    }

    /// Names the buffer on screen: an application that page-flips shows a
    /// new id with every new picture, so the encoder compares the whole
    /// frame at once instead of probing it ([`crate::Probing`]).
    pub fn with_buffer(mut self, id: u32) -> Self {
        self.buffer = Some(id);
        self
    }

    /// The buffer on screen, when the source says.
    pub fn buffer(&self) -> Option<u32> {
        self.buffer
    }

    /// Size and format of the (upright) picture.
    pub fn geometry(&self) -> ScreenGeometry {
        self.geometry.turned(self.rotation)
    }
    pub fn width(&self) -> u32 {
        self.geometry().width
    }
    pub fn height(&self) -> u32 {
        self.geometry().height
    }
    pub fn format(&self) -> PixelFormat {
        self.geometry.format
    }
    /// Bytes from one row of the buffer to the next.
    pub fn pitch(&self) -> usize {
        self.pitch
    }
    /// Bytes of pixels in one (upright) row, without padding.
    pub fn row_bytes(&self) -> usize {
        self.width() as usize * self.geometry.format.bytes_per_pixel()
    }

    /// Whether row `y` (without padding) equals `other` at the moment it is
    /// read. Panics if `y` is out of range or `other` is not
    /// [`Frame::row_bytes`] long (callers loop over `0..height`).
    #[inline]
    pub fn row_eq(&self, y: u32, other: &[u8]) -> bool {
        if let Some(f) = self.before_read {
            f(y);
        }
        if self.rotation != Rotation::Deg0 {
            assert_eq!(
                other.len(),
                self.row_bytes(),
                "row compare of unequal lengths"
            );
            return match self.pixels {
                Pixels::Plain(data) => match self.bpp() {
                    4 => self.turned_line::<4, _>(data, y, pixels::<4>(other), |a, b| a == b),
                    _ => self.turned_line::<2, _>(data, y, pixels::<2>(other), |a, b| a == b),
                },
                Pixels::Shared(_) => {
                    let (start, step) = self.line(y);
                    other.chunks_exact(self.bpp()).enumerate().all(|(x, want)| {
                        self.pixel_eq(start.wrapping_add_signed(step * x as isize), want)
                    })
                }
            };
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
        if self.rotation != Rotation::Deg0 {
            assert_eq!(dst.len(), self.row_bytes(), "row copy of unequal lengths");
            let bpp = self.bpp();
            match self.pixels {
                Pixels::Plain(data) => {
                    fn copy<const N: usize>(s: &[u8; N], d: &mut [u8; N]) -> bool {
                        *d = *s;
                        true
                    }
                    match bpp {
                        4 => self.turned_line::<4, _>(data, y, pixels_mut::<4>(dst), copy),
                        _ => self.turned_line::<2, _>(data, y, pixels_mut::<2>(dst), copy),
                    };
                }
                Pixels::Shared(_) => {
                    let (start, step) = self.line(y);
                    for (x, d) in dst.chunks_exact_mut(bpp).enumerate() {
                        self.read_pixel(start.wrapping_add_signed(step * x as isize), d);
                    }
                }
            }
            return;
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
        start..start + self.geometry.width as usize * self.geometry.format.bytes_per_pixel()
    }

    fn bpp(&self) -> usize {
        self.geometry.format.bytes_per_pixel()
    }

    /// Walks upright row `y` of a turned frame in `data` together with
    /// `other` (one item per pixel, in upright order) while `f(buffer pixel,
    /// item)` says go on; whether it went all the way. The row is a buffer
    /// row backwards (180°) or a buffer column (90°, 270°), walked in memory
    /// order so the compiler sees plain slices.
    #[inline]
    fn turned_line<const BPP: usize, T>(
        &self,
        data: &[u8],
        y: u32,
        other: impl DoubleEndedIterator<Item = T> + ExactSizeIterator,
        mut f: impl FnMut(&[u8; BPP], T) -> bool,
    ) -> bool {
        let bpp = BPP;
        // Fixed-size pixels: compares and copies of BPP bytes inline.
        let mut f = |a: &[u8], b: T| match <&[u8; BPP]>::try_from(a) {
            Ok(a) => f(a, b),
            Err(_) => false,
        };
        let n = other.len();
        let (start, step) = self.line(y);
        if step.unsigned_abs() == bpp {
            // 180°: one buffer row, right to left.
            let first = if step < 0 {
                start + bpp - n * bpp
            } else {
                start
            };
            let row = &data[first..first + n * bpp];
            if step < 0 {
                row.chunks_exact(bpp).rev().zip(other).all(|(a, b)| f(a, b))
            } else {
                row.chunks_exact(bpp).zip(other).all(|(a, b)| f(a, b))
            }
        } else {
            // 90° or 270°: one buffer column, top to bottom in memory.
            let top = if step < 0 {
                start - (n - 1) * self.pitch
            } else {
                start
            };
            let column = data[top..].chunks(self.pitch).take(n).map(|r| &r[..bpp]);
            if step < 0 {
                column.zip(other.rev()).all(|(a, b)| f(a, b))
            } else {
                column.zip(other).all(|(a, b)| f(a, b))
            }
        }
    }

    /// Where upright row `y` lies in the buffer: the byte offset of its
    /// first pixel and the step from one pixel to the next (along a buffer
    /// row or column, either way).
    #[inline]
    fn line(&self, y: u32) -> (usize, isize) {
        let (bw, bh) = (self.geometry.width, self.geometry.height);
        let bpp = self.geometry.format.bytes_per_pixel();
        let (bx, by) = self.rotation.to_buffer(0, y, bw, bh);
        let (nx, ny) = self.rotation.to_buffer(1.min(self.width() - 1), y, bw, bh);
        let at = |x: u32, y: u32| y as isize * self.pitch as isize + x as isize * bpp as isize;
        let start = at(bx, by);
        (start as usize, at(nx, ny) - start)
    }

    #[inline]
    fn pixel_eq(&self, at: usize, want: &[u8]) -> bool {
        match self.pixels {
            Pixels::Plain(data) => &data[at..at + want.len()] == want,
            Pixels::Shared(data) => data[at..at + want.len()]
                .iter()
                .zip(want)
                .all(|(a, b)| a.load(Ordering::Relaxed) == *b),
        }
    }

    #[inline]
    fn read_pixel(&self, at: usize, dst: &mut [u8]) {
        match self.pixels {
            Pixels::Plain(data) => dst.copy_from_slice(&data[at..at + dst.len()]),
            Pixels::Shared(data) => {
                let n = dst.len();
                for (d, s) in dst.iter_mut().zip(&data[at..at + n]) {
                    *d = s.load(Ordering::Relaxed);
                }
            }
        }
    }

    /// The whole frame as XRGB8888 rows, `width * 4` bytes each, with the X
    /// byte zero: what the expert's framebuffer holds after an update.
    pub fn to_xrgb8888(&self) -> Vec<u8> {
        let w = self.width() as usize;
        let mut out = vec![0u8; w * 4 * self.height() as usize];
        let mut row = vec![0u8; self.row_bytes()];
        for (y, dst) in out.chunks_exact_mut(w * 4).enumerate() {
            self.read_row(y as u32, &mut row);
            shoulder_display::convert::row_to_xrgb8888(self.format(), &row, dst);
            shoulder_display::convert::zero_x(dst);
        }
        out
    }
}

/// A row as `N`-byte pixels.
fn pixels<const N: usize>(
    row: &[u8],
) -> impl DoubleEndedIterator<Item = &[u8; N]> + ExactSizeIterator {
    row.as_chunks::<N>().0.iter()
}

/// A row to write as `N`-byte pixels.
fn pixels_mut<const N: usize>(
    row: &mut [u8],
) -> impl DoubleEndedIterator<Item = &mut [u8; N]> + ExactSizeIterator {
    row.as_chunks_mut::<N>().0.iter_mut()
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

    /// Which buffer is on screen now, when the source can tell cheaply
    /// without capturing (DRM: one GETCRTC): the same id as
    /// [`Frame::buffer`]. A page-flipping application shows a new id with
    /// each new picture, so an idle session looks at this between its
    /// slower polls and sees a flip at once. `None`: the source cannot tell
    /// (or cannot now; the next capture reports why).
    fn buffer_on_screen(&mut self) -> Option<u32> {
        None
    }

    /// A short description for logs: "drm /dev/dri/card0 crtc 41", "rawfile /tmp/x".
    fn describe(&self) -> String;

    /// What the display itself says about how its picture reaches the person
    /// (DRM: the plane's rotation and the panel's orientation). `None`: the
    /// source cannot tell.
    fn orientation(&mut self) -> Option<Result<KernelOrientation, CaptureError>> {
        None
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
