//! The real metadata service behind iamlet: non-credential paths are passed
//! to it with the agent's own IMDSv2 token and none of the pod's headers.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::token::{TOKEN_HEADER, TTL_HEADER};

const TOKEN_TTL: Duration = Duration::from_secs(21_600);
/// Renew the upstream token this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// After the upstream refuses IMDSv2, use IMDSv1 for this long before asking again.
const V1_RETRY: Duration = Duration::from_secs(300);
const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("metadata service did not answer within {0:?}")]
    Timeout(Duration),
    #[error("metadata service unreachable: {0}")]
    Unreachable(String),
    #[error("invalid request to the metadata service: {0}")]
    BadRequest(String),
}

#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
}

#[derive(Debug)]
enum TokenState {
    Unknown,
    Token {
        value: String,
        renew_at: Instant,
    },
    /// The upstream does not do IMDSv2 (or refused); retry after this.
    V1Until(Instant),
}

#[derive(Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    timeout: Duration,
    token: Mutex<TokenState>,
}

impl Upstream {
    /// `addr` is `--metadata-addr`: a host, or host:port.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Upstream {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: format!("http://{addr}"),
            timeout,
            token: Mutex::new(TokenState::Unknown),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET` (or `HEAD`) of `path_and_query` on the real metadata service.
    pub async fn get(
        &self,
        method: Method,
        path_and_query: &str,
    ) -> Result<UpstreamResponse, ProxyError> {
        let token = self.token().await;
        let response = self
            .send(method.clone(), path_and_query, token.as_deref())
            .await?;
        if response.status == StatusCode::UNAUTHORIZED {
            // Our token was revoked, the upstream restarted, or it now requires
            // IMDSv2 after refusing it earlier: get a new token, once.
            *self.token.lock().await = TokenState::Unknown;
            let token = self.token().await;
            return self.send(method, path_and_query, token.as_deref()).await;
        }
        Ok(response)
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<UpstreamResponse, ProxyError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|e| ProxyError::Unreachable(e.to_string()))?
                .to_bytes();
            Ok(UpstreamResponse {
                status: parts.status,
                content_type: parts.headers.get(http::header::CONTENT_TYPE).cloned(),
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ProxyError::Timeout(self.timeout))?
    }

    /// The agent's own IMDSv2 token, fetched and renewed as needed; `None`
    /// when the upstream only speaks IMDSv1.
    async fn token(&self) -> Option<String> {
        let mut state = self.token.lock().await;
        let now = Instant::now();
        match &*state {
            TokenState::Token { value, renew_at } if *renew_at > now => return Some(value.clone()),
            TokenState::V1Until(until) if *until > now => return None,
            _ => {}
        }
        match self.fetch_token().await {
            Ok(value) => {
                *state = TokenState::Token {
                    value: value.clone(),
                    renew_at: now + TOKEN_TTL - TOKEN_MARGIN,
                };
                Some(value)
            }
            Err(why) => {
                tracing::debug!(%why, "upstream metadata service gave no IMDSv2 token; using IMDSv1");
                *state = TokenState::V1Until(now + V1_RETRY);
                None
            }
        }
    }

    async fn fetch_token(&self) -> Result<String, String> {
        let request = Request::builder()
            .method(Method::PUT)
            .uri(format!("{}/latest/api/token", self.base))
            .header(TTL_HEADER, TOKEN_TTL.as_secs())
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), 4096)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}"));
            }
            String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "timeout".to_string())?
    }
}
