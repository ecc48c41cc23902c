//! A byte stream carried in broker messages: one end is a
//! [`DuplexStream`] the session's TLS runs on, as it would on TCP; the
//! other is a pump that publishes what TLS writes and hands on what the
//! peer published, in order, within the window (see `frame`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{Mutex, mpsc, watch};

use crate::frame::{self, CHUNK, Header, Kind, Receiver, Take, WINDOW};

/// How long a tunnel waits for the peer's end after its own, before it
/// lets go.
pub const LINGER: Duration = Duration::from_secs(5);
/// Messages of one tunnel waiting to be handed on: the window's data and a
/// few acks. A peer that floods beyond it is cut off.
pub const INBOX: usize = WINDOW as usize + 16;
/// Bytes buffered between the pump and TLS, each way.
const PIPE: usize = 2 * CHUNK;

/// What a pump publishes on its topic.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where a tunnel's messages go: the broker link (or a test's fake).
pub trait Outbox: Send + Sync + 'static {
    /// Publishes one message, in the order called. An error means the link
    /// is gone.
    fn send(&self, message: Vec<u8>) -> Sending<'_>;
}

/// Starts a tunnel: messages from `inbox` (the peer's topic) go to the
/// returned stream, what is written to it goes to `outbox`. `out_seq` is
/// the seq of this side's next message, `in_seq` the peer's due next.
/// The tunnel ends on a clean end both ways, a reset either way, a message
/// out of order, or the link (the inbox) closing; the stream then reads
/// EOF and writes fail.
pub fn spawn(
    outbox: Arc<dyn Outbox>,
    inbox: mpsc::Receiver<Bytes>,
    out_seq: u32,
    in_seq: u32,
) -> DuplexStream {
    spawn_with(outbox, inbox, out_seq, in_seq, ())
}

/// [`spawn`], dropping `guard` when the tunnel ends.
pub fn spawn_with<G: Send + 'static>(
    outbox: Arc<dyn Outbox>,
    inbox: mpsc::Receiver<Bytes>,
    out_seq: u32,
    in_seq: u32,
    guard: G,
) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        run(outbox, inbox, out_seq, in_seq, ours).await;
        drop(guard);
    });
    theirs
}

/// A reset to send, or an end the peer already knows about.
#[derive(Debug)]
enum End {
    /// Tell the peer why.
    Reset(String),
    /// The peer reset, or the link is gone: nothing to tell.
    Quiet(String),
}

struct State {
    seq: u32,
    rx: Receiver,
}

impl State {
    /// The next header of `kind`, carrying the ack; counts it sent.
    fn header(&mut self, kind: Kind) -> Header {
        let ack = self.rx.handed_on();
        let h = Header {
            kind,
            seq: self.seq,
            ack,
        };
        self.seq = self.seq.wrapping_add(1);
        self.rx.acked(ack);
        if kind == Kind::Data {
            self.rx.sent_data();
        }
        h
    }
}

async fn run(
    outbox: Arc<dyn Outbox>,
    inbox: mpsc::Receiver<Bytes>,
    out_seq: u32,
    in_seq: u32,
    ours: DuplexStream,
) {
    let (rd, wr) = tokio::io::split(ours);
    let state = Mutex::new(State {
        seq: out_seq,
        rx: Receiver::new(in_seq),
    });
    let (acked_tx, acked_rx) = watch::channel(0u32);
    let (fin_tx, fin_rx) = watch::channel(false);
    let sending = send_loop(&*outbox, &state, rd, acked_rx, fin_tx);
    let receiving = recv_loop(&*outbox, &state, inbox, wr, acked_tx, fin_rx);
    match tokio::try_join!(sending, receiving) {
        Ok(_) => tracing::debug!("tunnel closed"),
        Err(End::Reset(reason)) => {
            tracing::debug!(%reason, "tunnel reset");
            let m = {
                let mut s = state.lock().await;
                let h = s.header(Kind::Reset);
                let n = reason.len().min(frame::MAX_REASON);
                frame::encode(h, &reason.as_bytes()[..n])
            };
            let _ = outbox.send(m).await;
        }
        Err(End::Quiet(reason)) => tracing::debug!(%reason, "tunnel ended"),
    }
}

