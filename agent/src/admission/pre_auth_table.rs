//! The pre-auth table: unauthenticated connections, at most
//! `max_pre_auth_connections` at once.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::lock;

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
pub(super) struct PreAuth {
    max: usize,
    next: AtomicU64,
    waiting: Waiting,
}

/// A connection's place in the pre-auth table.
#[derive(Debug)]
pub(super) struct PreAuthSlot {
    id: u64,
    waiting: Waiting,
}

impl PreAuth {
    pub(super) fn new(max: usize) -> Self {
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
    pub(super) fn admit(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
