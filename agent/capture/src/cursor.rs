//! The pointer cursor, sent apart from the screen pixels: a shape message
//! when the image changes and a position message when it moves.

use shoulder_proto::msg::{CursorShape, MAX_CURSOR_EDGE, Message, Payload};
use xxhash_rust::xxh3::xxh3_64;

/// What the display shows of the cursor (DRM cursor plane).
pub use shoulder_display::cursor::{CursorImage, CursorState};

/// What to tell the expert about the cursor now; both parts only when changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CursorUpdate {
    pub shape: Option<CursorShape>,
    pub position: Option<CursorState>,
}

impl CursorUpdate {
    pub fn is_empty(&self) -> bool {
        self.shape.is_none() && self.position.is_none()
    }

    /// The messages to send: shape first, then position.
    pub fn into_messages(self) -> impl Iterator<Item = Message> {
        self.shape
            .map(|s| Message::CursorShape(Box::new(s)))
            .into_iter()
            .chain(self.position.map(|p| Message::CursorPosition {
                x: p.x,
                y: p.y,
                visible: p.visible,
            }))
    }
}

/// Remembers what the expert was told, so unchanged cursors cost nothing.
#[derive(Debug, Default)]
pub struct CursorTracker {
    shape_hash: Option<u64>,
    position: Option<CursorState>,
}

impl CursorTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget what was sent (new session): the next observation sends all.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Compares the cursor now with what was sent. Images larger than
    /// [`MAX_CURSOR_EDGE`] or with a wrong byte count are not sent (the
    /// position still is).
    pub fn observe(&mut self, state: CursorState, image: Option<&CursorImage>) -> CursorUpdate {
        let mut update = CursorUpdate::default();
        if let Some(img) = image {
            let valid = img.width > 0
                && img.height > 0
                && img.width <= MAX_CURSOR_EDGE
                && img.height <= MAX_CURSOR_EDGE
                && img.argb.len() == usize::from(img.width) * usize::from(img.height) * 4;
            if valid {
                let mut h = xxh3_64(&img.argb);
                h ^= u64::from(img.width) << 48 ^ u64::from(img.height) << 32;
                h ^= u64::from(img.hot_x) << 16 ^ u64::from(img.hot_y);
                if self.shape_hash != Some(h) {
                    self.shape_hash = Some(h);
                    update.shape = Some(CursorShape {
                        width: img.width,
                        height: img.height,
                        hot_x: img.hot_x.min(img.width - 1),
                        hot_y: img.hot_y.min(img.height - 1),
                        pixels: Payload(img.argb.clone()),
                    });
                }
            }
        }
        if self.position != Some(state) {
            self.position = Some(state);
            update.position = Some(state);
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_are_reported() {
        let mut t = CursorTracker::new();
        let img = CursorImage {
            width: 2,
            height: 2,
            hot_x: 1,
            hot_y: 0,
            argb: vec![0xff; 16],
        };
        let pos = CursorState {
            x: 10,
            y: 20,
            visible: true,
        };
        let u = t.observe(pos, Some(&img));
        assert!(u.shape.is_some() && u.position == Some(pos));
        assert_eq!(u.into_messages().count(), 2);
        assert!(t.observe(pos, Some(&img)).is_empty());
        let moved = CursorState { x: 11, ..pos };
        let u = t.observe(moved, Some(&img));
        assert!(u.shape.is_none() && u.position == Some(moved));
        let mut other = img.clone();
        other.argb[0] = 0;
        assert!(t.observe(moved, Some(&other)).shape.is_some());
        let bad = CursorImage {
            argb: vec![0; 3],
            ..img
        };
        assert!(t.observe(moved, Some(&bad)).is_empty());
    }
}
