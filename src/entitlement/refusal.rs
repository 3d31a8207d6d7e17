//! Every way a request is refused, with its HTTP status, metric label and
//! log text in one place.

use std::fmt;

use http::StatusCode;

use crate::credentials::{StsError, StsErrorKind};
use crate::identity::Unidentified;
use crate::pods::{LookupError, PodKey};
use crate::roles::{RoleArn, RoleError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The index cannot name exactly one pod for the caller, or may not be
    /// answered from (not ready, stale).
    Lookup(LookupError),
    /// A connection from the node's own network namespace whose socket
    /// belongs to no pod the agent can name (gone, or a cgroup of no pod).
    Unidentified(Unidentified),
    /// The index names a pod for the caller's address, but that pod has no
    /// cgroup on this node any more: it was deleted here, and its address
    /// may already be another pod's.
    NotOnNode {
        pod: PodKey,
    },
    /// The pod has no role annotation and there is no default role.
    NoRole {
        pod: PodKey,
    },
    /// The pod's role annotation or its namespace's allow-list refuses it.
    Role {
        pod: PodKey,
        error: RoleError,
    },
    /// Credentials asked for by the name of a role that is not the pod's.
    NotThePodsRole {
        pod: PodKey,
        role: RoleArn,
        requested: String,
    },
    /// STS would not give the pod's role to the node, or could not be asked.
    Sts(Box<StsFailure>),
    MalformedPath,
    MethodNotAllowed,
    /// A path on the deny-list (`--metadata-deny` and the defaults).
    DenyList,
    /// The caller's per-address request budget is spent.
    RateLimited,
    /// The caller's budget for requests passed to the real service is spent.
    ProxyRateLimited,
    InvalidToken,
    Imdsv2Required,
    /// A token request that went through a proxy (`X-Forwarded-For`).
    ForwardedTokenRequest,
    /// `PUT /<version>/api/token`: the real service refuses it too.
    VersionedToken,
    InvalidTokenTtl,
    /// An agent route (`/debug`, `/metrics`, ...) asked through the DNAT, by
    /// a pod or from off the node; a metadata route on the metrics port; or
    /// node metadata asked directly by a caller that is neither a pod of
    /// this node nor the node.
    NotForCaller,
    /// A path the listener does not serve (the container credentials
    /// endpoint serves `/v1/credentials` only).
    UnknownPath,
    /// Container credentials asked with a `Host` that is not one of the
    /// endpoint's addresses (a rebinding DNS name, a relay).
    WrongHost,
    /// Container credentials asked without a ServiceAccount token.
    MissingServiceAccountToken,
    /// The API server did not vouch for the token (invalid, expired,
    /// revoked, another audience, not bound to a pod).
    TokenRejected(String),
    /// The token could not be reviewed (the API server failed).
    TokenReviewFailed(String),
    /// The token is bound to a pod on another node.
    TokenForOtherNode {
        node: String,
    },
    /// The kernel names a different pod of this node as the caller than
    /// the one the token is bound to: a token used by another pod.
    TokenOfAnotherCaller {
        pod: PodKey,
    },
    /// A token sent from an address that is neither the node's nor any
    /// pod's of this node (a host next to the node replaying a token).
    UnknownSender,
    /// A header that must appear once (`Authorization`) appears twice: the
    /// request is ambiguous.
    DuplicateHeader,
}

/// The most of a pod-chosen string (a path, a role name it asked for) that
/// a refusal keeps for the log, so that a line costs at most a few hundred
/// bytes whatever the pod sends.
pub const MAX_LOGGED: usize = 128;

/// `text` cut to [`MAX_LOGGED`] bytes, on a character boundary.
pub fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_LOGGED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Events hold at most 1 KiB of note.
const MAX_NOTE: usize = 1024;

fn clip_to(mut text: String, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// A failed AssumeRole for a pod's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsFailure {
    pub pod: PodKey,
    pub role: RoleArn,
    pub error: StsError,
}

