//! The link that holds the container credentials endpoint's addresses
//! (169.254.170.23 and fd00:ec2::23), as the EKS Pod Identity agent keeps
//! them: a dummy interface of iamlet's own, so that pods' traffic to those
//! addresses is delivered to the node and the agent can bind them. Through
//! rtnetlink rather than `ip`: the image carries no iproute2, and the
//! errors come back as errno values the agent can act on.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::{Handle, LinkDummy, LinkUnspec};
use thiserror::Error;

/// The interface iamlet creates; nothing else is ever touched.
pub const LINK: &str = "iamlet-pi0";
const EEXIST: i32 = 17;

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
pub async fn ensure(addresses: &[IpAddr]) -> Result<(), LinkError> {
    let handle = connect()?;
    let index = match find(&handle).await? {
        Some(index) => index,
        None => {
            handle
                .link()
                .add(LinkDummy::new(LINK).build())
                .execute()
                .await
                .or_else(ignore_exists)
                .map_err(netlink(format!("cannot create link {LINK}")))?;
            find(&handle).await?.ok_or_else(|| LinkError::Netlink {
                what: format!("link {LINK} vanished after it was created"),
                source: rtnetlink::Error::RequestFailed,
            })?
        }
    };
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(netlink(format!("cannot set link {LINK} up")))?;
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
            .map_err(netlink(format!("cannot add {address} to link {LINK}")))?;
    }
    Ok(())
}

/// Deletes [`LINK`] and its addresses; false when it was not there.
pub async fn remove() -> Result<bool, LinkError> {
    let handle = connect()?;
    let Some(index) = find(&handle).await? else {
        return Ok(false);
    };
    handle
        .link()
        .del(index)
        .execute()
        .await
        .map_err(netlink(format!("cannot delete link {LINK}")))?;
    Ok(true)
}

fn connect() -> Result<Handle, LinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(LinkError::Socket)?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn find(handle: &Handle) -> Result<Option<u32>, LinkError> {
    let mut links = handle.link().get().match_name(LINK.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|link| link.header.index)),
        // The kernel answers a lookup by a name it does not know with ENODEV.
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -19 => Ok(None),
        Err(source) => Err(LinkError::Netlink {
            what: format!("cannot look up link {LINK}"),
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
