//! Virtual input devices through uinput (`/dev/uinput`, `linux/uinput.h`).
//!
//! Each device is set up with `UI_SET_EVBIT`/`UI_SET_KEYBIT`/`UI_SET_RELBIT`/
//! `UI_SET_ABSBIT`/`UI_SET_PROPBIT`/`UI_SET_PHYS`, then `UI_DEV_SETUP` and one
//! `UI_ABS_SETUP` per axis (input-linux falls back to the legacy
//! `uinput_user_dev` write on kernels before 4.5), then `UI_DEV_CREATE`; it
//! goes away with `UI_DEV_DESTROY` and closing the file. The ioctls go
//! through input-linux's safe wrappers, except `UI_SET_PHYS`: input-linux
//! encodes its argument size as one `char` where the kernel's request number
//! says `char *`, so the kernel rejects it with EINVAL; `ioctl::set_phys`
//! issues it with the kernel's number.
//!
//! Besides the sink's own state, each device keeps a lock-free mirror of what
//! the kernel was told is down, so [`emergency_release`] can release it from
//! a panic hook without taking any lock the panicking thread might hold.
//! Closing the file (also when the process dies) destroys the device, and the
//! kernel sends releases for keys still down when a device goes away.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use input_linux::{
    AbsoluteAxis, AbsoluteInfo, AbsoluteInfoSetup, EventKind, EventTime, InputEvent, InputId,
    InputProperty, Key, RelativeAxis, UInputHandle,
};

use crate::InputError;
use crate::codes::*;
use crate::inject::{
    Batch, InjectMode, MAX_TOUCH_SLOTS, MAX_TRACKING_ID, RawEvent, ScreenSize, VIRTUAL_PHYS,
    VirtualDevice,
};
use crate::keys::keyboard_keys;
use crate::sink::{InputBackend, Sink};

/// Where the uinput device node usually is.
pub const DEFAULT_UINPUT_PATH: &str = "/dev/uinput";

/// USB-style vendor id on our virtual devices ("SH"), so udev rules and
/// tests can pick them out.
pub const VIRTUAL_VENDOR: u16 = 0x5348;

const KEY_WORDS: usize = KEY_CNT as usize / 64;

/// How long devices stay after their last events (the releases of what the
/// expert held, or the expert's own last key-up) before they are destroyed:
/// an app reads its devices now and then (every frame at 30 frames a second,
/// later on a loaded device), and events still queued when a device goes
/// are lost to it, so a key would stay down for the app.
const RELEASE_READ_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// What the kernel was told is down on one device, readable without locks.
#[derive(Debug)]
struct HeldMirror {
    keys: [AtomicU64; KEY_WORDS],
    slots: AtomicU32,
    current_slot: AtomicU8,
}

impl HeldMirror {
    fn new() -> Self {
        Self {
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            slots: AtomicU32::new(0),
            current_slot: AtomicU8::new(0),
        }
    }

