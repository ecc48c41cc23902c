//! Several screens: the outputs the agent can show the expert, where each
//! sits in the desktop the device's compositor makes of them, and what the
//! expert's input needs to land on the one they look at.
//!
//! The desktop is laid out in framebuffer pixels: side by side, left to
//! right in the kernel's order, unless `[[screens]]` in the config places a
//! screen (as weston.ini `[output]` or `xrandr --pos` does). The expert's
//! virtual devices span the whole desktop, as compositors map an absolute
//! device over all their outputs (X11, wlroots; Weston maps a device to one
//! output, see the README).

use std::path::PathBuf;

use shoulder_capture::SourceSpec;
use shoulder_input::{Placement, ScreenSize};
use shoulder_proto::rotation::Rotation;
use shoulder_proto::{MAX_SCREENS, ScreenEntry, ScreenList, text};

use crate::config::ScreenPosition;

/// One screen the expert can be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    /// `CONNECTOR`, or `cardN/CONNECTOR` when the outputs span several cards.
    pub name: String,
    pub card: PathBuf,
    pub connector: String,
    /// The mode's size (framebuffer pixels).
    pub width: u32,
    pub height: u32,
    /// Top-left corner in the desktop.
    pub x: u32,
    pub y: u32,
}

impl Screen {
    /// How to capture it.
    pub fn spec(&self) -> SourceSpec {
        SourceSpec::Drm {
            device: Some(self.card.clone()),
            connector: Some(self.connector.clone()),
        }
    }
}

/// Lays `outputs` out: configured positions first, the others side by
/// side to the right of everything placed, in order. At most
/// [`MAX_SCREENS`] (the rest are logged and left out).
pub fn arrange(
    outputs: &[shoulder_capture::drm::Output],
    positions: &[ScreenPosition],
) -> Vec<Screen> {
    if outputs.len() > MAX_SCREENS {
        tracing::warn!(
            outputs = outputs.len(),
            "more screens than the expert can be offered; the first {MAX_SCREENS} are"
        );
    }
    let several_cards = outputs.iter().any(|o| o.card != outputs[0].card);
    let mut screens: Vec<Screen> = outputs
        .iter()
        .take(MAX_SCREENS)
        .map(|o| {
            let card = o
                .card
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Screen {
                name: if several_cards {
                    format!("{card}/{}", o.connector)
                } else {
                    o.connector.clone()
                },
                card: o.card.clone(),
                connector: o.connector.clone(),
                width: o.width,
                height: o.height,
                x: 0,
                y: 0,
            }
        })
        .collect();
    let mut placed = vec![false; screens.len()];
    for (s, done) in screens.iter_mut().zip(placed.iter_mut()) {
        if let Some(p) = positions.iter().find(|p| {
            p.connector.eq_ignore_ascii_case(&s.name)
                || (!several_cards && p.connector.eq_ignore_ascii_case(&s.connector))
        }) {
            (s.x, s.y) = (u32::from(p.x), u32::from(p.y));
            *done = true;
        }
    }
    let mut right = screens
        .iter()
        .zip(&placed)
        .filter(|(_, p)| **p)
        .map(|(s, _)| s.x + s.width)
        .max()
        .unwrap_or(0);
    for (s, done) in screens.iter_mut().zip(&placed) {
        if !done {
            (s.x, s.y) = (right, 0);
            right += s.width;
        }
    }
    screens
}

/// The desktop's size: every screen inside it.
pub fn desktop(screens: &[Screen]) -> (u32, u32) {
    screens.iter().fold((0, 0), |(w, h), s| {
        (w.max(s.x + s.width), h.max(s.y + s.height))
    })
}

/// What the expert is told: every screen (upright sizes) and which one
/// they see.
pub fn list(screens: &[Screen], current: usize, rotation: Rotation) -> ScreenList {
    let mut list = ScreenList {
        current: u8::try_from(current).unwrap_or(0),
        screens: heapless::Vec::new(),
    };
    for s in screens {
        let (w, h) = rotation.upright_size(s.width, s.height);
        let entry = ScreenEntry {
            name: text(&s.name),
            width: clamp16(w),
            height: clamp16(h),
            x: clamp16(s.x),
            y: clamp16(s.y),
        };
        if list.screens.push(entry).is_err() {
            break;
        }
    }
    list
}

