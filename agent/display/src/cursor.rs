//! The pointer cursor as the display shows it (DRM cursor plane).

/// Where the cursor's hot spot is on screen, and whether it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorState {
    pub x: u16,
    pub y: u16,
    pub visible: bool,
}

/// A cursor image, ARGB8888 little-endian (bytes B, G, R, A), rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorImage {
    pub width: u16,
    pub height: u16,
    pub hot_x: u16,
    pub hot_y: u16,
    pub argb: Vec<u8>,
}
