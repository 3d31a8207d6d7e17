//! Who is calling, from what the node's kernel knows rather than from the
//! source address alone: the pod a cgroup belongs to.

pub mod cgroup;
pub mod cgroups;
pub mod sockdiag;

pub use cgroup::{PodCgroup, PodUid, pod_of};
pub use cgroups::{
    CgroupIdentity, CgroupNamespace, PodTreeMatch, Unidentified, Unusable, cgroup_namespace,
    node_addresses, pod_from_environment,
};
pub use sockdiag::{SockDiagError, socket_cgroup};
