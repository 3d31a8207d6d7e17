//! Role session names that tell pods apart in CloudTrail, and the session
//! tags (`--session-tags`) that let IAM policies tell them apart too.

use crate::pods::PodInfo;
use crate::roles::arn::is_iam_name_char;

/// STS's limit on a tag value, in characters.
const MAX_TAG_VALUE: usize = 256;

/// What `--session-tags` puts on every session besides the pod's own
/// facts: the cluster, as EKS Pod Identity names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionTagging {
    pub cluster_name: Option<String>,
    pub cluster_arn: Option<String>,
    /// Also set `SourceIdentity` to the pod's ServiceAccount.
    pub source_identity: bool,
}

/// The tags (all transitive) and source identity of one pod's sessions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionTags {
    pub tags: Vec<(String, String)>,
    pub source_identity: Option<String>,
}

impl SessionTagging {
    /// EKS Pod Identity's tag keys, with values cut to STS's limits.
    pub fn for_pod(&self, pod: &PodInfo) -> SessionTags {
        let cluster = [
            ("eks-cluster-arn", self.cluster_arn.as_deref()),
            ("eks-cluster-name", self.cluster_name.as_deref()),
        ];
        let pod_facts = [
            ("kubernetes-namespace", Some(pod.namespace.as_str())),
            (
                "kubernetes-service-account",
                Some(pod.service_account.as_str()),
            ),
            ("kubernetes-pod-name", Some(pod.name.as_str())),
            ("kubernetes-pod-uid", Some(pod.uid.as_str())),
        ];
        let tags = cluster
            .into_iter()
            .chain(pod_facts)
            .filter_map(|(key, value)| Some((key.to_string(), tag_value(value?))))
            .collect();
        SessionTags {
            tags,
            source_identity: self
                .source_identity
                .then(|| session_name(&pod.namespace, &pod.service_account)),
        }
    }
}

/// Whether `c` may go in a tag value: ASCII letters and digits, space and
/// `_.:/=+-@`. STS's own set (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`) is wider in
/// Unicode, but Rust's character classes are not STS's categories (tab,
/// newline and U+0085 count as whitespace; combining marks as alphabetic),
/// and a value STS refuses would fail every AssumeRole. Kubernetes names
/// and EKS cluster names and ARNs all fit.
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c)
}

/// A value STS accepts: other characters become `-`, at most 256 kept.
/// Kubernetes names never need either; flags are checked at start.
fn tag_value(value: &str) -> String {
    value
        .chars()
        .map(|c| if is_tag_char(c) { c } else { '-' })
        .take(MAX_TAG_VALUE)
        .collect()
}

const MAX_SESSION_NAME: usize = 64;
const MIN_SESSION_NAME: usize = 2;

/// `<namespace>.<pod>`, with characters STS does not accept replaced by `-`.
/// Namespaces cannot contain dots, so the first dot separates the two. Names
/// longer than STS's 64 characters keep their start and end a hash of the
/// whole, so long names that share a prefix still get distinct sessions.
pub fn session_name(namespace: &str, pod: &str) -> String {
    let full: String = format!("{namespace}.{pod}")
        .chars()
        .map(|c| if is_iam_name_char(c) { c } else { '-' })
        .collect();
    if full.len() < MIN_SESSION_NAME {
        return format!("{full:-<MIN_SESSION_NAME$}");
    }
    if full.len() <= MAX_SESSION_NAME {
        return full;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let keep = MAX_SESSION_NAME - hash.len() - 1;
    format!("{}-{hash}", &full[..keep])
}

/// FNV-1a: stable across releases and platforms, unlike std's hasher, so a
/// pod keeps its session name when iamlet is upgraded.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_for_sts(name: &str) -> bool {
        (2..=64).contains(&name.len()) && name.chars().all(is_iam_name_char)
    }

    fn pod() -> PodInfo {
        PodInfo {
            namespace: "payments".into(),
            name: "api-7d9f".into(),
            uid: "0b6a3f3e-1111-4c4c-9e9e-123456789abc".into(),
            ips: vec![],
            phase: "Running".into(),
            host_network: false,
            service_account: "api".into(),
            role: None,
            external_id: None,
        }
    }

    #[test]
    fn tags_are_eks_pod_identitys() {
        let tagging = SessionTagging {
            cluster_name: Some("prod".into()),
            cluster_arn: Some("arn:aws:eks:eu-west-1:123456789012:cluster/prod".into()),
            source_identity: true,
        };
        let tags = tagging.for_pod(&pod());
        let keys: Vec<&str> = tags.tags.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "eks-cluster-arn",
                "eks-cluster-name",
                "kubernetes-namespace",
                "kubernetes-service-account",
                "kubernetes-pod-name",
                "kubernetes-pod-uid"
            ]
        );
        assert_eq!(tags.tags[3].1, "api");
        assert_eq!(tags.source_identity.as_deref(), Some("payments.api"));
        let bare = SessionTagging::default().for_pod(&pod());
        assert_eq!(bare.tags.len(), 4, "no cluster tags without the flags");
        assert_eq!(bare.source_identity, None);
    }

    #[test]
    fn tag_values_fit_sts() {
        assert_eq!(tag_value("a#b"), "a-b");
        assert_eq!(tag_value(&"x".repeat(300)).chars().count(), 256);
        assert_eq!(tag_value("tab\there"), "tab-here");
        assert_eq!(tag_value("line\u{85}break"), "line-break");
    }

    #[test]
    fn names_the_pod() {
        assert_eq!(session_name("payments", "api-7d9f"), "payments.api-7d9f");
    }

    #[test]
    fn long_names_are_cut_to_64_and_stay_distinct() {
        let pod_a = format!("{}-a", "x".repeat(80));
        let pod_b = format!("{}-b", "x".repeat(80));
        let a = session_name("team", &pod_a);
        let b = session_name("team", &pod_b);
        assert_eq!(a.len(), 64);
        assert!(valid_for_sts(&a) && valid_for_sts(&b));
        assert_ne!(a, b);
        assert!(a.starts_with("team.xxx"));
    }

    #[test]
    fn odd_characters_are_replaced() {
        let name = session_name("ns", "pod:with/odd chars");
        assert!(valid_for_sts(&name), "{name}");
        assert_eq!(name, "ns.pod-with-odd-chars");
    }
}
