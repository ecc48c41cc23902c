//! Sans-I/O: what a local device is, and its raw evdev events turned into
//! typed local events, one evdev frame (up to `SYN_REPORT`) at a time.

use std::path::PathBuf;

use crate::codes::*;
use crate::inject::{ScreenSize, VIRTUAL_NAME_PREFIX, VIRTUAL_PHYS};
use crate::keys::{KeySet, is_keyboard_key};

/// Identifies a local device while it is plugged in (never reused within
/// one agent run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalDeviceId(pub u32);

/// A raw absolute axis range (`input_absinfo` minimum/maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisRange {
    pub min: i32,
    pub max: i32,
}

impl AxisRange {
    /// Maps a raw value onto `0..len-1` screen pixels, clamped.
    pub fn scale(&self, value: i32, len: u16) -> u16 {
        if len == 0 || self.max <= self.min {
            return 0;
        }
        let span = i64::from(self.max) - i64::from(self.min);
        let v = (i64::from(value) - i64::from(self.min)).clamp(0, span);
        let px = v * (i64::from(len) - 1) / span;
        u16::try_from(px).unwrap_or(len - 1)
    }
}

/// How a local device points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerKind {
    /// Relative motion (`REL_X`/`REL_Y`): a cursor is tracked for it.
    Mouse,
    /// Absolute, not on the screen (QEMU's usb-tablet, graphics tablets).
    Tablet,
    /// Absolute, on the screen (`INPUT_PROP_DIRECT`).
    Touchscreen,
    /// A touchpad: its contacts are not screen positions; clicks use the
    /// tracked cursor.
    Touchpad,
}

/// What a local device offers, read once when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDeviceInfo {
    pub id: LocalDeviceId,
    pub path: PathBuf,
    pub name: String,
    /// Has typing keys.
    pub keyboard: bool,
    pub pointer: Option<PointerKind>,
    /// Raw ranges of the position axes of absolute devices.
    pub x_axis: Option<AxisRange>,
    pub y_axis: Option<AxisRange>,
}

impl LocalDeviceInfo {
    /// A short description for logs and the probe.
    pub fn kind_label(&self) -> String {
        let mut parts = Vec::new();
        if self.keyboard {
            parts.push("keyboard");
        }
        match self.pointer {
            Some(PointerKind::Mouse) => parts.push("mouse"),
            Some(PointerKind::Tablet) => parts.push("tablet"),
            Some(PointerKind::Touchscreen) => parts.push("touchscreen"),
            Some(PointerKind::Touchpad) => parts.push("touchpad"),
            None => {}
        }
        parts.join("+")
    }
}

/// The capabilities [`classify`] looks at (read from the device with
/// `EVIOCGBIT`/`EVIOCGABS`/`EVIOCGPROP`).
#[derive(Debug, Clone, Default)]
pub struct DeviceCaps {
    pub name: String,
    pub phys: Option<String>,
    pub keys: KeySet,
    pub rel_x_y: bool,
    pub abs_x: Option<AxisRange>,
    pub abs_y: Option<AxisRange>,
    pub mt_x: Option<AxisRange>,
    pub mt_y: Option<AxisRange>,
    pub direct: bool,
    /// The raw position when opened (ABS_X/ABS_Y or slot 0's values).
    pub initial: (i32, i32),
}

const KEY_ENTER: u16 = 28;
const KEY_A: u16 = 30;
const KEY_SPACE: u16 = 57;
const KEY_KPENTER: u16 = 96;
const KEY_KP0: u16 = 82;
const BTN_TOOL_PEN: u16 = 0x140;
const BTN_TOOL_FINGER: u16 = 0x145;
const BTN_STYLUS: u16 = 0x14b;

/// Whether a device is one of our own virtual devices (never read: the
/// expert's input is not local activity and cannot press the hotkeys).
pub fn is_own_device(name: &str, phys: Option<&str>) -> bool {
    name.starts_with(VIRTUAL_NAME_PREFIX) || phys == Some(VIRTUAL_PHYS)
}

