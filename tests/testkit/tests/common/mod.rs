//! Clients for the test API server: raw HTTP (hyper) and the real kubectl.
// Each test file uses a different part of this.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iamlet_testkit::ApiServer;
use serde_json::{Value, json};

/// What kube-rs 5 sends (kube-core's `JSON_METADATA_MIME` and
/// `JSON_METADATA_LIST_MIME`).
pub const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
pub const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// One request; the reply's status and JSON body (`null` if not JSON).
pub async fn call(
    api: &ApiServer,
    method: &str,
    path: &str,
    accept: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| ("application/json", Bytes::from(b.to_string())));
    reply(send(api, method, path, accept, body).await).await
}

/// A PATCH (or any request) with a body of the given content type, sent
/// as is; the reply's status and JSON body.
pub async fn send_body(
    api: &ApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let body = Some((content_type, Bytes::from(body.to_string())));
    reply(send(api, method, path, None, body).await).await
}

async fn reply(response: hyper::Response<hyper::body::Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The first `count` events of a watch (fewer if it ends or `wait` passes).
pub async fn watch_events(
    api: &ApiServer,
    path: &str,
    accept: Option<&str>,
    count: usize,
    wait: Duration,
) -> Vec<Value> {
    let response = send(api, "GET", path, accept, None).await;
    assert_eq!(response.status().as_u16(), 200, "watch {path}");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while events.len() < count {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            _ => break,
        };
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            events.push(serde_json::from_slice(&line).expect("an event per line"));
        }
    }
    events
}

async fn send(
    api: &ApiServer,
    method: &str,
    path: &str,
    accept: Option<&str>,
    body: Option<(&str, Bytes)>,
) -> hyper::Response<hyper::body::Incoming> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", api.url()));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let body = match body {
        Some((content_type, body)) => {
            request = request.header("content-type", content_type);
            body
        }
        None => Bytes::new(),
    };
    client
        .request(request.body(Full::new(body)).expect("request"))
        .await
        .expect("send")
}

/// A TokenReview over HTTP; its answer (201 whatever the verdict).
pub async fn review(api: &ApiServer, token: &str, audiences: &[&str]) -> Value {
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    });
    let (status, answer) = call(
        api,
        "POST",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// The real kubectl against `api`, through a kubeconfig of its own.
pub struct Kubectl {
    home: tempfile::TempDir,
}

impl Kubectl {
    pub fn new(api: &ApiServer) -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: nobody\n\
             current-context: fake\nusers:\n- name: nobody\n  user: {{}}\n",
            api.url()
        );
        std::fs::write(home.path().join("config"), config).expect("write kubeconfig");
        Kubectl { home }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("HOME", self.home.path())
            .env("KUBECONFIG", self.home.path().join("config"))
            .env("KUBECACHEDIR", self.home.path().join("cache"))
            .output()
            .expect("run kubectl (it must be on PATH)")
    }

    /// Runs and insists on success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs and insists on failure; stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "kubectl {args:?} should fail: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

/// A JWT's claims, unverified.
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}
