//! The session record: a file the device writes while a session runs, that
//! the plant can replay (`shoulder play`) and check (`shoulder verify`).
//!
//! # Format
//!
//! [`MAGIC`] (16 bytes), then chunks, each:
//!
//! ```text
//! u32 LE  body length (at most MAX_BODY_LEN)
//! body:   u32 LE sequence number (0, 1, 2, …)
//!         u8     kind (ChunkKind)
//!         u64 LE milliseconds since the session's record began
//!         payload
//! [u8; 32] chain hash: SHA-256(previous chain hash ‖ body)
//! ```
//!
//! The chain starts from SHA-256 of [`MAGIC`]. The first chunk is a
//! [`ChunkKind::Start`] (JSON: device, session, expert, time, mode); the
//! last a [`ChunkKind::End`] whose payload is the device's signature over
//! [`signed_message`] of the chain hash before it: `u16 LE` TLS signature
//! scheme, then the signature. A changed byte breaks that chunk's hash, a
//! removed chunk its successor's sequence number, a cut file the end; the
//! signature ties the whole chain to the device's key, so re-hashing after
//! a change is caught too.
//!
//! Payloads: `Screen` and `Input` hold a protocol message's frame payload
//! (as [`crate::frame::decode_payload`] reads it): what the device sent
//! the expert for the screen, and the expert's input as injected. `Event`
//! holds an audit record (JSON object), `Note` what happened to the record
//! itself (JSON: the screen no longer recorded, events lost).

use ring::digest::{Context, SHA256};

/// The first bytes of every record file.
pub const MAGIC: &[u8; 16] = b"SHOULDER-REC\x00\x01\r\n";
/// Bytes of a chunk's length field.
const LEN_LEN: usize = 4;
/// Bytes of a chunk's body before its payload.
const BODY_HEAD: usize = 4 + 1 + 8;
/// Bytes of a chain hash.
pub const HASH_LEN: usize = 32;
/// The largest body: a whole protocol frame and its chunk header.
pub const MAX_BODY_LEN: usize = crate::frame::MAX_FRAME_LEN + BODY_HEAD;
/// What the device's signature covers besides the chain hash.
const SIGNATURE_CONTEXT: &[u8] = b"shoulder session record v1\0";

/// A chain hash.
pub type Hash = [u8; HASH_LEN];

/// What a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    Start = 1,
    Screen = 2,
    Input = 3,
    Event = 4,
    Note = 5,
    End = 6,
}

impl ChunkKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Start,
            2 => Self::Screen,
            3 => Self::Input,
            4 => Self::Event,
            5 => Self::Note,
            6 => Self::End,
            _ => return None,
        })
    }
}

/// The chain hash before the first chunk.
pub fn initial_hash() -> Hash {
    sha256(&[MAGIC])
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut c = Context::new(&SHA256);
    for p in parts {
        c.update(p);
    }
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// What the device signs to close a record whose last chain hash is `hash`.
pub fn signed_message(hash: &Hash) -> Vec<u8> {
    let mut m = SIGNATURE_CONTEXT.to_vec();
    m.extend_from_slice(hash);
    m
}

/// Writes chunks, keeping the chain (sans-I/O: the bytes go to a buffer).
#[derive(Debug, Clone)]
pub struct ChainWriter {
    seq: u32,
    hash: Hash,
}

impl Default for ChainWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainWriter {
    pub fn new() -> Self {
        Self {
            seq: 0,
            hash: initial_hash(),
        }
    }

    /// The file's first bytes.
    pub fn magic() -> &'static [u8] {
        MAGIC
    }

    /// Chunks written so far.
    pub fn chunks(&self) -> u32 {
        self.seq
    }

    /// The chain hash of the last chunk written (what an end signs).
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Appends one chunk to `out` (a payload too large is refused, as
    /// nothing can read it back).
    pub fn chunk(
        &mut self,
        kind: ChunkKind,
        millis: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), TooLarge> {
        let len = BODY_HEAD + payload.len();
        if len > MAX_BODY_LEN {
            return Err(TooLarge);
        }
        out.reserve(LEN_LEN + len + HASH_LEN);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        let body_at = out.len();
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(kind as u8);
        out.extend_from_slice(&millis.to_le_bytes());
        out.extend_from_slice(payload);
        self.hash = sha256(&[&self.hash, &out[body_at..]]);
        out.extend_from_slice(&self.hash);
        self.seq += 1;
        Ok(())
    }

    /// Appends the end: `scheme` and `signature` over
    /// [`signed_message`]`(self.hash())`.
    pub fn end(&mut self, millis: u64, scheme: u16, signature: &[u8], out: &mut Vec<u8>) {
        let mut payload = scheme.to_le_bytes().to_vec();
        payload.extend_from_slice(signature);
        // A signature is far below the limit.
        let _ = self.chunk(ChunkKind::End, millis, &payload, out);
    }
}

/// A chunk payload beyond [`MAX_BODY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a record chunk may hold at most {MAX_BODY_LEN} bytes")]
pub struct TooLarge;

/// One chunk read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub seq: u32,
    pub kind: ChunkKind,
    pub millis: u64,
    pub payload: &'a [u8],
    /// Where the chunk starts in the file.
    pub offset: usize,
}

