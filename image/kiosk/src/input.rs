//! Local input through evdev: every keyboard, mouse, tablet and touchscreen
//! under /dev/input, including ones that appear later (the agent creates its
//! uinput devices when control is granted).
//!
//! Raw events go through [`PointerTracker`], which is pure and tested on the
//! host: absolute axes are scaled from each device's range to the screen,
//! relative motion moves a pointer, and a button or touch press becomes a
//! tap at the pointer position when its SYN_REPORT arrives.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evdev::raw_stream::RawDevice;
use evdev::{EventType, InputEvent};

/// How often /dev/input is rescanned for new devices: fast enough that the
/// agent's uinput devices are picked up before the expert's first click
/// lands, cheap enough to be unnoticeable.
pub const RESCAN_INTERVAL: Duration = Duration::from_millis(250);
/// Most input devices the kiosk reads at once (a bound on open fds).
pub const MAX_DEVICES: usize = 32;

const EV_SYN: u16 = 0;
const SYN_REPORT: u16 = 0;
const ABS_X: u16 = 0x00;
const ABS_Y: u16 = 0x01;
const ABS_MT_POSITION_X: u16 = 0x35;
const ABS_MT_POSITION_Y: u16 = 0x36;
const REL_X: u16 = 0x00;
const REL_Y: u16 = 0x01;
const BTN_LEFT: u16 = 0x110;
const BTN_TOUCH: u16 = 0x14a;
/// Key codes below this are keyboard keys; from here on they are buttons.
const FIRST_BUTTON: u16 = 0x100;

/// What the kiosk does with input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInput {
    /// A tap or left click at screen coordinates.
    Tap { x: i32, y: i32 },
    /// A keyboard key: evdev code, value (0 up, 1 down, 2 repeat).
    Key { code: u16, value: i32 },
}

/// Range of one absolute axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisRange {
    pub min: i32,
    pub max: i32,
}

impl AxisRange {
    /// Maps `value` in this range onto `0..len` (clamped).
    pub fn scale(&self, value: i32, len: u32) -> i32 {
        let span = i64::from(self.max) - i64::from(self.min);
        if span <= 0 || len == 0 {
            return 0;
        }
        let v = (i64::from(value) - i64::from(self.min)).clamp(0, span);
        (v * (i64::from(len) - 1) / span) as i32
    }
}

/// Per-device pointer state between SYN_REPORTs.
#[derive(Debug, Clone, Default)]
pub struct PointerTracker {
    x_range: Option<AxisRange>,
    y_range: Option<AxisRange>,
    pending_x: Option<i32>,
    pending_y: Option<i32>,
    /// The device's own absolute position (raw values), as the kernel
    /// reported it when the device was opened and since: a press whose
    /// position events came before we opened the device still lands
    /// where the device is, not where another device left the pointer.
    abs: (Option<i32>, Option<i32>),
    rel: (i32, i32),
    press: bool,
}

impl PointerTracker {
    /// A tracker for a device with these absolute X/Y ranges (if any).
    pub fn new(x_range: Option<AxisRange>, y_range: Option<AxisRange>) -> Self {
        Self {
            x_range,
            y_range,
            ..Self::default()
        }
    }

    /// The same, knowing where the device is now (its axes' current values).
    pub fn at(mut self, x: Option<i32>, y: Option<i32>) -> Self {
        self.abs = (x, y);
        self
    }

