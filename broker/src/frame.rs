//! The tunnel's messages: a 9-byte header and up to [`CHUNK`] bytes of the
//! session's TLS stream. Sans-I/O: encoding, decoding and the bookkeeping
//! that keeps a stream intact ([`Receiver`]) live here; the pumps in
//! `tunnel` only move bytes.
//!
//! ```text
//!  0      1          5          9
//!  | kind | seq (BE) | ack (BE) | payload …
//! ```
//!
//! - `seq` counts every message one side sends on its topic, from 0. The
//!   receiver takes exactly the next one: a lost, repeated or reordered
//!   message ends the tunnel (the session then resumes on a new one), so
//!   a gap can never become a corrupt view.
//! - `ack` is how many data messages of the other direction the sender has
//!   handed on so far. A side never has more than [`WINDOW`] data messages
//!   unacknowledged: that bounds what the broker queues for a slow reader
//!   and what a reader must hold, and a peer that sends beyond it is cut
//!   off.

/// Bytes before the payload.
pub const HEADER: usize = 9;
/// Largest payload of one message: one TLS record's worth.
pub const CHUNK: usize = 16 * 1024;
/// Data messages a side may have sent and not yet seen acknowledged
/// (512 KiB with full chunks: 80 Mbit/s at 50 ms round trip).
pub const WINDOW: u32 = 32;
/// A receiver acknowledges on its own (without data to carry the ack) once
/// this many data messages are unacknowledged.
pub const ACK_EVERY: u32 = WINDOW / 2;
/// Longest reason a reset carries.
pub const MAX_REASON: usize = 200;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The device took the expert's open request (first message from the
    /// device, seq 0).
    Hello,
    /// Bytes of the stream.
    Data,
    /// Only the acknowledgement.
    Ack,
    /// The sender's direction of the stream ended cleanly.
    Fin,
    /// The tunnel is over; the payload says why (UTF-8).
    Reset,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Hello => 0,
            Kind::Data => 1,
            Kind::Ack => 2,
            Kind::Fin => 3,
            Kind::Reset => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Kind::Hello,
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Fin,
            4 => Kind::Reset,
            _ => return None,
        })
    }
}

/// A message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub seq: u32,
    pub ack: u32,
}

/// Encodes one message.
pub fn encode(h: Header, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER + payload.len());
    m.push(h.kind.byte());
    m.extend_from_slice(&h.seq.to_be_bytes());
    m.extend_from_slice(&h.ack.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// Why a message broke the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a message too short to be a tunnel message ({0} bytes)")]
    Short(usize),
    #[error("a message of unknown kind {0}")]
    UnknownKind(u8),
    #[error("a message larger than a tunnel chunk ({0} bytes)")]
    TooLarge(usize),
    #[error("message {got} arrived where {expected} was due: lost or reordered on the way")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("the peer sent beyond its window ({0} data messages unacknowledged)")]
    Window(u32),
    #[error("the peer acknowledged data it was never sent")]
    BadAck,
    #[error("a {0:?} message where none may come")]
    Unexpected(Kind),
    #[error("data after the end of the stream")]
    AfterFin,
}

/// Decodes one message.
pub fn decode(m: &[u8]) -> Result<(Header, &[u8]), FrameError> {
    if m.len() < HEADER {
        return Err(FrameError::Short(m.len()));
    }
    let kind = Kind::from_byte(m[0]).ok_or(FrameError::UnknownKind(m[0]))?;
    let seq = u32::from_be_bytes([m[1], m[2], m[3], m[4]]);
    let ack = u32::from_be_bytes([m[5], m[6], m[7], m[8]]);
    let payload = &m[HEADER..];
    if payload.len() > CHUNK {
        return Err(FrameError::TooLarge(payload.len()));
    }
    Ok((Header { kind, seq, ack }, payload))
}

/// One direction's receiving end: checks order, window and acks.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The seq due next.
    next: u32,
    /// Data messages received (all handed on before the next is taken).
    data: u32,
    /// The ack we last sent (data messages handed on at that time).
    acked: u32,
    /// Data messages we sent: acks beyond this are a lie.
    sent: u32,
    fin: bool,
}

/// What to do with a message [`Receiver::take`] accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<'a> {
    Data(&'a [u8]),
    /// Nothing to hand on (an ack).
    Nothing,
    Fin,
    Reset(String),
}

impl Receiver {
    /// A receiver expecting `next` first.
    pub fn new(next: u32) -> Self {
        Self {
            next,
            data: 0,
            acked: 0,
            sent: 0,
            fin: false,
        }
    }

