//! What an unauthenticated peer may cost the device, and what it leaves in
//! the audit log.
//!
//! - The pre-auth table: at most `max_pre_auth_connections` unauthenticated
//!   connections; a newcomer evicts the oldest of the busiest source.
//! - Failure limits, per source (IPv6 by /64) and device-wide for password
//!   attempts, charged *before* any work: an attempt counts as a failure up
//!   front and is refunded only when it succeeds or ends in a policy answer,
//!   so attempts cut short (evicted, timed out, abandoned) count as well.
//!   Connections evicted or timed out before they even tried count too.
//! - The hash gate: at most `max_concurrent_hashes` argon2 hashes device-wide;
//!   others wait in a short queue, each with a deadline, and leave it when
//!   their connection goes. A running hash keeps its slot until it finishes,
//!   whatever happens to its connection, so memory under a flood is about
//!   `max_concurrent_hashes × argon2.memory_kib` plus the pre-auth
//!   connections' TLS buffers.
//! - Audit: the records of a connection (connect, hello, auth-failed, bye)
//!   are held by its [`PreAuthTicket`]. Once the peer authenticates they are
//!   written to the audit log as they were; a connection that never does is
//!   only counted, per source, into one `pre-auth-summary` record per
//!   [`SUMMARY_INTERVAL`] in a log of its own ([`pre_auth_log_path`]), so a
//!   flood can neither fill the disk with fsyncs nor rotate session records
//!   out of the audit log.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::audit::{AuditLog, Context};
use crate::records::AuditRecord;
use crate::util::rfc3339;

/// Source addresses the failure rate limiter remembers.
const MAX_TRACKED_ADDRESSES: usize = 4096;
/// Waiting password checks per hash slot. With a quarter to one second per
/// hash on a small ARM core, eight finish well inside the 10 s pre-auth
/// timeout; more would only wait to time out.
pub const HASH_QUEUE_PER_SLOT: usize = 8;
/// Waiting password checks per source: one address cannot fill the queue
/// and make everyone else wait behind it.
const MAX_WAITING_PER_SOURCE: usize = 2;
/// How often unauthenticated connections are summed up in the pre-auth log.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Sources summed up separately per interval; the rest share one record
/// (source `other`), so a spread-out flood costs a bounded number of lines.
const MAX_SUMMARY_SOURCES: usize = 256;
/// Distinct reasons counted per source; further ones count as `other`.
const MAX_REASONS: usize = 16;
/// Client certificate fingerprints kept per source in a summary: enough to
/// name who tried, bounded against certificate spraying.
const MAX_FINGERPRINTS: usize = 4;
/// Records a connection holds before authenticating (connect, hello, maybe
/// a few "ignored" ones); more are counted, not kept.
const MAX_HELD_RECORDS: usize = 8;
/// Longest failure detail kept in a summary.
const MAX_DETAIL_LEN: usize = 200;

/// Everything admission control shares between connections.
#[derive(Debug)]
pub struct Admission {
    pre_auth: PreAuth,
    limits: Arc<Mutex<Limits>>,
    gate: Arc<HashGate>,
    summary: Arc<Mutex<Summary>>,
    log: Option<Arc<AuditLog>>,
}

/// Admission settings (from the config).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
    pub max_pre_auth_connections: usize,
    pub auth_failures_per_minute: u32,
    pub password_failures_per_minute: u32,
    pub max_concurrent_hashes: usize,
}

/// An attempt's failure, charged up front; see [`PreAuthTicket::charge`].
#[derive(Debug, Clone, Copy)]
struct Charge {
    source: IpAddr,
    device_wide: bool,
}

#[derive(Debug)]
struct Limits {
    per_source: RateLimiter,
    device: TokenBucket,
}

