//! The credential cache: one entry per [`CredentialKey`], evicted when the
//! credentials get too close to expiry to be served, with concurrent misses
//! for one key coalesced into a single STS call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::gate::{StsGate, StsLimits, Urgency};
use super::sts::{AssumeRole, StsError, StsErrorKind};
use super::{CredentialKey, Credentials};
use crate::clock::Clock;
use crate::telemetry::Metrics;

/// How long the last STS error for a key is shown by `iamlet explain`.
const LAST_ERROR_MEMORY: Duration = Duration::from_secs(3600);

/// What the cache holds for a key, for `iamlet explain`: times, never
/// the credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheState {
    /// (expiration, when fetched) of servable cached credentials.
    pub cached: Option<(std::time::SystemTime, std::time::SystemTime)>,
    /// The last STS error (within the hour) and when it came.
    pub last_error: Option<(StsError, std::time::SystemTime)>,
}

/// The shortest time an STS error is answered from memory.
const MIN_ERROR_MEMORY: Duration = Duration::from_secs(1);

/// Lifetimes, validated by [`crate::config`]: `min_remaining < refresh_before < session_duration`.
#[derive(Clone, Copy, Debug)]
pub struct CacheSettings {
    /// DurationSeconds asked of STS.
    pub session_duration: Duration,
    /// The warmer refreshes credentials with less than this left.
    pub refresh_before: Duration,
    /// Credentials with less than this left are never served.
    pub min_remaining: Duration,
    /// How long an STS error is answered from memory; zero: not at all.
    pub error_ttl: Duration,
    /// The node's budget of STS calls.
    pub sts_limits: StsLimits,
}

#[derive(Debug)]
pub struct CredentialCache {
    sts: Arc<dyn AssumeRole>,
    entries: Cache<CredentialKey, Arc<Credentials>>,
    errors: Cache<CredentialKey, StsError>,
    /// The last STS error per key and when it came, kept longer than
    /// `errors` (which answers pods) for `iamlet explain`.
    last_errors: Cache<CredentialKey, (StsError, std::time::SystemTime)>,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    gate: StsGate,
}

impl std::fmt::Debug for dyn AssumeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AssumeRole")
    }
}

/// Evicts an entry when it reaches the serving floor, measured on the
/// injected clock when the entry is written.
struct ServableUntil {
    clock: Arc<dyn Clock>,
    min_remaining: Duration,
}

impl Expiry<CredentialKey, Arc<Credentials>> for ServableUntil {
    fn expire_after_create(
        &self,
        _key: &CredentialKey,
        value: &Arc<Credentials>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(
            value
                .remaining(self.clock.now())
                .saturating_sub(self.min_remaining),
        )
    }