    /// Checks `m` and says what it carries; its ack is returned through
    /// [`Take`]'s caller reading [`Receiver::peer_acked`]. Errors end the
    /// tunnel.
    pub fn take<'a>(&mut self, m: &'a [u8]) -> Result<(Take<'a>, u32), FrameError> {
        let (h, payload) = decode(m)?;
        if h.seq != self.next {
            return Err(FrameError::OutOfOrder {
                expected: self.next,
                got: h.seq,
            });
        }
        self.next = self.next.wrapping_add(1);
        if h.ack > self.sent {
            return Err(FrameError::BadAck);
        }
        let take = match h.kind {
            Kind::Data => {
                if self.fin {
                    return Err(FrameError::AfterFin);
                }
                self.data += 1;
                let unacked = self.data - self.acked;
                if unacked > WINDOW {
                    return Err(FrameError::Window(unacked));
                }
                Take::Data(payload)
            }
            Kind::Ack => Take::Nothing,
            Kind::Fin => {
                self.fin = true;
                Take::Fin
            }
            Kind::Reset => {
                let n = payload.len().min(MAX_REASON);
                Take::Reset(String::from_utf8_lossy(&payload[..n]).into_owned())
            }
            Kind::Hello => return Err(FrameError::Unexpected(Kind::Hello)),
        };
        Ok((take, h.ack))
    }

    /// Records that we sent a data message.
    pub fn sent_data(&mut self) {
        self.sent += 1;
    }

    /// Records the ack we put into an outgoing message.
    pub fn acked(&mut self, ack: u32) {
        self.acked = ack;
    }

    /// Data messages handed on (the ack to send).
    pub fn handed_on(&self) -> u32 {
        self.data
    }

    /// Whether enough went unacknowledged to send an ack of its own.
    pub fn ack_due(&self) -> bool {
        self.data - self.acked >= ACK_EVERY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: Kind, seq: u32, ack: u32, p: &[u8]) -> Vec<u8> {
        encode(Header { kind, seq, ack }, p)
    }

    #[test]
    fn messages_round_trip() {
        let m = msg(Kind::Data, 7, 3, b"abc");
        let (h, p) = decode(&m).unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Data,
                seq: 7,
                ack: 3
            }
        );
        assert_eq!(p, b"abc");
        assert_eq!(decode(&m[..5]), Err(FrameError::Short(5)));
        assert_eq!(
            decode(&msg(Kind::Data, 0, 0, &vec![0; CHUNK + 1])),
            Err(FrameError::TooLarge(CHUNK + 1))
        );
        let mut bad = m.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(FrameError::UnknownKind(9)));
    }

    #[test]
    fn a_lost_repeated_or_reordered_message_ends_the_tunnel() {
        let mut r = Receiver::new(1);
        assert!(r.take(&msg(Kind::Data, 1, 0, b"x")).is_ok());
        // Repeated.
        assert_eq!(
            r.take(&msg(Kind::Data, 1, 0, b"x")).unwrap_err(),
            FrameError::OutOfOrder {
                expected: 2,
                got: 1
            }
        );
        let mut r = Receiver::new(0);
        // Lost: 0 never came.
        assert!(matches!(
            r.take(&msg(Kind::Data, 1, 0, b"x")),
            Err(FrameError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn a_peer_beyond_its_window_or_acking_unsent_data_is_cut_off() {
        let mut r = Receiver::new(0);
        for seq in 0..WINDOW {
            assert!(r.take(&msg(Kind::Data, seq, 0, b"x")).is_ok());
        }
        assert_eq!(
            r.take(&msg(Kind::Data, WINDOW, 0, b"x")).unwrap_err(),
            FrameError::Window(WINDOW + 1)
        );
        let mut r = Receiver::new(0);
        r.sent_data();
        assert!(r.take(&msg(Kind::Ack, 0, 1, b"")).is_ok());
        assert_eq!(
            r.take(&msg(Kind::Ack, 1, 2, b"")).unwrap_err(),
            FrameError::BadAck
        );
    }

    #[test]
    fn acks_are_due_at_half_the_window_and_data_after_fin_is_refused() {
        let mut r = Receiver::new(0);
        for seq in 0..ACK_EVERY {
            assert!(!r.ack_due());
            r.take(&msg(Kind::Data, seq, 0, b"x")).unwrap();
        }
        assert!(r.ack_due());
        r.acked(r.handed_on());
        assert!(!r.ack_due());
        assert_eq!(
            r.take(&msg(Kind::Fin, ACK_EVERY, 0, b"")).unwrap().0,
            Take::Fin
        );
        assert_eq!(
            r.take(&msg(Kind::Data, ACK_EVERY + 1, 0, b"x"))
                .unwrap_err(),
            FrameError::AfterFin
        );
        assert_eq!(
            Receiver::new(0)
                .take(&msg(Kind::Reset, 0, 0, "gone".as_bytes()))
                .unwrap()
                .0,
            Take::Reset("gone".into())
        );
    }
}
