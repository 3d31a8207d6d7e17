//! Command-line flags, exactly as kube2iam spells them, plus iamlet's own.
//!
//! Clap types end here: [`crate::config::Config::from_cli`] turns a parsed
//! [`Cli`] into a validated configuration. Every flag can also be set from an
//! `IAMLET_<FLAG>` environment variable.

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser};

use crate::config::duration::parse_go_duration;

/// Version line printed by `--version`: crate version and git commit.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("IAMLET_GIT_COMMIT"),
    ")"
);

// As with Go flags, a flag given twice takes its last value.
// Boolean flags are Go-style: `--flag`, `--flag=true` and `--flag=false` all
// parse, so kube2iam manifests that write `--iptables=true` start iamlet as is.

/// iamlet: per-pod AWS IAM roles for Kubernetes, a kube2iam-compatible node agent.
#[derive(Debug, Parser)]
#[command(name = "iamlet", version = LONG_VERSION, about, max_term_width = 100, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub roles: RoleArgs,

    #[command(flatten)]
    pub credentials: CredentialArgs,

    #[command(flatten)]
    pub node: NodeArgs,

    #[command(flatten)]
    pub pod_identity: PodIdentityArgs,

    #[command(flatten)]
    pub logging: LogArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Run the agent (what iamlet does without a subcommand).
    Run,
    /// Remove iamlet's nftables rules and container credentials addresses from this node and exit
    /// (for uninstall hooks).
    Cleanup,
    /// Ask this node's agent why a pod (NAMESPACE/NAME, or its address) gets the role it gets or
    /// none, or (--role, --namespace) whether a namespace allows a role. Exits 0 when granted or
    /// allowed, 1 when refused.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ExplainArgs {
    /// The pod, as NAMESPACE/NAME or one of its IP addresses.
    pub target: Option<String>,

    /// A role (name or ARN, as an annotation carries it) to check against --namespace's
    /// allow-list.
    #[arg(long, requires = "namespace", conflicts_with = "target")]
    pub role: Option<String>,

    /// The namespace whose allow-list --role is checked against.
    #[arg(long, requires = "role")]
    pub namespace: Option<String>,

    /// The agent to ask (http://HOST:PORT). By default the agent this runs beside: in its
    /// container (kubectl exec) the address on its own command line, else --host-ip (or $HOST_IP)
    /// and --metrics-port.
    #[arg(long)]
    pub agent: Option<String>,

    /// Print the agent's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Path to a kubeconfig file; in-cluster configuration when empty.
    #[arg(long, global = true, env = "IAMLET_KUBECONFIG", default_value = "")]
    pub kubeconfig: String,

    /// Kubernetes API server URL; overrides the kubeconfig and in-cluster configuration.
    #[arg(long, global = true, env = "IAMLET_API_SERVER", default_value = "")]
    pub api_server: String,

    /// Bearer token for --api-server.
    #[arg(
        long,
        global = true,
        env = "IAMLET_API_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub api_token: String,

    /// Skip TLS verification of the API server's certificate.
    #[arg(long, global = true, env = "IAMLET_INSECURE", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub insecure: bool,

    /// Watch only the pods of this node (spec.nodeName); defaults to $NODE_NAME.
    #[arg(long, global = true, env = "IAMLET_NODE", default_value = "")]
    pub node: String,

    /// Informer resync period (accepted for kube2iam compatibility; watches need no resync).
    #[arg(long, global = true, env = "IAMLET_CACHE_RESYNC_PERIOD", default_value = "30m", value_parser = parse_go_duration)]
    pub cache_resync_period: Duration,

    /// Ask the API server when several pods claim one IP (accepted for kube2iam
    /// compatibility; iamlet always refuses to guess between such pods).
    #[arg(long, global = true, env = "IAMLET_RESOLVE_DUPLICATE_CACHE_IPS", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub resolve_duplicate_cache_ips: bool,

    /// Refuse (503) answers that rest on the pod index once its watch has been broken this
    /// long, until a relist completes. 0: never.
    #[arg(long, global = true, env = "IAMLET_MAX_INDEX_STALENESS", default_value = "10s", value_parser = parse_go_duration)]
    pub max_index_staleness: Duration,

    /// How long a request from an IP not (yet) in the pod index waits for the watch to catch up.
    #[arg(long, global = true, env = "IAMLET_BACKOFF_MAX_ELAPSED_TIME", default_value = "2s", value_parser = parse_go_duration)]
    pub backoff_max_elapsed_time: Duration,

    /// Pod lookup retry interval cap (accepted for kube2iam compatibility; iamlet is woken by watch events).
    #[arg(long, global = true, env = "IAMLET_BACKOFF_MAX_INTERVAL", default_value = "1s", value_parser = parse_go_duration)]
    pub backoff_max_interval: Duration,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Port of the metadata HTTP server, bound on --host-ip only.
    #[arg(long, global = true, env = "IAMLET_APP_PORT", default_value = "8181")]
    pub app_port: u16,

    /// Port of a separate metrics listener; metrics are served on --app-port when equal.
    #[arg(
        long,
        global = true,
        env = "IAMLET_METRICS_PORT",
        default_value = "8181"
    )]
    pub metrics_port: u16,

    /// Address of this node that the agent listens on (and DNAT target); defaults to $HOST_IP.
    /// Give one address per family, comma-separated (`10.0.0.5,2600:1f14::5`, as the downward
    /// API's status.hostIPs reads), to serve IPv6 pods too; a family without an address has
    /// its pods' metadata traffic rejected.
    #[arg(long, global = true, env = "IAMLET_HOST_IP", default_value = "")]
    pub host_ip: String,

    /// Address (host or host:port) of the real instance metadata service.
    #[arg(
        long,
        global = true,
        env = "IAMLET_METADATA_ADDR",
        default_value = "169.254.169.254"
    )]
    pub metadata_addr: String,

    /// More metadata paths (after the version segment) refused to pods, as comma-separated
    /// prefixes. They add to the defaults: user-data, meta-data/identity-credentials and
    /// the identity document's signatures (dynamic/instance-identity/signature, pkcs7, rsa2048).
    #[arg(
        long,
        global = true,
        env = "IAMLET_METADATA_DENY",
        default_value = "",
        value_delimiter = ','
    )]
    pub metadata_deny: Vec<String>,

    /// Drop the default deny-list, leaving only --metadata-deny: pods may then read the
    /// node's user-data and identity credentials.
    #[arg(long, global = true, env = "IAMLET_NO_DEFAULT_METADATA_DENY", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub no_default_metadata_deny: bool,

    /// Connections one source address may hold open at once; more are reset at accept. 0: no limit.
    #[arg(
        long,
        global = true,
        env = "IAMLET_MAX_CONNECTIONS_PER_SOURCE",
        default_value = "64"
    )]
    pub max_connections_per_source: usize,

    /// Connections the agent holds open at once, from all pods; more are reset at accept
    /// (callers on the node itself are held to the per-source limit only). 0: no limit.
    #[arg(
        long,
        global = true,
        env = "IAMLET_MAX_CONNECTIONS",
        default_value = "2048"
    )]
    pub max_connections: usize,

    /// Requests per second one pod may make to the agent (bursts of twice that); 0: no limit.
    #[arg(
        long,
        global = true,
        env = "IAMLET_POD_REQUEST_RATE",
        default_value = "100"
    )]
    pub pod_request_rate: u32,

    /// Requests per second one pod may have passed to the real metadata service
    /// (bursts of twice that); 0: no limit.
    #[arg(
        long,
        global = true,
        env = "IAMLET_POD_PROXY_RATE",
        default_value = "20"
    )]
    pub pod_proxy_rate: u32,

    /// Keep the key that signs pods' IMDSv2 tokens in this file (created,
    /// mode 0600, if missing), so tokens survive an agent restart. Empty: a
    /// new key per process, and pods' SDKs get 401 once and ask again.
    #[arg(
        long,
        global = true,
        env = "IAMLET_IMDS_TOKEN_KEY_FILE",
        default_value = ""
    )]
    pub imds_token_key_file: String,

    /// Refuse IMDSv1 requests from pods: every request needs an IMDSv2 session token.
    #[arg(long, global = true, env = "IAMLET_REQUIRE_IMDSV2", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub require_imdsv2: bool,

    /// Serve /debug/store (to callers that are not pods).
    #[arg(long, global = true, env = "IAMLET_DEBUG", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub debug: bool,
}