/// What a pod reads in a credential error document: a stable code and a
/// short message that names nothing of the node (its role, instance id,
/// account) and none of STS's own text, which does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodError {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Lookup(LookupError::NotReady | LookupError::Stale { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Refusal::Lookup(
                LookupError::Unknown(_)
                | LookupError::UnknownHostNetworkPod(_)
                | LookupError::UnknownPod(_)
                | LookupError::PodReplaced { .. }
                | LookupError::Conflict { .. },
            ) => StatusCode::NOT_FOUND,
            Refusal::Unidentified(_) | Refusal::NotOnNode { .. } => StatusCode::NOT_FOUND,
            Refusal::NoRole { .. } => StatusCode::NOT_FOUND,
            // As kube2iam: a pod whose role cannot be granted (not allowed
            // in its namespace, invalid) has no role, so 404, which every
            // SDK reads as "no credentials here".
            Refusal::Role { .. } => StatusCode::NOT_FOUND,
            Refusal::NotThePodsRole { .. } => StatusCode::FORBIDDEN,
            Refusal::Sts(failure) => match failure.error.kind {
                StsErrorKind::AccessDenied => StatusCode::FORBIDDEN,
                StsErrorKind::Throttled | StsErrorKind::Unavailable => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                StsErrorKind::InvalidRequest | StsErrorKind::Other => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            Refusal::MalformedPath | Refusal::InvalidTokenTtl => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::DenyList | Refusal::ForwardedTokenRequest | Refusal::VersionedToken => {
                StatusCode::FORBIDDEN
            }
            Refusal::RateLimited | Refusal::ProxyRateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::InvalidToken | Refusal::Imdsv2Required => StatusCode::UNAUTHORIZED,
            Refusal::NotForCaller | Refusal::UnknownPath => StatusCode::NOT_FOUND,
            Refusal::WrongHost | Refusal::MissingServiceAccountToken | Refusal::DuplicateHeader => {
                StatusCode::BAD_REQUEST
            }
            Refusal::TokenRejected(_) => StatusCode::UNAUTHORIZED,
            Refusal::TokenForOtherNode { .. }
            | Refusal::TokenOfAnotherCaller { .. }
            | Refusal::UnknownSender => StatusCode::FORBIDDEN,
            Refusal::TokenReviewFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status and `{"code","message"}` the container credentials
    /// endpoint answers with. Its clients (the SDKs' container providers)
    /// retry 5xx and give up on 4xx, so only what may pass on its own is a
    /// 500; a pod learns why it was refused, never anything of the node.
    pub fn container_error(&self) -> (StatusCode, &'static str, String) {
        if let Some(error) = self.pod_error() {
            let status = match self.status() {
                StatusCode::FORBIDDEN => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return (status, error.code, error.message);
        }
        let (status, code) = match self {
            Refusal::Lookup(LookupError::NotReady | LookupError::Stale { .. })
            | Refusal::TokenReviewFailed(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "ServiceUnavailable")
            }
            Refusal::RateLimited | Refusal::ProxyRateLimited => {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
            }
            Refusal::WrongHost => (StatusCode::BAD_REQUEST, "InvalidHost"),
            Refusal::MissingServiceAccountToken => (StatusCode::BAD_REQUEST, "MissingToken"),
            Refusal::MalformedPath | Refusal::DuplicateHeader => {
                (StatusCode::BAD_REQUEST, "InvalidRequest")
            }
            Refusal::TokenRejected(_) => (StatusCode::UNAUTHORIZED, "InvalidToken"),
            Refusal::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
            Refusal::UnknownPath | Refusal::NotForCaller => (StatusCode::NOT_FOUND, "NotFound"),
            Refusal::NoRole { .. } => (StatusCode::FORBIDDEN, "NoRole"),
            Refusal::Role { .. } | Refusal::NotThePodsRole { .. } => {
                (StatusCode::FORBIDDEN, "RoleNotAllowed")
            }
            _ => (StatusCode::FORBIDDEN, "AccessDenied"),
        };
        let message = match self {
            // The API server's words (they name the agent's account) stay
            // in the agent's log.
            Refusal::TokenReviewFailed(_) => {
                "the token could not be reviewed by the Kubernetes API server; retry shortly"
                    .to_string()
            }
            other => other.to_string(),
        };
        (status, code, message)
    }

    /// A short, stable label for metrics and the log's `reason` field.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Lookup(error) => error.reason(),
            Refusal::Unidentified(_) => "unidentified-caller",
            Refusal::NotOnNode { .. } => "pod-not-on-node",
            Refusal::NoRole { .. } => "no-role",
            Refusal::Role { error, .. } => error.reason(),
            Refusal::NotThePodsRole { .. } => "not-the-pods-role",
            Refusal::Sts(failure) => match failure.error.kind {
                StsErrorKind::AccessDenied => "sts-access-denied",
                StsErrorKind::Throttled => "sts-throttled",
                StsErrorKind::Unavailable => "sts-unavailable",
                StsErrorKind::InvalidRequest | StsErrorKind::Other => "sts-failed",
            },
            Refusal::MalformedPath => "malformed-path",
            Refusal::MethodNotAllowed => "method-not-allowed",
            Refusal::DenyList => "deny-list",
            Refusal::RateLimited => "rate-limited",
            Refusal::ProxyRateLimited => "proxy-rate-limited",
            Refusal::InvalidToken => "invalid-token",
            Refusal::Imdsv2Required => "imdsv2-required",
            Refusal::ForwardedTokenRequest => "forwarded-token-request",
            Refusal::VersionedToken => "versioned-token",
            Refusal::InvalidTokenTtl => "invalid-token-ttl",
            Refusal::NotForCaller => "not-for-caller",
            Refusal::UnknownPath => "unknown-path",
            Refusal::WrongHost => "wrong-host",
            Refusal::MissingServiceAccountToken => "missing-token",
            Refusal::TokenRejected(_) => "token-rejected",
            Refusal::TokenReviewFailed(_) => "token-review-failed",
            Refusal::TokenForOtherNode { .. } => "token-for-other-node",
            Refusal::TokenOfAnotherCaller { .. } => "token-of-another-caller",
            Refusal::UnknownSender => "unknown-sender",
            Refusal::DuplicateHeader => "duplicate-header",
        }
    }

    /// The pod the refusal concerns, when one is known.
    pub fn pod(&self) -> Option<&PodKey> {
        match self {
            Refusal::NoRole { pod }
            | Refusal::NotOnNode { pod }
            | Refusal::Role { pod, .. }
            | Refusal::NotThePodsRole { pod, .. }
            | Refusal::TokenOfAnotherCaller { pod } => Some(pod),
            Refusal::Sts(failure) => Some(&failure.pod),
            Refusal::Lookup(_)
            | Refusal::Unidentified(_)
            | Refusal::MalformedPath
            | Refusal::MethodNotAllowed
            | Refusal::DenyList
            | Refusal::RateLimited
            | Refusal::ProxyRateLimited
            | Refusal::InvalidToken
            | Refusal::Imdsv2Required
            | Refusal::ForwardedTokenRequest
            | Refusal::VersionedToken
            | Refusal::InvalidTokenTtl
            | Refusal::NotForCaller
            | Refusal::UnknownPath
            | Refusal::WrongHost
            | Refusal::MissingServiceAccountToken
            | Refusal::TokenRejected(_)
            | Refusal::TokenReviewFailed(_)
            | Refusal::TokenForOtherNode { .. }
            | Refusal::UnknownSender
            | Refusal::DuplicateHeader => None,
        }
    }

    /// Whether the pod watch may lift this refusal soon, so that a request
    /// is worth holding for a moment.
    pub fn may_lift(&self) -> bool {
        matches!(
            self,
            Refusal::Lookup(
                LookupError::NotReady
                    | LookupError::Unknown(_)
                    | LookupError::UnknownHostNetworkPod(_)
                    | LookupError::UnknownPod(_)
                    | LookupError::PodReplaced { .. }
                    | LookupError::Conflict { .. }
                    | LookupError::Stale { .. }
            ) | Refusal::NotOnNode { .. }
                | Refusal::Role {
                    error: RoleError::UnknownServiceAccount { .. },
                    ..
                }
        )
    }

    /// Whether a flood of these may be logged in a sample only: refusals a
    /// hostile or broken client can produce at will that decide no
    /// credentials. Every credential decision (and STS failure) is logged.
    pub fn is_noise(&self) -> bool {
        matches!(
            self,
            Refusal::Unidentified(_)
                | Refusal::MalformedPath
                | Refusal::MethodNotAllowed
                | Refusal::DenyList
                | Refusal::ForwardedTokenRequest
                | Refusal::VersionedToken
                | Refusal::RateLimited
                | Refusal::ProxyRateLimited
                | Refusal::InvalidToken
                | Refusal::Imdsv2Required
                | Refusal::InvalidTokenTtl
                | Refusal::NotForCaller
                | Refusal::UnknownPath
                | Refusal::WrongHost
                | Refusal::MissingServiceAccountToken
                | Refusal::TokenRejected(_)
                | Refusal::DuplicateHeader
        )
    }

    /// The Warning Event its pod gets (`kubectl describe pod`), for the
    /// refusals a pod's team can act on: a reason and what to change. Never
    /// STS's own text, which names the node.
    pub fn pod_warning(&self) -> Option<crate::events::PodWarning> {
        let (reason, note) = match self {
            Refusal::NoRole { pod } => (
                "IAMRoleMissing",
                format!(
                    "iamlet: pod {pod} has no role: no role annotation on the pod (iam.amazonaws.com/role by default) or, with service-account roles, on its ServiceAccount, and the node has no default role. Grant one with: kubectl annotate pod {} -n {} iam.amazonaws.com/role=ROLE",
                    pod.name, pod.namespace
                ),
            ),
            Refusal::Role {
                error: RoleError::NotAllowed { namespace, role },
                ..
            } => (
                "IAMRoleNotAllowed",
                format!(
                    "iamlet: role {role} is not allowed in namespace {namespace}: add it to the namespace's allowed-roles annotation (iam.amazonaws.com/allowed-roles by default), or give the pod a role the namespace allows"
                ),
            ),
            Refusal::Role {
                error: error @ (RoleError::UnknownServiceAccount { .. } | RoleError::UnknownNamespace { .. }),
                ..
            } => ("IAMRoleUnresolved", format!("iamlet: {error}")),
            Refusal::Role { error, .. } => (
                "IAMRoleInvalid",
                format!("iamlet: the pod's role cannot be used: {error}"),
            ),
            Refusal::NotThePodsRole { role, requested, .. } => (
                "IAMRoleMismatch",
                format!(
                    "iamlet: credentials were asked for role {requested:?}, but this pod's role is {role}: the SDK's configured role name is stale"
                ),
            ),
            Refusal::Sts(failure) if failure.error.kind == StsErrorKind::AccessDenied => (
                "AssumeRoleDenied",
                format!(
                    "iamlet: STS refused to let the node assume role {} for this pod: the role's trust policy must allow the nodes' role (sts:AssumeRole, and sts:TagSession with session tags), and the pod's external ID must match",
                    failure.role
                ),
            ),
            Refusal::NotOnNode { .. } => (
                "IdentityNotResolved",
                "iamlet: a request from this pod's address was refused because the pod has no cgroup on this node any more (it was deleted here, and another pod may now hold its address)".to_string(),
            ),
            Refusal::TokenOfAnotherCaller { .. } => (
                "ServiceAccountTokenMisused",
                "iamlet: another process sent this pod's ServiceAccount token to the container credentials endpoint and was refused; check where the token file is exposed".to_string(),
            ),
            _ => return None,
        };
        Some(crate::events::PodWarning {
            reason,
            note: clip_to(note, MAX_NOTE),
        })
    }

    /// The error document a pod gets for a failed credential request.
    pub fn pod_error(&self) -> Option<PodError> {
        let Refusal::Sts(failure) = self else {
            return None;
        };
        let name = failure.role.name();
        let (code, message) = match failure.error.kind {
            StsErrorKind::AccessDenied => (
                "AssumeRoleDenied",
                format!(
                    "STS refused to assume role {name} for this pod: check the role's trust policy and the pod's external ID"
                ),
            ),
            StsErrorKind::Throttled => (
                "StsThrottled",
                format!("STS is throttling this node's requests for role {name}; retry shortly"),
            ),
            StsErrorKind::Unavailable => (
                "StsUnavailable",
                format!("STS could not be reached to assume role {name}; retry shortly"),
            ),
            StsErrorKind::InvalidRequest | StsErrorKind::Other => (
                "AssumeRoleFailed",
                format!(
                    "STS did not return usable credentials for role {name}; the node agent's log has the details"
                ),
            ),
        };
        Some(PodError { code, message })
    }
}

