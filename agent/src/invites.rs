//! The invitation store: `invitations.json` in the state directory.
//!
//! Passwords are kept only as argon2id hashes. An invitation is open until it
//! expires, is used for one session, is revoked, or is burned by
//! [`MAX_WRONG_PASSWORDS`] wrong passwords. The file is shared by the running
//! agent and the `invite` command, so every operation takes a file lock,
//! re-reads it, and writes it back atomically (temp file, fsync, rename).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use shoulder_proto::{ByeReason, InvitationId};
use subtle::ConstantTimeEq;

use crate::config::Argon2Config;
use crate::util::{hex, random_bytes};

/// Wrong passwords that burn an invitation.
pub const MAX_WRONG_PASSWORDS: u8 = 5;
/// Open invitations at once: each is a door into the device.
pub const MAX_OPEN_INVITATIONS: usize = 16;
/// Ended invitations are kept this long for `--list`, then dropped.
const KEEP_ENDED_SECS: u64 = 7 * 86_400;
/// Largest store file we read (a full store is a few KiB).
const MAX_STORE_LEN: u64 = 1024 * 1024;
/// Shortest password accepted: short passwords fall to guessing even with
/// argon2 and the five-tries limit spread over many invitations.
pub const MIN_PASSWORD_LEN: usize = 6;

pub const STORE_FILE: &str = "invitations.json";
const LOCK_FILE: &str = "invitations.lock";

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum InvitationState {
    Open,
    Used { at: u64 },
    Revoked { at: u64 },
    Burned { at: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: String,
    created_unix: u64,
    expires_unix: u64,
    /// argon2id PHC string.
    password_hash: String,
    wrong_passwords: u8,
    /// Whom it was made for, as the consent prompt's headline shows it.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    for_whom: Option<String>,
    #[serde(flatten)]
    state: InvitationState,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreFile {
    version: u32,
    invitations: Vec<Stored>,
}

/// An invitation as `--list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvitationSummary {
    pub id: String,
    pub created_unix: u64,
    pub expires_unix: u64,
    pub wrong_passwords: u8,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_whom: Option<String>,
    #[serde(flatten)]
    pub state: InvitationState,
}

/// Store errors (not authentication failures, which are [`AuthFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot access the invitation store {path}: {source} (fix: run as root, check `state_dir`)"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the invitation store {path} is damaged: {detail} (fix: move it away; open invitations in it are then lost)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("no invitation {0} (fix: see `shoulder-agent invite --list`)")]
    Unknown(String),
    #[error("invitation {0} has already ended")]
    NotOpen(String),
    #[error(
        "{0} invitations are open already (fix: revoke one with `shoulder-agent invite --revoke ID`)"
    )]
    TooMany(usize),
    #[error(
        "the password is shorter than {MIN_PASSWORD_LEN} characters (fix: choose a longer one)"
    )]
    PasswordTooShort,
    #[error(
        "the password is longer than {} bytes (fix: choose a shorter one)",
        shoulder_proto::MAX_PASSWORD_LEN
    )]
    PasswordTooLong,
    #[error(
        "--expires {asked} is longer than max_invitation_lifetime ({max}) (fix: ask for less, or raise the limit in the config)"
    )]
    TooLong { asked: String, max: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error(
        "--for is longer than {} characters (fix: say whom it is for in fewer words, e.g. \"Ann from the service desk\")",
        shoulder_proto::MAX_NAME_LEN
    )]
    ForTooLong,
}

/// Whom an invitation is for, as a person may be shown it: cleaned like
/// an expert's own name, at most [`shoulder_proto::MAX_NAME_LEN`]
/// characters; blank is nobody in particular.
fn for_whom(raw: Option<&str>) -> Result<Option<String>, StoreError> {
    let Some(clean) = raw.map(shoulder_proto::session::hint_name) else {
        return Ok(None);
    };
    if clean.chars().count() > shoulder_proto::MAX_NAME_LEN {
        return Err(StoreError::ForTooLong);
    }
    Ok(Some(clean).filter(|s| !s.is_empty()))
}

/// Why an invitation did not authenticate, as the expert will be told.
pub type AuthFailure = (ByeReason, String);

/// The store.
#[derive(Debug, Clone)]
pub struct InvitationStore {
    path: PathBuf,
    lock_path: PathBuf,
    params: Params,
}

