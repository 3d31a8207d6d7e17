//! Connection-tracking entries that would keep pods talking to the real
//! metadata service after the rules are in.
//!
//! NAT is decided on a connection's first packet and remembered in its
//! conntrack entry: a pod that opened a keep-alive connection to
//! 169.254.169.254 before iamlet's DNAT existed keeps reaching the real
//! service (and the node's credentials) for as long as that connection
//! lives. Deleting the entry ends that: the connection's next packet is
//! tracked afresh, meets the DNAT, reaches the agent, which has no such
//! connection and resets it. Entries already translated to the agent are
//! left alone.
//!
//! Spoken directly over ctnetlink (a dump, then a delete per entry): the
//! image carries no `conntrack` binary, and the kernel's own filters for
//! a delete cannot say "not translated to this address".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};
use thiserror::Error;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const HEADER_LEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_TCP: u8 = 6;

#[derive(Debug, Error)]
pub enum ConntrackError {
    #[error("cannot open a netfilter netlink socket: {0}")]
    Socket(Errno),
    #[error("conntrack {what} failed: {errno}")]
    Request { what: &'static str, errno: Errno },
    #[error("malformed conntrack message from the kernel")]
    Malformed,
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Entries to a metadata address that bypassed the agent, deleted.
    pub deleted: usize,
    /// Entries to a metadata address already sent to the agent, kept.
    pub kept: usize,
    /// Entries read in all (the node's whole table, both families).
    pub tracked: usize,
}

/// Whose connections a flush may cut, by original source and destination:
/// pods', not the node's own processes' (which the rules never catch).
pub type CutFilter = std::sync::Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// Deletes the TCP entries whose original destination is one of
/// `metadata`, whose replies do not come from one of `agent` (the DNAT
/// targets: they reach the real service, or an address another agent's
/// rules sent them to) and that `cut` accepts. Blocking: run it off the
/// runtime.
pub fn flush_bypassing(
    metadata: &[SocketAddr],
    agent: &[SocketAddr],
    cut: &CutFilter,
) -> Result<Flushed, ConntrackError> {
    let socket = open()?;
    let mut flushed = Flushed::default();
    let mut families: Vec<u8> = metadata.iter().map(|a| family_of(a.ip())).collect();
    families.dedup();
    for family in families {
        for entry in dump(&socket, family)? {
            flushed.tracked += 1;
            if entry.protocol != IPPROTO_TCP {
                continue;
            }
            // The client's end and the service's: an entry is normally
            // tracked from the client's first packet, but one deleted
            // mid-stream is tracked again from whichever end sends next,
            // and when that is the service, the entry is reversed.
            let (client, service) = if metadata.contains(&entry.original_destination) {
                (entry.original_source, entry.original_destination)
            } else if let Some(source) = entry
                .original_source
                .filter(|source| metadata.contains(source))
            {
                (Some(entry.original_destination), source)
            } else {
                continue;
            };
            if metadata.contains(&entry.original_destination)
                && entry.reply_source.is_some_and(|from| is_agent(from, agent))
            {
                flushed.kept += 1;
                continue;
            }
            if !client.is_some_and(|from| cut(from, service)) {
                continue;
            }
            if delete(&socket, family, &entry)? {
                flushed.deleted += 1;
            }
        }
    }
    Ok(flushed)
}

/// A reply from the agent's address (any address, for an agent listening
/// on all of them) and port.
fn is_agent(from: SocketAddr, agent: &[SocketAddr]) -> bool {
    agent
        .iter()
        .any(|a| a.port() == from.port() && (a.ip() == from.ip() || a.ip().is_unspecified()))
}

fn family_of(ip: IpAddr) -> u8 {
    let family = match ip {
        IpAddr::V4(_) => nix::libc::AF_INET,
        IpAddr::V6(_) => nix::libc::AF_INET6,
    };
    family as u8
}

fn open() -> Result<OwnedFd, ConntrackError> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(ConntrackError::Socket)?;
    bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(ConntrackError::Socket)?;
    Ok(socket)
}

/// One tracked connection, as much of it as the flush needs, and the raw
/// attributes that name it in a delete.
#[derive(Debug)]
struct Entry {
    protocol: u8,
    original_source: Option<SocketAddr>,
    original_destination: SocketAddr,
    reply_source: Option<SocketAddr>,
    /// `CTA_TUPLE_ORIG`'s payload, sent back as it came.
    original_tuple: Vec<u8>,
    id: Option<Vec<u8>>,
    zone: Option<Vec<u8>>,
}

fn dump(socket: &OwnedFd, family: u8) -> Result<Vec<Entry>, ConntrackError> {
    let request = message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, family, &[]);
    transmit(socket, &request, "dump")?;
    let mut entries = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let received = receive(socket, &mut buffer, "dump")?;
        for (kind, payload) in messages(&buffer[..received])? {
            match kind {
                NLMSG_DONE => return Ok(entries),
                NLMSG_ERROR => match error_code(payload)? {
                    0 => {}
                    errno => {
                        return Err(ConntrackError::Request {
                            what: "dump",
                            errno: Errno::from_raw(errno),
                        });
                    }
                },
                _ => {
                    let attributes = payload
                        .get(NFGENMSG_LEN..)
                        .ok_or(ConntrackError::Malformed)?;
                    if let Some(entry) = parse_entry(attributes)? {
                        entries.push(entry);
                    }
                }
            }
        }
    }
}

