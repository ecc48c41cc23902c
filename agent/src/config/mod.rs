//! The agent's configuration (`/etc/shoulder/agent.toml`).
//!
//! Remote assistance is a device policy and off until enabled, as in Windows
//! Remote Assistance. Every key, its default and the reason for the default
//! are documented in `agent/agent.example.toml`; a test parses that file.
//!
//! Unknown keys and bad values are errors that name the file, line, column and
//! key, and say how to fix them.

mod check;
mod error;
mod experts;
mod screens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use shoulder_proto::rotation::Rotation;

use crate::util::parse_duration;

pub use error::ConfigError;
use error::{dotted, find_key, fix_for, line_col};
pub use experts::{ALLOWED_EXPERT_FORMS, AllowedExpert};
pub use screens::ScreenPosition;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/shoulder/agent.toml";
pub use shoulder_proto::DEFAULT_PORT;
/// Largest config file we read: a real one is a few KiB.
const MAX_CONFIG_LEN: u64 = 256 * 1024;

/// argon2 memory above this is refused: the small devices we run on have
/// 256–512 MiB of RAM, and a hash is computed per password attempt.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 256 * 1024;
/// Below this argon2id gives too little protection to be worth calling a hash
/// (the argon2 RFC's floor is 8 KiB per lane; we ask for more).
pub const MIN_ARGON2_MEMORY_KIB: u32 = 1024;
/// Upper bound on argon2 passes: each attempt must finish well inside the
/// authentication timeout.
pub const MAX_ARGON2_ITERATIONS: u32 = 16;
/// Upper bound on pre-authentication connections a config may ask for. Each
/// costs a TLS handshake buffer (~40 KiB).
pub const MAX_PRE_AUTH_CONNECTIONS: usize = 1024;

/// Upper bound on `max_concurrent_hashes`: each hash holds
/// `argon2.memory_kib` for its duration, and the device has one to four
/// small cores.
pub const MAX_CONCURRENT_HASHES: usize = 8;
/// Total argon2 memory (`max_concurrent_hashes × argon2.memory_kib`) a
/// config may ask for: a quarter of the smallest device's 256 MiB.
pub const MAX_HASH_MEMORY_KIB: u64 = 64 * 1024;

/// Longest resume grace a config may ask for: a session on hold keeps the
/// one session slot, so other experts are turned away meanwhile.
pub const MAX_RESUME_GRACE: Duration = Duration::from_secs(600);
/// Expert input rate bounds: below 20/s a fast typist or a pointer drag is
/// cut; above 10000/s the limit no longer protects anything.
pub const MIN_INPUT_RATE: u32 = 20;
pub const MAX_INPUT_RATE: u32 = 10_000;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Remote assistance as a whole. Off on a fresh install.
    pub enabled: bool,
    /// Expert-initiated sessions authenticated by a plant-CA certificate.
    pub allow_offers: bool,
    /// Device-initiated sessions (`shoulder-agent invite`).
    pub allow_invitations: bool,
    /// False makes the device view-only.
    pub allow_control: bool,
    /// Caps `invite --expires`.
    #[serde(deserialize_with = "de_duration")]
    pub max_invitation_lifetime: Duration,
    /// Name shown to experts; empty means the host name.
    pub device_name: String,
    pub listen: Vec<SocketAddr>,
    /// Addresses written into invitations; empty means detected.
    pub advertise: Vec<String>,
    pub state_dir: PathBuf,
    pub audit_log: PathBuf,
    pub audit_max_bytes: u64,
    pub audit_keep: u32,
    /// Fail closed: while the audit log cannot be written, no session runs
    /// (the live one ends, new ones are refused). False keeps sessions going
    /// and only logs the failure.
    pub audit_required: bool,
    pub control_socket: PathBuf,
    /// Group allowed to use the control socket besides root; empty: root only.
    pub control_group: String,
    /// Group allowed to create, list and revoke invitations on the control
    /// socket besides root; empty: root only.
    pub invite_group: String,
    #[serde(deserialize_with = "de_capture")]
    pub capture: CaptureSpec,
    /// How far the framebuffer's picture turns clockwise to read upright
    /// for the person (a panel mounted sideways), or what the display says.
    #[serde(deserialize_with = "de_rotation")]
    pub rotation: RotationSetting,
    /// Most screen updates per second sent to the expert.
    pub max_fps: u32,
    /// Photographs and video may go as approximate (JPEG) pictures when the
    /// link is too slow for exact ones, made exact once still. False: every
    /// update exact, whatever the link.
    pub lossy: bool,
    #[serde(deserialize_with = "de_duration")]
    pub consent_timeout: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub pre_auth_timeout: Duration,
    /// How long a session whose connection dropped waits for the same
    /// expert to resume it; zero turns resumption off.
    #[serde(deserialize_with = "de_duration")]
    pub resume_grace: Duration,
    /// A connected expert silent this long is gone.
    #[serde(deserialize_with = "de_duration")]
    pub peer_timeout: Duration,
    /// After a declined control request, the expert waits this long before
    /// asking again (doubling with each no in a row, up to 2 minutes).
    #[serde(deserialize_with = "de_duration")]
    pub control_backoff: Duration,
    /// A ping goes out after this long without sending anything.
    #[serde(deserialize_with = "de_duration")]
    pub keepalive_interval: Duration,
    /// Expert input events per second before presses and moves are dropped.
    pub max_input_rate: u32,
    pub max_pre_auth_connections: usize,
    /// Failed authentications per source address per minute.
    pub auth_failures_per_minute: u32,
    /// Failed invitation passwords per minute on the whole device, all
    /// sources together.
    pub password_failures_per_minute: u32,
    /// argon2 password hashes running at once on the whole device.
    pub max_concurrent_hashes: usize,
    /// PEM files with the CA certificates experts' certificates must chain to.
    pub plant_ca: Vec<PathBuf>,
    /// Narrows offers to these experts: `ca:CA-FINGERPRINT/cn:NAME` or
    /// `sha256:FINGERPRINT` (see [`AllowedExpert`]). Empty: any certificate
    /// from the plant CA.
    pub allowed_experts: Vec<String>,
    pub argon2: Argon2Config,
    pub banner: BannerConfig,
    pub input: InputConfig,
    /// Where several screens sit (default: side by side in connector order).
    pub screens: Vec<ScreenPosition>,
    /// Sessions through the plant's MQTT broker (feature `broker`); none
    /// by default.
    pub broker: Option<BrokerConfig>,
    /// A technician's `shoulder listen` (`host[:port]`, 7576 by default)
    /// that `ctl call` without an address, and `ctl help` without a
    /// broker, call. Empty: none.
    pub help_desk: String,
    /// Files the expert may copy from, or drop on, the device (feature
    /// `files`); none by default.
    #[cfg(feature = "files")]
    pub files: FilesConfig,
    /// Whether and how sessions are recorded (feature `record`); off by
    /// default.
    #[cfg(feature = "record")]
    pub record: RecordConfig,
}

