//! The decision log: every new grant and every refusal of a credential
//! request, one line each, without a secret. A repeated identical grant
//! (same pod, same credentials) is counted, not logged again, and refusals
//! a client can produce at will (floods, bad requests) are logged as a
//! sample with a count of the ones left out.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::credentials::Credentials;
use crate::entitlement::{Grant, Refusal, clip};
use crate::telemetry::Metrics;

/// At most one line per reason in this window for noisy refusals.
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct DecisionLog {
    hasher: RandomState,
    samples: Mutex<HashMap<&'static str, Sample>>,
}

#[derive(Debug)]
struct Sample {
    logged_at: Instant,
    suppressed: u64,
}

impl DecisionLog {
    /// A grant of `credentials` to the pod in `grant`: logged the first time
    /// this pod gets these credentials, counted every time.
    pub fn granted(
        &self,
        caller: IpAddr,
        grant: &Grant,
        credentials: &Credentials,
        metrics: &Metrics,
    ) {
        let pod = self.hasher.hash_one(grant.pod.uid.as_str());
        if !credentials.grant_memo.first_for(pod) {
            Metrics::count(&metrics.grants, "repeat");
            return;
        }
        Metrics::count(&metrics.grants, "logged");
        info!(%caller, pod = %grant.pod.key(), role = %grant.target.role, session = %grant.key.session_name,
            access_key_id = %credentials.access_key_id, role_source = grant.target.source.label(),
            outcome = "granted", "credential decision");
    }

    /// A refused request. Credential refusals are always logged; noise is
    /// sampled. The path a pod chose is clipped like the rest of its text.
    pub fn refused(&self, caller: IpAddr, path: &str, refusal: &Refusal) {
        let path = clip(path);
        let reason = refusal.label();
        if refusal.is_noise() {
            if let Some(suppressed) = self.sample(reason) {
                info!(%caller, path = %path.escape_debug(), reason, suppressed,
                    window_s = SAMPLE_WINDOW.as_secs(), detail = %refusal, "request refused (sampled)");
            }
            return;
        }
        let pod = refusal
            .pod()
            .map_or_else(|| "-".to_string(), ToString::to_string);
        match refusal {
            Refusal::Sts(_) => {
                warn!(%caller, %pod, reason, detail = %refusal, outcome = "error", "credential decision")
            }
            _ => {
                info!(%caller, %pod, path = %path.escape_debug(), outcome = "denied", reason, detail = %refusal, "credential decision")
            }
        }
    }

    /// A connection closed at accept (over a limit); sampled.
    pub fn connection_refused(&self, caller: IpAddr, reason: &'static str) {
        if let Some(suppressed) = self.sample(reason) {
            warn!(%caller, reason, suppressed, window_s = SAMPLE_WINDOW.as_secs(), "connection refused (sampled)");
        }
    }

    /// Logs how many refusals of each reason were left out since their last
    /// line, so that a burst that stops is still told. Called every
    /// [`SAMPLE_WINDOW`] by the agent.
    pub fn flush_suppressed(&self) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        for (reason, sample) in samples.iter_mut() {
            let suppressed = std::mem::take(&mut sample.suppressed);
            if suppressed > 0 {
                warn!(
                    reason,
                    suppressed,
                    window_s = SAMPLE_WINDOW.as_secs(),
                    "refusals left out of the log (counted in metrics)"
                );
            }
        }
    }

    /// `Some(count left out since the last line)` when a line may be
    /// written for `reason` now.
    fn sample(&self, reason: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        match samples.get_mut(reason) {
            Some(sample) if now.duration_since(sample.logged_at) < SAMPLE_WINDOW => {
                sample.suppressed += 1;
                None
            }
            Some(sample) => {
                let suppressed = std::mem::take(&mut sample.suppressed);
                sample.logged_at = now;
                Some(suppressed)
            }
            None => {
                samples.insert(
                    reason,
                    Sample {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn noise_is_sampled_per_reason() {
        let log = DecisionLog::default();
        assert_eq!(log.sample("rate-limited"), Some(0));
        assert_eq!(log.sample("rate-limited"), None);
        assert_eq!(log.sample("rate-limited"), None);
        assert_eq!(log.sample("malformed-path"), Some(0));
        tokio::time::advance(SAMPLE_WINDOW).await;
        assert_eq!(log.sample("rate-limited"), Some(2));
        assert_eq!(log.sample("rate-limited"), None);
        log.flush_suppressed();
        tokio::time::advance(SAMPLE_WINDOW).await;
        assert_eq!(
            log.sample("rate-limited"),
            Some(0),
            "the flush told the count"
        );
    }
}
