//! Every message exchanged by the device (`shoulder-agent`) and the expert
//! (`shoulder`). Text and lists are bounded; pixel payloads are bounded by the
//! frame limit ([`crate::frame::MAX_FRAME_LEN`]).

use core::fmt;

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Bumped on any incompatible change
/// to [`Message`].
pub const PROTOCOL_VERSION: u16 = 5;
/// The oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The first protocol version with the view self-check ([`ViewReport`],
/// `ViewChecked`): neither side sends them to an older peer.
pub const VIEW_CHECK_VERSION: u16 = 2;
/// The first protocol version with several screens ([`ScreenList`],
/// `SelectScreen`): neither side sends them to an older peer, which sees the
/// device's first screen only.
pub const SCREENS_VERSION: u16 = 3;
/// The first protocol version that types text ([`Message::TypeText`],
/// `Typed`): the expert does not send it to an older device.
pub const TYPE_TEXT_VERSION: u16 = 4;
/// The first protocol version that takes [`Message::ExactOnly`] mid-session:
/// the expert does not send it to an older device (it reconnects without
/// [`Capabilities::JPEG`] instead).
pub const EXACT_VERSION: u16 = 5;

/// Software names ("shoulder-agent") and versions ("1.2.3-rc1") are short.
pub const MAX_SOFTWARE_LEN: usize = 32;
/// Display names of devices and experts: long enough for a certificate CN
/// (RFC 5280 caps CN at 64 characters).
pub const MAX_NAME_LEN: usize = 64;
/// Invitation passwords: generous for passphrases, small enough that argon2
/// input stays trivial.
pub const MAX_PASSWORD_LEN: usize = 128;
/// A chat line is a sentence or two, not a file transfer.
pub const MAX_CHAT_LEN: usize = 512;
/// Text the expert has typed for them in one message: a password, a serial
/// number, a few lines (UTF-8 bytes; longer texts go in parts). The chat
/// line's bound, so the device decodes both with the same code.
pub const MAX_TYPE_TEXT_LEN: usize = MAX_CHAT_LEN;
/// Untypable characters named in a `Typed` answer (UTF-8 bytes; the bound
/// of a name, for the same reason).
pub const MAX_UNTYPABLE_LEN: usize = MAX_NAME_LEN;
/// Human-readable detail in a `Bye` or notice: one or two sentences.
pub const MAX_DETAIL_LEN: usize = 256;
/// Rectangles per update part. The encoder splits larger updates into several
/// parts; this keeps one decoded message small (a few KiB of headers).
pub const MAX_RECTS_PER_PART: usize = 64;
/// Screens a device lists at most (outputs of one or a few cards).
pub const MAX_SCREENS: usize = 8;
/// A screen's name: the connector as the kernel names it (`HDMI-A-1`), with
/// the card when there are several (`card1/HDMI-A-1`).
pub const MAX_SCREEN_NAME_LEN: usize = 32;
/// Largest screen edge we accept, in pixels (8K is 7680; leave headroom).
pub const MAX_SCREEN_EDGE: u16 = 8192;
/// Cursor images are at most this many pixels on each side (kernels cap
/// hardware cursors at 256×256 on all common drivers).
pub const MAX_CURSOR_EDGE: u16 = 256;

/// Bounded UTF-8 text.
pub type Text<const N: usize> = heapless::String<N>;

/// Builds bounded text from `s`, truncating at a character boundary and ending
/// with `…` when it does not fit. Never fails: long names are shown shortened.
pub fn text<const N: usize>(s: &str) -> Text<N> {
    let mut out = Text::<N>::new();
    if out.push_str(s).is_ok() {
        return out;
    }
    out.clear();
    const ELLIPSIS: char = '…';
    let budget = N.saturating_sub(ELLIPSIS.len_utf8());
    for c in s.chars() {
        if out.len() + c.len_utf8() > budget {
            break;
        }
        // Cannot fail: the length was checked just above.
        let _ = out.push(c);
    }
    let _ = out.push(ELLIPSIS);
    out
}

