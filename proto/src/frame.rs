//! Length-prefixed framing.
//!
//! ```text
//! +----------------+-------------------------------+
//! | len: u32 (LE)  | postcard(Message), len bytes  |
//! +----------------+-------------------------------+
//! ```
//!
//! The decoder takes bytes in any chunking and yields whole messages or a
//! typed [`FrameError`]. It never allocates more than the current limit plus
//! the 4-byte header, and never panics.

use crate::msg::{MESSAGE_VARIANTS, Message};

/// Largest frame (payload) accepted once authenticated. The encoder splits
/// screen updates into parts of at most [`MAX_UPDATE_PAYLOAD`], so 2 MiB leaves
/// room for headers while capping what one peer can make us buffer.
pub const MAX_FRAME_LEN: usize = 2 * 1024 * 1024;
/// Pixel bytes an encoder puts into one update part (before framing).
pub const MAX_UPDATE_PAYLOAD: usize = 1024 * 1024;
/// Largest frame accepted before authentication: `Hello` and `Auth` are a few
/// hundred bytes, so an unauthenticated peer can make us buffer only this.
pub const MAX_PRE_AUTH_FRAME_LEN: usize = 1024;
/// Bytes in the length prefix.
pub const HEADER_LEN: usize = 4;

/// What can be wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    Oversize { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown message type {tag} (the peer may run a newer protocol)")]
    UnknownMessage { tag: u32 },
    /// An enum tag without a variant, or text or a list over its bound
    /// (postcard reports both the same way).
    #[error(
        "invalid value in a {message} message (unknown variant, or text or list over its bound)"
    )]
    InvalidField { message: &'static str },
    #[error("malformed {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: &'static str,
    },
    #[error("{extra} unexpected bytes after a {message} message")]
    TrailingBytes { message: &'static str, extra: usize },
    #[error("message too large to send ({len} bytes, limit {max})")]
    TooLargeToSend { len: usize, max: usize },
}

/// Serializes `msg` into one frame appended to `out`.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let mut out_vec = core::mem::take(out);
    out_vec = match postcard::to_extend(msg, out_vec) {
        Ok(v) => v,
        Err(_) => {
            // Serializing into a Vec only fails for unrepresentable data,
            // which our bounded types exclude; report rather than panic.
            return Err(FrameError::Malformed {
                message: msg.name(),
                reason: "could not be serialized",
            });
        }
    };
    *out = out_vec;
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(FrameError::TooLargeToSend {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // `len` fits in u32: it is at most MAX_FRAME_LEN.
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Serializes `msg` into a new frame.
pub fn encode(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Decodes one message from a frame payload (without the length prefix).
pub fn decode_payload(payload: &[u8]) -> Result<Message, FrameError> {
    let Some(tag) = read_varint_u32(payload) else {
        return Err(if payload.is_empty() {
            FrameError::Empty
        } else {
            FrameError::Malformed {
                message: "?",
                reason: "bad message tag",
            }
        });
    };
    if tag >= MESSAGE_VARIANTS {
        return Err(FrameError::UnknownMessage { tag });
    }
    let message = variant_name(tag);
    match postcard::take_from_bytes::<Message>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((msg, rest)) => Err(FrameError::TrailingBytes {
            message: msg.name(),
            extra: rest.len(),
        }),
        Err(e) => Err(map_postcard_error(message, e)),
    }
}

fn map_postcard_error(message: &'static str, e: postcard::Error) -> FrameError {
    use postcard::Error as E;
    match e {
        E::DeserializeBadEnum | E::SerdeDeCustom => FrameError::InvalidField { message },
        E::DeserializeUnexpectedEnd => FrameError::Malformed {
            message,
            reason: "ends early",
        },
        E::DeserializeBadBool => FrameError::Malformed {
            message,
            reason: "bad boolean",
        },
        E::DeserializeBadUtf8 | E::DeserializeBadChar => FrameError::Malformed {
            message,
            reason: "text is not UTF-8",
        },
        E::DeserializeBadVarint => FrameError::Malformed {
            message,
            reason: "bad integer",
        },
        E::DeserializeBadOption => FrameError::Malformed {
            message,
            reason: "bad option tag",
        },
        _ => FrameError::Malformed {
            message,
            reason: "does not decode",
        },
    }
}

fn variant_name(tag: u32) -> &'static str {
    const NAMES: [&str; 31] = [
        "Hello",
        "Auth",
        "ConsentPending",
        "ConsentGranted",
        "ConsentDeclined",
        "ScreenInfo",
        "ScreenUnavailable",
        "UpdateRequest",
        "Update",
        "CursorShape",
        "CursorPosition",
        "Pointer",
        "Key",
        "Touch",
        "RequestControl",
        "ReleaseControl",
        "ControlEnded",
        "LocalUserActive",
        "Chat",
        "Ping",
        "Pong",
        "ResumeOffer",
        "Bye",
        "ViewReport",
        "ViewChecked",
        "Screens",
        "SelectScreen",
        "TypeText",
        "Typed",
        "ExactOnly",
        "File",
    ];
    NAMES
        .get(tag as usize)
        .filter(|_| tag < MESSAGE_VARIANTS)
        .copied()
        .unwrap_or("?")
}

/// Reads a postcard varint u32 at the start of `bytes`.
fn read_varint_u32(bytes: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        value |= part.checked_shl(7 * i as u32)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads the protocol version range from the payload of a peer's first frame
/// without decoding the rest, so a peer speaking a newer layout of `Hello` is
/// still told "incompatible version". Returns `(version, min_version)`.
pub fn peek_hello_versions(payload: &[u8]) -> Option<(u16, u16)> {
    // Tag 0 (Hello), then two varint u16.
    let (&tag, rest) = payload.split_first()?;
    if tag != 0 {
        return None;
    }
    let (v, rest) = read_varint_u16(rest)?;
    let (min, _) = read_varint_u16(rest)?;
    Some((v, min))
}

fn read_varint_u16(bytes: &[u8]) -> Option<(u16, &[u8])> {
    let mut value: u32 = 0;
    for (i, b) in bytes.iter().take(3).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((u16::try_from(value).ok()?, &bytes[i + 1..]));
        }
    }
    None
}

