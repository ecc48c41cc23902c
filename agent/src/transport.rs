//! One expert connection as the session loop uses it: a read half it polls,
//! and a writer task that owns the write half behind a bounded queue.
//!
//! The session loop never awaits the socket: an expert that stops reading
//! fills the queue, not the loop, so the person's Stop and End, the hotkeys,
//! local-input-wins and the timers are acted on at once whatever the expert
//! does. The writer reports a stalled or failed socket once, and the session
//! treats it as a dropped connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::service::Stream;

/// Batches of encoded messages queued for the writer. With the session's
/// own backlog check below this bounds what a non-reading expert can make
/// the device hold; a few screen-update parts fit.
const WRITE_QUEUE: usize = 8;
/// Bytes written per step: each step must make progress within the write
/// timeout, so a slow link that keeps moving is never taken for a dead one
/// (16 KiB in 15 s is about 1 KB/s).
const WRITE_STEP: usize = 16 * 1024;
/// Batches are merged up to this size before a write (fewer TLS records and
/// syscalls when many small messages are queued).
const MAX_BATCH: usize = 256 * 1024;

type Tls = TlsStream<Box<dyn Stream>>;

/// An expert connection: read here, write through the queue.
#[allow(missing_debug_implementations)]
pub struct Transport {
    reader: ReadHalf<Tls>,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    failed: oneshot::Receiver<String>,
    failed_seen: bool,
    task: JoinHandle<()>,
}

impl Transport {
    /// Splits `tls` and starts its writer. A write that makes no progress
    /// for `write_timeout` ends the writer with "the expert stopped
    /// reading". Needs a tokio runtime.
    pub fn new(tls: Tls, write_timeout: Duration) -> Self {
        let (reader, write) = tokio::io::split(tls);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let (failed_tx, failed) = oneshot::channel();
        let task = tokio::spawn(write_loop(write, rx, write_timeout, failed_tx));
        Self {
            reader,
            writer: Some(tx),
            failed,
            failed_seen: false,
            task,
        }
    }

    /// The next thing that happens on the connection: bytes read, the
    /// writer failing, or (when `want_room`) room in the write queue.
    /// Cancel safe.
    pub async fn next(&mut self, buf: &mut [u8], want_room: bool) -> Event {
        let writer = self.writer.as_ref();
        tokio::select! {
            biased;
            e = &mut self.failed, if !self.failed_seen => {
                self.failed_seen = true;
                match e {
                    Ok(e) => Event::Failed(e),
                    // The writer ended without an error: closed by us.
                    Err(_) => Event::Failed("the connection was closed".into()),
                }
            }
            r = self.reader.read(buf) => Event::Read(r),
            _ = room(writer), if want_room => Event::Room,
        }
    }

    /// Queues `data` without waiting. Gives it back when the queue is full
    /// (the expert reads slower than we write) or the writer has ended.
    pub fn try_send(&self, data: Vec<u8>) -> Result<(), Vec<u8>> {
        match &self.writer {
            Some(w) => w.try_send(data).map_err(|e| match e {
                mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
            }),
            None => Err(data),
        }
    }

    /// Whether the queue has room for another batch now.
    pub fn has_room(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| w.capacity() > 0)
    }

    /// Sends `last` (the goodbye), then closes the connection with a TLS
    /// close_notify, all within `grace`; an expert that does not read is
    /// simply cut off.
    pub async fn close(mut self, last: Vec<u8>, grace: Duration) {
        let writer = self.writer.take();
        let done = async {
            if let Some(w) = writer {
                if !last.is_empty() {
                    let _ = w.send(last).await;
                }
                drop(w);
            }
            let _ = (&mut self.task).await;
        };
        let _ = tokio::time::timeout(grace, done).await;
    }
}

/// What [`Transport::next`] saw.
#[derive(Debug)]
pub enum Event {
    Read(std::io::Result<usize>),
    /// Writing failed or stalled; the connection is dead.
    Failed(String),
    /// The write queue has room again.
    Room,
}

/// Waits until the queue has room. The permit is given back at once: the
/// caller sends with `try_send` from the same task, so the room stays.
async fn room(writer: Option<&mpsc::Sender<Vec<u8>>>) {
    match writer {
        Some(w) if w.reserve().await.is_ok() => {}
        _ => std::future::pending().await,
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        // Dropped without `close`: the connection is dead or unwanted, so
        // nothing queued is worth waiting for.
        self.task.abort();
    }
}

async fn write_loop(
    mut w: WriteHalf<Tls>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    write_timeout: Duration,
    failed: oneshot::Sender<String>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        for step in batch.chunks(WRITE_STEP) {
            let error = match tokio::time::timeout(write_timeout, w.write_all(step)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("write failed: {e}")),
                Err(_) => Some("the expert stopped reading".to_string()),
            };
            if let Some(e) = error {
                let _ = failed.send(e);
                return;
            }
        }
        match tokio::time::timeout(write_timeout, w.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = failed.send(format!("write failed: {e}"));
                return;
            }
            Err(_) => {
                let _ = failed.send("the expert stopped reading".to_string());
                return;
            }
        }
    }
    // The session closed the queue: say goodbye at the TLS level.
    let _ = w.shutdown().await;
}
