//! Answering the banner: taps, clicks and keys to local decisions.
//!
//! Pure functions over a [`Layout`]: the agent feeds them events from the
//! grabbed local devices (and the control socket answers by itself).

use embedded_graphics::prelude::{Point, Size};
use shoulder_proto::session::LocalDecision;

use crate::layout::Layout;

/// Linux input key codes (`linux/input-event-codes.h`).
pub mod keys {
    pub const KEY_ESC: u16 = 1;
    pub const KEY_ENTER: u16 = 28;
    pub const KEY_KPENTER: u16 = 96;
}

/// Most keys a binding list may hold; more is a config mistake.
pub const MAX_KEYS_PER_ACTION: usize = 8;

/// Which keys answer an open prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBindings {
    pub accept: Vec<u16>,
    pub decline: Vec<u16>,
}

impl Default for KeyBindings {
    fn default() -> Self {
        Self {
            accept: vec![keys::KEY_ENTER, keys::KEY_KPENTER],
            decline: vec![keys::KEY_ESC],
        }
    }
}

/// Why a key binding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    #[error("no key is bound to {0}: bind at least one, e.g. 28 (Enter) or 1 (Esc)")]
    Empty(&'static str),
    #[error("too many keys bound to {0} (at most {MAX_KEYS_PER_ACTION})")]
    TooMany(&'static str),
    #[error("key {0} is bound to both accept and decline: choose one")]
    Both(u16),
}

impl KeyBindings {
    /// Checked bindings: each action has 1..=8 keys and no key does both.
    pub fn new(accept: Vec<u16>, decline: Vec<u16>) -> Result<Self, BindingError> {
        for (name, list) in [("accept", &accept), ("decline", &decline)] {
            if list.is_empty() {
                return Err(BindingError::Empty(name));
            }
            if list.len() > MAX_KEYS_PER_ACTION {
                return Err(BindingError::TooMany(name));
            }
        }
        if let Some(k) = accept.iter().find(|k| decline.contains(k)) {
            return Err(BindingError::Both(*k));
        }
        Ok(Self { accept, decline })
    }
}

/// The decision a tap or click at screen point `p` makes: a button's, or
/// none (outside the banner, or on the banner but not on a button). While a
/// prompt is open, input is grabbed, so a tap elsewhere is simply dropped.
pub fn answer_tap(layout: &Layout, p: Point) -> Option<LocalDecision> {
    layout
        .buttons
        .iter()
        .find(|b| b.rect.contains(p))
        .map(|b| b.decision)
}

/// The decision a key press makes: only while a prompt is open, and only
/// for the bound keys. Stopping control by hotkey is the input crate's
/// chord detection, not a banner key.
pub fn answer_key(layout: &Layout, key: u16, bindings: &KeyBindings) -> Option<LocalDecision> {
    if !layout.prompt_open {
        return None;
    }
    if bindings.accept.contains(&key) {
        Some(LocalDecision::Accept)
    } else if bindings.decline.contains(&key) {
        Some(LocalDecision::Decline)
    } else {
        None
    }
}

/// The range of one absolute axis of an input device (`input_absinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsAxis {
    pub min: i32,
    pub max: i32,
}

/// Maps a touchscreen's or tablet's absolute coordinates to screen pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TouchScaler {
    pub x: AbsAxis,
    pub y: AbsAxis,
    pub screen: Size,
}

impl TouchScaler {
    /// The screen pixel for a device position; values outside the axis
    /// range (some panels report them) are clamped to the screen edge. An
    /// axis with `max <= min` (a broken device) maps everything to 0.
    pub fn to_screen(&self, x: i32, y: i32) -> Point {
        Point::new(
            scale(x, self.x, self.screen.width),
            scale(y, self.y, self.screen.height),
        )
    }
}