/// What is wrong with a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not a Shoulder session record (it does not start with the record header)")]
    NotARecord,
    #[error("chunk {seq} (byte {offset}) was changed: its content does not match its hash")]
    Changed { seq: u32, offset: usize },
    #[error("{count} chunk(s) removed before byte {offset}: chunk {expected} is missing")]
    Removed {
        expected: u32,
        count: u32,
        offset: usize,
    },
    #[error("chunk {seq} at byte {offset} is out of order (expected chunk {expected})")]
    OutOfOrder {
        seq: u32,
        expected: u32,
        offset: usize,
    },
    #[error("chunk at byte {offset} has an unknown kind {kind}")]
    UnknownKind { kind: u8, offset: usize },
    #[error("chunk at byte {offset} claims {len} bytes, more than any chunk may hold")]
    BadLength { len: usize, offset: usize },
    #[error(
        "the record is cut off at byte {offset}, after chunk {chunks_read} chunk(s): the device's signed end is missing"
    )]
    Truncated { offset: usize, chunks_read: u32 },
    #[error("{bytes} byte(s) follow the device's signed end")]
    TrailingData { bytes: usize },
    #[error("the end's signature is malformed")]
    BadEnd,
    #[error("the signature does not match the device certificate: {detail}")]
    BadSignature { detail: String },
    #[error("the first chunk is not the record's start")]
    NoStart,
}

/// Reads the chunks of `file` in order, without checking the chain; stops
/// at the first chunk it cannot read (the problem is the last item).
pub fn chunks(file: &[u8]) -> impl Iterator<Item = Result<Chunk<'_>, Problem>> {
    let mut at = MAGIC.len();
    let mut seq = 0u32;
    let mut done = !file.starts_with(MAGIC);
    let mut first = true;
    core::iter::from_fn(move || {
        if first && done {
            first = false;
            return Some(Err(Problem::NotARecord));
        }
        first = false;
        if done || at == file.len() {
            return None;
        }
        let r = read_chunk(file, at, seq);
        match &r {
            Ok((c, next)) => {
                at = *next;
                seq = c.seq.wrapping_add(1);
            }
            Err(_) => done = true,
        }
        Some(r.map(|(c, _)| c))
    })
}

fn read_chunk(file: &[u8], at: usize, seq_read: u32) -> Result<(Chunk<'_>, usize), Problem> {
    let truncated = Problem::Truncated {
        offset: at,
        chunks_read: seq_read,
    };
    let Some(len) = file.get(at..at + LEN_LEN) else {
        return Err(truncated);
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if !(BODY_HEAD..=MAX_BODY_LEN).contains(&len) {
        return Err(Problem::BadLength { len, offset: at });
    }
    let body_at = at + LEN_LEN;
    let Some(body) = file.get(body_at..body_at + len + HASH_LEN) else {
        return Err(truncated);
    };
    let seq = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
    let Some(kind) = ChunkKind::from_u8(body[4]) else {
        return Err(Problem::UnknownKind {
            kind: body[4],
            offset: at,
        });
    };
    let mut millis = [0u8; 8];
    millis.copy_from_slice(&body[5..13]);
    Ok((
        Chunk {
            seq,
            kind,
            millis: u64::from_le_bytes(millis),
            payload: &body[BODY_HEAD..len],
            offset: at,
        },
        body_at + len + HASH_LEN,
    ))
}

/// A record that checked out: what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Chunks, the end included.
    pub chunks: u32,
    /// The chain hash the device signed.
    pub signed_hash: Hash,
    /// The TLS signature scheme of the signature.
    pub scheme: u16,
    /// Milliseconds from the start to the end.
    pub millis: u64,
}

