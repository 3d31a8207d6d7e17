//! The attacks a hostile pod made on the agent, kept as tests: each drives
//! the real binary from simulated pods (own source addresses on loopback)
//! against the test API server and moto, and each failed on the code before
//! its fix.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::moto::{NODE_ROLE_IN_STS_ERROR, StsFault};
use support::relay::connect_from;
use support::{Node, eventually, pod, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

/// Allow-lists used to match relative entries against whatever followed
/// `:role/`, in any account or partition, and a glob `*` crossed `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_refuse_other_accounts_partitions_and_paths() {
    let node = Node::start().await;
    node.api.create_namespace(
        "apps",
        json!({"iam.amazonaws.com/allowed-roles": r#"["app-*", "s3-reader"]"#}),
    );
    let pods = [
        ("ok", "127.0.8.10", "app-reader"),
        ("plain", "127.0.8.11", "s3-reader"),
        (
            "other-account",
            "127.0.8.12",
            "arn:aws:iam::999999999999:role/app-admin",
        ),
        (
            "other-partition",
            "127.0.8.13",
            "arn:aws-cn:iam::123456789012:role/app-admin",
        ),
        (
            "other-account-plain",
            "127.0.8.14",
            "arn:aws:iam::999999999999:role/s3-reader",
        ),
        ("path", "127.0.8.15", "app-team/admin"),
        ("dots", "127.0.8.16", "app-x/../admin"),
    ];
    for (name, ip, role) in pods {
        node.api.put_pod(pod(
            "apps",
            name,
            support::NODE,
            ip,
            json!({"iam.amazonaws.com/role": role}),
        ));
    }
    let agent = node.agent(&["--namespace-restrictions"]).await;
    assert_eq!(agent.get("127.0.8.10", CREDS).await.body, "app-reader");
    let creds = agent.get("127.0.8.11", &format!("{CREDS}s3-reader")).await;
    assert_eq!(creds.status, 200, "{}", creds.body);
    for (name, ip, _) in &pods[2..] {
        let list = agent.get(ip, CREDS).await;
        assert!(
            list.status == 403 || list.status == 404,
            "{name} was given a role: {} {}",
            list.status,
            list.body
        );
        for role in ["app-admin", "s3-reader", "admin"] {
            let reply = agent.get(ip, &format!("{CREDS}{role}")).await;
            assert!(!reply.body.contains("AccessKeyId"), "{name} got {role}");
        }
    }
    let logs = agent.logs();
    assert!(logs.contains("namespace-restriction"), "{logs}");
    assert!(logs.contains("invalid-role-annotation"), "{logs}");
}

/// One pod opening thousands of connections with unfinished heads drove
/// the agent from 20 to 128 MiB (its memory limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_cannot_hold_more_than_its_share_of_connections() {
    let node = Node::start().await;
    node.add_pod("default", "flood", "127.0.5.20", Some("flood-role"));
    node.add_pod("default", "quiet", "127.0.5.21", Some("quiet-role"));
    let agent = node.agent(&["--max-connections-per-source=32"]).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match connect_from("127.0.5.20".parse().unwrap(), agent.addr).await {
            Ok(mut stream) => {
                let _ = stream
                    .write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nhost: x\r\n")
                    .await;
                held.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    // The agent resets what is over the cap as it accepts them; on a busy
    // machine its accept loop may lag, so count until the count settles.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut open: Vec<_> = held.iter_mut().collect();
    loop {
        let mut still = Vec::new();
        for stream in open {
            let mut byte = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut byte)).await {
                Err(_) => still.push(stream),
                Ok(_) => refused += 1,
            }
        }
        open = still;
        if open.len() <= 32 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = open.len();
    assert!(open <= 32, "{open} connections stayed open (cap 32)");
    assert!(refused >= 360, "only {refused} of 400 were refused");
    let started = Instant::now();
    assert_eq!(agent.get("127.0.5.21", CREDS).await.body, "quiet-role");
    assert!(started.elapsed() < Duration::from_secs(1));
    let rss = rss_kib(agent.pid());
    assert!(rss < 64 * 1024, "agent RSS {rss} KiB");
    let metrics = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(
        metrics.contains("iamlet_connections_refused_total{reason=\"per-source-limit\"}"),
        "{metrics}"
    );
    drop(held);
    // The flooding pod gets its places back when its connections close.
    let reply = eventually(
        "the pod to be served again",
        Duration::from_secs(5),
        || async {
            // Until the agent has seen every close, a new connection may
            // still be reset: that is a retry, not a failure.
            support::clients::http_request("127.0.5.20", agent.addr, "GET", CREDS, &[])
                .await
                .ok()
                .filter(|reply| reply.status == 200)
        },
    )
    .await;
    assert_eq!(reply.body, "flood-role");
    assert!(agent.logs().contains("connection refused (sampled)"));
}

/// A pipelining pod over its budget used to cost the agent a parsed
/// request and a 429 per request; now its connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_connection_is_closed() {
    let node = Node::start().await;
    node.add_pod("default", "noisy", "127.0.5.30", Some("noisy-role"));
    let agent = node.agent(&["--pod-request-rate=5"]).await;
    let mut stream = connect_from("127.0.5.30".parse().unwrap(), agent.addr)
        .await
        .unwrap();
    let one = format!("GET {CREDS} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(one.repeat(200).as_bytes()).await.unwrap();
    let mut answered = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answered))
        .await
        .expect("the agent closes the connection")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&answered);
    let served = text.matches("HTTP/1.1 200").count();
    assert!(
        (10..=11).contains(&served),
        "the burst of 10 (and a refill): {served}"
    );
    assert_eq!(
        text.matches("HTTP/1.1 429").count(),
        1,
        "then one refusal: {text}"
    );
    // While its budget is empty, new connections are reset at accept.
    let reconnect =
        support::clients::http_request("127.0.5.30", agent.addr, "GET", CREDS, &[]).await;
    assert!(reconnect.is_err(), "{reconnect:?}");
}

