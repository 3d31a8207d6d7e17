//! cgroup paths: any text parses without panicking; a pod found has a
//! well-formed UID that occurs in the path (with `-` or `_`), and a
//! container id, when found, is 64 hex digits from the path.
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
});
