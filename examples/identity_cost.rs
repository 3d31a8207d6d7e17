//! What identity from the kernel adds to a new connection, measured on this
//! machine's real cgroup v2 hierarchy (needs root):
//!
//! - every connection that came through the DNAT pays one sock_diag lookup
//!   (found for a hostNetwork pod's socket, not found for a pod with its
//!   own network namespace);
//! - a hostNetwork pod's then maps its cgroup id to the pod (a map lookup);
//! - a pod known by its address pays one check that its cgroup exists.
//!
//! A kept-alive connection pays none of it again. Run:
//! `sudo cargo run --release --example identity_cost [ITERATIONS]`
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::Instant;

use iamlet::identity::{CgroupIdentity, PodUid, socket_cgroup};

const UID: &str = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";

fn report(what: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{what:<48} p50 {:>6.1} us   p99 {:>6.1} us   mean {:>6.1} us",
        at(0.5),
        at(0.99),
        samples.iter().sum::<f64>() / samples.len() as f64
    );
}

fn time(iterations: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..iterations)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |n| n.parse().unwrap());
    let top = iamlet::identity::cgroups::cgroup2_mount()
        .expect("a cgroup v2 mount")
        .join(format!("iamlet-cost-{}", std::process::id()));
    let pod = top.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID.replace('-', "_")
    ));
    // A node's worth of pods: 110 pod cgroups with a container each.
    for n in 0..110 {
        let other = top.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{n:08x}_0000_4000_8000_000000000000.slice/cri-containerd-{}.scope",
            "cd".repeat(32)
        ));
        std::fs::create_dir_all(other).unwrap();
    }
    std::fs::create_dir_all(pod.join(format!("cri-containerd-{}.scope", "ab".repeat(32)))).unwrap();
    let identity = CgroupIdentity::probe(&top).unwrap();
    let uid = PodUid::parse(UID).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    let absent: std::net::SocketAddr = "10.255.0.1:40000".parse().unwrap();

    println!("{iterations} iterations, 111 pods' cgroups");
    report(
        "sock_diag lookup, socket found (host network)",
        time(iterations, || {
            socket_cgroup(local, remote).unwrap().unwrap();
        }),
    );
    report(
        "sock_diag lookup, no such socket (pod network)",
        time(iterations, || {
            assert!(socket_cgroup(absent, remote).unwrap().is_none());
        }),
    );
    use std::os::unix::fs::MetadataExt;
    let container =
        std::fs::metadata(pod.join(format!("cri-containerd-{}.scope", "ab".repeat(32))))
            .unwrap()
            .ino();
    report(
        "cgroup id to pod (a container of a known pod)",
        time(iterations, || {
            assert_eq!(identity.pod_of_cgroup(container).as_ref(), Some(&uid));
        }),
    );
    // An id the map does not hold walks the tree again (at most every
    // 100 ms): the cost of one walk of 111 pods.
    let outside = socket_cgroup(local, remote).unwrap().unwrap();
    report(
        "a walk of the tree (an unknown id, every 100 ms)",
        time(20, || {
            std::thread::sleep(iamlet::identity::cgroups::REFRESH_AT_MOST);
            let started = Instant::now();
            let _ = identity.pod_of_cgroup(outside);
            std::hint::black_box(started);
        })
        .into_iter()
        .map(|us| us - iamlet::identity::cgroups::REFRESH_AT_MOST.as_secs_f64() * 1e6)
        .collect(),
    );
    report(
        "pod still has its cgroup here",
        time(iterations, || {
            assert!(identity.pod_is_here(&uid));
        }),
    );

    drop(client);
    fn remove(dir: &std::path::Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().unwrap().is_dir() {
                    remove(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    remove(&top);
}
