//! What the metadata server answers, request by request. The caller's
//! identity is the TCP peer address (after DNAT); no header is trusted.
//! Which role the caller may have is decided by [`Entitlements::decide`]
//! alone; this module turns decisions and refusals into answers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tracing::{debug, warn};

use super::connection::{Connection, ConnectionLimits};
use super::decisions::DecisionLog;
use super::limit::RateLimiter;
use super::proxy::{ProxyError, Upstream};
use super::responses::{self, Body};
use super::routes::{AgentRoute, DenyList, MetadataRoute, Origin, Route, route};
use super::token::{self, TOKEN_HEADER, TTL_HEADER, TokenIssuer};
use crate::clock::Clock;
use crate::credentials::CredentialCache;
use crate::entitlement::{Caller, Entitlements, Grant, Refusal, StsFailure, canonical};
use crate::identity::CgroupIdentity;
use crate::telemetry::Metrics;

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--host-ip:--app-port`, where pods' DNATed traffic arrives.
    Metadata,
    /// `--host-ip:--metrics-port`, when it differs: agent routes only.
    Metrics,
    /// `--container-credentials-listen`: `GET /v1/credentials` only.
    ContainerCredentials,
}

#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub require_imdsv2: bool,
    /// How long a request from an unknown IP waits for the pod watch.
    pub lookup_wait: Duration,
    pub debug: bool,
    pub deny: DenyList,
    /// Serve `/metrics` on the metadata listener (no separate metrics port).
    pub metrics_on_app_port: bool,
    /// Requests per second a pod may make (burst twice that); 0: no limit.
    pub pod_request_rate: f64,
    /// Of those, requests per second passed to the real metadata service.
    pub pod_proxy_rate: f64,
    /// Connections open at once from one address, and in all.
    pub max_connections_per_source: usize,
    pub max_connections: usize,
}

#[derive(Debug)]
pub struct MetadataService {
    pub entitlements: Arc<Entitlements>,
    pub cache: Arc<CredentialCache>,
    pub upstream: Arc<Upstream>,
    pub tokens: TokenIssuer,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub settings: ServiceSettings,
    /// Every request from an address.
    pub request_limit: RateLimiter<Caller>,
    /// Requests passed to the real metadata service.
    pub proxy_limit: RateLimiter<Caller>,
    pub decisions: DecisionLog,
    /// Open connections, capped per source and in all.
    pub connections: Arc<ConnectionLimits>,
    /// The node's pod cgroups, when `--cgroup-root` can tell pods apart.
    pub cgroups: Option<Arc<CgroupIdentity>>,
    /// The container credentials endpoint, when served.
    pub container: Option<super::ContainerEndpoint>,
    /// Warning Events on refused pods (`--pod-events`).
    pub events: Option<crate::events::PodEvents>,
    /// Where the startup taint's removal is, when it is the agent's job.
    pub startup: Option<tokio::sync::watch::Receiver<crate::startup::Phase>>,
}

impl MetadataService {
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        connection: &Connection,
        listener: Listener,
    ) -> Response<Body> {
        let started = Instant::now();
        let caller = canonical(connection.peer.ip());
        let (label, response) = match self.answer(&request, caller, connection, listener).await {
            Ok(answer) => answer,
            Err((label, refusal)) => (label, self.refuse(caller, &request, &refusal, listener)),
        };
        self.metrics
            .request(label, response.status().as_u16(), started.elapsed());
        response
    }

    async fn answer<B>(
        &self,
        request: &Request<B>,
        caller: IpAddr,
        connection: &Connection,
        listener: Listener,
    ) -> Result<(&'static str, Response<Body>), (&'static str, Refusal)> {
        if !self.request_limit.allow(connection.limit_key()) {
            return Err(("invalid", Refusal::RateLimited));
        }
        if listener == Listener::ContainerCredentials {
            const LABEL: &str = "container-credentials";
            return self
                .container_credentials(request, connection)
                .await
                .map(|response| (LABEL, response))
                .map_err(|refusal| (LABEL, refusal));
        }
        let path = request.uri().path();
        let route = route(
            request.method(),
            path,
            connection.origin,
            &self.settings.deny,
        )
        .map_err(|refusal| {
            let label = match refusal {
                Refusal::DenyList => "denied",
                Refusal::VersionedToken => "token",
                _ => "invalid",
            };
            (label, refusal)
        })?;
        let label = route.label();
        let response = match route {
            Route::Agent(agent) => {
                let query = request.uri().query();
                self.agent_route(agent, query, caller, connection, listener)
                    .await
            }
            Route::Metadata(metadata) => match listener {
                Listener::Metadata => self.metadata(metadata, request, caller, connection).await,
                Listener::Metrics | Listener::ContainerCredentials => Err(Refusal::NotForCaller),
            },
        };
        response
            .map(|response| (label, response))
            .map_err(|refusal| (label, refusal))
    }

    async fn agent_route(
        &self,
        route: AgentRoute,
        query: Option<&str>,
        caller: IpAddr,
        connection: &Connection,
        listener: Listener,
    ) -> Result<Response<Body>, Refusal> {
        match route {
            AgentRoute::Healthz => Ok(self.healthz()),
            AgentRoute::Readyz => Ok(self.readyz()),
            AgentRoute::Metrics => match listener {
                Listener::Metrics => Ok(self.metrics_page().await),
                Listener::Metadata if self.settings.metrics_on_app_port => {
                    Ok(self.metrics_page().await)
                }
                Listener::Metadata | Listener::ContainerCredentials => Err(Refusal::NotForCaller),
            },
            // These name pods and roles: for the node's operators, never pods.
            AgentRoute::DebugStore
                if self.settings.debug && self.operator(caller, connection).await =>
            {
                Ok(self.debug_store().await)
            }
            AgentRoute::Explain if self.operator(caller, connection).await => {
                Ok(self.explain(query.unwrap_or("")).await)
            }
            AgentRoute::DebugStore | AgentRoute::Explain => Err(Refusal::NotForCaller),
        }
    }

    /// A caller on the node that is no pod: not an address a pod claims,
    /// and (where cgroups can tell) not a socket of a hostNetwork pod,
    /// unless of the agent's own pod (`kubectl exec` into it). A socket
    /// the kernel cannot place is refused.
    async fn operator(&self, caller: IpAddr, connection: &Connection) -> bool {
        if !self.on_node(caller, connection) {
            return false;
        }
        let Some(cgroups) = self.cgroups.clone() else {
            return true;
        };
        let (peer, local) = (connection.peer, connection.local);
        let placed = {
            let cgroups = cgroups.clone();
            tokio::task::spawn_blocking(move || cgroups.pod_of_socket_fresh(peer, local)).await
        };
        match placed {
            Ok(Err(crate::identity::Unidentified::NotAPod(_))) => true,
            Ok(Ok(uid)) => cgroups.agent_pod() == Some(&uid),
            Ok(Err(_)) | Err(_) => false,
        }
    }

    /// A caller on the node itself that no pod in the index claims.
    fn on_node(&self, caller: IpAddr, connection: &Connection) -> bool {
        connection.from_node() && !self.entitlements.store().claims(caller)
    }

    async fn metadata<B>(
        &self,
        route: MetadataRoute<'_>,
        request: &Request<B>,
        caller: IpAddr,
        connection: &Connection,
    ) -> Result<Response<Body>, Refusal> {
        let headers = request.headers();
        if route != MetadataRoute::Token {
            self.check_token(headers, caller)?;
        }
        match route {
            MetadataRoute::Token => self.issue_token(headers, caller),
            MetadataRoute::RoleList => {
                let grant = self.decide(connection).await?;
                Ok(responses::text(
                    StatusCode::OK,
                    grant.target.role.name().to_string(),
                ))
            }
            MetadataRoute::RoleCredentials(name) => {
                self.credentials(caller, connection, name).await
            }
            MetadataRoute::IamInfo => {
                let grant = self.decide(connection).await?;
                Ok(responses::iam_info(&grant.target.role, self.clock.now()))
            }
            MetadataRoute::IamListing => {
                self.decide(connection).await?;
                Ok(responses::text(
                    StatusCode::OK,
                    "info\nsecurity-credentials/",
                ))
            }
            MetadataRoute::ExtendedCredentials
            | MetadataRoute::IamOther
            | MetadataRoute::Unversioned => Ok(responses::status_page(StatusCode::NOT_FOUND)),
            MetadataRoute::Proxy if self.may_proxy(caller, connection) => {
                self.proxy(request.method(), request, caller, connection.limit_key())
                    .await
            }
            MetadataRoute::Proxy => Err(Refusal::NotForCaller),
        }
    }

    /// The node's metadata is the node's pods' (and the node's) business:
    /// a caller that came through the DNAT, is a pod of this node, or is the
    /// node itself. Anything else that reaches the agent's address directly
    /// (a pod of another node, a host in the VPC) must not read this node's
    /// metadata through the agent's token.
    fn may_proxy(&self, caller: IpAddr, connection: &Connection) -> bool {
        connection.origin == Origin::Dnat
            || self.entitlements.store().claims(caller)
            || self.on_node(caller, connection)
    }

    /// The decision for this connection's caller (its address, or the
    /// hostNetwork pod the kernel named), confirmed against the node's
    /// cgroups where they are usable.
    async fn decide(&self, connection: &Connection) -> Result<Grant, Refusal> {
        let grant = self
            .entitlements
            .decide_waiting(connection.caller()?, self.settings.lookup_wait)
            .await?;
        let cgroups = self.cgroups.as_deref();
        if let Err(refusal) = connection.verify(&grant.pod, cgroups) {
            // A pod whose cgroup appeared just after the last walk of the
            // tree: the next walk (at most 100 ms away) finds it.
            tokio::time::sleep(crate::identity::cgroups::REFRESH_AT_MOST).await;
            connection
                .verify(&grant.pod, cgroups)
                .map_err(|_| refusal)?;
        }
        Ok(grant)
    }

    async fn credentials(
        &self,
        caller: IpAddr,
        connection: &Connection,
        requested: &str,
    ) -> Result<Response<Body>, Refusal> {
        let grant = self.decide(connection).await?;
        grant.check_requested(requested)?;
        match self.cache.get(&grant.key).await {
            Ok(credentials) => {
                self.decisions
                    .granted(caller, &grant, &credentials, &self.metrics);
                Ok(responses::credentials(&credentials))
            }
            Err(error) => Err(Refusal::Sts(Box::new(StsFailure {
                pod: grant.pod.key(),
                role: grant.target.role.clone(),
                error,
            }))),
        }
    }

    /// The answer for a refusal, logged and counted once here.
    fn refuse<B>(
        &self,
        caller: IpAddr,
        request: &Request<B>,
        refusal: &Refusal,
        listener: Listener,
    ) -> Response<Body> {
        self.metrics.deny(refusal.label());
        self.decisions
            .refused(caller, request.uri().path(), refusal);
        if let Some(events) = &self.events {
            events.refused(refusal);
        }
        let mut response = match refusal.pod_error() {
            _ if listener == Listener::ContainerCredentials => {
                let (status, code, message) = refusal.container_error();
                responses::container_error(status, code, &message)
            }
            Some(error) => responses::credential_error(
                refusal.status(),
                error.code,
                &error.message,
                self.clock.now(),
            ),
            None => responses::status_page(refusal.status()),
        };
        if *refusal == Refusal::RateLimited {
            // A client over its budget gets no more from this connection: a
            // pipelining flood is cut here and each reconnect costs it a
            // handshake, refused at accept while the budget stays empty.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    fn issue_token(&self, headers: &HeaderMap, caller: IpAddr) -> Result<Response<Body>, Refusal> {
        // A PUT that went through a proxy is refused, as the real service
        // does: tokens are for the workload that asks, not for relays.
        if headers.contains_key("x-forwarded-for") {
            return Err(Refusal::ForwardedTokenRequest);
        }
        let ttl = token::parse_ttl(headers.get(TTL_HEADER).map(HeaderValue::as_bytes))
            .map_err(|_| Refusal::InvalidTokenTtl)?;
        let value = self.tokens.issue(caller, ttl, self.clock.now());
        let mut response = responses::text(StatusCode::OK, value);
        response
            .headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ttl.as_secs()));
        Ok(response)
    }

    /// A bad token, or no token when IMDSv2 is required, is refused.
    fn check_token(&self, headers: &HeaderMap, caller: IpAddr) -> Result<(), Refusal> {
        match headers.get(TOKEN_HEADER) {
            Some(value) => {
                let text = value.to_str().map_err(|_| Refusal::InvalidToken)?;
                self.tokens
                    .validate(text, caller, self.clock.now())
                    .map_err(|_| Refusal::InvalidToken)
            }
            None if self.settings.require_imdsv2 => Err(Refusal::Imdsv2Required),
            None => Ok(()),
        }
    }

    async fn proxy<B>(
        &self,
        method: &Method,
        request: &Request<B>,
        caller: IpAddr,
        limit_key: Caller,
    ) -> Result<Response<Body>, Refusal> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if !self.proxy_limit.allow(limit_key) {
            return Err(Refusal::ProxyRateLimited);
        }
        match self.upstream.get(method.clone(), path).await {
            Ok(upstream) => {
                debug!(%caller, path, status = upstream.status.as_u16(), "proxied");
                let mut response = Response::new(Body::new(upstream.body));
                *response.status_mut() = upstream.status;
                if let Some(content_type) = upstream.content_type {
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, content_type);
                }
                Ok(response)
            }
            Err(error) => {
                warn!(%caller, path, %error, "metadata proxy failed");
                let status = match error {
                    ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    ProxyError::Unreachable(_) => StatusCode::BAD_GATEWAY,
                    ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
                };
                Ok(responses::status_page(status))
            }
        }
    }
}
