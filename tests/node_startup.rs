//! A node's first minutes, on a simulated node (network namespaces, real
//! nftables, the real agent): a pod's connection to the metadata address
//! opened before the agent existed is cut when the agent is ready, and
//! the startup taint comes off only then, once (a conflicting write
//! retried), leaving other taints.
//! Needs root.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::netns::{SimNode, check};

const STARTUP_TAINT: &str = "iamlet.io/agent-not-ready";
/// The simulated node's API server, as seen from the node.
const API: &str = "http://127.0.0.1:6443";
/// What the fake real metadata service lists: the node's role.
const REAL_ANSWER: &str = "node-role";

fn create_node(node: &SimNode, taints: Value) {
    let object = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": support::NODE},
        "spec": {"taints": taints},
    });
    let file = node.state_file("node.json");
    std::fs::write(&file, object.to_string()).unwrap();
    check(
        &node.kubectl(&["create", "--validate=false", "-f", file.to_str().unwrap()]),
        "kubectl create node",
    );
}

fn taints(node: &SimNode) -> Value {
    let out = node.kubectl(&["get", "node", support::NODE, "-o", "json"]);
    check(&out, "kubectl get node");
    let object: Value = serde_json::from_slice(&out.stdout).unwrap();
    object["spec"]["taints"].clone()
}

fn has_startup_taint(taints: &Value) -> bool {
    taints
        .as_array()
        .is_some_and(|list| list.iter().any(|t| t["key"] == STARTUP_TAINT))
}

#[test]
fn a_connection_opened_before_the_agent_is_cut_before_the_taint_comes_off() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.10", Some("app-role"));
    let other = json!({"key": "example.com/gpu", "value": "true", "effect": "NoSchedule"});
    create_node(
        &node,
        json!([other, {"key": STARTUP_TAINT, "effect": "NoSchedule"}]),
    );

    // A real node tracks connections before iamlet starts (kube-proxy's and
    // the CNI's rules need conntrack, and NAT); a fresh namespace does not,
    // and would NAT the held connection's next packet as a new one.
    check(
        &node.in_node(&[
            "nft",
            "add table ip kube-proxy-standin; \
             add chain ip kube-proxy-standin filter { type filter hook prerouting priority 0; }; \
             add rule ip kube-proxy-standin filter ct state established counter; \
             add chain ip kube-proxy-standin nat { type nat hook prerouting priority -100; }",
        ]),
        "conntrack and NAT on, as on a node",
    );

    // The pod holds a connection to the real service, opened before any rule.
    let marker = node.state_file("taint-gone");
    let script = format!(
        "{}/tests/e2e/held_connection.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let held = node.spawn_in_pod("app", &["python3", &script, marker.to_str().unwrap(), "60"]);
    // And so does a process of the node itself (kubelet, the CNI): the
    // rules never catch it, and the cut must leave it alone.
    let host_out = node.state_file("host-held.out");
    let host_held = node.spawn_in_node(&[
        "sh",
        "-c",
        &format!(
            "python3 {script} {} 60 > {}",
            marker.display(),
            host_out.display()
        ),
    ]);
    std::thread::sleep(Duration::from_millis(500));

    // Another controller writes the node's taints between the agent's read
    // and its patch: the patch's test fails and the agent reads again.
    let racer = json!({"key": "example.com/draining", "effect": "NoSchedule"});
    let racing = json!([other, {"key": STARTUP_TAINT, "effect": "NoSchedule"}, racer]);
    check(
        &node.in_node(&[
            "curl",
            "-sf",
            "-X",
            "POST",
            "--data",
            &racing.to_string(),
            &format!("{API}/fake/nodes/{}/race", support::NODE),
        ]),
        "arm the racing writer",
    );

    node.start_agent(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let now = taints(&node);
        if !has_startup_taint(&now) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "the startup taint was not removed:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::fs::write(&marker, "").unwrap();
    assert_eq!(
        left,
        json!([other, racer]),
        "other taints are kept as they were, the racing writer's too"
    );
    let patches = node.in_node(&["curl", "-sf", &format!("{API}/fake/node-patches")]);
    check(&patches, "read the node patches");
    let patches: Value = serde_json::from_slice(&patches.stdout).unwrap();
    let statuses: Vec<u64> = patches
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [422, 200],
        "a conflict, retried; removed once: {patches}"
    );

    let out = node.wait_background(held, Duration::from_secs(30));
    let lines: Vec<&str> = out.lines().collect();
    let first: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        (first[0], first[1], first[3]),
        ("held", "0", REAL_ANSWER),
        "before the agent, the held connection reached the real service:\n{out}"
    );
    let port = first[2];
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("held") && !l.contains(" error "))
            .all(|l| l.split(' ').nth(2) == Some(port)),
        "one connection throughout:\n{out}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("held 1 ") && !l.contains(" error ")),
        "once the taint was gone, the held connection got nothing through:\n{out}"
    );
    let cut = lines
        .iter()
        .position(|l| l.starts_with("held") && l.contains(" error "));
    assert!(cut.is_some(), "the held connection was cut:\n{out}");
    assert_eq!(
        lines.last().copied(),
        Some("new app-role"),
        "a new connection reaches the agent and gets the pod's role:\n{out}"
    );
    node.wait_background(host_held, Duration::from_secs(30));
    let host = std::fs::read_to_string(&host_out).unwrap();
    assert!(
        host.lines()
            .any(|l| l.starts_with("held 1 ") && l.ends_with(REAL_ANSWER))
            && host.lines().last() == Some("deadline"),
        "the node's own connection kept reaching the real service:\n{host}"
    );
    let log = node.agent_log();
    assert_eq!(
        log.matches("startup taint removed").count(),
        1,
        "one removal:\n{log}"
    );
    assert!(
        connections_cut(&log) >= 1,
        "the held connection was cut (one or more passes):\n{log}"
    );
}

