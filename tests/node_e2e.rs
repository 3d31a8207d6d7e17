//! End to end on a simulated node: network namespaces, the real nftables
//! DNAT rule, real moto with IAM enforcement, the real agent, and real
//! clients inside pod namespaces talking to 169.254.169.254 as they would on
//! EC2. Needs root.

mod support;

use std::time::Duration;

use support::netns::{SimNode, output_text as text};
use support::upstream::{NODE_ACCESS_KEY, NODE_SECRET};

const ROLE_ARN_PREFIX: &str = "arn:aws:sts::123456789012:assumed-role/s3-reader/";
const CREDS_URL: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";

/// The ARN `aws sts get-caller-identity` reports in a pod, or its error.
fn caller_arn(node: &SimNode, pod: &str, env: &[&str]) -> String {
    let args = [
        "sts",
        "get-caller-identity",
        "--query",
        "Arn",
        "--output",
        "text",
    ];
    text(&node.aws_with(pod, env, &args)).trim().to_string()
}

#[test]
fn the_kube2iam_tutorial_grant_list_deny_revoke() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.11", None);
    node.add_pod("bystander", "10.77.0.12", None);
    node.start_agent(&[]);

    let denied = node.aws("app", &["s3", "ls", "s3://team-bucket"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("Unable to locate credentials"),
        "{}",
        text(&denied)
    );

    let out = node.kubectl(&["annotate", "pod", "app", "iam.amazonaws.com/role=s3-reader"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = node.aws("app", &["s3", "ls", "s3://team-bucket"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(text(&listed).contains("hello.txt"));
    let other = node.aws("app", &["s3", "ls", "s3://other-bucket"]);
    assert!(!other.status.success());
    assert!(text(&other).contains("AccessDenied"), "{}", text(&other));
    let identity = caller_arn(&node, "app", &[]);
    assert!(identity.starts_with(ROLE_ARN_PREFIX), "{identity}");
    assert!(identity.ends_with("default.app"), "{identity}");

    // The other pod on the node is unaffected.
    let bystander = node.aws("bystander", &["s3", "ls", "s3://team-bucket"]);
    assert!(
        text(&bystander).contains("Unable to locate credentials"),
        "{}",
        text(&bystander)
    );

    let out = node.kubectl(&["annotate", "pod", "app", "iam.amazonaws.com/role-"]);
    assert!(out.status.success(), "{}", text(&out));
    let revoked = node.aws("app", &["s3", "ls", "s3://team-bucket"]);
    assert!(
        text(&revoked).contains("Unable to locate credentials"),
        "{}",
        text(&revoked)
    );

    let ruleset = node.ruleset();
    assert!(ruleset.contains("table ip iamlet"), "{ruleset}");
    assert!(ruleset.contains("dnat to 10.77.0.1:8181"), "{ruleset}");
}

#[test]
fn an_unmodified_rust_sdk_app_and_curl_in_a_pod() {
    let mut node = SimNode::up();
    node.add_pod("rusty", "10.77.0.13", Some("s3-reader"));
    node.start_agent(&["--require-imdsv2"]);
    let identity = node.sdk_identity("rusty");
    assert!(identity.status.success(), "{}", text(&identity));
    assert!(
        text(&identity).trim().starts_with(ROLE_ARN_PREFIX),
        "{}",
        text(&identity)
    );

    // IMDSv1 is refused with --require-imdsv2; IMDSv2 by hand works.
    let (_, v1) = node.curl(
        "rusty",
        &["-o", "/dev/null", "-w", "%{http_code}", CREDS_URL],
    );
    assert_eq!(v1, "401");
    let (_, token) = node.curl(
        "rusty",
        &[
            "-X",
            "PUT",
            "-H",
            "x-aws-ec2-metadata-token-ttl-seconds: 60",
            "http://169.254.169.254/latest/api/token",
        ],
    );
    let (_, role) = node.curl(
        "rusty",
        &[
            "-H",
            &format!("x-aws-ec2-metadata-token: {token}"),
            CREDS_URL,
        ],
    );
    assert_eq!(role, "s3-reader");
}

#[test]
fn a_pod_never_gets_the_nodes_credentials_however_it_asks() {
    let mut node = SimNode::up();
    node.add_pod("curious", "10.77.0.14", None);
    node.start_agent(&[]);
    let (_, token) = node.curl(
        "curious",
        &[
            "-X",
            "PUT",
            "-H",
            "x-aws-ec2-metadata-token-ttl-seconds: 60",
            "http://169.254.169.254/latest/api/token",
        ],
    );
    let token_header = format!("x-aws-ec2-metadata-token: {token}");
    let paths = [
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials/node-role",
        "/latest/meta-data/iam/security-credentials-extended/node-role",
        "/latest/meta-data/iam/info",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/user-data",
        "/2021-07-15/meta-data/iam/security-credentials/node-role",
        "/latest/meta-data/iam/../iam/security-credentials/node-role",
        "/latest/meta-data/iam/security-credentials%2Fnode-role",
        "/latest//meta-data/iam/security-credentials/node-role",
    ];
    for host in ["169.254.169.254", "169.254.169.254:80", "10.77.0.1:8181"] {
        for path in paths {
            for headers in [
                vec![],
                vec!["-H", &token_header],
                vec!["-H", "x-forwarded-for: 10.77.0.1"],
            ] {
                let url = format!("http://{host}{path}");
                let mut args = vec!["--path-as-is"];
                args.extend(headers.iter().copied());
                args.push(&url);
                let (_, body) = node.curl("curious", &args);
                assert!(
                    !body.contains(NODE_SECRET) && !body.contains(NODE_ACCESS_KEY),
                    "{url}: {body}"
                );
                assert!(
                    !body.contains("node-profile") && !body.contains("bootstrap-secret"),
                    "{url}: {body}"
                );
            }
        }
    }
    // Non-credential metadata still works, through the agent.
    let (_, instance) = node.curl(
        "curious",
        &["http://169.254.169.254/latest/meta-data/instance-id"],
    );
    assert_eq!(instance, "i-0123456789abcdef0");
}

#[test]
fn sigterm_leaves_the_rules_and_the_next_agent_adopts_them() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.15", Some("s3-reader"));
    node.start_agent(&[]);
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "s3-reader");

    let status = node.signal_agent("TERM");
    assert!(status.success(), "{status}");
    let log = node.agent_log();
    assert!(log.contains("DNAT rules left in place"), "{log}");
    // With the agent gone, the pod is refused: never the real metadata service.
    let (code, body) = node.curl("app", &[CREDS_URL]);
    assert_eq!(code, 7, "connection refused, got {code}: {body}");
    assert!(node.ruleset().contains("table ip iamlet"));

    node.start_agent(&[]);
    assert!(
        node.agent_log()
            .contains("replaced_previous_agents_rules=true"),
        "{}",
        node.agent_log()
    );
    let ruleset = node.ruleset();
    assert_eq!(
        ruleset.matches("dnat to").count(),
        1,
        "no duplicated rules:\n{ruleset}"
    );
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "s3-reader");
}

#[test]
fn sigkill_and_restart_under_load_never_leak_the_node_credentials() {
    let mut node = SimNode::up();
    node.add_pod("busy", "10.77.0.16", Some("s3-reader"));
    node.start_agent(&[]);
    let creds_url = format!("{CREDS_URL}s3-reader");
    let status = node.signal_agent("KILL");
    assert!(!status.success());
    for _ in 0..5 {
        let (code, body) = node.curl("busy", &[&creds_url]);
        assert_eq!(code, 7, "refused while no agent runs: {body}");
        assert!(!body.contains(NODE_ACCESS_KEY));
    }
    node.start_agent(&[]);
    let (code, body) = node.curl("busy", &[&creds_url]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["AccessKeyId"].as_str().unwrap().starts_with("ASIA"));
    assert_ne!(json["AccessKeyId"], NODE_ACCESS_KEY);
}

#[test]
fn remove_rules_on_exit_and_cleanup_touch_only_iamlets_table() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.17", Some("s3-reader"));
    let other = node.in_node(&["nft", "add", "table", "ip", "someone-else"]);
    assert!(other.status.success());

    node.start_agent(&["--remove-rules-on-exit"]);
    assert!(node.signal_agent("TERM").success());
    assert!(
        node.agent_log().contains("DNAT rules removed"),
        "{}",
        node.agent_log()
    );
    let ruleset = node.ruleset();
    assert!(
        !ruleset.contains("table ip iamlet") && ruleset.contains("table ip someone-else"),
        "{ruleset}"
    );

    node.start_agent(&[]);
    assert!(node.signal_agent("KILL").code().is_none());
    assert!(node.ruleset().contains("table ip iamlet"));
    let cleanup = node.iamlet(&["cleanup", "--host-interface=br0"]);
    assert!(cleanup.status.success(), "{}", text(&cleanup));
    assert!(
        text(&cleanup).contains("iamlet rules removed"),
        "{}",
        text(&cleanup)
    );
    let ruleset = node.ruleset();
    assert!(
        !ruleset.contains("iamlet") && ruleset.contains("table ip someone-else"),
        "{ruleset}"
    );
    let again = node.iamlet(&["cleanup"]);
    assert!(again.status.success());
    assert!(text(&again).contains("nothing to remove"));
}

