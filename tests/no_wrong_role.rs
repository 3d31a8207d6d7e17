//! The property: whatever sequence of pod creations, deletions, IP reuse,
//! phase changes, annotation changes (cross-account, other-partition,
//! path-bearing and invalid ARNs included), namespace policy changes and
//! relists the watch delivers, the production entitlement function
//! (`Entitlements::decide`, which the metadata handler, the warmer and
//! /debug/store call) answers a caller with exactly the role the pod behind
//! it is entitled to at that moment, or refuses; never another role. The
//! expectation comes from a model written independently of the code.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use iamlet::entitlement::Entitlements;
use iamlet::pods::{AnnotationKeys, PodStore};
use iamlet::roles::{BaseArn, NamespacePolicy, PolicyFormat, Resolver};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use proptest::prelude::*;
use serde_json::json;

const NAMESPACES: [&str; 2] = ["team-a", "team-b"];
/// Annotation values a pod may carry: relative names (with paths), full
/// ARNs of this account, of another account and of another partition, and
/// values that are no role at all.
const ROLES: [&str; 10] = [
    "app-reader",
    "app-writer",
    "admin",
    "app-team/admin",
    "arn:aws:iam::123456789012:role/app-writer",
    "arn:aws:iam::999999999999:role/app-admin",
    "arn:aws-cn:iam::123456789012:role/app-admin",
    "arn:aws:iam::123456789012:role/team/app-x",
    "../admin",
    "app-*",
];
/// Allow-list entries: relative and full-ARN globs.
const PATTERNS: [&str; 6] = [
    "app-*",
    "admin",
    "app-reader",
    "team/*",
    "arn:aws:iam::123456789012:role/app-*",
    "arn:aws:iam::999999999999:role/*",
];
const BASE: &str = "arn:aws:iam::123456789012:role/";
const PODS: usize = 6;
const IPS: u8 = 4;

#[derive(Clone, Debug)]
struct ModelPod {
    namespace: &'static str,
    ip: u8,
    phase: &'static str,
    host_network: bool,
    role: Option<&'static str>,
}

#[derive(Clone, Debug)]
enum Op {
    /// Create or replace pod `n` (a new pod under a reused name included).
    Put(usize, ModelPod),
    Delete(usize),
    SetRole(usize, Option<&'static str>),
    SetPhase(usize, &'static str),
    /// A namespace's allowed roles: `None` no annotation, `Some(None)` invalid JSON.
    SetPolicy(usize, Option<Option<Vec<&'static str>>>),
    /// A relist that delivers only the pods whose bit is set in the mask
    /// (the others were deleted while the watch was away).
    Relist(u8),
    Ask(u8),
    /// The same address as an IPv4-mapped IPv6 peer (a dual-stack socket).
    AskMapped(u8),
}

/// A pod's identity is (namespace, name): pod `n` always lives in
/// namespace `n % 2`, and putting it again replaces that same object.
fn model_pod() -> impl Strategy<Value = ModelPod> {
    (
        Just(NAMESPACES[0]),
        0..IPS,
        prop::sample::select(vec!["Pending", "Running", "Running", "Succeeded", "Failed"]),
        prop::bool::weighted(0.15),
        prop::option::of(prop::sample::select(ROLES.to_vec())),
    )
        .prop_map(|(namespace, ip, phase, host_network, role)| ModelPod {
            namespace,
            ip,
            phase,
            host_network,
            role,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PODS, model_pod()).prop_map(|(n, p)| Op::Put(n, ModelPod { namespace: NAMESPACES[n % 2], ..p })),
        1 => (0..PODS).prop_map(Op::Delete),
        2 => (0..PODS, prop::option::of(prop::sample::select(ROLES.to_vec()))).prop_map(|(n, r)| Op::SetRole(n, r)),
        1 => (0..PODS, prop::sample::select(vec!["Running", "Succeeded", "Failed"])).prop_map(|(n, p)| Op::SetPhase(n, p)),
        1 => (0..NAMESPACES.len(), prop::option::of(prop::option::of(prop::collection::vec(
                prop::sample::select(PATTERNS.to_vec()), 0..3)))).prop_map(|(n, p)| Op::SetPolicy(n, p)),
        1 => any::<u8>().prop_map(Op::Relist),
        6 => (0..IPS).prop_map(Op::Ask),
        1 => (0..IPS).prop_map(Op::AskMapped),
    ]
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, 10 + n])
}

fn pod_name(n: usize) -> String {
    format!("pod-{n}")
}

fn to_pod(n: usize, pod: &ModelPod) -> Pod {
    let annotations = match pod.role {
        Some(role) => json!({"iam.amazonaws.com/role": role}),
        None => json!({}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": pod_name(n), "namespace": pod.namespace, "annotations": annotations},
        "spec": {"nodeName": "node-a", "hostNetwork": pod.host_network, "containers": []},
        "status": {"phase": pod.phase, "podIP": ip(pod.ip).to_string(), "podIPs": [{"ip": ip(pod.ip).to_string()}]},
    }))
    .unwrap()
}

