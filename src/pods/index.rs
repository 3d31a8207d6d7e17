//! Plain data structures fed by watch events: pods by key and by IP,
//! namespace policies and ServiceAccounts' roles. No I/O, no locking: [`super::PodStore`] owns them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use super::info::{PodInfo, PodKey};
use crate::roles::{NamespacePolicy, PolicyFormat};

/// What the index knows about an IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IpLookup {
    Found(Arc<PodInfo>),
    Unknown,
    /// Several live pods claim the IP; the answer would be a guess.
    Conflict(Vec<PodKey>),
}

/// Tracks which keys a relist has delivered, so that everything it did not
/// deliver can be dropped when it completes. Between `begin` and `finish`
/// the index keeps serving, with relisted objects applied as they arrive.
#[derive(Debug)]
struct Relist<K> {
    seen: Option<HashSet<K>>,
}

impl<K: Eq + Hash + Clone> Relist<K> {
    fn new() -> Self {
        Relist { seen: None }
    }

    fn begin(&mut self) {
        self.seen = Some(HashSet::new());
    }

    fn saw(&mut self, key: &K) {
        if let Some(seen) = &mut self.seen {
            seen.insert(key.clone());
        }
    }

    /// The keys among `present` that the finished relist did not deliver.
    fn finish<'a>(&mut self, present: impl Iterator<Item = &'a K>) -> Vec<K>
    where
        K: 'a,
    {
        match self.seen.take() {
            Some(seen) => present.filter(|k| !seen.contains(*k)).cloned().collect(),
            None => Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct PodIndex {
    pods: HashMap<PodKey, Arc<PodInfo>>,
    by_ip: HashMap<IpAddr, BTreeSet<PodKey>>,
    /// Live hostNetwork pods by UID: they share the node's addresses, so
    /// only their cgroup (the kernel's answer) can name them.
    host_network: HashMap<String, PodKey>,
    relist: Relist<PodKey>,
}

impl PodIndex {
    pub fn new() -> Self {
        PodIndex {
            pods: HashMap::new(),
            by_ip: HashMap::new(),
            host_network: HashMap::new(),
            relist: Relist::new(),
        }
    }

    /// Adds or replaces a pod. Finished pods are removed instead; live
    /// hostNetwork pods are indexed by UID, never by their (the node's)
    /// addresses. Returns whether anything changed.
    pub fn apply(&mut self, info: PodInfo) -> bool {
        let key = info.key();
        self.relist.saw(&key);
        if info.is_finished() {
            return self.delete(&key);
        }
        if self.pods.get(&key).is_some_and(|old| **old == info) {
            return false;
        }
        self.unlink(&key);
        if info.host_network {
            if !info.uid.is_empty() {
                self.host_network.insert(info.uid.clone(), key.clone());
            }
        } else {
            for ip in &info.ips {
                self.by_ip.entry(*ip).or_default().insert(key.clone());
            }
        }
        self.pods.insert(key, Arc::new(info));
        true
    }

    /// The live hostNetwork pod with this UID.
    pub fn host_network_pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.pods.get(self.host_network.get(uid)?).cloned()
    }

    /// The UIDs of live hostNetwork pods.
    pub fn host_network_uids(&self) -> impl Iterator<Item = &String> {
        self.host_network.keys()
    }

    pub fn delete(&mut self, key: &PodKey) -> bool {
        self.unlink(key)
    }

    pub fn begin_relist(&mut self) {
        self.relist.begin();
    }

    /// Drops every pod the relist did not deliver; returns how many.
    pub fn finish_relist(&mut self) -> usize {
        let gone = self.relist.finish(self.pods.keys());
        for key in &gone {
            self.unlink(key);
        }
        gone.len()
    }

    pub fn lookup(&self, ip: IpAddr) -> IpLookup {
        let Some(keys) = self.by_ip.get(&ip) else {
            return IpLookup::Unknown;
        };
        let mut claimants = keys.iter();
        match (claimants.next(), claimants.next()) {
            (Some(key), None) => match self.pods.get(key) {
                Some(pod) => IpLookup::Found(pod.clone()),
                None => IpLookup::Unknown,
            },
            (Some(_), Some(_)) => IpLookup::Conflict(keys.iter().cloned().collect()),
            (None, _) => IpLookup::Unknown,
        }
    }

    /// The pod with this namespace and name, live or finished.
    pub fn get(&self, key: &PodKey) -> Option<Arc<PodInfo>> {
        self.pods.get(key).cloned()
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.pods.values()
    }

    /// Every IP some live pod claims.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.by_ip.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    fn unlink(&mut self, key: &PodKey) -> bool {
        let Some(old) = self.pods.remove(key) else {
            return false;
        };
        if old.host_network {
            self.host_network.remove(&old.uid);
            return true;
        }
        for ip in &old.ips {
            if let Some(keys) = self.by_ip.get_mut(ip) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_ip.remove(ip);
                }
            }
        }
        true
    }
}