/// Deletes one entry; false when it was already gone.
fn delete(socket: &OwnedFd, family: u8, entry: &Entry) -> Result<bool, ConntrackError> {
    let mut attributes = Vec::new();
    put_attribute(
        &mut attributes,
        CTA_TUPLE_ORIG | NLA_F_NESTED,
        &entry.original_tuple,
    );
    if let Some(zone) = &entry.zone {
        put_attribute(&mut attributes, CTA_ZONE, zone);
    }
    if let Some(id) = &entry.id {
        put_attribute(&mut attributes, CTA_ID, id);
    }
    let request = message(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        family,
        &attributes,
    );
    transmit(socket, &request, "delete")?;
    let mut buffer = vec![0u8; 8 * 1024];
    loop {
        let received = receive(socket, &mut buffer, "delete")?;
        for (kind, payload) in messages(&buffer[..received])? {
            if kind == NLMSG_ERROR {
                return match error_code(payload)? {
                    0 => Ok(true),
                    errno if Errno::from_raw(errno) == Errno::ENOENT => Ok(false),
                    errno => Err(ConntrackError::Request {
                        what: "delete",
                        errno: Errno::from_raw(errno),
                    }),
                };
            }
        }
    }
}

fn transmit(socket: &OwnedFd, request: &[u8], what: &'static str) -> Result<(), ConntrackError> {
    loop {
        match send(socket.as_raw_fd(), request, MsgFlags::empty()) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(ConntrackError::Request { what, errno }),
        }
    }
}

fn receive(
    socket: &OwnedFd,
    buffer: &mut [u8],
    what: &'static str,
) -> Result<usize, ConntrackError> {
    loop {
        match recv(socket.as_raw_fd(), buffer, MsgFlags::empty()) {
            Ok(received) => return Ok(received),
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(ConntrackError::Request { what, errno }),
        }
    }
}

/// A ctnetlink request: netlink header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, family: u8, attributes: &[u8]) -> Vec<u8> {
    let length = HEADER_LEN + NFGENMSG_LEN + attributes.len();
    let mut out = Vec::with_capacity(length);
    out.extend_from_slice(&(length as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: version 0, res_id 0
    out.extend_from_slice(attributes);
    out
}

fn put_attribute(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let length = 4 + payload.len();
    out.extend_from_slice(&(length as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + padding(length), 0);
}

fn padding(length: usize) -> usize {
    (4 - length % 4) % 4
}

/// The netlink messages in one datagram, as (type, payload).
fn messages(mut datagram: &[u8]) -> Result<Vec<(u16, &[u8])>, ConntrackError> {
    let mut out = Vec::new();
    while datagram.len() >= HEADER_LEN {
        let length = u32::from_ne_bytes(array(&datagram[0..4])?) as usize;
        let kind = u16::from_ne_bytes(array(&datagram[4..6])?);
        if length < HEADER_LEN || length > datagram.len() {
            return Err(ConntrackError::Malformed);
        }
        out.push((kind, &datagram[HEADER_LEN..length]));
        let next = (length + padding(length)).min(datagram.len());
        datagram = &datagram[next..];
    }
    Ok(out)
}

/// An `NLMSG_ERROR` payload's code as a positive errno (0: an ack).
fn error_code(payload: &[u8]) -> Result<i32, ConntrackError> {
    let code = i32::from_ne_bytes(array(payload.get(0..4).ok_or(ConntrackError::Malformed)?)?);
    Ok(-code)
}

/// Netlink attributes as (type without flags, payload).
fn attributes(mut data: &[u8]) -> Result<Vec<(u16, &[u8])>, ConntrackError> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let length = u16::from_ne_bytes(array(&data[0..2])?) as usize;
        let kind = u16::from_ne_bytes(array(&data[2..4])?) & NLA_TYPE_MASK;
        if length < 4 || length > data.len() {
            return Err(ConntrackError::Malformed);
        }
        out.push((kind, &data[4..length]));
        let next = (length + padding(length)).min(data.len());
        data = &data[next..];
    }
    Ok(out)
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], ConntrackError> {
    bytes.try_into().map_err(|_| ConntrackError::Malformed)
}

