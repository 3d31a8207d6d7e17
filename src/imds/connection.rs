//! What the server knows about a connection before it reads a byte: who is
//! at the other end, how the connection got here, and whether the limits
//! on open connections leave room for it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::debug;

use nix::sys::socket::{SockaddrIn, SockaddrIn6, getsockopt, sockopt};
use tokio::net::TcpStream;

use super::routes::Origin;
use crate::entitlement::{Caller, Refusal, canonical};
use crate::firewall::{METADATA_V4, METADATA_V6};
use crate::identity::{CgroupIdentity, PodUid, Unidentified};
use crate::pods::PodInfo;

#[derive(Clone, Debug)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub origin: Origin,
    /// Where the caller first sent it (`SO_ORIGINAL_DST`), when translated.
    original: Option<SocketAddr>,
    identity: Arc<Identity>,
}

/// Who the kernel says is calling, settled once per connection.
#[derive(Debug)]
struct Identity {
    caller: Result<Caller, Unidentified>,
    /// The pod (UID) whose cgroup was found on this node for this
    /// connection, so that a kept-alive connection is checked once.
    verified: Mutex<Option<String>>,
}

impl Connection {
    pub fn of(stream: &TcpStream, peer: SocketAddr) -> Self {
        // An accepted socket always has a local address; should reading it
        // fail, the unspecified address matches no caller, so the
        // connection gets no node-local privilege.
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let original = original_destination(stream, local);
        let origin = match original {
            Some(to) if is_metadata(to.ip()) => Origin::Dnat,
            _ => Origin::Direct,
        };
        Connection {
            peer,
            local,
            origin,
            original,
            identity: Arc::new(Identity {
                caller: Ok(Caller::Address(canonical(peer.ip()))),
                verified: Mutex::new(None),
            }),
        }
    }

    /// Names a caller on the node's network ([`Connection::may_be_host_network`],
    /// which the caller of this checks first): a hostNetwork pod sent here
    /// by the `output` rule, named by its socket's cgroup; if it cannot be
    /// named, nothing is served on the connection. Done once, before the
    /// first request (it may walk the pod tree: not on the runtime's threads).
    pub fn identified(mut self, cgroups: &CgroupIdentity) -> Self {
        // Through the DNAT, the socket is the caller's to the metadata
        // address; sent straight here (the container credentials endpoint),
        // to this listener's address.
        let original = self.original.unwrap_or(self.local);
        let caller = match cgroups.pod_of_socket(self.peer, original) {
            Ok(uid) => Ok(Caller::HostNetworkPod(uid)),
            Err(why) => {
                debug!(peer = %self.peer, %why, "a caller on the node's network could not be named");
                Err(why)
            }
        };
        self.identity = Arc::new(Identity {
            caller,
            verified: Mutex::new(None),
        });
        self
    }

    /// Whether the caller may be a process on the node's network: it came
    /// through the DNAT from one of the node's own addresses (a pod with a
    /// network of its own never has one). Any other caller is its address.
    pub fn may_be_host_network(&self, cgroups: &CgroupIdentity) -> bool {
        self.origin == Origin::Dnat && cgroups.is_node_address(canonical(self.peer.ip()))
    }

    /// [`Connection::may_be_host_network`] for the container credentials
    /// endpoint, which pods reach without a DNAT: any caller from one of
    /// the node's own addresses.
    pub fn may_be_host_network_direct(&self, cgroups: &CgroupIdentity) -> bool {
        cgroups.is_node_address(canonical(self.peer.ip()))
    }

    /// Whose budget a request spends: the caller as named, or (when it
    /// could not be named) its address.
    pub fn limit_key(&self) -> Caller {
        match &self.identity.caller {
            Ok(caller) => caller.clone(),
            Err(_) => Caller::Address(canonical(self.peer.ip())),
        }
    }

    /// The caller, or why the node could not name it.
    pub fn caller(&self) -> Result<&Caller, Refusal> {
        self.identity
            .caller
            .as_ref()
            .map_err(|why| Refusal::Unidentified(why.clone()))
    }

    /// For a caller known by its address: confirms that the pod the index
    /// names still has its cgroup on this node (a pod deleted here is never
    /// served, whatever the watch still says). Checked once per connection
    /// and pod; without usable cgroups there is nothing to check.
    pub fn verify(&self, pod: &PodInfo, cgroups: Option<&CgroupIdentity>) -> Result<(), Refusal> {
        let (Some(cgroups), Ok(Caller::Address(_))) = (cgroups, &self.identity.caller) else {
            return Ok(());
        };
        let mut verified = self
            .identity
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if verified.as_deref() == Some(pod.uid.as_str()) {
            return Ok(());
        }
        let here = PodUid::parse(&pod.uid).is_some_and(|uid| cgroups.pod_is_here(&uid));
        if !here {
            return Err(Refusal::NotOnNode { pod: pod.key() });
        }
        *verified = Some(pod.uid.clone());
        Ok(())
    }
}

