//! The DRM/KMS side of the kiosk: become master, pick a connector, CRTC and
//! mode, allocate dumb buffers, map them, show them (set the CRTC once, then
//! page-flip or draw in place).
//!
//! This module maps dumb buffers itself (rather than through
//! `drm::control::Device::map_dumb_buffer`, whose mapping borrows the buffer)
//! so a mapping can live next to its buffer for the whole run.
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use drm::buffer::{Buffer as _, DrmFourcc};
use drm::control::{
    self, Device as _, Event, Mode, PageFlipFlags, connector, crtc, dumbbuffer::DumbBuffer,
    framebuffer,
};

/// Most buffers the kiosk allocates: enough for triple buffering and one
/// more, and a bound on video memory use.
pub const MAX_BUFFERS: usize = 4;

/// Errors of the display, each naming what failed.
#[derive(Debug)]
pub enum DisplayError {
    /// Opening the card failed.
    Open { path: PathBuf, source: io::Error },
    /// A DRM ioctl failed.
    Ioctl {
        what: &'static str,
        source: io::Error,
    },
    /// No connector with a display attached.
    NoConnector,
    /// The connector's encoders cannot drive any CRTC.
    NoCrtc,
    /// The requested mode is not offered by the connector.
    NoSuchMode {
        wanted: (u32, u32),
        available: Vec<(u16, u16)>,
    },
}

impl fmt::Display for DisplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => write!(
                f,
                "cannot open {}: {source} (is the DRM driver loaded, and are we root?)",
                path.display()
            ),
            Self::Ioctl { what, source } => write!(f, "{what} failed: {source}"),
            Self::NoConnector => write!(f, "no connected display connector"),
            Self::NoCrtc => write!(f, "no CRTC can drive the connected connector"),
            Self::NoSuchMode { wanted, available } => {
                write!(f, "mode {}x{} not offered; available:", wanted.0, wanted.1)?;
                for (w, h) in available {
                    write!(f, " {w}x{h}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DisplayError {}

fn ioctl(what: &'static str) -> impl FnOnce(io::Error) -> DisplayError {
    move |source| DisplayError::Ioctl { what, source }
}

/// An open DRM card.
#[derive(Debug)]
pub struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}
impl control::Device for Card {}

/// A shared, writable mapping of a dumb buffer, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(card: &Card, buffer: &DumbBuffer, len: usize) -> Result<Self, DisplayError> {
        let info = drm_ffi::mode::dumbbuffer::map(card.as_fd(), buffer.handle().into(), 0, 0)
            .map_err(ioctl("DRM_IOCTL_MODE_MAP_DUMB"))?;
        // SAFETY: we ask the kernel for a new shared mapping at an address of
        // its choice (null hint), of the dumb buffer's size, at the fake
        // offset MAP_DUMB returned for this buffer on this fd. Nothing else
        // in the process aliases the new pages; the result is checked below.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                card.as_fd(),
                info.offset,
            )
        }
        .map_err(|e| DisplayError::Ioctl {
            what: "mmap of a dumb buffer",
            source: e.into(),
        })?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(DisplayError::Ioctl {
            what: "mmap of a dumb buffer",
            source: io::Error::other("null mapping"),
        })?;
        Ok(Self { ptr, len })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live mapping of `len` bytes (created in `new`,
        // unmapped only in `drop`), readable and writable; `&mut self`
        // guarantees no other slice of it exists in this process. The GPU
        // may scan it out concurrently, which only reads.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping made in `new`,
        // and no slice borrowed from it outlives `&mut self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One scanout buffer: the dumb buffer, its framebuffer object and mapping.
struct Buffer {
    dumb: DumbBuffer,
    fb: framebuffer::Handle,
    map: Mapping,
}

/// A buffer handed out for drawing.
#[derive(Debug)]
pub struct Target<'a> {
    /// Index of the buffer (stable until the next mode change).
    pub index: usize,
    /// XRGB8888 pixels, `pitch` bytes per row.
    pub pixels: &'a mut [u8],
    /// Bytes per row.
    pub pitch: usize,
    /// Size in pixels.
    pub size: (u32, u32),
}

/// The display: one CRTC driving one connector with our buffers.
pub struct Display {
    card: Card,
    connector: connector::Handle,
    crtc: crtc::Handle,
    modes: Vec<Mode>,
    mode: Mode,
    buffers: Vec<Buffer>,
    front: usize,
    flip_pending: bool,
    flipping: bool,
    /// The pointer image on the cursor plane (`--cursor`).
    cursor: Option<(DumbBuffer, Mapping)>,
}

/// Edge of the cursor image: the size every driver with a cursor plane takes.
pub const CURSOR_EDGE: u32 = 64;

impl fmt::Debug for Display {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Display")
            .field("size", &self.size())
            .field("buffers", &self.buffers.len())
            .field("front", &self.front)
            .field("flip_pending", &self.flip_pending)
            .finish()
    }
}