/// Incremental frame decoder: push bytes as they arrive, pull messages.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_len` (clamped to
    /// [`MAX_FRAME_LEN`]).
    pub fn new(max_len: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            max_len: max_len.min(MAX_FRAME_LEN),
        }
    }

    /// Changes the limit, e.g. from [`MAX_PRE_AUTH_FRAME_LEN`] to
    /// [`MAX_FRAME_LEN`] once the peer is authenticated.
    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len.min(MAX_FRAME_LEN);
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes buffered and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Appends received bytes. Fails at once if the frame being received is
    /// over the limit, so an oversized frame is never buffered.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        self.check_header()
    }

    fn check_header(&self) -> Result<(), FrameError> {
        split_frame(&self.buf[self.pos..], self.max_len).map(|_| ())
    }

    /// Takes the next whole frame's payload, if one is buffered.
    pub fn next_payload(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(frame) = split_frame(&self.buf[self.pos..], self.max_len)? else {
            return Ok(None);
        };
        let payload = frame[HEADER_LEN..].to_vec();
        self.pos += frame.len();
        self.compact();
        Ok(Some(payload))
    }

    /// Decodes the next whole message, if one is buffered.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        match self.next_payload()? {
            Some(payload) => decode_payload(&payload).map(Some),
            None => Ok(None),
        }
    }

    /// Call when the peer closed the stream: a partial frame is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        let pending = &self.buf[self.pos..];
        if pending.is_empty() {
            return Ok(());
        }
        let need = if pending.len() >= HEADER_LEN {
            HEADER_LEN + frame_len(pending)
        } else {
            HEADER_LEN
        };
        Err(FrameError::Truncated {
            have: pending.len(),
            need,
        })
    }

    fn compact(&mut self) {
        // Drop consumed bytes once they dominate the buffer, keeping pushes
        // amortized O(n) without letting memory grow past ~2 frames.
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// The payload length a frame header announces (`pending` starts with a
/// whole header).
fn frame_len(pending: &[u8]) -> usize {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&pending[..HEADER_LEN]);
    u32::from_le_bytes(header) as usize
}

/// The one frame splitter: the whole frame at the start of `buf`, header
/// included (its length is the frame's size on the wire), or `None` while
/// it is still incomplete. A header announcing more than `max_len` payload
/// bytes is an error as soon as the header is there, so a caller never
/// buffers an oversized frame. [`FrameDecoder`] is built on it; glue that
/// keeps its own buffer (to account each frame) calls it directly.
pub fn split_frame(buf: &[u8], max_len: usize) -> Result<Option<&[u8]>, FrameError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = frame_len(buf);
    if len > max_len {
        return Err(FrameError::Oversize { len, max: max_len });
    }
    Ok(buf.get(..HEADER_LEN.saturating_add(len)))
}

