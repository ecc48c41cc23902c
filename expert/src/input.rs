//! What the expert holds down on the device, so it can all be let go at once.
//!
//! A key held when the window loses focus would otherwise stay pressed on the
//! device (the release goes to another window). The GUI feeds every key,
//! button and touch through [`HeldInput`] and calls [`HeldInput::release_all`]
//! on focus loss, on control end and on disconnect.

use std::collections::BTreeSet;

use shoulder_proto::session::UserAction;
use shoulder_proto::{Buttons, Key, Pointer, Touch, TouchPhase};

use crate::keymap::MODIFIERS;

/// Touch slot used for the mouse in "send touch" mode.
pub const MOUSE_TOUCH_SLOT: u8 = 0;
/// Keys held at once; a keyboard has no more than this many keys to hold,
/// and a bound keeps a confused event stream from growing the set.
pub const MAX_HELD_KEYS: usize = 32;

/// Keys, buttons and touch the expert holds on the device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeldInput {
    keys: BTreeSet<u16>,
    buttons: u8,
    pos: (u16, u16),
    touch_down: bool,
}

impl HeldInput {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn held_keys(&self) -> impl Iterator<Item = u16> + '_ {
        self.keys.iter().copied()
    }

    pub fn buttons(&self) -> u8 {
        self.buttons
    }

    /// Nothing held?
    pub fn is_idle(&self) -> bool {
        self.keys.is_empty() && self.buttons == 0 && !self.touch_down
    }

    /// A key went down or up. Returns the event to send: auto-repeated presses
    /// and releases of keys we never pressed send nothing (the device's kernel
    /// makes repeats itself).
    pub fn key(&mut self, code: u16, down: bool) -> Option<Key> {
        if down {
            if self.keys.contains(&code) || self.keys.len() >= MAX_HELD_KEYS {
                return None;
            }
            self.keys.insert(code);
        } else if !self.keys.remove(&code) {
            return None;
        }
        Some(Key { code, down })
    }

    /// The pointer moved, a button changed, or the wheel turned.
    pub fn pointer(&mut self, x: u16, y: u16, buttons: u8, wheel: i8, hwheel: i8) -> Pointer {
        self.pos = (x, y);
        self.buttons = buttons & Buttons::ALL;
        Pointer {
            x,
            y,
            buttons: Buttons(self.buttons),
            wheel,
            hwheel,
        }
    }

    /// Sets or clears one button at the current position.
    pub fn button(&mut self, x: u16, y: u16, button: u8, down: bool) -> Pointer {
        let b = if down {
            self.buttons | button
        } else {
            self.buttons & !button
        };
        self.pointer(x, y, b, 0, 0)
    }

    /// "Send touch" mode: the primary button acts as one finger.
    pub fn touch(&mut self, x: u16, y: u16, phase: TouchPhase) -> Option<Touch> {
        match phase {
            TouchPhase::Down => self.touch_down = true,
            TouchPhase::Move if !self.touch_down => return None,
            TouchPhase::Move => {}
            TouchPhase::Up if !self.touch_down => return None,
            TouchPhase::Up => self.touch_down = false,
        }
        self.pos = (x, y);
        Some(Touch {
            slot: MOUSE_TOUCH_SLOT,
            phase,
            x,
            y,
        })
    }

    /// Lets go of everything: ordinary keys first, modifiers last (so no
    /// stray shortcut fires), then buttons, then touch. Returns the actions
    /// to send; afterwards nothing is held.
    pub fn release_all(&mut self) -> Vec<UserAction> {
        let mut out = Vec::new();
        let keys = std::mem::take(&mut self.keys);
        let (mods, plain): (Vec<u16>, Vec<u16>) =
            keys.into_iter().partition(|c| MODIFIERS.contains(c));
        for code in plain.into_iter().chain(mods) {
            out.push(UserAction::Key(Key { code, down: false }));
        }
        if self.buttons != 0 {
            let (x, y) = self.pos;
            out.push(UserAction::Pointer(self.pointer(x, y, 0, 0, 0)));
        }
        if self.touch_down {
            let (x, y) = self.pos;
            if let Some(t) = self.touch(x, y, TouchPhase::Up) {
                out.push(UserAction::Touch(t));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keymap::{KEY_LEFTCTRL, KEY_LEFTSHIFT};

    #[test]
    fn repeats_and_stray_releases_send_nothing() {
        let mut h = HeldInput::new();
        assert_eq!(
            h.key(30, true),
            Some(Key {
                code: 30,
                down: true
            })
        );
        assert_eq!(h.key(30, true), None, "auto-repeat is the device's job");
        assert_eq!(h.key(31, false), None, "never pressed");
        assert_eq!(
            h.key(30, false),
            Some(Key {
                code: 30,
                down: false
            })
        );
        assert!(h.is_idle());
    }

    #[test]
    fn focus_loss_releases_every_held_key_modifiers_last() {
        let mut h = HeldInput::new();
        h.key(KEY_LEFTCTRL, true);
        h.key(KEY_LEFTSHIFT, true);
        h.key(30, true);
        h.key(48, true);
        h.button(10, 20, Buttons::LEFT, true);
        let released = h.release_all();
        assert_eq!(
            released,
            vec![
                UserAction::Key(Key {
                    code: 30,
                    down: false
                }),
                UserAction::Key(Key {
                    code: 48,
                    down: false
                }),
                UserAction::Key(Key {
                    code: KEY_LEFTCTRL,
                    down: false
                }),
                UserAction::Key(Key {
                    code: KEY_LEFTSHIFT,
                    down: false
                }),
                UserAction::Pointer(Pointer {
                    x: 10,
                    y: 20,
                    buttons: Buttons(0),
                    wheel: 0,
                    hwheel: 0
                }),
            ]
        );
        assert!(h.is_idle());
        assert!(h.release_all().is_empty(), "nothing left to release");
    }

    #[test]
    fn touch_mode_lifts_the_finger_on_release_all() {
        let mut h = HeldInput::new();
        assert!(h.touch(5, 5, TouchPhase::Move).is_none());
        h.touch(5, 5, TouchPhase::Down).unwrap();
        h.touch(7, 9, TouchPhase::Move).unwrap();
        let released = h.release_all();
        assert_eq!(
            released,
            vec![UserAction::Touch(Touch {
                slot: 0,
                phase: TouchPhase::Up,
                x: 7,
                y: 9
            })]
        );
    }

    #[test]
    fn held_keys_are_bounded() {
        let mut h = HeldInput::new();
        for c in 0..100 {
            h.key(c, true);
        }
        assert_eq!(h.held_keys().count(), MAX_HELD_KEYS);
        assert_eq!(h.release_all().len(), MAX_HELD_KEYS);
    }
}
