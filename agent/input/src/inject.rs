//! The sans-I/O core of every input sink: turns expert events into the exact
//! evdev events for the virtual devices, tracks what is pressed, clamps to the
//! screen, and drops what cannot be right.
//!
//! Both the uinput sink and the recording sink run this core, so the tests
//! with the recording sink check the very events the kernel would get.

use shoulder_proto::msg::{Buttons, Key, Pointer, Touch, TouchPhase};
use shoulder_proto::session::InjectEvent;

use crate::codes::*;
use crate::keys::{KeySet, is_keyboard_key};

/// Touch contacts the virtual touchscreen tracks at once. Touch controllers
/// report up to ten fingers; more would only be a bogus client.
pub const MAX_TOUCH_SLOTS: u8 = 10;

/// The largest multitouch tracking id; ids wrap around after it
/// (`ABS_MT_TRACKING_ID` range, as drivers use it).
pub const MAX_TRACKING_ID: u16 = u16::MAX;

/// The virtual devices a sink drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VirtualDevice {
    /// Absolute pointer (tablet-like) with three buttons and two wheels.
    Pointer,
    /// Keyboard with every `KEY_*` code.
    Keyboard,
    /// Multitouch (type B) touchscreen.
    Touch,
}

impl VirtualDevice {
    /// The device name as applications see it (`EVIOCGNAME`); also how our
    /// own local-input reader recognises and skips these devices.
    pub fn name(self) -> &'static str {
        match self {
            VirtualDevice::Pointer => "Shoulder remote pointer",
            VirtualDevice::Keyboard => "Shoulder remote keyboard",
            VirtualDevice::Touch => "Shoulder remote touchscreen",
        }
    }
}

/// The physical path set on our virtual devices (`EVIOCGPHYS`).
pub const VIRTUAL_PHYS: &str = "shoulder/uinput";
/// The prefix of our virtual devices' names.
pub const VIRTUAL_NAME_PREFIX: &str = "Shoulder remote ";

/// One evdev event (`struct input_event` without the time, which the kernel
/// stamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl RawEvent {
    pub const fn new(kind: u16, code: u16, value: i32) -> Self {
        Self { kind, code, value }
    }

    pub const SYN: RawEvent = RawEvent::new(EV_SYN, SYN_REPORT, 0);
}

/// Events for one device, written in one go; always ends with `SYN_REPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub device: VirtualDevice,
    pub events: Vec<RawEvent>,
}

/// How pointing is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InjectMode {
    /// Absolute pointer for clicks; expert touches on slot 0 become left
    /// clicks, other touch slots are dropped.
    #[default]
    Pointer,
    /// A touchscreen for apps that only understand touch: expert touches go
    /// to it as they are, the expert's left button becomes a touch on slot 0;
    /// right/middle buttons and wheels still go to the pointer.
    Touch,
}

impl InjectMode {
    /// The devices this mode creates.
    pub fn devices(self) -> &'static [VirtualDevice] {
        match self {
            InjectMode::Pointer => &[VirtualDevice::Pointer, VirtualDevice::Keyboard],
            InjectMode::Touch => &[
                VirtualDevice::Pointer,
                VirtualDevice::Keyboard,
                VirtualDevice::Touch,
            ],
        }
    }
}

/// Screen size in pixels; both at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScreenSize {
    pub width: u16,
    pub height: u16,
}

impl ScreenSize {
    /// One pixel: a placeholder until the real size is known.
    pub const MIN: Self = Self {
        width: 1,
        height: 1,
    };

    /// None when either side is zero.
    pub fn new(width: u16, height: u16) -> Option<Self> {
        (width > 0 && height > 0).then_some(Self { width, height })
    }

    pub fn max_x(self) -> u16 {
        self.width - 1
    }

    pub fn max_y(self) -> u16 {
        self.height - 1
    }
}

/// Counters of what a sink did with the expert's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStats {
    /// Events forwarded to the devices.
    pub injected: u64,
    /// Events with codes or buttons we do not know, dropped.
    pub dropped_unknown: u64,
    /// Events that cannot follow from the current state (release of a key
    /// never pressed, slot out of range…), dropped.
    pub dropped_impossible: u64,
    /// Coordinates that were off the screen and clamped to its edge.
    pub clamped: u64,
    /// Inject calls refused because control was withdrawn.
    pub refused: u64,
}

