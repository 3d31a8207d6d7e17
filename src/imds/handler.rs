//! What the metadata server answers, request by request. The caller's
//! identity is the TCP peer address (after DNAT); no header is trusted.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;
use tracing::{debug, info, warn};

use super::limit::RateLimiter;
use super::proxy::{ProxyError, Upstream};
use super::responses::{self, Body};
use super::routes::{Route, RouteError, route};
use super::token::{self, TOKEN_HEADER, TTL_HEADER, TokenError, TokenIssuer};
use crate::clock::Clock;
use crate::credentials::{CredentialCache, CredentialKey, StsErrorKind};
use crate::pods::{LookupError, PodKey, PodStore, PodView};
use crate::roles::{AssumeTarget, Resolver, RoleError};
use crate::telemetry::Metrics;

/// Which listener a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--host-ip:--app-port`, where pods' DNATed traffic arrives.
    Metadata,
    /// `--host-ip:--metrics-port`, when it differs: metrics and health only.
    Metrics,
}

#[derive(Clone, Debug)]
pub struct ServiceSettings {
    pub require_imdsv2: bool,
    /// How long a request from an unknown IP waits for the pod watch.
    pub lookup_wait: Duration,
    pub debug: bool,
    pub deny: Vec<String>,
    /// Serve `/metrics` on the metadata listener (no separate metrics port).
    pub metrics_on_app_port: bool,
    /// Requests per second a pod may make (burst twice that); 0: no limit.
    pub pod_request_rate: f64,
    /// Of those, requests per second passed to the real metadata service.
    pub pod_proxy_rate: f64,
}

#[derive(Debug)]
pub struct MetadataService {
    pub store: Arc<PodStore>,
    pub resolver: Arc<Resolver>,
    pub cache: Arc<CredentialCache>,
    pub upstream: Arc<Upstream>,
    pub tokens: TokenIssuer,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub settings: ServiceSettings,
    /// Every request from a pod.
    pub request_limit: RateLimiter,
    /// Requests passed to the real metadata service.
    pub proxy_limit: RateLimiter,
}

/// Why a caller gets no role, mapped to the status it sees. The pod is
/// known for every refusal but a failed lookup.
enum Refusal {
    Lookup(LookupError),
    Role(PodKey, RoleError),
    NoRole(PodKey),
}