    /// Feeds one raw event (type, code, value). `pointer` is the shared
    /// on-screen pointer position, `screen` the screen size. Returns what
    /// the kiosk should act on.
    pub fn feed(
        &mut self,
        ev_type: u16,
        code: u16,
        value: i32,
        pointer: &mut (i32, i32),
        screen: (u32, u32),
        out: &mut Vec<UserInput>,
    ) {
        match EventType(ev_type) {
            EventType::ABSOLUTE => match code {
                ABS_X | ABS_MT_POSITION_X => {
                    self.abs.0 = Some(value);
                    self.pending_x = self.x_range.map(|r| r.scale(value, screen.0))
                }
                ABS_Y | ABS_MT_POSITION_Y => {
                    self.abs.1 = Some(value);
                    self.pending_y = self.y_range.map(|r| r.scale(value, screen.1))
                }
                _ => {}
            },
            EventType::RELATIVE => match code {
                REL_X => self.rel.0 = self.rel.0.saturating_add(value),
                REL_Y => self.rel.1 = self.rel.1.saturating_add(value),
                _ => {}
            },
            EventType::KEY if (code == BTN_LEFT || code == BTN_TOUCH) && value == 1 => {
                self.press = true;
            }
            EventType::KEY if code == BTN_LEFT || code == BTN_TOUCH => {}
            EventType::KEY if code < FIRST_BUTTON => out.push(UserInput::Key { code, value }),
            _ if ev_type == EV_SYN && code == SYN_REPORT => {
                // A press on an absolute device is where that device is.
                if self.press {
                    if self.pending_x.is_none() {
                        self.pending_x = self
                            .x_range
                            .zip(self.abs.0)
                            .map(|(r, v)| r.scale(v, screen.0));
                    }
                    if self.pending_y.is_none() {
                        self.pending_y = self
                            .y_range
                            .zip(self.abs.1)
                            .map(|(r, v)| r.scale(v, screen.1));
                    }
                }
                if let Some(x) = self.pending_x.take() {
                    pointer.0 = x;
                }
                if let Some(y) = self.pending_y.take() {
                    pointer.1 = y;
                }
                let max_x = screen.0.saturating_sub(1) as i32;
                let max_y = screen.1.saturating_sub(1) as i32;
                pointer.0 = pointer.0.saturating_add(self.rel.0).clamp(0, max_x);
                pointer.1 = pointer.1.saturating_add(self.rel.1).clamp(0, max_y);
                self.rel = (0, 0);
                if std::mem::take(&mut self.press) {
                    out.push(UserInput::Tap {
                        x: pointer.0,
                        y: pointer.1,
                    });
                }
            }
            _ => {}
        }
    }
}

struct Device {
    raw: RawDevice,
    tracker: PointerTracker,
}

/// All input devices under /dev/input.
pub struct Inputs {
    dir: PathBuf,
    devices: BTreeMap<PathBuf, Device>,
    next_scan: Instant,
    pointer: (i32, i32),
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .field("pointer", &self.pointer)
            .finish()
    }
}

impl Inputs {
    /// Inputs from the event devices in `dir` (normally /dev/input).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            devices: BTreeMap::new(),
            next_scan: Instant::now(),
            pointer: (0, 0),
        }
    }

    /// Opens devices that appeared and forgets ones that went away, at most
    /// every [`RESCAN_INTERVAL`].
    pub fn rescan(&mut self, now: Instant) {
        if now < self.next_scan {
            return;
        }
        self.next_scan = now + RESCAN_INTERVAL;
        self.devices.retain(|path, _| path.exists());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("event"))
            })
            .collect();
        paths.sort();
        for path in paths {
            if self.devices.contains_key(&path) || self.devices.len() >= MAX_DEVICES {
                continue;
            }
            match open_device(&path) {
                Ok(device) => {
                    eprintln!(
                        "kiosk: input {} \"{}\"",
                        path.display(),
                        device.raw.name().unwrap_or("?")
                    );
                    self.devices.insert(path, device);
                }
                Err(e) => eprintln!("kiosk: cannot open {}: {e}", path.display()),
            }
        }
    }

    /// When the next rescan is due.
    pub fn next_scan(&self) -> Instant {
        self.next_scan
    }

    /// The open devices' fds, for poll.
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::BorrowedFd<'_>> {
        self.devices.values().map(|d| d.raw.as_fd())
    }

    /// Reads every pending event of every device (non-blocking).
    pub fn read(&mut self, screen: (u32, u32), out: &mut Vec<UserInput>) {
        let mut gone = Vec::new();
        for (path, device) in &mut self.devices {
            loop {
                let events: Vec<InputEvent> = match device.raw.fetch_events() {
                    Ok(events) => events.collect(),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        eprintln!("kiosk: input {} gone: {e}", path.display());
                        gone.push(path.clone());
                        break;
                    }
                };
                if events.is_empty() {
                    break;
                }
                for ev in events {
                    device.tracker.feed(
                        ev.event_type().0,
                        ev.code(),
                        ev.value(),
                        &mut self.pointer,
                        screen,
                        out,
                    );
                }
            }
        }
        for path in gone {
            self.devices.remove(&path);
        }
    }
}

