//! Test harness: the real agent (`shoulder_agent::run`) in-process on port 0,
//! with the agent's test pattern, the synthetic kiosk screen whose counter
//! button reacts to injected clicks, or a screen source as the agent's
//! config names one (`capture = "rawfile:…"`, through the agent's own
//! wiring: [`capture_backends`]); its control socket plays the person at
//! the device. The `shoulder` binary runs as a child process, the client
//! library in process ([`session`]).

#![allow(dead_code)]

pub mod session;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shoulder_agent::backends::{
    Backends, CaptureBackend, CaptureError, Captured, InputError, InputSink, LocalEvent,
    NullPresenter, NullSink, ScreenCapture, ViewCheck,
};
use shoulder_agent::control::{Client, Request};
use shoulder_agent::{Config, identity};
use shoulder_capture::synthetic::{Clock, SyntheticControls, SyntheticScreen};
use shoulder_capture::{Encoder, FrameSource, SourceSpec};
use shoulder_proto::consent::{ControlConsent, ViewConsent};
use shoulder_proto::invite::Invitation;
use shoulder_proto::session::InjectEvent;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// The synthetic kiosk screen shared by capture and input.
#[derive(Clone)]
pub struct Synthetic {
    screen: Arc<Mutex<SyntheticScreen>>,
    pub controls: SyntheticControls,
}

impl Synthetic {
    pub fn new(w: u32, h: u32) -> Self {
        // A frozen clock: the screen changes only through input, so the
        // screenshots compare cleanly.
        let screen =
            SyntheticScreen::new(w, h).with_clock(Clock::Fixed(Duration::from_secs(9 * 3600)));
        let controls = screen.controls();
        Self {
            screen: Arc::new(Mutex::new(screen)),
            controls,
        }
    }

    /// The screen as the device shows it now (XRGB8888 rows).
    pub fn frame(&self) -> Vec<u8> {
        let mut screen = self.screen.lock().unwrap_or_else(|p| p.into_inner());
        screen.capture().unwrap().to_xrgb8888()
    }

    /// Backends plus a channel playing the person at the device using
    /// their own touch screen or keyboard.
    pub fn backends_with_local(&self) -> (Backends, tokio::sync::mpsc::Sender<LocalEvent>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut b = self.backends();
        b.local_events = Some(rx);
        (b, tx)
    }

    pub fn backends(&self) -> Backends {
        Backends {
            capture: Arc::new(self.clone()),
            input: Box::new(SyntheticInput(self.controls.clone())),
            presenter: Box::new(NullPresenter),
            local_events: None,
        }
    }
}

struct SyntheticCapture {
    screen: Arc<Mutex<SyntheticScreen>>,
    encoder: Encoder,
}

impl CaptureBackend for Synthetic {
    fn open(&self) -> Result<Box<dyn ScreenCapture>, CaptureError> {
        Ok(Box::new(SyntheticCapture {
            screen: self.screen.clone(),
            encoder: Encoder::new(),
        }))
    }
}

impl ScreenCapture for SyntheticCapture {
    fn capture(&mut self, view: &ViewConsent, full: bool) -> Result<Captured, CaptureError> {
        let mut screen = self.screen.lock().unwrap_or_else(|p| p.into_inner());
        let frame = screen.capture().map_err(|e| CaptureError(e.to_string()))?;
        let update = self
            .encoder
            .encode(view, &frame, full)
            .map_err(|e| CaptureError(e.to_string()))?;
        Ok(match update {
            None => Captured::Unchanged,
            Some(u) => match u.screen {
                Some(info) => Captured::NewScreen(info, u.parts),
                None => Captured::Update(u.parts),
            },
        })
    }

    fn check_view(&mut self, report: &shoulder_proto::ViewReport) -> Option<ViewCheck> {
        Some(self.encoder.check_view(report))
    }
}

/// Injected input goes to the synthetic screen, as a uinput device would
/// reach the kiosk app.
struct SyntheticInput(SyntheticControls);

