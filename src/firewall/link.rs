//! The link that holds the container credentials endpoint's addresses
//! (169.254.170.23 and fd00:ec2::23), as the EKS Pod Identity agent keeps
//! them: a dummy interface of iamlet's own, so that pods' traffic to those
//! addresses is delivered to the node and the agent can bind them. A kernel
//! without the dummy link type gets them on `lo` instead (host routes on
//! loopback are delivered locally all the same). Through rtnetlink rather
//! than `ip`: the image carries no iproute2, and the errors come back as
//! errno values the agent can act on.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::{Handle, LinkDummy, LinkUnspec};
use thiserror::Error;

/// The interface iamlet creates; nothing else is ever touched.
pub const LINK: &str = "iamlet-pi0";
const LOOPBACK: &str = "lo";
const EEXIST: i32 = 17;
const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;

/// Where the addresses went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On [`LINK`].
    OwnLink,
    /// On `lo`: the kernel has no dummy link type.
    Loopback,
}

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
}

/// Creates [`LINK`] (if missing), sets it up and puts `addresses` on it
/// (host routes: /32, /128 without duplicate detection, so they can be
/// bound at once). Addresses already there are kept.
pub async fn ensure(addresses: &[IpAddr]) -> Result<Placement, LinkError> {
    let handle = connect()?;
    let (index, placement) = match find(&handle, LINK).await? {
        Some(index) => (index, Placement::OwnLink),
        None => match create(&handle).await? {
            Some(index) => (index, Placement::OwnLink),
            None => {
                let index = find(&handle, LOOPBACK)
                    .await?
                    .ok_or_else(|| LinkError::Netlink {
                        what: "no dummy link type and no loopback interface".to_string(),
                        source: rtnetlink::Error::RequestFailed,
                    })?;
                (index, Placement::Loopback)
            }
        },
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("cannot set link {index} up")))?;
    for address in addresses {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let mut request = handle.address().add(index, *address, prefix);
        if address.is_ipv6() {
            request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        request
            .execute()
            .await
            .or_else(ignore_exists)
            .map_err(netlink(format!("cannot add {address} to link {index}")))?;
    }
    Ok(placement)
}

/// [`LINK`], created now; `None` when the kernel has no dummy link type.
async fn create(handle: &Handle) -> Result<Option<u32>, LinkError> {
    let created = handle
        .link()
        .add(LinkDummy::new(LINK).build())
        .execute()
        .await
        .or_else(ignore_exists);
    match created {
        Ok(()) => {}
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -EOPNOTSUPP => {
            return Ok(None);
        }
        Err(source) => {
            return Err(LinkError::Netlink {
                what: format!("cannot create link {LINK}"),
                source,
            });
        }
    }
    find(handle, LINK)
        .await?
        .map(Some)
        .ok_or_else(|| LinkError::Netlink {
            what: format!("link {LINK} vanished after it was created"),
            source: rtnetlink::Error::RequestFailed,
        })
}

/// Deletes [`LINK`], or (where they had to go on `lo`) `addresses` from
/// loopback; false when there was nothing to remove.
pub async fn remove(addresses: &[IpAddr]) -> Result<bool, LinkError> {
    let handle = connect()?;
    if let Some(index) = find(&handle, LINK).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(netlink(format!("cannot delete link {LINK}")))?;
        return Ok(true);
    }
    let Some(lo) = find(&handle, LOOPBACK).await? else {
        return Ok(false);
    };
    let mut removed = false;
    for address in addresses.iter().filter(|a| !a.is_loopback()) {
        let mut found = handle
            .address()
            .get()
            .set_link_index_filter(lo)
            .set_address_filter(*address)
            .execute();
        while let Some(message) = found
            .try_next()
            .await
            .map_err(netlink(format!("cannot list the addresses of {LOOPBACK}")))?
        {
            handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(netlink(format!("cannot remove {address} from {LOOPBACK}")))?;
            removed = true;
        }
    }
    Ok(removed)
}

fn connect() -> Result<Handle, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn find(handle: &Handle, name: &str) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        // The kernel answers a lookup by a name it does not know with ENODEV.
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -ENODEV => Ok(None),
        Err(source) => Err(LinkError::Netlink {
            what: format!("cannot look up link {name}"),
            source,
        }),
    }
}

fn ignore_exists(error: rtnetlink::Error) -> Result<(), rtnetlink::Error> {
    match &error {
        rtnetlink::Error::NetlinkError(message) if message.raw_code() == -EEXIST => Ok(()),
        _ => Err(error),
    }
}

fn netlink(what: String) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |source| LinkError::Netlink { what, source }
}
