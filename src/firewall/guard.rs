//! Keeps iamlet's tables as the agent wrote them. Anything may rewrite a
//! node's ruleset (`nft flush ruleset`, a firewall service reloading, another
//! agent); while iamlet's table is gone, pods reach the real metadata
//! service. The guard hears every nftables change from the kernel (the
//! `NFNLGRP_NFTABLES` netlink group), compares iamlet's tables with what it
//! wrote, and writes them again when they differ. A slow periodic check
//! covers lost notifications.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::state::TableState;
use super::{FirewallError, InterfaceMatch, Targets, install, interfaces};
use crate::telemetry::Metrics;

/// The nfnetlink multicast group of nftables ruleset changes.
const NFNLGRP_NFTABLES: u32 = 7;
/// After a change notification, wait this long for the rest of a burst
/// (a firewall reload is many messages) before reading the tables once.
const SETTLE: Duration = Duration::from_millis(50);
/// Never read the tables more often than this, however busy the ruleset
/// (kube-proxy and CNIs rewrite their own tables all the time).
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Checks without a notification: covers a lost notification, and keeps
/// the interface gauge current.
const PERIODIC_CHECK: Duration = Duration::from_secs(5);

/// What the guard needs to write the rules again.
pub struct Guarded {
    pub targets: Targets,
    pub interfaces: InterfaceMatch,
    /// The tables as read right after the agent installed them.
    pub expected: TableState,
}

/// Starts the guard. Returns the task; aborting it stops the guarding
/// (the netlink reader thread ends with the process).
pub fn spawn_guard(guarded: Guarded, metrics: Arc<Metrics>) -> JoinHandle<()> {
    let changed = Arc::new(Notify::new());
    let notifications = match subscribe(changed.clone()) {
        Ok(()) => true,
        Err(error) => {
            warn!(%error, every_s = PERIODIC_CHECK.as_secs(),
                "cannot subscribe to nftables change notifications; checking the rules periodically only");
            false
        }
    };
    info!(
        notifications,
        periodic_s = PERIODIC_CHECK.as_secs(),
        "guarding iamlet's nftables tables"
    );
    tokio::spawn(run(guarded, metrics, changed))
}

async fn run(mut guarded: Guarded, metrics: Arc<Metrics>, changed: Arc<Notify>) {
    let mut last_check = Instant::now();
    let mut nothing_matched = watch_interfaces(&guarded.interfaces, &metrics, false);
    loop {
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(PERIODIC_CHECK) => {}
        }
        let since = last_check.elapsed();
        if since < MIN_CHECK_INTERVAL {
            tokio::time::sleep(MIN_CHECK_INTERVAL - since).await;
        }
        last_check = Instant::now();
        guarded = match tokio::task::spawn_blocking(move || check(guarded)).await {
            Ok((guarded, outcome)) => {
                record(&metrics, &outcome);
                guarded
            }
            Err(error) => {
                error!(%error, "the rule check panicked; the rules are no longer guarded");
                metrics.rules_installed.set(0);
                return;
            }
        };
        nothing_matched = watch_interfaces(&guarded.interfaces, &metrics, nothing_matched);
    }
}

enum Outcome {
    Intact,
    Repaired { what: &'static str, took: Duration },
    Failed(FirewallError),
}

fn check(mut guarded: Guarded) -> (Guarded, Outcome) {
    let started = Instant::now();
    let now = match TableState::read() {
        Ok(now) => now,
        Err(error) => return (guarded, Outcome::Failed(error)),
    };
    let Some(what) = now.difference(&guarded.expected) else {
        return (guarded, Outcome::Intact);
    };
    let repaired = install(&guarded.targets, &guarded.interfaces).and_then(|_| TableState::read());
    match repaired {
        Ok(state) => {
            guarded.expected = state;
            let took = started.elapsed();
            (guarded, Outcome::Repaired { what, took })
        }
        Err(error) => (guarded, Outcome::Failed(error)),
    }
}

fn record(metrics: &Metrics, outcome: &Outcome) {
    match outcome {
        Outcome::Intact => {
            debug!("iamlet's nftables tables are intact");
            metrics.rules_installed.set(1);
        }
        Outcome::Repaired { what, took } => {
            warn!(
                change = what,
                repair_ms = took.as_millis() as u64,
                "iamlet's nftables table was changed by something else; written again"
            );
            metrics.rule_repairs.inc();
            metrics.rules_installed.set(1);
        }
        Outcome::Failed(error) => {
            error!(%error, "cannot check or restore iamlet's nftables tables; pods may reach the real metadata service");
            metrics.rules_installed.set(0);
        }
    }
}

/// Updates the matched-interfaces gauge; warns when a wildcard selection
/// starts matching nothing. Returns whether nothing matches now.
fn watch_interfaces(selection: &InterfaceMatch, metrics: &Metrics, warned: bool) -> bool {
    let Ok(names) = interfaces::present() else {
        return warned;
    };
    let matched = names.iter().filter(|name| selection.matches(name)).count();
    metrics.host_interfaces_matched.set(matched as i64);
    let nothing = matched == 0;
    if nothing && !warned {
        warn!(host_interface = %selection, present = ?names,
            "no interface on this node matches --host-interface; pods' traffic is not intercepted until one does");
    }
    nothing
}

/// Subscribes to nftables change notifications on a thread of its own that
/// wakes `changed` for each message (and when the kernel reports that
/// messages were dropped).
fn subscribe(changed: Arc<Notify>) -> Result<(), Errno> {
    let socket = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    bind(
        socket.as_raw_fd(),
        &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
    )?;
    std::thread::Builder::new()
        .name("nft-changes".into())
        .spawn(move || {
            let mut buffer = vec![0u8; 64 * 1024];
            loop {
                match recv(socket.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                    // ENOBUFS: notifications were lost; check anyway.
                    Ok(_) | Err(Errno::ENOBUFS) => changed.notify_one(),
                    Err(Errno::EINTR) => {}
                    Err(error) => {
                        warn!(%error, "nftables change notifications stopped; checking periodically only");
                        return;
                    }
                }
            }
        })
        .map_err(|_| Errno::EAGAIN)?;
    Ok(())
}
