//! A hostile pod (and a hostile neighbour of the node) against the
//! container credentials endpoint, ServiceAccount roles and session tags.
//! Every test asserts what a user expects of a secure agent: one that fails
//! here lets an attacker do what the test names. Tests marked
//! `#[ignore = "defect: ..."]` failed against the agent they were written
//! for; each defect is fixed and its test now runs.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::{Duration, Instant};

use iamlet_testkit::{Kind, TokenSpec, pod_with_service_account};
use serde_json::json;
use support::clients::http_request;
use support::container::{AUDIENCE, Endpoint, PATH, form, refusal, token};
use support::{NODE, Node, eventually, free_port, role_arn, socket};

/// A string that looks like a projected token but that no API server
/// issued (a forgery, or a token of another cluster).
fn forged(n: usize) -> String {
    format!("eyJhbGciOiJSUzI1NiIsImtpZCI6ImZha2UifQ.eyJzdWIiOiJ4In0.forged-signature-{n:06}")
}

// ---------------------------------------------------------------------------
// HTTP tricks
// ---------------------------------------------------------------------------

#[tokio::test]
async fn host_header_tricks_are_refused_before_any_review() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.31", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let p = endpoint.port;
    let variants = [
        format!("127.0.0.1:{p}."),
        format!("127.0.0.1.:{p}"),
        format!("user@127.0.0.1:{p}"),
        format!("127.0.0.1:{p}@evil.example"),
        format!("127.0.0.1:{p}#frag"),
        format!("127.0.0.1:{p}/x"),
        "127.0.0.1".to_string(),
        "127.0.0.1:80".to_string(),
        format!("127.1:{p}"),
        format!("2130706433:{p}"),
        format!("0x7f.0.0.1:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("[::ffff:7f00:1]:{p}"),
        format!("127.0.0.1:{p},evil.example"),
        format!("evil.example,127.0.0.1:{p}"),
        format!("127.0.0.1:{p} evil.example"),
        format!("localhost:{p}"),
        String::new(),
    ];
    let reviews = node.api.token_reviews();
    for host in &variants {
        let request = format!(
            "GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        );
        let answer = endpoint.raw("127.0.0.31", request.as_bytes()).await;
        let (status, body) = answer.unwrap_or((0, String::new()));
        assert_eq!(status, 400, "Host {host:?}: {body}");
    }
    // No Host at all (HTTP/1.0 allows leaving it out).
    let request = format!("GET {PATH} HTTP/1.0\r\nAuthorization: {token}\r\n\r\n");
    let (status, body) = endpoint
        .raw("127.0.0.31", request.as_bytes())
        .await
        .unwrap();
    assert_eq!(status, 400, "no Host: {body}");
    assert_eq!(
        node.api.token_reviews(),
        reviews,
        "a request for another host costs the API server nothing"
    );
    assert_eq!(
        endpoint.credentials("127.0.0.31", &token).await.status,
        200,
        "the real Host still works"
    );
}

#[tokio::test]

async fn two_host_headers_are_refused() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.32", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let host = endpoint.host();
    for (first, second) in [
        (host.as_str(), "evil.example"),
        ("evil.example", host.as_str()),
        (host.as_str(), host.as_str()),
    ] {
        let request = format!(
            "GET {PATH} HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = endpoint
            .raw("127.0.0.32", request.as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 400, "Host {first:?} then {second:?}: {body}");
        assert!(!body.contains("AccessKeyId"), "{body}");
    }
}

#[tokio::test]

async fn an_absolute_form_target_naming_another_host_is_refused() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.33", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let host = endpoint.host();
    for target in [
        format!("http://evil.example{PATH}"),
        format!("http://evil.example:{}{PATH}", endpoint.port),
        format!("https://evil.example{PATH}"),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = endpoint
            .raw("127.0.0.33", request.as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 400, "{target}: {body}");
        assert!(!body.contains("AccessKeyId"), "{target}: {body}");
    }
}

