//! Files with consent, the device's I/O: paths resolved beneath the
//! directories the config allows, sizes and free space checked before the
//! person is asked, reads and writes in a thread of their own, and a sent
//! file kept only once complete and verified.
//!
//! The rules and the consent are the session machine's
//! ([`shoulder_proto::session::FileOutput`]); this module only does what it
//! is told, and only while the [`FileConsent`] it was handed is live.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use ring::digest::{Context, SHA256};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use shoulder_proto::Message;
use shoulder_proto::consent::FileConsent;
use shoulder_proto::files::{
    DirEntry, FILE_CHUNK, FileMsg, FileOutcome, FileRefusal, Listing, Sha256,
};
use shoulder_proto::msg::{Payload, text};
use tokio::sync::mpsc;

/// `[files]`, as the session uses it.
#[derive(Debug, Clone, Default)]
pub struct FilesPolicy {
    /// Directories files may be copied from (absolute).
    pub readable: Vec<PathBuf>,
    /// The directory files may be dropped into.
    pub drop: Option<PathBuf>,
    /// Largest file either way.
    pub max_size: u64,
    /// Free space a dropped file must leave on its filesystem.
    pub keep_free: u64,
}

/// What a transfer's thread tells the session, in order.
#[derive(Debug)]
pub enum FileEvent {
    /// A `Get`'s next message for the expert (`Data`, then `End`).
    Send(Box<Message>),
    /// A `Put` has this many bytes on disk.
    Stored { id: u32, stored: u64 },
    /// How the transfer ended (the digest of what went, when all did).
    Finished {
        id: u32,
        result: Result<Sha256, FileOutcome>,
    },
}

/// A checked request, held until the person answers.
#[derive(Debug)]
pub enum Checked {
    Get {
        file: File,
        size: u64,
    },
    Put {
        dir: OwnedFd,
        name: String,
        size: u64,
    },
}

fn failed(detail: impl std::fmt::Display) -> FileOutcome {
    FileOutcome::Failed {
        detail: Box::new(text(&detail.to_string())),
    }
}

/// The readable directory `path` names (absolute, no `..`), and the rest of
/// the path below it (still to be resolved without following links out).
fn beneath_readable<'a>(
    policy: &'a FilesPolicy,
    path: &'a Path,
) -> Result<(&'a PathBuf, &'a Path), FileRefusal> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FileRefusal::OutsideAllowed);
    }
    policy
        .readable
        .iter()
        .find_map(|d| path.strip_prefix(d).ok().map(|rest| (d, rest)))
        .ok_or(FileRefusal::OutsideAllowed)
}

/// Resolves `path` inside one of the readable directories, without leaving
/// it through `..` or a link, and opens it if it is a regular file within
/// the size limit.
pub fn check_get(policy: &FilesPolicy, path: &str) -> Result<(File, u64), FileRefusal> {
    let (dir, rest) = beneath_readable(policy, Path::new(path))?;
    if rest.as_os_str().is_empty() {
        return Err(FileRefusal::NotAFile);
    }
    let dirfd = open_dir(dir).map_err(|_| FileRefusal::NotFound)?;
    let fd = open_beneath(
        &dirfd,
        rest,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
    )
    .map_err(|e| match e {
        Errno::NOENT | Errno::NOTDIR => FileRefusal::NotFound,
        _ => FileRefusal::OutsideAllowed,
    })?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(|_| FileRefusal::NotFound)?;
    if !meta.is_file() {
        return Err(FileRefusal::NotAFile);
    }
    if meta.len() > policy.max_size {
        return Err(FileRefusal::TooLarge {
            max: policy.max_size,
        });
    }
    Ok((file, meta.len()))
}

/// Directory entries read for one listing at most: a huge directory is
/// listed in part (sorted among those read), never read for long.
const MAX_READ_ENTRIES: usize = 4096;