    fn apply(&self, events: &[RawEvent]) {
        for e in events {
            match (e.kind, e.code) {
                (EV_KEY, code) if code < KEY_CNT => {
                    let w = &self.keys[(code / 64) as usize];
                    let bit = 1u64 << (code % 64);
                    if e.value != 0 {
                        w.fetch_or(bit, Ordering::Relaxed);
                    } else {
                        w.fetch_and(!bit, Ordering::Relaxed);
                    }
                }
                (EV_ABS, ABS_MT_SLOT) => {
                    let s = u8::try_from(e.value).unwrap_or(0);
                    self.current_slot.store(s, Ordering::Relaxed);
                }
                (EV_ABS, ABS_MT_TRACKING_ID) => {
                    let s = self.current_slot.load(Ordering::Relaxed);
                    if s < MAX_TOUCH_SLOTS {
                        let bit = 1u32 << s;
                        if e.value >= 0 {
                            self.slots.fetch_or(bit, Ordering::Relaxed);
                        } else {
                            self.slots.fetch_and(!bit, Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The events that release everything recorded here.
    fn releases(&self) -> Vec<RawEvent> {
        let mut ev = Vec::new();
        let slots = self.slots.load(Ordering::Relaxed);
        for s in 0..MAX_TOUCH_SLOTS {
            if slots & (1 << s) != 0 {
                ev.push(RawEvent::new(EV_ABS, ABS_MT_SLOT, s.into()));
                ev.push(RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, -1));
            }
        }
        for (w, word) in self.keys.iter().enumerate() {
            let bits = word.load(Ordering::Relaxed);
            for b in 0..64u16 {
                if bits & (1 << b) != 0 {
                    ev.push(RawEvent::new(EV_KEY, w as u16 * 64 + b, 0));
                }
            }
        }
        if !ev.is_empty() {
            ev.push(RawEvent::SYN);
        }
        ev
    }
}

struct VDev {
    kind: VirtualDevice,
    handle: UInputHandle<File>,
    held: HeldMirror,
}

impl std::fmt::Debug for VDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VDev")
            .field("kind", &self.kind)
            .field("held", &self.held)
            .finish()
    }
}

impl VDev {
    fn write(&self, events: &[RawEvent]) -> Result<(), InputError> {
        let raw: Vec<_> = events
            .iter()
            .map(|e| to_kernel(*e).map(InputEvent::into_raw))
            .collect::<Result<_, _>>()
            .map_err(|source| InputError::Write {
                device: self.kind.name(),
                source,
            })?;
        let n = self
            .handle
            .write(&raw)
            .map_err(|source| InputError::Write {
                device: self.kind.name(),
                source,
            })?;
        if n != raw.len() {
            return Err(InputError::ShortWrite {
                device: self.kind.name(),
                written: n,
                expected: raw.len(),
            });
        }
        self.held.apply(events);
        Ok(())
    }

    fn release(&self) -> Result<(), InputError> {
        let releases = self.held.releases();
        if releases.is_empty() {
            Ok(())
        } else {
            self.write(&releases)
        }
    }

    fn destroy(&self) -> Result<(), InputError> {
        self.handle
            .dev_destroy()
            .map_err(|source| InputError::Destroy {
                device: self.kind.name(),
                source,
            })
    }
}

fn to_kernel(e: RawEvent) -> std::io::Result<InputEvent> {
    let kind = EventKind::from_type(e.kind)
        .map_err(|_| std::io::Error::other(format!("event type {} is invalid", e.kind)))?;
    Ok(InputEvent {
        time: EventTime::new(0, 0),
        kind,
        code: e.code,
        value: e.value,
    })
}

/// The devices of one grant.
#[derive(Debug)]
struct Devices {
    list: Vec<VDev>,
    destroyed: AtomicBool,
}

impl Devices {
    fn get(&self, kind: VirtualDevice) -> Option<&VDev> {
        self.list.iter().find(|d| d.kind == kind)
    }

    /// Releases everything on every device, then destroys them all; once,
    /// later calls do nothing. Releasing first means no application sees a
    /// device vanish while another still holds a key.
    fn release_and_destroy(&self) -> Result<(), InputError> {
        if self.destroyed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let mut first = Ok(());
        let mut keep = |r: Result<(), InputError>| {
            if let Err(e) = r
                && first.is_ok()
            {
                first = Err(e);
            }
        };
        for d in &self.list {
            keep(d.release());
        }
        for d in &self.list {
            keep(d.destroy());
        }
        first
    }
}

/// Devices alive in this process, for [`emergency_release`].
static LIVE: Mutex<Vec<Weak<Devices>>> = Mutex::new(Vec::new());

fn register(d: &Arc<Devices>) {
    let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(d));
}

/// Releases everything held on every virtual device of this process and
/// destroys them. For the agent's panic hook (and fatal-signal paths): it
/// takes no lock a panicking sink could hold, and never panics.
///
/// ```no_run
/// let default = std::panic::take_hook();
/// std::panic::set_hook(Box::new(move |info| {
///     shoulder_input::emergency_release();
///     default(info);
/// }));
/// ```
pub fn emergency_release() {
    let live = match LIVE.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        // Held only for a push/retain; closing the fds at exit still
        // destroys the devices, and the kernel then releases their keys.
        Err(std::sync::TryLockError::WouldBlock) => return,
    };
    for d in live.iter().filter_map(Weak::upgrade) {
        let _ = d.release_and_destroy();
    }
}

/// Virtual devices through `/dev/uinput`.
#[derive(Debug)]
pub struct UinputBackend {
    path: PathBuf,
    devices: Option<Arc<Devices>>,
}

impl UinputBackend {
    /// A backend using the uinput node at `path` (usually
    /// [`DEFAULT_UINPUT_PATH`]). Nothing is opened until devices are created.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            devices: None,
        }
    }

    /// The `/dev/input/event*` nodes of the current devices (for logs and
    /// the probe).
    pub fn device_nodes(&self) -> Vec<(VirtualDevice, PathBuf)> {
        self.devices
            .iter()
            .flat_map(|d| d.list.iter())
            .filter_map(|d| Some((d.kind, d.handle.evdev_path().ok()?)))
            .collect()
    }
}