fn open_device(path: &Path) -> io::Result<Device> {
    let raw = RawDevice::open(path)?;
    let flags = rustix::fs::fcntl_getfl(raw.as_fd())?;
    rustix::fs::fcntl_setfl(raw.as_fd(), flags | rustix::fs::OFlags::NONBLOCK)?;
    let (mut x_range, mut y_range) = (None, None);
    let (mut x_now, mut y_now) = (None, None);
    if let Ok(axes) = raw.get_absinfo() {
        for (axis, info) in axes {
            let range = AxisRange {
                min: info.minimum(),
                max: info.maximum(),
            };
            match axis.0 {
                ABS_X => (x_range, x_now) = (Some(range), Some(info.value())),
                ABS_Y => (y_range, y_now) = (Some(range), Some(info.value())),
                ABS_MT_POSITION_X if x_range.is_none() => x_range = Some(range),
                ABS_MT_POSITION_Y if y_range.is_none() => y_range = Some(range),
                _ => {}
            }
        }
    }
    Ok(Device {
        raw,
        tracker: PointerTracker::new(x_range, y_range).at(x_now, y_now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV_KEY: u16 = 1;
    const EV_REL: u16 = 2;
    const EV_ABS: u16 = 3;
    const SCREEN: (u32, u32) = (1024, 768);

    fn tablet() -> PointerTracker {
        let r = AxisRange { min: 0, max: 32767 };
        PointerTracker::new(Some(r), Some(r))
    }

    fn feed(
        t: &mut PointerTracker,
        pointer: &mut (i32, i32),
        events: &[(u16, u16, i32)],
    ) -> Vec<UserInput> {
        let mut out = Vec::new();
        for &(ty, code, value) in events {
            t.feed(ty, code, value, pointer, SCREEN, &mut out);
        }
        out
    }

    #[test]
    fn tablet_click_is_scaled_to_the_screen() {
        let mut t = tablet();
        let mut p = (0, 0);
        let out = feed(
            &mut t,
            &mut p,
            &[
                (EV_ABS, ABS_X, 16384),
                (EV_ABS, ABS_Y, 32767),
                (EV_KEY, BTN_LEFT, 1),
                (EV_SYN, SYN_REPORT, 0),
                (EV_KEY, BTN_LEFT, 0),
                (EV_SYN, SYN_REPORT, 0),
            ],
        );
        assert_eq!(out, vec![UserInput::Tap { x: 511, y: 767 }]);
    }

    /// A tablet opened after it moved (the expert's new remote pointer, say):
    /// its press lands where the device is, not where the shared pointer
    /// was left.
    #[test]
    fn a_press_lands_where_an_absolute_device_already_is() {
        let mut t = tablet().at(Some(16384), Some(32767));
        let mut p = (0, 0);
        let out = feed(
            &mut t,
            &mut p,
            &[(EV_KEY, BTN_LEFT, 1), (EV_SYN, SYN_REPORT, 0)],
        );
        assert_eq!(out, vec![UserInput::Tap { x: 511, y: 767 }]);
    }

    #[test]
    fn motion_without_press_is_no_tap_and_keys_pass() {
        let mut t = tablet();
        let mut p = (0, 0);
        let out = feed(
            &mut t,
            &mut p,
            &[
                (EV_ABS, ABS_X, 100),
                (EV_SYN, SYN_REPORT, 0),
                (EV_KEY, 30, 1),
                (EV_SYN, SYN_REPORT, 0),
                (EV_KEY, 30, 0),
            ],
        );
        assert_eq!(
            out,
            vec![
                UserInput::Key { code: 30, value: 1 },
                UserInput::Key { code: 30, value: 0 }
            ]
        );
    }

    #[test]
    fn relative_mouse_moves_and_clamps() {
        let mut t = PointerTracker::new(None, None);
        let mut p = (10, 10);
        let out = feed(
            &mut t,
            &mut p,
            &[
                (EV_REL, REL_X, 5000),
                (EV_REL, REL_Y, -50),
                (EV_KEY, BTN_LEFT, 1),
                (EV_SYN, SYN_REPORT, 0),
            ],
        );
        assert_eq!(out, vec![UserInput::Tap { x: 1023, y: 0 }]);
    }

    #[test]
    fn touchscreen_uses_mt_positions_and_touch() {
        let r = AxisRange { min: 0, max: 1023 };
        let mut t = PointerTracker::new(Some(r), Some(AxisRange { min: 0, max: 767 }));
        let mut p = (0, 0);
        let out = feed(
            &mut t,
            &mut p,
            &[
                (EV_ABS, ABS_MT_POSITION_X, 300),
                (EV_ABS, ABS_MT_POSITION_Y, 200),
                (EV_KEY, BTN_TOUCH, 1),
                (EV_SYN, SYN_REPORT, 0),
            ],
        );
        assert_eq!(out, vec![UserInput::Tap { x: 300, y: 200 }]);
    }

    #[test]
    fn degenerate_range_does_not_divide_by_zero() {
        assert_eq!(AxisRange { min: 5, max: 5 }.scale(7, 100), 0);
        assert_eq!(AxisRange { min: -10, max: 10 }.scale(0, 21), 10);
        assert_eq!(AxisRange { min: 0, max: 10 }.scale(99, 11), 10);
    }
}
