//! The expert's side: open a tunnel to a device, read the directory.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::sync::{broadcast, mpsc};

use crate::frame::{self, Kind};
use crate::link::{Link, Message, Note};
use crate::topics::{Topics, check_name};
use crate::tunnel::{self, INBOX};
use crate::{Directory, HelpRecord, MAX_RECORD, OpenRequest, Presence};

/// Why a tunnel could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Link(String),
    #[error(
        "the device {device} is not connected to the broker (its presence says offline, or it never connected) — check that the device is on and its [broker] settings"
    )]
    Absent { device: String },
    #[error(
        "the broker refused to pass the request to {device} ({reason}) — check the broker's ACL for your certificate's name (docs/fleet.md)"
    )]
    Refused { device: String, reason: String },
    #[error(
        "the device {device} did not answer through the broker within {secs} s — it may be offline, or the broker's ACL may not let it answer (docs/fleet.md)"
    )]
    NoAnswer { device: String, secs: u64 },
    #[error("{0}")]
    BadName(String),
}

/// Opens a tunnel to `device` as `expert` (our name at the broker). The
/// link must subscribe to `topics.all_to_expert(expert)`.
pub async fn open(
    link: &Arc<Link>,
    topics: &Topics,
    expert: &str,
    device: &str,
    within: Duration,
) -> Result<DuplexStream, OpenError> {
    check_name(device).map_err(OpenError::BadName)?;
    check_name(expert).map_err(OpenError::BadName)?;
    link.wait_up(within).await.map_err(OpenError::Link)?;
    let sid = random_sid().map_err(OpenError::Link)?;
    let in_topic = topics.to_expert(expert, &sid);
    let mut inbox = link.route(&in_topic, INBOX);
    let unroute = Unroute {
        link: link.clone(),
        topic: in_topic,
    };
    let mut notes = link.notes();
    let req = OpenRequest {
        v: 1,
        sid: sid.clone(),
        expert: expert.to_string(),
    };
    let payload = serde_json::to_vec(&req).map_err(|e| OpenError::Link(e.to_string()))?;
    link.publish(&topics.open(device), payload, false)
        .await
        .map_err(OpenError::Link)?;
    let answer = async {
        loop {
            tokio::select! {
                m = inbox.recv() => {
                    let Some(m) = m else {
                        return Err(OpenError::Link("the broker link dropped".into()));
                    };
                    return match frame::decode(&m) {
                        Ok((h, _)) if h.kind == Kind::Hello && h.seq == 0 => Ok(()),
                        _ => Err(OpenError::Link(format!("{device} answered with something other than a tunnel's hello"))),
                    };
                }
                n = notes.recv() => match n {
                    Ok(Note::NoSubscribers) => {
                        return Err(OpenError::Absent { device: device.to_string() });
                    }
                    Ok(Note::Refused(reason)) => {
                        return Err(OpenError::Refused { device: device.to_string(), reason });
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(OpenError::Link("the broker link stopped".into()));
                    }
                },
            }
        }
    };
    match tokio::time::timeout(within, answer).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(OpenError::NoAnswer {
                device: device.to_string(),
                secs: within.as_secs(),
            });
        }
    }
    let outbox = link.outbox(topics.to_device(device, &sid));
    Ok(tunnel::spawn_with(outbox, inbox, 0, 1, unroute))
}

struct Unroute {
    link: Arc<Link>,
    topic: String,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        self.link.unroute(&self.topic);
    }
}

/// 128 random bits as 32 hex digits.
fn random_sid() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness for a session id".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Reads the device directory: the presence records and help requests the
/// broker keeps, collected until `quiet` passes without a new one (at most
/// `within`). Help requests past their expiry (by `now_unix`) are left out.
/// The link must subscribe to `topics.all_presence()` and
/// `topics.all_help()`.
pub async fn directory(
    link: &Link,
    other: &mut mpsc::Receiver<Message>,
    topics: &Topics,
    quiet: Duration,
    within: Duration,
    now_unix: u64,
) -> Result<Directory, String> {
    link.wait_up(within).await?;
    let mut found = Directory::default();
    let end = tokio::time::Instant::now() + within;
    loop {
        let deadline = (tokio::time::Instant::now() + quiet).min(end);
        match tokio::time::timeout_at(deadline, other.recv()).await {
            Ok(Some((topic, payload))) => {
                if payload.len() > MAX_RECORD {
                    continue;
                }
                if let Some(device) = topics.device_of_presence(&topic) {
                    match serde_json::from_slice::<Presence>(&payload) {
                        Ok(p) => {
                            found.devices.insert(device.to_string(), p);
                        }
                        Err(e) => {
                            tracing::debug!(%device, error = %e, "unreadable presence record")
                        }
                    }
                } else if let Some(device) = topics.device_of_help(&topic) {
                    // An empty record: the request was withdrawn or answered.
                    match serde_json::from_slice::<HelpRecord>(&payload) {
                        Ok(h) if h.expires_unix > now_unix => {
                            found.help.insert(device.to_string(), h);
                        }
                        _ => {
                            found.help.remove(device);
                        }
                    }
                }
            }
            Ok(None) => return Err("the broker link stopped".into()),
            Err(_) => return Ok(found),
        }
    }
}
