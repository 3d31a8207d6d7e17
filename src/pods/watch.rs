//! The list-and-watch loops that keep the [`PodStore`] current.
//!
//! Written on kube's `list` and `watch` calls rather than kube-runtime's
//! `watcher` because the index's health needs what `watcher` hides: every
//! bookmark (the API server's "still here" on a quiet watch), the moment a
//! stream is open again after a break, and the choice to relist after a
//! break longer than `--max-index-staleness` instead of resuming.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{ListParams, ObjectList, PartialObjectMeta, VersionMatch, WatchEvent, WatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use rand::Rng;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::health::{HEAL_AFTER, WatchKind};
use super::store::PodStore;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::KindLabels;

/// Server-side limit of one watch call (kube's default).
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// A stream with no event or bookmark for this long is presumed dead (a
/// silent partition) and reopened. API servers send a bookmark about once a
/// minute on a quiet watch.
const IDLE_LIMIT: Duration = Duration::from_secs(150);
const PAGE_SIZE: u32 = 500;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Before a relist after a 410 (the API server's history compacted, or a
/// restart): every agent of a fleet meets it at once.
const RELIST_SPREAD: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("the {0} watch task stopped")]
    Ended(&'static str),
}

/// Starts the pod watch (restricted to `node` when given), with namespace
/// restrictions on the namespace watch, and with ServiceAccount roles on a
/// metadata-only ServiceAccount watch (annotations are all it needs). The tasks run until the
/// runtime stops; failures are retried with backoff.
pub fn spawn_watchers(
    client: Client,
    node: Option<&str>,
    store: Arc<PodStore>,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<WatchError>> {
    let selector = node.map(|node| format!("spec.nodeName={node}"));
    let pods = Loop {
        client: client.clone(),
        api: Api::<Pod>::all(client.clone()),
        selector,
        kind: WatchKind::Pods,
        store: store.clone(),
        metrics: metrics.clone(),
    };
    let mut tasks = vec![tokio::spawn(pods.run(PodSink))];
    if store.watches_namespaces() {
        let namespaces = Loop {
            client: client.clone(),
            api: Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            selector: None,
            kind: WatchKind::Namespaces,
            store: store.clone(),
            metrics: metrics.clone(),
        };
        tasks.push(tokio::spawn(namespaces.run(NamespaceSink)));
    }
    if store.watches_service_accounts() {
        let accounts = Loop {
            client: client.clone(),
            api: Api::<PartialObjectMeta<ServiceAccount>>::all(client),
            selector: None,
            kind: WatchKind::ServiceAccounts,
            store,
            metrics,
        };
        tasks.push(tokio::spawn(accounts.run(ServiceAccountSink)));
    }
    tasks
}

/// How one kind of object reaches the store.
trait Sink<K>: Send + 'static {
    fn apply(&self, store: &PodStore, object: &K);
    fn delete(&self, store: &PodStore, object: &K);
    fn begin(&self, store: &PodStore);
    fn finish(&self, store: &PodStore) -> usize;
}

struct PodSink;
struct NamespaceSink;
struct ServiceAccountSink;

impl Sink<PartialObjectMeta<ServiceAccount>> for ServiceAccountSink {
    fn apply(&self, store: &PodStore, account: &PartialObjectMeta<ServiceAccount>) {
        store.apply_service_account(&account.metadata);
    }
    fn delete(&self, store: &PodStore, account: &PartialObjectMeta<ServiceAccount>) {
        store.delete_service_account(&account.metadata);
    }
    fn begin(&self, store: &PodStore) {
        store.begin_service_account_relist();
    }
    fn finish(&self, store: &PodStore) -> usize {
        store.finish_service_account_relist()
    }
}

impl Sink<Pod> for PodSink {
    fn apply(&self, store: &PodStore, pod: &Pod) {
        store.apply_pod(pod);
    }
    fn delete(&self, store: &PodStore, pod: &Pod) {
        store.delete_pod(pod);
    }
    fn begin(&self, store: &PodStore) {
        store.begin_pod_relist();
    }
    fn finish(&self, store: &PodStore) -> usize {
        store.finish_pod_relist()
    }
}

impl Sink<PartialObjectMeta<Namespace>> for NamespaceSink {
    fn apply(&self, store: &PodStore, namespace: &PartialObjectMeta<Namespace>) {
        store.apply_namespace(&namespace.metadata);
    }
    fn delete(&self, store: &PodStore, namespace: &PartialObjectMeta<Namespace>) {
        store.delete_namespace(&namespace.metadata);
    }
    fn begin(&self, store: &PodStore) {
        store.begin_namespace_relist();
    }
    fn finish(&self, store: &PodStore) -> usize {
        store.finish_namespace_relist()
    }
}

