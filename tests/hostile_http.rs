//! Hostile HTTP from a pod: slow clients, pipelining floods, oversized
//! heads and bodies, and request floods that per-pod rate limits absorb
//! without touching other pods.

mod support;

use std::time::{Duration, Instant};

use support::Node;
use support::relay::connect_from;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD: &str = "127.0.5.10";
const NEIGHBOUR: &str = "127.0.5.11";
const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

async fn node() -> Node {
    let node = Node::start().await;
    node.add_pod("default", "noisy", POD, Some("noisy-role"));
    node.add_pod("default", "quiet", NEIGHBOUR, Some("quiet-role"));
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let node = node().await;
    let agent = node.agent(&[]).await;
    let mut slow = connect_from(POD.parse().unwrap(), agent.addr)
        .await
        .unwrap();
    slow.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // Meanwhile the neighbour is served at once.
    assert_eq!(agent.get(NEIGHBOUR, CREDS).await.body, "quiet-role");
    let neighbour_served = started.elapsed();
    let mut rest = Vec::new();
    // Generous against a loaded machine: the cut is due at 10 s.
    let read = tokio::time::timeout(Duration::from_secs(40), slow.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the half-sent request was never cut off (neighbour served after {neighbour_served:?})"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "cut after the header timeout: {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let node = node().await;
    let agent = node.agent(&["--pod-request-rate=0"]).await;
    let mut stream = connect_from(POD.parse().unwrap(), agent.addr)
        .await
        .unwrap();
    let one = format!("GET {CREDS} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(one.repeat(300).as_bytes()).await.unwrap();
    let mut answered = String::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while answered.matches("HTTP/1.1 200 OK").count() < 300 {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {} answers",
            answered.matches("HTTP/1.1 200").count()
        );
        answered.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert_eq!(answered.matches("noisy-role").count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_unread_bodies_do_not_hurt() {
    let node = node().await;
    let agent = node.agent(&[]).await;
    // A head far beyond any metadata request.
    let mut stream = connect_from(POD.parse().unwrap(), agent.addr)
        .await
        .unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = stream.write_all(big.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );

    // A request announcing a 1 GB body that never comes is answered without
    // reading it, and the connection is not kept for it.
    let mut stream = connect_from(POD.parse().unwrap(), agent.addr)
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {CREDS} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\nxx")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("noisy-role"),
        "{text}"
    );
    assert_eq!(agent.get(NEIGHBOUR, CREDS).await.body, "quiet-role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pods_flood_is_limited_and_its_neighbour_is_not() {
    let node = node().await;
    let agent = node
        .agent(&["--pod-request-rate=20", "--pod-proxy-rate=5"])
        .await;
    // Over budget, a request gets a 429 and its connection is closed; new
    // connections are reset at accept until the budget refills (0 here).
    let mut statuses = Vec::new();
    for _ in 0..100 {
        let reply = support::clients::http_request(POD, agent.addr, "GET", CREDS, &[]).await;
        statuses.push(reply.map_or(0, |r| r.status));
    }
    let limited = statuses.iter().filter(|s| **s == 429 || **s == 0).count();
    let served = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        limited > 0,
        "a 100-request burst exceeds 20/s with a burst of 40"
    );
    assert!(served >= 40, "the burst allowance is served: {served}");
    assert_eq!(
        agent.get(NEIGHBOUR, CREDS).await.status,
        200,
        "the neighbour is unaffected"
    );

    // Proxied paths have their own, lower budget.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let proxied: Vec<u16> = futures::future::join_all((0..30).map(|_| {
        support::clients::http_request(
            NEIGHBOUR,
            agent.addr,
            "GET",
            "/latest/meta-data/instance-id",
            &[],
        )
    }))
    .await
    .iter()
    .map(|r| r.as_ref().map_or(0, |r| r.status))
    .collect();
    assert!(proxied.contains(&429), "{proxied:?}");
    assert!(
        proxied.iter().filter(|s| **s == 200).count() >= 10,
        "{proxied:?}"
    );
    assert_eq!(
        agent.get(NEIGHBOUR, CREDS).await.status,
        200,
        "credentials are still served"
    );
    let metrics = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(
        metrics.contains(r#"iamlet_denied_requests_total{reason="rate-limited"}"#)
            || metrics.contains(r#"iamlet_connections_refused_total{reason="rate-limited"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"iamlet_denied_requests_total{reason="proxy-rate-limited"}"#));
}
