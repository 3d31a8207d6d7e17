//! Who a projected ServiceAccount token belongs to, as the Kubernetes API
//! server says through `TokenReview`, with the answers cached by a hash of
//! the token (never the token itself, never longer than the token lives).
//!
//! The API server is the only judge: iamlet never checks a signature
//! itself. It reads the token's `exp` claim (unverified) only to bound how
//! long a review is remembered.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::pods::PodKey;

/// A review the API server accepted is remembered at most this long (and
/// never past the token's expiry): a revoked token, or a pod deleted
/// since, is caught by the pod index meanwhile, which every request checks.
pub const MAX_ACCEPTED_FOR: Duration = Duration::from_secs(300);
/// A rejected token is remembered this long, so that a pod repeating a bad
/// token costs the API server one review, not one per request.
pub const REJECTED_FOR: Duration = Duration::from_secs(10);
/// Reviews in flight at once: a pod sending new tokens in a loop waits here
/// (and spends its request budget) instead of loading the API server.
const MAX_IN_FLIGHT: usize = 8;
/// Of those, one caller's: a pod flooding new tokens while the API server
/// is slow holds two slots, never all of them, so other pods' first
/// requests are not queued behind its flood.
const MAX_IN_FLIGHT_PER_CALLER: usize = 2;
/// A review that takes longer, waiting for a slot included, fails (a 500
/// the SDKs retry).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_CACHED: u64 = 20_000;

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// What the API server vouched for: the pod a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundToken {
    pub pod: PodKey,
    pub pod_uid: String,
    pub service_account: String,
    /// The node the pod was scheduled to when the token was issued.
    pub node: Option<String>,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ReviewError {
    /// The API server does not vouch for the token for this audience.
    #[error("{0}")]
    Rejected(String),
    /// The review could not be made; asking again may work.
    #[error("{0}")]
    Unavailable(String),
}

