//! Local input: the keyboards, mice, tablets and touchscreens of the person
//! at the device, read through evdev.
//!
//! [`LocalInput::start`] watches `/dev/input` (rescanned every
//! [`DEFAULT_RESCAN`], so hot-plugged devices show up within a second),
//! reads every keyboard and pointing device except our own virtual ones, and
//! delivers typed [`LocalEvent`]s. [`LocalInput::grab`] grabs (`EVIOCGRAB`)
//! all of them while the returned guard lives — for consent prompts, so
//! taps and keys answer the prompt and do not reach the kiosk application.
//! Dropping the guard, dropping [`LocalInput`], a device task ending on an
//! error, or the process dying all release the grab (the kernel drops it
//! with the file).
//!
//! If the kiosk application grabs its devices itself, nothing else (this
//! reader included) gets their events: local activity and the hotkeys then
//! cannot be seen.

mod decode;

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use evdev::{AbsoluteAxisCode, Device, PropType, RelativeAxisCode};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use decode::{
    AxisRange, DecodeContext, Decoder, DeviceCaps, LocalDeviceId, LocalDeviceInfo, LocalEventKind,
    PointerButton, PointerKind, classify, is_own_device,
};

use crate::InputError;
use crate::inject::{InjectMode, ScreenSize};
use crate::keys::KeySet;

/// Where evdev device nodes are.
pub const DEFAULT_INPUT_DIR: &str = "/dev/input";
/// How often `/dev/input` is rescanned for hot-plugged devices: quick enough
/// that a keyboard plugged in works at once, cheap (one `readdir`).
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(1);
/// The fastest rescan a configuration may ask for.
pub const MIN_RESCAN: Duration = Duration::from_millis(100);
/// Devices read at once; a kiosk has a handful, more is a misconfiguration
/// or an attack through USB.
pub const MAX_LOCAL_DEVICES: usize = 32;
/// Local events queued for the agent. Input comes in bursts of a few
/// hundred events a second at most; when the agent falls this far behind,
/// events are dropped and counted rather than stalling the readers.
pub const LOCAL_EVENT_QUEUE: usize = 1024;
/// Attempts to open a node that failed (udev may still be setting its
/// permissions right after hot-plug).
const MAX_OPEN_ATTEMPTS: u8 = 5;

/// One event from a local device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEvent {
    pub device: LocalDeviceId,
    pub kind: LocalEventKind,
}

/// Where to look and how often.
#[derive(Debug, Clone)]
pub struct LocalInputConfig {
    pub dir: PathBuf,
    pub rescan: Duration,
    /// The screen, for scaling absolute positions and the mouse cursor.
    pub screen: ScreenSize,
}

impl LocalInputConfig {
    pub fn new(screen: ScreenSize) -> Self {
        Self {
            dir: DEFAULT_INPUT_DIR.into(),
            rescan: DEFAULT_RESCAN,
            screen,
        }
    }
}

/// Whether the expert gets a touchscreen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TouchChoice {
    /// A touchscreen when the only local pointing devices are touchscreens.
    #[default]
    Auto,
    Always,
    Never,
}

impl std::str::FromStr for TouchChoice {
    type Err = String;

    /// `auto`, `always` or `never` (configuration files).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TouchChoice::Auto),
            "always" | "yes" | "true" => Ok(TouchChoice::Always),
            "never" | "no" | "false" => Ok(TouchChoice::Never),
            _ => Err(format!(
                "touchscreen injection \"{s}\" is not one of auto, always, never"
            )),
        }
    }
}

/// Picks the injection mode for `choice` given the local devices.
pub fn choose_inject_mode(choice: TouchChoice, local: &[LocalDeviceInfo]) -> InjectMode {
    match choice {
        TouchChoice::Always => InjectMode::Touch,
        TouchChoice::Never => InjectMode::Pointer,
        TouchChoice::Auto => {
            let mut pointers = local.iter().filter_map(|d| d.pointer).peekable();
            if pointers.peek().is_some() && pointers.all(|p| p == PointerKind::Touchscreen) {
                InjectMode::Touch
            } else {
                InjectMode::Pointer
            }
        }
    }
}

