use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn parse_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let argv = std::iter::once("iamlet").chain(args.iter().copied());
    Config::parse(argv, |name| env.get(name).cloned())
}

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    parse_with_env(args, &[])
}

fn error_of(args: &[&str]) -> String {
    parse(args).expect_err("should be rejected").to_string()
}

/// The args of a typical kube2iam DaemonSet, verbatim.
const KUBE2IAM_ARGS: &[&str] = &[
    "--app-port=8181",
    "--base-role-arn=arn:aws:iam::123456789012:role/",
    "--default-role=kube2iam-default",
    "--iptables=true",
    "--host-ip=10.0.1.23",
    "--host-interface=cali+",
    "--node=ip-10-0-1-23.ec2.internal",
    "--namespace-restrictions",
    "--namespace-restriction-format=regexp",
    "--auto-discover-default-role=false",
    "--iam-role-session-ttl=15m",
    "--iam-role-error-ttl=0",
    "--backoff-max-elapsed-time=2s",
    "--backoff-max-interval=1s",
    "--cache-resync-period=30m",
    "--log-format=json",
    "--log-level=info",
    "--verbose",
    "--debug",
    "--use-regional-sts-endpoint",
    "--metadata-addr=169.254.169.254",
];

#[test]
fn a_kube2iam_daemonset_args_start_iamlet_unchanged() {
    let config = parse(KUBE2IAM_ARGS).expect("kube2iam args parse");
    assert_eq!(config.listen, "10.0.1.23:8181".parse().unwrap());
    assert_eq!(
        config.roles.base_role_arn.as_ref().unwrap().as_str(),
        "arn:aws:iam::123456789012:role/"
    );
    assert_eq!(
        config.roles.default_role.as_deref(),
        Some("kube2iam-default")
    );
    assert_eq!(config.roles.restrictions, Some(PolicyFormat::Regexp));
    assert!(config.iptables);
    assert_eq!(config.host_interface.include, ["cali*"]);
    assert_eq!(config.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
    // kube2iam asked STS for twice this; iamlet asks for what was written.
    assert_eq!(config.cache.session_duration, Duration::from_secs(900));
    // A 15-minute session cannot keep the 15-minute floor: the windows scale.
    assert_eq!(config.cache.refresh_before, Duration::from_secs(450));
    assert_eq!(config.cache.min_remaining, Duration::from_secs(225));
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.log_level, tracing::Level::DEBUG);
    assert!(config.service.debug);
    let no_effect: Vec<&str> = config
        .no_effect
        .iter()
        .map(|(flag, _)| flag.as_str())
        .collect();
    assert_eq!(
        no_effect,
        [
            "cache-resync-period",
            "backoff-max-interval",
            "use-regional-sts-endpoint"
        ]
    );
}

#[test]
fn defaults_match_kube2iam_where_kube2iam_is_right() {
    let config = parse(&["--host-ip=10.0.0.1"]).unwrap();
    assert_eq!(config.listen.port(), 8181);
    assert_eq!(config.metrics_port, None);
    assert_eq!(config.metadata_addr, "169.254.169.254");
    assert_eq!(config.annotations.role, "iam.amazonaws.com/role");
    assert_eq!(
        config.annotations.external_id,
        "iam.amazonaws.com/external-id"
    );
    assert_eq!(
        config.annotations.namespace_policy,
        "iam.amazonaws.com/allowed-roles"
    );
    assert_eq!(config.service.lookup_wait, Duration::from_secs(2));
    assert_eq!(config.cache.error_ttl, Duration::ZERO);
    assert_eq!(config.roles.restrictions, None);
    assert_eq!(config.host_interface.include, ["docker0"]);
    assert!(!config.iptables);
    assert_eq!(config.log_level, tracing::Level::INFO);
    // The role-chaining cap, not kube2iam's 2 x 15m.
    assert_eq!(config.cache.session_duration, Duration::from_secs(3600));
    assert_eq!(config.cache.refresh_before, Duration::from_secs(1800));
    assert_eq!(config.cache.min_remaining, Duration::from_secs(900));
    assert_eq!(
        config.service.deny.entries(),
        [
            "user-data",
            "meta-data/identity-credentials",
            "dynamic/instance-identity/signature",
            "dynamic/instance-identity/pkcs7",
            "dynamic/instance-identity/rsa2048",
        ]
    );
    assert_eq!(config.max_index_staleness, Some(Duration::from_secs(10)));
    assert_eq!(config.service.max_connections_per_source, 64);
    assert_eq!(config.service.max_connections, 2048);
    assert_eq!(config.listen_other_family, None);
    assert!(config.no_effect.is_empty());
    assert!(matches!(config.kube, KubeAccess::Infer { insecure: false }));
}

