//! The nftables ruleset iamlet owns, built as data: one table of its own in
//! each of the `ip` and `ip6` families. A family with an agent address gets a
//! NAT chain that DNATs pods' metadata traffic to the agent; a family without
//! one gets filter chains that reject it, so that no pod ever reaches the real
//! metadata service over a family the agent does not listen on.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, Match, NAT, NATFamily, Operator, Reject, RejectType, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::InterfaceMatch;

/// The name of iamlet's table, in the `ip` and `ip6` families.
pub const TABLE: &str = "iamlet";
/// The table of the hostNetwork pods' rules: a table of its own, written in
/// one transaction of its own (nft's JSON cannot express its cgroup match),
/// so that rewriting either table never leaves the other's rules out.
pub const HOST_TABLE: &str = "iamlet-hostnet";
/// Every table iamlet owns.
pub const TABLES: [&str; 2] = [TABLE, HOST_TABLE];
pub const CHAIN: &str = "prerouting";
/// Filter chains of a family iamlet does not listen in.
pub const REJECT_INPUT_CHAIN: &str = "reject-input";
pub const REJECT_FORWARD_CHAIN: &str = "reject-forward";
/// The metadata service's addresses and port.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
pub const METADATA_PORT: u16 = 80;
/// Just ahead of dstnat (-100), where iptables' `nat PREROUTING` and so
/// kube2iam's rule sit: the first DNAT at a hook decides a connection, so
/// while both are installed (a cut-over from kube2iam, or a rollback)
/// iamlet's rule is the one that applies, and removing either agent's rule
/// hands traffic to the other without a gap.
pub const DSTNAT_PRIORITY: i32 = -110;
/// filter priority.
const FILTER_PRIORITY: i32 = 0;
const DNAT_COMMENT: &str = "iamlet: pods' metadata traffic to the agent";
const HOST_POD_DNAT_COMMENT: &str = "iamlet: hostNetwork pods' metadata traffic to the agent";
const EXEMPT_COMMENT: &str = "iamlet: the agent's own pod reaches the real service";
const HOST_POD_REJECT_COMMENT: &str =
    "iamlet: no agent listens in this family; hostNetwork pods are refused";
pub const OUTPUT_CHAIN: &str = "output";
pub const REJECT_OUTPUT_CHAIN: &str = "reject-output";
const REJECT_COMMENT: &str = "iamlet: no agent listens in this family; pods are refused";

/// Where each family's metadata traffic goes: the agent's address and port
/// in that family, or nowhere (rejected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    pub v4: Option<SocketAddr>,
    pub v6: Option<SocketAddr>,
}

impl Targets {
    /// Sorts the agent's addresses by family.
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut targets = Targets::default();
        for address in addresses {
            match address.ip() {
                IpAddr::V4(_) => targets.v4 = Some(address),
                IpAddr::V6(_) => targets.v6 = Some(address),
            }
        }
        targets
    }

    pub fn get(&self, family: NfFamily) -> Option<SocketAddr> {
        match family {
            NfFamily::IP6 => self.v6,
            _ => self.v4,
        }
    }
}

/// The families iamlet keeps a table in.
pub const FAMILIES: [NfFamily; 2] = [NfFamily::IP, NfFamily::IP6];

/// One transaction that leaves exactly iamlet's tables with exactly their
/// rules, whatever was there: in each family create the table (a no-op when
/// it exists), delete it with everything in it, create it again and fill it.
/// nft applies a batch atomically, so there is no moment without the rules,
/// and rules are never duplicated.
pub fn install_batch(targets: &Targets, interfaces: &InterfaceMatch) -> Nftables<'static> {
    let mut batch = Batch::new();
    for family in FAMILIES {
        batch.add(table(family));
        batch.delete(table(family));
        batch.add(table(family));
        match targets.get(family) {
            Some(target) => {
                batch.add(chain(
                    family,
                    CHAIN,
                    NfChainType::NAT,
                    NfHook::Prerouting,
                    DSTNAT_PRIORITY,
                ));
                for expr in match_rules(family, interfaces) {
                    batch.add(rule(family, CHAIN, expr, dnat(target), DNAT_COMMENT));
                }
            }
            None => {
                for (name, hook) in [
                    (REJECT_INPUT_CHAIN, NfHook::Input),
                    (REJECT_FORWARD_CHAIN, NfHook::Forward),
                ] {
                    batch.add(chain(
                        family,
                        name,
                        NfChainType::Filter,
                        hook,
                        FILTER_PRIORITY,
                    ));
                    for expr in match_rules(family, interfaces) {
                        batch.add(rule(family, name, expr, reset(), REJECT_COMMENT));
                    }
                }
            }
        }
    }
    batch.to_nftables()
}

/// The matches of each rule: one rule per included interface pattern (or
/// one for "any interface" when only negations are given), each excluding
/// every negated pattern, then the family's metadata address and port.
fn match_rules(family: NfFamily, interfaces: &InterfaceMatch) -> Vec<Vec<Statement<'static>>> {
    let includes: Vec<Option<&String>> = if interfaces.include.is_empty() {
        vec![None]
    } else {
        interfaces.include.iter().map(Some).collect()
    };
    let (protocol, metadata) = match family {
        NfFamily::IP6 => ("ip6", IpAddr::V6(METADATA_V6)),
        _ => ("ip", IpAddr::V4(METADATA_V4)),
    };
    includes
        .into_iter()
        .map(|include| {
            let mut expr = Vec::new();
            if let Some(name) = include {
                expr.push(iifname(Operator::EQ, name));
            }
            for name in &interfaces.exclude {
                expr.push(iifname(Operator::NEQ, name));
            }
            expr.push(matches(
                payload(protocol, "daddr"),
                Expression::String(metadata.to_string().into()),
            ));
            expr.push(matches(
                payload("tcp", "dport"),
                Expression::Number(u32::from(METADATA_PORT)),
            ));
            expr.push(Statement::Counter(Counter::Anonymous(None)));
            expr
        })
        .collect()
}

