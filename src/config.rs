//! The validated configuration the rest of iamlet sees. Every check here
//! names the flag at fault, and the process exits before touching anything.

pub mod duration;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use thiserror::Error;

use crate::cli::{Cli, Command, NO_EFFECT_FLAGS};
use crate::credentials::{CacheSettings, SessionTagging, StsLimits, is_tag_char};
use crate::firewall::InterfaceMatch;
use crate::imds::ServiceSettings;
use crate::imds::routes::{DEFAULT_DENY, DenyList};
use crate::pods::AnnotationKeys;
use crate::roles::{BaseArn, PolicyFormat, RoleError, to_role_arn};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("invalid value for --{flag}: {message}")]
    Invalid { flag: &'static str, message: String },
    #[error("--{flag} cannot be combined with --{other}")]
    Conflict {
        flag: &'static str,
        other: &'static str,
    },
    /// A subcommand's arguments that are no flag's value.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl ConfigError {
    fn invalid(flag: &'static str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            flag,
            message: message.into(),
        }
    }
}

/// How to reach the Kubernetes API server.
#[derive(Clone, Debug)]
pub enum KubeAccess {
    /// `--api-server` (with `--api-token` when given).
    Explicit {
        server: String,
        token: Option<String>,
        insecure: bool,
    },
    Kubeconfig {
        path: PathBuf,
        insecure: bool,
    },
    /// In-cluster service account, or $KUBECONFIG / ~/.kube/config.
    Infer {
        insecure: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct RoleSettings {
    pub base_role_arn: Option<BaseArn>,
    pub default_role: Option<String>,
    pub auto_discover_base_arn: bool,
    pub auto_discover_default_role: bool,
    pub restrictions: Option<PolicyFormat>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub kube: KubeAccess,
    /// `None`: watch every pod in the cluster (kube2iam without --node).
    pub node: Option<String>,
    /// The first `--host-ip` address and `--app-port`.
    pub listen: SocketAddr,
    /// With a dual-stack `--host-ip`, the address of the other family: a
    /// second metadata listener, for that family's pods.
    pub listen_other_family: Option<SocketAddr>,
    /// `--max-index-staleness`; `None` when 0.
    pub max_index_staleness: Option<Duration>,
    pub metrics_port: Option<u16>,
    pub metadata_addr: String,
    pub annotations: AnnotationKeys,
    pub roles: RoleSettings,
    pub cache: CacheSettings,
    pub service: ServiceSettings,
    pub log_format: LogFormat,
    pub log_level: tracing::Level,
    pub iptables: bool,
    pub host_interface: InterfaceMatch,
    pub remove_rules_on_exit: bool,
    /// kube2iam flags set on the command line or environment that change nothing here, with why.
    pub no_effect: Vec<(String, &'static str)>,
    /// The host's cgroup v2 hierarchy, for identity beyond the address.
    pub cgroup_root: std::path::PathBuf,
    /// `--host-cgroup-namespace`.
    pub host_cgroup_namespace: std::path::PathBuf,
    /// Where the IMDSv2 token key is kept across restarts (none: per process).
    pub imds_token_key_file: Option<std::path::PathBuf>,
    /// Values kube2iam accepted that iamlet had to change, with what it did.
    pub adjusted: Vec<Adjustment>,
    /// The container credentials endpoint; `None` with
    /// `--container-credentials=false`.
    pub container: Option<ContainerSettings>,
    /// `--service-account-roles`.
    pub service_account_roles: bool,
    /// `--session-tags` and what goes with it.
    pub session_tags: Option<SessionTagging>,
    /// `--pod-events`: how often at most per pod and reason; `None`: off.
    pub pod_events: Option<Duration>,
    /// `--startup-taint`; `None` when empty.
    pub startup_taint: Option<crate::startup::StartupTaint>,
}

/// The container credentials endpoint (EKS Pod Identity's contract).
#[derive(Clone, Debug)]
pub struct ContainerSettings {
    pub listen: Vec<SocketAddr>,
    /// The audience pods' tokens must carry.
    pub audience: String,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Run(Box<Config>),
    /// `iamlet cleanup`: remove the rules and exit. Needs no API server,
    /// address or role settings.
    Cleanup {
        log_format: LogFormat,
        log_level: tracing::Level,
    },
    /// `iamlet explain`: ask the agent at `agent` about `query`.
    Explain {
        query: crate::explain::Query,
        agent: String,
        /// `agent` was given (`--agent`, or the address flags): no need to
        /// look for the running agent's own command line.
        agent_given: bool,
        json: bool,
    },
}

impl Invocation {
    /// Parses arguments (and `IAMLET_*` variables) into a validated config.
    /// `env` reads the variables iamlet falls back to (`NODE_NAME`,
    /// `HOST_IP`): the process environment in production, a map in tests.
    pub fn parse<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        match cli.command.take() {
            Some(Command::Cleanup) => {
                let (log_format, log_level) = log_settings(&cli)?;
                Ok(Invocation::Cleanup {
                    log_format,
                    log_level,
                })
            }
            Some(Command::Explain(args)) => {
                let given = ["host_ip", "app_port", "metrics_port"].iter().any(|id| {
                    matches!(
                        matches.value_source(id),
                        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                    )
                });
                explain_invocation(&cli, args, given, env)
            }
            Some(Command::Run) | None => Ok(Invocation::Run(Box::new(Config::from_cli(
                cli, &matches, env,
            )?))),
        }
    }
}

impl Config {
    /// [`Invocation::parse`] for callers that only run the agent.
    pub fn parse<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        match Invocation::parse(args, env)? {
            Invocation::Run(config) => Ok(*config),
            Invocation::Cleanup { .. } | Invocation::Explain { .. } => Err(ConfigError::invalid(
                "command",
                "expected the agent, not a subcommand",
            )),
        }
    }

    fn from_cli(
        cli: Cli,
        matches: &ArgMatches,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let kube = kube_access(&cli)?;
        let fallback = |value: String, var: &str| {
            Some(value)
                .filter(|v| !v.is_empty())
                .or_else(|| env(var).filter(|v| !v.is_empty()))
        };
        let node = fallback(cli.kube.node.clone(), "NODE_NAME");
        let host_ip = fallback(cli.server.host_ip.clone(), "HOST_IP").ok_or_else(|| {
            ConfigError::invalid(
                "host-ip",
                "required (or $HOST_IP): iamlet listens on the node's address only, never on every interface",
            )
        })?;
        let (host_ip, other_family) = parse_host_ips(&host_ip)?;
        if cli.server.metrics_port == 0 {
            return Err(ConfigError::invalid(
                "metrics-port",
                "must be a port from 1 to 65535",
            ));
        }
        if cli.server.app_port == 0 {
            return Err(ConfigError::invalid(
                "app-port",
                "must be a port from 1 to 65535",
            ));
        }
        if cli.server.metadata_addr.trim().is_empty() || cli.server.metadata_addr.contains('/') {
            return Err(ConfigError::invalid(
                "metadata-addr",
                "must be a host or host:port",
            ));
        }

        let roles = role_settings(&cli)?;
        let (cache, adjusted) = cache_settings(&cli)?;
        let (log_format, log_level) = log_settings(&cli)?;
        let host_interface = InterfaceMatch::parse(&cli.node.host_interface)
            .map_err(|why| ConfigError::invalid("host-interface", why))?;
        for key in [
            ("iam-role-key", &cli.roles.iam_role_key),
            ("iam-external-id", &cli.roles.iam_external_id),
            ("namespace-key", &cli.roles.namespace_key),
            (
                "service-account-role-key",
                &cli.pod_identity.service_account_role_key,
            ),
        ] {
            if key.1.trim().is_empty() {
                return Err(ConfigError::invalid(key.0, "must not be empty"));
            }
        }

        let container = container_settings(&cli)?;
        let session_tags = session_tagging(&cli)?;
        let startup_taint = match cli.node.startup_taint.trim() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|why| ConfigError::invalid("startup-taint", why))?,
            ),
        };

        let no_effect = NO_EFFECT_FLAGS
            .iter()
            .filter(|(id, _)| {
                matches!(
                    matches.value_source(id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .map(|(id, why)| (id.replace('_', "-"), *why))
            .collect();

        Ok(Config {
            kube,
            node,
            listen: SocketAddr::new(host_ip, cli.server.app_port),
            listen_other_family: other_family.map(|ip| SocketAddr::new(ip, cli.server.app_port)),
            max_index_staleness: Some(cli.kube.max_index_staleness).filter(|d| !d.is_zero()),
            metrics_port: Some(cli.server.metrics_port).filter(|p| *p != cli.server.app_port),
            metadata_addr: cli.server.metadata_addr.trim().to_string(),
            annotations: AnnotationKeys {
                role: cli.roles.iam_role_key,
                external_id: cli.roles.iam_external_id,
                namespace_policy: cli.roles.namespace_key,
                service_account_role: cli.pod_identity.service_account_role_key.trim().to_string(),
            },
            roles,
            cache,
            service: ServiceSettings {
                require_imdsv2: cli.server.require_imdsv2,
                lookup_wait: cli.kube.backoff_max_elapsed_time,
                debug: cli.server.debug,
                metrics_on_app_port: cli.server.metrics_port == cli.server.app_port,
                pod_request_rate: f64::from(cli.server.pod_request_rate),
                pod_proxy_rate: f64::from(cli.server.pod_proxy_rate),
                deny: deny_list(
                    &cli.server.metadata_deny,
                    cli.server.no_default_metadata_deny,
                ),
                max_connections_per_source: cli.server.max_connections_per_source,
                max_connections: cli.server.max_connections,
            },
            log_format,
            log_level,
            iptables: cli.node.iptables,
            host_interface,
            remove_rules_on_exit: cli.node.remove_rules_on_exit,
            no_effect,
            cgroup_root: std::path::PathBuf::from(cli.node.cgroup_root.trim()),
            host_cgroup_namespace: std::path::PathBuf::from(cli.node.host_cgroup_namespace.trim()),
            imds_token_key_file: Some(cli.server.imds_token_key_file.trim())
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            adjusted,
            container,
            service_account_roles: cli.pod_identity.service_account_roles,
            session_tags,
            pod_events: cli
                .pod_identity
                .pod_events
                .then_some(cli.pod_identity.pod_event_interval),
            startup_taint,
        })
    }
}

/// `iamlet explain`: what to ask, and where the agent listens.
fn explain_invocation(
    cli: &Cli,
    args: crate::cli::ExplainArgs,
    address_flags_given: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    use crate::explain::Query;
    let query = match (&args.target, args.role, args.namespace) {
        (Some(target), None, None) => {
            Query::target(target).map_err(|why| ConfigError::Usage(format!("explain: {why}")))?
        }
        (None, Some(role), Some(namespace)) => {
            let query = Query::Policy {
                role: role.trim().to_string(),
                namespace: namespace.trim().to_string(),
            };
            // The agent's own check, here, so a typo gets its answer at once.
            Query::from_query_string(&query.to_query_string())
                .map_err(|why| ConfigError::invalid("namespace", why))?
        }
        _ => {
            return Err(ConfigError::Usage(
                "explain: give a pod (NAMESPACE/NAME or an IP address), or --role and --namespace"
                    .to_string(),
            ));
        }
    };
    let agent_given = args.agent.is_some() || address_flags_given;
    let agent = match args.agent {
        Some(agent) => agent,
        None => {
            let host = Some(cli.server.host_ip.clone())
                .filter(|v| !v.trim().is_empty())
                .or_else(|| env("HOST_IP").filter(|v| !v.trim().is_empty()))
                .unwrap_or_else(|| "127.0.0.1".to_string());
            let first = host.split(',').next().unwrap_or("127.0.0.1").trim();
            let ip: IpAddr = first.parse().map_err(|_| {
                ConfigError::invalid("host-ip", format!("{first:?} is not an IP address"))
            })?;
            format!("http://{}", SocketAddr::new(ip, cli.server.metrics_port))
        }
    };
    Ok(Invocation::Explain {
        query,
        agent,
        agent_given,
        json: args.json,
    })
}

/// `--container-credentials-*`.
fn container_settings(cli: &Cli) -> Result<Option<ContainerSettings>, ConfigError> {
    let args = &cli.pod_identity;
    if !args.container_credentials {
        return Ok(None);
    }
    let audience = args.container_credentials_audience.trim();
    if audience.is_empty() {
        return Err(ConfigError::invalid(
            "container-credentials-audience",
            "must not be empty",
        ));
    }
    let mut listen = Vec::new();
    for part in args
        .container_credentials_listen
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let addr: SocketAddr = part.parse().map_err(|_| {
            ConfigError::invalid(
                "container-credentials-listen",
                format!("{part:?} is not IP:PORT (IPv6 as [ADDRESS]:PORT)"),
            )
        })?;
        if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(ConfigError::invalid(
                "container-credentials-listen",
                format!("{addr} is not an address and port to listen on"),
            ));
        }
        if !listen.contains(&addr) {
            listen.push(addr);
        }
    }
    if listen.is_empty() {
        return Err(ConfigError::invalid(
            "container-credentials-listen",
            "give at least one IP:PORT, or --container-credentials=false",
        ));
    }
    Ok(Some(ContainerSettings {
        listen,
        audience: audience.to_string(),
    }))
}