#[tokio::test]
async fn only_get_of_the_exact_path_is_served() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.34", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let host = endpoint.host();
    let reviews = node.api.token_reviews();
    for path in [
        "/v1/credentials/",
        "//v1/credentials",
        "/V1/credentials",
        "/v1/Credentials",
        "/v1/%63redentials",
        "/v1%2Fcredentials",
        "/v1/../v1/credentials",
        "/v1/./credentials",
        "/v1//credentials",
        "/v1/credentials/.",
        "/v1/credentials%00",
        "/v1/credentials;x",
        "/v1/credentials%20",
        "/v2/credentials",
        "/latest/v1/credentials",
        "*",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
        );
        let answer = endpoint.raw("127.0.0.34", request.as_bytes()).await;
        let (status, body) = answer.unwrap_or((0, String::new()));
        assert!(status == 404 || status == 400, "{path:?}: {status} {body}");
        assert!(!body.contains("AccessKeyId"), "{path:?}: {body}");
    }
    for method in ["HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] {
        let request = format!(
            "{method} {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let answer = endpoint.raw("127.0.0.34", request.as_bytes()).await;
        let (status, body) = answer.unwrap_or((0, String::new()));
        assert!(status == 405 || status == 400, "{method}: {status} {body}");
        assert!(!body.contains("AccessKeyId"), "{method}: {body}");
    }
    let connect = format!(
        "CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    let answer = endpoint.raw("127.0.0.34", connect.as_bytes()).await;
    assert!(
        answer
            .as_ref()
            .is_none_or(|(status, body)| *status != 200 && !body.contains("AccessKeyId")),
        "CONNECT: {answer:?}"
    );
    assert_eq!(
        node.api.token_reviews(),
        reviews,
        "a path or method the endpoint does not serve costs no review"
    );
}

#[tokio::test]
async fn the_container_listener_serves_nothing_of_the_metadata_service() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.35", Some("reader"));
    let endpoint = Endpoint::start(&node, &["--debug"]).await;
    let token = token(&node, "team", "default", "api");
    let host = endpoint.host();
    let upstream_before = node.imds.seen().len();
    for source in ["127.0.0.35", "127.0.0.1"] {
        for (method, path) in [
            ("GET", "/latest/meta-data/"),
            ("GET", "/latest/meta-data/iam/security-credentials/"),
            ("GET", "/latest/meta-data/iam/security-credentials/reader"),
            ("GET", "/latest/meta-data/instance-id"),
            ("GET", "/latest/user-data"),
            ("GET", "/latest/dynamic/instance-identity/document"),
            ("PUT", "/latest/api/token"),
            ("GET", "/metrics"),
            ("GET", "/debug/store"),
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/"),
        ] {
            for with_token in [false, true] {
                let mut headers = vec![
                    ("host", host.as_str()),
                    ("x-aws-ec2-metadata-token-ttl-seconds", "60"),
                ];
                if with_token {
                    headers.push(("authorization", token.as_str()));
                }
                let reply = http_request(
                    source,
                    socket("127.0.0.1", endpoint.port),
                    method,
                    path,
                    &headers,
                )
                .await
                .unwrap();
                assert!(
                    reply.status == 404 || reply.status == 405,
                    "{method} {path} from {source}: {} {}",
                    reply.status,
                    reply.body
                );
                for leak in [
                    "iamlet_",
                    "AccessKeyId",
                    "i-0123456789abcdef0",
                    "node-bootstrap-secret",
                    "\"pods\"",
                ] {
                    assert!(
                        !reply.body.contains(leak),
                        "{method} {path}: {}",
                        reply.body
                    );
                }
            }
        }
    }
    assert_eq!(
        node.imds.seen().len(),
        upstream_before,
        "nothing asked on the container listener reaches the real metadata service"
    );
}

#[tokio::test]

async fn two_authorization_headers_are_refused() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.36", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let host = endpoint.host();
    for (first, second) in [
        (token.as_str(), "garbage"),
        ("garbage", token.as_str()),
        (token.as_str(), token.as_str()),
    ] {
        let request = format!(
            "GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {first}\r\nAuthorization: {second}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = endpoint
            .raw("127.0.0.36", request.as_bytes())
            .await
            .unwrap();
        assert_eq!(status, 400, "{body}");
        assert!(!body.contains("AccessKeyId"), "{body}");
    }
}