impl InputBackend for UinputBackend {
    fn create(&mut self, mode: InjectMode, screen: ScreenSize) -> Result<(), InputError> {
        if let Some(old) = self.devices.take() {
            retire(old)?;
        }
        let list = mode
            .devices()
            .iter()
            .map(|kind| create_device(&self.path, *kind, screen))
            .collect::<Result<Vec<_>, _>>()?;
        let devices = Arc::new(Devices {
            list,
            destroyed: AtomicBool::new(false),
        });
        register(&devices);
        self.devices = Some(devices);
        Ok(())
    }

    fn write(&mut self, batch: &Batch) -> Result<(), InputError> {
        let dev = self
            .devices
            .as_ref()
            .filter(|d| !d.destroyed.load(Ordering::Acquire))
            .and_then(|d| d.get(batch.device))
            .ok_or(InputError::Closed)?;
        dev.write(&batch.events)
    }

    fn destroy(&mut self) -> Result<(), InputError> {
        match self.devices.take() {
            Some(d) => retire(d),
            None => Ok(()),
        }
    }
}

/// Releases what `d` holds now and destroys the devices once readers had
/// time to read their last events ([`RELEASE_READ_GRACE`]), on a short-lived
/// thread; at once if no thread can be started.
fn retire(d: Arc<Devices>) -> Result<(), InputError> {
    let mut released = Ok(());
    for v in &d.list {
        if let Err(e) = v.release()
            && released.is_ok()
        {
            released = Err(e);
        }
    }
    let linger = d.clone();
    let spawned = std::thread::Builder::new()
        .name("uinput-linger".into())
        .spawn(move || {
            std::thread::sleep(RELEASE_READ_GRACE);
            if let Err(e) = linger.release_and_destroy() {
                tracing::warn!("destroying the virtual input devices: {e}");
            }
        });
    if spawned.is_err() {
        return released.and(d.release_and_destroy());
    }
    released
}

impl Drop for UinputBackend {
    fn drop(&mut self) {
        if let Err(e) = self.destroy() {
            tracing::warn!("destroying the virtual input devices: {e}");
        }
    }
}

/// The sink that injects through uinput.
pub type UinputSink = Sink<UinputBackend>;

impl UinputSink {
    /// Creates the virtual devices for the grant `consent` stands for, with
    /// ranges for a `width`×`height` screen.
    pub fn open(
        consent: &shoulder_proto::consent::ControlConsent,
        uinput_path: &Path,
        mode: InjectMode,
        width: u16,
        height: u16,
    ) -> Result<Self, InputError> {
        Sink::create(
            consent,
            mode,
            width,
            height,
            UinputBackend::new(uinput_path),
        )
    }
}

fn axis(axis: AbsoluteAxis, max: i32) -> AbsoluteInfoSetup {
    AbsoluteInfoSetup {
        axis,
        info: AbsoluteInfo {
            maximum: max,
            ..AbsoluteInfo::default()
        },
    }
}

fn create_device(path: &Path, kind: VirtualDevice, screen: ScreenSize) -> Result<VDev, InputError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| InputError::OpenUinput {
            path: path.to_path_buf(),
            source,
        })?;
    let h = UInputHandle::new(file);
    let setup = || -> std::io::Result<()> {
        let max_x = i32::from(screen.max_x());
        let max_y = i32::from(screen.max_y());
        let abs = match kind {
            VirtualDevice::Pointer => {
                h.set_evbit(EventKind::Key)?;
                for b in [Key::ButtonLeft, Key::ButtonRight, Key::ButtonMiddle] {
                    h.set_keybit(b)?;
                }
                h.set_evbit(EventKind::Relative)?;
                h.set_relbit(RelativeAxis::Wheel)?;
                h.set_relbit(RelativeAxis::HorizontalWheel)?;
                h.set_evbit(EventKind::Absolute)?;
                h.set_absbit(AbsoluteAxis::X)?;
                h.set_absbit(AbsoluteAxis::Y)?;
                vec![axis(AbsoluteAxis::X, max_x), axis(AbsoluteAxis::Y, max_y)]
            }
            VirtualDevice::Keyboard => {
                h.set_evbit(EventKind::Key)?;
                for code in keyboard_keys() {
                    let key = Key::from_code(code).map_err(std::io::Error::other)?;
                    h.set_keybit(key)?;
                }
                // Key repeat is made here by the kernel, never sent.
                h.set_evbit(EventKind::Autorepeat)?;
                Vec::new()
            }
            VirtualDevice::Touch => {
                h.set_evbit(EventKind::Key)?;
                h.set_keybit(Key::ButtonTouch)?;
                h.set_evbit(EventKind::Absolute)?;
                let axes = [
                    axis(AbsoluteAxis::X, max_x),
                    axis(AbsoluteAxis::Y, max_y),
                    axis(AbsoluteAxis::MultitouchSlot, i32::from(MAX_TOUCH_SLOTS) - 1),
                    axis(
                        AbsoluteAxis::MultitouchTrackingId,
                        i32::from(MAX_TRACKING_ID),
                    ),
                    axis(AbsoluteAxis::MultitouchPositionX, max_x),
                    axis(AbsoluteAxis::MultitouchPositionY, max_y),
                ];
                for a in &axes {
                    h.set_absbit(a.axis)?;
                }
                h.set_propbit(InputProperty::Direct)?;
                axes.to_vec()
            }
        };
        let phys = std::ffi::CString::new(VIRTUAL_PHYS).map_err(std::io::Error::other)?;
        ioctl::set_phys(h.as_inner(), &phys)?;
        let id = InputId {
            bustype: BUS_VIRTUAL,
            vendor: VIRTUAL_VENDOR,
            product: match kind {
                VirtualDevice::Pointer => 1,
                VirtualDevice::Keyboard => 2,
                VirtualDevice::Touch => 3,
            },
            version: 1,
        };
        h.create(&id, kind.name().as_bytes(), 0, &abs)
    };
    setup().map_err(|source| InputError::CreateDevice {
        device: kind.name(),
        source,
    })?;
    Ok(VDev {
        kind,
        handle: h,
        held: HeldMirror::new(),
    })
}

