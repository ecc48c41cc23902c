//! Stop-control and end-session hotkeys: key chords the person at the device
//! presses on a local keyboard.
//!
//! Defaults: **Ctrl+Alt+Shift+S** stops control (viewing goes on),
//! **Ctrl+Alt+Shift+E** ends the session. Kiosk applications rarely bind
//! three-modifier chords, and S/E are easy to remember ("stop", "end").
//!
//! The chords are detected from local keyboards only (our own virtual
//! keyboard is never read, so the expert cannot trigger them), and while
//! control runs the local devices are not grabbed: the kiosk application
//! sees the chord's key presses too. That is why the defaults avoid chords
//! applications use.
//!
//! Modifiers match either side (left or right Ctrl…), and the set must match
//! exactly: Ctrl+Alt+Shift+S does not fire for Ctrl+Alt+Shift+Meta+S.

use std::fmt;
use std::str::FromStr;

use shoulder_proto::session::LocalDecision;

use crate::codes::*;
use crate::keys::{KeySet, key_by_name, key_name};

/// The longest chord string accepted; real chords are far shorter.
pub const MAX_CHORD_LEN: usize = 64;

/// The default stop-control chord.
pub const DEFAULT_STOP_CONTROL: &str = "Ctrl+Alt+Shift+S";
/// The default end-session chord.
pub const DEFAULT_END_SESSION: &str = "Ctrl+Alt+Shift+E";

/// Modifier bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Modifiers(u8);

impl Modifiers {
    pub const CTRL: Modifiers = Modifiers(1);
    pub const ALT: Modifiers = Modifiers(2);
    pub const SHIFT: Modifiers = Modifiers(4);
    pub const META: Modifiers = Modifiers(8);

    const ALL: [(Modifiers, &'static str, [u16; 2]); 4] = [
        (Modifiers::CTRL, "Ctrl", [KEY_LEFTCTRL, KEY_RIGHTCTRL]),
        (Modifiers::ALT, "Alt", [KEY_LEFTALT, KEY_RIGHTALT]),
        (Modifiers::SHIFT, "Shift", [KEY_LEFTSHIFT, KEY_RIGHTSHIFT]),
        (Modifiers::META, "Meta", [KEY_LEFTMETA, KEY_RIGHTMETA]),
    ];

    pub fn contains(self, m: Modifiers) -> bool {
        self.0 & m.0 == m.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn with(self, m: Modifiers) -> Self {
        Modifiers(self.0 | m.0)
    }

    fn of_key(code: u16) -> Option<Modifiers> {
        Self::ALL
            .iter()
            .find(|(_, _, keys)| keys.contains(&code))
            .map(|(m, _, _)| *m)
    }

    fn by_name(name: &str) -> Option<Modifiers> {
        match name.to_ascii_lowercase().as_str() {
            "ctrl" | "control" => Some(Modifiers::CTRL),
            "alt" => Some(Modifiers::ALT),
            "shift" => Some(Modifiers::SHIFT),
            "meta" | "super" | "win" | "logo" => Some(Modifiers::META),
            _ => None,
        }
    }

    fn held(keys: &KeySet) -> Modifiers {
        Self::ALL
            .iter()
            .filter(|(_, _, codes)| codes.iter().any(|c| keys.contains(*c)))
            .fold(Modifiers::default(), |acc, (m, _, _)| acc.with(*m))
    }
}

/// A key chord: modifiers plus one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Chord {
    pub modifiers: Modifiers,
    /// evdev key code of the non-modifier key.
    pub key: u16,
}

/// Why a chord string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HotkeyError {
    #[error("the hotkey is empty: write it like \"Ctrl+Alt+Shift+S\"")]
    Empty,
    #[error("the hotkey is {len} characters long, at most {MAX_CHORD_LEN} are allowed")]
    TooLong { len: usize },
    #[error(
        "\"{part}\" in hotkey \"{chord}\" is not a key name: use Ctrl, Alt, Shift or Meta and one key such as S, F12, Esc or Pause"
    )]
    UnknownKey { chord: String, part: String },
    #[error("hotkey \"{chord}\" has an empty part: separate keys with single '+'")]
    EmptyPart { chord: String },
    #[error("hotkey \"{chord}\" has only modifiers: add one key, e.g. \"{chord}+S\"")]
    NoKey { chord: String },
    #[error("hotkey \"{chord}\" has two keys ({first} and {second}): use modifiers plus one key")]
    TwoKeys {
        chord: String,
        first: String,
        second: String,
    },
    #[error("hotkey \"{chord}\" names {modifier} twice")]
    DuplicateModifier { chord: String, modifier: String },
    #[error(
        "hotkey \"{chord}\" has no modifier: a single key would fire during normal use, add Ctrl, Alt, Shift or Meta"
    )]
    NoModifier { chord: String },
    #[error(
        "the stop-control and end-session hotkeys are both \"{chord}\": pick two different chords"
    )]
    SameChord { chord: String },
}

