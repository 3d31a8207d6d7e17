//! Day-2 operation on a simulated node (network namespaces, real nftables
//! and iptables, the real agent): rules that heal themselves, a cut-over
//! from kube2iam and back, the security contexts the agent runs under, and
//! restarts. A prober pod asks the metadata address every few milliseconds
//! throughout and reports who answered; the numbers are printed (run with
//! `--no-capture`) and recorded in docs/operations.md. Needs root.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use support::netns::{NODE_IP, SimNode, check};

const LIST_URL: &str = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
/// What the fake real metadata service lists: the node's role.
const REAL_ANSWER: &str = "node-role";
const KUBE2IAM_ANSWER: &str = "from-kube2iam";
const KUBE2IAM_PORT: &str = "8181";

fn e2e(script: &str) -> String {
    format!("{}/tests/e2e/{script}", env!("CARGO_MANIFEST_DIR"))
}

/// What the prober saw.
#[derive(Debug)]
struct Probed {
    counts: serde_json::Value,
    gaps_ms: Vec<f64>,
    longest_gap_ms: f64,
    summary: String,
}

impl Probed {
    fn count(&self, who: &str) -> u64 {
        self.counts[who].as_u64().unwrap_or(0)
    }
}

struct Prober {
    index: usize,
    stop_file: std::path::PathBuf,
}

impl Prober {
    fn start(node: &mut SimNode, pod: &str, answers: &[&str]) -> Prober {
        let stop_file = node.state_file(&format!("stop-{pod}"));
        let _ = std::fs::remove_file(&stop_file);
        let script = e2e("prober.py");
        let index = node.spawn_in_pod(
            pod,
            &[
                "python3",
                &script,
                stop_file.to_str().unwrap(),
                &answers.join(","),
                REAL_ANSWER,
                "5",
            ],
        );
        std::thread::sleep(Duration::from_millis(300));
        Prober { index, stop_file }
    }

    fn finish(self, node: &mut SimNode) -> Probed {
        std::fs::write(&self.stop_file, b"").unwrap();
        let out = node.wait_background(self.index, Duration::from_secs(10));
        let summary: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("prober: {e}: {out}"));
        Probed {
            counts: summary["counts"].clone(),
            gaps_ms: summary["gaps_ms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
            longest_gap_ms: summary["longest_gap_ms"].as_f64().unwrap(),
            summary: out.trim().to_string(),
        }
    }
}

