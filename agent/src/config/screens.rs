//! `[[screens]]`: where each of several screens sits in the desktop the
//! device's compositor makes of them (weston.ini `[output]` positions,
//! `xrandr --pos`), so the expert's input lands on the screen they look at.

use serde::Deserialize;

/// One `[[screens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenPosition {
    /// The connector as the kernel names it (`HDMI-A-1`), or
    /// `cardN/CONNECTOR` when the device has several cards.
    pub connector: String,
    /// Its top-left corner in the desktop, in pixels.
    pub x: u16,
    pub y: u16,
}
