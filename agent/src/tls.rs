//! TLS: a TLS 1.3-only rustls server (ring provider, ALPN `shoulder/1`) and
//! the offer check of expert certificates.
//!
//! The handshake asks for a client certificate but does not require one
//! (invitations come without), and only checks that the client holds the key
//! of the certificate it sent. Whether that certificate chains to the plant CA,
//! is in date and on the allow-list is decided after the handshake
//! ([`PlantTrust::check_offer`]), so the expert gets a `Bye` with a precise
//! reason ("unknown CA", "expired", "not allowed") instead of a bare TLS
//! alert.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use shoulder_proto::session::{AuthMethod, ExpertIdentity};
use shoulder_proto::{ByeReason, Fingerprint};

use crate::config::AllowedExpert;
use crate::identity::DeviceIdentity;
use crate::util::fingerprint_of;

pub use shoulder_proto::ALPN;
/// Largest plant CA file we read.
const MAX_CA_FILE_LEN: u64 = 1024 * 1024;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the plant CA file {path}: {source} (fix: check `plant_ca` in the config)")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds no usable CA certificate: {detail} (fix: point `plant_ca` at a PEM file with the plant CA certificate)"
    )]
    BadCa { path: PathBuf, detail: String },
    #[error(
        "the device certificate or key is not usable: {0} (fix: check device.crt/device.key in the state directory)"
    )]
    DeviceCert(String),
    #[error(
        "`allowed_experts` entry \"{entry}\" names the CA {ca}, which is not in `plant_ca` (fix: add that CA's PEM file to `plant_ca`, or correct the fingerprint; the plant CAs are {known})"
    )]
    UnknownAllowedCa {
        entry: String,
        ca: String,
        known: String,
    },
}

