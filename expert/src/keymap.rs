//! Keys of the expert's keyboard to Linux evdev key codes (`KEY_*` from
//! `linux/input-event-codes.h`), by physical position.
//!
//! The device's own keymap turns codes into characters, so the expert types
//! as if sitting at the device: physical keys are sent, never characters.
//! egui reports the physical key where the platform knows it; a few logical
//! keys without a physical twin (`:` `|` `?` …) map to the US key that makes
//! them with Shift (Shift itself is sent as its own key).

use eframe::egui::Key;

pub const KEY_ESC: u16 = 1;
pub const KEY_BACKSPACE: u16 = 14;
pub const KEY_TAB: u16 = 15;
pub const KEY_ENTER: u16 = 28;
pub const KEY_LEFTCTRL: u16 = 29;
pub const KEY_LEFTSHIFT: u16 = 42;
pub const KEY_RIGHTSHIFT: u16 = 54;
pub const KEY_LEFTALT: u16 = 56;
pub const KEY_SPACE: u16 = 57;
pub const KEY_F1: u16 = 59;
pub const KEY_F4: u16 = 62;
pub const KEY_RIGHTCTRL: u16 = 97;
pub const KEY_SYSRQ: u16 = 99;
pub const KEY_RIGHTALT: u16 = 100;
pub const KEY_DELETE: u16 = 111;
pub const KEY_LEFTMETA: u16 = 125;
pub const KEY_RIGHTMETA: u16 = 126;

/// Modifier codes, released last when everything is let go.
pub const MODIFIERS: [u16; 8] = [
    KEY_LEFTCTRL,
    KEY_RIGHTCTRL,
    KEY_LEFTSHIFT,
    KEY_RIGHTSHIFT,
    KEY_LEFTALT,
    KEY_RIGHTALT,
    KEY_LEFTMETA,
    KEY_RIGHTMETA,
];

/// The evdev code for an egui key, or `None` for keys Linux has no code for.
pub fn evdev_code(key: Key) -> Option<u16> {
    Some(match key {
        Key::Escape => KEY_ESC,
        Key::Num1 => 2,
        Key::Num2 => 3,
        Key::Num3 => 4,
        Key::Num4 => 5,
        Key::Num5 => 6,
        Key::Num6 => 7,
        Key::Num7 => 8,
        Key::Num8 => 9,
        Key::Num9 => 10,
        Key::Num0 => 11,
        Key::Minus => 12,
        Key::Equals => 13,
        Key::Backspace => KEY_BACKSPACE,
        Key::Tab => KEY_TAB,
        Key::Q => 16,
        Key::W => 17,
        Key::E => 18,
        Key::R => 19,
        Key::T => 20,
        Key::Y => 21,
        Key::U => 22,
        Key::I => 23,
        Key::O => 24,
        Key::P => 25,
        Key::OpenBracket | Key::OpenCurlyBracket => 26,
        Key::CloseBracket | Key::CloseCurlyBracket => 27,
        Key::Enter => KEY_ENTER,
        Key::ControlLeft => KEY_LEFTCTRL,
        Key::A => 30,
        Key::S => 31,
        Key::D => 32,
        Key::F => 33,
        Key::G => 34,
        Key::H => 35,
        Key::J => 36,
        Key::K => 37,
        Key::L => 38,
        Key::Semicolon | Key::Colon => 39,
        Key::Quote => 40,
        Key::Backtick => 41,
        Key::ShiftLeft => KEY_LEFTSHIFT,
        Key::Backslash | Key::Pipe => 43,
        Key::Z => 44,
        Key::X => 45,
        Key::C => 46,
        Key::V => 47,
        Key::B => 48,
        Key::N => 49,
        Key::M => 50,
        Key::Comma => 51,
        Key::Period => 52,
        Key::Slash | Key::Questionmark => 53,
        Key::ShiftRight => KEY_RIGHTSHIFT,
        Key::AltLeft => KEY_LEFTALT,
        Key::Space => KEY_SPACE,
        Key::CapsLock => 58,
        Key::F1 => KEY_F1,
        Key::F2 => 60,
        Key::F3 => 61,
        Key::F4 => KEY_F4,
        Key::F5 => 63,
        Key::F6 => 64,
        Key::F7 => 65,
        Key::F8 => 66,
        Key::F9 => 67,
        Key::F10 => 68,
        Key::NumLock => 69,
        Key::ScrollLock => 70,
        // Only the keypad has a physical plus key (US layouts make `+` with
        // Shift and `=`, which arrives as Equals).
        Key::Plus => 78,
        Key::IntlBackslash => 86,
        Key::F11 => 87,
        Key::F12 => 88,
        Key::ControlRight => KEY_RIGHTCTRL,
        Key::PrintScreen => KEY_SYSRQ,
        Key::AltRight => KEY_RIGHTALT,
        Key::Home => 102,
        Key::ArrowUp => 103,
        Key::PageUp => 104,
        Key::ArrowLeft => 105,
        Key::ArrowRight => 106,
        Key::End => 107,
        Key::ArrowDown => 108,
        Key::PageDown => 109,
        Key::Insert => 110,
        Key::Delete => KEY_DELETE,
        Key::AudioVolumeMute => 113,
        Key::AudioVolumeDown => 114,
        Key::AudioVolumeUp => 115,
        Key::Power => 116,
        Key::Pause => 119,
        Key::SuperLeft => KEY_LEFTMETA,
        Key::SuperRight => KEY_RIGHTMETA,
        Key::Menu => 127, // KEY_COMPOSE: the context-menu key on PC keyboards
        Key::Copy => 133,
        Key::Paste => 135,
        Key::Cut => 137,
        Key::Help => 138,
        Key::Sleep => 142,
        Key::LaunchApp2 => 140, // KEY_CALC
        Key::LaunchApp1 => 144, // KEY_FILE
        Key::LaunchMail => 155,
        Key::BrowserFavorites => 156,
        Key::BrowserBack => 158,
        Key::BrowserForward => 159,
        Key::Eject => 161,
        Key::MediaTrackNext => 163,
        Key::MediaPlayPause => 164,
        Key::MediaTrackPrevious => 165,
        Key::MediaStop => 166,
        Key::BrowserHome => 172,
        Key::BrowserRefresh => 173,
        Key::F13 => 183,
        Key::F14 => 184,
        Key::F15 => 185,
        Key::F16 => 186,
        Key::F17 => 187,
        Key::F18 => 188,
        Key::F19 => 189,
        Key::F20 => 190,
        Key::F21 => 191,
        Key::F22 => 192,
        Key::F23 => 193,
        Key::F24 => 194,
        Key::BrowserSearch => 217,
        Key::BrowserStop => 128,
        Key::Clear => 355,
        Key::Fn => 464,
        // Exclamation mark is Shift+1 on US keyboards.
        Key::Exclamationmark => 2,
        _ => return None,
    })
}

