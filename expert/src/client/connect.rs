//! Connecting: TCP (or a [`Dialer`]'s stream), TLS 1.3, and the checks
//! that the device is the one meant.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use shoulder_proto::{ALPN, Auth, Fingerprint, MAX_PASSWORD_LEN, text};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;
use crate::identity::common_name;
use crate::target::{Target, host_port};
use crate::trust::{DevicePolicy, DeviceVerifier, KnownHosts, Verdict, fingerprint_of};

use super::{ClientEvent, ConnectOptions};

/// TCP connect, per address: long enough for a slow plant Wi-Fi, short
/// enough to move on to the invitation's next address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);
/// The TLS handshake is a few round trips.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A byte stream the client runs a session over: TCP, or whatever a
/// [`Dialer`] opens (the network simulator brings its own).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// What [`Dialer::dial`] returns.
pub type Dialing<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::io::Result<Box<dyn Stream>>> + Send + 'a>,
>;

/// Opens the byte stream to a device address.
pub trait Dialer: Send + Sync {
    fn dial(&self, addr: SocketAddr) -> Dialing<'_>;
}

/// TCP with Nagle off (input events are small and latency-bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr) -> Dialing<'_> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as Box<dyn Stream>)
        })
    }
}

/// A connected, verified TLS stream.
pub struct Connected {
    pub stream: tokio_rustls::client::TlsStream<Box<dyn Stream>>,
    /// The device's address (unspecified through a broker).
    pub addr: SocketAddr,
    /// What the connection is called in messages: the address, or the
    /// device and its broker.
    pub label: String,
    pub fingerprint: Fingerprint,
    /// Device name from the invitation or the certificate.
    pub device_name: String,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("label", &self.label)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// How the device is checked for these options.
fn policy_for(opts: &ConnectOptions, host: &str, port: u16) -> Result<DevicePolicy, ClientError> {
    match &opts.target {
        Target::Invitation(inv) => Ok(DevicePolicy::Pinned(inv.fingerprint)),
        Target::Offer { .. } => {
            let path = match &opts.known_hosts {
                Some(p) => p.clone(),
                None => crate::identity::known_hosts_path()?,
            };
            let kh = KnownHosts::load(&path)?;
            let key = host_port(host, port);
            let known = kh.get(&key);
            // With a plant CA the address is still pinned: the CA signs every
            // kiosk, so without the pin one kiosk's key would pass for all.
            if let Some(roots) = opts.identity.as_ref().and_then(|i| i.plant_ca.clone()) {
                return Ok(DevicePolicy::PlantCa {
                    roots,
                    host: key,
                    known,
                    known_hosts: path,
                });
            }
            Ok(DevicePolicy::FirstContact {
                known,
                host: key,
                accept_new: opts.accept_new,
                known_hosts: path,
            })
        }
    }
}

fn tls_config(
    opts: &ConnectOptions,
    verifier: Arc<DeviceVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<rustls::ClientConfig, ClientError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Tls {
            detail: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &opts.identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| {
                ClientError::Local(format!(
                    "The identity in {} cannot be used: {e} — check that expert.crt and expert.key belong together.",
                    id.dir.display()
                ))
            })?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

fn server_name(host: &str) -> ServerName<'static> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ServerName::IpAddress(ip.into());
    }
    ServerName::try_from(host.to_string())
        // Names are not checked (see `trust`); any valid SNI will do.
        .unwrap_or_else(|_| ServerName::try_from("shoulder-device").expect("valid DNS name"))
}

/// Connects to one `host:port`, verifying the device (against `pin` when
/// set: the device of a session being resumed).
async fn connect_one(
    opts: &ConnectOptions,
    host: &str,
    port: u16,
    pin: Option<Fingerprint>,
    dialer: &dyn Dialer,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    let label = host_port(host, port);
    emit(ClientEvent::Connecting(label.clone()));
    let addrs: Vec<SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(a)) => a.collect(),
            Ok(Err(_)) => {
                return Err(ClientError::UnknownHost {
                    host: host.to_string(),
                });
            }
            Err(_) => return Err(ClientError::ConnectTimeout { addr: label }),
        };
    let mut last = ClientError::UnknownHost {
        host: host.to_string(),
    };
    for addr in addrs {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, dialer.dial(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last = ClientError::from_connect(&label, &e);
                continue;
            }
            Err(_) => {
                last = ClientError::ConnectTimeout {
                    addr: label.clone(),
                };
                continue;
            }
        };
        let mut c = handshake(opts, &label, host, port, tcp, pin).await?;
        c.addr = addr;
        c.label = addr.to_string();
        return Ok(c);
    }
    Err(last)
}