/// `[record]`: the session record the device writes and signs.
#[cfg(feature = "record")]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// What is recorded.
    pub mode: RecordMode,
    /// Where records are kept (absolute). Empty: `records` in the state
    /// directory.
    pub dir: PathBuf,
    /// The most one session's record may take, in MiB: past it the screen
    /// is no longer recorded (the rest of the session is, as metadata).
    pub max_session_mib: u64,
    /// The most all records may take together, in MiB: the oldest are
    /// removed to make room for a new session's cap.
    pub max_total_mib: u64,
}

/// `[record] mode`.
#[cfg(feature = "record")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordMode {
    /// No record.
    #[default]
    Off,
    /// Who did what: consent, control, input, chat, transfers.
    Metadata,
    /// The metadata and the screen as the expert saw it.
    Screen,
}

#[cfg(feature = "record")]
impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            mode: RecordMode::Off,
            dir: PathBuf::new(),
            max_session_mib: 64,
            max_total_mib: 512,
        }
    }
}

impl Config {
    /// Whether sessions are recorded (never without the feature).
    pub fn records(&self) -> bool {
        #[cfg(feature = "record")]
        return self.record.mode != RecordMode::Off;
        #[cfg(not(feature = "record"))]
        false
    }

    /// Where session records go.
    #[cfg(feature = "record")]
    pub fn record_dir(&self) -> PathBuf {
        if self.record.dir.as_os_str().is_empty() {
            self.state_dir.join("records")
        } else {
            self.record.dir.clone()
        }
    }
}

/// `[files]`: where files may come from and go to. Each transfer is still
/// asked of the person at the device.
#[cfg(feature = "files")]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// Directories the expert may copy files from (absolute; links and
    /// `..` may not lead out of them). Empty: none.
    pub readable: Vec<PathBuf>,
    /// The directory the expert may drop files into (absolute). Empty:
    /// none.
    pub drop: PathBuf,
    /// Largest file either way, in MiB.
    pub max_size_mib: u64,
    /// Free space a dropped file must leave on its filesystem, in MiB.
    pub keep_free_mib: u64,
}

#[cfg(feature = "files")]
impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            readable: Vec::new(),
            drop: PathBuf::new(),
            max_size_mib: 256,
            keep_free_mib: 64,
        }
    }
}

