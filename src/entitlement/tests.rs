use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::json;

use super::*;
use crate::pods::{AnnotationKeys, WatchKind};
use crate::roles::{BaseArn, PolicyFormat};

fn pod(name: &str, ips: &[&str], role: Option<&str>) -> Pod {
    let annotations = match role {
        Some(role) => json!({"iam.amazonaws.com/role": role}),
        None => json!({}),
    };
    let pod_ips: Vec<_> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"), "annotations": annotations},
        "spec": {"nodeName": "node-a", "containers": []},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": pod_ips},
    }))
    .unwrap()
}

fn namespace(allowed: &str) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": "team",
        "annotations": {"iam.amazonaws.com/allowed-roles": allowed}}}))
    .unwrap()
}

fn entitlements(restrictions: Option<PolicyFormat>, default_role: Option<&str>) -> Entitlements {
    let store = Arc::new(PodStore::new(AnnotationKeys::default(), restrictions));
    let base = BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap();
    let resolver = Arc::new(Resolver::new(Some(base), default_role, restrictions).unwrap());
    store.begin_pod_relist();
    store.finish_pod_relist();
    if restrictions.is_some() {
        store.begin_namespace_relist();
        store.finish_namespace_relist();
    }
    Entitlements::new(store, resolver)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn role_of(decision: Result<Grant, Refusal>) -> Result<String, &'static str> {
    decision
        .map(|grant| grant.target.role.to_string())
        .map_err(|refusal| refusal.label())
}

#[test]
fn a_pod_is_found_by_each_of_its_addresses_and_mapped_ipv4() {
    let e = entitlements(None, None);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11", "fd00::11"], Some("reader")));
    let reader = Ok("arn:aws:iam::123456789012:role/reader".to_string());
    assert_eq!(role_of(e.decide(ip("10.0.0.11"))), reader);
    assert_eq!(role_of(e.decide(ip("fd00::11"))), reader);
    assert_eq!(role_of(e.decide(ip("::ffff:10.0.0.11"))), reader);
    let grant = e.decide(ip("10.0.0.11")).unwrap();
    assert_eq!(grant.key.session_name, "team.app");
    assert_eq!(grant.pod.name, "app");
}

#[test]
fn an_ipv4_compatible_ipv6_caller_is_not_the_ipv4_pod() {
    let e = entitlements(None, None);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11"], Some("reader")));
    let compatible = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 11).to_ipv6_compatible());
    assert_eq!(compatible, ip("::10.0.0.11"));
    assert_eq!(role_of(e.decide(compatible)), Err("unknown-ip"));
    assert_eq!(canonical(compatible), compatible);
}