impl InvitationStore {
    pub fn new(state_dir: &Path, argon2: &Argon2Config) -> Result<Self, StoreError> {
        let params = Params::new(
            argon2.memory_kib,
            argon2.iterations,
            argon2.parallelism,
            None,
        )
        .map_err(|e| StoreError::Hash(e.to_string()))?;
        Ok(Self {
            path: state_dir.join(STORE_FILE),
            lock_path: state_dir.join(LOCK_FILE),
            params,
        })
    }

    /// Creates an invitation open for `lifetime` from `now_unix`, made
    /// `for_whom` (shown as the consent prompt's headline).
    pub fn create(
        &self,
        password: &str,
        lifetime: Duration,
        now_unix: u64,
        for_whom: Option<&str>,
    ) -> Result<(InvitationId, u64), StoreError> {
        let for_whom = self::for_whom(for_whom)?;
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(StoreError::PasswordTooShort);
        }
        if password.len() > shoulder_proto::MAX_PASSWORD_LEN {
            return Err(StoreError::PasswordTooLong);
        }
        let mut salt = [0u8; 16];
        let mut id = [0u8; 8];
        random_bytes(&mut salt).map_err(|e| self.io(e))?;
        random_bytes(&mut id).map_err(|e| self.io(e))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Hash(e.to_string()))?;
        let hash = self
            .argon2()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| StoreError::Hash(e.to_string()))?
            .to_string();
        let id = InvitationId(id);
        let expires = now_unix.saturating_add(lifetime.as_secs());
        self.update(now_unix, |f| {
            let open = f
                .invitations
                .iter()
                .filter(|i| i.state == InvitationState::Open && i.expires_unix > now_unix)
                .count();
            if open >= MAX_OPEN_INVITATIONS {
                return Err(StoreError::TooMany(open));
            }
            f.invitations.push(Stored {
                id: id.to_string(),
                created_unix: now_unix,
                expires_unix: expires,
                password_hash: hash,
                wrong_passwords: 0,
                for_whom: for_whom.clone(),
                state: InvitationState::Open,
            });
            Ok(())
        })?;
        Ok((id, expires))
    }

    pub fn list(&self) -> Result<Vec<InvitationSummary>, StoreError> {
        let _lock = self.lock()?;
        let f = self.read()?;
        Ok(f.invitations
            .iter()
            .map(|i| InvitationSummary {
                id: i.id.clone(),
                created_unix: i.created_unix,
                expires_unix: i.expires_unix,
                wrong_passwords: i.wrong_passwords,
                for_whom: i.for_whom.clone(),
                state: i.state,
            })
            .collect())
    }

    pub fn revoke(&self, id: InvitationId, now_unix: u64) -> Result<(), StoreError> {
        self.update(now_unix, |f| {
            let i = find(f, id).ok_or_else(|| StoreError::Unknown(id.to_string()))?;
            let inv = &mut f.invitations[i];
            if inv.state != InvitationState::Open {
                return Err(StoreError::NotOpen(id.to_string()));
            }
            inv.state = InvitationState::Revoked { at: now_unix };
            Ok(())
        })
    }

    /// Checks a password without using the invitation up; whom it was made
    /// for. Slow (argon2): call from a blocking thread. A wrong password is
    /// counted, and the fifth burns the invitation.
    pub fn check(
        &self,
        id: InvitationId,
        password: &str,
        now_unix: u64,
    ) -> Result<Option<String>, AuthFailure> {
        let internal = |e: StoreError| (ByeReason::InternalError, e.to_string());
        let hash = {
            let _lock = self.lock().map_err(internal)?;
            let f = self.read().map_err(internal)?;
            match find(&f, id) {
                Some(i) => {
                    let inv = &f.invitations[i];
                    open_or_reason(inv, now_unix)?;
                    Some((inv.password_hash.clone(), inv.for_whom.clone()))
                }
                None => None,
            }
        };
        let Some((hash, made_for)) = hash else {
            // Same work as a real check, so timing does not tell whether an
            // id exists.
            let _ = self.verify(&dummy_hash(&self.params), password);
            return Err((
                ByeReason::InvitationUnknown,
                format!("no invitation {id} on this device"),
            ));
        };
        if self.verify(&hash, password) {
            return Ok(made_for);
        }
        // Count the failure under the lock, on fresh contents.
        let mut outcome = Err((ByeReason::InternalError, String::new()));
        self.update(now_unix, |f| {
            let Some(i) = find(f, id) else {
                outcome = Err((ByeReason::InvitationUnknown, format!("no invitation {id}")));
                return Ok(());
            };
            let inv = &mut f.invitations[i];
            if let Err(reason) = open_or_reason(inv, now_unix) {
                outcome = Err(reason);
                return Ok(());
            }
            inv.wrong_passwords = inv.wrong_passwords.saturating_add(1);
            if inv.wrong_passwords >= MAX_WRONG_PASSWORDS {
                inv.state = InvitationState::Burned { at: now_unix };
                outcome = Err((
                    ByeReason::InvitationBurned,
                    format!("wrong password {MAX_WRONG_PASSWORDS} times: invitation {id} burned"),
                ));
            } else {
                let tries_left = MAX_WRONG_PASSWORDS - inv.wrong_passwords;
                outcome = Err((
                    ByeReason::WrongPassword { tries_left },
                    format!("wrong password for invitation {id} ({tries_left} tries left)"),
                ));
            }
            Ok(())
        })
        .map_err(internal)?;
        outcome
    }

    /// Marks a checked invitation used (the session starts).
    pub fn consume(&self, id: InvitationId, now_unix: u64) -> Result<(), AuthFailure> {
        let mut outcome = Ok(());
        self.update(now_unix, |f| {
            let Some(i) = find(f, id) else {
                outcome = Err((ByeReason::InvitationUnknown, format!("no invitation {id}")));
                return Ok(());
            };
            let inv = &mut f.invitations[i];
            match open_or_reason(inv, now_unix) {
                Ok(()) => inv.state = InvitationState::Used { at: now_unix },
                Err(r) => outcome = Err(r),
            }
            Ok(())
        })
        .map_err(|e| (ByeReason::InternalError, e.to_string()))?;
        outcome
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }

    fn verify(&self, hash: &str, password: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        // Verification uses the parameters stored in the hash; refuse hashes
        // whose memory cost exceeds what this device allows.
        if let Some(m) = parsed.params.get_decimal("m")
            && m > crate::config::MAX_ARGON2_MEMORY_KIB
        {
            return false;
        }
        // argon2's verify compares the outputs in constant time.
        self.argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    }

    fn update(
        &self,
        now_unix: u64,
        change: impl FnOnce(&mut StoreFile) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut f = self.read()?;
        change(&mut f)?;
        // Forget long-ended invitations so the file stays small.
        f.invitations.retain(|i| {
            let ended_at = match i.state {
                InvitationState::Open => i.expires_unix,
                InvitationState::Used { at }
                | InvitationState::Revoked { at }
                | InvitationState::Burned { at } => at,
            };
            now_unix < ended_at.saturating_add(KEEP_ENDED_SECS)
        });
        f.version = 1;
        let data = serde_json::to_vec_pretty(&f).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        crate::fsutil::write_atomic(&self.path, &data, 0o600).map_err(|e| self.io(e))
    }

    fn read(&self) -> Result<StoreFile, StoreError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoreFile::default()),
            Err(e) => return Err(self.io(e)),
        };
        if meta.len() > MAX_STORE_LEN {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("{} bytes is too large", meta.len()),
            });
        }
        let data = std::fs::read(&self.path).map_err(|e| self.io(e))?;
        serde_json::from_slice(&data).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        })
    }

    fn lock(&self) -> Result<File, StoreError> {
        if let Some(dir) = self.lock_path.parent() {
            crate::identity::ensure_state_dir(dir).map_err(|e| match e {
                crate::identity::IdentityError::StateDir { source, .. } => self.io(source),
                e => self.io(std::io::Error::other(e.to_string())),
            })?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| self.io(e))?;
        // Released when the file is closed.
        f.lock().map_err(|e| self.io(e))?;
        Ok(f)
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

fn find(f: &StoreFile, id: InvitationId) -> Option<usize> {
    let wanted = id.to_string();
    let mut found = None;
    // Look at every entry and compare in constant time.
    for (i, inv) in f.invitations.iter().enumerate() {
        if inv.id.len() == wanted.len() && bool::from(inv.id.as_bytes().ct_eq(wanted.as_bytes())) {
            found = Some(i);
        }
    }
    found
}

fn open_or_reason(inv: &Stored, now_unix: u64) -> Result<(), AuthFailure> {
    match inv.state {
        InvitationState::Used { .. } => Err((
            ByeReason::InvitationUsed,
            format!("invitation {} was already used", inv.id),
        )),
        InvitationState::Revoked { .. } => Err((
            ByeReason::InvitationRevoked,
            format!("invitation {} was revoked", inv.id),
        )),
        InvitationState::Burned { .. } => Err((
            ByeReason::InvitationBurned,
            format!("invitation {} was burned by wrong passwords", inv.id),
        )),
        InvitationState::Open if now_unix >= inv.expires_unix => {
            let secs_ago = now_unix - inv.expires_unix;
            Err((
                ByeReason::InvitationExpired { secs_ago },
                format!("invitation {} expired {secs_ago} s ago", inv.id),
            ))
        }
        InvitationState::Open => Ok(()),
    }
}

/// A hash of nothing, with the store's parameters, to spend the same time on
/// unknown ids as on known ones.
fn dummy_hash(params: &Params) -> String {
    use std::sync::OnceLock;
    static DUMMY: OnceLock<(String, String)> = OnceLock::new();
    let key = format!(
        "{}-{}-{}",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    );
    if let Some((k, h)) = DUMMY.get()
        && *k == key
    {
        return h.clone();
    }
    let salt = SaltString::encode_b64(b"shoulder-dummy-salt").unwrap_or_else(|_| {
        // Cannot happen: the salt is a fixed valid length.
        SaltString::from_b64("c2hvdWxkZXJkdW1teQ").expect("valid b64 salt")
    });
    let h = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(b"", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default();
    let _ = DUMMY.set((key, h.clone()));
    h
}

/// A printable random password for `invite` without one: 4 groups of 4
/// characters from an alphabet without look-alikes (~78 bits).
pub fn generate_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut raw = [0u8; 16];
    random_bytes(&mut raw)?;
    let mut s = String::new();
    for (i, b) in raw.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            s.push('-');
        }
        // 256 % 31 leaves a slight bias; irrelevant at this length.
        s.push(ALPHABET[usize::from(*b) % ALPHABET.len()] as char);
    }
    Ok(s)
}