#[test]
fn wildcards_lists_and_negations_select_the_pod_interfaces() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.18", Some("s3-reader"));
    node.start_agent(&["--host-interface=cali+,br+,!br9"]);
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "s3-reader");
    let ruleset = node.ruleset();
    assert!(
        ruleset.contains(r#"iifname "br*" iifname != "br9""#),
        "{ruleset}"
    );
    assert_eq!(ruleset.matches("dnat to").count(), 2, "{ruleset}");
    // Annotation changes while the pod runs apply at once through the rule.
    let out = node.kubectl(&[
        "annotate",
        "--overwrite",
        "pod",
        "app",
        "iam.amazonaws.com/role=other-role",
    ]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "other-role");
}

#[test]
fn a_dual_stack_pod_is_intercepted_over_both_families() {
    const CREDS_URL_V6: &str = "http://[fd00:ec2::254]/latest/meta-data/iam/security-credentials/";
    let mut node = SimNode::up();
    node.add_dual_stack_pod("dual", "10.77.0.40", "fd77::40", Some("s3-reader"));

    // An IPv4-only agent: IPv6 metadata traffic is reset, never passed to
    // the real service on [fd00:ec2::254] (which would name the node's role).
    node.start_agent(&[]);
    assert_eq!(node.curl("dual", &[CREDS_URL]).1, "s3-reader");
    let (code, body) = node.curl("dual", &["-g", CREDS_URL_V6]);
    assert_eq!(code, 7, "refused (reset), got {code}: {body}");
    assert!(!body.contains("node-role"), "{body}");
    let ruleset = node.ruleset();
    assert!(ruleset.contains("table ip6 iamlet"), "{ruleset}");
    assert!(ruleset.contains("reject with tcp reset"), "{ruleset}");
    assert!(node.signal_agent("TERM").success());

    // A dual-stack agent answers the pod on both families, with its role.
    node.start_agent(&["--host-ip=10.77.0.1,fd77::1"]);
    assert_eq!(node.curl("dual", &["-g", CREDS_URL_V6]).1, "s3-reader");
    assert_eq!(node.curl("dual", &[CREDS_URL]).1, "s3-reader");
    let identity = caller_arn(
        &node,
        "dual",
        &["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6"],
    );
    assert!(
        identity.starts_with(ROLE_ARN_PREFIX),
        "botocore over IPv6: {identity}"
    );
    let ruleset = node.ruleset();
    assert_eq!(ruleset.matches("dnat to").count(), 2, "{ruleset}");
    assert!(
        node.agent_log().contains("ipv6=[fd77::1]:8181"),
        "{}",
        node.agent_log()
    );
}

#[test]
fn through_the_dnat_a_pod_gets_metadata_routes_only() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.45", Some("s3-reader"));
    node.start_agent(&["--debug"]);
    for path in ["/debug/store", "/metrics", "/readyz"] {
        let (_, body) = node.curl("app", &["-s", &format!("http://169.254.169.254{path}")]);
        assert!(!body.contains("10.77.0.45"), "{path}: {body}");
        assert!(!body.contains("iamlet_"), "{path}: {body}");
        assert!(!body.contains("rolesByIP"), "{path}: {body}");
    }
    // Straight to the agent's address, the pod is still the pod: no debug data.
    let direct = format!(
        "http://10.77.0.1:{}/debug/store",
        support::netns::AGENT_PORT
    );
    let (_, body) = node.curl("app", &["-s", "-w", " %{http_code}", &direct]);
    assert!(body.ends_with(" 404"), "{body}");
    assert!(!body.contains("s3-reader"), "{body}");
    // On the node itself the debug store answers.
    let out = node.in_node(&["curl", "-s", &direct]);
    assert!(text(&out).contains("rolesByIP"), "{}", text(&out));
    assert_eq!(node.curl("app", &[CREDS_URL]).1, "s3-reader");
}
