//! Wiring: builds every part from the [`Config`], runs the tasks, and shuts
//! down in order on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{Config, KubeAccess};
use crate::credentials::{AwsSts, CredentialCache, spawn_warmer};
use crate::entitlement::Entitlements;
use crate::firewall::{self, FirewallError, Guarded, Installed, Targets};
use crate::identity::{CgroupIdentity, PodTreeMatch};
use crate::imds::{
    ConnectionLimits, ContainerEndpoint, DecisionLog, Listener, MetadataService, RateLimiter,
    Upstream, serve,
};
use crate::pods::{PodStore, spawn_watchers};
use crate::roles::{BaseArn, Resolver};
use crate::telemetry::Metrics;
use crate::token_review::{KubeTokenReviewer, TokenReviews};

/// How long the agent waits on the real metadata service before giving up
/// on a proxied request.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum AppError {
    #[error("cannot set up the Kubernetes client: {0}")]
    Kube(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("auto-discovery from the node's metadata service failed: {0}")]
    Discovery(String),
    #[error("invalid role settings: {0}")]
    Roles(#[from] crate::roles::RoleError),
    #[error("cannot install the DNAT rules: {0}")]
    Firewall(#[from] FirewallError),
    #[error(
        "invalid value for --host-interface: no interface named {name:?} on this node (present: {present}); a rule for it would intercept nothing and pods would reach the real metadata service"
    )]
    NoSuchInterface { name: String, present: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("a blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl AppError {
    /// Process exit code: 3 for the node's environment (API server, port,
    /// metadata service), 2 is left to flag errors.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::NoSuchInterface { .. } => 2,
            _ => 3,
        }
    }
}