/// Reads what [`classify`] needs from an open device.
pub fn read_caps(dev: &Device) -> DeviceCaps {
    let mut keys = KeySet::new();
    if let Some(k) = dev.supported_keys() {
        for code in k.iter() {
            keys.insert(code.code());
        }
    }
    let rel_x_y = dev.supported_relative_axes().is_some_and(|r| {
        r.contains(RelativeAxisCode::REL_X) && r.contains(RelativeAxisCode::REL_Y)
    });
    let mut caps = DeviceCaps {
        name: dev.name().unwrap_or("").to_string(),
        phys: dev.physical_path().map(str::to_string),
        keys,
        rel_x_y,
        direct: dev.properties().contains(PropType::DIRECT),
        ..DeviceCaps::default()
    };
    let mut mt_initial = (0, 0);
    let mut initial = None::<(Option<i32>, Option<i32>)>;
    if let Ok(axes) = dev.get_absinfo() {
        for (code, info) in axes {
            let range = Some(AxisRange {
                min: info.minimum(),
                max: info.maximum(),
            });
            match code {
                AbsoluteAxisCode::ABS_X => {
                    caps.abs_x = range;
                    initial.get_or_insert((None, None)).0 = Some(info.value());
                }
                AbsoluteAxisCode::ABS_Y => {
                    caps.abs_y = range;
                    initial.get_or_insert((None, None)).1 = Some(info.value());
                }
                AbsoluteAxisCode::ABS_MT_POSITION_X => {
                    caps.mt_x = range;
                    mt_initial.0 = info.value();
                }
                AbsoluteAxisCode::ABS_MT_POSITION_Y => {
                    caps.mt_y = range;
                    mt_initial.1 = info.value();
                }
                _ => {}
            }
        }
    }
    caps.initial = match initial {
        Some((x, y)) => (x.unwrap_or(0), y.unwrap_or(0)),
        None => mt_initial,
    };
    caps
}

/// Lists the local devices that matter, right now (blocking; for the probe
/// and for choosing the injection mode before the reader runs).
pub fn enumerate(dir: &Path) -> Result<Vec<LocalDeviceInfo>, InputError> {
    let mut out = Vec::new();
    for (i, path) in event_nodes(dir)?.into_iter().enumerate() {
        let Ok(dev) = Device::open(&path) else {
            continue;
        };
        let id = LocalDeviceId(u32::try_from(i).unwrap_or(u32::MAX));
        if let Some(info) = classify(id, path, &read_caps(&dev)) {
            out.push(info);
        }
    }
    Ok(out)
}

/// The `event*` nodes in `dir`, sorted.
fn event_nodes(dir: &Path) -> Result<Vec<PathBuf>, InputError> {
    let rd = std::fs::read_dir(dir).map_err(|source| InputError::InputDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut nodes: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event"))
        })
        .collect();
    nodes.sort();
    Ok(nodes)
}

#[derive(Debug)]
struct Shared {
    grab: watch::Sender<bool>,
    grab_holders: Mutex<usize>,
    context: Mutex<DecodeContext>,
    devices: Mutex<Vec<LocalDeviceInfo>>,
    dropped: AtomicU64,
    next_id: AtomicU32,
}

impl Shared {
    fn lock_context(&self) -> std::sync::MutexGuard<'_, DecodeContext> {
        self.context.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_devices(&self) -> std::sync::MutexGuard<'_, Vec<LocalDeviceInfo>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running local-input reader. Dropping it stops every reader task and
/// closes the devices (which also ends any grab).
#[derive(Debug)]
pub struct LocalInput {
    events: mpsc::Receiver<LocalEvent>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl LocalInput {
    /// Starts watching `config.dir`. Must be called inside a tokio runtime.
    pub fn start(config: LocalInputConfig) -> Result<Self, InputError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| InputError::NoRuntime)?;
        // Fail early and readably when the directory is not there.
        event_nodes(&config.dir)?;
        let (tx, events) = mpsc::channel(LOCAL_EVENT_QUEUE);
        let shared = Arc::new(Shared {
            grab: watch::Sender::new(false),
            grab_holders: Mutex::new(0),
            context: Mutex::new(DecodeContext {
                screen: config.screen,
                cursor: (config.screen.width / 2, config.screen.height / 2),
            }),
            devices: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            next_id: AtomicU32::new(0),
        });
        let task = handle.spawn(watch_dir(config, shared.clone(), tx));
        Ok(Self {
            events,
            shared,
            task,
        })
    }

    /// The next local event; `None` once the reader stopped.
    pub async fn next(&mut self) -> Option<LocalEvent> {
        self.events.recv().await
    }

    /// A local event if one is queued.
    pub fn try_next(&mut self) -> Option<LocalEvent> {
        self.events.try_recv().ok()
    }

    /// A handle for grabbing and screen changes from elsewhere (e.g. while
    /// this reader is moved into its own task).
    pub fn handle(&self) -> LocalInputHandle {
        LocalInputHandle {
            shared: self.shared.clone(),
        }
    }

    /// Grabs every local device until the guard is dropped (guards nest).
    pub fn grab(&self) -> GrabGuard {
        GrabGuard::new(self.shared.clone())
    }

    /// Whether a grab is wanted now.
    pub fn is_grab_wanted(&self) -> bool {
        *self.shared.grab.borrow()
    }