#[test]
fn node_and_host_ip_fall_back_to_the_downward_api_variables() {
    let config = parse_with_env(&[], &[("HOST_IP", "10.1.2.3"), ("NODE_NAME", "node-7")]).unwrap();
    assert_eq!(config.listen.ip().to_string(), "10.1.2.3");
    assert_eq!(config.node.as_deref(), Some("node-7"));
    let explicit = parse_with_env(
        &["--node=node-8", "--host-ip=10.9.9.9"],
        &[("NODE_NAME", "node-7")],
    )
    .unwrap();
    assert_eq!(explicit.node.as_deref(), Some("node-8"));
}

#[test]
fn invalid_values_name_their_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--app-port=70000"], "--app-port"),
        (&["--host-ip=10.0.0.1", "--app-port=0"], "--app-port"),
        (&[], "--host-ip"),
        (&["--host-ip=not-an-ip"], "--host-ip"),
        (
            &[
                "--host-ip=10.0.0.1",
                "--base-role-arn=arn:aws:iam::1234:role/",
            ],
            "--base-role-arn",
        ),
        (
            &["--host-ip=10.0.0.1", "--default-role=reader"],
            "--default-role",
        ),
        (
            &["--host-ip=10.0.0.1", "--namespace-restriction-format=pcre"],
            "--namespace-restriction-format",
        ),
        (&["--host-ip=10.0.0.1", "--log-format=xml"], "--log-format"),
        (&["--host-ip=10.0.0.1", "--log-level=loud"], "--log-level"),
        (
            &["--host-ip=10.0.0.1", "--iam-role-session-ttl=0s"],
            "--iam-role-session-ttl",
        ),
        (
            &["--host-ip=10.0.0.1", "--iam-role-session-ttl=13h"],
            "--iam-role-session-ttl",
        ),
        (
            &["--host-ip=10.0.0.1", "--iam-role-session-ttl=15"],
            "--iam-role-session-ttl",
        ),
        (&["--host-ip=10.0.0.1", "--iptables=maybe"], "--iptables"),
        (
            &["--host-ip=10.0.0.1", "--host-interface=cali*"],
            "--host-interface",
        ),
        (&["--host-ip=10.0.0.1", "--api-token=x"], "--api-token"),
        (
            &["--host-ip=10.0.0.1", "--api-server=ftp://x"],
            "--api-server",
        ),
        (
            &["--host-ip=10.0.0.1", "--metadata-addr=http://x/"],
            "--metadata-addr",
        ),
        (
            &["--host-ip=10.0.0.1", "--credential-refresh-before=10m"],
            "--credential-refresh-before",
        ),
        (
            &["--host-ip=10.0.0.1", "--credential-refresh-before=2h"],
            "--credential-refresh-before",
        ),
        (
            &["--host-ip=10.0.0.1", "--credential-min-remaining=0"],
            "--credential-min-remaining",
        ),
        (
            &["--host-ip=10.0.0.1", "--iam-role-role-key=x"],
            "--iam-role-role-key",
        ),
    ];
    for (args, flag) in cases {
        let message = error_of(args);
        assert!(message.contains(flag), "{args:?}: {message}");
    }
}

#[test]
fn conflicting_flags_are_refused() {
    let message = error_of(&[
        "--host-ip=10.0.0.1",
        "--auto-discover-base-arn",
        "--base-role-arn=arn:aws:iam::123456789012:role/",
    ]);
    assert!(
        message.contains("--auto-discover-base-arn") && message.contains("--base-role-arn"),
        "{message}"
    );
    let message = error_of(&[
        "--host-ip=10.0.0.1",
        "--auto-discover-default-role",
        "--default-role=x",
    ]);
    assert!(
        message.contains("--auto-discover-default-role"),
        "{message}"
    );
    let message = error_of(&[
        "--host-ip=10.0.0.1",
        "--api-server=https://k",
        "--kubeconfig=/k",
    ]);
    assert!(
        message.contains("--api-server") && message.contains("--kubeconfig"),
        "{message}"
    );
}

#[test]
fn a_default_role_name_waits_for_auto_discovered_base() {
    let config = parse(&[
        "--host-ip=10.0.0.1",
        "--auto-discover-base-arn",
        "--default-role=reader",
    ])
    .unwrap();
    assert!(config.roles.auto_discover_base_arn);
}

