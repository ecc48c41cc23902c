//! The client core shared by the GUI and the CLI: connect (TCP + TLS 1.3,
//! device verification), then drive the sans-I/O
//! [`ExpertSession`](shoulder_proto::session::ExpertSession) and apply
//! screen updates to a [`Framebuffer`].
//!
//! The driver owns the connection. The UI talks to it through a bounded
//! channel of [`UserAction`]s and hears back through [`ClientEvent`]s; the
//! framebuffer, cursor and statistics are in a [`SharedView`] the UI reads.
//!
//! - [`connect`](connect()): TCP + TLS 1.3 and device verification,
//! - [`drive`]: one connection's session, framebuffer and statistics,
//! - [`run`]: a whole session, reconnecting and resuming after a drop.

pub mod broker;
mod connect;
mod driver;
pub mod files;
mod reconnect;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use shoulder_proto::Fingerprint;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::session::{ControlState, ExpertState, UserAction};
use shoulder_proto::{CursorShape, ScreenInfo, ScreenList};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::identity::Identity;
use crate::target::Target;
use crate::trust::AcceptNew;

pub use self::connect::{
    CONNECT_TIMEOUT, Connected, Dialer, Dialing, HANDSHAKE_TIMEOUT, Stream, TcpDialer, auth_for,
    connect,
};
pub use self::driver::{DriveEnd, PROBE_INTERVAL, ResumeChance, VIEW_CHECK_INTERVAL, drive};
pub use self::reconnect::{RECONNECT_FIRST_PAUSE, RECONNECT_MAX_PAUSE, run, run_via};

/// Actions queued from the UI before the driver picks them up. The UI sends
/// a few per frame; a full queue drops pointer moves, never key releases.
pub const ACTION_QUEUE: usize = 1024;

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub target: Target,
    /// Invitation password.
    pub password: Option<String>,
    /// Expert identity: required for offers, optional otherwise.
    pub identity: Option<Arc<Identity>>,
    /// First contact without a plant CA.
    pub accept_new: AcceptNew,
    /// Known-hosts file for first contacts; `None` uses the config dir.
    pub known_hosts: Option<PathBuf>,
    /// Self-declared expert name (a hint for the device's prompt).
    pub name: String,
    /// Every update exact: the device never sends lossy pictures, even on a
    /// slow link (`--lossless`; snapshots always are).
    pub lossless: bool,
    /// Reach the device through the plant's MQTT broker (`--broker`): the
    /// offer's host is then the device's name at the broker.
    pub broker: Option<broker::BrokerRoute>,
    /// Wait for a device to call (`shoulder listen`, the device's `ctl
    /// call`) instead of connecting to it.
    pub listen: Option<Listen>,
}

/// A technician's port that devices call (`shoulder listen`): the device
/// dials out, the roles inside TLS stay as they are (the device is the TLS
/// server the expert verifies; the expert authenticates as for an offer).
#[derive(Debug, Clone)]
pub struct Listen {
    pub listener: Arc<std::net::TcpListener>,
    /// Only this device (its certificate's fingerprint); otherwise any
    /// device the identity's plant CA signed, or any device at all with
    /// `accept_new`.
    pub pin: Option<Fingerprint>,
}

impl Listen {
    /// Listens on `addr` (port 0: any free port).
    pub fn bind(addr: std::net::SocketAddr) -> Result<Self, ClientError> {
        let l = std::net::TcpListener::bind(addr).map_err(|e| {
            ClientError::Local(format!(
                "Cannot listen on {addr}: {e} — pick another port (shoulder listen PORT)."
            ))
        })?;
        l.set_nonblocking(true)
            .map_err(|e| ClientError::Local(format!("Cannot listen on {addr}: {e}.")))?;
        Ok(Self {
            listener: Arc::new(l),
            pin: None,
        })
    }

    /// Where devices call.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }
}

