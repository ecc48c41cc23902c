//! Calling a technician (`ctl call HOST[:PORT]`): the device dials out to
//! a technician's `shoulder listen` and serves that connection as if the
//! technician had connected (the same TLS with the device as server, the
//! same authentication, prompts and audit). For devices nobody can reach
//! and that have no broker. While a called session is on hold after a
//! drop, the device calls again until it resumes or the grace period ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

use crate::audit::{AuditLog, Context};
use crate::hub::Hub;
use crate::records::AuditRecord;
use crate::service::{Incoming, Stream};

/// The port `shoulder listen` takes by default.
pub const DEFAULT_CALL_PORT: u16 = 7576;
/// One dial attempt.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// A call whose session has not started by then is not followed further.
const START_WAIT: Duration = Duration::from_secs(120);
/// Pause between calls while a called session is on hold.
const REDIAL_PAUSE: Duration = Duration::from_secs(1);

/// Places calls; the connections go to the service like accepted ones.
#[derive(Debug)]
pub struct Caller {
    pub(crate) tx: mpsc::Sender<Incoming>,
    /// `help_desk` from the config: where `ctl call` with no address, and
    /// `ctl help` without a broker, call.
    pub(crate) help_desk: Option<String>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) audit: Arc<AuditLog>,
}

/// `host`, `host:port` or `[v6]:port`, port 7576 by default.
fn split(address: &str) -> Result<(String, u16), String> {
    shoulder_proto::wire::split_host_port(address, DEFAULT_CALL_PORT).ok_or_else(|| {
        format!(
            "\"{}\" is not an address to call — write host or host:port",
            address.trim()
        )
    })
}

async fn dial(host: &str, port: u16) -> Result<(TcpStream, SocketAddr), String> {
    let connect = async {
        let tcp = TcpStream::connect((host, port)).await?;
        let peer = tcp.peer_addr()?;
        Ok::<_, std::io::Error>((tcp, peer))
    };
    match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(Ok((tcp, peer))) => {
            let _ = tcp.set_nodelay(true);
            Ok((tcp, peer))
        }
        Ok(Err(e)) => Err(format!(
            "cannot reach {host}:{port}: {e} (fix: check that `shoulder listen` runs there and that the port is open to this device)"
        )),
        Err(_) => Err(format!(
            "no answer from {host}:{port} within {} s (fix: check the address and the firewall)",
            DIAL_TIMEOUT.as_secs()
        )),
    }
}

impl Caller {
    /// The address to call: `address`, or the configured help desk.
    pub fn target(&self, address: Option<&str>) -> Result<String, String> {
        match address.filter(|a| !a.trim().is_empty()) {
            Some(a) => Ok(a.trim().to_string()),
            None => self.help_desk.clone().ok_or_else(|| {
                "no address to call (fix: `ctl call HOST[:PORT]`, or set `help_desk` in the config)"
                    .to_string()
            }),
        }
    }

    /// Calls `address` (audited); the session goes on in the service.
    /// Follows the session to call again after a drop.
    pub async fn call(self: &Arc<Self>, address: &str) -> Result<SocketAddr, String> {
        // Without the feature the rest (dialling, name lookups, redialling)
        // is left out of the build.
        if !cfg!(feature = "call") {
            return Err(
                "this agent was built without calling out (fix: install an agent built with the `call` feature; Yocto: PACKAGECONFIG call)"
                    .into(),
            );
        }
        let (host, port) = split(address)?;
        // Subscribed before the call, so the session's first event is seen.
        let events = self.hub.subscribe();
        let (tcp, peer) = match dial(&host, port).await {
            Ok(c) => c,
            Err(e) => {
                self.record(AuditRecord::CallFailed {
                    address: address.to_string(),
                    detail: e.clone(),
                });
                return Err(e);
            }
        };
        self.record(AuditRecord::CallPlaced {
            address: address.to_string(),
            peer: peer.to_string(),
        });
        if self
            .tx
            .send((Box::new(tcp) as Box<dyn Stream>, peer))
            .await
            .is_err()
        {
            return Err("the agent is shutting down".into());
        }
        tokio::spawn(self.clone().follow(host, port, peer, events));
        Ok(peer)
    }

    fn record(&self, r: AuditRecord<'_>) {
        let (event, mut m) = r.into_parts();
        m.insert("via".into(), "control-socket".into());
        if let Err(e) = self.audit.record(&event, &Context::default(), m) {
            tracing::error!(error = %e, "audit record failed");
        }
    }
}

/// The next control-socket event (`None`: the agent is stopping).
async fn next(events: &mut broadcast::Receiver<serde_json::Value>) -> Option<serde_json::Value> {
    loop {
        match events.recv().await {
            Ok(v) => return Some(v),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

impl Caller {
    /// Watches the called session: while it is on hold after a drop,
    /// calls again (the technician's client takes the new connection and
    /// resumes); stops when it ends.
    async fn follow(
        self: Arc<Self>,
        host: String,
        port: u16,
        peer: SocketAddr,
        mut events: broadcast::Receiver<serde_json::Value>,
    ) {
        let source = peer.to_string();
        // Ours once a session starts from the address called.
        let started = tokio::time::timeout(START_WAIT, async {
            while let Some(v) = next(&mut events).await {
                if v["event"] == "session-started" && v["source"] == source.as_str() {
                    return true;
                }
            }
            false
        })
        .await;
        if started != Ok(true) {
            return;
        }
        let mut on_hold = false;
        loop {
            let ev = if on_hold {
                match tokio::time::timeout(REDIAL_PAUSE, next(&mut events)).await {
                    Ok(v) => v,
                    Err(_) => {
                        // Still on hold: call again.
                        if let Ok((tcp, p)) = dial(&host, port).await {
                            tracing::info!(peer = %p, "called the technician again to resume");
                            if self
                                .tx
                                .send((Box::new(tcp) as Box<dyn Stream>, p))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        continue;
                    }
                }
            } else {
                next(&mut events).await
            };
            let Some(v) = ev else { return };
            match v["event"].as_str() {
                Some("reconnecting") => on_hold = true,
                Some("resumed") => on_hold = false,
                Some("session-ended") => return,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_addresses_take_the_listen_port_by_default() {
        assert_eq!(split("desk").unwrap(), ("desk".into(), 7576));
        assert_eq!(split("desk:9000").unwrap(), ("desk".into(), 9000));
        assert_eq!(split("[fd00::1]:80").unwrap(), ("fd00::1".into(), 80));
        assert_eq!(split("fd00::1").unwrap(), ("fd00::1".into(), 7576));
        for bad in ["", "desk:0", "desk:x", "a b", ":80"] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
