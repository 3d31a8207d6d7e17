//! Identity from the kernel on a simulated node: the machine's real cgroup
//! v2 hierarchy laid out as the kubelet does (a pod tree of the node's own),
//! the agent seeing it at `/sys/fs/cgroup` as a DaemonSet that mounts it
//! would, real nftables, moto and unmodified SDKs. Needs root.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use support::netns::{SimNode, output_text as text};

const CREDS_URL: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
const WEB_UID: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
const BATCH_UID: &str = "6fa459ea-ee8a-4ca4-894e-db77e160355e";
const STRANGER_UID: &str = "0e4f1c2a-7b3d-4e5f-9a8b-1c2d3e4f5a6b";

fn start_agent(node: &mut SimNode) {
    let root = node.cgroup_root_flag();
    node.start_agent_as(&SimNode::cgroup_wrapper(), &[&root]);
    let log = node.agent_log();
    assert!(log.contains("identified by their cgroups"), "{log}");
}

#[test]
fn host_network_pods_get_their_own_roles_and_the_node_keeps_its_own() {
    let mut node = SimNode::up();
    let web = node.add_pod_cgroup(WEB_UID);
    let batch = node.add_pod_cgroup(BATCH_UID);
    let stranger = node.add_pod_cgroup(STRANGER_UID);
    node.add_host_network_pod("web-agent", WEB_UID, Some("s3-reader"));
    node.add_host_network_pod("batch-agent", BATCH_UID, Some("batch-role"));
    start_agent(&mut node);
    assert!(
        node.ruleset().contains("socket cgroupv2 level 2"),
        "{}",
        node.ruleset()
    );

    // awscli (botocore's IMDS provider) in one hostNetwork pod...
    let arn = text(&node.in_node_cgroup(
        &web,
        &[
            support::venv().join("bin/aws").to_str().unwrap(),
            "sts",
            "get-caller-identity",
            "--query",
            "Arn",
            "--output",
            "text",
        ],
    ));
    assert_eq!(
        arn.trim(),
        "arn:aws:sts::123456789012:assumed-role/s3-reader/default.web-agent"
    );
    // ...and an unmodified aws-config application in the other.
    let sdk = SimNode::sdk_identity_bin();
    let arn = text(&node.in_node_cgroup(&batch, &[sdk.to_str().unwrap()]));
    assert!(
        arn.contains("assumed-role/batch-role/default.batch-agent"),
        "{arn}"
    );

    // A process in a pod cgroup that no pod on this node owns gets nothing.
    let (refused, _) = curl_status(&node, Some(&stranger));
    assert_eq!(refused, "404", "a cgroup of no pod is refused");
    assert!(
        node.agent_log().contains("unknown-pod-uid"),
        "{}",
        node.agent_log()
    );

    // A pod with a network of its own binds its source port to a port a
    // hostNetwork pod listens on (on every address): the kernel's socket
    // lookup would fall back to that listener; the agent does not take the
    // pod for the hostNetwork one.
    node.spawn_in_node_cgroup(
        &web,
        &[
            "python3",
            "-c",
            "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 45678)); s.listen(); time.sleep(60)",
        ],
    );
    node.add_pod("thief", "10.77.0.42", None);
    std::thread::sleep(Duration::from_millis(300));
    let (code, stolen) = node.curl(
        "thief",
        &["--local-port", "45678", "-w", " %{http_code}", CREDS_URL],
    );
    assert_eq!(code, 0, "{stolen}");
    assert!(!stolen.contains("s3-reader"), "{stolen}");

    // The node's own processes (the root cgroup here) reach the real
    // metadata service, untouched by the rules.
    let (status, body) = curl_status(&node, None);
    assert_eq!((status.as_str(), body.as_str()), ("200", "node-role"));

    // The hostNetwork pods' table heals like the rest.
    let flushed = node.in_node(&["nft", "flush", "ruleset"]);
    assert!(flushed.status.success());
    support::wait_until("both tables back", Duration::from_secs(3), || {
        let ruleset = node.ruleset();
        ruleset.contains("table ip iamlet-hostnet") && ruleset.contains("table ip iamlet {")
    });
    let (status, body) = curl_status(&node, Some(&web));
    assert_eq!((status.as_str(), body.as_str()), ("200", "s3-reader"));
}

