//! Diagnostics for input on a real kernel: lists local devices, injects a
//! short demo through uinput, prints local events (with hotkeys and the
//! local-activity hold-back) and dumps raw evdev events.
//!
//! ```text
//! input-probe list [--dir DIR]
//! input-probe inject-demo [--uinput PATH] [--touch] [--screen WxH] [--at X,Y]
//!                         [--pause-ms MS] [--hold-key] [--linger-ms MS]
//!                         [--panic]
//! input-probe watch [--dir DIR] [--seconds S] [--grab-seconds G] [--screen WxH]
//!                   [--holdback-ms MS] [--stop-hotkey CHORD] [--end-hotkey CHORD]
//! input-probe dump PATH [--seconds S]
//! ```
//!
//! `inject-demo` gets its control consent from a real device session run in
//! this process, answered "yes" on the operator's behalf: starting the probe
//! is the consent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shoulder_input::local::{
    DEFAULT_INPUT_DIR, LocalEventKind, LocalInput, LocalInputConfig, enumerate,
};
use shoulder_input::{
    DEFAULT_UINPUT_PATH, Holdback, HoldbackOutput, HotkeyDetector, Hotkeys, InjectMode, InputSink,
    ScreenSize, UinputSink,
};
use shoulder_proto::consent::ControlConsent;
use shoulder_proto::frame::encode;
use shoulder_proto::msg::{Auth, Buttons, Key, Pointer, Touch, TouchPhase};
use shoulder_proto::session::{
    AuthMethod, DeviceConfig, DeviceInput, DeviceOutput, DeviceSession, ExpertConfig, ExpertEvent,
    ExpertIdentity, ExpertInput, ExpertSession, InjectEvent, LocalCommand, UserAction,
};

const USAGE: &str = "usage:
  input-probe list [--dir DIR]
  input-probe inject-demo [--uinput PATH] [--touch] [--screen WxH] [--at X,Y] [--pause-ms MS] [--hold-key] [--linger-ms MS] [--panic]
  input-probe watch [--dir DIR] [--seconds S] [--grab-seconds G] [--screen WxH] [--holdback-ms MS] [--stop-hotkey CHORD] [--end-hotkey CHORD]
  input-probe dump PATH [--seconds S]";

/// Upper bound for any duration given on the command line: the probe is
/// for short checks, never a daemon.
const MAX_SECONDS: u64 = 3600;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => list(&Opts::parse(&args[1..])),
        Some("inject-demo") => inject_demo(&Opts::parse(&args[1..])),
        Some("watch") => watch(&Opts::parse(&args[1..])),
        Some("dump") => dump(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("input-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Opts {
    flags: Vec<(String, Option<String>)>,
    error: Option<String>,
}

impl Opts {
    const SWITCHES: &[&str] = &["--touch", "--hold-key", "--panic"];

    fn parse(args: &[String]) -> Self {
        let mut flags = Vec::new();
        let mut error = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if !a.starts_with("--") {
                error.get_or_insert(format!("unexpected argument \"{a}\"\n{USAGE}"));
            } else if Self::SWITCHES.contains(&a.as_str()) {
                flags.push((a.clone(), None));
            } else {
                match it.next() {
                    Some(v) => flags.push((a.clone(), Some(v.clone()))),
                    None => {
                        error.get_or_insert(format!("{a} needs a value\n{USAGE}"));
                    }
                }
            }
        }
        Self { flags, error }
    }

    fn check(&self) -> Result<(), String> {
        self.error.clone().map_or(Ok(()), Err)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    fn path(&self, name: &str, default: &str) -> PathBuf {
        PathBuf::from(self.get(name).unwrap_or(default))
    }

    fn number(&self, name: &str, default: u64) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_SECONDS * 1000)
                .ok_or(format!("{name} wants a number, got \"{v}\"")),
        }
    }

    fn pair(&self, name: &str, sep: char) -> Result<Option<(u16, u16)>, String> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let parsed = v
            .split_once(sep)
            .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
        parsed.map(Some).ok_or(format!(
            "{name} wants two numbers like 800{sep}600, got \"{v}\""
        ))
    }

    fn screen(&self) -> Result<ScreenSize, String> {
        let (w, h) = self.pair("--screen", 'x')?.unwrap_or((1024, 768));
        ScreenSize::new(w, h).ok_or(format!("--screen {w}x{h}: both sides must be at least 1"))
    }
}

fn list(o: &Opts) -> Result<(), String> {
    o.check()?;
    let dir = o.path("--dir", DEFAULT_INPUT_DIR);
    let devices = enumerate(&dir).map_err(|e| e.to_string())?;
    if devices.is_empty() {
        println!("no keyboards or pointing devices in {}", dir.display());
    }
    for d in devices {
        let axes = match (d.x_axis, d.y_axis) {
            (Some(x), Some(y)) => format!(" x={}..{} y={}..{}", x.min, x.max, y.min, y.max),
            _ => String::new(),
        };
        println!(
            "{}\t{}\t\"{}\"{axes}",
            d.path.display(),
            d.kind_label(),
            d.name
        );
    }
    Ok(())
}

