//! The real `iamlet` binary, started against the test fixtures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Node;
use super::clients::{Reply, http_request};

/// The agent's own debug lines, everyone else's warnings.
pub const DEFAULT_LOG: &str = "warn,iamlet=debug";

pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent and waits until it is ready (pods listed).
    pub async fn start(node: &Node, extra: &[&str]) -> Agent {
        Self::start_logging(node, extra, DEFAULT_LOG).await
    }

    /// [`Agent::start`] with `RUST_LOG` set to `filter`.
    pub async fn start_logging(node: &Node, extra: &[&str], filter: &str) -> Agent {
        let mut agent = Self::spawn(node, extra, filter);
        agent.wait_for("/readyz").await;
        agent
    }

    /// Starts the agent and waits only until it answers (`/healthz`).
    pub async fn start_unready(node: &Node, extra: &[&str]) -> Agent {
        let mut agent = Self::spawn(node, extra, DEFAULT_LOG);
        agent.wait_for("/healthz").await;
        agent
    }

    /// [`Agent::start`] with more environment variables (they win over
    /// the harness's own).
    pub async fn start_with_env(node: &Node, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut agent = Self::spawn_with_env(node, extra, DEFAULT_LOG, env);
        agent.wait_for("/readyz").await;
        agent
    }

    fn spawn(node: &Node, extra: &[&str], filter: &str) -> Agent {
        Self::spawn_with_env(node, extra, filter, &[])
    }

    fn spawn_with_env(node: &Node, extra: &[&str], filter: &str, env: &[(&str, &str)]) -> Agent {
        let port = super::free_port();
        let addr = super::socket("127.0.0.1", port);
        let dir = tempfile::tempdir().expect("agent temp dir");
        let log = dir.path().join("iamlet.log");
        let mut args = vec![
            "--host-ip=127.0.0.1".to_string(),
            format!("--app-port={port}"),
            // kube2iam's default metrics port is a fixed 8181: keep metrics on
            // the app port so parallel agents do not collide (tests override).
            format!("--metrics-port={port}"),
            format!("--api-server={}", node.api.url()),
            format!("--node={}", super::NODE),
            format!("--metadata-addr={}", node.imds.addr),
            format!("--base-role-arn=arn:aws:iam::{}:role/", super::ACCOUNT),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_iamlet"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("AWS_ACCESS_KEY_ID", "AKIDNODEIDENTITY0001")
            .env("AWS_SECRET_ACCESS_KEY", "node-static-secret")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &node.moto.url)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("RUST_LOG", filter)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("start iamlet");
        Agent {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    async fn wait_for(&mut self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "iamlet exited with {status} before becoming ready:\n{}",
                    self.logs()
                );
            }
            if let Ok(reply) = http_request("127.0.0.1", self.addr, "GET", path, &[]).await
                && reply.status == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "iamlet not ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request to the agent from `source` (a pod IP on loopback).
    pub async fn request(
        &self,
        source: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        http_request(source, self.addr, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} from {source}: {e}"))
    }

    pub async fn get(&self, source: &str, path: &str) -> Reply {
        self.request(source, "GET", path, &[]).await
    }

    /// The agent's log so far. Its lines are written by a writer thread:
    /// give it a moment to catch up with the request just answered.
    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(150));
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("iamlet exit status")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- iamlet log ---\n{}", self.logs());
        }
    }
}
