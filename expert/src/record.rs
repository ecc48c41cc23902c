//! Session records a device wrote (`[record]` in its agent.toml): checking
//! one against the device's certificate (`shoulder verify`) and replaying
//! it (`shoulder play`). The format is [`shoulder_proto::record`].

use std::fmt::Write as _;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Map, Value};
use shoulder_proto::Message;
use shoulder_proto::fb::Framebuffer;
use shoulder_proto::frame::decode_payload;
use shoulder_proto::record::{Chunk, ChunkKind, Problem, Verified, chunks, verify};

use crate::ClientError;
use crate::printable::printable;

/// The largest record read (a session's cap is at most 64 GiB on the
/// device; a desktop replays far less in memory).
const MAX_RECORD_LEN: u64 = 8 << 30;

/// Reads a record file whole.
pub fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    let err = |e: &dyn std::fmt::Display| {
        ClientError::Local(format!("Cannot read {}: {e}.", path.display()))
    };
    let len = std::fs::metadata(path).map_err(|e| err(&e))?.len();
    if len > MAX_RECORD_LEN {
        return Err(ClientError::Local(format!(
            "{} is {} — larger than any record this app replays ({}).",
            path.display(),
            shoulder_proto::human_size(len),
            shoulder_proto::human_size(MAX_RECORD_LEN)
        )));
    }
    std::fs::read(path).map_err(|e| err(&e))
}

/// The device certificate a record is checked against (PEM, the first
/// certificate: device.crt from the device's state directory, or the one
/// `shoulder pki sign-device` issued).
pub fn read_certificate(path: &Path) -> Result<CertificateDer<'static>, ClientError> {
    let bad = |detail: String| {
        ClientError::Local(format!(
            "{} is not a device certificate ({detail}) — pass the device's device.crt (PEM).",
            path.display()
        ))
    };
    let pem = std::fs::read(path)
        .map_err(|e| ClientError::Local(format!("Cannot read {}: {e}.", path.display())))?;
    let cert = CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| bad("no CERTIFICATE block".into()))?
        .map_err(|e| bad(e.to_string()))?;
    webpki::EndEntityCert::try_from(&cert).map_err(|e| bad(format!("{e:?}")))?;
    Ok(cert)
}

/// Checks a signature made with `cert`'s key in TLS signature `scheme`.
pub fn check_signature(
    cert: &CertificateDer<'_>,
    message: &[u8],
    scheme: u16,
    signature: &[u8],
) -> Result<(), String> {
    use webpki::ring as alg;
    let algorithm: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match scheme {
        0x0403 => alg::ECDSA_P256_SHA256,
        0x0503 => alg::ECDSA_P384_SHA384,
        0x0807 => alg::ED25519,
        0x0804 => alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        other => return Err(format!("unknown signature scheme {other:#06x}")),
    };
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("{e:?}"))?;
    ee.verify_signature(algorithm, message, signature)
        .map_err(|e| match e {
            webpki::Error::InvalidSignatureForPublicKey => {
                "it was not made by this certificate's key (another device, or the record was re-hashed after a change)".into()
            }
            webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                "the certificate's key is not of the kind that signed the record (another device)".into()
            }
            other => format!("{other:?}"),
        })
}

/// What a record says about itself in its first chunk.
pub fn start_info(file: &[u8]) -> Option<Map<String, Value>> {
    let first = chunks(file).next()?.ok()?;
    (first.kind == ChunkKind::Start)
        .then(|| serde_json::from_slice(first.payload).ok())
        .flatten()
}

/// `shoulder verify`: the record's chain and signature against the device
/// certificate. The report of a good record, or every problem found.
pub fn verify_file(record: &Path, cert: &Path) -> Result<String, ClientError> {
    let cert = read_certificate(cert)?;
    let file = read(record)?;
    let result = verify(&file, |m, scheme, sig| {
        check_signature(&cert, m, scheme, sig)
    });
    match result {
        Ok(v) => Ok(good_report(record, &file, &v, &cert)),
        Err(problems) => Err(ClientError::Local(bad_report(
            record,
            "FAILED verification",
            &problems,
        ))),
    }
}

