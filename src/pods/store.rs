//! The shared, watch-fed view of pods and namespaces that request handlers
//! read. Writers are the watch tasks; every change bumps a generation that
//! waiting requests and the credential warmer are woken by.

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use thiserror::Error;
use tokio::sync::watch;

use super::health::{IndexHealth, WatchHealth, WatchKind};
use super::index::{IpLookup, NamespaceIndex, PodIndex, ServiceAccountIndex, ServiceAccountInfo};
use super::info::{AnnotationKeys, PodInfo, PodKey};
use crate::roles::{NamespacePolicy, PolicyFormat};

/// A pod together with its namespace's policy and its ServiceAccount, as
/// one consistent read.
#[derive(Clone, Debug)]
pub struct PodView {
    pub pod: Arc<PodInfo>,
    /// `None` when the namespace has not been seen (or restrictions are off).
    pub policy: Option<Arc<NamespacePolicy>>,
    /// `None` when the ServiceAccount has not been seen (or ServiceAccount
    /// roles are off).
    pub service_account: Option<Arc<ServiceAccountInfo>>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("the pod index has not finished its initial list")]
    NotReady,
    #[error("no pod on this node has IP {0}")]
    Unknown(IpAddr),
    #[error("no hostNetwork pod on this node has UID {0}")]
    UnknownHostNetworkPod(String),
    #[error("no pod {0} on this node")]
    UnknownPod(PodKey),
    #[error(
        "pod {pod} on this node is not the pod the token was issued to (UID {token_uid}); it was deleted and its name reused"
    )]
    PodReplaced { pod: PodKey, token_uid: String },
    #[error("IP {ip} is claimed by several pods: {}", pods.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Conflict { ip: IpAddr, pods: Vec<PodKey> },
    #[error("the {} watch has been broken for {:.1}s, longer than --max-index-staleness; waiting for a relist", .kind.label(), .broken_for.as_secs_f64())]
    Stale {
        kind: WatchKind,
        broken_for: Duration,
    },
}

impl LookupError {
    pub fn reason(&self) -> &'static str {
        match self {
            LookupError::NotReady => "index-not-ready",
            LookupError::Unknown(_) => "unknown-ip",
            LookupError::UnknownHostNetworkPod(_) => "unknown-pod-uid",
            LookupError::UnknownPod(_) => "unknown-pod",
            LookupError::PodReplaced { .. } => "pod-replaced",
            LookupError::Conflict { .. } => "ip-conflict",
            LookupError::Stale { .. } => "index-stale",
        }
    }
}

#[derive(Debug)]
struct State {
    pods: PodIndex,
    namespaces: NamespaceIndex,
    service_accounts: ServiceAccountIndex,
    pods_synced: bool,
    namespaces_synced: bool,
    service_accounts_synced: bool,
    ready: bool,
    pods_watch: WatchHealth,
    namespaces_watch: WatchHealth,
    service_accounts_watch: WatchHealth,
}

impl State {
    fn watch(&mut self, kind: WatchKind) -> &mut WatchHealth {
        match kind {
            WatchKind::Pods => &mut self.pods_watch,
            WatchKind::Namespaces => &mut self.namespaces_watch,
            WatchKind::ServiceAccounts => &mut self.service_accounts_watch,
        }
    }
}

#[derive(Debug)]
pub struct PodStore {
    state: RwLock<State>,
    generation: watch::Sender<u64>,
    keys: AnnotationKeys,
    /// `Some` when namespace restrictions are on: namespaces are watched and
    /// readiness waits for their initial list too.
    policy_format: Option<PolicyFormat>,
    /// `--service-account-roles`: ServiceAccounts are watched and readiness
    /// waits for their initial list too.
    service_accounts: bool,
    /// `--max-index-staleness`; `None`: a broken watch never stops answers.
    max_staleness: Option<Duration>,
}

impl PodStore {
    pub fn new(keys: AnnotationKeys, policy_format: Option<PolicyFormat>) -> Self {
        PodStore {
            state: RwLock::new(State {
                pods: PodIndex::new(),
                namespaces: NamespaceIndex::new(),
                service_accounts: ServiceAccountIndex::new(),
                pods_synced: false,
                namespaces_synced: false,
                service_accounts_synced: false,
                ready: false,
                pods_watch: WatchHealth::default(),
                namespaces_watch: WatchHealth::default(),
                service_accounts_watch: WatchHealth::default(),
            }),
            generation: watch::channel(0).0,
            keys,
            policy_format,
            service_accounts: false,
            max_staleness: None,
        }
    }

    /// Refuse index answers once a watch has been broken longer than `max`
    /// (until a relist completes); `None` or zero: never.
    pub fn with_max_staleness(mut self, max: Option<Duration>) -> Self {
        self.max_staleness = max.filter(|max| !max.is_zero());
        self
    }

    /// Watch ServiceAccounts for their role annotation
    /// (`--service-account-roles`).
    pub fn with_service_accounts(mut self, enabled: bool) -> Self {
        self.service_accounts = enabled;
        self
    }

