//! The SHA-256 fingerprint of a certificate: how an invitation pins a
//! device, how an expert's known-hosts file remembers one, and how the
//! agent's allow-list names an expert or a plant CA.
//!
//! Callers hash the DER certificate themselves (both ends already carry a
//! crypto library; this crate stays free of one) and wrap the digest.
//!
//! Forms, all of the same 32 bytes:
//!
//! | form | example | where |
//! | --- | --- | --- |
//! | [`Display`](std::fmt::Display) | `SHA256:AB:CD:…` | shown to people by the expert |
//! | [`Fingerprint::colon_hex`] | `AB:CD:…` | as `openssl x509 -fingerprint -sha256` prints it; the agent's output |
//! | [`Fingerprint::hex`] | `abcd…` | the known-hosts file |
//!
//! [`Fingerprint::parse`] reads both hex forms (any case, colons optional),
//! as config allow-lists and known-hosts files hold them; [`FromStr`] also
//! reads the `SHA256:` form that `Display` writes.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// SHA-256 of a DER certificate. Serialized as its 32 bytes (postcard
/// encodes the newtype exactly like the bare array).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

/// Prefix of the [`Display`](fmt::Display) form.
const DISPLAY_PREFIX: &str = "SHA256:";

impl Fingerprint {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Equality in time independent of where the digests differ: for
    /// fingerprints that decide who may in (`==` may stop at the first
    /// differing byte).
    pub fn ct_eq(&self, other: &Fingerprint) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// 64 lowercase hex digits (the known-hosts form).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }

    /// Upper-case hex pairs joined by colons, the way
    /// `openssl x509 -noout -fingerprint -sha256` prints it.
    pub fn colon_hex(&self) -> String {
        let mut s = String::with_capacity(32 * 3);
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                s.push(':');
            }
            let _ = write!(s, "{b:02X}");
        }
        s
    }

    /// Parses 64 hex digits (either case), with or without `:` separators.
    pub fn parse(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        let mut digits = s.chars().filter(|&c| c != ':');
        for b in &mut out {
            let hi = digits.next()?.to_digit(16)?;
            let lo = digits.next()?.to_digit(16)?;
            // Two hex digits make a byte.
            *b = (hi * 16 + lo) as u8;
        }
        match digits.next() {
            None => Some(Self(out)),
            Some(_) => None,
        }
    }
}

impl From<[u8; 32]> for Fingerprint {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl PartialEq<[u8; 32]> for Fingerprint {
    fn eq(&self, other: &[u8; 32]) -> bool {
        self.0 == *other
    }
}

impl AsRef<[u8]> for Fingerprint {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `SHA256:AB:CD:…`, grouped for reading aloud.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(DISPLAY_PREFIX)?;
        f.write_str(&self.colon_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.hex())
    }
}

/// Text that is not a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a SHA-256 fingerprint: 64 hex digits, optionally colon-separated")]
pub struct ParseFingerprintError;

/// Reads the [`Display`](fmt::Display) form and both hex forms.
impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(DISPLAY_PREFIX).unwrap_or(s);
        Self::parse(hex).ok_or(ParseFingerprintError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fingerprint {
        let mut b = [0u8; 32];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        Fingerprint(b)
    }

    #[test]
    fn forms_round_trip() {
        let fp = sample();
        assert_eq!(fp.hex().len(), 64);
        assert_eq!(fp.colon_hex().len(), 95);
        assert_eq!(Fingerprint::parse(&fp.hex()), Some(fp));
        assert_eq!(Fingerprint::parse(&fp.colon_hex()), Some(fp));
        assert_eq!(Fingerprint::parse(&fp.hex().to_uppercase()), Some(fp));
        assert_eq!(fp.to_string(), format!("SHA256:{}", fp.colon_hex()));
        assert_eq!(fp.to_string().parse::<Fingerprint>(), Ok(fp));
        assert_eq!(fp.hex().parse::<Fingerprint>(), Ok(fp));
    }

    #[test]
    fn forms_are_the_ones_people_see() {
        let fp = Fingerprint([0xab; 32]);
        assert!(fp.hex().starts_with("abab"));
        assert!(fp.colon_hex().starts_with("AB:AB:"));
        assert!(fp.to_string().starts_with("SHA256:AB:AB:"));
        assert_eq!(
            format!("{fp:?}"),
            format!("Fingerprint({})", "ab".repeat(32))
        );
    }

    #[test]
    fn constant_time_equality_agrees_with_eq() {
        let fp = sample();
        let mut other = fp;
        assert!(fp.ct_eq(&other));
        other.0[31] ^= 1;
        assert!(!fp.ct_eq(&other));
        assert!(!fp.ct_eq(&Fingerprint([0; 32])));
    }

    #[test]
    fn wrong_lengths_and_digits_are_refused() {
        let fp = sample();
        assert_eq!(Fingerprint::parse("abcd"), None);
        assert_eq!(Fingerprint::parse(""), None);
        assert_eq!(Fingerprint::parse(&format!("{}00", fp.hex())), None);
        assert_eq!(Fingerprint::parse(&fp.hex()[1..]), None);
        assert_eq!(Fingerprint::parse(&"zz".repeat(32)), None);
        assert_eq!(Fingerprint::parse(&"é".repeat(64)), None);
        assert_eq!(
            "SHA256:12".parse::<Fingerprint>(),
            Err(ParseFingerprintError)
        );
    }

    #[test]
    fn serializes_like_the_bare_array() {
        let fp = sample();
        assert_eq!(
            postcard::to_stdvec(&fp).unwrap(),
            postcard::to_stdvec(&fp.0).unwrap()
        );
    }
}
