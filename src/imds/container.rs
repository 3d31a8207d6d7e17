//! The container credentials endpoint (EKS Pod Identity's contract):
//! `GET /v1/credentials` with a projected ServiceAccount token as the raw
//! `Authorization` header. The API server says whose token it is; the
//! entitlement core decides the role exactly as for the metadata path.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, header};

use super::connection::Connection;
use super::handler::MetadataService;
use super::responses::{self, Body};
use crate::entitlement::{Caller, Grant, Refusal, StsFailure, TokenPod};
use crate::identity::PodUid;
use crate::pods::LookupError;
use crate::token_review::{BoundToken, ReviewError, TokenReviews};

pub const CREDENTIALS_PATH: &str = "/v1/credentials";
/// A projected token is about 1 KiB; anything far larger is not one.
const MAX_TOKEN_BYTES: usize = 6 * 1024;

/// What the endpoint needs beyond the metadata service's parts.
#[derive(Debug)]
pub struct ContainerEndpoint {
    pub reviews: Arc<TokenReviews>,
    /// `Host` values the endpoint answers: its addresses, with and
    /// without the port (bare only for port 80).
    hosts: Vec<String>,
    /// This node (`--node`): a token bound to a pod elsewhere is refused
    /// before its pod is looked up.
    node: Option<String>,
}

impl ContainerEndpoint {
    pub fn new(listen: &[SocketAddr], reviews: Arc<TokenReviews>, node: Option<String>) -> Self {
        let mut hosts = Vec::new();
        for addr in listen {
            let ip = match addr {
                SocketAddr::V4(v4) => v4.ip().to_string(),
                SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
            };
            hosts.push(format!("{ip}:{}", addr.port()));
            if addr.port() == 80 {
                hosts.push(ip);
            }
        }
        ContainerEndpoint {
            reviews,
            hosts,
            node,
        }
    }

    /// Exactly one `Host`, naming one of the endpoint's addresses.
    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = only(headers, header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        self.hosts.contains(&host)
    }
}

/// Who sent a request, as the kernel and the index say: settled before
/// the token is looked at, so that a token is only ever weighed against
/// its sender.
#[derive(Debug)]
enum Sender {
    /// A pod with an address of its own (its UID).
    Pod(String),
    /// A hostNetwork pod its socket's cgroup names (its UID).
    HostNetworkPod(String),
    /// A process on the node's own addresses, where cgroups cannot tell
    /// hostNetwork pods and the node apart.
    NodeNetwork,
}

impl MetadataService {
    /// The credentials for the pod the request's token is bound to.
    pub(super) async fn container_credentials<B>(
        &self,
        request: &Request<B>,
        connection: &Connection,
    ) -> Result<Response<Body>, Refusal> {
        let Some(endpoint) = self.container.as_ref() else {
            return Err(Refusal::NotForCaller);
        };
        if request.uri().path() != CREDENTIALS_PATH {
            return Err(Refusal::UnknownPath);
        }
        if request.method() != Method::GET {
            return Err(Refusal::MethodNotAllowed);
        }
        // The absolute form (`GET http://host/...`) names its own host,
        // which wins over `Host`: not a form any SDK sends.
        if request.uri().authority().is_some() || !endpoint.host_allowed(request.headers()) {
            return Err(Refusal::WrongHost);
        }
        let token = service_account_token(request.headers())?;
        let sender = self.sender(connection).await?;
        let bound = endpoint
            .reviews
            .review(token, &connection.limit_key().to_string())
            .await
            .map_err(|error| match error {
                ReviewError::Rejected(why) => Refusal::TokenRejected(why),
                ReviewError::Unavailable(why) => Refusal::TokenReviewFailed(why),
            })?;
        if let (Some(here), Some(there)) = (&endpoint.node, &bound.node)
            && here != there
        {
            return Err(Refusal::TokenForOtherNode {
                node: there.clone(),
            });
        }
        // Before anything about the token's pod (its role, or that it has
        // none) is decided or told: is the sender that pod?
        self.check_sender(&sender, &bound).await?;
        let caller = Caller::Token(TokenPod {
            pod: bound.pod,
            uid: bound.pod_uid,
            service_account: bound.service_account,
        });
        let grant = self
            .entitlements
            .decide_waiting(&caller, self.settings.lookup_wait)
            .await?;
        self.check_pod_is_here(&grant).await?;
        match self.cache.get(&grant.key).await {
            Ok(credentials) => {
                let peer = crate::entitlement::canonical(connection.peer.ip());
                self.decisions
                    .granted(peer, &grant, &credentials, &self.metrics);
                Ok(responses::container_credentials(
                    &credentials,
                    grant.target.role.account(),
                ))
            }
            Err(error) => Err(Refusal::Sts(Box::new(StsFailure {
                pod: grant.pod.key(),
                role: grant.target.role.clone(),
                error,
            }))),
        }
    }