/// Key combinations in the special keys menu: sent on purpose, never by
/// accident from the expert's own desktop shortcuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKeys {
    CtrlAltDel,
    AltTab,
    AltF4,
    Super,
    PrintScreen,
    CtrlAltBackspace,
    Escape,
}

impl SpecialKeys {
    pub const ALL: [SpecialKeys; 7] = [
        SpecialKeys::CtrlAltDel,
        SpecialKeys::AltTab,
        SpecialKeys::AltF4,
        SpecialKeys::Super,
        SpecialKeys::PrintScreen,
        SpecialKeys::CtrlAltBackspace,
        SpecialKeys::Escape,
    ];

    pub fn label(self) -> &'static str {
        match self {
            SpecialKeys::CtrlAltDel => "Ctrl+Alt+Del",
            SpecialKeys::AltTab => "Alt+Tab",
            SpecialKeys::AltF4 => "Alt+F4",
            SpecialKeys::Super => "Super (Windows key)",
            SpecialKeys::PrintScreen => "Print Screen",
            SpecialKeys::CtrlAltBackspace => "Ctrl+Alt+Backspace",
            SpecialKeys::Escape => "Escape",
        }
    }

    /// The keys, pressed in this order and released in reverse.
    pub fn codes(self) -> &'static [u16] {
        match self {
            SpecialKeys::CtrlAltDel => &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE],
            SpecialKeys::AltTab => &[KEY_LEFTALT, KEY_TAB],
            SpecialKeys::AltF4 => &[KEY_LEFTALT, KEY_F4],
            SpecialKeys::Super => &[KEY_LEFTMETA],
            SpecialKeys::PrintScreen => &[KEY_SYSRQ],
            SpecialKeys::CtrlAltBackspace => &[KEY_LEFTCTRL, KEY_LEFTALT, KEY_BACKSPACE],
            SpecialKeys::Escape => &[KEY_ESC],
        }
    }

    /// The whole combination as key events: presses, then releases.
    pub fn events(self) -> Vec<shoulder_proto::Key> {
        let codes = self.codes();
        let downs = codes
            .iter()
            .map(|&code| shoulder_proto::Key { code, down: true });
        let ups = codes
            .iter()
            .rev()
            .map(|&code| shoulder_proto::Key { code, down: false });
        downs.chain(ups).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The US keyboard, row by row, against `linux/input-event-codes.h`.
    #[test]
    fn full_us_layout_maps_to_evdev() {
        let rows: &[(&[Key], u16)] = &[
            (
                &[
                    Key::Backtick,
                    Key::Num1,
                    Key::Num2,
                    Key::Num3,
                    Key::Num4,
                    Key::Num5,
                    Key::Num6,
                    Key::Num7,
                    Key::Num8,
                    Key::Num9,
                    Key::Num0,
                    Key::Minus,
                    Key::Equals,
                    Key::Backspace,
                ],
                0,
            ),
            (
                &[
                    Key::Tab,
                    Key::Q,
                    Key::W,
                    Key::E,
                    Key::R,
                    Key::T,
                    Key::Y,
                    Key::U,
                    Key::I,
                    Key::O,
                    Key::P,
                    Key::OpenBracket,
                    Key::CloseBracket,
                    Key::Enter,
                ],
                15,
            ),
            (
                &[
                    Key::A,
                    Key::S,
                    Key::D,
                    Key::F,
                    Key::G,
                    Key::H,
                    Key::J,
                    Key::K,
                    Key::L,
                    Key::Semicolon,
                    Key::Quote,
                ],
                30,
            ),
            (
                &[
                    Key::Z,
                    Key::X,
                    Key::C,
                    Key::V,
                    Key::B,
                    Key::N,
                    Key::M,
                    Key::Comma,
                    Key::Period,
                    Key::Slash,
                ],
                44,
            ),
        ];
        // Row 0: backtick is 41, then 1..= are 2..13, backspace 14.
        let r0: Vec<u16> = rows[0].0.iter().map(|&k| evdev_code(k).unwrap()).collect();
        assert_eq!(r0, [41, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        // Rows 1-3 are consecutive codes from their first key.
        for (keys, first) in &rows[1..] {
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(
                    evdev_code(*k),
                    Some(first + i as u16),
                    "{k:?} in the row starting at {first}"
                );
            }
        }
        assert_eq!(evdev_code(Key::Backslash), Some(43));
        assert_eq!(evdev_code(Key::Space), Some(57));
        assert_eq!(evdev_code(Key::CapsLock), Some(58));
        // Shifted symbols without a physical key of their own.
        assert_eq!(evdev_code(Key::Colon), Some(39));
        assert_eq!(evdev_code(Key::Questionmark), Some(53));
        assert_eq!(evdev_code(Key::Pipe), Some(43));
        assert_eq!(evdev_code(Key::Exclamationmark), Some(2));
        assert_eq!(evdev_code(Key::OpenCurlyBracket), Some(26));
    }

    #[test]
    fn special_keys_map_to_evdev() {
        let table: &[(Key, u16)] = &[
            (Key::Escape, 1),
            (Key::F1, 59),
            (Key::F2, 60),
            (Key::F10, 68),
            (Key::F11, 87),
            (Key::F12, 88),
            (Key::F13, 183),
            (Key::F24, 194),
            (Key::ShiftLeft, 42),
            (Key::ShiftRight, 54),
            (Key::ControlLeft, 29),
            (Key::ControlRight, 97),
            (Key::AltLeft, 56),
            (Key::AltRight, 100),
            (Key::SuperLeft, 125),
            (Key::SuperRight, 126),
            (Key::Home, 102),
            (Key::ArrowUp, 103),
            (Key::PageUp, 104),
            (Key::ArrowLeft, 105),
            (Key::ArrowRight, 106),
            (Key::End, 107),
            (Key::ArrowDown, 108),
            (Key::PageDown, 109),
            (Key::Insert, 110),
            (Key::Delete, 111),
            (Key::PrintScreen, 99),
            (Key::Pause, 119),
            (Key::ScrollLock, 70),
            (Key::NumLock, 69),
            (Key::Menu, 127),
            (Key::IntlBackslash, 86),
            (Key::AudioVolumeMute, 113),
            (Key::AudioVolumeDown, 114),
            (Key::AudioVolumeUp, 115),
        ];
        for (k, code) in table {
            assert_eq!(evdev_code(*k), Some(*code), "{k:?}");
        }
        assert_eq!(evdev_code(Key::F35), None);
    }

    #[test]
    fn physical_keys_never_share_a_code() {
        let mut seen = std::collections::HashMap::new();
        let logical_aliases = [
            Key::Colon,
            Key::Pipe,
            Key::Questionmark,
            Key::Exclamationmark,
            Key::OpenCurlyBracket,
            Key::CloseCurlyBracket,
        ];
        for k in Key::ALL {
            if logical_aliases.contains(k) {
                continue;
            }
            if let Some(c) = evdev_code(*k)
                && let Some(prev) = seen.insert(c, *k)
            {
                panic!("{prev:?} and {k:?} both map to {c}");
            }
        }
    }

    #[test]
    fn special_combinations_press_then_release_in_reverse() {
        let ev = SpecialKeys::CtrlAltDel.events();
        let codes: Vec<(u16, bool)> = ev.iter().map(|k| (k.code, k.down)).collect();
        assert_eq!(
            codes,
            [
                (29, true),
                (56, true),
                (111, true),
                (111, false),
                (56, false),
                (29, false)
            ]
        );
        for s in SpecialKeys::ALL {
            let ev = s.events();
            assert_eq!(ev.iter().filter(|k| k.down).count(), s.codes().len());
            assert!(!ev.last().unwrap().down, "{s:?} ends released");
        }
    }
}
