//! What the kernel knows about how the picture in a framebuffer reaches the
//! person: the primary plane's `rotation` property (the display hardware
//! turns the buffer while scanning it out) and the connector's `panel
//! orientation` property (the panel is mounted turned in the casing; set by
//! the kernel's quirk tables, device tree, or `video=CONNECTOR:
//! panel_orientation=...` on the kernel command line).
//!
//! Both are turns of the picture on its way to the person, so the turn the
//! agent needs (framebuffer picture → what the person sees, clockwise) is
//! the plane's turn followed by the panel's. A compositor that compensates
//! for the panel in software (Weston's `transform=`, mutter) draws its
//! picture turned the other way into the buffer; the person then sees it
//! upright, and so does the expert after the same turn.

use crate::Rotation;

/// `DRM_MODE_ROTATE_0` .. `DRM_MODE_ROTATE_270`: counter-clockwise turns,
/// one bit each, in the plane's `rotation` bitmask.
const ROTATE_BITS: [(u64, Rotation); 4] = [
    (1 << 0, Rotation::Deg0),
    (1 << 1, Rotation::Deg270),
    (1 << 2, Rotation::Deg180),
    (1 << 3, Rotation::Deg90),
];
/// `DRM_MODE_REFLECT_X | DRM_MODE_REFLECT_Y`.
const REFLECT_BITS: u64 = (1 << 4) | (1 << 5);

/// The connector's `panel orientation` (enum values of the kernel's uAPI,
/// `DRM_MODE_PANEL_ORIENTATION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelOrientation {
    /// "Normal": the panel's top is the casing's top.
    Normal,
    /// "Upside Down".
    UpsideDown,
    /// "Left Side Up": the panel's left edge is at the top, so the person
    /// sees the scanned-out picture turned a quarter clockwise.
    LeftSideUp,
    /// "Right Side Up": the panel's right edge is at the top (a quarter
    /// counter-clockwise).
    RightSideUp,
}

impl PanelOrientation {
    /// From the property's raw value; `None` for values this code does not
    /// know (a newer kernel).
    pub fn from_raw(value: u64) -> Option<Self> {
        Some(match value {
            0 => Self::Normal,
            1 => Self::UpsideDown,
            2 => Self::LeftSideUp,
            3 => Self::RightSideUp,
            _ => return None,
        })
    }

    /// The clockwise turn the mounting adds. The kernel's own console
    /// compensates "Left Side Up" with `DRM_MODE_ROTATE_90` (a quarter
    /// counter-clockwise), so the panel turns the picture a quarter clockwise.
    pub fn turn(self) -> Rotation {
        match self {
            Self::Normal => Rotation::Deg0,
            Self::UpsideDown => Rotation::Deg180,
            Self::LeftSideUp => Rotation::Deg90,
            Self::RightSideUp => Rotation::Deg270,
        }
    }

    /// The property's own name for the value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::UpsideDown => "Upside Down",
            Self::LeftSideUp => "Left Side Up",
            Self::RightSideUp => "Right Side Up",
        }
    }
}

/// What the kernel says about the captured output, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelOrientation {
    /// The primary plane's `rotation` bitmask (`None`: the driver has no such
    /// property, which means no turn).
    pub plane_rotation: Option<u64>,
    /// The connector's `panel orientation` (`None`: not set, or a value this
    /// code does not know; see `panel_raw`).
    pub panel: Option<PanelOrientation>,
    /// The raw `panel orientation` value when it was not one we know.
    pub panel_raw: Option<u64>,
}

/// Why the kernel's orientation cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrientationError {
    #[error(
        "the display hardware mirrors the picture (plane rotation 0x{0:x}); the agent follows turns only: set `rotation` in the agent config to the turn the person sees"
    )]
    Mirrored(u64),
    #[error(
        "the plane's rotation 0x{0:x} is not one turn; set `rotation` in the agent config to the turn the person sees"
    )]
    Unknown(u64),
    #[error(
        "the connector's panel orientation {0} is unknown to this agent; set `rotation` in the agent config to the turn the person sees"
    )]
    UnknownPanel(u64),
}

