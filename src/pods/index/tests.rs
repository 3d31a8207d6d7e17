use super::*;

fn info(name: &str, ip: &str, phase: &str) -> PodInfo {
    PodInfo {
        namespace: "ns".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        ips: vec![ip.parse().unwrap()],
        phase: phase.into(),
        service_account: "default".into(),
        host_network: false,
        role: Some(format!("role-{name}")),
        external_id: None,
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn found_name(index: &PodIndex, address: &str) -> Option<String> {
    match index.lookup(ip(address)) {
        IpLookup::Found(pod) => Some(pod.name.clone()),
        _ => None,
    }
}

#[test]
fn pods_are_found_by_every_ip() {
    let mut index = PodIndex::new();
    let mut dual = info("dual", "10.0.0.1", "Running");
    dual.ips.push(ip("fd00::1"));
    assert!(index.apply(dual));
    assert_eq!(found_name(&index, "10.0.0.1").as_deref(), Some("dual"));
    assert_eq!(found_name(&index, "fd00::1").as_deref(), Some("dual"));
    assert_eq!(index.lookup(ip("10.0.0.2")), IpLookup::Unknown);
}

#[test]
fn unchanged_pods_report_no_change() {
    let mut index = PodIndex::new();
    assert!(index.apply(info("a", "10.0.0.1", "Running")));
    assert!(!index.apply(info("a", "10.0.0.1", "Running")));
    let mut changed = info("a", "10.0.0.1", "Running");
    changed.role = None;
    assert!(index.apply(changed));
}

#[test]
fn finished_and_host_network_pods_give_up_their_ips() {
    let mut index = PodIndex::new();
    index.apply(info("job", "10.0.0.1", "Running"));
    index.apply(info("job", "10.0.0.1", "Succeeded"));
    assert_eq!(index.lookup(ip("10.0.0.1")), IpLookup::Unknown);
    let mut host = info("host", "10.0.0.9", "Running");
    host.host_network = true;
    host.uid = "uid-host".into();
    index.apply(host.clone());
    assert_eq!(index.lookup(ip("10.0.0.9")), IpLookup::Unknown);
    // A live hostNetwork pod is indexed by its UID only.
    assert_eq!(index.len(), 1);
    assert_eq!(index.host_network_pod("uid-host").unwrap().name, "host");
    // A pod that leaves the host network gets its IPs back, and its UID
    // names nothing any more.
    host.host_network = false;
    index.apply(host.clone());
    assert!(index.host_network_pod("uid-host").is_none());
    assert!(matches!(index.lookup(ip("10.0.0.9")), IpLookup::Found(_)));
    host.host_network = true;
    index.apply(host);
    host_network_pod_is_gone_after_relist(&mut index);
}

fn host_network_pod_is_gone_after_relist(index: &mut PodIndex) {
    assert!(index.host_network_pod("uid-host").is_some());
    index.begin_relist();
    index.finish_relist();
    assert!(index.host_network_pod("uid-host").is_none());
    assert_eq!(index.len(), 0);
}

#[test]
fn an_ip_moves_with_its_pod() {
    let mut index = PodIndex::new();
    index.apply(info("a", "10.0.0.1", "Running"));
    index.apply(info("a", "10.0.0.2", "Running"));
    assert_eq!(index.lookup(ip("10.0.0.1")), IpLookup::Unknown);
    assert_eq!(found_name(&index, "10.0.0.2").as_deref(), Some("a"));
}

#[test]
fn two_live_claimants_are_a_conflict_in_a_stable_order() {
    let mut index = PodIndex::new();
    index.apply(info("b", "10.0.0.1", "Running"));
    index.apply(info("a", "10.0.0.1", "Pending"));
    let IpLookup::Conflict(keys) = index.lookup(ip("10.0.0.1")) else {
        panic!("expected a conflict");
    };
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    index.delete(&info("a", "10.0.0.1", "Running").key());
    assert_eq!(found_name(&index, "10.0.0.1").as_deref(), Some("b"));
}

#[test]
fn a_relist_drops_what_it_did_not_deliver() {
    let mut index = PodIndex::new();
    index.apply(info("kept", "10.0.0.1", "Running"));
    index.apply(info("gone", "10.0.0.2", "Running"));
    index.begin_relist();
    index.apply(info("kept", "10.0.0.1", "Running"));
    index.apply(info("new", "10.0.0.3", "Running"));
    // Still serving while the relist runs.
    assert_eq!(found_name(&index, "10.0.0.2").as_deref(), Some("gone"));
    assert_eq!(index.finish_relist(), 1);
    assert_eq!(index.lookup(ip("10.0.0.2")), IpLookup::Unknown);
    assert_eq!(found_name(&index, "10.0.0.3").as_deref(), Some("new"));
    // Without a relist under way, finishing removes nothing.
    assert_eq!(index.finish_relist(), 0);
}

#[test]
fn namespace_policies_report_changes_only_when_the_annotation_changes() {
    let mut namespaces = NamespaceIndex::new();
    assert!(namespaces.apply("a".into(), Some(r#"["x"]"#.into()), PolicyFormat::Glob));
    assert!(!namespaces.apply("a".into(), Some(r#"["x"]"#.into()), PolicyFormat::Glob));
    assert!(namespaces.apply("a".into(), None, PolicyFormat::Glob));
    namespaces.begin_relist();
    assert_eq!(namespaces.finish_relist(), 1);
    assert!(namespaces.get("a").is_none());
}