#[derive(Debug, Args)]
pub struct RoleArgs {
    /// Prefix for role names in annotations, e.g. arn:aws:iam::123456789012:role/
    #[arg(long, global = true, env = "IAMLET_BASE_ROLE_ARN", default_value = "")]
    pub base_role_arn: String,

    /// Role for pods without the role annotation.
    #[arg(long, global = true, env = "IAMLET_DEFAULT_ROLE", default_value = "")]
    pub default_role: String,

    /// Derive --base-role-arn from the node's instance profile.
    #[arg(long, global = true, env = "IAMLET_AUTO_DISCOVER_BASE_ARN", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub auto_discover_base_arn: bool,

    /// Use the node's own role as --default-role.
    #[arg(long, global = true, env = "IAMLET_AUTO_DISCOVER_DEFAULT_ROLE", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub auto_discover_default_role: bool,

    /// Pod annotation naming the role (name or full ARN).
    #[arg(
        long,
        global = true,
        env = "IAMLET_IAM_ROLE_KEY",
        default_value = "iam.amazonaws.com/role"
    )]
    pub iam_role_key: String,

    /// Pod annotation holding the ExternalId passed to AssumeRole.
    #[arg(
        long,
        global = true,
        env = "IAMLET_IAM_EXTERNAL_ID",
        default_value = "iam.amazonaws.com/external-id"
    )]
    pub iam_external_id: String,

    /// Enforce the namespaces' allowed-roles annotation.
    #[arg(long, global = true, env = "IAMLET_NAMESPACE_RESTRICTIONS", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub namespace_restrictions: bool,

    /// How allowed-roles entries are matched: glob or regexp (always fully anchored).
    #[arg(
        long,
        global = true,
        env = "IAMLET_NAMESPACE_RESTRICTION_FORMAT",
        default_value = "glob"
    )]
    pub namespace_restriction_format: String,

    /// Namespace annotation holding a JSON array of allowed roles.
    #[arg(
        long,
        global = true,
        env = "IAMLET_NAMESPACE_KEY",
        default_value = "iam.amazonaws.com/allowed-roles"
    )]
    pub namespace_key: String,
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// Session duration requested from STS (kube2iam doubled this; iamlet does not).
    #[arg(long, global = true, env = "IAMLET_IAM_ROLE_SESSION_TTL", default_value = "1h", value_parser = parse_go_duration)]
    pub iam_role_session_ttl: Duration,

    /// How long an AssumeRole error is remembered before STS is asked again.
    #[arg(long, global = true, env = "IAMLET_IAM_ROLE_ERROR_TTL", default_value = "0", value_parser = parse_go_duration)]
    pub iam_role_error_ttl: Duration,

    /// Refresh cached credentials in the background when less than this is left
    /// [default: 30m, or half the session TTL when that is shorter].
    #[arg(long, global = true, env = "IAMLET_CREDENTIAL_REFRESH_BEFORE", value_parser = parse_go_duration)]
    pub credential_refresh_before: Option<Duration>,

    /// Never serve credentials with less than this left
    /// [default: 15m, or a quarter of the session TTL when that is shorter].
    #[arg(long, global = true, env = "IAMLET_CREDENTIAL_MIN_REMAINING", value_parser = parse_go_duration)]
    pub credential_min_remaining: Option<Duration>,

    /// Use the regional STS endpoint (accepted for kube2iam compatibility; always regional).
    #[arg(long, global = true, env = "IAMLET_USE_REGIONAL_STS_ENDPOINT", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub use_regional_sts_endpoint: bool,

    /// AssumeRole calls this node may have in flight at once (0: no limit). A pod's own
    /// request goes ahead of prefetch and refresh work.
    #[arg(
        long,
        global = true,
        env = "IAMLET_STS_MAX_IN_FLIGHT",
        default_value = "4"
    )]
    pub sts_max_in_flight: usize,

    /// AssumeRole calls this node may start per second (0: no limit): STS rate-limits per
    /// account, and every node of the fleet shares it.
    #[arg(
        long,
        global = true,
        env = "IAMLET_STS_CALLS_PER_SECOND",
        default_value = "10"
    )]
    pub sts_calls_per_second: u32,

    /// Testing only: allow session and refresh durations below STS's 15-minute minimum
    /// (moto accepts them; real STS does not).
    #[arg(long, global = true, env = "IAMLET_ALLOW_SHORT_SESSIONS", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new(), hide = true)]
    pub allow_short_sessions: bool,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The taint (KEY[=VALUE]:EFFECT) nodes are registered with until iamlet can answer: removed
    /// from this node once the rules are in, connections that bypassed them are cut, the pod list
    /// is applied and the node's credentials work. Empty: no taint is removed.
    #[arg(
        long,
        global = true,
        env = "IAMLET_STARTUP_TAINT",
        default_value = "iamlet.io/agent-not-ready:NoSchedule"
    )]
    pub startup_taint: String,

    /// Install the DNAT rule that sends pods' metadata traffic to the agent (needs --host-ip).
    #[arg(long, global = true, env = "IAMLET_IPTABLES", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub iptables: bool,

    /// Remove the DNAT rules when the agent exits. By default they stay, so pods
    /// get "connection refused" (never the node's credentials) until the next agent.
    #[arg(long, global = true, env = "IAMLET_REMOVE_RULES_ON_EXIT", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub remove_rules_on_exit: bool,

    /// Pod-side interfaces: a name, a `+` wildcard (cali+), `!` negation, or a comma-separated list.
    #[arg(
        long,
        global = true,
        env = "IAMLET_HOST_INTERFACE",
        default_value = "docker0"
    )]
    pub host_interface: String,

    /// The host's cgroup v2 hierarchy (the kubelet's `kubepods` tree in it).
    /// Where usable, hostNetwork pods are told apart by the cgroup of their
    /// socket, and a pod's address is answered only while the pod has its
    /// cgroup on this node; elsewhere the agent works from addresses alone.
    #[arg(
        long,
        global = true,
        env = "IAMLET_CGROUP_ROOT",
        default_value = "/sys/fs/cgroup"
    )]
    pub cgroup_root: String,

    /// The host's cgroup namespace, for an agent that runs in one of its own (a container on
    /// cgroup v2): the hostNetwork pods' rules are loaded from it, because the kernel counts
    /// their cgroup levels from the loader's namespace. Reachable with hostPID and
    /// CAP_SYS_ADMIN (manifests/components/host-network-pods).
    #[arg(
        long,
        global = true,
        env = "IAMLET_HOST_CGROUP_NAMESPACE",
        default_value = "/proc/1/ns/cgroup"
    )]
    pub host_cgroup_namespace: String,
}