/// Raw bytes (pixels, compressed pixels) serialized as one byte string.
/// Their size is bounded by the frame that carries them.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Payload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Payload, E> {
                Ok(Payload(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
                Ok(Payload(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Which end of the connection a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Device,
    Expert,
}

/// Optional features a peer supports, as bits. Unknown bits are ignored, so
/// new capabilities need no version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Lz4-compressed rectangles.
    pub const LZ4: Self = Self(1 << 0);
    /// Copy-rectangle (scroll) encoding.
    pub const COPY: Self = Self(1 << 1);
    /// Separate cursor image and position.
    pub const CURSOR: Self = Self(1 << 2);
    /// Touch events.
    pub const TOUCH: Self = Self(1 << 3);
    /// Session resumption after a dropped connection.
    pub const RESUME: Self = Self(1 << 4);
    /// Deflate-compressed rectangles ([`Encoding::Deflate`]).
    pub const DEFLATE: Self = Self(1 << 5);
    /// Lossy rectangles ([`Encoding::Jpeg`]), refined to exact pixels once
    /// the area stops changing. An expert that wants every update exact
    /// leaves it out.
    pub const JPEG: Self = Self(1 << 6);
    /// Deflate rectangles that continue one stream for the whole screen
    /// ([`Encoding::DeflateStream`]): later rectangles refer back to
    /// earlier ones, as RFB's ZRLE does.
    pub const DEFLATE_STREAM: Self = Self(1 << 7);
    /// File transfers ([`Message::File`]): the device sets it only when its
    /// config offers files, the expert when it is built with them.
    pub const FILES: Self = Self(1 << 8);
    /// The device records its sessions (`[record]` in its agent.toml): only
    /// a device sets it, so the expert can say so before the view starts.
    pub const RECORDED: Self = Self(1 << 9);
    /// Listings of the readable directories (`FileMsg::List`): the device
    /// sets it with [`Capabilities::FILES`] when it offers files to read.
    pub const FILE_LIST: Self = Self(1 << 10);
    /// Everything this build implements.
    pub const ALL: Self = Self(0b1111_1111);

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The first message each side sends. `version` and `min_version` are the first
/// two fields of the first message variant, so any future peer can still read
/// them and answer "incompatible version" instead of failing on garbage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub min_version: u16,
    pub role: Role,
    pub software: Text<MAX_SOFTWARE_LEN>,
    pub software_version: Text<MAX_SOFTWARE_LEN>,
    /// Device name (device side) or the expert's self-declared name (shown only
    /// as a hint: the authenticated identity comes from the certificate).
    pub name: Text<MAX_NAME_LEN>,
    pub capabilities: Capabilities,
}

impl Hello {
    pub fn new(role: Role, software: &str, software_version: &str, name: &str) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            role,
            software: text(software),
            software_version: text(software_version),
            name: text(name),
            capabilities: Capabilities::ALL,
        }
    }
}

/// An invitation's identifier: 8 random bytes, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvitationId(pub [u8; 8]);

impl fmt::Display for InvitationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InvitationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InvitationId({self})")
    }
}

impl core::str::FromStr for InvitationId {
    type Err = InvalidInvitationId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 16 || !s.is_ascii() {
            return Err(InvalidInvitationId);
        }
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| InvalidInvitationId)?;
        }
        Ok(Self(id))
    }
}

/// A string that is not 16 hex digits was given as an invitation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an invitation id is 16 hexadecimal digits (as printed by `shoulder-agent invite --list`)")]
pub struct InvalidInvitationId;

/// A single-use secret that lets the same expert continue a session after the
/// connection dropped (see [`Message::ResumeOffer`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeToken(pub [u8; 32]);

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(…)")
    }
}

/// How the expert proves who they are.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Auth {
    /// Offer: the identity is the TLS client certificate; nothing more is sent.
    Offer,
    /// Invitation made on the device, unlocked with its password.
    Invitation {
        id: InvitationId,
        password: Text<MAX_PASSWORD_LEN>,
    },
    /// Continue a session whose connection dropped.
    Resume { token: ResumeToken },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Offer => f.write_str("Offer"),
            // Never print the password.
            Auth::Invitation { id, .. } => write!(f, "Invitation({id})"),
            Auth::Resume { .. } => f.write_str("Resume"),
        }
    }
}