#[test]
fn base_arn_gets_its_trailing_slash() {
    let config = parse(&[
        "--host-ip=10.0.0.1",
        "--base-role-arn=arn:aws:iam::123456789012:role",
    ])
    .unwrap();
    assert_eq!(
        config.roles.base_role_arn.unwrap().as_str(),
        "arn:aws:iam::123456789012:role/"
    );
}

#[test]
fn metrics_port_differs_only_when_asked() {
    let config = parse(&[
        "--host-ip=10.0.0.1",
        "--app-port=8282",
        "--metrics-port=9100",
    ])
    .unwrap();
    assert_eq!(config.metrics_port, Some(9100));
}

#[test]
fn metadata_deny_adds_to_the_defaults_unless_they_are_dropped_by_name() {
    // Found by an attack: one --metadata-deny entry used to replace the
    // defaults, making user-data and identity credentials readable.
    let added = parse(&["--host-ip=10.0.0.1", "--metadata-deny=meta-data/tags"]).unwrap();
    let entries = added.service.deny.entries();
    assert!(entries.contains(&"user-data".to_string()), "{entries:?}");
    assert!(entries.contains(&"meta-data/identity-credentials".to_string()));
    assert!(entries.contains(&"meta-data/tags".to_string()));
    let cleared = parse(&[
        "--host-ip=10.0.0.1",
        "--no-default-metadata-deny",
        "--metadata-deny=meta-data/tags",
    ])
    .unwrap();
    assert_eq!(cleared.service.deny.entries(), ["meta-data/tags"]);
    let none = parse(&["--host-ip=10.0.0.1", "--no-default-metadata-deny=true"]).unwrap();
    assert!(none.service.deny.entries().is_empty());
}

#[test]
fn host_ip_takes_one_address_per_family() {
    let dual = parse(&["--host-ip=10.0.0.1,fd00::1", "--app-port=9000"]).unwrap();
    assert_eq!(dual.listen.to_string(), "10.0.0.1:9000");
    assert_eq!(
        dual.listen_other_family.map(|a| a.to_string()).as_deref(),
        Some("[fd00::1]:9000")
    );
    let v6_first = parse(&["--host-ip=fd00::1, 10.0.0.1"]).unwrap();
    assert!(v6_first.listen.is_ipv6());
    for bad in [
        "10.0.0.1,10.0.0.2",
        "fd00::1,fd00::2",
        "10.0.0.1,fd00::1,10.0.0.3",
        "0.0.0.0",
        "10.0.0.1,",
    ] {
        let error = error_of(&[&format!("--host-ip={bad}")]);
        assert!(error.contains("--host-ip"), "{bad}: {error}");
    }
}

#[test]
fn index_staleness_and_connection_caps_are_flags() {
    let config = parse(&[
        "--host-ip=10.0.0.1",
        "--max-index-staleness=0",
        "--max-connections-per-source=8",
        "--max-connections=100",
    ])
    .unwrap();
    assert_eq!(config.max_index_staleness, None);
    assert_eq!(config.service.max_connections_per_source, 8);
    assert_eq!(config.service.max_connections, 100);
    let error = error_of(&["--host-ip=10.0.0.1", "--max-index-staleness=soon"]);
    assert!(error.contains("max-index-staleness"), "{error}");
    let error = error_of(&["--host-ip=10.0.0.1", "--max-connections=-1"]);
    assert!(error.contains("max-connections"), "{error}");
}

#[test]
fn kube2iam_values_iamlet_changes_start_with_a_warning() {
    let config = parse(&["--host-ip=10.0.0.1", "--iam-role-session-ttl=10m"]).unwrap();
    assert_eq!(config.cache.session_duration, Duration::from_secs(900));
    assert_eq!(config.adjusted.len(), 1);
    assert_eq!(config.adjusted[0].0, "iam-role-session-ttl");
    assert!(
        config.adjusted[0].1.contains("twice"),
        "{:?}",
        config.adjusted
    );
    let untouched = parse(&["--host-ip=10.0.0.1", "--iam-role-session-ttl=15m"]).unwrap();
    assert!(untouched.adjusted.is_empty());
    for spelling in ["JSON", "Json", "json"] {
        let config = parse(&["--host-ip=10.0.0.1", &format!("--log-format={spelling}")]).unwrap();
        assert_eq!(config.log_format, LogFormat::Json, "{spelling}");
    }
    assert_eq!(
        parse(&["--host-ip=10.0.0.1", "--log-format=TEXT"])
            .unwrap()
            .log_format,
        LogFormat::Text
    );
}
