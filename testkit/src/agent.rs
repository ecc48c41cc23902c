//! The agent in process: the real `shoulder_agent::run` on port 0 of
//! loopback, in a temporary directory, with the agent's test pattern and
//! recording input sink ([`Agent::start`]) or any backends
//! ([`Agent::with_backends`]), or `shoulder_agent::run_on` serving the
//! connections a test hands it, e.g. from the network simulator
//! ([`Agent::on_streams`]); its control socket plays the person at the
//! device.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoulder_agent::backends::{Backends, CallLog, CaptureBackend, LocalEvent};
use shoulder_agent::control::{Client, Request};
use shoulder_agent::service::Incoming;
use shoulder_agent::{Config, identity};
use shoulder_proto::{Fingerprint, InvitationId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Generous bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(30);

/// Width and height of the agent's test pattern.
const PATTERN: (u16, u16) = (64, 48);

/// An agent running in this process.
#[derive(Debug)]
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    /// What the agent injected; records nothing when the test brought its
    /// own backends ([`Agent::with_backends`]).
    pub sink: CallLog,
    /// Banner taps, hotkeys and local activity, as the local backends send
    /// them; reaches the agent only when the harness made the backends
    /// ([`Agent::start`], [`Agent::pattern`], [`Agent::start_with_capture`]).
    pub local: mpsc::Sender<LocalEvent>,
    pub control: PathBuf,
    pub audit: PathBuf,
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), shoulder_agent::AgentError>>>,
}

/// Where the agent takes its connections from.
enum Listen {
    /// TCP listeners on `Config::listen` (port 0 of loopback unless a
    /// tweak says otherwise): `shoulder_agent::run`.
    Tcp,
    /// The connections received on `incoming`, the agent saying it listens
    /// on `addrs`: `shoulder_agent::run_on`.
    Streams {
        incoming: mpsc::Receiver<Incoming>,
        addrs: Vec<SocketAddr>,
    },
}

