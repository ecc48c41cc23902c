//! A frame source and its encoder together: what the agent's capture thread
//! holds for one viewing session.

use shoulder_proto::consent::ViewConsent;
use shoulder_proto::msg::ScreenInfo;

use crate::cursor::CursorUpdate;
use crate::encoder::{EncodeError, EncodedUpdate, Encoder};
use crate::source::{CaptureError, FrameSource, Rotation, ScreenGeometry, SourceSpec};

/// Source + encoder. Open it when a session starts viewing (so the display
/// is only touched while someone watches) and drop it when viewing stops.
pub struct Capturer {
    source: Box<dyn FrameSource>,
    encoder: Encoder,
    /// How the framebuffer is turned for the person: the expert gets the
    /// upright picture.
    rotation: Rotation,
}

impl std::fmt::Debug for Capturer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capturer")
            .field("source", &self.source.describe())
            .field("encoder", &self.encoder)
            .field("rotation", &self.rotation)
            .finish()
    }
}

/// Why [`Capturer::capture`] produced nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapturerError {
    /// The screen could not be read ([`CaptureError::is_transient`]: wait and
    /// retry, telling the expert the screen is unavailable).
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Consent is gone: stop capturing.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl CapturerError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CapturerError::Capture(e) if e.is_transient())
    }
}

impl Capturer {
    /// Opens the source named by `spec`.
    pub fn open(spec: &SourceSpec) -> Result<Self, CaptureError> {
        Ok(Self::new(crate::open::open(spec)?))
    }

    /// Wraps an already open source (tests, the synthetic screen whose
    /// controls the input sink keeps).
    pub fn new(source: Box<dyn FrameSource>) -> Self {
        Self {
            source,
            encoder: Encoder::new(),
            rotation: Rotation::Deg0,
        }
    }

    /// The same, sending the picture turned upright (a panel mounted
    /// sideways; see [`Rotation`]).
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = rotation;
        self
    }

    /// Turns the picture from the next capture on; the expert is told the
    /// new screen size and gets the whole screen.
    pub fn set_rotation(&mut self, rotation: Rotation) {
        self.rotation = rotation;
    }

    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// The same with sparse probing of unchanged screens (see
    /// [`Encoder::with_probing`]): cheaper idle sessions, thin changes found
    /// a few checks later.
    pub fn with_probing(mut self, probing: crate::encoder::Probing) -> Self {
        let compression = self.encoder.compression();
        self.encoder = Encoder::with_probing(probing);
        self.encoder.set_compression(compression);
        // Lossy is set per capture by its caller; it starts off.
        self
    }

    /// Rectangles compressed as the expert takes them
    /// ([`Encoder::set_compression`]).
    pub fn with_compression(mut self, c: crate::encoder::Compression) -> Self {
        self.encoder.set_compression(c);
        self
    }

    /// Photo-like areas lossy or not ([`Encoder::set_lossy`]); may change
    /// from one capture to the next as the link's speed is learnt.
    pub fn set_lossy(&mut self, lossy: Option<crate::lossy::Lossy>) {
        self.encoder.set_lossy(lossy);
    }

    /// The screen now as the expert gets it (upright size, the source's
    /// format).
    pub fn geometry(&mut self) -> Result<ScreenGeometry, CaptureError> {
        Ok(self.source.geometry()?.turned(self.rotation))
    }

    /// What the expert was last told about the screen (after the first update).
    pub fn screen_info(&self) -> Option<ScreenInfo> {
        self.encoder.screen_info()
    }

    /// Captures and encodes what changed since the previous update (all of it
    /// if `full`). `Ok(None)`: nothing changed. A new screen size comes as
    /// [`EncodedUpdate::screen`] followed by a full update.
    pub fn capture(
        &mut self,
        consent: &ViewConsent,
        full: bool,
    ) -> Result<Option<EncodedUpdate>, CapturerError> {
        if !consent.is_live() {
            return Err(EncodeError::ConsentWithdrawn.into());
        }
        let frame = self.source.capture()?.rotated(self.rotation);
        Ok(self.encoder.encode(consent, &frame, full)?)
    }

    /// [`Self::capture`], handing parts of a large update to `early` as
    /// they are made (see [`Encoder::encode_into`]): the update returned
    /// holds the rest.
    pub fn capture_into(
        &mut self,
        consent: &ViewConsent,
        full: bool,
        early: crate::encoder::EarlySink<'_>,
    ) -> Result<Option<EncodedUpdate>, CapturerError> {
        if !consent.is_live() {
            return Err(EncodeError::ConsentWithdrawn.into());
        }
        let frame = self.source.capture()?.rotated(self.rotation);
        Ok(self
            .encoder
            .encode_into(consent, &frame, full, std::time::Instant::now(), early)?)
    }

    /// Whether the source shows another buffer than the one last captured
    /// (a page flip), asked cheaply without capturing
    /// ([`FrameSource::buffer_on_screen`]). `None`: the source cannot tell.
    pub fn flipped(&mut self) -> Option<bool> {
        let on_screen = self.source.buffer_on_screen()?;
        Some(self.encoder.last_buffer() != Some(on_screen))
    }

    /// Cursor shape/position changes, for sources with a separate cursor.
    pub fn cursor(&mut self) -> Result<Option<CursorUpdate>, CaptureError> {
        self.source.cursor()
    }

    /// Compares the expert's view self-check with what this encoder sent;
    /// what differs is sent again with the next capture.
    pub fn check_view(&mut self, report: &shoulder_proto::ViewReport) -> crate::ViewCheck {
        self.encoder.check_view(report)
    }

    /// Captures from `source` instead (the expert chose another screen):
    /// the next update is complete, with screen info of a new generation.
    pub fn replace_source(&mut self, source: Box<dyn FrameSource>) {
        self.source = source;
        self.encoder.reset();
    }

    /// Forget what the expert has: the next update is complete, with screen
    /// info (a resumed session, a client that lost its framebuffer).
    pub fn reset(&mut self) {
        self.encoder.reset();
    }

    pub fn describe(&self) -> String {
        self.source.describe()
    }
}

