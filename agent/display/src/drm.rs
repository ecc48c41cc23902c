//! DRM/KMS display access: the buffer a CRTC is scanning out, whoever drew
//! it, mapped for capture (read) or for the banner (write).
//!
//! Every capture re-reads the CRTC (`GETCRTC`, which reports the primary
//! plane's current framebuffer): applications page-flip between buffers, and
//! some draw into one buffer without flipping, so neither "capture on flip"
//! nor "capture once per buffer" would do. Each framebuffer is described with
//! `GETFB2` (format, modifier, pitch, GEM handle; `GETFB` on kernels before
//! 5.7) and mapped once, through
//! `MAP_DUMB` on the handle, or else PRIME export and an `mmap` of the dma-buf
//! bracketed by `DMA_BUF_IOCTL_SYNC`. Mappings are cached per framebuffer id
//! (bounded, least recently used goes) and dropped when the id disappears.
//!
//! Needs: read/write access to the card node, and CAP_SYS_ADMIN (the kernel
//! hides other processes' buffer handles otherwise; we say so). DRM master is
//! not needed and not kept: the kernel makes the first process to open a
//! card with no master its master, so a card opened while the kiosk app is
//! not running (the agent started first, or the display came back before
//! the app was restarted) is released at once; otherwise the app could not
//! become master when it starts ("SET_MASTER: Resource busy").
//!
//! Tiled buffers (Intel X/Y, Broadcom VC4 T: what GPU-rendering kiosks on
//! Intel and Raspberry Pi scan out) are read through [`crate::tiling`]:
//! each capture detiles the visible part into a linear copy kept here (one
//! frame of memory, and 0.4–1.2 ms at 1080p on our 2-vCPU sandbox, see
//! BENCHMARKS.md), and the banner draws on such a copy whose rectangles
//! `flush` tiles back into the buffer (tens of microseconds for a strip).
//! Linear buffers are read and drawn in place, no copy. Compressed layouts
//! are refused with the compositor setting that avoids them. The tiled
//! layouts are checked against reference layouts written from the kernel's
//! and Mesa's documentation only, not on Intel or Pi hardware.
//!
//! Limitation: the kernel gives no identity for the buffer behind a
//! framebuffer id. If an application destroys a framebuffer and a new one
//! gets the same id and the same size, format and pitch, the cached mapping
//! would show the old buffer until evicted; kiosk applications allocate their
//! buffers once, and the periodic recheck drops ids that disappear.

// Only for turning the dma-buf descriptor the kernel returned into an owned
// descriptor; the mappings themselves are in `crate::mmap`.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use drm::control::Device as ControlDevice;
use drm::{ClientCapability, Device as BasicDevice};
use drm_ffi as ffi;

use crate::error::CaptureError;
use crate::format::{PixelFormat, ScreenGeometry};
use crate::mmap::{Mapping, SyncGuard};
use crate::orientation::{KernelOrientation, PanelOrientation};
use crate::scanout::{Scanout, ScanoutAccess, ScanoutMut};
use crate::tiling::{TiledLayout, Tiling};

mod cursor;
mod fbinfo;
mod tiled;

/// Framebuffers kept mapped: two or three for a page-flipping application,
/// one for the cursor, one spare while an application reallocates.
const MAX_CACHED_FBS: usize = 6;
/// Every this many captures, cached framebuffer ids that no longer exist are
/// unmapped (at 60 polls per second, every few seconds).
const RECHECK_EVERY: u64 = 256;
/// Card nodes tried when no device is configured.
const MAX_CARDS: u32 = 8;
/// Plane "type" property values.
const PLANE_TYPE_PRIMARY: u64 = 1;
const PLANE_TYPE_CURSOR: u64 = 2;

/// The card node, implementing the `drm` crate's device traits, and
/// whether no other process was its DRM master when it was opened.
#[derive(Debug)]
struct Card(File, bool);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl BasicDevice for Card {}
impl ControlDevice for Card {}

/// How to open the DRM display.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrmOptions {
    /// Card node; default: the first `/dev/dri/cardN` with an active display.
    pub device: Option<PathBuf>,
    /// Connector name as the kernel names it (`HDMI-A-1`, `Virtual-1`, `eDP-1`);
    /// default: the first active CRTC.
    pub connector: Option<String>,
    /// Map buffers writable too, for [`ScanoutAccess`] (the banner presenter).
    pub writable: bool,
}

