//! Expert identities, the config directory, and the plant PKI helpers.
//!
//! Layout (all PEM):
//!
//! ```text
//! <plant CA dir>/ca.crt ca.key               shoulder pki init-ca DIR
//! <identity dir>/expert.crt expert.key ca.crt shoulder pki issue-expert
//! <config dir>/identities/<name>/            default identity location
//! <config dir>/known_devices                 first-contact fingerprints
//! <config dir>/recent                        recent devices (GUI start screen)
//! ```
//!
//! `ca.crt` in an identity is the plant CA: offers made with that identity
//! check the device certificate against it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::ClientError;
use crate::trust::fingerprint_of;
use shoulder_proto::Fingerprint;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const EXPERT_CERT: &str = "expert.crt";
pub const EXPERT_KEY: &str = "expert.key";
/// Environment variable overriding the config directory (tests, portable use).
pub const CONFIG_DIR_ENV: &str = "SHOULDER_CONFIG_DIR";
/// The plant CA lives long: re-issuing it means touching every device.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Default validity of expert and device certificates.
pub const DEFAULT_CERT_DAYS: u32 = 825;
/// Longest PEM file we read (a certificate chain is a few KiB).
pub const MAX_PEM_LEN: u64 = 256 * 1024;

fn local(msg: String) -> ClientError {
    ClientError::Local(msg)
}

/// The platform config directory (`~/.config/shoulder` on Linux,
/// `%APPDATA%\shoulder` on Windows, `~/Library/Application Support/shoulder`).
pub fn config_dir() -> Result<PathBuf, ClientError> {
    if let Some(d) = std::env::var_os(CONFIG_DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    if let Some(p) = directories::ProjectDirs::from("", "", "shoulder") {
        return Ok(p.config_dir().to_owned());
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("shoulder"));
    }
    Err(local(format!(
        "Cannot find a config directory (no home directory) — set {CONFIG_DIR_ENV}."
    )))
}

pub fn identities_dir() -> Result<PathBuf, ClientError> {
    Ok(config_dir()?.join("identities"))
}

pub fn known_hosts_path() -> Result<PathBuf, ClientError> {
    Ok(config_dir()?.join("known_devices"))
}

/// Names of the identities in the config directory, sorted.
pub fn list_identities() -> Vec<String> {
    let Ok(dir) = identities_dir() else {
        return Vec::new();
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(EXPERT_CERT).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// `--identity` takes a directory, or the name of one in the config dir.
pub fn resolve_identity(arg: &str) -> Result<PathBuf, ClientError> {
    let p = PathBuf::from(arg);
    if p.join(EXPERT_CERT).is_file() {
        return Ok(p);
    }
    let in_config = identities_dir()?.join(arg);
    if !arg.contains(['/', '\\']) && in_config.join(EXPERT_CERT).is_file() {
        return Ok(in_config);
    }
    Err(local(format!(
        "No expert identity at {arg} (expected {EXPERT_CERT} and {EXPERT_KEY} there, or an identity name from {}) — create one with `shoulder pki issue-expert`.",
        identities_dir()?.display()
    )))
}

/// An expert identity: certificate chain, key and (optionally) the plant CA.
#[derive(Debug)]
pub struct Identity {
    pub dir: PathBuf,
    /// The certificate's common name.
    pub name: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub plant_ca: Option<Arc<RootCertStore>>,
}

impl Identity {
    pub fn load(dir: &Path) -> Result<Self, ClientError> {
        let chain = read_certs(&dir.join(EXPERT_CERT))?;
        let key_path = dir.join(EXPERT_KEY);
        check_size(&key_path)?;
        let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
            local(format!(
                "Cannot read the private key {}: {e} — check the identity directory.",
                key_path.display()
            ))
        })?;
        let name = common_name(&chain[0]).unwrap_or_else(|| "expert".into());
        let ca_path = dir.join(CA_CERT);
        let plant_ca = if ca_path.is_file() {
            Some(Arc::new(root_store(&ca_path)?))
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_owned(),
            name,
            chain,
            key,
            plant_ca,
        })
    }
}

fn check_size(path: &Path) -> Result<(), ClientError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_PEM_LEN => Err(local(format!(
            "{} is too large to be a certificate or key ({} bytes).",
            path.display(),
            m.len()
        ))),
        Ok(_) => Ok(()),
        Err(e) => Err(local(format!("Cannot read {}: {e}.", path.display()))),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    check_size(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| local(format!("Cannot read {}: {e}.", path.display())))?
        .collect();
    let certs = certs.map_err(|e| {
        local(format!(
            "{} is not a PEM certificate file: {e}.",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(local(format!(
            "{} holds no certificate — check the file.",
            path.display()
        )));
    }
    Ok(certs)
}

/// A root store with the certificates of a PEM file.
pub fn root_store(path: &Path) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots.add(c).map_err(|e| {
            local(format!(
                "{} is not a usable CA certificate: {e}.",
                path.display()
            ))
        })?;
    }
    Ok(roots)
}

