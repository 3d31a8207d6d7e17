//! Shared fixtures for the integration tests: a real moto server behind a
//! recording proxy, the test API server, a fake upstream metadata service,
//! the real `iamlet` binary, and per-pod relays that give each simulated pod
//! its own source address on loopback.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub mod agent;
pub mod clients;
pub mod container;
pub mod manifest;
pub mod moto;
pub mod netns;
pub mod relay;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use agent::Agent;
pub use iamlet_testkit::{ApiServer, Kind, pod};
pub use moto::Moto;
pub use relay::PodRelay;
pub use upstream::FakeImds;

pub const NODE: &str = "node-a";
pub const ACCOUNT: &str = "123456789012";

pub fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// The project's Python venv with moto and awscli (made by scripts/test.sh).
pub fn venv() -> PathBuf {
    let venv = std::env::var_os("IAMLET_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    assert!(
        venv.join("bin/moto_server").exists(),
        "no moto in {}: run scripts/test.sh (or scripts/setup-test-env.sh) first",
        venv.display()
    );
    venv
}

/// A free loopback port (racy in theory; the kernel does not hand the same
/// ephemeral port out again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` (blocking) until it holds; fails naming `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything one test needs: moto, the API server, the fake upstream
/// metadata service, and (once started) the agent.
pub struct Node {
    pub moto: Moto,
    pub api: ApiServer,
    pub imds: FakeImds,
}

impl Node {
    pub async fn start() -> Node {
        let (moto, api, imds) = tokio::join!(Moto::start(), ApiServer::start(), FakeImds::start());
        Node {
            moto,
            api: api.expect("test API server"),
            imds,
        }
    }

    /// Starts the agent with the flags every test needs plus `extra`.
    pub async fn agent(&self, extra: &[&str]) -> Agent {
        Agent::start(self, extra).await
    }

    /// Adds a running pod on this node.
    pub fn add_pod(&self, namespace: &str, name: &str, ip: &str, role: Option<&str>) {
        let annotations = match role {
            Some(role) => serde_json::json!({"iam.amazonaws.com/role": role}),
            None => serde_json::json!({}),
        };
        self.api
            .put_pod(pod(namespace, name, NODE, ip, annotations));
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        clients::kubectl(&self.api.url(), args)
    }
}

pub fn socket(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("IP literal"), port)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
