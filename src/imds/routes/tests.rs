use super::*;

fn deny() -> DenyList {
    DenyList::new(DEFAULT_DENY)
}

fn get(path: &str) -> Result<Route<'_>, Refusal> {
    route(&Method::GET, path, Origin::Direct, &deny())
}

fn dnat(path: &str) -> Result<Route<'_>, Refusal> {
    route(&Method::GET, path, Origin::Dnat, &deny())
}

fn meta(route: MetadataRoute<'_>) -> Result<Route<'_>, Refusal> {
    Ok(Route::Metadata(route))
}

#[test]
fn credential_paths_with_and_without_trailing_slash() {
    let list = "/latest/meta-data/iam/security-credentials";
    assert_eq!(get(list), meta(MetadataRoute::RoleList));
    assert_eq!(
        get("/latest/meta-data/iam/security-credentials/"),
        meta(MetadataRoute::RoleList)
    );
    assert_eq!(
        get("/2021-03-23/meta-data/iam/security-credentials/reader"),
        meta(MetadataRoute::RoleCredentials("reader"))
    );
    assert_eq!(
        get("/latest/meta-data/iam/security-credentials-extended/reader"),
        meta(MetadataRoute::ExtendedCredentials)
    );
    assert_eq!(
        get("/latest/meta-data/iam/info"),
        meta(MetadataRoute::IamInfo)
    );
    assert_eq!(
        get("/latest/meta-data/iam/"),
        meta(MetadataRoute::IamListing)
    );
    assert_eq!(
        get("/latest/meta-data/iam/security-credentials/a/b"),
        meta(MetadataRoute::IamOther)
    );
}

#[test]
fn nothing_under_iam_reaches_the_proxy_in_any_spelling() {
    for path in [
        "/latest/META-DATA/iam/security-credentials/",
        "/latest/meta-data/IAM/info",
        "/latest/Meta-Data/Iam",
        "/latest/meta-data/iam/unknown",
        "/2021-07-15/meta-data/iam/security-credentials/x/y",
    ] {
        assert_eq!(get(path), meta(MetadataRoute::IamOther), "{path}");
        assert_eq!(dnat(path), meta(MetadataRoute::IamOther), "{path}");
    }
}

#[test]
fn a_path_without_a_version_is_not_passed_on() {
    assert_eq!(
        dnat("/latest/latest/meta-data/iam/info"),
        meta(MetadataRoute::IamOther)
    );
    assert_eq!(
        dnat("/latest/x/meta-data/IAM/security-credentials/"),
        meta(MetadataRoute::IamOther)
    );
    assert_eq!(dnat("/latest/latest/user-data"), Err(Refusal::DenyList));
    for path in [
        "/meta-data/iam/security-credentials/",
        "/user-data",
        "/dynamic/instance-identity/signature",
        "/anything/meta-data/instance-id",
        "/2021-7-15/meta-data/",
    ] {
        assert_eq!(dnat(path), meta(MetadataRoute::Unversioned), "{path}");
    }
    for path in [
        "/",
        "/latest",
        "/1.0/meta-data/",
        "/2016-09-02/meta-data/instance-id",
    ] {
        assert_eq!(dnat(path), meta(MetadataRoute::Proxy), "{path}");
    }
}

#[test]
fn tokens_only_by_put_on_latest() {
    let none = DenyList::default();
    let put = |path| route(&Method::PUT, path, Origin::Dnat, &none);
    assert_eq!(put("/latest/api/token"), meta(MetadataRoute::Token));
    assert_eq!(put("/2021-03-23/api/token"), Err(Refusal::VersionedToken));
    assert_eq!(
        route(&Method::GET, "/latest/api/token", Origin::Dnat, &none),
        Err(Refusal::MethodNotAllowed)
    );
    assert_eq!(put("/latest/meta-data/"), Err(Refusal::MethodNotAllowed));
    assert_eq!(
        route(&Method::POST, "/latest/meta-data/", Origin::Dnat, &none),
        Err(Refusal::MethodNotAllowed)
    );
    assert_eq!(put("/latest/user-data"), Err(Refusal::MethodNotAllowed));
}

#[test]
fn deny_list_matches_whole_segments_in_any_case() {
    for path in [
        "/latest/user-data",
        "/latest/user-data/",
        "/latest/USER-DATA",
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/dynamic/instance-identity/signature",
        "/latest/dynamic/instance-identity/pkcs7",
        "/latest/dynamic/instance-identity/rsa2048",
        "/2016-09-02/dynamic/instance-identity/rsa2048/",
    ] {
        assert_eq!(get(path), Err(Refusal::DenyList), "{path}");
    }
    for path in [
        "/latest/meta-data/instance-id",
        "/latest/user-data-other",
        "/latest/dynamic/instance-identity/document",
    ] {
        assert_eq!(get(path), meta(MetadataRoute::Proxy), "{path}");
    }
    assert_eq!(
        route(
            &Method::GET,
            "/latest/user-data",
            Origin::Dnat,
            &DenyList::default()
        ),
        meta(MetadataRoute::Proxy)
    );
}

#[test]
fn deny_list_entries_are_normalised() {
    let list = DenyList::new(["/user-data/", "", "meta-data/Tags", "user-data"]);
    assert_eq!(list.entries(), ["user-data", "meta-data/tags"]);
}

#[test]
fn tricky_paths_are_refused() {
    for path in [
        "latest/meta-data",
        "/latest/meta-data/iam/../iam/info",
        "/latest/meta-data/./iam/info",
        "/latest//user-data",
        "//",
        "/latest/meta-data//",
        "/latest/user%2Ddata",
        "/latest/meta-data/iam/security-credentials%2Freader",
        "/latest/meta\\data",
    ] {
        assert_eq!(get(path), Err(Refusal::MalformedPath), "{path}");
    }
}

#[test]
fn agent_routes_only_on_direct_connections() {
    assert_eq!(get("/healthz"), Ok(Route::Agent(AgentRoute::Healthz)));
    assert_eq!(get("/readyz/"), Ok(Route::Agent(AgentRoute::Readyz)));
    assert_eq!(get("/metrics"), Ok(Route::Agent(AgentRoute::Metrics)));
    assert_eq!(
        get("/debug/store"),
        Ok(Route::Agent(AgentRoute::DebugStore))
    );
    assert_eq!(get("/"), meta(MetadataRoute::Proxy));
    for path in ["/healthz", "/readyz", "/metrics", "/debug/store"] {
        assert_eq!(dnat(path), meta(MetadataRoute::Unversioned), "{path}");
    }
}

#[test]
fn overlong_paths_are_refused() {
    let at_limit = format!("/latest/meta-data/{}", "a".repeat(MAX_PATH_LEN - 18));
    assert_eq!(at_limit.len(), MAX_PATH_LEN);
    assert_eq!(get(&at_limit), meta(MetadataRoute::Proxy));
    for extra in [1, 2, 5000] {
        let long = format!("{at_limit}{}", "a".repeat(extra));
        assert_eq!(get(&long), Err(Refusal::MalformedPath), "{}", long.len());
    }
}
