//! The container credentials endpoint (EKS Pod Identity's contract),
//! ServiceAccount roles and session tags, driven over real HTTP against
//! the real binary, the test API server (TokenRequest, TokenReview,
//! ServiceAccounts) and moto behind the recording proxy.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use iamlet_testkit::{TokenSpec, pod_with_service_account};
use serde_json::json;
use support::clients::{Reply, http_request};
use support::container::{AUDIENCE, Endpoint, form, refusal, token};
use support::{NODE, Node, eventually, role_arn, socket};

#[tokio::test]
async fn a_pods_token_gets_the_pods_role_in_the_pod_identity_format() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.31", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");

    let reply = endpoint.credentials("127.0.0.31", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.headers["content-type"], "application/json",
        "the SDKs parse JSON"
    );
    let body = reply.json();
    let keys: std::collections::BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "AccountId",
            "Expiration",
            "SecretAccessKey",
            "Token"
        ]
        .into(),
        "EKS Pod Identity's document"
    );
    assert_eq!(body["AccountId"], support::ACCOUNT);
    let expiration = body["Expiration"].as_str().unwrap();
    let expires =
        time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("Expiration {expiration:?} is not RFC 3339: {e}"));
    assert!(expires > time::OffsetDateTime::now_utc() + time::Duration::minutes(15));
    let calls = node.moto.assume_role_calls();
    assert!(
        calls
            .iter()
            .any(|c| c.contains("reader") && c.contains("RoleSessionName=team.api")),
        "{calls:?}"
    );

    // The same grant as the metadata path: one cached session for both.
    let imds = endpoint
        .agent
        .get(
            "127.0.0.31",
            "/latest/meta-data/iam/security-credentials/reader",
        )
        .await;
    assert_eq!(imds.status, 200);
    assert_eq!(imds.json()["AccessKeyId"], body["AccessKeyId"]);

    // A token the agent has reviewed is not reviewed again for each request.
    let reviews = node.api.token_reviews();
    for _ in 0..5 {
        assert_eq!(endpoint.credentials("127.0.0.31", &token).await.status, 200);
    }
    assert_eq!(node.api.token_reviews(), reviews);
    assert!(
        !endpoint.agent.logs().contains(&token[token.len() - 40..]),
        "the token reached the log"
    );
}

#[tokio::test]
async fn what_is_not_a_valid_token_of_a_pod_here_is_refused() {
    let node = Node::start().await;
    node.api.create_namespace(
        "team",
        json!({"iam.amazonaws.com/allowed-roles": "[\"reader\", \"writer\"]"}),
    );
    node.add_pod("team", "api", "127.0.0.41", Some("reader"));
    node.add_pod("team", "web", "127.0.0.42", Some("writer"));
    node.api.put_pod(support::pod(
        "team",
        "faraway",
        "node-b",
        "127.0.0.43",
        json!({"iam.amazonaws.com/role": "reader"}),
    ));
    node.api.create_namespace(
        "locked",
        json!({"iam.amazonaws.com/allowed-roles": "[\"app-*\"]"}),
    );
    node.add_pod("locked", "greedy", "127.0.0.44", Some("admin"));
    let endpoint = Endpoint::start(&node, &["--namespace-restrictions"]).await;
    let api_token = token(&node, "team", "default", "api");

    let host = |value: &'static str| [("host", value)];
    let cases: Vec<(&str, Reply, u16, &str)> = vec![
        (
            "no token",
            endpoint.ask("127.0.0.41", None, &[]).await.unwrap(),
            400,
            "MissingToken",
        ),
        (
            "a Host that is not the endpoint's (DNS rebinding)",
            http_request(
                "127.0.0.41",
                socket("127.0.0.1", endpoint.port),
                "GET",
                "/v1/credentials",
                &[("host", "evil.example.com"), ("authorization", &api_token)],
            )
            .await
            .unwrap(),
            400,
            "InvalidHost",
        ),
        (
            "the metadata service's Host",
            http_request(
                "127.0.0.41",
                socket("127.0.0.1", endpoint.port),
                "GET",
                "/v1/credentials",
                &[host("169.254.169.254")[0], ("authorization", &api_token)],
            )
            .await
            .unwrap(),
            400,
            "InvalidHost",
        ),
        (
            "a token the API server never issued",
            endpoint
                .credentials("127.0.0.41", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")
                .await,
            401,
            "InvalidToken",
        ),
        (
            "a token for another audience",
            endpoint
                .credentials(
                    "127.0.0.41",
                    &node
                        .api
                        .mint_token(
                            TokenSpec::new("team", "default")
                                .pod("api")
                                .audiences(["sts.amazonaws.com"]),
                        )
                        .unwrap(),
                )
                .await,
            401,
            "InvalidToken",
        ),
        (
            "a token not bound to a pod",
            endpoint
                .credentials(
                    "127.0.0.41",
                    &node
                        .api
                        .mint_token(TokenSpec::new("team", "default").audiences([AUDIENCE]))
                        .unwrap(),
                )
                .await,
            401,
            "InvalidToken",
        ),
        (
            "a token of a pod on another node",
            endpoint
                .credentials("127.0.0.41", &token(&node, "team", "default", "faraway"))
                .await,
            403,
            "AccessDenied",
        ),
        (
            "a pod whose namespace does not allow its role",
            endpoint
                .credentials("127.0.0.44", &token(&node, "locked", "default", "greedy"))
                .await,
            403,
            "RoleNotAllowed",
        ),
        (
            "another pod's token, sent from this pod's address",
            endpoint.credentials("127.0.0.42", &api_token).await,
            403,
            "AccessDenied",
        ),
        (
            "a pod's token replayed from an address of no pod (a host beside the node)",
            endpoint.credentials("127.0.0.49", &api_token).await,
            403,
            "AccessDenied",
        ),
    ];
    for (what, reply, status, code) in cases {
        let (got_status, got_code, message) = refusal(&reply);
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{what}: {message}"
        );
        assert!(!message.is_empty(), "{what}: a message says why");
        for secret in ["AKID", "node-static-secret", "i-0"] {
            assert!(!message.contains(secret), "{what}: {message}");
        }
    }
    let log = endpoint.agent.logs();
    assert!(log.contains("token-for-other-node"), "{log}");
    assert!(log.contains("token-of-another-caller"), "{log}");
    assert!(log.contains("unknown-sender"), "{log}");

    // The owner itself still gets its role with the very same token.
    assert_eq!(
        endpoint.credentials("127.0.0.41", &api_token).await.status,
        200
    );

    // A path or method the endpoint does not serve.
    let other = http_request(
        "127.0.0.41",
        socket("127.0.0.1", endpoint.port),
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        &[("host", &endpoint.host()), ("authorization", &api_token)],
    )
    .await
    .unwrap();
    assert_eq!(other.status, 404);
    let put = http_request(
        "127.0.0.41",
        socket("127.0.0.1", endpoint.port),
        "PUT",
        "/v1/credentials",
        &[("host", &endpoint.host()), ("authorization", &api_token)],
    )
    .await
    .unwrap();
    assert_eq!(put.status, 405);
}