/// Whether and how a device matters: `None` for our own devices and for
/// devices that neither type nor point (power button, lid switch, speaker).
pub fn classify(id: LocalDeviceId, path: PathBuf, caps: &DeviceCaps) -> Option<LocalDeviceInfo> {
    if is_own_device(&caps.name, caps.phys.as_deref()) {
        return None;
    }
    let keyboard = [KEY_A, KEY_ENTER, KEY_SPACE, KEY_KPENTER, KEY_KP0]
        .iter()
        .any(|k| caps.keys.contains(*k));
    let (x_axis, y_axis) = match (caps.abs_x, caps.abs_y) {
        (Some(x), Some(y)) => (Some(x), Some(y)),
        _ => (caps.mt_x, caps.mt_y),
    };
    let absolute = x_axis.is_some() && y_axis.is_some();
    let has = |k| caps.keys.contains(k);
    let pointer = if absolute && caps.direct {
        Some(PointerKind::Touchscreen)
    } else if absolute && has(BTN_TOUCH) && has(BTN_TOOL_FINGER) && !has(BTN_TOOL_PEN) {
        Some(PointerKind::Touchpad)
    } else if absolute && has(BTN_TOUCH) && !has(BTN_TOOL_PEN) && !has(BTN_STYLUS) {
        // Older touchscreen drivers do not set INPUT_PROP_DIRECT.
        Some(PointerKind::Touchscreen)
    } else if absolute && (has(BTN_LEFT) || has(BTN_TOUCH) || has(BTN_TOOL_PEN)) {
        Some(PointerKind::Tablet)
    } else if caps.rel_x_y && has(BTN_LEFT) {
        Some(PointerKind::Mouse)
    } else {
        None
    };
    if !keyboard && pointer.is_none() {
        return None;
    }
    let absolute_pointer = matches!(
        pointer,
        Some(PointerKind::Tablet | PointerKind::Touchscreen | PointerKind::Touchpad)
    );
    Some(LocalDeviceInfo {
        id,
        path,
        name: caps.name.clone(),
        keyboard,
        pointer,
        x_axis: if absolute_pointer { x_axis } else { None },
        y_axis: if absolute_pointer { y_axis } else { None },
    })
}

/// A pointer button, as the banner needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerButton {
    Left,
    Right,
    Middle,
}

/// One typed local event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEventKind {
    /// A device was found (at start or hot-plugged).
    DeviceAdded(LocalDeviceInfo),
    /// The device went away (its held keys were released first).
    DeviceRemoved,
    /// Grabbing the device for a prompt failed (someone else grabbed it).
    GrabFailed { error: String },
    /// A keyboard key went down or up (auto-repeat is [`Self::Activity`]).
    Key { code: u16, down: bool },
    /// A mouse moved: the relative motion and the tracked cursor, clamped
    /// to the screen.
    Motion { dx: i32, dy: i32, x: u16, y: u16 },
    /// A touchscreen or tablet position: raw values with their ranges, the
    /// same scaled to screen pixels, and whether it is in contact.
    Absolute {
        raw_x: i32,
        raw_y: i32,
        x_axis: AxisRange,
        y_axis: AxisRange,
        x: u16,
        y: u16,
        contact: bool,
    },
    /// A button went down or up at screen position (`x`, `y`). A touchscreen
    /// contact is reported as the left button, so a tap is a left click.
    Button {
        button: PointerButton,
        down: bool,
        x: u16,
        y: u16,
    },
    /// Wheel clicks (positive: away from the user / to the right).
    Scroll { vertical: i32, horizontal: i32 },
    /// Something that shows the person is there but needs no handling (key
    /// repeat, touchpad motion, other buttons).
    Activity,
}

impl LocalEventKind {
    /// Whether this counts as the person at the device using it.
    pub fn is_activity(&self) -> bool {
        !matches!(
            self,
            LocalEventKind::DeviceAdded(_)
                | LocalEventKind::DeviceRemoved
                | LocalEventKind::GrabFailed { .. }
        )
    }
}

/// State shared by all local devices: the screen and the one cursor that
/// all mice and touchpads move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    pub screen: ScreenSize,
    pub cursor: (u16, u16),
}

const BUTTONS: [(u16, PointerButton); 3] = [
    (BTN_LEFT, PointerButton::Left),
    (BTN_RIGHT, PointerButton::Right),
    (BTN_MIDDLE, PointerButton::Middle),
];

