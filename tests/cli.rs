//! The binary's command line as an operator meets it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::clients::http_request;

fn iamlet(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run iamlet")
}

#[test]
fn version_prints_version_and_commit() {
    let out = iamlet(&["--version"], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("iamlet {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(!text.contains("(commit )"), "{text}");
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    for (args, env, flag) in [
        (
            vec!["--host-ip=10.0.0.1", "--iam-role-session-ttl=forever"],
            vec![],
            "--iam-role-session-ttl",
        ),
        (
            vec!["--host-ip=10.0.0.1", "--namespace-restriction-format=pcre"],
            vec![],
            "--namespace-restriction-format",
        ),
        (
            vec!["--host-ip=10.0.0.1", "--no-such-flag"],
            vec![],
            "--no-such-flag",
        ),
        (vec![], vec![], "--host-ip"),
        (
            vec![
                "--host-ip=10.0.0.1",
                "--startup-taint=iamlet.io/agent-not-ready",
            ],
            vec![],
            "--startup-taint",
        ),
        (
            vec!["--host-ip=10.0.0.1"],
            vec![("IAMLET_STARTUP_TAINT", "x:Sometimes")],
            "--startup-taint",
        ),
        (
            vec!["--host-ip=10.0.0.1"],
            vec![("IAMLET_LOG_FORMAT", "xml")],
            "--log-format",
        ),
        (
            vec![
                "--host-ip=10.0.0.1",
                "--default-role=x",
                "--auto-discover-default-role",
            ],
            vec![],
            "--auto-discover-default-role",
        ),
    ] {
        let out = iamlet(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_from_the_environment_alone_and_stopped_by_sigterm() {
    let api = support::ApiServer::start().await.unwrap();
    let port = support::free_port();
    let port_text = port.to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .env_clear()
        .env("HOST_IP", "127.0.0.1")
        .env("IAMLET_APP_PORT", &port_text)
        .env("IAMLET_METRICS_PORT", &port_text)
        .env("IAMLET_API_SERVER", api.url())
        .env("NODE_NAME", support::NODE)
        .env("IAMLET_METADATA_ADDR", "127.0.0.1:9")
        .env("IAMLET_CACHE_RESYNC_PERIOD", "10m")
        .env("IAMLET_LOG_FORMAT", "json")
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "us-east-1")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr = support::socket("127.0.0.1", port);
    support::eventually("readiness", Duration::from_secs(20), || async {
        let reply = http_request("127.0.0.1", addr, "GET", "/readyz", &[])
            .await
            .ok()?;
        (reply.status == 200).then_some(())
    })
    .await;
    assert!(
        api.requests()
            .iter()
            .any(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "the watch is limited to NODE_NAME: {:?}",
        api.requests()
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let logs = std::fs::read_to_string(&log).unwrap();
    let no_effect: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("no effect"))
        })
        .collect();
    assert_eq!(no_effect.len(), 1, "{logs}");
    assert_eq!(no_effect[0]["flag"], "cache-resync-period");
    assert!(logs.contains("SIGTERM"), "{logs}");
}