async fn send_loop(
    outbox: &dyn Outbox,
    state: &Mutex<State>,
    mut rd: ReadHalf<DuplexStream>,
    mut acked: watch::Receiver<u32>,
    fin: watch::Sender<bool>,
) -> Result<(), End> {
    let mut sent = 0u32;
    let mut buf = vec![0u8; CHUNK];
    loop {
        while sent.wrapping_sub(*acked.borrow_and_update()) >= WINDOW {
            if acked.changed().await.is_err() {
                return Err(End::Quiet("the receiving side ended".into()));
            }
        }
        let n = match rd.read(&mut buf).await {
            Ok(0) => {
                let mut s = state.lock().await;
                let h = s.header(Kind::Fin);
                outbox
                    .send(frame::encode(h, &[]))
                    .await
                    .map_err(End::Quiet)?;
                drop(s);
                let _ = fin.send(true);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => return Err(End::Reset(format!("the session's stream failed: {e}"))),
        };
        let mut s = state.lock().await;
        let h = s.header(Kind::Data);
        outbox
            .send(frame::encode(h, &buf[..n]))
            .await
            .map_err(End::Quiet)?;
        drop(s);
        sent = sent.wrapping_add(1);
    }
}

async fn recv_loop(
    outbox: &dyn Outbox,
    state: &Mutex<State>,
    mut inbox: mpsc::Receiver<Bytes>,
    mut wr: WriteHalf<DuplexStream>,
    acked: watch::Sender<u32>,
    mut our_fin: watch::Receiver<bool>,
) -> Result<(), End> {
    let mut peer_fin = false;
    let linger = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(linger);
    let mut lingering = false;
    loop {
        let m = tokio::select! {
            m = inbox.recv() => m,
            r = our_fin.changed(), if !lingering => {
                if r.is_err() || *our_fin.borrow() {
                    if peer_fin {
                        return Ok(());
                    }
                    lingering = true;
                    linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                }
                continue;
            }
            _ = &mut linger, if lingering => return Ok(()),
        };
        // Closed: the link dropped (a reset cannot go out then, and
        // costs nothing to try), or the peer overran the inbox.
        let Some(m) = m else {
            return Err(End::Reset(
                "the broker link closed, or the peer sent beyond its window".into(),
            ));
        };
        let (take, ack) = {
            let mut s = state.lock().await;
            s.rx.take(&m).map_err(|e| End::Reset(e.to_string()))?
        };
        acked.send_if_modified(|a| {
            let newer = ack > *a;
            if newer {
                *a = ack;
            }
            newer
        });
        match take {
            Take::Data(p) => {
                wr.write_all(p)
                    .await
                    .map_err(|_| End::Reset("the session closed its stream".into()))?;
                let mut s = state.lock().await;
                if s.rx.ack_due() {
                    let h = s.header(Kind::Ack);
                    outbox
                        .send(frame::encode(h, &[]))
                        .await
                        .map_err(End::Quiet)?;
                }
            }
            Take::Nothing => {}
            Take::Fin => {
                let _ = wr.shutdown().await;
                peer_fin = true;
                if *our_fin.borrow() {
                    return Ok(());
                }
            }
            Take::Reset(reason) => return Err(End::Quiet(format!("the peer reset: {reason}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// A fake broker: delivers each message to the peer's inbox, through
    /// `mangle` (which may drop or reorder) and records everything.
    struct Wire {
        to: StdMutex<Option<mpsc::Sender<Bytes>>>,
        seen: StdMutex<Vec<Vec<u8>>>,
        drop_nth: Option<usize>,
    }

    impl Outbox for Wire {
        fn send(&self, m: Vec<u8>) -> Sending<'_> {
            Box::pin(async move {
                let n = {
                    let mut seen = self.seen.lock().unwrap();
                    seen.push(m.clone());
                    seen.len() - 1
                };
                if Some(n) == self.drop_nth {
                    return Ok(());
                }
                let to = self.to.lock().unwrap().clone();
                match to {
                    Some(to) => to.send(m.into()).await.map_err(|_| "closed".to_string()),
                    None => Err("closed".into()),
                }
            })
        }
    }

    fn pair(drop_a: Option<usize>) -> (DuplexStream, DuplexStream, Arc<Wire>, Arc<Wire>) {
        let (a_tx, a_rx) = mpsc::channel(INBOX);
        let (b_tx, b_rx) = mpsc::channel(INBOX);
        let wa = Arc::new(Wire {
            to: StdMutex::new(Some(b_tx)),
            seen: StdMutex::new(Vec::new()),
            drop_nth: drop_a,
        });
        let wb = Arc::new(Wire {
            to: StdMutex::new(Some(a_tx)),
            seen: StdMutex::new(Vec::new()),
            drop_nth: None,
        });
        let a = spawn(wa.clone(), a_rx, 0, 0);
        let b = spawn(wb.clone(), b_rx, 0, 0);
        (a, b, wa, wb)
    }

    #[tokio::test]
    async fn a_large_stream_crosses_intact_both_ways_within_the_window() {
        let (mut a, mut b, wa, _) = pair(None);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let d2 = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&d2).await.unwrap();
            a.shutdown().await.unwrap();
            let mut back = Vec::new();
            a.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        // Read slowly at first: the writer must wait for the window, not
        // queue without bound.
        let mut buf = vec![0; 1000];
        for _ in 0..50 {
            let n = b.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let sent_early = wa.seen.lock().unwrap().len();
        assert!(
            sent_early <= WINDOW as usize + 2,
            "{sent_early} messages sent to a slow reader"
        );
        b.read_to_end(&mut got).await.unwrap();
        assert!(got == data, "the stream arrived changed");
        b.write_all(b"thanks").await.unwrap();
        b.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"thanks");
    }

    #[tokio::test]
    async fn a_lost_message_ends_both_ends_instead_of_corrupting_the_stream() {
        // Message 3 of a's direction is lost on the way.
        let (mut a, mut b, _, wb) = pair(Some(3));
        let w = tokio::spawn(async move {
            let chunk = vec![1u8; CHUNK];
            for _ in 0..10 {
                if a.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            let mut rest = Vec::new();
            let _ = a.read_to_end(&mut rest).await;
        });
        let mut got = Vec::new();
        let _ = b.read_to_end(&mut got).await;
        // b saw the first three messages only, then the end.
        assert!(got.len() <= 3 * CHUNK, "{} bytes", got.len());
        assert!(got.iter().all(|&x| x == 1));
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("the writer's end closed too")
            .unwrap();
        let seen = wb.seen.lock().unwrap();
        let last = frame::decode(seen.last().unwrap()).unwrap();
        assert_eq!(last.0.kind, Kind::Reset, "b told a why");
        assert!(String::from_utf8_lossy(last.1).contains("lost or reordered"));
    }
}
