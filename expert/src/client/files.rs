//! The expert's end of a file transfer: the local file, the window of
//! data in flight, the digest check, and a temporary name until a
//! download is complete and verified. Fed the device's file messages, each
//! side answers with the actions to send.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};
use shoulder_proto::files::{
    FILE_CHUNK, FILE_WINDOW, FileMsg, FileOutcome, MAX_FILE_NAME_LEN, Sha256, base_name,
    human_size, plain_name,
};
use shoulder_proto::msg::{Payload, text};
use shoulder_proto::session::UserAction;

/// Where a transfer is.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these (maybe none) and wait for more.
    Go(Vec<UserAction>),
    /// The person at the device is being asked.
    Asking { name: String, size: u64 },
    /// `done` of `total` bytes have gone.
    Progress { done: u64, total: u64 },
    /// Finished: a sentence for the technician, or why it failed.
    Finished(Result<String, String>),
}

fn file(m: FileMsg) -> UserAction {
    UserAction::File(Box::new(m))
}

fn digest(c: Context) -> Sha256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// What both sides do alike: ignore other transfers, report the question.
fn shared_step(id: u32, m: &FileMsg) -> Option<Step> {
    match m {
        _ if m.id() != id => Some(Step::Go(Vec::new())),
        FileMsg::Asking { name, size, .. } => Some(Step::Asking {
            name: name.to_string(),
            size: *size,
        }),
        _ => None,
    }
}

/// A file coming from the device, written under a temporary name next to
/// where it goes, and renamed there only when complete and verified.
pub struct Download {
    id: u32,
    target: PathBuf,
    temp: PathBuf,
    out: Option<File>,
    hash: Option<Context>,
    received: u64,
    size: u64,
    /// The digest the device announced at the end.
    announced: Option<Sha256>,
    kept: bool,
}

impl Download {
    /// Starts copying `remote` to `local` (a directory takes the remote
    /// file's name). Refuses to overwrite a file that is there.
    pub fn start(id: u32, remote: &str, local: &Path) -> Result<(Self, UserAction), String> {
        let name = base_name(remote);
        if !plain_name(&name) {
            return Err(format!("\"{remote}\" does not name a file."));
        }
        let target = if local.is_dir() {
            local.join(name.as_str())
        } else {
            local.to_path_buf()
        };
        if target.exists() {
            return Err(format!(
                "{} is already there — remove it or name another file.",
                target.display()
            ));
        }
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = target.with_file_name(format!(".{file_name}.shoulder-part"));
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| format!("Cannot create {}: {e}.", temp.display()))?;
        let action = file(FileMsg::Get {
            id,
            path: text(remote),
        });
        Ok((
            Self {
                id,
                target,
                temp,
                out: Some(out),
                hash: Some(Context::new(&SHA256)),
                received: 0,
                size: 0,
                announced: None,
                kept: false,
            },
            action,
        ))
    }

    /// The device says `m`.
    pub fn on(&mut self, m: &FileMsg) -> Step {
        if let Some(step) = shared_step(self.id, m) {
            return step;
        }
        match m {
            FileMsg::Accepted { size, .. } => {
                self.size = *size;
                Step::Progress {
                    done: 0,
                    total: *size,
                }
            }
            FileMsg::Data { offset, data, .. } => {
                if *offset != self.received || self.received + data.0.len() as u64 > self.size {
                    return self.fail("the device sent the file out of order");
                }
                let (Some(out), Some(hash)) = (self.out.as_mut(), self.hash.as_mut()) else {
                    return Step::Go(Vec::new());
                };
                if let Err(e) = out.write_all(&data.0) {
                    let why = format!("Cannot write {}: {e}.", self.temp.display());
                    return Step::Finished(Err(why));
                }
                hash.update(&data.0);
                self.received += data.0.len() as u64;
                Step::Go(vec![file(FileMsg::Ack {
                    id: self.id,
                    received: self.received,
                })])
            }
            FileMsg::End { sha256, .. } => {
                self.announced = Some(*sha256);
                Step::Progress {
                    done: self.received,
                    total: self.size,
                }
            }
            FileMsg::Done { outcome, .. } => match outcome {
                FileOutcome::Done => self.keep(),
                o => Step::Finished(Err(o.sentence())),
            },
            _ => Step::Go(Vec::new()),
        }
    }

    fn fail(&mut self, why: &str) -> Step {
        Step::Finished(Err(format!("The download failed: {why}.")))
    }

    /// Complete: verify, sync and put in place (never over a file that
    /// appeared meanwhile).
    fn keep(&mut self) -> Step {
        let (Some(out), Some(hash)) = (self.out.take(), self.hash.take()) else {
            return self.fail("it ended twice");
        };
        let got = digest(hash);
        if self.received != self.size {
            return self.fail("the device ended it early");
        }
        if self.announced != Some(got) {
            return Step::Finished(Err(FileOutcome::HashMismatch.sentence()));
        }
        if let Err(e) = out.sync_all() {
            return Step::Finished(Err(format!("Cannot write {}: {e}.", self.temp.display())));
        }
        drop(out);
        // A hard link fails if the name was taken meanwhile; a rename would
        // replace it.
        if let Err(e) = std::fs::hard_link(&self.temp, &self.target) {
            return Step::Finished(Err(format!(
                "Cannot put the file at {}: {e}.",
                self.target.display()
            )));
        }
        let _ = std::fs::remove_file(&self.temp);
        self.kept = true;
        Step::Finished(Ok(format!(
            "Copied {} ({}, SHA-256 {}).",
            self.target.display(),
            human_size(self.size),
            shoulder_proto::Fingerprint(got).hex()
        )))
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("id", &self.id)
            .field("target", &self.target)
            .field("received", &self.received)
            .field("size", &self.size)
            .finish()
    }
}