/// What the driver reports to the UI.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Trying this address.
    Connecting(String),
    /// TLS is up and the device verified.
    Connected {
        device_name: String,
        fingerprint: Fingerprint,
    },
    State(ExpertState),
    /// The device records its sessions (`[record]` in its agent.toml): the
    /// person at it is told so on the prompt and the strip.
    Recorded,
    /// A new screen size; the framebuffer was reset.
    Screen(ScreenInfo),
    /// The device has several screens: which they are, where they sit, and
    /// which one is shown (choose with `UserAction::SelectScreen`).
    Screens(Box<ScreenList>),
    /// An update was fully applied (`last` part). `t_mono_us` is
    /// CLOCK_MONOTONIC when it was applied, `t_recv_us` when the read that
    /// completed its last part returned (before that part was decoded);
    /// `bytes` counts its frames on the wire (after framing, before TLS).
    UpdateApplied {
        seq: u32,
        bytes: u64,
        rects: u32,
        t_mono_us: u64,
        t_recv_us: u64,
    },
    ScreenUnavailable(String),
    /// The device compared the view with what it sent: `differing` of
    /// `compared` bands of the screen differed and are being sent again
    /// (the view repairs itself). `asked`: the technician asked for this
    /// check (refresh), rather than the periodic one.
    ViewChecked {
        compared: u16,
        differing: u16,
        asked: bool,
    },
    ControlDeclined(String),
    ControlEnded(String),
    Chat(String),
    /// How a `UserAction::TypeText` ended, after `typed` characters
    /// (`outcome.sentence(typed)` says it).
    Typed {
        id: u32,
        typed: u16,
        outcome: shoulder_proto::msg::TypeOutcome,
    },
    /// A file transfer step from the device (see [`files`]).
    File(Box<shoulder_proto::files::FileMsg>),
    /// The connection dropped and the device keeps the session until
    /// `until`: the client is reconnecting (attempt `attempt`, after
    /// `last_error` if an attempt failed). The view keeps the last picture;
    /// input is not sent meanwhile. A `State(Viewing)` follows on success.
    Reconnecting {
        attempt: u32,
        until: Instant,
        last_error: Option<String>,
    },
    /// A new connection is up and resuming the session (no new prompt).
    Resuming,
    /// The session is over. `None` means the expert disconnected.
    Ended(Option<ClientError>),
}

/// A changed region of the framebuffer, for partial texture uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    pub x0: u16,
    pub y0: u16,
    pub x1: u16,
    pub y1: u16,
}

impl Dirty {
    fn add(this: &mut Option<Dirty>, x: u16, y: u16, w: u16, h: u16) {
        if w == 0 || h == 0 {
            return;
        }
        let (x1, y1) = (x.saturating_add(w), y.saturating_add(h));
        *this = Some(match *this {
            None => Dirty {
                x0: x,
                y0: y,
                x1,
                y1,
            },
            Some(d) => Dirty {
                x0: d.x0.min(x),
                y0: d.y0.min(y),
                x1: d.x1.max(x1),
                y1: d.y1.max(y1),
            },
        });
    }
}

/// Live figures for the status bar.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub rtt: Option<Duration>,
    pub fps: f32,
    pub bytes_per_sec: f64,
    pub updates_total: u64,
    pub bytes_total: u64,
    /// View self-checks the device answered, and those that found the view
    /// wrong (and repaired it).
    pub view_checks: u64,
    pub view_repairs: u64,
    /// Lossy rectangles received (approximate pictures, made exact later).
    pub lossy_rects: u64,
}

/// The device screen as the UI shows it.
#[derive(Debug, Default)]
pub struct View {
    pub fb: Option<Framebuffer>,
    /// Changed since the UI last took it; a new screen dirties all of it.
    pub dirty: Option<Dirty>,
    pub cursor: Option<CursorShape>,
    /// Set when `cursor` changed, until the UI takes it.
    pub cursor_changed: bool,
    pub cursor_pos: Option<(u16, u16, bool)>,
    pub stats: Stats,
    /// Lossy pictures may come and the device can be asked for exact ones
    /// mid-session (`UserAction::ExactOnly`): the UI offers it while
    /// [`Framebuffer::approximate_pixels`] is not zero.
    pub exact_offer: bool,
}

/// The view shared between the driver and the UI.
#[derive(Debug, Default, Clone)]
pub struct SharedView(Arc<Mutex<View>>);

impl SharedView {
    pub fn lock(&self) -> MutexGuard<'_, View> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// CLOCK_MONOTONIC in microseconds (what `watch --stats-json` records), so
/// other programs on the same machine can compare times with ours.
#[cfg(unix)]
pub fn monotonic_us() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000 + (t.tv_nsec as u64) / 1000
}