/// What the expert may see of `dir`, a directory beneath a readable one
/// (resolved as for [`check_get`]), or with an empty `dir` the readable
/// directories themselves: directories and regular files (links, which
/// could lead out, and special files are left out), directories first.
pub fn list(policy: &FilesPolicy, dir: &str) -> Result<Listing, FileRefusal> {
    let mut entries: Vec<DirEntry> = Vec::new();
    let mut omitted = 0u32;
    if dir.is_empty() {
        for d in &policy.readable {
            entries.push(DirEntry {
                name: text(&d.display().to_string()),
                dir: true,
                size: 0,
                modified: 0,
            });
        }
    } else {
        let (root, rest) = beneath_readable(policy, Path::new(dir))?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = if rest.as_os_str().is_empty() {
            rustix::fs::open(root, flags, Mode::empty())
        } else {
            let rootfd = open_dir(root).map_err(|_| FileRefusal::NotFound)?;
            open_beneath(&rootfd, rest, flags)
        }
        .map_err(|e| match e {
            Errno::NOENT => FileRefusal::NotFound,
            Errno::NOTDIR => FileRefusal::NotADirectory,
            _ => FileRefusal::OutsideAllowed,
        })?;
        let mut reader = rustix::fs::Dir::read_from(&fd).map_err(|_| FileRefusal::NotFound)?;
        let mut read = 0;
        while let Some(Ok(e)) = reader.next() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            read += 1;
            if read > MAX_READ_ENTRIES {
                omitted += 1;
                continue;
            }
            let Ok(st) = rustix::fs::statat(&fd, e.file_name(), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            let is_dir = kind == rustix::fs::FileType::Directory;
            if !is_dir && kind != rustix::fs::FileType::RegularFile {
                continue;
            }
            entries.push(DirEntry {
                name: text(&name),
                dir: is_dir,
                size: if is_dir { 0 } else { st.st_size as u64 },
                modified: st.st_mtime.max(0) as u64,
            });
        }
    }
    entries.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    let mut listed = heapless::Vec::new();
    for e in entries {
        if listed.push(e).is_err() {
            omitted += 1;
        }
    }
    Ok(Listing {
        id: 0,
        dir: text(dir),
        entries: listed,
        omitted,
    })
}

/// Whether a file `name` (already a plain name) of `size` bytes may be
/// dropped: not there yet, within the size limit, and leaving the reserve
/// free.
pub fn check_put(policy: &FilesPolicy, name: &str, size: u64) -> Result<OwnedFd, FileRefusal> {
    let dir = policy.drop.as_ref().ok_or(FileRefusal::NotOffered)?;
    if size > policy.max_size {
        return Err(FileRefusal::TooLarge {
            max: policy.max_size,
        });
    }
    let dirfd = open_dir(dir).map_err(|_| FileRefusal::NotFound)?;
    match rustix::fs::statat(&dirfd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => {}
        _ => return Err(FileRefusal::Exists),
    }
    let free = rustix::fs::fstatvfs(&dirfd)
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
        .map_err(|_| FileRefusal::NotFound)?;
    if free < size.saturating_add(policy.keep_free) {
        return Err(FileRefusal::NoSpace { free });
    }
    Ok(dirfd)
}

