//! Which pod a cgroup belongs to, from its path. The kubelet puts every
//! container of a pod under one pod-level cgroup whose name carries the
//! pod's UID; the forms differ by cgroup driver, runtime and nesting:
//!
//! | driver | path |
//! |---|---|
//! | cgroupfs | `/kubepods/burstable/pod<uid>/<64 hex>` (`/kubepods/pod<uid>/...` for Guaranteed) |
//! | systemd | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope` (also `docker-`, `crio-`) |
//! | containerd's systemd notation | `/kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>` |
//! | inside a cgroup namespace | relative to its root: `/../../pod<uid>/<id>` |
//! | nested (kind, a node in a container) | `/docker/<id>/kubepods/besteffort/pod<uid>/<id>` |
//!
//! No `kubepods` prefix is required (cgroup namespaces hide it). The first
//! pod segment from the root is the pod: a deeper one lies inside that
//! pod's own cgroup, where a privileged workload could create any name, so
//! it can never stand for another pod.

use std::fmt;

/// A pod UID as the kubelet writes it in cgroup names: the API server's
/// 8-4-4-4-12 lower-case hex, or for a static pod the kubelet's config
/// hash (32 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodUid(String);

impl PodUid {
    /// Parses a UID written with `-` (cgroupfs, the API) or `_` (systemd
    /// slices) between its groups, in either case.
    pub fn parse(text: &str) -> Option<PodUid> {
        const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
        if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(PodUid(text.to_ascii_lowercase()));
        }
        let separator = if text.contains('_') { '_' } else { '-' };
        let groups: Vec<&str> = text.split(separator).collect();
        let well_formed = groups.len() == GROUPS.len()
            && groups
                .iter()
                .zip(GROUPS)
                .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
        well_formed.then(|| PodUid(groups.join("-").to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PodUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a cgroup path says about the pod it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodCgroup {
    pub uid: PodUid,
    /// The container's id when the path goes below the pod's cgroup to a
    /// container (64 hex digits for containerd, CRI-O and Docker).
    pub container: Option<String>,
}

/// The pod a cgroup path (as `/proc/PID/cgroup` shows it, or a directory
/// below the cgroup root) belongs to, or `None` for a cgroup outside every
/// pod (the node's own processes, the root).
pub fn pod_of(path: &str) -> Option<PodCgroup> {
    // containerd's systemd notation `slice:runtime:id` names the same
    // pod slice and container as `slice/runtime-id.scope`.
    let segments: Vec<&str> = path
        .split('/')
        .flat_map(|segment| {
            let mut parts = segment.splitn(3, ':');
            let first = parts.next().unwrap_or_default();
            let container = parts.nth(1);
            std::iter::once(first).chain(container)
        })
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
        .collect();
    let (at, uid) = segments
        .iter()
        .enumerate()
        .find_map(|(i, segment)| pod_segment(segment).map(|uid| (i, uid)))?;
    let container = segments.get(at + 1).and_then(|s| container_id(s));
    Some(PodCgroup { uid, container })
}

/// `pod<uid>` (cgroupfs) or `<prefix>-pod<uid>.slice` (systemd).
fn pod_segment(segment: &str) -> Option<PodUid> {
    if let Some(uid) = segment.strip_prefix("pod") {
        return PodUid::parse(uid);
    }
    let slice = segment.strip_suffix(".slice")?;
    let (_, uid) = slice.rsplit_once("-pod")?;
    PodUid::parse(uid)
}

/// A container's id from its cgroup's name: `<id>`, `<runtime>-<id>.scope`
/// or (containerd's notation, already split) `<id>`.
fn container_id(segment: &str) -> Option<String> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => scope.rsplit_once('-')?.1,
        None => segment,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b9a7f3e-5c41-4d2a-9e8f-1234567890ab";
    const UNDERSCORED: &str = "0b9a7f3e_5c41_4d2a_9e8f_1234567890ab";
    const ID: &str = "4f1c7d0e9a8b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d";

    fn uid_of(path: &str) -> Option<String> {
        pod_of(path).map(|pod| pod.uid.to_string())
    }

    #[test]
    fn every_kubelet_layout_names_the_pod_and_its_container() {
        let layouts = [
            // cgroupfs driver, each QoS class.
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            // systemd driver, each runtime.
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UNDERSCORED}.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UNDERSCORED}.slice/crio-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{UNDERSCORED}.slice/docker-{ID}.scope"),
            // containerd's systemd notation.
            format!("/kubepods-besteffort-pod{UNDERSCORED}.slice:cri-containerd:{ID}"),
            // relative to a cgroup namespace's root.
            format!("/../../pod{UID}/{ID}"),
            format!("/../kubepods-burstable-pod{UNDERSCORED}.slice/cri-containerd-{ID}.scope"),
            // nested: a kind node in a container.
            format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}"),
            format!(
                "/system.slice/docker-{ID}.scope/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UNDERSCORED}.slice/cri-containerd-{ID}.scope"
            ),
        ];
        for path in layouts {
            let pod = pod_of(&path).unwrap_or_else(|| panic!("no pod in {path}"));
            assert_eq!(pod.uid.as_str(), UID, "{path}");
            assert_eq!(pod.container.as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn a_pod_level_cgroup_has_no_container() {
        let pod = pod_of(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UNDERSCORED}.slice"
        ))
        .unwrap();
        assert_eq!(pod.uid.as_str(), UID);
        assert_eq!(pod.container, None);
        // The pause container's or a sandbox's odd name is no container id.
        let sandbox = pod_of(&format!("/kubepods/pod{UID}/not-an-id")).unwrap();
        assert_eq!(sandbox.container, None);
    }