/// The config every test starts from: enabled, loopback (also advertised),
/// fast argon2, the plant CA in `plant_ca`.
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
    /// The test pattern and a recording sink; `ca_pem` is the plant CA.
    pub async fn start(ca_pem: Option<&str>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_capture(ca_pem, tweak, None).await
    }

    /// Like [`Agent::start`], with another screen source than the pattern.
    pub async fn start_with_capture(
        ca_pem: Option<&str>,
        tweak: impl FnOnce(&mut Config),
        capture: Option<Arc<dyn CaptureBackend>>,
    ) -> Self {
        let dir = temp_dir();
        let plant_ca = ca_pem.map(|pem| {
            let p = dir.path().join("plant-ca.pem");
            std::fs::write(&p, pem).unwrap();
            p
        });
        Self::launch_pattern(dir, plant_ca.as_deref(), capture, tweak).await
    }

    /// The test pattern, with the plant CA in the file `plant_ca`.
    pub async fn pattern(plant_ca: Option<&Path>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::launch_pattern(temp_dir(), plant_ca, None, tweak).await
    }

    /// The test's own backends, with the plant CA in the file `plant_ca`.
    pub async fn with_backends(
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::with_backends_prepared(plant_ca, backends, tweak, |_| {}).await
    }

    /// The test's own backends, serving the connections received on
    /// `incoming` (`shoulder_agent::run_on`) as if it listened on `addrs`
    /// (also its [`Agent::addr`] and `Config::listen`); the plant CA in the
    /// file `plant_ca`.
    pub async fn on_streams(
        incoming: mpsc::Receiver<Incoming>,
        addrs: Vec<SocketAddr>,
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let listen = Listen::Streams { incoming, addrs };
        Self::launch_own(listen, plant_ca, backends, tweak, |_| {}).await
    }

    /// Like [`Agent::with_backends`], running `prepare` on the state
    /// directory after the device key exists and before the agent loads it
    /// (e.g. to install a plant-signed certificate).
    pub async fn with_backends_prepared(
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
        prepare: impl FnOnce(&Path),
    ) -> Self {
        Self::launch_own(Listen::Tcp, plant_ca, backends, tweak, prepare).await
    }

    /// A device whose certificate `pki`'s CA signed for `name` (as `shoulder
    /// pki sign-device` does: the plant and the broker know it by that
    /// name), trusting that CA for offers, with `backends` and `tweak`.
    pub async fn plant_signed(
        pki: &crate::pki::Pki,
        backends: Backends,
        name: &str,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let ca_dir = pki.ca_dir();
        let ca_crt = ca_dir.join("ca.crt");
        let name = name.to_string();
        Self::with_backends_prepared(Some(&ca_crt), backends, tweak, move |state| {
            let csr = state.join("device.csr");
            identity::csr_for_existing(state, &name, &csr).unwrap();
            let pem = std::fs::read_to_string(&csr).unwrap();
            let crt = shoulder::identity::sign_device(&ca_dir, &pem, 30).unwrap();
            std::fs::write(state.join("device.crt"), crt).unwrap();
        })
        .await
    }

    /// The harness's backends: the test pattern (or `capture`), a recording
    /// sink and a local-event channel.
    async fn launch_pattern(
        dir: tempfile::TempDir,
        plant_ca: Option<&Path>,
        capture: Option<Arc<dyn CaptureBackend>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let (mut backends, sink, local) = pattern_backends();
        if let Some(c) = capture {
            backends.capture = c;
        }
        Self::launch(
            Listen::Tcp,
            dir,
            plant_ca,
            backends,
            sink,
            local,
            tweak,
            |_| {},
        )
        .await
    }

    /// The test's own backends: they bring their own local source, or none,
    /// and what they inject is theirs to record.
    async fn launch_own(
        listen: Listen,
        plant_ca: Option<&Path>,
        backends: Backends,
        tweak: impl FnOnce(&mut Config),
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let (local, _) = mpsc::channel(1);
        let sink = CallLog::default();
        let dir = temp_dir();
        Self::launch(listen, dir, plant_ca, backends, sink, local, tweak, prepare).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        listen: Listen,
        dir: tempfile::TempDir,
        plant_ca: Option<&Path>,
        backends: Backends,
        sink: CallLog,
        local: mpsc::Sender<LocalEvent>,
        tweak: impl FnOnce(&mut Config),
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let mut config = test_config(dir.path(), plant_ca);
        if let Listen::Streams { addrs, .. } = &listen {
            config.listen.clone_from(addrs);
        }
        tweak(&mut config);
        identity::ensure(&config.state_dir, "test-kiosk").unwrap();
        prepare(&config.state_dir);
        let id = identity::load(&config.state_dir).unwrap();
        let (stop_tx, stop_rx) = oneshot::channel();
        let stopped = async move {
            let _ = stop_rx.await;
        };
        let cfg = config.clone();
        let (addr, task) = match listen {
            Listen::Tcp => {
                let listeners = shoulder_agent::bind(&config.listen).unwrap();
                let addr = listeners[0].local_addr().unwrap();
                let run = shoulder_agent::run(listeners, cfg, backends, stopped);
                (addr, tokio::spawn(run))
            }
            Listen::Streams { incoming, addrs } => {
                let addr = addrs[0];
                let run = shoulder_agent::run_on(incoming, addrs, cfg, backends, stopped);
                (addr, tokio::spawn(run))
            }
        };
        let control = config.control_socket.clone();
        // Wait for the control socket: the agent is then serving.
        let t0 = Instant::now();
        while Client::connect(&control).await.is_err() {
            assert!(t0.elapsed() < WAIT, "agent did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Agent {
            addr,
            fingerprint: id.fingerprint,
            sink,
            audit: config.audit_log.clone(),
            local,
            control,
            config,
            dir,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    pub async fn ctl(&self) -> Client {
        Client::connect(&self.control).await.unwrap()
    }

    /// Sends a control request and asserts it succeeded.
    pub async fn ctl_ok(&self, req: Request) -> Value {
        let mut c = self.ctl().await;
        let r = c.request(&req).await.unwrap();
        assert_eq!(r["ok"], true, "{req:?} failed: {r}");
        r
    }

    /// Creates an invitation through the control socket.
    pub async fn invite(&self, expires: &str, password: &str) -> InvitationId {
        let r = self.invite_request(expires, password).await;
        let inv =
            shoulder_proto::invite::Invitation::from_text(r["text"].as_str().unwrap()).unwrap();
        assert_eq!(inv.fingerprint, self.fingerprint);
        inv.id
    }

    /// Creates an invitation; returns (id, file text).
    pub async fn invite_file(&self, expires: &str, password: &str) -> (String, String) {
        let r = self.invite_request(expires, password).await;
        (
            r["id"].as_str().unwrap().to_string(),
            r["file"].as_str().unwrap().to_string(),
        )
    }

    async fn invite_request(&self, expires: &str, password: &str) -> Value {
        self.invite_for(expires, password, None).await
    }

    /// Creates an invitation made for `for_whom` (`ctl invite --for`); the
    /// reply.
    pub async fn invite_for(&self, expires: &str, password: &str, for_whom: Option<&str>) -> Value {
        self.ctl_ok(Request::Invite {
            expires: expires.into(),
            password: Some(password.into()),
            for_whom: for_whom.map(str::to_owned),
        })
        .await
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

    /// Stops the agent, asserting it ends cleanly within [`WAIT`]; returns
    /// the audit log's records.
    pub async fn stop(self) -> Vec<Value> {
        self.stop_with_pre_auth().await.0
    }

    /// Like [`Agent::stop`], also returning the records of the pre-auth
    /// log (read before the agent's directory goes).
    pub async fn stop_with_pre_auth(mut self) -> (Vec<Value>, Vec<Value>) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let pre_auth = shoulder_agent::admission::pre_auth_log_path(&self.audit);
        (audit_records(&self.audit), audit_records(&pre_auth))
    }

    /// Asks the agent to stop and gives it `within` to end, without judging
    /// how it ends: for runs that report what happened rather than assert
    /// it. The agent's directory stays until the [`Agent`] is dropped.
    pub async fn shut_down(&mut self, within: Duration) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(within, t).await;
        }
    }

    pub fn audit_records(&self) -> Vec<Value> {
        audit_records(&self.audit)
    }
}