/// A device session and an expert session joined in memory; the prompts
/// are answered "yes". Returns the device session (it holds the grant) and
/// the control consent it handed out.
fn local_grant() -> Result<(DeviceSession, ControlConsent), String> {
    let now = Instant::now();
    let config = DeviceConfig {
        device_name: "input-probe".into(),
        ..DeviceConfig::default()
    };
    let mut device = DeviceSession::new(now, config, 0);
    let mut expert = ExpertSession::new(now, ExpertConfig::new("input-probe", Auth::Offer));
    let mut control = None;
    let mut requested = false;
    // Each round moves at least one message; a handshake is a few dozen.
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(o) = device.poll_output() {
            moved = true;
            match o {
                DeviceOutput::Send(m) => {
                    let b = encode(&m).map_err(|e| e.to_string())?;
                    expert.handle(now, ExpertInput::Received(b));
                }
                DeviceOutput::Authenticate(_) => {
                    let who = ExpertIdentity {
                        name: "input-probe".into(),
                        method: AuthMethod::Offer {
                            fingerprint: shoulder_proto::Fingerprint([0; 32]),
                        },
                        says: None,
                    };
                    device.handle(now, DeviceInput::AuthDecided(Ok(who)));
                }
                DeviceOutput::ShowPrompt(p) => {
                    let accept = LocalCommand::Answer {
                        prompt: p.id,
                        accept: true,
                    };
                    device.handle(now, DeviceInput::Local(accept));
                }
                DeviceOutput::EnableInjection(t) => control = Some(t),
                _ => {}
            }
        }
        while let Some(e) = expert.poll_output() {
            moved = true;
            if let ExpertEvent::Send(m) = e {
                let b = encode(&m).map_err(|e| e.to_string())?;
                device.handle(now, DeviceInput::Received(b));
            }
        }
        if !moved {
            if let Some(t) = control {
                return Ok((device, t));
            }
            if requested {
                break;
            }
            requested = true;
            expert.handle(now, ExpertInput::Action(UserAction::RequestControl));
        }
    }
    Err("the local session did not grant control".into())
}

fn inject_demo(o: &Opts) -> Result<(), String> {
    o.check()?;
    let uinput = o.path("--uinput", DEFAULT_UINPUT_PATH);
    let screen = o.screen()?;
    let mode = if o.has("--touch") {
        InjectMode::Touch
    } else {
        InjectMode::Pointer
    };
    let pause = Duration::from_millis(o.number("--pause-ms", 200)?);
    let linger = Duration::from_millis(o.number("--linger-ms", 1000)?);
    let (x, y) = o
        .pair("--at", ',')?
        .unwrap_or((screen.width / 2, screen.height / 2));

    let (mut device, consent) = local_grant()?;
    let mut sink = UinputSink::open(&consent, &uinput, mode, screen.width, screen.height)
        .map_err(|e| e.to_string())?;
    for (kind, node) in sink.backend().device_nodes() {
        println!("created {:?} {} \"{}\"", kind, node.display(), kind.name());
    }
    // Give readers (udev, the kiosk app's hot-plug scan) time to open them.
    std::thread::sleep(linger);

    let mut step = |what: &str, events: &[InjectEvent]| -> Result<(), String> {
        for ev in events {
            sink.inject(&consent, *ev)
                .map_err(|e| format!("{what}: {e}"))?;
        }
        println!("{what}");
        std::thread::sleep(pause);
        Ok(())
    };
    let at = |buttons| {
        InjectEvent::Pointer(Pointer {
            x,
            y,
            buttons: Buttons(buttons),
            wheel: 0,
            hwheel: 0,
        })
    };
    let key = |code, down| InjectEvent::Key(Key { code, down });
    step(&format!("pointer to {x},{y}"), &[at(0)])?;
    step(
        &format!("left click at {x},{y}"),
        &[at(Buttons::LEFT), at(0)],
    )?;
    if mode == InjectMode::Touch {
        let t = |phase| {
            InjectEvent::Touch(Touch {
                slot: 1,
                phase,
                x,
                y,
            })
        };
        step(
            &format!("tap at {x},{y}"),
            &[t(TouchPhase::Down), t(TouchPhase::Up)],
        )?;
    }
    const KEY_H: u16 = 35;
    const KEY_I: u16 = 23;
    const KEY_A: u16 = 30;
    step(
        "typed \"hi\"",
        &[
            key(KEY_H, true),
            key(KEY_H, false),
            key(KEY_I, true),
            key(KEY_I, false),
        ],
    )?;
    if o.has("--hold-key") || o.has("--panic") {
        step("holding A", &[key(KEY_A, true)])?;
    }
    if o.has("--panic") {
        // The agent's panic hook: release and destroy before anything else.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            shoulder_input::emergency_release();
            println!("panic hook: released and destroyed the devices");
            default(info);
        }));
        // Keep the sink alive across the panic so only the hook can act.
        std::mem::forget(sink);
        panic!("deliberate panic while holding A (--panic)");
    }

    // The person at the device stops control: the session releases, then
    // withdraws the consent, then disables injection.
    device.handle(
        Instant::now(),
        DeviceInput::Local(LocalCommand::StopControl),
    );
    while let Some(out) = device.poll_output() {
        match out {
            DeviceOutput::ReleaseAll => {
                sink.release_all().map_err(|e| e.to_string())?;
                println!("released everything held");
            }
            DeviceOutput::DisableInjection => {
                match sink.inject(&consent, key(KEY_A, true)) {
                    Err(e) => println!("inject after stop: refused ({e})"),
                    Ok(r) => return Err(format!("inject after stop was not refused: {r:?}")),
                }
                sink.close().map_err(|e| e.to_string())?;
                println!("destroyed the devices");
            }
            _ => {}
        }
    }
    let s = sink.stats();
    println!(
        "stats: injected={} dropped_unknown={} dropped_impossible={} clamped={} refused={}",
        s.injected, s.dropped_unknown, s.dropped_impossible, s.clamped, s.refused
    );
    Ok(())
}