#[cfg(feature = "files")]
impl FilesConfig {
    /// Whether any directory is named.
    pub fn any(&self) -> bool {
        !self.readable.is_empty() || !self.drop.as_os_str().is_empty()
    }
}

/// `[broker]`: the plant's MQTT broker, for experts who cannot reach the
/// device directly (see docs/fleet.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `host[:port]` (MQTT over TLS, port 8883 by default).
    pub address: String,
    /// PEM files with the CA(s) that sign the broker's certificate; empty
    /// means `plant_ca`.
    #[serde(default)]
    pub ca: Vec<PathBuf>,
    /// Topic prefix shared with the experts and the broker's ACL.
    #[serde(default = "default_broker_prefix")]
    pub prefix: String,
    /// Where the device is, for the technicians' device list.
    #[serde(default)]
    pub site: String,
    /// MQTT keep-alive: how soon the broker notices the device is gone and
    /// publishes it offline (1.5 × this).
    #[serde(default = "default_broker_keepalive", deserialize_with = "de_duration")]
    pub keepalive: Duration,
    /// How long a help request (`ctl help`) stays open unless answered or
    /// withdrawn.
    #[serde(default = "default_help_expires", deserialize_with = "de_duration")]
    pub help_expires: Duration,
}

fn default_help_expires() -> Duration {
    Duration::from_secs(3600)
}

fn default_broker_prefix() -> String {
    "shoulder".into()
}

fn default_broker_keepalive() -> Duration {
    Duration::from_secs(30)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_offers: true,
            allow_invitations: true,
            allow_control: true,
            max_invitation_lifetime: Duration::from_secs(24 * 3600),
            device_name: String::new(),
            listen: vec![
                SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
                SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
            ],
            advertise: Vec::new(),
            state_dir: "/var/lib/shoulder".into(),
            audit_log: "/var/lib/shoulder/audit.jsonl".into(),
            audit_max_bytes: 8 * 1024 * 1024,
            audit_keep: 4,
            audit_required: true,
            control_socket: "/run/shoulder/control.sock".into(),
            control_group: String::new(),
            invite_group: String::new(),
            capture: CaptureSpec::Drm {
                device: None,
                connector: None,
            },
            rotation: RotationSetting::Auto,
            max_fps: 30,
            lossy: true,
            consent_timeout: shoulder_proto::session::DEFAULT_CONSENT_TIMEOUT,
            pre_auth_timeout: shoulder_proto::session::DEFAULT_PRE_AUTH_TIMEOUT,
            resume_grace: shoulder_proto::session::DEFAULT_RESUME_GRACE,
            peer_timeout: shoulder_proto::session::DEFAULT_PEER_TIMEOUT,
            control_backoff: shoulder_proto::session::DEFAULT_CONTROL_BACKOFF,
            keepalive_interval: shoulder_proto::session::DEFAULT_KEEPALIVE_INTERVAL,
            max_input_rate: shoulder_proto::session::DEFAULT_MAX_INPUT_RATE,
            max_pre_auth_connections: 32,
            auth_failures_per_minute: 10,
            password_failures_per_minute: 60,
            max_concurrent_hashes: 1,
            plant_ca: Vec::new(),
            allowed_experts: Vec::new(),
            argon2: Argon2Config::default(),
            banner: BannerConfig::default(),
            input: InputConfig::default(),
            screens: Vec::new(),
            broker: None,
            help_desk: String::new(),
            #[cfg(feature = "files")]
            files: FilesConfig::default(),
            #[cfg(feature = "record")]
            record: RecordConfig::default(),
        }
    }
}

/// argon2id cost of invitation password hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Config {
    /// OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane): about a
    /// quarter second on a small ARM core, and little memory.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// The consent banner (rendered by `shoulder-banner`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BannerConfig {
    pub presenter: PresenterKind,
}

impl Default for BannerConfig {
    fn default() -> Self {
        Self {
            presenter: PresenterKind::Auto,
        }
    }
}

/// How the banner reaches the screen (`[banner] presenter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PresenterKind {
    /// `auto`: as `overlay`.
    Auto,
    /// `overlay`: draw into the buffer the display scans out.
    Overlay,
    /// `none`: prompts only on the control socket.
    None,
}

impl TryFrom<String> for PresenterKind {
    type Error = String;

    /// `vt` (a VT switch for prompts) and `plane` (an own KMS plane) are
    /// names reserved for presenters this agent does not have: refused here
    /// rather than failing when the first prompt is due.
    fn try_from(s: String) -> Result<Self, String> {
        let names = [
            ("auto", Self::Auto),
            ("overlay", Self::Overlay),
            ("none", Self::None),
        ];
        choose(&s, "a banner presenter", &names, &["vt", "plane"])
    }
}