fn scale(v: i32, axis: AbsAxis, pixels: u32) -> i32 {
    let span = i64::from(axis.max) - i64::from(axis.min);
    if span <= 0 || pixels == 0 {
        return 0;
    }
    let v = (i64::from(v) - i64::from(axis.min)).clamp(0, span);
    // Round to nearest: min maps to 0, max to the last pixel.
    ((v * (i64::from(pixels) - 1) + span / 2) / span) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Renderer, ScreenSpec, Style};
    use crate::pixel::PixelFormat;
    use crate::view::{PromptView, StripMode, StripView, View};
    use shoulder_proto::msg::ConsentKind;
    use std::time::Duration;

    fn renderer() -> Renderer {
        Renderer::new(
            ScreenSpec {
                width: 800,
                height: 480,
                format: PixelFormat::Xrgb8888,
            },
            Style::default(),
        )
        .unwrap()
    }

    fn prompt(kind: ConsentKind) -> PromptView {
        PromptView {
            kind,
            expert: "Jane Expert".into(),
            how: "plant certificate".into(),
            says: None,
            seconds_left: 60,
            arming: false,
            help: None,
            file: None,
        }
    }

    fn strip(mode: StripMode) -> StripView {
        StripView {
            mode,
            expert: "Jane Expert".into(),
            elapsed: Duration::from_secs(5),
            stop_hotkey: "Ctrl+Alt+Pause".into(),
            file: None,
        }
    }

    fn center(r: embedded_graphics::primitives::Rectangle) -> Point {
        r.center()
    }

    #[test]
    fn taps_on_prompt_buttons_answer_it() {
        let layout = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::View)),
            ..View::default()
        });
        let accept = layout.button(LocalDecision::Accept).unwrap();
        let decline = layout.button(LocalDecision::Decline).unwrap();
        assert_eq!(
            answer_tap(&layout, center(accept)),
            Some(LocalDecision::Accept)
        );
        assert_eq!(
            answer_tap(&layout, center(decline)),
            Some(LocalDecision::Decline)
        );
        // Corners are inside, one pixel past is not.
        assert_eq!(
            answer_tap(&layout, accept.top_left),
            Some(LocalDecision::Accept)
        );
        let br = accept.bottom_right().unwrap();
        assert_eq!(answer_tap(&layout, br + Point::new(1, 1)), None);
    }

    #[test]
    fn only_a_file_prompt_has_the_allow_all_files_button_and_only_once_armed() {
        let file = PromptView {
            file: Some(shoulder_proto::session::FileAsk {
                to_device: false,
                name: "kiosk.log".into(),
                size: 84_000,
            }),
            ..prompt(ConsentKind::Files)
        };
        let layout = renderer().layout(&View {
            prompt: Some(file.clone()),
            ..View::default()
        });
        let all = layout
            .button(LocalDecision::AllowFiles)
            .expect("the button");
        assert_eq!(
            answer_tap(&layout, center(all)),
            Some(LocalDecision::AllowFiles)
        );
        let accept = layout.button(LocalDecision::Accept).unwrap();
        assert!(
            all.top_left.y > accept.bottom_right().unwrap().y,
            "below the answers"
        );
        // No key answers with it: a yes to every file is a deliberate tap.
        for key in [28, 96, 1, 57] {
            assert_ne!(
                answer_key(&layout, key, &KeyBindings::default()),
                Some(LocalDecision::AllowFiles)
            );
        }
        let arming = renderer().layout(&View {
            prompt: Some(PromptView {
                arming: true,
                ..file
            }),
            ..View::default()
        });
        assert!(arming.button(LocalDecision::AllowFiles).is_none());
        for kind in [ConsentKind::View, ConsentKind::Control] {
            let layout = renderer().layout(&View {
                prompt: Some(prompt(kind)),
                ..View::default()
            });
            assert!(layout.button(LocalDecision::AllowFiles).is_none());
        }
    }

    #[test]
    fn the_strip_offers_to_cancel_a_file_under_way() {
        let file = shoulder_proto::session::FileAsk {
            to_device: true,
            name: "update.bin".into(),
            size: 1000,
        };
        for mode in [StripMode::Viewing, StripMode::Controlling] {
            let layout = renderer().layout(&View {
                strip: Some(StripView {
                    file: Some(file.clone()),
                    ..strip(mode)
                }),
                ..View::default()
            });
            let cancel = layout
                .button(LocalDecision::CancelFile)
                .expect("a Cancel file button");
            assert_eq!(
                answer_tap(&layout, center(cancel)),
                Some(LocalDecision::CancelFile)
            );
            assert!(layout.button(LocalDecision::End).is_some(), "End stays");
        }
        let layout = renderer().layout(&View {
            strip: Some(strip(StripMode::Viewing)),
            ..View::default()
        });
        assert!(layout.button(LocalDecision::CancelFile).is_none());
    }

    #[test]
    fn taps_outside_the_buttons_do_nothing() {
        let layout = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::View)),
            ..View::default()
        });
        assert_eq!(
            answer_tap(&layout, Point::new(2, 2)),
            None,
            "outside the banner"
        );
        let card = layout.region(crate::layout::RegionKind::Prompt).unwrap();
        assert!(layout.covers(card.top_left + Point::new(3, 3)));
        assert_eq!(
            answer_tap(&layout, card.top_left + Point::new(3, 3)),
            None,
            "on the card"
        );
        assert_eq!(answer_tap(&layout, Point::new(-5, 9999)), None);
    }

    #[test]
    fn strip_buttons_stop_control_and_end() {
        let layout = renderer().layout(&View {
            strip: Some(strip(StripMode::Controlling)),
            ..View::default()
        });
        let stop = layout.button(LocalDecision::StopControl).unwrap();
        let end = layout.button(LocalDecision::End).unwrap();
        assert_eq!(
            answer_tap(&layout, center(stop)),
            Some(LocalDecision::StopControl)
        );
        assert_eq!(answer_tap(&layout, center(end)), Some(LocalDecision::End));
        let viewing = renderer().layout(&View {
            strip: Some(strip(StripMode::Viewing)),
            ..View::default()
        });
        assert!(
            viewing.button(LocalDecision::StopControl).is_none(),
            "nothing to stop"
        );
        assert!(viewing.button(LocalDecision::End).is_some());
    }

    #[test]
    fn control_prompt_over_the_strip_keeps_both_sets_of_buttons() {
        let layout = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::Control)),
            strip: Some(strip(StripMode::Viewing)),
            ..View::default()
        });
        for d in [
            LocalDecision::Accept,
            LocalDecision::Decline,
            LocalDecision::End,
        ] {
            let r = layout.button(d).unwrap();
            assert_eq!(answer_tap(&layout, center(r)), Some(d));
        }
    }

    #[test]
    fn keys_answer_only_an_open_prompt() {
        let b = KeyBindings::default();
        let open = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::View)),
            ..View::default()
        });
        assert_eq!(
            answer_key(&open, keys::KEY_ENTER, &b),
            Some(LocalDecision::Accept)
        );
        assert_eq!(
            answer_key(&open, keys::KEY_KPENTER, &b),
            Some(LocalDecision::Accept)
        );
        assert_eq!(
            answer_key(&open, keys::KEY_ESC, &b),
            Some(LocalDecision::Decline)
        );
        assert_eq!(answer_key(&open, 30, &b), None, "'a' does nothing");
        let strip_only = renderer().layout(&View {
            strip: Some(strip(StripMode::Controlling)),
            ..View::default()
        });
        assert_eq!(answer_key(&strip_only, keys::KEY_ENTER, &b), None);
        assert_eq!(answer_key(&strip_only, keys::KEY_ESC, &b), None);
    }

    #[test]
    fn custom_bindings_are_checked() {
        let b = KeyBindings::new(vec![57], vec![14]).unwrap(); // Space, Backspace
        let open = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::View)),
            ..View::default()
        });
        assert_eq!(answer_key(&open, 57, &b), Some(LocalDecision::Accept));
        assert_eq!(answer_key(&open, keys::KEY_ENTER, &b), None);
        assert_eq!(
            KeyBindings::new(vec![], vec![1]),
            Err(BindingError::Empty("accept"))
        );
        assert_eq!(
            KeyBindings::new(vec![1], vec![1]),
            Err(BindingError::Both(1))
        );
        assert!(KeyBindings::new(vec![2; 9], vec![1]).is_err());
    }

    #[test]
    fn touch_coordinates_scale_to_the_screen() {
        let s = TouchScaler {
            x: AbsAxis { min: 0, max: 32767 },
            y: AbsAxis { min: 0, max: 32767 },
            screen: Size::new(1920, 1080),
        };
        assert_eq!(s.to_screen(0, 0), Point::new(0, 0));
        assert_eq!(s.to_screen(32767, 32767), Point::new(1919, 1079));
        assert_eq!(s.to_screen(16384, 16384), Point::new(960, 540));
        assert_eq!(s.to_screen(-50, 40000), Point::new(0, 1079), "clamped");
        let offset = TouchScaler {
            x: AbsAxis {
                min: 100,
                max: 4000,
            },
            y: AbsAxis { min: 200, max: 200 },
            screen: Size::new(800, 480),
        };
        assert_eq!(offset.to_screen(100, 5), Point::new(0, 0));
        assert_eq!(offset.to_screen(4000, 5000).x, 799);
        assert_eq!(offset.to_screen(0, 5000).y, 0, "degenerate axis maps to 0");
    }

    #[test]
    fn a_tap_through_the_scaler_hits_accept() {
        let layout = renderer().layout(&View {
            prompt: Some(prompt(ConsentKind::View)),
            ..View::default()
        });
        let accept = layout.button(LocalDecision::Accept).unwrap().center();
        let s = TouchScaler {
            x: AbsAxis { min: 0, max: 32767 },
            y: AbsAxis { min: 0, max: 32767 },
            screen: Size::new(800, 480),
        };
        let raw = |v: i32, px: u32| ((i64::from(v) * 32767) / (i64::from(px) - 1)) as i32;
        let p = s.to_screen(raw(accept.x, 800), raw(accept.y, 480));
        assert_eq!(answer_tap(&layout, p), Some(LocalDecision::Accept));
    }
}
