//! Which of the expert's keys may reach the device at all.
//!
//! Some keys act on the device rather than on the application: they power
//! it off, suspend or reboot it (`KEY_POWER`, `KEY_SLEEP`, Ctrl+Alt+Del…),
//! reach the kernel's magic SysRq handler (`KEY_SYSRQ`, which is also
//! PrintScreen, so Alt+PrintScreen), or switch virtual terminals away from
//! the kiosk (Ctrl+Alt+F1…F12, and on the Linux console Alt+F1…F12 and
//! Alt+Left/Right). The kernel acts on them from any keyboard, virtual ones
//! included, so an expert with control could take the device away from the
//! person in front of it. Such keys are [blocked](KeyVerdict::Blocked)
//! unless the device builder allows their [family](KeyFamily) in the config
//! (`[input] allow_keys`).
//!
//! [`KeyFilter`] is pure: it sees the expert's key events in order and says
//! which to drop. A dropped press drops its release too, so no key is ever
//! half-pressed; a chord is blocked at the key that completes it (F2 of
//! Ctrl+Alt+F2: the modifiers alone are harmless and pass). Each blocked key
//! is reported once per control grant ([`BlockedKey::first`]), so a key
//! held down or hammered makes one log line, not hundreds.
//!
//! Modifiers held on the person's own keyboard are not seen here; expert
//! input waits anyway while the person is typing ([`crate::Holdback`]).

use crate::codes::*;
use crate::keys::KeySet;

/// Keys that act on the device's power whatever modifiers are held.
const POWER_KEYS: [u16; 6] = [
    KEY_POWER,
    KEY_POWER2,
    KEY_SLEEP,
    KEY_SUSPEND,
    KEY_WAKEUP,
    KEY_RESTART,
];

/// A group of keys that act on the device itself, as named in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// Power off, suspend, wake, reboot: `KEY_POWER`, `KEY_POWER2`,
    /// `KEY_SLEEP`, `KEY_SUSPEND`, `KEY_WAKEUP`, `KEY_RESTART`, and
    /// Ctrl+Alt+Delete (console reboot).
    Power,
    /// The magic SysRq key (`KEY_SYSRQ`, also PrintScreen): with Alt it
    /// reaches the kernel's SysRq handler (reboot, kill all tasks…).
    Sysrq,
    /// F1…F12 with Alt (or Ctrl+Alt), Alt+Left/Right: virtual terminal
    /// switching.
    VtSwitch,
}

impl KeyFamily {
    pub const ALL: [KeyFamily; 3] = [KeyFamily::Power, KeyFamily::Sysrq, KeyFamily::VtSwitch];

    /// The name used in the config (`allow_keys`).
    pub fn name(self) -> &'static str {
        match self {
            KeyFamily::Power => "power",
            KeyFamily::Sysrq => "sysrq",
            KeyFamily::VtSwitch => "vt-switch",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name.trim())
    }

    /// What the keys would do, for logs.
    pub fn effect(self) -> &'static str {
        match self {
            KeyFamily::Power => "could power off, suspend or reboot the device",
            KeyFamily::Sysrq => "could reach the kernel's SysRq handler",
            KeyFamily::VtSwitch => "could switch the screen away from the kiosk",
        }
    }

    fn index(self) -> usize {
        match self {
            KeyFamily::Power => 0,
            KeyFamily::Sysrq => 1,
            KeyFamily::VtSwitch => 2,
        }
    }

    fn bit(self) -> u8 {
        1 << self.index()
    }
}

impl std::fmt::Display for KeyFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name in `allow_keys` that is not a key family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a key family; the families are \"power\", \"sysrq\" and \"vt-switch\"")]
pub struct UnknownKeyFamily(pub String);

/// The key families the device builder allows; the default allows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyPolicy {
    allowed: u8,
}

impl KeyPolicy {
    /// Allows the families named (`power`, `sysrq`, `vt-switch`).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, UnknownKeyFamily> {
        names.iter().try_fold(Self::default(), |p, n| {
            KeyFamily::from_name(n.as_ref())
                .map(|f| p.allow(f))
                .ok_or_else(|| UnknownKeyFamily(n.as_ref().to_string()))
        })
    }

    #[must_use]
    pub fn allow(self, family: KeyFamily) -> Self {
        Self {
            allowed: self.allowed | family.bit(),
        }
    }

    pub fn allows(self, family: KeyFamily) -> bool {
        self.allowed & family.bit() != 0
    }
}

