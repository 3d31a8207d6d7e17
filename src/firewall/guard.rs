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
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::state::TableState;
use super::{FirewallError, Installed, InterfaceMatch, Targets, install, interfaces};
use crate::identity::PodTreeMatch;
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

/// What the guard keeps: where the rules send traffic, and the tables as
/// read back once they were first written completely. That reading is
/// fixed for the agent's life (its settings do not change), so a flush that
/// races a write can never become the state the guard defends.
pub struct Guarded {
    pub targets: Targets,
    pub interfaces: InterfaceMatch,
    /// Where the hostNetwork pods' rules match, when they are installed.
    pub host_pods: Option<PodTreeMatch>,
    pub expected: TableState,
    /// Whose connections opened while the rules were missing are cut.
    pub cut: super::conntrack::CutFilter,
}

/// How many times a write is tried before the guard reports failure and
/// tries again at its next check.
const WRITE_ATTEMPTS: usize = 5;

/// Writes iamlet's tables and reads them back until the reading is
/// `expected` (or, with none yet, complete: both families, their rules in
/// them): something may flush the ruleset again between the write and the
/// reading. Returns whether the first write replaced existing tables, and
/// the reading.
pub fn write_until_stable(
    targets: &Targets,
    interfaces: &InterfaceMatch,
    host_pods: Option<&PodTreeMatch>,
    expected: Option<&TableState>,
) -> Result<(Installed, TableState), FirewallError> {
    let mut first = None;
    for _ in 0..WRITE_ATTEMPTS {
        let installed = install(targets, interfaces, host_pods)?;
        let replaced = *first.get_or_insert(installed);
        let state = TableState::read(host_pods.is_some())?;
        let stable = match expected {
            Some(expected) => &state == expected,
            None => state.is_complete(),
        };
        if stable {
            return Ok((replaced, state));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(FirewallError::Nft(format!(
        "iamlet's tables did not stay as written in {WRITE_ATTEMPTS} attempts: something keeps rewriting the ruleset"
    )))
}

/// The running guard.
pub struct GuardHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl GuardHandle {
    /// Stops guarding and waits for a check in progress to finish, so
    /// that nothing writes the tables again after this returns (say while
    /// `--remove-rules-on-exit` removes them).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Starts the guard.
pub fn spawn_guard(guarded: Guarded, metrics: Arc<Metrics>) -> GuardHandle {
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
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(Arc::new(guarded), metrics, changed, stopped));
    GuardHandle { stop, task }
}

async fn run(
    guarded: Arc<Guarded>,
    metrics: Arc<Metrics>,
    changed: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut last_check = Instant::now();
    let mut nothing_matched = watch_interfaces(&guarded.interfaces, &metrics, false);
    let mut next_check = PERIODIC_CHECK;
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            () = changed.notified() => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(next_check) => {}
        }
        let since = last_check.elapsed();
        if since < MIN_CHECK_INTERVAL {
            tokio::time::sleep(MIN_CHECK_INTERVAL - since).await;
        }
        if *stopped.borrow() {
            return;
        }
        last_check = Instant::now();
        let checked = guarded.clone();
        let outcome = match tokio::task::spawn_blocking(move || check(&checked)).await {
            Ok(outcome) => outcome,
            Err(error) => {
                Outcome::Failed(FirewallError::Nft(format!("the check panicked: {error}")))
            }
        };
        // A failed check is tried again soon, not in 5 s.
        next_check = match outcome {
            Outcome::Failed(_) => MIN_CHECK_INTERVAL,
            _ => PERIODIC_CHECK,
        };
        record(&metrics, &outcome);
        nothing_matched = watch_interfaces(&guarded.interfaces, &metrics, nothing_matched);
    }
}

enum Outcome {
    Intact,
    Repaired {
        what: &'static str,
        /// Connections cut that bypassed the agent meanwhile.
        cut: usize,
        took: Duration,
    },
    Failed(FirewallError),
}

fn check(guarded: &Guarded) -> Outcome {
    let started = Instant::now();
    let what = match TableState::read(guarded.host_pods.is_some()) {
        Ok(now) => match now.difference(&guarded.expected) {
            None => return Outcome::Intact,
            Some(what) => what,
        },
        // Unreadable is treated as changed: writing the tables again is
        // the safe side.
        Err(error) => {
            warn!(%error, "cannot read iamlet's nftables tables; writing them again");
            "unreadable"
        }
    };
    match write_until_stable(
        &guarded.targets,
        &guarded.interfaces,
        guarded.host_pods.as_ref(),
        Some(&guarded.expected),
    ) {
        Ok(_) => {
            // Connections opened while the table was gone reach the real
            // service for as long as they live: cut them as at start.
            let cut = match super::cut_bypassing_connections(&guarded.targets, &guarded.cut) {
                Ok(flushed) => flushed.deleted,
                Err(error) => {
                    warn!(%error, "cannot cut connections opened while the rules were missing");
                    0
                }
            };
            Outcome::Repaired {
                what,
                cut,
                took: started.elapsed(),
            }
        }
        Err(error) => Outcome::Failed(error),
    }
}

fn record(metrics: &Metrics, outcome: &Outcome) {
    match outcome {
        Outcome::Intact => {
            debug!("iamlet's nftables tables are intact");
            metrics.rules_installed.set(1);
        }
        Outcome::Repaired { what, cut, took } => {
            warn!(
                change = what,
                connections_cut = cut,
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