impl Connection {
    /// From a process on the node itself: its source is the node's address
    /// it connected to, or loopback's. (A pod could claim such an address
    /// only as a hostNetwork pod, which shares the node's.)
    pub fn from_node(&self) -> bool {
        let caller = canonical(self.peer.ip());
        caller == canonical(self.local.ip())
            || caller == IpAddr::from([127, 0, 0, 1])
            || caller == std::net::Ipv6Addr::LOCALHOST
    }
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::Dnat => "dnat",
            Origin::Direct => "direct",
        }
    }
}

fn is_metadata(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    ip == IpAddr::V4(METADATA_V4) || ip == IpAddr::V6(METADATA_V6)
}

/// Where conntrack says the connection was first addressed
/// (`SO_ORIGINAL_DST`): through the DNAT when that is a metadata address.
/// A connection conntrack did not translate reports its own local address,
/// or nothing.
fn original_destination(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    match local {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst).ok().map(|raw| {
            let raw = SockaddrIn::from(raw);
            SocketAddr::new(IpAddr::V4(raw.ip()), raw.port())
        }),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|raw| {
                let raw = SockaddrIn6::from(raw);
                SocketAddr::new(IpAddr::V6(raw.ip()), raw.port())
            }),
    }
}

/// Caps on connections open at once, per source address and in all, so
/// that no pod can hold the agent's memory or file descriptors.
#[derive(Debug)]
pub struct ConnectionLimits {
    per_source: usize,
    total: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverLimit {
    PerSource,
    Total,
}

impl OverLimit {
    pub fn label(self) -> &'static str {
        match self {
            OverLimit::PerSource => "per-source-limit",
            OverLimit::Total => "total-limit",
        }
    }
}

/// A place taken by one open connection; given back on drop.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<ConnectionLimits>,
    source: IpAddr,
}

impl ConnectionLimits {
    /// Zero disables a cap.
    pub fn new(per_source: usize, total: usize) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            per_source: if per_source == 0 {
                usize::MAX
            } else {
                per_source
            },
            total: if total == 0 { usize::MAX } else { total },
            open: Mutex::new(Open::default()),
        })
    }

    /// Takes a place for a connection from `source`. Callers on the node
    /// itself (kubelet's probes, Prometheus) are held to the per-source cap
    /// only, so that pods filling the total cannot get the agent restarted.
    pub fn admit(
        self: &Arc<Self>,
        source: IpAddr,
        node_local: bool,
    ) -> Result<Admitted, OverLimit> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total && !node_local {
            return Err(OverLimit::Total);
        }
        let count = open.by_source.entry(source).or_default();
        if *count >= self.per_source {
            return Err(OverLimit::PerSource);
        }
        *count += 1;
        open.total += 1;
        Ok(Admitted {
            limits: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
            open.total -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const C: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));

    #[test]
    fn caps_per_source_and_in_all_and_gives_places_back() {
        let limits = ConnectionLimits::new(2, 3);
        let a1 = limits.admit(A, false).unwrap();
        let _a2 = limits.admit(A, false).unwrap();
        assert_eq!(limits.admit(A, false).unwrap_err(), OverLimit::PerSource);
        let _b1 = limits.admit(B, false).unwrap();
        assert_eq!(limits.admit(C, false).unwrap_err(), OverLimit::Total);
        assert_eq!(limits.open(), 3);
        let node = limits
            .admit(C, true)
            .expect("the node is not held to the total");
        drop(node);
        drop(a1);
        assert_eq!(limits.open(), 2);
        assert!(limits.admit(C, false).is_ok());
    }

    #[test]
    fn from_the_node_means_the_local_address_or_loopback() {
        let connection = |peer: &str, local: &str| Connection {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
            origin: Origin::Direct,
            original: None,
            identity: Arc::new(Identity {
                caller: Ok(Caller::Address(peer.parse::<SocketAddr>().unwrap().ip())),
                verified: Mutex::new(None),
            }),
        };
        assert!(connection("10.0.0.5:4000", "10.0.0.5:8181").from_node());
        assert!(connection("[::ffff:10.0.0.5]:4000", "10.0.0.5:8181").from_node());
        assert!(connection("127.0.0.1:4000", "10.0.0.5:8181").from_node());
        assert!(connection("[::1]:4000", "[fd00::5]:8181").from_node());
        assert!(!connection("10.0.0.11:4000", "10.0.0.5:8181").from_node());
        assert!(!connection("127.0.5.10:4000", "127.0.0.1:8181").from_node());
        assert!(!connection("10.0.0.5:4000", "0.0.0.0:0").from_node());
    }

    #[test]
    fn zero_disables_a_cap() {
        let limits = ConnectionLimits::new(0, 0);
        let held: Vec<_> = (0..1000).map(|_| limits.admit(A, false).unwrap()).collect();
        assert_eq!(limits.open(), held.len());
    }
}