/// The full reason, for the agent's own log (STS's text included).
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Lookup(error) => write!(f, "{error}"),
            Refusal::Unidentified(why) => write!(f, "caller on the node's network: {why}"),
            Refusal::NotOnNode { .. } => f.write_str(
                "the pod the index names for this address has no cgroup on this node (deleted here; the watch has not caught up)",
            ),
            Refusal::NoRole { .. } => {
                f.write_str("pod has no role annotation and there is no default role")
            }
            Refusal::Role { error, .. } => write!(f, "{error}"),
            Refusal::NotThePodsRole {
                role, requested, ..
            } => write!(f, "asked for {requested:?}, but the pod's role is {role}"),
            Refusal::Sts(failure) => {
                write!(f, "AssumeRole {} failed: {}", failure.role, failure.error)
            }
            Refusal::MalformedPath => f.write_str("malformed path"),
            Refusal::MethodNotAllowed => f.write_str("method not allowed"),
            Refusal::DenyList => f.write_str("path is on the deny-list"),
            Refusal::RateLimited => f.write_str("request rate limit exceeded"),
            Refusal::ProxyRateLimited => f.write_str("proxy rate limit exceeded"),
            Refusal::InvalidToken => f.write_str("invalid or expired IMDSv2 token"),
            Refusal::Imdsv2Required => f.write_str("IMDSv2 token required"),
            Refusal::ForwardedTokenRequest => f.write_str("token request carried X-Forwarded-For"),
            Refusal::VersionedToken => f.write_str("token requested on a versioned path"),
            Refusal::InvalidTokenTtl => f.write_str("missing or invalid token TTL header"),
            Refusal::NotForCaller => f.write_str("route not offered to this caller"),
            Refusal::UnknownPath => f.write_str("no such path: the endpoint serves GET /v1/credentials"),
            Refusal::WrongHost => f.write_str("the Host header is not one of the endpoint's addresses"),
            Refusal::MissingServiceAccountToken => f.write_str(
                "no ServiceAccount token in the Authorization header (set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE)",
            ),
            Refusal::TokenRejected(why) => write!(f, "the ServiceAccount token was not accepted: {}", clip(why)),
            Refusal::TokenReviewFailed(why) => write!(f, "the token could not be reviewed: {why}"),
            Refusal::TokenForOtherNode { node } => {
                write!(f, "the token is bound to a pod on node {}", clip(node))
            }
            Refusal::TokenOfAnotherCaller { pod } => {
                write!(f, "the token is bound to pod {pod}, but another pod sent it")
            }
            Refusal::DuplicateHeader => f.write_str("a header that must appear once appears more than once"),
            Refusal::UnknownSender => f.write_str(
                "the request came from an address of no pod of this node, or from a process on the node's network in no pod's cgroup",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role() -> RoleArn {
        RoleArn::parse("arn:aws:iam::123456789012:role/app").unwrap()
    }

    fn sts(kind: StsErrorKind, code: &str) -> Refusal {
        Refusal::Sts(Box::new(StsFailure {
            pod: PodKey {
                namespace: "ns".into(),
                name: "p".into(),
            },
            role: role(),
            error: StsError::new(
                kind,
                code,
                "User: arn:aws:sts::123456789012:assumed-role/node-role/i-0abc is not authorized",
            ),
        }))
    }

    #[test]
    fn sts_errors_reach_pods_without_node_details() {
        for (kind, code) in [
            (StsErrorKind::AccessDenied, "AccessDenied"),
            (StsErrorKind::Throttled, "Throttling"),
            (StsErrorKind::Unavailable, "Timeout"),
            (StsErrorKind::InvalidRequest, "ValidationError"),
            (StsErrorKind::Other, "Weird"),
        ] {
            let refusal = sts(kind, code);
            let error = refusal.pod_error().unwrap();
            for secret in ["node-role", "i-0abc", "123456789012", "not authorized"] {
                assert!(
                    !error.message.contains(secret),
                    "{kind:?}: {}",
                    error.message
                );
            }
            assert!(
                refusal.to_string().contains("i-0abc"),
                "the log keeps STS's text"
            );
        }
    }

    #[test]
    fn a_refusal_by_sts_differs_from_an_outage() {
        let denied = sts(StsErrorKind::AccessDenied, "AccessDenied");
        let down = sts(StsErrorKind::Unavailable, "Timeout");
        let throttled = sts(StsErrorKind::Throttled, "Throttling");
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(throttled.status(), StatusCode::SERVICE_UNAVAILABLE);
        let codes: Vec<&str> = [&denied, &down, &throttled]
            .iter()
            .map(|r| r.pod_error().unwrap().code)
            .collect();
        assert_eq!(
            codes,
            ["AssumeRoleDenied", "StsUnavailable", "StsThrottled"]
        );
    }

    fn pod_key() -> PodKey {
        PodKey {
            namespace: "ns".into(),
            name: "p".into(),
        }
    }

    #[test]
    fn refusals_about_a_pod_name_it() {
        let no_role = Refusal::NoRole { pod: pod_key() };
        assert_eq!(no_role.pod(), Some(&pod_key()));
        assert_eq!(
            sts(StsErrorKind::Throttled, "Throttling").pod(),
            Some(&pod_key())
        );
        let not_allowed = Refusal::Role {
            pod: pod_key(),
            error: RoleError::NotAllowed {
                namespace: "ns".into(),
                role: role().to_string(),
            },
        };
        assert_eq!(not_allowed.pod(), Some(&pod_key()));
        assert_eq!(Refusal::Lookup(LookupError::NotReady).pod(), None);
        assert_eq!(Refusal::RateLimited.pod(), None);
    }

    #[test]
    fn credential_decisions_are_never_sampled_away() {
        let decisions = [
            Refusal::NoRole { pod: pod_key() },
            Refusal::Lookup(LookupError::NotReady),
            Refusal::NotThePodsRole {
                pod: pod_key(),
                role: role(),
                requested: "x".into(),
            },
            sts(StsErrorKind::AccessDenied, "AccessDenied"),
        ];
        for refusal in &decisions {
            assert!(!refusal.is_noise(), "{refusal:?}");
        }
        for noise in [
            Refusal::RateLimited,
            Refusal::MalformedPath,
            Refusal::DenyList,
            Refusal::NotForCaller,
        ] {
            assert!(noise.is_noise(), "{noise:?}");
        }
    }

    #[test]
    fn only_the_index_may_lift_a_refusal() {
        assert!(Refusal::Lookup(LookupError::NotReady).may_lift());
        assert!(Refusal::Lookup(LookupError::Unknown("10.0.0.1".parse().unwrap())).may_lift());
        assert!(!Refusal::NoRole { pod: pod_key() }.may_lift());
        assert!(!sts(StsErrorKind::Unavailable, "Timeout").may_lift());
        assert!(!Refusal::DenyList.may_lift());
    }
}