/// What `GETFB2` said about a framebuffer, as far as mapping it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FbLayout {
    width: u32,
    height: u32,
    format: PixelFormat,
    pitch: u32,
    offset: u32,
    tiling: Tiling,
}

impl FbLayout {
    /// Checked when the layout was read (`DrmDisplay::layout`).
    fn tiled(&self) -> TiledLayout {
        TiledLayout::new(
            self.tiling,
            self.pitch as usize,
            self.format.bytes_per_pixel(),
        )
        .expect("checked by DrmDisplay::layout")
    }
}

#[derive(Debug)]
struct FbMapping {
    fb: u32,
    layout: FbLayout,
    /// Our GEM handle of the buffer: keeps it alive while mapped.
    handle: u32,
    dmabuf: Option<OwnedFd>,
    map: Mapping,
    last_used: u64,
}

#[derive(Debug, Clone, Copy)]
struct CursorPlane {
    plane: u32,
    crtc_x: Option<drm::control::property::Handle>,
    crtc_y: Option<drm::control::property::Handle>,
    hotspot_x: Option<drm::control::property::Handle>,
    hotspot_y: Option<drm::control::property::Handle>,
}

/// What a capture looks at: a CRTC, its framebuffer and the visible part.
#[derive(Debug, Clone, Copy)]
struct View {
    fb: u32,
    index: usize,
    geometry: ScreenGeometry,
    start: usize,
    pitch: usize,
    /// Top-left pixel of the visible part in the framebuffer.
    origin: (usize, usize),
}

/// A DRM/KMS card and the CRTC whose scanned-out buffer is read or drawn on.
#[derive(Debug)]
pub struct DrmDisplay {
    card: Card,
    path: PathBuf,
    connector: Option<String>,
    writable: bool,
    crtc: Option<u32>,
    cursor_plane: Option<CursorPlane>,
    maps: Vec<FbMapping>,
    tick: u64,
    screen_size: (u32, u32),
    /// The selected output's plane and panel turns, read with the CRTC.
    orientation: KernelOrientation,
    /// Linear copy of a tiled buffer's visible part (see the module docs);
    /// its allocation is kept from capture to capture.
    staging: Vec<u8>,
    /// What `staging` holds for the banner, whose rectangles `flush` tiles
    /// back; `None` when it holds a capture (nothing to write back).
    staged: Option<tiled::Staged>,
    /// DIRTYFB was refused (not master): not asked again.
    dirty_refused: bool,
}

impl DrmDisplay {
    /// Opens `device` (or the first card with a display) for capture; picks
    /// `connector`'s CRTC (or the first active one) on first capture.
    pub fn open(device: Option<&Path>, connector: Option<&str>) -> Result<Self, CaptureError> {
        Self::open_with(DrmOptions {
            device: device.map(Path::to_owned),
            connector: connector.map(str::to_owned),
            writable: false,
        })
    }

    pub fn open_with(opts: DrmOptions) -> Result<Self, CaptureError> {
        let (card, path) = match &opts.device {
            Some(p) => (open_card(p)?, p.clone()),
            None => first_card()?,
        };
        // Best effort: atomic exposes the cursor plane's position properties,
        // universal planes exposes the cursor plane at all. Older drivers
        // refuse; capture works without them (no separate cursor).
        let _ = card.set_client_capability(ClientCapability::Atomic, true);
        let _ = card.set_client_capability(ClientCapability::UniversalPlanes, true);
        Ok(Self {
            card,
            path,
            connector: opts.connector,
            writable: opts.writable,
            crtc: None,
            cursor_plane: None,
            maps: Vec::new(),
            tick: 0,
            screen_size: (0, 0),
            orientation: KernelOrientation::default(),
            staging: Vec::new(),
            staged: None,
            dirty_refused: false,
        })
    }

