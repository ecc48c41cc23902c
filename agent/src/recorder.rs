//! The session record (feature `record`, `[record]` in agent.toml): a file
//! per session in the format of [`shoulder_proto::record`], written by a
//! thread of its own so the session never waits for the disk, closed with
//! the device key's signature over its chain, whose hash and signature also
//! go to the audit log (`record-closed`).
//!
//! The session hands over what it sent for the screen, the input it
//! injected and its audit records. Screen data the writer has not taken
//! yet is bounded ([`MAX_PENDING`]): a slow disk, a full one, or a session
//! past its cap stops the screen part (a `Note` chunk and a
//! `record-degraded` audit record say why) and the rest of the session is
//! recorded as metadata.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime};

use rustls::SignatureScheme;
use rustls::sign::SigningKey;
use serde_json::{Map, Value, json};
use shoulder_proto::record::{ChainWriter, ChunkKind, signed_message};

use crate::audit::{AuditLog, Context};
use crate::config::{Config, RecordMode};
use crate::util::{hex, lock};

/// Chunks queued towards the writer thread.
const QUEUE: usize = 512;
/// Screen bytes queued towards the writer before the screen is dropped
/// from the record (the disk is slower than the session).
const MAX_PENDING: usize = 16 * 1024 * 1024;
/// Metadata a session may still write past its cap (the screen stops at
/// the cap): consent, input and chat are small.
const METADATA_ROOM: u64 = 4 * 1024 * 1024;
/// The file name's ending.
pub const SUFFIX: &str = ".shrec";

/// Why the screen is no longer recorded (0: it is).
const SCREEN_ON: u8 = 0;
const STOP_CAP: u8 = 1;
const STOP_SLOW: u8 = 2;
const STOP_DISK: u8 = 3;
const STOP_SPACE: u8 = 4;

fn stop_reason(code: u8) -> &'static str {
    match code {
        STOP_CAP => "the session's record reached max_session_mib",
        STOP_SLOW => "the disk did not keep up with the screen",
        STOP_DISK => "the record could not be written",
        _ => "the disk has less free space than max_session_mib",
    }
}