impl InputSink for SyntheticInput {
    fn inject(&mut self, consent: &ControlConsent, event: &InjectEvent) -> Result<(), InputError> {
        if !consent.is_live() {
            return Err(InputError("control consent withdrawn".into()));
        }
        match *event {
            InjectEvent::Pointer(p) => {
                self.0.pointer(p.x, p.y, p.buttons.0);
            }
            InjectEvent::Key(k) => {
                self.0.key(k.code, k.down);
            }
            InjectEvent::Touch(t) => {
                self.0
                    .touch(t.x, t.y, !matches!(t.phase, shoulder_proto::TouchPhase::Up));
            }
        }
        Ok(())
    }

    fn release_all(&mut self) -> Result<(), InputError> {
        Ok(())
    }
}

/// Backends that capture `spec` (as `capture = "…"` in the agent's config
/// names a source) through the agent's own wiring, the code the agent
/// binary runs; no injection, no banner.
pub fn capture_backends(spec: &str) -> Backends {
    let spec: SourceSpec = spec
        .parse()
        .unwrap_or_else(|e| panic!("capture spec {spec:?}: {e}"));
    Backends {
        capture: Arc::new(shoulder_agent::wiring::Capture { spec }),
        input: Box::new(NullSink),
        presenter: Box::new(NullPresenter),
        local_events: None,
    }
}

/// An agent running in this process.
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub fingerprint: shoulder_proto::Fingerprint,
    pub control: PathBuf,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shoulder_agent::AgentError>>>,
}

/// The config tests start from: enabled, loopback, fast argon2.
pub fn test_config(dir: &Path, plant_ca: Option<&Path>) -> Config {
    let mut c = Config {
        enabled: true,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        advertise: vec!["127.0.0.1".into()],
        state_dir: dir.join("state"),
        audit_log: dir.join("audit.jsonl"),
        control_socket: dir.join("run/control.sock"),
        device_name: "test-kiosk".into(),
        consent_timeout: Duration::from_secs(30),
        auth_failures_per_minute: 1000,
        ..Config::default()
    };
    c.argon2.memory_kib = 1024;
    c.argon2.iterations = 1;
    if let Some(p) = plant_ca {
        c.plant_ca = vec![p.to_owned()];
    }
    c
}

impl Agent {
    pub async fn start(
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_prepared(plant_ca, backends, tweak, |_| {}).await
    }

    /// Like [`Agent::start`], running `prepare` on the state directory
    /// after the device key exists and before the agent loads it (e.g. to
    /// install a plant-signed certificate).
    pub async fn start_prepared(
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), plant_ca);
        tweak(&mut config);
        identity::ensure(&config.state_dir, "test-kiosk").unwrap();
        prepare(&config.state_dir);
        let id = identity::load(&config.state_dir).unwrap();
        let listeners = shoulder_agent::bind(&config.listen).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel();
        let cfg = config.clone();
        let task = tokio::spawn(async move {
            shoulder_agent::run(listeners, cfg, backends, async {
                let _ = stop_rx.await;
            })
            .await
        });
        let control = config.control_socket.clone();
        let t0 = Instant::now();
        while Client::connect(&control).await.is_err() {
            assert!(t0.elapsed() < WAIT, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Agent {
            addr,
            fingerprint: id.fingerprint,
            control,
            config,
            dir,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// An agent showing the agent's small test pattern.
    pub async fn pattern(plant_ca: Option<&Path>, tweak: impl FnOnce(&mut Config)) -> Self {
        let (backends, _sink) = Backends::for_tests(64, 48);
        Self::start(plant_ca, backends, tweak).await
    }

    pub async fn ctl(&self) -> Client {
        Client::connect(&self.control).await.unwrap()
    }

    pub async fn ctl_ok(&self, req: Request) -> Value {
        let mut c = self.ctl().await;
        let r = c.request(&req).await.unwrap();
        assert_eq!(r["ok"], true, "{req:?} failed: {r}");
        r
    }

    /// Creates an invitation; returns (id, file text).
    pub async fn invite(&self, expires: &str, password: &str) -> (String, String) {
        let r = self
            .ctl_ok(Request::Invite {
                expires: expires.into(),
                password: Some(password.into()),
            })
            .await;
        (
            r["id"].as_str().unwrap().to_string(),
            r["file"].as_str().unwrap().to_string(),
        )
    }

    /// Plays the person at the device: answers the next `n` consent prompts.
    pub async fn answer_prompts(&self, n: usize, accept: bool) -> JoinHandle<()> {
        let mut c = self.ctl().await;
        // Subscribe before returning, so no prompt is missed.
        let _ = c.request(&Request::Status).await;
        tokio::spawn(async move {
            for _ in 0..n {
                if c.wait_event("consent-requested").await.is_err() {
                    return;
                }
                let req = if accept {
                    Request::Accept { prompt: None }
                } else {
                    Request::Decline { prompt: None }
                };
                let _ = c.request(&req).await;
            }
        })
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, t).await;
        }
    }
}