/// What the expert asks the person at the device for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentKind {
    /// To see the screen.
    View,
    /// To use pointer and keyboard on the device.
    Control,
    /// To copy a file from or to the device (a prompt only: the wire says
    /// it with `File` messages, so no peer is ever sent this).
    Files,
}

/// Why a consent request was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeclineReason {
    /// The person at the device pressed Decline.
    Declined,
    /// Nobody answered before the prompt ran out.
    TimedOut,
    /// The device is configured view-only (`allow_control = false`).
    ViewOnly,
    /// A control request is already waiting or control is already granted.
    AlreadyPending,
    /// Asked again too soon after a declined request: ask again after this
    /// many seconds.
    TooSoon { retry_after_secs: u16 },
}

/// Why control ended (the session goes on, view only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlEndReason {
    /// The person at the device pressed "Stop control".
    StoppedByUser,
    /// The person at the device pressed the stop-control hotkey.
    Hotkey,
    /// The expert released control.
    Released,
    /// Input injection failed on the device (e.g. uinput error).
    DeviceFault,
}

/// Pixel formats on the wire. One for now: every capture format is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFormat {
    /// 32 bits per pixel, little-endian bytes B, G, R, X (X is ignored).
    Xrgb8888,
}

/// The device screen as the expert will see it. A new `ScreenInfo` (e.g. after
/// a mode change) resets the expert's framebuffer; updates follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenInfo {
    pub width: u16,
    pub height: u16,
    pub format: WireFormat,
    /// Increments on every change of size or format, so late updates for an
    /// old screen can be told apart and dropped.
    pub generation: u32,
}

/// One of the device's screens, as [`ScreenList`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenEntry {
    pub name: Text<MAX_SCREEN_NAME_LEN>,
    /// Its size as the expert gets it (upright).
    pub width: u16,
    pub height: u16,
    /// Where it sits in the desktop the device's compositor makes of its
    /// screens (top-left corner; the expert's input goes there).
    pub x: u16,
    pub y: u16,
}

/// Device → expert, protocol [`SCREENS_VERSION`] on: the device's screens
/// and which one the expert is shown. Sent when viewing starts with more
/// than one screen, and again whenever the list or the choice changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenList {
    /// Index into `screens` of the screen `ScreenInfo` and updates are for.
    pub current: u8,
    pub screens: heapless::Vec<ScreenEntry, MAX_SCREENS>,
}

/// One XRGB8888 pixel as a little-endian u32 (0x00RRGGBB).
pub type Pixel = u32;

/// How one rectangle's pixels are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Every pixel has this value.
    Solid(Pixel),
    /// Copy from `(src_x, src_y)` of the expert's framebuffer as it is when this
    /// rectangle is applied (overlap allowed, memmove semantics). Encoders put
    /// copies first in an update, sourced from pixels not yet overwritten.
    Copy { src_x: u16, src_y: u16 },
    /// Rows of XRGB8888 pixels (`w * 4` bytes each, no padding), lz4 block
    /// compressed (`lz4_flex` block format, no size prefix).
    Lz4(Payload),
    /// Rows of XRGB8888 pixels, uncompressed.
    Raw(Payload),
    /// The rectangle as a tile stream ([`crate::tiles`]: tiles of 64
    /// pixels, each raw, solid, a packed palette or runs, 3-byte pixels),
    /// compressed as one raw deflate stream (RFC 1951, no zlib header).
    /// Only sent to an expert that announced [`Capabilities::DEFLATE`].
    Deflate(Payload),
    /// The rectangle as a baseline JPEG (YCbCr, any subsampling) of exactly
    /// `w`×`h` pixels: an approximation of the screen, sent for photo-like
    /// areas on slow links. The device sends the exact pixels once the area
    /// stops changing. Only sent to an expert that announced
    /// [`Capabilities::JPEG`].
    Jpeg(Payload),
    /// The rectangle as a tile stream, as for [`Encoding::Deflate`], but
    /// compressed as the next piece of one raw deflate stream that runs
    /// across the rectangles of a screen, each piece ended by a sync flush
    /// (an empty stored block), so back-references reach into the 32 KiB of
    /// tile streams before it. `restart`: the stream starts anew at this
    /// piece (the first of a screen, of a full update, after the device
    /// reset its encoder); a piece that does not restart continues the
    /// stream of every `DeflateStream` rectangle applied since the last
    /// restart, so the expert must apply all of them, in order. Only sent
    /// to an expert that announced [`Capabilities::DEFLATE_STREAM`].
    DeflateStream { restart: bool, data: Payload },
}