/// The seam to the API server's `TokenReview`. Implemented by
/// [`KubeTokenReviewer`]; tests use their own.
pub trait TokenReviewer: Send + Sync + 'static {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewStatus, ReviewError>>;
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews` (RBAC: `create` on
/// `tokenreviews`).
pub struct KubeTokenReviewer {
    api: Api<TokenReview>,
}

impl KubeTokenReviewer {
    /// `client` must not retry on its own: kube's default client retries
    /// a 429 or 503 up to 15 times, which an API server shedding load
    /// would get about nine times over for every request a pod makes.
    /// A failed review is a 500 the pod's SDK retries, at its own pace.
    pub fn new(client: Client) -> Self {
        KubeTokenReviewer {
            api: Api::all(client),
        }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewStatus, ReviewError>> {
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: token.to_string(),
                    audiences: Some(vec![audience.to_string()]),
                },
                ..TokenReview::default()
            };
            let reviewed = self
                .api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|error| ReviewError::Unavailable(describe(&error)))?;
            Ok(reviewed.status.unwrap_or_default())
        })
    }
}

/// kube's error without anything of the request (the token is in its body,
/// never in an error's text, but only the status is needed).
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!(
            "the API server answered the token review with {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("the API server could not be asked: {other}"),
    }
}

/// What one review decided, and how long it may be remembered.
#[derive(Clone)]
struct Remembered {
    outcome: Result<BoundToken, String>,
    keep_for: Duration,
}

struct KeepFor;

impl moka::Expiry<[u8; 32], Arc<Remembered>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<Remembered>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.keep_for)
    }
}

/// Reviews tokens for one audience, cached by the token's SHA-256, one
/// review per token at a time however many requests carry it.
pub struct TokenReviews {
    reviewer: Arc<dyn TokenReviewer>,
    audience: String,
    cache: moka::future::Cache<[u8; 32], Arc<Remembered>>,
    in_flight: Semaphore,
    by_caller: std::sync::Mutex<HashMap<String, usize>>,
}

/// One caller's review in flight, given back when dropped.
struct CallerSlot<'a> {
    reviews: &'a TokenReviews,
    caller: String,
}

impl Drop for CallerSlot<'_> {
    fn drop(&mut self) {
        let mut by_caller = self
            .reviews
            .by_caller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = by_caller.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                by_caller.remove(&self.caller);
            }
        }
    }
}

impl fmt::Debug for TokenReviews {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenReviews")
            .field("audience", &self.audience)
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl TokenReviews {
    pub fn new(reviewer: Arc<dyn TokenReviewer>, audience: impl Into<String>) -> Self {
        TokenReviews {
            reviewer,
            audience: audience.into(),
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED)
                .expire_after(KeepFor)
                .build(),
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
            by_caller: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn caller_slot(&self, caller: &str) -> Option<CallerSlot<'_>> {
        let mut by_caller = self
            .by_caller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = by_caller.entry(caller.to_string()).or_insert(0);
        if *count >= MAX_IN_FLIGHT_PER_CALLER {
            return None;
        }
        *count += 1;
        Some(CallerSlot {
            reviews: self,
            caller: caller.to_string(),
        })
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The pod `token` is bound to, if the API server vouches for it for
    /// this endpoint's audience. `caller` (who sent it) may have at most
    /// [`MAX_IN_FLIGHT_PER_CALLER`] reviews in flight.
    pub async fn review(&self, token: &str, caller: &str) -> Result<BoundToken, ReviewError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .cache
            .try_get_with(key, async {
                let _slot = self.caller_slot(caller).ok_or_else(|| {
                    ReviewError::Unavailable(
                        "too many token reviews in flight for this caller".into(),
                    )
                })?;
                let status = tokio::time::timeout(REVIEW_TIMEOUT, async {
                    let _permit = self
                        .in_flight
                        .acquire()
                        .await
                        .map_err(|_| ReviewError::Unavailable("shutting down".into()))?;
                    self.reviewer.review(token, &self.audience).await
                })
                .await
                .map_err(|_| {
                    ReviewError::Unavailable(format!(
                        "the token review did not complete within {}s",
                        REVIEW_TIMEOUT.as_secs()
                    ))
                })??;
                let outcome = interpret(&status, &self.audience);
                let keep_for = match &outcome {
                    Ok(_) => accepted_for(token, SystemTime::now()),
                    Err(_) => REJECTED_FOR,
                };
                Ok::<_, ReviewError>(Arc::new(Remembered { outcome, keep_for }))
            })
            .await
            .map_err(|error: Arc<ReviewError>| (*error).clone())?;
        remembered.outcome.clone().map_err(ReviewError::Rejected)
    }
}

/// What a review's status says, checked as strictly as the API server
/// answers: authenticated, for exactly our audience, a ServiceAccount, and
/// bound to a pod.
pub fn interpret(status: &TokenReviewStatus, audience: &str) -> Result<BoundToken, String> {
    if status.authenticated != Some(true) {
        return Err(match status.error.as_deref().filter(|e| !e.is_empty()) {
            Some(error) => format!("the API server rejected the token: {error}"),
            None => "the API server did not authenticate the token".to_string(),
        });
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(format!(
            "the token is not for audience {audience:?} (the pod's projected token volume must set it)"
        ));
    }
    let user = status.user.as_ref().ok_or("the review names no user")?;
    let username = user.username.as_deref().unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
        .ok_or_else(|| format!("{username:?} is not a ServiceAccount"))?;
    let extra = |key: &str| -> Option<String> {
        match user.extra.as_ref()?.get(key)?.as_slice() {
            [one] if !one.is_empty() => Some(one.clone()),
            _ => None,
        }
    };
    let (Some(pod), Some(pod_uid)) = (extra(POD_NAME), extra(POD_UID)) else {
        return Err(
            "the token is not bound to a pod (use a projected ServiceAccount token)".into(),
        );
    };
    Ok(BoundToken {
        pod: PodKey {
            namespace: namespace.to_string(),
            name: pod,
        },
        pod_uid,
        service_account: service_account.to_string(),
        node: extra(NODE_NAME),
    })
}

/// How long an accepted review of `token` may be remembered at `now`: up to
/// the token's `exp`, at most [`MAX_ACCEPTED_FOR`]; not at all when the
/// expiry cannot be read.
pub fn accepted_for(token: &str, now: SystemTime) -> Duration {
    let Some(expires) = token_expiry(token) else {
        return Duration::ZERO;
    };
    expires
        .duration_since(now)
        .unwrap_or(Duration::ZERO)
        .min(MAX_ACCEPTED_FOR)
}

/// The `exp` claim of a JWT, read without checking anything else.
fn token_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = u64::try_from(claims.get("exp")?.as_i64()?).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

#[cfg(test)]
mod tests;
