//! The few evdev event types and codes this crate writes and reads, as in
//! `linux/input-event-codes.h` (a test checks them against the kernel headers
//! that `input-linux` carries).

/// Event types.
pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_REL: u16 = 0x02;
pub const EV_ABS: u16 = 0x03;

/// Synchronization codes.
pub const SYN_REPORT: u16 = 0;

/// Pointer buttons.
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
/// A touch contact exists (touchscreens).
pub const BTN_TOUCH: u16 = 0x14a;

/// Relative axes.
pub const REL_X: u16 = 0x00;
pub const REL_Y: u16 = 0x01;
pub const REL_HWHEEL: u16 = 0x06;
pub const REL_WHEEL: u16 = 0x08;

/// Absolute axes.
pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;
pub const ABS_MT_SLOT: u16 = 0x2f;
pub const ABS_MT_POSITION_X: u16 = 0x35;
pub const ABS_MT_POSITION_Y: u16 = 0x36;
pub const ABS_MT_TRACKING_ID: u16 = 0x39;

/// Keys that act on the device itself (see `policy`).
pub const KEY_F1: u16 = 59;
pub const KEY_F2: u16 = 60;
pub const KEY_F3: u16 = 61;
pub const KEY_F4: u16 = 62;
pub const KEY_F5: u16 = 63;
pub const KEY_F6: u16 = 64;
pub const KEY_F7: u16 = 65;
pub const KEY_F8: u16 = 66;
pub const KEY_F9: u16 = 67;
pub const KEY_F10: u16 = 68;
pub const KEY_F11: u16 = 87;
pub const KEY_F12: u16 = 88;
pub const KEY_KPDOT: u16 = 83;
pub const KEY_SYSRQ: u16 = 99;
pub const KEY_LEFT: u16 = 105;
pub const KEY_RIGHT: u16 = 106;
pub const KEY_DELETE: u16 = 111;
pub const KEY_POWER: u16 = 116;
pub const KEY_SLEEP: u16 = 142;
pub const KEY_WAKEUP: u16 = 143;
pub const KEY_SUSPEND: u16 = 205;
pub const KEY_POWER2: u16 = 0x164;
pub const KEY_RESTART: u16 = 0x198;

/// One past the highest key code (`KEY_CNT`).
pub const KEY_CNT: u16 = 0x300;

/// Bus type of virtual devices (`BUS_VIRTUAL`).
pub const BUS_VIRTUAL: u16 = 0x06;

/// Modifier keys, for the hotkey chords.
pub const KEY_LEFTCTRL: u16 = 29;
pub const KEY_RIGHTCTRL: u16 = 97;
pub const KEY_LEFTSHIFT: u16 = 42;
pub const KEY_RIGHTSHIFT: u16 = 54;
pub const KEY_LEFTALT: u16 = 56;
pub const KEY_RIGHTALT: u16 = 100;
pub const KEY_LEFTMETA: u16 = 125;
pub const KEY_RIGHTMETA: u16 = 126;

#[cfg(test)]
mod tests {
    use super::*;
    use input_linux::sys;

    #[test]
    fn codes_match_the_kernel_headers() {
        let pairs: &[(u16, i32)] = &[
            (EV_SYN, sys::EV_SYN),
            (EV_KEY, sys::EV_KEY),
            (EV_REL, sys::EV_REL),
            (EV_ABS, sys::EV_ABS),
            (SYN_REPORT, sys::SYN_REPORT),
            (BTN_LEFT, sys::BTN_LEFT),
            (BTN_RIGHT, sys::BTN_RIGHT),
            (BTN_MIDDLE, sys::BTN_MIDDLE),
            (BTN_TOUCH, sys::BTN_TOUCH),
            (REL_X, sys::REL_X),
            (REL_Y, sys::REL_Y),
            (REL_HWHEEL, sys::REL_HWHEEL),
            (REL_WHEEL, sys::REL_WHEEL),
            (ABS_X, sys::ABS_X),
            (ABS_Y, sys::ABS_Y),
            (ABS_MT_SLOT, sys::ABS_MT_SLOT),
            (ABS_MT_POSITION_X, sys::ABS_MT_POSITION_X),
            (ABS_MT_POSITION_Y, sys::ABS_MT_POSITION_Y),
            (ABS_MT_TRACKING_ID, sys::ABS_MT_TRACKING_ID),
            (KEY_CNT, sys::KEY_CNT),
            (BUS_VIRTUAL, i32::from(sys::BUS_VIRTUAL)),
            (KEY_LEFTCTRL, sys::KEY_LEFTCTRL),
            (KEY_RIGHTCTRL, sys::KEY_RIGHTCTRL),
            (KEY_LEFTSHIFT, sys::KEY_LEFTSHIFT),
            (KEY_RIGHTSHIFT, sys::KEY_RIGHTSHIFT),
            (KEY_LEFTALT, sys::KEY_LEFTALT),
            (KEY_RIGHTALT, sys::KEY_RIGHTALT),
            (KEY_LEFTMETA, sys::KEY_LEFTMETA),
            (KEY_RIGHTMETA, sys::KEY_RIGHTMETA),
            (KEY_F1, sys::KEY_F1),
            (KEY_F2, sys::KEY_F2),
            (KEY_F3, sys::KEY_F3),
            (KEY_F4, sys::KEY_F4),
            (KEY_F5, sys::KEY_F5),
            (KEY_F6, sys::KEY_F6),
            (KEY_F7, sys::KEY_F7),
            (KEY_F8, sys::KEY_F8),
            (KEY_F9, sys::KEY_F9),
            (KEY_F10, sys::KEY_F10),
            (KEY_F11, sys::KEY_F11),
            (KEY_F12, sys::KEY_F12),
            (KEY_KPDOT, sys::KEY_KPDOT),
            (KEY_SYSRQ, sys::KEY_SYSRQ),
            (KEY_LEFT, sys::KEY_LEFT),
            (KEY_RIGHT, sys::KEY_RIGHT),
            (KEY_DELETE, sys::KEY_DELETE),
            (KEY_POWER, sys::KEY_POWER),
            (KEY_SLEEP, sys::KEY_SLEEP),
            (KEY_WAKEUP, sys::KEY_WAKEUP),
            (KEY_SUSPEND, sys::KEY_SUSPEND),
            (KEY_POWER2, sys::KEY_POWER2),
            (KEY_RESTART, sys::KEY_RESTART),
        ];
        for (ours, kernel) in pairs {
            assert_eq!(i32::from(*ours), *kernel);
        }
    }
}
