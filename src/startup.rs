//! No bootstrap window: a node registered with the startup taint
//! (`--startup-taint`) gets no ordinary pods until the agent can answer
//! them, and the agent takes the taint off only then.
//!
//! "Can answer" is, in order: the DNAT rules are in and connections that
//! bypassed them were cut (both done by [`crate::app`] before this task
//! starts), the initial pod list is applied, and the node's own
//! credentials work (`sts:GetCallerIdentity`, which needs no permission).
//! Then one JSON patch removes the taint; a conflicting write is re-read
//! and retried, other failures are retried with backoff, and a refusal
//! (no RBAC, no such node) is said once and left to the operator.

pub mod taint;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use taint::{Removal, StartupTaint, TaintError};

use crate::credentials::AwsSts;
use crate::pods::PodStore;

/// The longest pause between attempts (node credentials, patch failures).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Conflicts are retried at once (after a short random pause) this many
/// times before they back off like any failure.
const QUICK_CONFLICT_RETRIES: u32 = 10;

/// What the startup task needs.
pub struct Startup {
    pub client: kube::Client,
    pub node: String,
    pub taint: StartupTaint,
    pub store: Arc<PodStore>,
    pub sts: AwsSts,
    /// Whether connections that predate the rules were cut: if not, the
    /// node is not safe for pods, and the taint stays.
    pub connections_cut: bool,
}

/// Where the startup task is, for `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    WaitingForPods,
    WaitingForNodeCredentials,
    Removing,
    Removed,
    /// The node did not carry it.
    Absent,
    /// Refused (RBAC) or no such node: the operator must act.
    Failed,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::WaitingForPods => "waiting for the pod list",
            Phase::WaitingForNodeCredentials => "waiting for the node's credentials",
            Phase::Removing => "removing",
            Phase::Removed => "removed",
            Phase::Absent => "not on the node",
            Phase::Failed => "cannot be removed (see the log)",
        }
    }
}

/// Waits for the agent to be able to answer, then removes the taint;
/// `phase` says where it is.
pub fn spawn(startup: Startup) -> (JoinHandle<()>, watch::Receiver<Phase>) {
    let (phase, watched) = watch::channel(Phase::WaitingForPods);
    let task = tokio::spawn(async move {
        if !startup.connections_cut {
            error!(node = %startup.node, taint = %startup.taint,
                "the startup taint stays: connections opened before the rules could not be cut");
            phase.send_replace(Phase::Failed);
            return;
        }
        wait_for_index(&startup.store).await;
        phase.send_replace(Phase::WaitingForNodeCredentials);
        wait_for_node_credentials(&startup.sts).await;
        phase.send_replace(Phase::Removing);
        let last = match remove(&startup.client, &startup.node, &startup.taint).await {
            Some(Removal::Removed) => Phase::Removed,
            Some(Removal::Absent) => Phase::Absent,
            None => Phase::Failed,
        };
        phase.send_replace(last);
    });
    (task, watched)
}

async fn wait_for_index(store: &PodStore) {
    let mut changes = store.subscribe();
    while !store.is_ready() {
        if changes.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_node_credentials(sts: &AwsSts) {
    let mut backoff = Backoff::default();
    loop {
        match sts.node_identity().await {
            Ok(identity) => {
                info!(%identity, "the node's own credentials work");
                return;
            }
            Err(error) => {
                let retry = backoff.next();
                warn!(code = %error.code, message = %error.message, retry_s = retry.as_secs_f64(),
                    "the node's own credentials do not work yet (sts:GetCallerIdentity); the startup taint stays");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// Removes the taint, retrying until it is gone or the API server refuses
/// for good. Returns what the last attempt found.
pub async fn remove(client: &kube::Client, node: &str, taint: &StartupTaint) -> Option<Removal> {
    let mut conflicts = 0;
    let mut backoff = Backoff::default();
    loop {
        let pause = match taint::remove_once(client, node, taint).await {
            Ok(Removal::Removed) => {
                info!(%node, %taint, conflicts, "startup taint removed: the node now takes pods");
                return Some(Removal::Removed);
            }
            Ok(Removal::Absent) => {
                info!(%node, %taint, "the node does not carry the startup taint; nothing to remove");
                return Some(Removal::Absent);
            }
            Err(TaintError::NoSuchNode(why)) => {
                error!(%node, %why,
                    "cannot remove the startup taint: no such node (is --node, or $NODE_NAME from the downward API, right?)");
                return None;
            }
            Err(TaintError::Unreadable(why)) => {
                warn!(%node, %taint, %why,
                    "cannot read this node to look for the startup taint: iamlet needs get and patch on nodes (see docs/installation.md); a node registered with the taint takes no pods until it is removed");
                return None;
            }
            Err(TaintError::Refused(why)) => {
                error!(%node, %taint, %why,
                    "cannot remove the startup taint: iamlet needs get and patch on nodes (see docs/installation.md); pods will not be scheduled on this node until it is removed");
                return None;
            }
            Err(TaintError::Conflict) if conflicts < QUICK_CONFLICT_RETRIES => {
                conflicts += 1;
                info!(%node, conflicts, "the node's taints changed meanwhile; reading them again");
                Duration::from_millis(rand::random_range(0..100))
            }
            Err(error) => {
                let retry = backoff.next();
                warn!(%node, %taint, %error, retry_s = retry.as_secs_f64(), "cannot remove the startup taint yet");
                retry
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Full-jitter exponential backoff from 1 s up to [`MAX_BACKOFF`].
#[derive(Default)]
struct Backoff {
    attempts: u32,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let ceiling = Duration::from_secs(1 << self.attempts.min(5)).min(MAX_BACKOFF);
        self.attempts += 1;
        ceiling.mul_f64(rand::random_range(0.5..=1.0))
    }
}