    #[test]
    fn upper_case_uids_are_read_in_lower_case() {
        assert_eq!(
            uid_of(&format!("/kubepods/pod{}/x", UID.to_uppercase())).as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn the_nodes_own_cgroups_and_near_misses_are_no_pod() {
        for path in [
            "/",
            "",
            "/system.slice/kubelet.service",
            "/system.slice/containerd.service",
            "/user.slice/user-0.slice/session-1.scope",
            "/kubepods",
            "/kubepods.slice/kubepods-burstable.slice",
            // a UID one digit short, a non-hex digit, mixed separators
            "/kubepods/pod0b9a7f3e-5c41-4d2a-9e8f-1234567890a/x",
            "/kubepods/pod0b9a7f3e-5c41-4d2a-9e8f-1234567890ag/x",
            "/kubepods/podzb9a7f3e-5c41-4d2a-9e8f-1234567890ab/x",
            "/kubepods.slice/kubepods-pod0b9a7f3e_5c41-4d2a_9e8f_1234567890ab.slice",
            // a pod slice without its suffix, a UID with a suffix
            "/kubepods.slice/kubepods-pod0b9a7f3e_5c41_4d2a_9e8f_1234567890ab",
            "/kubepods/pod0b9a7f3e-5c41-4d2a-9e8f-1234567890ab.extra/x",
        ] {
            assert_eq!(uid_of(path), None, "{path:?}");
        }
    }

    #[test]
    fn a_pod_segment_inside_a_pod_cannot_stand_for_another_pod() {
        let other = "11111111-2222-3333-4444-555555555555";
        // A privileged workload in pod UID creates a cgroup named after
        // another pod below its own: the path still belongs to UID.
        let path = format!("/kubepods/burstable/pod{UID}/{ID}/kubepods/pod{other}/{ID}");
        assert_eq!(uid_of(&path).as_deref(), Some(UID));
    }

    #[test]
    fn uids_parse_with_either_separator_or_as_a_static_pods_hash() {
        assert_eq!(PodUid::parse(UID).unwrap().as_str(), UID);
        assert_eq!(PodUid::parse(UNDERSCORED).unwrap().as_str(), UID);
        // A static pod's UID is the kubelet's config hash.
        let hash = "0b9a7f3e5c414d2a9e8f1234567890ab";
        assert_eq!(PodUid::parse(hash).unwrap().as_str(), hash);
        let static_pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(uid_of(&static_pod).as_deref(), Some(hash));
        for bad in [
            "",
            UID.trim_end_matches('b'),
            "0b9a7f3e5c414d2a9e8f1234567890a",
            "g".repeat(36).as_str(),
            "g".repeat(32).as_str(),
        ] {
            assert_eq!(PodUid::parse(bad), None, "{bad:?}");
        }
    }
}
