//! The startup taint against the test API server: removed once the agent
//! can answer, with a JSON patch whose `test` protects other writers'
//! taints, retried on conflict and on server errors, never while the
//! node's credentials do not work, and given up (loudly) when refused.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Agent, NODE, Node, eventually};

const TAINT: &str = "iamlet.io/agent-not-ready";

fn startup() -> Value {
    json!({"key": TAINT, "effect": "NoSchedule"})
}

fn taints(node: &Node) -> Value {
    node.api.node(NODE).unwrap()["spec"]["taints"].clone()
}

async fn taints_become(node: &Node, want: Value, limit: Duration) {
    eventually("the node's taints", limit, || {
        let now = node.api.node(NODE).unwrap()["spec"]["taints"].clone();
        let want = want.clone();
        async move { (now == want).then_some(()) }
    })
    .await;
}

fn statuses(node: &Node) -> Vec<u16> {
    node.api.node_patches().iter().map(|p| p.status).collect()
}

#[tokio::test]
async fn the_taint_comes_off_once_with_a_tested_patch() {
    let node = Node::start().await;
    let other = json!({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule",
                       "timeAdded": "2026-11-23T09:00:00Z"});
    node.api.create_node(NODE, json!([other, startup()]));
    node.add_pod("team", "app", "127.0.0.20", Some("app-role"));
    let agent = node.agent(&[]).await;
    taints_become(&node, json!([other]), Duration::from_secs(10)).await;
    let patches = node.api.node_patches();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let patch = &patches[0];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/spec/taints", "value": [other, startup()]},
            {"op": "replace", "path": "/spec/taints", "value": [other]},
        ])
    );
    assert_eq!(patch.status, 200);
    // Once: an agent that keeps running patches nothing more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.api.node_patches().len(), 1);
    assert!(agent.logs().contains("the node's own credentials work"));
    assert_eq!(startup_phase(&agent).await, "removed");
}

/// Where `/readyz` says the taint's removal is.
async fn startup_phase(agent: &Agent) -> String {
    let ready = agent.get("127.0.0.1", "/readyz").await.json();
    ready["startupTaint"]
        .as_str()
        .unwrap_or("(none)")
        .to_string()
}

#[tokio::test]
async fn a_racing_writers_taint_is_kept_and_the_patch_retried() {
    let node = Node::start().await;
    node.api.create_node(NODE, json!([startup()]));
    let racer = json!({"key": "example.com/draining", "effect": "NoSchedule"});
    node.api.on_next_node_patch(NODE, json!([startup(), racer]));
    let agent = node.agent(&[]).await;
    taints_become(&node, json!([racer]), Duration::from_secs(10)).await;
    assert_eq!(statuses(&node), [422, 200], "{:?}", node.api.node_patches());
    let logs = agent.logs();
    assert!(
        logs.contains("the node's taints changed meanwhile"),
        "{logs}"
    );
    assert!(logs.contains("conflicts=1"), "{logs}");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_refusal_is_said_once() {
    let node = Node::start().await;
    node.api.create_node(NODE, json!([startup()]));
    node.api.fail_node_patches(500, 2);
    let _agent = node.agent(&[]).await;
    taints_become(&node, json!(null), Duration::from_secs(20)).await;
    assert_eq!(statuses(&node), [500, 500, 200]);

    let refused = Node::start().await;
    refused.api.create_node(NODE, json!([startup()]));
    refused.api.fail_node_patches(403, 5);
    let agent = refused.agent(&[]).await;
    eventually("the refusal in the log", Duration::from_secs(10), || {
        let logs = agent.logs();
        async move {
            logs.contains("cannot remove the startup taint: iamlet needs get and patch on nodes")
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(statuses(&refused), [403], "no retry against RBAC");
    assert_eq!(taints(&refused), json!([startup()]), "the taint stays");
    assert_eq!(
        startup_phase(&agent).await,
        "cannot be removed (see the log)"
    );
}

#[tokio::test]
async fn the_taint_stays_while_the_nodes_credentials_do_not_work() {
    let node = Node::start().await;
    node.api.create_node(NODE, json!([startup()]));
    let nowhere = format!("http://127.0.0.1:{}", support::free_port());
    let agent = Agent::start_with_env(&node, &[], &[("AWS_ENDPOINT_URL_STS", &nowhere)]).await;
    // Ready for pods' requests (the index is listed), but not for the node.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(taints(&node), json!([startup()]));
    assert!(node.api.node_patches().is_empty());
    assert_eq!(
        startup_phase(&agent).await,
        "waiting for the node's credentials"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("the node's own credentials do not work yet (sts:GetCallerIdentity); the startup taint stays"),
        "{logs}"
    );
}

#[tokio::test]
async fn another_taint_can_be_named_and_the_removal_turned_off() {
    let node = Node::start().await;
    let boot = json!({"key": "example.com/boot", "value": "pending", "effect": "NoExecute"});
    node.api.create_node(NODE, json!([startup(), boot]));
    let _agent = node
        .agent(&["--startup-taint=example.com/boot=pending:NoExecute"])
        .await;
    taints_become(&node, json!([startup()]), Duration::from_secs(10)).await;

    let off = Node::start().await;
    off.api.create_node(NODE, json!([startup()]));
    let agent = off.agent(&["--startup-taint="]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(taints(&off), json!([startup()]));
    assert!(
        !off.api.requests().iter().any(|r| r.contains("/nodes")),
        "no node request at all: {:?}\n{}",
        off.api.requests(),
        agent.logs()
    );
}

#[tokio::test]
async fn a_missing_node_is_said_as_such() {
    let node = Node::start().await;
    let agent = node.agent(&[]).await;
    eventually("the log line", Duration::from_secs(10), || {
        let logs = agent.logs();
        async move {
            logs.contains("cannot remove the startup taint: no such node")
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        startup_phase(&agent).await,
        "cannot be removed (see the log)"
    );
    assert!(node.api.node_patches().is_empty());
}