impl FromStr for Chord {
    type Err = HotkeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_CHORD_LEN {
            return Err(HotkeyError::TooLong { len: s.len() });
        }
        let chord = s.trim();
        if chord.is_empty() {
            return Err(HotkeyError::Empty);
        }
        let mut modifiers = Modifiers::default();
        let mut key: Option<(u16, &str)> = None;
        for part in chord.split('+').map(str::trim) {
            if part.is_empty() {
                return Err(HotkeyError::EmptyPart {
                    chord: chord.into(),
                });
            }
            if let Some(m) = Modifiers::by_name(part) {
                if modifiers.contains(m) {
                    return Err(HotkeyError::DuplicateModifier {
                        chord: chord.into(),
                        modifier: part.into(),
                    });
                }
                modifiers = modifiers.with(m);
                continue;
            }
            let Some(code) = key_by_name(part).filter(|c| Modifiers::of_key(*c).is_none()) else {
                return Err(HotkeyError::UnknownKey {
                    chord: chord.into(),
                    part: part.into(),
                });
            };
            if let Some((_, first)) = key {
                return Err(HotkeyError::TwoKeys {
                    chord: chord.into(),
                    first: first.into(),
                    second: part.into(),
                });
            }
            key = Some((code, part));
        }
        let Some((key, _)) = key else {
            return Err(HotkeyError::NoKey {
                chord: chord.into(),
            });
        };
        if modifiers.is_empty() {
            return Err(HotkeyError::NoModifier {
                chord: chord.into(),
            });
        }
        Ok(Chord { modifiers, key })
    }
}

impl fmt::Display for Chord {
    /// As shown on the banner: `Ctrl+Alt+Shift+S`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (m, name, _) in Modifiers::ALL {
            if self.modifiers.contains(m) {
                write!(f, "{name}+")?;
            }
        }
        f.write_str(&key_name(self.key))
    }
}

/// The two chords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hotkeys {
    pub stop_control: Chord,
    pub end_session: Chord,
}

impl Hotkeys {
    /// Parses both chords from configuration strings.
    pub fn parse(stop_control: &str, end_session: &str) -> Result<Self, HotkeyError> {
        let stop_control: Chord = stop_control.parse()?;
        let end_session: Chord = end_session.parse()?;
        if stop_control == end_session {
            return Err(HotkeyError::SameChord {
                chord: stop_control.to_string(),
            });
        }
        Ok(Self {
            stop_control,
            end_session,
        })
    }
}

impl Default for Hotkeys {
    fn default() -> Self {
        match Hotkeys::parse(DEFAULT_STOP_CONTROL, DEFAULT_END_SESSION) {
            Ok(h) => h,
            // The defaults are constants covered by a test.
            Err(_) => unreachable!("default hotkeys parse"),
        }
    }
}

/// Watches local key events for the chords.
#[derive(Debug, Clone)]
pub struct HotkeyDetector {
    hotkeys: Hotkeys,
    held: KeySet,
}

impl HotkeyDetector {
    pub fn new(hotkeys: Hotkeys) -> Self {
        Self {
            hotkeys,
            held: KeySet::new(),
        }
    }

    pub fn hotkeys(&self) -> &Hotkeys {
        &self.hotkeys
    }

    /// Feeds one local key event (from any local keyboard). Returns the
    /// decision when it completes a chord: `StopControlHotkey` or `End`.
    pub fn key(&mut self, code: u16, down: bool) -> Option<LocalDecision> {
        if !down {
            self.held.remove(code);
            return None;
        }
        if !self.held.insert(code) {
            return None; // already down: no second trigger
        }
        let mods = Modifiers::held(&self.held);
        let hit = |c: &Chord| c.key == code && c.modifiers == mods;
        if hit(&self.hotkeys.end_session) {
            Some(LocalDecision::End)
        } else if hit(&self.hotkeys.stop_control) {
            Some(LocalDecision::StopControlHotkey)
        } else {
            None
        }
    }