impl Encoding {
    /// Bytes of pixel payload it carries (0 for solid fills and copies).
    pub fn payload_len(&self) -> usize {
        match self {
            Encoding::Lz4(p)
            | Encoding::Raw(p)
            | Encoding::Deflate(p)
            | Encoding::Jpeg(p)
            | Encoding::DeflateStream { data: p, .. } => p.0.len(),
            Encoding::Solid(_) | Encoding::Copy { .. } => 0,
        }
    }
}

/// A changed rectangle of the screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rect {
    pub x: u16,
    pub y: u16,
    pub w: u16,
    pub h: u16,
    pub encoding: Encoding,
}

/// Part of a screen update. An update is one or more parts with the same `seq`;
/// the last one has `last = true`, after which the expert's framebuffer equals
/// the device screen at capture time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePart {
    pub seq: u32,
    /// The [`ScreenInfo::generation`] this update is for.
    pub generation: u32,
    pub last: bool,
    pub rects: heapless::Vec<Rect, MAX_RECTS_PER_PART>,
}

impl UpdatePart {
    /// Bytes of pixel payload in all its rectangles.
    pub fn payload_len(&self) -> usize {
        self.rects.iter().map(|r| r.encoding.payload_len()).sum()
    }
}

/// Horizontal bands of the screen a [`ViewReport`] hashes, at most (see
/// [`crate::fb::view_band_rows`] for how rows are grouped into bands).
pub const VIEW_CHECK_BANDS: usize = 64;

/// The expert's framebuffer as it is after update `seq` of screen
/// `generation` was fully applied: one hash per band of rows
/// ([`crate::fb::Framebuffer::view_report`]). The device compares it with
/// what it believes the expert has and sends again the bands that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewReport {
    pub generation: u32,
    pub seq: u32,
    pub hashes: heapless::Vec<u64, VIEW_CHECK_BANDS>,
}

/// A cursor image, ARGB8888 little-endian (bytes B, G, R, A), premultiplied
/// alpha not assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorShape {
    pub width: u16,
    pub height: u16,
    pub hot_x: u16,
    pub hot_y: u16,
    pub pixels: Payload,
}

/// Pointer buttons as bits: 1 left, 2 right, 4 middle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Buttons(pub u8);

impl Buttons {
    pub const LEFT: u8 = 1;
    pub const RIGHT: u8 = 2;
    pub const MIDDLE: u8 = 4;
    pub const ALL: u8 = 7;
}

/// Absolute pointer state in device screen pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    pub x: u16,
    pub y: u16,
    pub buttons: Buttons,
    /// Vertical wheel clicks since the last event (positive: away from user).
    pub wheel: i8,
    /// Horizontal wheel clicks (positive: right).
    pub hwheel: i8,
}

/// A key press or release. `code` is a Linux evdev key code (`KEY_*`); key
/// repeat is made by the device's kernel, never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub code: u16,
    pub down: bool,
}

/// What a touch contact does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TouchPhase {
    Down,
    Move,
    Up,
}

/// A touch contact in device screen pixels (multitouch slot `slot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    pub slot: u8,
    pub phase: TouchPhase,
    pub x: u16,
    pub y: u16,
}