fn parse_entry(data: &[u8]) -> Result<Option<Entry>, ConntrackError> {
    let mut original = None;
    let mut reply = None;
    let mut id = None;
    let mut zone = None;
    for (kind, payload) in attributes(data)? {
        match kind {
            CTA_TUPLE_ORIG => original = Some(payload),
            CTA_TUPLE_REPLY => reply = Some(payload),
            CTA_ID => id = Some(payload.to_vec()),
            CTA_ZONE => zone = Some(payload.to_vec()),
            _ => {}
        }
    }
    let Some(original) = original else {
        return Ok(None);
    };
    let orig = Tuple::parse(original)?;
    let (Some(protocol), Some(destination)) = (orig.protocol, orig.destination()) else {
        return Ok(None);
    };
    let reply_source = match reply {
        Some(reply) => Tuple::parse(reply)?.source(),
        None => None,
    };
    Ok(Some(Entry {
        protocol,
        original_source: orig.source(),
        original_destination: destination,
        reply_source,
        original_tuple: original.to_vec(),
        id,
        zone,
    }))
}

#[derive(Default)]
struct Tuple {
    source: Option<IpAddr>,
    destination: Option<IpAddr>,
    protocol: Option<u8>,
    source_port: Option<u16>,
    destination_port: Option<u16>,
}

impl Tuple {
    fn parse(data: &[u8]) -> Result<Tuple, ConntrackError> {
        let mut tuple = Tuple::default();
        for (kind, payload) in attributes(data)? {
            match kind {
                CTA_TUPLE_IP => {
                    for (kind, address) in attributes(payload)? {
                        let ip = match kind {
                            CTA_IP_V4_SRC | CTA_IP_V4_DST => {
                                IpAddr::V4(Ipv4Addr::from(array::<4>(address)?))
                            }
                            CTA_IP_V6_SRC | CTA_IP_V6_DST => {
                                IpAddr::V6(Ipv6Addr::from(array::<16>(address)?))
                            }
                            _ => continue,
                        };
                        match kind {
                            CTA_IP_V4_SRC | CTA_IP_V6_SRC => tuple.source = Some(ip),
                            _ => tuple.destination = Some(ip),
                        }
                    }
                }
                CTA_TUPLE_PROTO => {
                    for (kind, value) in attributes(payload)? {
                        match kind {
                            CTA_PROTO_NUM => tuple.protocol = value.first().copied(),
                            CTA_PROTO_SRC_PORT => {
                                tuple.source_port = Some(u16::from_be_bytes(array(value)?));
                            }
                            CTA_PROTO_DST_PORT => {
                                tuple.destination_port = Some(u16::from_be_bytes(array(value)?));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(tuple)
    }

    fn source(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.source?, self.source_port?))
    }

    fn destination(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.destination?, self.destination_port?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(source: [u8; 4], destination: [u8; 4], ports: (u16, u16)) -> Vec<u8> {
        let mut ip = Vec::new();
        put_attribute(&mut ip, CTA_IP_V4_SRC, &source);
        put_attribute(&mut ip, CTA_IP_V4_DST, &destination);
        let mut proto = Vec::new();
        put_attribute(&mut proto, CTA_PROTO_NUM, &[IPPROTO_TCP]);
        put_attribute(&mut proto, CTA_PROTO_SRC_PORT, &ports.0.to_be_bytes());
        put_attribute(&mut proto, CTA_PROTO_DST_PORT, &ports.1.to_be_bytes());
        let mut out = Vec::new();
        put_attribute(&mut out, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
        put_attribute(&mut out, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
        out
    }

    #[test]
    fn reads_a_translated_entry_as_the_kernel_writes_it() {
        let original = tuple([10, 0, 0, 5], [169, 254, 169, 254], (40000, 80));
        let reply = tuple([10, 0, 0, 1], [10, 0, 0, 5], (8181, 40000));
        let mut data = Vec::new();
        put_attribute(&mut data, CTA_TUPLE_ORIG | NLA_F_NESTED, &original);
        put_attribute(&mut data, CTA_TUPLE_REPLY | NLA_F_NESTED, &reply);
        put_attribute(&mut data, CTA_ID, &7u32.to_be_bytes());
        let entry = parse_entry(&data).unwrap().unwrap();
        assert_eq!(entry.protocol, IPPROTO_TCP);
        assert_eq!(
            entry.original_source,
            Some("10.0.0.5:40000".parse().unwrap())
        );
        assert_eq!(
            entry.original_destination,
            "169.254.169.254:80".parse().unwrap()
        );
        assert_eq!(entry.reply_source, Some("10.0.0.1:8181".parse().unwrap()));
        assert_eq!(entry.original_tuple, original);
        assert!(is_agent(
            entry.reply_source.unwrap(),
            &["10.0.0.1:8181".parse().unwrap()]
        ));
        assert!(!is_agent(
            "169.254.169.254:80".parse().unwrap(),
            &["10.0.0.1:8181".parse().unwrap()]
        ));
    }

    #[test]
    fn truncated_attributes_are_refused_not_read_past() {
        let original = tuple([10, 0, 0, 5], [169, 254, 169, 254], (40000, 80));
        let mut data = Vec::new();
        put_attribute(&mut data, CTA_TUPLE_ORIG | NLA_F_NESTED, &original);
        data.truncate(data.len() - 3);
        assert!(parse_entry(&data).is_err());
    }
}
