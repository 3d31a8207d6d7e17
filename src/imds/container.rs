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
use crate::token_review::{ReviewError, TokenReviews};

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
    /// before anything else is looked up.
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

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let host = host.trim().to_ascii_lowercase();
        self.hosts.contains(&host)
    }
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
        if !endpoint.host_allowed(request.headers()) {
            return Err(Refusal::WrongHost);
        }
        let token = service_account_token(request.headers())?;
        let bound = endpoint
            .reviews
            .review(token)
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
        let caller = Caller::Token(TokenPod {
            pod: bound.pod,
            uid: bound.pod_uid,
            service_account: bound.service_account,
        });
        let grant = self
            .entitlements
            .decide_waiting(&caller, self.settings.lookup_wait)
            .await?;
        self.check_sender(&grant, connection).await?;
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

    /// A token proves whose it is, and the kernel says who sent it:
    /// - a hostNetwork pod named by its socket's cgroup must be the token's
    ///   pod;
    /// - a caller with a pod address must be the pod with that address
    ///   (waiting, as the metadata path does, for the watch to report a
    ///   pod that has just started);
    /// - a process of the node itself, which the kernel names as no pod, is
    ///   judged by the token alone.
    ///
    /// So a token taken from its pod is worth nothing to another pod, nor
    /// to a host next to the node.
    async fn check_sender(&self, grant: &Grant, connection: &Connection) -> Result<(), Refusal> {
        let another = || Refusal::TokenOfAnotherCaller {
            pod: grant.pod.key(),
        };
        let sender = match connection.caller() {
            Ok(Caller::HostNetworkPod(uid)) if uid.as_str() == grant.pod.uid => return Ok(()),
            Ok(Caller::HostNetworkPod(_)) => return Err(another()),
            Ok(Caller::Address(ip)) => *ip,
            // A caller on the node's own addresses that no pod's cgroup
            // claims: the node's own process.
            Ok(Caller::Token(_)) | Err(_) => return Ok(()),
        };
        let on_node = connection.from_node()
            || self
                .cgroups
                .as_deref()
                .is_some_and(|cgroups| cgroups.is_node_address(sender));
        if on_node {
            return Ok(());
        }
        let store = self.entitlements.store();
        match store.wait_for(sender, self.settings.lookup_wait).await {
            Ok(view) if view.pod.uid == grant.pod.uid => Ok(()),
            Ok(_) | Err(LookupError::Conflict { .. }) => Err(another()),
            Err(_) => Err(Refusal::UnknownSender {
                pod: grant.pod.key(),
            }),
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
/// scheme; a `Bearer ` prefix is tolerated).
fn service_account_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(Refusal::MissingServiceAccountToken)?;
    let text = value
        .to_str()
        .map_err(|_| Refusal::TokenRejected("the Authorization header is not text".into()))?
        .trim();
    let token = text.strip_prefix("Bearer ").unwrap_or(text).trim();
    if token.is_empty() {
        return Err(Refusal::MissingServiceAccountToken);
    }
    if token.len() > MAX_TOKEN_BYTES || token.contains(char::is_whitespace) {
        return Err(Refusal::TokenRejected(
            "the Authorization header does not hold a token".into(),
        ));
    }
    Ok(token)
}