impl Display {
    /// Opens `path`, becomes DRM master, picks the first connected
    /// connector, a CRTC for it and the mode `wanted` (or the preferred mode).
    /// With `flipping`, `buffers` buffers are allocated and page-flipped;
    /// without, one buffer is drawn in place.
    pub fn open(
        path: &Path,
        wanted: Option<(u32, u32)>,
        buffers: usize,
        flipping: bool,
    ) -> Result<Self, DisplayError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DisplayError::Open {
                path: path.into(),
                source,
            })?;
        let card = Card(file);
        // The first opener is master already; asking again makes a lost
        // master (another process opened first) an explicit error.
        drm::Device::acquire_master_lock(&card).map_err(ioctl("DRM_IOCTL_SET_MASTER"))?;
        let res = card
            .resource_handles()
            .map_err(ioctl("DRM_IOCTL_MODE_GETRESOURCES"))?;

        let mut chosen = None;
        for &handle in res.connectors() {
            let info = card
                .get_connector(handle, true)
                .map_err(ioctl("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            if info.state() == connector::State::Connected && !info.modes().is_empty() {
                chosen = Some(info);
                break;
            }
        }
        let connector = chosen.ok_or(DisplayError::NoConnector)?;
        let crtc = connector
            .encoders()
            .iter()
            .filter_map(|&e| card.get_encoder(e).ok())
            .flat_map(|enc| res.filter_crtcs(enc.possible_crtcs()))
            .next()
            .ok_or(DisplayError::NoCrtc)?;
        let modes = connector.modes().to_vec();
        let mode = pick_mode(&modes, wanted)?;

        let mut display = Self {
            card,
            connector: connector.handle(),
            crtc,
            modes,
            mode,
            buffers: Vec::new(),
            front: 0,
            flip_pending: false,
            flipping,
            cursor: None,
        };
        let count = if flipping {
            buffers.clamp(2, MAX_BUFFERS)
        } else {
            1
        };
        display.allocate(count)?;
        Ok(display)
    }

    /// The card, for polling its fd for page-flip events.
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// Current mode size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h))
    }

    /// Number of buffers in use.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// Whether a page flip is queued and not yet completed.
    pub fn flip_pending(&self) -> bool {
        self.flip_pending
    }

    fn allocate(&mut self, count: usize) -> Result<(), DisplayError> {
        self.release_buffers();
        let (w, h) = self.size();
        for _ in 0..count {
            let dumb = self
                .card
                .create_dumb_buffer((w, h), DrmFourcc::Xrgb8888, 32)
                .map_err(ioctl("DRM_IOCTL_MODE_CREATE_DUMB"))?;
            let fb = match self.card.add_framebuffer(&dumb, 24, 32) {
                Ok(fb) => fb,
                Err(e) => {
                    let _ = self.card.destroy_dumb_buffer(dumb);
                    return Err(DisplayError::Ioctl {
                        what: "DRM_IOCTL_MODE_ADDFB",
                        source: e,
                    });
                }
            };
            let len = dumb.pitch() as usize * h as usize;
            let map = match Mapping::new(&self.card, &dumb, len) {
                Ok(map) => map,
                Err(e) => {
                    let _ = self.card.destroy_framebuffer(fb);
                    let _ = self.card.destroy_dumb_buffer(dumb);
                    return Err(e);
                }
            };
            self.buffers.push(Buffer { dumb, fb, map });
        }
        self.front = 0;
        Ok(())
    }

    fn release_buffers(&mut self) {
        for buffer in self.buffers.drain(..) {
            let Buffer { dumb, fb, map } = buffer;
            drop(map);
            let _ = self.card.destroy_framebuffer(fb);
            let _ = self.card.destroy_dumb_buffer(dumb);
        }
    }

    /// Shows buffer 0 with the current mode (after drawing into it).
    pub fn show_first(&mut self) -> Result<(), DisplayError> {
        let fb = self.buffers[0].fb;
        self.card
            .set_crtc(
                self.crtc,
                Some(fb),
                (0, 0),
                &[self.connector],
                Some(self.mode),
            )
            .map_err(ioctl("DRM_IOCTL_MODE_SETCRTC"))?;
        self.front = 0;
        Ok(())
    }

    /// Buffer `index` (0 is the one `show_first` scans out).
    pub fn buffer(&mut self, index: usize) -> Target<'_> {
        let index = index.min(self.buffers.len() - 1);
        let size = self.size();
        let buffer = &mut self.buffers[index];
        let pitch = buffer.dumb.pitch() as usize;
        Target {
            index,
            pixels: buffer.map.bytes_mut(),
            pitch,
            size,
        }
    }

    /// Forgets a queued flip whose completion event never came.
    pub fn forget_pending_flip(&mut self) {
        self.flip_pending = false;
    }

    /// The buffer to draw the next frame into: the one after the front
    /// buffer when flipping, the only one otherwise.
    pub fn back(&mut self) -> Target<'_> {
        let index = if self.flipping {
            (self.front + 1) % self.buffers.len()
        } else {
            0
        };
        self.buffer(index)
    }

    /// Queues a flip to the buffer `back()` returned. No-op when not flipping.
    pub fn flip(&mut self) -> Result<(), DisplayError> {
        if !self.flipping {
            return Ok(());
        }
        let index = (self.front + 1) % self.buffers.len();
        self.card
            .page_flip(
                self.crtc,
                self.buffers[index].fb,
                PageFlipFlags::EVENT,
                None,
            )
            .map_err(ioctl("DRM_IOCTL_MODE_PAGE_FLIP"))?;
        self.front = index;
        self.flip_pending = true;
        Ok(())
    }

    /// Reads completed page-flip events (call when the card fd is readable).
    pub fn handle_events(&mut self) -> Result<(), DisplayError> {
        let events = self
            .card
            .receive_events()
            .map_err(ioctl("reading DRM events"))?;
        for event in events {
            if let Event::PageFlip(_) = event {
                self.flip_pending = false;
            }
        }
        Ok(())
    }

    /// Switches to the mode of size `wanted`, with new buffers. Call only
    /// when no flip is pending. Draw into buffer 0 and call `show_first` next.
    pub fn set_mode(&mut self, wanted: (u32, u32)) -> Result<(), DisplayError> {
        let mode = pick_mode(&self.modes, Some(wanted))?;
        let count = self.buffers.len();
        self.mode = mode;
        self.allocate(count)
    }
}