    fn expire_after_update(
        &self,
        key: &CredentialKey,
        value: &Arc<Credentials>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

impl CredentialCache {
    pub fn new(
        sts: Arc<dyn AssumeRole>,
        settings: CacheSettings,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let entries = Cache::builder()
            .expire_after(ServableUntil {
                clock: clock.clone(),
                min_remaining: settings.min_remaining,
            })
            .build();
        // Even with --iam-role-error-ttl=0 an error is remembered for a
        // second: pods retrying in a loop then make at most one STS call a
        // second per role session between them, instead of one each.
        let errors = Cache::builder()
            .time_to_live(settings.error_ttl.max(MIN_ERROR_MEMORY))
            .build();
        CredentialCache {
            sts,
            entries,
            errors,
            last_errors: Cache::builder()
                .time_to_live(LAST_ERROR_MEMORY)
                .max_capacity(10_000)
                .build(),
            gate: StsGate::new(settings.sts_limits),
            settings,
            clock,
            metrics,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Servable credentials for `key`, for a pod's request: from the
    /// cache, or from one STS call shared by every request that misses at
    /// the same time, ahead of background work in the node's STS budget.
    pub async fn get(&self, key: &CredentialKey) -> Result<Arc<Credentials>, StsError> {
        self.get_for(key, Urgency::Pod).await
    }

    /// [`Self::get`] for the warmer: no request waits on it, so its STS
    /// call waits for pods' calls (unless a pod comes to want the key).
    pub async fn prefetch(&self, key: &CredentialKey) -> Result<Arc<Credentials>, StsError> {
        self.get_for(key, Urgency::Background).await
    }

    async fn get_for(
        &self,
        key: &CredentialKey,
        urgency: Urgency,
    ) -> Result<Arc<Credentials>, StsError> {
        if let Some(credentials) = self.peek(key).await {
            Metrics::count(&self.metrics.cache_lookups, "hit");
            return Ok(credentials);
        }
        Metrics::count(&self.metrics.cache_lookups, "miss");
        if let Some(error) = self.remembered_error(key).await {
            return Err(error);
        }
        // An entry moka still holds but that is no longer servable (the
        // clock moved past the floor before moka evicted it) must not be
        // returned by the loader below.
        if let Some(unservable) = self.entries.get(key).await
            && !self.servable(&unservable)
        {
            self.entries.invalidate(key).await;
        }
        // A pod that joins a prefetch already queued for its key makes it
        // a pod's call.
        let _wanted = (urgency == Urgency::Pod).then(|| self.gate.want(key));
        let result = self
            .entries
            .try_get_with_by_ref(key, async { self.fetch(key, urgency).await.map(Arc::new) })
            .await
            .map_err(|shared: Arc<StsError>| (*shared).clone());
        match result {
            Ok(credentials) if self.servable(&credentials) => Ok(credentials),
            Ok(_) => Err(StsError::new(
                StsErrorKind::InvalidRequest,
                "ShortLived",
                "STS returned credentials that expire too soon to be served",
            )),
            Err(error) => {
                self.remember_error(key, &error).await;
                Err(error)
            }
        }
    }

    /// Cached credentials that may be served now, without calling STS.
    pub async fn peek(&self, key: &CredentialKey) -> Option<Arc<Credentials>> {
        self.entries
            .get(key)
            .await
            .filter(|credentials| self.servable(credentials))
    }

    /// Fetches fresh credentials and replaces the cached ones. Requests keep
    /// getting the old entry until the new one is in.
    pub async fn refresh(&self, key: &CredentialKey) -> Result<Arc<Credentials>, StsError> {
        match self.fetch(key, Urgency::Background).await {
            Ok(credentials) => {
                let credentials = Arc::new(credentials);
                self.entries.insert(key.clone(), credentials.clone()).await;
                Ok(credentials)
            }
            Err(error) => {
                self.remember_error(key, &error).await;
                Err(error)
            }
        }
    }

    /// When the warmer should next refresh `key`: at a point of its own in
    /// the first half of the refresh window (so that credentials fetched
    /// together, at a node's start, are not refreshed together), `None`
    /// when they are missing.
    pub async fn refresh_due_in(&self, key: &CredentialKey) -> Option<Duration> {
        let credentials = self.peek(key).await?;
        let window = self
            .settings
            .refresh_before
            .saturating_sub(self.settings.min_remaining);
        let spread = window.mul_f64(spread_point(key) / 2.0);
        Some(
            credentials
                .remaining(self.clock.now())
                .saturating_sub(self.settings.refresh_before.saturating_sub(spread)),
        )
    }

    /// STS calls waiting in the node's budget: (for pods, background).
    pub fn sts_waiting(&self) -> (usize, usize) {
        self.gate.waiting()
    }

    /// Drops every entry whose key `keep` rejects: credentials no pod is
    /// entitled to any more.
    pub async fn retain(&self, keep: impl Fn(&CredentialKey) -> bool) {
        let stale: Vec<CredentialKey> = self
            .entries
            .iter()
            .filter(|(key, _)| !keep(key))
            .map(|(key, _)| (*key).clone())
            .collect();
        for key in stale {
            self.entries.invalidate(&key).await;
        }
    }

    /// How many credential sets are cached (after moka's pending
    /// housekeeping, so the figure is exact).
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// Never expired, never within the floor. (`remaining` is zero once
    /// expired, so the second test matters only for a zero floor.)
    fn servable(&self, credentials: &Credentials) -> bool {
        let remaining = credentials.remaining(self.clock.now());
        remaining >= self.settings.min_remaining && remaining > Duration::ZERO
    }

    async fn fetch(&self, key: &CredentialKey, urgency: Urgency) -> Result<Credentials, StsError> {
        let _permit = self.gate.enter(key, urgency).await;
        let started = Instant::now();
        let result = self
            .sts
            .assume_role(key, self.settings.session_duration)
            .await;
        let elapsed = started.elapsed();
        let code = result
            .as_ref()
            .map_or_else(|e| e.code.as_str(), |_| "success");
        self.metrics.sts_call(code, elapsed);
        let elapsed_ms = elapsed.as_millis() as u64;
        match &result {
            Ok(_) => {
                tracing::debug!(role = %key.role, session = %key.session_name, elapsed_ms, "AssumeRole succeeded")
            }
            Err(error) => {
                tracing::warn!(role = %key.role, session = %key.session_name, elapsed_ms, code = %error.code, message = %error.message, "AssumeRole failed")
            }
        }
        result
    }

    async fn remembered_error(&self, key: &CredentialKey) -> Option<StsError> {
        self.errors.get(key).await
    }

    async fn remember_error(&self, key: &CredentialKey, error: &StsError) {
        self.errors.insert(key.clone(), error.clone()).await;
        self.last_errors
            .insert(key.clone(), (error.clone(), self.clock.now()))
            .await;
    }

    /// What is cached for `key`, and the last error in fetching it.
    pub async fn state(&self, key: &CredentialKey) -> CacheState {
        CacheState {
            cached: self
                .peek(key)
                .await
                .map(|credentials| (credentials.expiration, credentials.issued)),
            last_error: self.last_errors.get(key).await,
        }
    }
}

/// Where in `[0, 1)` a key's refresh falls: fixed per key for the life of
/// the process, spread evenly over keys.
fn spread_point(key: &CredentialKey) -> f64 {
    use std::hash::BuildHasher;
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let hash = SEED.get_or_init(Default::default).hash_one(key);
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;