/// Turns one device's raw events into [`LocalEventKind`]s.
#[derive(Debug, Clone)]
pub struct Decoder {
    keyboard: bool,
    pointer: Option<PointerKind>,
    x_axis: Option<AxisRange>,
    y_axis: Option<AxisRange>,
    keys: KeySet,
    /// Buttons down (bit per `BUTTONS` entry).
    buttons: u8,
    /// Contact per the device (`BTN_TOUCH`, or any multitouch slot).
    contact: bool,
    raw: (i32, i32),
    // The frame being collected.
    moved_abs: bool,
    rel: (i32, i32),
    wheel: (i32, i32),
    frame_buttons: u8,
    frame_contact: Option<bool>,
    other: bool,
    key_in_frame: bool,
    // Multitouch bookkeeping, for devices without ABS_X/BTN_TOUCH.
    uses_btn_touch: bool,
    /// The device has no ABS_X/ABS_Y: follow the multitouch positions.
    mt_position_only: bool,
    mt_slot: u8,
    mt_active: u64,
}

impl Decoder {
    pub fn new(info: &LocalDeviceInfo, caps: &DeviceCaps) -> Self {
        Self {
            keyboard: info.keyboard,
            pointer: info.pointer,
            x_axis: info.x_axis,
            y_axis: info.y_axis,
            keys: KeySet::new(),
            buttons: 0,
            contact: false,
            raw: caps.initial,
            moved_abs: false,
            rel: (0, 0),
            wheel: (0, 0),
            frame_buttons: 0,
            frame_contact: None,
            other: false,
            key_in_frame: false,
            uses_btn_touch: caps.keys.contains(BTN_TOUCH),
            mt_position_only: caps.abs_x.is_none() && caps.mt_x.is_some(),
            mt_slot: 0,
            mt_active: 0,
        }
    }

    fn absolute(&self) -> bool {
        matches!(
            self.pointer,
            Some(PointerKind::Tablet | PointerKind::Touchscreen)
        )
    }

    /// Screen position of the pointer now.
    fn position(&self, ctx: &DecodeContext) -> (u16, u16) {
        match (self.absolute(), self.x_axis, self.y_axis) {
            (true, Some(xa), Some(ya)) => (
                xa.scale(self.raw.0, ctx.screen.width),
                ya.scale(self.raw.1, ctx.screen.height),
            ),
            _ => ctx.cursor,
        }
    }

    /// Feeds one raw event; at `SYN_REPORT` the frame's events come out.
    pub fn feed(
        &mut self,
        kind: u16,
        code: u16,
        value: i32,
        ctx: &mut DecodeContext,
        out: &mut Vec<LocalEventKind>,
    ) {
        if kind != EV_SYN {
            // Anything the person did shows they are there, even when it
            // yields no typed event (second finger, pen tilt…).
            self.other = true;
        }
        match kind {
            EV_SYN if code == SYN_REPORT => self.flush(ctx, out),
            EV_SYN => {}
            EV_KEY => self.key(code, value, out),
            EV_REL => match code {
                REL_X => self.rel.0 = self.rel.0.saturating_add(value),
                REL_Y => self.rel.1 = self.rel.1.saturating_add(value),
                REL_WHEEL => self.wheel.0 = self.wheel.0.saturating_add(value),
                REL_HWHEEL => self.wheel.1 = self.wheel.1.saturating_add(value),
                _ => self.other = true,
            },
            EV_ABS => self.abs(code, value),
            _ => {}
        }
    }

    fn key(&mut self, code: u16, value: i32, out: &mut Vec<LocalEventKind>) {
        if let Some(i) = BUTTONS.iter().position(|(c, _)| *c == code)
            && self.pointer.is_some()
        {
            let bit = 1u8 << i;
            if (self.buttons & bit != 0) != (value != 0) {
                self.frame_buttons |= bit;
                self.buttons ^= bit;
            }
            return;
        }
        if code == BTN_TOUCH && self.pointer.is_some() {
            self.frame_contact = Some(value != 0);
            return;
        }
        if self.keyboard && is_keyboard_key(code) {
            match value {
                0 if self.keys.remove(code) => {
                    self.key_in_frame = true;
                    out.push(LocalEventKind::Key { code, down: false });
                }
                1 if self.keys.insert(code) => {
                    self.key_in_frame = true;
                    out.push(LocalEventKind::Key { code, down: true });
                }
                _ => {} // repeat, or a state we already had: activity
            }
            return;
        }
        self.other = true;
    }

