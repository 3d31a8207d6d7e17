//! The warmer: keeps credentials ready for every pod that has a role, so
//! that no request waits on STS while a pod's role is in use.
//!
//! It wakes when the pod index changes (a pod appears, its annotation or its
//! namespace's policy changes) and when the earliest cached credentials enter
//! their refresh window; it then fetches what is missing, refreshes what is
//! due, and drops credentials no pod is entitled to any more.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{CredentialCache, CredentialKey, StsError};
use crate::entitlement::{Entitlements, Refusal};
use crate::pods::LookupError;
use crate::telemetry::Metrics;

/// The longest the warmer sleeps without an index change.
const MAX_IDLE: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

pub fn spawn_warmer(
    entitlements: Arc<Entitlements>,
    cache: Arc<CredentialCache>,
) -> JoinHandle<()> {
    tokio::spawn(Warmer::new(entitlements, cache).run())
}

struct Warmer {
    entitlements: Arc<Entitlements>,
    cache: Arc<CredentialCache>,
    in_flight: HashSet<CredentialKey>,
    /// Keys whose last fetch failed: attempts so far and when to try again.
    retries: HashMap<CredentialKey, (u32, Instant)>,
    done_tx: mpsc::UnboundedSender<(CredentialKey, Result<(), StsError>)>,
    done_rx: mpsc::UnboundedReceiver<(CredentialKey, Result<(), StsError>)>,
}

impl Warmer {
    fn new(entitlements: Arc<Entitlements>, cache: Arc<CredentialCache>) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Warmer {
            entitlements,
            cache,
            in_flight: HashSet::new(),
            retries: HashMap::new(),
            done_tx,
            done_rx,
        }
    }

    async fn run(mut self) {
        let mut changes = self.entitlements.store().subscribe();
        loop {
            changes.borrow_and_update();
            let wake_in = self.pass().await;
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                Some((key, result)) = self.done_rx.recv() => self.finished(key, result),
                () = tokio::time::sleep(wake_in) => {}
            }
        }
    }

    /// One look at every pod; returns how long until the next is needed.
    async fn pass(&mut self) -> Duration {
        // Not listed yet, or stale: every decision is a refusal now, and
        // dropping the cache for it would cost a burst of STS calls when the
        // relist comes. The relist wakes the warmer. (Judged from the same
        // decisions that pick the wanted keys, so staleness cannot begin
        // between the check and the use.)
        let Some(wanted) = self.wanted_keys() else {
            return MAX_IDLE;
        };
        self.cache.retain(|key| wanted.contains(key)).await;
        self.retries.retain(|key, _| wanted.contains(key));
        let now = Instant::now();
        let mut wake_in = MAX_IDLE;
        for key in wanted {
            if self.in_flight.contains(&key) {
                continue;
            }
            if let Some((_, retry_at)) = self.retries.get(&key)
                && *retry_at > now
            {
                wake_in = wake_in.min(*retry_at - now);
                continue;
            }
            match self.cache.refresh_due_in(&key).await {
                Some(due) if !due.is_zero() => wake_in = wake_in.min(due),
                cached => self.start_fetch(key, cached.is_some()),
            }
        }
        wake_in.max(Duration::from_millis(10))
    }

    /// The credentials some caller on the node is entitled to right now:
    /// exactly what the metadata handler would serve, decided by the same
    /// function. A stale index wants nothing new, and drops nothing either.
    /// `None` while the index may not be answered from.
    fn wanted_keys(&self) -> Option<HashSet<CredentialKey>> {
        if !self.entitlements.store().is_answerable() {
            return None;
        }
        let mut wanted = HashSet::new();
        for (_, decision) in self.entitlements.decide_all() {
            match decision {
                Ok(grant) => {
                    wanted.insert(grant.key);
                }
                Err(Refusal::Lookup(LookupError::NotReady | LookupError::Stale { .. })) => {
                    return None;
                }
                Err(_) => {}
            }
        }
        Some(wanted)
    }

    /// A missing entry is fetched through the cache's coalescing path, so a
    /// request arriving meanwhile shares the call; a due one is replaced.
    fn start_fetch(&mut self, key: CredentialKey, replace: bool) {
        self.in_flight.insert(key.clone());
        let cache = self.cache.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = if replace {
                cache.refresh(&key).await.map(drop)
            } else {
                cache.prefetch(&key).await.map(drop)
            };
            let metrics = cache.metrics();
            let family = if replace {
                &metrics.refreshes
            } else {
                &metrics.prefetches
            };
            Metrics::count(family, if result.is_ok() { "success" } else { "error" });
            let _ = done.send((key, result));
        });
    }

    fn finished(&mut self, key: CredentialKey, result: Result<(), StsError>) {
        self.in_flight.remove(&key);
        match result {
            Ok(()) => {
                tracing::debug!(role = %key.role, session = %key.session_name, "credentials warmed");
                self.retries.remove(&key);
            }
            Err(error) => {
                let attempts = self.retries.get(&key).map_or(0, |(n, _)| *n) + 1;
                let delay = retry_delay(attempts);
                tracing::warn!(role = %key.role, session = %key.session_name, code = %error.code,
                    retry_in_ms = delay.as_millis() as u64, "could not prefetch credentials");
                self.retries.insert(key, (attempts, Instant::now() + delay));
            }
        }
    }
}

/// Exponential backoff with full jitter in its upper half, so many pods
/// failing together do not retry together.
fn retry_delay(attempts: u32) -> Duration {
    let exponential = FIRST_RETRY.saturating_mul(1 << attempts.min(16).saturating_sub(1));
    let capped = exponential.min(MAX_RETRY);
    let jitter = rand::rng().random_range(0.5..=1.0);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert!(retry_delay(1) <= FIRST_RETRY);
        assert!(retry_delay(1) >= FIRST_RETRY / 2);
        assert!(retry_delay(4) >= FIRST_RETRY * 4);
        assert!(retry_delay(40) <= MAX_RETRY);
        assert!(retry_delay(40) >= MAX_RETRY / 2);
    }
}
