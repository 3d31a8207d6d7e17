//! The startup taint: what `--startup-taint` names, and its removal from
//! the agent's own Node.
//!
//! The removal is a JSON patch that tests the taint list as read and
//! replaces it with the same list without the startup taint, so a write
//! by anyone else in between (another agent's taint, the node lifecycle
//! controller's `NoExecute` taints) fails the test instead of being
//! overwritten; the agent then reads the node again and retries. The list
//! is handled as raw JSON, never through typed structs, so fields this
//! build does not know survive the round trip and cannot fail the test
//! forever.

use std::fmt;
use std::str::FromStr;

use http::Request;
use serde_json::{Value, json};
use thiserror::Error;

/// A taint's effect, as Kubernetes spells it.
const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `key[=value]:Effect`, the form kubelet's `--register-with-taints` and
/// `kubectl taint` take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupTaint {
    pub key: String,
    /// Matched when given; any value matches otherwise.
    pub value: Option<String>,
    pub effect: String,
}

impl FromStr for StartupTaint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (head, effect) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} is not KEY[=VALUE]:EFFECT"))?;
        if !EFFECTS.contains(&effect) {
            return Err(format!(
                "effect {effect:?} is not one of {}",
                EFFECTS.join(", ")
            ));
        }
        let (key, value) = match head.split_once('=') {
            Some((key, value)) => (key, Some(value.to_string())),
            None => (head, None),
        };
        check_key(key)?;
        if let Some(value) = &value {
            check_value(value)?;
        }
        Ok(StartupTaint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
        })
    }
}

impl fmt::Display for StartupTaint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}:{}", self.key, self.effect),
            None => write!(f, "{}:{}", self.key, self.effect),
        }
    }
}

/// A qualified name: an optional DNS-subdomain prefix and `/`, then 1-63
/// characters of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(format!("key prefix {prefix:?} is not a DNS subdomain"));
        }
    }
    check_name(name).map_err(|why| format!("key {key:?}: {why}"))
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|why| format!("value {value:?}: {why}"))
}

fn check_name(name: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters".to_string());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || !edge(name.chars().next())
        || !edge(name.chars().last())
    {
        return Err("must be letters, digits, '-', '_' or '.', alphanumeric at both ends".into());
    }
    Ok(())
}

impl StartupTaint {
    /// Whether a taint of the node (as JSON) is this one.
    fn matches(&self, taint: &Value) -> bool {
        taint["key"] == self.key.as_str()
            && taint["effect"] == self.effect.as_str()
            && self
                .value
                .as_deref()
                .is_none_or(|value| taint["value"].as_str().unwrap_or("") == value)
    }
}

#[derive(Debug, Error)]
pub enum TaintError {
    /// The list changed between the read and the patch.
    #[error("the node's taints changed while they were being patched")]
    Conflict,
    /// Not allowed: retrying does not help until the RBAC is fixed.
    #[error("{0}")]
    Refused(String),
    /// Not allowed to read the node: whether it carries the taint is
    /// unknown (an install without the RBAC, or a taint not in use).
    #[error("{0}")]
    Unreadable(String),
    /// No such node: `--node` (or `$NODE_NAME`) is wrong.
    #[error("{0}")]
    NoSuchNode(String),
    #[error("{0}")]
    Failed(String),
}

/// What a removal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The node did not carry the taint (registered without it, or an
    /// earlier agent removed it).
    Absent,
}

/// One attempt: reads `node` and, when it carries `taint`, patches it away.
pub async fn remove_once(
    client: &kube::Client,
    node: &str,
    taint: &StartupTaint,
) -> Result<Removal, TaintError> {
    let path = format!("/api/v1/nodes/{}", percent_encode(node));
    let read = Request::get(&path)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| TaintError::Failed(e.to_string()))?;
    let object: Value =
        client
            .request(read)
            .await
            .map_err(classify)
            .map_err(|error| match error {
                TaintError::Refused(why) => TaintError::Unreadable(why),
                other => other,
            })?;
    let Some(patch) = removal_patch(&object, taint) else {
        return Ok(Removal::Absent);
    };
    let write = Request::patch(&path)
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .header(http::header::ACCEPT, "application/json")
        .body(patch.to_string().into_bytes())
        .map_err(|e| TaintError::Failed(e.to_string()))?;
    client
        .request::<Value>(write)
        .await
        .map_err(classify)
        .map(|_| Removal::Removed)
}

