//! On-screen consent banner: rendering and presenters.
//!
//! - [`Renderer`] lays out and draws a [`View`] (prompt, session strip, chat
//!   line, notice) for one screen into [`Patch`]es in the screen's
//!   [`PixelFormat`], pure and snapshot-tested against golden PNGs.
//! - [`Layout`] tells where the buttons and banner regions are;
//!   [`answer`] maps taps and keys to a [`LocalDecision`](shoulder_proto::session::LocalDecision).
//! - [`present`] puts a rendered [`Banner`] on the physical screen.

pub mod answer;
pub mod layout;
pub mod pixel;
pub mod present;
pub mod text;
pub mod view;

pub use answer::{AbsAxis, KeyBindings, TouchScaler, answer_key, answer_tap};
pub use layout::{
    Banner, Button, Edge, Labels, Layout, Patch, Region, RegionKind, RenderError, Renderer,
    ScreenSpec, Style,
};
pub use pixel::{BufferError, PixelBuffer, PixelFormat, Surface};
pub use view::{BannerState, HelpAsked, PromptView, StripMode, StripView, View};
