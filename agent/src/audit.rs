//! The audit log: append-only JSON lines, one record per event, each written
//! with a single `write` and fsync'd before the agent acts on, so a crash or
//! SIGKILL loses at most the record being written and never leaves half a
//! line behind. Rotated by size.
//!
//! Record fields: `time` (UTC, RFC 3339), `event`, `session` (per
//! connection), `source` (peer address), `expert` (authenticated name),
//! `method` (`offer`/`invitation`), `fingerprint` (SHA-256 of the client
//! certificate), plus event fields.
//!
//! Connections that never authenticate are summed up per source in a
//! second log of this format instead (see [`crate::admission`]).

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::records::AuditRecord;
use crate::util::rfc3339;

/// A record longer than this is cut (its text fields shortened): a line must
/// stay small enough to be written by one `write` call.
const MAX_RECORD_LEN: usize = 8 * 1024;

/// Why the audit log cannot be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write the audit log {path}: {source} (fix: check `audit_log`, free disk space and permissions)"
)]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The audit log.
#[derive(Debug)]
pub struct AuditLog {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

/// Who and where a record is about.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub session: Option<String>,
    pub source: Option<String>,
    pub expert: Option<String>,
    pub method: Option<String>,
    pub fingerprint: Option<String>,
}

impl AuditLog {
    /// Opens (creating) the log. A torn last line from a crash during a write
    /// is cut off and noted in a record.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, AuditError> {
        let err = |source| AuditError {
            path: path.into(),
            source,
        };
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let (file, size, repaired) = open_repaired(path).map_err(err)?;
        let log = Self {
            inner: Mutex::new(Inner {
                path: path.into(),
                file,
                size,
                max_bytes,
                keep,
            }),
        };
        if let Some(cut) = repaired {
            let (event, fields) = AuditRecord::LogRepaired { bytes_removed: cut }.into_parts();
            log.record(&event, &Context::default(), fields)?;
        }
        Ok(log)
    }

    /// Appends one record and fsyncs it.
    pub fn record(
        &self,
        event: &str,
        ctx: &Context,
        fields: Map<String, Value>,
    ) -> Result<(), AuditError> {
        let mut line = build_line(event, ctx, fields);
        if line.len() > MAX_RECORD_LEN {
            // Keep the record but drop the bulky fields.
            let mut m = Map::new();
            m.insert("truncated".into(), true.into());
            line = build_line(event, ctx, m);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.append(line.as_bytes())
    }

    /// Appends several records with one write and one fsync (summaries
    /// written together). Whole lines only, as for [`AuditLog::record`].
    pub fn record_batch(
        &self,
        records: &[(impl AsRef<str>, Context, Map<String, Value>)],
    ) -> Result<(), AuditError> {
        let mut lines = String::new();
        for (event, ctx, fields) in records {
            let event = event.as_ref();
            let mut line = build_line(event, ctx, fields.clone());
            if line.len() > MAX_RECORD_LEN {
                let mut m = Map::new();
                m.insert("truncated".into(), true.into());
                line = build_line(event, ctx, m);
            }
            lines.push_str(&line);
        }
        if lines.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.append(lines.as_bytes())
    }

    /// fsyncs the log (every record already is; for shutdown).
    pub fn flush(&self) -> Result<(), AuditError> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.file.sync_all().map_err(|source| AuditError {
            path: inner.path.clone(),
            source,
        })
    }
}