/// How one watch stream ended.
enum StreamEnd {
    /// Closed by the server or found idle: resume from `version` at once.
    Closed,
    /// Failed: resume from `version` after a backoff.
    Failed(String),
    /// The version is gone (410) or the break was too long: list again.
    Relist(&'static str),
}

struct Loop<K: Resource> {
    client: Client,
    api: Api<K>,
    selector: Option<String>,
    kind: WatchKind,
    store: Arc<PodStore>,
    metrics: Arc<Metrics>,
}

impl<K> Loop<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    async fn run(self, sink: impl Sink<K>) -> WatchError {
        let mut failures = 0u32;
        let mut version: Option<String> = None;
        // The last version seen: a relist asks for nothing older.
        let mut seen: Option<String> = None;
        loop {
            let from = match version.take() {
                Some(from) => from,
                None => match self.list(&sink, seen.as_deref()).await {
                    Ok(listed) => {
                        failures = 0;
                        listed
                    }
                    Err(error) => {
                        self.failed("list", &error.to_string(), &mut failures).await;
                        continue;
                    }
                },
            };
            let mut current = from;
            let end = self.watch(&sink, &mut current, &mut failures).await;
            seen = Some(current.clone()).filter(|v| !v.is_empty());
            match end {
                StreamEnd::Closed => version = Some(current),
                StreamEnd::Failed(error) => {
                    self.failed("watch", &error, &mut failures).await;
                    version = Some(current);
                }
                StreamEnd::Relist(why) => {
                    let pause = RELIST_SPREAD.mul_f64(rand::rng().random_range(0.0..=1.0));
                    info!(
                        kind = self.kind.label(),
                        why,
                        pause_ms = pause.as_millis() as u64,
                        "relisting"
                    );
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Lists every object (in pages) into the store; returns the list's
    /// resourceVersion to watch from. Served from the API server's watch
    /// cache: a first list at any version (`resourceVersion=0`), a relist
    /// at none older than `seen`; neither reads etcd.
    async fn list(&self, sink: &impl Sink<K>, seen: Option<&str>) -> Result<String, kube::Error> {
        let mut params = ListParams::default().limit(PAGE_SIZE);
        if let Some(selector) = &self.selector {
            params = params.fields(selector);
        }
        if let Some(seen) = seen.filter(|v| *v != "0") {
            params = params.at(seen).matching(VersionMatch::NotOlderThan);
        }
        let mut listed = 0usize;
        let mut begun = false;
        let mut first = true;
        loop {
            let page = if first && seen.is_none() {
                self.list_from_any_version(&params).await?
            } else {
                self.api.list(&params).await?
            };
            first = false;
            if !begun {
                sink.begin(&self.store);
                begun = true;
            }
            for object in &page.items {
                sink.apply(&self.store, object);
            }
            listed += page.items.len();
            match page.metadata.continue_.as_deref().filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(token),
                None => {
                    let removed = sink.finish(&self.store);
                    let kind = self.kind.label();
                    self.metrics
                        .relists
                        .get_or_create(&KindLabels { kind })
                        .inc();
                    info!(kind, listed, removed, "watch (re)listed");
                    return Ok(page.metadata.resource_version.unwrap_or_default());
                }
            }
        }
    }

    /// The first page of a list at any version. kube leaves
    /// `resourceVersion=0` out of a list with a `limit` (API servers before
    /// 1.33 ignore the limit then, and answer the whole list from their
    /// cache, which is still no read of etcd); it is put back here.
    async fn list_from_any_version(
        &self,
        params: &ListParams,
    ) -> Result<ObjectList<K>, kube::Error> {
        let request = kube::core::Request::new(K::url_path(&(), None));
        let mut http = if K::metadata_api() {
            request.list_metadata(params)
        } else {
            request.list(params)
        }
        .map_err(kube::Error::BuildRequest)?;
        let uri = format!(
            "{}&resourceVersion=0&resourceVersionMatch=NotOlderThan",
            http.uri()
        );
        *http.uri_mut() = uri.parse().map_err(|e: http::uri::InvalidUri| {
            kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e.into()))
        })?;
        http.extensions_mut().insert("list");
        self.client.request::<ObjectList<K>>(http).await
    }