    pub fn watches_namespaces(&self) -> bool {
        self.policy_format.is_some()
    }

    pub fn watches_service_accounts(&self) -> bool {
        self.service_accounts
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
        self.check_answerable(&state)?;
        match state.pods.lookup(ip) {
            IpLookup::Found(pod) => Ok(self.view(&state, pod)),
            IpLookup::Unknown => Err(LookupError::Unknown(ip)),
            IpLookup::Conflict(pods) => Err(LookupError::Conflict { ip, pods }),
        }
    }

    /// The live hostNetwork pod with this UID now, without waiting.
    pub fn lookup_host_network(&self, uid: &str) -> Result<PodView, LookupError> {
        let state = self.read();
        self.check_answerable(&state)?;
        match state.pods.host_network_pod(uid) {
            Some(pod) => Ok(self.view(&state, pod)),
            None => Err(LookupError::UnknownHostNetworkPod(uid.to_string())),
        }
    }

    /// The live pod `key` of this node now, without waiting.
    pub fn lookup_pod(&self, key: &PodKey) -> Result<PodView, LookupError> {
        let state = self.read();
        self.check_answerable(&state)?;
        match state.pods.get(key).filter(|pod| !pod.is_finished()) {
            Some(pod) => Ok(self.view(&state, pod)),
            None => Err(LookupError::UnknownPod(key.clone())),
        }
    }

    /// The UIDs of the live hostNetwork pods of this node.
    pub fn host_network_uids(&self) -> Vec<String> {
        self.read().pods.host_network_uids().cloned().collect()
    }

    /// The live hostNetwork pods of this node.
    pub fn host_network_pods(&self) -> Vec<Arc<PodInfo>> {
        let state = self.read();
        state
            .pods
            .host_network_uids()
            .filter_map(|uid| state.pods.host_network_pod(uid))
            .collect()
    }

    /// The pod behind `ip`, waiting up to `wait` for the index to become
    /// ready, learn the IP, or settle a conflict. Woken by index changes, so
    /// a pod the watch reports while we wait is answered at once.
    pub async fn wait_for(&self, ip: IpAddr, wait: Duration) -> Result<PodView, LookupError> {
        self.wait_until(wait, || self.lookup(ip), |_| true).await
    }

    /// The live pod `key`, waiting up to `wait` as [`Self::wait_for`] does.
    pub async fn wait_for_pod(&self, key: &PodKey, wait: Duration) -> Result<PodView, LookupError> {
        self.wait_until(wait, || self.lookup_pod(key), |_| true)
            .await
    }

