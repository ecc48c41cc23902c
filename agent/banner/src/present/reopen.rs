//! A [`ScanoutTarget`] that outlives its display device.
//!
//! A DRM card can go away under the agent: its driver unbound or reloaded
//! (a GPU reset on some drivers, a firmware update), the device unplugged
//! (USB and DisplayLink displays), or the kiosk's compositor restarted with
//! a module reload. Every call on the old descriptor then fails (`ENODEV`),
//! and a presenter holding it could never show the banner again, even once
//! the display is back. [`Reopening`] drops the device after such an error
//! and opens it again on a later call (the presenter thread waits
//! [`ERROR_BACKOFF`](super::thread::ERROR_BACKOFF) after each error, so a
//! missing device is tried about five times a second), so the banner comes
//! back with the display without restarting the agent. The errors still
//! reach the presenter's owner (one per attempt), which decides what to log.
//!
//! Buffer ids of a reopened device start over (framebuffer ids are per
//! device), so each opening gets a generation in the upper half of
//! [`BufferId`] and the presenter never mistakes a new buffer for an old one
//! whose saved pixels it still holds.

use embedded_graphics::primitives::Rectangle;
use shoulder_display::CaptureError;

use super::PresentError;
use super::scanout::{BufferId, ScanoutTarget};
use crate::pixel::Surface;

/// Opens the target (again).
pub type Opener<T> = Box<dyn FnMut() -> Result<T, PresentError> + Send>;

/// Ids the inner targets may use: the lower 32 bits (DRM framebuffer ids
/// are 32-bit; fbdev's pan offsets fit too). The generation goes above.
const ID_BITS: u32 = 32;
const ID_MASK: u64 = (1 << ID_BITS) - 1;

/// `id` of the device opened `generation` times.
fn tag(generation: u64, id: BufferId) -> BufferId {
    BufferId((generation << ID_BITS) | (id.0 & ID_MASK))
}

/// A target opened by `open`, reopened after a device error.
pub struct Reopening<T> {
    open: Opener<T>,
    inner: Option<T>,
    /// How many times `inner` was opened; tags its buffer ids.
    generation: u64,
}

impl<T> std::fmt::Debug for Reopening<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reopening")
            .field("open", &self.inner.is_some())
            .field("generation", &self.generation)
            .finish()
    }
}

impl<T: ScanoutTarget> Reopening<T> {
    /// Opens the target now (its error is the caller's: a device that is not
    /// there at start-up is a configuration problem worth reporting) and
    /// again with `open` whenever it failed with a device error.
    pub fn new(mut open: Opener<T>) -> Result<Self, PresentError> {
        let inner = open()?;
        Ok(Self {
            open,
            inner: Some(inner),
            generation: 1,
        })
    }

    /// Whether the device is open now (false between its loss and the
    /// reopen that finds it again).
    pub fn is_open(&self) -> bool {
        self.inner.is_some()
    }

    /// How many times the device was opened.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The inner id of `id` if it belongs to the device open now.
    fn untag(&self, id: BufferId) -> Option<BufferId> {
        (id.0 >> ID_BITS == self.generation).then_some(BufferId(id.0 & ID_MASK))
    }

    /// The open target and its generation, opening it if it was lost.
    fn target(&mut self) -> Result<(u64, &mut T), PresentError> {
        let t = match self.inner.take() {
            Some(t) => t,
            None => {
                let t = (self.open)()?;
                self.generation += 1;
                t
            }
        };
        Ok((self.generation, self.inner.insert(t)))
    }

    /// Drops the device after an error that means it is gone or broken.
    fn check<R>(&mut self, r: Result<R, PresentError>) -> Result<R, PresentError> {
        if let Err(e) = &r
            && is_device_error(e)
        {
            self.inner = None;
        }
        r
    }
}