#[test]
fn a_flushed_deleted_or_altered_table_is_written_again_within_a_second() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.30", Some("s3-reader"));
    // The prober asks 200 times a second, above the default per-pod rate.
    node.start_agent(&["--pod-request-rate=0"]);
    assert_eq!(node.metric("iamlet_rules_installed"), Some(1.0));
    let prober = Prober::start(&mut node, "app", &["s3-reader"]);
    let changes: [(&str, &[&str]); 4] = [
        ("nft flush ruleset", &["nft", "flush", "ruleset"]),
        (
            "nft delete table ip iamlet",
            &["nft", "delete", "table", "ip", "iamlet"],
        ),
        (
            "nft flush chain ip iamlet prerouting",
            &["nft", "flush", "chain", "ip", "iamlet", "prerouting"],
        ),
        (
            "an accept rule inserted ahead of the DNAT",
            &[
                "nft",
                "insert",
                "rule",
                "ip",
                "iamlet",
                "prerouting",
                "ip",
                "daddr",
                "169.254.169.254",
                "accept",
            ],
        ),
    ];
    for (what, command) in changes {
        check(&node.in_node(command), what);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let probed = prober.finish(&mut node);
    eprintln!("ruleset changes under load: {}", probed.summary);
    // A burst of flushes, as a firewall service's restart makes (a flush on
    // stop, another on start): a flush landing between a repair and its
    // reading back must not make "no rules" the state kept.
    check(
        &node.in_node(&[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do nft flush ruleset; sleep 0.05; done",
        ]),
        "a burst of flushes",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let after_burst = node.ruleset();
    assert_eq!(after_burst.matches("dnat to").count(), 1, "{after_burst}");
    assert_eq!(node.metric("iamlet_rules_installed"), Some(1.0));
    assert_eq!(node.curl("app", &[LIST_URL]).1, "s3-reader");
    let log = node.agent_log();
    assert!(
        log.matches("written again").count() >= 5,
        "one repair per change, and the burst's:\n{log}"
    );
    assert!(node.metric("iamlet_rule_repairs_total").unwrap() >= 5.0);
    assert_eq!(node.metric("iamlet_rules_installed"), Some(1.0));
    let ruleset = node.ruleset();
    assert_eq!(ruleset.matches("dnat to").count(), 1, "{ruleset}");
    assert!(!ruleset.contains("169.254.169.254 accept"), "{ruleset}");
    // One gap per change at least (a loaded machine may add a lone failed probe).
    assert!(probed.gaps_ms.len() >= 4, "{}", probed.summary);
    assert!(
        probed.longest_gap_ms < 1000.0,
        "the rules must be back within a second: {}",
        probed.summary
    );
    assert!(probed.count("s3-reader") > 50, "{}", probed.summary);
}

#[test]
fn cut_over_from_kube2iam_and_back_without_a_window() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.31", Some("s3-reader"));
    // kube2iam on the node: its process on :8181 on every interface and
    // its rule, exactly as its AddRule appends it.
    let kube2iam_rule = [
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        "tcp",
        "-d",
        "169.254.169.254",
        "--dport",
        "80",
        "-j",
        "DNAT",
        "--to-destination",
        "10.77.0.1:8181",
        "-i",
        "br0",
    ];
    let kube2iam = start_kube2iam_beside(&mut node, &kube2iam_rule);
    support::wait_until("kube2iam to answer", Duration::from_secs(10), || {
        node.curl("app", &[LIST_URL]).1 == KUBE2IAM_ANSWER
    });
    let prober = Prober::start(&mut node, "app", &["s3-reader", KUBE2IAM_ANSWER]);

    // Cut-over, step 1: iamlet beside kube2iam on another port. Its rule
    // sits ahead of iptables' nat PREROUTING, so it takes over at once.
    let token_key = node.state_file("imds-token-key");
    let key_flag = format!("--imds-token-key-file={}", token_key.display());
    node.start_agent(&[
        "--app-port=8182",
        "--metrics-port=8182",
        &key_flag,
        "--pod-request-rate=0",
    ]);
    support::wait_until("iamlet to answer", Duration::from_secs(10), || {
        node.curl("app", &[LIST_URL]).1 == "s3-reader"
    });
    std::thread::sleep(Duration::from_millis(500));
    // Step 2: kube2iam goes, with its chart's preStop hook.
    check(
        &node.in_node(&[
            "sh",
            "-c",
            "eval `iptables-save | grep 169.254.169.254 | sed s/-A/'iptables -t nat -D'/g`",
        ]),
        "kube2iam's preStop hook",
    );
    node.stop_background(kube2iam);
    assert!(!node.ruleset().contains("10.77.0.1:8181"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.curl("app", &[LIST_URL]).1, "s3-reader");

    // Rollback, step 1: kube2iam back beside iamlet (iamlet still answers).
    let _kube2iam = start_kube2iam_beside(&mut node, &kube2iam_rule);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.curl("app", &[LIST_URL]).1, "s3-reader");
    // Step 2: the DaemonSet rolled with --remove-rules-on-exit (one agent
    // replaced by the next), then deleted: its rules go with it and
    // kube2iam's rule applies.
    node.signal_agent("TERM");
    node.start_agent(&[
        "--app-port=8182",
        "--metrics-port=8182",
        &key_flag,
        "--remove-rules-on-exit=true",
        "--pod-request-rate=0",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(node.signal_agent("TERM").success());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.curl("app", &[LIST_URL]).1, KUBE2IAM_ANSWER);

    let probed = prober.finish(&mut node);
    eprintln!("cut-over and rollback: {}", probed.summary);
    assert_eq!(
        probed.count("real"),
        0,
        "the real metadata service answered a pod: {}",
        probed.summary
    );
    assert!(probed.count("s3-reader") > 20, "{}", probed.summary);
    assert!(probed.count(KUBE2IAM_ANSWER) > 20, "{}", probed.summary);
    assert!(
        probed.longest_gap_ms < 1000.0,
        "longest stretch without an answer: {}",
        probed.summary
    );
}

/// kube2iam on the node: its process on :8181 on every interface and its
/// rule, as its AddRule appends it.
fn start_kube2iam_beside(node: &mut SimNode, rule: &[&str]) -> usize {
    let standin = e2e("kube2iam_standin.py");
    let index = node.spawn_in_node(&["python3", &standin, KUBE2IAM_PORT]);
    let mut args = vec!["iptables"];
    args.extend(rule);
    check(&node.in_node(&args), "kube2iam's rule");
    support::wait_until("kube2iam to listen", Duration::from_secs(10), || {
        node.in_node(&[
            "curl",
            "-sf",
            "-m",
            "1",
            &format!("http://{NODE_IP}:{KUBE2IAM_PORT}/latest/meta-data/iam/security-credentials/"),
        ])
        .status
        .success()
    });
    index
}

/// kube2iam's DaemonSets (README and chart) run the container privileged
/// with no runAsUser, so the image's default user; iamlet's own run uid 0
/// with only NET_ADMIN and NET_BIND_SERVICE and no privilege escalation. Both must work; a
/// non-root user without capabilities must fail with a clear message.
#[test]
fn the_agent_runs_under_kube2iams_security_context_and_its_own() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.32", Some("s3-reader"));
    // kube2iam's chart args, as it renders them with host.iptables=true.
    let chart_args = [
        "--host-interface=br0",
        "--iptables=true",
        "--app-port=8181",
        "--metrics-port=8181",
    ];
    // Privileged, the image's default user (root): every capability.
    node.start_agent(&chart_args);
    assert_eq!(node.curl("app", &[LIST_URL]).1, "s3-reader");
    node.signal_agent("TERM");

    // iamlet's manifest: uid 0, capabilities dropped but NET_ADMIN and
    // NET_BIND_SERVICE, allowPrivilegeEscalation=false (no_new_privs).
    let least = [
        "setpriv",
        "--bounding-set=-all,+net_admin,+net_bind_service",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ];
    node.start_agent_as(&least, &["--remove-rules-on-exit=false"]);
    let pid = node.agent_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(
        effective, "0000000000001400",
        "only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE"
    );
    // Enough to put the container credentials addresses in place and
    // listen on their port 80.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.metric("iamlet_container_credentials_listening") != Some(2.0) {
        assert!(std::time::Instant::now() < deadline, "{}", node.agent_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // NET_ADMIN is enough to hear ruleset changes too.
    assert!(
        node.agent_log().contains("notifications=true"),
        "{}",
        node.agent_log()
    );
    assert!(node.ruleset().contains("table ip iamlet"));
    assert_eq!(node.curl("app", &[LIST_URL]).1, "s3-reader");
    node.signal_agent("TERM");

    // A non-root user without capabilities (the old image default under a
    // privileged container): a clear error, not a crash loop of guesses.
    let nobody = [
        "setpriv",
        "--reuid=65532",
        "--regid=65532",
        "--clear-groups",
        "--inh-caps=-all",
        "--",
    ];
    let (status, log) = node.run_agent_to_exit(&nobody, &[], Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{log}");
    assert!(log.contains("CAP_NET_ADMIN"), "{log}");
    assert!(log.contains("uid 65532"), "{log}");
}

#[test]
fn a_mistyped_interface_stops_the_agent_and_an_unmatched_wildcard_is_reported() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.33", Some("s3-reader"));
    let (status, log) =
        node.run_agent_to_exit(&[], &["--host-interface=bogus0"], Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("--host-interface") && log.contains("bogus0"),
        "{log}"
    );
    assert!(!node.ruleset().contains("iamlet"), "no rule was installed");

    node.start_agent(&["--host-interface=bogus+"]);
    assert_eq!(node.metric("iamlet_host_interfaces_matched"), Some(0.0));
    assert!(
        node.agent_log()
            .contains("no interface on this node matches"),
        "{}",
        node.agent_log()
    );
    node.signal_agent("TERM");
    node.start_agent(&["--host-interface=br0,vh+"]);
    support::wait_until("the interfaces counted", Duration::from_secs(5), || {
        node.metric("iamlet_host_interfaces_matched")
            .is_some_and(|n| n >= 2.0)
    });
}

#[test]
fn imdsv2_tokens_survive_an_agent_restart_with_a_key_file() {
    let mut node = SimNode::up();
    node.add_pod("app", "10.77.0.34", Some("s3-reader"));
    let key = node.state_file("imds-token-key");
    let key_flag = format!("--imds-token-key-file={}", key.display());
    let token_of = |node: &SimNode| {
        node.curl(
            "app",
            &[
                "-X",
                "PUT",
                "-H",
                "x-aws-ec2-metadata-token-ttl-seconds: 300",
                "http://169.254.169.254/latest/api/token",
            ],
        )
        .1
    };
    let listed_with = |node: &SimNode, token: &str| {
        let header = format!("x-aws-ec2-metadata-token: {token}");
        node.curl("app", &["-w", " %{http_code}", "-H", &header, LIST_URL])
            .1
    };
    node.start_agent(&[&key_flag]);
    let token = token_of(&node);
    assert_eq!(listed_with(&node, &token), "s3-reader 200");
    node.signal_agent("TERM");
    node.start_agent(&[&key_flag]);
    assert_eq!(
        listed_with(&node, &token),
        "s3-reader 200",
        "the token outlived the agent that issued it"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Without a key file a restart ends the token: the client gets 401
    // and must ask for a new one.
    node.signal_agent("TERM");
    node.start_agent(&[]);
    let token = token_of(&node);
    node.signal_agent("TERM");
    node.start_agent(&[]);
    assert!(
        listed_with(&node, &token).ends_with(" 401"),
        "{}",
        listed_with(&node, &token)
    );
}