    /// Watches from `version`, applying events and advancing `version`,
    /// until the stream ends. A stream that carries events (or stays up)
    /// resets `failures`; one that opens and fails at once backs off.
    async fn watch(
        &self,
        sink: &impl Sink<K>,
        version: &mut String,
        failures: &mut u32,
    ) -> StreamEnd {
        let mut params = WatchParams::default().timeout(WATCH_TIMEOUT_SECONDS);
        if let Some(selector) = &self.selector {
            params = params.fields(selector);
        }
        let stream = match self.api.watch(&params, version).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) if status.code == 410 => {
                self.store.watch_broken(self.kind, Instant::now());
                return StreamEnd::Relist("the resource version is too old (410)");
            }
            Err(error) => {
                self.store.watch_broken(self.kind, Instant::now());
                return StreamEnd::Failed(error.to_string());
            }
        };
        if !self.store.watch_opened(self.kind) {
            return StreamEnd::Relist("the watch was broken longer than --max-index-staleness");
        }
        let mut stream = std::pin::pin!(stream);
        // Until the stream has carried an event or stayed up a moment, a
        // break in progress goes on.
        let mut heal_at = Some(Instant::now() + HEAL_AFTER);
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(IDLE_LIMIT, stream.next()) => next,
                () = sleep_until(heal_at) => {
                    heal_at = None;
                    *failures = 0;
                    self.store.watch_healed(self.kind);
                    continue;
                }
            };
            let Ok(next) = next else {
                self.store.watch_went_silent(self.kind);
                warn!(
                    kind = self.kind.label(),
                    idle_s = IDLE_LIMIT.as_secs(),
                    "no event or bookmark; reopening the watch"
                );
                return StreamEnd::Closed;
            };
            let event = match next {
                None => {
                    self.store.watch_broken(self.kind, Instant::now());
                    return StreamEnd::Closed;
                }
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    self.store.watch_broken(self.kind, Instant::now());
                    return StreamEnd::Failed(error.to_string());
                }
            };
            match event {
                WatchEvent::Added(object) | WatchEvent::Modified(object) => {
                    advance(version, object.resource_version());
                    sink.apply(&self.store, &object);
                }
                WatchEvent::Deleted(object) => {
                    advance(version, object.resource_version());
                    sink.delete(&self.store, &object);
                }
                WatchEvent::Bookmark(bookmark) => {
                    advance(version, Some(bookmark.metadata.resource_version));
                }
                WatchEvent::Error(status) => {
                    self.store.watch_broken(self.kind, Instant::now());
                    if status.code == 410 {
                        return StreamEnd::Relist("the resource version is too old (410)");
                    }
                    return StreamEnd::Failed(format!("{} ({})", status.message, status.code));
                }
            }
            heal_at = None;
            *failures = 0;
            self.store.watch_heard(self.kind);
        }
    }

    /// Counts and logs a failure, then waits out the backoff.
    async fn failed(&self, what: &'static str, error: &str, failures: &mut u32) {
        *failures = failures.saturating_add(1);
        let delay = retry_delay(*failures);
        let kind = self.kind.label();
        let health = self.store.health();
        let broken_for_s = health
            .watches
            .iter()
            .find(|w| w.kind == kind)
            .and_then(|w| w.broken_for_seconds);
        warn!(kind, what, %error, retry_in_ms = delay.as_millis() as u64, broken_for_s,
            index_stale = health.stale, "watch failed; retrying");
        self.metrics
            .watch_restarts
            .get_or_create(&KindLabels { kind })
            .inc();
        tokio::time::sleep(delay).await;
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn advance(version: &mut String, next: Option<String>) {
    if let Some(next) = next.filter(|v| !v.is_empty()) {
        *version = next;
    }
}

/// Exponential backoff with full jitter (anywhere from zero to the bound),
/// so that the agents of a fleet, which all lose the API server at the
/// same moment, come back spread over the whole interval rather than in
/// step.
fn retry_delay(failures: u32) -> Duration {
    let exponential = FIRST_RETRY.saturating_mul(1 << failures.clamp(1, 16).saturating_sub(1));
    exponential
        .min(MAX_RETRY)
        .mul_f64(rand::rng().random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_cap_and_spread_over_it() {
        let first: Vec<Duration> = (0..200).map(|_| retry_delay(1)).collect();
        assert!(first.iter().all(|d| *d <= FIRST_RETRY));
        assert!(first.iter().any(|d| *d < FIRST_RETRY / 4));
        assert!(first.iter().any(|d| *d > FIRST_RETRY * 3 / 4));
        assert!((0..200).all(|_| retry_delay(30) <= MAX_RETRY));
        assert!((0..200).any(|_| retry_delay(30) > MAX_RETRY / 2));
    }
}
