//! From a pod's annotations (and its namespace's allow-list) to the role it
//! is entitled to right now.

pub mod arn;
pub mod policy;

use thiserror::Error;

pub use arn::{BaseArn, RoleArn};
pub use policy::{NamespacePolicy, PolicyFormat};

use crate::pods::{PodInfo, ServiceAccountInfo};

/// Why a pod is refused a role. Every variant is a refusal: none of them
/// falls back to another role.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RoleError {
    #[error("invalid role ARN {arn:?}: {why}")]
    InvalidArn { arn: String, why: String },
    #[error("role name {name:?} needs --base-role-arn to become an ARN")]
    NoBaseArn { name: String },
    #[error("invalid external ID annotation: {why}")]
    InvalidExternalId { why: String },
    #[error("namespace {namespace:?} does not allow role {role}")]
    NotAllowed { namespace: String, role: String },
    #[error("namespace {namespace:?} has an invalid allowed-roles annotation: {why}")]
    InvalidNamespacePolicy { namespace: String, why: String },
    #[error("namespace {namespace:?} is not known yet")]
    UnknownNamespace { namespace: String },
    #[error("service account {namespace}/{name} is not known (not yet watched, or deleted)")]
    UnknownServiceAccount { namespace: String, name: String },
}

impl RoleError {
    /// A short, stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RoleError::InvalidArn { .. } => "invalid-role-annotation",
            RoleError::NoBaseArn { .. } => "no-base-arn",
            RoleError::InvalidExternalId { .. } => "invalid-external-id",
            RoleError::NotAllowed { .. } => "namespace-restriction",
            RoleError::InvalidNamespacePolicy { .. } => "invalid-namespace-policy",
            RoleError::UnknownNamespace { .. } => "unknown-namespace",
            RoleError::UnknownServiceAccount { .. } => "unknown-service-account",
        }
    }
}

/// Where a pod's role came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleSource {
    Annotation,
    /// The annotation of the pod's ServiceAccount (`--service-account-roles`).
    ServiceAccount,
    Default,
}

impl RoleSource {
    pub fn label(self) -> &'static str {
        match self {
            RoleSource::Annotation => "annotation",
            RoleSource::ServiceAccount => "service-account",
            RoleSource::Default => "default-role",
        }
    }
}

/// What to ask STS for on a pod's behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumeTarget {
    pub role: RoleArn,
    pub external_id: Option<String>,
    pub source: RoleSource,
}

/// Resolves pods to roles. Built once at start, after any auto-discovery.
#[derive(Clone, Debug)]
pub struct Resolver {
    base: Option<BaseArn>,
    default_role: Option<RoleArn>,
    restrictions: Option<PolicyFormat>,
    /// `--service-account-roles`: a pod without a role annotation takes its
    /// ServiceAccount's.
    service_account_roles: bool,
}

impl Resolver {
    pub fn new(
        base: Option<BaseArn>,
        default_role: Option<&str>,
        restrictions: Option<PolicyFormat>,
    ) -> Result<Self, RoleError> {
        let default_role = default_role
            .map(|name| to_role_arn(name, base.as_ref()))
            .transpose()?;
        Ok(Resolver {
            base,
            default_role,
            restrictions,
            service_account_roles: false,
        })
    }

    /// Pods without a role annotation take their ServiceAccount's role.
    pub fn with_service_account_roles(mut self, enabled: bool) -> Self {
        self.service_account_roles = enabled;
        self
    }

    pub fn service_account_roles(&self) -> bool {
        self.service_account_roles
    }

    pub fn restrictions(&self) -> Option<PolicyFormat> {
        self.restrictions
    }

    /// The role `pod` may use now, `None` when it has none: its own
    /// annotation, else (with ServiceAccount roles on) its ServiceAccount's,
    /// else the default role. `policy` is the pod's namespace's allow-list,
    /// `None` when the namespace is unknown; it only matters with namespace
    /// restrictions on, and then it applies to whichever role was chosen.
    /// `account` is the pod's ServiceAccount, `None` when it is not known: a
    /// pod that would take its role from it is then refused, never given
    /// the default role in its place.
    pub fn resolve(
        &self,
        pod: &PodInfo,
        policy: Option<&NamespacePolicy>,
        account: Option<&ServiceAccountInfo>,
    ) -> Result<Option<AssumeTarget>, RoleError> {
        let (role, source) = match self.choose(pod, account)? {
            Some((value, source)) => (to_role_arn(value, self.base.as_ref())?, source),
            None => match &self.default_role {
                Some(role) => (role.clone(), RoleSource::Default),
                None => return Ok(None),
            },
        };
        if self.restrictions.is_some() {
            self.check_namespace(&pod.namespace, &role, policy)?;
        }
        let external_id = pod
            .external_id
            .as_deref()
            .map(validate_external_id)
            .transpose()?;
        Ok(Some(AssumeTarget {
            role,
            external_id,
            source,
        }))
    }

