//! The property: whatever sequence of pod creations, deletions, IP reuse,
//! phase changes, annotation changes, namespace policy changes and relists
//! the watch delivers, a request from an IP is answered with exactly the
//! role the pod behind it is entitled to at that moment, or refused; never
//! with another role.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

use std::collections::BTreeMap;
use std::net::IpAddr;

use iamlet::pods::{AnnotationKeys, PodStore};
use iamlet::roles::{BaseArn, NamespacePolicy, PolicyFormat, Resolver};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use proptest::prelude::*;
use serde_json::json;

const NAMESPACES: [&str; 2] = ["team-a", "team-b"];
const ROLES: [&str; 3] = ["app-reader", "app-writer", "admin"];
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
                prop::sample::select(vec!["app-*", "admin", "app-reader"]), 0..3)))).prop_map(|(n, p)| Op::SetPolicy(n, p)),
        1 => any::<u8>().prop_map(Op::Relist),
        6 => (0..IPS).prop_map(Op::Ask),
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
    let role = owner.role.unwrap_or("default-role");
    let namespace = NAMESPACES
        .iter()
        .position(|n| *n == owner.namespace)
        .unwrap();
    let allowed = match policies.get(&namespace) {
        Some(Some(Some(patterns))) => patterns
            .iter()
            .any(|p| *p == role || (p.ends_with('*') && role.starts_with(p.trim_end_matches('*')))),
        _ => false,
    };
    allowed.then(|| format!("arn:aws:iam::123456789012:role/{role}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_request_is_answered_with_a_role_the_pod_is_not_entitled_to(ops in prop::collection::vec(op(), 1..80)) {
        let store = PodStore::new(AnnotationKeys::default(), Some(PolicyFormat::Glob));
        let base = BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap();
        let resolver = Resolver::new(Some(base), Some("default-role"), Some(PolicyFormat::Glob)).unwrap();
        let mut pods: BTreeMap<usize, ModelPod> = BTreeMap::new();
        let mut policies: BTreeMap<usize, Option<Option<Vec<&'static str>>>> = BTreeMap::new();
        for (n, name) in NAMESPACES.iter().enumerate() {
            store.apply_namespace(&to_namespace(name, &None));
            policies.insert(n, None);
        }
        store.begin_pod_relist();
        store.finish_pod_relist();
        store.begin_namespace_relist();
        for (n, name) in NAMESPACES.iter().enumerate() {
            store.apply_namespace(&to_namespace(name, &policies[&n]));
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
                    store.apply_namespace(&to_namespace(NAMESPACES[n], &policy));
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
                Op::Ask(asked) => {
                    let answer = match store.lookup(ip(asked)) {
                        Ok(view) => resolver
                            .resolve(&view.pod, view.policy.as_deref())
                            .ok()
                            .flatten()
                            .map(|target| target.role.to_string()),
                        Err(_) => None,
                    };
                    let expected = entitled(&pods, &policies, asked);
                    prop_assert_eq!(answer, expected, "IP {} with pods {:?} and policies {:?}", ip(asked), pods, policies);
                }
            }
        }
    }
}

#[test]
fn namespace_policy_model_matches_the_real_glob() {
    // The model's prefix-star matching agrees with the real glob matcher on
    // the patterns the property uses.
    let base = BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap();
    let policy = NamespacePolicy::parse(Some(r#"["app-*"]"#), PolicyFormat::Glob);
    for role in ROLES {
        let arn = iamlet::roles::RoleArn::parse(&format!("arn:aws:iam::123456789012:role/{role}"))
            .unwrap();
        assert_eq!(
            policy.allows(&arn, Some(&base)),
            role.starts_with("app-"),
            "{role}"
        );
    }
}