/// `/metrics` and, with `--debug`, `/debug/store` were served to any
/// address that was not exactly one known pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_and_strangers_never_read_the_debug_store() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.6.10", Some("secret-role-name"));
    node.add_pod("default", "twin-a", "127.0.6.11", Some("a"));
    node.add_pod("default", "twin-b", "127.0.6.11", Some("b"));
    let agent = node.agent(&["--debug"]).await;
    for caller in ["127.0.6.10", "127.0.6.11", "127.0.6.99", "127.0.0.2"] {
        let reply = agent.get(caller, "/debug/store").await;
        assert_eq!(reply.status, 404, "{caller}: {}", reply.body);
        assert!(!reply.body.contains("secret-role-name"));
    }
    let on_node = agent.get("127.0.0.1", "/debug/store").await;
    assert_eq!(on_node.status, 200);
    assert!(
        on_node.body.contains("secret-role-name"),
        "{}",
        on_node.body
    );
    // Metrics stay where Prometheus scrapes them and name no pod or role.
    for caller in ["127.0.6.10", "127.0.0.1"] {
        let metrics = agent.get(caller, "/metrics").await;
        assert_eq!(metrics.status, 200);
        for secret in ["secret-role-name", "127.0.6.10", "twin-a", "default/app"] {
            assert!(!metrics.body.contains(secret), "{secret} in /metrics");
        }
        let ready = agent.get(caller, "/readyz").await;
        assert!(!ready.body.contains("127.0.6") && !ready.body.contains("twin"));
    }
}

/// On a separate metrics port a pod gets agent routes only: no metadata,
/// whoever asks (a pod, not just an unknown address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_port_serves_no_metadata_even_to_a_pod() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.6.20", Some("app-role"));
    let metrics_port = support::free_port();
    let agent = node
        .agent(&[&format!("--metrics-port={metrics_port}")])
        .await;
    let metrics_addr = support::socket("127.0.0.1", metrics_port);
    assert_eq!(agent.get("127.0.6.20", CREDS).await.body, "app-role");
    for path in [
        CREDS,
        "/latest/meta-data/instance-id",
        "/latest/meta-data/iam/info",
    ] {
        let reply = support::clients::http_request("127.0.6.20", metrics_addr, "GET", path, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(!reply.body.contains("app-role"));
    }
    let token = support::clients::http_request(
        "127.0.6.20",
        metrics_addr,
        "PUT",
        "/latest/api/token",
        &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
    )
    .await
    .unwrap();
    assert_eq!(token.status, 404);
    let metrics =
        support::clients::http_request("127.0.6.20", metrics_addr, "GET", "/metrics", &[])
            .await
            .unwrap();
    assert_eq!(metrics.status, 200);
}

/// Anything that reached the agent's address directly (a pod of another
/// node, a host in the VPC) could read this node's metadata through the
/// agent's own token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_read_no_node_metadata_through_the_agent() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.6.35", None);
    let agent = node.agent(&[]).await;
    let path = "/latest/meta-data/instance-id";
    assert_eq!(
        agent.get("127.0.6.35", path).await.status,
        200,
        "a pod of this node"
    );
    assert_eq!(
        agent.get("127.0.0.1", path).await.status,
        200,
        "the node itself"
    );
    let before = node.imds.seen().len();
    let stranger = agent.get("127.0.6.99", path).await;
    assert_eq!(stranger.status, 404, "{}", stranger.body);
    assert_eq!(
        node.imds.seen().len(),
        before,
        "the real service was not asked"
    );
}