/// `--session-tags` with its cluster values, which STS must accept as tag
/// values (checked here, so that no AssumeRole fails on them later).
fn session_tagging(cli: &Cli) -> Result<Option<SessionTagging>, ConfigError> {
    let args = &cli.pod_identity;
    let value = |flag: &'static str, text: &str| -> Result<Option<String>, ConfigError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.chars().count() > 256 {
            return Err(ConfigError::invalid(
                flag,
                "longer than STS's 256 characters for a tag value",
            ));
        }
        if let Some(c) = text.chars().find(|c| !is_tag_char(*c)) {
            return Err(ConfigError::invalid(
                flag,
                format!("character {c:?} is not allowed in a session tag value"),
            ));
        }
        Ok(Some(text.to_string()))
    };
    let cluster_name = value("cluster-name", &args.cluster_name)?;
    let cluster_arn = value("cluster-arn", &args.cluster_arn)?;
    if !args.session_tags {
        return Ok(None);
    }
    Ok(Some(SessionTagging {
        cluster_name,
        cluster_arn,
        source_identity: args.session_source_identity,
    }))
}

/// `--host-ip`: one address, or two of different families (the downward
/// API's `status.hostIPs` form).
fn parse_host_ips(text: &str) -> Result<(IpAddr, Option<IpAddr>), ConfigError> {
    let mut ips = Vec::new();
    for part in text.split(',').map(str::trim) {
        let ip: IpAddr = part.parse().map_err(|_| {
            ConfigError::invalid("host-ip", format!("{part:?} is not an IP address"))
        })?;
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ConfigError::invalid(
                "host-ip",
                format!("{ip} is not an address of this node"),
            ));
        }
        ips.push(ip);
    }
    match ips.as_slice() {
        [one] => Ok((*one, None)),
        [first, second] if first.is_ipv4() != second.is_ipv4() => Ok((*first, Some(*second))),
        _ => Err(ConfigError::invalid(
            "host-ip",
            "give one address, or two of different families (IPv4,IPv6)",
        )),
    }
}