fn build_line(event: &str, ctx: &Context, fields: Map<String, Value>) -> String {
    let mut m = Map::new();
    m.insert("time".into(), rfc3339(SystemTime::now()).into());
    m.insert("event".into(), event.into());
    for (k, v) in [
        ("session", &ctx.session),
        ("source", &ctx.source),
        ("expert", &ctx.expert),
        ("method", &ctx.method),
        ("fingerprint", &ctx.fingerprint),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    for (k, v) in fields {
        m.insert(k, v);
    }
    let mut line = Value::Object(m).to_string();
    line.push('\n');
    line
}

impl Inner {
    fn append(&mut self, line: &[u8]) -> Result<(), AuditError> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let path = self.path.clone();
        let err = |source| AuditError { path, source };
        // One write of the whole line (O_APPEND): readers and crashes see
        // whole lines only.
        if let Err(e) = self.file.write_all(line) {
            // Disk full mid-line: cut what got written, so the log never
            // holds half a record.
            let _ = self.file.set_len(self.size);
            return Err(err(e));
        }
        if let Err(source) = self.file.sync_data() {
            let _ = self.file.set_len(self.size);
            return Err(AuditError {
                path: self.path.clone(),
                source,
            });
        }
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let numbered = |n: u32| {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{n}"));
            PathBuf::from(s)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path).map_err(err)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = numbered(n);
                if from.exists() {
                    std::fs::rename(&from, numbered(n + 1)).map_err(err)?;
                }
            }
            std::fs::rename(&self.path, numbered(1)).map_err(err)?;
        }
        let (file, size, _) = open_repaired(&self.path).map_err(err)?;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = crate::fsutil::sync_dir(dir);
        }
        self.file = file;
        self.size = size;
        Ok(())
    }
}

/// Opens for append; cuts a partial last line. Returns the bytes cut.
fn open_repaired(path: &Path) -> std::io::Result<(File, u64, Option<u64>)> {
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok((f, 0, None));
    }
    // Find the last newline, reading backwards in blocks.
    const BLOCK: u64 = 4096;
    let mut end = len;
    let mut keep = 0;
    let mut found = false;
    while end > 0 && !found {
        let start = end.saturating_sub(BLOCK);
        let mut buf = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            found = true;
        }
        end = start;
    }
    if keep == len {
        return Ok((f, len, None));
    }
    f.set_len(keep)?;
    f.sync_all()?;
    Ok((f, keep, Some(len - keep)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(p: &Path) -> Vec<Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn records_are_json_lines_with_context() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/audit.jsonl");
        let log = AuditLog::open(&p, 1 << 20, 2).unwrap();
        let ctx = Context {
            session: Some("s1".into()),
            source: Some("10.0.0.1:5000".into()),
            ..Default::default()
        };
        let mut m = Map::new();
        m.insert("reason".into(), "Busy".into());
        log.record("bye", &ctx, m).unwrap();
        let l = lines(&p);
        assert_eq!(l[0]["event"], "bye");
        assert_eq!(l[0]["session"], "s1");
        assert_eq!(l[0]["reason"], "Busy");
        assert!(l[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn torn_last_line_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        std::fs::write(&p, "{\"event\":\"a\"}\n{\"event\":\"b\",\"ti").unwrap();
        let log = AuditLog::open(&p, 1 << 20, 2).unwrap();
        log.record("c", &Context::default(), Map::new()).unwrap();
        let l = lines(&p);
        assert_eq!(l.len(), 3);
        assert_eq!(l[1]["event"], "log-repaired");
        assert_eq!(l[2]["event"], "c");
    }

    #[test]
    fn a_batch_is_whole_lines_in_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p, 1 << 20, 2).unwrap();
        let mut m = Map::new();
        m.insert("n".into(), 1.into());
        let records = vec![
            ("a", Context::default(), m.clone()),
            ("b", Context::default(), m),
        ];
        log.record_batch(&records).unwrap();
        let l = lines(&p);
        assert_eq!(l.len(), 2);
        assert_eq!(l[1]["event"], "b");
    }

    #[test]
    fn rotates_by_size_keeping_n() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&p, 400, 2).unwrap();
        for i in 0..40 {
            let mut m = Map::new();
            m.insert("i".into(), i.into());
            log.record("tick", &Context::default(), m).unwrap();
        }
        assert!(std::fs::metadata(&p).unwrap().len() <= 400);
        assert!(dir.path().join("audit.jsonl.1").exists());
        assert!(dir.path().join("audit.jsonl.2").exists());
        assert!(!dir.path().join("audit.jsonl.3").exists());
        let last = lines(&p);
        assert_eq!(last.last().unwrap()["i"], 39);
    }
}
