//! Text typed as key presses, for the keyboard layout the device's software
//! reads its keyboard with: the expert sends characters, the device presses
//! the keys (with Shift, AltGr, or a dead key then Space) that make those
//! characters under its layout.
//!
//! The tables come from XKB (`scripts/gen-layouts` reads them from xkb-data
//! through libxkbcommon), the keymaps of Wayland compositors, X and the
//! toolkits kiosk apps use. They are built in with the `layouts` feature
//! only (the agent's `type-text`); without it [`Layout::named`] knows none.

use crate::msg::Key;

#[cfg(feature = "layouts")]
mod tables;
#[cfg(feature = "layouts")]
use tables::TABLES;
#[cfg(not(feature = "layouts"))]
static TABLES: &[Table] = &[];

/// A layout as `tables.rs` has it: name, XKB name, description, the
/// characters one key makes, those a dead key and another make.
type Table = (
    &'static str,
    &'static str,
    &'static str,
    &'static [u32],
    &'static [(u16, [u8; 4])],
);

const SHIFT: u8 = 1;
const ALTGR: u8 = 2;
/// evdev codes of the keys a stroke may add.
pub const KEY_LEFTSHIFT: u16 = 42;
pub const KEY_RIGHTALT: u16 = 100;
pub const KEY_SPACE: u16 = 57;

/// One keyboard layout's characters.
#[derive(Clone, Copy)]
pub struct Layout {
    name: &'static str,
    xkb: &'static str,
    description: &'static str,
    /// One key each: character << 16 | key code << 8 | modifiers.
    direct: &'static [u32],
    /// A dead key, then another: (character, [code, modifiers, code,
    /// modifiers]).
    composed: &'static [(u16, [u8; 4])],
}

impl core::fmt::Debug for Layout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Layout({} = XKB {})", self.name, self.xkb)
    }
}

impl PartialEq for Layout {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Layout {}

/// One key press, with the modifiers it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Press {
    /// evdev key code.
    pub code: u16,
    pub shift: bool,
    pub altgr: bool,
}

impl Press {
    fn new(code: u8, mods: u8) -> Self {
        Press {
            code: u16::from(code),
            shift: mods & SHIFT != 0,
            altgr: mods & ALTGR != 0,
        }
    }

    /// Modifiers down, the key down and up, modifiers up.
    fn keys(self) -> impl Iterator<Item = Key> {
        let mods = [(self.shift, KEY_LEFTSHIFT), (self.altgr, KEY_RIGHTALT)];
        let down = mods.into_iter().filter(|m| m.0).map(|m| key(m.1, true));
        let up = mods
            .into_iter()
            .rev()
            .filter(|m| m.0)
            .map(|m| key(m.1, false));
        down.chain([key(self.code, true), key(self.code, false)])
            .chain(up)
    }
}

/// The keys that make one character: one press, or a dead key then
/// another (´ then e for é; ^ then Space for ^ itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stroke {
    pub first: Press,
    pub then: Option<Press>,
}

impl Stroke {
    /// The key events, in order. Every key pressed is let go again.
    pub fn keys(&self) -> impl Iterator<Item = Key> {
        self.first
            .keys()
            .chain(self.then.into_iter().flat_map(Press::keys))
    }

    /// Whether a dead key starts it.
    pub fn is_dead(&self) -> bool {
        self.then.is_some()
    }
}

fn key(code: u16, down: bool) -> Key {
    Key { code, down }
}

/// Characters of a text the layout has no keys for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untypable {
    /// Each such character once, in the order they first appear.
    pub chars: Vec<char>,
}

impl core::fmt::Display for Untypable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, c) in self.chars.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            describe_char(f, *c)?;
        }
        Ok(())
    }
}

/// A character as a person can read it in a message: itself when
/// printable, its code point otherwise.
pub fn describe_char(f: &mut impl core::fmt::Write, c: char) -> core::fmt::Result {
    if c.is_control() || c.is_whitespace() {
        write!(f, "U+{:04X}", u32::from(c))
    } else {
        write!(f, "{c}")
    }
}

impl Layout {
    /// The layout called `name` in agent.toml (`us`, `de`, `fr`, …).
    pub fn named(name: &str) -> Option<Layout> {
        Self::all().find(|l| l.name == name)
    }

    /// Every layout built in, in the order the docs list them.
    pub fn all() -> impl Iterator<Item = Layout> {
        TABLES
            .iter()
            .map(|&(name, xkb, description, direct, composed)| Layout {
                name,
                xkb,
                description,
                direct,
                composed,
            })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The XKB layout (and variant) it follows: `de`, `ch(fr)`.
    pub fn xkb(&self) -> &'static str {
        self.xkb
    }

