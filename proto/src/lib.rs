//! # Shoulder wire protocol
//!
//! Everything the device (`shoulder-agent`) and the expert (`shoulder`) say to
//! each other, the invitation format, consent tokens and the sans-I/O session
//! state machines of both ends. No tokio, no clock, no sockets.
//!
//! ## Transport and framing
//!
//! TLS 1.3 over TCP (port [`wire::DEFAULT_PORT`], 7575), ALPN [`wire::ALPN`]
//! (`shoulder/1`). Inside, frames:
//!
//! ```text
//! +----------------+------------------------------------------+
//! | len: u32 LE    | payload: postcard(Message), `len` bytes  |
//! +----------------+------------------------------------------+
//!   len ≤ 1 KiB before authentication, ≤ 2 MiB after
//! ```
//!
//! The payload starts with the message tag (a postcard varint, the variant
//! index of [`Message`]). Unknown tags, bad enum tags, text over its bound,
//! trailing bytes, oversized and truncated frames are typed
//! [`frame::FrameError`]s; the machines answer them with
//! `Bye { ProtocolError, detail }` and close.
//!
//! ## Handshake
//!
//! ```text
//! expert                                         device
//!   | -- Hello{v, min_v, role, software, caps} --> |
//!   | <-- Hello{v, min_v, role, software, caps} -- |   (both send at once)
//!   | -- Auth{Offer | Invitation{id,pw} | Resume} ->|   (offer: identity is the
//!   |                                              |    TLS client certificate)
//!   | <-- ConsentPending{View, timeout_secs} ----- |   prompt on the device
//!   | <-- ConsentGranted{View} ------------------- |   or ConsentDeclined + Bye
//!   | -- UpdateRequest{incremental: false} ------> |
//!   | <-- ScreenInfo{w, h, format, generation} --- |
//!   | <-- Update{seq, generation, last, rects} --- |   one or more parts
//!   | -- UpdateRequest{incremental: true} -------> |   client-paced: one update
//!   | <-- Update ... ----------------------------- |   per request, coalesced
//!   | <-- Screens{current, list} ----------------- |   several screens (protocol 3)
//!   | -- SelectScreen{index} --------------------> |   a new ScreenInfo follows
//!   | -- RequestControl -------------------------> |
//!   | <-- ConsentPending{Control} ---------------- |   prompt on the device
//!   | <-- ConsentGranted{Control} ---------------- |   or ConsentDeclined
//!   | -- Pointer / Key / Touch ------------------> |   injected via uinput
//!   | <-- LocalUserActive{active} ---------------- |   local input wins
//!   | -- TypeText{id, text} ---------------------> |   typed as key presses
//!   | <-- Typed{id, typed, outcome} -------------- |   (protocol 4)
//!   | <-- ControlEnded{reason} ------------------- |   stop control / hotkey
//!   | <-> Chat{text}, Ping{nonce} / Pong{nonce}    |   any time after auth
//!   | <-> Bye{reason, detail} -------------------- |   either side, last
//! ```
//!
//! A version mismatch is detected from the first two fields of `Hello`, which
//! keep their place in every protocol version
//! ([`frame::peek_hello_versions`]): the answer is
//! `Bye { IncompatibleVersion { min, max } }`.
//!
//! ## Messages
//!
//! | tag | message | direction | meaning |
//! | --- | --- | --- | --- |
//! | 0 | `Hello` | both | version range, role, software, name, capabilities |
//! | 1 | `Auth` | E→D | `Offer`, `Invitation { id, password }`, `Resume { token }` |
//! | 2 | `ConsentPending` | D→E | the person at the device is being asked (view or control) |
//! | 3 | `ConsentGranted` | D→E | yes |
//! | 4 | `ConsentDeclined` | D→E | no: declined, timed out, view-only, already pending |
//! | 5 | `ScreenInfo` | D→E | size, wire format (XRGB8888), generation |
//! | 6 | `ScreenUnavailable` | D→E | capture paused (display off, device gone) |
//! | 7 | `UpdateRequest` | E→D | send the next (or a full) update |
//! | 8 | `Update` | D→E | rectangles: solid, copy, lz4, raw |
//! | 9 | `CursorShape` | D→E | cursor image (ARGB8888) and hotspot |
//! | 10 | `CursorPosition` | D→E | cursor position and visibility |
//! | 11 | `Pointer` | E→D | absolute position, buttons, wheels |
//! | 12 | `Key` | E→D | Linux evdev key code, press/release |
//! | 13 | `Touch` | E→D | multitouch slot, down/move/up, position |
//! | 14 | `RequestControl` | E→D | ask for control |
//! | 15 | `ReleaseControl` | E→D | give control back (or withdraw the request) |
//! | 16 | `ControlEnded` | D→E | control is over; view goes on |
//! | 17 | `LocalUserActive` | D→E | expert input is held back while the person uses the device |
//! | 18 | `Chat` | both | a line of text |
//! | 19 | `Ping` | both | keepalive |
//! | 20 | `Pong` | both | keepalive answer |
//! | 21 | `ResumeOffer` | D→E | single-use token to resume after a drop |
//! | 22 | `Bye` | both | reason code and a sentence; the last message |
//! | 23 | `ViewReport` | E→D | hashes of what the expert's view shows (protocol 2) |
//! | 24 | `ViewChecked` | D→E | how many of those differed; they are sent again (protocol 2) |
//! | 25 | `Screens` | D→E | the device's screens, where they sit, which one is shown (protocol 3) |
//! | 26 | `SelectScreen` | E→D | show another screen; input goes to it (protocol 3) |
//! | 27 | `TypeText` | E→D | type this text with the device's keyboard layout, while controlling (protocol 4) |
//! | 28 | `Typed` | D→E | how it ended: typed, or which characters the layout lacks, or why it stopped (protocol 4) |
//! | 29 | `ExactOnly` | E→D | exact pictures only from now on; approximate areas are sent exact at once (protocol 5) |
//! | 30 | `File` | both | a file transfer step ([`files`]; only between peers announcing `Capabilities::FILES`, and built with the `files` feature) |
//!
//! ## Consent
//!
//! The device machine hands out [`consent::ViewConsent`] and
//! [`consent::ControlConsent`] only after the person at the device accepted;
//! capture and injection need them. On revoke or close the machine emits
//! `ReleaseAll` and `DisableInjection` before anything else and withdraws the
//! token.

pub mod consent;
pub mod fb;
#[cfg(feature = "files")]
pub mod files;
pub mod fingerprint;
pub mod frame;
pub mod invite;
pub mod keyboard;
pub mod msg;
#[cfg(feature = "record")]
pub mod record;
pub mod rotation;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tiles;
pub mod wire;

pub use fingerprint::Fingerprint;
pub use msg::*;
pub use wire::{ALPN, DEFAULT_PORT};
