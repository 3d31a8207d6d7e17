//! The one decision every answer rests on: which role a caller (a pod's
//! address, or a hostNetwork pod the kernel named) may have now, and under
//! which credential key.
//!
//! The metadata handler, the credential warmer, `/debug/store` and the
//! no-wrong-role property test all call [`Entitlements::decide`]; nothing
//! else turns an address into a role. A caller gets a [`Grant`] or a
//! [`Refusal`], never a fallback: an unknown, shared or stale address, an
//! invalid annotation or a namespace that does not allow the role is a
//! refusal, and no path leads to the node's own credentials.

mod refusal;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use refusal::{MAX_LOGGED, PodError, Refusal, StsFailure, clip};

use crate::credentials::{CredentialKey, SessionTagging};
use crate::identity::PodUid;
use crate::pods::{LookupError, PodInfo, PodKey, PodStore, PodView};
use crate::roles::{AssumeTarget, Resolver};

/// Who asks: a pod's own address, (for a connection from the node's own
/// network namespace) the hostNetwork pod whose cgroup the calling socket
/// belongs to, or the pod a ServiceAccount token was issued to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    Address(IpAddr),
    HostNetworkPod(PodUid),
    Token(TokenPod),
}

/// The pod a projected ServiceAccount token is bound to, as the API
/// server's TokenReview named it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenPod {
    pub pod: PodKey,
    /// The pod object's `metadata.uid`.
    pub uid: String,
    pub service_account: String,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Address(ip) => write!(f, "{ip}"),
            Caller::HostNetworkPod(uid) => write!(f, "hostNetwork pod {uid}"),
            Caller::Token(bound) => write!(f, "token of pod {}", bound.pod),
        }
    }
}

/// What a caller may have: the pod it is, the role and ExternalId to assume,
/// and the cache key of those credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pod: Arc<PodInfo>,
    pub target: AssumeTarget,
    pub key: CredentialKey,
}

impl Grant {
    /// A request for credentials by role name: only the granted role's name.
    pub fn check_requested(&self, requested: &str) -> Result<(), Refusal> {
        if requested == self.target.role.name() {
            Ok(())
        } else {
            Err(Refusal::NotThePodsRole {
                pod: self.pod.key(),
                role: self.target.role.clone(),
                requested: refusal::clip(requested).to_string(),
            })
        }
    }
}

#[derive(Debug)]
pub struct Entitlements {
    store: Arc<PodStore>,
    resolver: Arc<Resolver>,
    /// Whether hostNetwork pods can be named (by their sockets' cgroups);
    /// without it they are never granted anything, nor prefetched for.
    host_network_pods: bool,
    /// `--session-tags`: sessions carry the pod's tags (part of the key).
    tagging: Option<SessionTagging>,
}

impl Entitlements {
    pub fn new(store: Arc<PodStore>, resolver: Arc<Resolver>) -> Self {
        Entitlements {
            store,
            resolver,
            host_network_pods: false,
            tagging: None,
        }
    }

    /// Tags every session with the pod's facts (`--session-tags`).
    pub fn with_session_tags(mut self, tagging: Option<SessionTagging>) -> Self {
        self.tagging = tagging;
        self
    }

    /// Serves hostNetwork pods named by the node's cgroups.
    pub fn with_host_network_pods(mut self, enabled: bool) -> Self {
        self.host_network_pods = enabled;
        self
    }

