//! cgroup paths: any text parses without panicking; a pod found has a
//! well-formed UID that occurs in the path (with `-` or `_`), a container
//! id, when found, is 64 hex digits from the path, and a pod segment
//! appended deeper (a cgroup a workload makes inside its pod) never
//! changes which pod the path belongs to.
#![no_main]

use iamlet::identity::{PodUid, pod_of};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    let Some(pod) = pod_of(path) else {
        return;
    };
    let uid = pod.uid.as_str();
    assert_eq!(PodUid::parse(uid).as_ref(), Some(&pod.uid));
    let lower = path.to_ascii_lowercase();
    assert!(lower.contains(uid) || lower.contains(&uid.replace('-', "_")));
    if let Some(container) = &pod.container {
        assert_eq!(container.len(), 64);
        assert!(path.contains(container.as_str()));
    }
    let deeper = format!("{path}/kubepods/pod11111111-2222-3333-4444-555555555555/x");
    assert_eq!(pod_of(&deeper).map(|p| p.uid), Some(pod.uid));
});