/// `GET` of the role listing with an IMDSv2 token first, from the node's
/// network, in `cgroup` (or the caller's own: the root). (status, body)
fn curl_status(node: &SimNode, cgroup: Option<&std::path::Path>) -> (String, String) {
    let script = format!(
        "t=$(curl -s -m 3 -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token); \
         curl -s -m 3 -w '\\n%{{http_code}}' -H \"x-aws-ec2-metadata-token: $t\" {CREDS_URL}"
    );
    let output = match cgroup {
        Some(cgroup) => node.in_node_cgroup(cgroup, &["sh", "-c", &script]),
        None => node.in_node(&["sh", "-c", &script]),
    };
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.trim().to_string(), body.trim().to_string())
}

/// kube2iam's hole (#17, #178, #244): a pod is deleted and another takes
/// its address while the agent's watch is cut off (a partition between the
/// agent and the API server: the agent's index still names the old pod).
/// The kubelet's removal of the old pod's cgroup is what the agent checks.
#[test]
fn a_pod_deleted_on_the_node_is_never_served_to_the_pod_that_took_its_address() {
    let mut node = SimNode::up();
    let cut = node.state_file("watch-cut");
    let proxy = e2e("cuttable_proxy.py");
    node.spawn_in_node(&[
        "python3",
        &proxy,
        "6444",
        "127.0.0.1",
        "6443",
        cut.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    let old_uid = "00000000-0000-4000-8000-00000000a001";
    node.add_pod_cgroup(old_uid);
    node.add_pod_with_uid("old", "10.77.0.40", old_uid, Some("s3-reader"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(
        &SimNode::cgroup_wrapper(),
        &[&root, "--api-server=http://127.0.0.1:6444"],
    );
    assert_eq!(node.curl("old", &[CREDS_URL]).1, "s3-reader");

    // The agent's watch goes quiet; the API server moves on: the old pod
    // is deleted (its containers, cgroups and address go), a new pod with
    // a role of its own takes the address.
    std::fs::write(&cut, b"").unwrap();
    let deleted = node.kubectl(&["delete", "pod", "old", "--wait=false"]);
    assert!(deleted.status.success(), "{}", text(&deleted));
    node.remove_pod_netns("old");
    node.remove_pod_cgroup(old_uid);
    let new_uid = "00000000-0000-4000-8000-00000000a002";
    node.add_pod_cgroup(new_uid);
    node.add_pod_with_uid("new", "10.77.0.40", new_uid, Some("batch-role"));
    let (code, body) = node.curl("new", &["-w", " %{http_code}", CREDS_URL]);
    assert_eq!(code, 0);
    assert!(
        body.ends_with(" 404"),
        "the old pod's role was served: {body}"
    );
    let log = node.agent_log();
    assert!(log.contains("pod-not-on-node"), "{log}");
    assert!(!log.contains("session=default.new"), "{log}");

    // The partition heals: the watch delivers what it missed, and the new
    // pod gets its own role.
    std::fs::remove_file(&cut).unwrap();
    support::wait_until("the new pod's own role", Duration::from_secs(15), || {
        node.curl("new", &[CREDS_URL]).1 == "batch-role"
    });
}

fn e2e(script: &str) -> String {
    format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn without_a_usable_cgroup_root_the_agent_says_so_and_works_from_addresses() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.41", Some("s3-reader"));
    // The agent's /sys/fs/cgroup is an empty directory here (no mount).
    node.start_agent(&[]);
    let log = node.agent_log();
    assert_eq!(
        log.matches("identified by their addresses alone").count(),
        1,
        "{log}"
    );
    assert_eq!(node.metric("iamlet_cgroup_identity"), Some(0.0));
    assert!(!node.ruleset().contains("cgroupv2"));
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "s3-reader");
}

#[test]
fn a_host_network_pod_is_named_over_ipv6_too() {
    let mut node = SimNode::up();
    let web = node.add_pod_cgroup(WEB_UID);
    node.add_host_network_pod("web-agent", WEB_UID, Some("s3-reader"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(
        &SimNode::cgroup_wrapper(),
        &[&root, "--host-ip=10.77.0.1,fd77::1"],
    );
    let ruleset = node.ruleset();
    assert!(ruleset.contains("table ip6 iamlet-hostnet"), "{ruleset}");
    let script = "t=$(curl -s -g -m 3 -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' 'http://[fd00:ec2::254]/latest/api/token'); \
         curl -s -g -m 3 -w '\\n%{http_code}' -H \"x-aws-ec2-metadata-token: $t\" 'http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/'";
    let out = node.in_node_cgroup(&web, &["sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.trim(),
        "s3-reader\n200",
        "{text}\n{}",
        node.agent_log()
    );
}

/// A hostNetwork pod that floods the agent spends its own budget, not
/// one shared by every process on the node's address.
#[test]
fn a_flooding_host_network_pod_does_not_starve_another() {
    let mut node = SimNode::up();
    let web = node.add_pod_cgroup(WEB_UID);
    let batch = node.add_pod_cgroup(BATCH_UID);
    node.add_host_network_pod("web-agent", WEB_UID, Some("s3-reader"));
    node.add_host_network_pod("batch-agent", BATCH_UID, Some("batch-role"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(&SimNode::cgroup_wrapper(), &[&root, "--pod-request-rate=2"]);
    let flood = format!(
        "for i in $(seq 30); do curl -s -o /dev/null -w '%{{http_code}} ' -m 2 {CREDS_URL}; done"
    );
    let flooded = text(&node.in_node_cgroup(&web, &["sh", "-c", &flood]));
    assert!(flooded.contains("429"), "the flood is limited: {flooded}");
    let (status, body) = curl_status(&node, Some(&batch));
    assert_eq!((status.as_str(), body.as_str()), ("200", "batch-role"));
}

/// The agent runs as a DaemonSet pod: its own process is in the pod tree
/// the hostNetwork rule matches. Its own calls to the real metadata service
/// (proxied paths, the node's credentials) must still reach that service,
/// never itself.
#[test]
fn the_agent_in_a_pod_of_its_own_reaches_the_real_service() {
    const AGENT_UID: &str = "9d2c4b6a-1e3f-4a5b-8c7d-0e1f2a3b4c5d";
    let mut node = SimNode::up();
    const APP_UID: &str = "3c9a7e52-5d41-4b8e-9f26-7a1b2c3d4e5f";
    node.add_pod_with_uid("app", "10.77.0.10", APP_UID, Some("app-role"));
    node.add_pod_cgroup(APP_UID);
    let agent_cgroup = node.add_pod_cgroup(AGENT_UID);
    node.add_host_network_pod("iamlet-x1", AGENT_UID, None);
    // In a cgroup namespace of its own, as a container is: /proc/self/cgroup
    // says "/", and no $POD_UID is set, so only the kernel's view of the
    // agent's own sockets can tell which pod it is.
    let host_namespace = SimNode::host_cgroup_namespace_flag();
    node.start_agent_in_pod_cgroup(&agent_cgroup, true, &[&host_namespace]);
    let log = node.agent_log();
    assert!(log.contains("identified by their cgroups"), "{log}");
    assert!(
        log.contains("the hostNetwork pods' rules are loaded from the host's"),
        "{log}"
    );

    let (code, body) = node.curl(
        "app",
        &["http://169.254.169.254/latest/meta-data/instance-id"],
    );
    assert_eq!(
        (code, body.as_str()),
        (0, "i-0123456789abcdef0"),
        "{}",
        node.agent_log()
    );
    let (_, role) = node.curl("app", &[CREDS_URL]);
    assert_eq!(role, "app-role");
    let log = node.agent_log();
    assert!(
        log.contains("the agent's own pod is left out of the hostNetwork rules")
            && log.contains(&format!("pod_uid={AGENT_UID}")),
        "{log}"
    );
    assert!(
        node.ruleset()
            .contains("the agent's own pod reaches the real service")
    );
}

/// In a cgroup namespace of its own with no way to the host's, rules for
/// the pod tree could never match: the agent says so, as an error, and
/// installs none rather than pretend.
#[test]
fn an_agent_that_cannot_reach_the_host_cgroup_namespace_says_hostnetwork_pods_are_not_intercepted()
{
    const AGENT_UID: &str = "7b1c3d5e-2f4a-4b6c-8d9e-0a1b2c3d4e5f";
    let mut node = SimNode::up();
    let agent_cgroup = node.add_pod_cgroup(AGENT_UID);
    node.start_agent_in_pod_cgroup(
        &agent_cgroup,
        true,
        &["--host-cgroup-namespace=/proc/self/ns/cgroup"],
    );
    let log = node.agent_log();
    assert!(
        log.contains("ERROR") && log.contains("hostNetwork pods are NOT intercepted"),
        "{log}"
    );
    assert!(
        !node.ruleset().contains("iamlet-hostnet"),
        "{}",
        node.ruleset()
    );
}