    /// The screen changed (mode set): positions scale to the new size.
    pub fn set_screen(&self, screen: ScreenSize) {
        set_screen(&self.shared, screen);
    }

    /// The devices being read.
    pub fn devices(&self) -> Vec<LocalDeviceInfo> {
        self.shared.lock_devices().clone()
    }

    /// Events dropped because the agent did not keep up.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LocalInput {
    fn drop(&mut self) {
        // Aborting the watcher drops its JoinSet, which aborts every device
        // task; their devices close and the kernel drops any grab.
        self.task.abort();
    }
}

/// Grabs and screen changes for a [`LocalInput`] owned elsewhere. When the
/// reader is dropped, grabbing through the handle has no effect (the devices
/// are closed).
#[derive(Debug, Clone)]
pub struct LocalInputHandle {
    shared: Arc<Shared>,
}

impl LocalInputHandle {
    /// As [`LocalInput::grab`].
    pub fn grab(&self) -> GrabGuard {
        GrabGuard::new(self.shared.clone())
    }

    /// As [`LocalInput::is_grab_wanted`].
    pub fn is_grab_wanted(&self) -> bool {
        *self.shared.grab.borrow()
    }

    /// As [`LocalInput::set_screen`].
    pub fn set_screen(&self, screen: ScreenSize) {
        set_screen(&self.shared, screen);
    }

    /// As [`LocalInput::devices`].
    pub fn devices(&self) -> Vec<LocalDeviceInfo> {
        self.shared.lock_devices().clone()
    }
}

fn set_screen(shared: &Shared, screen: ScreenSize) {
    let mut ctx = shared.lock_context();
    ctx.screen = screen;
    ctx.cursor = (
        ctx.cursor.0.min(screen.max_x()),
        ctx.cursor.1.min(screen.max_y()),
    );
}

/// Keeps the local devices grabbed while it lives.
#[derive(Debug)]
pub struct GrabGuard {
    shared: Arc<Shared>,
}

impl GrabGuard {
    fn new(shared: Arc<Shared>) -> Self {
        {
            let mut n = shared
                .grab_holders
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *n += 1;
            if *n == 1 {
                shared.grab.send_replace(true);
            }
        }
        Self { shared }
    }
}

impl Drop for GrabGuard {
    fn drop(&mut self) {
        let mut n = self
            .shared
            .grab_holders
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.shared.grab.send_replace(false);
        }
    }
}

enum Known {
    Reading,
    Ignored,
    Failed(u8),
}

async fn watch_dir(config: LocalInputConfig, shared: Arc<Shared>, tx: mpsc::Sender<LocalEvent>) {
    let mut known: HashMap<PathBuf, Known> = HashMap::new();
    let mut readers: JoinSet<PathBuf> = JoinSet::new();
    let mut tick = tokio::time::interval(config.rescan.max(MIN_RESCAN));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dir_error_logged = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let nodes = match event_nodes(&config.dir) {
                    Ok(n) => {
                        dir_error_logged = false;
                        n
                    }
                    Err(e) => {
                        if !dir_error_logged {
                            tracing::warn!("local input: {e}");
                            dir_error_logged = true;
                        }
                        continue;
                    }
                };
                // Forget nodes that vanished (readers end on their own).
                known.retain(|p, k| matches!(k, Known::Reading) || nodes.contains(p));
                for path in nodes {
                    let attempts = match known.get(&path) {
                        None => 0,
                        Some(Known::Failed(n)) if *n < MAX_OPEN_ATTEMPTS => *n,
                        Some(_) => continue,
                    };
                    let reading = known.values().filter(|k| matches!(k, Known::Reading)).count();
                    if reading >= MAX_LOCAL_DEVICES {
                        tracing::warn!(
                            "local input: {} ignored, already reading {MAX_LOCAL_DEVICES} devices",
                            path.display()
                        );
                        known.insert(path, Known::Ignored);
                        continue;
                    }
                    let state = open_reader(&path, &shared, &tx, &mut readers, attempts);
                    known.insert(path, state);
                }
            }
            Some(done) = readers.join_next() => {
                if let Ok(path) = done {
                    known.remove(&path);
                }
            }
        }
    }
}