/// The family a key press belongs to, given the keys already held (by the
/// expert); `None` for ordinary keys.
pub fn family_of(code: u16, held: &KeySet) -> Option<KeyFamily> {
    let alt = held.contains(KEY_LEFTALT) || held.contains(KEY_RIGHTALT);
    let ctrl = held.contains(KEY_LEFTCTRL) || held.contains(KEY_RIGHTCTRL);
    if POWER_KEYS.contains(&code) {
        return Some(KeyFamily::Power);
    }
    if code == KEY_SYSRQ {
        return Some(KeyFamily::Sysrq);
    }
    if ctrl && alt && (code == KEY_DELETE || code == KEY_KPDOT) {
        // The console keymap's "Boot": init reboots the device.
        return Some(KeyFamily::Power);
    }
    // The console keymap switches VTs on Alt+Fn (AltGr+Fn: VT 13…24) and
    // Alt+Left/Right; X servers on Ctrl+Alt+Fn.
    let fkey = (KEY_F1..=KEY_F10).contains(&code) || code == KEY_F11 || code == KEY_F12;
    if alt && (fkey || code == KEY_LEFT || code == KEY_RIGHT) {
        return Some(KeyFamily::VtSwitch);
    }
    None
}

/// What to do with one expert key event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyVerdict {
    /// Inject it (the sink may still drop it as impossible).
    Pass,
    /// Do not inject it.
    Blocked(BlockedKey),
}

/// A key event the policy kept from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedKey {
    pub code: u16,
    pub down: bool,
    pub family: KeyFamily,
    /// The first time this key was blocked in this grant: report it (log,
    /// audit); later events of the same key are only counted.
    pub first: bool,
}

/// Applies a [`KeyPolicy`] to the expert's key events, in order.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    policy: KeyPolicy,
    /// Keys whose press was passed on and not yet released: the expert's
    /// modifiers as the device sees them.
    passed: KeySet,
    /// Keys whose press was blocked, by family: their release is blocked
    /// too.
    dropped: [KeySet; 3],
    /// Keys already reported in this grant.
    reported: KeySet,
    blocked: u64,
}

