//! `shoulder-agent doctor`: what this device offers the agent, checked the
//! way the agent uses it (the same config, the same capture source, the same
//! device nodes), with what to do about each problem. A device builder runs
//! it on their hardware and sends the output (`--json` for tools) when the
//! agent does not behave: it covers what the project's tests cannot reach
//! (real panels, GPU buffers, touchscreens).
//!
//! Read-only: it opens the display for reading, `/dev/uinput` without
//! creating a device, local input devices without grabbing them, and binds
//! the listen ports only to see whether they are free.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use shoulder_capture::{FrameSource, Rotation};

use crate::config::{Config, Injection, RotationSetting};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, with a limit the person or the technician will notice.
    Warn,
    /// The agent cannot do this part of its job.
    Fail,
    /// Not used by this config.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was looked at: `config`, `display`, `injection`, ...
    pub area: &'static str,
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Everything `doctor` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub version: &'static str,
    pub kernel: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The first check of `area`.
    pub fn check(&self, area: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.area == area)
    }

    /// For a terminal: one line per check, the fix indented below it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "shoulder-agent {} doctor (kernel {})\n",
            self.version, self.kernel
        );
        for c in &self.checks {
            let _ = writeln!(out, "{:<5} {:<12} {}", c.status.label(), c.area, c.found);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "{:<18}fix: {fix}", "");
            }
        }
        let (fails, warns) = self.checks.iter().fold((0, 0), |(f, w), c| match c.status {
            Status::Fail => (f + 1, w),
            Status::Warn => (f, w + 1),
            _ => (f, w),
        });
        let _ = writeln!(out, "{fails} failed, {warns} with warnings");
        out
    }

    /// For tools and support requests.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn check(area: &'static str, status: Status, found: impl Into<String>) -> Check {
    Check {
        area,
        status,
        found: found.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Examines the device for `config`. `loaded` says how the config file
/// went: `Err` (the file is broken) still examines the device with the
/// defaults and reports the error first.
pub fn examine(config: &Config, path: &Path, loaded: Result<(), String>) -> Report {
    let mut checks = vec![match loaded {
        Ok(()) if path.exists() => check("config", Status::Ok, format!("{} read", path.display())),
        Ok(()) => check(
            "config",
            Status::Ok,
            format!("{} does not exist: the defaults are used", path.display()),
        ),
        Err(e) => check(
            "config",
            Status::Fail,
            format!("{e}; the checks below use the defaults"),
        )
        .fix(format!("correct {}", path.display())),
    }];
    checks.push(identity(config));
    checks.push(privileges(config));
    checks.extend(display(config));
    checks.push(injection(config));
    checks.push(local_input(config));
    checks.extend(listen(config));
    Report {
        version: env!("CARGO_PKG_VERSION"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
        checks,
    }
}

fn identity(config: &Config) -> Check {
    match crate::identity::load(&config.state_dir) {
        Ok(id) => check(
            "identity",
            Status::Ok,
            format!(
                "device certificate fingerprint {}",
                id.fingerprint.colon_hex()
            ),
        ),
        // The message says what to do.
        Err(e) => check("identity", Status::Fail, e.to_string()),
    }
}

/// `CAP_SYS_ADMIN` in the effective set: DRM shows other processes' buffer
/// handles only to it.
fn has_cap_sys_admin() -> Option<bool> {
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let caps = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(caps & (1 << CAP_SYS_ADMIN) != 0)
}

fn privileges(config: &Config) -> Check {
    let drm = matches!(config.capture, shoulder_capture::SourceSpec::Drm { .. });
    match (has_cap_sys_admin(), drm) {
        (Some(true), _) => check("privileges", Status::Ok, "CAP_SYS_ADMIN held"),
        (_, false) => check(
            "privileges",
            Status::Ok,
            "CAP_SYS_ADMIN not needed for this capture source",
        ),
        (Some(false), true) => check(
            "privileges",
            Status::Fail,
            "no CAP_SYS_ADMIN: DRM capture cannot read the buffers another process draws",
        )
        .fix("run as root, as the service unit does (bounded to CAP_SYS_ADMIN CAP_CHOWN)"),
        (None, true) => check(
            "privileges",
            Status::Warn,
            "cannot read this process's capabilities from /proc/self/status",
        ),
    }
}

/// The capture source the config names: what it shows, one frame read,
/// how it is turned, the cursor.
fn display(config: &Config) -> Vec<Check> {
    let mut source = match shoulder_capture::open(&config.capture) {
        Ok(s) => s,
        Err(e) => {
            let fix = if e.is_transient() {
                "if the display is off, or the app that lights it has not started yet, start it and run doctor again"
            } else {
                "see the message; `capture` in the agent config names the source"
            };
            return vec![check("display", Status::Fail, e.to_string()).fix(fix)];
        }
    };
    let mut out = Vec::new();
    let started = Instant::now();
    let shown = source.capture().map(|frame| {
        let g = frame.geometry();
        let dark = frame
            .to_xrgb8888()
            .chunks_exact(4)
            .all(|p| p[..3] == [0, 0, 0]);
        (g, dark)
    });
    let took = started.elapsed();
    match shown {
        Ok((g, dark)) => {
            let found = format!(
                "{}: {}, one frame read in {:.1} ms",
                source.describe(),
                g,
                took.as_secs_f64() * 1000.0
            );
            out.push(if dark {
                check("display", Status::Warn, format!("{found}; every pixel is black"))
                    .fix("if the screen shows something, the buffer read is not the one on screen: send this output")
            } else {
                check("display", Status::Ok, found)
            });
        }
        Err(e) => out.push(
            check(
                "display",
                Status::Fail,
                format!("{}: {e}", source.describe()),
            )
            .fix("see the message; send this output if it does not say what to do"),
        ),
    }
    out.push(orientation(config, &mut *source));
    if let Some(c) = screens(config) {
        out.push(c);
    }
    out.push(match source.cursor() {
        Ok(Some(c)) => check(
            "cursor",
            Status::Ok,
            match c.position {
                Some(p) if p.visible => format!("cursor plane, pointer at {},{}", p.x, p.y),
                _ => "cursor plane, no pointer shown now".into(),
            },
        ),
        Ok(None) => check(
            "cursor",
            Status::Ok,
            "no cursor plane: a pointer, if any, is part of the picture",
        ),
        Err(e) => check(
            "cursor",
            Status::Warn,
            format!("cursor plane unreadable: {e}"),
        ),
    });
    out
}

/// Several lit outputs (DRM, no connector named): the screens the expert
/// can choose from and where each sits. `None` with one screen.
fn screens(config: &Config) -> Option<Check> {
    use crate::backends::CaptureBackend;
    let backend = crate::wiring::Capture {
        spec: config.capture.clone(),
        positions: config.screens.clone(),
    };
    let screens = backend.screens();
    (screens.len() > 1).then(|| {
        let (w, h) = crate::screens::desktop(&screens);
        let each: Vec<String> = screens
            .iter()
            .map(|s| format!("{} {}x{} at {},{}", s.name, s.width, s.height, s.x, s.y))
            .collect();
        check(
            "screens",
            Status::Ok,
            format!(
                "{} screens in a {w}x{h} desktop: {}; the expert picks one, input spans them all",
                screens.len(),
                each.join(", ")
            ),
        )
        .fix(
            "if the compositor places them otherwise, say where in [[screens]] of the agent config",
        )
    })
}

fn orientation(config: &Config, source: &mut dyn FrameSource) -> Check {
    let in_use = match config.rotation {
        RotationSetting::Fixed(r) => format!("the config sets {r}°"),
        RotationSetting::Auto => "auto".into(),
    };
    match source.orientation() {
        None => check(
            "orientation",
            Status::Ok,
            format!("this source cannot say how the panel is mounted; rotation: {in_use}"),
        ),
        Some(Err(e)) => check(
            "orientation",
            Status::Warn,
            format!("cannot read it: {e}; rotation: {in_use}"),
        ),
        Some(Ok(o)) => {
            let panel = match (o.panel, o.panel_raw) {
                (Some(p), _) => p.name().to_string(),
                (None, Some(raw)) => format!("unknown value {raw}"),
                (None, None) => "not set".into(),
            };
            let plane = o
                .plane_rotation
                .map_or_else(|| "none".to_string(), |b| format!("0x{b:x}"));
            let said = format!("panel orientation {panel}, plane rotation {plane}");
            match (o.seen(), config.rotation) {
                (Ok(seen), RotationSetting::Auto) => check(
                    "orientation",
                    Status::Ok,
                    format!("{said}: the person sees the picture turned {seen}°; rotation: auto, so {seen}° is used"),
                ),
                // The kernel knows of no turn: the config's value is all
                // there is (a compositor that turns in software).
                (Ok(seen), RotationSetting::Fixed(r)) if seen == r || seen == Rotation::Deg0 => check(
                    "orientation",
                    Status::Ok,
                    format!("{said}; rotation: {in_use}"),
                ),
                (Ok(seen), RotationSetting::Fixed(r)) => check(
                    "orientation",
                    Status::Warn,
                    format!("{said}: the kernel says {seen}°, the config sets {r}°"),
                )
                .fix("keep the config's value only for a compositor that turns its picture in software; otherwise set rotation = \"auto\""),
                (Err(e), _) => check("orientation", Status::Warn, format!("{said}: {e}")),
            }
        }
    }
}

fn injection(config: &Config) -> Check {
    match config.input.inject {
        Injection::None => check(
            "injection",
            Status::Skip,
            "inject = \"none\": the expert can view, never type or click",
        ),
        Injection::Uinput => {
            let path = shoulder_input::DEFAULT_UINPUT_PATH;
            match std::fs::OpenOptions::new().write(true).open(path) {
                Ok(_) => check(
                    "injection",
                    Status::Ok,
                    format!("{path} can be opened for writing"),
                ),
                Err(e) => {
                    let fix = match e.kind() {
                        std::io::ErrorKind::NotFound => {
                            "load the module (modprobe uinput) or build the kernel with CONFIG_INPUT_UINPUT".into()
                        }
                        std::io::ErrorKind::PermissionDenied => denied_fix(&e, "/dev/uinput rw"),
                        _ => "see the message".into(),
                    };
                    check("injection", Status::Fail, format!("{path}: {e}")).fix(fix)
                }
            }
        }
    }
}

/// What to do about a device node that may not be opened: EPERM is the
/// service's device cgroup (`DevicePolicy=closed`), EACCES file permissions.
fn denied_fix(e: &std::io::Error, allow: &str) -> String {
    if e.raw_os_error() == Some(1) {
        format!(
            "the device cgroup refused it: DeviceAllow={allow} in the service unit (cgroup v2 needs CONFIG_CGROUP_BPF)"
        )
    } else {
        format!("run as root, and let the service unit allow the device (DeviceAllow={allow})")
    }
}

fn local_input(config: &Config) -> Check {
    let dir = &config.input.local_input;
    if dir.as_os_str().is_empty() {
        return check(
            "local input",
            Status::Skip,
            "local_input = \"\": no hotkeys, no taps on the banner, no hold-back",
        );
    }
    match shoulder_input::local::enumerate(dir) {
        Ok(devices) if devices.is_empty() => check(
            "local input",
            Status::Warn,
            format!("no keyboard, pointer or touchscreen in {}", dir.display()),
        )
        .fix("without one the person cannot answer prompts on the screen (use `shoulder-agent ctl accept`), nor stop control by hotkey; check CONFIG_INPUT_EVDEV and the device's driver"),
        Ok(devices) => {
            let list: Vec<String> = devices
                .iter()
                .map(|d| {
                    let name = d.path.file_name().map(|n| n.to_string_lossy().into_owned());
                    format!(
                        "{} {} \"{}\"",
                        name.unwrap_or_default(),
                        d.kind_label(),
                        d.name
                    )
                })
                .collect();
            check("local input", Status::Ok, list.join("; "))
        }
        Err(e) => check("local input", Status::Fail, e.to_string()).fix(
            "the agent reads /dev/input/event* (root, and DeviceAllow=char-input r in the service unit)",
        ),
    }
}

fn listen(config: &Config) -> Vec<Check> {
    config
        .listen
        .iter()
        .map(|addr| match std::net::TcpListener::bind(addr) {
            Ok(_) => check("listen", Status::Ok, format!("{addr} is free")),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => check(
                "listen",
                Status::Warn,
                format!("{addr} is in use"),
            )
            .fix("fine if the agent is running (shoulder-agent ctl status); otherwise another program holds the port: change `listen`"),
            Err(e) => check("listen", Status::Fail, format!("{addr}: {e}"))
                .fix("change `listen` in the agent config"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_capture::{PixelFormat, ScreenGeometry, SourceSpec};

    /// A device whose screen is a raw 64×48 file (`pixel` everywhere), with
    /// a device key, no injection, and an empty input directory.
    fn device(dir: &Path, pixel: u32) -> Config {
        let screen = dir.join("screen.raw");
        let bytes: Vec<u8> = std::iter::repeat_n(pixel.to_le_bytes(), 64 * 48)
            .flatten()
            .collect();
        std::fs::write(&screen, bytes).unwrap();
        let input = dir.join("input");
        std::fs::create_dir_all(&input).unwrap();
        let mut c = Config {
            state_dir: dir.join("state"),
            capture: SourceSpec::RawFile {
                path: screen,
                geometry: ScreenGeometry {
                    width: 64,
                    height: 48,
                    format: PixelFormat::Xrgb8888,
                },
                pitch: 64 * 4,
            },
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..Config::default()
        };
        c.input.inject = Injection::None;
        c.input.local_input = input;
        crate::identity::generate(&c.state_dir, "doctor test", None).unwrap();
        c
    }

    #[test]
    fn a_readable_screen_is_reported_with_what_the_person_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let config = device(dir.path(), 0x0033_6699);
        let r = examine(&config, &dir.path().join("agent.toml"), Ok(()));
        assert!(!r.failed(), "{}", r.text());
        let display = r.check("display").unwrap();
        assert_eq!(display.status, Status::Ok, "{}", r.text());
        assert!(display.found.contains("64×48"), "{}", display.found);
        assert_eq!(r.check("identity").unwrap().status, Status::Ok);
        assert_eq!(r.check("injection").unwrap().status, Status::Skip);
        let local = r.check("local input").unwrap();
        assert_eq!(local.status, Status::Warn);
        assert!(local.fix.as_deref().unwrap().contains("ctl accept"));
        assert!(r.check("orientation").unwrap().found.contains("cannot say"));
        assert!(r.check("config").unwrap().found.contains("does not exist"));
        let text = r.text();
        assert!(
            text.contains("WARN  local input") && text.contains("fix: "),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["checks"][0]["area"], "config");
    }

    #[test]
    fn a_black_screen_and_a_broken_config_are_named_and_the_rest_still_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = device(dir.path(), 0);
        std::fs::remove_dir_all(&config.state_dir).unwrap();
        config.input.inject = Injection::Uinput;
        let r = examine(
            &config,
            Path::new("/etc/shoulder/agent.toml"),
            Err("agent.toml:3: unknown field `captur`".into()),
        );
        assert!(r.failed());
        assert_eq!(r.check("config").unwrap().status, Status::Fail);
        assert!(r.check("config").unwrap().found.contains("captur"));
        assert_eq!(r.check("display").unwrap().status, Status::Warn);
        assert!(r.check("display").unwrap().found.contains("black"));
        let identity = r.check("identity").unwrap();
        assert_eq!(identity.status, Status::Fail);
        assert!(identity.found.contains("keygen"), "{}", identity.found);
        // No /dev/uinput here (or no right to it): the fix names the cause.
        let inj = r.check("injection").unwrap();
        if inj.status == Status::Fail {
            assert!(inj.fix.as_deref().unwrap().contains("uinput"), "{inj:?}");
        }
    }

    #[test]
    fn the_rotation_in_use_is_checked_against_what_the_kernel_says() {
        use crate::backends::{CaptureBackend, PatternCapture};
        use shoulder_capture::{KernelOrientation, PanelOrientation};
        let says = std::sync::Arc::new(std::sync::Mutex::new(None));
        let capture = PatternCapture::new(64, 48).with_orientation(says.clone());
        let mut config = Config::default();
        let mut look = |panel, setting| {
            *says.lock().unwrap() = Some(KernelOrientation {
                plane_rotation: Some(1),
                panel: Some(panel),
                panel_raw: None,
            });
            config.rotation = setting;
            let mut source = capture.open().unwrap();
            orientation(&config, &mut *source)
        };
        let c = look(PanelOrientation::LeftSideUp, RotationSetting::Auto);
        assert_eq!(c.status, Status::Ok);
        assert!(
            c.found.contains("Left Side Up") && c.found.contains("so 90° is used"),
            "{}",
            c.found
        );
        // A compositor turning in software: the kernel knows of no turn.
        let c = look(
            PanelOrientation::Normal,
            RotationSetting::Fixed(Rotation::Deg270),
        );
        assert_eq!(c.status, Status::Ok, "{}", c.found);
        let c = look(
            PanelOrientation::LeftSideUp,
            RotationSetting::Fixed(Rotation::Deg90),
        );
        assert_eq!(c.status, Status::Ok, "{}", c.found);
        // The config contradicts the kernel: said, with what to do.
        let c = look(
            PanelOrientation::LeftSideUp,
            RotationSetting::Fixed(Rotation::Deg0),
        );
        assert_eq!(c.status, Status::Warn, "{}", c.found);
        assert!(c.fix.as_deref().unwrap().contains("\"auto\""));
    }

    #[test]
    fn a_missing_screen_fails_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = device(dir.path(), 0x00ff_ffff);
        config.capture = SourceSpec::Fbdev {
            device: dir.path().join("fb9"),
        };
        let r = examine(&config, Path::new("agent.toml"), Ok(()));
        let display = r.check("display").unwrap();
        assert_eq!(display.status, Status::Fail, "{}", r.text());
        assert!(display.found.contains("fb9"), "{}", display.found);
        assert!(display.fix.is_some());
        // Nothing more to say about a screen that cannot be opened.
        assert!(r.check("orientation").is_none());
    }
}
