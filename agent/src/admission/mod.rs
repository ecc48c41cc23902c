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

mod hashing;
mod limits;
mod pre_auth_log;
mod pre_auth_table;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch};

use crate::audit::AuditLog;
use crate::records::AuditRecord;
use crate::util::lock;

use hashing::HashGate;
pub use hashing::{HASH_QUEUE_PER_SLOT, HashRefused};
use limits::{RateLimiter, TokenBucket};
use pre_auth_log::Summary;
pub use pre_auth_log::{SUMMARY_INTERVAL, pre_auth_log_path};
use pre_auth_table::{PreAuth, PreAuthSlot};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::pre_auth_log::MAX_SUMMARY_SOURCES;
    use super::*;
    use hashing::GateStats;

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
}