pub async fn run(config: Config) -> Result<(), AppError> {
    let shutdown = shutdown_signal();
    for (flag, why) in &config.no_effect {
        info!(flag = %flag, why, "flag accepted for kube2iam compatibility; it has no effect in iamlet");
    }
    for (flag, what) in &config.adjusted {
        warn!(flag = %flag, "{what}");
    }
    if config.cache.min_remaining < Duration::from_secs(15 * 60) {
        warn!(
            session_ttl_s = config.cache.session_duration.as_secs(),
            min_remaining_s = config.cache.min_remaining.as_secs(),
            "credentials may be served with under 15 minutes left; botocore's static stability then stretches them past expiry"
        );
    }
    let file_limit = raise_file_limit();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let upstream = Arc::new(Upstream::new(&config.metadata_addr, UPSTREAM_TIMEOUT));
    let resolver = Arc::new(
        build_resolver(&config, &upstream)
            .await?
            .with_service_account_roles(config.service_account_roles),
    );
    let kube_config = kube_config(&config.kube).await?;
    let client =
        kube::Client::try_from(kube_config.clone()).map_err(|e| AppError::Kube(e.to_string()))?;
    // Token reviews are answered within a pod's request: no retries of
    // the client's own (see KubeTokenReviewer::new).
    let mut review_config = kube_config;
    review_config.default_retry = false;
    let review_client =
        kube::Client::try_from(review_config).map_err(|e| AppError::Kube(e.to_string()))?;
    let store = Arc::new(
        PodStore::new(config.annotations.clone(), resolver.restrictions())
            .with_service_accounts(config.service_account_roles)
            .with_max_staleness(config.max_index_staleness),
    );
    let cgroups = probe_cgroups(&config);
    let entitlements = Arc::new(
        Entitlements::new(store.clone(), resolver)
            .with_host_network_pods(cgroups.is_some())
            .with_session_tags(config.session_tags.clone()),
    );
    let (events, events_task) = match config.pod_events {
        Some(interval) => {
            let (events, task) = crate::events::spawn_events(
                client.clone(),
                store.clone(),
                config.node.clone(),
                interval,
            );
            (Some(events), Some(task))
        }
        None => (None, None),
    };
    let container = config.container.as_ref().map(|settings| {
        let reviewer = Arc::new(KubeTokenReviewer::new(review_client.clone()));
        let reviews = Arc::new(TokenReviews::new(reviewer, settings.audience.clone()));
        ContainerEndpoint::new(&settings.listen, reviews, config.node.clone())
    });
    let sts = AwsSts::from_environment(upstream.base_url()).await;
    let node_sts = sts.clone();
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        env!("IAMLET_GIT_COMMIT"),
    ));
    let cache = Arc::new(CredentialCache::new(
        Arc::new(sts),
        config.cache,
        clock.clone(),
        metrics.clone(),
    ));

    let mut metadata_listeners = vec![bind(config.listen).await?];
    if let Some(other) = config.listen_other_family {
        metadata_listeners.push(bind(other).await?);
    }
    let metrics_listener = match config.metrics_port {
        Some(port) => Some(bind(SocketAddr::new(config.listen.ip(), port)).await?),
        None => None,
    };
    // Rules go in after the listeners are bound (DNATed connections wait in
    // their backlog instead of being refused) and before anything is answered.
    metrics.cgroup_identity.set(i64::from(cgroups.is_some()));
    // Without --iptables the connections are not the agent's to cut.
    let mut connections_cut = true;
    let guard = if config.iptables {
        let host_pods = cgroups.as_ref().and_then(|c| c.pod_tree_match().cloned());
        let guarded = install_rules(&config, host_pods, pods_connections(cgroups.clone())).await?;
        connections_cut = cut_bypassing_connections(guarded.targets, guarded.cut.clone()).await;
        metrics.rules_installed.set(1);
        metrics.rules_managed.set(1);
        Some(firewall::spawn_guard(guarded, metrics.clone()))
    } else {
        None
    };
    if config.node.is_none() {
        warn!("no --node and no $NODE_NAME: watching every pod in the cluster");
    }
    let client_for_startup = client.clone();
    let watchers = spawn_watchers(
        client,
        config.node.as_deref(),
        store.clone(),
        metrics.clone(),
    );
    let (startup, startup_phase) = match (&config.startup_taint, &config.node) {
        (Some(taint), Some(node)) => {
            let (task, phase) = crate::startup::spawn(crate::startup::Startup {
                client: client_for_startup,
                node: node.clone(),
                taint: taint.clone(),
                store: store.clone(),
                sts: node_sts,
                connections_cut,
            });
            (Some(task), Some(phase))
        }
        _ => (None, None),
    };
    let warmer = spawn_warmer(entitlements.clone(), cache.clone());
    info!(listen = %config.listen, listen_other_family = ?config.listen_other_family,
        node = config.node.as_deref().unwrap_or("*"), version = crate::cli::LONG_VERSION, "iamlet serving");

    let settings = config.service.clone();
    let service = Arc::new(MetadataService {
        entitlements,
        cache,
        upstream,
        tokens: token_issuer(config.imds_token_key_file.as_deref()),
        clock,
        metrics,
        request_limit: RateLimiter::new(settings.pod_request_rate, 2.0 * settings.pod_request_rate),
        proxy_limit: RateLimiter::new(settings.pod_proxy_rate, 2.0 * settings.pod_proxy_rate),
        decisions: DecisionLog::default(),
        cgroups,
        connections: ConnectionLimits::new(
            settings.max_connections_per_source,
            connection_cap(settings.max_connections, file_limit),
        ),
        container,
        events,
        startup: startup_phase,
        settings,
    });
    let flusher = {
        let service = service.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::imds::SAMPLE_WINDOW);
            loop {
                every.tick().await;
                service.decisions.flush_suppressed();
            }
        })
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut servers = tokio::task::JoinSet::new();
    for listener in metadata_listeners {
        servers.spawn(serve(
            listener,
            Listener::Metadata,
            service.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(listener) = metrics_listener {
        servers.spawn(serve(
            listener,
            Listener::Metrics,
            service.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    if let Some(settings) = &config.container {
        if config.iptables {
            put_container_addresses(&settings.listen).await;
        }
        for addr in settings.listen.clone() {
            servers.spawn(serve_container(
                addr,
                service.clone(),
                stopped(stop_rx.clone()),
            ));
        }
    }
    tokio::select! {
        () = shutdown => {}
        _ = servers.join_next() => warn!("a listener stopped; shutting down"),
    }
    let _ = stop_tx.send(true);
    while servers.join_next().await.is_some() {}
    warmer.abort();
    flusher.abort();
    if let Some(startup) = startup {
        startup.abort();
    }
    if let Some(task) = events_task {
        task.abort();
    }
    for watcher in watchers {
        watcher.abort();
    }
    if let Some(guard) = guard {
        guard.stop().await;
        leave_rules(&config).await?;
    }
    if let Some(container) = config
        .container
        .as_ref()
        .filter(|_| config.iptables && config.remove_rules_on_exit)
    {
        let addresses: Vec<std::net::IpAddr> =
            container.listen.iter().map(SocketAddr::ip).collect();
        match firewall::link::remove(&addresses).await {
            Ok(removed) => info!(
                link = firewall::link::LINK,
                removed, "container credentials addresses removed (--remove-rules-on-exit)"
            ),
            Err(error) => warn!(%error, "cannot remove the container credentials link"),
        }
    }
    info!("iamlet stopped");
    Ok(())
}

/// With `--iptables` the agent owns the node's plumbing for pods: the
/// endpoint's addresses go on a link of its own (loopback ones need none).
/// A failure costs the endpoint, not the metadata service: warned, and the
/// listener keeps trying to bind.
async fn put_container_addresses(listen: &[SocketAddr]) {
    let addresses: Vec<std::net::IpAddr> = listen
        .iter()
        .map(SocketAddr::ip)
        .filter(|ip| !ip.is_loopback())
        .collect();
    if addresses.is_empty() {
        return;
    }
    match firewall::link::ensure(&addresses).await {
        Ok(placement) => info!(
            link = firewall::link::LINK,
            ?placement,
            ?addresses,
            "container credentials addresses in place"
        ),
        Err(error) => warn!(link = firewall::link::LINK, %error,
            "cannot put the container credentials addresses on their link; the endpoint is not served until they exist"),
    }
}

/// Serves the container credentials endpoint on `addr` once it can be
/// bound: an address not (yet) on the node, or taken by another agent
/// (the EKS Pod Identity agent binds the same ones), is retried every few
/// seconds, said once, and visible in `iamlet_container_credentials_listening`.
async fn serve_container(
    addr: SocketAddr,
    service: Arc<MetadataService>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    const RETRY: Duration = Duration::from_secs(5);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut said: Option<std::io::ErrorKind> = None;
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => break listener,
            Err(error) => {
                if said != Some(error.kind()) {
                    warn!(%addr, %error, retry_s = RETRY.as_secs(),
                        "cannot listen for container credentials yet (with --iptables iamlet adds the address itself; is another agent bound to it?)");
                    said = Some(error.kind());
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = &mut shutdown => return,
        }
    };
    info!(%addr, path = crate::imds::CREDENTIALS_PATH, "serving container credentials");
    service.metrics.container_listening.inc();
    serve(
        listener,
        Listener::ContainerCredentials,
        service.clone(),
        shutdown,
    )
    .await;
    service.metrics.container_listening.dec();
}

/// The IMDSv2 token issuer: with a key file, tokens issued by an earlier
/// agent on this node stay valid. A key file that cannot be used costs
/// only that, so the agent warns and goes on with a key of its own.
fn token_issuer(key_file: Option<&std::path::Path>) -> crate::imds::TokenIssuer {
    let Some(path) = key_file else {
        return crate::imds::TokenIssuer::new();
    };
    match crate::imds::TokenIssuer::from_key_file(path) {
        Ok((issuer, origin)) => {
            info!(path = %path.display(), ?origin, "IMDSv2 token key");
            issuer
        }
        Err(error) => {
            warn!(path = %path.display(), %error,
                "cannot use the IMDSv2 token key file; pods' tokens will not survive a restart");
            crate::imds::TokenIssuer::new()
        }
    }
}

/// Raises the soft limit on open files to the hard limit (as Go programs
/// do at start), so the connection caps, not the default 1,024, bound the
/// agent. Returns the limit in force.
fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(error) => {
                warn!(%error, soft, hard, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// The total connection cap, kept under the open-file limit with room for
/// the agent's own sockets (API server, STS, metadata service, nft).
fn connection_cap(wanted: usize, file_limit: u64) -> usize {
    const HEADROOM: u64 = 128;
    let room = usize::try_from(file_limit.saturating_sub(HEADROOM)).unwrap_or(usize::MAX);
    let capped = if wanted == 0 { room } else { wanted.min(room) };
    if capped < wanted {
        warn!(
            wanted,
            capped, file_limit, "--max-connections lowered to fit the open-file limit"
        );
    }
    capped.max(1)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Whether the host's cgroups can name pods: said once at start, and in
/// `iamlet_cgroup_identity`.
fn probe_cgroups(config: &Config) -> Option<Arc<CgroupIdentity>> {
    match CgroupIdentity::probe(&config.cgroup_root) {
        Ok(mut identity) => {
            if let Some(agent) = identity.find_agent_pod() {
                if identity.exempt_agent_pod(agent.clone()) {
                    info!(pod_uid = %agent, "the agent's own pod is left out of the hostNetwork rules: its calls to the metadata service reach it");
                } else if identity.pod_tree_match().is_some() {
                    warn!(pod_uid = %agent,
                        "the agent runs in a pod whose cgroup is not in the pod tree; if its own calls to the metadata service are caught by the hostNetwork rule, run it outside the tree or fix --cgroup-root");
                }
            }
            let tree_matchable = identity.pod_tree_match().is_some();
            if tree_matchable {
                use crate::identity::CgroupNamespace;
                let mount = crate::identity::cgroups::cgroup2_mount()
                    .unwrap_or_else(|| config.cgroup_root.clone());
                match crate::identity::cgroup_namespace(&mount, &config.host_cgroup_namespace) {
                    CgroupNamespace::Host => {}
                    CgroupNamespace::OwnWithHost(host) => {
                        info!(host_namespace = %host.display(),
                            "the agent runs in a cgroup namespace of its own; the hostNetwork pods' rules are loaded from the host's");
                        identity.load_rules_from(host);
                    }
                    CgroupNamespace::Own => {
                        error!(
                            "the agent runs in a cgroup namespace of its own and cannot reach the host's: rules loaded from here cannot match the pod tree, so hostNetwork pods are NOT intercepted and reach the real metadata service; run the agent with hostPID and CAP_SYS_ADMIN (manifests/components/host-network-pods, docs/installation.md)"
                        );
                        identity.without_pod_tree_rules();
                    }
                }
            }
            let host_pods = identity.pod_tree_match().cloned();
            info!(cgroup_root = %config.cgroup_root.display(), host_network_pods = host_pods.is_some(),
                pod_tree = ?host_pods, "pods are identified by their cgroups as well as their addresses");
            if !tree_matchable {
                warn!(cgroup_root = %config.cgroup_root.display(),
                    "the cgroup root is not under /sys/fs/cgroup, where nft resolves cgroups: hostNetwork pods are not intercepted");
            }
            Some(Arc::new(identity))
        }
        Err(why) => {
            warn!(%why, "pods are identified by their addresses alone: hostNetwork pods are refused, and a pod's address is not checked against the node's cgroups");
            None
        }
    }
}

/// Which connections to the metadata service the cut may end: a pod's
/// with a network of its own (its source is no address of the node), or,
/// where cgroups tell, a hostNetwork pod's other than the agent's own.
/// The node's own processes are never caught by the rules, so their
/// connections are left alone.
fn pods_connections(cgroups: Option<Arc<CgroupIdentity>>) -> firewall::conntrack::CutFilter {
    Arc::new(move |source, destination| {
        if !crate::identity::node_addresses().contains(&source.ip()) {
            return true;
        }
        cgroups.as_ref().is_some_and(|cgroups| {
            cgroups
                .pod_of_socket_fresh(source, destination)
                .is_ok_and(|pod| cgroups.agent_pod() != Some(&pod))
        })
    })
}

async fn install_rules(
    config: &Config,
    host_pods: Option<PodTreeMatch>,
    cut: firewall::conntrack::CutFilter,
) -> Result<Guarded, AppError> {
    check_interfaces(&config.host_interface)?;
    let targets = Targets::new(
        [Some(config.listen), config.listen_other_family]
            .into_iter()
            .flatten(),
    );
    let interfaces = config.host_interface.clone();
    let tree = host_pods.clone();
    let (outcome, expected) = tokio::task::spawn_blocking(move || {
        firewall::write_until_stable(&targets, &interfaces, tree.as_ref(), None)
    })
    .await?
    .map_err(explain_privileges)?;
    let adopted = outcome == Installed::Replaced;
    let family = |target: Option<SocketAddr>| {
        target.map_or_else(|| "rejected".to_string(), |t| t.to_string())
    };
    info!(table = firewall::TABLE, interfaces = %config.host_interface, ipv4 = %family(targets.v4),
        ipv6 = %family(targets.v6), replaced_previous_agents_rules = adopted,
        inspect = firewall::inspect_command(), "DNAT rules installed");
    Ok(Guarded {
        targets,
        interfaces: config.host_interface.clone(),
        host_pods,
        expected,
        cut,
    })
}

/// Cuts pods' connections to the metadata addresses that were opened
/// before the rules and so still reach the real service (see
/// [`firewall::conntrack`]). A failure is said and the agent goes on (the
/// rules hold for every new connection), but the startup taint stays.
/// Returns whether the cut was made.
pub async fn cut_bypassing_connections(
    targets: Targets,
    cut: firewall::conntrack::CutFilter,
) -> bool {
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || firewall::cut_bypassing_connections(&targets, &cut))
        .await
    {
        Ok(Ok(flushed)) => {
            info!(
                cut = flushed.deleted,
                already_through_the_agent = flushed.kept,
                tracked = flushed.tracked,
                took_ms = started.elapsed().as_millis() as u64,
                "connections to the metadata service opened before the rules were cut"
            );
            true
        }
        Ok(Err(error)) => {
            error!(%error,
                "cannot cut connections opened before the rules; any such connection keeps reaching the real metadata service until it closes, and the startup taint stays");
            false
        }
        Err(error) => {
            error!(%error, "the connection cut did not run; the startup taint stays");
            false
        }
    }
}

/// nft's own words ("you must be root") do not say what to change in a
/// DaemonSet: name the user and what the agent needs.
fn explain_privileges(error: FirewallError) -> FirewallError {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return error;
    }
    FirewallError::Nft(format!(
        "{error}; iamlet runs as uid {uid}, and managing its nftables table needs uid 0 with CAP_NET_ADMIN: run the image's default user (root), as iamlet's manifests do with every other capability dropped"
    ))
}

/// A literal `--host-interface` name must exist: kube2iam refused to start
/// otherwise, and a rule for a typo intercepts nothing. Wildcards may match
/// nothing yet (no pods on a new node); the guard reports that.
fn check_interfaces(selection: &firewall::InterfaceMatch) -> Result<(), AppError> {
    let present = match firewall::present_interfaces() {
        Ok(present) => present,
        Err(error) => {
            warn!(%error, "cannot list the node's interfaces to check --host-interface");
            return Ok(());
        }
    };
    for name in selection.literal_names() {
        if !present.iter().any(|p| p == name) {
            return Err(AppError::NoSuchInterface {
                name: name.to_string(),
                present: present.join(", "),
            });
        }
    }
    Ok(())
}

/// On exit the rules stay unless asked otherwise: pods then get "connection
/// refused" until the next agent adopts them, never the real metadata service.
async fn leave_rules(config: &Config) -> Result<(), AppError> {
    if !config.remove_rules_on_exit {
        info!(
            table = firewall::TABLE,
            "DNAT rules left in place: pods get connection refused until the next agent starts; `iamlet cleanup` removes them"
        );
        return Ok(());
    }
    let removed = tokio::task::spawn_blocking(firewall::remove).await??;
    info!(families = ?removed, "DNAT rules removed (--remove-rules-on-exit)");
    Ok(())
}

/// What `iamlet cleanup` takes off `lo` where the kernel had no dummy link:
/// the endpoint's default addresses.
fn cleanup_addresses() -> Vec<std::net::IpAddr> {
    vec![
        std::net::IpAddr::from([169, 254, 170, 23]),
        std::net::IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23]),
    ]
}

/// `iamlet cleanup`: removes iamlet's tables and its container
/// credentials link, and nothing else.
pub fn cleanup() -> Result<(), AppError> {
    let link = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)?
        .block_on(firewall::link::remove(&cleanup_addresses()));
    match link {
        Ok(true) => info!(
            link = firewall::link::LINK,
            "container credentials addresses removed"
        ),
        Ok(false) => {}
        Err(error) => warn!(%error, "cannot remove the container credentials link"),
    }
    let removed = firewall::remove()?;
    if removed.is_empty() {
        info!(
            table = firewall::TABLE,
            "no iamlet rules on this node; nothing to remove"
        );
    } else {
        info!(table = firewall::TABLE, families = ?removed, "iamlet rules removed");
    }
    Ok(())
}

async fn build_resolver(config: &Config, upstream: &Upstream) -> Result<Resolver, AppError> {
    let settings = &config.roles;
    let mut base = settings.base_role_arn.clone();
    let mut default_role = settings.default_role.clone();
    if settings.auto_discover_base_arn || settings.auto_discover_default_role {
        let info = fetch_upstream(upstream, "/latest/meta-data/iam/info").await?;
        let info: serde_json::Value = serde_json::from_str(&info)
            .map_err(|e| AppError::Discovery(format!("iam/info is not JSON: {e}")))?;
        let profile = info["InstanceProfileArn"]
            .as_str()
            .ok_or_else(|| AppError::Discovery("iam/info has no InstanceProfileArn".into()))?;
        let account_base = BaseArn::from_instance_profile(profile).map_err(AppError::Discovery)?;
        if settings.auto_discover_default_role {
            let name =
                fetch_upstream(upstream, "/latest/meta-data/iam/security-credentials/").await?;
            let node_role = account_base.join(name.trim())?;
            info!(role = %node_role, "default role discovered from the node");
            default_role = Some(node_role.to_string());
        }
        if settings.auto_discover_base_arn {
            info!(
                base = account_base.as_str(),
                "base role ARN discovered from the node"
            );
            base = Some(account_base);
        }
    }
    Ok(Resolver::new(
        base,
        default_role.as_deref(),
        settings.restrictions,
    )?)
}

async fn fetch_upstream(upstream: &Upstream, path: &str) -> Result<String, AppError> {
    let response = upstream
        .get(Method::GET, path)
        .await
        .map_err(|e| AppError::Discovery(e.to_string()))?;
    if response.status != StatusCode::OK {
        return Err(AppError::Discovery(format!(
            "{path} answered {}",
            response.status
        )));
    }
    String::from_utf8(response.body.to_vec()).map_err(|e| AppError::Discovery(e.to_string()))
}

async fn kube_config(access: &KubeAccess) -> Result<kube::Config, AppError> {
    let error = |e: &dyn std::fmt::Display| AppError::Kube(e.to_string());
    let (mut config, insecure) = match access {
        KubeAccess::Explicit {
            server,
            token,
            insecure,
        } => {
            let mut config = kube::Config::new(server.parse().map_err(|e| error(&e))?);
            config.auth_info.token = token.clone().map(secrecy::SecretString::from);
            (config, *insecure)
        }
        KubeAccess::Kubeconfig { path, insecure } => {
            let file = Kubeconfig::read_from(path).map_err(|e| error(&e))?;
            let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| error(&e))?;
            (config, *insecure)
        }
        KubeAccess::Infer { insecure } => (
            kube::Config::infer().await.map_err(|e| error(&e))?,
            *insecure,
        ),
    };
    config.accept_invalid_certs |= insecure;
    Ok(config)
}

/// SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled: a signal that arrives while the agent
/// is still starting (its probes may already answer) must not kill it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut interrupt)) = signals else {
            warn!("cannot install signal handlers; stop the agent with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received; shutting down"),
            _ = interrupt.recv() => info!("SIGINT received; shutting down"),
        }
    }
}