/// A scratch directory with an isolated config dir for the client.
pub struct Expert {
    pub dir: tempfile::TempDir,
}

impl Expert {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_shoulder"));
        c.args(args)
            .env("SHOULDER_CONFIG_DIR", self.path("config"))
            .stdin(std::process::Stdio::null());
        c
    }

    /// Runs `shoulder ARGS` to completion off the async runtime.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last line of stderr: the sentence the user reads.
pub fn sentence(o: &Output) -> String {
    stderr(o).lines().last().unwrap_or("").to_string()
}

/// A PNG file as (width, height, RGB bytes): grey, alpha and 16-bit
/// images are brought to 8-bit RGB.
pub fn read_png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut d = png::Decoder::new(std::io::BufReader::new(file));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .flat_map(|p| match channels {
            1 | 2 => [p[0], p[0], p[0]],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    (info.width, info.height, rgb)
}

/// A device frame (XRGB8888: bytes B, G, R, X) as RGB bytes.
pub fn frame_rgb(frame: &[u8]) -> Vec<u8> {
    frame
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}

pub fn assert_fails_with(o: &Output, expected: &str) {
    assert!(!o.status.success(), "expected a failure, got {o:?}");
    assert_eq!(sentence(o), expected, "full stderr:\n{}", stderr(o));
}

/// A TCP relay in front of the agent. `cut()` ends every live connection
/// at once (both sockets dropped); `refuse(true)` makes new connections
/// fail as if the device were unreachable; `retarget()` sends new
/// connections to another device, as a machine taking over the address.
pub struct Relay {
    pub addr: SocketAddr,
    to: Arc<Mutex<SocketAddr>>,
    cut: watch::Sender<u64>,
    refuse: Arc<AtomicBool>,
    /// Connections relayed so far.
    pub accepted: Arc<AtomicUsize>,
}

impl Relay {
    pub async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(0u64);
        let refuse = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let to = Arc::new(Mutex::new(to));
        let (cut2, refuse2, accepted2) = (cut.clone(), refuse.clone(), accepted.clone());
        let to2 = to.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if refuse2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                accepted2.fetch_add(1, Ordering::SeqCst);
                let mut cut_rx = cut2.subscribe();
                let to = *to2.lock().unwrap();
                tokio::spawn(async move {
                    let Ok(device) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut dr, mut dw) = device.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut dw) => {}
                        _ = tokio::io::copy(&mut dr, &mut cw) => {}
                        _ = cut_rx.changed() => {}
                    }
                    // Dropping the halves closes both connections.
                });
            }
        });
        Relay {
            addr,
            to,
            cut,
            refuse,
            accepted,
        }
    }

    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    pub fn retarget(&self, to: SocketAddr) {
        *self.to.lock().unwrap() = to;
    }

    /// Points an invitation at the relay instead of the agent.
    pub fn redirect(&self, inv: &mut Invitation) {
        inv.addresses.clear();
        inv.addresses
            .push(shoulder_proto::text("127.0.0.1"))
            .expect("one address fits");
        inv.port = self.addr.port();
    }
}