fn good_report(path: &Path, file: &[u8], v: &Verified, cert: &CertificateDer<'_>) -> String {
    let mut s = format!(
        "{}: whole and signed by the device ({} chunks, {}, {}).\nSigned chain hash: {}",
        path.display(),
        v.chunks,
        shoulder_proto::human_size(file.len() as u64),
        duration(v.millis),
        shoulder_proto::Fingerprint(v.signed_hash).hex()
    );
    if let Some(info) = start_info(file) {
        let field = |k: &str| info.get(k).and_then(Value::as_str).map(printable);
        for (label, key) in [
            ("Device", "device"),
            ("Session", "session"),
            ("Expert", "expert"),
            ("Started", "started"),
            ("Recorded", "mode"),
        ] {
            if let Some(v) = field(key) {
                let _ = write!(s, "\n{label}: {v}");
            }
        }
        let fp = crate::trust::fingerprint_of(cert).colon_hex();
        if field("device_fingerprint").is_some_and(|f| !f.eq_ignore_ascii_case(&fp)) {
            let _ = write!(
                s,
                "\nNote: the record names another device certificate than {fp} (the device's key was re-certified since)."
            );
        }
    }
    s
}

/// `path`, `verdict` ("FAILED verification"), then one line per problem.
fn bad_report(path: &Path, verdict: &str, problems: &[Problem]) -> String {
    let mut s = format!("{} {verdict} — do not trust what it shows:", path.display());
    for p in problems {
        let _ = write!(s, "\n  - {p}");
    }
    s
}