    fn io(&self, what: &'static str) -> impl FnOnce(io::Error) -> CaptureError + '_ {
        move |source| CaptureError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }

    fn display_off(detail: impl Into<String>) -> CaptureError {
        CaptureError::DisplayOff {
            detail: detail.into(),
        }
    }

    /// Picks the CRTC to capture and its cursor plane.
    fn select(&mut self) -> Result<u32, CaptureError> {
        let res = self
            .card
            .resource_handles()
            .map_err(self.io("GETRESOURCES"))?;
        let crtc = match &self.connector {
            Some(name) => {
                let mut names = Vec::new();
                let mut found = None;
                for &h in res.connectors() {
                    let info = self
                        .card
                        .get_connector(h, false)
                        .map_err(self.io("GETCONNECTOR"))?;
                    let n = format!("{}-{}", info.interface().as_str(), info.interface_id());
                    if n.eq_ignore_ascii_case(name) {
                        found = Some(info);
                    }
                    names.push(n);
                }
                let info = found.ok_or_else(|| CaptureError::NoDisplay {
                    path: self.path.clone(),
                    detail: format!(
                        "no connector named {name:?}; this card has: {}",
                        names.join(", ")
                    ),
                })?;
                let enc = info.current_encoder().ok_or_else(|| {
                    Self::display_off(format!("connector {name} is not connected to a CRTC"))
                })?;
                let enc = self.card.get_encoder(enc).map_err(self.io("GETENCODER"))?;
                enc.crtc()
                    .ok_or_else(|| Self::display_off(format!("connector {name} drives no CRTC")))?
            }
            None => res
                .crtcs()
                .iter()
                .copied()
                .find(|&c| {
                    self.card
                        .get_crtc(c)
                        .is_ok_and(|i| i.mode().is_some() && i.framebuffer().is_some())
                })
                .ok_or_else(|| Self::display_off("no CRTC is active"))?,
        };
        let index = res.crtcs().iter().position(|&c| c == crtc).unwrap_or(0);
        self.cursor_plane = self.find_cursor_plane(index);
        let id: u32 = crtc.into();
        self.crtc = Some(id);
        self.orientation = self.read_orientation(&res, id);
        Ok(id)
    }

    /// The primary plane's `rotation` and the `panel orientation` of the
    /// connector that shows CRTC `crtc`. Best effort: a property that cannot
    /// be read counts as absent (no turn).
    fn read_orientation(
        &self,
        res: &drm::control::ResourceHandles,
        crtc: u32,
    ) -> KernelOrientation {
        let mut o = KernelOrientation::default();
        let prop = |props: &drm::control::PropertyValueSet, name: &[u8]| {
            props.iter().find_map(|(&h, &v)| {
                let info = self.card.get_property(h).ok()?;
                (info.name().to_bytes() == name).then_some(v)
            })
        };
        for &h in res.connectors() {
            let shows_crtc = self
                .card
                .get_connector(h, false)
                .ok()
                .and_then(|c| c.current_encoder())
                .and_then(|e| self.card.get_encoder(e).ok())
                .and_then(|e| e.crtc())
                .is_some_and(|c| u32::from(c) == crtc);
            if !shows_crtc {
                continue;
            }
            if let Some(v) = self
                .card
                .get_properties(h)
                .ok()
                .and_then(|p| prop(&p, b"panel orientation"))
            {
                o.panel = PanelOrientation::from_raw(v);
                o.panel_raw = o.panel.is_none().then_some(v);
            }
            break;
        }
        for p in self.card.plane_handles().unwrap_or_default() {
            let Ok(info) = ffi::mode::get_plane(self.card.as_fd(), p.into(), None) else {
                continue;
            };
            if info.crtc_id != crtc {
                continue;
            }
            let Ok(props) = self.card.get_properties(p) else {
                continue;
            };
            if prop(&props, b"type") == Some(PLANE_TYPE_PRIMARY) {
                o.plane_rotation = prop(&props, b"rotation");
                break;
            }
        }
        o
    }

    /// What the kernel says about how the captured output's picture reaches
    /// the person (read again now: a compositor may turn its plane).
    pub fn orientation(&mut self) -> Result<KernelOrientation, CaptureError> {
        let Some(crtc) = self.crtc else {
            // Choosing the CRTC reads its orientation too.
            self.select()?;
            return Ok(self.orientation);
        };
        let res = self
            .card
            .resource_handles()
            .map_err(self.io("GETRESOURCES"))?;
        self.orientation = self.read_orientation(&res, crtc);
        Ok(self.orientation)
    }

    fn find_cursor_plane(&self, crtc_index: usize) -> Option<CursorPlane> {
        let planes = self.card.plane_handles().ok()?;
        for p in planes {
            let Ok(info) = ffi::mode::get_plane(self.card.as_fd(), p.into(), None) else {
                continue;
            };
            if crtc_index >= 32 || info.possible_crtcs & (1 << crtc_index) == 0 {
                continue;
            }
            let Ok(props) = self.card.get_properties(p) else {
                continue;
            };
            let mut cursor = CursorPlane {
                plane: p.into(),
                crtc_x: None,
                crtc_y: None,
                hotspot_x: None,
                hotspot_y: None,
            };
            let mut is_cursor = false;
            for (&prop, &value) in props.iter() {
                let Ok(pinfo) = self.card.get_property(prop) else {
                    continue;
                };
                match pinfo.name().to_bytes() {
                    b"type" => is_cursor = value == PLANE_TYPE_CURSOR,
                    b"CRTC_X" => cursor.crtc_x = Some(prop),
                    b"CRTC_Y" => cursor.crtc_y = Some(prop),
                    b"HOTSPOT_X" => cursor.hotspot_x = Some(prop),
                    b"HOTSPOT_Y" => cursor.hotspot_y = Some(prop),
                    _ => {}
                }
            }
            if is_cursor {
                return Some(cursor);
            }
        }
        None
    }

    /// Reads the CRTC now and maps its framebuffer.
    fn view(&mut self) -> Result<View, CaptureError> {
        self.tick += 1;
        if self.tick.is_multiple_of(RECHECK_EVERY) {
            self.drop_vanished();
        }
        let crtc = match self.crtc {
            Some(c) => c,
            None => self.select()?,
        };
        let info = match ffi::mode::get_crtc(self.card.as_fd(), crtc) {
            Ok(i) => i,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOENT.raw_os_error()) => {
                self.crtc = None;
                return Err(Self::display_off("the CRTC went away"));
            }
            Err(e) => return Err(self.io("GETCRTC")(e)),
        };
        if info.mode_valid == 0 || info.fb_id == 0 {
            // Pick again next time: another output may have come on.
            self.crtc = None;
            return Err(Self::display_off(format!(
                "CRTC {crtc} shows nothing (display off or between mode sets)"
            )));
        }
        let index = self.mapping(info.fb_id)?;
        let layout = self.maps[index].layout;
        let (x, y) = (info.x, info.y);
        let (mut mode_w, mut mode_h) =
            (u32::from(info.mode.hdisplay), u32::from(info.mode.vdisplay));
        // A plane turned a quarter scans out a buffer as tall as the mode
        // is wide.
        if self.orientation.plane_turn().is_ok_and(|r| r.swaps_axes()) {
            std::mem::swap(&mut mode_w, &mut mode_h);
        }
        let width = mode_w.min(layout.width.saturating_sub(x));
        let height = mode_h.min(layout.height.saturating_sub(y));
        if width == 0 || height == 0 {
            return Err(Self::display_off(format!(
                "CRTC {crtc} scans out nothing of framebuffer {}",
                info.fb_id
            )));
        }
        self.screen_size = (width, height);
        let bpp = layout.format.bytes_per_pixel();
        Ok(View {
            fb: info.fb_id,
            index,
            geometry: ScreenGeometry {
                width,
                height,
                format: layout.format,
            },
            start: layout.offset as usize + y as usize * layout.pitch as usize + x as usize * bpp,
            pitch: layout.pitch as usize,
            origin: (x as usize, y as usize),
        })
    }

