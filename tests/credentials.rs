//! The credential path end to end: real moto STS, the test API server, the
//! real iamlet binary, and real SDK clients in simulated pods.

mod support;

use std::time::Duration;

use support::clients::{aws_config_identity, awscli_identity};
use support::{Node, PodRelay, role_arn};

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awscli_in_a_pod_gets_the_pods_role() {
    let node = Node::start().await;
    node.add_pod("default", "reader-pod", "127.0.0.11", Some("app-reader"));
    let agent = node.agent(&[]).await;
    let relay = PodRelay::start("127.0.0.11", agent.addr).await;

    let arn =
        awscli_identity(&relay.endpoint(), &node.moto.direct_url).expect("awscli gets credentials");
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/app-reader/"),
        "{arn}"
    );
    assert!(
        arn.ends_with("/default.reader-pod"),
        "session names the pod: {arn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awscli_falls_back_to_imdsv1_when_a_proxy_breaks_the_token_request() {
    // kube2iam #241: an HTTP proxy adding X-Forwarded-For makes the IMDSv2
    // PUT fail (403, as on EC2); botocore then falls back to IMDSv1.
    let node = Node::start().await;
    node.add_pod("default", "proxied", "127.0.0.22", Some("fallback-role"));
    let agent = node.agent(&[]).await;
    let relay = PodRelay::start_forwarding("127.0.0.22", agent.addr).await;
    let arn = awscli_identity(&relay.endpoint(), &node.moto.direct_url).expect("IMDSv1 fallback");
    assert!(arn.contains("assumed-role/fallback-role/"), "{arn}");
    let metrics = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(
        metrics.contains(r#"iamlet_denied_requests_total{reason="forwarded-token-request"} 1"#),
        "the token request was refused first: {metrics}"
    );
    // With IMDSv2 required there is no fallback: the pod gets nothing.
    drop(agent);
    let strict = node.agent(&["--require-imdsv2"]).await;
    let relay = PodRelay::start_forwarding("127.0.0.22", strict.addr).await;
    let error =
        awscli_identity(&relay.endpoint(), &node.moto.direct_url).expect_err("no v1 fallback");
    assert!(error.contains("Unable to locate credentials"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_config_imds_provider_in_a_pod_gets_the_pods_role() {
    let node = Node::start().await;
    node.add_pod(
        "team-a",
        "api-0",
        "127.0.0.12",
        Some(&role_arn("team/api-writer")),
    );
    let agent = node.agent(&[]).await;
    let relay = PodRelay::start("127.0.0.12", agent.addr).await;

    let arn = aws_config_identity(&relay.endpoint(), &node.moto.direct_url)
        .await
        .expect("aws-config gets credentials");
    assert!(
        arn.contains(":assumed-role/api-writer/team-a.api-0"),
        "{arn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_documents_follow_the_metadata_format() {
    let node = Node::start().await;
    node.add_pod("default", "p", "127.0.0.13", Some("fmt-role"));
    let agent = node.agent(&[]).await;

    let listing = agent.get("127.0.0.13", CREDS).await;
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.body, "fmt-role",
        "role name only, no trailing newline"
    );
    assert_eq!(
        agent
            .get("127.0.0.13", CREDS.trim_end_matches('/'))
            .await
            .body,
        "fmt-role"
    );

    let document = agent.get("127.0.0.13", &format!("{CREDS}fmt-role")).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.headers["content-type"], "text/plain");
    let json = document.json();
    assert_eq!(json["Code"], "Success");
    assert_eq!(json["Type"], "AWS-HMAC");
    assert!(json["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    for field in ["SecretAccessKey", "Token"] {
        assert!(!json[field].as_str().unwrap().is_empty(), "{field}");
    }
    let stamp = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$").unwrap();
    for field in ["LastUpdated", "Expiration"] {
        let value = json[field].as_str().unwrap();
        assert!(stamp.is_match(value), "{field} = {value}");
    }
    // The default session lasts an hour: far more than the 15-minute floor.
    let expiration = time::OffsetDateTime::parse(
        json["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = expiration - time::OffsetDateTime::now_utc();
    assert!(
        left > time::Duration::minutes(55) && left <= time::Duration::minutes(61),
        "{left}"
    );

    let extended = agent
        .get(
            "127.0.0.13",
            "/latest/meta-data/iam/security-credentials-extended/fmt-role",
        )
        .await;
    assert_eq!(
        extended.status, 404,
        "SDKs fall back to the legacy path only on 404"
    );

    let info = agent.get("127.0.0.13", "/latest/meta-data/iam/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.json()["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/fmt-role"
    );
    assert!(!info.body.contains("node-profile"));

    let logs = agent.logs();
    assert!(
        logs.contains("outcome=\"granted\"") || logs.contains("outcome=granted"),
        "{logs}"
    );
    assert!(
        !logs.contains(json["SecretAccessKey"].as_str().unwrap()),
        "secret key in the log"
    );
    assert!(
        !logs.contains(json["Token"].as_str().unwrap()),
        "session token in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_without_a_role_gets_404_and_the_sdk_finds_no_credentials() {
    let node = Node::start().await;
    node.add_pod("default", "plain", "127.0.0.14", None);
    let agent = node.agent(&[]).await;
    let relay = PodRelay::start("127.0.0.14", agent.addr).await;

    assert_eq!(agent.get("127.0.0.14", CREDS).await.status, 404);
    assert_eq!(
        agent
            .get("127.0.0.14", &format!("{CREDS}node-role"))
            .await
            .status,
        404
    );
    let error =
        awscli_identity(&relay.endpoint(), &node.moto.direct_url).expect_err("no credentials");
    assert!(error.contains("Unable to locate credentials"), "{error}");
    let error = aws_config_identity(&relay.endpoint(), &node.moto.direct_url)
        .await
        .expect_err("no credentials");
    assert!(!error.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_asking_for_another_pods_role_is_refused() {
    let node = Node::start().await;
    node.add_pod("default", "a", "127.0.0.15", Some("role-a"));
    node.add_pod("default", "b", "127.0.0.16", Some("role-b"));
    let agent = node.agent(&[]).await;

    assert_eq!(
        agent
            .get("127.0.0.15", &format!("{CREDS}role-b"))
            .await
            .status,
        403
    );
    assert_eq!(
        agent
            .get("127.0.0.15", &format!("{CREDS}role-a"))
            .await
            .status,
        200
    );
    // Headers never change who the caller is.
    let spoofed = agent
        .request(
            "127.0.0.15",
            "GET",
            &format!("{CREDS}role-b"),
            &[("x-forwarded-for", "127.0.0.16")],
        )
        .await;
    assert_eq!(spoofed.status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_with_kubectl_annotate() {
    let node = Node::start().await;
    node.add_pod("default", "app", "127.0.0.17", None);
    let agent = node.agent(&[]).await;
    let relay = PodRelay::start("127.0.0.17", agent.addr).await;
    let moto = node.moto.direct_url.clone();

    let before = awscli_identity(&relay.endpoint(), &moto).expect_err("no role yet");
    assert!(before.contains("Unable to locate credentials"), "{before}");

    let out = node.kubectl(&[
        "annotate",
        "pod",
        "app",
        "iam.amazonaws.com/role=granted-role",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arn = awscli_identity(&relay.endpoint(), &moto).expect("granted");
    assert!(arn.contains("assumed-role/granted-role/"), "{arn}");

    let out = node.kubectl(&[
        "annotate",
        "--overwrite",
        "pod",
        "app",
        "iam.amazonaws.com/role=other-role",
    ]);
    assert!(out.status.success());
    let arn = awscli_identity(&relay.endpoint(), &moto).expect("changed");
    assert!(arn.contains("assumed-role/other-role/"), "{arn}");
    assert_eq!(
        agent
            .get("127.0.0.17", &format!("{CREDS}granted-role"))
            .await
            .status,
        403
    );

    let out = node.kubectl(&["annotate", "pod", "app", "iam.amazonaws.com/role-"]);
    assert!(out.status.success());
    let after = awscli_identity(&relay.endpoint(), &moto).expect_err("revoked");
    assert!(after.contains("Unable to locate credentials"), "{after}");
    assert_eq!(
        agent
            .get("127.0.0.17", &format!("{CREDS}other-role"))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_id_reaches_sts_and_keys_the_cache() {
    let node = Node::start().await;
    node.api.put_pod(support::pod(
        "default",
        "vendor",
        support::NODE,
        "127.0.0.18",
        serde_json::json!({"iam.amazonaws.com/role": "vendor-role", "iam.amazonaws.com/external-id": "tenant-42"}),
    ));
    let agent = node.agent(&[]).await;
    assert_eq!(
        agent
            .get("127.0.0.18", &format!("{CREDS}vendor-role"))
            .await
            .status,
        200
    );
    let calls = node.moto.assume_role_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains("ExternalId=tenant-42"), "{}", calls[0]);
    assert!(
        calls[0].contains("RoleSessionName=default.vendor"),
        "{}",
        calls[0]
    );

    // A new ExternalId is a new cache entry, fetched again.
    node.api
        .patch(support::Kind::Pod, "default", "vendor", serde_json::json!({"metadata": {"annotations": {"iam.amazonaws.com/external-id": "tenant-43"}}}))
        .unwrap();
    support::eventually("the second AssumeRole", Duration::from_secs(10), || async {
        node.moto
            .assume_role_calls()
            .iter()
            .any(|c| c.contains("ExternalId=tenant-43"))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_first_requests_make_one_sts_call() {
    let node = Node::start().await;
    let agent = node.agent(&[]).await;
    // Slow STS so that every request arrives while the first call is out.
    node.moto.set_delay(Duration::from_millis(500));
    node.add_pod("default", "busy", "127.0.0.19", Some("busy-role"));
    let path = format!("{CREDS}busy-role");
    let requests = (0..50).map(|_| agent.get("127.0.0.19", &path));
    let replies = futures::future::join_all(requests).await;
    let keys: std::collections::HashSet<String> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["AccessKeyId"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(keys.len(), 1, "every request got the same credentials");
    assert_eq!(node.moto.assume_role_calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_prefetched_when_a_pod_appears() {
    let node = Node::start().await;
    let agent = node.agent(&[]).await;
    node.moto.set_delay(Duration::from_millis(300));
    node.add_pod("default", "early", "127.0.0.20", Some("early-role"));
    support::eventually("the prefetch", Duration::from_secs(10), || async {
        (node.moto.assume_role_calls().len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let reply = agent.get("127.0.0.20", &format!("{CREDS}early-role")).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "served from the prefetched cache"
    );
    assert_eq!(node.moto.assume_role_calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_refreshed_before_they_expire() {
    let node = Node::start().await;
    node.add_pod(
        "default",
        "long-running",
        "127.0.0.21",
        Some("refresh-role"),
    );
    let agent = node
        .agent(&[
            "--allow-short-sessions",
            "--iam-role-session-ttl=20s",
            "--credential-refresh-before=14s",
            "--credential-min-remaining=5s",
        ])
        .await;
    let path = format!("{CREDS}refresh-role");
    let first = agent.get("127.0.0.21", &path).await.json();
    // Refresh is due 6 s after issue; the warmer does it without any request,
    // while the first credentials still have 14 s left (the floor is 5 s).
    let refreshed = std::time::Instant::now();
    let second = support::eventually("refreshed credentials", Duration::from_secs(15), || async {
        let current = agent.get("127.0.0.21", &path).await.json();
        (current["AccessKeyId"] != first["AccessKeyId"]).then_some(current)
    })
    .await;
    assert!(
        refreshed.elapsed() < Duration::from_secs(14),
        "refreshed before the old ones neared expiry"
    );
    assert_eq!(
        node.moto.assume_role_calls().len(),
        2,
        "one fetch, one refresh"
    );
    assert!(second["Expiration"].as_str() > first["Expiration"].as_str());
}
