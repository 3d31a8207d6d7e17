//! The node's STS budget against an STS stand-in that throttles above a
//! set rate, as STS does per account: a node start with 110 role-bearing
//! pods stays under the budget, is never throttled, serves every pod, and a
//! pod's own request goes ahead of the prefetch backlog.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Node, eventually, pod};

const PODS: usize = 110;

fn ip(n: usize) -> String {
    format!("127.0.3.{}", n + 1)
}

/// 110 pods of this node, each with the role (one session each).
fn add_role_pods(node: &Node) {
    for n in 0..PODS {
        node.api.put_pod(pod(
            "default",
            &format!("app-{n}"),
            support::NODE,
            &ip(n),
            json!({"iam.amazonaws.com/role": "app-role"}),
        ));
    }
}

/// The most calls that arrived within any one second.
fn busiest_second(arrivals: &[Instant]) -> usize {
    arrivals
        .iter()
        .map(|start| {
            arrivals
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_110_pod_node_start_stays_under_the_budget_and_every_pod_is_served() {
    let node = Node::start().await;
    // The account's limit, shared with every other node: the stand-in
    // throttles above 12 calls a second; the agent's default is 10.
    node.moto.throttle_above(12);
    add_role_pods(&node);
    let started = Instant::now();
    let agent = node.agent(&[]).await;

    // A pod that starts now asks at once: it goes ahead of the backlog.
    node.add_pod("default", "urgent", "127.0.4.1", Some("urgent-role"));
    let asked = Instant::now();
    let urgent = agent
        .get(
            "127.0.4.1",
            "/latest/meta-data/iam/security-credentials/urgent-role",
        )
        .await;
    let urgent_after = asked.elapsed();
    assert_eq!(urgent.status, 200, "{}", urgent.body);
    let calls_before_urgent_was_served = node.moto.assume_role_arrivals().len();

    let cached = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("iamlet_cached_credentials "))
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    eventually(
        "every pod's credentials",
        Duration::from_secs(60),
        || async {
            let metrics = agent.get("127.0.0.1", "/metrics").await;
            (cached(&metrics.body) == Some(PODS + 1)).then_some(())
        },
    )
    .await;
    let all_cached_after = started.elapsed();

    let arrivals = node.moto.assume_role_arrivals();
    let busiest = busiest_second(&arrivals);
    println!(
        "110-pod node start: last pod's credentials after {:.1} s (from the agent's start); \
         {} AssumeRole calls, at most {busiest} in any second, {} throttled; \
         a pod's own request during the backlog answered in {} ms, after {calls_before_urgent_was_served} calls",
        all_cached_after.as_secs_f64(),
        arrivals.len(),
        node.moto.throttled(),
        urgent_after.as_millis(),
    );
    assert_eq!(node.moto.throttled(), 0, "STS throttled the node");
    assert!(busiest <= 11, "{busiest} calls in one second");
    assert_eq!(arrivals.len(), PODS + 1, "one call per pod session");
    assert!(
        calls_before_urgent_was_served < PODS / 2,
        "the pod's request waited for {calls_before_urgent_was_served} prefetches"
    );
    for n in 0..PODS {
        let reply = agent
            .get(
                &ip(n),
                "/latest/meta-data/iam/security-credentials/app-role",
            )
            .await;
        assert_eq!(reply.status, 200, "pod {n}: {}", reply.body);
    }
    assert_eq!(
        node.moto.assume_role_arrivals().len(),
        PODS + 1,
        "all from the cache"
    );
    let waiting = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(
        waiting.contains(r#"iamlet_sts_calls_waiting{for="background"} 0"#),
        "{waiting}"
    );
}

/// The same start with the budget off: the stand-in throttles the burst,
/// which is what every node of a fleet restarting together would meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_budget_the_same_start_is_throttled() {
    let node = Node::start().await;
    node.moto.throttle_above(12);
    add_role_pods(&node);
    let _agent = node
        .agent(&["--sts-max-in-flight=0", "--sts-calls-per-second=0"])
        .await;
    eventually(
        "the burst has reached STS",
        Duration::from_secs(20),
        || async { (node.moto.assume_role_arrivals().len() >= PODS).then_some(()) },
    )
    .await;
    let busiest = busiest_second(&node.moto.assume_role_arrivals());
    println!(
        "without a budget: {busiest} calls in the busiest second, {} throttled",
        node.moto.throttled()
    );
    assert!(busiest > 12, "{busiest}");
    assert!(node.moto.throttled() > 0);
}