impl Admission {
    /// `log` is where summaries go (see [`pre_auth_log_path`]); without one
    /// they go to the service log only.
    pub fn new(config: AdmissionConfig, log: Option<Arc<AuditLog>>) -> Self {
        Self {
            pre_auth: PreAuth::new(config.max_pre_auth_connections),
            limits: Arc::new(Mutex::new(Limits {
                per_source: RateLimiter::new(config.auth_failures_per_minute),
                device: TokenBucket::full(config.password_failures_per_minute),
            })),
            gate: Arc::new(HashGate::new(config.max_concurrent_hashes)),
            summary: Arc::new(Mutex::new(Summary::default())),
            log,
        }
    }

    /// Admits a new connection from `peer`. The receiver fires when a
    /// newcomer evicts it.
    pub fn admit(&self, peer: IpAddr) -> (PreAuthTicket, oneshot::Receiver<()>) {
        let charged = Arc::new(AtomicBool::new(false));
        let (slot, evicted, uncharged) =
            self.pre_auth.admit(RateLimiter::key(peer), charged.clone());
        if !uncharged.is_empty() {
            // Evicted before trying: a failure of their source, charged
            // now rather than when their tasks end.
            let mut l = lock(&self.limits);
            let now = Instant::now();
            for source in uncharged {
                l.per_source.failed(source, now);
            }
        }
        let ticket = PreAuthTicket {
            _slot: slot,
            source: RateLimiter::key(peer),
            limits: self.limits.clone(),
            summary: self.summary.clone(),
            charge: None,
            held: Vec::new(),
            not_held: 0,
            fingerprint: None,
            failure: None,
            end: None,
            charged,
            authenticated: false,
        };
        (ticket, evicted)
    }

    /// Checks a password (`work`, which hashes) under the hash gate: waits
    /// for a slot until `deadline` or until `gone` completes (the
    /// connection went). The hash then runs to its end on a blocking
    /// thread, holding its slot even if the connection goes meanwhile.
    pub async fn hash<T: Send + 'static>(
        &self,
        source: IpAddr,
        deadline: Instant,
        gone: impl Future<Output = ()>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashRefused> {
        self.gate.run(source, deadline, gone, work).await
    }

    /// Sums up the connections since the last call into the pre-auth log.
    pub fn flush_summaries(&self) {
        let taken = std::mem::take(&mut *lock(&self.summary));
        let stats = self.gate.take_interval_stats();
        let records = taken.records(stats);
        if records.is_empty() {
            return;
        }
        match &self.log {
            Some(log) => {
                if let Err(e) = log.record_batch(&records) {
                    tracing::error!(error = %e, "cannot write the pre-auth summary");
                }
            }
            None => {
                for (event, ctx, fields) in &records {
                    let line = Value::Object(fields.clone());
                    tracing::info!(%event, source = ?ctx.source, %line, "pre-auth");
                }
            }
        }
    }

    /// Flushes summaries every [`SUMMARY_INTERVAL`] until `stop`.
    pub async fn summaries(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SUMMARY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.flush_summaries(),
                _ = stop.changed() => return,
            }
        }
    }
}

/// The pre-auth log next to `audit_log`: `audit.jsonl` →
/// `audit.pre-auth.jsonl`. Rotated like the audit log, separately, so its
/// noise never pushes session records out.
pub fn pre_auth_log_path(audit_log: &Path) -> PathBuf {
    let name = audit_log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let new = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.pre-auth.{ext}"),
        _ => format!("{name}.pre-auth"),
    };
    audit_log.with_file_name(new)
}

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

