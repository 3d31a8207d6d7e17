//! Warning Events on refused pods, as `kubectl describe pod` shows them:
//! recorded through kube-runtime's Recorder on the test API server, one
//! series per pod and reason, at most one publish per interval.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::moto::{NODE_ROLE_IN_STS_ERROR, StsFault};
use support::{Node, eventually};

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

/// The events.k8s.io Events of `namespace` about `pod`, by reason.
fn events_of(node: &Node, namespace: &str, pod: &str) -> Vec<(String, Value)> {
    node.api
        .events(namespace)
        .into_iter()
        .filter(|e| e["regarding"]["name"] == pod)
        .map(|e| (e["reason"].as_str().unwrap_or_default().to_string(), e))
        .collect()
}

fn series_count(event: &Value) -> u64 {
    event["series"]["count"].as_u64().unwrap_or(1)
}

// kubectl blocks its thread while the test API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pod_is_told_why_in_kubectl_describe() {
    let node = Node::start().await;
    node.api.create_namespace(
        "team",
        json!({"iam.amazonaws.com/allowed-roles": "[\"app-*\"]"}),
    );
    node.add_pod("team", "web", "127.0.5.1", None);
    let agent = node
        .agent(&["--namespace-restrictions", "--pod-event-interval=1s"])
        .await;

    // No role: refused, and an Event says so and what to do.
    assert_eq!(agent.get("127.0.5.1", CREDS).await.status, 404);
    let missing = eventually("the Event", Duration::from_secs(10), || async {
        events_of(&node, "team", "web")
            .into_iter()
            .find(|(reason, _)| reason == "IAMRoleMissing")
            .map(|(_, event)| event)
    })
    .await;
    assert_eq!(missing["type"], "Warning");
    assert_eq!(missing["reportingController"], "iamlet");
    assert_eq!(missing["regarding"]["kind"], "Pod");
    assert!(missing["regarding"]["uid"].is_string(), "{missing}");
    assert!(
        missing["note"]
            .as_str()
            .unwrap()
            .contains("kubectl annotate pod web -n team iam.amazonaws.com/role="),
        "{missing}"
    );

    // A pod retrying in a loop: one Event, its series counting the
    // intervals in which it was refused, not every request.
    for _ in 0..3 {
        for _ in 0..20 {
            agent.get("127.0.5.1", CREDS).await;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    agent.get("127.0.5.1", CREDS).await;
    let repeated = eventually("the series", Duration::from_secs(10), || async {
        let events = events_of(&node, "team", "web");
        let missing: Vec<_> = events
            .iter()
            .filter(|(r, _)| r == "IAMRoleMissing")
            .collect();
        (missing.len() == 1 && series_count(&missing[0].1) >= 3).then(|| missing[0].1.clone())
    })
    .await;
    assert!(series_count(&repeated) <= 5, "rate-limited: {repeated}");

    // A role the namespace does not allow: another reason, another Event.
    node.kubectl(&[
        "annotate",
        "pod",
        "web",
        "-n",
        "team",
        "iam.amazonaws.com/role=admin",
    ]);
    eventually("the namespace refusal", Duration::from_secs(10), || async {
        agent.get("127.0.5.1", CREDS).await;
        events_of(&node, "team", "web")
            .iter()
            .any(|(reason, _)| reason == "IAMRoleNotAllowed")
            .then_some(())
    })
    .await;

    // What the application team reads.
    let described = node.kubectl(&["describe", "pod", "web", "-n", "team"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(described.status.success(), "{described:?}");
    assert!(
        text.contains("Warning") && text.contains("IAMRoleMissing"),
        "{text}"
    );
    assert!(text.contains("IAMRoleNotAllowed"), "{text}");
    assert!(
        text.contains("role arn:aws:iam::123456789012:role/admin is not allowed in namespace team"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refusing_a_role_is_reported_without_the_nodes_details() {
    let node = Node::start().await;
    node.add_pod("default", "batch", "127.0.5.2", Some("locked-role"));
    node.moto.set_fault(StsFault::AccessDenied);
    let agent = node.agent(&[]).await;
    let reply = agent.get("127.0.5.2", &format!("{CREDS}locked-role")).await;
    assert_eq!(reply.status, 403);
    let denied = eventually("the Event", Duration::from_secs(10), || async {
        events_of(&node, "default", "batch")
            .into_iter()
            .find(|(reason, _)| reason == "AssumeRoleDenied")
            .map(|(_, event)| event)
    })
    .await;
    let note = denied["note"].as_str().unwrap();
    assert!(note.contains("trust policy"), "{note}");
    assert!(note.contains("locked-role"), "{note}");
    for secret in [
        NODE_ROLE_IN_STS_ERROR,
        "i-0123456789abcdef0",
        "node-instance-role",
    ] {
        assert!(!note.contains(secret), "{note}");
    }
    // A granted pod gets no Event.
    node.moto.set_fault(StsFault::None);
    node.add_pod("default", "fine", "127.0.5.3", Some("ok-role"));
    let ok = eventually("credentials", Duration::from_secs(10), || async {
        let reply = agent.get("127.0.5.3", &format!("{CREDS}ok-role")).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(ok.status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(events_of(&node, "default", "fine").is_empty());
}