impl Drop for Download {
    /// Whatever ended it, nothing half-written stays.
    fn drop(&mut self) {
        if !self.kept {
            self.out = None;
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// A file going to the device: its digest first (the device checks it),
/// then its bytes, at most [`FILE_WINDOW`] ahead of the device's acks.
#[derive(Debug)]
pub struct Upload {
    id: u32,
    input: File,
    name: String,
    size: u64,
    sent: u64,
    acked: u64,
    started: bool,
}

impl Upload {
    /// Reads `local` once for its digest; the `Put` to send.
    pub fn start(id: u32, local: &Path) -> Result<(Self, UserAction), String> {
        let cannot = |e: std::io::Error| format!("Cannot read {}: {e}.", local.display());
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !plain_name(&name) || name.len() > MAX_FILE_NAME_LEN {
            return Err(format!(
                "\"{name}\" cannot be a file name on the device (no leading dot, at most {MAX_FILE_NAME_LEN} bytes) — rename it."
            ));
        }
        let mut input = File::open(local).map_err(cannot)?;
        let meta = input.metadata().map_err(cannot)?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file.", local.display()));
        }
        let mut hash = Context::new(&SHA256);
        let mut buf = vec![0u8; FILE_CHUNK];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(cannot)?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            size += n as u64;
        }
        let input = File::open(local).map_err(cannot)?;
        let action = file(FileMsg::Put {
            id,
            name: text(&name),
            size,
            sha256: digest(hash),
        });
        Ok((
            Self {
                id,
                input,
                name,
                size,
                sent: 0,
                acked: 0,
                started: false,
            },
            action,
        ))
    }

    /// The device says `m`.
    pub fn on(&mut self, m: &FileMsg) -> Step {
        if let Some(step) = shared_step(self.id, m) {
            return step;
        }
        match m {
            FileMsg::Accepted { .. } => {
                self.started = true;
                self.fill()
            }
            FileMsg::Ack { received, .. } if self.started => {
                self.acked = (*received).min(self.sent);
                match self.fill() {
                    Step::Go(a) if a.is_empty() => Step::Progress {
                        done: self.acked,
                        total: self.size,
                    },
                    s => s,
                }
            }
            FileMsg::Done { outcome, .. } => match outcome {
                FileOutcome::Done => Step::Finished(Ok(format!(
                    "Sent {} ({}); the device verified it.",
                    self.name,
                    human_size(self.size)
                ))),
                o => Step::Finished(Err(o.sentence())),
            },
            _ => Step::Go(Vec::new()),
        }
    }

    /// The chunks the window allows now.
    fn fill(&mut self) -> Step {
        let mut out = Vec::new();
        while self.sent < self.size && self.sent - self.acked < FILE_WINDOW {
            let want = (self.size - self.sent).min(FILE_CHUNK as u64) as usize;
            let mut buf = vec![0u8; want];
            if self.input.read_exact(&mut buf).is_err() {
                return Step::Finished(Err(format!(
                    "{} changed while it was being sent — nothing was kept on the device.",
                    self.name
                )));
            }
            out.push(file(FileMsg::Data {
                id: self.id,
                offset: self.sent,
                data: Payload(buf),
            }));
            self.sent += want as u64;
        }
        Step::Go(out)
    }
}

/// A download or an upload, as `shoulder get`/`put` and the app's Files
/// panel drive them.
#[derive(Debug)]
pub enum Transfer {
    Down(Box<Download>),
    Up(Upload),
}

impl Transfer {
    /// Starts copying `remote` to `local` ([`Download::start`]).
    pub fn get(id: u32, remote: &str, local: &Path) -> Result<(Self, UserAction), String> {
        Download::start(id, remote, local).map(|(d, a)| (Self::Down(Box::new(d)), a))
    }