/// The defaults plus `--metadata-deny`, or only the latter with
/// `--no-default-metadata-deny`.
fn deny_list(extra: &[String], no_defaults: bool) -> DenyList {
    let defaults: &[&str] = if no_defaults { &[] } else { DEFAULT_DENY };
    DenyList::new(
        defaults
            .iter()
            .copied()
            .chain(extra.iter().map(|p| p.trim())),
    )
}

fn kube_access(cli: &Cli) -> Result<KubeAccess, ConfigError> {
    let args = &cli.kube;
    let insecure = args.insecure;
    if !args.api_token.is_empty() && args.api_server.is_empty() {
        return Err(ConfigError::invalid("api-token", "needs --api-server"));
    }
    if !args.api_server.is_empty() {
        if !args.kubeconfig.is_empty() {
            return Err(ConfigError::Conflict {
                flag: "api-server",
                other: "kubeconfig",
            });
        }
        let valid =
            args.api_server.starts_with("https://") || args.api_server.starts_with("http://");
        if !valid || args.api_server.parse::<http::Uri>().is_err() {
            return Err(ConfigError::invalid(
                "api-server",
                "must be an http:// or https:// URL",
            ));
        }
        return Ok(KubeAccess::Explicit {
            server: args.api_server.clone(),
            token: Some(args.api_token.clone()).filter(|t| !t.is_empty()),
            insecure,
        });
    }
    if !args.kubeconfig.is_empty() {
        return Ok(KubeAccess::Kubeconfig {
            path: PathBuf::from(&args.kubeconfig),
            insecure,
        });
    }
    Ok(KubeAccess::Infer { insecure })
}

