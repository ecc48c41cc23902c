//! The device's TLS identity: a key and certificate in the state directory.
//!
//! `shoulder-agent keygen` makes them (and optionally a CSR for the plant CA);
//! `run` makes them on first start. Neither ever overwrites an existing key:
//! experts pin the certificate's fingerprint, so a new key breaks every
//! invitation and pinned device.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use shoulder_proto::Fingerprint;

use crate::util::fingerprint_of;

/// Device private key, PKCS#8 PEM, mode 0600.
pub const KEY_FILE: &str = "device.key";
/// Device certificate chain, PEM (leaf first). Replace it with a plant-signed
/// certificate for the same key to move from self-signed to plant-issued.
pub const CERT_FILE: &str = "device.crt";
/// Largest key or certificate file we read.
const MAX_PEM_LEN: u64 = 64 * 1024;

/// The device's key, certificate chain and fingerprint.
#[derive(Debug)]
pub struct DeviceIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate (DER): what invitations carry and
    /// experts pin.
    pub fingerprint: Fingerprint,
}

/// Why the identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "cannot create the state directory {path}: {source} (fix: check `state_dir` and that the agent runs as root)"
    )]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "a device key already exists at {0}; it is never overwritten because experts pin its certificate (fix: use it, or move it away yourself to start over)"
    )]
    KeyExists(PathBuf),
    #[error("no device key at {0} (fix: run `shoulder-agent keygen`)")]
    Missing(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a usable {what} (fix: restore it from backup, or move the state directory away and run `shoulder-agent keygen`)"
    )]
    Invalid { path: PathBuf, what: &'static str },
    #[error("{path} is readable by others (mode {mode:o}) (fix: chmod 600 {path})")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("could not generate the key or certificate: {0}")]
    Generate(String),
}

/// What `generate` made.
#[derive(Debug)]
pub struct Generated {
    pub key_path: PathBuf,
    pub cert_path: PathBuf,
    pub csr_path: Option<PathBuf>,
    pub fingerprint: Fingerprint,
}

/// Creates the state directory (mode 0700) if needed.
pub fn ensure_state_dir(state_dir: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| IdentityError::StateDir {
            path: state_dir.into(),
            source,
        })
}

/// Makes a new key and self-signed certificate named `device_name`, and a
/// CSR for the plant CA at `csr` if asked. Refuses if a key exists.
pub fn generate(
    state_dir: &Path,
    device_name: &str,
    csr: Option<&Path>,
) -> Result<Generated, IdentityError> {
    ensure_state_dir(state_dir)?;
    let key_path = state_dir.join(KEY_FILE);
    let cert_path = state_dir.join(CERT_FILE);
    if key_path.exists() {
        return Err(IdentityError::KeyExists(key_path));
    }
    let key = rcgen::KeyPair::generate().map_err(|e| IdentityError::Generate(e.to_string()))?;
    let params = device_params(device_name)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    // The key first, with create_new: two concurrent keygens cannot both win.
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_replacing(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let csr_path = match csr {
        Some(p) => {
            write_csr(&key, device_name, p)?;
            Some(p.to_path_buf())
        }
        None => None,
    };
    Ok(Generated {
        key_path,
        cert_path,
        csr_path,
        fingerprint: fingerprint_of(cert.der()),
    })
}

/// Writes a CSR for the existing device key (for a plant CA to sign).
pub fn csr_for_existing(
    state_dir: &Path,
    device_name: &str,
    out: &Path,
) -> Result<(), IdentityError> {
    let key_path = state_dir.join(KEY_FILE);
    let pem = read_limited(&key_path)?;
    let key = rcgen::KeyPair::from_pem(&pem).map_err(|_| IdentityError::Invalid {
        path: key_path.clone(),
        what: "private key",
    })?;
    write_csr(&key, device_name, out)
}

fn write_csr(key: &rcgen::KeyPair, device_name: &str, out: &Path) -> Result<(), IdentityError> {
    let csr = device_params(device_name)?
        .serialize_request(key)
        .and_then(|r| r.pem())
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    write_replacing(out, csr.as_bytes(), 0o644)
}

fn device_params(device_name: &str) -> Result<rcgen::CertificateParams, IdentityError> {
    // The expert pins the fingerprint; the name is for humans and for
    // plant CAs that want a DNS-like SAN.
    let san = sanitize_dns(device_name);
    let mut params = rcgen::CertificateParams::new(vec![san])
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Shoulder device");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    // Pinned by fingerprint, so expiry would only break devices in the field.
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    Ok(params)
}

/// A DNS-safe form of the device name for the certificate's SAN.
fn sanitize_dns(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c| c == '-' || c == '.').to_string();
    if s.is_empty() {
        "shoulder-device".into()
    } else {
        s
    }
}