/// The token-based endpoint (EKS Pod Identity's contract), ServiceAccount
/// roles and session tags.
#[derive(Debug, Args)]
pub struct PodIdentityArgs {
    /// Serve container credentials (EKS Pod Identity's endpoint, GET /v1/credentials) to pods
    /// that send a projected ServiceAccount token. With --iptables the agent puts the endpoint's
    /// addresses on a link of its own.
    #[arg(long, global = true, env = "IAMLET_CONTAINER_CREDENTIALS", default_value = "true", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub container_credentials: bool,

    /// Where the container credentials endpoint listens: comma-separated IP:PORT.
    #[arg(
        long,
        global = true,
        env = "IAMLET_CONTAINER_CREDENTIALS_LISTEN",
        default_value = "169.254.170.23:80,[fd00:ec2::23]:80"
    )]
    pub container_credentials_listen: String,

    /// The audience a pod's token must carry (its projected token volume's `audience`).
    #[arg(
        long,
        global = true,
        env = "IAMLET_CONTAINER_CREDENTIALS_AUDIENCE",
        default_value = "pods.eks.amazonaws.com"
    )]
    pub container_credentials_audience: String,

    /// A pod without a role annotation gets the role its ServiceAccount's annotation names
    /// (before --default-role).
    #[arg(long, global = true, env = "IAMLET_SERVICE_ACCOUNT_ROLES", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub service_account_roles: bool,

    /// ServiceAccount annotation naming the role (name or full ARN).
    #[arg(
        long,
        global = true,
        env = "IAMLET_SERVICE_ACCOUNT_ROLE_KEY",
        default_value = "eks.amazonaws.com/role-arn"
    )]
    pub service_account_role_key: String,

    /// Tag every role session as EKS Pod Identity does (cluster, namespace, service account,
    /// pod name and UID; all transitive). The roles' trust policies must allow sts:TagSession.
    #[arg(long, global = true, env = "IAMLET_SESSION_TAGS", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub session_tags: bool,

    /// With --session-tags: the value of the `eks-cluster-name` tag (omitted when empty).
    #[arg(long, global = true, env = "IAMLET_CLUSTER_NAME", default_value = "")]
    pub cluster_name: String,

    /// With --session-tags: the value of the `eks-cluster-arn` tag (omitted when empty).
    #[arg(long, global = true, env = "IAMLET_CLUSTER_ARN", default_value = "")]
    pub cluster_arn: String,

    /// Record a Warning Event on a pod refused credentials it could act on (no role, a role its
    /// namespace does not allow, STS refusing the role, ...), for `kubectl describe pod`.
    #[arg(long, global = true, env = "IAMLET_POD_EVENTS", default_value = "true", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub pod_events: bool,

    /// At most one Event per pod and reason this often (repeats fold into the Event's series).
    #[arg(long, global = true, env = "IAMLET_POD_EVENT_INTERVAL", default_value = "1m", value_parser = parse_go_duration)]
    pub pod_event_interval: Duration,

    /// With --session-tags: also set SourceIdentity to `<namespace>.<serviceaccount>`
    /// (trust policies must allow sts:SetSourceIdentity).
    #[arg(long, global = true, env = "IAMLET_SESSION_SOURCE_IDENTITY", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub session_source_identity: bool,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format: text or json.
    #[arg(long, global = true, env = "IAMLET_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// Log level: trace, debug, info, warn(ing), error, fatal or panic.
    #[arg(long, global = true, env = "IAMLET_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Debug logging (same as --log-level=debug).
    #[arg(long, global = true, env = "IAMLET_VERBOSE", default_value = "false", num_args = 0..=1,
          require_equals = true, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub verbose: bool,
}