    pub fn store(&self) -> &Arc<PodStore> {
        &self.store
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// The role the caller at `caller` may have now, or why it may have none.
    pub fn decide(&self, caller: IpAddr) -> Result<Grant, Refusal> {
        let view = self
            .store
            .lookup(canonical(caller))
            .map_err(Refusal::from)?;
        self.grant(view)
    }

    /// [`Self::decide`] for any caller: a hostNetwork pod is looked up by
    /// its UID, a token's pod by its name and UID, and then each is decided
    /// exactly as a pod found by its address.
    pub fn decide_caller(&self, caller: &Caller) -> Result<Grant, Refusal> {
        match caller {
            Caller::Address(ip) => self.decide(*ip),
            Caller::HostNetworkPod(uid) if !self.host_network_pods => Err(Refusal::Lookup(
                LookupError::UnknownHostNetworkPod(uid.to_string()),
            )),
            Caller::HostNetworkPod(uid) => {
                let view = self
                    .store
                    .lookup_host_network(uid.as_str())
                    .map_err(Refusal::from)?;
                self.grant(view)
            }
            Caller::Token(bound) => {
                let view = self.store.lookup_pod(&bound.pod).map_err(Refusal::from)?;
                // A token names the pod object it was issued for: a pod of
                // the same name created since is someone else.
                if view.pod.uid != bound.uid || view.pod.service_account != bound.service_account {
                    return Err(Refusal::Lookup(LookupError::PodReplaced {
                        pod: bound.pod.clone(),
                        token_uid: bound.uid.clone(),
                    }));
                }
                self.grant(view)
            }
        }
    }

    /// The decision for a pod already looked up (by name, for `iamlet
    /// explain`), as for a pod found by its address.
    pub fn decide_view(&self, view: PodView) -> Result<Grant, Refusal> {
        self.grant(view)
    }

    fn grant(&self, view: PodView) -> Result<Grant, Refusal> {
        let pod = view.pod;
        let account = view.service_account.as_deref();
        match self.resolver.resolve(&pod, view.policy.as_deref(), account) {
            Ok(Some(target)) => {
                let key = CredentialKey::for_pod(&target, &pod, self.tagging.as_ref());
                Ok(Grant { pod, target, key })
            }
            Ok(None) => Err(Refusal::NoRole { pod: pod.key() }),
            Err(error) => Err(Refusal::Role {
                pod: pod.key(),
                error,
            }),
        }
    }

    /// [`Self::decide_caller`], waiting up to `wait` while the refusal is
    /// one the pod watch may lift (index not ready or stale, caller not yet
    /// known or briefly claimed twice). Woken by every index change.
    pub async fn decide_waiting(&self, caller: &Caller, wait: Duration) -> Result<Grant, Refusal> {
        self.store
            .wait_until(wait, || self.decide_caller(caller), Refusal::may_lift)
            .await
    }

    /// The decision for every caller the index knows (each address, each
    /// hostNetwork pod), for the warmer and `/debug/store`. Without cgroup
    /// identity a hostNetwork pod can still be known by its token, and is
    /// decided as such.
    pub fn decide_all(&self) -> Vec<(Caller, Result<Grant, Refusal>)> {
        let addresses = self.store.ips().into_iter().map(Caller::Address);
        let host_pods: Vec<Caller> = if self.host_network_pods {
            self.store
                .host_network_uids()
                .into_iter()
                .filter_map(|uid| PodUid::parse(&uid))
                .map(Caller::HostNetworkPod)
                .collect()
        } else {
            self.store
                .host_network_pods()
                .into_iter()
                .map(|pod| {
                    Caller::Token(TokenPod {
                        pod: pod.key(),
                        uid: pod.uid.clone(),
                        service_account: pod.service_account.clone(),
                    })
                })
                .collect()
        };
        addresses
            .chain(host_pods)
            .map(|caller| {
                let decision = self.decide_caller(&caller);
                (caller, decision)
            })
            .collect()
    }
}

impl From<LookupError> for Refusal {
    fn from(error: LookupError) -> Self {
        Refusal::Lookup(error)
    }
}

/// IPv4 peers on a dual-stack socket arrive as `::ffff:a.b.c.d`; pods are
/// indexed by their plain IPv4 address. Only the mapped form is converted:
/// the deprecated IPv4-compatible `::a.b.c.d` is an IPv6 address that no
/// IPv4 pod owns.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