fn role_settings(cli: &Cli) -> Result<RoleSettings, ConfigError> {
    let args = &cli.roles;
    let base_role_arn = Some(args.base_role_arn.trim())
        .filter(|s| !s.is_empty())
        .map(BaseArn::parse)
        .transpose()
        .map_err(|why| ConfigError::invalid("base-role-arn", why))?;
    if args.auto_discover_base_arn && base_role_arn.is_some() {
        return Err(ConfigError::Conflict {
            flag: "auto-discover-base-arn",
            other: "base-role-arn",
        });
    }
    let default_role = Some(args.default_role.trim().to_string()).filter(|s| !s.is_empty());
    if args.auto_discover_default_role && default_role.is_some() {
        return Err(ConfigError::Conflict {
            flag: "auto-discover-default-role",
            other: "default-role",
        });
    }
    if let Some(role) = &default_role {
        // A name can only be checked once the base ARN is known.
        let checked = match (&base_role_arn, args.auto_discover_base_arn) {
            (None, true) if !role.starts_with("arn:") => Ok(()),
            (base, _) => to_role_arn(role, base.as_ref()).map(drop),
        };
        checked
            .map_err(|error: RoleError| ConfigError::invalid("default-role", error.to_string()))?;
    }
    let restrictions = match args.namespace_restriction_format.as_str() {
        "glob" => PolicyFormat::Glob,
        "regexp" => PolicyFormat::Regexp,
        other => {
            return Err(ConfigError::invalid(
                "namespace-restriction-format",
                format!("{other:?} is not glob or regexp"),
            ));
        }
    };
    Ok(RoleSettings {
        base_role_arn,
        default_role,
        auto_discover_base_arn: args.auto_discover_base_arn,
        auto_discover_default_role: args.auto_discover_default_role,
        restrictions: args.namespace_restrictions.then_some(restrictions),
    })
}

