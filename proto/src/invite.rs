//! Invitations: how a device tells an expert where it is and which certificate
//! to expect. The password is never part of an invitation; it travels
//! separately (spoken, typed, a second channel).
//!
//! Text form (fits a QR code in alphanumeric mode):
//!
//! ```text
//! SHOULDER1-<base32( postcard(Invitation) ++ crc32(LE) )>
//! ```
//!
//! The file form (`*.shoulder`) is the text form on its own line, after
//! `#` comment lines that say what it is for a human reader.
//!
//! A device that also reaches the plant's MQTT broker adds a broker route
//! ([`BrokerRoute`]) after the invitation's fields, before the checksum:
//! clients that predate it read the fields and ignore the rest; an
//! invitation with a route may list no address at all (a device behind
//! NAT).

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::msg::{InvitationId, MAX_NAME_LEN, Text, text};

/// Prefix of the text form; the digit is the invitation format version.
pub const TEXT_PREFIX: &str = "SHOULDER1-";
/// A device lists at most this many addresses (e.g. wired, Wi-Fi, v4, v6).
pub const MAX_ADDRESSES: usize = 4;
/// An address is a host name or IP literal.
pub const MAX_ADDRESS_LEN: usize = 64;
/// Longest text form we read: the largest invitation is ~500 bytes, ~800 in
/// base32. Anything longer is not an invitation.
pub const MAX_TEXT_LEN: usize = 1024;
/// Longest invitation file we read.
pub const MAX_FILE_LEN: usize = 16 * 1024;

/// Where the device can also be reached: through the plant's MQTT broker,
/// by the device's name there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRoute {
    /// `host` or `host:port` of the broker.
    pub broker: Text<MAX_ADDRESS_LEN>,
    /// The device's name at the broker (its certificate's common name).
    pub device: Text<MAX_NAME_LEN>,
    /// The topic prefix (`shoulder` by default).
    pub prefix: Text<MAX_ADDRESS_LEN>,
}

/// An invitation to help at a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub id: InvitationId,
    pub device_name: Text<MAX_NAME_LEN>,
    /// Host names or IP addresses where the device listens, most likely first.
    pub addresses: heapless::Vec<Text<MAX_ADDRESS_LEN>, MAX_ADDRESSES>,
    pub port: u16,
    /// SHA-256 of the device certificate (DER). The expert's client refuses a
    /// device presenting any other certificate.
    pub fingerprint: Fingerprint,
    /// Seconds since the Unix epoch, UTC.
    pub expires_unix: u64,
    /// The route through the plant's broker, tried after the addresses.
    /// Not part of the serialized fields: encoded after them (see the
    /// module doc).
    #[serde(skip)]
    pub broker: Option<BrokerRoute>,
}

/// Why a text or file is not a usable invitation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    #[error("this is not a Shoulder invitation (no line starting with {TEXT_PREFIX})")]
    NotAnInvitation,
    #[error("the invitation is for a newer Shoulder (format {0}) — update this client")]
    UnsupportedVersion(char),
    #[error("the invitation text is damaged ({0}) — copy it again or ask for a new one")]
    Corrupt(&'static str),
    #[error("the invitation is too long to be genuine ({0} bytes)")]
    TooLong(usize),
    #[error("the invitation lists no device address")]
    NoAddress,
}

impl Invitation {
    /// The compact text form.
    pub fn to_text(&self) -> String {
        let mut bytes = postcard::to_stdvec(self).unwrap_or_default();
        if let Some(route) = &self.broker {
            bytes.extend(postcard::to_stdvec(route).unwrap_or_default());
        }
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        format!("{TEXT_PREFIX}{}", base32_encode(&bytes))
    }