/// Loads the identity from the state directory.
pub fn load(state_dir: &Path) -> Result<DeviceIdentity, IdentityError> {
    let key_path = state_dir.join(KEY_FILE);
    let cert_path = state_dir.join(CERT_FILE);
    if !key_path.exists() {
        return Err(IdentityError::Missing(key_path));
    }
    let meta = std::fs::metadata(&key_path).map_err(|source| IdentityError::Read {
        path: key_path.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::KeyPermissions {
            path: key_path,
            mode,
        });
    }
    let key_pem = read_limited(&key_path)?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| IdentityError::Invalid {
            path: key_path.clone(),
            what: "private key",
        })?;
    let cert_pem = read_limited(&cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| IdentityError::Invalid {
            path: cert_path.clone(),
            what: "certificate",
        })?;
    let Some(leaf) = chain.first() else {
        return Err(IdentityError::Invalid {
            path: cert_path,
            what: "certificate",
        });
    };
    let fingerprint = fingerprint_of(leaf);
    Ok(DeviceIdentity {
        chain,
        key,
        fingerprint,
    })
}

/// Loads the identity, generating it first if there is none. Returns whether
/// it was created.
pub fn ensure(
    state_dir: &Path,
    device_name: &str,
) -> Result<(DeviceIdentity, bool), IdentityError> {
    let created = if state_dir.join(KEY_FILE).exists() {
        false
    } else {
        match generate(state_dir, device_name, None) {
            Ok(_) => true,
            // Another process made it meanwhile: use theirs.
            Err(IdentityError::KeyExists(_)) => false,
            Err(e) => return Err(e),
        }
    };
    Ok((load(state_dir)?, created))
}

fn read_limited(path: &Path) -> Result<String, IdentityError> {
    let meta = std::fs::metadata(path).map_err(|source| IdentityError::Read {
        path: path.into(),
        source,
    })?;
    if meta.len() > MAX_PEM_LEN {
        return Err(IdentityError::Invalid {
            path: path.into(),
            what: "PEM file (too large)",
        });
    }
    std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
        path: path.into(),
        source,
    })
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let err = |source| IdentityError::Write {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::KeyExists(path.into())
            } else {
                err(e)
            }
        })?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Writes via a temporary file and rename, so a crash leaves the old or the
/// new file, never half of one.
pub(crate) fn write_replacing(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::fsutil::write_atomic(path, data, mode).map_err(|source| IdentityError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_load_never_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let csr = dir.path().join("device.csr");
        let g = generate(&state, "Kiosk 12", Some(&csr)).unwrap();
        let mode = std::fs::metadata(&g.key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&csr)
                .unwrap()
                .contains("CERTIFICATE REQUEST")
        );
        let id = load(&state).unwrap();
        assert_eq!(id.fingerprint, g.fingerprint);
        let before = std::fs::read(&g.key_path).unwrap();
        assert!(matches!(
            generate(&state, "x", None),
            Err(IdentityError::KeyExists(_))
        ));
        let (again, created) = ensure(&state, "x").unwrap();
        assert!(!created);
        assert_eq!(again.fingerprint, g.fingerprint);
        assert_eq!(std::fs::read(&g.key_path).unwrap(), before);
    }

    #[test]
    fn loose_key_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_, created) = ensure(dir.path(), "k").unwrap();
        assert!(created);
        let key = dir.path().join(KEY_FILE);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
