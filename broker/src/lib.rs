//! # shoulder-broker
//!
//! Shoulder sessions through a plant's MQTT broker, for devices nobody may
//! connect to: the device and the expert both connect out to the broker
//! (TLS with their own certificates), and a session's TLS 1.3 stream, the
//! same one that runs over TCP, is carried in MQTT messages between them.
//! The broker only ever sees ciphertext; pinning, consent and audit are
//! those of a direct session.
//!
//! - `frame`: the tunnel's messages, order and window (sans-I/O);
//! - `tunnel`: a byte stream over two topics;
//! - `link`: the MQTT 5 connection (rumqttc), reconnecting;
//! - `topics`: who publishes where (the ACL in `broker/mosquitto/acl`
//!   follows it);
//! - [`device`] and [`expert`]: opening tunnels from either side;
//!   presence records and the device directory.

pub mod device;
pub mod expert;
pub mod frame;
pub mod link;
pub mod topics;
pub mod tunnel;

pub use link::{Link, LinkConfig, LinkState, Note};
pub use topics::Topics;

use serde::{Deserialize, Serialize};

/// Port of MQTT over TLS.
pub const DEFAULT_PORT: u16 = 8883;

/// What a device tells the plant about itself: published retained on its
/// presence topic when it connects, and (as `online: false`) by the broker
/// when it vanishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub online: bool,
    /// The device's name (as shown to technicians).
    pub name: String,
    #[serde(default)]
    pub site: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub offers: bool,
    #[serde(default)]
    pub invitations: bool,
    #[serde(default)]
    pub control: bool,
}

/// A device's open help request, as the device publishes it (retained) on
/// its help topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelpRecord {
    pub id: String,
    /// What the person wrote (may be empty).
    #[serde(default)]
    pub text: String,
    pub asked_unix: u64,
    pub expires_unix: u64,
}

/// What the broker knows about the plant's devices: presence records and
/// open help requests, by device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    pub devices: std::collections::BTreeMap<String, Presence>,
    pub help: std::collections::BTreeMap<String, HelpRecord>,
}

/// The open request an expert publishes on a device's open topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenRequest {
    /// Format version (1).
    pub v: u8,
    /// The session's tunnel id: 32 hex digits, random.
    pub sid: String,
    /// The expert's name at the broker (its certificate's CN): the device
    /// answers on that expert's topics.
    pub expert: String,
}

/// Largest open request or presence record read.
pub const MAX_RECORD: usize = 2048;

/// `host`, `host:port` or `[v6]:port` of a broker (port 8883 by default).
pub fn parse_address(s: &str) -> Result<(String, u16), String> {
    shoulder_proto::wire::split_host_port(s, DEFAULT_PORT).ok_or_else(|| {
        format!(
            "\"{}\" is not a broker address — write host:port, e.g. broker.plant:8883",
            s.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_addresses_parse() {
        assert_eq!(parse_address("b").unwrap(), ("b".into(), 8883));
        assert_eq!(parse_address("b:1883").unwrap(), ("b".into(), 1883));
        assert_eq!(parse_address("[::1]:9").unwrap(), ("::1".into(), 9));
        assert!(parse_address("b:x").is_err());
        assert!(parse_address("").is_err());
        assert!(parse_address(":8883").is_err());
    }
}
