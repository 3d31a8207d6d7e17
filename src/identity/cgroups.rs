//! The node's pod cgroups, as the agent sees them under `--cgroup-root`
//! (the host's cgroup v2 hierarchy): which pod a cgroup id belongs to, and
//! whether a pod still has its cgroup on this node.
//!
//! The map from cgroup ids (directory inodes) to pods is built by walking
//! the kubelet's `kubepods` tree and walked again when an id or a pod is
//! not in it, at most every [`REFRESH_AT_MOST`]: a flood of unknown ids
//! costs one walk per interval, not one per connection.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::cgroup::{PodUid, pod_of};
use super::sockdiag::{SockDiagError, socket_cgroup};

/// The least time between two walks of the tree.
pub const REFRESH_AT_MOST: Duration = Duration::from_millis(100);
/// The kubelet's pod tree is a few levels deep (QoS, pod, container, and
/// runtimes' own sub-cgroups); nothing deeper is walked.
const MAX_DEPTH: usize = 6;
/// Where nft resolves `socket cgroupv2` paths.
const NFT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Why the cgroup root cannot identify pods: the agent then works from
/// addresses alone, as kube2iam does.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Unusable {
    #[error("{0} is not a cgroup v2 hierarchy (cgroup v1, or not the host's cgroup mount)")]
    NotCgroup2(PathBuf),
    #[error(
        "{0} has no kubepods or kubepods.slice cgroup (not the host's hierarchy, or no kubelet here)"
    )]
    NoKubepods(PathBuf),
}

/// Why a host-network caller's pod could not be named.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum Unidentified {
    #[error("the calling socket is gone")]
    SocketGone,
    #[error("cannot ask the kernel about the calling socket: {0}")]
    Lookup(SockDiagError),
    #[error("the calling socket's cgroup ({0}) belongs to no pod on this node")]
    NotAPod(u64),
}

/// How nft names the kubelet's pod tree in a `socket cgroupv2` match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTreeMatch {
    /// The `kubepods` cgroup, relative to `/sys/fs/cgroup`.
    pub path: String,
    /// Its depth below the cgroup v2 root (`kubepods.slice` on a host: 1).
    pub level: usize,
    /// Pod cgroups in the tree whose sockets the rules leave alone: the
    /// agent's own pod (a DaemonSet pod is in the tree), whose calls to
    /// the real metadata service must reach it, not the agent itself.
    pub exempt: Vec<PodTreeMatch>,
    /// The cgroup namespace to load the rules from (the host's), when the
    /// agent runs in one of its own: the kernel counts a rule's level from
    /// the root of the loader's cgroup namespace, and a container's root
    /// is its own cgroup, below the pod tree.
    pub load_from: Option<PathBuf>,
}

/// Where the agent stands with cgroup namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupNamespace {
    /// The host's: levels count from the hierarchy's root.
    Host,
    /// One of its own, and another (the host's) is reachable here (through
    /// `/proc/1/ns/cgroup` with the host's PID namespace).
    OwnWithHost(PathBuf),
    /// One of its own and no way to the host's.
    Own,
}

/// Which cgroup namespace this process is in, judged by the kernel: the
/// cgroup its own socket is in must be the directory `/proc/self/cgroup`
/// names under the hierarchy mounted at `mount`. `host` is where the
/// host's namespace may be found.
pub fn cgroup_namespace(mount: &Path, host: &Path) -> CgroupNamespace {
    use std::os::unix::fs::MetadataExt;
    let named = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("0::").map(str::to_string))
        });
    let own = own_socket_cgroup();
    let in_host = match (named, own) {
        (Some(path), Some(id)) => std::fs::metadata(mount.join(path.trim_start_matches('/')))
            .is_ok_and(|meta| meta.ino() == id),
        // Cannot tell: take the host's (what every earlier release assumed).
        _ => true,
    };
    if in_host {
        return CgroupNamespace::Host;
    }
    let ino = |path: &Path| std::fs::metadata(path).ok().map(|m| m.ino());
    match (ino(host), ino(Path::new("/proc/self/ns/cgroup"))) {
        (Some(theirs), Some(ours)) if theirs != ours => {
            CgroupNamespace::OwnWithHost(host.to_path_buf())
        }
        _ => CgroupNamespace::Own,
    }
}