/// Why a session ended, carried by [`Message::Bye`]. Each has a sentence the
/// expert's client shows ([`ByeReason::sentence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ByeReason {
    /// A side disconnected normally.
    Normal,
    /// The person at the device ended the session.
    EndedByUser,
    /// The person at the device declined to show the screen.
    Declined,
    /// Nobody at the device answered in time.
    ConsentTimeout,
    /// Another expert is already connected.
    Busy,
    /// Remote assistance is turned off on this device.
    Disabled,
    /// Offers are turned off on this device.
    OffersDisabled,
    /// Invitations are turned off on this device.
    InvitationsDisabled,
    /// The expert certificate was not issued by a CA this device trusts.
    UnknownCa,
    /// The expert certificate has expired or is not valid yet.
    CertificateExpired,
    /// The expert's identity is not on this device's allow-list.
    NotAllowed,
    /// An offer came without a client certificate.
    NoCertificate,
    /// The invitation password was wrong.
    WrongPassword { tries_left: u8 },
    /// The device knows no such invitation.
    InvitationUnknown,
    /// The invitation expired this many seconds ago.
    InvitationExpired { secs_ago: u64 },
    /// The invitation was revoked on the device.
    InvitationRevoked,
    /// The invitation was already used for a session.
    InvitationUsed,
    /// Too many wrong passwords: the invitation no longer works.
    InvitationBurned,
    /// Too many failed attempts from this address.
    RateLimited { retry_after_secs: u32 },
    /// The peers share no protocol version.
    IncompatibleVersion { min: u16, max: u16 },
    /// The peer sent something that breaks the protocol.
    ProtocolError,
    /// Authentication did not finish in time.
    AuthTimeout,
    /// The peer stopped answering keepalives.
    PeerTimeout,
    /// The device agent is shutting down.
    ShuttingDown,
    /// The device cannot write its audit log, so it refuses sessions.
    AuditFailure,
    /// A resume token was unknown, expired or used.
    ResumeRejected,
    /// Something failed on the device; the detail says what.
    InternalError,
}

impl ByeReason {
    /// A sentence for the expert, with a next step where there is one.
    pub fn sentence(&self) -> String {
        match *self {
            ByeReason::Normal => "The session ended.".into(),
            ByeReason::EndedByUser => "The person at the device ended the session.".into(),
            ByeReason::Declined => "The device declined.".into(),
            ByeReason::ConsentTimeout => {
                "Nobody at the device answered in time — ask someone to stand by and try again."
                    .into()
            }
            ByeReason::Busy => {
                "Another expert is already connected to this device — try again later.".into()
            }
            ByeReason::Disabled => "Remote assistance is turned off on this device.".into(),
            ByeReason::OffersDisabled => {
                "This device does not accept offers — ask for an invitation instead.".into()
            }
            ByeReason::InvitationsDisabled => {
                "This device does not accept invitations — use an offer instead.".into()
            }
            ByeReason::UnknownCa => {
                "The device does not trust the CA that issued your certificate.".into()
            }
            ByeReason::CertificateExpired => {
                "Your certificate has expired or is not valid yet — get a new one issued.".into()
            }
            ByeReason::NotAllowed => {
                "Your identity is not on this device's allow-list — ask the device owner to add it."
                    .into()
            }
            ByeReason::NoCertificate => {
                "Offers need your expert certificate — pick an identity and try again.".into()
            }
            ByeReason::WrongPassword { tries_left } => {
                let s = if tries_left == 1 { "try" } else { "tries" };
                format!("Wrong password ({tries_left} {s} left).")
            }
            ByeReason::InvitationUnknown => {
                "The device does not know this invitation — ask for a new one.".into()
            }
            ByeReason::InvitationExpired { secs_ago } => format!(
                "Invitation expired {} ago — ask for a new one.",
                human_duration(secs_ago)
            ),
            ByeReason::InvitationRevoked => {
                "The invitation was revoked on the device — ask for a new one.".into()
            }
            ByeReason::InvitationUsed => {
                "The invitation was already used — ask for a new one.".into()
            }
            ByeReason::InvitationBurned => {
                "Too many wrong passwords: the invitation no longer works — ask for a new one."
                    .into()
            }
            ByeReason::RateLimited { retry_after_secs } => format!(
                "Too many failed attempts — wait {} and try again.",
                human_duration(u64::from(retry_after_secs))
            ),
            ByeReason::IncompatibleVersion { min, max } => format!(
                "Incompatible version: the device speaks protocol {min}–{max}, this client {MIN_PROTOCOL_VERSION}–{PROTOCOL_VERSION} — update the older side."
            ),
            ByeReason::ProtocolError => {
                "The connection broke the protocol — check both sides run matching versions.".into()
            }
            ByeReason::AuthTimeout => "Authentication took too long.".into(),
            ByeReason::PeerTimeout => {
                "The other side stopped answering — check the network.".into()
            }
            ByeReason::ShuttingDown => "The device agent is shutting down.".into(),
            ByeReason::AuditFailure => {
                "The device cannot write its audit log, so it refuses sessions.".into()
            }
            ByeReason::ResumeRejected => "The session could not be resumed — connect again.".into(),
            ByeReason::InternalError => "The device had an internal error.".into(),
        }
    }
}