#[tokio::test]
async fn malformed_tokens_get_nothing_and_most_cost_no_review() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.37", Some("reader"));
    node.add_pod("team", "web", "127.0.0.38", Some("writer"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let own = token(&node, "team", "default", "api");
    let other = token(&node, "team", "default", "web");
    let host = endpoint.host();

    // Refused by the agent itself, before the API server is asked.
    let no_review: Vec<(String, String)> = vec![
        ("7 KiB token".into(), "a".repeat(7 * 1024)),
        ("a tab inside".into(), format!("{own}\tx")),
        ("junk after a space".into(), format!("{own} x")),
        ("two tokens".into(), format!("{own} {other}")),
        ("Basic scheme".into(), format!("Basic {own}")),
        ("lower-case scheme".into(), format!("bearer {own}")),
        ("scheme twice".into(), format!("Bearer Bearer {own}")),
    ];
    for (what, value) in &no_review {
        let reviews = node.api.token_reviews();
        let request = format!(
            "GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n"
        );
        let answer = endpoint.raw("127.0.0.37", request.as_bytes()).await;
        let (status, body) = answer.unwrap_or((0, String::new()));
        assert!(status == 400 || status == 401, "{what}: {status} {body}");
        assert!(!body.contains("AccessKeyId"), "{what}: {body}");
        assert_eq!(node.api.token_reviews(), reviews, "{what} was reviewed");
    }
    // The scheme alone is no token (it is reviewed as the token "Bearer",
    // harmlessly): nothing is granted.
    let (status, _, _) = refusal(&endpoint.credentials("127.0.0.37", "Bearer ").await);
    assert!(status == 400 || status == 401, "{status}");

    // Bytes HTTP does not allow in a header, a folded header, a head larger
    // than the agent buffers: no answer with credentials, and the agent
    // keeps serving.
    let big = "a".repeat(16 * 1024);
    let raw_cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "NUL in the token",
            format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {own}\0x\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        (
            "bare CR in the token",
            format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {own}\rx\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        (
            "bare LF ends the header early",
            format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: x\n{own}\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        (
            "obs-fold continuation",
            format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: x\r\n {own}\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
        (
            "obs-text byte",
            [
                format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {own}").into_bytes(),
                vec![0xff],
                b"\r\nConnection: close\r\n\r\n".to_vec(),
            ]
            .concat(),
        ),
        (
            "16 KiB token",
            format!("GET {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {big}\r\nConnection: close\r\n\r\n").into_bytes(),
        ),
    ];
    for (what, request) in &raw_cases {
        let answer = endpoint.raw("127.0.0.37", request).await;
        if let Some((status, body)) = &answer {
            assert!((400..500).contains(status), "{what}: {status} {body}");
            assert!(!body.contains("AccessKeyId"), "{what}: {body}");
        }
    }
    // Another pod's token with the tolerated scheme and blanks around it is
    // still that pod's token.
    let padded = format!("  Bearer {other}  ");
    let (status, code, _) = refusal(&endpoint.credentials("127.0.0.37", &padded).await);
    assert_eq!((status, code.as_str()), (403, "AccessDenied"));
    assert_eq!(
        endpoint.credentials("127.0.0.37", &own).await.status,
        200,
        "the agent still serves"
    );
}

// ---------------------------------------------------------------------------
// Whose token it is
// ---------------------------------------------------------------------------

#[tokio::test]
async fn same_named_pods_in_two_namespaces_are_told_apart() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.api.create_namespace("evil", json!({}));
    node.add_pod("team", "api", "127.0.0.41", Some("team-admin"));
    node.add_pod("evil", "api", "127.0.0.42", Some("evil-reader"));
    node.add_pod("evil", "other", "127.0.0.43", None);
    let endpoint = Endpoint::start(&node, &[]).await;
    let team = token(&node, "team", "default", "api");
    let evil = token(&node, "evil", "default", "api");

    let reply = endpoint.credentials("127.0.0.42", &evil).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let team_reply = endpoint.credentials("127.0.0.41", &team).await;
    assert_eq!(team_reply.status, 200, "{}", team_reply.body);
    assert_ne!(
        reply.json()["AccessKeyId"],
        team_reply.json()["AccessKeyId"]
    );
    let calls = node.moto.assume_role_calls();
    assert!(
        calls
            .iter()
            .filter(|c| c.contains("RoleSessionName=evil.api"))
            .all(|c| c.contains("evil-reader") && !c.contains("team-admin")),
        "{calls:?}"
    );
    for (source, token, what) in [
        ("127.0.0.41", &evil, "evil/api's token from team/api"),
        ("127.0.0.42", &team, "team/api's token from evil/api"),
        ("127.0.0.43", &team, "team/api's token from evil/other"),
    ] {
        let (status, code, message) = refusal(&endpoint.credentials(source, token).await);
        assert_eq!(
            (status, code.as_str()),
            (403, "AccessDenied"),
            "{what}: {message}"
        );
    }
}

#[tokio::test]
async fn a_pod_recreated_under_the_same_name_does_not_inherit_the_old_token() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.44", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let old = token(&node, "team", "default", "api");
    assert_eq!(endpoint.credentials("127.0.0.44", &old).await.status, 200);

    // Deleted and created again at once, same name and address, a better
    // role: the old pod's token (its review cached by the agent) must not
    // be worth the new pod's role.
    node.api.delete(Kind::Pod, "team", "api").unwrap();
    node.add_pod("team", "api", "127.0.0.44", Some("admin"));
    let new = token(&node, "team", "default", "api");
    eventually("the new pod is served", Duration::from_secs(10), || async {
        let reply = endpoint.credentials("127.0.0.44", &new).await;
        (reply.status == 200).then_some(())
    })
    .await;
    for _ in 0..3 {
        let reply = endpoint.credentials("127.0.0.44", &old).await;
        let (status, code, message) = refusal(&reply);
        assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{message}");
    }
    // Sent from the new pod's address, the old token is another pod's.
    let log = endpoint.agent.logs();
    assert!(
        log.contains("pod-replaced") || log.contains("token-of-another-caller"),
        "{log}"
    );

    // The same again at another address: the old token from the old
    // address (now nobody's) and from the new one.
    node.api.delete(Kind::Pod, "team", "api").unwrap();
    node.add_pod("team", "api", "127.0.0.45", Some("admin"));
    let newest = token(&node, "team", "default", "api");
    eventually(
        "the newest pod is served",
        Duration::from_secs(10),
        || async {
            let reply = endpoint.credentials("127.0.0.45", &newest).await;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    for (source, token) in [
        ("127.0.0.44", &new),
        ("127.0.0.45", &new),
        ("127.0.0.45", &old),
    ] {
        let reply = endpoint.credentials(source, token).await;
        assert_ne!(reply.status, 200, "{source}: {}", reply.body);
    }
    let admin_sessions = node
        .moto
        .assume_role_calls()
        .into_iter()
        .filter(|c| c.contains("admin"))
        .count();
    assert!(admin_sessions <= 2, "only the new pods got admin");
}

#[tokio::test]
async fn a_cached_review_gives_nothing_once_the_index_is_stale_or_the_pod_gone() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.46", Some("reader"));
    node.add_pod("team", "web", "127.0.0.47", Some("reader"));
    let endpoint = Endpoint::start(&node, &["--max-index-staleness=1s"]).await;
    let api = token(&node, "team", "default", "api");
    let web = token(&node, "team", "default", "web");
    assert_eq!(endpoint.credentials("127.0.0.46", &api).await.status, 200);
    assert_eq!(endpoint.credentials("127.0.0.47", &web).await.status, 200);

    // The API server goes away; meanwhile the pod is deleted.
    node.api.stop();
    node.api.delete(Kind::Pod, "team", "api").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, code, message) = refusal(&endpoint.credentials("127.0.0.46", &api).await);
    assert_eq!(
        (status, code.as_str()),
        (500, "ServiceUnavailable"),
        "a stale index is not answered from: {message}"
    );
    node.api.restart().await.unwrap();
    eventually(
        "the relisted index serves the pod that is left",
        Duration::from_secs(15),
        || async {
            let reply = endpoint.credentials("127.0.0.47", &web).await;
            (reply.status == 200).then_some(())
        },
    )
    .await;
    let reply = endpoint.credentials("127.0.0.46", &api).await;
    assert_eq!(
        refusal(&reply).0,
        403,
        "the deleted pod's cached review is worth nothing: {}",
        reply.body
    );

    // Compaction (410 Gone, relist) while a pod is deleted.
    node.api.delete(Kind::Pod, "team", "web").unwrap();
    node.api.compact();
    eventually(
        "the deleted pod's token is refused after the relist",
        Duration::from_secs(15),
        || async {
            let reply = endpoint.credentials("127.0.0.47", &web).await;
            (reply.status != 200).then_some(())
        },
    )
    .await;
}

#[tokio::test]

async fn a_stolen_token_tells_its_thief_nothing_of_its_pod() {
    let node = Node::start().await;
    node.api.create_namespace(
        "locked",
        json!({"iam.amazonaws.com/allowed-roles": "[\"app-*\"]"}),
    );
    node.api.create_namespace("team", json!({}));
    node.add_pod("locked", "victim", "127.0.0.51", Some("secret-admin-role"));
    node.add_pod("team", "plain", "127.0.0.52", None);
    node.add_pod("team", "thief", "127.0.0.53", Some("reader"));
    let endpoint = Endpoint::start(&node, &["--namespace-restrictions"]).await;
    let victim = token(&node, "locked", "default", "victim");
    let plain = token(&node, "team", "default", "plain");
    for source in ["127.0.0.53", "127.0.0.99"] {
        for (what, token) in [("refused role", &victim), ("no role", &plain)] {
            let (status, code, message) = refusal(&endpoint.credentials(source, token).await);
            assert_eq!(
                (status, code.as_str()),
                (403, "AccessDenied"),
                "{what} from {source}: {message}"
            );
            assert!(!message.contains("secret-admin-role"), "{message}");
        }
    }
}

// ---------------------------------------------------------------------------
// Floods
// ---------------------------------------------------------------------------

/// Sends `tokens` from `source`, `parallel` at a time; the statuses.
async fn flood(endpoint: &Endpoint, source: &str, tokens: &[String], parallel: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for chunk in tokens.chunks(parallel) {
        let replies = futures::future::join_all(
            chunk
                .iter()
                .map(|token| endpoint.ask(source, Some(token), &[])),
        )
        .await;
        statuses.extend(replies.into_iter().map(|r| r.map_or(0, |r| r.status)));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_new_tokens_costs_one_review_each_and_starves_no_one() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "cached", "127.0.0.61", Some("reader"));
    node.add_pod("team", "attacker", "127.0.0.62", Some("reader"));
    node.add_pod("team", "fresh", "127.0.0.63", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let cached = token(&node, "team", "default", "cached");
    let fresh = token(&node, "team", "default", "fresh");
    assert_eq!(
        endpoint.credentials("127.0.0.61", &cached).await.status,
        200
    );

    let before = node.api.token_reviews();
    let forgeries: Vec<String> = (0..300).map(forged).collect();
    let attack = flood(&endpoint, "127.0.0.62", &forgeries, 48);
    let victims = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let reply = endpoint.credentials("127.0.0.61", &cached).await;
        let cached_took = started.elapsed();
        let started = Instant::now();
        let fresh_reply = endpoint.credentials("127.0.0.63", &fresh).await;
        (
            reply.status,
            cached_took,
            fresh_reply.status,
            started.elapsed(),
        )
    };
    let (statuses, (cached_status, cached_took, fresh_status, fresh_took)) =
        tokio::join!(attack, victims);
    // 401: reviewed and rejected; 500: over the caller's two reviews in
    // flight (retryable, no review); 429: over its request budget.
    assert!(
        statuses
            .iter()
            .all(|s| *s == 401 || *s == 500 || *s == 429 || *s == 0),
        "{statuses:?}"
    );
    assert_eq!(cached_status, 200);
    assert_eq!(fresh_status, 200);
    assert!(cached_took < Duration::from_secs(1), "{cached_took:?}");
    assert!(fresh_took < Duration::from_secs(2), "{fresh_took:?}");
    let reviewed = node.api.token_reviews() - before;
    let sent = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        reviewed <= sent + 1,
        "{reviewed} reviews for {sent} reviewed forgeries and one new token"
    );
    assert!(
        statuses.contains(&429),
        "the attacker's request budget runs out: {statuses:?}"
    );

    // One bad token, repeated and in parallel: one review.
    tokio::time::sleep(Duration::from_secs(3)).await; // let the budget refill
    let before = node.api.token_reviews();
    let same = vec![forged(999_999); 40];
    let statuses = flood(&endpoint, "127.0.0.62", &same, 20).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(node.api.token_reviews() - before, 1);
    // A good new token, asked by its pod twenty times at once: one review.
    let again = token(&node, "team", "default", "fresh");
    let before = node.api.token_reviews();
    let statuses = flood(&endpoint, "127.0.0.63", &vec![again; 20], 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(node.api.token_reviews() - before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_during_a_review_outage_spares_reviewed_pods_and_recovers() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "cached", "127.0.0.64", Some("reader"));
    node.add_pod("team", "attacker", "127.0.0.65", Some("reader"));
    node.add_pod("team", "fresh", "127.0.0.66", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let cached = token(&node, "team", "default", "cached");
    let fresh = token(&node, "team", "default", "fresh");
    assert_eq!(
        endpoint.credentials("127.0.0.64", &cached).await.status,
        200
    );

    node.api.set_token_review_failure(Some(503));
    let forgeries: Vec<String> = (0..32).map(forged).collect();
    let attack = flood(&endpoint, "127.0.0.65", &forgeries, 32);
    let victim = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let status = endpoint.credentials("127.0.0.64", &cached).await.status;
        (status, started.elapsed())
    };
    let (statuses, (cached_status, cached_took)) = tokio::join!(attack, victim);
    assert!(
        statuses.iter().all(|s| *s == 500 || *s == 429 || *s == 0),
        "{statuses:?}"
    );
    assert_eq!(cached_status, 200, "a reviewed token needs no API server");
    assert!(cached_took < Duration::from_secs(1), "{cached_took:?}");

    // Once the API server answers again, a new pod is served promptly.
    node.api.set_token_review_failure(None);
    let started = Instant::now();
    let reply = endpoint.credentials("127.0.0.66", &fresh).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]

async fn a_failing_token_review_is_not_hammered_with_retries() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.67", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    for status in [503, 429, 504] {
        node.api.set_token_review_failure(Some(status));
        let before = node.api.token_reviews();
        let reply = endpoint
            .credentials("127.0.0.67", &forged(usize::from(status)))
            .await;
        assert_eq!(reply.status, 500, "{}", reply.body);
        let reviewed = node.api.token_reviews() - before;
        assert!(
            reviewed <= 2,
            "one request cost a failing API server {reviewed} TokenReviews ({status})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn a_flood_during_a_review_outage_does_not_queue_other_pods_behind_it() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "attacker", "127.0.0.68", Some("reader"));
    node.add_pod("team", "fresh", "127.0.0.69", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let fresh = token(&node, "team", "default", "fresh");
    node.api.set_token_review_failure(Some(503));
    let forgeries: Vec<String> = (0..60).map(forged).collect();
    let attack = flood(&endpoint, "127.0.0.68", &forgeries, 60);
    let victim = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let status = endpoint.credentials("127.0.0.69", &fresh).await.status;
        (status, started.elapsed())
    };
    let (_, (status, took)) = tokio::join!(attack, victim);
    node.api.set_token_review_failure(None);
    assert_eq!(status, 500);
    assert!(
        took < Duration::from_secs(5),
        "another pod's request waited {took:?} behind the flood (the review budget is 3 s)"
    );
}

// ---------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_role_annotation_changed_to_a_forbidden_role_is_refused_at_once() {
    let node = Node::start().await;
    node.api.create_namespace(
        "team",
        json!({"iam.amazonaws.com/allowed-roles": "[\"reader\"]"}),
    );
    node.add_pod("team", "api", "127.0.0.71", Some("reader"));
    let endpoint = Endpoint::start(&node, &["--namespace-restrictions"]).await;
    let token = token(&node, "team", "default", "api");
    let reply = endpoint.credentials("127.0.0.71", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let old_key = reply.json()["AccessKeyId"].as_str().unwrap().to_string();

    node.add_pod("team", "api", "127.0.0.71", Some("admin"));
    eventually(
        "the new annotation applies",
        Duration::from_secs(10),
        || async {
            let reply = endpoint.credentials("127.0.0.71", &token).await;
            (reply.status != 200).then_some(())
        },
    )
    .await;
    for _ in 0..3 {
        let reply = endpoint.credentials("127.0.0.71", &token).await;
        assert!(!reply.body.contains(&old_key), "{}", reply.body);
        let (status, code, _) = refusal(&reply);
        assert_eq!((status, code.as_str()), (403, "RoleNotAllowed"));
    }
    let imds = endpoint
        .agent
        .get(
            "127.0.0.71",
            "/latest/meta-data/iam/security-credentials/reader",
        )
        .await;
    assert_ne!(imds.status, 200, "{}", imds.body);
    let calls = node.moto.assume_role_calls();
    assert!(!calls.iter().any(|c| c.contains("admin")), "{calls:?}");
}

#[tokio::test]
async fn a_refused_service_account_role_never_becomes_the_default_role() {
    let node = Node::start().await;
    node.api.create_namespace(
        "locked",
        json!({"iam.amazonaws.com/allowed-roles": "[\"app-*\"]"}),
    );
    let accounts = [
        ("admin-sa", role_arn("admin"), "p-admin", "127.0.0.81"),
        (
            "malformed-sa",
            "arn:aws:iam::12:role/".to_string(),
            "p-malformed",
            "127.0.0.82",
        ),
        (
            "cross-sa",
            "arn:aws:iam::999999999999:role/app-cross".to_string(),
            "p-cross",
            "127.0.0.83",
        ),
        (
            "dots-sa",
            "app-ok/../admin".to_string(),
            "p-dots",
            "127.0.0.84",
        ),
        (
            "space-sa",
            "app-ok admin".to_string(),
            "p-space",
            "127.0.0.85",
        ),
        (
            "newline-sa",
            "app-ok\nadmin".to_string(),
            "p-newline",
            "127.0.0.86",
        ),
    ];
    for (account, role, pod, ip) in &accounts {
        node.api.create_service_account(
            "locked",
            account,
            json!({"eks.amazonaws.com/role-arn": role}),
        );
        node.api.put_pod(pod_with_service_account(
            "locked",
            pod,
            NODE,
            ip,
            account,
            json!({}),
        ));
    }
    // A blank annotation is no annotation: the default role (allowed).
    node.api.create_service_account(
        "locked",
        "blank-sa",
        json!({"eks.amazonaws.com/role-arn": "   "}),
    );
    node.api.put_pod(pod_with_service_account(
        "locked",
        "p-blank",
        NODE,
        "127.0.0.87",
        "blank-sa",
        json!({}),
    ));
    let endpoint = Endpoint::start(
        &node,
        &[
            "--service-account-roles",
            "--namespace-restrictions",
            "--default-role=app-default",
        ],
    )
    .await;
    for (account, role, pod, ip) in &accounts {
        let token = token(&node, "locked", account, pod);
        let reply = endpoint.credentials(ip, &token).await;
        let (status, code, message) = refusal(&reply);
        assert_eq!(
            (status, code.as_str()),
            (403, "RoleNotAllowed"),
            "{account} ({role:?}): {message}"
        );
        let imds = endpoint
            .agent
            .get(ip, "/latest/meta-data/iam/security-credentials/")
            .await;
        assert_ne!(
            imds.status, 200,
            "{account} on the metadata path: {}",
            imds.body
        );
    }
    let blank = token(&node, "locked", "blank-sa", "p-blank");
    assert_eq!(endpoint.credentials("127.0.0.87", &blank).await.status, 200);
    let calls = node.moto.assume_role_calls();
    for (_, _, pod, _) in &accounts {
        let session = format!("RoleSessionName=locked.{pod}");
        assert!(
            !calls.iter().any(|c| c.contains(&session)),
            "{pod} got a session: {calls:?}"
        );
    }
}

#[tokio::test]
async fn a_deleted_service_account_takes_its_role_with_it() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.api.create_service_account(
        "team",
        "svc",
        json!({"eks.amazonaws.com/role-arn": role_arn("svc-role")}),
    );
    node.api.put_pod(pod_with_service_account(
        "team",
        "api",
        NODE,
        "127.0.0.88",
        "svc",
        json!({}),
    ));
    let endpoint = Endpoint::start(
        &node,
        &["--service-account-roles", "--default-role=fallback"],
    )
    .await;
    let token = token(&node, "team", "svc", "api");
    let reply = endpoint.credentials("127.0.0.88", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    node.api
        .delete(Kind::ServiceAccount, "team", "svc")
        .unwrap();
    eventually(
        "the ServiceAccount's deletion applies",
        Duration::from_secs(15),
        || async {
            let reply = endpoint.credentials("127.0.0.88", &token).await;
            (reply.status != 200).then_some(())
        },
    )
    .await;
    let reply = endpoint.credentials("127.0.0.88", &token).await;
    assert_eq!(refusal(&reply).0, 403, "{}", reply.body);
    let calls = node.moto.assume_role_calls();
    assert!(!calls.iter().any(|c| c.contains("fallback")), "{calls:?}");
}

// ---------------------------------------------------------------------------
// Session tags
// ---------------------------------------------------------------------------

fn sts_tag_value(value: &str) -> bool {
    value.chars().count() <= 256
        && value
            .chars()
            .all(|c| c.is_alphabetic() || c.is_numeric() || c == ' ' || "_.:/=+-@".contains(c))
}

fn sts_name(value: &str) -> bool {
    (2..=64).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
}

#[tokio::test]
async fn the_longest_kubernetes_names_still_make_sessions_sts_accepts() {
    let node = Node::start().await;
    let namespace = format!("n{}", "s".repeat(62));
    let account = format!("sa.{}", "a".repeat(249));
    let pod = format!("p.{}", "d".repeat(250));
    node.api.create_namespace(&namespace, json!({}));
    node.api.create_namespace("other", json!({}));
    node.api
        .create_service_account(&namespace, &account, json!({}));
    node.api.put_pod(pod_with_service_account(
        &namespace,
        &pod,
        NODE,
        "127.0.0.91",
        &account,
        json!({"iam.amazonaws.com/role": "shared"}),
    ));
    node.add_pod("other", "small", "127.0.0.92", Some("shared"));
    let endpoint = Endpoint::start(
        &node,
        &[
            "--session-tags",
            "--cluster-name=prod eu",
            "--session-source-identity",
        ],
    )
    .await;
    let long = token(&node, &namespace, &account, &pod);
    let reply = endpoint.credentials("127.0.0.91", &long).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let small = token(&node, "other", "default", "small");
    let other = endpoint.credentials("127.0.0.92", &small).await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_ne!(
        reply.json()["AccessKeyId"],
        other.json()["AccessKeyId"],
        "two pods of one role never share a tagged session"
    );
    for call in node.moto.assume_role_calls() {
        let form = form(&call);
        assert!(sts_name(&form["RoleSessionName"]), "{call}");
        if let Some(identity) = form.get("SourceIdentity") {
            assert!(sts_name(identity), "SourceIdentity {identity:?}");
        }
        for n in 1..=50 {
            if let Some(value) = form.get(&format!("Tags.member.{n}.Value")) {
                assert!(sts_tag_value(value), "tag value {value:?}");
            }
        }
    }
}

#[tokio::test]

async fn cluster_tag_values_with_control_characters_are_refused_at_start() {
    let node = Node::start().await;
    for value in ["prod\teu", "prod\neu", "prod\u{85}eu", "prod\u{b}eu"] {
        for flag in ["--cluster-name", "--cluster-arn"] {
            let port = free_port();
            // Everything on loopback and at the fixtures, should it start.
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_iamlet"))
                .args([
                    "--host-ip=127.0.0.1".to_string(),
                    format!("--app-port={port}"),
                    format!("--metrics-port={port}"),
                    format!("--api-server={}", node.api.url()),
                    format!("--node={NODE}"),
                    format!("--metadata-addr={}", node.imds.addr),
                    format!("--container-credentials-listen=127.0.0.1:{}", free_port()),
                    "--session-tags".to_string(),
                    format!("{flag}={value}"),
                ])
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_ENDPOINT_URL", &node.moto.url)
                .env("AWS_CONFIG_FILE", "/dev/null")
                .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
                .env("AWS_ACCESS_KEY_ID", "AKIDNODEIDENTITY0001")
                .env("AWS_SECRET_ACCESS_KEY", "node-static-secret")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let output = wait_with_timeout(output, Duration::from_secs(5));
            let stderr = String::from_utf8_lossy(&output.1);
            assert_eq!(output.0, Some(2), "{flag}={value:?}: {stderr}");
            assert!(stderr.contains(flag), "{stderr}");
        }
    }
}

/// Waits for `child` at most `limit`; kills it (by its handle) if it is
/// still running. Its exit code (`None` if killed) and stderr.
fn wait_with_timeout(mut child: std::process::Child, limit: Duration) -> (Option<i32>, Vec<u8>) {
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_end(&mut stderr);
    }
    (code, stderr)
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_token_or_credential_reaches_the_log() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.93", Some("reader"));
    node.add_pod("team", "web", "127.0.0.94", Some("writer"));
    let endpoint = Endpoint::start(&node, &["--verbose"]).await;
    let api = token(&node, "team", "default", "api");
    let reply = endpoint.credentials("127.0.0.93", &api).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    let secret = body["SecretAccessKey"].as_str().unwrap().to_string();
    let session = body["Token"].as_str().unwrap().to_string();
    // Refusals that carry a token: another pod's, a junk-suffixed one, an
    // expired one, one the API server rejects, one for another audience.
    let _ = endpoint.credentials("127.0.0.94", &api).await;
    let _ = endpoint.credentials("127.0.0.93", &format!("{api}x")).await;
    let _ = endpoint
        .credentials("127.0.0.93", &format!("{api} x"))
        .await;
    let expired = node
        .api
        .mint_token(
            TokenSpec::new("team", "default")
                .pod("api")
                .audiences([AUDIENCE])
                .ttl(Duration::ZERO),
        )
        .unwrap();
    let _ = endpoint.credentials("127.0.0.93", &expired).await;
    let sts_token = node
        .api
        .mint_token(
            TokenSpec::new("team", "default")
                .pod("api")
                .audiences(["sts.amazonaws.com"]),
        )
        .unwrap();
    let _ = endpoint.credentials("127.0.0.93", &sts_token).await;
    node.api.set_token_review_failure(Some(500));
    let web = token(&node, "team", "default", "web");
    let _ = endpoint.credentials("127.0.0.94", &web).await;
    node.api.set_token_review_failure(None);
    let log = endpoint.agent.logs();
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_string();
    for (what, needle) in [
        ("the token", api.clone()),
        ("the token's signature", signature(&api)),
        ("the expired token's signature", signature(&expired)),
        ("another audience's token signature", signature(&sts_token)),
        ("the token sent during the outage", signature(&web)),
        ("the secret key", secret),
        (
            "the session token",
            session[..40.min(session.len())].to_string(),
        ),
        ("the node's secret key", "node-static-secret".to_string()),
    ] {
        assert!(!log.contains(&needle), "{what} is in the log:\n{log}");
    }
}