/// Held by a connection while it is unauthenticated: its place in the
/// pre-auth table, its charged failure, and its audit records until it
/// proves who it is. Dropped unauthenticated, it counts the connection into
/// the summary of its source.
#[derive(Debug)]
pub struct PreAuthTicket {
    _slot: PreAuthSlot,
    source: IpAddr,
    limits: Arc<Mutex<Limits>>,
    summary: Arc<Mutex<Summary>>,
    charge: Option<Charge>,
    held: Vec<(String, Map<String, Value>)>,
    not_held: u64,
    fingerprint: Option<String>,
    /// The last authentication failure: reason name and detail.
    failure: Option<(String, String)>,
    /// Why the connection ended (the bye reason, or how the handshake
    /// failed).
    end: Option<String>,
    /// Whether this connection is charged a failure: an attempt in flight
    /// or failed, an eviction, a timeout. Shared with the pre-auth table so
    /// that an eviction charges the source at once, and only once.
    charged: Arc<AtomicBool>,
    authenticated: bool,
}

impl PreAuthTicket {
    /// Charges one failure for an attempt about to be checked: to the
    /// source, and device-wide when it needs a password hash. Refunded
    /// when the attempt succeeds or ends in a policy answer (see
    /// [`PreAuthTicket::auth_failed`]). `Err` has the seconds to wait when
    /// either limit is used up.
    pub fn charge(&mut self, hashes: bool, now: Instant) -> Result<(), u32> {
        let mut l = lock(&self.limits);
        let per_source = l.per_source.retry_after(self.source, now);
        let device = if hashes {
            l.device.retry_after(now)
        } else {
            None
        };
        if let Some(wait) = per_source.max(device) {
            return Err(wait);
        }
        if !self.charged.swap(true, Ordering::SeqCst) {
            l.per_source.failed(self.source, now);
        }
        if hashes {
            l.device.take(now);
        }
        self.charge = Some(Charge {
            source: self.source,
            device_wide: hashes,
        });
        Ok(())
    }

    /// Holds an audit record until the connection authenticates.
    pub fn hold(&mut self, event: &str, fields: Map<String, Value>) {
        if event == "bye" {
            self.end = fields
                .get("reason")
                .and_then(Value::as_str)
                .map(variant_name);
        }
        if self.held.len() < MAX_HELD_RECORDS {
            self.held.push((event.to_string(), fields));
        } else {
            self.not_held += 1;
        }
    }

    /// The client certificate's fingerprint, for the summary.
    pub fn set_fingerprint(&mut self, fp: Option<String>) {
        self.fingerprint = fp;
    }

    /// An authentication attempt failed with `reason`; a failure that does
    /// not count as a guess (a policy answer) is refunded.
    pub fn auth_failed(&mut self, reason: &str, detail: &str, counts: bool) {
        self.failure = Some((variant_name(reason), truncate(detail, MAX_DETAIL_LEN)));
        if counts {
            // Charged for good.
            self.charge = None;
            self.charged.store(true, Ordering::SeqCst);
        } else {
            self.refund();
        }
    }

    /// The connection ended before the session machine ran (TLS handshake
    /// failed, timed out or evicted). `counts`: charge it as a failure.
    pub fn ended(mut self, how: &str, counts: bool) {
        self.end = Some(how.to_string());
        if counts {
            self.charge_end();
        }
    }

    /// The peer authenticated: its charge is refunded and its held records
    /// are returned, to be written to the audit log as usual.
    pub fn authenticated(mut self) -> Vec<(String, Map<String, Value>)> {
        self.refund();
        self.authenticated = true;
        let mut held = std::mem::take(&mut self.held);
        if self.not_held > 0 {
            let record = AuditRecord::PreAuthRecordsNotKept {
                records: self.not_held,
            };
            held.push(record.into_parts());
        }
        held
    }

    fn refund(&mut self) {
        if let Some(c) = self.charge.take() {
            self.charged.store(false, Ordering::SeqCst);
            let mut l = lock(&self.limits);
            let now = Instant::now();
            l.per_source.refund(c.source, now);
            if c.device_wide {
                l.device.refund(now);
            }
        }
    }

    /// Evicted or timed out without an attempt in flight: still a failure
    /// of the source (idle connections are a way of guessing slowly).
    fn charge_end(&mut self) {
        if !self.charged.swap(true, Ordering::SeqCst) {
            lock(&self.limits)
                .per_source
                .failed(self.source, Instant::now());
        }
    }
}

