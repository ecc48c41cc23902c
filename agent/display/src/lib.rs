//! Display access for the Shoulder agent: everything that touches the
//! display device, shared by capture (`shoulder-capture`, which reads the
//! screen) and the consent banner (`shoulder-banner`, which draws on it).
//!
//! - [`PixelFormat`] and [`ScreenGeometry`]: the one description of screen
//!   pixels; [`convert`] turns any format into the wire's XRGB8888.
//! - [`mmap`]: shared mappings of framebuffers and files, and the dma-buf
//!   access bracket.
//! - [`drm::DrmDisplay`] and [`fbdev::FbdevDisplay`]: find the display, follow
//!   the buffer it scans out and map it (read-only, or writable for the
//!   banner through [`ScanoutAccess`]).
//! - [`orientation`]: the turns the kernel knows between a framebuffer and
//!   the person (plane rotation, panel orientation).
//! - [`CaptureError`]: why the display could not be read or written.

pub mod convert;
pub mod cursor;
pub mod drm;
pub mod error;
pub mod fbdev;
pub mod format;
pub mod mmap;
pub mod orientation;
pub mod scanout;
pub mod tiling;

pub use cursor::{CursorImage, CursorState};
pub use error::{CaptureError, SpecError};
pub use format::{
    FrameError, MAX_EDGE, PixelFormat, ScreenGeometry, check_frame, fourcc_name, frame_len,
};
pub use orientation::{KernelOrientation, OrientationError, PanelOrientation};
pub use scanout::{Scanout, ScanoutAccess, ScanoutMut};
pub use shoulder_proto::rotation::{BadRotation, Rotation};