fn open_dir(dir: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// `openat2(RESOLVE_BENEATH)`; on kernels before 5.6, a walk that refuses
/// every link instead.
fn open_beneath(dir: &OwnedFd, rest: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    match rustix::fs::openat2(
        dir,
        rest,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(Errno::NOSYS) => walk_beneath(dir, rest, flags),
        r => r,
    }
}

/// Opens `rest` under `dir` one component at a time, refusing every link
/// (kernels without `openat2`; `..` was refused before).
fn walk_beneath(dir: &OwnedFd, rest: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let mut parts = rest.components().filter_map(|c| match c {
        Component::Normal(p) => Some(p),
        _ => None,
    });
    let Some(mut part) = parts.next() else {
        return Err(Errno::NOENT);
    };
    let mut at = rustix::io::dup(dir)?;
    for next in parts {
        at = rustix::fs::openat(
            &at,
            part,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        part = next;
    }
    rustix::fs::openat(&at, part, flags | OFlags::NOFOLLOW, Mode::empty())
}

/// Reads a checked file and sends it: `Data` chunks, then `End` with its
/// digest, then `Finished`. The session takes the messages only as the
/// expert's window allows; the bounded channel holds the thread back.
pub fn spawn_get(
    id: u32,
    mut file: File,
    size: u64,
    consent: FileConsent,
    events: mpsc::Sender<FileEvent>,
) {
    let run = move || {
        let mut hash = Context::new(&SHA256);
        let mut offset = 0u64;
        let mut buf = vec![0u8; FILE_CHUNK];
        while offset < size {
            if !consent.is_live() {
                return;
            }
            let want = (size - offset).min(FILE_CHUNK as u64) as usize;
            let n = match file.read(&mut buf[..want]) {
                Ok(0) => {
                    let e = failed("the file got shorter while it was being read");
                    let _ = events.blocking_send(FileEvent::Finished { id, result: Err(e) });
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let e = failed(format!("reading the file failed: {e}"));
                    let _ = events.blocking_send(FileEvent::Finished { id, result: Err(e) });
                    return;
                }
            };
            hash.update(&buf[..n]);
            let data = Payload(buf[..n].to_vec());
            let msg = Message::File(Box::new(FileMsg::Data { id, offset, data }));
            if events
                .blocking_send(FileEvent::Send(Box::new(msg)))
                .is_err()
            {
                return;
            }
            offset += n as u64;
        }
        let sha256 = digest(hash);
        let end = Message::File(Box::new(FileMsg::End { id, sha256 }));
        if events.blocking_send(FileEvent::Send(Box::new(end))).is_ok() {
            let _ = events.blocking_send(FileEvent::Finished {
                id,
                result: Ok(sha256),
            });
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("file-get".into())
        .spawn(run)
    {
        tracing::error!(error = %e, "cannot start a file transfer thread");
    }
}

fn digest(hash: Context) -> Sha256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.finish().as_ref());
    out
}

/// The temporary name a dropped file is written under: hidden (a plain
/// name never starts with a dot, so it cannot clash with one the expert
/// picks) and marked ours, so a crash's leftovers can be told apart.
fn temp_name(name: &str, id: u32) -> String {
    format!(".{name}.{id}{TEMP_SUFFIX}")
}

const TEMP_SUFFIX: &str = ".shoulder-part";

/// Writes a `Put` under its temporary name as chunks arrive, acknowledges
/// what is on disk, and once all `size` bytes are there and their digest
/// is the announced one, syncs and renames it into place (never over an
/// existing file). Anything else, a cancel included (the sender dropped),
/// removes the temporary file.
pub fn spawn_put(
    id: u32,
    checked: (OwnedFd, String, u64, Sha256),
    consent: FileConsent,
    events: mpsc::Sender<FileEvent>,
) -> Option<std::sync::mpsc::Sender<Vec<u8>>> {
    let (dir, name, size, want) = checked;
    let tmp = temp_name(&name, id);
    let fd = match rustix::fs::openat(
        &dir,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o640),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = events.try_send(FileEvent::Finished {
                id,
                result: Err(failed(format!("cannot create the file: {e}"))),
            });
            return None;
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let run = move || {
        let mut file = File::from(fd);
        let mut hash = Context::new(&SHA256);
        let mut stored = 0u64;
        let result = loop {
            if stored == size {
                break finish_put(&dir, &file, &tmp, &name, digest(hash), want);
            }
            let Ok(chunk) = rx.recv() else {
                break Err(None); // stopped: cancelled, ended or refused
            };
            if !consent.is_live() {
                break Err(None);
            }
            if let Err(e) = file.write_all(&chunk) {
                let why = if e.raw_os_error() == Some(Errno::NOSPC.raw_os_error()) {
                    "the device's disk is full".to_string()
                } else {
                    format!("writing the file failed: {e}")
                };
                break Err(Some(failed(why)));
            }
            hash.update(&chunk);
            stored += chunk.len() as u64;
            if events
                .blocking_send(FileEvent::Stored { id, stored })
                .is_err()
            {
                break Err(None);
            }
        };
        match result {
            Ok(sha) => {
                let _ = events.blocking_send(FileEvent::Finished {
                    id,
                    result: Ok(sha),
                });
            }
            Err(outcome) => {
                drop(file);
                let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
                if let Some(o) = outcome {
                    let _ = events.blocking_send(FileEvent::Finished { id, result: Err(o) });
                }
            }
        }
    };
    match std::thread::Builder::new()
        .name("file-put".into())
        .spawn(run)
    {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a file transfer thread");
            None
        }
    }
}

/// Verifies, syncs and renames a complete dropped file into place.
fn finish_put(
    dir: &OwnedFd,
    file: &File,
    tmp: &str,
    name: &str,
    got: Sha256,
    want: Sha256,
) -> Result<Sha256, Option<FileOutcome>> {
    if got != want {
        return Err(Some(FileOutcome::HashMismatch));
    }
    file.sync_all()
        .map_err(|e| Some(failed(format!("syncing the file failed: {e}"))))?;
    match rustix::fs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        Err(Errno::EXIST) => return Err(Some(FileOutcome::Refused(FileRefusal::Exists))),
        // Filesystems without RENAME_NOREPLACE: a hard link fails on an
        // existing name just the same.
        Err(Errno::INVAL | Errno::NOSYS) => {
            rustix::fs::linkat(dir, tmp, dir, name, AtFlags::empty()).map_err(|e| {
                Some(if e == Errno::EXIST {
                    FileOutcome::Refused(FileRefusal::Exists)
                } else {
                    failed(format!("cannot put the file in place: {e}"))
                })
            })?;
            let _ = rustix::fs::unlinkat(dir, tmp, AtFlags::empty());
        }
        Err(e) => return Err(Some(failed(format!("cannot put the file in place: {e}")))),
    }
    let _ = rustix::fs::fsync(dir.as_fd());
    Ok(got)
}

