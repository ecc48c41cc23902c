//! Everything that can stop a connection, as a sentence the expert can act on.
//!
//! Session ends that the device explains (`Bye`) carry the proto's own
//! sentence ([`shoulder_proto::ByeReason::sentence`]); this module adds the
//! transport and trust failures the session machine never sees.

use std::io;

use shoulder_proto::{ByeReason, Fingerprint};

/// Why a connection could not be made or ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the address.
    #[error("Nothing answers at {addr} — check the address and that the agent runs on the device.")]
    Refused { addr: String },
    /// The host name does not resolve.
    #[error(
        "The device address {host} does not resolve — check the spelling or use its IP address."
    )]
    UnknownHost { host: String },
    /// TCP or TLS did not finish in time.
    #[error("The device at {addr} did not answer in time — check the network and the address.")]
    ConnectTimeout { addr: String },
    /// Another network failure while connecting.
    #[error("Could not reach the device at {addr} ({detail}) — check the network.")]
    Network { addr: String, detail: String },
    /// The device presented a certificate other than the one the invitation pins.
    #[error(
        "The device's certificate does not match the invitation — do not connect; ask for a new invitation."
    )]
    FingerprintMismatch {
        expected: Fingerprint,
        got: Fingerprint,
    },
    /// The device's certificate changed since the first contact (known hosts).
    #[error(
        "WARNING: the device at {host} presents a different certificate than last time (now {got}, before {known}). Someone may be impersonating it — do not connect; ask the device owner whether it was replaced, then remove its line from {known_hosts}."
    )]
    DeviceChanged {
        host: String,
        known: Fingerprint,
        got: Fingerprint,
        known_hosts: String,
    },
    /// First contact with a device and no plant CA configured: the user must
    /// confirm the fingerprint.
    #[error(
        "The device at {host} is not known yet (certificate fingerprint {got}) — compare it with the one shown on the device, then connect again with --accept-new."
    )]
    UnknownDevice { host: String, got: Fingerprint },
    /// The device certificate is not issued by the plant CA.
    #[error(
        "The device's certificate was not issued by your plant CA ({detail}) — do not connect; ask the device owner to install a certificate signed by the plant CA."
    )]
    DeviceNotTrusted { detail: String },
    /// The device refused our client certificate at the TLS level.
    #[error("The device does not trust the CA that issued your certificate.")]
    ExpertNotTrusted,
    /// Our certificate is expired according to the device.
    #[error("Your certificate has expired or is not valid yet — get a new one issued.")]
    ExpertCertExpired,
    /// The device did not speak our ALPN or TLS version.
    #[error(
        "The device does not speak the Shoulder protocol at {addr} ({detail}) — check the port and update the older side."
    )]
    NotShoulder { addr: String, detail: String },
    /// A TLS failure not covered above.
    #[error("The secure connection to the device failed ({detail}).")]
    Tls { detail: String },
    /// The device could not be reached through the plant's broker (the
    /// sentence names the broker and the device, and what to check).
    #[error("{0}")]
    Broker(String),
    /// The connection dropped without a `Bye`.
    #[error(
        "The connection to the device was lost ({detail}) — check the network and connect again."
    )]
    Lost { detail: String },
    /// The connection dropped and no new one got through within the resume
    /// grace period the device allowed.
    #[error(
        "The connection to the device was lost and could not be restored within {secs} s ({detail}) — check the network and connect again; the person at the device will be asked again."
    )]
    ReconnectFailed { secs: u64, detail: String },
    /// After a drop, the address answered with another certificate than the
    /// device of the session.
    #[error(
        "After the connection dropped, the device answered with a different certificate (now {got}, before {expected}) — not reconnecting: someone may be impersonating it."
    )]
    ChangedOnReconnect {
        expected: Fingerprint,
        got: Fingerprint,
    },
    /// The device (or our session machine) ended the session; the sentence says why.
    #[error("{sentence}")]
    Session { reason: ByeReason, sentence: String },
    /// A local problem: bad file, missing identity, bad invitation.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The user-facing sentence (same as `Display`).
    pub fn sentence(&self) -> String {
        self.to_string()
    }

    /// Classifies an I/O error from connecting to `addr`.
    pub fn from_connect(addr: &str, e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ClientError::Refused { addr: addr.into() },
            io::ErrorKind::TimedOut => ClientError::ConnectTimeout { addr: addr.into() },
            _ => ClientError::Network {
                addr: addr.into(),
                detail: e.to_string(),
            },
        }
    }

    /// Classifies an I/O error from the TLS stream (handshake or later).
    /// `verdict` is what our certificate verifier concluded, if it refused.
    pub fn from_tls(addr: &str, e: &io::Error) -> Self {
        let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        else {
            return match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe => ClientError::Lost {
                    detail: "the device closed the connection".into(),
                },
                io::ErrorKind::TimedOut => ClientError::ConnectTimeout { addr: addr.into() },
                _ => ClientError::Lost {
                    detail: e.to_string(),
                },
            };
        };
        Self::from_rustls(addr, tls)
    }

    /// Classifies a rustls error.
    pub fn from_rustls(addr: &str, e: &rustls::Error) -> Self {
        use rustls::AlertDescription as A;
        match e {
            rustls::Error::AlertReceived(
                A::UnknownCA | A::BadCertificate | A::AccessDenied | A::CertificateRequired,
            ) => ClientError::ExpertNotTrusted,
            rustls::Error::AlertReceived(A::CertificateExpired) => ClientError::ExpertCertExpired,
            rustls::Error::AlertReceived(A::NoApplicationProtocol | A::ProtocolVersion)
            | rustls::Error::NoApplicationProtocol => ClientError::NotShoulder {
                addr: addr.into(),
                detail: e.to_string(),
            },
            rustls::Error::InvalidMessage(_) => ClientError::NotShoulder {
                addr: addr.into(),
                detail: "the answer is not TLS".into(),
            },
            other => ClientError::Tls {
                detail: other.to_string(),
            },
        }
    }

    /// Whether retrying the same thing could work (network trouble), as
    /// opposed to a refusal that needs the user to change something.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Refused { .. }
                | ClientError::Broker(_)
                | ClientError::ConnectTimeout { .. }
                | ClientError::Network { .. }
                | ClientError::Lost { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_sentences_have_next_steps() {
        let e = ClientError::from_connect(
            "10.0.0.1:7575",
            &io::Error::from(io::ErrorKind::ConnectionRefused),
        );
        assert_eq!(
            e.sentence(),
            "Nothing answers at 10.0.0.1:7575 — check the address and that the agent runs on the device."
        );
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert_eq!(
            ClientError::from_tls("x", &alert).sentence(),
            "The device does not trust the CA that issued your certificate."
        );
        let m = ClientError::FingerprintMismatch {
            expected: Fingerprint([1; 32]),
            got: Fingerprint([2; 32]),
        };
        assert_eq!(
            m.sentence(),
            "The device's certificate does not match the invitation — do not connect; ask for a new invitation."
        );
    }
}
