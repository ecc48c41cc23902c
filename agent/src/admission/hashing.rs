//! The hash gate: at most `max_concurrent_hashes` argon2 hashes at once
//! device-wide, with a short bounded queue.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Semaphore, oneshot};

use super::lock;

/// Waiting password checks per hash slot. With a quarter to one second per
/// hash on a small ARM core, eight finish well inside the 10 s pre-auth
/// timeout; more would only wait to time out.
pub const HASH_QUEUE_PER_SLOT: usize = 8;
/// Waiting password checks per source: one address cannot fill the queue
/// and make everyone else wait behind it.
const MAX_WAITING_PER_SOURCE: usize = 2;

/// Why a password check did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashRefused {
    /// The queue is full: try again after this many seconds.
    QueueFull { retry_after_secs: u32 },
    /// No slot came free before the deadline.
    Expired,
    /// The connection went while waiting.
    Gone,
    /// The blocking thread failed (panicked or the runtime is ending).
    Failed,
}

/// A password check handed to a hashing thread.
type HashJob = Box<dyn FnOnce() + Send>;

/// At most `slots` password hashes at once device-wide, with a short queue.
///
/// Hashes run on `slots` threads of their own, made once, so the thread
/// count stays fixed under a flood (the unit's `TasksMax=`), and the hash
/// buffers are made and freed on the same few threads. (glibc raises its
/// mmap threshold after the first freed 19 MiB buffer and then keeps up to
/// twice that cached in every arena: the shipped systemd unit fixes the
/// threshold; RELIABILITY.md has the numbers.)
#[derive(Debug)]
pub(super) struct HashGate {
    jobs: Mutex<std::sync::mpsc::Sender<HashJob>>,
    slots: usize,
    permits: Arc<Semaphore>,
    /// Waiting checks per source; the total is bounded too.
    pub(super) waiting: Mutex<HashMap<IpAddr, usize>>,
    /// Hashes running now, and the most at once this interval.
    pub(super) running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    hashes: Arc<AtomicU64>,
    queue_full: AtomicU64,
    expired: AtomicU64,
    /// How long the last hash took, for a retry estimate.
    last_hash_ms: Arc<AtomicU64>,
}

/// The gate's counts for one summary interval.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct GateStats {
    pub(super) hashes: u64,
    pub(super) most_at_once: usize,
    pub(super) queue_full: u64,
    pub(super) expired: u64,
}

impl HashGate {
    pub(super) fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<HashJob>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..slots {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("shoulder-hash-{n}"))
                .spawn(move || {
                    loop {
                        // Ends when the gate (the sender) is gone.
                        let Ok(job) = lock(&queue).recv() else {
                            return;
                        };
                        job();
                    }
                });
            if let Err(e) = spawned {
                // Fewer workers only means slower checks (each job waits
                // for one); with none, checks end at the pre-auth timeout.
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            jobs: Mutex::new(jobs),
            slots,
            permits: Arc::new(Semaphore::new(slots)),
            waiting: Mutex::new(HashMap::new()),
            running: Arc::new(AtomicUsize::new(0)),
            most_at_once: Arc::new(AtomicUsize::new(0)),
            hashes: Arc::new(AtomicU64::new(0)),
            queue_full: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            last_hash_ms: Arc::new(AtomicU64::new(250)),
        }
    }

    pub(super) async fn run<T: Send + 'static>(
        &self,
        source: IpAddr,
        deadline: Instant,
        gone: impl Future<Output = ()>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashRefused> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _place = self.enqueue(source)?;
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
                tokio::select! {
                    p = self.permits.clone().acquire_owned() => p.map_err(|_| HashRefused::Failed)?,
                    _ = sleep => {
                        self.expired.fetch_add(1, Ordering::Relaxed);
                        return Err(HashRefused::Expired);
                    }
                    _ = gone => return Err(HashRefused::Gone),
                }
            }
        };
        let running = self.running.clone();
        let most = self.most_at_once.clone();
        let hashes = self.hashes.clone();
        let last_ms = self.last_hash_ms.clone();
        let (tx, rx) = oneshot::channel();
        let job: HashJob = Box::new(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let t0 = Instant::now();
            let r = work();
            last_ms.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            hashes.fetch_add(1, Ordering::Relaxed);
            running.fetch_sub(1, Ordering::SeqCst);
            // The slot is held until the hash is done, whether or not
            // anyone still waits for its answer.
            drop(permit);
            let _ = tx.send(r);
        });
        lock(&self.jobs)
            .send(job)
            .map_err(|_| HashRefused::Failed)?;
        rx.await.map_err(|_| HashRefused::Failed)
    }

    /// A place in the queue, or how long to wait when there is none.
    fn enqueue(&self, source: IpAddr) -> Result<QueuePlace<'_>, HashRefused> {
        let mut w = lock(&self.waiting);
        let total: usize = w.values().sum();
        let mine = w.get(&source).copied().unwrap_or(0);
        if total >= self.slots * HASH_QUEUE_PER_SLOT || mine >= MAX_WAITING_PER_SOURCE {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            let ms = self.last_hash_ms.load(Ordering::Relaxed).max(1);
            let secs = (total as u64 + 1) * ms / self.slots as u64 / 1000;
            return Err(HashRefused::QueueFull {
                retry_after_secs: secs.clamp(1, 60) as u32,
            });
        }
        *w.entry(source).or_default() += 1;
        Ok(QueuePlace { gate: self, source })
    }

    pub(super) fn take_interval_stats(&self) -> GateStats {
        GateStats {
            hashes: self.hashes.swap(0, Ordering::Relaxed),
            most_at_once: self
                .most_at_once
                .swap(self.running.load(Ordering::SeqCst), Ordering::SeqCst),
            queue_full: self.queue_full.swap(0, Ordering::Relaxed),
            expired: self.expired.swap(0, Ordering::Relaxed),
        }
    }
}

/// A waiting check's place in the queue; leaving frees it.
struct QueuePlace<'a> {
    gate: &'a HashGate,
    source: IpAddr,
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        let mut w = lock(&self.gate.waiting);
        if let Some(n) = w.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.source);
            }
        }
    }
}
