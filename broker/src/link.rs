//! The connection to the broker: MQTT 5 (rumqttc) over TLS with the
//! client's own certificate, one event loop task that reconnects, a fixed
//! set of subscriptions made after each connect, and messages routed to
//! tunnels by topic.
//!
//! Why MQTT 5: the broker says why it refused something (a PUBACK or
//! SUBACK reason code: "not authorized", "no matching subscribers"), so a
//! wrong ACL or an offline device is a readable error instead of silence,
//! as it is under 3.1.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, LastWill, Packet, PubAckReason, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::tunnel::{Outbox, Sending};

/// Largest MQTT packet either way: a tunnel chunk, its header and topic.
pub const MAX_PACKET: u32 = 64 * 1024;
/// Pause before the first reconnection; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// QoS 1 messages this client may have unacknowledged at the broker: a few
/// tunnels' windows. rumqttc sizes a table for this many up front (216
/// bytes each; its default of 65,535 would cost 13.5 MB per link); beyond
/// it, publishing waits for acknowledgements.
const MAX_INFLIGHT: u16 = 128;
/// Messages for the owner (not for a tunnel) waiting to be read.
const OTHER_QUEUE: usize = 64;

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    /// TLS to the broker: its CA, and our certificate and key.
    pub tls: Arc<rustls::ClientConfig>,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Published by the broker if we vanish (retained).
    pub will: Option<(String, Vec<u8>)>,
    /// Subscribed after every connect.
    pub subscriptions: Vec<String>,
    /// Published (retained) after every connect and subscribe.
    pub announce: Option<(String, Vec<u8>)>,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// How the link is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Connecting,
    /// Connected and subscribed; `generation` counts the connections.
    Up {
        generation: u64,
    },
    /// Not connected (retrying): why.
    Down(String),
    /// Connected, but the broker refused what we need (retrying).
    Refused(String),
}

/// Something the broker said about one of our messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Nobody is subscribed where we published (the peer is not there).
    NoSubscribers,
    /// The broker refused a message: the reason as it gave it.
    Refused(String),
}

/// A message for the owner: its topic and payload.
pub type Message = (String, Bytes);

struct Inner {
    routes: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
    state: watch::Sender<LinkState>,
    notes: broadcast::Sender<Note>,
}

