//! How the expert decides that a device is the device it means.
//!
//! - An **invitation** pins the SHA-256 fingerprint of the device certificate:
//!   any other certificate is refused.
//! - An **offer** checks the device certificate against the plant CA when the
//!   identity has one (`ca.crt` next to the expert certificate). The chain
//!   must verify, and the certificate is then pinned to the address typed
//!   (trust on first use, in the known-hosts file): the plant CA signs every
//!   kiosk, so the chain alone says "some kiosk of ours", and one kiosk's
//!   stolen key would otherwise answer for every address. A changed
//!   certificate at a known address is refused loudly, as below.
//!   The host name is not checked against the certificate instead: kiosks
//!   are reached by whatever address DHCP gave them, and their certificates
//!   name the device, not an address.
//! - Without a plant CA, the first contact shows the fingerprint and asks;
//!   the answer is remembered in a known-hosts file (SSH style). A changed
//!   fingerprint is refused loudly.
//!
//! The verifier never blocks to ask: it refuses with a recorded verdict and
//! the caller asks the user, then connects again with the answer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use shoulder_proto::Fingerprint;

use crate::error::ClientError;

/// Longest known-hosts file we read: a line is ~100 bytes, so this is tens of
/// thousands of devices; anything larger is not ours.
pub const MAX_KNOWN_HOSTS_LEN: u64 = 4 * 1024 * 1024;

/// The fingerprint of a DER certificate (its SHA-256).
pub fn fingerprint_of(der: &[u8]) -> Fingerprint {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    Fingerprint(out)
}

/// The known-hosts file: one `host:port fingerprint-hex` per line, `#` comments.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<(String, Fingerprint)>,
}

impl KnownHosts {
    /// Reads the file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let mut entries = Vec::new();
        match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_KNOWN_HOSTS_LEN => {
                return Err(ClientError::Local(format!(
                    "The known devices file {} is too large ({} bytes) — check it is the right file.",
                    path.display(),
                    m.len()
                )));
            }
            Ok(_) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ClientError::Local(format!(
                        "Cannot read the known devices file {}: {e}.",
                        path.display()
                    ))
                })?;
                for line in text.lines() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let mut parts = line.split_whitespace();
                    if let (Some(host), Some(fp)) = (parts.next(), parts.next())
                        && let Some(fp) = Fingerprint::parse(fp)
                    {
                        entries.push((host.to_ascii_lowercase(), fp));
                    }
                }
            }
            Err(_) => {}
        }
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered fingerprint for `host` (`host:port`).
    pub fn get(&self, host: &str) -> Option<Fingerprint> {
        let host = host.to_ascii_lowercase();
        self.entries
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, fp)| *fp)
    }

    /// Remembers `fp` for `host`, appending to the file.
    pub fn add(&mut self, host: &str, fp: Fingerprint) -> Result<(), ClientError> {
        let host = host.to_ascii_lowercase();
        if self.get(&host) == Some(fp) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                ClientError::Local(format!("Cannot create {}: {e}.", dir.display()))
            })?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                ClientError::Local(format!(
                    "Cannot write the known devices file {}: {e}.",
                    self.path.display()
                ))
            })?;
        writeln!(f, "{host} {}", fp.hex()).map_err(|e| {
            ClientError::Local(format!(
                "Cannot write the known devices file {}: {e}.",
                self.path.display()
            ))
        })?;
        self.entries.push((host, fp));
        Ok(())
    }
}

/// How the device certificate is checked for one connection.
#[derive(Debug, Clone)]
pub enum DevicePolicy {
    /// Exactly this certificate (invitation).
    Pinned(Fingerprint),
    /// A certificate chaining to one of these roots (plant CA), and the same
    /// certificate as the last time at `host` when `known` says so. A device
    /// seen for the first time is accepted (the CA vouches for it) and
    /// remembered in `known_hosts`.
    PlantCa {
        roots: Arc<RootCertStore>,
        host: String,
        known: Option<Fingerprint>,
        known_hosts: PathBuf,
    },
    /// Remembered on first contact. `known` is the known-hosts entry;
    /// `accept_new` says what to do with a device seen for the first time.
    FirstContact {
        host: String,
        known: Option<Fingerprint>,
        accept_new: AcceptNew,
        known_hosts: PathBuf,
    },
}

impl DevicePolicy {
    /// Where a device accepted for the first time is remembered: the
    /// known-hosts key (`host:port`) and file.
    pub fn remembers(&self) -> Option<(&str, &Path)> {
        match self {
            DevicePolicy::PlantCa {
                host, known_hosts, ..
            }
            | DevicePolicy::FirstContact {
                host, known_hosts, ..
            } => Some((host, known_hosts)),
            DevicePolicy::Pinned(_) => None,
        }
    }
}