/// "84 KB", "1.2 MB", "512 bytes": decimal units, as file managers show
/// them (integer arithmetic: no float formatting in the device binary).
pub fn human_size(n: u64) -> String {
    if n < 1000 {
        return if n == 1 {
            "1 byte".into()
        } else {
            format!("{n} bytes")
        };
    }
    let mut unit = 0;
    let mut scale = 1000u64;
    while n / scale >= 1000 && unit < 3 {
        scale *= 1000;
        unit += 1;
    }
    let name = ["KB", "MB", "GB", "TB"][unit];
    // Tenths, rounded half up.
    let tenths = (u128::from(n) * 10 + u128::from(scale) / 2) / u128::from(scale);
    if tenths < 100 {
        format!("{}.{} {name}", tenths / 10, tenths % 10)
    } else {
        format!("{} {name}", (tenths + 5) / 10)
    }
}

/// "5 minutes", "1 hour", "40 seconds".
pub fn human_duration(secs: u64) -> String {
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "day")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hour")
    } else if secs >= 120 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Every message on the wire. The variant order is the wire tag: append new
/// variants at the end, never reorder.
// Chat text (512 bytes) is the largest inline variant; messages are moved
// a handful of times, so boxing it would cost more than it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Both sides, first message.
    Hello(Hello),
    /// Expert → device, after the hellos.
    Auth(Auth),
    /// Device → expert: authenticated; the person at the device is being asked.
    ConsentPending {
        kind: ConsentKind,
        timeout_secs: u16,
    },
    /// Device → expert.
    ConsentGranted { kind: ConsentKind },
    /// Device → expert. A declined view ends the session (a `Bye` follows); a
    /// declined control request leaves the session viewing.
    ConsentDeclined {
        kind: ConsentKind,
        reason: DeclineReason,
    },
    /// Device → expert: the screen's size and format; updates follow.
    ScreenInfo(ScreenInfo),
    /// Device → expert: the screen cannot be captured now (display off, device
    /// gone); a `ScreenInfo` follows when it can again.
    ScreenUnavailable { detail: Text<MAX_DETAIL_LEN> },
    /// Expert → device: send the next update when something changed
    /// (`incremental`) or the whole screen now (`!incremental`).
    UpdateRequest { incremental: bool },
    /// Device → expert.
    Update(Box<UpdatePart>),
    /// Device → expert.
    CursorShape(Box<CursorShape>),
    /// Device → expert.
    CursorPosition { x: u16, y: u16, visible: bool },
    /// Expert → device, while controlling.
    Pointer(Pointer),
    /// Expert → device, while controlling.
    Key(Key),
    /// Expert → device, while controlling.
    Touch(Touch),
    /// Expert → device.
    RequestControl,
    /// Expert → device.
    ReleaseControl,
    /// Device → expert.
    ControlEnded { reason: ControlEndReason },
    /// Device → expert: the person at the device is using it, expert input is
    /// held back (`true`), or no longer (`false`).
    LocalUserActive { active: bool },
    /// Both ways.
    Chat { text: Text<MAX_CHAT_LEN> },
    /// Both ways; answered with `Pong` carrying the same nonce.
    Ping { nonce: u64 },
    /// Both ways.
    Pong { nonce: u64 },
    /// Device → expert, once viewing (on a resumed connection: before the
    /// grant): a single-use token to resume this session within
    /// `grace_secs` if the connection drops. A token that was used stays
    /// good only until the expert shows it has the next one (its first
    /// `UpdateRequest` after the resume), so a resume cut short can be
    /// tried again.
    ResumeOffer { token: ResumeToken, grace_secs: u16 },
    /// Both ways, last message.
    Bye {
        reason: ByeReason,
        detail: Text<MAX_DETAIL_LEN>,
    },
    /// Expert → device, while viewing, protocol 2 and later: the hashes of
    /// what the expert's framebuffer shows (now and then, and when the
    /// technician asks for a refresh).
    ViewReport(Box<ViewReport>),
    /// Device → expert, the answer to a `ViewReport`: of the bands it could
    /// compare (those not changed by updates the expert had not applied
    /// yet), how many differed; those are sent again with the next update.
    ViewChecked {
        seq: u32,
        compared: u16,
        differing: u16,
    },
    /// Device → expert, protocol [`SCREENS_VERSION`] on, while viewing.
    Screens(Box<ScreenList>),
    /// Expert → device, protocol [`SCREENS_VERSION`] on, while viewing: show
    /// screen `index` of the last [`ScreenList`] instead (a `ScreenInfo` and
    /// the whole screen follow; input goes to it).
    SelectScreen { index: u8 },
    /// Expert → device, protocol [`TYPE_TEXT_VERSION`] on, while
    /// controlling: type `text` with the device's keyboard layout. An empty
    /// text stops the typing under way. Answered by `Typed` with the same
    /// `id`.
    TypeText {
        id: u32,
        text: Box<Text<MAX_TYPE_TEXT_LEN>>,
    },
    /// Device → expert: how the `TypeText` `id` ended, after `typed`
    /// characters.
    Typed {
        id: u32,
        typed: u16,
        outcome: TypeOutcome,
    },
    /// Expert → device, protocol [`EXACT_VERSION`] on, while viewing: exact
    /// pictures only from now on, for the rest of the session (as if the
    /// expert's `Hello` had left out [`Capabilities::JPEG`]); what is
    /// approximate on the expert's screen is sent exact at once.
    ExactOnly,
    /// Both ways, between peers whose hellos both carry
    /// [`Capabilities::FILES`], while viewing: a file transfer
    /// ([`crate::files`]). Built only with the `files` feature; a device
    /// built without it never announces the capability.
    #[cfg(feature = "files")]
    File(Box<crate::files::FileMsg>),
}

