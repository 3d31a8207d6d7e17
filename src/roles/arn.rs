//! IAM role ARNs and the base ARN that role names in annotations are joined to.

use std::fmt;

use super::RoleError;

/// A syntactically valid IAM role ARN:
/// `arn:<partition>:iam::<12-digit account>:role/<optional path/><name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleArn(String);

/// The prefix joined to bare role names: an ARN up to and including `role/`
/// (and an optional path), always ending in `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseArn(String);

const MAX_ARN_LEN: usize = 2048;
const MAX_ROLE_NAME_LEN: usize = 64;
/// IAM paths (`/` plus segments plus `/`) are at most 512 characters.
const MAX_PATH_LEN: usize = 512;

impl RoleArn {
    pub fn parse(text: &str) -> Result<Self, RoleError> {
        let invalid = |why: &str| RoleError::InvalidArn {
            arn: text.to_string(),
            why: why.to_string(),
        };
        if text.len() > MAX_ARN_LEN {
            return Err(invalid("longer than 2048 characters"));
        }
        let resource = parse_iam_prefix(text).map_err(|why| invalid(&why))?;
        let path_and_name = resource
            .strip_prefix("role/")
            .ok_or_else(|| invalid("the resource must start with role/"))?;
        validate_role_path(path_and_name).map_err(|why| invalid(&why))?;
        Ok(RoleArn(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The role's name: the last path segment, which is what the metadata
    /// service lists under `security-credentials/`.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The 12-digit account the role belongs to.
    pub fn account(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }

    /// The path and name after `role/`, relative to `base` when the role
    /// lies under it (same partition, account and path prefix), else `None`.
    pub fn relative_to(&self, base: &BaseArn) -> Option<&str> {
        self.0.strip_prefix(base.as_str())
    }

    /// The ARN an instance profile wrapping this role would have; what
    /// `iam/info` reports for a pod.
    pub fn instance_profile_arn(&self) -> String {
        self.0.replacen(":role/", ":instance-profile/", 1)
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl BaseArn {
    /// Accepts `arn:<partition>:iam::<account>:role/[path/]`, adding the
    /// trailing `/` when it is missing, as kube2iam does.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut base = text.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        let resource = parse_iam_prefix(&base)?;
        let path = resource
            .strip_prefix("role/")
            .ok_or("must look like arn:aws:iam::123456789012:role/")?;
        if !path.is_empty() {
            for segment in path.trim_end_matches('/').split('/') {
                validate_segment(segment)?;
            }
        }
        Ok(BaseArn(base))
    }

    /// The base ARN of the account an instance profile belongs to, as
    /// `--auto-discover-base-arn` derives it from the node's `iam/info`.
    pub fn from_instance_profile(profile_arn: &str) -> Result<Self, String> {
        let resource = parse_iam_prefix(profile_arn)?;
        if !resource.starts_with("instance-profile/") {
            return Err(format!("{profile_arn:?} is not an instance profile ARN"));
        }
        let prefix_len = profile_arn.len() - resource.len();
        Self::parse(&format!("{}role/", &profile_arn[..prefix_len]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Joins a role name (optionally with a path) to the base. The name is
    /// taken as written: a leading `/` is an empty path segment and refused.
    pub fn join(&self, name: &str) -> Result<RoleArn, RoleError> {
        RoleArn::parse(&format!("{}{}", self.0, name))
    }
}

/// Checks `arn:<partition>:iam::<account>:` and returns what follows.
fn parse_iam_prefix(text: &str) -> Result<&str, String> {
    let mut parts = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err("must look like arn:aws:iam::123456789012:role/NAME".into());
    };
    let partition_ok = partition.starts_with("aws")
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-');
    if !partition_ok {
        return Err(format!("unknown partition {partition:?}"));
    }
    if service != "iam" {
        return Err(format!("service must be iam, not {service:?}"));
    }
    if !region.is_empty() {
        return Err("IAM ARNs have no region".into());
    }
    if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("account {account:?} is not 12 digits"));
    }
    Ok(resource)
}

fn validate_role_path(path_and_name: &str) -> Result<(), String> {
    let mut segments: Vec<&str> = path_and_name.split('/').collect();
    let name = segments.pop().unwrap_or_default();
    let path_len = path_and_name.len() - name.len() + 1;
    if path_len > MAX_PATH_LEN {
        return Err(format!(
            "the role's path is longer than {MAX_PATH_LEN} characters"
        ));
    }
    for segment in segments {
        validate_segment(segment)?;
    }
    validate_segment(name)?;
    if name.len() > MAX_ROLE_NAME_LEN {
        return Err(format!("role name {name:?} is longer than 64 characters"));
    }
    Ok(())
}

/// IAM names and path segments: `[\w+=,.@-]+`, and never `.` or `..`:
/// IAM would accept them as names, but a path that reads like a relative
/// one is never what an annotation author meant, and it would make prefix
/// matching in allow-lists ambiguous.
fn validate_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("empty role name or path segment".into());
    }
    if segment == "." || segment == ".." {
        return Err(format!(
            "{segment:?} is not allowed as a role name or path segment"
        ));
    }
    match segment.chars().find(|c| !is_iam_name_char(*c)) {
        Some(c) => Err(format!("character {c:?} is not allowed in {segment:?}")),
        None => Ok(()),
    }
}

pub(crate) fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_role_arns_with_and_without_paths() {
        let arn = RoleArn::parse("arn:aws:iam::123456789012:role/team/app-reader").unwrap();
        assert_eq!(arn.name(), "app-reader");
        assert_eq!(arn.account(), "123456789012");
        assert_eq!(
            arn.instance_profile_arn(),
            "arn:aws:iam::123456789012:instance-profile/team/app-reader"
        );
        assert!(RoleArn::parse("arn:aws-cn:iam::123456789012:role/x").is_ok());
    }

    #[test]
    fn rejects_what_sts_would_reject() {
        for bad in [
            "",
            "reader",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:s3::123456789012:role/x",
            "arn:aws:iam::123456789012:user/x",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
            "arn:aws:iam::123456789012:role/a//b",
            "arn:evil:iam::123456789012:role/x",
            "arn:aws:iam::123456789012:role/./x",
            "arn:aws:iam::123456789012:role/../x",
            "arn:aws:iam::123456789012:role/a/..",
            "arn:aws:iam::123456789012:role/team/",
            "arn:aws:iam::123456789012:role/a\u{301}",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65));
        assert!(RoleArn::parse(&long).is_err());
        let long_path = format!("arn:aws:iam::123456789012:role/{}/x", "p/".repeat(256));
        assert!(RoleArn::parse(&long_path).is_err());
    }