#[test]
fn refusals_name_their_reason() {
    let e = entitlements(Some(PolicyFormat::Glob), None);
    e.store()
        .apply_namespace(&namespace(r#"["app-*"]"#).metadata);
    e.store().apply_pod(&pod("none", &["10.0.0.1"], None));
    e.store().apply_pod(&pod(
        "other",
        &["10.0.0.2"],
        Some("arn:aws:iam::999999999999:role/app-admin"),
    ));
    e.store()
        .apply_pod(&pod("dots", &["10.0.0.3"], Some("../app-admin")));
    e.store().apply_pod(&pod("a", &["10.0.0.4"], Some("app-x")));
    e.store().apply_pod(&pod("b", &["10.0.0.4"], Some("app-x")));
    assert_eq!(role_of(e.decide(ip("10.0.0.1"))), Err("no-role"));
    assert_eq!(
        role_of(e.decide(ip("10.0.0.2"))),
        Err("namespace-restriction")
    );
    assert_eq!(
        role_of(e.decide(ip("10.0.0.3"))),
        Err("invalid-role-annotation")
    );
    assert_eq!(role_of(e.decide(ip("10.0.0.4"))), Err("ip-conflict"));
    assert_eq!(role_of(e.decide(ip("10.0.0.9"))), Err("unknown-ip"));
}

#[test]
fn the_default_role_obeys_the_allow_list() {
    let e = entitlements(Some(PolicyFormat::Glob), Some("fallback"));
    e.store()
        .apply_namespace(&namespace(r#"["app-*"]"#).metadata);
    e.store().apply_pod(&pod("none", &["10.0.0.1"], None));
    assert_eq!(
        role_of(e.decide(ip("10.0.0.1"))),
        Err("namespace-restriction")
    );
    e.store()
        .apply_namespace(&namespace(r#"["fallback"]"#).metadata);
    assert_eq!(
        role_of(e.decide(ip("10.0.0.1"))),
        Ok("arn:aws:iam::123456789012:role/fallback".to_string())
    );
}

#[test]
fn only_the_granted_roles_name_is_served() {
    let e = entitlements(None, None);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11"], Some("team/reader")));
    let grant = e.decide(ip("10.0.0.11")).unwrap();
    assert_eq!(grant.check_requested("reader"), Ok(()));
    for other in ["team", "writer", "Reader", "team/reader"] {
        let refusal = grant.check_requested(other).unwrap_err();
        assert_eq!(refusal.label(), "not-the-pods-role");
        assert_eq!(refusal.status(), http::StatusCode::FORBIDDEN);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_index_refuses_until_a_relist() {
    let store = PodStore::new(AnnotationKeys::default(), None)
        .with_max_staleness(Some(Duration::from_secs(10)));
    let store = Arc::new(store);
    let resolver = Arc::new(Resolver::new(None, None, None).unwrap());
    let e = Entitlements::new(store.clone(), resolver);
    store.begin_pod_relist();
    store.apply_pod(&pod(
        "app",
        &["10.0.0.11"],
        Some("arn:aws:iam::123456789012:role/r"),
    ));
    store.finish_pod_relist();
    assert!(e.decide(ip("10.0.0.11")).is_ok());
    store.watch_broken(WatchKind::Pods, tokio::time::Instant::now());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(e.decide(ip("10.0.0.11")).is_ok(), "within the bound");
    tokio::time::advance(Duration::from_secs(2)).await;
    let refusal = e.decide(ip("10.0.0.11")).unwrap_err();
    assert_eq!(refusal.label(), "index-stale");
    assert_eq!(refusal.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(refusal.may_lift());
    assert!(!store.watch_opened(WatchKind::Pods), "too long: relist");
    assert!(e.decide(ip("10.0.0.11")).is_err());
    store.begin_pod_relist();
    store.finish_pod_relist();
    assert_eq!(role_of(e.decide(ip("10.0.0.11"))), Err("unknown-ip"));
}

#[tokio::test]
async fn a_waiting_request_is_answered_when_the_pod_arrives() {
    let e = Arc::new(entitlements(None, None));
    let waiting = {
        let e = e.clone();
        tokio::spawn(async move {
            e.decide_waiting(&Caller::Address(ip("10.0.0.11")), Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11"], Some("reader")));
    let grant = waiting.await.unwrap().unwrap();
    assert_eq!(grant.target.role.name(), "reader");
    let refused = e
        .decide_waiting(&Caller::Address(ip("10.0.0.12")), Duration::from_millis(50))
        .await;
    assert_eq!(role_of(refused), Err("unknown-ip"));
}

#[test]
fn decide_all_covers_every_indexed_address_and_host_network_pod() {
    let e = entitlements(None, None).with_host_network_pods(true);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11", "fd00::11"], Some("reader")));
    e.store().apply_pod(&pod("bare", &["10.0.0.12"], None));
    e.store()
        .apply_pod(&host_network_pod(HOST_UID, Some("agent-role")));
    let mut all: Vec<(String, Result<String, &str>)> = e
        .decide_all()
        .into_iter()
        .map(|(caller, decision)| (caller.to_string(), role_of(decision)))
        .collect();
    all.sort();
    let reader = Ok("arn:aws:iam::123456789012:role/reader".to_string());
    assert_eq!(
        all,
        vec![
            ("10.0.0.11".to_string(), reader.clone()),
            ("10.0.0.12".to_string(), Err("no-role")),
            ("fd00::11".to_string(), reader),
            (
                format!("hostNetwork pod {HOST_UID}"),
                Ok("arn:aws:iam::123456789012:role/agent-role".to_string())
            ),
        ]
    );
}

const HOST_UID: &str = "6c0f2b9e-1d3a-4f5b-8c7d-9e0a1b2c3d4e";

/// A hostNetwork pod: its addresses are the node's.
fn host_network_pod(uid: &str, role: Option<&str>) -> Pod {
    let mut pod = pod("host-agent", &["10.0.0.1"], role);
    pod.metadata.uid = Some(uid.to_string());
    pod.spec.as_mut().unwrap().host_network = Some(true);
    pod
}

#[test]
fn a_host_network_pod_is_found_by_its_uid_and_never_by_the_nodes_address() {
    let without_cgroups = entitlements(None, None);
    without_cgroups
        .store()
        .apply_pod(&host_network_pod(HOST_UID, Some("agent-role")));
    let uid = crate::identity::PodUid::parse(HOST_UID).unwrap();
    assert_eq!(
        role_of(without_cgroups.decide_caller(&Caller::HostNetworkPod(uid))),
        Err("unknown-pod-uid"),
        "no hostNetwork pod is served where cgroups cannot name it"
    );
    // Its token still names it: the warmer keeps what a token would get.
    let all = without_cgroups.decide_all();
    assert_eq!(all.len(), 1);
    assert!(matches!(all[0].0, Caller::Token(_)), "{:?}", all[0].0);
    assert_eq!(
        role_of(all[0].1.clone()),
        Ok("arn:aws:iam::123456789012:role/agent-role".to_string())
    );

    let e = entitlements(None, None).with_host_network_pods(true);
    e.store()
        .apply_pod(&host_network_pod(HOST_UID, Some("agent-role")));
    let uid = crate::identity::PodUid::parse(HOST_UID).unwrap();
    let grant = e
        .decide_caller(&Caller::HostNetworkPod(uid.clone()))
        .unwrap();
    assert_eq!(grant.target.role.name(), "agent-role");
    assert_eq!(grant.pod.name, "host-agent");
    // The node's address names no pod, whatever runs on the host network.
    assert_eq!(role_of(e.decide(ip("10.0.0.1"))), Err("unknown-ip"));
    // Another UID is no pod; a deleted pod is gone; a finished one too.
    let other = crate::identity::PodUid::parse("11111111-2222-3333-4444-555555555555").unwrap();
    assert_eq!(
        role_of(e.decide_caller(&Caller::HostNetworkPod(other))),
        Err("unknown-pod-uid")
    );
    let mut finished = host_network_pod(HOST_UID, Some("agent-role"));
    finished.status.as_mut().unwrap().phase = Some("Succeeded".into());
    e.store().apply_pod(&finished);
    assert_eq!(
        role_of(e.decide_caller(&Caller::HostNetworkPod(uid))),
        Err("unknown-pod-uid")
    );
}

#[tokio::test]
async fn a_refusal_the_watch_cannot_lift_is_answered_at_once() {
    let e = entitlements(None, None);
    e.store().apply_pod(&pod("bare", &["10.0.0.12"], None));
    e.store()
        .apply_pod(&pod("bad", &["10.0.0.13"], Some("../admin")));
    for caller in ["10.0.0.12", "10.0.0.13"] {
        let started = std::time::Instant::now();
        let refused = e
            .decide_waiting(&Caller::Address(ip(caller)), Duration::from_secs(5))
            .await;
        assert!(refused.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{caller} waited {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_requested_name_is_kept_only_clipped_for_the_log() {
    let e = entitlements(None, None);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11"], Some("reader")));
    let grant = e.decide(ip("10.0.0.11")).unwrap();
    let refusal = grant.check_requested(&"é".repeat(5000)).unwrap_err();
    let Refusal::NotThePodsRole { requested, .. } = &refusal else {
        panic!("{refusal:?}");
    };
    assert!(requested.len() <= MAX_LOGGED, "{}", requested.len());
    assert!(refusal.to_string().len() < 2 * MAX_LOGGED + 100);
}

#[test]
fn a_static_pod_is_known_by_the_kubelets_uid_not_its_mirrors() {
    let e = entitlements(None, None).with_host_network_pods(true);
    let hash = "5f8c0b1e2d3a4b5c6d7e8f9a0b1c2d3e";
    let mut mirror = host_network_pod(HOST_UID, Some("proxy-role"));
    mirror
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("kubernetes.io/config.mirror".into(), hash.into());
    e.store().apply_pod(&mirror);
    let by_hash = crate::identity::PodUid::parse(hash).unwrap();
    let grant = e.decide_caller(&Caller::HostNetworkPod(by_hash)).unwrap();
    assert_eq!(grant.target.role.name(), "proxy-role");
    let by_mirror_uid = crate::identity::PodUid::parse(HOST_UID).unwrap();
    assert_eq!(
        role_of(e.decide_caller(&Caller::HostNetworkPod(by_mirror_uid))),
        Err("unknown-pod-uid")
    );
}

fn with_service_account(mut pod: Pod, account: &str) -> Pod {
    pod.spec.as_mut().unwrap().service_account_name = Some(account.into());
    pod
}

fn account(
    name: &str,
    role: Option<&str>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    let annotations = role.map_or(json!({}), |r| json!({"eks.amazonaws.com/role-arn": r}));
    serde_json::from_value(json!({"name": name, "namespace": "team", "annotations": annotations}))
        .unwrap()
}

/// Entitlements with ServiceAccount roles on (and namespace restrictions
/// when given), every watch listed.
fn with_accounts(restrictions: Option<PolicyFormat>, default_role: Option<&str>) -> Entitlements {
    let store = Arc::new(
        PodStore::new(AnnotationKeys::default(), restrictions).with_service_accounts(true),
    );
    let base = BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap();
    let resolver = Arc::new(
        Resolver::new(Some(base), default_role, restrictions)
            .unwrap()
            .with_service_account_roles(true),
    );
    store.begin_pod_relist();
    store.finish_pod_relist();
    assert!(
        !store.is_ready(),
        "not ready before the ServiceAccounts are listed"
    );
    store.begin_service_account_relist();
    store.finish_service_account_relist();
    if restrictions.is_some() {
        store.begin_namespace_relist();
        store.finish_namespace_relist();
    }
    assert!(store.is_ready());
    Entitlements::new(store, resolver)
}

#[test]
fn a_pod_takes_its_service_accounts_role_after_its_own_and_before_the_default() {
    let e = with_accounts(None, Some("fallback"));
    let store = e.store();
    store.apply_service_account(&account(
        "api",
        Some("arn:aws:iam::123456789012:role/sa-role"),
    ));
    store.apply_service_account(&account("plain", None));
    store.apply_pod(&with_service_account(pod("a", &["10.0.0.1"], None), "api"));
    store.apply_pod(&with_service_account(
        pod("b", &["10.0.0.2"], Some("own")),
        "api",
    ));
    store.apply_pod(&with_service_account(
        pod("c", &["10.0.0.3"], None),
        "plain",
    ));
    store.apply_pod(&with_service_account(
        pod("d", &["10.0.0.4"], None),
        "missing",
    ));
    let a = e.decide(ip("10.0.0.1")).unwrap();
    assert_eq!(a.target.role.name(), "sa-role");
    assert_eq!(a.target.source, crate::roles::RoleSource::ServiceAccount);
    assert_eq!(
        role_of(e.decide(ip("10.0.0.2"))).unwrap(),
        "arn:aws:iam::123456789012:role/own"
    );
    assert_eq!(
        e.decide(ip("10.0.0.3")).unwrap().target.role.name(),
        "fallback"
    );
    let unknown = e.decide(ip("10.0.0.4")).unwrap_err();
    assert_eq!(unknown.label(), "unknown-service-account");
    assert!(
        unknown.may_lift(),
        "a ServiceAccount the watch has not delivered yet may come"
    );

    // An edit of the ServiceAccount applies to the next decision.
    store.apply_service_account(&account("api", Some("other")));
    assert_eq!(
        e.decide(ip("10.0.0.1")).unwrap().target.role.name(),
        "other"
    );
    store.apply_service_account(&account("api", None));
    assert_eq!(
        e.decide(ip("10.0.0.1")).unwrap().target.role.name(),
        "fallback"
    );
}

#[test]
fn a_service_accounts_role_obeys_the_namespace() {
    let e = with_accounts(Some(PolicyFormat::Glob), Some("fallback"));
    let store = e.store();
    store.apply_namespace(&namespace(r#"["app-*"]"#).metadata);
    store.apply_service_account(&account("api", Some("admin")));
    store.apply_pod(&with_service_account(pod("a", &["10.0.0.1"], None), "api"));
    assert_eq!(
        role_of(e.decide(ip("10.0.0.1"))),
        Err("namespace-restriction")
    );
    store.apply_service_account(&account("api", Some("app-reader")));
    assert_eq!(
        e.decide(ip("10.0.0.1")).unwrap().target.role.name(),
        "app-reader"
    );
}

fn token_caller(name: &str, uid: &str, account: &str) -> Caller {
    Caller::Token(TokenPod {
        pod: crate::pods::PodKey {
            namespace: "team".into(),
            name: name.into(),
        },
        uid: uid.into(),
        service_account: account.into(),
    })
}

#[test]
fn a_token_is_its_pod_and_no_other() {
    let e = entitlements(None, None);
    e.store()
        .apply_pod(&pod("app", &["10.0.0.11"], Some("reader")));
    let grant = e
        .decide_caller(&token_caller("app", "uid-app", "default"))
        .unwrap();
    assert_eq!(grant.target.role.name(), "reader");
    assert_eq!(
        grant.key,
        e.decide(ip("10.0.0.11")).unwrap().key,
        "one key for both endpoints"
    );
    let refused = |caller: Caller| e.decide_caller(&caller).unwrap_err().label();
    assert_eq!(
        refused(token_caller("app", "uid-old", "default")),
        "pod-replaced"
    );
    assert_eq!(
        refused(token_caller("app", "uid-app", "other")),
        "pod-replaced"
    );
    assert_eq!(
        refused(token_caller("elsewhere", "uid-x", "default")),
        "unknown-pod"
    );
    let mut done = pod("app", &["10.0.0.11"], Some("reader"));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    e.store().apply_pod(&done);
    assert_eq!(
        refused(token_caller("app", "uid-app", "default")),
        "unknown-pod"
    );
}

#[test]
fn session_tags_name_the_pod_and_split_the_cache_key() {
    let tagging = crate::credentials::SessionTagging {
        cluster_name: Some("prod".into()),
        ..Default::default()
    };
    let e = entitlements(None, None).with_session_tags(Some(tagging));
    e.store().apply_pod(&with_service_account(
        pod("a", &["10.0.0.1"], Some("r")),
        "api",
    ));
    e.store().apply_pod(&with_service_account(
        pod("b", &["10.0.0.2"], Some("r")),
        "api",
    ));
    let a = e.decide(ip("10.0.0.1")).unwrap().key;
    let b = e.decide(ip("10.0.0.2")).unwrap().key;
    let tags = a.tags.clone().unwrap().tags;
    assert!(
        tags.contains(&("kubernetes-pod-name".into(), "a".into())),
        "{tags:?}"
    );
    assert!(tags.contains(&("kubernetes-service-account".into(), "api".into())));
    assert!(tags.contains(&("eks-cluster-name".into(), "prod".into())));
    assert_ne!(a, b);
}
