//! The node's packet path: iamlet's own nftables table that sends pods'
//! metadata traffic to the agent. Only this module runs `nft`.

pub mod conntrack;
mod guard;
mod interfaces;
pub mod link;
mod rules;
mod state;

use nftables::helper::{self, NftablesError};
use nftables::schema::{NfListObject, NfObject};
use nftables::types::NfFamily;
use thiserror::Error;

use crate::identity::PodTreeMatch;

pub use guard::{GuardHandle, Guarded, spawn_guard, write_until_stable};
pub use interfaces::{InterfaceMatch, present as present_interfaces};
pub use rules::{CHAIN, METADATA_PORT, METADATA_V4, METADATA_V6, TABLE, Targets};
pub use state::TableState;

#[derive(Debug, Error)]
pub enum FirewallError {
    #[error("nft failed: {0}")]
    Nft(String),
}

impl From<NftablesError> for FirewallError {
    fn from(error: NftablesError) -> Self {
        let text = match &error {
            NftablesError::NftFailed { hint, stderr, .. } => format!("{hint}: {}", stderr.trim()),
            other => other.to_string(),
        };
        FirewallError::Nft(text)
    }
}

/// How many times the cut reads the table, and how far apart.
const CUT_PASSES: usize = 3;
const CUT_PASS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(150);

/// [`conntrack::flush_bypassing`] for the metadata addresses and the
/// agent's DNAT targets.
pub fn cut_bypassing_connections(
    targets: &Targets,
    cut: &conntrack::CutFilter,
) -> Result<conntrack::Flushed, conntrack::ConntrackError> {
    use std::net::{IpAddr, SocketAddr};
    let metadata = [
        SocketAddr::new(IpAddr::V4(METADATA_V4), METADATA_PORT),
        SocketAddr::new(IpAddr::V6(METADATA_V6), METADATA_PORT),
    ];
    let agent: Vec<SocketAddr> = [targets.v4, targets.v6].into_iter().flatten().collect();
    // A connection whose entry is deleted is tracked again from its next
    // packet: from the client, that packet meets the DNAT and is reset;
    // from the service (a delayed ACK), the new entry is the reverse of
    // the old one and bypasses the DNAT. Passes a little apart catch those.
    let mut total = conntrack::flush_bypassing(&metadata, &agent, cut)?;
    for _ in 0..CUT_PASSES - 1 {
        std::thread::sleep(CUT_PASS_INTERVAL);
        let pass = conntrack::flush_bypassing(&metadata, &agent, cut)?;
        total.deleted += pass.deleted;
        total.kept = pass.kept;
    }
    Ok(total)
}

/// Whether an install found rules of an earlier agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Installed {
    Fresh,
    /// The table existed (an earlier agent's) and was replaced atomically.
    Replaced,
}

/// Installs (or atomically replaces) iamlet's tables in both families:
/// DNAT to the agent where `targets` has an address, rejection elsewhere;
/// with `host_pods`, also the hostNetwork pods' table (replaced whole in a
/// transaction of its own); without, any such table of an earlier agent
/// is removed.
pub fn install(
    targets: &Targets,
    interfaces: &InterfaceMatch,
    host_pods: Option<&PodTreeMatch>,
) -> Result<Installed, FirewallError> {
    let present = existing_tables()?;
    let existed = present.iter().any(|(_, name)| *name == TABLE);
    helper::apply_ruleset(&rules::install_batch(targets, interfaces))?;
    match host_pods {
        Some(tree) => {
            let text = rules::host_pod_rules(targets, tree);
            match &tree.load_from {
                Some(namespace) => in_cgroup_namespace(namespace, || apply_text(&text))?,
                None => apply_text(&text)?,
            }
        }
        None => {
            let stale: Vec<_> = present
                .into_iter()
                .filter(|(_, name)| *name == rules::HOST_TABLE)
                .collect();
            if !stale.is_empty() {
                helper::apply_ruleset(&rules::removal_batch(&stale))?;
            }
        }
    }
    Ok(if existed {
        Installed::Replaced
    } else {
        Installed::Fresh
    })
}

/// Runs `write` on a thread of its own that has entered the cgroup
/// namespace at `path` (a `nft` it starts inherits it), so that the
/// kernel reads the rules' cgroup levels from that namespace's root.
fn in_cgroup_namespace(
    path: &std::path::Path,
    write: impl FnOnce() -> Result<(), FirewallError> + Send,
) -> Result<(), FirewallError> {
    let namespace = std::fs::File::open(path)
        .map_err(|e| FirewallError::Nft(format!("cannot open {}: {e}", path.display())))?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(
                    |e| {
                        FirewallError::Nft(format!(
                            "cannot enter the host's cgroup namespace ({}): {e}; the agent needs CAP_SYS_ADMIN for it",
                            path.display()
                        ))
                    },
                )?;
                write()
            })
            .join()
            .unwrap_or_else(|_| Err(FirewallError::Nft("the rule writer panicked".into())))
    })
}

/// Applies rules written in nft's own syntax, as one transaction.
fn apply_text(rules: &str) -> Result<(), FirewallError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| FirewallError::Nft(format!("cannot run nft: {e}")))?;
    if let Some(mut input) = nft.stdin.take() {
        input
            .write_all(rules.as_bytes())
            .map_err(|e| FirewallError::Nft(format!("cannot write to nft: {e}")))?;
    }
    let output = nft
        .wait_with_output()
        .map_err(|e| FirewallError::Nft(format!("nft did not finish: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Nft(format!(
            "writing the hostNetwork pods' table: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Removes iamlet's tables; returns the families that had one. Other tables
/// are never touched.
pub fn remove() -> Result<Vec<&'static str>, FirewallError> {
    let present = existing_tables()?;
    if !present.is_empty() {
        helper::apply_ruleset(&rules::removal_batch(&present))?;
    }
    let mut families: Vec<&'static str> = present.iter().map(|(f, _)| family_name(*f)).collect();
    families.dedup();
    Ok(families)
}

/// iamlet's tables that exist now: family and name.
fn existing_tables() -> Result<Vec<(NfFamily, &'static str)>, FirewallError> {
    let ruleset = helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, ["list", "tables"])?;
    let mut tables: Vec<(NfFamily, &'static str)> = ruleset
        .objects
        .iter()
        .filter_map(|object| match object {
            NfObject::ListObject(NfListObject::Table(table))
                if matches!(table.family, NfFamily::IP | NfFamily::IP6) =>
            {
                let name = rules::TABLES.into_iter().find(|n| *n == table.name)?;
                Some((table.family, name))
            }
            _ => None,
        })
        .collect();
    tables.sort_by_key(|(family, name)| (family_name(*family), *name));
    tables.dedup();
    Ok(tables)
}

pub fn family_name(family: NfFamily) -> &'static str {
    match family {
        NfFamily::IP6 => "ip6",
        _ => "ip",
    }
}

/// What an operator types to look at the rules.
pub fn inspect_command() -> String {
    format!(
        "nft list table ip {TABLE}; nft list table ip6 {TABLE}; nft list table ip {}",
        rules::HOST_TABLE
    )
}