/// The nonce of a `Pong`, if `payload` (a frame without its header) is
/// one. Any other message is left undecoded, so glue can watch for its own
/// probes' answers cheaply before handing the frame to its session machine.
pub fn pong_nonce(payload: &[u8]) -> Option<u64> {
    if read_varint_u32(payload)? != PONG_TAG {
        return None;
    }
    match decode_payload(payload) {
        Ok(Message::Pong { nonce }) => Some(nonce),
        _ => None,
    }
}

/// Wire tag of `Message::Pong` (its variant index).
const PONG_TAG: u32 = 20;

/// Finds where frames end in a byte stream, chunk by chunk, without
/// buffering anything: a glue layer that feeds its session machine one whole
/// frame at a time (and acts on the outputs in between) cuts each received
/// chunk at these offsets. It only reads the length headers; checking them
/// is the decoder's job.
#[derive(Debug, Clone, Default)]
pub struct FrameBoundaries {
    header: [u8; HEADER_LEN],
    /// Header bytes of the current frame seen so far.
    have: usize,
    /// Payload bytes of the current frame still to come.
    remaining: usize,
}

impl FrameBoundaries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Offsets in `chunk` just after each frame that ends in it, in order.
    pub fn ends(&mut self, chunk: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let mut i = 0;
        while i < chunk.len() {
            if self.have < HEADER_LEN {
                let take = (HEADER_LEN - self.have).min(chunk.len() - i);
                self.header[self.have..self.have + take].copy_from_slice(&chunk[i..i + take]);
                self.have += take;
                i += take;
                if self.have == HEADER_LEN {
                    self.remaining = frame_len(&self.header);
                    if self.remaining == 0 {
                        self.have = 0;
                        ends.push(i);
                    }
                }
            } else {
                let take = self.remaining.min(chunk.len() - i);
                self.remaining -= take;
                i += take;
                if self.remaining == 0 {
                    self.have = 0;
                    ends.push(i);
                }
            }
        }
        ends
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::*;

    fn sample() -> Vec<Message> {
        let mut rects = heapless::Vec::new();
        rects
            .push(Rect {
                x: 1,
                y: 2,
                w: 3,
                h: 4,
                encoding: Encoding::Raw(Payload(vec![7; 48])),
            })
            .unwrap();
        vec![
            Message::Hello(Hello::new(Role::Expert, "shoulder", "0.1.0", "Ann")),
            Message::Auth(Auth::Invitation {
                id: InvitationId([1; 8]),
                password: text("pw"),
            }),
            Message::Update(Box::new(UpdatePart {
                seq: 9,
                generation: 1,
                last: true,
                rects,
            })),
            Message::Chat { text: text("hi") },
            Message::bye(ByeReason::WrongPassword { tries_left: 2 }),
        ]
    }

    #[test]
    fn round_trips_in_any_chunking() {
        let msgs = sample();
        let mut wire = Vec::new();
        for m in &msgs {
            encode_into(m, &mut wire).unwrap();
        }
        for chunk in [1, 2, 3, 7, 64, wire.len()] {
            let mut dec = FrameDecoder::default();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                dec.push(c).unwrap();
                while let Some(m) = dec.next_message().unwrap() {
                    got.push(m);
                }
            }
            dec.finish().unwrap();
            assert_eq!(got, msgs, "chunk size {chunk}");
        }
    }

    #[test]
    fn oversize_frame_is_refused_before_buffering() {
        let mut dec = FrameDecoder::new(MAX_PRE_AUTH_FRAME_LEN);
        let err = dec.push(&(5000u32).to_le_bytes()).unwrap_err();
        assert_eq!(
            err,
            FrameError::Oversize {
                len: 5000,
                max: MAX_PRE_AUTH_FRAME_LEN
            }
        );
        let mut dec = FrameDecoder::default();
        assert!(matches!(
            dec.push(&u32::MAX.to_le_bytes()),
            Err(FrameError::Oversize { .. })
        ));
    }

    #[test]
    fn truncated_frame_is_reported_at_close() {
        let wire = encode(&Message::Ping { nonce: 5 }).unwrap();
        let mut dec = FrameDecoder::default();
        dec.push(&wire[..wire.len() - 1]).unwrap();
        assert_eq!(dec.next_message().unwrap(), None);
        assert_eq!(
            dec.finish(),
            Err(FrameError::Truncated {
                have: wire.len() - 1,
                need: wire.len()
            })
        );
        let mut dec = FrameDecoder::default();
        dec.push(&[1, 0]).unwrap();
        assert!(matches!(dec.finish(), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn unknown_message_and_bad_tags_are_typed() {
        assert_eq!(
            decode_payload(&[200, 1]),
            Err(FrameError::UnknownMessage { tag: 200 })
        );
        assert_eq!(decode_payload(&[]), Err(FrameError::Empty));
        // ConsentGranted with kind tag 9.
        assert!(matches!(
            decode_payload(&[3, 9]),
            Err(FrameError::InvalidField {
                message: "ConsentGranted"
            })
        ));
        // Ping with trailing garbage.
        assert!(matches!(
            decode_payload(&[19, 1, 0xff]),
            Err(FrameError::TrailingBytes { .. })
        ));
        // Chat whose text is longer than the bound.
        let mut p = vec![18];
        p.extend_from_slice(&[0x80, 0x08]); // 1024
        p.extend(std::iter::repeat_n(b'a', 1024));
        assert!(matches!(
            decode_payload(&p),
            Err(FrameError::InvalidField { message: "Chat" })
        ));
    }

    #[test]
    fn hello_versions_can_be_read_from_future_layouts() {
        let wire = encode(&Message::Hello(Hello::new(Role::Device, "a", "b", "c"))).unwrap();
        assert_eq!(
            peek_hello_versions(&wire[HEADER_LEN..]),
            Some((PROTOCOL_VERSION, MIN_PROTOCOL_VERSION))
        );
        // A hypothetical v7 hello with fields we do not know.
        assert_eq!(peek_hello_versions(&[0, 7, 5, 0xff, 0xff]), Some((7, 5)));
        assert_eq!(peek_hello_versions(&[1, 7, 5]), None);
    }

    #[test]
    fn variant_names_match_message_names() {
        for m in sample() {
            let wire = encode(&m).unwrap();
            assert_eq!(variant_name(u32::from(wire[HEADER_LEN])), m.name());
        }
    }

    #[test]
    fn split_frame_yields_whole_frames_with_their_wire_size() {
        let mut stream = Vec::new();
        encode_into(&Message::Ping { nonce: 3 }, &mut stream).unwrap();
        let first = stream.len();
        encode_into(&Message::Chat { text: text("hi") }, &mut stream).unwrap();
        let frame = split_frame(&stream, MAX_FRAME_LEN).unwrap().unwrap();
        assert_eq!(frame.len(), first);
        assert_eq!(
            decode_payload(&frame[HEADER_LEN..]),
            Ok(Message::Ping { nonce: 3 })
        );
        let rest = &stream[first..];
        assert_eq!(
            split_frame(rest, MAX_FRAME_LEN).unwrap().unwrap().len(),
            rest.len()
        );
        assert_eq!(
            split_frame(&rest[..rest.len() - 1], MAX_FRAME_LEN),
            Ok(None)
        );
        assert_eq!(split_frame(&rest[..2], MAX_FRAME_LEN), Ok(None));
        assert_eq!(
            split_frame(&[0, 0, 1, 0], 1024),
            Err(FrameError::Oversize {
                len: 65536,
                max: 1024
            })
        );
    }

    #[test]
    fn pongs_are_recognized_without_decoding_anything_else() {
        let pong = encode(&Message::Pong { nonce: u64::MAX }).unwrap();
        assert_eq!(u32::from(pong[HEADER_LEN]), PONG_TAG);
        assert_eq!(pong_nonce(&pong[HEADER_LEN..]), Some(u64::MAX));
        let ping = encode(&Message::Ping { nonce: 1 }).unwrap();
        assert_eq!(pong_nonce(&ping[HEADER_LEN..]), None);
        assert_eq!(pong_nonce(&[]), None);
        assert_eq!(pong_nonce(&[20]), None);
    }

    #[test]
    fn frame_boundaries_do_not_depend_on_chunking() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for m in [
            Message::Ping { nonce: 1 },
            Message::Chat {
                text: crate::text("hello there"),
            },
            Message::Pong { nonce: u64::MAX },
        ] {
            encode_into(&m, &mut stream).unwrap();
            expected.push(stream.len());
        }
        for chunk in 1..=stream.len() {
            let mut b = FrameBoundaries::new();
            let mut found = Vec::new();
            for (n, piece) in stream.chunks(chunk).enumerate() {
                found.extend(b.ends(piece).into_iter().map(|e| n * chunk + e));
            }
            assert_eq!(found, expected, "chunks of {chunk}");
        }
        // An empty frame ends right after its header.
        assert_eq!(FrameBoundaries::new().ends(&[0, 0, 0, 0, 9]), vec![4]);
    }
}
