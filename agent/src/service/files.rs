//! A session's file transfer, between the session machine and the thread
//! that reads or writes the file ([`crate::files`]). Built without the
//! `files` feature it holds nothing and never wakes.

#[cfg(feature = "files")]
use shoulder_proto::files::FILE_WINDOW;
#[cfg(feature = "files")]
use shoulder_proto::session::{DeviceInput, FileInput, FileOutput, FileRequest};
#[cfg(feature = "files")]
use tokio::sync::mpsc;

#[cfg(feature = "files")]
use crate::files::{Checked, FileEvent, FilesPolicy};

use super::session::Session;

/// Messages a transfer's thread may have ready for the session: two
/// chunks read ahead are enough to keep the link busy.
#[cfg(feature = "files")]
const FILE_EVENTS: usize = 2;

#[derive(Default)]
pub(super) struct FileGlue {
    #[cfg(feature = "files")]
    inner: Inner,
}

#[cfg(feature = "files")]
#[derive(Default)]
struct Inner {
    /// The request checked, until the person answers.
    checked: Option<(u32, Checked)>,
    /// The running transfer's thread.
    events: Option<mpsc::Receiver<FileEvent>>,
    /// A `Put`'s chunks, to its thread.
    put: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    /// The running transfer.
    id: u32,
    /// A `Get`: bytes queued for the expert, and acknowledged by it.
    sent: u64,
    acked: u64,
}

impl FileGlue {
    /// Whether the session may take the next event: while the writer keeps
    /// up and, for a `Get`, the expert's window is open.
    pub(super) fn ready(&self, writer_has_room: bool) -> bool {
        #[cfg(feature = "files")]
        {
            let i = &self.inner;
            i.events.is_some() && writer_has_room && i.sent.saturating_sub(i.acked) < FILE_WINDOW
        }
        #[cfg(not(feature = "files"))]
        {
            let _ = writer_has_room;
            false
        }
    }

    /// The next event of the running transfer.
    #[cfg(feature = "files")]
    pub(super) async fn next(&mut self) -> Option<FileEvent> {
        match self.inner.events.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    #[cfg(not(feature = "files"))]
    pub(super) async fn next(&mut self) -> Option<std::convert::Infallible> {
        std::future::pending().await
    }
}

#[cfg(feature = "files")]
fn policy(config: &crate::config::Config) -> FilesPolicy {
    let f = &config.files;
    FilesPolicy {
        readable: f.readable.clone(),
        drop: (!f.drop.as_os_str().is_empty()).then(|| f.drop.clone()),
        max_size: f.max_size_mib.saturating_mul(1024 * 1024),
        keep_free: f.keep_free_mib.saturating_mul(1024 * 1024),
    }
}

impl Session {
    /// What the machine asks of the agent.
    #[cfg(feature = "files")]
    pub(super) fn file_output(&mut self, f: FileOutput) {
        let now = std::time::Instant::now;
        match f {
            FileOutput::Check { id, request } => {
                let policy = policy(&self.shared.config);
                let result = match request {
                    FileRequest::Get { path } => crate::files::check_get(&policy, &path)
                        .map(|(file, size)| (Checked::Get { file, size }, size)),
                    FileRequest::Put { name, size } => {
                        crate::files::check_put(&policy, &name, size)
                            .map(|dir| (Checked::Put { dir, name, size }, size))
                    }
                };
                let result = result.map(|(checked, size)| {
                    self.files.inner.checked = Some((id, checked));
                    size
                });
                self.machine
                    .handle(now(), DeviceInput::File(FileInput::Checked { id, result }));
            }
            FileOutput::Start {
                id,
                consent,
                sha256,
            } => {
                let Some((cid, checked)) = self.files.inner.checked.take() else {
                    return;
                };
                if cid != id {
                    return;
                }
                let (tx, rx) = mpsc::channel(FILE_EVENTS);
                let i = &mut self.files.inner;
                i.id = id;
                i.sent = 0;
                i.acked = 0;
                i.events = Some(rx);
                match checked {
                    Checked::Get { file, size } => {
                        crate::files::spawn_get(id, file, size, consent, tx);
                    }
                    Checked::Put { dir, name, size } => {
                        let Some(sha) = sha256 else {
                            return;
                        };
                        i.put = crate::files::spawn_put(id, (dir, name, size, sha), consent, tx);
                    }
                }
            }
            FileOutput::Write { data, .. } => {
                if let Some(tx) = &self.files.inner.put {
                    // A thread that ended has said why already.
                    let _ = tx.send(data);
                }
            }
            FileOutput::Acked { received, .. } => {
                let i = &mut self.files.inner;
                i.acked = i.acked.max(received.min(i.sent));
            }
            FileOutput::List { id, dir } => {
                let result = crate::files::list(&policy(&self.shared.config), &dir).map(Box::new);
                self.machine
                    .handle(now(), DeviceInput::File(FileInput::Listed { id, result }));
            }
            FileOutput::Stop { .. } => {
                // Dropping the channels stops the thread; a `Put`'s removes
                // its temporary file.
                self.files.inner = Inner::default();
            }
        }
    }

    /// What the transfer's thread says.
    #[cfg(feature = "files")]
    pub(super) fn file_event(&mut self, e: Option<FileEvent>) {
        let now = std::time::Instant::now();
        match e {
            Some(FileEvent::Send(m)) => {
                if let shoulder_proto::Message::File(f) = &*m
                    && let shoulder_proto::files::FileMsg::Data { data, .. } = &**f
                {
                    self.files.inner.sent += data.0.len() as u64;
                }
                self.queue(&m);
            }
            Some(FileEvent::Stored { id, stored }) => {
                self.machine
                    .handle(now, DeviceInput::File(FileInput::Stored { id, stored }));
            }
            Some(FileEvent::Finished { id, result }) => {
                self.files.inner.events = None;
                self.files.inner.put = None;
                self.machine
                    .handle(now, DeviceInput::File(FileInput::Finished { id, result }));
            }
            None => {
                // The thread ended without a word (it could not start):
                // the transfer is over.
                self.files.inner.events = None;
                let id = self.files.inner.id;
                let result = Err(shoulder_proto::files::FileOutcome::Failed {
                    detail: Box::new(shoulder_proto::msg::text(
                        "the transfer stopped on the device",
                    )),
                });
                self.machine
                    .handle(now, DeviceInput::File(FileInput::Finished { id, result }));
            }
        }
    }

    #[cfg(not(feature = "files"))]
    pub(super) fn file_event(&mut self, e: Option<std::convert::Infallible>) {
        let _ = e;
    }
}