#[tokio::test]
async fn a_deleted_pods_token_and_an_expired_token_get_nothing() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "short", "127.0.0.51", Some("reader"));
    node.add_pod("team", "gone", "127.0.0.52", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;

    let expiring = node
        .api
        .mint_token(
            TokenSpec::new("team", "default")
                .pod("short")
                .audiences([AUDIENCE])
                .ttl(Duration::from_secs(2)),
        )
        .unwrap();
    assert_eq!(
        endpoint.credentials("127.0.0.51", &expiring).await.status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (status, code, _) = refusal(&endpoint.credentials("127.0.0.51", &expiring).await);
    assert_eq!(
        (status, code.as_str()),
        (401, "InvalidToken"),
        "a review is not kept past the token's expiry"
    );

    let gone = token(&node, "team", "default", "gone");
    assert_eq!(endpoint.credentials("127.0.0.52", &gone).await.status, 200);
    node.api.delete(support::Kind::Pod, "team", "gone").unwrap();
    eventually(
        "the deleted pod's token is refused",
        Duration::from_secs(10),
        || async {
            let reply = endpoint.credentials("127.0.0.52", &gone).await;
            (reply.status != 200).then_some(())
        },
    )
    .await;
    let (status, _, _) = refusal(&endpoint.credentials("127.0.0.52", &gone).await);
    assert!(status == 401 || status == 403, "{status}");
}

#[tokio::test]
async fn an_api_server_that_cannot_review_costs_a_retryable_error_not_credentials() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.61", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    node.api.set_token_review_failure(Some(503));
    let (status, code, message) = refusal(&endpoint.credentials("127.0.0.61", &token).await);
    assert_eq!(
        (status, code.as_str()),
        (500, "ServiceUnavailable"),
        "{message}"
    );
    node.api.set_token_review_failure(None);
    assert_eq!(
        endpoint.credentials("127.0.0.61", &token).await.status,
        200,
        "an outage is not remembered as a rejection"
    );
}