    /// Index into `maps` of framebuffer `fb`, mapping it if new.
    fn mapping(&mut self, fb: u32) -> Result<usize, CaptureError> {
        let info = self.framebuffer_info(fb)?;
        let handle = info.handles[0];
        // GETFB2 made new handles in our file; the mapping keeps at most the
        // first, the rest are closed now.
        let close_others = |card: &Card, keep: Option<u32>| {
            let mut closed = Vec::with_capacity(4);
            for h in info.handles {
                if h != 0 && Some(h) != keep && !closed.contains(&h) {
                    let _ = ffi::gem::close(card.as_fd(), h);
                    closed.push(h);
                }
            }
        };
        let layout = match self.layout(&info) {
            Ok(l) => l,
            Err(e) => {
                close_others(&self.card, None);
                return Err(e);
            }
        };
        if let Some(i) = self
            .maps
            .iter()
            .position(|m| m.fb == fb && m.layout == layout)
        {
            close_others(&self.card, None);
            self.maps[i].last_used = self.tick;
            return Ok(i);
        }
        close_others(&self.card, Some(handle));
        // Same id with another layout: the old mapping is stale.
        if let Some(i) = self.maps.iter().position(|m| m.fb == fb) {
            let old = self.maps.swap_remove(i);
            self.release(old);
        }
        if self.maps.len() >= MAX_CACHED_FBS
            && let Some(i) = self
                .maps
                .iter()
                .enumerate()
                .min_by_key(|(_, m)| m.last_used)
                .map(|(i, _)| i)
        {
            let old = self.maps.swap_remove(i);
            self.release(old);
        }
        let len = layout.offset as usize
            + layout
                .tiled()
                .buffer_len(layout.width as usize, layout.height as usize);
        match self.map_buffer(handle, len) {
            Ok((map, dmabuf)) => {
                self.maps.push(FbMapping {
                    fb,
                    layout,
                    handle,
                    dmabuf,
                    map,
                    last_used: self.tick,
                });
                Ok(self.maps.len() - 1)
            }
            Err(e) => {
                let _ = ffi::gem::close(self.card.as_fd(), handle);
                Err(e)
            }
        }
    }