/// `id` as used in file names and logs.
pub fn id_text(id: &InvitationId) -> String {
    hex(&id.0)
}

/// Makes invitations: the store plus what goes into the invitation text.
#[derive(Debug, Clone)]
pub struct Issuer {
    pub store: InvitationStore,
    pub device_name: String,
    pub addresses: Vec<String>,
    pub port: u16,
    pub fingerprint: shoulder_proto::Fingerprint,
    pub max_lifetime: Duration,
    /// The route through the plant's broker that invitations name, when
    /// the agent has one.
    pub broker: Option<shoulder_proto::invite::BrokerRoute>,
}

/// A new invitation, and its password if it was generated.
#[derive(Debug, Clone)]
pub struct Issued {
    pub invitation: shoulder_proto::invite::Invitation,
    pub generated_password: Option<String>,
    /// Whom it is for, cleaned as the prompt shows it.
    pub for_whom: Option<String>,
}

impl Issuer {
    /// Creates an invitation for `lifetime` with `password`, or a generated
    /// password if None, made `for_whom`.
    pub fn issue(
        &self,
        lifetime: Duration,
        password: Option<&str>,
        for_whom: Option<&str>,
    ) -> Result<Issued, StoreError> {
        let for_whom = self::for_whom(for_whom)?;
        if lifetime > self.max_lifetime {
            return Err(StoreError::TooLong {
                asked: crate::util::format_duration(lifetime),
                max: crate::util::format_duration(self.max_lifetime),
            });
        }
        if lifetime.is_zero() {
            return Err(StoreError::TooLong {
                asked: "0s".into(),
                max: crate::util::format_duration(self.max_lifetime),
            });
        }
        let generated = match password {
            Some(_) => None,
            None => Some(generate_password().map_err(|e| StoreError::Io {
                path: self.store.path.clone(),
                source: e,
            })?),
        };
        let pw = password.or(generated.as_deref()).unwrap_or_default();
        let (id, expires) =
            self.store
                .create(pw, lifetime, crate::util::unix_now(), for_whom.as_deref())?;
        let mut invitation = shoulder_proto::invite::Invitation::new(
            id,
            &self.device_name,
            &self.addresses,
            self.port,
            self.fingerprint,
            expires,
        );
        invitation.broker = self.broker.clone();
        Ok(Issued {
            invitation,
            generated_password: generated,
            for_whom,
        })
    }
}

