//! A real moto server (STS, IAM, S3) behind a recording proxy that counts
//! and keeps the AssumeRole calls reaching it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// What the recording proxy does with AssumeRole calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StsFault {
    None,
    /// 503 with no body, as an unreachable or overloaded endpoint.
    Unavailable,
    /// 400 with STS's `Throttling` error.
    Throttle,
    /// 403 `AccessDenied`, whose message names the node's role and instance
    /// id, as real STS's does.
    AccessDenied,
    /// Passed to moto with `DurationSeconds` cut to 600: STS answers with
    /// credentials that expire sooner than the agent may serve.
    ShortLived,
}

/// The node identity real STS names in an AccessDenied message.
pub const NODE_ROLE_IN_STS_ERROR: &str =
    "arn:aws:sts::123456789012:assumed-role/node-instance-role/i-0123456789abcdef0";

pub struct Moto {
    child: Child,
    /// moto itself.
    pub direct_url: String,
    /// The recording proxy in front of moto: what the agent is given.
    pub url: String,
    calls: Arc<Mutex<Vec<String>>>,
    /// Extra latency the proxy adds to every STS call.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    fault: Arc<Mutex<StsFault>>,
    rate: Arc<Mutex<RateLimit>>,
}

/// STS's per-account rate limit, as a stand-in: AssumeRole calls above
/// `limit` in any second are answered `Throttling`.
#[derive(Default)]
struct RateLimit {
    limit: Option<usize>,
    /// Calls passed to moto in the last second.
    window: std::collections::VecDeque<std::time::Instant>,
    /// Every AssumeRole call's arrival.
    arrivals: Vec<std::time::Instant>,
    throttled: usize,
}

impl Moto {
    pub async fn start() -> Moto {
        // A free port can be taken by another test's server between the
        // probe and moto's bind (more likely the more tests start servers
        // at once): moto then exits, and another port is tried.
        let mut attempts = 0;
        let (child, port, direct_url) = loop {
            attempts += 1;
            match Self::spawn_ready().await {
                Ok(started) => break started,
                Err(why) if attempts < 3 => {
                    eprintln!("moto did not start ({why}); trying another port")
                }
                Err(why) => panic!("moto did not start after {attempts} attempts: {why}"),
            }
        };
        let calls = Arc::new(Mutex::new(Vec::new()));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let fault = Arc::new(Mutex::new(StsFault::None));
        let rate = Arc::new(Mutex::new(RateLimit::default()));
        let proxy = start_recorder(
            port,
            calls.clone(),
            delay_ms.clone(),
            fault.clone(),
            rate.clone(),
        )
        .await;
        Moto {
            child,
            direct_url,
            url: format!("http://{proxy}"),
            calls,
            delay_ms,
            fault,
            rate,
        }
    }