/// Namespaces' policies, with the annotation text they were compiled from so
/// that unchanged namespaces are not recompiled or reported as changes.
#[derive(Debug)]
pub struct NamespaceIndex {
    policies: HashMap<String, (Option<String>, Arc<NamespacePolicy>)>,
    relist: Relist<String>,
}

impl NamespaceIndex {
    pub fn new() -> Self {
        NamespaceIndex {
            policies: HashMap::new(),
            relist: Relist::new(),
        }
    }

    /// Records a namespace's allowed-roles annotation; returns whether it changed.
    pub fn apply(
        &mut self,
        name: String,
        annotation: Option<String>,
        format: PolicyFormat,
    ) -> bool {
        self.relist.saw(&name);
        if self
            .policies
            .get(&name)
            .is_some_and(|(old, _)| *old == annotation)
        {
            return false;
        }
        let policy = NamespacePolicy::parse(annotation.as_deref(), format);
        if let NamespacePolicy::Invalid(why) = &policy {
            tracing::warn!(namespace = %name, %why, "namespace policy allows no role");
        }
        self.policies.insert(name, (annotation, Arc::new(policy)));
        true
    }

    pub fn delete(&mut self, name: &str) -> bool {
        self.policies.remove(name).is_some()
    }

    pub fn begin_relist(&mut self) {
        self.relist.begin();
    }

    pub fn finish_relist(&mut self) -> usize {
        let gone = self.relist.finish(self.policies.keys());
        for name in &gone {
            self.policies.remove(name);
        }
        gone.len()
    }

    pub fn get(&self, name: &str) -> Option<Arc<NamespacePolicy>> {
        self.policies.get(name).map(|(_, policy)| policy.clone())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<NamespacePolicy>)> {
        self.policies
            .iter()
            .map(|(name, (_, policy))| (name, policy))
    }
}

/// What a ServiceAccount says about roles: its role annotation (validated
/// only when a pod's request resolves it, like a pod's own annotation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountInfo {
    pub role: Option<String>,
}

/// ServiceAccounts by `namespace/name`, from a metadata-only watch.
#[derive(Debug)]
pub struct ServiceAccountIndex {
    accounts: HashMap<PodKey, Arc<ServiceAccountInfo>>,
    relist: Relist<PodKey>,
}

impl ServiceAccountIndex {
    pub fn new() -> Self {
        ServiceAccountIndex {
            accounts: HashMap::new(),
            relist: Relist::new(),
        }
    }

    /// Records a ServiceAccount's role annotation; returns whether it changed.
    pub fn apply(&mut self, key: PodKey, role: Option<String>) -> bool {
        self.relist.saw(&key);
        let info = ServiceAccountInfo { role };
        if self.accounts.get(&key).is_some_and(|old| **old == info) {
            return false;
        }
        self.accounts.insert(key, Arc::new(info));
        true
    }

    pub fn delete(&mut self, key: &PodKey) -> bool {
        self.accounts.remove(key).is_some()
    }

    pub fn begin_relist(&mut self) {
        self.relist.begin();
    }

    pub fn finish_relist(&mut self) -> usize {
        let gone = self.relist.finish(self.accounts.keys());
        for key in &gone {
            self.accounts.remove(key);
        }
        gone.len()
    }

    pub fn get(&self, key: &PodKey) -> Option<Arc<ServiceAccountInfo>> {
        self.accounts.get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }
}

#[cfg(test)]
mod tests;
