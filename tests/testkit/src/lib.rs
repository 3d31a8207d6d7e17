//! Test servers for iamlet: a small Kubernetes API server, and a fake
//! upstream instance metadata service ([`imds`]).
//!
//! It speaks the real REST and watch protocol for pods, namespaces,
//! service accounts and nodes, well enough for kube-rs watchers
//! (metadata-only ones included) and for `kubectl
//! get/annotate/create/delete/patch/taint`: discovery, list with
//! pagination and field selectors, chunked watch streams with bookmarks
//! and in-stream 410 errors, create, update, delete, and the `Accept` forms
//! a client may ask for (whole objects, kubectl's Tables, kube-rs's
//! PartialObjectMetadata). Every namespace gets a `default` service account
//! when it is created, as on a real cluster.
//!
//! Patches are applied as a real server applies them: merge patches,
//! strategic merge patches (read as merge patches), and JSON patches (RFC
//! 6902, all six operations, atomic), with a real server's answers: 422
//! `Invalid` for a JSON patch that does not apply (a failed `test`
//! included), 400 for one that is not a list of operations or that renames
//! the object, 409 `Conflict` for a stale resourceVersion in the result.
//!
//! Nodes are cluster-scoped and carry taints, checked as a real server
//! checks them, so an agent's removal of its startup taint can be tested:
//! every node PATCH is recorded ([`NodePatch`]), and a test can slip
//! another writer's change in just before the next patch
//! ([`ApiServer::on_next_node_patch`]) or make patches fail
//! ([`ApiServer::fail_node_patches`]).
//!
//! It keeps Events as a real server does: written through
//! `events.k8s.io/v1` (kube-rs's `Recorder`: a create, then a merge patch
//! of `series` for each repeat) with a real server's validation, and read
//! through that API or through core v1, converted, which is what `kubectl
//! describe` and `kubectl get events` read (see the `events` module).
//!
//! It issues and checks service account tokens as a real API server does:
//! TokenRequest (`kubectl create token`, pod-bound tokens with pod and node
//! claims) and TokenReview (`authentication.k8s.io/v1`), with a real
//! server's checks and error words (see [`TokenSpec`] and the `tokens`
//! module for the two deliberate differences: no expiry leeway, no cache).
//!
//! Tests drive it through [`ApiServer`]'s methods too: adding pods, nodes
//! and service accounts, minting tokens of any lifetime, making TokenReview
//! fail, reading the requests it saw, compacting history, stopping and
//! restarting it.

mod events;
mod http_api;
pub mod imds;
mod json_patch;
mod media;
mod nodes;
mod protobuf;
mod store;
mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use nodes::NodePatch;
pub use store::{ApiError, Kind, ObjectKey, PatchType};
use store::{FieldSelector, Resource, State};
pub use tokens::{DEFAULT_AUDIENCE, TokenSpec};