impl Display {
    /// Shows `argb` (`CURSOR_EDGE`² ARGB8888 pixels, rows top-down, the
    /// hotspot at the top-left corner) on the CRTC's cursor plane, through
    /// the legacy cursor ioctl simple DRM apps use (the kernel puts it on
    /// the cursor plane of atomic drivers). Fails on drivers without one.
    #[allow(deprecated)]
    pub fn set_cursor(&mut self, argb: &[u32]) -> Result<(), DisplayError> {
        let edge = CURSOR_EDGE;
        let dumb = self
            .card
            .create_dumb_buffer((edge, edge), DrmFourcc::Argb8888, 32)
            .map_err(ioctl("DRM_IOCTL_MODE_CREATE_DUMB (cursor)"))?;
        let pitch = dumb.pitch() as usize;
        let mut map = match Mapping::new(&self.card, &dumb, pitch * edge as usize) {
            Ok(m) => m,
            Err(e) => {
                let _ = self.card.destroy_dumb_buffer(dumb);
                return Err(e);
            }
        };
        let bytes = map.bytes_mut();
        for (y, row) in argb.chunks_exact(edge as usize).enumerate() {
            for (x, px) in row.iter().enumerate() {
                let at = y * pitch + x * 4;
                bytes[at..at + 4].copy_from_slice(&px.to_le_bytes());
            }
        }
        if let Err(e) = self.card.set_cursor2(self.crtc, Some(&dumb), (0, 0)) {
            drop(map);
            let _ = self.card.destroy_dumb_buffer(dumb);
            return Err(DisplayError::Ioctl {
                what: "DRM_IOCTL_MODE_CURSOR2",
                source: e,
            });
        }
        if let Some((old, old_map)) = self.cursor.take() {
            drop(old_map);
            let _ = self.card.destroy_dumb_buffer(old);
        }
        // Kept: the plane scans the buffer out while we hold it.
        self.cursor = Some((dumb, map));
        Ok(())
    }

    /// Moves the cursor's hotspot to (`x`, `y`) in buffer coordinates.
    #[allow(deprecated)]
    pub fn move_cursor(&mut self, x: i32, y: i32) -> Result<(), DisplayError> {
        self.card
            .move_cursor(self.crtc, (x, y))
            .map_err(ioctl("DRM_IOCTL_MODE_CURSOR (move)"))
    }
}

impl Drop for Display {
    #[allow(deprecated)]
    fn drop(&mut self) {
        if let Some((dumb, map)) = self.cursor.take() {
            let _ = self
                .card
                .set_cursor2(self.crtc, None::<&DumbBuffer>, (0, 0));
            drop(map);
            let _ = self.card.destroy_dumb_buffer(dumb);
        }
        self.release_buffers();
    }
}

fn mode_sizes(modes: &[Mode]) -> Vec<(u16, u16)> {
    let mut sizes: Vec<(u16, u16)> = modes.iter().map(|m| m.size()).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

fn pick_mode(modes: &[Mode], wanted: Option<(u32, u32)>) -> Result<Mode, DisplayError> {
    let Some((w, h)) = wanted else {
        let preferred = modes
            .iter()
            .find(|m| m.mode_type().contains(control::ModeTypeFlags::PREFERRED))
            .or_else(|| modes.first());
        return preferred.copied().ok_or(DisplayError::NoConnector);
    };
    modes
        .iter()
        .find(|m| {
            let (mw, mh) = m.size();
            u32::from(mw) == w && u32::from(mh) == h
        })
        .copied()
        .ok_or_else(|| DisplayError::NoSuchMode {
            wanted: (w, h),
            available: mode_sizes(modes),
        })
}