/// Whether `e` comes from the device itself (a failed ioctl, open or
/// mapping), as opposed to the screen's contents (a format or modifier that
/// cannot be drawn, a mode change), which reopening would not change.
pub fn is_device_error(e: &PresentError) -> bool {
    match e {
        PresentError::Device { .. } => true,
        PresentError::Capture(inner) => matches!(
            inner.downcast_ref::<CaptureError>(),
            Some(
                CaptureError::Io { .. }
                    | CaptureError::Open { .. }
                    | CaptureError::NoDisplay { .. }
            )
        ),
        _ => false,
    }
}

impl<T: ScanoutTarget> ScanoutTarget for Reopening<T> {
    fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
        let (generation, target) = self.target()?;
        let r = target.current();
        Ok(self.check(r)?.map(|id| tag(generation, id)))
    }

    fn with_buffer<R>(
        &mut self,
        id: BufferId,
        f: impl FnOnce(&mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let Some(inner_id) = self.untag(id) else {
            // A buffer of the device that went away.
            return Ok(None);
        };
        let Some(inner) = self.inner.as_mut() else {
            return Ok(None);
        };
        let r = inner.with_buffer(inner_id, f);
        self.check(r)
    }

    fn with_current<R>(
        &mut self,
        f: impl FnOnce(BufferId, &mut Surface<'_>) -> R,
    ) -> Result<Option<R>, PresentError> {
        let (generation, target) = self.target()?;
        let r = target.with_current(|id, s| f(tag(generation, id), s));
        self.check(r)
    }

    fn flush(&mut self, id: BufferId, rects: &[Rectangle]) -> Result<(), PresentError> {
        let Some(inner_id) = self.untag(id) else {
            return Ok(());
        };
        let Some(inner) = self.inner.as_mut() else {
            return Ok(());
        };
        let r = inner.flush(inner_id, rects);
        self.check(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Banner;
    use crate::pixel::{PixelBuffer, PixelFormat};
    use crate::present::test_banners::viewing_strip;
    use crate::present::{BannerPresenter, ScanoutPresenter};
    use embedded_graphics::pixelcolor::Rgb888;
    use std::sync::{Arc, Mutex};

    const W: u32 = 320;
    const H: u32 = 240;
    const APP: Rgb888 = Rgb888::new(10, 20, 30);
    const NEW_APP: Rgb888 = Rgb888::new(200, 0, 0);

    /// A display whose one framebuffer (id 1 on every instance, as a fresh
    /// DRM device numbers them) can be unplugged and plugged back.
    #[derive(Default)]
    struct Display {
        /// `None` while unplugged.
        screen: Option<PixelBuffer>,
        /// Bumped at each unplug: handles on an older instance fail.
        instance: u32,
        opens: u32,
    }

    type Shared = Arc<Mutex<Display>>;

    struct Handle {
        display: Shared,
        instance: u32,
    }

    fn gone() -> PresentError {
        PresentError::Device {
            what: "DRM_IOCTL_MODE_GETCRTC on /dev/dri/card0".into(),
            source: std::io::Error::from_raw_os_error(19),
        }
    }

    impl ScanoutTarget for Handle {
        fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
            let d = self.display.lock().unwrap();
            if d.screen.is_none() || d.instance != self.instance {
                return Err(gone());
            }
            Ok(Some(BufferId(1)))
        }
        fn with_buffer<R>(
            &mut self,
            id: BufferId,
            f: impl FnOnce(&mut Surface<'_>) -> R,
        ) -> Result<Option<R>, PresentError> {
            let mut d = self.display.lock().unwrap();
            if d.instance != self.instance {
                return Err(gone());
            }
            match d.screen.as_mut() {
                Some(b) if id == BufferId(1) => Ok(Some(f(&mut b.surface()))),
                Some(_) => Ok(None),
                None => Err(gone()),
            }
        }
    }

    fn opener(display: &Shared) -> Opener<Handle> {
        let display = display.clone();
        Box::new(move || {
            let mut d = display.lock().unwrap();
            if d.screen.is_none() {
                return Err(PresentError::Capture(Box::new(CaptureError::NoDisplay {
                    path: "/dev/dri".into(),
                    detail: "no card".into(),
                })));
            }
            d.opens += 1;
            Ok(Handle {
                display: display.clone(),
                instance: d.instance,
            })
        })
    }

    fn screen(color: Rgb888) -> PixelBuffer {
        let mut b = PixelBuffer::new(W, H, PixelFormat::Xrgb8888).unwrap();
        b.clear(color);
        b
    }

    /// The first pixel of the banner's first patch, on screen and as drawn.
    fn corner(display: &Shared, banner: &Banner) -> (Option<Rgb888>, Option<Rgb888>) {
        let p = banner.patches[0].rect.top_left;
        let d = display.lock().unwrap();
        let on_screen = d
            .screen
            .as_ref()
            .and_then(|s| s.pixel(p.x as u32, p.y as u32));
        (on_screen, banner.patches[0].pixels.pixel(0, 0))
    }

    #[test]
    fn the_banner_comes_back_on_a_display_that_was_unplugged() {
        let display: Shared = Arc::new(Mutex::new(Display {
            screen: Some(screen(APP)),
            ..Display::default()
        }));
        let mut p = ScanoutPresenter::new(Reopening::new(opener(&display)).unwrap());
        let banner = viewing_strip(W, H);
        p.show(banner.clone()).unwrap();
        let (on, drawn) = corner(&display, &banner);
        assert_eq!(on, drawn, "the banner is on screen");

        // Unplugged: every call fails, reopening too, and nothing panics.
        {
            let mut d = display.lock().unwrap();
            d.screen = None;
            d.instance += 1;
        }
        let e = p.tick().unwrap_err();
        assert!(is_device_error(&e), "{e}");
        assert!(!p.target().is_open());
        for _ in 0..3 {
            assert!(p.tick().is_err());
        }
        assert_eq!(display.lock().unwrap().opens, 1);

        // Plugged back with a fresh buffer (framebuffer id 1 again, as a new
        // device numbers them): the banner is drawn on it.
        display.lock().unwrap().screen = Some(screen(NEW_APP));
        p.tick().unwrap();
        assert!(p.target().is_open());
        assert_eq!(p.target().generation(), 2);
        let (on, drawn) = corner(&display, &banner);
        assert_eq!(on, drawn, "the banner is back on the new display");

        // Hidden: the new display gets its own pixels back, not the old
        // display's.
        p.hide().unwrap();
        let (on, _) = corner(&display, &banner);
        assert_eq!(on, Some(NEW_APP));
        assert_eq!(display.lock().unwrap().opens, 2);
    }

    #[test]
    fn errors_about_the_picture_do_not_reopen_the_device() {
        struct Odd;
        impl ScanoutTarget for Odd {
            fn current(&mut self) -> Result<Option<BufferId>, PresentError> {
                Err(PresentError::Unsupported("tiled buffer".into()))
            }
            fn with_buffer<R>(
                &mut self,
                _id: BufferId,
                _f: impl FnOnce(&mut Surface<'_>) -> R,
            ) -> Result<Option<R>, PresentError> {
                Ok(None)
            }
        }
        let opens = Arc::new(Mutex::new(0));
        let counted = opens.clone();
        let mut t = Reopening::new(Box::new(move || {
            *counted.lock().unwrap() += 1;
            Ok(Odd)
        }))
        .unwrap();
        for _ in 0..3 {
            assert!(t.current().is_err());
        }
        assert!(t.is_open());
        assert_eq!(*opens.lock().unwrap(), 1);
    }

    #[test]
    fn a_display_missing_at_start_is_reported() {
        let display: Shared = Arc::new(Mutex::new(Display::default()));
        let e = Reopening::new(opener(&display)).unwrap_err();
        assert!(e.to_string().contains("no card"), "{e}");
    }
}