/// What to do with a device that is not in the known-hosts file yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptNew {
    /// Refuse, reporting the fingerprint so the user can be asked.
    Ask,
    /// Accept whatever it presents (`--accept-new`, like SSH's `accept-new`).
    Any,
    /// Accept exactly the fingerprint the user confirmed.
    Only(Fingerprint),
}

/// What the verifier concluded about the device certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(Fingerprint),
    /// Accepted on first contact: remember it once the session works.
    AcceptedNew(Fingerprint),
    Refused(ClientError),
}

/// A rustls verifier applying a [`DevicePolicy`], recording its verdict.
#[derive(Debug)]
pub struct DeviceVerifier {
    policy: DevicePolicy,
    algorithms: WebPkiSupportedAlgorithms,
    verdict: Mutex<Option<Verdict>>,
}

impl DeviceVerifier {
    pub fn new(policy: DevicePolicy, provider: &CryptoProvider) -> Self {
        Self {
            policy,
            algorithms: provider.signature_verification_algorithms,
            verdict: Mutex::new(None),
        }
    }

    /// The verdict of the last handshake, if the certificate was seen.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.lock().map(|v| v.clone()).unwrap_or(None)
    }

    fn record(&self, v: Verdict) {
        if let Ok(mut slot) = self.verdict.lock() {
            *slot = Some(v);
        }
    }

    fn decide(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Verdict {
        let got = fingerprint_of(end_entity);
        match &self.policy {
            DevicePolicy::Pinned(expected) => {
                if *expected == got {
                    Verdict::Accepted(got)
                } else {
                    Verdict::Refused(ClientError::FingerprintMismatch {
                        expected: *expected,
                        got,
                    })
                }
            }
            DevicePolicy::PlantCa {
                roots,
                host,
                known,
                known_hosts,
            } => {
                let parsed = match rustls::server::ParsedCertificate::try_from(end_entity) {
                    Ok(p) => p,
                    Err(e) => {
                        return Verdict::Refused(ClientError::DeviceNotTrusted {
                            detail: e.to_string(),
                        });
                    }
                };
                if let Err(e) = rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &parsed,
                    roots,
                    intermediates,
                    now,
                    self.algorithms.all,
                ) {
                    return Verdict::Refused(ClientError::DeviceNotTrusted {
                        detail: e.to_string(),
                    });
                }
                match known {
                    Some(k) if *k == got => Verdict::Accepted(got),
                    Some(k) => Verdict::Refused(ClientError::DeviceChanged {
                        host: host.clone(),
                        known: *k,
                        got,
                        known_hosts: known_hosts.display().to_string(),
                    }),
                    None => Verdict::AcceptedNew(got),
                }
            }
            DevicePolicy::FirstContact {
                host,
                known,
                accept_new,
                known_hosts,
            } => match known {
                Some(k) if *k == got => Verdict::Accepted(got),
                Some(k) => Verdict::Refused(ClientError::DeviceChanged {
                    host: host.clone(),
                    known: *k,
                    got,
                    known_hosts: known_hosts.display().to_string(),
                }),
                None if *accept_new == AcceptNew::Any => Verdict::AcceptedNew(got),
                None if *accept_new == AcceptNew::Only(got) => Verdict::AcceptedNew(got),
                None => Verdict::Refused(ClientError::UnknownDevice {
                    host: host.clone(),
                    got,
                }),
            },
        }
    }
}