/// What every session's record needs, made once at start.
#[derive(Debug)]
pub struct RecordSetup {
    mode: RecordMode,
    dir: PathBuf,
    max_session: u64,
    max_total: u64,
    key: Arc<dyn SigningKey>,
    audit: Arc<AuditLog>,
    device: String,
    device_fingerprint: String,
    /// The writer threads not yet seen to end (joined at shutdown).
    writers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl RecordSetup {
    /// None when the config records nothing.
    pub fn new(
        config: &Config,
        key: Arc<dyn SigningKey>,
        audit: Arc<AuditLog>,
        device_fingerprint: String,
    ) -> Option<Self> {
        (config.record.mode != RecordMode::Off).then(|| Self {
            mode: config.record.mode,
            dir: config.record_dir(),
            max_session: config.record.max_session_mib << 20,
            max_total: config.record.max_total_mib << 20,
            key,
            audit,
            device: config.device_name(),
            device_fingerprint,
            writers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Waits, at most `within`, for every record to be signed and closed
    /// (the agent is stopping; its sessions have ended).
    pub fn finish(&self, within: std::time::Duration) {
        let deadline = Instant::now() + within;
        let writers = std::mem::take(&mut *lock(&self.writers));
        for w in writers {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::warn!("a session record was not closed in time; it lacks its signed end");
            }
        }
    }
}

/// The state the session and the writer share.
#[derive(Debug, Default)]
struct State {
    /// Screen bytes sent to the writer and not yet written.
    pending: AtomicUsize,
    /// Why the screen is no longer recorded ([`SCREEN_ON`]: it is).
    screen_stop: AtomicU8,
    /// Metadata chunks that found the queue full.
    lost: AtomicU64,
}

/// One session's record, from the session's side. Dropping it closes and
/// signs the file (in the writer thread).
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<(ChunkKind, u64, Vec<u8>)>,
    state: Arc<State>,
    started: Instant,
    screen: bool,
}

impl Recorder {
    /// Starts a new record for the session `ctx` is about: its writer
    /// thread makes the file (a file it cannot make is audited as
    /// `record-failed`, and the session goes on unrecorded). None if the
    /// thread cannot start.
    pub fn start(setup: &Arc<RecordSetup>, ctx: &Context) -> Option<Self> {
        let now = SystemTime::now();
        let stamp = crate::util::rfc3339(now).replace(':', "");
        let name = format!(
            "{stamp}-{}{SUFFIX}",
            ctx.session.as_deref().unwrap_or("session")
        );
        // The file is made by the writer thread: no disk I/O here, on the
        // session's task.
        let path = setup.dir.join(&name);
        let state = Arc::new(State::default());
        let screen = setup.mode == RecordMode::Screen;
        let (tx, rx) = sync_channel(QUEUE);
        let start = json!({
            "device": setup.device,
            "device_fingerprint": setup.device_fingerprint,
            "session": ctx.session,
            "expert": ctx.expert,
            "method": ctx.method,
            "fingerprint": ctx.fingerprint,
            "source": ctx.source,
            "started": crate::util::rfc3339(now),
            "mode": if screen { "screen" } else { "metadata" },
            "agent_version": env!("CARGO_PKG_VERSION"),
        });
        let writer = Writer {
            setup: setup.clone(),
            ctx: ctx.clone(),
            path,
            file: None,
            state: state.clone(),
            chain: ChainWriter::new(),
            written: 0,
            failed: None,
            noted_stop: false,
        };
        let first = serde_json::to_vec(&start).unwrap_or_default();
        let spawned = std::thread::Builder::new()
            .name("record".into())
            .spawn(move || writer.run(first, rx));
        match spawned {
            Ok(handle) => {
                let mut writers = lock(&setup.writers);
                writers.retain(|w| !w.is_finished());
                writers.push(handle);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the record writer");
                return None;
            }
        }
        Some(Self {
            tx,
            state,
            started: Instant::now(),
            screen,
        })
    }

    fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A message payload sent to the expert for the screen.
    pub fn screen(&self, payload: &[u8]) {
        if !self.screen || self.state.screen_stop.load(Ordering::Relaxed) != SCREEN_ON {
            return;
        }
        let pending = self.state.pending.load(Ordering::Relaxed);
        if pending + payload.len() > MAX_PENDING {
            self.stop(STOP_SLOW);
            return;
        }
        self.state
            .pending
            .fetch_add(payload.len(), Ordering::Relaxed);
        let item = (ChunkKind::Screen, self.millis(), payload.to_vec());
        if self.tx.try_send(item).is_err() {
            self.state
                .pending
                .fetch_sub(payload.len(), Ordering::Relaxed);
            self.stop(STOP_SLOW);
        }
    }

    fn stop(&self, why: u8) {
        let _ = self.state.screen_stop.compare_exchange(
            SCREEN_ON,
            why,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Input injected for the expert (a message payload).
    pub fn input(&self, payload: &[u8]) {
        self.metadata(ChunkKind::Input, payload.to_vec());
    }

    /// An audit record of the session.
    pub fn event(&self, event: &str, fields: &Map<String, Value>) {
        let mut m = fields.clone();
        m.insert("event".into(), event.into());
        self.metadata(ChunkKind::Event, serde_json::to_vec(&m).unwrap_or_default());
    }

    fn metadata(&self, kind: ChunkKind, payload: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send((kind, self.millis(), payload)) {
            self.state.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Removes the oldest records until a new session's cap fits under the
/// total (creating the directory first).
fn make_room(setup: &RecordSetup) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&setup.dir)?;
    let mut records = Vec::new();
    for e in std::fs::read_dir(&setup.dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let (true, Ok(m)) = (name.ends_with(SUFFIX), e.metadata())
            && m.is_file()
        {
            records.push((name, m.len()));
        }
    }
    // Names start with the UTC time: oldest first.
    records.sort();
    let mut total: u64 = records.iter().map(|r| r.1).sum();
    for (name, len) in records {
        if total.saturating_add(setup.max_session) <= setup.max_total {
            break;
        }
        match std::fs::remove_file(setup.dir.join(&name)) {
            Ok(()) => {
                tracing::info!(record = %name, "removed an old session record to make room");
                total -= len;
            }
            Err(e) => tracing::warn!(record = %name, error = %e, "cannot remove an old record"),
        }
    }
    Ok(())
}

fn audit(setup: &RecordSetup, event: &str, ctx: &Context, fields: Map<String, Value>) {
    if let Err(e) = setup.audit.record(event, ctx, fields) {
        tracing::error!(error = %e, "audit record failed");
    }
}

/// The writer thread's side.
struct Writer {
    setup: Arc<RecordSetup>,
    ctx: Context,
    path: PathBuf,
    /// Made by [`Writer::open`] in the thread (a test hands one in).
    file: Option<File>,
    state: Arc<State>,
    chain: ChainWriter,
    /// Bytes in the file.
    written: u64,
    /// Why writing stopped (nothing more is written).
    failed: Option<String>,
    noted_stop: bool,
}

impl Writer {
    fn run(mut self, start: Vec<u8>, rx: Receiver<(ChunkKind, u64, Vec<u8>)>) {
        if self.file.is_none() {
            match self.open() {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    // No record: what the session sends goes nowhere.
                    let mut m = Map::new();
                    m.insert("file".into(), self.path.display().to_string().into());
                    m.insert("detail".into(), e.to_string().into());
                    audit(&self.setup, "record-failed", &self.ctx, m);
                    return;
                }
            }
        }
        let mut buf = ChainWriter::magic().to_vec();
        self.append(ChunkKind::Start, 0, &start, &mut buf);
        let mut last = 0;
        // Ends when the session drops its `Recorder`.
        for (kind, millis, payload) in rx {
            last = millis;
            let mut buf = Vec::new();
            if kind == ChunkKind::Screen {
                self.state
                    .pending
                    .fetch_sub(payload.len(), Ordering::Relaxed);
                if self.state.screen_stop.load(Ordering::Relaxed) == SCREEN_ON
                    && self.written + payload.len() as u64 > self.setup.max_session
                {
                    self.state.screen_stop.store(STOP_CAP, Ordering::Relaxed);
                }
            }
            self.note_stop(millis);
            if kind == ChunkKind::Screen
                && self.state.screen_stop.load(Ordering::Relaxed) != SCREEN_ON
            {
                continue;
            }
            if self.written + payload.len() as u64 > self.setup.max_session + METADATA_ROOM {
                self.state.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.append(kind, millis, &payload, &mut buf);
        }
        self.note_stop(last);
        self.close(last);
    }

    /// Makes room, then the new file; too little free space for the
    /// session's cap leaves the screen out from the start.
    fn open(&self) -> std::io::Result<File> {
        make_room(&self.setup)?;
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)?;
        let free = rustix::fs::fstatvfs(&file)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(u64::MAX);
        if self.setup.mode == RecordMode::Screen && free < self.setup.max_session {
            self.state.screen_stop.store(STOP_SPACE, Ordering::Relaxed);
        }
        Ok(file)
    }

    /// Notes (once) that the screen is no longer recorded.
    fn note_stop(&mut self, millis: u64) {
        let why = self.state.screen_stop.load(Ordering::Relaxed);
        if why == SCREEN_ON || self.noted_stop {
            return;
        }
        self.noted_stop = true;
        let reason = stop_reason(why);
        let note = json!({ "screen": "stopped", "why": reason });
        self.append(
            ChunkKind::Note,
            millis,
            &serde_json::to_vec(&note).unwrap_or_default(),
            &mut Vec::new(),
        );
        let mut m = Map::new();
        m.insert("file".into(), self.path.display().to_string().into());
        m.insert("why".into(), reason.into());
        audit(&self.setup, "record-degraded", &self.ctx, m);
    }

    /// Writes one chunk (`buf` holds bytes to go before it). A failed
    /// write stops the record; its chain stays at the last whole chunk.
    fn append(&mut self, kind: ChunkKind, millis: u64, payload: &[u8], buf: &mut Vec<u8>) {
        if self.failed.is_some() {
            return;
        }
        let before = self.chain.clone();
        if self.chain.chunk(kind, millis, payload, buf).is_err() {
            return;
        }
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(buf) {
            self.chain = before;
            self.fail(format!("cannot write {}: {e}", self.path.display()));
            return;
        }
        self.written += buf.len() as u64;
    }

    fn fail(&mut self, detail: String) {
        self.state.screen_stop.store(STOP_DISK, Ordering::Relaxed);
        let mut m = Map::new();
        m.insert("file".into(), self.path.display().to_string().into());
        m.insert("detail".into(), detail.as_str().into());
        audit(&self.setup, "record-failed", &self.ctx, m);
        self.failed = Some(detail);
    }

    /// Signs the chain and writes the end; audits the signed hash.
    fn close(mut self, millis: u64) {
        let lost = self.state.lost.load(Ordering::Relaxed);
        if lost > 0 {
            let note = json!({ "events_lost": lost });
            self.append(
                ChunkKind::Note,
                millis,
                &serde_json::to_vec(&note).unwrap_or_default(),
                &mut Vec::new(),
            );
        }
        let hash = self.chain.hash();
        let mut m = Map::new();
        m.insert("file".into(), self.path.display().to_string().into());
        m.insert("chunks".into(), self.chain.chunks().into());
        m.insert("hash".into(), hex(&hash).into());
        match sign(&*self.setup.key, &signed_message(&hash)) {
            Ok((scheme, signature)) => {
                m.insert("signature".into(), hex(&signature).into());
                m.insert("scheme".into(), u16::from(scheme).into());
                let mut buf = Vec::new();
                if self.failed.is_none()
                    && let Some(file) = self.file.as_mut()
                {
                    self.chain
                        .end(millis, u16::from(scheme), &signature, &mut buf);
                    let done = file.write_all(&buf).and_then(|()| file.sync_all());
                    match done {
                        Ok(()) => self.written += buf.len() as u64,
                        Err(e) => self.fail(format!("cannot finish {}: {e}", self.path.display())),
                    }
                }
            }
            Err(e) => self.fail(format!("cannot sign the record: {e}")),
        }
        m.insert("bytes".into(), self.written.into());
        m.insert("complete".into(), self.failed.is_none().into());
        let screen = match self.state.screen_stop.load(Ordering::Relaxed) {
            SCREEN_ON if self.setup.mode == RecordMode::Screen => "recorded",
            SCREEN_ON => "not recorded",
            _ => "stopped",
        };
        m.insert("screen".into(), screen.into());
        m.insert("events_lost".into(), lost.into());
        audit(&self.setup, "record-closed", &self.ctx, m);
    }
}

/// Signs with the device key, in the first scheme it offers.
fn sign(key: &dyn SigningKey, message: &[u8]) -> Result<(SignatureScheme, Vec<u8>), String> {
    let signer = key
        .choose_scheme(&[
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA256,
        ])
        .ok_or("the device key signs in none of ECDSA P-256/P-384, Ed25519, RSA-PSS")?;
    let signature = signer.sign(message).map_err(|e| e.to_string())?;
    Ok((signer.scheme(), signature))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use shoulder_proto::record::verify;
    use std::path::Path;

    fn setup(dir: &Path) -> Arc<RecordSetup> {
        let key = rcgen::KeyPair::generate().unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = Config::default();
        config.record.mode = RecordMode::Screen;
        config.record.dir = dir.join("records");
        config.record.max_session_mib = 1;
        let audit = Arc::new(AuditLog::open(&dir.join("audit.log"), 1 << 20, 1).unwrap());
        Arc::new(
            RecordSetup::new(
                &config,
                rustls::crypto::ring::sign::any_supported_type(&der).unwrap(),
                audit,
                "AA:BB".into(),
            )
            .unwrap(),
        )
    }

    fn audited(dir: &Path) -> Vec<Value> {
        std::fs::read_to_string(dir.join("audit.log"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_closed(dir: &Path) -> Value {
        for _ in 0..1000 {
            if let Some(r) = audited(dir)
                .into_iter()
                .find(|r| r["event"] == "record-closed")
            {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the record was not closed");
    }

    /// A disk slower than the screen: the session's side never waits; the
    /// screen leaves the record and the rest goes on.
    #[test]
    fn a_writer_that_does_not_keep_up_drops_the_screen_not_the_session() {
        let (tx, rx) = sync_channel(QUEUE);
        let r = Recorder {
            tx,
            state: Arc::new(State::default()),
            started: Instant::now(),
            screen: true,
        };
        // Nothing takes from the queue (a writer stuck in a write).
        for _ in 0..QUEUE + 10 {
            r.screen(&[7; 1000]);
        }
        assert_eq!(r.state.screen_stop.load(Ordering::Relaxed), STOP_SLOW);
        assert_eq!(rx.try_iter().count(), QUEUE);
        // Metadata that finds the queue full is counted, not waited for.
        for _ in 0..QUEUE + 3 {
            r.event("chat", &Map::new());
        }
        assert!(r.state.lost.load(Ordering::Relaxed) >= 3);
    }

    /// A full disk: writing stops, the audit log says so, and the session
    /// (another thread) is not held up.
    #[test]
    fn a_full_disk_fails_the_record_with_an_audit_record() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup(dir.path());
        let (tx, rx) = sync_channel(QUEUE);
        let state = Arc::new(State::default());
        let writer = Writer {
            setup,
            ctx: Context::default(),
            path: "/dev/full".into(),
            file: Some(OpenOptions::new().write(true).open("/dev/full").unwrap()),
            state: state.clone(),
            chain: ChainWriter::new(),
            written: 0,
            failed: None,
            noted_stop: false,
        };
        let t = std::thread::spawn(move || writer.run(b"{}".to_vec(), rx));
        tx.send((ChunkKind::Event, 1, b"{}".to_vec())).unwrap();
        drop(tx);
        t.join().unwrap();
        let a = audited(dir.path());
        assert!(a.iter().any(|r| r["event"] == "record-failed"), "{a:?}");
        let closed = wait_closed(dir.path());
        assert_eq!(closed["complete"], false);
        assert_eq!(closed["chunks"], 0, "no chunk was written whole");
    }

    /// A records directory that cannot be made: audited, and the session
    /// side goes on as if nothing happened.
    #[test]
    fn a_record_that_cannot_be_made_is_audited_and_the_session_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the records directory should be.
        std::fs::write(dir.path().join("records"), b"not a directory").unwrap();
        let setup = setup(dir.path());
        let r = Recorder::start(&setup, &Context::default()).unwrap();
        setup.finish(std::time::Duration::from_secs(30));
        for _ in 0..QUEUE + 10 {
            r.screen(&[1; 100]);
            r.event("chat", &Map::new());
        }
        drop(r);
        let a = audited(dir.path());
        let failed = a
            .iter()
            .find(|r| r["event"] == "record-failed")
            .expect("audited");
        assert!(
            failed["file"].as_str().unwrap().contains("records/"),
            "{failed}"
        );
        assert!(!a.iter().any(|r| r["event"] == "record-closed"));
    }

    /// Past the session's cap the screen stops (said in a note and the
    /// audit log); what was written verifies with the device key.
    #[test]
    fn past_the_cap_the_screen_stops_and_the_record_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup(dir.path());
        let ctx = Context {
            session: Some("s1".into()),
            ..Context::default()
        };
        let r = Recorder::start(&setup, &ctx).unwrap();
        for _ in 0..40 {
            r.screen(&vec![1u8; 64 * 1024]);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        r.event("chat", &Map::new());
        drop(r);
        let closed = wait_closed(dir.path());
        assert_eq!(closed["screen"], "stopped", "{closed}");
        assert_eq!(closed["complete"], true);
        let a = audited(dir.path());
        let degraded = a.iter().find(|r| r["event"] == "record-degraded").unwrap();
        assert!(
            degraded["why"]
                .as_str()
                .unwrap()
                .contains("max_session_mib")
        );
        let file = std::fs::read(closed["file"].as_str().unwrap()).unwrap();
        assert!(file.len() <= (1 << 20) + 64 * 1024, "{}", file.len());
        let v = verify(&file, |_, scheme, _| {
            (scheme == 0x0403).then_some(()).ok_or("scheme".into())
        })
        .unwrap();
        assert_eq!(hex(&v.signed_hash), closed["hash"]);
    }
}
