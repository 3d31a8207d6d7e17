//! Prometheus metrics, scraped after real traffic.

mod support;

use std::time::Duration;

use support::Node;

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

/// The value of the sample whose line starts with `series`, if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let node = Node::start().await;
    node.add_pod("default", "with-role", "127.0.3.10", Some("metrics-role"));
    node.add_pod("default", "without", "127.0.3.11", None);
    let agent = node.agent(&["--backoff-max-elapsed-time=200ms"]).await;
    let prefetched = r#"iamlet_credential_prefetches_total{result="success"}"#;
    support::eventually("the prefetch", Duration::from_secs(10), || async {
        let text = agent.get("127.0.0.1", "/metrics").await.body;
        (sample(&text, prefetched) == Some(1.0)).then_some(())
    })
    .await;

    for _ in 0..3 {
        assert_eq!(
            agent
                .get("127.0.3.10", &format!("{CREDS}metrics-role"))
                .await
                .status,
            200
        );
    }
    assert_eq!(agent.get("127.0.3.11", CREDS).await.status, 404);
    assert_eq!(
        agent.get("127.0.3.10", "/latest/user-data").await.status,
        403
    );
    assert_eq!(agent.get("127.0.3.99", CREDS).await.status, 404);

    let scrape = agent.get("127.0.0.1", "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = scrape.body;
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    };
    expect(
        r#"iamlet_requests_total{route="credentials",status="200"}"#,
        3.0,
    );
    expect(
        r#"iamlet_requests_total{route="role-list",status="404"}"#,
        2.0,
    );
    expect(r#"iamlet_requests_total{route="denied",status="403"}"#, 1.0);
    expect(r#"iamlet_sts_calls_total{code="success"}"#, 1.0);
    expect(
        r#"iamlet_credential_prefetches_total{result="success"}"#,
        1.0,
    );
    expect(
        r#"iamlet_credential_cache_lookups_total{result="hit"}"#,
        3.0,
    );
    expect(r#"iamlet_denied_requests_total{reason="no-role"}"#, 1.0);
    expect(r#"iamlet_denied_requests_total{reason="unknown-ip"}"#, 1.0);
    expect(r#"iamlet_denied_requests_total{reason="deny-list"}"#, 1.0);
    expect("iamlet_pods_indexed", 2.0);
    expect("iamlet_cached_credentials", 1.0);
    expect(r#"iamlet_watch_relists_total{kind="pods"}"#, 1.0);
    expect("iamlet_rules_installed", 0.0);
    assert!(
        text.contains(r#"iamlet_request_duration_seconds_count{route="credentials"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("iamlet_sts_call_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"iamlet_build_info{{version="{}""#,
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(!text.contains("SecretAccessKey") && !text.contains("default/with-role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_metrics_port_serves_metrics_and_health_only() {
    let node = Node::start().await;
    let port = support::free_port();
    let agent = node.agent(&[&format!("--metrics-port={port}")]).await;
    let metrics_addr = support::socket("127.0.0.1", port);
    let scrape = support::clients::http_request("127.0.0.1", metrics_addr, "GET", "/metrics", &[])
        .await
        .unwrap();
    assert_eq!(scrape.status, 200);
    assert!(scrape.body.contains("iamlet_build_info"));
    let health = support::clients::http_request("127.0.0.1", metrics_addr, "GET", "/healthz", &[])
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    let creds = support::clients::http_request("127.0.0.1", metrics_addr, "GET", CREDS, &[])
        .await
        .unwrap();
    assert_eq!(creds.status, 404, "no metadata on the metrics port");
    assert_eq!(
        agent.get("127.0.0.1", "/metrics").await.status,
        404,
        "no metrics on the metadata port"
    );
}