/// STS accepts 900 s to 12 h; assuming a role with another role's session
/// (the node's instance profile) is capped at 1 h by AWS.
const STS_MIN_DURATION: Duration = Duration::from_secs(900);
const STS_MAX_DURATION: Duration = Duration::from_secs(43_200);
/// botocore treats credentials with under ~15 minutes left as expiring and
/// refreshes from 15 minutes out: never serve less, refresh well before.
const DEFAULT_MIN_REMAINING: Duration = Duration::from_secs(15 * 60);
const DEFAULT_REFRESH_BEFORE: Duration = Duration::from_secs(30 * 60);

/// A flag's name and what iamlet did with a value kube2iam accepted.
pub type Adjustment = (&'static str, String);

fn cache_settings(cli: &Cli) -> Result<(CacheSettings, Vec<Adjustment>), ConfigError> {
    let args = &cli.credentials;
    let mut duration = args.iam_role_session_ttl;
    let mut adjusted = Vec::new();
    let min_duration = if args.allow_short_sessions {
        Duration::from_secs(1)
    } else {
        STS_MIN_DURATION
    };
    // kube2iam asked STS for twice this value, so a kube2iam `10m` meant
    // 20-minute sessions. iamlet asks for what is written; a value under
    // STS's minimum is raised to it so a kube2iam DaemonSet still starts.
    if !duration.is_zero() && duration < min_duration {
        adjusted.push((
            "iam-role-session-ttl",
            format!(
                "{duration:?} is under STS's 15-minute minimum (kube2iam asked STS for twice its value); sessions of 15m are requested instead"
            ),
        ));
        duration = STS_MIN_DURATION;
    }
    if duration < min_duration || duration > STS_MAX_DURATION {
        return Err(ConfigError::invalid(
            "iam-role-session-ttl",
            format!("{duration:?} is outside STS's range of 15m to 12h"),
        ));
    }
    if duration.subsec_nanos() != 0 {
        return Err(ConfigError::invalid(
            "iam-role-session-ttl",
            "must be whole seconds",
        ));
    }
    // Short sessions (kube2iam's common `--iam-role-session-ttl=15m`) cannot
    // keep the 15-minute floor; the windows shrink with the session instead.
    let min_remaining = args
        .credential_min_remaining
        .unwrap_or_else(|| DEFAULT_MIN_REMAINING.min(duration / 4));
    let refresh_before = args
        .credential_refresh_before
        .unwrap_or_else(|| DEFAULT_REFRESH_BEFORE.min(duration / 2));
    if min_remaining.is_zero() {
        return Err(ConfigError::invalid(
            "credential-min-remaining",
            "must be above zero",
        ));
    }
    if refresh_before <= min_remaining {
        return Err(ConfigError::invalid(
            "credential-refresh-before",
            "must be longer than --credential-min-remaining, or credentials would stop being served before they are refreshed",
        ));
    }
    if refresh_before >= duration {
        return Err(ConfigError::invalid(
            "credential-refresh-before",
            format!(
                "must be shorter than the session TTL ({duration:?}), or every credential would be refreshed at once"
            ),
        ));
    }
    Ok((
        CacheSettings {
            session_duration: duration,
            refresh_before,
            min_remaining,
            error_ttl: args.iam_role_error_ttl,
            sts_limits: StsLimits {
                max_in_flight: args.sts_max_in_flight,
                per_second: f64::from(args.sts_calls_per_second),
            },
        },
        adjusted,
    ))
}

fn log_settings(cli: &Cli) -> Result<(LogFormat, tracing::Level), ConfigError> {
    // kube2iam compared the lower-cased value: `JSON` and `Text` work too.
    let format = match cli.logging.log_format.to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::invalid(
                "log-format",
                format!("{other:?} is not text or json"),
            ));
        }
    };
    let level = if cli.logging.verbose {
        tracing::Level::DEBUG
    } else {
        parse_level(&cli.logging.log_level)?
    };
    Ok((format, level))
}

fn parse_level(text: &str) -> Result<tracing::Level, ConfigError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warn" | "warning" => tracing::Level::WARN,
        "error" | "fatal" | "panic" => tracing::Level::ERROR,
        other => {
            return Err(ConfigError::invalid(
                "log-level",
                format!("{other:?} is not one of trace, debug, info, warn, error, fatal, panic"),
            ));
        }
    })
}

#[cfg(test)]
mod tests;