/// The subject common name of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), ClientError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| local(format!("Cannot create {}: {e}.", dir.display())))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    use std::io::Write;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            local(format!(
                "{} already exists — remove it first or choose another directory.",
                path.display()
            ))
        } else {
            local(format!("Cannot write {}: {e}.", path.display()))
        }
    })?;
    f.write_all(contents.as_bytes())
        .map_err(|e| local(format!("Cannot write {}: {e}.", path.display())))
}

fn pki_err(what: &str) -> impl Fn(rcgen::Error) -> ClientError + '_ {
    move |e| local(format!("Cannot {what}: {e}."))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = std::time::SystemTime::now();
    // An hour of slack for devices whose clock runs a little behind.
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
}

fn load_issuer(ca_dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), ClientError> {
    let cert_path = ca_dir.join(CA_CERT);
    let key_path = ca_dir.join(CA_KEY);
    check_size(&cert_path)?;
    check_size(&key_path)?;
    let cert_pem = std::fs::read_to_string(&cert_path)
        .map_err(|e| local(format!("Cannot read {}: {e}.", cert_path.display())))?;
    let key_pem = std::fs::read_to_string(&key_path)
        .map_err(|e| local(format!("Cannot read {}: {e}.", key_path.display())))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        local(format!(
            "{} is not a usable CA key: {e}.",
            key_path.display()
        ))
    })?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| {
        local(format!(
            "{} is not a usable CA certificate: {e}.",
            cert_path.display()
        ))
    })?;
    Ok((issuer, cert_pem))
}

/// `shoulder pki init-ca DIR`: a new plant CA. Returns its fingerprint.
pub fn init_ca(dir: &Path, name: &str) -> Result<Fingerprint, ClientError> {
    let key = KeyPair::generate().map_err(pki_err("generate a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + CA_VALIDITY).into();
    let cert = params
        .self_signed(&key)
        .map_err(pki_err("make the CA certificate"))?;
    // Key first: if it cannot be written, no orphan certificate is left.
    write_file(&dir.join(CA_KEY), &key.serialize_pem(), true)?;
    write_file(&dir.join(CA_CERT), &cert.pem(), false)?;
    Ok(fingerprint_of(cert.der()))
}

/// `shoulder pki issue-expert`: a client certificate for `name`, signed by the
/// plant CA, written with a copy of the CA certificate into `out`.
pub fn issue_expert(
    ca_dir: &Path,
    name: &str,
    out: &Path,
    days: u32,
) -> Result<Fingerprint, ClientError> {
    if name.trim().is_empty() || name.len() > shoulder_proto::MAX_NAME_LEN {
        return Err(local(format!(
            "An expert name is 1 to {} characters.",
            shoulder_proto::MAX_NAME_LEN
        )));
    }
    let (issuer, ca_pem) = load_issuer(ca_dir)?;
    let key = KeyPair::generate().map_err(pki_err("generate a key"))?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, days);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(pki_err("sign the expert certificate"))?;
    write_file(&out.join(EXPERT_KEY), &key.serialize_pem(), true)?;
    write_file(&out.join(EXPERT_CERT), &cert.pem(), false)?;
    write_file(&out.join(CA_CERT), &ca_pem, false)?;
    Ok(fingerprint_of(cert.der()))
}

/// `shoulder pki sign-device`: a certificate for a device's CSR (PEM),
/// keeping the names the device asked for: a server certificate for the
/// experts, and a client one for the plant's broker (the device connects
/// to it with the same key). Returns the PEM certificate.
pub fn sign_device(ca_dir: &Path, csr_pem: &str, days: u32) -> Result<String, ClientError> {
    let (issuer, _) = load_issuer(ca_dir)?;
    let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        local(format!(
            "This is not a certificate signing request: {e} — make one with the device agent."
        ))
    })?;
    csr.params.is_ca = IsCa::ExplicitNoCa;
    csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    csr.params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut csr.params, days);
    let cert = csr
        .signed_by(&issuer)
        .map_err(pki_err("sign the device certificate"))?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_issues_experts_and_devices_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "Plant CA").unwrap();
        // A second init into the same directory refuses instead of overwriting.
        assert!(init_ca(&ca, "Plant CA").is_err());
        let out = dir.path().join("ann");
        issue_expert(&ca, "Ann Expert", &out, 30).unwrap();
        let id = Identity::load(&out).unwrap();
        assert_eq!(id.name, "Ann Expert");
        assert!(id.plant_ca.is_some());

        // A device CSR with its own key and names.
        let dev_key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["kiosk-12".to_string()]).unwrap();
        let csr = params.serialize_request(&dev_key).unwrap().pem().unwrap();
        let pem = sign_device(&ca, &csr, 30).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let parsed = rustls::server::ParsedCertificate::try_from(&der).unwrap();
        let provider = rustls::crypto::ring::default_provider();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            id.plant_ca.as_ref().unwrap(),
            &[],
            rustls::pki_types::UnixTime::now(),
            provider.signature_verification_algorithms.all,
        )
        .unwrap();
        assert!(sign_device(&ca, "garbage", 30).is_err());
    }
}