/// The ring provider: our only crypto.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server config: TLS 1.3 only, optional client certificate, ALPN.
pub fn server_config(
    identity: &DeviceIdentity,
    trust: &PlantTrust,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(ProofOfPossession {
        algorithms: provider.signature_verification_algorithms,
        hints: trust.subjects.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::DeviceCert(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError::DeviceCert(e.to_string()))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption: every connection authenticates afresh.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Accepts any client certificate the client proves it holds the key for;
/// chain, dates and allow-list are checked by [`PlantTrust::check_offer`].
#[derive(Debug)]
struct ProofOfPossession {
    algorithms: WebPkiSupportedAlgorithms,
    hints: Vec<DistinguishedName>,
}

impl ClientCertVerifier for ProofOfPossession {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Parse it so garbage never reaches the application.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is not enabled; refuse in case it ever were.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
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

/// The plant CA(s) and the allow-list.
#[derive(Debug, Default)]
pub struct PlantTrust {
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    /// Per anchor: SHA-256 of the CA certificate and its common name, which
    /// `ca:` allow-list entries and the audit name the issuer by.
    cas: Vec<PlantCa>,
    subjects: Vec<DistinguishedName>,
    allowed: Vec<AllowedExpert>,
}

#[derive(Debug)]
struct PlantCa {
    fingerprint: Fingerprint,
    name: String,
}

impl PlantTrust {
    /// Loads the CA files listed in `plant_ca`.
    pub fn load(ca_files: &[PathBuf], allowed: Vec<AllowedExpert>) -> Result<Self, TlsError> {
        let mut certs = Vec::new();
        let mut file_of = Vec::new();
        for (i, path) in ca_files.iter().enumerate() {
            let c = read_ca_file(path)?;
            file_of.extend(std::iter::repeat_n(i, c.len()));
            certs.extend(c);
        }
        let trust = Self::from_certs(&certs, allowed).map_err(|(i, detail)| TlsError::BadCa {
            path: file_of
                .get(i)
                .and_then(|f| ca_files.get(*f))
                .cloned()
                .unwrap_or_default(),
            detail,
        })?;
        trust.check_allowed_cas()?;
        Ok(trust)
    }

    /// From DER certificates (tests and `load`).
    pub fn from_certs(
        certs: &[CertificateDer<'static>],
        allowed: Vec<AllowedExpert>,
    ) -> Result<Self, (usize, String)> {
        let mut anchors = Vec::new();
        let mut cas = Vec::new();
        let mut subjects = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(c)
                .map_err(|e| (i, e.to_string()))?
                .to_owned();
            subjects.push(DistinguishedName::in_sequence(anchor.subject.as_ref()));
            let name = match common_names(anchor.subject.as_ref()).as_deref() {
                Some([one]) => one.clone(),
                _ => "unnamed CA".into(),
            };
            cas.push(PlantCa {
                fingerprint: fingerprint_of(c),
                name,
            });
            anchors.push(anchor);
        }
        Ok(Self {
            anchors,
            cas,
            subjects,
            allowed,
        })
    }

    /// An entry bound to a CA the device does not trust would match nobody:
    /// almost surely a typo or a missing `plant_ca` file, so say so at start.
    fn check_allowed_cas(&self) -> Result<(), TlsError> {
        for a in &self.allowed {
            if let AllowedExpert::Bound { ca, cn } = a
                && !self.cas.iter().any(|c| c.fingerprint == *ca)
            {
                let known: Vec<String> = self
                    .cas
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.fingerprint.colon_hex()))
                    .collect();
                let ca = ca.colon_hex();
                return Err(TlsError::UnknownAllowedCa {
                    entry: format!("ca:{ca}/cn:{cn}"),
                    ca,
                    known: if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
        Ok(())
    }

    /// Decides an offer from the certificates the client sent.
    pub fn check_offer(
        &self,
        peer: Option<&[CertificateDer<'static>]>,
        now: UnixTime,
    ) -> Result<ExpertIdentity, (ByeReason, String)> {
        let Some((leaf, intermediates)) = peer.and_then(|c| c.split_first()) else {
            return Err((
                ByeReason::NoCertificate,
                "an offer needs a client certificate".into(),
            ));
        };
        let fingerprint = fingerprint_of(leaf);
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
            (
                ByeReason::UnknownCa,
                format!("the client certificate cannot be parsed: {e}"),
            )
        })?;
        let fp_text = fingerprint.colon_hex();
        let names = common_names(ee.subject());
        let shown = match names.as_deref() {
            Some([]) | None => "unnamed expert".to_string(),
            Some(n) => n.join(" / "),
        };
        if self.anchors.is_empty() {
            return Err((
                ByeReason::UnknownCa,
                "this device trusts no plant CA for offers".into(),
            ));
        }
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => (
                    ByeReason::CertificateExpired,
                    format!("certificate of {shown} ({fp_text}) is out of its validity period"),
                ),
                webpki::Error::UnknownIssuer => (
                    ByeReason::UnknownCa,
                    format!("certificate of {shown} was not issued by a CA this device trusts"),
                ),
                e => (
                    ByeReason::UnknownCa,
                    format!("certificate of {shown} does not chain to the plant CA: {e}"),
                ),
            })?;
        // Which name a subject with several CNs means depends on who reads
        // it (first, last, all); who may connect must not depend on that.
        let name = match names {
            None => {
                return Err((
                    ByeReason::NotAllowed,
                    format!(
                        "the subject of certificate {fp_text} cannot be read — issue a new certificate with one UTF-8 common name"
                    ),
                ));
            }
            Some(names) if names.len() > 1 => {
                return Err((
                    ByeReason::NotAllowed,
                    format!(
                        "certificate {fp_text} carries {} common names ({shown}); an expert certificate must carry exactly one — issue a new certificate with a single CN",
                        names.len()
                    ),
                ));
            }
            Some(names) => names
                .into_iter()
                .next()
                .unwrap_or_else(|| "unnamed expert".into()),
        };
        let issuers = self.issuers(path.anchor());
        if !self.allowed.is_empty()
            && !self.allowed.iter().any(|a| match a {
                AllowedExpert::Bound { ca, cn } => {
                    *cn == name && issuers.iter().any(|i| i.fingerprint == *ca)
                }
                AllowedExpert::Fingerprint(fp) => fingerprint == *fp,
                AllowedExpert::Nobody => false,
            })
        {
            let by = issuers
                .first()
                .map(|i| format!(", issued by {}", i.name))
                .unwrap_or_default();
            return Err((
                ByeReason::NotAllowed,
                format!("{name} ({fp_text}{by}) is not on the allow-list"),
            ));
        }
        Ok(ExpertIdentity {
            name,
            method: AuthMethod::Offer { fingerprint },
            says: None,
        })
    }

    /// The plant CA that vouches for an offer's certificate, as "NAME
    /// (SHA-256)", for the audit log; None when it does not chain.
    pub fn issuer(&self, peer: Option<&[CertificateDer<'static>]>) -> Option<String> {
        let (leaf, intermediates) = peer?.split_first()?;
        let ee = webpki::EndEntityCert::try_from(leaf).ok()?;
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .ok()?;
        let ca = self.issuers(path.anchor()).into_iter().next()?;
        Some(format!("{} ({})", ca.name, ca.fingerprint.colon_hex()))
    }

    /// The configured CAs a verified chain ends at. Usually one; several
    /// when the same CA (subject and key) was listed as re-issued
    /// certificates, which vouch for the same experts.
    fn issuers(&self, anchor: &rustls::pki_types::TrustAnchor<'_>) -> Vec<&PlantCa> {
        self.anchors
            .iter()
            .zip(&self.cas)
            .filter(|(a, _)| {
                a.subject == anchor.subject
                    && a.subject_public_key_info == anchor.subject_public_key_info
            })
            .map(|(_, c)| c)
            .collect()
    }
}

pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::ReadCa {
        path: path.into(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_CA_FILE_LEN {
        return Err(TlsError::BadCa {
            path: path.into(),
            detail: format!("{len} bytes is too large"),
        });
    }
    let data = std::fs::read(path).map_err(read_err)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCa {
            path: path.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::BadCa {
            path: path.into(),
            detail: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Every common name (OID 2.5.4.3) in the DER contents of an X.509 Name (a
/// sequence of RDN sets), in order, or None when the Name cannot be read. A
/// CN in a string type we do not decode is refused rather than skipped, so
/// that a name cannot hide next to a readable one.
pub fn common_names(name: &[u8]) -> Option<Vec<String>> {
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let mut rdns = name;
    let mut found = Vec::new();
    while !rdns.is_empty() {
        let (tag, set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut atvs = set;
        while !atvs.is_empty() {
            let (tag, atv, rest) = der_next(atvs)?;
            atvs = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_next(atv)?;
            if oid_tag != 0x06 || oid != CN_OID {
                continue;
            }
            let (vtag, v, _) = der_next(value)?;
            // UTF8String, PrintableString, IA5String, TeletexString (treated
            // as Latin-1-ish ASCII).
            if !matches!(vtag, 0x0c | 0x13 | 0x16 | 0x14) {
                return None;
            }
            found.push(String::from_utf8_lossy(v).into_owned());
        }
    }
    Some(found)
}

/// The subject's only common name; None when it has none, several, or the
/// Name cannot be read.
pub fn common_name(name: &[u8]) -> Option<String> {
    match common_names(name)?.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// One DER TLV: (tag, contents, rest). Short and long lengths up to 4 bytes.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_found_and_garbage_is_none() {
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Plant");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Ann Expert");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ee = webpki::EndEntityCert::try_from(cert.der()).unwrap();
        assert_eq!(common_name(ee.subject()).as_deref(), Some("Ann Expert"));
        assert_eq!(common_name(&[0x31, 0x05, 0x30]), None);
        assert_eq!(common_name(&[0xff; 3]), None);
    }

    #[test]
    fn several_common_names_are_all_seen() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Mallory");
        let key = rcgen::KeyPair::generate().unwrap();
        let one = params.self_signed(&key).unwrap();
        // rcgen keeps one value per attribute type; append a second CN RDN
        // to the DER subject by hand: SET { SEQ { OID 2.5.4.3, UTF8 "Ann" } }.
        let ee = webpki::EndEntityCert::try_from(one.der()).unwrap();
        let mut subject = ee.subject().to_vec();
        subject.extend_from_slice(&[
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x03, b'A', b'n', b'n',
        ]);
        assert_eq!(
            common_names(&subject),
            Some(vec!["Mallory".to_string(), "Ann".to_string()])
        );
        assert_eq!(common_name(&subject), None);
        // A CN in a string type we do not read (BMPString) is not skipped.
        let mut bmp = ee.subject().to_vec();
        bmp.extend_from_slice(&[
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x1e, 0x04, 0, b'A', 0, b'n',
        ]);
        assert_eq!(common_names(&bmp), None);
    }
}