/// Addresses to write into invitations: `advertise`, else the specific
/// addresses we listen on, else the address of the default-route interface,
/// else the host name.
pub fn advertised_addresses(
    advertise: &[String],
    listening: &[std::net::SocketAddr],
) -> Vec<String> {
    if !advertise.is_empty() {
        return advertise.to_vec();
    }
    let mut out: Vec<String> = listening
        .iter()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_string())
        .collect();
    out.dedup();
    if out.is_empty() {
        for probe in ["192.0.2.1:7575", "[2001:db8::1]:7575"] {
            // Connecting a UDP socket sends nothing; it only picks the route.
            let bind = if probe.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            if let Ok(s) = std::net::UdpSocket::bind(bind)
                && s.connect(probe).is_ok()
                && let Ok(local) = s.local_addr()
                && !local.ip().is_unspecified()
            {
                out.push(local.ip().to_string());
            }
        }
    }
    if out.is_empty()
        && let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname")
    {
        out.push(h.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> InvitationStore {
        InvitationStore::new(
            dir,
            &Argon2Config {
                memory_kib: 1024,
                iterations: 1,
                parallelism: 1,
            },
        )
        .unwrap()
    }

    #[test]
    fn an_invitation_says_whom_it_is_for() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let for_ann = Some("  Ann from the\n service desk \u{1b}");
        let (id, _) = s
            .create("correct horse", Duration::from_secs(60), 1000, for_ann)
            .unwrap();
        let expected = Some("Ann from the service desk".to_owned());
        assert_eq!(s.check(id, "correct horse", 1001), Ok(expected.clone()));
        assert_eq!(s.list().unwrap()[0].for_whom, expected);
        // Blank is nobody in particular; too long is refused with the fix.
        let (id, _) = s
            .create("correct horse", Duration::from_secs(60), 1000, Some(" "))
            .unwrap();
        assert_eq!(s.check(id, "correct horse", 1001), Ok(None));
        let long = "x".repeat(shoulder_proto::MAX_NAME_LEN + 1);
        let e = s
            .create("correct horse", Duration::from_secs(60), 1000, Some(&long))
            .unwrap_err();
        assert!(e.to_string().contains("--for"), "{e}");
    }

    #[test]
    fn right_password_once_then_used() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (id, exp) = s
            .create("correct horse", Duration::from_secs(60), 1000, None)
            .unwrap();
        assert_eq!(exp, 1060);
        assert_eq!(s.check(id, "correct horse", 1001), Ok(None));
        s.consume(id, 1001).unwrap();
        assert_eq!(
            s.check(id, "correct horse", 1002).unwrap_err().0,
            ByeReason::InvitationUsed
        );
        let raw = std::fs::read_to_string(d.path().join(STORE_FILE)).unwrap();
        assert!(!raw.contains("correct horse"));
        assert!(raw.contains("$argon2id$"));
    }

    #[test]
    fn five_wrong_passwords_burn() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (id, _) = s
            .create("secret-pw", Duration::from_secs(60), 1000, None)
            .unwrap();
        for left in (1..5).rev() {
            assert_eq!(
                s.check(id, "nope", 1001).unwrap_err().0,
                ByeReason::WrongPassword { tries_left: left }
            );
        }
        assert_eq!(
            s.check(id, "nope", 1001).unwrap_err().0,
            ByeReason::InvitationBurned
        );
        assert_eq!(
            s.check(id, "secret-pw", 1001).unwrap_err().0,
            ByeReason::InvitationBurned
        );
    }

    #[test]
    fn expired_revoked_unknown() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        let (id, _) = s
            .create("secret-pw", Duration::from_secs(60), 1000, None)
            .unwrap();
        assert_eq!(
            s.check(id, "secret-pw", 1360).unwrap_err().0,
            ByeReason::InvitationExpired { secs_ago: 300 }
        );
        let (id2, _) = s
            .create("secret-pw", Duration::from_secs(60), 1000, None)
            .unwrap();
        s.revoke(id2, 1001).unwrap();
        assert_eq!(
            s.check(id2, "secret-pw", 1002).unwrap_err().0,
            ByeReason::InvitationRevoked
        );
        assert!(matches!(s.revoke(id2, 1003), Err(StoreError::NotOpen(_))));
        assert_eq!(
            s.check(InvitationId([9; 8]), "secret-pw", 1002)
                .unwrap_err()
                .0,
            ByeReason::InvitationUnknown
        );
        assert_eq!(s.list().unwrap().len(), 2);
    }

    #[test]
    fn limits() {
        let d = tempfile::tempdir().unwrap();
        let s = store(d.path());
        assert!(matches!(
            s.create("short", Duration::from_secs(60), 0, None),
            Err(StoreError::PasswordTooShort)
        ));
        for _ in 0..MAX_OPEN_INVITATIONS {
            s.create("secret-pw", Duration::from_secs(60), 0, None)
                .unwrap();
        }
        assert!(matches!(
            s.create("secret-pw", Duration::from_secs(60), 0, None),
            Err(StoreError::TooMany(_))
        ));
        let pw = generate_password().unwrap();
        assert_eq!(pw.len(), 19);
    }
}