    /// Starts sending `local` ([`Upload::start`]).
    pub fn put(id: u32, local: &Path) -> Result<(Self, UserAction), String> {
        Upload::start(id, local).map(|(u, a)| (Self::Up(u), a))
    }

    /// The device says `m`.
    pub fn on(&mut self, m: &FileMsg) -> Step {
        match self {
            Self::Down(d) => d.on(m),
            Self::Up(u) => u.on(m),
        }
    }

    /// Cancels: the device keeps nothing (and neither does this side).
    pub fn cancel(&self) -> UserAction {
        let id = match self {
            Self::Down(d) => d.id,
            Self::Up(u) => u.id,
        };
        file(FileMsg::Cancel { id })
    }
}

/// Asks the device what `dir` holds (empty: which directories it lets
/// the expert read); the answer is a `FileMsg::Listing` or a refusal
/// (`FileMsg::Done`) with the same `id`.
pub fn list(id: u32, dir: &str) -> UserAction {
    UserAction::File(Box::new(FileMsg::List {
        id,
        dir: shoulder_proto::msg::text(dir),
    }))
}

/// Where an entry of `listing` is on the device: a root is named in full,
/// the rest below the listed directory.
pub fn entry_path(listing: &shoulder_proto::files::Listing, name: &str) -> String {
    if listing.dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", listing.dir.trim_end_matches('/'))
    }
}

/// One line per entry, as `shoulder ls` prints them: size (or `dir`),
/// the day it last changed, the name (device text made printable).
pub fn listing_lines(listing: &shoulder_proto::files::Listing) -> Vec<String> {
    let mut lines: Vec<String> = listing
        .entries
        .iter()
        .map(|e| {
            let size = if e.dir {
                "dir".to_string()
            } else {
                shoulder_proto::files::human_size(e.size)
            };
            let day = if e.modified == 0 {
                String::new()
            } else {
                crate::client::files::day(e.modified)
            };
            let slash = if e.dir { "/" } else { "" };
            format!(
                "{size:>10}  {day:10}  {}{slash}",
                crate::printable::printable(&e.name)
            )
        })
        .collect();
    if listing.omitted > 0 {
        lines.push(format!("… and {} more not listed", listing.omitted));
    }
    lines
}

/// `YYYY-MM-DD` (UTC) of seconds since 1970.
pub fn day(secs: u64) -> String {
    let (y, m, d) = shoulder_proto::invite::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoulder_proto::files::{DirEntry, Listing};
    use shoulder_proto::msg::text;

    #[test]
    fn days_are_utc_calendar_dates() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400), "2000-02-29");
        assert_eq!(day(1_796_342_400), "2026-12-04");
    }

    #[test]
    fn a_listing_prints_directories_sizes_and_what_was_left_out() {
        let mut entries = heapless::Vec::new();
        for (name, dir, size) in [("old", true, 0), ("kiosk.log\u{1b}[2J", false, 84_000)] {
            let _ = entries.push(DirEntry {
                name: text(name),
                dir,
                size,
                modified: 1_796_342_400,
            });
        }
        let l = Listing {
            id: 1,
            dir: text("/var/log/kiosk/"),
            entries,
            omitted: 3,
        };
        let lines = listing_lines(&l);
        assert!(lines[0].trim_start().starts_with("dir") && lines[0].ends_with("old/"));
        assert!(lines[1].contains("84 KB") && lines[1].contains("2026-12-04"));
        assert!(
            !lines[1].contains('\u{1b}'),
            "device text is made printable"
        );
        assert_eq!(lines[2], "… and 3 more not listed");
        assert_eq!(entry_path(&l, "old"), "/var/log/kiosk/old");
    }
}
