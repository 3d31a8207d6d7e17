//! The nftables ruleset iamlet owns, built as data: one table of its own per
//! address family, holding one NAT chain whose rules DNAT pods' metadata
//! traffic to the agent.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Counter, Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::InterfaceMatch;

/// The name of iamlet's table, in the `ip` and `ip6` families.
pub const TABLE: &str = "iamlet";
pub const CHAIN: &str = "prerouting";
/// The metadata service's addresses and port.
pub const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
pub const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
pub const METADATA_PORT: u16 = 80;
/// dstnat priority, the standard place for DNAT.
const DSTNAT_PRIORITY: i32 = -100;

/// The family iamlet's rules live in for a given agent address.
pub fn family_for(target: IpAddr) -> NfFamily {
    if target.is_ipv4() {
        NfFamily::IP
    } else {
        NfFamily::IP6
    }
}

/// One transaction that leaves exactly iamlet's table with exactly its
/// rules, whatever was there: create the table (a no-op when it exists),
/// delete it with everything in it, create it again and fill it. nft applies
/// a batch atomically, so there is no moment without the rules, and rules
/// are never duplicated.
pub fn install_batch(target: SocketAddr, interfaces: &InterfaceMatch) -> Nftables<'static> {
    let family = family_for(target.ip());
    let mut batch = Batch::new();
    batch.add(table(family));
    batch.delete(table(family));
    batch.add(table(family));
    batch.add(NfListObject::Chain(Chain {
        family,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Prerouting),
        prio: Some(DSTNAT_PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }));
    // One rule per included pattern (or one for "any interface" when only
    // negations are given), each excluding every negated pattern.
    let includes: Vec<Option<&String>> = if interfaces.include.is_empty() {
        vec![None]
    } else {
        interfaces.include.iter().map(Some).collect()
    };
    for include in includes {
        let mut expr = Vec::new();
        if let Some(name) = include {
            expr.push(iifname(Operator::EQ, name));
        }
        for name in &interfaces.exclude {
            expr.push(iifname(Operator::NEQ, name));
        }
        let (protocol, metadata, nat_family) = match target.ip() {
            IpAddr::V4(_) => ("ip", IpAddr::V4(METADATA_V4), NATFamily::IP),
            IpAddr::V6(_) => ("ip6", IpAddr::V6(METADATA_V6), NATFamily::IP6),
        };
        expr.push(matches(
            payload(protocol, "daddr"),
            Expression::String(metadata.to_string().into()),
        ));
        expr.push(matches(
            payload("tcp", "dport"),
            Expression::Number(u32::from(METADATA_PORT)),
        ));
        expr.push(Statement::Counter(Counter::Anonymous(None)));
        expr.push(Statement::DNAT(Some(NAT {
            addr: Some(Expression::String(target.ip().to_string().into())),
            family: Some(nat_family),
            port: Some(Expression::Number(u32::from(target.port()))),
            flags: None,
        })));
        batch.add(NfListObject::Rule(Rule {
            family,
            table: TABLE.into(),
            chain: CHAIN.into(),
            expr: Cow::Owned(expr),
            comment: Some("iamlet: pods' metadata traffic to the agent".into()),
            ..Rule::default()
        }));
    }
    batch.to_nftables()
}

/// Deletes iamlet's table in each of `families` (which must exist).
pub fn removal_batch(families: &[NfFamily]) -> Nftables<'static> {
    let mut batch = Batch::new();
    for family in families {
        batch.delete(table(*family));
    }
    batch.to_nftables()
}

fn table(family: NfFamily) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family,
        name: TABLE.into(),
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
mod tests {
    use super::*;

    fn commands(batch: &Nftables) -> Vec<serde_json::Value> {
        let value = serde_json::to_value(batch).unwrap();
        value["nftables"].as_array().unwrap().clone()
    }

    #[test]
    fn install_replaces_the_table_in_one_batch() {
        let batch = install_batch(
            "10.0.0.5:8181".parse().unwrap(),
            &InterfaceMatch::parse("cali+").unwrap(),
        );
        let commands = commands(&batch);
        let verbs: Vec<&str> = commands
            .iter()
            .map(|c| c.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(verbs, ["add", "delete", "add", "add", "add"]);
        assert_eq!(commands[0]["add"]["table"]["name"], TABLE);
        assert_eq!(commands[0]["add"]["table"]["family"], "ip");
        assert_eq!(commands[3]["add"]["chain"]["hook"], "prerouting");
        assert_eq!(commands[3]["add"]["chain"]["type"], "nat");
        let rule = commands[4]["add"]["rule"]["expr"].to_string();
        assert!(rule.contains(r#""right":"cali*""#), "{rule}");
        assert!(rule.contains("169.254.169.254"), "{rule}");
        assert!(
            rule.contains(r#""addr":"10.0.0.5""#) && rule.contains(r#""port":8181"#),
            "{rule}"
        );
    }

    #[test]
    fn lists_and_negations_become_rules_and_conditions() {
        let batch = install_batch(
            "10.0.0.5:8181".parse().unwrap(),
            &InterfaceMatch::parse("eni+,vlan+,!eni-mgmt").unwrap(),
        );
        let rules: Vec<String> = commands(&batch)
            .iter()
            .filter_map(|c| c["add"].get("rule").map(|r| r["expr"].to_string()))
            .collect();
        assert_eq!(rules.len(), 2);
        for rule in &rules {
            assert!(rule.contains(r#""op":"!=","right":"eni-mgmt""#), "{rule}");
        }
        let only_negated = install_batch(
            "10.0.0.5:8181".parse().unwrap(),
            &InterfaceMatch::parse("!eth0").unwrap(),
        );
        let rules: Vec<String> = commands(&only_negated)
            .iter()
            .filter_map(|c| c["add"].get("rule").map(|r| r["expr"].to_string()))
            .collect();
        assert_eq!(rules.len(), 1);
        assert!(!rules[0].contains(r#""op":"==","right":"eth0""#));
    }

    #[test]
    fn ipv6_agents_get_the_ipv6_metadata_address() {
        let batch = install_batch(
            "[fd00::5]:8181".parse().unwrap(),
            &InterfaceMatch::parse("eth1").unwrap(),
        );
        let text = serde_json::to_string(&batch).unwrap();
        assert!(text.contains(r#""family":"ip6""#));
        assert!(text.contains("fd00:ec2::254"), "{text}");
    }
}
