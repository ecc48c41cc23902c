//! The device's side: answer open requests with tunnels, announce
//! presence.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::frame::{self, Header, Kind};
use crate::link::{Link, Message};
use crate::topics::{Topics, check_name, is_sid};
use crate::tunnel::{self, INBOX};
use crate::{MAX_RECORD, OpenRequest};

/// Tunnels a device keeps open at once. One session runs at a time; the
/// others are experts being told the device is busy, or handshakes that
/// will time out.
pub const MAX_TUNNELS: usize = 8;

/// A tunnel the device accepted, and the expert that asked (its name at
/// the broker).
#[derive(Debug)]
pub struct Accepted {
    pub stream: DuplexStream,
    pub expert: String,
}

/// Answers open requests for `device` that come out of `other` (the link's
/// messages no tunnel took) until the link or `accepted` closes. Each
/// tunnel is handed to `accepted` once the device said hello.
pub async fn serve(
    link: Arc<Link>,
    mut other: mpsc::Receiver<Message>,
    topics: Topics,
    device: String,
    accepted: mpsc::Sender<Accepted>,
) {
    let open_topic = topics.open(&device);
    let open = Arc::new(AtomicUsize::new(0));
    while let Some((topic, payload)) = other.recv().await {
        if topic != open_topic {
            continue;
        }
        let req = match parse_open(&payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "an open request through the broker was ignored");
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_TUNNELS {
            tracing::warn!(
                expert = %req.expert,
                "an open request through the broker was ignored: {MAX_TUNNELS} tunnels are open"
            );
            continue;
        }
        let in_topic = topics.to_device(&device, &req.sid);
        let inbox = link.route(&in_topic, INBOX);
        let outbox = link.outbox(topics.to_expert(&req.expert, &req.sid));
        let hello = frame::encode(
            Header {
                kind: Kind::Hello,
                seq: 0,
                ack: 0,
            },
            &[],
        );
        if let Err(e) = outbox.send(hello).await {
            link.unroute(&in_topic);
            tracing::info!(error = %e, "could not answer an open request");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let guard = TunnelGuard {
            link: link.clone(),
            topic: in_topic,
            open: open.clone(),
        };
        let stream = tunnel::spawn_with(outbox, inbox, 1, 0, guard);
        let a = Accepted {
            stream,
            expert: req.expert,
        };
        if accepted.send(a).await.is_err() {
            return;
        }
    }
}

/// Unroutes a device tunnel's topic and counts it closed.
struct TunnelGuard {
    link: Arc<Link>,
    topic: String,
    open: Arc<AtomicUsize>,
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.link.unroute(&self.topic);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads an open request; anything malformed is refused.
pub fn parse_open(payload: &[u8]) -> Result<OpenRequest, String> {
    if payload.len() > MAX_RECORD {
        return Err(format!("too large ({} bytes)", payload.len()));
    }
    let req: OpenRequest =
        serde_json::from_slice(payload).map_err(|e| format!("not an open request: {e}"))?;
    if req.v != 1 {
        return Err(format!("version {} is not known", req.v));
    }
    if !is_sid(&req.sid) {
        return Err("its session id is not 32 hex digits".into());
    }
    check_name(&req.expert)?;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_requests_that_could_escape_their_topics_are_refused() {
        let ok = format!(r#"{{"v":1,"sid":"{}","expert":"Ann"}}"#, "ab".repeat(16));
        assert_eq!(parse_open(ok.as_bytes()).unwrap().expert, "Ann");
        for bad in [
            format!(r#"{{"v":1,"sid":"{}","expert":"a/#"}}"#, "ab".repeat(16)),
            format!(r#"{{"v":1,"sid":"{}/x","expert":"a"}}"#, "ab".repeat(15)),
            format!(r#"{{"v":2,"sid":"{}","expert":"a"}}"#, "ab".repeat(16)),
            "{".into(),
            "x".repeat(MAX_RECORD + 1),
        ] {
            assert!(parse_open(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