/// A running link. Dropping it stops the event loop (the broker then
/// publishes the will).
pub struct Link {
    client: AsyncClient,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
    label: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("broker", &self.label)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Link {
    /// Starts connecting; messages that no tunnel takes come out of the
    /// returned receiver. Needs a tokio runtime.
    pub fn start(config: LinkConfig) -> (Self, mpsc::Receiver<Message>) {
        let mut opts = MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        opts.set_keep_alive(config.keep_alive);
        opts.set_clean_start(true);
        opts.set_max_packet_size(Some(MAX_PACKET));
        opts.set_outgoing_inflight_upper_limit(MAX_INFLIGHT);
        opts.set_connection_timeout(10);
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(config.tls.clone())));
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        if let Some((topic, payload)) = &config.will {
            opts.set_last_will(LastWill::new(
                topic.clone(),
                payload.clone(),
                QoS::AtLeastOnce,
                true,
                None,
            ));
        }
        let (client, events) = AsyncClient::new(opts, 64);
        let (other_tx, other_rx) = mpsc::channel(OTHER_QUEUE);
        let (notes, _) = broadcast::channel(16);
        let inner = Arc::new(Inner {
            routes: Mutex::new(HashMap::new()),
            state: watch::channel(LinkState::Connecting).0,
            notes,
        });
        let label = format!("{}:{}", config.host, config.port);
        let task = tokio::spawn(drive(
            events,
            client.clone(),
            inner.clone(),
            config,
            other_tx,
        ));
        (
            Self {
                client,
                inner,
                task,
                label,
            },
            other_rx,
        )
    }

    /// `host:port` of the broker.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Follows the link's state.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.inner.state.subscribe()
    }

    /// Hears what the broker says about our messages from now on.
    pub fn notes(&self) -> broadcast::Receiver<Note> {
        self.inner.notes.subscribe()
    }

    /// Waits until the link is up (or `within` passes); the error says why
    /// not.
    pub async fn wait_up(&self, within: Duration) -> Result<u64, String> {
        let mut st = self.state();
        let wait = async {
            loop {
                if let LinkState::Up { generation } = *st.borrow_and_update() {
                    return Ok(generation);
                }
                if st.changed().await.is_err() {
                    return Err("the broker link stopped".to_string());
                }
            }
        };
        match tokio::time::timeout(within, wait).await {
            Ok(r) => r,
            Err(_) => Err(match &*st.borrow() {
                LinkState::Down(e) | LinkState::Refused(e) => e.clone(),
                _ => format!(
                    "no answer from the broker at {} within {within:?}",
                    self.label
                ),
            }),
        }
    }

    /// Messages published on `topic` go to the returned receiver until it
    /// is dropped or the link drops (it then closes).
    pub fn route(&self, topic: &str, capacity: usize) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(capacity);
        lock(&self.inner.routes).insert(topic.to_string(), tx);
        rx
    }

    /// Stops routing `topic`.
    pub fn unroute(&self, topic: &str) {
        lock(&self.inner.routes).remove(topic);
    }

    /// Publishes at QoS 1 (in order with our other publishes).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|e| format!("the broker link is gone: {e}"))
    }

    /// An [`Outbox`] publishing on `topic`.
    pub fn outbox(self: &Arc<Self>, topic: String) -> Arc<dyn Outbox> {
        Arc::new(TopicOutbox {
            link: self.clone(),
            topic,
        })
    }

    /// Says goodbye to the broker (no will) and stops, also when the
    /// broker cannot be reached (the event loop would otherwise go on
    /// retrying).
    pub async fn close(&self) {
        if matches!(*self.inner.state.borrow(), LinkState::Up { .. }) {
            // A full request queue must not hold the goodbye up.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
            // Give the event loop a moment to send it.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                let mut st = self.state();
                while matches!(*st.borrow_and_update(), LinkState::Up { .. }) {
                    if st.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        self.task.abort();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct TopicOutbox {
    link: Arc<Link>,
    topic: String,
}

impl Outbox for TopicOutbox {
    fn send(&self, message: Vec<u8>) -> Sending<'_> {
        Box::pin(async move {
            if !matches!(*self.link.inner.state.borrow(), LinkState::Up { .. }) {
                return Err("the broker link is down".into());
            }
            self.link.publish(&self.topic, message, false).await
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event loop: connects, subscribes, routes, and reconnects with
/// backoff after a failure (every tunnel of the old connection ends).
/// Returns after our DISCONNECT ([`Link::close`]); `other` then closes.
async fn drive(
    mut events: EventLoop,
    client: AsyncClient,
    inner: Arc<Inner>,
    config: LinkConfig,
    other: mpsc::Sender<Message>,
) {
    let mut generation = 0u64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != ConnectReturnCode::Success {
                    continue;
                }
                backoff = FIRST_BACKOFF;
                generation += 1;
                if config.subscriptions.is_empty() {
                    inner.state.send_replace(LinkState::Up { generation });
                    announce(&client, &config);
                } else {
                    let filters = config
                        .subscriptions
                        .iter()
                        .map(|t| Filter::new(t.clone(), QoS::AtLeastOnce));
                    // The request queue is empty right after a connect.
                    if let Err(e) = client.try_subscribe_many(filters) {
                        inner
                            .state
                            .send_replace(LinkState::Down(format!("cannot subscribe: {e}")));
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                // Our only subscribe is the one after connecting.
                let refused: Vec<String> = ack
                    .return_codes
                    .iter()
                    .zip(&config.subscriptions)
                    .filter(|(c, _)| !matches!(c, SubscribeReasonCode::Success(_)))
                    .map(|(c, t)| format!("{t} ({})", sub_reason(c)))
                    .collect();
                if refused.is_empty() {
                    inner.state.send_replace(LinkState::Up { generation });
                    announce(&client, &config);
                } else {
                    let e = format!(
                        "the broker at {}:{} refused to let {} subscribe to {} (fix: check the broker's ACL for this certificate's name; see docs/fleet.md)",
                        config.host,
                        config.port,
                        config.client_id,
                        refused.join(", ")
                    );
                    tracing::error!("{e}");
                    inner.state.send_replace(LinkState::Refused(e));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let route = lock(&inner.routes).get(&topic).cloned();
                match route {
                    Some(tx) => {
                        if tx.try_send(p.payload).is_err() {
                            // Full: the peer sent beyond the window; or
                            // closed: the tunnel is gone.
                            lock(&inner.routes).remove(&topic);
                        }
                    }
                    None => {
                        if other.try_send((topic, p.payload)).is_err() {
                            tracing::debug!("a broker message was dropped: its reader is busy");
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let note = match ack.reason {
                    PubAckReason::Success => None,
                    PubAckReason::NoMatchingSubscribers => Some(Note::NoSubscribers),
                    r => Some(Note::Refused(format!("{r:?}"))),
                };
                if let Some(n) = note {
                    if let Note::Refused(r) = &n {
                        tracing::warn!(reason = %r, "the broker refused a message");
                    }
                    let _ = inner.notes.send(n);
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                let e = format!("the broker disconnected us: {:?}", d.reason_code);
                tracing::warn!("{e}");
                down(&inner, e);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                down(&inner, "closed".into());
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let e = describe(&config, &e);
                tracing::debug!(error = %e, "broker link down");
                down(&inner, e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The link dropped: every tunnel on it ends.
fn down(inner: &Inner, why: String) {
    lock(&inner.routes).clear();
    inner.state.send_replace(LinkState::Down(why));
}

fn announce(client: &AsyncClient, config: &LinkConfig) {
    if let Some((topic, payload)) = &config.announce {
        let _ = client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone());
    }
}

fn sub_reason(c: &SubscribeReasonCode) -> &'static str {
    match c {
        SubscribeReasonCode::NotAuthorized => "not authorized",
        SubscribeReasonCode::TopicFilterInvalid => "topic filter invalid",
        SubscribeReasonCode::QuotaExceeded => "quota exceeded",
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => "wildcards not supported",
        _ => "refused",
    }
}

/// A connection error as a sentence with a fix.
fn describe(config: &LinkConfig, e: &ConnectionError) -> String {
    let at = format!("{}:{}", config.host, config.port);
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker at {at} refused the connection ({code:?}) (fix: check that the broker trusts this certificate's CA and maps its name; see docs/fleet.md)"
        ),
        ConnectionError::Tls(t) => format!(
            "TLS with the broker at {at} failed: {t} (fix: check the broker's certificate and the CA configured for it)"
        ),
        ConnectionError::Io(io) => format!(
            "cannot reach the broker at {at}: {io} (fix: check the address and that the broker runs; a TLS alert here usually means the broker refused this certificate)"
        ),
        ConnectionError::Timeout(_) => format!("no answer from the broker at {at}"),
        other => format!("the broker link to {at} failed: {other}"),
    }
}