/// TLS over `tcp` (any stream) to the device meant by `host:port`, and the
/// checks that it is that device (`pin`: the device of a session being
/// resumed).
async fn handshake(
    opts: &ConnectOptions,
    label: &str,
    host: &str,
    port: u16,
    tcp: Box<dyn Stream>,
    pin: Option<Fingerprint>,
) -> Result<Connected, ClientError> {
    let policy = match pin {
        Some(fp) => DevicePolicy::Pinned(fp),
        None => policy_for(opts, host, port)?,
    };
    handshake_with(opts, label, host, tcp, policy, true, pin.is_some()).await
}

/// [`handshake`] with this policy; `remember`: a device accepted for the
/// first time goes into the known-hosts file; `resuming`: the policy pins
/// the device of a session being resumed.
async fn handshake_with(
    opts: &ConnectOptions,
    label: &str,
    host: &str,
    tcp: Box<dyn Stream>,
    policy: DevicePolicy,
    remember: bool,
    resuming: bool,
) -> Result<Connected, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DeviceVerifier::new(policy.clone(), &provider));
    let config = tls_config(opts, verifier.clone(), provider)?;
    let connector = TlsConnector::from(Arc::new(config));
    let handshake = connector.connect(server_name(host), tcp);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let Some(Verdict::Refused(err)) = verifier.verdict() {
                return Err(match (resuming, err) {
                    (true, ClientError::FingerprintMismatch { expected, got }) => {
                        ClientError::ChangedOnReconnect { expected, got }
                    }
                    (_, err) => err,
                });
            }
            return Err(ClientError::from_tls(label, &e));
        }
        Err(_) => {
            return Err(ClientError::ConnectTimeout {
                addr: label.to_string(),
            });
        }
    };
    let (_, conn) = stream.get_ref();
    if conn.alpn_protocol() != Some(ALPN) {
        return Err(ClientError::NotShoulder {
            addr: label.to_string(),
            detail: "no shoulder/1 ALPN".into(),
        });
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let fingerprint = match verifier.verdict() {
        Some(Verdict::Accepted(fp)) => fp,
        Some(Verdict::AcceptedNew(fp)) => {
            if remember && let Some((host, known_hosts)) = policy.remembers() {
                KnownHosts::load(known_hosts)?.add(host, fp)?;
            }
            fp
        }
        _ => fingerprint_of(&leaf),
    };
    let device_name = match &opts.target {
        Target::Invitation(inv) => inv.device_name.to_string(),
        Target::Offer { .. } => common_name(&leaf).unwrap_or_else(|| host.to_string()),
    };
    Ok(Connected {
        stream,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        label: label.to_string(),
        fingerprint,
        device_name,
    })
}

/// Connects to the target (each address of an invitation in turn).
pub async fn connect(
    opts: &ConnectOptions,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    connect_to(opts, None, &TcpDialer, emit).await
}

/// [`connect`], optionally pinned to the device of an earlier connection.
pub(super) async fn connect_to(
    opts: &ConnectOptions,
    pin: Option<Fingerprint>,
    dialer: &dyn Dialer,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    match &opts.target {
        Target::Offer { host, port } => {
            if opts.identity.is_none() {
                return Err(ClientError::Local(
                    "Offers need your expert identity — pick one (--identity DIR) or create it with `shoulder pki issue-expert`.".into(),
                ));
            }
            if let Some(l) = &opts.listen {
                return accept_call(opts, l, pin, emit).await;
            }
            if let Some(route) = &opts.broker {
                return connect_broker(opts, route, host, *port, pin, emit).await;
            }
            connect_one(opts, host, *port, pin, dialer, emit).await
        }
        Target::Invitation(inv) => {
            let mut last = ClientError::Local("The invitation lists no device address.".into());
            for a in &inv.addresses {
                match connect_one(opts, a, inv.port, pin, dialer, emit).await {
                    Ok(c) => return Ok(c),
                    Err(e) if e.is_transient() || matches!(e, ClientError::UnknownHost { .. }) => {
                        last = e
                    }
                    Err(e) => return Err(e),
                }
            }
            // Direct first; then the plant's broker, if the invitation
            // names a route through it.
            if let Some(route) = &inv.broker {
                let through = connect_invited(opts, inv, route, pin, emit).await;
                if through.is_ok() || inv.addresses.is_empty() {
                    return through;
                }
                if let Err(e) = through {
                    tracing::info!(error = %e.sentence(), "the broker route did not work either");
                }
            }
            Err(last)
        }
    }
}

/// The session's authentication for these options.
pub fn auth_for(opts: &ConnectOptions) -> Result<Auth, ClientError> {
    match &opts.target {
        Target::Offer { .. } => Ok(Auth::Offer),
        Target::Invitation(inv) => {
            let pw = opts.password.as_deref().unwrap_or("");
            if pw.is_empty() {
                return Err(ClientError::Local(
                    "This invitation needs its password — type the one the person at the device gave you.".into(),
                ));
            }
            if pw.len() > MAX_PASSWORD_LEN {
                return Err(ClientError::Local(format!(
                    "That password is too long (over {MAX_PASSWORD_LEN} bytes) — check it."
                )));
            }
            Ok(Auth::Invitation {
                id: inv.id,
                password: text(pw),
            })
        }
    }
}

