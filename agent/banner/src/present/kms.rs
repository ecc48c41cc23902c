//! The KMS presenter, for when the agent itself can be DRM master (no app
//! holds the display: a console-only device, or a kiosk app started after).
//!
//! With an overlay plane that takes ARGB8888 on the active CRTC, the banner
//! goes into a screen-sized dumb buffer, transparent outside the banner, on
//! that plane: the app's picture is untouched and nothing needs redrawing.
//! Capture reads the primary plane only, so the agent composites the banner
//! into the captured frames for the expert ([`BannerPresenter::in_scanout`]
//! is false).
//!
//! Without a usable overlay the presenter takes the primary plane: a dumb
//! buffer with the banner on a dark background, the whole screen, as a VT
//! switch would; `hide` puts the previous framebuffer back.
//!
//! Everything goes through the `drm` crate's safe API; no unsafe here.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drm::Device as _;
use drm::buffer::DrmFourcc;
use drm::control::{Device as _, connector, crtc, dumbbuffer::DumbBuffer, framebuffer, plane};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;

use super::{BannerPresenter, PresentError};
use crate::layout::Banner;
use crate::pixel::{PixelFormat, Surface};

/// The default DRM device.
pub const DEFAULT_DEVICE: &str = "/dev/dri/card0";

/// Background of the screen while the banner owns the primary plane.
const TAKEOVER_BACKGROUND: Rgb888 = Rgb888::new(0x20, 0x24, 0x2c);

#[derive(Debug)]
struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl drm::Device for Card {}
impl drm::control::Device for Card {}

#[derive(Debug)]
enum Way {
    /// An overlay plane above the app.
    Overlay { plane: plane::Handle },
    /// The whole screen; `previous` is what to put back.
    Primary {
        previous: crtc::Info,
        connectors: Vec<connector::Handle>,
    },
}

/// Shows the banner on a KMS plane the agent owns. See the module docs.
#[derive(Debug)]
pub struct KmsPresenter {
    card: Card,
    path: PathBuf,
    crtc: crtc::Handle,
    size: (u32, u32),
    way: Way,
    buffer: Option<(DumbBuffer, framebuffer::Handle)>,
    banner: Option<Arc<Banner>>,
    /// What our buffer holds now (`None`: not painted yet).
    painted: Option<Arc<Banner>>,
    on_screen: bool,
}

impl KmsPresenter {
    /// Opens `path` (e.g. `/dev/dri/card0`), becomes DRM master and picks the
    /// active CRTC and, if there is one, an overlay plane for it.
    pub fn open(path: &Path) -> Result<Self, PresentError> {
        let dev = |what: &str, source| PresentError::Device {
            what: format!("{what} {}", path.display()),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| dev("opening", e))?;
        let card = Card(file);
        if card.acquire_master_lock().is_err() {
            return Err(PresentError::Unsupported(format!(
                "{}: another process (the kiosk app?) is DRM master, so the agent cannot set planes: use the scanout presenter",
                path.display()
            )));
        }
        let res = card
            .resource_handles()
            .map_err(|e| dev("reading the display resources of", e))?;
        let mut active = None;
        for &c in res.crtcs() {
            let info = card.get_crtc(c).map_err(|e| dev("reading a CRTC of", e))?;
            if info.mode().is_some() {
                active = Some(info);
                break;
            }
        }
        let Some(current) = active else {
            let _ = card.release_master_lock();
            return Err(PresentError::Unsupported(format!(
                "{}: no display is lit (no active CRTC); the banner needs a screen set up by the app or console",
                path.display()
            )));
        };
        let crtc = current.handle();
        let size = current
            .mode()
            .map(|m| (u32::from(m.size().0), u32::from(m.size().1)))
            .unwrap_or((0, 0));
        // Overlay planes only: without the universal-planes capability the
        // kernel lists no primary or cursor planes.
        let mut overlay = None;
        for p in card
            .plane_handles()
            .map_err(|e| dev("listing planes of", e))?
        {
            let info = card
                .get_plane(p)
                .map_err(|e| dev("reading a plane of", e))?;
            let fits = res.filter_crtcs(info.possible_crtcs()).contains(&crtc);
            let argb = info.formats().contains(&PixelFormat::FOURCC_ARGB8888);
            if fits && argb && info.framebuffer().is_none() {
                overlay = Some(p);
                break;
            }
        }
        let way = match overlay {
            Some(plane) => Way::Overlay { plane },
            None => {
                let mut connectors = Vec::new();
                for &c in res.connectors() {
                    let info = card
                        .get_connector(c, false)
                        .map_err(|e| dev("reading a connector of", e))?;
                    let Some(enc) = info.current_encoder() else {
                        continue;
                    };
                    let enc = card
                        .get_encoder(enc)
                        .map_err(|e| dev("reading an encoder of", e))?;
                    if enc.crtc() == Some(crtc) {
                        connectors.push(c);
                    }
                }
                Way::Primary {
                    previous: current,
                    connectors,
                }
            }
        };
        Ok(Self {
            card,
            path: path.to_path_buf(),
            crtc,
            size,
            way,
            buffer: None,
            banner: None,
            painted: None,
            on_screen: false,
        })
    }