    /// The annotation that names the pod's role, and where it is; `None`
    /// when the default role applies.
    fn choose<'a>(
        &self,
        pod: &'a PodInfo,
        account: Option<&'a ServiceAccountInfo>,
    ) -> Result<Option<(&'a str, RoleSource)>, RoleError> {
        let set = |value: Option<&'a String>| value.map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(value) = set(pod.role.as_ref()) {
            return Ok(Some((value, RoleSource::Annotation)));
        }
        if !self.service_account_roles {
            return Ok(None);
        }
        match account {
            None => Err(RoleError::UnknownServiceAccount {
                namespace: pod.namespace.clone(),
                name: pod.service_account.clone(),
            }),
            Some(account) => {
                Ok(set(account.role.as_ref()).map(|v| (v, RoleSource::ServiceAccount)))
            }
        }
    }

    fn check_namespace(
        &self,
        namespace: &str,
        role: &RoleArn,
        policy: Option<&NamespacePolicy>,
    ) -> Result<(), RoleError> {
        match policy {
            None => Err(RoleError::UnknownNamespace {
                namespace: namespace.to_string(),
            }),
            Some(NamespacePolicy::Invalid(why)) => Err(RoleError::InvalidNamespacePolicy {
                namespace: namespace.to_string(),
                why: why.clone(),
            }),
            Some(policy) if policy.allows(role, self.base.as_ref()) => Ok(()),
            Some(_) => Err(RoleError::NotAllowed {
                namespace: namespace.to_string(),
                role: role.to_string(),
            }),
        }
    }
}

/// Where a pod's role comes from, for `iamlet explain`: what
/// [`Resolver::resolve`] chose and why, before any allow-list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleOrigin {
    /// `None`: no annotation and no default role.
    pub source: Option<RoleSource>,
    /// The value as written (annotation) or the default role's ARN.
    pub value: Option<String>,
    /// The ARN the value names, or why it names none.
    pub role: Option<Result<RoleArn, RoleError>>,
}

/// A namespace allow-list's verdict on a role, with the entry that decided.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum PolicyVerdict {
    /// `--namespace-restrictions` is off: the allow-lists are not read.
    Unrestricted,
    Allowed {
        entry: String,
    },
    NotAllowed {
        entries: Vec<String>,
    },
    InvalidPolicy {
        why: String,
    },
    /// The agent has not seen the namespace (or it does not exist).
    UnknownNamespace,
}

impl Resolver {
    /// Where `pod`'s role comes from; an unknown ServiceAccount (when it
    /// would decide) is an error, as in [`Resolver::resolve`].
    pub fn origin(
        &self,
        pod: &PodInfo,
        account: Option<&ServiceAccountInfo>,
    ) -> Result<RoleOrigin, RoleError> {
        Ok(match self.choose(pod, account)? {
            Some((value, source)) => RoleOrigin {
                source: Some(source),
                value: Some(value.to_string()),
                role: Some(to_role_arn(value, self.base.as_ref())),
            },
            None => match &self.default_role {
                Some(role) => RoleOrigin {
                    source: Some(RoleSource::Default),
                    value: Some(role.to_string()),
                    role: Some(Ok(role.clone())),
                },
                None => RoleOrigin {
                    source: None,
                    value: None,
                    role: None,
                },
            },
        })
    }

    /// What `policy` (a namespace's allow-list, `None` when unknown) says
    /// of `role`, and which entry said it.
    pub fn verdict(&self, role: &RoleArn, policy: Option<&NamespacePolicy>) -> PolicyVerdict {
        if self.restrictions.is_none() {
            return PolicyVerdict::Unrestricted;
        }
        match policy {
            None => PolicyVerdict::UnknownNamespace,
            Some(NamespacePolicy::Invalid(why)) => {
                PolicyVerdict::InvalidPolicy { why: why.clone() }
            }
            Some(policy) => match policy.deciding_entry(role, self.base.as_ref()) {
                Some(entry) => PolicyVerdict::Allowed {
                    entry: entry.to_string(),
                },
                None => PolicyVerdict::NotAllowed {
                    entries: policy.entries().into_iter().map(str::to_string).collect(),
                },
            },
        }
    }

    /// A role annotation's value (name or ARN) as the resolver reads it.
    pub fn role_arn(&self, value: &str) -> Result<RoleArn, RoleError> {
        to_role_arn(value.trim(), self.base.as_ref())
    }
}

/// An annotation value is a full ARN or a name joined to the base ARN.
pub fn to_role_arn(value: &str, base: Option<&BaseArn>) -> Result<RoleArn, RoleError> {
    if value.starts_with("arn:") {
        return RoleArn::parse(value);
    }
    match base {
        Some(base) => base.join(value),
        None => Err(RoleError::NoBaseArn {
            name: value.to_string(),
        }),
    }
}

/// STS accepts 2..=1224 characters of `[\w+=,.@:/-]`.
fn validate_external_id(value: &str) -> Result<String, RoleError> {
    let invalid = |why: String| RoleError::InvalidExternalId { why };
    let len = value.chars().count();
    if !(2..=1224).contains(&len) {
        return Err(invalid(format!("length {len} is outside 2..=1224")));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(arn::is_iam_name_char(*c) || *c == ':' || *c == '/'))
    {
        return Err(invalid(format!("character {c:?} is not allowed")));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests;
