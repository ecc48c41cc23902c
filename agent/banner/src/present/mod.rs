//! Presenters: put a rendered [`Banner`] on the physical screen.
//!
//! | presenter | when | how |
//! | --- | --- | --- |
//! | [`DrmScanoutPresenter`] (a [`ScanoutPresenter`]) | another process (the kiosk app) is DRM master | draws into the buffer being scanned out and redraws after every repaint or flip |
//! | [`KmsPresenter`] | nobody else is master | its own dumb buffer on an overlay plane, or the primary plane with the screen composed |
//! | [`FbdevPresenter`] | fbdev-only devices | a [`ScanoutPresenter`] over the `/dev/fbN` mapping |
//! | [`InMemoryPresenter`] | tests; and for the expert when the banner is not in the captured pixels | keeps the banner and composites it into frames |

use std::sync::Arc;

use crate::layout::Banner;
use crate::pixel::Surface;

pub mod capture;
pub mod fbdev;
pub mod kms;
pub mod reopen;
pub mod scanout;
pub mod thread;
pub use capture::{CaptureScanout, DrmScanoutPresenter};
pub use fbdev::{FbdevPresenter, FbdevTarget};
pub use kms::KmsPresenter;
pub use reopen::Reopening;
pub use scanout::{
    BufferId, ScanoutPresenter, ScanoutTarget, TICK_INTERVAL, TickOutcome, TickStats,
};
pub use thread::ScanoutThread;

/// Why a presenter could not show, hide or refresh the banner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PresentError {
    /// A device call failed; `what` says which, with the device path.
    #[error("{what}: {source}")]
    Device {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The display cannot be used this way; the text says why and what to do.
    #[error("{0}")]
    Unsupported(String),
    /// The capture crate could not find or map the scanned-out buffer.
    #[error("{0}")]
    Capture(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The screen changed size or format: render the banner again for the
    /// new screen and show it.
    #[error("the screen changed to {width}x{height}: render the banner for the new screen")]
    ScreenChanged { width: u32, height: u32 },
}

/// Puts the banner on screen. The agent calls `show` when the view changes
/// (the countdown ticks once a second), `hide` when nothing is to be shown,
/// and `refresh` when the capture loop saw the app repaint or flip.
pub trait BannerPresenter {
    /// Shows `banner`, replacing what was shown.
    fn show(&mut self, banner: Arc<Banner>) -> Result<(), PresentError>;
    /// Takes the banner off the screen.
    fn hide(&mut self) -> Result<(), PresentError>;
    /// The app repainted or flipped: put the banner back where it was
    /// overwritten. Cheap when nothing changed.
    fn refresh(&mut self) -> Result<(), PresentError>;
    /// True when the banner's pixels are in the scanned-out buffer, so
    /// capture already shows the expert what the person sees; false when
    /// the agent must composite the banner into captured frames itself
    /// (see [`InMemoryPresenter::composite_into`]).
    fn in_scanout(&self) -> bool;
    /// The banner being shown, if any.
    fn current(&self) -> Option<&Arc<Banner>>;
}

/// Keeps the banner in memory: for tests, and as the source of the banner
/// pixels the agent composites into captured frames when the presenter in
/// use does not draw into the scanout buffer (KMS overlay plane).
#[derive(Debug, Default)]
pub struct InMemoryPresenter {
    banner: Option<Arc<Banner>>,
    /// How often each call was made, for tests.
    pub shows: u32,
    pub hides: u32,
    pub refreshes: u32,
}

impl InMemoryPresenter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Draws the current banner (if any) over a captured frame.
    pub fn composite_into(&self, frame: &mut Surface<'_>) {
        if let Some(b) = &self.banner {
            b.composite_into(frame);
        }
    }
}

impl BannerPresenter for InMemoryPresenter {
    fn show(&mut self, banner: Arc<Banner>) -> Result<(), PresentError> {
        self.shows += 1;
        self.banner = Some(banner);
        Ok(())
    }

    fn hide(&mut self) -> Result<(), PresentError> {
        self.hides += 1;
        self.banner = None;
        Ok(())
    }

    fn refresh(&mut self) -> Result<(), PresentError> {
        self.refreshes += 1;
        Ok(())
    }

    fn in_scanout(&self) -> bool {
        false
    }

    fn current(&self) -> Option<&Arc<Banner>> {
        self.banner.as_ref()
    }
}

/// Banners for the presenters' tests.
#[cfg(test)]
pub(crate) mod test_banners {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::layout::{Banner, Renderer, ScreenSpec, Style};
    use crate::pixel::PixelFormat;
    use crate::view::{StripMode, StripView, View};

    /// The strip "viewed by Jane" for an XRGB8888 screen of `width`×`height`.
    pub fn viewing_strip(width: u32, height: u32) -> Arc<Banner> {
        let r = Renderer::new(
            ScreenSpec {
                width,
                height,
                format: PixelFormat::Xrgb8888,
            },
            Style::default(),
        )
        .expect("a renderer for a test screen");
        let view = View {
            strip: Some(StripView {
                mode: StripMode::Viewing,
                expert: "Jane".into(),
                elapsed: Duration::ZERO,
                stop_hotkey: String::new(),
                file: None,
            }),
            ..View::default()
        };
        Arc::new(r.render(&view).expect("the strip renders"))
    }
}
