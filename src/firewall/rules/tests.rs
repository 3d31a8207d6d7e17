//! Whole-rule assertions: every command of the batch and every statement of
//! every rule, so that a dropped match or a wrong target cannot pass.

use serde_json::{Value, json};

use super::*;

fn commands(batch: &Nftables) -> Vec<Value> {
    let value = serde_json::to_value(batch).unwrap();
    value["nftables"].as_array().unwrap().clone()
}

fn iif(op: &str, name: &str) -> Value {
    json!({"match": {"left": {"meta": {"key": "iifname"}}, "right": name, "op": op}})
}

fn daddr(protocol: &str, address: &str) -> Value {
    json!({"match": {"left": {"payload": {"protocol": protocol, "field": "daddr"}}, "right": address, "op": "=="}})
}

fn dport() -> Value {
    json!({"match": {"left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80, "op": "=="}})
}

fn table_commands(family: &str) -> Vec<Value> {
    vec![
        json!({"add": {"table": {"family": family, "name": "iamlet"}}}),
        json!({"delete": {"table": {"family": family, "name": "iamlet"}}}),
        json!({"add": {"table": {"family": family, "name": "iamlet"}}}),
    ]
}

fn nat_chain(family: &str) -> Value {
    json!({"add": {"chain": {"family": family, "table": "iamlet", "name": "prerouting",
        "type": "nat", "hook": "prerouting", "prio": -110, "policy": "accept"}}})
}

fn filter_chain(family: &str, name: &str, hook: &str) -> Value {
    json!({"add": {"chain": {"family": family, "table": "iamlet", "name": name,
        "type": "filter", "hook": hook, "prio": 0, "policy": "accept"}}})
}

fn rule(family: &str, chain: &str, mut expr: Vec<Value>, verdict: Value, comment: &str) -> Value {
    expr.push(json!({"counter": null}));
    expr.push(verdict);
    json!({"add": {"rule": {"family": family, "table": "iamlet", "chain": chain,
        "expr": expr, "comment": comment}}})
}

fn dnat(family: &str, addr: &str, port: u16) -> Value {
    json!({"dnat": {"addr": addr, "family": family, "port": port}})
}

/// The DNAT rule of `family` for one interface match, to `addr:port`.
fn dnat_rule(family: &str, interface: Value, addr: &str, port: u16) -> Value {
    let metadata = if family == "ip6" {
        "fd00:ec2::254"
    } else {
        "169.254.169.254"
    };
    rule(
        family,
        "prerouting",
        vec![interface, daddr(family, metadata), dport()],
        dnat(family, addr, port),
        DNAT_COMMENT,
    )
}

fn reset() -> Value {
    json!({"reject": {"type": "tcp reset"}})
}

fn rejecting(family: &str, protocol: &str, address: &str, interfaces: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for (chain, hook) in [("reject-input", "input"), ("reject-forward", "forward")] {
        out.push(filter_chain(family, chain, hook));
        let mut expr = interfaces.to_vec();
        expr.push(daddr(protocol, address));
        expr.push(dport());
        out.push(rule(family, chain, expr, reset(), REJECT_COMMENT));
    }
    out
}

#[test]
fn an_ipv4_agent_dnats_ipv4_and_rejects_ipv6() {
    let targets = Targets::new(["10.0.0.5:8181".parse().unwrap()]);
    let batch = install_batch(&targets, &InterfaceMatch::parse("cali+").unwrap());
    let cali = iif("==", "cali*");
    let mut expected = table_commands("ip");
    expected.push(nat_chain("ip"));
    expected.push(dnat_rule("ip", cali.clone(), "10.0.0.5", 8181));
    expected.extend(table_commands("ip6"));
    expected.extend(rejecting("ip6", "ip6", "fd00:ec2::254", &[cali]));
    assert_eq!(commands(&batch), expected);
}

#[test]
fn a_dual_stack_agent_dnats_both_families() {
    let targets = Targets::new([
        "10.0.0.5:8181".parse().unwrap(),
        "[fd00::5]:8181".parse().unwrap(),
    ]);
    let batch = install_batch(&targets, &InterfaceMatch::parse("eth1").unwrap());
    let eth1 = iif("==", "eth1");
    let mut expected = table_commands("ip");
    expected.push(nat_chain("ip"));
    expected.push(dnat_rule("ip", eth1.clone(), "10.0.0.5", 8181));
    expected.extend(table_commands("ip6"));
    expected.push(nat_chain("ip6"));
    expected.push(dnat_rule("ip6", eth1.clone(), "fd00::5", 8181));
    assert_eq!(commands(&batch), expected);
}

#[test]
fn an_ipv6_only_agent_rejects_ipv4() {
    let targets = Targets::new(["[fd00::5]:9000".parse().unwrap()]);
    let batch = install_batch(&targets, &InterfaceMatch::parse("!eth0").unwrap());
    let not_eth0 = iif("!=", "eth0");
    let mut expected = table_commands("ip");
    expected.extend(rejecting(
        "ip",
        "ip",
        "169.254.169.254",
        std::slice::from_ref(&not_eth0),
    ));
    expected.extend(table_commands("ip6"));
    expected.push(nat_chain("ip6"));
    expected.push(dnat_rule("ip6", not_eth0.clone(), "fd00::5", 9000));
    assert_eq!(commands(&batch), expected);
}

#[test]
fn lists_and_negations_become_one_rule_per_included_pattern() {
    let targets = Targets::new(["10.0.0.5:8181".parse().unwrap()]);
    let batch = install_batch(
        &targets,
        &InterfaceMatch::parse("eni+,vlan+,!eni-mgmt").unwrap(),
    );
    let not_mgmt = iif("!=", "eni-mgmt");
    let dnat_rules: Vec<Value> = commands(&batch)
        .into_iter()
        .filter(|c| c["add"]["rule"]["chain"] == "prerouting")
        .collect();
    let expected: Vec<Value> = ["eni*", "vlan*"]
        .iter()
        .map(|include| {
            rule(
                "ip",
                "prerouting",
                vec![
                    iif("==", include),
                    not_mgmt.clone(),
                    daddr("ip", "169.254.169.254"),
                    dport(),
                ],
                dnat("ip", "10.0.0.5", 8181),
                DNAT_COMMENT,
            )
        })
        .collect();
    assert_eq!(dnat_rules, expected);
}

#[test]
fn removal_deletes_only_iamlets_tables() {
    let batch = removal_batch(&[
        (NfFamily::IP, TABLE),
        (NfFamily::IP, HOST_TABLE),
        (NfFamily::IP6, TABLE),
    ]);
    assert_eq!(
        commands(&batch),
        vec![
            json!({"delete": {"table": {"family": "ip", "name": "iamlet"}}}),
            json!({"delete": {"table": {"family": "ip", "name": "iamlet-hostnet"}}}),
            json!({"delete": {"table": {"family": "ip6", "name": "iamlet"}}}),
        ]
    );
}

#[test]
fn the_host_network_table_is_replaced_whole_in_each_family() {
    let tree = crate::identity::PodTreeMatch {
        path: "kubepods.slice".into(),
        level: 1,
        exempt: Vec::new(),
        load_from: None,
    };
    let targets = Targets::new(["10.0.0.5:8181".parse().unwrap()]);
    let text = host_pod_rules(&targets, &tree);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "add table ip iamlet-hostnet",
            "delete table ip iamlet-hostnet",
            "add table ip iamlet-hostnet",
        ]
    );
    assert!(
        lines[3].starts_with(
            "add chain ip iamlet-hostnet output { type nat hook output priority -110;"
        )
    );
    assert_eq!(
        lines[4],
        "add rule ip iamlet-hostnet output socket cgroupv2 level 1 \"kubepods.slice\" ip daddr 169.254.169.254 tcp dport 80 counter dnat to 10.0.0.5:8181 comment \"iamlet: hostNetwork pods' metadata traffic to the agent\""
    );
    // No agent address in IPv6: hostNetwork pods are refused there.
    assert_eq!(lines[5], "add table ip6 iamlet-hostnet");
    assert!(
        lines[9].contains("ip6 daddr fd00:ec2::254 tcp dport 80 counter reject with tcp reset")
    );
    let dual = Targets::new([
        "10.0.0.5:8181".parse().unwrap(),
        "[fd00::5]:8181".parse().unwrap(),
    ]);
    assert!(host_pod_rules(&dual, &tree).contains("dnat to [fd00::5]:8181"));
}