/// The agent's test pattern, a recording sink and a local-event channel.
fn pattern_backends() -> (Backends, CallLog, mpsc::Sender<LocalEvent>) {
    let (mut backends, sink) = Backends::for_tests(PATTERN.0, PATTERN.1);
    let (local, local_rx) = mpsc::channel(16);
    backends.local_events = Some(local_rx);
    (backends, sink, local)
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shoulder-agent-")
        .tempdir()
        .unwrap()
}

/// Parses the audit log, asserting every line is whole JSON.
pub fn audit_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "audit log ends mid-line"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// The events of one session in the audit log, by name.
pub fn session_events(records: &[Value], session: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["session"] == session)
        .map(|r| r["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits for a control-socket event named `name`.
pub async fn event(client: &mut Client, name: &str) -> Value {
    tokio::time::timeout(WAIT, client.wait_event(name))
        .await
        .unwrap_or_else(|_| panic!("no {name} event"))
        .unwrap()
}

/// The id of the prompt open now, from `status` (waits for one).
pub async fn open_prompt(agent: &Agent) -> shoulder_proto::session::PromptId {
    let t0 = Instant::now();
    loop {
        let st = agent.ctl_ok(Request::Status).await;
        if let Some(id) = st["session"]["prompt"]["id"].as_u64() {
            return shoulder_proto::session::PromptId(id);
        }
        assert!(t0.elapsed() < WAIT, "no prompt opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