/// Without CLOCK_MONOTONIC: microseconds since this process first asked.
#[cfg(not(unix))]
pub fn monotonic_us() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// xxh3-64 (seed 0) of the framebuffer as B,G,R,0 rows, 16 lowercase hex
/// digits: the hash `watch --stats-json` writes.
pub fn fb_hash(fb: &Framebuffer) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    // Normalize X to 0 in slices so no full copy of the frame is needed.
    let mut chunk = [0u8; 16 * 1024];
    for piece in fb.pixels().chunks(chunk.len()) {
        let out = &mut chunk[..piece.len()];
        out.copy_from_slice(piece);
        for px in out.chunks_exact_mut(4) {
            px[3] = 0;
        }
        h.update(out);
    }
    format!("{:016x}", h.digest())
}

/// Writes the framebuffer as an 8-bit RGB PNG. The file appears under
/// `path` only when complete (written next to it, then renamed).
pub fn save_png(fb: &Framebuffer, path: &std::path::Path) -> Result<(), ClientError> {
    let err = |e: &dyn std::fmt::Display| {
        ClientError::Local(format!("Cannot write {}: {e}.", path.display()))
    };
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let write = || -> Result<(), ClientError> {
        let file = std::fs::File::create(&part).map_err(|e| err(&e))?;
        let mut enc = png::Encoder::new(
            std::io::BufWriter::new(file),
            u32::from(fb.width()),
            u32::from(fb.height()),
        );
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| err(&e))?;
        let rgb: Vec<u8> = fb
            .pixels()
            .chunks_exact(4)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect();
        w.write_image_data(&rgb).map_err(|e| err(&e))?;
        w.finish().map_err(|e| err(&e))?;
        std::fs::rename(&part, path).map_err(|e| err(&e))
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    r
}

/// The UI's handle on a running session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub actions: mpsc::Sender<UserAction>,
    pub view: SharedView,
    /// Where a blocked send waits for room (the UI thread has no runtime).
    pub runtime: tokio::runtime::Handle,
}

impl SessionHandle {
    /// Queues an action without blocking the UI. When the queue is full,
    /// plain pointer moves are dropped (the next one supersedes them);
    /// everything else (keys, buttons, releases) waits for room on the
    /// runtime, in order behind what is queued.
    pub fn send(&self, a: UserAction) {
        match self.actions.try_send(a) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(a)) => {
                let plain_move = matches!(
                    a,
                    UserAction::Pointer(p) if p.buttons.0 == 0 && p.wheel == 0 && p.hwheel == 0
                );
                if !plain_move {
                    let tx = self.actions.clone();
                    self.runtime.spawn(async move {
                        let _ = tx.send(a).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Whether the state allows sending input.
pub fn controlling(state: ExpertState) -> bool {
    matches!(
        state,
        ExpertState::Viewing {
            control: ControlState::Granted { .. }
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::{Encoding, Payload, Rect, UpdatePart, WireFormat};

    #[test]
    fn fb_hash_zeroes_the_x_byte() {
        let info = ScreenInfo {
            width: 3,
            height: 2,
            format: WireFormat::Xrgb8888,
            generation: 1,
        };
        let mut fb = Framebuffer::new(&info).unwrap();
        let mut rects = heapless::Vec::new();
        let raw: Vec<u8> = (0..24u8).collect();
        rects
            .push(Rect {
                x: 0,
                y: 0,
                w: 3,
                h: 2,
                encoding: Encoding::Raw(Payload(raw)),
            })
            .unwrap();
        fb.apply(&UpdatePart {
            seq: 1,
            generation: 1,
            last: true,
            rects,
        })
        .unwrap();
        let expected = xxhash_rust::xxh3::xxh3_64(&fb.normalized());
        assert_eq!(fb_hash(&fb), format!("{expected:016x}"));
        assert_eq!(fb_hash(&fb).len(), 16);
    }

    #[test]
    fn dirty_rects_merge() {
        let mut d = None;
        Dirty::add(&mut d, 10, 10, 5, 5);
        Dirty::add(&mut d, 0, 20, 2, 2);
        Dirty::add(&mut d, 0, 0, 0, 9);
        assert_eq!(
            d,
            Some(Dirty {
                x0: 0,
                y0: 10,
                x1: 15,
                y1: 22
            })
        );
    }
}