impl Drop for PreAuthTicket {
    fn drop(&mut self) {
        if self.authenticated {
            return;
        }
        let end = self.end.take().unwrap_or_else(|| "closed".into());
        if self.charge.take().is_some() {
            // Evicted, timed out or gone mid-check: the attempt stays
            // charged.
        } else if end == "AuthTimeout" {
            // Evicted or timed out before trying.
            self.charge_end();
        }
        let (reason, detail) = match &self.failure {
            Some((r, d)) => (r.as_str(), Some(d.as_str())),
            None => (end.as_str(), None),
        };
        lock(&self.summary).add(
            self.source,
            reason,
            self.charged.load(Ordering::SeqCst),
            detail,
            self.fingerprint.as_deref(),
        );
    }
}

/// The name of a `ByeReason` as audited (`WrongPassword { tries_left: 2 }`
/// → `WrongPassword`).
fn variant_name(debug: &str) -> String {
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or(debug)
        .to_string()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Unauthenticated connections in arrival order.
type Waiting = Arc<Mutex<VecDeque<Waiter>>>;

/// One unauthenticated connection in the pre-auth table.
#[derive(Debug)]
struct Waiter {
    id: u64,
    /// IPv6 by /64.
    source: IpAddr,
    evict: oneshot::Sender<()>,
    /// Whether the connection is charged a failure (see
    /// [`PreAuthTicket::charged`]).
    charged: Arc<AtomicBool>,
}

/// Unauthenticated connections: at most `max` at once; a newcomer evicts
/// the oldest, so idle or slow peers cannot keep a real expert out.
#[derive(Debug)]
struct PreAuth {
    max: usize,
    next: AtomicU64,
    waiting: Waiting,
}

/// A connection's place in the pre-auth table.
#[derive(Debug)]
struct PreAuthSlot {
    id: u64,
    waiting: Waiting,
}

impl PreAuth {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next: AtomicU64::new(0),
            waiting: Default::default(),
        }
    }

    /// Admits a connection from `source`. When full, the oldest connection
    /// of the source holding the most slots goes, so one flooding address
    /// cannot push out a real expert's handshake.
    /// Returns the evicted connections that were not charged a failure yet
    /// (their sources are, at once).
    fn admit(
        &self,
        source: IpAddr,
        charged: Arc<AtomicBool>,
    ) -> (PreAuthSlot, oneshot::Receiver<()>, Vec<IpAddr>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut uncharged = Vec::new();
        let mut w = lock(&self.waiting);
        while w.len() >= self.max {
            let mut counts: HashMap<IpAddr, usize> = HashMap::new();
            for e in w.iter() {
                *counts.entry(e.source).or_default() += 1;
            }
            let busiest = counts.into_iter().max_by_key(|(_, n)| *n).map(|(ip, _)| ip);
            let Some(pos) = w.iter().position(|e| Some(e.source) == busiest) else {
                break;
            };
            if let Some(e) = w.remove(pos) {
                let _ = e.evict.send(());
                if !e.charged.swap(true, Ordering::SeqCst) {
                    uncharged.push(e.source);
                }
            }
        }
        w.push_back(Waiter {
            id,
            source,
            evict: tx,
            charged,
        });
        (
            PreAuthSlot {
                id,
                waiting: self.waiting.clone(),
            },
            rx,
            uncharged,
        )
    }
}

impl Drop for PreAuthSlot {
    fn drop(&mut self) {
        let mut w = lock(&self.waiting);
        w.retain(|e| e.id != self.id);
    }
}

