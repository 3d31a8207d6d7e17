//! Request routing: a pure function from method, path and how the
//! connection arrived to what the server does with the request.
//!
//! Agent routes (`/healthz`, `/readyz`, `/metrics`, `/debug/store`,
//! `/explain`) and
//! metadata routes are two enums, so the handler's dispatch is exhaustive
//! and a route added later cannot fall through to the proxy. A connection
//! that came through the DNAT gets metadata routes only.

use http::Method;

use crate::entitlement::Refusal;

/// How a connection reached the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Through iamlet's DNAT: its original destination was a metadata
    /// address. Only a pod (or a host process the rules catch) gets here.
    Dnat,
    /// Straight to the agent's address and port.
    Direct,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Agent(AgentRoute),
    Metadata(MetadataRoute<'a>),
}

/// The agent's own endpoints. Never reached through the DNAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRoute {
    Healthz,
    Readyz,
    Metrics,
    DebugStore,
    /// `iamlet explain`'s questions (node callers only).
    Explain,
}

/// What a pod asks of the metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRoute<'a> {
    /// `PUT /latest/api/token`: issue an IMDSv2 session token.
    Token,
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
    /// Anything else under `meta-data/iam/` (in any letter case): never
    /// proxied, always 404.
    IamOther,
    /// A path whose first segment is no metadata version (`latest`, `1.0`
    /// or a date): 404, as the real service answers, without asking it, so
    /// that `/meta-data/iam/...` or `/latest/latest/...` never slip past
    /// the checks above.
    Unversioned,
    /// Passed to the real metadata service.
    Proxy,
}

/// Path prefixes (after the version segment) refused to pods, as segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyList {
    prefixes: Vec<Vec<String>>,
}

/// Refused by default: the node's user-data (often secrets), its own
/// identity credentials, and the signatures of its identity document, which
/// systems such as Vault's EC2 auth accept as proof of being the node. The
/// identity document itself stays readable: SDKs read the region from it.
pub const DEFAULT_DENY: &[&str] = &[
    "user-data",
    "meta-data/identity-credentials",
    "dynamic/instance-identity/signature",
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/rsa2048",
];

const MAX_PATH_LEN: usize = 1024;

impl DenyList {
    /// Prefixes such as `user-data` or `meta-data/identity-credentials/`;
    /// empty entries are ignored.
    pub fn new<S: AsRef<str>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        let mut list = DenyList::default();
        for prefix in prefixes {
            let segments: Vec<String> = prefix
                .as_ref()
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
                .collect();
            if !segments.is_empty() && !list.prefixes.contains(&segments) {
                list.prefixes.push(segments);
            }
        }
        list
    }

    /// The prefixes as `a/b` strings, for logs and docs.
    pub fn entries(&self) -> Vec<String> {
        self.prefixes.iter().map(|s| s.join("/")).collect()
    }

    /// Whole-segment, case-insensitive prefix match: what the real service
    /// would serve under another spelling is refused too.
    fn denies(&self, rest: &[&str]) -> bool {
        self.prefixes.iter().any(|prefix| {
            prefix.len() <= rest.len()
                && prefix
                    .iter()
                    .zip(rest)
                    .all(|(want, have)| want.eq_ignore_ascii_case(have))
        })
    }
}

impl Route<'_> {
    /// A short, bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Agent(AgentRoute::Healthz) => "healthz",
            Route::Agent(AgentRoute::Readyz) => "readyz",
            Route::Agent(AgentRoute::Metrics) => "metrics",
            Route::Agent(AgentRoute::DebugStore) => "debug-store",
            Route::Agent(AgentRoute::Explain) => "explain",
            Route::Metadata(MetadataRoute::Token) => "token",
            Route::Metadata(MetadataRoute::IamListing) => "iam",
            Route::Metadata(MetadataRoute::IamInfo) => "iam-info",
            Route::Metadata(MetadataRoute::RoleList) => "role-list",
            Route::Metadata(MetadataRoute::RoleCredentials(_)) => "credentials",
            Route::Metadata(MetadataRoute::ExtendedCredentials) => "credentials-extended",
            Route::Metadata(MetadataRoute::IamOther) => "iam-other",
            Route::Metadata(MetadataRoute::Unversioned) => "unversioned",
            Route::Metadata(MetadataRoute::Proxy) => "proxy",
        }
    }
}