#[test]
fn a_node_without_the_taint_is_left_alone() {
    let mut node = SimNode::up();
    let other = json!({"key": "example.com/gpu", "effect": "NoSchedule"});
    create_node(&node, json!([other]));
    node.start_agent(&[]);
    support::wait_until(
        "the agent to look at its node",
        Duration::from_secs(20),
        || {
            node.agent_log()
                .contains("the node does not carry the startup taint")
        },
    );
    assert_eq!(taints(&node), json!([other]));
}

/// A hostNetwork pod's connection is the node's to the kernel's routing,
/// but its socket is the pod's: it is cut like any pod's.
#[test]
fn a_host_network_pods_connection_is_cut_too() {
    const HOST_UID: &str = "5a1f2e3d-4c5b-4a69-8877-665544332211";
    let mut node = SimNode::up();
    let cgroup = node.add_pod_cgroup(HOST_UID);
    node.add_host_network_pod("web-agent", HOST_UID, Some("s3-reader"));
    create_node(
        &node,
        json!([{"key": STARTUP_TAINT, "effect": "NoSchedule"}]),
    );
    node.in_node(&[
        "nft",
        "add table ip kube-proxy-standin; \
         add chain ip kube-proxy-standin filter { type filter hook output priority 0; }; \
         add rule ip kube-proxy-standin filter ct state established counter; \
         add chain ip kube-proxy-standin nat { type nat hook output priority -100; }",
    ]);
    let marker = node.state_file("taint-gone");
    let out = node.state_file("held.out");
    let script = format!(
        "{}/tests/e2e/held_connection.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let held = node.spawn_in_node_cgroup(
        &cgroup,
        &[
            "sh",
            "-c",
            &format!(
                "python3 {script} {} 60 > {}",
                marker.display(),
                out.display()
            ),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let root = node.cgroup_root_flag();
    node.start_agent_as(&SimNode::cgroup_wrapper(), &[&root]);
    support::wait_until("the taint to come off", Duration::from_secs(30), || {
        !has_startup_taint(&taints(&node))
    });
    std::fs::write(&marker, "").unwrap();
    node.wait_background(held, Duration::from_secs(30));
    let lines = std::fs::read_to_string(&out).unwrap();
    assert!(
        lines.starts_with("held 0 ") && lines.lines().next().unwrap().ends_with(REAL_ANSWER),
        "{lines}"
    );
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("held") && l.contains(" error ")),
        "the hostNetwork pod's held connection was cut:\n{lines}\n{}",
        node.agent_log()
    );
    assert_eq!(
        lines.lines().last(),
        Some("new s3-reader"),
        "and its next connection reaches the agent:\n{lines}"
    );
}

/// How many connections the agent's start cut, from its log.
fn connections_cut(log: &str) -> usize {
    log.lines()
        .find(|l| l.contains("opened before the rules were cut"))
        .and_then(|l| l.split(" cut=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
