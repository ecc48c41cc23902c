//! Files with consent: the wire messages of a transfer and the rules both
//! sides apply to names and sizes.
//!
//! A transfer copies one file from a directory the device's config lets
//! the expert read, or into the one directory it lets the expert drop
//! files in. Each is asked of the person at the device (unless they allowed
//! files for the rest of the session on an earlier prompt), one runs at a
//! time, and the receiver acknowledges what it has stored, so neither side
//! holds more than [`FILE_WINDOW`] bytes of the other's data and screen
//! updates keep flowing between chunks.
//!
//! ```text
//! expert                                              device
//!   | -- File(Get{id, path}) -----------------------> |  checked, then asked
//!   | <-- File(Asking{id, name, size, timeout}) ----- |  (not if allowed before)
//!   | <-- File(Accepted{id, size}) ------------------ |
//!   | <-- File(Data{id, offset, data}) -------------- |  ≤ FILE_WINDOW unacked
//!   | -- File(Ack{id, received}) -------------------> |
//!   | <-- File(End{id, sha256}) --------------------- |  the expert verifies
//!   | <-- File(Done{id, Done}) ---------------------- |
//!
//!   | -- File(Put{id, name, size, sha256}) ---------> |  space checked, asked
//!   | <-- File(Accepted{id, size}) ------------------ |
//!   | -- File(Data{id, offset, data}) --------------> |  to a temporary name
//!   | <-- File(Ack{id, received}) ------------------- |
//!   | <-- File(Done{id, Done}) ---------------------- |  hash verified, renamed
//!
//!   | -- File(Cancel{id}) --------------------------> |  either side, any time:
//!   | <-- File(Done{id, Cancelled…}) ---------------- |  nothing half-written
//!
//!   | -- File(List{id, dir}) -----------------------> |  not asked: the device
//!   | <-- File(Listing{id, dir, entries, omitted}) -- |  lists what may be read
//! ```
//!
//! Listings (`List`, `Listing`) go only to a device whose hello announced
//! [`crate::Capabilities::FILE_LIST`]. The expert sees the names in the
//! readable directories the device's config offers; taking a file is still
//! asked.

use serde::{Deserialize, Serialize};

pub use crate::msg::human_size;
use crate::msg::{MAX_DETAIL_LEN, Payload, Text, text};

/// A path on the device as the expert names it (absolute, inside a
/// readable directory).
pub const MAX_PATH_LEN: usize = 256;
/// A file name in the drop directory (one component).
pub const MAX_FILE_NAME_LEN: usize = 128;
/// Bytes of file data per `Data` message: small enough that a screen
/// update never waits long behind one on a slow link.
pub const FILE_CHUNK: usize = 64 * 1024;
/// Bytes a sender may have sent beyond what the receiver acknowledged: a
/// few round trips' worth on a plant network, and the most either side
/// buffers of the other's data.
pub const FILE_WINDOW: u64 = 8 * FILE_CHUNK as u64;

/// Entries in one listing; more are counted in [`Listing::omitted`].
pub const MAX_LISTING: usize = 200;

/// A SHA-256 digest.
pub type Sha256 = [u8; 32];

/// What a readable directory holds, as far as the expert may see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub id: u32,
    /// The directory listed (empty: the readable directories themselves).
    pub dir: Text<MAX_PATH_LEN>,
    /// Directories first, then files, each by name. The readable
    /// directories themselves (an empty `dir`) are named in full.
    pub entries: heapless::Vec<DirEntry, MAX_LISTING>,
    /// Entries left out past [`MAX_LISTING`].
    pub omitted: u32,
}

/// One entry of a [`Listing`]: a directory or a regular file (links and
/// special files are not listed: they cannot be copied).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: Text<MAX_PATH_LEN>,
    pub dir: bool,
    /// Bytes (0 for a directory).
    pub size: u64,
    /// Last change, seconds since 1970 (UTC).
    pub modified: u64,
}

/// One file transfer message (the payload of [`crate::Message::File`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileMsg {
    /// Expert → device: copy the file at `path` from the device.
    Get { id: u32, path: Text<MAX_PATH_LEN> },
    /// Expert → device: put a file of `size` bytes, named `name`, in the
    /// device's drop directory. `sha256` is checked before it is kept.
    Put {
        id: u32,
        name: Text<MAX_FILE_NAME_LEN>,
        size: u64,
        sha256: Sha256,
    },
    /// Device → expert: the person at the device is being asked.
    Asking {
        id: u32,
        name: Text<MAX_FILE_NAME_LEN>,
        size: u64,
        timeout_secs: u16,
    },
    /// Device → expert: allowed. A `Get`'s data follows; a `Put`'s may be
    /// sent.
    Accepted { id: u32, size: u64 },
    /// Either way: bytes `offset..offset + data.len()` of the file, in
    /// order, at most [`FILE_CHUNK`].
    Data { id: u32, offset: u64, data: Payload },
    /// The receiver has stored the first `received` bytes.
    Ack { id: u32, received: u64 },
    /// Device → expert, after a `Get`'s last data: the digest of what was
    /// sent.
    End { id: u32, sha256: Sha256 },
    /// Expert → device: stop the transfer; nothing of it is kept.
    Cancel { id: u32 },
    /// Device → expert: how the transfer ended. The last message about
    /// `id`.
    Done { id: u32, outcome: FileOutcome },
    /// Expert → device: what may be copied from `dir` (empty: which
    /// directories may be read). Answered with `Listing`, or `Done` with
    /// a refusal.
    List { id: u32, dir: Text<MAX_PATH_LEN> },
    /// Device → expert: the answer to `List`.
    Listing(Box<Listing>),
}

