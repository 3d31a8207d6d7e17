//! The container credentials endpoint as the tests reach it: an agent
//! whose endpoint listens on loopback, tokens from the test API server,
//! requests with chosen headers (or raw bytes), and what refusals and
//! recorded AssumeRole calls hold.

use std::collections::HashMap;
use std::time::Duration;

use iamlet_testkit::TokenSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::clients::{Reply, http_request};
use super::relay::connect_from;
use super::{Agent, Node, eventually, free_port, socket};

/// The audience iamlet checks by default.
pub const AUDIENCE: &str = "pods.eks.amazonaws.com";
pub const PATH: &str = "/v1/credentials";

/// An agent whose container credentials endpoint listens on loopback.
pub struct Endpoint {
    pub agent: Agent,
    pub port: u16,
}

impl Endpoint {
    pub async fn start(node: &Node, extra: &[&str]) -> Endpoint {
        Self::start_logging(node, extra, super::agent::DEFAULT_LOG).await
    }

    /// [`Endpoint::start`] with the agent's `RUST_LOG` set to `filter`.
    pub async fn start_logging(node: &Node, extra: &[&str], filter: &str) -> Endpoint {
        let port = free_port();
        let listen = format!("--container-credentials-listen=127.0.0.1:{port}");
        let mut args = vec![listen.as_str()];
        args.extend_from_slice(extra);
        let agent = Agent::start_logging(node, &args, filter).await;
        let endpoint = Endpoint { agent, port };
        eventually("the endpoint listens", Duration::from_secs(10), || async {
            endpoint.ask("127.0.0.1", None, &[]).await.ok().map(|_| ())
        })
        .await;
        endpoint
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn ask(
        &self,
        source: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let host = self.host();
        let mut headers: Vec<(&str, &str)> = vec![("host", host.as_str())];
        if let Some(token) = token {
            headers.push(("authorization", token));
        }
        headers.extend_from_slice(extra);
        http_request(
            source,
            socket("127.0.0.1", self.port),
            "GET",
            PATH,
            &headers,
        )
        .await
    }

    pub async fn credentials(&self, source: &str, token: &str) -> Reply {
        self.ask(source, Some(token), &[]).await.unwrap()
    }

    /// Exactly `request`'s bytes from `source`; the status and body of the
    /// answer, `None` when the connection ended without one.
    pub async fn raw(&self, source: &str, request: &[u8]) -> Option<(u16, String)> {
        raw_request(source, self.port, request).await
    }
}

pub async fn raw_request(source: &str, port: u16, request: &[u8]) -> Option<(u16, String)> {
    let mut stream = connect_from(source.parse().unwrap(), socket("127.0.0.1", port))
        .await
        .ok()?;
    stream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((status, body))
}

pub fn token(node: &Node, namespace: &str, account: &str, pod: &str) -> String {
    node.api
        .mint_token(
            TokenSpec::new(namespace, account)
                .pod(pod)
                .audiences([AUDIENCE]),
        )
        .unwrap_or_else(|e| panic!("mint a token for {pod}: {}", e.message))
}

/// `{"code","message"}` of a refusal (and that it holds no credentials).
pub fn refusal(reply: &Reply) -> (u16, String, String) {
    let body = reply.json();
    assert!(body.get("AccessKeyId").is_none(), "{}", reply.body);
    (
        reply.status,
        body["code"].as_str().unwrap_or_default().to_string(),
        body["message"].as_str().unwrap_or_default().to_string(),
    )
}

/// The form fields of a recorded AssumeRole call (`Tags.member.1.Key`...).
pub fn form(call: &str) -> HashMap<String, String> {
    call.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

pub fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
