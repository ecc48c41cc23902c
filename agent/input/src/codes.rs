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
        ];
        for (ours, kernel) in pairs {
            assert_eq!(i32::from(*ours), *kernel);
        }
    }
}