    /// Parses the text form. Case, spaces and line breaks inside are ignored
    /// (QR readers and mail clients add them).
    pub fn from_text(s: &str) -> Result<Self, InviteError> {
        if s.len() > MAX_TEXT_LEN {
            return Err(InviteError::TooLong(s.len()));
        }
        let compact: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        let Some(rest) = compact.strip_prefix("SHOULDER") else {
            return Err(InviteError::NotAnInvitation);
        };
        let mut chars = rest.chars();
        let version = chars.next().ok_or(InviteError::NotAnInvitation)?;
        if version != '1' {
            return Err(InviteError::UnsupportedVersion(version));
        }
        let body = chars
            .as_str()
            .strip_prefix('-')
            .ok_or(InviteError::NotAnInvitation)?;
        let bytes = base32_decode(body).ok_or(InviteError::Corrupt("not base32"))?;
        if bytes.len() < 4 {
            return Err(InviteError::Corrupt("too short"));
        }
        let (data, crc) = bytes.split_at(bytes.len() - 4);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32(data) != crc {
            return Err(InviteError::Corrupt("checksum mismatch"));
        }
        let (mut inv, rest): (Invitation, &[u8]) =
            postcard::take_from_bytes(data).map_err(|_| InviteError::Corrupt("bad contents"))?;
        if !rest.is_empty() {
            let (route, rest): (BrokerRoute, &[u8]) = postcard::take_from_bytes(rest)
                .map_err(|_| InviteError::Corrupt("bad broker route"))?;
            if !rest.is_empty() {
                return Err(InviteError::Corrupt("bytes after the broker route"));
            }
            inv.broker = Some(route);
        }
        if inv.addresses.is_empty() && inv.broker.is_none() {
            return Err(InviteError::NoAddress);
        }
        Ok(inv)
    }

    /// The `*.shoulder` file contents.
    pub fn to_file(&self) -> String {
        let mut addrs: Vec<String> = self
            .addresses
            .iter()
            .map(|a| format!("{a} port {}", self.port))
            .collect();
        if let Some(r) = &self.broker {
            addrs.push(format!("\"{}\" through the broker {}", r.device, r.broker));
        }
        format!(
            "# Shoulder invitation for device \"{}\" at {}\n\
             # Invitation {} — expires {}\n\
             # Open it with: shoulder open <this file> (the password comes separately)\n\
             {}\n",
            self.device_name,
            addrs.join(", "),
            self.id,
            format_utc(self.expires_unix),
            self.to_text()
        )
    }

    /// Parses a `*.shoulder` file, or a bare text form.
    pub fn from_file(contents: &str) -> Result<Self, InviteError> {
        if contents.len() > MAX_FILE_LEN {
            return Err(InviteError::TooLong(contents.len()));
        }
        let line = contents
            .lines()
            .map(str::trim)
            .find(|l| {
                l.get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("SHOULDER"))
            })
            .ok_or(InviteError::NotAnInvitation)?;
        Self::from_text(line)
    }

    /// Seconds until expiry (negative once expired).
    pub fn remaining_secs(&self, now_unix: u64) -> i64 {
        self.expires_unix as i64 - now_unix as i64
    }

    /// Builds an invitation, shortening over-long names and dropping addresses
    /// beyond [`MAX_ADDRESSES`].
    pub fn new(
        id: InvitationId,
        device_name: &str,
        addresses: &[String],
        port: u16,
        fingerprint: Fingerprint,
        expires_unix: u64,
    ) -> Self {
        let mut list = heapless::Vec::new();
        for a in addresses.iter().take(MAX_ADDRESSES) {
            let _ = list.push(text(a));
        }
        Self {
            id,
            device_name: text(device_name),
            addresses: list,
            port,
            fingerprint,
            expires_unix,
            broker: None,
        }
    }
}

/// `YYYY-MM-DD HH:MM UTC` without a date library.
pub fn format_utc(unix: u64) -> String {
    let (y, m, d) = civil_from_days((unix / 86_400) as i64);
    let secs = unix % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs / 60) % 60
    )
}

