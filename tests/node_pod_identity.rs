//! The container credentials endpoint on a simulated node: the agent puts
//! 169.254.170.23 and fd00:ec2::23 on a link of its own, and unmodified
//! clients in pod network namespaces (botocore's container provider, the
//! aws-config ECS provider) use it with a token from the real
//! `kubectl create token`, ending in `sts get-caller-identity` at moto.
//! Needs root.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::netns::{SimNode, check, output_text as text};

const FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials";
const NO_IMDS: &str = "AWS_EC2_METADATA_DISABLED=true";
const WEB_UID: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
const BATCH_UID: &str = "6fa459ea-ee8a-4ca4-894e-db77e160355e";

/// A token for `pod` from the real `kubectl create token`.
fn kubectl_token(node: &SimNode, pod: &str, audience: &str) -> String {
    let output = node.kubectl(&[
        "create",
        "token",
        "default",
        "--audience",
        audience,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        pod,
        "--duration",
        "1h",
    ]);
    check(&output, "kubectl create token");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Writes a projected-token file for a pod (the kubelet's job).
fn token_file(node: &SimNode, name: &str, token: &str) -> PathBuf {
    let path = node.state_file(name);
    std::fs::write(&path, token).unwrap();
    path
}

fn token_env(path: &std::path::Path) -> String {
    format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}", path.display())
}

/// Waits until the endpoint listens on both addresses.
fn wait_listening(node: &SimNode) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric("iamlet_container_credentials_listening") != Some(2.0) {
        assert!(Instant::now() < deadline, "{}", node.agent_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn unmodified_sdks_get_their_pods_role_from_the_endpoint() {
    let mut node = SimNode::up();
    node.add_dual_stack_pod("pi-app", "10.77.0.61", "fd77::61", Some("s3-reader"));
    node.add_pod("pi-other", "10.77.0.62", Some("batch-role"));
    node.start_agent(&[]);
    wait_listening(&node);
    // On iamlet's own link, or on `lo` where the kernel has no dummy links
    // (as on the machines this suite runs on).
    let link = text(&node.in_node(&["ip", "-o", "addr", "show"]));
    assert!(
        link.contains("169.254.170.23/32") && link.contains("fd00:ec2::23/128"),
        "{link}"
    );

    let token = kubectl_token(&node, "pi-app", "pods.eks.amazonaws.com");
    let file = token_file(&node, "pi-app.token", &token);
    let env = token_env(&file);
    // botocore's container provider (the metadata service is off for it,
    // so nothing else can answer).
    let out = node.aws_with(
        "pi-app",
        &[FULL_URI, &env, NO_IMDS],
        &[
            "sts",
            "get-caller-identity",
            "--query",
            "Arn",
            "--output",
            "text",
        ],
    );
    assert_eq!(
        text(&out).trim(),
        "arn:aws:sts::123456789012:assumed-role/s3-reader/default.pi-app"
    );
    // The aws-config ECS provider, in an unmodified application.
    let sdk = SimNode::sdk_identity_bin();
    let out = node.in_pod("pi-app", &[FULL_URI, &env, NO_IMDS, sdk.to_str().unwrap()]);
    assert!(
        text(&out).contains("assumed-role/s3-reader/default.pi-app"),
        "{}",
        text(&out)
    );
    // The ECS provider reads the file on every load: a file holding no
    // valid token gets nothing.
    let bad = token_file(&node, "pi-app-bad.token", "not-a-token");
    let out = node.in_pod(
        "pi-app",
        &[FULL_URI, &token_env(&bad), NO_IMDS, sdk.to_str().unwrap()],
    );
    assert!(!text(&out).contains("assumed-role"), "{}", text(&out));
    // Over IPv6, to fd00:ec2::23.
    let v6 = node.in_pod(
        "pi-app",
        &[
            "curl",
            "-s",
            "-g",
            "-m",
            "5",
            "-H",
            &format!("Authorization: {token}"),
            "http://[fd00:ec2::23]/v1/credentials",
        ],
    );
    let body: serde_json::Value =
        serde_json::from_slice(&v6.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&v6)));
    assert!(body["AccessKeyId"].as_str().is_some(), "{body}");
    let served =
        node.metric(r#"iamlet_requests_total{route="container-credentials",status="200"}"#);
    assert!(served.unwrap_or(0.0) >= 3.0, "{served:?}");

    // Refusals a real client sees.
    let wrong_host = node.in_pod(
        "pi-app",
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-H",
            "Host: attacker.example",
            "-H",
            &format!("Authorization: {token}"),
            "http://169.254.170.23/v1/credentials",
        ],
    );
    assert!(
        text(&wrong_host).contains("InvalidHost"),
        "{}",
        text(&wrong_host)
    );
    let other_audience = kubectl_token(&node, "pi-app", "sts.amazonaws.com");
    let file = token_file(&node, "pi-app-sts.token", &other_audience);
    let out = node.aws_with(
        "pi-app",
        &[FULL_URI, &token_env(&file), NO_IMDS],
        &["sts", "get-caller-identity"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    // The other pod, holding pi-app's token, gets nothing.
    let stolen = token_file(&node, "stolen.token", &token);
    let out = node.aws_with(
        "pi-other",
        &[FULL_URI, &token_env(&stolen), NO_IMDS],
        &["sts", "get-caller-identity"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(node.agent_log().contains("token-of-another-caller"));
}

/// botocore's refresh path reads the token file again: a rewritten file is
/// what the next refresh sends.
const REFRESH_SCRIPT: &str = r#"
import os, sys
from botocore.credentials import ContainerProvider
path = os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
creds = ContainerProvider().load()
print("loaded", creds.method)
with open(path, "w") as f:
    f.write("not-a-token")
try:
    creds._refresh_using()
    print("garbage accepted")
except Exception as error:
    print("garbage refused", type(error).__name__)
with open(path, "w") as f:
    f.write(sys.argv[1])
fresh = creds._refresh_using()
print("refreshed", bool(fresh["access_key"]))
"#;

#[test]
fn a_rewritten_token_file_is_read_on_refresh() {
    let mut node = SimNode::up();
    node.add_pod("pi-refresh", "10.77.0.63", Some("s3-reader"));
    node.start_agent(&[]);
    wait_listening(&node);
    let first = kubectl_token(&node, "pi-refresh", "pods.eks.amazonaws.com");
    let second = kubectl_token(&node, "pi-refresh", "pods.eks.amazonaws.com");
    assert_ne!(first, second);
    let file = token_file(&node, "pi-refresh.token", &first);
    let script = node.state_file("refresh.py");
    std::fs::write(&script, REFRESH_SCRIPT).unwrap();
    let python = support::venv().join("bin/python");
    let out = node.in_pod(
        "pi-refresh",
        &[
            FULL_URI,
            &token_env(&file),
            python.to_str().unwrap(),
            script.to_str().unwrap(),
            &second,
        ],
    );
    let printed = text(&out);
    assert!(printed.contains("loaded container-role"), "{printed}");
    assert!(printed.contains("garbage refused"), "{printed}");
    assert!(printed.contains("refreshed True"), "{printed}");
}

#[test]
fn a_host_network_pods_token_works_from_its_own_cgroup_only() {
    let mut node = SimNode::up();
    let web = node.add_pod_cgroup(WEB_UID);
    let batch = node.add_pod_cgroup(BATCH_UID);
    node.add_host_network_pod("web-agent", WEB_UID, Some("s3-reader"));
    node.add_host_network_pod("batch-agent", BATCH_UID, Some("batch-role"));
    let root = node.cgroup_root_flag();
    node.start_agent_as(&SimNode::cgroup_wrapper(), &[&root]);
    wait_listening(&node);
    let token = kubectl_token(&node, "web-agent", "pods.eks.amazonaws.com");
    let file = token_file(&node, "web-agent.token", &token);
    let env = token_env(&file);
    let aws = support::venv().join("bin/aws");
    let args = |env: &str| {
        vec![
            FULL_URI.to_string(),
            env.to_string(),
            NO_IMDS.to_string(),
            aws.to_str().unwrap().to_string(),
            "sts".into(),
            "get-caller-identity".into(),
            "--query".into(),
            "Arn".into(),
            "--output".into(),
            "text".into(),
        ]
    };
    let own: Vec<String> = args(&env);
    let own: Vec<&str> = own.iter().map(String::as_str).collect();
    let out = node.in_node_cgroup(&web, &own);
    assert_eq!(
        text(&out).trim(),
        "arn:aws:sts::123456789012:assumed-role/s3-reader/default.web-agent"
    );
    // The same token from another hostNetwork pod's process.
    let out = node.in_node_cgroup(&batch, &own);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(node.agent_log().contains("token-of-another-caller"));
}
