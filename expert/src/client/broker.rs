//! Reaching a device through the plant's MQTT broker: the session's TLS
//! runs over a tunnel (see `shoulder-broker`) instead of TCP; everything
//! above it (device pinning, consent, resume) is the same.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use shoulder_broker::expert::OpenError;
use shoulder_broker::{Link, LinkConfig, Topics};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use crate::error::ClientError;
use crate::identity::Identity;

/// MQTT keep-alive of the expert's link.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The plant's broker, as `--broker` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRoute {
    pub host: String,
    pub port: u16,
    /// Topic prefix (the devices' `[broker] prefix`).
    pub prefix: String,
    /// CA certificates (PEM) of the broker's certificate; `None`: the
    /// identity's plant CA.
    pub ca: Option<PathBuf>,
}

impl BrokerRoute {
    /// `host[:port]` with the default prefix.
    pub fn parse(address: &str) -> Result<Self, ClientError> {
        let (host, port) = shoulder_broker::parse_address(address)
            .map_err(|e| ClientError::Local(format!("{}.", capitalize(&e))))?;
        Ok(Self {
            host,
            port,
            prefix: "shoulder".into(),
            ca: None,
        })
    }

    /// `host:port`.
    pub fn label(&self) -> String {
        crate::target::host_port(&self.host, self.port)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A tunnel to a device, keeping its broker link alive.
#[derive(Debug)]
pub struct BrokerStream {
    stream: DuplexStream,
    _link: Arc<Link>,
}

impl AsyncRead for BrokerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// TLS to the broker: its CA, our expert certificate.
fn tls(route: &BrokerRoute, identity: &Identity) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match &route.ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Local(format!("Cannot read the broker CA {}: {e}.", path.display()))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| {
                    ClientError::Local(format!("{} is not a PEM certificate file: {e}.", path.display()))
                })?;
                roots.add(c).map_err(|e| {
                    ClientError::Local(format!("{}: a certificate cannot be used: {e}.", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(ClientError::Local(format!(
                    "{} holds no certificate — point --broker-ca at the CA that signed the broker's certificate.",
                    path.display()
                )));
            }
            Arc::new(roots)
        }
        None => identity.plant_ca.clone().ok_or_else(|| {
            ClientError::Local(format!(
                "No CA to check the broker's certificate with: the identity in {} has no ca.crt — pass --broker-ca FILE.",
                identity.dir.display()
            ))
        })?,
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls {
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| {
            ClientError::Local(format!(
                "The identity in {} cannot be used with the broker: {e}.",
                identity.dir.display()
            ))
        })
}

/// A random suffix: one expert may run several clients at once, and a
/// broker drops the older of two clients with the same id.
fn client_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 6];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Starts a link to the broker as `identity`, subscribed to `subscriptions`.
pub fn link(
    route: &BrokerRoute,
    identity: &Identity,
    subscriptions: Vec<String>,
) -> Result<
    (
        Arc<Link>,
        tokio::sync::mpsc::Receiver<shoulder_broker::link::Message>,
    ),
    ClientError,
> {
    let (link, other) = Link::start(LinkConfig {
        host: route.host.clone(),
        port: route.port,
        tls: Arc::new(tls(route, identity)?),
        client_id: format!("shoulder-exp-{}-{}", identity.name, client_suffix()),
        keep_alive: KEEP_ALIVE,
        will: None,
        subscriptions,
        announce: None,
    });
    Ok((Arc::new(link), other))
}

/// How long the device list waits for more records once they stop coming.
pub const DIRECTORY_QUIET: Duration = Duration::from_millis(500);

/// Reads the device list (presence records and open help requests) from
/// the broker.
pub async fn read_directory(
    route: &BrokerRoute,
    identity: &Identity,
) -> Result<shoulder_broker::Directory, ClientError> {
    let topics = Topics::new(&route.prefix)
        .map_err(|e| ClientError::Local(format!("{}.", capitalize(&e))))?;
    let (link, mut other) = link(
        route,
        identity,
        vec![topics.all_presence(), topics.all_help()],
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let r = shoulder_broker::expert::directory(
        &link,
        &mut other,
        &topics,
        DIRECTORY_QUIET,
        super::CONNECT_TIMEOUT,
        now,
    )
    .await
    .map_err(|e| {
        ClientError::Broker(format!(
            "Could not read the device list from {}: {e}.",
            route.label()
        ))
    });
    link.close().await;
    r
}

/// Opens a tunnel to `device` through the broker.
pub async fn open(
    route: &BrokerRoute,
    identity: &Identity,
    device: &str,
    within: Duration,
) -> Result<BrokerStream, ClientError> {
    let topics = Topics::new(&route.prefix)
        .map_err(|e| ClientError::Local(format!("{}.", capitalize(&e))))?;
    shoulder_broker::topics::check_name(&identity.name)
        .map_err(|e| ClientError::Local(format!("Your certificate's name: {e}.")))?;
    let (link, _other) = link(route, identity, vec![topics.all_to_expert(&identity.name)])?;
    let at = route.label();
    let stream = shoulder_broker::expert::open(&link, &topics, &identity.name, device, within)
        .await
        .map_err(|e| match e {
            OpenError::Refused { .. } | OpenError::BadName(_) => {
                ClientError::Local(format!("{}.", capitalize(&e.to_string())))
            }
            OpenError::Link(l) => {
                ClientError::Broker(format!("Could not use the broker at {at}: {l}."))
            }
            e => ClientError::Broker(format!("{} (broker {at}).", capitalize(&e.to_string()))),
        })?;
    Ok(BrokerStream {
        stream,
        _link: link,
    })
}
