//! Faults around the agent: STS down, slow or throttling; the node's
//! metadata service slow or down. The agent keeps serving what it can, never
//! hammers STS, and says clearly what it cannot do.

mod support;

use std::time::{Duration, Instant};

use support::Node;
use support::moto::StsFault;

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sts_outage_is_bridged_by_the_cache_until_the_floor() {
    let node = Node::start().await;
    node.add_pod("default", "steady", "127.0.4.10", Some("outage-role"));
    // 30 s sessions: refresh due after 10 s, never served in the last 8 s.
    let agent = node
        .agent(&[
            "--allow-short-sessions",
            "--iam-role-session-ttl=30s",
            "--credential-refresh-before=20s",
            "--credential-min-remaining=8s",
        ])
        .await;
    let path = format!("{CREDS}outage-role");
    let first = agent.get("127.0.4.10", &path).await.json();
    let issued = Instant::now();
    node.moto.set_fault(StsFault::Unavailable);
    let calls_before = node.moto.assume_role_calls().len();

    // Until the floor (22 s after issue) the cached credentials are served,
    // though the refresh due at 10 s keeps failing.
    let mut requests = 0;
    while issued.elapsed() < Duration::from_secs(20) {
        let reply = agent.get("127.0.4.10", &path).await;
        requests += 1;
        assert_eq!(
            reply.status,
            200,
            "at {:?}: {}",
            issued.elapsed(),
            reply.body
        );
        assert_eq!(reply.json()["AccessKeyId"], first["AccessKeyId"]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Past the floor, the pod is told clearly that STS is the problem.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failed = agent.get("127.0.4.10", &path).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(failed.json()["Code"], "StsUnavailable");
    assert!(
        failed.json()["Message"]
            .as_str()
            .unwrap()
            .contains("outage-role")
    );
    for _ in 0..20 {
        requests += 1;
        assert_ne!(agent.get("127.0.4.10", &path).await.status, 200);
    }

    // Retried with backoff (and the SDK's own bounded retries), not once per request.
    let outage_calls = node.moto.assume_role_calls().len() - calls_before;
    assert!(outage_calls >= 2, "the refresh was retried: {outage_calls}");
    assert!(
        outage_calls <= 30,
        "{outage_calls} STS calls for {requests} requests"
    );

    node.moto.set_fault(StsFault::None);
    let recovered = support::eventually("recovery", Duration::from_secs(20), || async {
        let reply = agent.get("127.0.4.10", &path).await;
        (reply.status == 200).then(|| reply.json())
    })
    .await;
    assert_ne!(recovered["AccessKeyId"], first["AccessKeyId"]);
    assert!(
        agent.logs().contains("could not prefetch credentials")
            || agent.logs().contains("AssumeRole failed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_within_bounds_without_a_stampede() {
    let node = Node::start().await;
    node.moto.set_fault(StsFault::Throttle);
    let agent = node.agent(&[]).await;
    for n in 0..10 {
        node.add_pod(
            "default",
            &format!("p{n}"),
            &format!("127.0.4.{}", 20 + n),
            Some("busy-role"),
        );
    }
    // 50 concurrent requests from one pod while STS throttles.
    let path = format!("{CREDS}busy-role");
    let replies = futures::future::join_all((0..50).map(|_| agent.get("127.0.4.20", &path))).await;
    for reply in &replies {
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.json()["Code"], "StsThrottled");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = node.moto.assume_role_calls().len();
    // Ten sessions, each tried by the warmer at 0, ~1 and ~3 s with the SDK's
    // three attempts, plus the coalesced request: well under 15 calls each.
    assert!(calls <= 10 * 15, "{calls} calls in 5 s for 10 pods");
    assert!(calls >= 10, "every pod's prefetch was tried: {calls}");

    node.moto.set_fault(StsFault::None);
    for n in 0..10 {
        let ip = format!("127.0.4.{}", 20 + n);
        support::eventually(
            "credentials after throttling",
            Duration::from_secs(30),
            || async { (agent.get(&ip, &path).await.status == 200).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_dead_metadata_service_does_not_touch_the_credential_path() {
    let node = Node::start().await;
    node.add_pod("default", "p", "127.0.4.40", Some("imds-role"));
    let agent = node.agent(&[]).await;
    let path = format!("{CREDS}imds-role");
    assert_eq!(agent.get("127.0.4.40", &path).await.status, 200);

    node.imds.set_delay(Duration::from_secs(10));
    let slow_proxy = tokio::spawn({
        let addr = agent.addr;
        async move {
            let started = Instant::now();
            let reply = support::clients::http_request(
                "127.0.4.40",
                addr,
                "GET",
                "/latest/meta-data/instance-id",
                &[],
            )
            .await
            .unwrap();
            (reply.status, started.elapsed())
        }
    });
    for _ in 0..10 {
        let started = Instant::now();
        let reply = agent.get("127.0.4.40", &path).await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(agent.get("127.0.4.40", CREDS).await.body, "imds-role");
    }
    let (status, took) = slow_proxy.await.unwrap();
    assert_eq!(status, 504, "the proxy gives up on a slow upstream");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(agent.get("127.0.0.1", "/healthz").await.status, 200);

    node.imds.stop();
    assert_eq!(agent.get("127.0.4.40", &path).await.status, 200);
    let dead = agent
        .get("127.0.4.40", "/latest/meta-data/instance-id")
        .await;
    assert!(dead.status == 502 || dead.status == 504, "{}", dead.status);
    assert_eq!(agent.get("127.0.0.1", "/healthz").await.status, 200);
}