/// An offer to the device named `device` through the plant's broker.
async fn connect_broker(
    opts: &ConnectOptions,
    route: &super::broker::BrokerRoute,
    device: &str,
    port: u16,
    pin: Option<Fingerprint>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    let label = format!("{device} via {}", route.label());
    emit(ClientEvent::Connecting(label.clone()));
    let Some(identity) = opts.identity.as_deref() else {
        return Err(ClientError::Local(
            "Sessions through a broker need your expert identity — pass --identity DIR.".into(),
        ));
    };
    let tunnel =
        super::broker::open(route, identity, device, CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT).await?;
    handshake(opts, &label, device, port, Box::new(tunnel), pin).await
}

/// An invitation's route through the plant's broker: the tunnel needs the
/// expert's identity (the broker's client certificate); the device is
/// pinned by the invitation as on a direct connection.
async fn connect_invited(
    opts: &ConnectOptions,
    inv: &shoulder_proto::invite::Invitation,
    route: &shoulder_proto::invite::BrokerRoute,
    pin: Option<Fingerprint>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    let mut broker = super::broker::BrokerRoute::parse(route.broker.as_str())?;
    broker.prefix = route.prefix.as_str().to_string();
    if let Some(b) = &opts.broker {
        broker.ca = b.ca.clone();
    }
    let device = route.device.as_str();
    let label = format!("{device} via {}", broker.label());
    emit(ClientEvent::Connecting(label.clone()));
    let Some(identity) = opts.identity.as_deref() else {
        return Err(ClientError::Local(format!(
            "This invitation reaches the device through the plant's broker {}, which needs your expert identity — pass --identity DIR (one your plant issued).",
            broker.label()
        )));
    };
    let tunnel = super::broker::open(
        &broker,
        identity,
        device,
        CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT,
    )
    .await?;
    handshake(opts, &label, device, inv.port, Box::new(tunnel), pin).await
}

/// Waits for a device to call (`shoulder listen`) and verifies it: the
/// device of a session being resumed (`pin`), the one `--pin` names, any
/// device the plant CA signed, or (with `accept_new`) any device. Someone
/// else knocking is turned away and the next call waited for.
async fn accept_call(
    opts: &ConnectOptions,
    listen: &super::Listen,
    pin: Option<Fingerprint>,
    emit: &mut (dyn FnMut(ClientEvent) + Send),
) -> Result<Connected, ClientError> {
    let at = listen
        .local_addr()
        .map_or_else(|| "the listening port".to_string(), |a| a.to_string());
    emit(ClientEvent::Connecting(format!(
        "waiting for a device to call on {at}"
    )));
    let plant = opts.identity.as_ref().and_then(|i| i.plant_ca.clone());
    let policy = match (pin.or(listen.pin), plant) {
        (Some(fp), _) => DevicePolicy::Pinned(fp),
        (None, Some(roots)) => DevicePolicy::PlantCa {
            roots,
            host: at.clone(),
            known: None,
            known_hosts: std::path::PathBuf::new(),
        },
        (None, None) if opts.accept_new == crate::trust::AcceptNew::Any => {
            DevicePolicy::FirstContact {
                host: at.clone(),
                known: None,
                accept_new: crate::trust::AcceptNew::Any,
                known_hosts: std::path::PathBuf::new(),
            }
        }
        (None, None) => {
            return Err(ClientError::Local(
                "Devices that call in are checked against your plant CA — use an identity with the plant CA (ca.crt), name the device with --pin FINGERPRINT, or take any device with --accept-new.".into(),
            ));
        }
    };
    let std = listen
        .listener
        .try_clone()
        .map_err(|e| ClientError::Local(format!("Cannot listen on {at}: {e}.")))?;
    let listener = tokio::net::TcpListener::from_std(std)
        .map_err(|e| ClientError::Local(format!("Cannot listen on {at}: {e}.")))?;
    loop {
        let (tcp, peer) = listener
            .accept()
            .await
            .map_err(|e| ClientError::Local(format!("Waiting for a call on {at} failed: {e}.")))?;
        let _ = tcp.set_nodelay(true);
        let label = format!("{peer} (called in)");
        let host = peer.ip().to_string();
        let tcp: Box<dyn Stream> = Box::new(tcp);
        match handshake_with(
            opts,
            &label,
            &host,
            tcp,
            policy.clone(),
            false,
            pin.is_some(),
        )
        .await
        {
            Ok(mut c) => {
                c.addr = peer;
                return Ok(c);
            }
            Err(e) => {
                tracing::info!(%peer, error = %e.sentence(), "a call was turned away");
            }
        }
    }
}