/// Checks the chain of `file` and has `check_signature(message, scheme,
/// signature)` check the end's signature. Returns every problem found
/// (reading goes on past a changed chunk, so one changed byte does not
/// hide a later removal), or what the valid record holds.
pub fn verify(
    file: &[u8],
    check_signature: impl FnOnce(&[u8], u16, &[u8]) -> Result<(), String>,
) -> Result<Verified, Vec<Problem>> {
    let mut problems = Vec::new();
    if !file.starts_with(MAGIC) {
        return Err(vec![Problem::NotARecord]);
    }
    let mut hash = initial_hash();
    let mut expected = 0u32;
    let mut at = MAGIC.len();
    let mut end = None;
    let mut unreadable = false;
    while at < file.len() {
        let (c, next) = match read_chunk(file, at, expected) {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                unreadable = true;
                break;
            }
        };
        let body = &file[at + LEN_LEN..next - HASH_LEN];
        let stored: &[u8] = &file[next - HASH_LEN..next];
        if c.seq > expected {
            problems.push(Problem::Removed {
                expected,
                count: c.seq - expected,
                offset: at,
            });
        } else if c.seq < expected {
            problems.push(Problem::OutOfOrder {
                seq: c.seq,
                expected,
                offset: at,
            });
        }
        if expected == 0 && c.kind != ChunkKind::Start {
            problems.push(Problem::NoStart);
        }
        let before = hash;
        let computed = sha256(&[&hash, body]);
        if computed[..] != *stored {
            // A removed chunk already explains a successor that does not
            // chain; otherwise its own bytes changed.
            if c.seq == expected {
                problems.push(Problem::Changed {
                    seq: c.seq,
                    offset: at,
                });
            }
            hash.copy_from_slice(stored);
        } else {
            hash = computed;
        }
        expected = c.seq.wrapping_add(1);
        at = next;
        if c.kind == ChunkKind::End {
            end = Some((c.payload, before, c.millis));
            break;
        }
    }
    match end {
        Some((payload, signed_hash, millis)) => {
            if at < file.len() {
                problems.push(Problem::TrailingData {
                    bytes: file.len() - at,
                });
            }
            if payload.len() < 3 {
                problems.push(Problem::BadEnd);
            } else {
                let scheme = u16::from_le_bytes([payload[0], payload[1]]);
                if let Err(detail) =
                    check_signature(&signed_message(&signed_hash), scheme, &payload[2..])
                {
                    problems.push(Problem::BadSignature { detail });
                }
                if problems.is_empty() {
                    return Ok(Verified {
                        chunks: expected,
                        signed_hash,
                        scheme,
                        millis,
                    });
                }
            }
        }
        None => {
            // A chunk that cannot be read is the problem already named.
            if !unreadable {
                problems.push(Problem::Truncated {
                    offset: at,
                    chunks_read: expected,
                });
            }
        }
    }
    Err(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> (Vec<u8>, Vec<usize>) {
        let mut w = ChainWriter::new();
        let mut out = ChainWriter::magic().to_vec();
        let mut starts = Vec::new();
        starts.push(out.len());
        w.chunk(ChunkKind::Start, 0, b"{\"device\":\"kiosk\"}", &mut out)
            .unwrap();
        for i in 0..n {
            starts.push(out.len());
            let kind = if i % 2 == 0 {
                ChunkKind::Screen
            } else {
                ChunkKind::Event
            };
            w.chunk(
                kind,
                i as u64 * 10,
                format!("payload {i}").as_bytes(),
                &mut out,
            )
            .unwrap();
        }
        starts.push(out.len());
        let msg = signed_message(&w.hash());
        // A stand-in signature: the message's hash (the real one is
        // checked in the agent's and client's tests).
        w.end(99, 0x0403, &sha256(&[&msg]), &mut out);
        (out, starts)
    }

    fn check(file: &[u8]) -> Result<Verified, Vec<Problem>> {
        verify(file, |msg, scheme, sig| {
            (scheme == 0x0403 && sig == sha256(&[msg]))
                .then_some(())
                .ok_or("bad".into())
        })
    }

    #[test]
    fn a_whole_record_verifies_and_reads_back() {
        let (file, _) = record(5);
        let v = check(&file).unwrap();
        assert_eq!(v.chunks, 7);
        assert_eq!(v.millis, 99);
        let kinds: Vec<_> = chunks(&file).map(|c| c.unwrap().kind).collect();
        assert_eq!(kinds[0], ChunkKind::Start);
        assert_eq!(kinds[6], ChunkKind::End);
        assert_eq!(chunks(&file).nth(3).unwrap().unwrap().payload, b"payload 2");
    }

    #[test]
    fn every_changed_byte_is_found() {
        let (file, _) = record(3);
        for i in MAGIC.len()..file.len() {
            let mut f = file.clone();
            f[i] ^= 0x01;
            assert!(check(&f).is_err(), "a change at byte {i} went unnoticed");
        }
        let mut f = file.clone();
        f[0] ^= 1;
        assert_eq!(check(&f).unwrap_err(), vec![Problem::NotARecord]);
    }

    #[test]
    fn a_changed_payload_names_its_chunk() {
        let (file, starts) = record(4);
        let mut f = file.clone();
        f[starts[2] + LEN_LEN + BODY_HEAD] ^= 0x20;
        let p = check(&f).unwrap_err();
        assert_eq!(
            p,
            vec![Problem::Changed {
                seq: 2,
                offset: starts[2]
            }]
        );
    }

    #[test]
    fn a_removed_chunk_is_named_even_when_rehashed() {
        let (file, starts) = record(4);
        let mut f = file[..starts[2]].to_vec();
        f.extend_from_slice(&file[starts[3]..]);
        let p = check(&f).unwrap_err();
        assert!(
            p.contains(&Problem::Removed {
                expected: 2,
                count: 1,
                offset: starts[2]
            }),
            "{p:?}"
        );
        // Rewriting every later chunk's sequence and hash (a forger without
        // the key) still fails the signature.
        let mut w = ChainWriter::new();
        let mut forged = ChainWriter::magic().to_vec();
        for c in chunks(&file).filter(|c| c.as_ref().unwrap().seq != 2) {
            let c = c.unwrap();
            if c.kind == ChunkKind::End {
                let scheme = u16::from_le_bytes([c.payload[0], c.payload[1]]);
                w.end(c.millis, scheme, &c.payload[2..], &mut forged);
            } else {
                w.chunk(c.kind, c.millis, c.payload, &mut forged).unwrap();
            }
        }
        let p = check(&forged).unwrap_err();
        assert!(matches!(p[..], [Problem::BadSignature { .. }]), "{p:?}");
    }

    #[test]
    fn a_cut_file_is_truncated_wherever_it_is_cut() {
        let (file, _) = record(3);
        for cut in MAGIC.len()..file.len() {
            let p = check(&file[..cut]).unwrap_err();
            assert!(
                p.iter().any(|p| matches!(p, Problem::Truncated { .. })),
                "cut at {cut}: {p:?}"
            );
        }
        let mut longer = file.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(
            check(&longer).unwrap_err(),
            vec![Problem::TrailingData { bytes: 4 }]
        );
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            check(&f).unwrap_err()[..],
            [Problem::BadLength { .. }]
        ));
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&(BODY_HEAD as u32).to_le_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 77, 0, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[0; 32]);
        assert!(matches!(
            check(&f).unwrap_err()[..],
            [Problem::UnknownKind { kind: 77, .. }]
        ));
        assert!(chunks(&f).last().unwrap().is_err());
        assert!(
            ChainWriter::new()
                .chunk(
                    ChunkKind::Screen,
                    0,
                    &vec![0; MAX_BODY_LEN],
                    &mut Vec::new()
                )
                .is_err()
        );
    }
}
