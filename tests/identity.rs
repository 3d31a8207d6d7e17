//! Identity from the kernel, on this machine's real cgroup v2 hierarchy: a
//! process moved into a cgroup laid out as the kubelet lays out a pod's
//! container opens a connection; the kernel's socket lookup names that
//! cgroup, and the cgroup's path names the pod. Needs root.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use iamlet::identity::{CgroupIdentity, PodUid, pod_of, socket_cgroup};

const UID: &str = "6c0f2b9e-1d3a-4f5b-8c7d-9e0a1b2c3d4e";
const ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// A kubelet-shaped subtree of the real hierarchy, removed on drop with the
/// process moved into it.
struct PodCgroupTree {
    top: PathBuf,
    leaf: PathBuf,
    child: Option<Child>,
}

impl PodCgroupTree {
    fn new() -> PodCgroupTree {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let top = iamlet::identity::cgroups::cgroup2_mount()
            .expect("a cgroup v2 mount")
            .join(format!("iamlet-identity-{}-{n}", std::process::id()));
        let leaf = top.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ));
        std::fs::create_dir_all(&leaf).unwrap();
        PodCgroupTree {
            top,
            leaf,
            child: None,
        }
    }

    /// A process in the leaf cgroup that connects to `port` and waits.
    fn connect_from_inside(&mut self, port: u16) {
        let procs = self.leaf.join("cgroup.procs");
        let script = format!(
            "echo $$ > {} && exec python3 -c 'import socket, sys, time; s = socket.create_connection((\"127.0.0.1\", {port})); print(\"connected\", flush=True); time.sleep(30)'",
            procs.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "connected");
        self.child = Some(child);
    }
}

impl Drop for PodCgroupTree {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Leaves first: a cgroup directory goes only when empty.
        let mut dirs = vec![];
        let mut dir: &Path = &self.leaf;
        while dir.starts_with(&self.top) {
            dirs.push(dir.to_path_buf());
            dir = dir.parent().unwrap();
        }
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn the_kernel_names_the_cgroup_of_a_connection_and_its_path_names_the_pod() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tree = PodCgroupTree::new();
    tree.connect_from_inside(listener.local_addr().unwrap().port());
    let (_accepted, peer) = listener.accept().unwrap();

    // The agent's question: whose is the socket at the other end?
    let id = socket_cgroup(peer, listener.local_addr().unwrap())
        .unwrap()
        .expect("the client's socket");
    assert_eq!(
        id,
        std::fs::metadata(&tree.leaf).unwrap().ino(),
        "the id is the inode of the container's cgroup directory"
    );

    // The process's own view of its cgroup names the same pod.
    let pid = tree.child.as_ref().unwrap().id();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2 = cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let pod = pod_of(v2).unwrap_or_else(|| panic!("no pod in {v2}"));
    assert_eq!(pod.uid.as_str(), UID);
    assert_eq!(pod.container.as_deref(), Some(ID));

    // The agent's own end of the connection is in the agent's cgroup,
    // which names no pod.
    let own = socket_cgroup(listener.local_addr().unwrap(), peer)
        .unwrap()
        .expect("the accepted socket");
    assert_ne!(own, id);
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mine = mine.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    assert_eq!(pod_of(mine), None, "{mine}");
}

#[test]
fn the_agents_view_of_the_tree_names_a_callers_pod_and_forgets_a_deleted_one() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut tree = PodCgroupTree::new();
    let identity = CgroupIdentity::probe(&tree.top).expect("a usable cgroup root");
    // nft finds the pod tree by its path under /sys/fs/cgroup, at its depth
    // below the cgroup v2 root.
    let matched = identity.pod_tree_match().expect("under /sys/fs/cgroup");
    let mount = iamlet::identity::cgroups::cgroup2_mount().expect("a cgroup v2 mount");
    let below_mount = tree.top.strip_prefix(&mount).unwrap();
    assert_eq!(matched.level, below_mount.components().count() + 1);
    assert!(matched.path.ends_with("/kubepods.slice"), "{matched:?}");
    assert!(Path::new("/sys/fs/cgroup").join(&matched.path).is_dir());

    tree.connect_from_inside(listener.local_addr().unwrap().port());
    let (_accepted, peer) = listener.accept().unwrap();
    let uid = identity
        .pod_of_socket(peer, listener.local_addr().unwrap())
        .expect("the caller's pod");
    assert_eq!(uid.as_str(), UID);
    assert!(identity.pod_is_here(&uid));
    let stranger = PodUid::parse("11111111-2222-3333-4444-555555555555").unwrap();
    assert!(!identity.pod_is_here(&stranger));
    // The agent's own socket is in no pod.
    assert!(
        identity
            .pod_of_socket(listener.local_addr().unwrap(), peer)
            .is_err()
    );

    // The kubelet removes a deleted pod's cgroups: the pod is no longer here.
    drop(tree);
    std::thread::sleep(iamlet::identity::cgroups::REFRESH_AT_MOST);
    assert!(!identity.pod_is_here(&uid));
}