    #[test]
    fn base_arn_gets_its_trailing_slash_and_joins_names() {
        let base = BaseArn::parse("arn:aws:iam::123456789012:role").unwrap();
        assert_eq!(base.as_str(), "arn:aws:iam::123456789012:role/");
        assert_eq!(
            base.join("reader").unwrap().as_str(),
            "arn:aws:iam::123456789012:role/reader"
        );
        let with_path = BaseArn::parse("arn:aws:iam::123456789012:role/team/").unwrap();
        assert_eq!(
            with_path.join("reader").unwrap().as_str(),
            "arn:aws:iam::123456789012:role/team/reader"
        );
        assert!(base.join("bad name").is_err());
        assert!(
            base.join("/reader").is_err(),
            "a leading / is an empty segment"
        );
        assert!(base.join("../admin").is_err());
        assert!(base.join("team//reader").is_err());
        assert!(BaseArn::parse("arn:aws:iam::123456789012:user/").is_err());
        assert!(BaseArn::parse("123456789012").is_err());
    }

    #[test]
    fn relative_names_only_under_the_same_base() {
        let base = BaseArn::parse("arn:aws:iam::123456789012:role/team/").unwrap();
        let arn = |text: &str| RoleArn::parse(text).unwrap();
        assert_eq!(
            arn("arn:aws:iam::123456789012:role/team/app").relative_to(&base),
            Some("app")
        );
        for other in [
            "arn:aws:iam::999999999999:role/team/app",
            "arn:aws-cn:iam::123456789012:role/team/app",
            "arn:aws:iam::123456789012:role/app",
            "arn:aws:iam::123456789012:role/teamx/app",
        ] {
            assert_eq!(arn(other).relative_to(&base), None, "{other}");
        }
    }

    #[test]
    fn base_arn_from_instance_profile() {
        let base = BaseArn::from_instance_profile(
            "arn:aws:iam::123456789012:instance-profile/nodes-profile",
        )
        .unwrap();
        assert_eq!(base.as_str(), "arn:aws:iam::123456789012:role/");
        assert!(BaseArn::from_instance_profile("arn:aws:iam::123456789012:role/x").is_err());
    }
}
