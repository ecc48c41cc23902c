//! Which key codes are keyboard keys, and their names.
//!
//! The expert sends Linux evdev key codes (`KEY_*`). Only codes the kernel
//! names as keyboard keys are injected: gaps in the numbering, `KEY_RESERVED`,
//! `KEY_UNKNOWN` and buttons (`BTN_*`, mouse and joystick) are not, so a
//! confused or hostile client cannot press a mouse button through the
//! keyboard or send codes no application expects.

use std::sync::OnceLock;

use input_linux::Key;

use crate::codes::KEY_CNT;

const WORDS: usize = KEY_CNT as usize / 64;

/// A set of key codes below `KEY_CNT`.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct KeySet([u64; WORDS]);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl KeySet {
    pub const fn new() -> Self {
        Self([0; WORDS])
    }

    /// Adds `code`; false if it was there already or is out of range.
    pub fn insert(&mut self, code: u16) -> bool {
        let Some((w, b)) = split(code) else {
            return false;
        };
        let had = self.0[w] & b != 0;
        self.0[w] |= b;
        !had
    }

    /// Removes `code`; false if it was not there.
    pub fn remove(&mut self, code: u16) -> bool {
        let Some((w, b)) = split(code) else {
            return false;
        };
        let had = self.0[w] & b != 0;
        self.0[w] &= !b;
        had
    }

    pub fn contains(&self, code: u16) -> bool {
        split(code).is_some_and(|(w, b)| self.0[w] & b != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn clear(&mut self) {
        self.0 = [0; WORDS];
    }

    /// The codes in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..KEY_CNT).filter(|c| self.contains(*c))
    }
}

fn split(code: u16) -> Option<(usize, u64)> {
    (code < KEY_CNT).then(|| ((code / 64) as usize, 1u64 << (code % 64)))
}

fn table() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut set = KeySet::new();
        for key in Key::iter() {
            if key.is_key() && is_named_key(&format!("{key:?}")) {
                set.insert(key.code());
            }
        }
        set
    })
}

/// input-linux names the gaps `Unknown…`/`Reserved…` and some button ranges
/// `Button…`; everything else is a real `KEY_*` code.
fn is_named_key(name: &str) -> bool {
    !(name.starts_with("Unknown") || name.starts_with("Reserved") || name.starts_with("Button"))
}

/// Whether `code` is a keyboard key the expert may press.
pub fn is_keyboard_key(code: u16) -> bool {
    table().contains(code)
}

/// Every keyboard key code, for setting up the virtual keyboard.
pub fn keyboard_keys() -> impl Iterator<Item = u16> {
    table().iter()
}

/// Aliases accepted in hotkey strings besides the kernel's names.
const ALIASES: &[(&str, &str)] = &[
    ("escape", "Esc"),
    ("return", "Enter"),
    ("del", "Delete"),
    ("ins", "Insert"),
    ("pgup", "PageUp"),
    ("pgdn", "PageDown"),
    ("pagedn", "PageDown"),
    ("print", "Sysrq"),
    ("printscreen", "Sysrq"),
    ("prtsc", "Sysrq"),
    ("break", "Pause"),
    ("backspace", "Backspace"),
    ("bksp", "Backspace"),
];

/// The code for a key name as written in configuration: the kernel's name
/// without `KEY_` (`S`, `F12`, `Esc`, `PageUp`, `Kp5`; any case), a digit
/// (`1`), a common alias (`Escape`, `Return`, `Del`, `PgUp`) or `KEY_…`.
pub fn key_by_name(name: &str) -> Option<u16> {
    let lower = name.trim().to_ascii_lowercase();
    let lower = lower.strip_prefix("key_").unwrap_or(&lower);
    if lower.is_empty() {
        return None;
    }
    let wanted = if lower.len() == 1 && lower.as_bytes()[0].is_ascii_digit() {
        format!("num{lower}")
    } else if let Some((_, to)) = ALIASES.iter().find(|(a, _)| *a == lower) {
        to.to_ascii_lowercase()
    } else {
        lower.to_string()
    };
    keyboard_keys().find(|code| {
        Key::from_code(*code).is_ok_and(|k| format!("{k:?}").to_ascii_lowercase() == wanted)
    })
}

/// A readable name for a key code (`S`, `F12`, `1`), for banners and logs.
pub fn key_name(code: u16) -> String {
    match Key::from_code(code) {
        Ok(k) if is_keyboard_key(code) => {
            let n = format!("{k:?}");
            match n.strip_prefix("Num") {
                Some(d) if d.len() == 1 => d.to_string(),
                _ => n,
            }
        }
        _ => format!("key {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use input_linux::sys;

    fn code(c: i32) -> u16 {
        u16::try_from(c).unwrap()
    }

    #[test]
    fn keyboard_keys_exclude_buttons_and_gaps() {
        assert!(is_keyboard_key(code(sys::KEY_A)));
        assert!(is_keyboard_key(code(sys::KEY_ESC)));
        assert!(is_keyboard_key(code(sys::KEY_MICMUTE)));
        assert!(is_keyboard_key(code(sys::KEY_OK)));
        assert!(!is_keyboard_key(code(sys::KEY_RESERVED)));
        assert!(!is_keyboard_key(code(sys::KEY_UNKNOWN)));
        assert!(!is_keyboard_key(code(sys::BTN_LEFT)));
        assert!(!is_keyboard_key(code(sys::BTN_TOUCH)));
        assert!(!is_keyboard_key(code(sys::BTN_TRIGGER_HAPPY1)));
        assert!(!is_keyboard_key(0x54), "a gap in the numbering");
        assert!(!is_keyboard_key(0x2ff));
        assert!(!is_keyboard_key(0x300));
        assert!(!is_keyboard_key(u16::MAX));
        let n = keyboard_keys().count();
        assert!(n > 400 && n < 600, "{n} keyboard keys");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(key_by_name("S"), Some(code(sys::KEY_S)));
        assert_eq!(key_by_name("s"), Some(code(sys::KEY_S)));
        assert_eq!(key_by_name("KEY_S"), Some(code(sys::KEY_S)));
        assert_eq!(key_by_name("F12"), Some(code(sys::KEY_F12)));
        assert_eq!(key_by_name("1"), Some(code(sys::KEY_1)));
        assert_eq!(key_by_name("Escape"), Some(code(sys::KEY_ESC)));
        assert_eq!(key_by_name("esc"), Some(code(sys::KEY_ESC)));
        assert_eq!(key_by_name("PgUp"), Some(code(sys::KEY_PAGEUP)));
        assert_eq!(key_by_name("Pause"), Some(code(sys::KEY_PAUSE)));
        assert_eq!(key_by_name("nosuchkey"), None);
        assert_eq!(key_by_name(""), None);
        assert_eq!(key_by_name("ButtonLeft"), None);
        assert_eq!(key_name(code(sys::KEY_S)), "S");
        assert_eq!(key_name(code(sys::KEY_1)), "1");
        assert_eq!(key_name(code(sys::KEY_F12)), "F12");
        assert_eq!(key_name(code(sys::BTN_LEFT)), "key 272");
    }

    #[test]
    fn key_set_basics() {
        let mut s = KeySet::new();
        assert!(s.insert(30));
        assert!(!s.insert(30));
        assert!(!s.insert(KEY_CNT));
        assert!(s.contains(30));
        assert_eq!(s.len(), 1);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![30]);
        assert!(s.remove(30));
        assert!(!s.remove(30));
        assert!(s.is_empty());
    }
}