#[derive(Debug, Default)]
struct PodMap {
    by_id: HashMap<u64, PodUid>,
    pod_dirs: HashMap<PodUid, PathBuf>,
    walked: Option<Instant>,
}

#[derive(Debug)]
pub struct CgroupIdentity {
    kubepods: PathBuf,
    tree: Option<PodTreeMatch>,
    map: Mutex<PodMap>,
    /// Held while the tree is walked: one walk at a time, and callers that
    /// waited for it use its result instead of walking again.
    walking: Mutex<()>,
    /// The node's own addresses (those of the agent's network namespace),
    /// read again on a miss at most every [`ADDRESSES_AT_MOST`].
    addresses: Mutex<(HashSet<IpAddr>, Option<Instant>)>,
    /// The pod the agent itself runs in, when it runs in one.
    agent_pod: Option<PodUid>,
}

/// The least time between two readings of the node's addresses.
const ADDRESSES_AT_MOST: Duration = Duration::from_secs(1);

impl CgroupIdentity {
    /// Checks that `root` is a cgroup v2 hierarchy with the kubelet's pod
    /// tree in it, and reads the tree once.
    pub fn probe(root: &Path) -> Result<CgroupIdentity, Unusable> {
        let cgroup2 = nix::sys::statfs::statfs(root)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if !cgroup2 {
            return Err(Unusable::NotCgroup2(root.to_path_buf()));
        }
        let kubepods = ["kubepods.slice", "kubepods"]
            .iter()
            .map(|name| root.join(name))
            .find(|dir| dir.is_dir())
            .ok_or_else(|| Unusable::NoKubepods(root.to_path_buf()))?;
        let identity = CgroupIdentity {
            tree: pod_tree_match(&kubepods),
            kubepods,
            map: Mutex::default(),
            walking: Mutex::new(()),
            addresses: Mutex::default(),
            agent_pod: None,
        };
        identity.walk();
        Ok(identity)
    }

    /// How an nft rule can match sockets of pods, when the hierarchy is
    /// under `/sys/fs/cgroup` where nft looks for it.
    pub fn pod_tree_match(&self) -> Option<&PodTreeMatch> {
        self.tree.as_ref()
    }

    /// The pod the agent runs in: the pod whose cgroup holds a socket the
    /// agent opens now (the kernel's word, whatever the cgroup namespace
    /// shows in `/proc/self/cgroup`), else what the environment says
    /// ([`pod_from_environment`]); `None` outside a pod.
    pub fn find_agent_pod(&self) -> Option<PodUid> {
        own_socket_cgroup()
            .and_then(|id| self.pod_of_cgroup(id))
            .or_else(pod_from_environment)
    }

    /// Records `uid` as the agent's own pod and leaves its sockets out of
    /// the pod tree's match. False when the pod has no cgroup here to
    /// leave out.
    pub fn exempt_agent_pod(&mut self, uid: PodUid) -> bool {
        let dir = self.lock().pod_dirs.get(&uid).cloned();
        self.agent_pod = Some(uid);
        let Some(exempt) = dir.as_deref().and_then(pod_tree_match) else {
            return false;
        };
        if let Some(tree) = self.tree.as_mut() {
            tree.exempt = vec![exempt];
        }
        true
    }

    /// Loads the pod tree's rules from the cgroup namespace at `path`.
    pub fn load_rules_from(&mut self, path: PathBuf) {
        if let Some(tree) = self.tree.as_mut() {
            tree.load_from = Some(path);
        }
    }

    /// No rules for the pod tree: they could not match (see
    /// [`CgroupNamespace::Own`]).
    pub fn without_pod_tree_rules(&mut self) {
        self.tree = None;
    }