impl KernelOrientation {
    /// The clockwise turn from the framebuffer's picture to what the person
    /// sees: the plane's turn, then the panel's.
    pub fn seen(&self) -> Result<Rotation, OrientationError> {
        if let Some(raw) = self.panel_raw {
            return Err(OrientationError::UnknownPanel(raw));
        }
        Ok(self
            .plane_turn()?
            .then(self.panel.map_or(Rotation::Deg0, PanelOrientation::turn)))
    }

    /// The clockwise turn the plane gives the buffer while scanning it out.
    pub fn plane_turn(&self) -> Result<Rotation, OrientationError> {
        let Some(bits) = self.plane_rotation else {
            return Ok(Rotation::Deg0);
        };
        if bits & REFLECT_BITS != 0 {
            return Err(OrientationError::Mirrored(bits));
        }
        let mut turns = ROTATE_BITS.iter().filter(|(b, _)| bits & b != 0);
        match (turns.next(), turns.next()) {
            (Some((_, r)), None) => Ok(*r),
            _ => Err(OrientationError::Unknown(bits)),
        }
    }

    /// Whether anything but "no turn" was read.
    pub fn is_turned(&self) -> bool {
        !matches!(self.seen(), Ok(Rotation::Deg0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(plane: Option<u64>, panel: Option<u64>) -> Result<Rotation, OrientationError> {
        let panel_known = panel.and_then(PanelOrientation::from_raw);
        KernelOrientation {
            plane_rotation: plane,
            panel: panel_known,
            panel_raw: panel.filter(|_| panel_known.is_none()),
        }
        .seen()
    }

    #[test]
    fn nothing_set_is_upright() {
        assert_eq!(seen(None, None), Ok(Rotation::Deg0));
        assert_eq!(seen(Some(1), Some(0)), Ok(Rotation::Deg0));
    }

    #[test]
    fn a_panel_mounted_turned_is_the_turn_the_person_sees() {
        assert_eq!(seen(None, Some(1)), Ok(Rotation::Deg180));
        assert_eq!(seen(None, Some(2)), Ok(Rotation::Deg90));
        assert_eq!(seen(None, Some(3)), Ok(Rotation::Deg270));
    }

    #[test]
    fn drm_plane_turns_are_counter_clockwise() {
        assert_eq!(seen(Some(1 << 1), None), Ok(Rotation::Deg270));
        assert_eq!(seen(Some(1 << 2), None), Ok(Rotation::Deg180));
        assert_eq!(seen(Some(1 << 3), None), Ok(Rotation::Deg90));
    }

    #[test]
    fn the_kernel_console_compensation_cancels_out() {
        // fbcon meets "Left Side Up" with DRM_MODE_ROTATE_90 and "Right
        // Side Up" with DRM_MODE_ROTATE_270: its text reads upright.
        assert_eq!(seen(Some(1 << 1), Some(2)), Ok(Rotation::Deg0));
        assert_eq!(seen(Some(1 << 3), Some(3)), Ok(Rotation::Deg0));
        assert_eq!(seen(Some(1 << 2), Some(1)), Ok(Rotation::Deg0));
    }

    #[test]
    fn mirrors_and_nonsense_are_refused_with_what_to_do() {
        let e = seen(Some(1 | (1 << 4)), None).unwrap_err();
        assert!(matches!(e, OrientationError::Mirrored(_)));
        assert!(e.to_string().contains("`rotation`"), "{e}");
        assert!(matches!(
            seen(Some((1 << 1) | (1 << 2)), None),
            Err(OrientationError::Unknown(_))
        ));
        assert!(matches!(
            seen(Some(0), None),
            Err(OrientationError::Unknown(0))
        ));
        assert!(matches!(
            seen(None, Some(9)),
            Err(OrientationError::UnknownPanel(9))
        ));
    }
}
