//! The one decision every answer rests on: which role the caller at an
//! address may have now, and under which credential key.
//!
//! The metadata handler, the credential warmer, `/debug/store` and the
//! no-wrong-role property test all call [`Entitlements::decide`]; nothing
//! else turns an address into a role. A caller gets a [`Grant`] or a
//! [`Refusal`], never a fallback: an unknown, shared or stale address, an
//! invalid annotation or a namespace that does not allow the role is a
//! refusal, and no path leads to the node's own credentials.

mod refusal;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use refusal::{MAX_LOGGED, PodError, Refusal, StsFailure, clip};

use crate::credentials::CredentialKey;
use crate::pods::{LookupError, PodInfo, PodStore};
use crate::roles::{AssumeTarget, Resolver};

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
}

impl Entitlements {
    pub fn new(store: Arc<PodStore>, resolver: Arc<Resolver>) -> Self {
        Entitlements { store, resolver }
    }

    pub fn store(&self) -> &Arc<PodStore> {
        &self.store
    }

    /// The role the caller at `caller` may have now, or why it may have none.
    pub fn decide(&self, caller: IpAddr) -> Result<Grant, Refusal> {
        let view = self
            .store
            .lookup(canonical(caller))
            .map_err(Refusal::from)?;
        let pod = view.pod;
        match self.resolver.resolve(&pod, view.policy.as_deref()) {
            Ok(Some(target)) => {
                let key = CredentialKey::for_pod(&target, &pod);
                Ok(Grant { pod, target, key })
            }
            Ok(None) => Err(Refusal::NoRole { pod: pod.key() }),
            Err(error) => Err(Refusal::Role {
                pod: pod.key(),
                error,
            }),
        }
    }

    /// [`Self::decide`], waiting up to `wait` while the refusal is one the
    /// pod watch may lift (index not ready or stale, address not yet known or
    /// briefly claimed twice). Woken by every index change.
    pub async fn decide_waiting(&self, caller: IpAddr, wait: Duration) -> Result<Grant, Refusal> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.store.subscribe();
        loop {
            changes.borrow_and_update();
            let refusal = match self.decide(caller) {
                Ok(grant) => return Ok(grant),
                Err(refusal) if refusal.may_lift() => refusal,
                Err(refusal) => return Err(refusal),
            };
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(refusal),
            }
        }
    }

    /// The decision for every address the index holds, for the warmer and
    /// `/debug/store`.
    pub fn decide_all(&self) -> Vec<(IpAddr, Result<Grant, Refusal>)> {
        self.store
            .ips()
            .into_iter()
            .map(|ip| (ip, self.decide(ip)))
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
