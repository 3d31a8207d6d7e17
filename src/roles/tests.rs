use super::*;
use crate::pods::PodInfo;

fn pod(namespace: &str, role: Option<&str>, external_id: Option<&str>) -> PodInfo {
    PodInfo {
        namespace: namespace.into(),
        name: "p".into(),
        uid: "u".into(),
        ips: vec!["10.0.0.1".parse().unwrap()],
        phase: "Running".into(),
        host_network: false,
        service_account: "default".into(),
        role: role.map(Into::into),
        external_id: external_id.map(Into::into),
    }
}

fn base() -> Option<BaseArn> {
    Some(BaseArn::parse("arn:aws:iam::123456789012:role/").unwrap())
}

#[test]
fn names_join_the_base_and_arns_stand_alone() {
    let resolver = Resolver::new(base(), None, None).unwrap();
    let target = resolver
        .resolve(&pod("ns", Some("reader"), None), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(
        target.role.as_str(),
        "arn:aws:iam::123456789012:role/reader"
    );
    assert_eq!(target.source, RoleSource::Annotation);
    let other_account = "arn:aws:iam::210987654321:role/cross";
    let target = resolver
        .resolve(&pod("ns", Some(other_account), None), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(target.role.as_str(), other_account);
}

#[test]
fn no_annotation_means_the_default_role_or_none() {
    let without = Resolver::new(base(), None, None).unwrap();
    assert_eq!(
        without.resolve(&pod("ns", None, None), None, None),
        Ok(None)
    );
    assert_eq!(
        without.resolve(&pod("ns", Some("  "), None), None, None),
        Ok(None)
    );
    let with = Resolver::new(base(), Some("fallback"), None).unwrap();
    let target = with
        .resolve(&pod("ns", None, None), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(target.role.name(), "fallback");
    assert_eq!(target.source, RoleSource::Default);
}

#[test]
fn an_invalid_annotation_is_refused_not_defaulted() {
    let resolver = Resolver::new(base(), Some("fallback"), None).unwrap();
    for bad in ["bad role", "arn:aws:iam::123:role/x", "arn:aws:s3:::bucket"] {
        let result = resolver.resolve(&pod("ns", Some(bad), None), None, None);
        assert!(
            matches!(result, Err(RoleError::InvalidArn { .. })),
            "{bad}: {result:?}"
        );
    }
    let no_base = Resolver::new(None, None, None).unwrap();
    assert!(matches!(
        no_base.resolve(&pod("ns", Some("reader"), None), None, None),
        Err(RoleError::NoBaseArn { .. })
    ));
}

#[test]
fn external_ids_are_validated() {
    let resolver = Resolver::new(base(), None, None).unwrap();
    let ok = resolver
        .resolve(&pod("ns", Some("r"), Some("tenant:42/a")), None, None)
        .unwrap()
        .unwrap();
    assert_eq!(ok.external_id.as_deref(), Some("tenant:42/a"));
    for bad in ["x", "has space", &"a".repeat(1225)] {
        let result = resolver.resolve(&pod("ns", Some("r"), Some(bad)), None, None);
        assert!(
            matches!(result, Err(RoleError::InvalidExternalId { .. })),
            "{bad}"
        );
    }
}

#[test]
fn restrictions_cover_unknown_namespaces_and_the_default_role() {
    let resolver = Resolver::new(base(), Some("fallback"), Some(PolicyFormat::Glob)).unwrap();
    let allows_app = NamespacePolicy::parse(Some(r#"["app-*"]"#), PolicyFormat::Glob);
    assert!(
        resolver
            .resolve(&pod("ns", Some("app-x"), None), Some(&allows_app), None)
            .is_ok()
    );
    assert!(matches!(
        resolver.resolve(&pod("ns", Some("db"), None), Some(&allows_app), None),
        Err(RoleError::NotAllowed { .. })
    ));
    assert!(matches!(
        resolver.resolve(&pod("ns", None, None), Some(&allows_app), None),
        Err(RoleError::NotAllowed { .. })
    ));
    assert!(matches!(
        resolver.resolve(&pod("ns", Some("app-x"), None), None, None),
        Err(RoleError::UnknownNamespace { .. })
    ));
    let invalid = NamespacePolicy::parse(Some("nope"), PolicyFormat::Glob);
    assert!(matches!(
        resolver.resolve(&pod("ns", Some("app-x"), None), Some(&invalid), None),
        Err(RoleError::InvalidNamespacePolicy { .. })
    ));
}
