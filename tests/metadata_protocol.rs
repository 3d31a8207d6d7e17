//! The metadata-service contract beyond credentials: IMDSv2 tokens, the
//! proxy to the real service and its deny-list, agent endpoints, and bad
//! requests.

mod support;

use std::time::Duration;

use support::upstream::{INSTANCE_ID, NODE_ACCESS_KEY, NODE_SECRET, USER_DATA};
use support::{Node, PodRelay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD: &str = "127.0.2.10";
const OTHER_POD: &str = "127.0.2.11";
const TTL: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "x-aws-ec2-metadata-token";
const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

async fn node_with_pods() -> Node {
    let node = Node::start().await;
    node.add_pod("default", "p", POD, Some("proto-role"));
    node.add_pod("default", "q", OTHER_POD, Some("other-role"));
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imdsv2_tokens_follow_the_metadata_contract() {
    let node = node_with_pods().await;
    let agent = node.agent(&[]).await;

    let issued = agent
        .request(POD, "PUT", "/latest/api/token", &[(TTL, "21600")])
        .await;
    assert_eq!(issued.status, 200);
    assert_eq!(issued.headers[TTL], "21600", "the TTL is echoed");
    assert_eq!(issued.headers["content-type"], "text/plain");
    let token = issued.body.clone();
    assert!(token.len() >= 40);

    let with_token = agent.request(POD, "GET", CREDS, &[(TOKEN, &token)]).await;
    assert_eq!(
        (with_token.status, with_token.body.as_str()),
        (200, "proto-role")
    );

    for bad_ttl in ["0", "21601", "abc", "-1", ""] {
        let reply = agent
            .request(POD, "PUT", "/latest/api/token", &[(TTL, bad_ttl)])
            .await;
        assert_eq!(reply.status, 400, "TTL {bad_ttl:?}");
    }
    assert_eq!(
        agent
            .request(POD, "PUT", "/latest/api/token", &[])
            .await
            .status,
        400
    );
    let forwarded = agent
        .request(
            POD,
            "PUT",
            "/latest/api/token",
            &[(TTL, "60"), ("x-forwarded-for", "10.0.0.1")],
        )
        .await;
    assert_eq!(forwarded.status, 403);
    assert_eq!(
        agent
            .request(POD, "PUT", "/2021-03-23/api/token", &[(TTL, "60")])
            .await
            .status,
        403
    );
    assert_eq!(
        agent
            .request(POD, "GET", "/latest/api/token", &[])
            .await
            .status,
        405
    );

    assert_eq!(
        agent
            .request(POD, "GET", CREDS, &[(TOKEN, "forged-token")])
            .await
            .status,
        401
    );
    // A token is bound to the pod it was issued to.
    assert_eq!(
        agent
            .request(OTHER_POD, "GET", CREDS, &[(TOKEN, &token)])
            .await
            .status,
        401
    );
    let short = agent
        .request(POD, "PUT", "/latest/api/token", &[(TTL, "1")])
        .await
        .body;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        agent
            .request(POD, "GET", CREDS, &[(TOKEN, &short)])
            .await
            .status,
        401,
        "expired"
    );
    // Without --require-imdsv2, IMDSv1 still works.
    assert_eq!(agent.get(POD, CREDS).await.status, 200);
    assert!(!agent.logs().contains(&token), "tokens are never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_imdsv2_refuses_tokenless_requests_and_sdks_still_work() {
    let node = node_with_pods().await;
    let agent = node.agent(&["--require-imdsv2"]).await;
    assert_eq!(agent.get(POD, CREDS).await.status, 401);
    assert_eq!(
        agent.get(POD, "/latest/meta-data/instance-id").await.status,
        401
    );
    let relay = PodRelay::start(POD, agent.addr).await;
    let arn = support::clients::awscli_identity(&relay.endpoint(), &node.moto.direct_url)
        .expect("botocore uses IMDSv2");
    assert!(arn.contains("assumed-role/proto-role/"), "{arn}");
    let arn = support::clients::aws_config_identity(&relay.endpoint(), &node.moto.direct_url)
        .await
        .expect("aws-config uses IMDSv2");
    assert!(arn.contains("assumed-role/proto-role/"), "{arn}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_paths_are_proxied_with_the_agents_own_token_and_the_deny_list_holds() {
    let node = node_with_pods().await;
    let agent = node.agent(&[]).await;

    let pod_token = agent
        .request(POD, "PUT", "/latest/api/token", &[(TTL, "60")])
        .await
        .body;
    let instance = agent
        .request(
            POD,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN, &pod_token), ("x-forwarded-for", "1.2.3.4")],
        )
        .await;
    assert_eq!(
        (instance.status, instance.body.as_str()),
        (200, INSTANCE_ID)
    );
    let upstream = node.imds.seen();
    let proxied = upstream
        .iter()
        .find(|s| s.path == "/latest/meta-data/instance-id")
        .expect("reached upstream");
    let header = |name: &str| {
        proxied
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header(TOKEN).as_deref(),
        Some("upstream-node-token"),
        "the agent's own upstream token"
    );
    assert_eq!(header("x-forwarded-for"), None, "no forwarding headers");
    assert_eq!(
        agent
            .get(POD, "/latest/meta-data/placement/availability-zone")
            .await
            .body,
        "us-east-1a"
    );

    for denied in [
        "/latest/user-data",
        "/latest/user-data/",
        "/2009-04-04/user-data",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
    ] {
        let reply = agent.get(POD, denied).await;
        assert_eq!(reply.status, 403, "{denied}");
        assert!(!reply.body.contains("bootstrap-secret") && !reply.body.contains(NODE_ACCESS_KEY));
    }
    // The node's own role and profile are never reachable through iamlet.
    for path in [
        "/latest/meta-data/iam/security-credentials/node-role",
        "/latest/meta-data/iam/info",
        "/latest/meta-data/iam/security-credentials/",
    ] {
        let reply = agent.get(POD, path).await;
        assert!(
            !reply.body.contains(NODE_SECRET) && !reply.body.contains("node-profile"),
            "{path}: {}",
            reply.body
        );
    }
    assert!(
        node.imds
            .seen()
            .iter()
            .all(|s| !s.path.contains("iam/") && !s.path.contains("user-data"))
    );

    // The defaults are dropped only by name: then user-data passes.
    drop(agent);
    let open = node.agent(&["--no-default-metadata-deny"]).await;
    assert_eq!(open.get(POD, "/latest/user-data").await.body, USER_DATA);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_break_nothing() {
    let node = node_with_pods().await;
    let agent = node.agent(&[]).await;
    for (method, path, status) in [
        ("GET", "/latest/meta-data/iam/../iam/info", 400),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials%2Fproto-role",
            400,
        ),
        ("GET", "/latest//meta-data/instance-id", 400),
        ("POST", "/latest/meta-data/instance-id", 405),
        ("DELETE", CREDS, 405),
        ("PUT", "/latest/meta-data/instance-id", 405),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials/proto-role/extra",
            404,
        ),
    ] {
        assert_eq!(
            agent.request(POD, method, path, &[]).await.status,
            status,
            "{method} {path}"
        );
    }
    // Raw garbage and an oversized head on the socket.
    for raw in [
        b"NOT-HTTP\r\n\r\n".to_vec(),
        format!(
            "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        )
        .into_bytes(),
    ] {
        let mut stream = support::relay::connect_from(POD.parse().unwrap(), agent.addr)
            .await
            .unwrap();
        let _ = stream.write_all(&raw).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");
    }
    // Still serving.
    assert_eq!(agent.get(POD, CREDS).await.body, "proto-role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_debug_store() {
    let node = node_with_pods().await;
    let agent = node.agent(&["--debug=true"]).await;
    // Health never depends on the upstream metadata service.
    drop(node.imds);
    let health = agent.get("127.0.0.1", "/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(agent.get("127.0.0.1", "/readyz").await.status, 200);

    let store = agent.get("127.0.0.1", "/debug/store").await.json();
    assert_eq!(
        store["rolesByIP"][POD],
        "arn:aws:iam::123456789012:role/proto-role"
    );
    assert_eq!(store["namespaceByIP"][POD], "default");
    // Pods cannot read the map of every pod's role.
    assert_eq!(agent.get(POD, "/debug/store").await.status, 404);

    let without_debug = Node::start().await;
    let plain = without_debug.agent(&[]).await;
    assert_eq!(plain.get("127.0.0.1", "/debug/store").await.status, 404);
}