    /// Maps `len` bytes of the buffer behind GEM `handle`: dumb map first,
    /// PRIME export second.
    fn map_buffer(
        &self,
        handle: u32,
        len: usize,
    ) -> Result<(Mapping, Option<OwnedFd>), CaptureError> {
        let dumb = ffi::mode::dumbbuffer::map(self.card.as_fd(), handle, 0, 0)
            .and_then(|m| Mapping::new(self.card.as_fd(), m.offset, len, self.writable));
        let dumb_err = match dumb {
            Ok(map) => return Ok((map, None)),
            Err(e) => e,
        };
        let flags = ffi::DRM_CLOEXEC | if self.writable { ffi::DRM_RDWR } else { 0 };
        let prime = ffi::gem::handle_to_fd(self.card.as_fd(), handle, flags).map_err(|e| {
            CaptureError::Unsupported {
                path: self.path.clone(),
                detail: format!(
                    "cannot map the framebuffer: MAP_DUMB failed ({dumb_err}) and PRIME export failed ({e})"
                ),
            }
        })?;
        // SAFETY: PRIME_HANDLE_TO_FD succeeded, so `prime.fd` is a new dma-buf
        // descriptor that nothing else owns; OwnedFd takes sole ownership and
        // closes it on drop.
        let fd = unsafe { OwnedFd::from_raw_fd(prime.fd) };
        let map = Mapping::new(fd.as_fd(), 0, len, self.writable)
            .map_err(self.io("mmap of the dma-buf"))?;
        Ok((map, Some(fd)))
    }

    fn release(&self, m: FbMapping) {
        let handle = m.handle;
        drop(m);
        let _ = ffi::gem::close(self.card.as_fd(), handle);
    }

    /// Unmaps framebuffers whose id no longer exists.
    fn drop_vanished(&mut self) {
        let mut i = 0;
        while i < self.maps.len() {
            let fb = self.maps[i].fb;
            match self.framebuffer_info(fb) {
                Ok(info) => {
                    for h in info.handles {
                        if h != 0 {
                            let _ = ffi::gem::close(self.card.as_fd(), h);
                        }
                    }
                    i += 1;
                }
                Err(_) => {
                    let old = self.maps.swap_remove(i);
                    self.release(old);
                }
            }
        }
    }

