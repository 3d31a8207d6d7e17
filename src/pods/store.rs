//! The shared, watch-fed view of pods and namespaces that request handlers
//! read. Writers are the watch tasks; every change bumps a generation that
//! waiting requests and the credential warmer are woken by.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use thiserror::Error;
use tokio::sync::watch;

use super::index::{IpLookup, NamespaceIndex, PodIndex};
use super::info::{AnnotationKeys, PodInfo, PodKey};
use crate::roles::{NamespacePolicy, PolicyFormat};

/// A pod together with its namespace's policy, as one consistent read.
#[derive(Clone, Debug)]
pub struct PodView {
    pub pod: Arc<PodInfo>,
    /// `None` when the namespace has not been seen (or restrictions are off).
    pub policy: Option<Arc<NamespacePolicy>>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("the pod index has not finished its initial list")]
    NotReady,
    #[error("no pod on this node has IP {0}")]
    Unknown(IpAddr),
    #[error("IP {ip} is claimed by several pods: {}", pods.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Conflict { ip: IpAddr, pods: Vec<PodKey> },
}

impl LookupError {
    pub fn reason(&self) -> &'static str {
        match self {
            LookupError::NotReady => "index-not-ready",
            LookupError::Unknown(_) => "unknown-ip",
            LookupError::Conflict { .. } => "ip-conflict",
        }
    }
}

#[derive(Debug)]
struct State {
    pods: PodIndex,
    namespaces: NamespaceIndex,
    pods_synced: bool,
    namespaces_synced: bool,
    ready: bool,
}

#[derive(Debug)]
pub struct PodStore {
    state: RwLock<State>,
    generation: watch::Sender<u64>,
    keys: AnnotationKeys,
    /// `Some` when namespace restrictions are on: namespaces are watched and
    /// readiness waits for their initial list too.
    policy_format: Option<PolicyFormat>,
}

impl PodStore {
    pub fn new(keys: AnnotationKeys, policy_format: Option<PolicyFormat>) -> Self {
        PodStore {
            state: RwLock::new(State {
                pods: PodIndex::new(),
                namespaces: NamespaceIndex::new(),
                pods_synced: false,
                namespaces_synced: false,
                ready: false,
            }),
            generation: watch::channel(0).0,
            keys,
            policy_format,
        }
    }

    pub fn watches_namespaces(&self) -> bool {
        self.policy_format.is_some()
    }

    /// True once the initial pod (and namespace) lists have been applied;
    /// stays true through later relists, which keep serving meanwhile.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// A receiver that sees a new value after every change to the index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn pod_count(&self) -> usize {
        self.read().pods.len()
    }

    /// The pod behind `ip` now, without waiting.
    pub fn lookup(&self, ip: IpAddr) -> Result<PodView, LookupError> {
        let state = self.read();
        if !state.ready {
            return Err(LookupError::NotReady);
        }
        match state.pods.lookup(ip) {
            IpLookup::Found(pod) => Ok(Self::view(&state, pod)),
            IpLookup::Unknown => Err(LookupError::Unknown(ip)),
            IpLookup::Conflict(pods) => Err(LookupError::Conflict { ip, pods }),
        }
    }

    /// The pod behind `ip`, waiting up to `wait` for the index to become
    /// ready, learn the IP, or settle a conflict. Woken by index changes, so
    /// a pod the watch reports while we wait is answered at once.
    pub async fn wait_for(&self, ip: IpAddr, wait: Duration) -> Result<PodView, LookupError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let error = match self.lookup(ip) {
                Ok(view) => return Ok(view),
                Err(error) => error,
            };
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(error),
            }
        }
    }

    /// Every indexed pod with its namespace policy.
    pub fn views(&self) -> Vec<PodView> {
        let state = self.read();
        state
            .pods
            .pods()
            .map(|pod| Self::view(&state, pod.clone()))
            .collect()
    }

    /// Namespace policies by name, for /debug/store.
    pub fn namespace_policies(&self) -> Vec<(String, Arc<NamespacePolicy>)> {
        let state = self.read();
        state
            .namespaces
            .iter()
            .map(|(name, policy)| (name.clone(), policy.clone()))
            .collect()
    }

    pub fn apply_pod(&self, pod: &Pod) {
        let Some(info) = PodInfo::from_pod(pod, &self.keys) else {
            return;
        };
        let changed = self.write().pods.apply(info);
        self.bump_if(changed);
    }

    pub fn delete_pod(&self, pod: &Pod) {
        let Some(info) = PodInfo::from_pod(pod, &self.keys) else {
            return;
        };
        let changed = self.write().pods.delete(&info.key());
        self.bump_if(changed);
    }

    pub fn begin_pod_relist(&self) {
        self.write().pods.begin_relist();
    }

    /// Completes a (re)list: pods it did not deliver are gone.
    pub fn finish_pod_relist(&self) -> usize {
        self.finish_relist(|state| {
            state.pods_synced = true;
            state.pods.finish_relist()
        })
    }

    pub fn apply_namespace(&self, namespace: &Namespace) {
        let (Some(format), Some(name)) = (self.policy_format, namespace.metadata.name.clone())
        else {
            return;
        };
        let annotation = namespace
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.keys.namespace_policy))
            .cloned();
        let changed = self.write().namespaces.apply(name, annotation, format);
        self.bump_if(changed);
    }

    pub fn delete_namespace(&self, namespace: &Namespace) {
        let Some(name) = namespace.metadata.name.as_deref() else {
            return;
        };
        let changed = self.write().namespaces.delete(name);
        self.bump_if(changed);
    }

    pub fn begin_namespace_relist(&self) {
        self.write().namespaces.begin_relist();
    }

    pub fn finish_namespace_relist(&self) -> usize {
        self.finish_relist(|state| {
            state.namespaces_synced = true;
            state.namespaces.finish_relist()
        })
    }

    /// Completes one kind's relist, then updates readiness: ready once pods
    /// (and, with restrictions, namespaces) have been listed; it stays so.
    fn finish_relist(&self, finish: impl FnOnce(&mut State) -> usize) -> usize {
        let removed = {
            let mut state = self.write();
            let removed = finish(&mut state);
            let needs_namespaces = self.policy_format.is_some();
            state.ready |= state.pods_synced && (state.namespaces_synced || !needs_namespaces);
            removed
        };
        self.bump_if(true);
        removed
    }

    fn view(state: &State, pod: Arc<PodInfo>) -> PodView {
        let policy = state.namespaces.get(&pod.namespace);
        PodView { pod, policy }
    }

    fn bump_if(&self, changed: bool) {
        if changed {
            self.generation.send_modify(|generation| *generation += 1);
        }
    }

    // A panic while holding the lock cannot leave the index half-updated in a
    // way that grants a wrong role (each update is a remove-then-insert of
    // one pod), so a poisoned lock is still safe to use.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}
