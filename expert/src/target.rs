//! What the expert connects to: a device address (offer) or an invitation.

use std::path::Path;

use shoulder_proto::DEFAULT_PORT;
use shoulder_proto::invite::{Invitation, MAX_FILE_LEN};

use crate::error::ClientError;

/// A connection target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Offer help to a device that trusts the expert's plant certificate.
    Offer { host: String, port: u16 },
    /// Use an invitation made on the device (password comes separately).
    Invitation(Box<Invitation>),
}

impl Target {
    /// Parses a command-line TARGET: an invitation file, an invitation's text
    /// form, or `host[:port]`.
    pub fn parse(arg: &str) -> Result<Self, ClientError> {
        let arg = arg.trim();
        if arg.is_empty() {
            return Err(ClientError::Local(
                "No target given — pass a device address (host[:port]) or an invitation file."
                    .into(),
            ));
        }
        let path = Path::new(arg);
        if path.is_file() {
            return Ok(Target::Invitation(Box::new(read_invitation_file(path)?)));
        }
        if arg.len() >= 8 && arg[..8].eq_ignore_ascii_case("SHOULDER") {
            return Invitation::from_text(arg)
                .map(|i| Target::Invitation(Box::new(i)))
                .map_err(|e| ClientError::Local(format!("{}.", capitalize(&e.to_string()))));
        }
        if arg.ends_with(".shoulder") {
            return Err(ClientError::Local(format!(
                "The invitation file {arg} does not exist — check the path."
            )));
        }
        let (host, port) = split_host_port(arg)?;
        Ok(Target::Offer { host, port })
    }

    /// A short label for titles and the recent list.
    pub fn label(&self) -> String {
        match self {
            Target::Offer { host, port } => host_port(host, *port),
            Target::Invitation(i) => format!("{} (invitation {})", i.device_name, i.id),
        }
    }
}

/// Reads and parses an invitation file.
pub fn read_invitation_file(path: &Path) -> Result<Invitation, ClientError> {
    let len = std::fs::metadata(path)
        .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", path.display())))?
        .len();
    if len > MAX_FILE_LEN as u64 {
        return Err(ClientError::Local(format!(
            "{} is too large to be an invitation ({len} bytes).",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", path.display())))?;
    Invitation::from_file(&text).map_err(|e| {
        ClientError::Local(format!(
            "{}: {}.",
            path.display(),
            e.to_string().trim_end_matches('.')
        ))
    })
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 literal.
pub fn split_host_port(s: &str) -> Result<(String, u16), ClientError> {
    let bad_port = |p: &str| {
        ClientError::Local(format!(
            "\"{p}\" is not a port number — use host:port, e.g. kiosk-12:{DEFAULT_PORT}."
        ))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(ClientError::Local(format!(
                "\"{s}\" is missing a closing ] — write IPv6 addresses as [addr]:port."
            )));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad_port(p))?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad_port(after)),
        };
        return Ok((host.to_string(), port));
    }
    if s.matches(':').count() > 1 {
        // A bare IPv6 literal.
        return Ok((s.to_string(), DEFAULT_PORT));
    }
    match s.split_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().map_err(|_| bad_port(p))?;
            if port == 0 {
                return Err(bad_port(p));
            }
            Ok((h.to_string(), port))
        }
        None => Ok((s.to_string(), DEFAULT_PORT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::InvitationId;

    #[test]
    fn addresses_parse_with_default_port() {
        assert_eq!(
            Target::parse("kiosk-12").unwrap(),
            Target::Offer {
                host: "kiosk-12".into(),
                port: DEFAULT_PORT
            }
        );
        assert_eq!(
            split_host_port("10.0.0.5:9000").unwrap(),
            ("10.0.0.5".into(), 9000)
        );
        assert_eq!(
            split_host_port("[fd00::1]:80").unwrap(),
            ("fd00::1".into(), 80)
        );
        assert_eq!(
            split_host_port("fd00::1").unwrap(),
            ("fd00::1".into(), DEFAULT_PORT)
        );
        assert!(split_host_port("host:port").is_err());
        assert!(Target::parse("").is_err());
        assert!(Target::parse("missing.shoulder").is_err());
    }

    #[test]
    fn invitations_parse_from_text_and_file() {
        let inv = Invitation::new(
            InvitationId([1; 8]),
            "kiosk",
            &["127.0.0.1".into()],
            7575,
            shoulder_proto::Fingerprint([5; 32]),
            2_000_000_000,
        );
        assert_eq!(
            Target::parse(&inv.to_text()).unwrap(),
            Target::Invitation(Box::new(inv.clone()))
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.shoulder");
        std::fs::write(&f, inv.to_file()).unwrap();
        assert_eq!(
            Target::parse(f.to_str().unwrap()).unwrap(),
            Target::Invitation(Box::new(inv))
        );
        let e = Target::parse("SHOULDER1-AAAA").unwrap_err();
        assert!(
            e.sentence().starts_with("The invitation text is damaged"),
            "{e}"
        );
    }
}