    /// The screen size (the active mode), for rendering the banner.
    pub fn screen_size(&self) -> (u32, u32) {
        self.size
    }

    /// True when the banner goes on an overlay plane above the app.
    pub fn uses_overlay(&self) -> bool {
        matches!(self.way, Way::Overlay { .. })
    }

    fn dev(&self, what: &str, source: std::io::Error) -> PresentError {
        PresentError::Device {
            what: format!("{what} on {}", self.path.display()),
            source,
        }
    }

    fn format(&self) -> PixelFormat {
        match self.way {
            Way::Overlay { .. } => PixelFormat::Argb8888,
            Way::Primary { .. } => PixelFormat::Xrgb8888,
        }
    }

    fn ensure_buffer(&mut self) -> Result<(), PresentError> {
        if self.buffer.is_some() {
            return Ok(());
        }
        let (fourcc, depth) = match self.way {
            Way::Overlay { .. } => (DrmFourcc::Argb8888, 32),
            Way::Primary { .. } => (DrmFourcc::Xrgb8888, 24),
        };
        let db = self
            .card
            .create_dumb_buffer(self.size, fourcc, 32)
            .map_err(|e| self.dev("creating a dumb buffer", e))?;
        let fb = match self.card.add_framebuffer(&db, depth, 32) {
            Ok(fb) => fb,
            Err(e) => {
                let _ = self.card.destroy_dumb_buffer(db);
                return Err(self.dev("adding a framebuffer", e));
            }
        };
        self.buffer = Some((db, fb));
        Ok(())
    }