impl FileMsg {
    /// The transfer the message is about.
    pub fn id(&self) -> u32 {
        match self {
            FileMsg::Get { id, .. }
            | FileMsg::Put { id, .. }
            | FileMsg::Asking { id, .. }
            | FileMsg::Accepted { id, .. }
            | FileMsg::Data { id, .. }
            | FileMsg::Ack { id, .. }
            | FileMsg::End { id, .. }
            | FileMsg::Cancel { id }
            | FileMsg::Done { id, .. }
            | FileMsg::List { id, .. } => *id,
            FileMsg::Listing(l) => l.id,
        }
    }
}

/// Which way a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// From the device to the expert.
    Get,
    /// From the expert to the device.
    Put,
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOutcome {
    /// Every byte arrived; a `Put` was verified and renamed into place.
    Done,
    /// The person at the device said no.
    Declined,
    /// Nobody answered the prompt in time.
    TimedOut,
    /// The device refused before asking anyone.
    Refused(FileRefusal),
    /// The expert cancelled.
    CancelledByExpert,
    /// The person at the device cancelled (or ended the session).
    CancelledOnDevice,
    /// The bytes that arrived do not have the announced digest: nothing was
    /// kept.
    HashMismatch,
    /// Reading or writing failed on the device; the detail says what.
    Failed { detail: Box<Text<MAX_DETAIL_LEN>> },
}

/// Why the device refused a transfer without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileRefusal {
    /// The device's config allows no files in this direction.
    NotOffered,
    /// The path is outside the directories the device allows (or leads
    /// out of them through a link or `..`).
    OutsideAllowed,
    /// No such file.
    NotFound,
    /// Not a regular file (a directory, device, socket…).
    NotAFile,
    /// Larger than the device allows (`max` bytes).
    TooLarge { max: u64 },
    /// The device would keep less free space than it must (`free` bytes
    /// free now).
    NoSpace { free: u64 },
    /// A file of that name is already in the drop directory.
    Exists,
    /// Not a plain file name (empty, `.`/`..`, a `/`, a control
    /// character, or starting with a dot).
    BadName,
    /// Another transfer or question is under way: one at a time.
    Busy,
    /// Only while the expert sees the screen.
    NotViewing,
    /// The person said no (or did not answer) a moment ago: ask again
    /// after this many seconds.
    TooSoon { retry_after_secs: u16 },
    /// A listing of something that is not a directory.
    NotADirectory,
}

impl FileOutcome {
    /// The sentence the technician reads.
    pub fn sentence(&self) -> String {
        match self {
            FileOutcome::Done => "Done.".into(),
            FileOutcome::Declined => "The person at the device declined the transfer.".into(),
            FileOutcome::TimedOut => {
                "Nobody at the device answered the transfer request in time.".into()
            }
            FileOutcome::Refused(r) => r.sentence(),
            FileOutcome::CancelledByExpert => "You cancelled the transfer.".into(),
            FileOutcome::CancelledOnDevice => {
                "The person at the device cancelled the transfer.".into()
            }
            FileOutcome::HashMismatch => {
                "The file arrived damaged (its SHA-256 differs): nothing was kept — try again."
                    .into()
            }
            FileOutcome::Failed { detail } => {
                format!("The transfer failed on the device: {detail}")
            }
        }
    }
}

impl FileRefusal {
    /// The sentence the technician reads, with a next step where there is
    /// one.
    pub fn sentence(&self) -> String {
        match self {
            FileRefusal::NotOffered => {
                "This device does not offer files that way (its agent needs \
                 the files feature and [files] in agent.toml)."
                    .into()
            }
            FileRefusal::OutsideAllowed => "That path is outside the directories this device \
                 lets you read (links and `..` may not lead out of them)."
                .into(),
            FileRefusal::NotFound => "No such file on the device.".into(),
            FileRefusal::NotAFile => "That is not a regular file.".into(),
            FileRefusal::NotADirectory => "That is not a directory.".into(),
            FileRefusal::TooLarge { max } => {
                format!(
                    "The file is larger than this device allows ({}).",
                    human_size(*max)
                )
            }
            FileRefusal::NoSpace { free } => format!(
                "The device has too little free space for it ({} free, and it keeps a reserve).",
                human_size(*free)
            ),
            FileRefusal::Exists => {
                "A file of that name is already on the device — rename yours and send it again."
                    .into()
            }
            FileRefusal::BadName => "Not a plain file name (no `/`, no leading dot, no control \
                 characters)."
                .into(),
            FileRefusal::Busy => {
                "The device is busy with another transfer or question — try again in a moment."
                    .into()
            }
            FileRefusal::NotViewing => "Files need a session that is viewing the screen.".into(),
            FileRefusal::TooSoon { retry_after_secs } => format!(
                "A file was declined a moment ago; you can ask again in {retry_after_secs} s."
            ),
        }
    }
}

/// Whether `name` may name a file in the drop directory: one component,
/// not hidden (temporary names start with a dot), no control characters.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FILE_NAME_LEN
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// The last component of `path`, shortened to fit a prompt.
pub fn base_name(path: &str) -> Text<MAX_FILE_NAME_LEN> {
    text(path.rsplit('/').find(|c| !c.is_empty()).unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_drop_directory_are_not_plain() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "x\ny",
            "x\u{1b}[2J",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
        for good in ["kiosk.log", "update 2.bin", "é.txt"] {
            assert!(plain_name(good), "{good:?}");
        }
        assert!(!plain_name(&"a".repeat(MAX_FILE_NAME_LEN + 1)));
    }

    #[test]
    fn base_names_are_the_last_component() {
        assert_eq!(base_name("/var/log/kiosk/kiosk.log").as_str(), "kiosk.log");
        assert_eq!(base_name("/var/log/kiosk/").as_str(), "kiosk");
    }
}