/// The node's signed identity was readable; the document must stay so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_signatures_are_refused_and_the_document_is_served() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.6.30", None);
    let agent = node.agent(&[]).await;
    for kind in ["signature", "pkcs7", "rsa2048"] {
        let path = format!("/latest/dynamic/instance-identity/{kind}");
        assert_eq!(agent.get("127.0.6.30", &path).await.status, 403, "{path}");
    }
    let document = agent
        .get("127.0.6.30", "/latest/dynamic/instance-identity/document")
        .await;
    assert_ne!(document.status, 403, "{}", document.body);
    let seen: Vec<String> = node.imds.seen().iter().map(|s| s.path.clone()).collect();
    assert!(
        seen.iter()
            .any(|p| p.ends_with("instance-identity/document")),
        "the document is proxied: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|p| p.contains("signature") || p.contains("pkcs7") || p.contains("rsa2048")),
        "{seen:?}"
    );
}

/// One `--metadata-deny` entry used to replace the defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_deny_entry_keeps_the_defaults() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.6.40", None);
    let agent = node.agent(&["--metadata-deny=meta-data/tags"]).await;
    for path in [
        "/latest/user-data",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/meta-data/tags/instance/Name",
    ] {
        assert_eq!(agent.get("127.0.6.40", path).await.status, 403, "{path}");
    }
    drop(agent);
    let open = node.agent(&["--no-default-metadata-deny"]).await;
    assert_eq!(
        open.get("127.0.6.40", "/latest/user-data").await.status,
        200
    );
}

/// STS's error text (naming the node's role and instance id) reached pods,
/// and a refusal looked like an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_errors_reach_pods_without_node_details() {
    let node = Node::start().await;
    node.moto.set_fault(StsFault::AccessDenied);
    node.add_pod("default", "denied", "127.0.6.50", Some("denied"));
    let agent = node.agent(&[]).await;
    let denied = agent.get("127.0.6.50", &format!("{CREDS}denied")).await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    assert_eq!(denied.json()["Code"], "AssumeRoleDenied");
    for secret in [
        "node-instance-role",
        "i-0123456789abcdef0",
        "not authorized",
    ] {
        assert!(!denied.body.contains(secret), "{secret}: {}", denied.body);
    }
    assert!(
        agent.logs().contains(NODE_ROLE_IN_STS_ERROR),
        "the agent's log keeps it"
    );

    node.moto.set_fault(StsFault::Unavailable);
    node.add_pod("default", "outage", "127.0.6.51", Some("outage"));
    let down = eventually("an outage answer", Duration::from_secs(10), || async {
        let reply = agent.get("127.0.6.51", &format!("{CREDS}outage")).await;
        (reply.status != 200).then_some(reply)
    })
    .await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.json()["Code"], "StsUnavailable");
}

/// STS answering with credentials that expire sooner than the serving floor
/// must not get them served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_credentials_from_sts_are_not_served() {
    let node = Node::start().await;
    node.moto.set_fault(StsFault::ShortLived);
    node.add_pod("default", "app", "127.0.6.60", Some("short"));
    let agent = node.agent(&[]).await;
    let reply = agent.get("127.0.6.60", &format!("{CREDS}short")).await;
    assert_ne!(reply.status, 200, "{}", reply.body);
    assert!(!reply.body.contains("AccessKeyId"), "{}", reply.body);
    assert!(
        node.moto
            .assume_role_calls()
            .iter()
            .any(|c| c.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fshort")),
        "STS was asked"
    );
}

/// During a break of the pod watch a new pod took a deleted pod's IP and
/// was served the deleted pod's role; `/readyz` said nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_index_is_refused_until_a_relist() {
    let node = Node::start().await;
    node.add_pod("default", "old", "127.0.6.70", Some("old-role"));
    let agent = node.agent(&["--max-index-staleness=2s"]).await;
    assert_eq!(agent.get("127.0.6.70", CREDS).await.body, "old-role");
    node.api.stop();
    node.api
        .delete(support::Kind::Pod, "default", "old")
        .unwrap();
    node.add_pod("default", "new", "127.0.6.70", Some("new-role"));
    let refused = eventually("a stale refusal", Duration::from_secs(10), || async {
        let reply = agent.get("127.0.6.70", CREDS).await;
        (reply.status == 503).then_some(reply)
    })
    .await;
    assert!(!refused.body.contains("old-role"));
    let ready = agent.get("127.0.0.1", "/readyz").await;
    assert_eq!(ready.status, 503);
    let health = ready.json();
    assert_eq!(health["index"]["stale"], true, "{health}");
    assert_eq!(
        health["index"]["watches"][0]["streaming"], false,
        "{health}"
    );
    let metrics = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(metrics.contains("iamlet_index_stale 1"), "{metrics}");
    assert!(agent.logs().contains("watch failed"), "the break is logged");
    node.api.restart().await.unwrap();
    let served = eventually("the new pod's role", Duration::from_secs(20), || async {
        let reply = agent.get("127.0.6.70", CREDS).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(served.body, "new-role");
    assert_eq!(agent.get("127.0.0.1", "/readyz").await.status, 200);
    assert!(agent.logs().contains("relisting"), "{}", agent.logs());
}