/// How the expert's input reaches the device (`[input] inject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Injection {
    /// `uinput`: virtual devices made while control is granted.
    Uinput,
    /// `none`: nothing is injected.
    None,
}

impl TryFrom<String> for Injection {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let names = [("uinput", Self::Uinput), ("none", Self::None)];
        choose(&s, "an injection backend", &names, &[])
    }
}

/// The choice `names` gives `word`, or why there is none (`what` says what
/// the word should name; `reserved` words name what this agent does not
/// have yet).
fn choose<T: Copy>(
    word: &str,
    what: &str,
    names: &[(&str, T)],
    reserved: &[&str],
) -> Result<T, String> {
    if let Some(&(_, v)) = names.iter().find(|(n, _)| *n == word) {
        return Ok(v);
    }
    let quoted: Vec<String> = names.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let choices = match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    if reserved.contains(&word) {
        Err(format!(
            "`{word}` is {what} not available in this agent yet; use {choices}"
        ))
    } else {
        Err(format!("`{word}` is not {what}; use {choices}"))
    }
}

/// Injection and local input (implemented by `shoulder-input`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    pub inject: Injection,
    /// Directory of the evdev devices of the person at the device (their
    /// activity holds expert input back; the hotkeys come from them). Empty:
    /// local input is not watched.
    pub local_input: PathBuf,
    /// Grab local input devices while a prompt is open.
    pub grab_during_prompt: bool,
    /// Key chord that takes control back at once.
    pub stop_hotkey: String,
    /// Key chord that ends the session at once.
    pub end_hotkey: String,
    /// How long after the person's last local input expert input flows
    /// again.
    #[serde(deserialize_with = "de_duration")]
    pub local_idle: Duration,
    /// Key families the expert may inject although they act on the device
    /// itself: `power`, `sysrq`, `vt-switch`. Empty: none.
    pub allow_keys: Vec<String>,
    /// The keyboard layout the device's software reads its keyboard with,
    /// for text the expert has typed (`us`, `de`, `fr`, …; agents built
    /// with `type-text`; `us` by default). `off`: no typing.
    pub keyboard_layout: String,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            inject: Injection::Uinput,
            local_input: shoulder_input::local::DEFAULT_INPUT_DIR.into(),
            grab_during_prompt: true,
            stop_hotkey: shoulder_input::hotkey::DEFAULT_STOP_CONTROL.into(),
            end_hotkey: shoulder_input::hotkey::DEFAULT_END_SESSION.into(),
            local_idle: shoulder_input::DEFAULT_HOLDBACK,
            allow_keys: Vec::new(),
            keyboard_layout: "us".into(),
        }
    }
}

/// Where the screen comes from: the capture crate's source syntax (`drm`,
/// `drm:/dev/dri/card0@HDMI-A-1`, `fbdev`, `fbdev:/dev/fb1`,
/// `rawfile:PATH@WxH:FORMAT`, `synthetic`, `synthetic:WxH`).
pub type CaptureSpec = shoulder_capture::SourceSpec;

impl Config {
    /// The layout text is typed with, if any (the config was checked).
    pub fn keyboard_layout(&self) -> Option<shoulder_proto::keyboard::Layout> {
        match self.input.keyboard_layout.as_str() {
            "off" => None,
            name => shoulder_proto::keyboard::Layout::named(name),
        }
    }

    /// Reads and checks the config at `path`. A missing file at the default
    /// path gives the defaults (assistance disabled); a missing file named
    /// with `--config` is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        if meta.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge {
                path: path.into(),
                len: meta.len(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let mut message = e.message().trim().to_string();
            let mut fix = fix_for(&message);
            // Without the `files` feature `[files]` is an unknown table (a
            // parser for it would cost the device binary KiB): say which
            // build takes it.
            if !cfg!(feature = "files") && message.starts_with("unknown field `files`") {
                let (m, f) = check::built_without("file transfers", "[files]", "files");
                (message, fix) = (format!("`files`: {m}"), f);
            }
            if !cfg!(feature = "record") && message.starts_with("unknown field `record`") {
                let (m, f) = check::built_without("session records", "[record]", "record");
                (message, fix) = (format!("`record`: {m}"), f);
            }
            ConfigError::Invalid {
                path: path.into(),
                line,
                column,
                message,
                fix,
            }
        })?;
        config.check().map_err(|(table, key, message, fix)| {
            let (line, column) = find_key(text, table, key).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.into(),
                line,
                column,
                message: format!("`{}`: {message}", dotted(table, key)),
                fix,
            }
        })?;
        Ok(config)
    }

    /// The parsed allow-list. [`Config::load`] refuses unusable entries;
    /// a config built in code may still hold some, and they are left out,
    /// which only narrows the list, except that an empty list means anyone:
    /// a list left empty that way matches nobody instead.
    pub fn allowed_experts(&self) -> Vec<AllowedExpert> {
        let parsed: Vec<_> = self
            .allowed_experts
            .iter()
            .filter_map(|e| AllowedExpert::parse(e).ok())
            .collect();
        if parsed.is_empty() && !self.allowed_experts.is_empty() {
            return vec![AllowedExpert::Nobody];
        }
        parsed
    }

    /// The configured device name, or the host name.
    pub fn device_name(&self) -> String {
        if !self.device_name.is_empty() {
            return self.device_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "device".into())
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e}; write durations like \"90s\", \"30m\", \"24h\""
        ))
    })
}

