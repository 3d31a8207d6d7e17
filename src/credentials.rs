//! Role credentials: STS calls, the cache they land in, and the warmer that
//! fetches them before pods ask and refreshes them before they expire.

mod cache;
mod gate;
mod session;
mod sts;
mod warmer;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use cache::{CacheSettings, CacheState, CredentialCache};
pub use gate::{StsGate, StsLimits, Urgency};
pub use session::{SessionTagging, SessionTags, is_tag_char, session_name};
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
    /// The metadata service's document for these credentials, rendered on
    /// first use and served as is after that.
    pub rendered: Rendered,
}

/// A rendered credential document. It holds the secrets, so its `Debug`
/// is redacted like theirs.
#[derive(Clone, Default)]
pub struct Rendered(std::sync::OnceLock<bytes::Bytes>);

impl Rendered {
    pub fn get_or_render(&self, render: impl FnOnce() -> bytes::Bytes) -> bytes::Bytes {
        self.0.get_or_init(render).clone()
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rendered(<redacted>)")
    }
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
/// share role, ExternalId, session name and session tags.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialKey {
    pub role: RoleArn,
    pub external_id: Option<String>,
    pub session_name: String,
    /// With `--session-tags`: the tags and source identity of the session.
    pub tags: Option<SessionTags>,
}

impl CredentialKey {
    pub fn for_pod(target: &AssumeTarget, pod: &PodInfo, tagging: Option<&SessionTagging>) -> Self {
        CredentialKey {
            role: target.role.clone(),
            external_id: target.external_id.clone(),
            session_name: session_name(&pod.namespace, &pod.name),
            tags: tagging.map(|tagging| tagging.for_pod(pod)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret_even_once_rendered() {
        let credentials = Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("very-secret-key"),
            session_token: Secret::new("very-secret-token"),
            expiration: SystemTime::UNIX_EPOCH,
            issued: SystemTime::UNIX_EPOCH,
            grant_memo: GrantMemo::default(),
            rendered: Rendered::default(),
        };
        let body = credentials
            .rendered
            .get_or_render(|| bytes::Bytes::from(credentials.session_token.expose().to_string()));
        assert_eq!(body, "very-secret-token");
        let debug = format!("{credentials:?}");
        assert!(!debug.contains("very-secret"), "{debug}");
        assert!(debug.contains("ASIAEXAMPLE"));
    }

    #[test]
    fn a_grant_is_first_once_per_pod_in_a_row() {
        let memo = GrantMemo::default();
        assert!(memo.first_for(7));
        assert!(!memo.first_for(7));
        assert!(memo.first_for(8));
        assert!(memo.first_for(7));
        assert!(memo.clone().first_for(7), "a copy starts empty");
    }
}
