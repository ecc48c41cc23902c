//! A session of the client library (`shoulder::client::run`, in-process)
//! against the real agent, through a relay, with its events kept for the
//! test to wait on.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shoulder::client::{self, ClientEvent, ConnectOptions, SharedView};
use shoulder::error::ClientError;
use shoulder::target::Target;
use shoulder::trust::AcceptNew;
use shoulder_agent::control::Request;
use shoulder_proto::session::UserAction;
use tokio::sync::mpsc;

use crate::agent::{Agent, WAIT};
use crate::relay::Relay;
use crate::synthetic::Synthetic;

pub const PW: &str = "blue-harbour-42";

/// Answers every consent prompt with yes and counts them.
pub async fn accept_all(agent: &Agent) -> Arc<AtomicUsize> {
    let prompts = Arc::new(AtomicUsize::new(0));
    let mut c = agent.ctl().await;
    let _ = c.request(&Request::Status).await;
    let p = prompts.clone();
    tokio::spawn(async move {
        while c.wait_event("consent-requested").await.is_ok() {
            p.fetch_add(1, Ordering::SeqCst);
            let _ = c.request(&Request::Accept { prompt: None }).await;
        }
    });
    prompts
}

/// Whether `e` says the expert views the screen (with or without control).
pub fn viewing(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::State(s) if crate::expert::viewing(*s))
}

/// Whether `e` says the expert has control.
pub fn controlling(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::State(s) if crate::expert::control_granted(*s))
}

/// A session through `relay` on an invitation of `agent`.
#[derive(Debug)]
pub struct Session {
    pub actions: mpsc::Sender<UserAction>,
    pub view: SharedView,
    pub events: mpsc::UnboundedReceiver<(Instant, ClientEvent)>,
    pub seen: Vec<ClientEvent>,
}

impl Session {
    pub async fn start(agent: &Agent, relay: &Relay) -> Self {
        let (_, file) = agent.invite_file("30m", PW).await;
        let dir = tempfile::Builder::new()
            .prefix("shoulder-session-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("kiosk.shoulder");
        std::fs::write(&path, file).unwrap();
        let Target::Invitation(mut inv) = Target::parse(path.to_str().unwrap()).unwrap() else {
            panic!("not an invitation");
        };
        relay.redirect(&mut inv);
        let opts = ConnectOptions {
            target: Target::Invitation(inv),
            password: Some(PW.into()),
            identity: None,
            accept_new: AcceptNew::Ask,
            known_hosts: None,
            name: "Ann Expert".into(),
            lossless: false,
            broker: None,
            listen: None,
        };
        Self::with_options(opts)
    }

    /// A session with these options (an offer, a route through a broker).
    pub fn with_options(opts: ConnectOptions) -> Self {
        let view = SharedView::default();
        let (tx, rx) = mpsc::channel(client::ACTION_QUEUE);
        let (etx, erx) = mpsc::unbounded_channel();
        let emit = Box::new(move |e: ClientEvent| {
            let _ = etx.send((Instant::now(), e));
        });
        tokio::spawn(client::run(opts, view.clone(), rx, emit));
        Session {
            actions: tx,
            view,
            events: erx,
            seen: Vec::new(),
        }
    }

    /// Waits for an event `pred` accepts (within `within`), keeping all.
    pub async fn wait(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&ClientEvent) -> bool,
    ) -> (Instant, ClientEvent) {
        let t0 = Instant::now();
        loop {
            let left = within.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((at, e))) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return (at, e);
                    }
                    if let ClientEvent::Ended(end) = &e {
                        panic!("session ended while waiting for {what}: {end:?}");
                    }
                }
                Ok(None) => panic!("event stream closed while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {within:?}; events so far: {:?}",
                    self.seen
                ),
            }
        }
    }

    pub async fn ended(&mut self, within: Duration) -> (Instant, Option<ClientError>) {
        let t0 = Instant::now();
        loop {
            let left = within.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some((at, ClientEvent::Ended(end)))) => return (at, end),
                Ok(Some((_, e))) => self.seen.push(e),
                _ => panic!("the session did not end within {within:?}: {:?}", self.seen),
            }
        }
    }

    /// A left click (press and release) at (x, y) of the device screen.
    pub async fn click(&self, x: u16, y: u16) {
        for buttons in [1, 0] {
            self.actions
                .send(UserAction::Pointer(shoulder_proto::Pointer {
                    x,
                    y,
                    buttons: shoulder_proto::Buttons(buttons),
                    wheel: 0,
                    hwheel: 0,
                }))
                .await
                .unwrap();
        }
    }

    /// Waits until the expert's view is exactly the device's screen.
    pub async fn in_sync(&self, screen: &Synthetic) {
        let t0 = Instant::now();
        loop {
            let want = screen.frame();
            let got = self.view.lock().fb.as_ref().map(|fb| fb.normalized());
            if got.as_deref() == Some(&want[..]) {
                return;
            }
            assert!(t0.elapsed() < WAIT, "the view never matched the screen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