    /// Request bodies of every AssumeRole call so far.
    pub fn assume_role_calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|body| body.contains("Action=AssumeRole"))
            .cloned()
            .collect()
    }

    pub fn set_fault(&self, fault: StsFault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Throttles AssumeRole calls above `per_second` in any second.
    pub fn throttle_above(&self, per_second: usize) {
        self.rate.lock().unwrap().limit = Some(per_second);
    }

    /// When each AssumeRole call arrived, throttled ones included.
    pub fn assume_role_arrivals(&self) -> Vec<std::time::Instant> {
        self.rate.lock().unwrap().arrivals.clone()
    }

    /// AssumeRole calls answered `Throttling` by the rate limit.
    pub fn throttled(&self) -> usize {
        self.rate.lock().unwrap().throttled
    }

    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl Moto {
    /// moto on a free port, once it answers; its process, port and URL.
    async fn spawn_ready() -> Result<(Child, u16, String), String> {
        let port = super::free_port();
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("iamlet-moto-{port}.log")))
                .expect("moto log file");
        let mut child = Command::new(super::venv().join("bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        let direct_url = format!("http://127.0.0.1:{port}");
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let ready_url: hyper::Uri = format!("{direct_url}/moto-api/").parse().expect("URL");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("moto exited with {status} (port {port} taken?)"));
            }
            if let Ok(response) = client.get(ready_url.clone()).await
                && response.status().is_success()
            {
                return Ok((child, port, direct_url));
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer on port {port} within 45 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy's shared state.
struct Recorder {
    moto_port: u16,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    calls: Arc<Mutex<Vec<String>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    fault: Arc<Mutex<StsFault>>,
    rate: Arc<Mutex<RateLimit>>,
}

async fn start_recorder(
    moto_port: u16,
    calls: Arc<Mutex<Vec<String>>>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    fault: Arc<Mutex<StsFault>>,
    rate: Arc<Mutex<RateLimit>>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("recorder port");
    let addr = listener.local_addr().expect("recorder address");
    let recorder = Arc::new(Recorder {
        moto_port,
        client: Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>(),
        calls,
        delay_ms,
        fault,
        rate,
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let recorder = recorder.clone();
                    async move { Ok::<_, Infallible>(recorder.answer(request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

impl Recorder {
    async fn answer(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let (mut parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut text = String::from_utf8_lossy(&body).into_owned();
        let assume_role = text.contains("Action=AssumeRole");
        self.calls.lock().unwrap().push(text.clone());
        let delay = self.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if assume_role && self.over_rate() {
            return fault_response(StsFault::Throttle);
        }
        let fault = *self.fault.lock().unwrap();
        let mut body = body;
        if assume_role && fault == StsFault::ShortLived {
            text = regex::Regex::new("DurationSeconds=[0-9]+")
                .unwrap()
                .replace(&text, "DurationSeconds=600")
                .into_owned();
            parts.headers.remove("content-length");
            body = Bytes::from(text);
        } else if assume_role && fault != StsFault::None {
            return fault_response(fault);
        }
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = format!("http://127.0.0.1:{}{path}", self.moto_port)
            .parse()
            .expect("URI");
        match self
            .client
            .request(hyper::Request::from_parts(parts, Full::new(body)))
            .await
        {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                hyper::Response::from_parts(parts, Full::new(body))
            }
            Err(_) => status(hyper::StatusCode::BAD_GATEWAY, "moto unreachable"),
        }
    }
}

impl Recorder {
    /// Records an AssumeRole call's arrival; true when it is over the rate.
    fn over_rate(&self) -> bool {
        let mut rate = self.rate.lock().unwrap();
        let now = std::time::Instant::now();
        rate.arrivals.push(now);
        let Some(limit) = rate.limit else {
            return false;
        };
        while rate
            .window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            rate.window.pop_front();
        }
        if rate.window.len() >= limit {
            rate.throttled += 1;
            return true;
        }
        rate.window.push_back(now);
        false
    }
}

fn fault_response(fault: StsFault) -> hyper::Response<Full<Bytes>> {
    match fault {
        StsFault::Throttle => {
            let mut response = status(
                hyper::StatusCode::BAD_REQUEST,
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                 <Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>r</RequestId></ErrorResponse>",
            );
            response
                .headers_mut()
                .insert("content-type", "text/xml".parse().unwrap());
            response
        }
        StsFault::AccessDenied => {
            let body = format!(
                "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type>\
                 <Code>AccessDenied</Code><Message>User: {NODE_ROLE_IN_STS_ERROR} is not authorized to perform: \
                 sts:AssumeRole on resource: arn:aws:iam::123456789012:role/denied</Message></Error>\
                 <RequestId>r</RequestId></ErrorResponse>"
            );
            let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = hyper::StatusCode::FORBIDDEN;
            response
                .headers_mut()
                .insert("content-type", "text/xml".parse().unwrap());
            response
        }
        StsFault::Unavailable | StsFault::None | StsFault::ShortLived => {
            status(hyper::StatusCode::SERVICE_UNAVAILABLE, "")
        }
    }
}

fn status(code: hyper::StatusCode, body: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}