/// Flags kube2iam has that change nothing in iamlet, with the reason logged once at start.
pub const NO_EFFECT_FLAGS: &[(&str, &str)] = &[
    (
        "cache_resync_period",
        "watches are kept current by events and relisted on 410 Gone; no resync is needed",
    ),
    (
        "resolve_duplicate_cache_ips",
        "iamlet never guesses between pods claiming one IP: it waits for the watch, then refuses",
    ),
    (
        "backoff_max_interval",
        "waiting requests are woken by watch events instead of polling",
    ),
    (
        "use_regional_sts_endpoint",
        "the AWS SDK always uses the regional STS endpoint",
    ),
];

/// The configuration reference (docs/configuration.md), generated from the
/// flags themselves so that it cannot drift; a test keeps the file in sync.
pub fn reference_markdown() -> String {
    use clap::CommandFactory;
    let command = Cli::command();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `iamlet --help` by `tests/docs.rs` (run it with\n\
         `IAMLET_UPDATE_DOCS=1` after changing a flag). Every flag can also be set\n\
         from the environment variable shown. Boolean flags take `--flag`,\n\
         `--flag=true` or `--flag=false`; durations take Go's forms (`15m`, `1h30m`,\n\
         `500ms`, `0`). A flag given twice takes its last value.\n\n\
         | flag | environment | default | meaning |\n|---|---|---|---|\n",
    );
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if arg.is_hide_set() || matches!(long, "help" | "version") {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = match defaults.join(",") {
            empty if empty.is_empty() => "".to_string(),
            value => format!("`{value}`"),
        };
        let help = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
            .unwrap_or_default();
        out.push_str(&format!("| `--{long}` | {env} | {default} | {help} |\n"));
    }
    out.push_str("\n## Subcommands\n\n");
    for sub in command.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!("- `iamlet {}`: {about}\n", sub.get_name()));
    }
    out
}