    fn sync_guard(&self, index: usize, write: bool) -> Result<Option<SyncGuard<'_>>, CaptureError> {
        start_sync(self.maps[index].dmabuf.as_ref(), write, &self.path)
    }

    /// The CRTC being captured, once chosen.
    pub fn crtc(&self) -> Option<u32> {
        self.crtc
    }

    /// The card node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size and format of the screen now.
    pub fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.view()?.geometry)
    }

    /// The framebuffer the captured CRTC shows now, with one GETCRTC and
    /// nothing mapped: a page-flipping application names a new one with
    /// each new picture. `None` before the first capture chose the CRTC, or
    /// when it cannot be read now (the next capture says why).
    pub fn fb_on_screen(&self) -> Option<u32> {
        let info = ffi::mode::get_crtc(self.card.as_fd(), self.crtc?).ok()?;
        (info.mode_valid != 0 && info.fb_id != 0).then_some(info.fb_id)
    }

    /// The buffer on screen now, for reading.
    pub fn scanout(&mut self) -> Result<Scanout<'_>, CaptureError> {
        let v = self.view()?;
        if self.maps[v.index].layout.tiling != Tiling::Linear {
            return self.scanout_tiled(&v);
        }
        let sync = self.sync_guard(v.index, false)?;
        let map = &self.maps[v.index].map;
        Ok(Scanout {
            pixels: &map.bytes()[v.start.min(map.len())..],
            geometry: v.geometry,
            pitch: v.pitch,
            buffer_id: v.fb,
            sync,
        })
    }

    /// A short description for logs: "drm /dev/dri/card0 crtc 41".
    pub fn describe(&self) -> String {
        let mut s = match self.crtc {
            Some(c) => format!("drm {} crtc {c}", self.path.display()),
            None => format!("drm {}", self.path.display()),
        };
        // Doctor: the app that draws a kiosk is normally the DRM master.
        if self.card.1 {
            s.push_str(", no DRM master when opened (no app drove it through KMS)");
        }
        // How the buffer on screen is read (doctor shows it to device
        // builders): through PRIME, and detiled in software.
        if let Some(m) = self.maps.iter().max_by_key(|m| m.last_used) {
            if m.dmabuf.is_some() {
                s.push_str(", PRIME-mapped");
            }
            if m.layout.tiling != Tiling::Linear {
                s.push_str(&format!(", {} (detiled in software)", m.layout.tiling));
            }
        }
        s
    }
}

impl Drop for DrmDisplay {
    fn drop(&mut self) {
        for m in std::mem::take(&mut self.maps) {
            self.release(m);
        }
    }
}

/// Starts CPU access to a dma-buf mapping (`None`: a dumb mapping, no
/// bracket needed).
fn start_sync<'a>(
    dmabuf: Option<&'a OwnedFd>,
    write: bool,
    path: &Path,
) -> Result<Option<SyncGuard<'a>>, CaptureError> {
    dmabuf
        .map(|fd| SyncGuard::start(fd.as_fd(), write))
        .transpose()
        .map_err(|source| CaptureError::Io {
            what: "DMA_BUF_IOCTL_SYNC",
            path: path.to_owned(),
            source,
        })
}

fn open_card(path: &Path) -> Result<Card, CaptureError> {
    let card = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(path)
        .map(|f| Card(f, false))
        .map_err(|source| CaptureError::Open {
            path: path.to_owned(),
            source,
        })?;
    // Master came with the open if nobody else had it: hand it back for
    // the app (see the module docs). Fails (EINVAL) when the app is master,
    // the usual case.
    let mut card = card;
    card.1 = card.release_master_lock().is_ok();
    Ok(card)
}

/// An active output: a connector that a CRTC lights with a mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub card: PathBuf,
    /// As the kernel names it (`HDMI-A-1`): [`DrmOptions::connector`].
    pub connector: String,
    /// The mode's size (the framebuffer as scanned out, before any turn).
    pub width: u32,
    pub height: u32,
}

