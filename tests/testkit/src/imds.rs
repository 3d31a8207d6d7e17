//! A stand-in for the node's real instance metadata service. It requires
//! IMDSv2 (as hardened nodes do), serves the node's identity and its own
//! role credentials, and records what reached it. In-process for the
//! integration tests, and the `fake-imds` binary in the network-namespace
//! suite and the demo.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const NODE_ACCESS_KEY: &str = "ASIANODEROLEKEY00001";
pub const NODE_SECRET: &str = "node-secret-never-for-pods";
pub const USER_DATA: &str = "#!/bin/bash\necho node-bootstrap-secret\n";
pub const INSTANCE_ID: &str = "i-0123456789abcdef0";
const UPSTREAM_TOKEN: &str = "upstream-node-token";

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

pub struct FakeImds {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeImds {
    pub async fn start() -> FakeImds {
        Self::start_on("127.0.0.1:0".parse().expect("literal address")).await
    }

    pub async fn start_on(addr: std::net::SocketAddr) -> FakeImds {
        let listener = TcpListener::bind(addr).await.expect("fake IMDS port");
        let addr = listener.local_addr().expect("fake IMDS address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (recorded, delay) = (recorded.clone(), delay.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let (recorded, delay) = (recorded.clone(), delay.clone());
                        async move {
                            let ms = delay.load(std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            Ok::<_, Infallible>(answer(&recorded, request))
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeImds {
            addr,
            seen,
            delay_ms,
            task,
        }
    }

    /// Makes every answer wait this long (a slow metadata service).
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Stops answering: the listener closes (a metadata service that is down).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer<B>(recorded: &Mutex<Vec<Seen>>, request: Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    recorded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Seen {
            method: request.method().to_string(),
            path: path.clone(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
        });
    if request.method() == Method::PUT && path == "/latest/api/token" {
        let mut response = text(StatusCode::OK, UPSTREAM_TOKEN.to_string());
        response.headers_mut().insert(
            "x-aws-ec2-metadata-token-ttl-seconds",
            "21600".parse().expect("valid literal"),
        );
        return response;
    }
    let token = request
        .headers()
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    if token != Some(UPSTREAM_TOKEN) {
        return text(StatusCode::UNAUTHORIZED, String::new());
    }
    let node_credentials = format!(
        r#"{{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC","AccessKeyId":"{NODE_ACCESS_KEY}","SecretAccessKey":"{NODE_SECRET}","Token":"node-token","Expiration":"2099-01-01T00:00:00Z"}}"#
    );
    match path.as_str() {
        "/" => text(StatusCode::OK, "latest".into()),
        "/latest/meta-data/instance-id" => text(StatusCode::OK, INSTANCE_ID.into()),
        "/latest/meta-data/placement/availability-zone" => text(StatusCode::OK, "us-east-1a".into()),
        "/latest/user-data" => text(StatusCode::OK, USER_DATA.into()),
        "/latest/meta-data/iam/info" => text(
            StatusCode::OK,
            r#"{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","InstanceProfileArn":"arn:aws:iam::123456789012:instance-profile/node-profile","InstanceProfileId":"AIPANODE"}"#.into(),
        ),
        "/latest/meta-data/iam/security-credentials/" => text(StatusCode::OK, "node-role".into()),
        "/latest/meta-data/iam/security-credentials/node-role"
        | "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance" => {
            text(StatusCode::OK, node_credentials)
        }
        _ => text(StatusCode::NOT_FOUND, "not found".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "text/plain".parse().expect("valid literal"));
    response
}