/// What became of one expert event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    Forwarded,
    Dropped(DropReason),
}

/// Why an expert event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    UnknownKey(u16),
    UnknownButtons(u8),
    KeyAlreadyDown(u16),
    KeyNotDown(u16),
    SlotOutOfRange(u8),
    /// Only slot 0 exists without a touchscreen.
    SlotUnsupported(u8),
    TouchAlreadyDown(u8),
    TouchNotDown(u8),
}

impl DropReason {
    fn is_unknown(self) -> bool {
        matches!(
            self,
            DropReason::UnknownKey(_) | DropReason::UnknownButtons(_)
        )
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::UnknownKey(c) => write!(f, "key code {c} is not a keyboard key"),
            DropReason::UnknownButtons(b) => write!(f, "unknown pointer buttons {b:#04x}"),
            DropReason::KeyAlreadyDown(c) => write!(f, "key {c} is already down"),
            DropReason::KeyNotDown(c) => write!(f, "release of key {c}, which is not down"),
            DropReason::SlotOutOfRange(s) => {
                write!(
                    f,
                    "touch slot {s} is out of range (0–{})",
                    MAX_TOUCH_SLOTS - 1
                )
            }
            DropReason::SlotUnsupported(s) => {
                write!(f, "touch slot {s} needs the touchscreen mode")
            }
            DropReason::TouchAlreadyDown(s) => write!(f, "touch slot {s} is already down"),
            DropReason::TouchNotDown(s) => write!(f, "touch slot {s} is not down"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Contact {
    tracking_id: u16,
    x: u16,
    y: u16,
}

/// State and translation shared by all sinks.
#[derive(Debug, Clone)]
pub struct InjectorCore {
    mode: InjectMode,
    screen: ScreenSize,
    /// Buttons down on the pointer device (`Buttons` bits).
    buttons: u8,
    pointer: (u16, u16),
    keys: KeySet,
    /// Touch contacts: on the touchscreen (touch mode), or slot 0 as the
    /// left button (pointer mode).
    slots: [Option<Contact>; MAX_TOUCH_SLOTS as usize],
    /// Touch mode: the expert's left button holds slot 0.
    left_as_touch: bool,
    next_tracking_id: u16,
    stats: SinkStats,
}

impl InjectorCore {
    pub fn new(mode: InjectMode, screen: ScreenSize) -> Self {
        Self {
            mode,
            screen,
            buttons: 0,
            pointer: (0, 0),
            keys: KeySet::new(),
            slots: [None; MAX_TOUCH_SLOTS as usize],
            left_as_touch: false,
            next_tracking_id: 0,
            stats: SinkStats::default(),
        }
    }

    pub fn mode(&self) -> InjectMode {
        self.mode
    }

    pub fn screen(&self) -> ScreenSize {
        self.screen
    }

    pub fn stats(&self) -> SinkStats {
        self.stats
    }

    pub(crate) fn count_refused(&mut self) {
        self.stats.refused += 1;
    }

    /// Keys the expert holds down.
    pub fn held_keys(&self) -> &KeySet {
        &self.keys
    }

    /// Pointer buttons the expert holds (`Buttons` bits).
    pub fn held_buttons(&self) -> u8 {
        self.buttons
    }

    /// Touch slots in contact.
    pub fn held_slots(&self) -> impl Iterator<Item = u8> + '_ {
        (0..MAX_TOUCH_SLOTS).filter(|s| self.slots[*s as usize].is_some())
    }

    /// Whether anything is held.
    pub fn anything_held(&self) -> bool {
        !self.keys.is_empty() || self.buttons != 0 || self.slots.iter().any(Option::is_some)
    }

    /// Translates one expert event. On `Dropped`, `out` is left untouched and
    /// nothing changed.
    pub fn translate(&mut self, ev: InjectEvent, out: &mut Vec<Batch>) -> Injected {
        let r = match ev {
            InjectEvent::Key(k) => self.key(k, out),
            InjectEvent::Pointer(p) => self.pointer(p, out),
            InjectEvent::Touch(t) => self.touch(t, out),
        };
        match r {
            Ok(()) => {
                self.stats.injected += 1;
                Injected::Forwarded
            }
            Err(reason) => {
                if reason.is_unknown() {
                    self.stats.dropped_unknown += 1;
                } else {
                    self.stats.dropped_impossible += 1;
                }
                Injected::Dropped(reason)
            }
        }
    }

    /// Releases everything held: keys, buttons, touches. The state is empty
    /// afterwards.
    pub fn release_all(&mut self, out: &mut Vec<Batch>) {
        if !self.keys.is_empty() {
            let mut ev: Vec<RawEvent> = self
                .keys
                .iter()
                .map(|c| RawEvent::new(EV_KEY, c, 0))
                .collect();
            ev.push(RawEvent::SYN);
            out.push(Batch {
                device: VirtualDevice::Keyboard,
                events: ev,
            });
            self.keys.clear();
        }
        match self.mode {
            InjectMode::Pointer => {
                // Slot 0 is the left button here.
                self.slots = [None; MAX_TOUCH_SLOTS as usize];
            }
            InjectMode::Touch => {
                let mut ev = Vec::new();
                for s in 0..MAX_TOUCH_SLOTS {
                    if self.slots[s as usize].take().is_some() {
                        ev.push(RawEvent::new(EV_ABS, ABS_MT_SLOT, s.into()));
                        ev.push(RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, -1));
                    }
                }
                if !ev.is_empty() {
                    ev.push(RawEvent::new(EV_KEY, BTN_TOUCH, 0));
                    ev.push(RawEvent::SYN);
                    out.push(Batch {
                        device: VirtualDevice::Touch,
                        events: ev,
                    });
                }
                self.left_as_touch = false;
            }
        }
        if self.buttons != 0 {
            let mut ev: Vec<RawEvent> = BUTTON_CODES
                .iter()
                .filter(|(bit, _)| self.buttons & bit != 0)
                .map(|(_, code)| RawEvent::new(EV_KEY, *code, 0))
                .collect();
            ev.push(RawEvent::SYN);
            out.push(Batch {
                device: VirtualDevice::Pointer,
                events: ev,
            });
            self.buttons = 0;
        }
    }

    /// A new screen size; positions kept are clamped to it. Returns whether
    /// it changed (the devices' ranges must follow).
    pub fn set_screen(&mut self, screen: ScreenSize) -> bool {
        if screen == self.screen {
            return false;
        }
        self.screen = screen;
        self.pointer = (
            self.pointer.0.min(screen.max_x()),
            self.pointer.1.min(screen.max_y()),
        );
        for c in self.slots.iter_mut().flatten() {
            c.x = c.x.min(screen.max_x());
            c.y = c.y.min(screen.max_y());
        }
        true
    }

    fn clamp(&mut self, x: u16, y: u16) -> (u16, u16) {
        let cx = x.min(self.screen.max_x());
        let cy = y.min(self.screen.max_y());
        if (cx, cy) != (x, y) {
            self.stats.clamped += 1;
        }
        (cx, cy)
    }

    fn key(&mut self, k: Key, out: &mut Vec<Batch>) -> Result<(), DropReason> {
        if !is_keyboard_key(k.code) {
            return Err(DropReason::UnknownKey(k.code));
        }
        if k.down {
            if self.keys.contains(k.code) {
                return Err(DropReason::KeyAlreadyDown(k.code));
            }
            self.keys.insert(k.code);
        } else if !self.keys.remove(k.code) {
            return Err(DropReason::KeyNotDown(k.code));
        }
        out.push(Batch {
            device: VirtualDevice::Keyboard,
            events: vec![
                RawEvent::new(EV_KEY, k.code, i32::from(k.down)),
                RawEvent::SYN,
            ],
        });
        Ok(())
    }

    fn pointer(&mut self, p: Pointer, out: &mut Vec<Batch>) -> Result<(), DropReason> {
        if p.buttons.0 & !Buttons::ALL != 0 {
            return Err(DropReason::UnknownButtons(p.buttons.0));
        }
        let wanted = p.buttons.0;
        // In touch mode the left button is a touch on slot 0; it must be free.
        let left_change =
            self.mode == InjectMode::Touch && (wanted & Buttons::LEFT != 0) != self.left_as_touch;
        if left_change && !self.left_as_touch && self.slots[0].is_some() {
            return Err(DropReason::TouchAlreadyDown(0));
        }
        let (x, y) = self.clamp(p.x, p.y);
        let pointer_buttons = match self.mode {
            InjectMode::Pointer => wanted,
            InjectMode::Touch => wanted & !Buttons::LEFT,
        };
        self.nudge_before_press(x, y, pointer_buttons & !self.buttons != 0, out);
        self.pointer = (x, y);
        let mut ev = vec![
            RawEvent::new(EV_ABS, ABS_X, x.into()),
            RawEvent::new(EV_ABS, ABS_Y, y.into()),
        ];
        self.push_button_changes(pointer_buttons, &mut ev);
        if p.wheel != 0 {
            ev.push(RawEvent::new(EV_REL, REL_WHEEL, p.wheel.into()));
        }
        if p.hwheel != 0 {
            ev.push(RawEvent::new(EV_REL, REL_HWHEEL, p.hwheel.into()));
        }
        ev.push(RawEvent::SYN);
        out.push(Batch {
            device: VirtualDevice::Pointer,
            events: ev,
        });
        if self.mode == InjectMode::Touch {
            if left_change {
                let phase = if self.left_as_touch {
                    TouchPhase::Up
                } else {
                    TouchPhase::Down
                };
                self.left_as_touch = !self.left_as_touch;
                self.mt_contact(0, phase, x, y, out);
            } else if self.left_as_touch {
                self.mt_contact(0, TouchPhase::Move, x, y, out);
            }
        }
        Ok(())
    }

    /// Before a button press at the position the pointer device already
    /// has: one frame one unit aside. The kernel drops an absolute value
    /// equal to the last one, so a reader that missed that last one (a
    /// compositor that opened the device after the expert's first move,
    /// or reopened it) would get the press alone and place it wherever
    /// its own pointer was; Weston's starts at 100,100. The frame after
    /// this one moves back, so the press lands where the expert clicked.
    fn nudge_before_press(&self, x: u16, y: u16, press: bool, out: &mut Vec<Batch>) {
        if !press || (x, y) != self.pointer {
            return;
        }
        let max_x = self.screen.max_x();
        let aside = if x < max_x {
            x + 1
        } else if x > 0 {
            x - 1
        } else {
            return;
        };
        out.push(Batch {
            device: VirtualDevice::Pointer,
            events: vec![RawEvent::new(EV_ABS, ABS_X, aside.into()), RawEvent::SYN],
        });
    }

    fn push_button_changes(&mut self, wanted: u8, ev: &mut Vec<RawEvent>) {
        for (bit, code) in BUTTON_CODES {
            if (self.buttons & bit != 0) != (wanted & bit != 0) {
                ev.push(RawEvent::new(EV_KEY, code, i32::from(wanted & bit != 0)));
            }
        }
        self.buttons = wanted;
    }

    fn touch(&mut self, t: Touch, out: &mut Vec<Batch>) -> Result<(), DropReason> {
        if t.slot >= MAX_TOUCH_SLOTS {
            return Err(DropReason::SlotOutOfRange(t.slot));
        }
        let active = self.slots[t.slot as usize].is_some();
        match t.phase {
            TouchPhase::Down if active => return Err(DropReason::TouchAlreadyDown(t.slot)),
            TouchPhase::Move | TouchPhase::Up if !active => {
                return Err(DropReason::TouchNotDown(t.slot));
            }
            _ => {}
        }
        match self.mode {
            InjectMode::Touch => {
                if t.slot == 0 && self.left_as_touch {
                    // Slot 0 is held by the expert's left button.
                    return Err(DropReason::TouchAlreadyDown(0));
                }
                let (x, y) = self.clamp(t.x, t.y);
                self.mt_contact(t.slot, t.phase, x, y, out);
            }
            InjectMode::Pointer => {
                if t.slot != 0 {
                    return Err(DropReason::SlotUnsupported(t.slot));
                }
                if t.phase == TouchPhase::Down && self.buttons & Buttons::LEFT != 0 {
                    return Err(DropReason::TouchAlreadyDown(0));
                }
                let (x, y) = self.clamp(t.x, t.y);
                self.nudge_before_press(x, y, t.phase == TouchPhase::Down, out);
                self.pointer = (x, y);
                let mut ev = vec![
                    RawEvent::new(EV_ABS, ABS_X, x.into()),
                    RawEvent::new(EV_ABS, ABS_Y, y.into()),
                ];
                let buttons = match t.phase {
                    TouchPhase::Down => self.buttons | Buttons::LEFT,
                    TouchPhase::Move => self.buttons,
                    TouchPhase::Up => self.buttons & !Buttons::LEFT,
                };
                self.push_button_changes(buttons, &mut ev);
                ev.push(RawEvent::SYN);
                out.push(Batch {
                    device: VirtualDevice::Pointer,
                    events: ev,
                });
                self.slots[0] = match t.phase {
                    TouchPhase::Up => None,
                    _ => Some(Contact {
                        tracking_id: 0,
                        x,
                        y,
                    }),
                };
            }
        }
        Ok(())
    }

    /// Emits one multitouch contact change on the touchscreen (the state
    /// checks were done by the caller).
    fn mt_contact(&mut self, slot: u8, phase: TouchPhase, x: u16, y: u16, out: &mut Vec<Batch>) {
        let was_touching = self.slots.iter().any(Option::is_some);
        let s = slot as usize;
        let mut ev = vec![RawEvent::new(EV_ABS, ABS_MT_SLOT, slot.into())];
        match phase {
            TouchPhase::Down => {
                let id = self.next_tracking_id;
                self.next_tracking_id = if id == MAX_TRACKING_ID { 0 } else { id + 1 };
                self.slots[s] = Some(Contact {
                    tracking_id: id,
                    x,
                    y,
                });
                ev.push(RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, id.into()));
                ev.push(RawEvent::new(EV_ABS, ABS_MT_POSITION_X, x.into()));
                ev.push(RawEvent::new(EV_ABS, ABS_MT_POSITION_Y, y.into()));
            }
            TouchPhase::Move => {
                if let Some(c) = &mut self.slots[s] {
                    c.x = x;
                    c.y = y;
                }
                ev.push(RawEvent::new(EV_ABS, ABS_MT_POSITION_X, x.into()));
                ev.push(RawEvent::new(EV_ABS, ABS_MT_POSITION_Y, y.into()));
            }
            TouchPhase::Up => {
                self.slots[s] = None;
                ev.push(RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, -1));
            }
        }
        // Single-touch emulation for apps that read ABS_X/ABS_Y: the lowest
        // slot in contact is the pointer.
        let primary = self.slots.iter().position(Option::is_some);
        if primary == Some(s) && phase != TouchPhase::Up {
            ev.push(RawEvent::new(EV_ABS, ABS_X, x.into()));
            ev.push(RawEvent::new(EV_ABS, ABS_Y, y.into()));
        } else if phase == TouchPhase::Up
            && let Some(p) = primary
            && p > s
            && let Some(c) = self.slots[p]
        {
            ev.push(RawEvent::new(EV_ABS, ABS_X, c.x.into()));
            ev.push(RawEvent::new(EV_ABS, ABS_Y, c.y.into()));
        }
        let touching = primary.is_some();
        if touching != was_touching {
            ev.push(RawEvent::new(EV_KEY, BTN_TOUCH, i32::from(touching)));
        }
        ev.push(RawEvent::SYN);
        out.push(Batch {
            device: VirtualDevice::Touch,
            events: ev,
        });
    }
}

/// Wire button bits and their evdev codes.
pub(crate) const BUTTON_CODES: [(u8, u16); 3] = [
    (Buttons::LEFT, BTN_LEFT),
    (Buttons::RIGHT, BTN_RIGHT),
    (Buttons::MIDDLE, BTN_MIDDLE),
];
