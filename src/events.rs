//! Warning Events on a pod that was refused credentials, so that
//! `kubectl describe pod` tells its team what is wrong and what to change,
//! without the agent's log.
//!
//! A request never waits on the API server for this: refusals go into a
//! bounded queue (dropped when it is full) that one task publishes from,
//! through kube-runtime's `Recorder` (`events.k8s.io/v1`, repeats folded
//! into a series). Each pod and reason is published at most once per
//! `--event-interval`, so a pod retrying in a loop costs the API server one
//! patch a minute, not one per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::entitlement::Refusal;
use crate::pods::{PodKey, PodStore};

/// Refusals waiting to be published; more are dropped.
const QUEUE: usize = 1024;
/// A failure to publish is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One warning for a pod: a short reason and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodWarning {
    pub reason: &'static str,
    pub note: String,
}

/// Where refusals are sent to become Events.
#[derive(Clone, Debug)]
pub struct PodEvents {
    queue: mpsc::Sender<(PodKey, PodWarning)>,
}

impl PodEvents {
    /// Queues a warning for the refusal's pod, if it is one a pod's team
    /// can act on. Never waits.
    pub fn refused(&self, refusal: &Refusal) {
        let (Some(pod), Some(warning)) = (refusal.pod(), refusal.pod_warning()) else {
            return;
        };
        if self.queue.try_send((pod.clone(), warning)).is_err() {
            debug!(pod = %pod, "event queue full; warning dropped");
        }
    }
}

/// Starts the publishing task. `instance` names this agent (its node) in
/// each Event's `reportingInstance`.
pub fn spawn_events(
    client: Client,
    store: Arc<PodStore>,
    instance: Option<String>,
    interval: Duration,
) -> (PodEvents, tokio::task::JoinHandle<()>) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "iamlet".into(),
            instance,
        },
    );
    let publisher = Publisher {
        recorder,
        store,
        interval,
        last: HashMap::new(),
        warned: None,
    };
    (PodEvents { queue }, tokio::spawn(publisher.run(receiver)))
}

struct Publisher {
    recorder: Recorder,
    store: Arc<PodStore>,
    interval: Duration,
    /// When each pod and reason was last published.
    last: HashMap<(PodKey, &'static str), Instant>,
    warned: Option<Instant>,
}

impl Publisher {
    async fn run(mut self, mut receiver: mpsc::Receiver<(PodKey, PodWarning)>) {
        while let Some((pod, warning)) = receiver.recv().await {
            let now = Instant::now();
            let interval = self.interval;
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < interval);
            let key = (pod.clone(), warning.reason);
            if self.last.contains_key(&key) {
                continue;
            }
            self.last.insert(key, now);
            self.publish(&pod, warning).await;
        }
    }

    async fn publish(&mut self, pod: &PodKey, warning: PodWarning) {
        // The pod's UID makes the Event show in `kubectl describe pod`
        // (which selects by it); a pod already gone gets one without.
        let uid = self
            .store
            .lookup_pod(pod)
            .ok()
            .map(|view| view.pod.uid.clone());
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid,
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: warning.reason.into(),
            note: Some(warning.note),
            action: "GetCredentials".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &regarding).await {
            let now = Instant::now();
            if self
                .warned
                .is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY)
            {
                self.warned = Some(now);
                warn!(%error, pod = %pod, reason = warning.reason,
                    "cannot record an Event on the pod (RBAC: create and patch on events.k8s.io events)");
            }
        }
    }
}