/// A token bucket: a burst of `per_minute`, refilled at `per_minute` per
/// minute.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn full(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self {
            per_minute,
            tokens: per_minute,
            at: Instant::now(),
        }
    }

    fn tokens(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        (self.tokens + refill).min(self.per_minute)
    }

    /// Seconds to wait, if no attempt is left.
    fn retry_after(&self, now: Instant) -> Option<u32> {
        let t = self.tokens(now);
        (t < 1.0).then(|| ((1.0 - t) * 60.0 / self.per_minute).ceil().max(1.0) as u32)
    }

    fn take(&mut self, now: Instant) {
        self.tokens = (self.tokens(now) - 1.0).max(0.0);
        self.at = now;
    }

    fn refund(&mut self, now: Instant) {
        self.tokens = (self.tokens(now) + 1.0).min(self.per_minute);
        self.at = now;
    }
}

/// Failed authentications per source (IPv6 by /64), a [`TokenBucket`] each.
#[derive(Debug)]
struct RateLimiter {
    per_minute: u32,
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl RateLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpAddr::V4(v4);
                }
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
            v4 => v4,
        }
    }

    /// Seconds to wait, if `ip` has no attempts left.
    fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        self.buckets
            .get(&Self::key(ip))
            .and_then(|b| b.retry_after(now))
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        let key = Self::key(ip);
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES && !self.buckets.contains_key(&key) {
            // Forget the address that failed longest ago.
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&oldest);
            }
        }
        let per_minute = self.per_minute;
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(per_minute))
            .take(now);
    }

    fn refund(&mut self, ip: IpAddr, now: Instant) {
        if let Some(b) = self.buckets.get_mut(&Self::key(ip)) {
            b.refund(now);
        }
    }
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
struct HashGate {
    jobs: Mutex<std::sync::mpsc::Sender<HashJob>>,
    slots: usize,
    permits: Arc<Semaphore>,
    /// Waiting checks per source; the total is bounded too.
    waiting: Mutex<HashMap<IpAddr, usize>>,
    /// Hashes running now, and the most at once this interval.
    running: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    hashes: Arc<AtomicU64>,
    queue_full: AtomicU64,
    expired: AtomicU64,
    /// How long the last hash took, for a retry estimate.
    last_hash_ms: Arc<AtomicU64>,
}

/// The gate's counts for one summary interval.
#[derive(Debug, Default, Clone, Copy)]
struct GateStats {
    hashes: u64,
    most_at_once: usize,
    queue_full: u64,
    expired: u64,
}

