//! Screen capture backends and the frame encoder of the Shoulder agent.
//!
//! # Pieces
//!
//! - [`FrameSource`]: where pixels come from. Backends: [`drm::DrmSource`]
//!   (DRM/KMS scanout), [`fbdev::FbdevSource`] (`/dev/fb0`),
//!   [`rawfile::RawFileSource`] (a file of raw pixels, re-read every tick) and
//!   `synthetic::SyntheticScreen` (the demo kiosk screen, drawn in memory;
//!   only with the `synthetic` feature, see below). [`open`] builds one from a [`SourceSpec`] such as
//!   `rawfile:/tmp/screen.raw@1920x1080:XRGB8888`.
//! - [`Encoder`]: sans-I/O change detection and encoding into
//!   [`shoulder_proto::msg::UpdatePart`]s (solid fills, scroll copies, lz4,
//!   raw), with bounded memory (one shadow frame plus scratch).
//! - [`Pacer`]: sans-I/O decision of when to capture next, so an idle screen
//!   costs almost nothing and a busy one is sent as fast as the client takes it.
//!
//! Finding the display and mapping what it scans out is `shoulder-display`'s
//! (shared with the consent banner, which draws into that buffer); the DRM
//! and fbdev sources here read through it. [`PixelFormat`],
//! [`ScreenGeometry`] and [`CaptureError`] are the display crate's, named
//! here too.
//!
//! # Features
//!
//! - `synthetic` (default): the demo kiosk screen ([`SourceSpec::Synthetic`])
//!   and the benchmark `scenarios`, both drawn with `shoulder-kiosk-ui`.
//!   Tests, benchmarks and `capture-probe` use them; the device agent
//!   depends on this crate with `default-features = false`, so the demo UI
//!   stays out of the device binary (its `synthetic` feature turns it back
//!   on).
//!
//! # Typical loop (the agent's capture thread)
//!
//! ```no_run
//! # use std::time::Instant;
//! # use shoulder_capture::*;
//! # fn send(_: shoulder_proto::msg::Message) {}
//! # fn demo(consent: &shoulder_proto::consent::ViewConsent) -> Result<(), Box<dyn std::error::Error>> {
//! let mut capturer = Capturer::open(&"synthetic:1280x720".parse()?)?;
//! let mut pacer = Pacer::new(PacingConfig::default());
//! pacer.request(Instant::now(), false); // UpdateRequested { incremental: false }
//! loop {
//!     let now = Instant::now();
//!     if pacer.should_capture(now) {
//!         match capturer.capture(consent, pacer.full_requested()) {
//!             Ok(update) => {
//!                 pacer.captured(now, update.is_some());
//!                 for msg in update.into_iter().flat_map(|u| u.into_messages()) {
//!                     send(msg); // ScreenInfo (if the screen changed), then Update parts
//!                 }
//!             }
//!             // Display off, file being rewritten: tell the expert, retry slowly.
//!             Err(e) if e.is_transient() => pacer.unavailable(now),
//!             Err(e) => return Err(e.into()),
//!         }
//!         if let Some(cursor) = capturer.cursor()? {
//!             cursor.into_messages().for_each(send);
//!         }
//!     }
//!     // Sleep until pacer.poll_timeout() (None: until the next request),
//!     // waking early for a request (pacer.request) or input (pacer.input).
//! #   break;
//! }
//! # Ok(()) }
//! ```

pub mod capturer;
pub mod cursor;
pub mod drm;
pub mod encoder;
pub mod fbdev;
pub mod lossy;
mod open;
pub mod pacing;
pub mod rawfile;
#[cfg(feature = "synthetic")]
pub mod scenarios;
mod scroll;
pub mod source;
#[cfg(feature = "synthetic")]
pub mod synthetic;

pub use capturer::{Capturer, CapturerError};
pub use cursor::{CursorImage, CursorState, CursorTracker, CursorUpdate};
pub use encoder::{
    Compression, EncodeError, EncodeStats, EncodedUpdate, Encoder, Probing, ViewCheck,
};
pub use lossy::{LinkEstimate, Lossy};
pub use open::open;
pub use pacing::{Pacer, PacingConfig};
/// Pixel conversion to the wire format lives with the pixel format.
pub use shoulder_display::convert;
pub use shoulder_display::{KernelOrientation, OrientationError, PanelOrientation};
pub use source::{
    CaptureError, Frame, FrameError, FrameSource, PixelFormat, Rotation, ScreenGeometry,
    SourceSpec, SpecError,
};