/// How typing a text ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TypeOutcome {
    /// Every character was typed.
    Done,
    /// Only while controlling.
    NotControlling,
    /// Another text is being typed; it goes on.
    Busy,
    /// The device has no keyboard layout to type with (the agent was built
    /// without `type-text`, or `keyboard_layout` is not set).
    NoLayout,
    /// The layout has no keys for these characters: nothing was typed.
    Untypable {
        layout: Text<MAX_SOFTWARE_LEN>,
        chars: Text<MAX_UNTYPABLE_LEN>,
    },
    /// The person at the device used its keyboard or pointer: the rest
    /// was not typed.
    LocalUserActive,
    /// Control ended (or the connection dropped) before the end.
    ControlEnded,
    /// The expert stopped it (an empty `TypeText`).
    Stopped,
    /// The connection dropped: told on the resumed one.
    ConnectionLost,
    /// The device's agent is older than [`TYPE_TEXT_VERSION`]: the
    /// expert's own answer (no device sends it).
    Unsupported,
}

impl TypeOutcome {
    /// The sentence the technician reads, after `typed` of `total`
    /// characters.
    pub fn sentence(&self, typed: u16) -> String {
        match self {
            TypeOutcome::Done => format!("Typed {typed} characters."),
            TypeOutcome::NotControlling => {
                "Nothing typed: typing needs control of the device (request it first).".into()
            }
            TypeOutcome::Busy => {
                "Nothing typed: the device is still typing the previous text.".into()
            }
            TypeOutcome::NoLayout => "Nothing typed: this device has no keyboard layout to type \
                 with (its agent needs the type-text feature and keyboard_layout in agent.toml)."
                .into(),
            TypeOutcome::Untypable { layout, chars } => format!(
                "Nothing typed: the device's keyboard layout ({layout}) has no keys for: {chars}"
            ),
            TypeOutcome::LocalUserActive => format!(
                "Typing stopped after {typed} characters: the person at the device used it."
            ),
            TypeOutcome::ControlEnded => {
                format!("Typing stopped after {typed} characters: control ended.")
            }
            TypeOutcome::Stopped => format!("Typing stopped after {typed} characters."),
            TypeOutcome::ConnectionLost => {
                format!("Typing stopped after {typed} characters: the connection dropped.")
            }
            TypeOutcome::Unsupported => {
                "Nothing typed: the device's agent is too old to type text (update it).".into()
            }
        }
    }
}