impl HashGate {
    fn new(slots: usize) -> Self {
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

    async fn run<T: Send + 'static>(
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

    fn take_interval_stats(&self) -> GateStats {
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

/// Unauthenticated connections of one interval, per source.
#[derive(Debug, Default)]
struct Summary {
    sources: HashMap<String, SourceSummary>,
}

#[derive(Debug)]
struct SourceSummary {
    connections: u64,
    failures: u64,
    reasons: BTreeMap<String, u64>,
    last_detail: Option<String>,
    fingerprints: Vec<String>,
    first: SystemTime,
    last: SystemTime,
}

impl Summary {
    fn add(
        &mut self,
        source: IpAddr,
        reason: &str,
        failure: bool,
        detail: Option<&str>,
        fingerprint: Option<&str>,
    ) {
        let mut key = source.to_string();
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SUMMARY_SOURCES {
            key = "other".into();
        }
        let now = SystemTime::now();
        let s = self.sources.entry(key).or_insert_with(|| SourceSummary {
            connections: 0,
            failures: 0,
            reasons: BTreeMap::new(),
            last_detail: None,
            fingerprints: Vec::new(),
            first: now,
            last: now,
        });
        s.connections += 1;
        s.failures += u64::from(failure);
        let reason = if s.reasons.contains_key(reason) || s.reasons.len() < MAX_REASONS {
            reason
        } else {
            "other"
        };
        *s.reasons.entry(reason.to_string()).or_default() += 1;
        if let Some(d) = detail {
            s.last_detail = Some(d.to_string());
        }
        if let Some(fp) = fingerprint
            && s.fingerprints.len() < MAX_FINGERPRINTS
            && !s.fingerprints.iter().any(|f| f == fp)
        {
            s.fingerprints.push(fp.to_string());
        }
        s.last = now;
    }

    /// One `pre-auth-summary` per source and one `pre-auth-totals`, or
    /// nothing for a quiet interval.
    fn records(self, gate: GateStats) -> Vec<(String, Context, Map<String, Value>)> {
        let mut out = Vec::new();
        let (mut connections, mut failures) = (0, 0);
        let sources = self.sources.len();
        let mut sorted: Vec<_> = self.sources.into_iter().collect();
        sorted.sort_by_key(|(_, s)| s.first);
        for (source, s) in sorted {
            connections += s.connections;
            failures += s.failures;
            let (event, fields) = AuditRecord::PreAuthSummary {
                connections: s.connections,
                failures: s.failures,
                reasons: &s.reasons,
                last_detail: s.last_detail.as_deref(),
                fingerprints: &s.fingerprints,
                first: rfc3339(s.first),
                last: rfc3339(s.last),
            }
            .into_parts();
            let ctx = Context {
                source: Some(source),
                ..Context::default()
            };
            out.push((event, ctx, fields));
        }
        if connections == 0 && gate.hashes == 0 && gate.queue_full == 0 {
            return out;
        }
        let (event, fields) = AuditRecord::PreAuthTotals {
            sources,
            connections,
            failures,
            hashes: gate.hashes,
            most_hashes_at_once: gate.most_at_once,
            hash_queue_full: gate.queue_full,
            hash_wait_expired: gate.expired,
        }
        .into_parts();
        out.push((event, Context::default(), fields));
        out
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn admission(per_minute: u32, device: u32, hashes: usize) -> Admission {
        Admission::new(
            AdmissionConfig {
                max_pre_auth_connections: 4,
                auth_failures_per_minute: per_minute,
                password_failures_per_minute: device,
                max_concurrent_hashes: hashes,
            },
            None,
        )
    }

    #[test]
    fn rate_limiter_bursts_then_refills() {
        let mut r = RateLimiter::new(3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.retry_after(ip, t0), None);
            r.failed(ip, t0);
        }
        assert_eq!(r.retry_after(ip, t0), Some(20));
        assert_eq!(r.retry_after("10.0.0.2".parse().unwrap(), t0), None);
        assert_eq!(r.retry_after(ip, t0 + Duration::from_secs(21)), None);
        // One /64 is one source.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..3 {
            r.failed(a, t0);
        }
        assert!(r.retry_after(b, t0).is_some());
    }

    #[test]
    fn attempts_are_charged_up_front_and_refunded_on_success() {
        let a = admission(2, 100, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        let (mut t1, _) = a.admit(ip);
        let (mut t2, _) = a.admit(ip);
        let (mut t3, _) = a.admit(ip);
        t1.charge(true, now).unwrap();
        t2.charge(true, now).unwrap();
        // Both in flight: the third must wait although none failed yet.
        assert!(t3.charge(true, now).is_err());
        let _ = t1.authenticated();
        t3.charge(true, now).unwrap();
        // A policy answer is refunded; a wrong password is not.
        t2.auth_failed("Busy", "", false);
        t3.auth_failed("WrongPassword { tries_left: 4 }", "wrong", true);
        let (mut t4, _) = a.admit(ip);
        t4.charge(false, now).unwrap();
        let (mut t5, _) = a.admit(ip);
        assert!(t5.charge(false, now).is_err());
    }

    #[test]
    fn the_device_wide_limit_counts_password_attempts_from_every_source() {
        let a = admission(100, 3, 1);
        let now = Instant::now();
        for i in 1..=3 {
            let (mut t, _) = a.admit(format!("10.0.0.{i}").parse().unwrap());
            t.charge(true, now).unwrap();
            t.auth_failed("InvitationUnknown", "", true);
        }
        let (mut t, _) = a.admit("10.0.0.9".parse().unwrap());
        assert_eq!(t.charge(true, now), Err(20));
        // Certificates need no hash: offers still get through.
        t.charge(false, now).unwrap();
    }

    #[test]
    fn evicted_and_timed_out_connections_count_as_failures() {
        let a = admission(2, 100, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (t, _) = a.admit(ip);
        t.ended("evicted", true);
        let (mut t, _) = a.admit(ip);
        t.hold(
            "bye",
            json!({"reason": "AuthTimeout"})
                .as_object()
                .unwrap()
                .clone(),
        );
        drop(t);
        let (mut t, _) = a.admit(ip);
        assert!(t.charge(false, Instant::now()).is_err());
        drop(t);
        let s = lock(&a.summary);
        let src = &s.sources["10.0.0.1"];
        assert_eq!(src.connections, 3);
        assert_eq!(src.failures, 2);
        assert_eq!(src.reasons["evicted"], 1);
        assert_eq!(src.reasons["AuthTimeout"], 1);
    }

    #[test]
    fn an_eviction_charges_its_source_at_once() {
        let a = admission(3, 100, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let tokens = |a: &Admission| {
            let l = lock(&a.limits);
            l.per_source.buckets[&ip].tokens(Instant::now())
        };
        let mut held: Vec<_> = (0..4).map(|_| a.admit(ip)).collect();
        // The fifth evicts the first, whose task has not ended yet.
        let (_t5, _) = a.admit(ip);
        assert!(held[0].1.try_recv().is_ok());
        assert!((1.9..2.1).contains(&tokens(&a)), "{}", tokens(&a));
        // Ending it later does not charge it twice.
        let (first, _) = held.remove(0);
        first.ended("evicted", true);
        assert!((1.9..2.1).contains(&tokens(&a)), "{}", tokens(&a));
    }

    #[test]
    fn summaries_are_bounded_per_interval() {
        let a = admission(1000, 1000, 1);
        for i in 0..(MAX_SUMMARY_SOURCES + 50) {
            let ip = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            let (t, _) = a.admit(ip);
            t.ended("tls-handshake-failed", false);
        }
        let records = std::mem::take(&mut *lock(&a.summary)).records(GateStats::default());
        // One per source up to the bound, one for the rest, the totals.
        assert_eq!(records.len(), MAX_SUMMARY_SOURCES + 2);
        let other = records
            .iter()
            .find(|(_, c, _)| c.source.as_deref() == Some("other"))
            .unwrap();
        assert_eq!(other.2["connections"], 50);
        let totals = records.last().unwrap();
        assert_eq!(totals.0, "pre-auth-totals");
        assert_eq!(totals.2["connections"], MAX_SUMMARY_SOURCES as u64 + 50);
    }

    #[test]
    fn authenticated_connections_keep_their_records() {
        let a = admission(10, 10, 1);
        let (mut t, _) = a.admit("10.0.0.1".parse().unwrap());
        t.charge(false, Instant::now()).unwrap();
        for _ in 0..MAX_HELD_RECORDS + 3 {
            t.hold("ignored", Map::new());
        }
        let held = t.authenticated();
        assert_eq!(held.len(), MAX_HELD_RECORDS + 1);
        assert_eq!(held.last().unwrap().1["records"], 3);
        assert!(lock(&a.summary).sources.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_n_hashes_run_at_once_and_the_queue_is_bounded() {
        let a = Arc::new(admission(1000, 1000, 2));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tasks = Vec::new();
        for i in 0..12u8 {
            let a = a.clone();
            tasks.push(tokio::spawn(async move {
                let ip = IpAddr::from([10, 0, 0, i]);
                a.hash(ip, deadline, std::future::pending(), || {
                    std::thread::sleep(Duration::from_millis(50))
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 12, "2 slots × 8 places hold 12 checks");
        let stats = a.gate.take_interval_stats();
        assert_eq!(stats.hashes, 12);
        assert!(
            (1..=2).contains(&stats.most_at_once),
            "{}",
            stats.most_at_once
        );
        // One source gets two places in the queue, then is told to retry.
        let ip: IpAddr = "10.0.0.99".parse().unwrap();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let hold_rx = Arc::new(Mutex::new(hold_rx));
        let mut busy = Vec::new();
        for _ in 0..2 {
            let a = a.clone();
            let rx = hold_rx.clone();
            busy.push(tokio::spawn(async move {
                a.hash(
                    "10.0.0.1".parse().unwrap(),
                    deadline,
                    std::future::pending(),
                    move || {
                        let _ = lock(&rx).recv_timeout(Duration::from_secs(20));
                    },
                )
                .await
            }));
        }
        while a.gate.running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                a.hash(
                    ip,
                    deadline,
                    async {
                        let _ = gone_rx.await;
                    },
                    || (),
                )
                .await
            })
        };
        let waiter2 = {
            let a = a.clone();
            tokio::spawn(async move { a.hash(ip, deadline, std::future::pending(), || ()).await })
        };
        while lock(&a.gate.waiting).get(&ip).copied().unwrap_or(0) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let third = a.hash(ip, deadline, std::future::pending(), || ()).await;
        assert!(
            matches!(third, Err(HashRefused::QueueFull { .. })),
            "{third:?}"
        );
        // A waiter whose connection goes leaves the queue.
        drop(gone_tx);
        assert_eq!(waiter.await.unwrap(), Err(HashRefused::Gone));
        // An expired wait is refused.
        let soon = Instant::now() + Duration::from_millis(50);
        let late = a.hash(ip, soon, std::future::pending(), || ()).await;
        assert_eq!(late, Err(HashRefused::Expired));
        drop(hold_tx);
        for b in busy {
            b.await.unwrap().unwrap();
        }
        waiter2.await.unwrap().unwrap();
    }

    #[test]
    fn pre_auth_evicts_oldest() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let p = PreAuth::new(2);
        let flag = || Arc::new(AtomicBool::new(false));
        let (_a, mut ra, _) = p.admit(ip, flag());
        let (_b, mut rb, _) = p.admit(ip, flag());
        let (_c, mut rc, _) = p.admit(ip, flag());
        assert!(ra.try_recv().is_ok());
        assert!(rb.try_recv().is_err());
        drop(_b);
        let (_d, _, _) = p.admit(ip, flag());
        assert!(rc.try_recv().is_err());
    }

    #[test]
    fn pre_auth_evicts_from_the_flooding_source() {
        let flood: IpAddr = "10.0.0.66".parse().unwrap();
        let expert: IpAddr = "10.0.0.7".parse().unwrap();
        let p = PreAuth::new(4);
        let flag = || Arc::new(AtomicBool::new(false));
        let (_e, mut re, _) = p.admit(expert, flag());
        let mut floods = Vec::new();
        for _ in 0..20 {
            floods.push(p.admit(flood, flag()));
        }
        assert!(re.try_recv().is_err(), "the expert's handshake survives");
        let evicted = floods
            .iter_mut()
            .map(|(_, r, _)| r.try_recv().is_ok())
            .filter(|&gone| gone)
            .count();
        assert_eq!(evicted, 17);
    }

    #[test]
    fn pre_auth_log_sits_next_to_the_audit_log() {
        assert_eq!(
            pre_auth_log_path(Path::new("/var/lib/shoulder/audit.jsonl")),
            Path::new("/var/lib/shoulder/audit.pre-auth.jsonl")
        );
        assert_eq!(
            pre_auth_log_path(Path::new("/var/log/audit")),
            Path::new("/var/log/audit.pre-auth")
        );
    }
}
