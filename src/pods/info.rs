//! The part of a Pod object iamlet needs, extracted once per watch event.

use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

/// Which annotations carry a pod's role and ExternalId and a namespace's
/// allow-list (flags `--iam-role-key`, `--iam-external-id`, `--namespace-key`).
#[derive(Clone, Debug)]
pub struct AnnotationKeys {
    pub role: String,
    pub external_id: String,
    pub namespace_policy: String,
    /// `--service-account-role-key`: the ServiceAccount annotation naming a
    /// role (IRSA's key by default).
    pub service_account_role: String,
}

impl Default for AnnotationKeys {
    fn default() -> Self {
        AnnotationKeys {
            role: "iam.amazonaws.com/role".into(),
            external_id: "iam.amazonaws.com/external-id".into(),
            namespace_policy: "iam.amazonaws.com/allowed-roles".into(),
            service_account_role: "eks.amazonaws.com/role-arn".into(),
        }
    }
}

/// On a static pod's mirror object: the kubelet's UID for the pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// A pod's identity within the cluster: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    /// The UID the kubelet gives the pod's cgroups: `metadata.uid`, or for
    /// a static pod (whose API object is a mirror with a UID of its own)
    /// the kubelet's config hash from `kubernetes.io/config.mirror`.
    pub uid: String,
    pub ips: Vec<IpAddr>,
    pub phase: String,
    pub host_network: bool,
    /// `spec.serviceAccountName` (`default` when unset, as the API server
    /// fills it in).
    pub service_account: String,
    /// The raw role annotation, validated only when a request resolves it.
    pub role: Option<String>,
    pub external_id: Option<String>,
}

impl PodInfo {
    /// `None` for objects without a namespace or name, which the API server
    /// never sends for pods.
    pub fn from_pod(pod: &Pod, keys: &AnnotationKeys) -> Option<Self> {
        let meta = &pod.metadata;
        let annotations = meta.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).cloned();
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = Vec::new();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten();
        let primary = status.and_then(|s| s.pod_ip.as_deref());
        for text in listed.map(|p| p.ip.as_str()).chain(primary) {
            if let Ok(ip) = text.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
        Some(PodInfo {
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
            uid: annotation(MIRROR_ANNOTATION)
                .or_else(|| meta.uid.clone())
                .unwrap_or_default(),
            ips,
            phase: status
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".to_string()),
            host_network: pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "default".to_string()),
            role: annotation(&keys.role),
            external_id: annotation(&keys.external_id),
        })
    }

    pub fn key(&self) -> PodKey {
        PodKey {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Succeeded or Failed: its containers are gone, and so is its claim to
    /// any address or role (its IPs are free for reuse). Of the live pods,
    /// only those with their own network namespace own their IPs;
    /// hostNetwork pods share the node's address, so their IP says nothing
    /// about who asks.
    pub fn is_finished(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}
