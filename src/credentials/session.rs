//! Role session names that tell pods apart in CloudTrail.

use crate::roles::arn::is_iam_name_char;

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
