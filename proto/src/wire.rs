//! How a Shoulder connection is opened: the TCP port and the TLS
//! application protocol both ends agree on. The framing inside is
//! [`crate::frame`].

/// ALPN protocol id of Shoulder over TLS 1.3. Both ends refuse a connection
/// that did not negotiate it.
pub const ALPN: &[u8] = b"shoulder/1";
/// The TCP port the agent listens on, and the expert dials, unless told
/// otherwise.
pub const DEFAULT_PORT: u16 = 7575;

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port` (a bare IPv6 literal
/// is a host) into host and port, `default_port` when none is given.
/// `None`: not an address (empty host, a port that is not 1–65535,
/// whitespace).
pub fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_whitespace) {
        return None;
    }
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let p = match after.strip_prefix(':') {
            Some(p) => port(p)?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return (!host.is_empty()).then(|| (host.to_string(), p));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            if h.is_empty() {
                return None;
            }
            Some((h.to_string(), port(p)?))
        }
        _ => Some((s.to_string(), default_port)),
    }
}

#[cfg(test)]
mod address_tests {
    use super::split_host_port;

    #[test]
    fn host_and_port_split_with_a_default() {
        assert_eq!(split_host_port("b", 9), Some(("b".into(), 9)));
        assert_eq!(split_host_port("b:1883", 9), Some(("b".into(), 1883)));
        assert_eq!(split_host_port("[::1]:7", 9), Some(("::1".into(), 7)));
        assert_eq!(split_host_port("fd00::1", 9), Some(("fd00::1".into(), 9)));
        for bad in ["", "b:x", ":80", "b:0", "a b", "[::1", "[]:1"] {
            assert_eq!(split_host_port(bad, 9), None, "{bad}");
        }
    }
}