    pub fn description(&self) -> &'static str {
        self.description
    }

    /// How to type `c`, if this layout can.
    pub fn stroke(&self, c: char) -> Option<Stroke> {
        let c = u16::try_from(u32::from(c)).ok()?;
        if let Ok(i) = self.direct.binary_search_by_key(&c, |e| (e >> 16) as u16) {
            let [_, _, code, mods] = self.direct[i].to_be_bytes();
            return Some(Stroke {
                first: Press::new(code, mods),
                then: None,
            });
        }
        let i = self.composed.binary_search_by_key(&c, |e| e.0).ok()?;
        let [dead, dead_mods, code, mods] = self.composed[i].1;
        Some(Stroke {
            first: Press::new(dead, dead_mods),
            then: Some(Press::new(code, mods)),
        })
    }

    /// The strokes of `text`, one per character (a Windows line end, CR LF,
    /// is one Enter; a lone CR is Enter too), or every character this
    /// layout cannot type.
    pub fn strokes(&self, text: &str) -> Result<Vec<Stroke>, Untypable> {
        let mut out = Vec::with_capacity(text.len());
        let mut missing = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(mut c) = chars.next() {
            if c == '\r' {
                if chars.peek() == Some(&'\n') {
                    continue;
                }
                c = '\n';
            }
            match self.stroke(c) {
                Some(s) => out.push(s),
                None if !missing.contains(&c) => missing.push(c),
                None => {}
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(Untypable { chars: missing })
        }
    }
}

/// The names of the layouts built in, for error messages: "us, gb, de, …".
pub fn layout_names() -> String {
    Layout::all().map(|l| l.name).collect::<Vec<_>>().join(", ")
}

#[cfg(all(test, feature = "layouts"))]
mod tests {
    use super::*;

    const PRINTABLE_ASCII: core::ops::RangeInclusive<u8> = 0x20..=0x7e;

    #[test]
    fn every_layout_types_all_of_printable_ascii_except_where_xkb_has_no_key() {
        for l in Layout::all() {
            let missing: String = PRINTABLE_ASCII
                .map(char::from)
                .filter(|&c| l.stroke(c).is_none())
                .collect();
            assert!(missing.is_empty(), "{}: no key for {missing:?}", l.name());
            assert!(l.stroke('\n').is_some() && l.stroke('\t').is_some());
        }
    }

    #[test]
    fn tables_are_sorted_so_lookups_find_every_entry() {
        for l in Layout::all() {
            assert!(
                l.direct.windows(2).all(|w| w[0] >> 16 < w[1] >> 16)
                    && l.composed.windows(2).all(|w| w[0].0 < w[1].0),
                "{} is not sorted by character",
                l.name()
            );
        }
    }

    #[test]
    fn german_puts_z_and_y_where_the_keys_say_and_at_on_altgr_q() {
        let de = Layout::named("de").unwrap();
        let us = Layout::named("us").unwrap();
        assert_eq!(de.stroke('z').unwrap().first, us.stroke('y').unwrap().first);
        let at = de.stroke('@').unwrap();
        assert_eq!(
            at.first,
            Press {
                code: 16,
                shift: false,
                altgr: true
            }
        );
        let keys: Vec<Key> = at.keys().collect();
        assert_eq!(
            keys,
            [
                key(KEY_RIGHTALT, true),
                key(16, true),
                key(16, false),
                key(KEY_RIGHTALT, false)
            ]
        );
        // ^ is a dead key on German keyboards: it, then Space.
        let caret = de.stroke('^').unwrap();
        assert!(caret.is_dead());
        assert_eq!(caret.keys().last(), Some(key(KEY_SPACE, false)));
        assert!(
            !Layout::named("de-nodeadkeys")
                .unwrap()
                .stroke('^')
                .unwrap()
                .is_dead()
        );
        assert_eq!(de.stroke('ß').unwrap().first.code, 12);
        // é: the dead ´ (right of ß), then e.
        let e_acute = de.stroke('é').unwrap();
        assert_eq!((e_acute.first.code, e_acute.then.unwrap().code), (13, 18));
    }

    #[test]
    fn untypable_characters_are_listed_once_and_nothing_is_typed() {
        let us = Layout::named("us").unwrap();
        let e = us.strokes("héllo → wörld é").unwrap_err();
        assert_eq!(e.chars, vec!['é', '→', 'ö']);
        assert_eq!(e.to_string(), "é → ö");
        assert_eq!(us.strokes("a\r\nb\rc").unwrap().len(), 5);
    }

    #[test]
    fn every_stroke_lets_go_of_what_it_presses() {
        for l in Layout::all() {
            for c in (0x20u32..0x3000).filter_map(char::from_u32) {
                let Some(s) = l.stroke(c) else { continue };
                let mut held = std::collections::BTreeSet::new();
                for k in s.keys() {
                    if k.down {
                        assert!(held.insert(k.code));
                    } else {
                        assert!(held.remove(&k.code));
                    }
                }
                assert!(held.is_empty(), "{}: {c:?} leaves keys held", l.name());
            }
        }
    }
}