fn open_reader(
    path: &Path,
    shared: &Arc<Shared>,
    tx: &mpsc::Sender<LocalEvent>,
    readers: &mut JoinSet<PathBuf>,
    attempts: u8,
) -> Known {
    let dev = match Device::open(path) {
        Ok(d) => d,
        Err(e) => {
            if attempts + 1 == MAX_OPEN_ATTEMPTS {
                tracing::warn!("local input: cannot open {}: {e}", path.display());
            }
            return Known::Failed(attempts + 1);
        }
    };
    let caps = read_caps(&dev);
    let id = LocalDeviceId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    let Some(info) = classify(id, path.to_path_buf(), &caps) else {
        return Known::Ignored;
    };
    let stream = match dev.into_event_stream() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("local input: cannot read {}: {e}", path.display());
            return Known::Failed(MAX_OPEN_ATTEMPTS);
        }
    };
    tracing::info!(
        "local input: reading {} ({}, {})",
        path.display(),
        info.name,
        info.kind_label()
    );
    shared.lock_devices().push(info.clone());
    deliver(
        shared,
        tx,
        LocalEvent {
            device: id,
            kind: LocalEventKind::DeviceAdded(info.clone()),
        },
    );
    let decoder = Decoder::new(&info, &caps);
    readers.spawn(read_device(
        info,
        decoder,
        stream,
        shared.clone(),
        tx.clone(),
    ));
    Known::Reading
}

fn deliver(shared: &Shared, tx: &mpsc::Sender<LocalEvent>, ev: LocalEvent) -> bool {
    match tx.try_send(ev) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// What came of one `EVIOCGRAB` call.
#[derive(Debug)]
enum GrabOutcome {
    /// The device is now grabbed (or released) as wanted.
    Done,
    /// The device was unplugged (`ENODEV`): nothing to grab, and the kernel
    /// dropped any grab with it. Its reader ends on the read error that
    /// follows and logs the removal once.
    Gone,
    /// Someone else holds the grab, or the ioctl failed otherwise.
    Failed(std::io::Error),
}

impl GrabOutcome {
    fn of(result: std::io::Result<()>) -> Self {
        match result {
            Ok(()) => Self::Done,
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) => Self::Gone,
            Err(e) => Self::Failed(e),
        }
    }
}

/// Grabs or releases one device; `grabbed` is its current state.
///
/// The ioctl goes through `input_linux` on the borrowed descriptor rather
/// than `evdev::Device::grab`: a grabbed `evdev::Device` ungrabs in its
/// `Drop` and prints "Failed to ungrab device" to stderr when that fails,
/// which it does for every device unplugged during a prompt. Closing the
/// descriptor releases the grab anyway.
fn apply_grab(
    stream: &evdev::EventStream,
    wanted: bool,
    grabbed: &mut bool,
    info: &LocalDeviceInfo,
) -> Option<LocalEventKind> {
    if wanted == *grabbed {
        return None;
    }
    let handle = input_linux::EvdevHandle::new(stream.device().as_fd());
    match GrabOutcome::of(handle.grab(wanted)) {
        GrabOutcome::Done => {
            *grabbed = wanted;
            None
        }
        GrabOutcome::Gone => {
            *grabbed = false;
            None
        }
        GrabOutcome::Failed(e) => {
            let what = if wanted { "grab" } else { "release" };
            tracing::warn!("local input: cannot {what} {}: {e}", info.path.display());
            Some(LocalEventKind::GrabFailed {
                error: format!("cannot {what} {}: {e}", info.path.display()),
            })
        }
    }
}

async fn read_device(
    info: LocalDeviceInfo,
    mut decoder: Decoder,
    mut stream: evdev::EventStream,
    shared: Arc<Shared>,
    tx: mpsc::Sender<LocalEvent>,
) -> PathBuf {
    let id = info.id;
    let mut grab = shared.grab.subscribe();
    let mut out = Vec::new();
    let send_all = |out: &mut Vec<LocalEventKind>| {
        out.drain(..)
            .all(|kind| deliver(&shared, &tx, LocalEvent { device: id, kind }))
    };
    let mut grabbed = false;
    let wanted = *grab.borrow_and_update();
    if let Some(e) = apply_grab(&stream, wanted, &mut grabbed, &info) {
        out.push(e);
    }
    let mut open = send_all(&mut out);
    while open {
        tokio::select! {
            ev = stream.next_event() => match ev {
                Ok(ev) => {
                    let mut ctx = shared.lock_context();
                    decoder.feed(ev.event_type().0, ev.code(), ev.value(), &mut ctx, &mut out);
                    drop(ctx);
                    open = send_all(&mut out);
                }
                Err(e) => {
                    tracing::info!("local input: {} gone: {e}", info.path.display());
                    break;
                }
            },
            changed = grab.changed() => {
                if changed.is_err() {
                    break;
                }
                let wanted = *grab.borrow_and_update();
                if let Some(e) = apply_grab(&stream, wanted, &mut grabbed, &info) {
                    out.push(e);
                }
                open = send_all(&mut out);
            }
        }
    }
    let ctx = *shared.lock_context();
    decoder.release_all(&ctx, &mut out);
    out.push(LocalEventKind::DeviceRemoved);
    send_all(&mut out);
    shared.lock_devices().retain(|d| d.id != id);
    info.path
}

#[cfg(test)]
mod tests;