/// Where the expert's input goes for the screen `list` says they see
/// (`None`: one screen, nothing to place).
pub fn placement(list: &ScreenList) -> Option<Placement> {
    if list.screens.len() < 2 {
        return None;
    }
    let current = list.screens.get(usize::from(list.current))?;
    let (w, h) = list.screens.iter().fold((0u32, 0u32), |(w, h), s| {
        (
            w.max(u32::from(s.x) + u32::from(s.width)),
            h.max(u32::from(s.y) + u32::from(s.height)),
        )
    });
    Some(Placement {
        x: current.x,
        y: current.y,
        desktop: ScreenSize::new(clamp16(w), clamp16(h))?,
    })
}

fn clamp16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_capture::drm::Output;

    fn output(card: &str, connector: &str, width: u32, height: u32) -> Output {
        Output {
            card: PathBuf::from(card),
            connector: connector.into(),
            width,
            height,
        }
    }

    #[test]
    fn screens_sit_side_by_side_unless_the_config_places_them() {
        let outs = [
            output("/dev/dri/card0", "HDMI-A-1", 1920, 1080),
            output("/dev/dri/card0", "DSI-1", 800, 480),
        ];
        let s = arrange(&outs, &[]);
        assert_eq!((s[0].x, s[0].y, s[1].x, s[1].y), (0, 0, 1920, 0));
        assert_eq!(desktop(&s), (2720, 1080));
        assert_eq!(s[1].name, "DSI-1");

        // The small panel above the big one, as the compositor has it.
        let pos = [
            ScreenPosition {
                connector: "dsi-1".into(),
                x: 0,
                y: 0,
            },
            ScreenPosition {
                connector: "HDMI-A-1".into(),
                x: 0,
                y: 480,
            },
        ];
        let s = arrange(&outs, &pos);
        assert_eq!((s[0].x, s[0].y, s[1].x, s[1].y), (0, 480, 0, 0));
        assert_eq!(desktop(&s), (1920, 1560));
        let l = list(&s, 1, Rotation::Deg0);
        assert_eq!(l.current, 1);
        assert_eq!(
            placement(&l),
            Some(Placement {
                x: 0,
                y: 0,
                desktop: ScreenSize::new(1920, 1560).unwrap()
            })
        );
    }

    #[test]
    fn outputs_of_several_cards_are_named_with_their_card() {
        let outs = [
            output("/dev/dri/card0", "Virtual-1", 1024, 768),
            output("/dev/dri/card1", "Virtual-1", 800, 600),
        ];
        let s = arrange(&outs, &[]);
        assert_eq!(s[0].name, "card0/Virtual-1");
        assert_eq!(s[1].name, "card1/Virtual-1");
        assert_eq!(
            s[1].spec(),
            SourceSpec::Drm {
                device: Some("/dev/dri/card1".into()),
                connector: Some("Virtual-1".into())
            }
        );
        let l = list(&s, 0, Rotation::Deg90);
        assert_eq!((l.screens[1].width, l.screens[1].height), (600, 800));
        assert_eq!(placement(&list(&s[..1], 0, Rotation::Deg0)), None);
    }

    #[test]
    fn a_screen_placed_in_the_config_leaves_room_for_the_others() {
        let outs = [
            output("/dev/dri/card0", "A-1", 100, 50),
            output("/dev/dri/card0", "B-1", 100, 50),
            output("/dev/dri/card0", "C-1", 100, 50),
        ];
        let pos = [ScreenPosition {
            connector: "B-1".into(),
            x: 300,
            y: 10,
        }];
        let s = arrange(&outs, &pos);
        assert_eq!(
            s.iter().map(|s| (s.x, s.y)).collect::<Vec<_>>(),
            vec![(400, 0), (300, 10), (500, 0)]
        );
    }
}