fn to_namespace(name: &str, policy: &Option<Option<Vec<&'static str>>>) -> Namespace {
    let annotations = match policy {
        None => json!({}),
        Some(None) => json!({"iam.amazonaws.com/allowed-roles": "not json"}),
        Some(Some(roles)) => {
            json!({"iam.amazonaws.com/allowed-roles": serde_json::to_string(roles).unwrap()})
        }
    };
    serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap()
}

/// The role ARN an annotation value names, by the model's own rules: a full
/// ARN stands for itself, a name is joined to the base, and anything with an
/// empty, `.` or `..` segment or a `*` is no role.
fn model_arn(value: &str) -> Option<String> {
    let arn = if value.starts_with("arn:") {
        value.to_string()
    } else {
        format!("{BASE}{value}")
    };
    let path = arn.split_once(":role/")?.1;
    let valid = path
        .split('/')
        .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('*'));
    valid.then_some(arn)
}

/// A glob where `*` matches any run of characters but `/`.
fn model_glob(pattern: &str, subject: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == subject,
        Some((prefix, rest)) => {
            let Some(tail) = subject.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .take_while(|&n| !tail[..n].contains('/'))
                .any(|n| model_glob(rest, &tail[n..]))
        }
    }
}

/// Relative entries speak of roles under the base only; full-ARN entries
/// of exactly the ARN.
fn model_allows(patterns: &[&str], arn: &str) -> bool {
    patterns.iter().any(|pattern| {
        if pattern.starts_with("arn:") {
            model_glob(pattern, arn)
        } else {
            arn.strip_prefix(BASE)
                .is_some_and(|relative| model_glob(pattern, relative))
        }
    })
}