/// Removes temporary files a crashed agent left in the drop directory.
pub fn clean_drop_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a transfer left unfinished"),
                Err(err) => {
                    tracing::warn!(file = %name, error = %err, "cannot remove a transfer left unfinished")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(root: &Path) -> FilesPolicy {
        FilesPolicy {
            readable: vec![root.join("logs")],
            drop: Some(root.join("incoming")),
            max_size: 1000,
            keep_free: 0,
        }
    }

    #[test]
    fn reads_stay_beneath_the_readable_directories() {
        let root = tempfile::tempdir().unwrap();
        let p = policy(root.path());
        std::fs::create_dir_all(root.path().join("logs/sub")).unwrap();
        std::fs::create_dir_all(root.path().join("incoming")).unwrap();
        std::fs::write(root.path().join("logs/a.log"), b"hello").unwrap();
        std::fs::write(root.path().join("logs/sub/b.log"), b"hi").unwrap();
        std::fs::write(root.path().join("secret"), b"no").unwrap();
        std::fs::write(root.path().join("logs/big.log"), vec![0; 1001]).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), root.path().join("logs/out"))
            .unwrap();
        std::os::unix::fs::symlink("../secret", root.path().join("logs/rel")).unwrap();
        std::os::unix::fs::symlink("a.log", root.path().join("logs/in")).unwrap();
        let at = |rel: &str| root.path().join(rel).to_string_lossy().into_owned();
        assert_eq!(check_get(&p, &at("logs/a.log")).unwrap().1, 5);
        assert_eq!(check_get(&p, &at("logs/sub/b.log")).unwrap().1, 2);
        assert_eq!(
            check_get(&p, &at("logs/in")).unwrap().1,
            5,
            "a link inside is fine"
        );
        for (rel, why) in [
            ("secret", FileRefusal::OutsideAllowed),
            ("logs/out", FileRefusal::OutsideAllowed),
            ("logs/rel", FileRefusal::OutsideAllowed),
            ("logs/../secret", FileRefusal::OutsideAllowed),
            ("logs/sub/../../secret", FileRefusal::OutsideAllowed),
            ("logs/none", FileRefusal::NotFound),
            ("logs/sub", FileRefusal::NotAFile),
            ("logs/big.log", FileRefusal::TooLarge { max: 1000 }),
        ] {
            assert_eq!(check_get(&p, &at(rel)).unwrap_err(), why, "{rel}");
        }
        assert_eq!(
            check_get(&p, "logs/a.log").unwrap_err(),
            FileRefusal::OutsideAllowed,
            "relative paths are refused"
        );
    }

    #[test]
    fn without_openat2_the_walk_refuses_every_link() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::create_dir_all(d.join("logs/sub")).unwrap();
        std::fs::write(d.join("logs/sub/a.log"), b"x").unwrap();
        std::fs::write(d.join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(d.join("secret"), d.join("logs/out")).unwrap();
        std::os::unix::fs::symlink(d.join("logs/sub"), d.join("logs/dir")).unwrap();
        let dir = open_dir(&d.join("logs")).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        assert!(walk_beneath(&dir, Path::new("sub/a.log"), flags).is_ok());
        assert!(walk_beneath(&dir, Path::new("out"), flags).is_err());
        assert!(walk_beneath(&dir, Path::new("dir/a.log"), flags).is_err());
        assert!(walk_beneath(&dir, Path::new("none"), flags).is_err());
    }

    #[test]
    fn drops_refuse_existing_names_large_files_and_full_disks() {
        let root = tempfile::tempdir().unwrap();
        let mut p = policy(root.path());
        std::fs::create_dir_all(root.path().join("incoming")).unwrap();
        std::fs::write(root.path().join("incoming/there.txt"), b"x").unwrap();
        assert!(check_put(&p, "new.txt", 10).is_ok());
        assert_eq!(
            check_put(&p, "there.txt", 1).unwrap_err(),
            FileRefusal::Exists
        );
        assert_eq!(
            check_put(&p, "new.txt", 1001).unwrap_err(),
            FileRefusal::TooLarge { max: 1000 }
        );
        p.keep_free = u64::MAX / 2;
        assert!(matches!(
            check_put(&p, "new.txt", 10).unwrap_err(),
            FileRefusal::NoSpace { .. }
        ));
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::write(d.join(".a.txt.3.shoulder-part"), b"x").unwrap();
        std::fs::write(d.join("a.txt"), b"x").unwrap();
        std::fs::write(d.join(".profile"), b"x").unwrap();
        clean_drop_dir(d);
        assert!(!d.join(".a.txt.3.shoulder-part").exists());
        assert!(d.join("a.txt").exists());
        assert!(d.join(".profile").exists());
    }
}