    /// Who the kernel says is calling:
    /// - an address of no pod of this node (a host beside the node) is
    ///   refused before its token costs a review;
    /// - a pod that has just started is waited for, as on the metadata
    ///   path;
    /// - where cgroups can name callers on the node's addresses, one in
    ///   no pod's cgroup (a system daemon, a container run outside
    ///   Kubernetes) is refused.
    async fn sender(&self, connection: &Connection) -> Result<Sender, Refusal> {
        let ip = match connection.caller()? {
            Caller::HostNetworkPod(uid) => return Ok(Sender::HostNetworkPod(uid.to_string())),
            Caller::Token(_) => return Err(Refusal::UnknownSender),
            Caller::Address(ip) => *ip,
        };
        let cgroups = self.cgroups.as_deref();
        if connection.from_node() || cgroups.is_some_and(|c| c.is_node_address(ip)) {
            return match cgroups {
                // The server named every caller on the node's addresses
                // that it could; this one is in no pod's cgroup.
                Some(_) => Err(Refusal::UnknownSender),
                None => Ok(Sender::NodeNetwork),
            };
        }
        match self
            .entitlements
            .store()
            .wait_for(ip, self.settings.lookup_wait)
            .await
        {
            Ok(view) => Ok(Sender::Pod(view.pod.uid.clone())),
            Err(LookupError::NotReady | LookupError::Stale { .. }) => {
                Err(Refusal::Lookup(LookupError::NotReady))
            }
            Err(_) => Err(Refusal::UnknownSender),
        }
    }

    /// The token's pod must be its sender. A pod with an address of its
    /// own never calls from the node's addresses, so only a hostNetwork
    /// pod's token is good there (and only from its own cgroup, where
    /// cgroups can tell).
    async fn check_sender(&self, sender: &Sender, bound: &BoundToken) -> Result<(), Refusal> {
        let another = || Refusal::TokenOfAnotherCaller {
            pod: bound.pod.clone(),
        };
        match sender {
            Sender::Pod(uid) | Sender::HostNetworkPod(uid) if *uid == bound.pod_uid => Ok(()),
            Sender::Pod(_) | Sender::HostNetworkPod(_) => Err(another()),
            Sender::NodeNetwork => {
                let view = self
                    .entitlements
                    .store()
                    .wait_for_pod(&bound.pod, self.settings.lookup_wait)
                    .await
                    .map_err(|_| another())?;
                if view.pod.host_network && view.pod.uid == bound.pod_uid {
                    Ok(())
                } else {
                    Err(another())
                }
            }
        }
    }

    /// Where the node's cgroups are usable, a token's pod must still have
    /// its cgroup here: a review is remembered for minutes, and the watch
    /// may not yet have reported the pod's deletion.
    async fn check_pod_is_here(&self, grant: &Grant) -> Result<(), Refusal> {
        let Some(cgroups) = self.cgroups.as_deref() else {
            return Ok(());
        };
        let Some(uid) = PodUid::parse(&grant.pod.uid) else {
            return Err(Refusal::NotOnNode {
                pod: grant.pod.key(),
            });
        };
        if cgroups.pod_is_here(&uid) {
            return Ok(());
        }
        // A pod whose cgroup appeared just after the last walk of the tree.
        tokio::time::sleep(crate::identity::cgroups::REFRESH_AT_MOST).await;
        if cgroups.pod_is_here(&uid) {
            Ok(())
        } else {
            Err(Refusal::NotOnNode {
                pod: grant.pod.key(),
            })
        }
    }
}

/// The raw `Authorization` value (the SDKs send the token as is, no
/// scheme; a `Bearer ` prefix is tolerated). Exactly one such header.
fn service_account_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    if headers.get_all(header::AUTHORIZATION).iter().count() > 1 {
        return Err(Refusal::DuplicateHeader);
    }
    let value = only(headers, header::AUTHORIZATION).ok_or(Refusal::MissingServiceAccountToken)?;
    let text = value
        .to_str()
        .map_err(|_| Refusal::TokenRejected("the Authorization header is not text".into()))?;
    let text = text.trim_start();
    let token = text.strip_prefix("Bearer ").unwrap_or(text).trim();
    if token.is_empty() || token == "Bearer" {
        return Err(Refusal::MissingServiceAccountToken);
    }
    if token.len() > MAX_TOKEN_BYTES || token.contains(char::is_whitespace) {
        return Err(Refusal::TokenRejected(
            "the Authorization header does not hold a token".into(),
        ));
    }
    Ok(token)
}

/// The header's value when it appears exactly once.
fn only(headers: &HeaderMap, name: header::HeaderName) -> Option<&http::HeaderValue> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}