/// Year, month (1–12) and day (1–31) of `days` since 1970-01-01: Howard
/// Hinnant's days-to-civil conversion, so no date library is needed.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B32.iter().position(|&x| x == c)? as u32;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Some(out)
}

/// CRC-32 (IEEE 802.3), bitwise: invitations are tiny.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invitation {
        Invitation::new(
            InvitationId([1, 2, 3, 4, 5, 6, 7, 8]),
            "kiosk-12",
            &["10.1.2.3".into(), "fd00::12".into()],
            7575,
            Fingerprint([0xab; 32]),
            1_800_000_000,
        )
    }

    #[test]
    fn text_and_file_round_trip() {
        let inv = sample();
        let t = inv.to_text();
        assert!(t.starts_with(TEXT_PREFIX));
        assert!(
            t.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'),
            "QR alphanumeric: {t}"
        );
        assert!(t.len() < 250, "{}", t.len());
        assert_eq!(Invitation::from_text(&t), Ok(inv.clone()));
        assert_eq!(Invitation::from_text(&t.to_lowercase()), Ok(inv.clone()));
        let spaced: String = t
            .chars()
            .enumerate()
            .flat_map(|(i, c)| if i % 20 == 19 { vec![c, '\n'] } else { vec![c] })
            .collect();
        assert_eq!(Invitation::from_text(&spaced), Ok(inv.clone()));
        let file = inv.to_file();
        assert!(file.contains("2027-01-15"), "{file}");
        assert_eq!(Invitation::from_file(&file), Ok(inv));
    }

    #[test]
    fn every_single_character_corruption_is_detected() {
        let t = sample().to_text();
        for i in TEXT_PREFIX.len()..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            assert!(
                Invitation::from_text(&s).is_err(),
                "corruption at {i} not detected"
            );
        }
        let truncated = &t[..t.len() - 3];
        assert!(matches!(
            Invitation::from_text(truncated),
            Err(InviteError::Corrupt(_))
        ));
    }

    #[test]
    fn foreign_and_future_texts_are_named() {
        assert_eq!(
            Invitation::from_text("hello"),
            Err(InviteError::NotAnInvitation)
        );
        assert_eq!(
            Invitation::from_text("SHOULDER2-AAAA"),
            Err(InviteError::UnsupportedVersion('2'))
        );
        assert_eq!(
            Invitation::from_file("# nothing here\n"),
            Err(InviteError::NotAnInvitation)
        );
        // Found by fuzzing: a multi-byte character across the prefix.
        assert_eq!(
            Invitation::from_file("SHOULDˀ\n"),
            Err(InviteError::NotAnInvitation)
        );
        assert!(matches!(
            Invitation::from_text(&"A".repeat(5000)),
            Err(InviteError::TooLong(_))
        ));
    }

    #[test]
    fn a_broker_route_round_trips_and_older_clients_read_the_rest() {
        let mut inv = sample();
        inv.broker = Some(BrokerRoute {
            broker: text("broker.plant:8883"),
            device: text("kiosk-12"),
            prefix: text("shoulder"),
        });
        let t = inv.to_text();
        assert_eq!(Invitation::from_text(&t).unwrap(), inv);
        assert!(
            inv.to_file()
                .contains("\"kiosk-12\" through the broker broker.plant:8883")
        );
        // What a client from before broker routes did: postcard::from_bytes
        // of the fields, which ignores what follows them.
        let bytes = base32_decode(t.strip_prefix(TEXT_PREFIX).unwrap()).unwrap();
        let old: Invitation = postcard::from_bytes(&bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(old, sample());
        // Behind NAT: no address, only the route.
        inv.addresses.clear();
        assert_eq!(Invitation::from_text(&inv.to_text()).unwrap(), inv);
        // Neither is no invitation.
        inv.broker = None;
        assert_eq!(
            Invitation::from_text(&inv.to_text()),
            Err(InviteError::NoAddress)
        );
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
    }
}