#[cfg(all(test, feature = "synthetic"))]
mod tests {
    use super::*;
    use crate::synthetic::{Clock, SyntheticScreen};
    use std::time::Duration;

    #[test]
    fn synthetic_session_updates_after_a_click() {
        let (_pair, consent) = shoulder_proto::testing::granted_view();
        let screen =
            SyntheticScreen::new(320, 240).with_clock(Clock::Fixed(Duration::from_secs(5)));
        let controls = screen.controls();
        let mut c = Capturer::new(Box::new(screen));
        let first = c.capture(&consent, false).unwrap().unwrap();
        assert_eq!(first.screen.unwrap().width, 320);
        assert!(c.capture(&consent, false).unwrap().is_none());
        let (x, y) = controls.counter_button_centre();
        controls.pointer(x, y, 1);
        let u = c.capture(&consent, false).unwrap().unwrap();
        assert!(u.screen.is_none() && u.stats.rects > 0);
        assert_eq!(c.screen_info().unwrap().height, 240);
        c.reset();
        assert!(
            c.capture(&consent, false)
                .unwrap()
                .unwrap()
                .screen
                .is_some()
        );
    }

    #[test]
    fn turning_the_panel_announces_the_upright_screen_anew() {
        let (_pair, consent) = shoulder_proto::testing::granted_view();
        let screen =
            SyntheticScreen::new(320, 240).with_clock(Clock::Fixed(Duration::from_secs(5)));
        let mut c = Capturer::new(Box::new(screen)).with_rotation(Rotation::Deg90);
        let first = c.capture(&consent, false).unwrap().unwrap();
        let info = first.screen.unwrap();
        assert_eq!((info.width, info.height), (240, 320));
        assert_eq!(c.geometry().unwrap().width, 240);
        assert!(c.capture(&consent, false).unwrap().is_none());
        c.set_rotation(Rotation::Deg180);
        let turned = c.capture(&consent, false).unwrap().unwrap();
        let info = turned.screen.expect("a new screen");
        assert_eq!((info.width, info.height), (320, 240));
    }
}