fn dnat(target: SocketAddr) -> Statement<'static> {
    Statement::DNAT(Some(NAT {
        addr: Some(Expression::String(target.ip().to_string().into())),
        family: Some(match target.ip() {
            IpAddr::V4(_) => NATFamily::IP,
            IpAddr::V6(_) => NATFamily::IP6,
        }),
        port: Some(Expression::Number(u32::from(target.port()))),
        flags: None,
    }))
}

fn reset() -> Statement<'static> {
    Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None)))
}

fn chain(
    family: NfFamily,
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    priority: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(priority),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    })
}

fn rule(
    family: NfFamily,
    chain: &'static str,
    mut expr: Vec<Statement<'static>>,
    verdict: Statement<'static>,
    comment: &'static str,
) -> NfListObject<'static> {
    expr.push(verdict);
    NfListObject::Rule(Rule {
        family,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        comment: Some(comment.into()),
        ..Rule::default()
    })
}

/// The hostNetwork pods' table, in nft's own syntax (its JSON cannot
/// express a `socket cgroupv2` match), as one transaction that replaces it
/// whole in both families: sockets of processes under the kubelet's pod
/// tree that connect to a metadata address go to the agent (or are refused
/// in a family it does not listen in). The node's own processes, the
/// agent's included, are not under that tree and keep reaching the real
/// service.
pub fn host_pod_rules(targets: &Targets, tree: &crate::identity::PodTreeMatch) -> String {
    let mut text = String::new();
    let matcher = format!(
        "socket cgroupv2 level {} \"{}\"",
        tree.level,
        tree.path.replace('"', "")
    );
    for family in FAMILIES {
        let (name, protocol, metadata) = match family {
            NfFamily::IP6 => ("ip6", "ip6", IpAddr::V6(METADATA_V6)),
            _ => ("ip", "ip", IpAddr::V4(METADATA_V4)),
        };
        let matches =
            format!("{matcher} {protocol} daddr {metadata} tcp dport {METADATA_PORT} counter");
        // The agent's own pod first: its calls to the real service go there.
        let exempt: Vec<String> = tree
            .exempt
            .iter()
            .map(|pod| {
                format!(
                    "socket cgroupv2 level {} \"{}\" {protocol} daddr {metadata} tcp dport {METADATA_PORT} counter return comment \"{EXEMPT_COMMENT}\"",
                    pod.level,
                    pod.path.replace('"', "")
                )
            })
            .collect();
        text.push_str(&format!(
            "add table {name} {HOST_TABLE}\ndelete table {name} {HOST_TABLE}\nadd table {name} {HOST_TABLE}\n"
        ));
        match targets.get(family) {
            Some(target) => {
                let to = match target {
                    SocketAddr::V4(v4) => v4.to_string(),
                    SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
                };
                text.push_str(&format!(
                    "add chain {name} {HOST_TABLE} {OUTPUT_CHAIN} {{ type nat hook output priority {DSTNAT_PRIORITY}; policy accept; }}\n"
                ));
                for rule in &exempt {
                    text.push_str(&format!(
                        "add rule {name} {HOST_TABLE} {OUTPUT_CHAIN} {rule}\n"
                    ));
                }
                text.push_str(&format!(
                    "add rule {name} {HOST_TABLE} {OUTPUT_CHAIN} {matches} dnat to {to} comment \"{HOST_POD_DNAT_COMMENT}\"\n"
                ));
            }
            None => {
                text.push_str(&format!(
                    "add chain {name} {HOST_TABLE} {REJECT_OUTPUT_CHAIN} {{ type filter hook output priority {FILTER_PRIORITY}; policy accept; }}\n"
                ));
                for rule in &exempt {
                    text.push_str(&format!(
                        "add rule {name} {HOST_TABLE} {REJECT_OUTPUT_CHAIN} {rule}\n"
                    ));
                }
                text.push_str(&format!(
                    "add rule {name} {HOST_TABLE} {REJECT_OUTPUT_CHAIN} {matches} reject with tcp reset comment \"{HOST_POD_REJECT_COMMENT}\"\n"
                ));
            }
        }
    }
    text
}

/// Deletes each of `tables` (family and name; each must exist).
pub fn removal_batch(tables: &[(NfFamily, &'static str)]) -> Nftables<'static> {
    let mut batch = Batch::new();
    for (family, name) in tables {
        batch.delete(named_table(*family, name));
    }
    batch.to_nftables()
}

fn table(family: NfFamily) -> NfListObject<'static> {
    named_table(family, TABLE)
}

fn named_table(family: NfFamily, name: &'static str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: name.into(),
        ..Table::default()
    })
}

fn iifname(op: Operator, name: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Meta(Meta {
            key: MetaKey::Iifname,
        })),
        right: Expression::String(name.to_string().into()),
        op,
    })
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn matches(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

#[cfg(test)]
mod tests;
