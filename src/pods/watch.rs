//! kube-rs watchers that keep the [`PodStore`] current.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use thiserror::Error;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::store::PodStore;
use crate::telemetry::Metrics;
use crate::telemetry::metrics::KindLabels;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("the {0} watch stream ended")]
    Ended(&'static str),
}

/// Starts the pod watch (restricted to `node` when given) and, with
/// namespace restrictions on, the namespace watch. The tasks run until the
/// runtime stops; errors are retried with kube-rs' default backoff.
pub fn spawn_watchers(
    client: Client,
    node: Option<&str>,
    store: Arc<PodStore>,
    metrics: Arc<Metrics>,
) -> Vec<JoinHandle<WatchError>> {
    let mut config = watcher::Config::default();
    if let Some(node) = node {
        config = config.fields(&format!("spec.nodeName={node}"));
    }
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config).default_backoff();
    let mut tasks = vec![tokio::spawn(drive(
        "pods",
        pods,
        store.clone(),
        PodSink,
        metrics.clone(),
    ))];
    if store.watches_namespaces() {
        let namespaces =
            watcher::watcher(Api::<Namespace>::all(client), watcher::Config::default())
                .default_backoff();
        tasks.push(tokio::spawn(drive(
            "namespaces",
            namespaces,
            store,
            NamespaceSink,
            metrics,
        )));
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

impl Sink<Namespace> for NamespaceSink {
    fn apply(&self, store: &PodStore, namespace: &Namespace) {
        store.apply_namespace(namespace);
    }
    fn delete(&self, store: &PodStore, namespace: &Namespace) {
        store.delete_namespace(namespace);
    }
    fn begin(&self, store: &PodStore) {
        store.begin_namespace_relist();
    }
    fn finish(&self, store: &PodStore) -> usize {
        store.finish_namespace_relist()
    }
}

async fn drive<K, S>(
    kind: &'static str,
    events: impl Stream<Item = Result<Event<K>, watcher::Error>>,
    store: Arc<PodStore>,
    sink: S,
    metrics: Arc<Metrics>,
) -> WatchError
where
    S: Sink<K>,
{
    let mut events = std::pin::pin!(events);
    let mut listed = 0usize;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => {
                listed = 0;
                sink.begin(&store);
            }
            Ok(Event::InitApply(object)) => {
                listed += 1;
                sink.apply(&store, &object);
            }
            Ok(Event::InitDone) => {
                let removed = sink.finish(&store);
                metrics.relists.get_or_create(&KindLabels { kind }).inc();
                info!(kind, listed, removed, "watch (re)listed");
            }
            Ok(Event::Apply(object)) => sink.apply(&store, &object),
            Ok(Event::Delete(object)) => sink.delete(&store, &object),
            Err(error) => {
                warn!(kind, %error, "watch failed; retrying with backoff");
                metrics
                    .watch_restarts
                    .get_or_create(&KindLabels { kind })
                    .inc();
            }
        }
    }
    WatchError::Ended(kind)
}