mod ioctl {
    #![allow(unsafe_code)]

    use std::ffi::{CStr, c_char};
    use std::fs::File;
    use std::os::fd::AsRawFd;

    // linux/uinput.h: #define UI_SET_PHYS _IOW(UINPUT_IOCTL_BASE, 108, char*)
    nix::ioctl_write_ptr_bad!(
        ui_set_phys,
        nix::request_code_write!(b'U', 108, std::mem::size_of::<*const c_char>()),
        c_char
    );

    /// `UI_SET_PHYS`: the physical path shown by `EVIOCGPHYS`.
    pub(super) fn set_phys(file: &File, phys: &CStr) -> std::io::Result<()> {
        // SAFETY: `file` is an open uinput file descriptor for the duration
        // of the call, and `phys` is a valid NUL-terminated string that
        // outlives it; the kernel copies at most 1024 bytes up to the NUL
        // (strndup_user) and keeps no pointer to our memory.
        unsafe { ui_set_phys(file.as_raw_fd(), phys.as_ptr()) }
            .map(drop)
            .map_err(std::io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_phys_uses_the_kernels_request_number() {
        // _IOW('U', 108, char *) on 64-bit Linux (asm-generic ioctl layout).
        #[cfg(all(
            target_pointer_width = "64",
            any(target_arch = "x86_64", target_arch = "aarch64")
        ))]
        assert_eq!(
            nix::request_code_write!(b'U', 108, std::mem::size_of::<*const std::ffi::c_char>()),
            0x4008_556c
        );
    }

    #[test]
    fn mirror_tracks_and_releases_what_the_kernel_was_told() {
        let m = HeldMirror::new();
        m.apply(&[
            RawEvent::new(EV_KEY, 30, 1),
            RawEvent::new(EV_KEY, 0x2fe, 1),
            RawEvent::new(EV_ABS, ABS_MT_SLOT, 3),
            RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, 7),
            RawEvent::new(EV_KEY, BTN_TOUCH, 1),
            RawEvent::SYN,
        ]);
        m.apply(&[RawEvent::new(EV_KEY, 0x2fe, 0), RawEvent::SYN]);
        assert_eq!(
            m.releases(),
            vec![
                RawEvent::new(EV_ABS, ABS_MT_SLOT, 3),
                RawEvent::new(EV_ABS, ABS_MT_TRACKING_ID, -1),
                RawEvent::new(EV_KEY, 30, 0),
                RawEvent::new(EV_KEY, BTN_TOUCH, 0),
                RawEvent::SYN,
            ]
        );
        assert!(HeldMirror::new().releases().is_empty());
    }

    #[test]
    fn missing_uinput_node_is_a_readable_error() {
        let mut b = UinputBackend::new("/nonexistent/uinput");
        let e = b
            .create(InjectMode::Pointer, ScreenSize::new(10, 10).unwrap())
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/uinput"), "{msg}");
        assert!(msg.contains("modprobe uinput"), "{msg}");
    }
}