/// Every active output of `device`, or of every card when `None`: card by
/// card, in the kernel's connector order. Empty when no display is lit (a
/// card that cannot be opened is skipped when looking at every card).
pub fn outputs(device: Option<&Path>) -> Result<Vec<Output>, CaptureError> {
    let cards: Vec<PathBuf> = match device {
        Some(p) => vec![p.to_owned()],
        None => (0..MAX_CARDS)
            .map(|n| PathBuf::from(format!("/dev/dri/card{n}")))
            .filter(|p| p.exists())
            .collect(),
    };
    let mut found = Vec::new();
    for path in cards {
        let card = match open_card(&path) {
            Ok(c) => c,
            Err(e) if device.is_some() => return Err(e),
            Err(_) => continue,
        };
        let io = |what| {
            let path = path.clone();
            move |source| CaptureError::Io { what, path, source }
        };
        let res = card.resource_handles().map_err(io("GETRESOURCES"))?;
        for &h in res.connectors() {
            let Ok(info) = card.get_connector(h, false) else {
                continue;
            };
            let crtc = info
                .current_encoder()
                .and_then(|e| card.get_encoder(e).ok())
                .and_then(|e| e.crtc())
                .and_then(|c| card.get_crtc(c).ok());
            let Some(mode) = crtc
                .filter(|c| c.framebuffer().is_some())
                .and_then(|c| c.mode())
            else {
                continue;
            };
            let (w, h) = mode.size();
            found.push(Output {
                card: path.clone(),
                connector: format!("{}-{}", info.interface().as_str(), info.interface_id()),
                width: u32::from(w),
                height: u32::from(h),
            });
        }
    }
    Ok(found)
}

/// The first `/dev/dri/cardN` that has CRTCs (render-only nodes have none).
fn first_card() -> Result<(Card, PathBuf), CaptureError> {
    let mut tried = Vec::new();
    for n in 0..MAX_CARDS {
        let path = PathBuf::from(format!("/dev/dri/card{n}"));
        match open_card(&path) {
            Ok(card) => {
                if card.resource_handles().is_ok_and(|r| !r.crtcs().is_empty()) {
                    return Ok((card, path));
                }
                tried.push(format!("{} (no display)", path.display()));
            }
            Err(e) => {
                if path.exists() {
                    tried.push(e.to_string());
                }
            }
        }
    }
    Err(CaptureError::NoDisplay {
        path: PathBuf::from("/dev/dri"),
        detail: if tried.is_empty() {
            "no /dev/dri/card* device: is a KMS driver loaded? (use fbdev:/dev/fb0 otherwise)"
                .into()
        } else {
            tried.join("; ")
        },
    })
}

impl ScanoutAccess for DrmDisplay {
    fn scanout_mut(&mut self) -> Result<ScanoutMut<'_>, CaptureError> {
        if !self.writable {
            return Err(CaptureError::Unsupported {
                path: self.path.clone(),
                detail: "opened for capture only; open with DrmOptions { writable: true } to draw on the screen".into(),
            });
        }
        let v = self.view()?;
        if self.maps[v.index].layout.tiling != Tiling::Linear {
            return self.scanout_mut_tiled(&v);
        }
        let m = &mut self.maps[v.index];
        let len = m.map.len();
        let sync = start_sync(m.dmabuf.as_ref(), true, &self.path)?;
        let Some(bytes) = m.map.bytes_mut() else {
            unreachable!("writable sources map writable")
        };
        Ok(ScanoutMut {
            pixels: &mut bytes[v.start.min(len)..],
            geometry: v.geometry,
            pitch: v.pitch,
            buffer_id: v.fb,
            _sync: sync,
        })
    }

    fn flush(&mut self, x: u32, y: u32, w: u32, h: u32) -> Result<(), CaptureError> {
        self.retile_staged(x, y, w, h)?;
        let Some(m) = self.maps.iter().max_by_key(|m| m.last_used) else {
            return Ok(());
        };
        if self.dirty_refused {
            return Ok(());
        }
        let clip = ffi::drm_clip_rect {
            x1: x.min(u32::from(u16::MAX)) as u16,
            y1: y.min(u32::from(u16::MAX)) as u16,
            x2: (x + w).min(u32::from(u16::MAX)) as u16,
            y2: (y + h).min(u32::from(u16::MAX)) as u16,
        };
        match ffi::mode::dirty_fb(self.card.as_fd(), m.fb, &[clip]) {
            Ok(_) => Ok(()),
            // The driver scans the buffer out directly: nothing to flush.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSYS.raw_os_error()) => Ok(()),
            Err(source) => {
                // Refused to a non-master: it stays refused; not asked again.
                self.dirty_refused = true;
                Err(CaptureError::Io {
                    what: "DIRTYFB (drivers that copy the buffer need it; the kernel allows it to the DRM master only)",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}