// kubectl blocks its thread while the test API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_carries_the_role_of_its_pods() {
    let node = Node::start().await;
    node.api.create_namespace(
        "team",
        json!({"iam.amazonaws.com/allowed-roles": "[\"billing-*\", \"own-role\", \"app-*\"]"}),
    );
    node.api.create_service_account(
        "team",
        "billing",
        json!({"eks.amazonaws.com/role-arn": role_arn("billing-reader")}),
    );
    node.api.put_pod(pod_with_service_account(
        "team",
        "plain",
        NODE,
        "127.0.0.71",
        "billing",
        json!({}),
    ));
    node.api.put_pod(pod_with_service_account(
        "team",
        "own",
        NODE,
        "127.0.0.72",
        "billing",
        json!({"iam.amazonaws.com/role": "own-role"}),
    ));
    node.api.create_namespace(
        "locked",
        json!({"iam.amazonaws.com/allowed-roles": "[\"app-*\"]"}),
    );
    node.api.create_service_account(
        "locked",
        "admin",
        json!({"eks.amazonaws.com/role-arn": role_arn("admin")}),
    );
    node.api.put_pod(pod_with_service_account(
        "locked",
        "sneaky",
        NODE,
        "127.0.0.73",
        "admin",
        json!({}),
    ));
    let agent = node
        .agent(&[
            "--service-account-roles",
            "--namespace-restrictions",
            "--default-role=app-default",
        ])
        .await;
    let role = |ip: &'static str| {
        let agent = &agent;
        async move {
            agent
                .get(ip, "/latest/meta-data/iam/security-credentials/")
                .await
        }
    };
    eventually(
        "the ServiceAccount's role",
        Duration::from_secs(10),
        || async {
            let reply = role("127.0.0.71").await;
            (reply.status == 200 && reply.body == "billing-reader").then_some(())
        },
    )
    .await;
    assert_eq!(
        role("127.0.0.72").await.body,
        "own-role",
        "the pod's own annotation wins"
    );
    let refused = role("127.0.0.73").await;
    assert_eq!(
        refused.status, 404,
        "the allow-list refuses the ServiceAccount's role"
    );
    assert!(agent.logs().contains("namespace-restriction"));

    // Editing the ServiceAccount applies to the next request.
    let output = node.kubectl(&[
        "annotate",
        "serviceaccount",
        "billing",
        "-n",
        "team",
        "--overwrite",
        &format!("eks.amazonaws.com/role-arn={}", role_arn("billing-writer")),
    ]);
    assert!(output.status.success(), "{output:?}");
    eventually("the edited role", Duration::from_secs(10), || async {
        (role("127.0.0.71").await.body == "billing-writer").then_some(())
    })
    .await;
    let creds = agent
        .get(
            "127.0.0.71",
            "/latest/meta-data/iam/security-credentials/billing-writer",
        )
        .await;
    assert_eq!(creds.status, 200, "{}", creds.body);
    // Without the annotation, the default role.
    let output = node.kubectl(&[
        "annotate",
        "serviceaccount",
        "billing",
        "-n",
        "team",
        "eks.amazonaws.com/role-arn-",
    ]);
    assert!(output.status.success(), "{output:?}");
    eventually("the default role", Duration::from_secs(10), || async {
        (role("127.0.0.71").await.body == "app-default").then_some(())
    })
    .await;
}

#[tokio::test]
async fn session_tags_reach_sts_as_eks_pod_identity_sets_them() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.api.create_service_account("team", "api-sa", json!({}));
    node.api.put_pod(pod_with_service_account(
        "team",
        "tagged",
        NODE,
        "127.0.0.81",
        "api-sa",
        json!({"iam.amazonaws.com/role": "reader"}),
    ));
    let agent = node
        .agent(&[
            "--session-tags",
            "--cluster-name=prod-eu",
            "--cluster-arn=arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu",
            "--session-source-identity",
        ])
        .await;
    let reply = agent
        .get(
            "127.0.0.81",
            "/latest/meta-data/iam/security-credentials/reader",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let uid = node.api.get(support::Kind::Pod, "team", "tagged").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let call = node
        .moto
        .assume_role_calls()
        .into_iter()
        .find(|c| c.contains("RoleSessionName=team.tagged"))
        .expect("an AssumeRole for the pod");
    let form = form(&call);
    let mut tags = std::collections::BTreeMap::new();
    for n in 1..=10 {
        if let Some(key) = form.get(&format!("Tags.member.{n}.Key")) {
            tags.insert(key.clone(), form[&format!("Tags.member.{n}.Value")].clone());
        }
    }
    let expected: std::collections::BTreeMap<String, String> = [
        (
            "eks-cluster-arn",
            "arn:aws:eks:eu-west-1:123456789012:cluster/prod-eu",
        ),
        ("eks-cluster-name", "prod-eu"),
        ("kubernetes-namespace", "team"),
        ("kubernetes-service-account", "api-sa"),
        ("kubernetes-pod-name", "tagged"),
        ("kubernetes-pod-uid", uid.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(tags, expected, "{call}");
    let transitive: std::collections::BTreeSet<&String> = (1..=10)
        .filter_map(|n| form.get(&format!("TransitiveTagKeys.member.{n}")))
        .collect();
    assert_eq!(
        transitive,
        expected.keys().collect(),
        "every tag is transitive"
    );
    assert_eq!(form["SourceIdentity"], "team.api-sa");
}

#[tokio::test]
async fn bad_session_tag_flags_are_refused_at_start() {
    let node = Node::start().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .args([
            "--host-ip=127.0.0.1",
            &format!("--api-server={}", node.api.url()),
            "--session-tags",
            "--cluster-name=prod#1",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--cluster-name"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .args([
            "--host-ip=127.0.0.1",
            "--container-credentials-listen=169.254.170.23",
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--container-credentials-listen"),
        "{stderr}"
    );
}