/// The JSON patch that removes `taint` from `node`, `None` when it carries
/// none.
pub fn removal_patch(node: &Value, taint: &StartupTaint) -> Option<Value> {
    let taints = node.pointer("/spec/taints")?.as_array()?;
    if !taints.iter().any(|t| taint.matches(t)) {
        return None;
    }
    let kept: Vec<&Value> = taints.iter().filter(|t| !taint.matches(t)).collect();
    Some(json!([
        {"op": "test", "path": "/spec/taints", "value": taints},
        {"op": "replace", "path": "/spec/taints", "value": kept},
    ]))
}

/// A failed `test` is 422 Invalid on kube-apiserver; 409 is a conflict of
/// any other write. Forbidden and NotFound are for the operator to fix.
fn classify(error: kube::Error) -> TaintError {
    match error {
        kube::Error::Api(status) => match status.code {
            409 | 422 => TaintError::Conflict,
            404 => TaintError::NoSuchNode(status.message.clone()),
            401 | 403 => TaintError::Refused(format!(
                "{} ({}): {}",
                status.code, status.reason, status.message
            )),
            _ => TaintError::Failed(format!(
                "{} ({}): {}",
                status.code, status.reason, status.message
            )),
        },
        other => TaintError::Failed(other.to_string()),
    }
}

/// Node names are DNS subdomains; anything else is escaped rather than
/// trusted into a path.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kubelet_forms() {
        let taint: StartupTaint = "iamlet.io/agent-not-ready:NoSchedule".parse().unwrap();
        assert_eq!(taint.key, "iamlet.io/agent-not-ready");
        assert_eq!(taint.value, None);
        assert_eq!(taint.effect, "NoSchedule");
        let valued: StartupTaint = "example.com/boot=true:NoExecute".parse().unwrap();
        assert_eq!(valued.value.as_deref(), Some("true"));
        assert_eq!(valued.to_string(), "example.com/boot=true:NoExecute");
        for bad in [
            "no-effect",
            "key:Sometimes",
            ":NoSchedule",
            "Bad_Prefix/x:NoSchedule",
            "a/-x:NoSchedule",
            "k=v v:NoSchedule",
        ] {
            assert!(bad.parse::<StartupTaint>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_patch_tests_the_list_read_and_keeps_every_other_taint() {
        let taint: StartupTaint = "iamlet.io/agent-not-ready:NoSchedule".parse().unwrap();
        let other = json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute",
            "timeAdded": "2026-11-23T09:00:00Z", "futureField": {"x": 1}});
        let same_key_other_effect =
            json!({"key": "iamlet.io/agent-not-ready", "effect": "NoExecute"});
        let ours = json!({"key": "iamlet.io/agent-not-ready", "effect": "NoSchedule"});
        let node = json!({"spec": {"taints": [other, ours, same_key_other_effect]}});
        let patch = removal_patch(&node, &taint).unwrap();
        assert_eq!(patch[0]["op"], "test");
        assert_eq!(patch[0]["value"], node["spec"]["taints"]);
        assert_eq!(patch[1]["op"], "replace");
        assert_eq!(patch[1]["value"], json!([other, same_key_other_effect]));
        let untainted = json!({"spec": {"taints": [other]}});
        assert_eq!(removal_patch(&untainted, &taint), None);
        assert_eq!(removal_patch(&json!({"spec": {}}), &taint), None);
    }

    #[test]
    fn a_taint_with_a_value_matches_only_that_value() {
        let taint: StartupTaint = "example.com/boot=true:NoSchedule".parse().unwrap();
        let node = |value: &str| json!({"spec": {"taints": [{"key": "example.com/boot", "value": value, "effect": "NoSchedule"}]}});
        assert!(removal_patch(&node("true"), &taint).is_some());
        assert!(removal_patch(&node("false"), &taint).is_none());
    }
}