pub(crate) struct Shared {
    state: Mutex<State>,
    bookmark_interval: Duration,
    /// Bumped to cut every open connection (a simulated API server crash).
    generation: watch::Sender<u64>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Signs and checks this server's service account tokens.
    signer: tokens::Signer,
    /// TokenReview requests received, failed ones included.
    token_reviews: AtomicUsize,
    /// Set: TokenReview answers this HTTP status instead of reviewing.
    token_review_failure: Mutex<Option<u16>>,
    /// Node PATCHes received, and the races and failures tests arranged.
    /// Taken before `state` when both are held.
    node_control: Mutex<nodes::Control>,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as sent (`/api/v1/serviceaccounts?watch=true&...`).
    pub path: String,
    /// Decides the form of the answer: whole objects, a Table, or
    /// PartialObjectMetadata.
    pub accept: Option<String>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn node_control(&self) -> MutexGuard<'_, nodes::Control> {
        self.node_control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running test API server.
pub struct ApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl ApiServer {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(
            "127.0.0.1:0".parse().expect("literal address"),
            Duration::from_secs(1),
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, bookmark_interval: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(broadcast::channel(65_536).0)),
            bookmark_interval,
            generation: watch::channel(0).0,
            requests: Mutex::new(Vec::new()),
            signer: tokens::Signer::random(),
            token_reviews: AtomicUsize::new(0),
            token_review_failure: Mutex::new(None),
            node_control: Mutex::new(nodes::Control::default()),
        });
        let server = ApiServer {
            shared: shared.clone(),
            addr,
            accept: Mutex::new(None),
        };
        server.create_namespace("default", json!({}));
        server.create_namespace("kube-system", json!({}));
        *server.accept_slot() = Some(tokio::spawn(http_api::accept_loop(listener, shared)));
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops answering: closes the listener and every open connection and
    /// watch, as a crashed API server would. State is kept.
    pub fn stop(&self) {
        if let Some(task) = self.accept_slot().take() {
            task.abort();
        }
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Listens again on the same address after [`ApiServer::stop`].
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr).await?;
        *self.accept_slot() = Some(tokio::spawn(http_api::accept_loop(
            listener,
            self.shared.clone(),
        )));
        Ok(())
    }

    /// Drops the event history and cuts open watches, so every watcher's
    /// resume gets an in-stream 410 Gone and must relist.
    pub fn compact(&self) {
        self.shared.state().compact();
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Every request line seen so far (`GET /api/v1/pods?...`).
    pub fn requests(&self) -> Vec<String> {
        self.request_log()
            .into_iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Every request seen so far, with its `Accept` header.
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Creates (with its `default` service account) or re-annotates a
    /// namespace.
    pub fn create_namespace(&self, name: &str, annotations: Value) -> Value {
        let object = json!({"metadata": {"name": name, "annotations": annotations}});
        self.upsert(Kind::Namespace, "", name, object)
    }

    /// Creates or replaces a service account (its uid is kept on replace,
    /// so tokens issued for it stay valid).
    pub fn create_service_account(&self, namespace: &str, name: &str, annotations: Value) -> Value {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        });
        self.upsert(Kind::ServiceAccount, namespace, name, object)
    }

    /// A token as TokenRequest would issue it, with the same checks (the
    /// service account exists; a bound pod exists and runs as it), but any
    /// lifetime: a real server refuses less than ten minutes.
    pub fn mint_token(&self, spec: TokenSpec) -> Result<String, ApiError> {
        let state = self.shared.state();
        let issued = self.shared.signer.issue(&state, &(&spec).into())?;
        Ok(issued.token)
    }

    /// How many TokenReview requests the server has received (answered,
    /// refused as malformed, or failed on purpose).
    pub fn token_reviews(&self) -> usize {
        self.shared.token_reviews.load(Ordering::SeqCst)
    }

    /// `Some(503)`: TokenReview answers that status (a `Status` object)
    /// instead of reviewing, until set back to `None`. Mind that kube 5's
    /// default client retries 429, 503 and 504 up to 15 times, with a
    /// backoff that grows to minutes; 500 fails at once.
    pub fn set_token_review_failure(&self, status: Option<u16>) {
        *self
            .shared
            .token_review_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// Creates or replaces a pod object as given (status included).
    pub fn put_pod(&self, pod: Value) -> Value {
        let namespace = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.upsert(Kind::Pod, &namespace, &name, pod)
    }

    /// A JSON merge patch, as a client's PATCH would apply it.
    pub fn patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.patch_as(kind, namespace, name, PatchType::Merge, patch)
    }

    /// A patch of any type, with the checks and answers a client's PATCH
    /// gets (a JSON patch that does not apply is an `Invalid` 422 whose
    /// [`ApiError::cause`] says why). Not recorded as a node PATCH.
    pub fn patch_as(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch: Value,
    ) -> Result<Value, ApiError> {
        self.shared
            .state()
            .apply_patch(ObjectKey::new(kind, namespace, name), patch_type, &patch)
    }

    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared
            .state()
            .delete(&ObjectKey::new(kind, namespace, name))
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.shared
            .state()
            .get(&ObjectKey::new(kind, namespace, name))
    }

    /// Creates (or replaces) a Node as a kubelet registers it: labels
    /// `kubernetes.io/hostname` and the platform's, `spec.taints` as given
    /// (a JSON array of `{"key", "value"?, "effect"}`, checked as a real
    /// server checks them), a Ready condition, addresses and capacity.
    /// Returns the stored object. Panics if the taints are invalid.
    pub fn create_node(&self, name: &str, taints: Value) -> Value {
        self.upsert(Kind::Node, "", name, nodes::node_object(name, taints))
    }

    /// The stored Node, if there is one.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.get(Kind::Node, "", name).ok()
    }

    /// Another writer (a controller, an admin's `kubectl taint`) replaces a
    /// node's taints: a new resourceVersion and a MODIFIED watch event.
    /// Panics if there is no such node or the taints are invalid.
    pub fn set_node_taints(&self, name: &str, taints: Value) -> Value {
        nodes::set_taints(&mut self.shared.state(), name, taints)
            .unwrap_or_else(|e| panic!("setting the taints of node {name} failed: {}", e.message))
    }

    /// Every PATCH sent to a node so far, in the order applied, with its
    /// answer (injected and other failures included).
    pub fn node_patches(&self) -> Vec<NodePatch> {
        self.shared.node_control().patches()
    }

    /// A writer racing the next PATCH of node `name`: just before that
    /// patch is applied, the node's taints become `taints` (as through
    /// [`ApiServer::set_node_taints`]), as if another controller wrote
    /// between the client's read and its patch. A JSON patch whose `test`
    /// guards the list it read then fails with 422; a merge patch
    /// overwrites the other writer's change. One-shot; a patch refused by
    /// [`ApiServer::fail_node_patches`] does not use it up.
    pub fn on_next_node_patch(&self, name: &str, taints: Value) {
        self.shared.node_control().race_next_patch(name, taints);
    }

    /// The next `count` node PATCHes answer `status` (a `Status` with a
    /// real server's reason and words: 403 `Forbidden`, 409 `Conflict`,
    /// 500 `InternalError`, ...) without being applied. `count` 0 cancels.
    pub fn fail_node_patches(&self, status: u16, count: usize) {
        self.shared.node_control().fail_patches(status, count);
    }

    /// The Events of a namespace as stored (`events.k8s.io/v1`, with their
    /// `series`), in name order.
    pub fn events(&self, namespace: &str) -> Vec<Value> {
        let all = FieldSelector::default();
        let resource = Resource::Stored(Kind::Event);
        self.shared.state().list(resource, Some(namespace), &all).0
    }

    fn upsert(&self, kind: Kind, namespace: &str, name: &str, object: Value) -> Value {
        let mut state = self.shared.state();
        let key = ObjectKey::new(kind, namespace, name);
        let result = if state.objects.contains_key(&key) {
            state.update(key, strip_version(object))
        } else {
            state.create(key, object)
        };
        result.unwrap_or_else(|e| panic!("upsert of {name} failed: {}", e.message))
    }

    fn accept_slot(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        self.accept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn strip_version(mut object: Value) -> Value {
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    object
}

/// A running pod object: scheduled to `node`, phase Running, with `ip`.
/// It names no service account, so it runs as its namespace's `default`
/// (the one its tokens are for).
pub fn pod(namespace: &str, name: &str, node: &str, ip: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// [`pod`] running as `service_account` (`spec.serviceAccountName`).
pub fn pod_with_service_account(
    namespace: &str,
    name: &str,
    node: &str,
    ip: &str,
    service_account: &str,
    annotations: Value,
) -> Value {
    let mut pod = pod(namespace, name, node, ip, annotations);
    pod["spec"]["serviceAccountName"] = json!(service_account);
    pod
}