/// `rotation` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RotationSetting {
    /// What the display says: the DRM plane's rotation and the panel's
    /// orientation (upright when it says nothing).
    #[default]
    Auto,
    /// This turn, whatever the display says (a compositor that turns its
    /// picture in software, which the kernel cannot know about).
    Fixed(Rotation),
}

fn de_rotation<'de, D: Deserializer<'de>>(d: D) -> Result<RotationSetting, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Degrees(i64),
        Word(String),
        Other(serde::de::IgnoredAny),
    }
    let bad = |what: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!(
            "{what} is not a rotation: use \"auto\" (what the display says) or 0, 90, 180, 270 (degrees the picture in the framebuffer turns clockwise to read upright on the panel)"
        ))
    };
    match Raw::deserialize(d)? {
        Raw::Word(w) if w == "auto" => Ok(RotationSetting::Auto),
        Raw::Word(w) => Err(bad(&format_args!("{w:?}"))),
        Raw::Degrees(n) => u16::try_from(n)
            .ok()
            .and_then(Rotation::from_degrees)
            .map(RotationSetting::Fixed)
            .ok_or_else(|| bad(&n)),
        Raw::Other(_) => Err(bad(&"this value")),
    }
}

fn de_capture<'de, D: Deserializer<'de>>(d: D) -> Result<CaptureSpec, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|e| {
        serde::de::Error::custom(format!(
            "{e}; use \"drm\", \"fbdev\", \"synthetic\" or \"rawfile:PATH@WxH:FORMAT\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use shoulder_proto::Fingerprint;

    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("agent.toml"))
    }

    #[test]
    fn example_file_parses_and_matches_defaults() {
        let text = include_str!("../../agent.example.toml");
        let c = parse(text).expect("the example config parses");
        let d = Config::default();
        assert_eq!(c.enabled, d.enabled);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.consent_timeout, d.consent_timeout);
        assert_eq!(c.argon2, d.argon2);
        assert_eq!(c.capture, d.capture);
        assert_eq!(c.rotation, d.rotation);
        assert_eq!(c.banner, d.banner);
        assert_eq!(c.input, d.input);
        assert_eq!(c.max_invitation_lifetime, d.max_invitation_lifetime);
        assert_eq!(c.max_concurrent_hashes, d.max_concurrent_hashes);
        assert_eq!(
            c.password_failures_per_minute,
            d.password_failures_per_minute
        );
        #[cfg(feature = "files")]
        assert_eq!(c.files, d.files);
        #[cfg(feature = "record")]
        assert_eq!(c.record, d.record);
    }

    /// The commented-out `[table]` example of agent.example.toml, as the
    /// config it shows (its comment block, keys and table line only).
    fn example_section(table: &str) -> String {
        let text = include_str!("../../agent.example.toml");
        let start = text
            .find(&format!("# [{table}]"))
            .unwrap_or_else(|| panic!("a [{table}] example"));
        text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    #[test]
    fn files_need_the_feature_and_absolute_directories() {
        let r = parse(&example_section("files"));
        #[cfg(feature = "files")]
        {
            let c = r.unwrap();
            assert_eq!(
                c.files,
                FilesConfig::default(),
                "the example shows the defaults"
            );
            let c = parse("[files]\nreadable = [\"/var/log/kiosk\"]\n").unwrap();
            assert_eq!(c.files.readable, [PathBuf::from("/var/log/kiosk")]);
            assert!(c.files.any());
            for (bad, key) in [
                ("readable = [\"logs\"]", "files.readable"),
                ("drop = \"in\"", "files.drop"),
                ("drop = \"/in\"\nmax_size_mib = 0", "files.max_size_mib"),
            ] {
                let e = parse(&format!("[files]\n{bad}\n")).unwrap_err().to_string();
                assert!(e.contains(key), "{bad}: {e}");
            }
        }
        #[cfg(not(feature = "files"))]
        {
            let s = r.unwrap_err().to_string();
            assert!(s.contains("PACKAGECONFIG files"), "{s}");
        }
    }

    #[test]
    fn records_need_the_feature_and_sane_bounds() {
        let r = parse(&example_section("record"));
        #[cfg(feature = "record")]
        {
            assert_eq!(
                r.unwrap().record,
                RecordConfig::default(),
                "the example shows the defaults"
            );
            let c = parse("[record]\nmode = \"screen\"\n").unwrap();
            assert_eq!(c.record.mode, RecordMode::Screen);
            assert_eq!(c.record_dir(), PathBuf::from("/var/lib/shoulder/records"));
            for (bad, key) in [
                (
                    "mode = \"video\"",
                    "expected one of `off`, `metadata`, `screen`",
                ),
                ("dir = \"recs\"", "record.dir"),
                ("max_session_mib = 0", "record.max_session_mib"),
                ("max_session_mib = 600", "record.max_total_mib"),
            ] {
                let e = parse(&format!("[record]\n{bad}\n"))
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(key), "{bad}: {e}");
            }
        }
        #[cfg(not(feature = "record"))]
        {
            let s = r.unwrap_err().to_string();
            assert!(s.contains("PACKAGECONFIG record"), "{s}");
        }
    }

    #[test]
    fn a_help_desk_needs_an_agent_that_calls_out() {
        let r = parse("help_desk = \"desk-7.plant\"\n");
        if cfg!(feature = "call") {
            assert_eq!(r.unwrap().help_desk, "desk-7.plant");
        } else {
            let s = r.unwrap_err().to_string();
            assert!(
                s.contains("help_desk") && s.contains("PACKAGECONFIG call"),
                "{s}"
            );
        }
    }

    #[test]
    fn keyboard_layouts_are_named_or_the_error_lists_them() {
        let c = parse("[input]\nkeyboard_layout = \"off\"\n").unwrap();
        assert!(c.keyboard_layout().is_none());
        let s = parse("[input]\nkeyboard_layout = \"klingon\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("keyboard_layout"), "{s}");
        if cfg!(feature = "type-text") {
            assert!(s.contains("no keyboard layout \"klingon\""), "{s}");
            assert!(s.contains("us, gb, ie, de"), "{s}");
            let c = parse("[input]\nkeyboard_layout = \"de\"\n").unwrap();
            assert_eq!(c.keyboard_layout().unwrap().name(), "de");
            assert_eq!(Config::default().keyboard_layout().unwrap().name(), "us");
        } else {
            assert!(s.contains("built without typing text"), "{s}");
            assert!(s.contains("PACKAGECONFIG type-text"), "{s}");
        }
    }

    #[test]
    fn rotation_is_degrees_clockwise_and_nothing_else() {
        assert_eq!(
            parse("rotation = 270\n").unwrap().rotation,
            RotationSetting::Fixed(Rotation::Deg270)
        );
        assert_eq!(
            parse("rotation = \"auto\"\n").unwrap().rotation,
            RotationSetting::Auto
        );
        assert_eq!(parse("").unwrap().rotation, RotationSetting::Auto);
        for bad in ["45", "-90", "\"left\"", "90.0"] {
            let s = parse(&format!("\nrotation = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                s.contains("agent.toml:2") && s.contains("0, 90, 180, 270") && s.contains("auto"),
                "{bad}: {s}"
            );
        }
    }

    #[test]
    fn hash_limits_are_checked() {
        let c = parse("max_concurrent_hashes = 2\npassword_failures_per_minute = 30\n").unwrap();
        assert_eq!(c.max_concurrent_hashes, 2);
        assert_eq!(c.password_failures_per_minute, 30);
        let s = parse("max_concurrent_hashes = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("agent.toml:1:1") && s.contains("max_concurrent_hashes"),
            "{s}"
        );
        assert!(s.contains("fix:"), "{s}");
        let s = parse("max_concurrent_hashes = 4\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("76 MiB") && s.contains("argon2.memory_kib"),
            "{s}"
        );
        let s = parse("password_failures_per_minute = 0\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("password_failures_per_minute"), "{s}");
    }

    #[test]
    fn every_default_key_is_documented_in_the_example() {
        let text = include_str!("../../agent.example.toml");
        for key in [
            "enabled",
            "allow_offers",
            "allow_invitations",
            "allow_control",
            "max_invitation_lifetime",
            "device_name",
            "listen",
            "advertise",
            "state_dir",
            "audit_log",
            "audit_max_bytes",
            "audit_keep",
            "control_socket",
            "control_group",
            "invite_group",
            "allow_keys",
            "keyboard_layout",
            "capture",
            "max_fps",
            "lossy",
            "help_desk",
            "consent_timeout",
            "pre_auth_timeout",
            "max_pre_auth_connections",
            "auth_failures_per_minute",
            "password_failures_per_minute",
            "max_concurrent_hashes",
            "plant_ca",
            "allowed_experts",
            "memory_kib",
            "iterations",
            "parallelism",
            "presenter",
            "inject",
            "local_input",
            "grab_during_prompt",
            "stop_hotkey",
            "end_hotkey",
            "local_idle",
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} ="))),
                "{key} is not documented in agent.example.toml"
            );
        }
    }

    #[test]
    fn lossy_pictures_are_on_unless_turned_off() {
        assert!(parse("enabled = true\n").unwrap().lossy);
        assert!(!parse("enabled = true\nlossy = false\n").unwrap().lossy);
    }

    #[test]
    fn unknown_key_names_line_and_fix() {
        let e = parse("enabled = true\nallow_ofers = true\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("agent.toml:2:1"), "{s}");
        assert!(s.contains("allow_ofers"), "{s}");
        assert!(s.contains("fix: remove the key"), "{s}");
    }

    #[test]
    fn presenter_and_injection_are_parsed_at_load() {
        let c = parse("[banner]\npresenter = \"none\"\n[input]\ninject = \"none\"\n").unwrap();
        assert_eq!(c.banner.presenter, PresenterKind::None);
        assert_eq!(c.input.inject, Injection::None);
        // Reserved names that cannot work are refused at load, not at the
        // first prompt; the message names the line and the choices.
        for (text, at, says) in [
            (
                "[banner]\npresenter = \"vt\"\n",
                "agent.toml:2:",
                "`vt` is a banner presenter not available in this agent yet; use \"auto\", \"overlay\" or \"none\"",
            ),
            (
                "[banner]\npresenter = \"plane\"\n",
                "agent.toml:2:",
                "not available in this agent yet",
            ),
            (
                "[banner]\npresenter = \"hologram\"\n",
                "agent.toml:2:",
                "`hologram` is not a banner presenter",
            ),
            (
                "\n[input]\ninject = \"evdev\"\n",
                "agent.toml:3:",
                "`evdev` is not an injection backend; use \"uinput\" or \"none\"",
            ),
        ] {
            let s = parse(text).unwrap_err().to_string();
            assert!(s.contains(at) && s.contains(says), "{s}");
        }
    }

    #[test]
    fn bad_values_name_key_line_and_fix() {
        let s = parse("consent_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains(":1:"), "{s}");
        assert!(s.contains("\"90s\""), "{s}");
        let s = parse("\n[argon2]\nmemory_kib = 999999999\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("agent.toml:3:1"), "{s}");
        assert!(s.contains("argon2.memory_kib"), "{s}");
        assert!(s.contains("fix:"), "{s}");
        let s = parse("listen = [\"localhost\"]\n").unwrap_err().to_string();
        assert!(s.contains("0.0.0.0:7575"), "{s}");
        let s = parse("capture = \"vnc\"\n").unwrap_err().to_string();
        assert!(s.contains("\"synthetic\""), "{s}");
        let s = parse("allowed_experts = [\"sha256:12\"]\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("64 hex digits"), "{s}");
        let s = parse("enabled = \"yes\"\n").unwrap_err().to_string();
        assert!(s.contains(":1:11"), "{s}");
    }

    #[test]
    fn liveness_and_resume_keys() {
        let c = parse("resume_grace = \"0s\"\npeer_timeout = \"30s\"\nkeepalive_interval = \"10s\"\nmax_input_rate = 50\n")
            .unwrap();
        assert!(c.resume_grace.is_zero());
        assert_eq!(c.peer_timeout, Duration::from_secs(30));
        assert_eq!(c.keepalive_interval, Duration::from_secs(10));
        assert_eq!(c.max_input_rate, 50);
        let s = parse("peer_timeout = \"6s\"\n").unwrap_err().to_string();
        assert!(s.contains("peer_timeout") && s.contains("10s"), "{s}");
        let s = parse("resume_grace = \"1h\"\n").unwrap_err().to_string();
        assert!(s.contains("resume_grace") && s.contains("fix:"), "{s}");
        let s = parse("max_input_rate = 5\n").unwrap_err().to_string();
        assert!(s.contains("max_input_rate"), "{s}");
        let s = parse("keepalive_interval = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("keepalive_interval"), "{s}");
    }

    #[test]
    fn allow_keys_and_invite_group() {
        let c = parse("invite_group = \"shoulder-admin\"\n[input]\nallow_keys = [\"power\", \"sysrq\", \"vt-switch\"]\n")
            .unwrap();
        assert_eq!(c.invite_group, "shoulder-admin");
        let p = shoulder_input::KeyPolicy::parse(&c.input.allow_keys).unwrap();
        for f in shoulder_input::KeyFamily::ALL {
            assert!(p.allows(f), "{f}");
        }
        assert!(Config::default().input.allow_keys.is_empty());
        assert!(Config::default().invite_group.is_empty());
        let s = parse("[input]\nallow_keys = [\"vt\"]\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("agent.toml:2:1"), "{s}");
        assert!(s.contains("input.allow_keys") && s.contains("`vt`"), "{s}");
        assert!(s.contains("\"vt-switch\"") && s.contains("fix:"), "{s}");
        let s = parse("invite_group = \"a:b\"\n").unwrap_err().to_string();
        assert!(s.contains("invite_group") && s.contains("fix:"), "{s}");
    }

    #[test]
    fn capture_specs_parse() {
        let c = parse("capture = \"rawfile:/tmp/a.raw@640x480:XRGB8888\"\n").unwrap();
        assert!(matches!(c.capture, CaptureSpec::RawFile { .. }));
        let c = parse("capture = \"synthetic:320x200\"\n").unwrap();
        assert_eq!(
            c.capture,
            CaptureSpec::Synthetic {
                width: 320,
                height: 200
            }
        );
        assert!(parse("capture = \"rawfile:/tmp/x@0x480:XRGB8888\"\n").is_err());
    }

    #[test]
    fn missing_default_file_means_disabled() {
        let c = Config::load(Path::new("/nonexistent/agent.toml"), false).unwrap();
        assert!(!c.enabled);
        assert!(Config::load(Path::new("/nonexistent/agent.toml"), true).is_err());
    }

    #[test]
    fn allow_list_entries_bind_names_to_a_ca() {
        let ca = "ab".repeat(32);
        assert_eq!(
            AllowedExpert::parse(&format!("ca:{ca}/cn:Ann Expert")),
            Ok(AllowedExpert::Bound {
                ca: Fingerprint([0xab; 32]),
                cn: "Ann Expert".into()
            })
        );
        assert!(matches!(
            AllowedExpert::parse(&format!("sha256:{}", "ab".repeat(32))),
            Ok(AllowedExpert::Fingerprint(_))
        ));
        // A name without its CA matches whatever any plant CA issues.
        for bare in ["cn:Ann", "Bob"] {
            let e = AllowedExpert::parse(bare).unwrap_err();
            assert!(e.contains("not the CA"), "{e}");
        }
        let s = parse("allowed_experts = [\"cn:Ann\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            s.contains("agent.toml:1:1") && s.contains("ca:<plant CA fingerprint>/cn:Ann"),
            "{s}"
        );
        assert!(s.contains("openssl x509"), "{s}");
        assert!(AllowedExpert::parse(&format!("ca:{ca}")).is_err());
        assert!(AllowedExpert::parse(&format!("ca:{ca}/cn: ")).is_err());
        assert!(AllowedExpert::parse("ca:12/cn:Ann").is_err());
        assert!(AllowedExpert::parse("cn: ").unwrap_err().contains("empty"));
        // Built in code, past the checks of `load`: never "anyone".
        let c = Config {
            allowed_experts: vec!["cn:Ann".into()],
            ..Config::default()
        };
        assert_eq!(c.allowed_experts(), [AllowedExpert::Nobody]);
    }

    #[test]
    fn the_example_broker_section_parses_to_its_defaults() {
        let section = example_section("broker");
        let r = parse(&format!("enabled = true\n{section}"));
        if cfg!(feature = "broker") {
            let b = r.unwrap().broker.expect("[broker] read");
            assert_eq!(b.address, "broker.plant.example:8883");
            assert_eq!(b.prefix, "shoulder");
            assert_eq!(b.keepalive, Duration::from_secs(30));
            assert!(b.ca.is_empty() && b.site.is_empty());
            assert_eq!(b.help_expires, Duration::from_secs(3600));
            for (bad, key) in [
                ("address = \"broker plant\"", "broker.address"),
                ("address = \"b\"\nprefix = \"a/+\"", "broker.prefix"),
                ("address = \"b\"\nkeepalive = \"1s\"", "broker.keepalive"),
            ] {
                let e = parse(&format!("[broker]\n{bad}\n"))
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(key) && e.contains("fix"), "{e}");
            }
        } else {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("built without broker support"), "{e}");
        }
    }

    #[test]
    fn example_allow_list_entries_parse() {
        // The example's commented entries show the syntax; they must be valid.
        let text = include_str!("../../agent.example.toml");
        let entries: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("#   \""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(entries.len() >= 2, "{entries:?}");
        for e in entries {
            AllowedExpert::parse(e).unwrap_or_else(|m| panic!("{e}: {m}"));
        }
    }
}
