//! How a Shoulder connection is opened: the TCP port and the TLS
//! application protocol both ends agree on. The framing inside is
//! [`crate::frame`].

/// ALPN protocol id of Shoulder over TLS 1.3. Both ends refuse a connection
/// that did not negotiate it.
pub const ALPN: &[u8] = b"shoulder/1";
/// The TCP port the agent listens on, and the expert dials, unless told
/// otherwise.
pub const DEFAULT_PORT: u16 = 7575;
