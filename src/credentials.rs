//! Role credentials: STS calls, the cache they land in, and the warmer that
//! fetches them before pods ask and refreshes them before they expire.

mod cache;
mod session;
mod sts;
mod warmer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use cache::{CacheSettings, CredentialCache};
pub use session::session_name;
pub use sts::{AssumeRole, AwsSts, StsError, StsErrorKind};
pub use warmer::spawn_warmer;

use crate::pods::PodInfo;
use crate::roles::{AssumeTarget, RoleArn};

/// A secret string whose `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that must send it to a pod.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Temporary credentials for one role session.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    pub expiration: SystemTime,
    /// When iamlet received them (the metadata service's `LastUpdated`).
    pub issued: SystemTime,
    /// Which pod these credentials were last granted to, so that a repeated
    /// grant is counted instead of logged again.
    pub grant_memo: GrantMemo,
}

/// The last pod (a hash of its UID) that was granted one set of
/// credentials. A copy starts empty: it belongs to the set it was made for.
#[derive(Default)]
pub struct GrantMemo(AtomicU64);

impl GrantMemo {
    /// True the first time `pod` is granted these credentials in a row.
    pub fn first_for(&self, pod: u64) -> bool {
        self.0.swap(pod, Ordering::Relaxed) != pod
    }
}

impl Clone for GrantMemo {
    fn clone(&self) -> Self {
        GrantMemo::default()
    }
}

impl fmt::Debug for GrantMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantMemo")
    }
}

impl Credentials {
    /// Time left before expiry at `now`; zero once expired.
    pub fn remaining(&self, now: SystemTime) -> Duration {
        self.expiration
            .duration_since(now)
            .unwrap_or(Duration::ZERO)
    }
}

/// What a cached credential is for. Two pods share credentials only if they
/// share role, ExternalId and session name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub role: RoleArn,
    pub external_id: Option<String>,
    pub session_name: String,
}

impl CredentialKey {
    pub fn for_pod(target: &AssumeTarget, pod: &PodInfo) -> Self {
        CredentialKey {
            role: target.role.clone(),
            external_id: target.external_id.clone(),
            session_name: session_name(&pod.namespace, &pod.name),
        }
    }
}
