//! From a pod's annotations (and its namespace's allow-list) to the role it
//! is entitled to right now.

pub mod arn;
pub mod policy;

use thiserror::Error;

pub use arn::{BaseArn, RoleArn};
pub use policy::{NamespacePolicy, PolicyFormat};

use crate::pods::PodInfo;

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
        }
    }
}

/// Where a pod's role came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleSource {
    Annotation,
    Default,
}

impl RoleSource {
    pub fn label(self) -> &'static str {
        match self {
            RoleSource::Annotation => "annotation",
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
        })
    }

    pub fn restrictions(&self) -> Option<PolicyFormat> {
        self.restrictions
    }

    /// The role `pod` may use now, `None` when it has none. `policy` is the
    /// pod's namespace's allow-list, `None` when the namespace is unknown;
    /// it only matters with namespace restrictions on, and then it applies to
    /// the default role too.
    pub fn resolve(
        &self,
        pod: &PodInfo,
        policy: Option<&NamespacePolicy>,
    ) -> Result<Option<AssumeTarget>, RoleError> {
        let annotated = pod.role.as_deref().map(str::trim).filter(|v| !v.is_empty());
        let (role, source) = match annotated {
            Some(value) => (
                to_role_arn(value, self.base.as_ref())?,
                RoleSource::Annotation,
            ),
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
