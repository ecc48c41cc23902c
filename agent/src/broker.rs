//! `[broker]`: the device's link to the plant's MQTT broker. Experts who
//! cannot reach the device open tunnels through it; each tunnel is served
//! like an accepted TCP connection (the same TLS, authentication, consent
//! and audit). The link also keeps the device's presence record.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoulder_broker::device::{self, Accepted};
use shoulder_broker::{Link, LinkConfig, LinkState, Presence, Topics};
use tokio::sync::{mpsc, watch};

use crate::AgentError;
use crate::config::{BrokerConfig, Config};
use crate::identity::DeviceIdentity;
use crate::service::{Incoming, Stream};

/// Tunnels accepted and not yet taken by the service.
const ACCEPT_QUEUE: usize = 4;

/// The running link; [`BrokerLink::close`] marks the device offline.
#[derive(Debug)]
pub struct BrokerLink {
    link: Arc<Link>,
    topics: Topics,
    /// The device's name at the broker (its certificate's CN).
    pub device: String,
    offline: Vec<u8>,
    /// The device's help request record (empty: none), published retained.
    pub help: watch::Sender<Vec<u8>>,
}

fn bad(detail: String) -> AgentError {
    AgentError::Broker(detail)
}

/// Starts the link for `[broker]`: connections through it come out of the
/// returned receiver. Fails on settings that cannot work; an unreachable
/// broker is retried in the background (direct connections are served
/// meanwhile).
pub fn start(
    config: &Config,
    broker: &BrokerConfig,
    identity: &DeviceIdentity,
    hub: Arc<crate::hub::Hub>,
) -> Result<(BrokerLink, mpsc::Receiver<Incoming>), AgentError> {
    let (host, port) = shoulder_broker::parse_address(&broker.address)
        .map_err(|e| bad(format!("[broker] address: {e}")))?;
    let topics = Topics::new(&broker.prefix).map_err(|e| bad(format!("[broker] prefix: {e}")))?;
    let leaf = identity
        .chain
        .first()
        .ok_or_else(|| bad("the device certificate is empty".into()))?;
    let ee = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| bad(format!("the device certificate cannot be read: {e}")))?;
    let device = crate::tls::common_name(ee.subject()).ok_or_else(|| {
        bad("the device certificate has no single common name; the broker knows the device by it (fix: issue the device certificate with one CN)".into())
    })?;
    shoulder_broker::topics::check_name(&device).map_err(|e| {
        bad(format!(
            "the device certificate's name: {e} (fix: issue it with a plainer CN)"
        ))
    })?;
    let ca_files = if broker.ca.is_empty() {
        &config.plant_ca
    } else {
        &broker.ca
    };
    if ca_files.is_empty() {
        return Err(bad(
            "no CA to check the broker's certificate with (fix: set [broker] ca, or plant_ca)"
                .into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for f in ca_files {
        for c in crate::tls::read_ca_file(f)? {
            roots.add(c).map_err(|e| {
                bad(format!(
                    "{}: a CA certificate cannot be used: {e}",
                    f.display()
                ))
            })?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            bad(format!(
                "the device key cannot be used with the broker: {e}"
            ))
        })?;
    let record = |online| Presence {
        online,
        name: config.device_name(),
        site: broker.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        offers: config.allow_offers,
        invitations: config.allow_invitations,
        control: config.allow_control,
    };
    let online = serde_json::to_vec(&record(true)).map_err(|e| bad(e.to_string()))?;
    let offline = serde_json::to_vec(&record(false)).map_err(|e| bad(e.to_string()))?;
    let presence = topics.presence(&device);
    let (link, other) = Link::start(LinkConfig {
        host: host.clone(),
        port,
        tls: Arc::new(tls),
        client_id: format!("shoulder-dev-{device}"),
        keep_alive: broker.keepalive,
        will: Some((presence.clone(), offline.clone())),
        subscriptions: vec![topics.open(&device), topics.all_to_device(&device)],
        announce: Some((presence, online)),
    });
    let link = Arc::new(link);
    // The connection a refusal was heard on (0: none): its "up" must not
    // hide the refusal, whichever task runs first.
    let refused_on = Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(log_state(
        link.state(),
        link.label().to_string(),
        hub.clone(),
        refused_on.clone(),
    ));
    tokio::spawn(watch_refusals(
        link.notes(),
        link.state(),
        link.label().to_string(),
        device.clone(),
        hub,
        refused_on,
    ));
    let (accepted_tx, mut accepted) = mpsc::channel::<Accepted>(ACCEPT_QUEUE);
    tokio::spawn(device::serve(
        link.clone(),
        other,
        topics.clone(),
        device.clone(),
        accepted_tx,
    ));
    // Connections through the broker are counted as coming from the
    // broker's address (port 0) for the pre-authentication limits.
    let (tx, rx) = mpsc::channel::<Incoming>(ACCEPT_QUEUE);
    tokio::spawn(async move {
        let mut peer: Option<SocketAddr> = None;
        while let Some(a) = accepted.recv().await {
            if peer.is_none() {
                peer = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .map(|a| SocketAddr::new(a.ip(), 0));
            }
            tracing::info!(expert = %a.expert, "a session through the broker");
            let from = peer.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            if tx
                .send((Box::new(a.stream) as Box<dyn Stream>, from))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let (help, help_rx) = watch::channel(Vec::new());
    tokio::spawn(publish_help(link.clone(), topics.help(&device), help_rx));
    Ok((
        BrokerLink {
            link,
            topics,
            device,
            offline,
            help,
        },
        rx,
    ))
}

impl BrokerLink {
    /// Marks the device offline and says goodbye to the broker.
    pub async fn close(self) {
        if matches!(*self.link.state().borrow(), LinkState::Up { .. }) {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.link
                    .publish(&self.topics.presence(&self.device), self.offline, true),
            )
            .await;
        }
        self.link.close().await;
    }
}

/// Keeps the device's help topic showing its help request: published
/// retained at each change and again whenever the link comes up (a broker
/// without persistence forgets it on restart). Ends when the help desk
/// does.
async fn publish_help(link: Arc<Link>, topic: String, mut help: watch::Receiver<Vec<u8>>) {
    let mut state = link.state();
    let mut published: Option<(Vec<u8>, u64)> = None;
    loop {
        let generation = match &*state.borrow_and_update() {
            LinkState::Up { generation } => Some(*generation),
            _ => None,
        };
        let want = help.borrow_and_update().clone();
        if let Some(g) = generation
            && published.as_ref() != Some(&(want.clone(), g))
        {
            // An empty retained message clears the topic; nothing to clear
            // on a first connection.
            if (!want.is_empty() || published.is_some())
                && link.publish(&topic, want.clone(), true).await.is_err()
            {
                tracing::warn!(
                    "the help request could not be published; retrying when the broker link is back"
                );
            }
            published = Some((want, g));
        }
        tokio::select! {
            r = help.changed() => if r.is_err() { return },
            r = state.changed() => if r.is_err() { return },
        }
    }
}

/// A broker that takes the device's connection but refuses its messages
/// (a Mosquitto ACL that does not give the device its own tree: MQTT 5
/// says "not authorized" for each) makes the device useless there: say so
/// in `ctl status` and the log, with the fix.
async fn watch_refusals(
    mut notes: tokio::sync::broadcast::Receiver<shoulder_broker::Note>,
    state: watch::Receiver<LinkState>,
    broker: String,
    device: String,
    hub: Arc<crate::hub::Hub>,
    refused_on: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        match notes.recv().await {
            Ok(shoulder_broker::Note::Refused(reason)) => {
                if let LinkState::Up { generation } = *state.borrow() {
                    refused_on.store(generation, std::sync::atomic::Ordering::SeqCst);
                }
                let e = format!(
                    "the broker at {broker} refused a message from this device ({reason}) (fix: check the broker's ACL for the name {device}: it must own shoulder/dev/{device}/#; see docs/fleet.md)"
                );
                tracing::error!("{e}");
                hub.set_broker_state("refused", Some(&e));
            }
            Ok(shoulder_broker::Note::NoSubscribers) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Logs the link going up and down (once per change), and keeps `ctl
/// status` saying how it is.
async fn log_state(
    mut st: tokio::sync::watch::Receiver<LinkState>,
    broker: String,
    hub: Arc<crate::hub::Hub>,
    refused_on: Arc<std::sync::atomic::AtomicU64>,
) {
    loop {
        let s = st.borrow_and_update().clone();
        match s {
            LinkState::Up { generation } => {
                tracing::info!(%broker, "connected to the broker");
                if refused_on.load(std::sync::atomic::Ordering::SeqCst) != generation {
                    hub.set_broker_state("up", None);
                }
            }
            LinkState::Down(e) => {
                tracing::warn!(%broker, "broker link down: {e}");
                hub.set_broker_state("down", Some(&e));
            }
            LinkState::Refused(e) => {
                tracing::error!(%broker, "{e}");
                hub.set_broker_state("refused", Some(&e));
            }
            LinkState::Connecting => hub.set_broker_state("connecting", None),
        }
        if st.changed().await.is_err() {
            return;
        }
    }
}
