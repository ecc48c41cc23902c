//! A plant CA (made with rcgen, kept in memory and written where the
//! client's `shoulder pki` commands read a CA) and the certificates it
//! issues: what a device trusts (`plant_ca` in its agent.toml) and what an
//! expert connects with, either as a chain and key in memory
//! ([`Pki::expert`], [`Pki::issue`]) or as an identity directory made by
//! the client's own `issue-expert` ([`Pki::with_expert`],
//! [`Pki::expert_identity`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoulder::identity::{self, Identity};

/// A CA and the certificates it issued; its directory is removed on drop.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    ca_params: rcgen::CertificateParams,
    ca_key: rcgen::KeyPair,
    dir: tempfile::TempDir,
    /// The identity directory and name of the expert made by
    /// [`Pki::with_expert`].
    expert: Option<(PathBuf, String)>,
}

/// A client identity: chain and key.
#[derive(Debug)]
pub struct ExpertCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_der: Vec<u8>,
    pub fingerprint: [u8; 32],
}

impl ExpertCert {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }
}

impl Pki {
    /// A CA named `name`, also written as `ca.crt` and `ca.key` into
    /// [`Pki::ca_dir`].
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("shoulder-pki-")
            .tempdir()
            .expect("temporary directory");
        let ca_dir = dir.path().join("ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        std::fs::write(ca_dir.join(identity::CA_CERT), cert.pem()).unwrap();
        std::fs::write(ca_dir.join(identity::CA_KEY), key.serialize_pem()).unwrap();
        Self {
            ca_pem: cert.pem(),
            ca_params: params,
            ca_key: key,
            dir,
            expert: None,
        }
    }

    /// The CA `ca_name` and an expert certificate for `expert_name` valid
    /// for `days`, issued by the client's `issue-expert`. The error names
    /// the step that failed.
    pub fn with_expert(ca_name: &str, expert_name: &str, days: u32) -> Result<Self, String> {
        let mut pki = Self::new(ca_name);
        let expert_dir = pki.dir.path().join("expert");
        identity::issue_expert(&pki.ca_dir(), expert_name, &expert_dir, days)
            .map_err(|e| format!("expert: {e}"))?;
        pki.expert = Some((expert_dir, expert_name.to_string()));
        Ok(pki)
    }

    /// Where `ca.crt` and `ca.key` are, as `shoulder pki` reads a CA.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// The directory everything is in; other per-run files (a known-hosts
    /// file) may go there too and are removed with it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SHA-256 of the CA certificate, as `ca:` allow-list entries name it.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap();
        shoulder_agent::util::sha256(&der)
    }

    /// A server certificate for loopback (`localhost`, 127.0.0.1), signed
    /// by this CA: PEM certificate and key (a test broker's).
    pub fn loopback_server(&self) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test broker");
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate for `cn` as PEM certificate and key (a test
    /// broker's bridge to another).
    pub fn client_pem(&self, cn: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The identity directory of [`Pki::with_expert`] (expert.crt,
    /// expert.key and the plant CA's ca.crt).
    pub fn expert_dir(&self) -> &Path {
        &self.made_expert().0
    }

    /// An expert certificate with CN `cn`; `expired` makes one whose validity
    /// ended in 2020.
    pub fn expert(&self, cn: &str, expired: bool) -> ExpertCert {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        self.issue(params)
    }

    /// A client certificate for `params` (any subject), signed by this CA.
    pub fn issue(&self, mut params: rcgen::CertificateParams) -> ExpertCert {
        params
            .extended_key_usages
            .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let der = cert.der().clone();
        ExpertCert {
            fingerprint: shoulder_agent::util::sha256(&der),
            chain: vec![der],
            key_der: key.serialize_der(),
        }
    }

    /// The name on the certificate of [`Pki::with_expert`] (the device's
    /// prompt shows it).
    pub fn expert_name(&self) -> &str {
        &self.made_expert().1
    }

    /// The identity of [`Pki::with_expert`], without the plant CA: a device
    /// makes its own key at first start, not signed by the plant CA, so the
    /// expert trusts it on first use (as `--accept-new` does).
    pub fn expert_identity(&self) -> Result<Arc<Identity>, String> {
        let mut id =
            Identity::load(&self.made_expert().0).map_err(|e| format!("expert identity: {e}"))?;
        id.plant_ca = None;
        Ok(Arc::new(id))
    }

    fn made_expert(&self) -> &(PathBuf, String) {
        self.expert
            .as_ref()
            .expect("an expert identity: make the Pki with Pki::with_expert")
    }
}