/// "12.3 s" or "4 min 05 s".
pub fn duration(millis: u64) -> String {
    let secs = millis / 1000;
    if secs < 60 {
        format!("{}.{} s", secs, (millis % 1000) / 100)
    } else {
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// One step of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The screen changed (a whole update applied, or a new screen size).
    Screen,
    /// Something happened: an audit record, input, a note, in words.
    Said(String),
}

/// Replays a record's chunks onto a framebuffer, as the expert's app drew
/// them.
#[derive(Debug, Clone, Default)]
pub struct Player {
    fb: Option<Framebuffer>,
    generation: Option<u32>,
    /// The cursor's position, when the device said it shows.
    pub cursor: Option<(u16, u16)>,
    /// Milliseconds into the session of the last chunk applied.
    pub millis: u64,
    /// Screen data that could not be applied (a record cut mid-stream).
    pub errors: u32,
}

impl Player {
    pub fn new() -> Self {
        Self::default()
    }

    /// The screen as of the last chunk applied.
    pub fn framebuffer(&self) -> Option<&Framebuffer> {
        self.fb.as_ref()
    }

    /// Applies one chunk.
    pub fn apply(&mut self, c: &Chunk<'_>) -> Option<Step> {
        self.millis = c.millis;
        match c.kind {
            ChunkKind::Screen => self.screen(c.payload),
            ChunkKind::Input => Some(Step::Said(match decode_payload(c.payload) {
                Ok(Message::Pointer(p)) => {
                    format!("input: pointer at {},{} buttons {:?}", p.x, p.y, p.buttons)
                }
                Ok(Message::Key(k)) => format!(
                    "input: key {} {}",
                    k.code,
                    if k.down { "down" } else { "up" }
                ),
                Ok(Message::Touch(t)) => format!("input: touch {t:?}"),
                _ => "input: (unreadable)".into(),
            })),
            ChunkKind::Event | ChunkKind::Note | ChunkKind::Start => {
                Some(Step::Said(json_line(c.kind, c.payload)))
            }
            ChunkKind::End => Some(Step::Said("end of the record".into())),
        }
    }

    fn screen(&mut self, payload: &[u8]) -> Option<Step> {
        match decode_payload(payload) {
            Ok(Message::ScreenInfo(info)) => match Framebuffer::new(&info) {
                Ok(fb) => {
                    self.fb = Some(fb);
                    self.generation = Some(info.generation);
                    Some(Step::Screen)
                }
                Err(_) => {
                    self.errors += 1;
                    None
                }
            },
            Ok(Message::Update(part)) => {
                let fb = self.fb.as_mut()?;
                if self.generation != Some(part.generation) {
                    return None;
                }
                if fb.apply(&part).is_err() {
                    self.errors += 1;
                }
                part.last.then_some(Step::Screen)
            }
            Ok(Message::CursorPosition { x, y, visible }) => {
                self.cursor = visible.then_some((x, y));
                None
            }
            Ok(Message::ScreenUnavailable { detail }) => Some(Step::Said(format!(
                "screen unavailable: {}",
                printable(&detail)
            ))),
            Ok(_) => None,
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }
}

/// An event or note chunk in words: its `event` (or `note`) then its
/// fields, as printable text.
fn json_line(kind: ChunkKind, payload: &[u8]) -> String {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(payload) else {
        return format!("{kind:?}: (unreadable)");
    };
    let mut s = match (kind, m.get("event").and_then(Value::as_str)) {
        (ChunkKind::Start, _) => "record started".to_string(),
        (ChunkKind::Note, _) => "record note".to_string(),
        (_, Some(e)) => printable(e),
        _ => "event".to_string(),
    };
    for (k, v) in &m {
        if k == "event" || v.is_null() {
            continue;
        }
        let v = match v {
            Value::String(t) => printable(t),
            other => printable(&other.to_string()),
        };
        let _ = write!(s, " {k}={v}");
    }
    s
}

/// `shoulder play --png DIR`: writes the screen as PNG files into `dir`
/// (`frame-NNNNNN-<ms>ms.png`, at most one per `every_ms`, and always the
/// last), prints what happened to `out` line by line, and ends with the
/// final screen's hash (as `watch --stats-json` writes it).
pub fn export(
    record: &Path,
    dir: &Path,
    every_ms: u64,
    out: &mut dyn std::io::Write,
) -> Result<Option<String>, ClientError> {
    let file = read(record)?;
    let io = |e: std::io::Error| ClientError::Local(format!("Cannot write the replay: {e}."));
    std::fs::create_dir_all(dir)
        .map_err(|e| ClientError::Local(format!("Cannot create {}: {e}.", dir.display())))?;
    // The chain without the signature: a broken one is said first.
    if let Err(problems) = verify(&file, |_, _, _| Ok(())) {
        writeln!(out, "{}", bad_report(record, "is damaged", &problems)).map_err(io)?;
    }
    writeln!(
        out,
        "Not checked against the device's certificate: run `shoulder verify {} --device-cert device.crt`.",
        record.display()
    )
    .map_err(io)?;
    let mut player = Player::new();
    let mut written = 0u32;
    let mut last_png: Option<u64> = None;
    let mut unsaved = false;
    for c in chunks(&file) {
        let Ok(c) = c else { break };
        match player.apply(&c) {
            Some(Step::Screen) => {
                unsaved = true;
                if last_png.is_none_or(|t| c.millis >= t + every_ms) {
                    save_frame(&player, dir, &mut written)?;
                    last_png = Some(c.millis);
                    unsaved = false;
                }
            }
            Some(Step::Said(s)) => writeln!(out, "{:>10}  {s}", duration(c.millis)).map_err(io)?,
            None => {}
        }
    }
    if unsaved {
        save_frame(&player, dir, &mut written)?;
    }
    if player.errors > 0 {
        writeln!(
            out,
            "{} screen update(s) could not be applied.",
            player.errors
        )
        .map_err(io)?;
    }
    let hash = player.framebuffer().map(crate::client::fb_hash);
    writeln!(
        out,
        "{written} picture(s) written to {}. Final screen hash: {}",
        dir.display(),
        hash.as_deref().unwrap_or("none (no screen in this record)")
    )
    .map_err(io)?;
    Ok(hash)
}

fn save_frame(player: &Player, dir: &Path, n: &mut u32) -> Result<(), ClientError> {
    let Some(fb) = player.framebuffer() else {
        return Ok(());
    };
    *n += 1;
    let name = format!("frame-{:06}-{}ms.png", *n, player.millis);
    crate::client::save_png(fb, &dir.join(name))
}