    fn abs(&mut self, code: u16, value: i32) {
        match code {
            ABS_X => {
                self.raw.0 = value;
                self.moved_abs = true;
            }
            ABS_Y => {
                self.raw.1 = value;
                self.moved_abs = true;
            }
            ABS_MT_SLOT => self.mt_slot = u8::try_from(value).unwrap_or(u8::MAX),
            ABS_MT_TRACKING_ID => {
                if self.mt_slot < 64 {
                    let bit = 1u64 << self.mt_slot;
                    if value >= 0 {
                        self.mt_active |= bit;
                    } else {
                        self.mt_active &= !bit;
                    }
                }
                if !self.uses_btn_touch {
                    self.frame_contact = Some(self.mt_active != 0);
                }
            }
            ABS_MT_POSITION_X | ABS_MT_POSITION_Y if self.mt_position_only => {
                // Follow the lowest slot in contact (or any, when none is).
                let primary = self.mt_active.trailing_zeros();
                if self.mt_active == 0 || u32::from(self.mt_slot) == primary {
                    if code == ABS_MT_POSITION_X {
                        self.raw.0 = value;
                    } else {
                        self.raw.1 = value;
                    }
                    self.moved_abs = true;
                }
            }
            _ => self.other = true,
        }
    }

    fn flush(&mut self, ctx: &mut DecodeContext, out: &mut Vec<LocalEventKind>) {
        let start = out.len();
        if self.rel != (0, 0) {
            let (dx, dy) = std::mem::take(&mut self.rel);
            if self.pointer == Some(PointerKind::Mouse) {
                let x = (i32::from(ctx.cursor.0).saturating_add(dx))
                    .clamp(0, i32::from(ctx.screen.max_x()));
                let y = (i32::from(ctx.cursor.1).saturating_add(dy))
                    .clamp(0, i32::from(ctx.screen.max_y()));
                ctx.cursor = (x as u16, y as u16);
                out.push(LocalEventKind::Motion {
                    dx,
                    dy,
                    x: ctx.cursor.0,
                    y: ctx.cursor.1,
                });
            } else {
                self.other = true;
            }
        }
        let contact_change = self.frame_contact.take().filter(|c| *c != self.contact);
        if let Some(c) = contact_change {
            self.contact = c;
        }
        if std::mem::take(&mut self.moved_abs) {
            match (self.absolute(), self.x_axis, self.y_axis) {
                (true, Some(x_axis), Some(y_axis)) => {
                    let (x, y) = self.position(ctx);
                    out.push(LocalEventKind::Absolute {
                        raw_x: self.raw.0,
                        raw_y: self.raw.1,
                        x_axis,
                        y_axis,
                        x,
                        y,
                        contact: self.contact || self.buttons & 1 != 0,
                    });
                }
                _ => self.other = true,
            }
        }
        let (x, y) = self.position(ctx);
        if let Some(down) = contact_change {
            if self.pointer == Some(PointerKind::Touchscreen) {
                out.push(LocalEventKind::Button {
                    button: PointerButton::Left,
                    down,
                    x,
                    y,
                });
            } else {
                self.other = true;
            }
        }
        let changed = std::mem::take(&mut self.frame_buttons);
        for (i, (_, button)) in BUTTONS.iter().enumerate() {
            let bit = 1u8 << i;
            if changed & bit != 0 {
                out.push(LocalEventKind::Button {
                    button: *button,
                    down: self.buttons & bit != 0,
                    x,
                    y,
                });
            }
        }
        if self.wheel != (0, 0) {
            let (vertical, horizontal) = std::mem::take(&mut self.wheel);
            out.push(LocalEventKind::Scroll {
                vertical,
                horizontal,
            });
        }
        let key_in_frame = std::mem::take(&mut self.key_in_frame);
        if std::mem::take(&mut self.other) && out.len() == start && !key_in_frame {
            out.push(LocalEventKind::Activity);
        }
    }

    /// The device went away: releases for what it held.
    pub fn release_all(&mut self, ctx: &DecodeContext, out: &mut Vec<LocalEventKind>) {
        for code in self.keys.iter() {
            out.push(LocalEventKind::Key { code, down: false });
        }
        self.keys.clear();
        let (x, y) = self.position(ctx);
        for (i, (_, button)) in BUTTONS.iter().enumerate() {
            if self.buttons & (1 << i) != 0 {
                out.push(LocalEventKind::Button {
                    button: *button,
                    down: false,
                    x,
                    y,
                });
            }
        }
        self.buttons = 0;
        if self.contact && self.pointer == Some(PointerKind::Touchscreen) {
            out.push(LocalEventKind::Button {
                button: PointerButton::Left,
                down: false,
                x,
                y,
            });
        }
        self.contact = false;
    }
}