impl MetadataService {
    pub async fn handle<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        listener: Listener,
    ) -> Response<Body> {
        let started = Instant::now();
        let (label, response) = self.answer(request, peer, listener).await;
        self.metrics
            .request(label, response.status().as_u16(), started.elapsed());
        response
    }

    async fn answer<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        listener: Listener,
    ) -> (&'static str, Response<Body>) {
        let caller = canonical(peer.ip());
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let route = match route(&method, &path, &self.settings.deny) {
            Ok(route) => route,
            Err(RouteError::BadPath) => {
                debug!(%caller, path = %path.escape_debug(), "malformed path");
                self.metrics.deny("malformed-path");
                return ("invalid", responses::status_page(StatusCode::BAD_REQUEST));
            }
            Err(RouteError::MethodNotAllowed) => {
                self.metrics.deny("method-not-allowed");
                return (
                    "invalid",
                    responses::status_page(StatusCode::METHOD_NOT_ALLOWED),
                );
            }
        };
        let label = route.label();
        let headers = request.headers();
        let response = match route {
            Route::Healthz => responses::json(StatusCode::OK, &json!({"status": "ok"})),
            Route::Readyz => self.readyz(),
            Route::Metrics
                if listener == Listener::Metrics || self.settings.metrics_on_app_port =>
            {
                self.metrics_page().await
            }
            _ if listener == Listener::Metrics => responses::status_page(StatusCode::NOT_FOUND),
            Route::Metrics => responses::status_page(StatusCode::NOT_FOUND),
            Route::DebugStore => self.debug_store(caller).await,
            _ if !self.request_limit.allow(caller) => {
                self.metrics.deny("rate-limited");
                debug!(%caller, "request rate limit exceeded");
                responses::status_page(StatusCode::TOO_MANY_REQUESTS)
            }
            Route::Token => self.issue_token(headers, caller),
            Route::VersionedToken => responses::status_page(StatusCode::FORBIDDEN),
            _ => match self.check_token(headers, caller) {
                Err(status) => responses::status_page(status),
                Ok(()) => self.metadata(route, &method, &request, caller).await,
            },
        };
        (label, response)
    }

    async fn metrics_page(&self) -> Response<Body> {
        self.metrics.pods_indexed.set(self.store.pod_count() as i64);
        self.metrics
            .cached_credentials
            .set(self.cache.entry_count().await as i64);
        responses::with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.encode().into(),
        )
    }

    async fn metadata<B>(
        &self,
        route: Route<'_>,
        method: &Method,
        request: &Request<B>,
        caller: IpAddr,
    ) -> Response<Body> {
        match route {
            Route::RoleList => match self.target_for(caller).await {
                Ok((_, target)) => responses::text(StatusCode::OK, target.role.name().to_string()),
                Err(refusal) => self.refuse(caller, "list", None, refusal),
            },
            Route::RoleCredentials(name) => self.credentials(caller, name).await,
            Route::IamInfo => match self.target_for(caller).await {
                Ok((_, target)) => responses::iam_info(&target.role, self.clock.now()),
                Err(refusal) => self.refuse(caller, "info", None, refusal),
            },
            Route::IamListing => match self.target_for(caller).await {
                Ok(_) => responses::text(StatusCode::OK, "info\nsecurity-credentials/"),
                Err(refusal) => self.refuse(caller, "iam", None, refusal),
            },
            Route::ExtendedCredentials | Route::IamOther => {
                responses::status_page(StatusCode::NOT_FOUND)
            }
            Route::Denied => {
                self.metrics.deny("deny-list");
                info!(%caller, path = request.uri().path(), outcome = "denied", reason = "deny-list", "metadata path refused");
                responses::status_page(StatusCode::FORBIDDEN)
            }
            _ => self.proxy(method, request, caller).await,
        }
    }

    async fn credentials(&self, caller: IpAddr, requested: &str) -> Response<Body> {
        let (view, target) = match self.target_for(caller).await {
            Ok(found) => found,
            Err(refusal) => return self.refuse(caller, "credentials", Some(requested), refusal),
        };
        let pod = &view.pod;
        if requested != target.role.name() {
            self.metrics.deny("not-the-pods-role");
            info!(%caller, pod = %pod.key(), role = %target.role, requested, outcome = "denied",
                reason = "not-the-pods-role", "credential decision");
            return responses::status_page(StatusCode::FORBIDDEN);
        }
        let key = CredentialKey::for_pod(&target, pod);
        match self.cache.get(&key).await {
            Ok(credentials) => {
                info!(%caller, pod = %pod.key(), role = %target.role, session = %key.session_name,
                    access_key_id = %credentials.access_key_id, role_source = target.source.label(),
                    outcome = "granted", "credential decision");
                responses::credentials(&credentials)
            }
            Err(error) => {
                let (status, code) = match error.kind {
                    StsErrorKind::AccessDenied => {
                        (StatusCode::FORBIDDEN, "AssumeRoleUnauthorizedAccess")
                    }
                    StsErrorKind::Throttled => (StatusCode::SERVICE_UNAVAILABLE, "Throttling"),
                    StsErrorKind::Unavailable => (StatusCode::BAD_GATEWAY, "StsUnavailable"),
                    StsErrorKind::InvalidRequest | StsErrorKind::Other => {
                        (StatusCode::INTERNAL_SERVER_ERROR, "AssumeRoleFailed")
                    }
                };
                warn!(%caller, pod = %pod.key(), role = %target.role, outcome = "error", sts_code = %error.code,
                    message = %error.message, "credential decision");
                let message = format!(
                    "iamlet could not assume {}: {}: {}",
                    target.role, error.code, error.message
                );
                responses::credential_error(status, code, &message, self.clock.now())
            }
        }
    }

    /// The pod behind `caller` and the role it may use now.
    async fn target_for(&self, caller: IpAddr) -> Result<(PodView, AssumeTarget), Refusal> {
        let view = self
            .store
            .wait_for(caller, self.settings.lookup_wait)
            .await
            .map_err(Refusal::Lookup)?;
        match self.resolver.resolve(&view.pod, view.policy.as_deref()) {
            Ok(Some(target)) => Ok((view, target)),
            Ok(None) => Err(Refusal::NoRole(view.pod.key())),
            Err(error) => Err(Refusal::Role(view.pod.key(), error)),
        }
    }

    fn refuse(
        &self,
        caller: IpAddr,
        what: &str,
        requested: Option<&str>,
        refusal: Refusal,
    ) -> Response<Body> {
        let (pod, reason, detail) = match &refusal {
            Refusal::Lookup(error) => ("-".to_string(), error.reason(), error.to_string()),
            Refusal::Role(pod, error) => (pod.to_string(), error.reason(), error.to_string()),
            Refusal::NoRole(pod) => (
                pod.to_string(),
                "no-role",
                "pod has no role annotation and there is no default role".to_string(),
            ),
        };
        info!(%caller, %pod, what, requested, outcome = "denied", reason, %detail, "credential decision");
        self.metrics.deny(reason);
        let status = match refusal {
            Refusal::Role(
                _,
                RoleError::NotAllowed { .. } | RoleError::InvalidNamespacePolicy { .. },
            ) => StatusCode::FORBIDDEN,
            _ => StatusCode::NOT_FOUND,
        };
        responses::status_page(status)
    }

    fn issue_token(&self, headers: &HeaderMap, caller: IpAddr) -> Response<Body> {
        // A PUT that went through a proxy is refused, as the real service
        // does: tokens are for the workload that asks, not for relays.
        if headers.contains_key("x-forwarded-for") {
            self.metrics.deny("forwarded-token-request");
            return responses::status_page(StatusCode::FORBIDDEN);
        }
        let ttl = match token::parse_ttl(headers.get(TTL_HEADER).map(HeaderValue::as_bytes)) {
            Ok(ttl) => ttl,
            Err(error) => {
                debug!(%caller, %error, "token request refused");
                return responses::status_page(StatusCode::BAD_REQUEST);
            }
        };
        let value = self.tokens.issue(caller, ttl, self.clock.now());
        let mut response = responses::text(StatusCode::OK, value);
        response
            .headers_mut()
            .insert(TTL_HEADER, HeaderValue::from(ttl.as_secs()));
        response
    }

    /// 401 for a bad token, or for no token when IMDSv2 is required.
    fn check_token(&self, headers: &HeaderMap, caller: IpAddr) -> Result<(), StatusCode> {
        match headers.get(TOKEN_HEADER) {
            Some(value) => {
                let text = value.to_str().map_err(|_| StatusCode::UNAUTHORIZED)?;
                self.tokens
                    .validate(text, caller, self.clock.now())
                    .map_err(|error: TokenError| {
                        debug!(%caller, %error, "IMDSv2 token refused");
                        self.metrics.deny("invalid-token");
                        StatusCode::UNAUTHORIZED
                    })
            }
            None if self.settings.require_imdsv2 => {
                self.metrics.deny("imdsv2-required");
                Err(StatusCode::UNAUTHORIZED)
            }
            None => Ok(()),
        }
    }

    async fn proxy<B>(
        &self,
        method: &Method,
        request: &Request<B>,
        caller: IpAddr,
    ) -> Response<Body> {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if !self.proxy_limit.allow(caller) {
            self.metrics.deny("proxy-rate-limited");
            return responses::status_page(StatusCode::TOO_MANY_REQUESTS);
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
                response
            }
            Err(error) => {
                warn!(%caller, path, %error, "metadata proxy failed");
                let status = match error {
                    ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    ProxyError::Unreachable(_) => StatusCode::BAD_GATEWAY,
                    ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
                };
                responses::status_page(status)
            }
        }
    }

    fn readyz(&self) -> Response<Body> {
        if self.store.is_ready() {
            responses::json(
                StatusCode::OK,
                &json!({"status": "ready", "pods": self.store.pod_count()}),
            )
        } else {
            responses::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "waiting for the initial pod list"}),
            )
        }
    }

    /// kube2iam's `/debug/store` shape. Only with `--debug`, and never to a
    /// pod: it maps every pod to its role.
    async fn debug_store(&self, caller: IpAddr) -> Response<Body> {
        if !self.settings.debug || self.store.lookup(caller).is_ok() {
            return responses::status_page(StatusCode::NOT_FOUND);
        }
        let mut namespace_by_ip = BTreeMap::new();
        let mut roles_by_ip = BTreeMap::new();
        for view in self.store.views() {
            let role = match self.resolver.resolve(&view.pod, view.policy.as_deref()) {
                Ok(Some(target)) => target.role.to_string(),
                Ok(None) => String::new(),
                Err(error) => format!("denied: {error}"),
            };
            for ip in &view.pod.ips {
                namespace_by_ip.insert(ip.to_string(), view.pod.namespace.clone());
                roles_by_ip.insert(ip.to_string(), role.clone());
            }
        }
        let roles_by_namespace: BTreeMap<_, _> = self
            .store
            .namespace_policies()
            .into_iter()
            .map(|(name, policy)| (name, policy.describe()))
            .collect();
        responses::json(
            StatusCode::OK,
            &json!({
                "namespaceByIP": namespace_by_ip,
                "rolesByIP": roles_by_ip,
                "rolesByNamespace": roles_by_namespace,
                "cachedCredentials": self.cache.entry_count().await,
            }),
        )
    }
}

/// IPv4 peers on a dual-stack socket arrive as `::ffff:a.b.c.d`; pods are
/// indexed by their plain IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
