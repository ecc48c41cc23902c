//! Failure limits: a token bucket per source (IPv6 by /64) and one
//! device-wide.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Source addresses the failure rate limiter remembers.
const MAX_TRACKED_ADDRESSES: usize = 4096;

/// A token bucket: a burst of `per_minute`, refilled at `per_minute` per
/// minute.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenBucket {
    per_minute: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(super) fn full(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self {
            per_minute,
            tokens: per_minute,
            at: Instant::now(),
        }
    }

    pub(super) fn tokens(&self, now: Instant) -> f64 {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.per_minute / 60.0;
        (self.tokens + refill).min(self.per_minute)
    }

    /// Seconds to wait, if no attempt is left.
    pub(super) fn retry_after(&self, now: Instant) -> Option<u32> {
        let t = self.tokens(now);
        (t < 1.0).then(|| ((1.0 - t) * 60.0 / self.per_minute).ceil().max(1.0) as u32)
    }

    pub(super) fn take(&mut self, now: Instant) {
        self.tokens = (self.tokens(now) - 1.0).max(0.0);
        self.at = now;
    }

    pub(super) fn refund(&mut self, now: Instant) {
        self.tokens = (self.tokens(now) + 1.0).min(self.per_minute);
        self.at = now;
    }
}

/// Failed authentications per source (IPv6 by /64), a [`TokenBucket`] each.
#[derive(Debug)]
pub(super) struct RateLimiter {
    per_minute: u32,
    pub(super) buckets: HashMap<IpAddr, TokenBucket>,
}

impl RateLimiter {
    pub(super) fn new(per_minute: u32) -> Self {
        Self {
            per_minute: per_minute.max(1),
            buckets: HashMap::new(),
        }
    }

    pub(super) fn key(ip: IpAddr) -> IpAddr {
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
    pub(super) fn retry_after(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        self.buckets
            .get(&Self::key(ip))
            .and_then(|b| b.retry_after(now))
    }

    pub(super) fn failed(&mut self, ip: IpAddr, now: Instant) {
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

    pub(super) fn refund(&mut self, ip: IpAddr, now: Instant) {
        if let Some(b) = self.buckets.get_mut(&Self::key(ip)) {
            b.refund(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
}
