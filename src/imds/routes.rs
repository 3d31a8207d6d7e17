//! Request routing: a pure function from method and path to what the
//! metadata server does with the request.

use http::Method;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `PUT /latest/api/token`: issue an IMDSv2 session token.
    Token,
    /// `PUT /<version>/api/token`: refused with 403, as the real service does.
    VersionedToken,
    /// `.../meta-data/iam/` (the directory listing).
    IamListing,
    /// `.../meta-data/iam/info`.
    IamInfo,
    /// `.../meta-data/iam/security-credentials[/]`: the role name.
    RoleList,
    /// `.../meta-data/iam/security-credentials/<name>`.
    RoleCredentials(&'a str),
    /// `.../meta-data/iam/security-credentials-extended[/...]`: 404 so SDKs
    /// fall back to the legacy path.
    ExtendedCredentials,
    /// Anything else under `meta-data/iam/`: never proxied, always 404.
    IamOther,
    Healthz,
    Readyz,
    DebugStore,
    Metrics,
    /// A path on the deny-list.
    Denied,
    /// Passed to the real metadata service.
    Proxy,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("malformed path")]
    BadPath,
    #[error("method not allowed")]
    MethodNotAllowed,
}

const MAX_PATH_LEN: usize = 1024;

impl Route<'_> {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Token | Route::VersionedToken => "token",
            Route::IamListing => "iam",
            Route::IamInfo => "iam-info",
            Route::RoleList => "role-list",
            Route::RoleCredentials(_) => "credentials",
            Route::ExtendedCredentials => "credentials-extended",
            Route::IamOther => "iam-other",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::DebugStore => "debug-store",
            Route::Metrics => "metrics",
            Route::Denied => "denied",
            Route::Proxy => "proxy",
        }
    }
}

/// Routes a request. `deny` holds path prefixes relative to the version
/// segment (`user-data`, `meta-data/identity-credentials/`), matched on whole
/// segments.
pub fn route<'a>(method: &Method, path: &'a str, deny: &[String]) -> Result<Route<'a>, RouteError> {
    check_path(path)?;
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed {
        "/healthz" => return only_get(method, Route::Healthz),
        "/readyz" => return only_get(method, Route::Readyz),
        "/debug/store" => return only_get(method, Route::DebugStore),
        "/metrics" => return only_get(method, Route::Metrics),
        _ => {}
    }
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    if let [version, "api", "token"] = segments.as_slice() {
        if *method != Method::PUT {
            return Err(RouteError::MethodNotAllowed);
        }
        return Ok(if *version == "latest" {
            Route::Token
        } else {
            Route::VersionedToken
        });
    }
    let route = match segments.as_slice() {
        [_, "meta-data", "iam"] => Route::IamListing,
        [_, "meta-data", "iam", "info"] => Route::IamInfo,
        [_, "meta-data", "iam", "security-credentials"] => Route::RoleList,
        [_, "meta-data", "iam", "security-credentials", name] => Route::RoleCredentials(name),
        [_, "meta-data", "iam", "security-credentials-extended", ..] => Route::ExtendedCredentials,
        [_, "meta-data", "iam", ..] => Route::IamOther,
        [_, rest @ ..] if is_denied(rest, deny) => Route::Denied,
        _ => Route::Proxy,
    };
    only_get(method, route)
}

fn only_get<'a>(method: &Method, route: Route<'a>) -> Result<Route<'a>, RouteError> {
    if *method == Method::GET || *method == Method::HEAD {
        Ok(route)
    } else {
        Err(RouteError::MethodNotAllowed)
    }
}

/// Real metadata paths are plain: no escapes, no empty or dot segments.
/// Refusing the rest means no encoding trick can reach a path the router
/// did not see (`/latest/meta-data/iam/../iam/info`, `%2F`).
fn check_path(path: &str) -> Result<(), RouteError> {
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN || path.contains("//") {
        return Err(RouteError::BadPath);
    }
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\');
    if !plain {
        return Err(RouteError::BadPath);
    }
    let body = path.strip_suffix('/').unwrap_or(path);
    if body.len() > 1
        && body[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(RouteError::BadPath);
    }
    Ok(())
}

fn is_denied(rest: &[&str], deny: &[String]) -> bool {
    deny.iter().any(|prefix| {
        let prefix: Vec<&str> = prefix
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        !prefix.is_empty() && rest.starts_with(&prefix)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny() -> Vec<String> {
        vec!["user-data".into(), "meta-data/identity-credentials/".into()]
    }

    fn get(path: &str) -> Result<Route<'_>, RouteError> {
        route(&Method::GET, path, &deny())
    }

    #[test]
    fn credential_paths_with_and_without_trailing_slash() {
        let list = "/latest/meta-data/iam/security-credentials";
        assert_eq!(get(list), Ok(Route::RoleList));
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/"),
            Ok(Route::RoleList)
        );
        assert_eq!(
            get("/2021-03-23/meta-data/iam/security-credentials/reader"),
            Ok(Route::RoleCredentials("reader"))
        );
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials-extended/reader"),
            Ok(Route::ExtendedCredentials)
        );
        assert_eq!(get("/latest/meta-data/iam/info"), Ok(Route::IamInfo));
        assert_eq!(get("/latest/meta-data/iam/"), Ok(Route::IamListing));
        assert_eq!(
            get("/latest/meta-data/iam/security-credentials/a/b"),
            Ok(Route::IamOther)
        );
    }

    #[test]
    fn tokens_only_by_put_on_latest() {
        assert_eq!(
            route(&Method::PUT, "/latest/api/token", &[]),
            Ok(Route::Token)
        );
        assert_eq!(
            route(&Method::PUT, "/2021-03-23/api/token", &[]),
            Ok(Route::VersionedToken)
        );
        assert_eq!(
            route(&Method::GET, "/latest/api/token", &[]),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            route(&Method::PUT, "/latest/meta-data/", &[]),
            Err(RouteError::MethodNotAllowed)
        );
        assert_eq!(
            route(&Method::POST, "/latest/meta-data/", &[]),
            Err(RouteError::MethodNotAllowed)
        );
    }

    #[test]
    fn deny_list_matches_whole_segments() {
        assert_eq!(get("/latest/user-data"), Ok(Route::Denied));
        assert_eq!(get("/latest/user-data/"), Ok(Route::Denied));
        assert_eq!(
            get("/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"),
            Ok(Route::Denied)
        );
        assert_eq!(get("/latest/meta-data/instance-id"), Ok(Route::Proxy));
        assert_eq!(get("/latest/user-data-other"), Ok(Route::Proxy));
        assert_eq!(
            route(&Method::GET, "/latest/user-data", &[]),
            Ok(Route::Proxy)
        );
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
            assert_eq!(get(path), Err(RouteError::BadPath), "{path}");
        }
    }

    #[test]
    fn agent_endpoints() {
        assert_eq!(get("/healthz"), Ok(Route::Healthz));
        assert_eq!(get("/readyz"), Ok(Route::Readyz));
        assert_eq!(get("/debug/store"), Ok(Route::DebugStore));
        assert_eq!(get("/"), Ok(Route::Proxy));
    }
}