impl KeyFilter {
    pub fn new(policy: KeyPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn policy(&self) -> KeyPolicy {
        self.policy
    }

    /// Key events blocked so far (presses and their releases).
    pub fn blocked(&self) -> u64 {
        self.blocked
    }

    /// Decides on one key event.
    pub fn key(&mut self, code: u16, down: bool) -> KeyVerdict {
        if !down {
            if self.passed.remove(code) {
                return KeyVerdict::Pass;
            }
            if let Some(family) = KeyFamily::ALL
                .into_iter()
                .find(|f| self.dropped[f.index()].remove(code))
            {
                return self.block(code, false, family);
            }
            // Never pressed: the sink drops it as impossible.
            return KeyVerdict::Pass;
        }
        if self.passed.contains(code) {
            // A repeated press of a key the device already has down changes
            // nothing there (the sink drops it); blocking it would strand
            // the real press without its release.
            return KeyVerdict::Pass;
        }
        match family_of(code, &self.passed) {
            Some(family) if !self.policy.allows(family) => {
                self.dropped[family.index()].insert(code);
                self.block(code, true, family)
            }
            _ => {
                for d in &mut self.dropped {
                    d.remove(code);
                }
                self.passed.insert(code);
                KeyVerdict::Pass
            }
        }
    }

    fn block(&mut self, code: u16, down: bool, family: KeyFamily) -> KeyVerdict {
        self.blocked += 1;
        let first = self.reported.insert(code);
        KeyVerdict::Blocked(BlockedKey {
            code,
            down,
            family,
            first,
        })
    }

    /// The sink released everything the expert held.
    pub fn released_all(&mut self) {
        self.passed.clear();
        for d in &mut self.dropped {
            d.clear();
        }
    }

    /// A new control grant: everything is released, and blocked keys are
    /// reported anew.
    pub fn new_grant(&mut self) {
        self.released_all();
        self.reported.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: u16 = 30;

    fn blocked(v: KeyVerdict) -> Option<(KeyFamily, bool)> {
        match v {
            KeyVerdict::Pass => None,
            KeyVerdict::Blocked(b) => Some((b.family, b.first)),
        }
    }

    fn tap(f: &mut KeyFilter, code: u16) -> (KeyVerdict, KeyVerdict) {
        (f.key(code, true), f.key(code, false))
    }

    #[test]
    fn ordinary_keys_and_chords_pass() {
        let mut f = KeyFilter::default();
        assert_eq!(tap(&mut f, KEY_A), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(tap(&mut f, KEY_F2), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(f.key(KEY_LEFTCTRL, true), KeyVerdict::Pass);
        assert_eq!(tap(&mut f, KEY_F2), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(tap(&mut f, KEY_LEFT), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(
            tap(&mut f, KEY_DELETE),
            (KeyVerdict::Pass, KeyVerdict::Pass)
        );
        assert_eq!(f.key(KEY_LEFTCTRL, false), KeyVerdict::Pass);
        assert_eq!(f.blocked(), 0);
    }

    #[test]
    fn power_keys_are_blocked_with_their_release() {
        for code in POWER_KEYS {
            let mut f = KeyFilter::default();
            let (down, up) = tap(&mut f, code);
            assert_eq!(blocked(down), Some((KeyFamily::Power, true)), "{code}");
            assert_eq!(blocked(up), Some((KeyFamily::Power, false)), "{code}");
        }
    }

    #[test]
    fn ctrl_alt_delete_is_a_power_key() {
        for del in [KEY_DELETE, KEY_KPDOT] {
            for (ctrl, alt) in [(KEY_LEFTCTRL, KEY_LEFTALT), (KEY_RIGHTCTRL, KEY_RIGHTALT)] {
                let mut f = KeyFilter::default();
                assert_eq!(f.key(ctrl, true), KeyVerdict::Pass);
                assert_eq!(f.key(alt, true), KeyVerdict::Pass);
                assert_eq!(blocked(f.key(del, true)), Some((KeyFamily::Power, true)));
                assert_eq!(f.key(alt, false), KeyVerdict::Pass);
                assert_eq!(f.key(ctrl, false), KeyVerdict::Pass);
                assert_eq!(
                    blocked(f.key(del, false)),
                    Some((KeyFamily::Power, false)),
                    "the release follows the press"
                );
            }
        }
    }

    #[test]
    fn sysrq_is_blocked_alone_and_with_alt() {
        let mut f = KeyFilter::default();
        assert_eq!(
            blocked(f.key(KEY_SYSRQ, true)),
            Some((KeyFamily::Sysrq, true))
        );
        assert!(blocked(f.key(KEY_SYSRQ, false)).is_some());
        assert_eq!(f.key(KEY_LEFTALT, true), KeyVerdict::Pass);
        assert_eq!(
            blocked(f.key(KEY_SYSRQ, true)),
            Some((KeyFamily::Sysrq, false)),
            "reported once per grant"
        );
        // SysRq+B (reboot) needs SysRq down: B alone is an ordinary key.
        assert_eq!(f.key(48, true), KeyVerdict::Pass);
    }

    #[test]
    fn vt_switch_chords_are_blocked_at_the_function_key() {
        let fkeys = [
            KEY_F1, KEY_F2, KEY_F3, KEY_F4, KEY_F5, KEY_F6, KEY_F7, KEY_F8, KEY_F9, KEY_F10,
            KEY_F11, KEY_F12,
        ];
        for mods in [
            &[KEY_LEFTCTRL, KEY_LEFTALT][..],
            &[KEY_LEFTALT],
            &[KEY_RIGHTALT],
            &[KEY_RIGHTCTRL, KEY_RIGHTALT],
        ] {
            for code in fkeys.into_iter().chain([KEY_LEFT, KEY_RIGHT]) {
                let mut f = KeyFilter::default();
                for m in mods {
                    assert_eq!(f.key(*m, true), KeyVerdict::Pass, "modifiers pass");
                }
                assert_eq!(
                    blocked(f.key(code, true)),
                    Some((KeyFamily::VtSwitch, true)),
                    "{mods:?}+{code}"
                );
                for m in mods {
                    assert_eq!(f.key(*m, false), KeyVerdict::Pass);
                }
                // Released after the modifiers: still the dropped press's.
                assert!(blocked(f.key(code, false)).is_some(), "{mods:?}+{code} up");
                // Without the modifiers the key is ordinary again.
                assert_eq!(tap(&mut f, code), (KeyVerdict::Pass, KeyVerdict::Pass));
            }
        }
    }

    #[test]
    fn a_key_pressed_before_the_chord_is_released_normally() {
        let mut f = KeyFilter::default();
        assert_eq!(f.key(KEY_F2, true), KeyVerdict::Pass);
        assert_eq!(f.key(KEY_LEFTALT, true), KeyVerdict::Pass);
        // A duplicate press while it is down passes (the sink drops it), and
        // the release reaches the device: nothing stays held.
        assert_eq!(f.key(KEY_F2, true), KeyVerdict::Pass);
        assert_eq!(f.key(KEY_F2, false), KeyVerdict::Pass);
        assert_eq!(f.blocked(), 0);
    }

    #[test]
    fn allowed_families_pass() {
        let p = KeyPolicy::parse(&["power", "sysrq", "vt-switch"]).unwrap();
        let mut f = KeyFilter::new(p);
        assert_eq!(tap(&mut f, KEY_POWER), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(tap(&mut f, KEY_SYSRQ), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(f.key(KEY_LEFTALT, true), KeyVerdict::Pass);
        assert_eq!(tap(&mut f, KEY_F1), (KeyVerdict::Pass, KeyVerdict::Pass));
        assert_eq!(f.blocked(), 0);

        // Each family is allowed on its own.
        let mut f = KeyFilter::new(KeyPolicy::parse(&["vt-switch"]).unwrap());
        assert_eq!(f.key(KEY_LEFTALT, true), KeyVerdict::Pass);
        assert_eq!(f.key(KEY_F1, true), KeyVerdict::Pass);
        assert!(blocked(f.key(KEY_SYSRQ, true)).is_some());
        assert!(blocked(f.key(KEY_POWER, true)).is_some());
        let mut f = KeyFilter::new(KeyPolicy::parse(&["sysrq"]).unwrap());
        assert_eq!(f.key(KEY_SYSRQ, true), KeyVerdict::Pass);
        assert!(blocked(f.key(KEY_POWER, true)).is_some());
    }

    #[test]
    fn policy_names_are_checked() {
        assert_eq!(KeyPolicy::parse::<&str>(&[]).unwrap(), KeyPolicy::default());
        for fam in KeyFamily::ALL {
            assert!(!KeyPolicy::default().allows(fam));
            assert!(KeyPolicy::parse(&[fam.name()]).unwrap().allows(fam));
        }
        let e = KeyPolicy::parse(&["power", "reboot"]).unwrap_err();
        assert_eq!(e, UnknownKeyFamily("reboot".into()));
        let s = e.to_string();
        assert!(s.contains("`reboot`") && s.contains("\"vt-switch\""), "{s}");
    }

    #[test]
    fn each_key_is_reported_once_per_grant() {
        let mut f = KeyFilter::default();
        let firsts: Vec<bool> = (0..5)
            .flat_map(|_| [f.key(KEY_POWER, true), f.key(KEY_POWER, false)])
            .filter_map(|v| blocked(v).map(|(_, first)| first))
            .collect();
        assert_eq!(firsts.iter().filter(|b| **b).count(), 1, "{firsts:?}");
        assert_eq!(f.blocked(), 10);
        assert_eq!(
            blocked(f.key(KEY_SLEEP, true)),
            Some((KeyFamily::Power, true))
        );
        f.new_grant();
        assert_eq!(
            blocked(f.key(KEY_POWER, true)),
            Some((KeyFamily::Power, true))
        );
    }

    #[test]
    fn release_all_forgets_held_modifiers() {
        let mut f = KeyFilter::default();
        assert_eq!(f.key(KEY_LEFTALT, true), KeyVerdict::Pass);
        f.released_all();
        assert_eq!(tap(&mut f, KEY_F2), (KeyVerdict::Pass, KeyVerdict::Pass));
    }
}