/// The agent at `RUST_LOG=trace` (every crate): still no token.
#[tokio::test]
async fn no_token_reaches_the_log_even_at_trace_level() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.95", Some("reader"));
    let mut endpoint = Endpoint::start_logging(&node, &[], "trace").await;
    let token = token(&node, "team", "default", "api");
    let reply = endpoint.credentials("127.0.0.95", &token).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    // Stopped, so that every line it wrote is in the file.
    assert!(endpoint.agent.terminate().success());
    let log = endpoint.agent.logs();
    assert!(log.contains("TRACE"), "not a trace-level log:\n{log}");
    let signature = token.rsplit('.').next().unwrap();
    for (what, needle) in [
        ("the token's signature", signature),
        ("the secret key", body["SecretAccessKey"].as_str().unwrap()),
        ("the session token", body["Token"].as_str().unwrap()),
        ("the node's secret key", "node-static-secret"),
    ] {
        let at = log.find(needle);
        assert!(
            at.is_none(),
            "{what} is in the trace log: ...{}...",
            at.map(|at| &log[at.saturating_sub(300)..(at + 100).min(log.len())])
                .unwrap_or_default()
        );
    }
}

// ---------------------------------------------------------------------------
// Refusal messages
// ---------------------------------------------------------------------------

#[tokio::test]
async fn refusal_messages_name_nothing_of_the_node_or_the_api_server() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "api", "127.0.0.96", Some("reader"));
    let endpoint = Endpoint::start(&node, &[]).await;
    let token = token(&node, "team", "default", "api");
    let api_addr = node.api.addr().to_string();
    let api_port = node.api.addr().port().to_string();
    let mut messages = Vec::new();
    for failure in [500, 403, 401] {
        node.api.set_token_review_failure(Some(failure));
        let reply = endpoint.credentials("127.0.0.96", &token).await;
        messages.push((failure.to_string(), refusal(&reply)));
    }
    node.api.set_token_review_failure(None);
    node.api.stop();
    let reply = endpoint
        .credentials("127.0.0.96", &format!("{token}a"))
        .await;
    messages.push(("stopped".into(), refusal(&reply)));
    node.api.restart().await.unwrap();
    for (what, (status, code, message)) in &messages {
        assert_eq!(*status, 500, "{what}: {code} {message}");
        for secret in [
            api_addr.as_str(),
            api_port.as_str(),
            "127.0.0.1",
            "system:serviceaccount",
            NODE,
        ] {
            assert!(
                !message.contains(secret),
                "{what}: the pod reads {secret:?} in {message:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The node's own address
// ---------------------------------------------------------------------------

#[tokio::test]

async fn a_regular_pods_token_is_worth_nothing_from_the_nodes_own_address() {
    let node = Node::start().await;
    node.api.create_namespace("team", json!({}));
    node.add_pod("team", "victim", "127.0.0.72", Some("payments-admin"));
    // A hostNetwork DaemonSet (a log shipper with the kubelet's pod
    // directory mounted, where every pod's projected token lies).
    let mut shipper = support::pod(
        "team",
        "log-shipper",
        NODE,
        "127.0.0.1",
        json!({"iam.amazonaws.com/role": "logs"}),
    );
    shipper["spec"]["hostNetwork"] = json!(true);
    node.api.put_pod(shipper);
    let endpoint = Endpoint::start(&node, &[]).await;
    let victim = token(&node, "team", "default", "victim");
    assert_eq!(
        endpoint.credentials("127.0.0.72", &victim).await.status,
        200
    );
    // From the node's address: the shipper (or the node; the agent cannot
    // tell them apart here). The victim's traffic never comes from there.
    let reply = endpoint.credentials("127.0.0.1", &victim).await;
    let (status, code, message) = refusal(&reply);
    assert_eq!((status, code.as_str()), (403, "AccessDenied"), "{message}");
}

fn kubectl_token(node: &support::netns::SimNode, pod: &str) -> String {
    let output = node.kubectl(&[
        "create",
        "token",
        "default",
        "--audience",
        AUDIENCE,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        pod,
        "--duration",
        "1h",
    ]);
    support::netns::check(&output, "kubectl create token");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn wait_listening(node: &support::netns::SimNode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric("iamlet_container_credentials_listening") != Some(2.0) {
        assert!(Instant::now() < deadline, "{}", node.agent_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

const VICTIM_UID: &str = "3f0c1a52-7d64-4b8e-9a51-2c7e9f1d0b61";
const SHIPPER_UID: &str = "8b2d4e6f-1a3c-4e5f-8a7b-9c0d1e2f3a4b";

#[test]
fn the_endpoint_answers_only_its_own_names_on_its_real_addresses() {
    let mut node = support::netns::SimNode::up();
    node.add_dual_stack_pod("pa-app", "10.77.0.71", "fd77::71", Some("s3-reader"));
    node.start_agent(&[]);
    wait_listening(&node);
    let token = kubectl_token(&node, "pa-app");
    let auth = format!("Authorization: {token}");
    let v4 = "http://169.254.170.23/v1/credentials";
    let v6 = "http://[fd00:ec2::23]/v1/credentials";
    let cases: &[(Option<&str>, &str, bool)] = &[
        (None, v4, true),
        (Some("169.254.170.23:80"), v4, true),
        (Some("169.254.170.23."), v4, false),
        (Some("169.254.170.23.:80"), v4, false),
        (Some("169.254.170.023"), v4, false),
        (Some("169.254.170.23:8080"), v4, false),
        (Some("169.254.170.23:080"), v4, false),
        (Some("[::ffff:169.254.170.23]"), v4, false),
        (Some("0xa9.0xfe.0xaa.0x17"), v4, false),
        (Some("2852039191"), v4, false),
        (Some("fd00:ec2::23"), v4, false),
        (Some("169.254.169.254"), v4, false),
        (Some("169.254.170.2"), v4, false),
        (Some("localhost"), v4, false),
        (Some("user@169.254.170.23"), v4, false),
        (None, v6, true),
        (Some("[FD00:EC2::23]:80"), v6, true),
        (Some("[fd00:ec2:0::23]"), v6, false),
        (Some("[fd00:ec2::23%eth0]"), v6, false),
        (Some("fd00:ec2::23"), v6, false),
    ];
    for (host, url, served) in cases {
        let mut args = vec!["-g", "-H", auth.as_str()];
        let header = host.map(|h| format!("Host: {h}"));
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        args.push(url);
        let (code, body) = node.curl("pa-app", &args);
        if *served {
            assert!(
                body.contains("AccessKeyId"),
                "{host:?} {url}: {code} {body}"
            );
        } else {
            assert!(
                body.contains("InvalidHost"),
                "{host:?} {url}: {code} {body}"
            );
        }
    }
    // Nothing else is served on the endpoint's addresses.
    for url in [
        "http://169.254.170.23/latest/meta-data/",
        "http://169.254.170.23/metrics",
        "http://169.254.170.23/debug/store",
    ] {
        let (_, body) = node.curl("pa-app", &["-H", &auth, url]);
        assert!(body.contains("NotFound"), "{url}: {body}");
    }
    for url in [
        "http://169.254.170.23:8181/latest/meta-data/",
        "http://169.254.170.23:8181/metrics",
        "http://10.77.0.1/v1/credentials",
    ] {
        let (code, body) = node.curl("pa-app", &["-H", &auth, url]);
        assert!(
            code != 0 && !body.contains("AccessKeyId") && !body.contains("iamlet_"),
            "{url}: {code} {body}"
        );
    }
}

/// The node's cgroups are usable: a hostNetwork pod is named by its
/// socket's cgroup and cannot spend a regular pod's token.
#[test]
fn a_host_network_pod_cannot_spend_a_regular_pods_token() {
    let mut node = support::netns::SimNode::up();
    node.add_pod_cgroup(VICTIM_UID);
    let shipper = node.add_pod_cgroup(SHIPPER_UID);
    node.add_pod_with_uid("pa-victim", "10.77.0.72", VICTIM_UID, Some("s3-reader"));
    node.add_host_network_pod("pa-shipper", SHIPPER_UID, Some("batch-role"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(&support::netns::SimNode::cgroup_wrapper(), &[&root]);
    wait_listening(&node);
    let victim = kubectl_token(&node, "pa-victim");
    let auth = format!("Authorization: {victim}");
    let (_, body) = node.curl(
        "pa-victim",
        &["-H", &auth, "http://169.254.170.23/v1/credentials"],
    );
    assert!(body.contains("AccessKeyId"), "{body}");
    let out = node.in_node_cgroup(
        &shipper,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-H",
            &auth,
            "http://169.254.170.23/v1/credentials",
        ],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("AccessDenied") && !body.contains("AccessKeyId"),
        "{body}"
    );
}

#[test]

fn a_process_outside_every_pod_cannot_spend_a_regular_pods_token() {
    let mut node = support::netns::SimNode::up();
    node.add_pod_cgroup(VICTIM_UID);
    node.add_pod_with_uid("pa-victim", "10.77.0.73", VICTIM_UID, Some("s3-reader"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(&support::netns::SimNode::cgroup_wrapper(), &[&root]);
    wait_listening(&node);
    let victim = kubectl_token(&node, "pa-victim");
    let auth = format!("Authorization: {victim}");
    let out = node.in_node(&[
        "curl",
        "-s",
        "-m",
        "5",
        "-H",
        &auth,
        "http://169.254.170.23/v1/credentials",
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("AccessDenied") && !body.contains("AccessKeyId"),
        "{body}"
    );
}