fn watch(o: &Opts) -> Result<(), String> {
    o.check()?;
    let mut config = LocalInputConfig::new(o.screen()?);
    config.dir = o.path("--dir", DEFAULT_INPUT_DIR);
    let seconds = Duration::from_secs(o.number("--seconds", 10)?.min(MAX_SECONDS));
    let grab_for = Duration::from_secs(o.number("--grab-seconds", 0)?.min(MAX_SECONDS));
    let holdback = Duration::from_millis(o.number("--holdback-ms", 750)?);
    let hotkeys = Hotkeys::parse(
        o.get("--stop-hotkey")
            .unwrap_or(shoulder_input::hotkey::DEFAULT_STOP_CONTROL),
        o.get("--end-hotkey")
            .unwrap_or(shoulder_input::hotkey::DEFAULT_END_SESSION),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "hotkeys: stop control {}, end session {}",
        hotkeys.stop_control, hotkeys.end_session
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let mut local = LocalInput::start(config).map_err(|e| e.to_string())?;
        let mut detector = HotkeyDetector::new(hotkeys);
        let mut hb = Holdback::new(holdback);
        let start = tokio::time::Instant::now();
        let end = start + seconds;
        let mut grab = (!grab_for.is_zero()).then(|| local.grab());
        if grab.is_some() {
            println!("grabbing local devices for {}s", grab_for.as_secs());
        }
        loop {
            let now = tokio::time::Instant::now();
            if grab.is_some() && now >= start + grab_for {
                grab = None;
                println!("grab released");
            }
            if now >= end {
                break;
            }
            let mut wake = end;
            if grab.is_some() {
                wake = wake.min(start + grab_for);
            }
            if let Some(t) = hb.poll_timeout() {
                wake = wake.min(tokio::time::Instant::from_std(t));
            }
            tokio::select! {
                ev = local.next() => {
                    let Some(ev) = ev else { break };
                    println!("event {} {:?}", ev.device.0, ev.kind);
                    if ev.kind.is_activity() {
                        hb.local_activity(Instant::now());
                    }
                    if let LocalEventKind::Key { code, down } = ev.kind
                        && let Some(d) = detector.key(code, down)
                    {
                        println!("hotkey {d:?}");
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            hb.handle_timeout(Instant::now());
            while let Some(out) = hb.poll_output() {
                if let HoldbackOutput::LocalUserActive(a) = out {
                    println!("local-user-active {a}");
                }
            }
        }
        let dropped = local.dropped_events();
        if dropped > 0 {
            println!("dropped {dropped} events");
        }
        Ok::<(), String>(())
    })
}

fn dump(args: &[String]) -> Result<(), String> {
    let Some(path) = args.first().filter(|a| !a.starts_with("--")) else {
        return Err(format!("dump needs a device path\n{USAGE}"));
    };
    let o = Opts::parse(&args[1..]);
    o.check()?;
    let seconds = Duration::from_secs(o.number("--seconds", 10)?.min(MAX_SECONDS));
    let mut dev = evdev::Device::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    println!("{path}: \"{}\"", dev.name().unwrap_or(""));
    dev.set_nonblocking(true)
        .map_err(|e| format!("{path}: {e}"))?;
    let end = Instant::now() + seconds;
    while Instant::now() < end {
        match dev.fetch_events() {
            Ok(events) => {
                for e in events {
                    println!("{} {} {}", e.event_type().0, e.code(), e.value());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(())
}