    /// [`CgroupIdentity::pod_of_socket`], but a socket in a cgroup the last
    /// walk did not know is looked up again after a fresh walk, however
    /// recent the last: a pod whose cgroup appeared a moment ago is still
    /// a pod. For decisions that admit what is *not* a pod.
    pub fn pod_of_socket_fresh(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<PodUid, Unidentified> {
        match self.pod_of_socket(local, remote) {
            Err(Unidentified::NotAPod(id)) => {
                {
                    let _walking = self.walking.lock().unwrap_or_else(PoisonError::into_inner);
                    self.walk();
                }
                let found = self.lock().by_id.get(&id).cloned();
                found.ok_or(Unidentified::NotAPod(id))
            }
            other => other,
        }
    }

    /// The pod the agent runs in, once found.
    pub fn agent_pod(&self) -> Option<&PodUid> {
        self.agent_pod.as_ref()
    }

    /// Whether `ip` is one of the node's own addresses: a connection from
    /// one came from a process on the node's network (a hostNetwork pod
    /// sent here by the `output` rule), never from a pod with a network of
    /// its own.
    pub fn is_node_address(&self, ip: IpAddr) -> bool {
        let recent = {
            let addresses = self
                .addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if addresses.0.contains(&ip) {
                return true;
            }
            addresses
                .1
                .is_some_and(|at| at.elapsed() < ADDRESSES_AT_MOST)
        };
        if recent {
            return false;
        }
        let now = node_addresses();
        let found = now.contains(&ip);
        *self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = (now, Some(Instant::now()));
        found
    }

    /// The pod whose process owns the TCP socket `local` -> `remote` on
    /// this node (a host-network caller: its socket is the node's).
    pub fn pod_of_socket(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<PodUid, Unidentified> {
        let id = socket_cgroup(local, remote)
            .map_err(Unidentified::Lookup)?
            .ok_or(Unidentified::SocketGone)?;
        self.pod_of_cgroup(id).ok_or(Unidentified::NotAPod(id))
    }

    /// The pod a cgroup id belongs to.
    pub fn pod_of_cgroup(&self, id: u64) -> Option<PodUid> {
        if let Some(uid) = self.lock().by_id.get(&id) {
            return Some(uid.clone());
        }
        self.walk_again();
        self.lock().by_id.get(&id).cloned()
    }

    /// Whether the pod still has its cgroup on this node: a pod deleted
    /// here has none, whatever the API server's watch still says.
    pub fn pod_is_here(&self, uid: &PodUid) -> bool {
        let known = self.lock().pod_dirs.get(uid).cloned();
        if let Some(dir) = known
            && dir.is_dir()
        {
            return true;
        }
        self.walk_again();
        let found = self.lock().pod_dirs.get(uid).cloned();
        found.is_some_and(|dir| dir.is_dir())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PodMap> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Walks the tree again unless it was walked within [`REFRESH_AT_MOST`]
    /// (by this caller or one it waited for).
    fn walk_again(&self) {
        let _walking = self.walking.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = self
            .lock()
            .walked
            .is_some_and(|at| at.elapsed() < REFRESH_AT_MOST);
        if !recent {
            self.walk();
        }
    }

    fn walk(&self) {
        let mut map = PodMap {
            walked: Some(Instant::now()),
            ..PodMap::default()
        };
        walk_dir(&self.kubepods, &self.kubepods, 0, &mut map);
        *self.lock() = map;
    }
}

fn walk_dir(kubepods: &Path, dir: &Path, depth: usize, map: &mut PodMap) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        // The directory entry's own type and inode: no stat of the many
        // interface files every cgroup directory holds.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let inode = std::os::unix::fs::DirEntryExt::ino(&entry);
        let path = entry.path();
        let relative = path
            .strip_prefix(kubepods)
            .map(|p| format!("/{}", p.display()))
            .unwrap_or_default();
        if let Some(pod) = pod_of(&relative) {
            if is_pod_level(&relative) {
                map.pod_dirs.insert(pod.uid.clone(), path.clone());
            }
            map.by_id.insert(inode, pod.uid);
        }
        if depth < MAX_DEPTH {
            walk_dir(kubepods, &path, depth + 1, map);
        }
    }
}

/// Whether a path ends at the pod's own cgroup: it names a pod and its
/// parent does not.
fn is_pod_level(relative: &str) -> bool {
    let parent = relative.rsplit_once('/').map_or("", |(parent, _)| parent);
    pod_of(relative).is_some() && pod_of(parent).is_none()
}

/// The addresses of the agent's network namespace (the node's, on the
/// host network).
pub fn node_addresses() -> HashSet<IpAddr> {
    nix::ifaddrs::getifaddrs()
        .map(|all| {
            all.filter_map(|a| {
                let address = a.address?;
                address
                    .as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            })
            .collect()
        })
        .unwrap_or_default()
}

/// The cgroup id of a TCP socket this process opens now (a connection
/// to itself on loopback): the cgroup it runs in.
fn own_socket_cgroup() -> Option<u64> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
    let server = listener.local_addr().ok()?;
    let client = std::net::TcpStream::connect(server).ok()?;
    let local = client.local_addr().ok()?;
    crate::identity::socket_cgroup(local, server).ok().flatten()
}