/// What the pod behind `ip` is entitled to, computed from the model alone.
fn entitled(
    pods: &BTreeMap<usize, ModelPod>,
    policies: &BTreeMap<usize, Option<Option<Vec<&'static str>>>>,
    asked: u8,
) -> Option<String> {
    let owners: Vec<&ModelPod> = pods
        .values()
        .filter(|p| {
            p.ip == asked && !p.host_network && p.phase != "Succeeded" && p.phase != "Failed"
        })
        .collect();
    let [owner] = owners.as_slice() else {
        return None;
    };
    let arn = model_arn(owner.role.unwrap_or("default-role"))?;
    let namespace = NAMESPACES
        .iter()
        .position(|n| *n == owner.namespace)
        .unwrap();
    let allowed = match policies.get(&namespace) {
        Some(Some(Some(patterns))) => model_allows(patterns, &arn),
        _ => false,
    };
    allowed.then_some(arn)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_request_is_answered_with_a_role_the_pod_is_not_entitled_to(ops in prop::collection::vec(op(), 1..80)) {
        let store = Arc::new(PodStore::new(AnnotationKeys::default(), Some(PolicyFormat::Glob)));
        let base = BaseArn::parse(BASE).unwrap();
        let resolver = Resolver::new(Some(base), Some("default-role"), Some(PolicyFormat::Glob)).unwrap();
        let entitlements = Entitlements::new(store.clone(), Arc::new(resolver));
        let mut pods: BTreeMap<usize, ModelPod> = BTreeMap::new();
        let mut policies: BTreeMap<usize, Option<Option<Vec<&'static str>>>> = BTreeMap::new();
        for (n, name) in NAMESPACES.iter().enumerate() {
            store.apply_namespace(&to_namespace(name, &None).metadata);
            policies.insert(n, None);
        }
        store.begin_pod_relist();
        store.finish_pod_relist();
        store.begin_namespace_relist();
        for (n, name) in NAMESPACES.iter().enumerate() {
            store.apply_namespace(&to_namespace(name, &policies[&n]).metadata);
        }
        store.finish_namespace_relist();
        prop_assert!(store.is_ready());

        for op in ops {
            match op {
                Op::Put(n, pod) => {
                    store.apply_pod(&to_pod(n, &pod));
                    pods.insert(n, pod);
                }
                Op::Delete(n) => {
                    if let Some(pod) = pods.remove(&n) {
                        store.delete_pod(&to_pod(n, &pod));
                    }
                }
                Op::SetRole(n, role) => {
                    if let Some(pod) = pods.get_mut(&n) {
                        pod.role = role;
                        store.apply_pod(&to_pod(n, pod));
                    }
                }
                Op::SetPhase(n, phase) => {
                    if let Some(pod) = pods.get_mut(&n) {
                        pod.phase = phase;
                        store.apply_pod(&to_pod(n, pod));
                    }
                }
                Op::SetPolicy(n, policy) => {
                    store.apply_namespace(&to_namespace(NAMESPACES[n], &policy).metadata);
                    policies.insert(n, policy);
                }
                Op::Relist(mask) => {
                    store.begin_pod_relist();
                    pods.retain(|n, _| mask & (1 << n) != 0);
                    for (n, pod) in &pods {
                        store.apply_pod(&to_pod(*n, pod));
                    }
                    store.finish_pod_relist();
                }
                Op::Ask(asked) | Op::AskMapped(asked) => {
                    let caller = match op {
                        Op::AskMapped(_) => match ip(asked) {
                            IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
                            v6 => v6,
                        },
                        _ => ip(asked),
                    };
                    let decision = entitlements.decide(caller);
                    if let Ok(grant) = &decision {
                        prop_assert_eq!(&grant.key.role, &grant.target.role, "the cache key names the granted role");
                        prop_assert!(grant.pod.ips.contains(&ip(asked)), "the grant is for a pod that owns the address");
                    }
                    let answer = decision.ok().map(|grant| grant.target.role.to_string());
                    let expected = entitled(&pods, &policies, asked);
                    prop_assert_eq!(answer, expected, "IP {} with pods {:?} and policies {:?}", ip(asked), pods, policies);
                }
            }
        }
    }
}

#[test]
fn the_models_glob_agrees_with_the_real_one_on_the_patterns_used() {
    // Not the property's oracle (the model is), but a guard that the model
    // means what the documentation says a glob means.
    let base = BaseArn::parse(BASE).unwrap();
    for pattern in PATTERNS {
        let policy = NamespacePolicy::parse(
            Some(&serde_json::to_string(&[pattern]).unwrap()),
            PolicyFormat::Glob,
        );
        for role in ROLES {
            let Some(arn) = model_arn(role) else { continue };
            let real = iamlet::roles::RoleArn::parse(&arn).unwrap();
            assert_eq!(
                policy.allows(&real, Some(&base)),
                model_allows(&[pattern], &arn),
                "{pattern} / {arn}"
            );
        }
    }
}

#[test]
fn the_model_refuses_what_the_attack_used() {
    assert!(!model_allows(
        &["app-*"],
        "arn:aws:iam::999999999999:role/app-admin"
    ));
    assert!(!model_allows(
        &["app-*"],
        "arn:aws-cn:iam::123456789012:role/app-admin"
    ));
    assert!(!model_allows(&["app-*"], &format!("{BASE}app-team/admin")));
    assert!(model_allows(&["team/*"], &format!("{BASE}team/app-x")));
}