    /// `attempt` now, and again after every index change while it fails
    /// with an error `retry` accepts, for at most `wait`; the last answer.
    pub async fn wait_until<T, E>(
        &self,
        wait: Duration,
        mut attempt: impl FnMut() -> Result<T, E>,
        retry: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let error = match attempt() {
                Ok(value) => return Ok(value),
                Err(error) if retry(&error) => error,
                Err(error) => return Err(error),
            };
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(error),
            }
        }
    }

    /// Ready and not stale: lookups may succeed.
    pub fn is_answerable(&self) -> bool {
        self.check_answerable(&self.read()).is_ok()
    }

    /// Why no lookup may be answered now (not listed yet, or stale).
    fn check_answerable(&self, state: &State) -> Result<(), LookupError> {
        if !state.ready {
            return Err(LookupError::NotReady);
        }
        match self.staleness(state, Instant::now()) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Whether any live pod claims `ip` (alone or with others).
    pub fn claims(&self, ip: IpAddr) -> bool {
        !matches!(self.read().pods.lookup(ip), IpLookup::Unknown)
    }

    /// Every IP the index holds a live pod for (conflicting ones included).
    pub fn ips(&self) -> Vec<IpAddr> {
        self.read().pods.ips().collect()
    }

    /// The watches' health and whether the index may be answered from.
    pub fn health(&self) -> IndexHealth {
        let state = self.read();
        let now = Instant::now();
        let mut watches = vec![state.pods_watch.report(WatchKind::Pods, now)];
        if self.watches_namespaces() {
            watches.push(state.namespaces_watch.report(WatchKind::Namespaces, now));
        }
        if self.service_accounts {
            watches.push(
                state
                    .service_accounts_watch
                    .report(WatchKind::ServiceAccounts, now),
            );
        }
        IndexHealth {
            ready: state.ready,
            stale: self.staleness(&state, now).is_some(),
            max_staleness_seconds: self.max_staleness.map(|max| max.as_secs_f64()),
            watches,
        }
    }

    /// An event or bookmark arrived on `kind`'s watch: events flow.
    pub fn watch_heard(&self, kind: WatchKind) {
        let healed = self.write().watch(kind).heard(Instant::now());
        self.bump_if(healed);
    }

    /// `kind`'s reopened stream stayed up without failing: events flow.
    pub fn watch_healed(&self, kind: WatchKind) {
        let healed = self.write().watch(kind).healed();
        self.bump_if(healed);
    }

    /// `kind`'s events stopped flowing at `since`.
    pub fn watch_broken(&self, kind: WatchKind, since: Instant) {
        self.write().watch(kind).broken(since);
    }

    /// `kind`'s stream went silent: broken since it was last heard.
    pub fn watch_went_silent(&self, kind: WatchKind) {
        self.write().watch(kind).went_silent(Instant::now());
    }

    /// A new stream of `kind` is open. False when the break outlasted
    /// `--max-index-staleness`: the caller must relist.
    pub fn watch_opened(&self, kind: WatchKind) -> bool {
        let max = self.max_staleness;
        self.write().watch(kind).opened(Instant::now(), max)
    }

    /// Every indexed pod with its namespace policy.
    pub fn views(&self) -> Vec<PodView> {
        let state = self.read();
        state
            .pods
            .pods()
            .map(|pod| self.view(&state, pod.clone()))
            .collect()
    }

    /// One namespace's allow-list, `None` when the namespace is not known
    /// (or namespaces are not watched).
    pub fn namespace_policy(&self, namespace: &str) -> Option<Arc<NamespacePolicy>> {
        self.read().namespaces.get(namespace)
    }

    /// The annotation keys pods, namespaces and ServiceAccounts are read with.
    pub fn annotation_keys(&self) -> &AnnotationKeys {
        &self.keys
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
            state.pods_watch.relisted(Instant::now());
            state.pods.finish_relist()
        })
    }

    /// Records a namespace's allow-list (from its metadata alone).
    pub fn apply_namespace(&self, namespace: &ObjectMeta) {
        let (Some(format), Some(name)) = (self.policy_format, namespace.name.clone()) else {
            return;
        };
        let annotation = namespace
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.keys.namespace_policy))
            .cloned();
        let changed = self.write().namespaces.apply(name, annotation, format);
        self.bump_if(changed);
    }

    pub fn delete_namespace(&self, namespace: &ObjectMeta) {
        let Some(name) = namespace.name.as_deref() else {
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
            state.namespaces_watch.relisted(Instant::now());
            state.namespaces.finish_relist()
        })
    }

    /// Records a ServiceAccount's role annotation (from its metadata alone).
    pub fn apply_service_account(&self, meta: &ObjectMeta) {
        let Some(key) = account_key(meta).filter(|_| self.service_accounts) else {
            return;
        };
        let role = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(&self.keys.service_account_role))
            .cloned();
        let changed = self.write().service_accounts.apply(key, role);
        self.bump_if(changed);
    }

    pub fn delete_service_account(&self, meta: &ObjectMeta) {
        let Some(key) = account_key(meta) else {
            return;
        };
        let changed = self.write().service_accounts.delete(&key);
        self.bump_if(changed);
    }

    pub fn begin_service_account_relist(&self) {
        self.write().service_accounts.begin_relist();
    }

    pub fn finish_service_account_relist(&self) -> usize {
        self.finish_relist(|state| {
            state.service_accounts_synced = true;
            state.service_accounts_watch.relisted(Instant::now());
            state.service_accounts.finish_relist()
        })
    }

    pub fn service_account_count(&self) -> usize {
        self.read().service_accounts.len()
    }

    /// Completes one kind's relist, then updates readiness: ready once pods
    /// (and, with restrictions, namespaces; with ServiceAccount roles,
    /// ServiceAccounts) have been listed; it stays so.
    fn finish_relist(&self, finish: impl FnOnce(&mut State) -> usize) -> usize {
        let removed = {
            let mut state = self.write();
            let removed = finish(&mut state);
            let needs_namespaces = self.policy_format.is_some();
            state.ready |= state.pods_synced
                && (state.namespaces_synced || !needs_namespaces)
                && (state.service_accounts_synced || !self.service_accounts);
            removed
        };
        self.bump_if(true);
        removed
    }

    /// The refusal a stale index gives, if it is stale at `now`.
    fn staleness(&self, state: &State, now: Instant) -> Option<LookupError> {
        let stale = |kind: WatchKind, health: &WatchHealth| {
            health
                .stale_for(now, self.max_staleness)
                .map(|broken_for| LookupError::Stale { kind, broken_for })
        };
        stale(WatchKind::Pods, &state.pods_watch)
            .or_else(|| {
                self.watches_namespaces()
                    .then(|| stale(WatchKind::Namespaces, &state.namespaces_watch))
                    .flatten()
            })
            .or_else(|| {
                self.service_accounts
                    .then(|| stale(WatchKind::ServiceAccounts, &state.service_accounts_watch))
                    .flatten()
            })
    }

    fn view(&self, state: &State, pod: Arc<PodInfo>) -> PodView {
        let policy = state.namespaces.get(&pod.namespace);
        let service_account = self
            .service_accounts
            .then(|| {
                state.service_accounts.get(&PodKey {
                    namespace: pod.namespace.clone(),
                    name: pod.service_account.clone(),
                })
            })
            .flatten();
        PodView {
            pod,
            policy,
            service_account,
        }
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

/// `namespace/name` of a ServiceAccount, from its metadata.
fn account_key(meta: &ObjectMeta) -> Option<PodKey> {
    Some(PodKey {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
    })
}