/// Number of [`Message`] variants: a wire tag at or above this is unknown.
#[cfg(not(feature = "files"))]
pub const MESSAGE_VARIANTS: u32 = 30;
/// Number of [`Message`] variants: a wire tag at or above this is unknown.
#[cfg(feature = "files")]
pub const MESSAGE_VARIANTS: u32 = 31;

impl Message {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Auth(_) => "Auth",
            Message::ConsentPending { .. } => "ConsentPending",
            Message::ConsentGranted { .. } => "ConsentGranted",
            Message::ConsentDeclined { .. } => "ConsentDeclined",
            Message::ScreenInfo(_) => "ScreenInfo",
            Message::ScreenUnavailable { .. } => "ScreenUnavailable",
            Message::UpdateRequest { .. } => "UpdateRequest",
            Message::Update(_) => "Update",
            Message::CursorShape(_) => "CursorShape",
            Message::CursorPosition { .. } => "CursorPosition",
            Message::Pointer(_) => "Pointer",
            Message::Key(_) => "Key",
            Message::Touch(_) => "Touch",
            Message::RequestControl => "RequestControl",
            Message::ReleaseControl => "ReleaseControl",
            Message::ControlEnded { .. } => "ControlEnded",
            Message::LocalUserActive { .. } => "LocalUserActive",
            Message::Chat { .. } => "Chat",
            Message::Ping { .. } => "Ping",
            Message::Pong { .. } => "Pong",
            Message::ResumeOffer { .. } => "ResumeOffer",
            Message::Bye { .. } => "Bye",
            Message::ViewReport(_) => "ViewReport",
            Message::ViewChecked { .. } => "ViewChecked",
            Message::Screens(_) => "Screens",
            Message::SelectScreen { .. } => "SelectScreen",
            Message::TypeText { .. } => "TypeText",
            Message::Typed { .. } => "Typed",
            Message::ExactOnly => "ExactOnly",
            #[cfg(feature = "files")]
            Message::File(_) => "File",
        }
    }

    /// A `Bye` with the reason's own sentence as detail.
    pub fn bye(reason: ByeReason) -> Self {
        Message::Bye {
            reason,
            detail: text(&reason.sentence()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_truncates_with_ellipsis_on_char_boundary() {
        let t: Text<8> = text("héllo wörld");
        assert!(t.ends_with('…'));
        assert!(t.len() <= 8);
        let t: Text<8> = text("short");
        assert_eq!(t.as_str(), "short");
    }

    #[test]
    fn invitation_id_round_trips_as_hex() {
        let id = InvitationId([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        assert_eq!(id.to_string(), "deadbeef00010203");
        assert_eq!("deadbeef00010203".parse::<InvitationId>(), Ok(id));
        assert!("deadbeef".parse::<InvitationId>().is_err());
        assert!("zzadbeef00010203".parse::<InvitationId>().is_err());
    }

    #[test]
    fn sizes_read_as_a_file_manager_shows_them() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1000), "1.0 KB");
        assert_eq!(human_size(84_000), "84 KB");
        assert_eq!(human_size(99_960), "100 KB");
        assert_eq!(human_size(1_234_567), "1.2 MB");
        assert_eq!(human_size(999_999), "1000 KB");
        assert_eq!(human_size(3_000_000_000), "3.0 GB");
    }

    #[test]
    fn sentences_name_next_steps() {
        assert_eq!(
            ByeReason::WrongPassword { tries_left: 2 }.sentence(),
            "Wrong password (2 tries left)."
        );
        assert_eq!(
            ByeReason::InvitationExpired { secs_ago: 300 }.sentence(),
            "Invitation expired 5 minutes ago — ask for a new one."
        );
        assert_eq!(ByeReason::Declined.sentence(), "The device declined.");
    }

    #[test]
    fn variant_count_matches_last_tag() {
        #[cfg(not(feature = "files"))]
        let last = postcard::to_stdvec(&Message::ExactOnly).unwrap();
        #[cfg(feature = "files")]
        let last = postcard::to_stdvec(&Message::File(Box::new(crate::files::FileMsg::Cancel {
            id: 0,
        })))
        .unwrap();
        assert_eq!(u32::from(last[0]) + 1, MESSAGE_VARIANTS);
    }
}