/// Routes a request, or refuses it (malformed path, wrong method, a path on
/// the deny-list, a token asked on a versioned path).
pub fn route<'a>(
    method: &Method,
    path: &'a str,
    origin: Origin,
    deny: &DenyList,
) -> Result<Route<'a>, Refusal> {
    check_path(path)?;
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    if origin == Origin::Direct {
        let agent = match trimmed {
            "/healthz" => Some(AgentRoute::Healthz),
            "/readyz" => Some(AgentRoute::Readyz),
            "/metrics" => Some(AgentRoute::Metrics),
            "/debug/store" => Some(AgentRoute::DebugStore),
            "/explain" => Some(AgentRoute::Explain),
            _ => None,
        };
        if let Some(agent) = agent {
            return only_get(method, Ok(Route::Agent(agent)));
        }
    }
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    if let [version, "api", "token"] = segments.as_slice() {
        if *method != Method::PUT {
            return Err(Refusal::MethodNotAllowed);
        }
        return if *version == "latest" {
            Ok(Route::Metadata(MetadataRoute::Token))
        } else {
            Err(Refusal::VersionedToken)
        };
    }
    let route = match segments.as_slice() {
        [version, ..] if !is_version(version) => MetadataRoute::Unversioned,
        [_, first, second, rest @ ..]
            if first.eq_ignore_ascii_case("meta-data") && second.eq_ignore_ascii_case("iam") =>
        {
            iam_route(first, second, rest)
        }
        // `meta-data/iam` or a denied prefix deeper in the path
        // (`/latest/latest/meta-data/iam/...`) is never passed on either.
        [_, rest @ ..] if (0..rest.len()).any(|at| is_iam(&rest[at..])) => MetadataRoute::IamOther,
        [_, rest @ ..] if (0..rest.len()).any(|at| deny.denies(&rest[at..])) => {
            return only_get(method, Err(Refusal::DenyList));
        }
        _ => MetadataRoute::Proxy,
    };
    only_get(method, Ok(Route::Metadata(route)))
}

/// Everything under `meta-data/iam/` is answered by the agent: the node's
/// credentials and instance profile live there.
fn iam_route<'a>(first: &str, second: &str, rest: &[&'a str]) -> MetadataRoute<'a> {
    if first != "meta-data" || second != "iam" {
        return MetadataRoute::IamOther;
    }
    match rest {
        [] => MetadataRoute::IamListing,
        ["info"] => MetadataRoute::IamInfo,
        ["security-credentials"] => MetadataRoute::RoleList,
        ["security-credentials", name] => MetadataRoute::RoleCredentials(name),
        ["security-credentials-extended", ..] => MetadataRoute::ExtendedCredentials,
        _ => MetadataRoute::IamOther,
    }
}

fn is_iam(segments: &[&str]) -> bool {
    matches!(segments, [first, second, ..]
        if first.eq_ignore_ascii_case("meta-data") && second.eq_ignore_ascii_case("iam"))
}

/// `latest`, `1.0`, or a `YYYY-MM-DD` date: the metadata service's versions.
fn is_version(segment: &str) -> bool {
    let date = segment.len() == 10
        && segment.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    date || segment == "latest" || segment == "1.0"
}

fn only_get<T>(method: &Method, routed: Result<T, Refusal>) -> Result<T, Refusal> {
    if *method == Method::GET || *method == Method::HEAD {
        routed
    } else {
        Err(Refusal::MethodNotAllowed)
    }
}

/// Real metadata paths are plain: no escapes, no empty or dot segments.
/// Refusing the rest means no encoding trick can reach a path the router
/// did not see (`/latest/meta-data/iam/../iam/info`, `%2F`).
fn check_path(path: &str) -> Result<(), Refusal> {
    if !path.starts_with('/') || path.len() > MAX_PATH_LEN || path.contains("//") {
        return Err(Refusal::MalformedPath);
    }
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\');
    if !plain {
        return Err(Refusal::MalformedPath);
    }
    let body = path.strip_suffix('/').unwrap_or(path);
    if body.len() > 1
        && body[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Refusal::MalformedPath);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
