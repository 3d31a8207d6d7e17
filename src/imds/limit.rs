//! Per-pod rate limits: token buckets keyed by caller (a pod's address, or
//! a hostNetwork pod the kernel named), so one pod cannot
//! use up the node's metadata-service quota (AWS allows about 1,024 packets
//! per second per interface) or the agent's attention for the others.

use std::collections::HashMap;
use std::hash::Hash;
#[cfg(test)]
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Buckets kept before idle (full) ones are swept.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `per_second` sustained, `burst` at once. A rate of zero disables the limit.
    pub fn new(per_second: f64, burst: f64) -> Self {
        RateLimiter {
            per_second,
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `caller` has a request left, without taking it.
    pub fn has_budget(&self, caller: &K) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.get(caller).is_none_or(|bucket| {
            let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
            bucket.tokens + refill >= 1.0
        })
    }

    /// Takes a token for `caller`; false when its bucket is empty.
    pub fn allow(&self, caller: K) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > SWEEP_ABOVE {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.updated) < full_after);
        }
        let bucket = buckets.entry(caller).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate_per_caller() {
        let limiter = RateLimiter::new(10.0, 5.0);
        assert_eq!((0..10).filter(|_| limiter.allow(A)).count(), 5);
        assert!(limiter.allow(B), "another pod is not affected");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!((0..10).filter(|_| limiter.allow(A)).count(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_seen_without_being_spent() {
        let limiter = RateLimiter::new(10.0, 2.0);
        assert!(limiter.has_budget(&A));
        assert!(limiter.allow(A) && limiter.allow(A));
        assert!(!limiter.has_budget(&A));
        assert!(limiter.has_budget(&B));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(limiter.has_budget(&A));
        assert!(limiter.has_budget(&A), "looking twice takes nothing");
        assert!(limiter.allow(A));
        assert!(!limiter.allow(A));
    }

    #[tokio::test]
    async fn zero_disables() {
        let limiter = RateLimiter::new(0.0, 0.0);
        assert!((0..10_000).all(|_| limiter.allow(A)));
    }
}