    /// Forgets held keys (e.g. when the local devices were all re-read).
    pub fn reset(&mut self) {
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u16 = 31;
    const E: u16 = 18;
    const A: u16 = 30;

    fn press(d: &mut HotkeyDetector, keys: &[u16]) -> Vec<LocalDecision> {
        let mut out: Vec<_> = keys.iter().filter_map(|k| d.key(*k, true)).collect();
        out.extend(keys.iter().rev().filter_map(|k| d.key(*k, false)));
        out
    }

    #[test]
    fn defaults_parse_and_display() {
        let h = Hotkeys::default();
        assert_eq!(h.stop_control.to_string(), DEFAULT_STOP_CONTROL);
        assert_eq!(h.end_session.to_string(), DEFAULT_END_SESSION);
    }

    #[test]
    fn chords_fire_with_either_side_modifiers() {
        let mut d = HotkeyDetector::new(Hotkeys::default());
        assert_eq!(
            press(&mut d, &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT, S]),
            vec![LocalDecision::StopControlHotkey]
        );
        assert_eq!(
            press(&mut d, &[KEY_RIGHTSHIFT, KEY_RIGHTCTRL, KEY_RIGHTALT, E]),
            vec![LocalDecision::End]
        );
    }

    #[test]
    fn partial_extra_or_wrong_order_chords_do_not_fire() {
        let mut d = HotkeyDetector::new(Hotkeys::default());
        assert!(press(&mut d, &[KEY_LEFTCTRL, KEY_LEFTALT, S]).is_empty());
        assert!(press(&mut d, &[S, KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT]).is_empty());
        assert!(
            press(
                &mut d,
                &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT, KEY_LEFTMETA, S]
            )
            .is_empty()
        );
        assert!(press(&mut d, &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT, A]).is_empty());
    }

    #[test]
    fn holding_modifiers_fires_once_per_press() {
        let mut d = HotkeyDetector::new(Hotkeys::default());
        for k in [KEY_LEFTCTRL, KEY_LEFTALT, KEY_LEFTSHIFT] {
            assert_eq!(d.key(k, true), None);
        }
        assert_eq!(d.key(S, true), Some(LocalDecision::StopControlHotkey));
        assert_eq!(d.key(S, true), None, "a repeated down does not fire again");
        assert_eq!(d.key(S, false), None);
        assert_eq!(d.key(S, true), Some(LocalDecision::StopControlHotkey));
        d.reset();
        assert_eq!(d.key(S, true), None);
    }

    #[test]
    fn configured_chords() {
        let h = Hotkeys::parse("Meta+Escape", "ctrl + alt + F12").unwrap();
        assert_eq!(h.stop_control.to_string(), "Meta+Esc");
        assert_eq!(h.end_session.to_string(), "Ctrl+Alt+F12");
        let mut d = HotkeyDetector::new(h);
        assert_eq!(
            press(&mut d, &[KEY_RIGHTMETA, 1]),
            vec![LocalDecision::StopControlHotkey]
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let err = |s: &str| s.parse::<Chord>().unwrap_err();
        assert_eq!(err(""), HotkeyError::Empty);
        assert_eq!(err("   "), HotkeyError::Empty);
        assert!(matches!(
            err(&"Ctrl+".repeat(20)),
            HotkeyError::TooLong { .. }
        ));
        assert!(matches!(err("Ctrl++S"), HotkeyError::EmptyPart { .. }));
        assert!(matches!(err("Ctrl+Alt"), HotkeyError::NoKey { .. }));
        assert!(matches!(err("S"), HotkeyError::NoModifier { .. }));
        assert!(matches!(
            err("Ctrl+Ctrl+S"),
            HotkeyError::DuplicateModifier { .. }
        ));
        assert!(matches!(err("Ctrl+S+E"), HotkeyError::TwoKeys { .. }));
        assert!(matches!(
            err("Ctrl+LeftShift"),
            HotkeyError::UnknownKey { .. }
        ));
        let e = err("Ctrl+Alt+Flurb");
        assert!(e.to_string().contains("\"Flurb\""), "{e}");
        assert!(matches!(
            Hotkeys::parse("Ctrl+Alt+S", "alt+ctrl+s"),
            Err(HotkeyError::SameChord { .. })
        ));
    }
}
