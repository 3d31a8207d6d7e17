//! The cgroup of a TCP socket on this node, asked of the kernel with one
//! `NETLINK_SOCK_DIAG` exact lookup by 4-tuple (`INET_DIAG_CGROUP_ID`,
//! Linux 5.8+). The id is the inode number of the socket's cgroup v2
//! directory, fixed when the socket was created. Only sockets of the
//! agent's network namespace are visible: for host-network callers, whose
//! sockets are the node's.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, socket,
};
use thiserror::Error;

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HEADER: usize = 16;
const INET_DIAG_MSG: usize = 72;
const INET_DIAG_CGROUP_ID: u16 = 21;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u8 = 10;

#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SockDiagError {
    #[error("sock_diag netlink socket: {0}")]
    Socket(Errno),
    #[error("the kernel answered the socket lookup with {0}")]
    Kernel(Errno),
    #[error("the kernel's answer was malformed")]
    Malformed,
    #[error("the kernel reports no cgroup for sockets (Linux 5.8+ is needed)")]
    NoCgroupId,
}

/// The cgroup v2 id of the TCP socket whose local address is `local` and
/// whose peer is `remote`; `None` when no such socket exists (it closed).
pub fn socket_cgroup(local: SocketAddr, remote: SocketAddr) -> Result<Option<u64>, SockDiagError> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(SockDiagError::Socket)?;
    let request = request(local, remote);
    send(socket.as_raw_fd(), &request, MsgFlags::empty()).map_err(SockDiagError::Socket)?;
    let mut answer = [0u8; 1024];
    let len =
        recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty()).map_err(SockDiagError::Socket)?;
    // The kernel's exact lookup falls back to a listening socket on the
    // same port: a caller could bind its source port to a port a
    // hostNetwork pod listens on and be taken for that pod. Only the
    // connected socket with exactly this 4-tuple counts.
    let wanted = &request[NLMSG_HEADER + 8..NLMSG_HEADER + 8 + SOCKID_ADDRESSES];
    parse(&answer[..len], wanted)
}

/// The ports and addresses of an `inet_diag_sockid` (sport, dport, src, dst).
const SOCKID_ADDRESSES: usize = 2 + 2 + 16 + 16;

fn request(local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let family = match local.ip() {
        IpAddr::V4(_) => nix::libc::AF_INET as u8,
        IpAddr::V6(_) => nix::libc::AF_INET6 as u8,
    };
    let mut body = Vec::with_capacity(56);
    body.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    body.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    body.extend_from_slice(&local.port().to_be_bytes());
    body.extend_from_slice(&remote.port().to_be_bytes());
    body.extend_from_slice(&address(local.ip()));
    body.extend_from_slice(&address(remote.ip()));
    body.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    body.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    let mut message = Vec::with_capacity(NLMSG_HEADER + body.len());
    message.extend_from_slice(&((NLMSG_HEADER + body.len()) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    message.extend_from_slice(&0u32.to_ne_bytes()); // to the kernel
    message.extend_from_slice(&body);
    message
}

/// An address as `inet_diag_sockid` holds it: 16 bytes, IPv4 in the first 4.
fn address(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes = v6.octets(),
    }
    bytes
}

fn parse(answer: &[u8], wanted: &[u8]) -> Result<Option<u64>, SockDiagError> {
    let u16_at = |at: usize| -> Option<u16> {
        Some(u16::from_ne_bytes(answer.get(at..at + 2)?.try_into().ok()?))
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(answer.get(at..at + 4)?.try_into().ok()?))
    };
    let len = u32_at(0).ok_or(SockDiagError::Malformed)? as usize;
    let kind = u16_at(4).ok_or(SockDiagError::Malformed)?;
    if len > answer.len() || len < NLMSG_HEADER {
        return Err(SockDiagError::Malformed);
    }
    if kind == NLMSG_ERROR {
        let code = u32_at(NLMSG_HEADER).ok_or(SockDiagError::Malformed)? as i32;
        return match Errno::from_raw(-code) {
            Errno::ENOENT => Ok(None),
            errno => Err(SockDiagError::Kernel(errno)),
        };
    }
    if kind != SOCK_DIAG_BY_FAMILY || len < NLMSG_HEADER + INET_DIAG_MSG {
        return Err(SockDiagError::Malformed);
    }
    // inet_diag_msg: family, state, timer, retrans, then the sockid.
    let state = answer[NLMSG_HEADER + 1];
    let found = &answer[NLMSG_HEADER + 4..NLMSG_HEADER + 4 + SOCKID_ADDRESSES];
    if state == TCP_LISTEN || found != wanted {
        return Ok(None);
    }
    let mut at = NLMSG_HEADER + INET_DIAG_MSG;
    while at + 4 <= len {
        let attr_len = u16_at(at).ok_or(SockDiagError::Malformed)? as usize;
        let attr_kind = u16_at(at + 2).ok_or(SockDiagError::Malformed)?;
        if attr_len < 4 || at + attr_len > len {
            return Err(SockDiagError::Malformed);
        }
        if attr_kind == INET_DIAG_CGROUP_ID && attr_len >= 12 {
            let id = answer[at + 4..at + 12]
                .try_into()
                .map_err(|_| SockDiagError::Malformed)?;
            return Ok(Some(u64::from_ne_bytes(id)));
        }
        at += (attr_len + 3) & !3;
    }
    Err(SockDiagError::NoCgroupId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_of_this_process_is_found_and_a_closed_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
        let id = socket_cgroup(local, remote).unwrap();
        assert!(id.is_some_and(|id| id > 0), "{id:?}");
        drop(client);
        // The client's socket, closed, is gone (or lingers only until
        // the kernel drops it: never a different socket).
        assert_ne!(socket_cgroup(local, remote).unwrap(), Some(0));
        let never: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(socket_cgroup(never, remote), Ok(None));
    }

    #[test]
    fn a_listening_socket_on_the_same_port_does_not_answer_for_a_caller() {
        // A hostNetwork pod listens on a wildcard address; a caller whose
        // source port is that port, from another address, is not it.
        for (wildcard, caller, remote) in [
            ("0.0.0.0:0", "10.255.0.9", "169.254.169.254:80"),
            ("[::]:0", "fd77::9", "[fd00:ec2::254]:80"),
        ] {
            let listener = std::net::TcpListener::bind(wildcard).unwrap();
            let port = listener.local_addr().unwrap().port();
            let local = SocketAddr::new(caller.parse().unwrap(), port);
            assert_eq!(
                socket_cgroup(local, remote.parse().unwrap()),
                Ok(None),
                "{wildcard}"
            );
        }
    }

    #[test]
    fn error_and_short_answers_are_told_apart() {
        let mut error = vec![0u8; 36];
        error[..4].copy_from_slice(&36u32.to_ne_bytes());
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[16..20].copy_from_slice(&(-(Errno::EPERM as i32)).to_ne_bytes());
        let any = [0u8; SOCKID_ADDRESSES];
        assert_eq!(
            parse(&error, &any),
            Err(SockDiagError::Kernel(Errno::EPERM))
        );
        assert_eq!(parse(&error[..10], &any), Err(SockDiagError::Malformed));
        let size = NLMSG_HEADER + INET_DIAG_MSG;
        let mut bare = vec![0u8; size];
        bare[..4].copy_from_slice(&(size as u32).to_ne_bytes());
        bare[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        assert_eq!(parse(&bare, &any), Err(SockDiagError::NoCgroupId));
    }
}