    /// Paints `banner` into our buffer, which may be on screen: the first
    /// time the whole buffer (transparent for an overlay, dark for the
    /// primary plane), later only what changed, in place, so no frame shows
    /// the background where the banner stays (a countdown tick rewrites the
    /// same rectangles).
    fn paint(&mut self, banner: &Arc<Banner>) -> Result<(), PresentError> {
        let format = self.format();
        let (w, h) = self.size;
        let overlay = self.uses_overlay();
        let path = self.path.clone();
        let previous = self.painted.take();
        let Some((db, _)) = self.buffer.as_mut() else {
            return Ok(());
        };
        let pitch = drm::buffer::Buffer::pitch(db) as usize;
        let mut map = self
            .card
            .map_dumb_buffer(db)
            .map_err(|e| PresentError::Device {
                what: format!("mapping the banner buffer on {}", path.display()),
                source: e,
            })?;
        let mut surface = Surface::new(w, h, pitch, format, &mut map)
            .map_err(|e| PresentError::Unsupported(format!("{}: {e}", path.display())))?;
        let background = |s: &mut Surface<'_>, area: &Rectangle| {
            if overlay {
                s.clear_transparent(area);
            } else {
                let _ = s.fill_solid(area, TAKEOVER_BACKGROUND);
            }
        };
        match &previous {
            None => {
                let all = surface.bounds();
                background(&mut surface, &all);
            }
            Some(old) => {
                for p in &old.patches {
                    if !banner.patches.iter().any(|n| n.rect == p.rect) {
                        background(&mut surface, &p.rect);
                    }
                }
            }
        }
        banner.composite_into(&mut surface);
        drop(map);
        self.painted = Some(banner.clone());
        Ok(())
    }

    fn put_on_screen(&mut self) -> Result<(), PresentError> {
        let Some(fb) = self.buffer.as_ref().map(|(_, f)| *f) else {
            return Ok(());
        };
        let (w, h) = self.size;
        let result = match &self.way {
            Way::Overlay { plane } => self.card.set_plane(
                *plane,
                self.crtc,
                Some(fb),
                0,
                (0, 0, w, h),
                (0, 0, w << 16, h << 16),
            ),
            Way::Primary {
                previous,
                connectors,
            } => self
                .card
                .set_crtc(self.crtc, Some(fb), (0, 0), connectors, previous.mode()),
        };
        result.map_err(|e| self.dev("showing the banner plane", e))?;
        // Drivers that scan out a copy (virtio-gpu, udl) need the dirty call;
        // others refuse it harmlessly.
        let _ = self.card.dirty_framebuffer(fb, &[]);
        self.on_screen = true;
        Ok(())
    }

    fn take_off_screen(&mut self) -> Result<(), PresentError> {
        if !self.on_screen {
            return Ok(());
        }
        let result = match &self.way {
            Way::Overlay { plane } => {
                self.card
                    .set_plane(*plane, self.crtc, None, 0, (0, 0, 0, 0), (0, 0, 0, 0))
            }
            Way::Primary {
                previous,
                connectors,
            } => self.card.set_crtc(
                self.crtc,
                previous.framebuffer(),
                previous.position(),
                connectors,
                previous.mode(),
            ),
        };
        result.map_err(|e| self.dev("removing the banner plane", e))?;
        self.on_screen = false;
        Ok(())
    }
}

impl BannerPresenter for KmsPresenter {
    fn show(&mut self, banner: Arc<Banner>) -> Result<(), PresentError> {
        let (w, h) = self.size;
        if banner.layout.screen.width != w || banner.layout.screen.height != h {
            return Err(PresentError::ScreenChanged {
                width: w,
                height: h,
            });
        }
        if banner.is_empty() {
            return self.hide();
        }
        self.ensure_buffer()?;
        self.paint(&banner)?;
        self.banner = Some(banner);
        self.put_on_screen()
    }

    fn hide(&mut self) -> Result<(), PresentError> {
        self.banner = None;
        self.take_off_screen()
    }

    fn refresh(&mut self) -> Result<(), PresentError> {
        // The plane is ours: nobody paints over it.
        Ok(())
    }

    fn in_scanout(&self) -> bool {
        !self.uses_overlay()
    }

    fn current(&self) -> Option<&Arc<Banner>> {
        self.banner.as_ref()
    }
}

impl Drop for KmsPresenter {
    fn drop(&mut self) {
        // Best effort on the way out: put the screen back, free our buffer,
        // and let another process become master.
        let _ = self.take_off_screen();
        if let Some((db, fb)) = self.buffer.take() {
            let _ = self.card.destroy_framebuffer(fb);
            let _ = self.card.destroy_dumb_buffer(db);
        }
        let _ = self.card.release_master_lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_a_readable_error() {
        let err = KmsPresenter::open(Path::new("/nonexistent/card7")).unwrap_err();
        assert!(
            err.to_string().contains("opening /nonexistent/card7"),
            "{err}"
        );
    }
}