impl ServerCertVerifier for DeviceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.decide(end_entity, intermediates, now);
        let ok = !matches!(verdict, Verdict::Refused(_));
        self.record(verdict);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            // The recorded verdict carries the sentence; this only aborts
            // the handshake with a matching alert.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms_round_trip() {
        let fp = fingerprint_of(b"hello");
        assert_eq!(Fingerprint::parse(&fp.hex()), Some(fp));
        let shown = fp.to_string();
        assert!(shown.starts_with("SHA256:"));
        assert_eq!(Fingerprint::parse(&shown["SHA256:".len()..]), Some(fp));
        assert_eq!(Fingerprint::parse("abc"), None);
    }

    #[test]
    fn known_hosts_remembers_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/known_devices");
        let mut kh = KnownHosts::load(&path).unwrap();
        assert_eq!(kh.get("kiosk:7575"), None);
        let fp = Fingerprint([9; 32]);
        kh.add("Kiosk:7575", fp).unwrap();
        let kh = KnownHosts::load(&path).unwrap();
        assert_eq!(kh.get("kiosk:7575"), Some(fp));
        assert_eq!(kh.get("other:7575"), None);
    }

    #[test]
    fn first_contact_policy_refuses_changed_and_unknown() {
        let provider = rustls::crypto::ring::default_provider();
        let cert = CertificateDer::from(vec![1, 2, 3]);
        let got = fingerprint_of(&cert);
        let policy = |known, accept_new| DevicePolicy::FirstContact {
            host: "kiosk:7575".into(),
            known,
            accept_new,
            known_hosts: "/tmp/kh".into(),
        };
        let now = UnixTime::now();
        let v = DeviceVerifier::new(policy(None, AcceptNew::Ask), &provider);
        assert!(matches!(
            v.decide(&cert, &[], now),
            Verdict::Refused(ClientError::UnknownDevice { .. })
        ));
        let v = DeviceVerifier::new(policy(None, AcceptNew::Any), &provider);
        assert_eq!(v.decide(&cert, &[], now), Verdict::AcceptedNew(got));
        let v = DeviceVerifier::new(policy(None, AcceptNew::Only(got)), &provider);
        assert_eq!(v.decide(&cert, &[], now), Verdict::AcceptedNew(got));
        // Confirmed one fingerprint, shown another on reconnect: refused.
        let v = DeviceVerifier::new(
            policy(None, AcceptNew::Only(Fingerprint([3; 32]))),
            &provider,
        );
        assert!(matches!(v.decide(&cert, &[], now), Verdict::Refused(_)));
        let v = DeviceVerifier::new(policy(Some(got), AcceptNew::Ask), &provider);
        assert_eq!(v.decide(&cert, &[], now), Verdict::Accepted(got));
        let v = DeviceVerifier::new(
            policy(Some(Fingerprint([0; 32])), AcceptNew::Ask),
            &provider,
        );
        let Verdict::Refused(e) = v.decide(&cert, &[], now) else {
            panic!("changed certificate accepted")
        };
        assert!(e.sentence().starts_with("WARNING"), "{e}");
        let v = DeviceVerifier::new(DevicePolicy::Pinned(Fingerprint([0; 32])), &provider);
        assert!(matches!(
            v.decide(&cert, &[], now),
            Verdict::Refused(ClientError::FingerprintMismatch { .. })
        ));
    }

    /// A kiosk certificate signed by the plant CA in `ca`.
    fn plant_device(ca: &Path, name: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let pem = crate::identity::sign_device(ca, &csr, 30).unwrap();
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn plant_signed_devices_are_pinned_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        crate::identity::init_ca(&ca, "Plant CA").unwrap();
        let roots = Arc::new(crate::identity::root_store(&ca.join("ca.crt")).unwrap());
        let kiosk_a = plant_device(&ca, "kiosk-a");
        let kiosk_b = plant_device(&ca, "kiosk-b");
        let (fp_a, fp_b) = (fingerprint_of(&kiosk_a), fingerprint_of(&kiosk_b));
        let provider = rustls::crypto::ring::default_provider();
        let policy = |known| DevicePolicy::PlantCa {
            roots: roots.clone(),
            host: "10.0.0.7:7575".into(),
            known,
            known_hosts: "/tmp/kh".into(),
        };
        let now = UnixTime::now();
        // First contact: the CA vouches, and the address is remembered.
        let v = DeviceVerifier::new(policy(None), &provider);
        assert_eq!(v.decide(&kiosk_a, &[], now), Verdict::AcceptedNew(fp_a));
        assert!(policy(None).remembers().is_some());
        let v = DeviceVerifier::new(policy(Some(fp_a)), &provider);
        assert_eq!(v.decide(&kiosk_a, &[], now), Verdict::Accepted(fp_a));
        // Another kiosk of the same plant at a known address: refused.
        let Verdict::Refused(e) = v.decide(&kiosk_b, &[], now) else {
            panic!("another plant device passed for a pinned address")
        };
        assert_eq!(
            e,
            ClientError::DeviceChanged {
                host: "10.0.0.7:7575".into(),
                known: fp_a,
                got: fp_b,
                known_hosts: "/tmp/kh".into(),
            }
        );
        assert!(e.sentence().starts_with("WARNING"), "{e}");
        // The pin never stands in for the CA.
        let other = dir.path().join("other");
        crate::identity::init_ca(&other, "Other CA").unwrap();
        let stranger = plant_device(&other, "kiosk-a");
        let v = DeviceVerifier::new(policy(Some(fingerprint_of(&stranger))), &provider);
        assert!(matches!(
            v.decide(&stranger, &[], now),
            Verdict::Refused(ClientError::DeviceNotTrusted { .. })
        ));
    }
}