/// The pod this process runs in by what it is told: `$POD_UID` (the
/// downward API's `metadata.uid`, which the manifests set), else what
/// `/proc/self/cgroup` names (nothing inside a cgroup namespace).
pub fn pod_from_environment() -> Option<PodUid> {
    if let Some(uid) = std::env::var("POD_UID")
        .ok()
        .and_then(|uid| PodUid::parse(uid.trim()))
    {
        return Some(uid);
    }
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(pod_of)
        .map(|pod| pod.uid)
}

/// A cgroup (`kubepods`, or a pod's) relative to `/sys/fs/cgroup`, and its
/// level in the cgroup v2 hierarchy (found from the mount it lives on).
fn pod_tree_match(kubepods: &Path) -> Option<PodTreeMatch> {
    let path = kubepods.strip_prefix(NFT_CGROUP_ROOT).ok()?;
    let mount = cgroup2_mount_of(kubepods)?;
    let level = kubepods.strip_prefix(&mount).ok()?.components().count();
    Some(PodTreeMatch {
        path: path.to_string_lossy().into_owned(),
        level,
        exempt: Vec::new(),
        load_from: None,
    })
}

/// The mount point of the cgroup v2 filesystem that holds `path`.
fn cgroup2_mount_of(path: &Path) -> Option<PathBuf> {
    cgroup2_mounts()
        .into_iter()
        .filter(|mount| path.starts_with(mount))
        .max_by_key(|mount| mount.components().count())
}

/// Where this process sees the cgroup v2 hierarchy mounted:
/// `/sys/fs/cgroup` on a v2 host, `/sys/fs/cgroup/unified` on a hybrid one.
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mounts().into_iter().next()
}

/// Every mount of the cgroup v2 filesystem (from `/proc/self/mountinfo`).
fn cgroup2_mounts() -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            if after.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(before.split_whitespace().nth(4)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_no_cgroup2_hierarchy_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            CgroupIdentity::probe(dir.path()).unwrap_err(),
            Unusable::NotCgroup2(dir.path().to_path_buf())
        );
    }

    #[test]
    fn pod_level_segments_are_told_from_container_ones() {
        let uid = "0b9a7f3e_5c41_4d2a_9e8f_1234567890ab";
        let pod = format!("/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice");
        assert!(is_pod_level(&pod));
        assert!(!is_pod_level(&format!("{pod}/cri-containerd-1.scope")));
        // A pod-like name inside a pod is not a pod's own cgroup.
        assert!(!is_pod_level(&format!(
            "{pod}/kubepods-pod11111111_2222_3333_4444_555555555555.slice"
        )));
        assert!(!is_pod_level("/kubepods-besteffort.slice"));
    }
}
