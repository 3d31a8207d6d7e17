//! Nodes: the object a real kubelet registers, its taints checked as a
//! real server checks them, and the test controls around node PATCHes.
//!
//! An agent that removes a startup taint from its Node reads the node and
//! sends a patch (a JSON patch whose `test` guards the list it read, or a
//! merge patch). What can go wrong on a real cluster is what tests need to
//! provoke, so every node PATCH is recorded ([`NodePatch`]), another
//! controller's write can be slipped in between the agent's read and its
//! patch ([`crate::ApiServer::on_next_node_patch`]), and patches can be
//! refused outright ([`crate::ApiServer::fail_node_patches`]).

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::{Value, json};

use crate::Shared;
use crate::store::{ApiError, Kind, ObjectKey, PatchType, State, now_rfc3339};

/// One PATCH a node received, as sent, and the status it was answered.
#[derive(Clone, Debug, PartialEq)]
pub struct NodePatch {
    /// The node the patch was sent to.
    pub name: String,
    /// As sent (`application/json-patch+json`, ...).
    pub content_type: String,
    /// The body as JSON; a body that is not JSON is kept as a string.
    pub body: Value,
    /// The HTTP status answered: 200, or the error's.
    pub status: u16,
    /// Why it failed, in more words than a real server sends back (a
    /// failed JSON patch `test` is only "the server rejected our request
    /// due to an error in our request" on the wire).
    pub error: Option<String>,
}

/// What tests have arranged for node PATCHes, and what they received.
#[derive(Default)]
pub(crate) struct Control {
    patches: Vec<NodePatch>,
    /// Per node: the taints another writer sets just before the next PATCH.
    racing_writes: HashMap<String, Value>,
    /// The status the next PATCHes answer, and how many are left.
    failures: Option<(u16, usize)>,
}

impl Control {
    pub fn patches(&self) -> Vec<NodePatch> {
        self.patches.clone()
    }

    pub fn race_next_patch(&mut self, name: &str, taints: Value) {
        self.racing_writes.insert(name.to_string(), taints);
    }

    pub fn fail_patches(&mut self, status: u16, count: usize) {
        self.failures = (count > 0).then_some((status, count));
    }

    /// The injected failure for this PATCH, if any are left.
    fn take_failure(&mut self) -> Option<u16> {
        let (status, left) = self.failures.as_mut()?;
        let status = *status;
        *left -= 1;
        if *left == 0 {
            self.failures = None;
        }
        Some(status)
    }
}

/// `PATCH /api/v1/nodes/NAME`: an injected failure if one is arranged
/// (nothing is applied then, and a racing write stays pending), else the
/// racing write if one is arranged, then the patch; recorded either way.
/// The control lock is held throughout, so records are in the order the
/// patches were applied.
pub(crate) fn patch(
    shared: &Shared,
    name: &str,
    content_type: &str,
    body: &Bytes,
) -> Result<Value, ApiError> {
    let mut control = shared.node_control();
    let result = match control.take_failure() {
        Some(status) => Err(injected_failure(status, name)),
        None => {
            let mut state = shared.state();
            let race = control.racing_writes.remove(name);
            let raced = match race {
                Some(taints) => set_taints(&mut state, name, taints).map(drop),
                None => Ok(()),
            };
            raced.and_then(|()| {
                let patch_type = PatchType::from_content_type(content_type)?;
                let patch = serde_json::from_slice(body).map_err(|e| {
                    ApiError::new(400, "BadRequest", format!("invalid JSON patch body: {e}"))
                })?;
                state.apply_patch(ObjectKey::new(Kind::Node, "", name), patch_type, &patch)
            })
        }
    };
    control.patches.push(NodePatch {
        name: name.to_string(),
        content_type: content_type.to_string(),
        body: serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned())),
        status: result.as_ref().map_or_else(|e| e.code, |_| 200),
        error: result
            .as_ref()
            .err()
            .map(|e| e.cause.clone().unwrap_or_else(|| e.message.clone())),
    });
    result
}

/// Another writer's update of a node's taints: a new resourceVersion and
/// a MODIFIED event, as for any write.
pub(crate) fn set_taints(state: &mut State, name: &str, taints: Value) -> Result<Value, ApiError> {
    let key = ObjectKey::new(Kind::Node, "", name);
    let mut node = state.get(&key)?;
    node["spec"]["taints"] = taints;
    if let Some(meta) = node["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    state.update(key, node)
}

/// A Node as a kubelet registers it and keeps it: hostname and platform
/// labels, the given taints, a Ready condition, addresses and capacity.
/// The internal IP is made from the name, so it is stable across runs.
pub(crate) fn node_object(name: &str, taints: Value) -> Value {
    let octet = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()))
        % 250
        + 2;
    let now = now_rfc3339();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
            },
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        },
        "spec": {
            "podCIDR": format!("10.244.{octet}.0/24"),
            "podCIDRs": [format!("10.244.{octet}.0/24")],
            "providerID": format!("aws:///us-east-1a/{name}"),
            "taints": taints,
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": format!("10.0.0.{octet}")},
                {"type": "Hostname", "address": name},
            ],
            "capacity": {"cpu": "4", "memory": "16264948Ki", "pods": "110", "ephemeral-storage": "81106868Ki"},
            "allocatable": {"cpu": "3920m", "memory": "15247092Ki", "pods": "110", "ephemeral-storage": "74747945101"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "message": "kubelet has sufficient memory available",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "message": "kubelet has no disk pressure",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "message": "kubelet has sufficient PID available",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "message": "kubelet is posting ready status",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "ec2a5b1f0c3d4e5f8a9b0c1d2e3f4a5b",
                "systemUUID": "ec2a5b1f-0c3d-4e5f-8a9b-0c1d2e3f4a5b",
                "bootID": "5d0c1f5e-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
                "kernelVersion": "6.1.128-136.201.amzn2023.x86_64",
                "osImage": "Amazon Linux 2023.6.20250203",
                "containerRuntimeVersion": "containerd://1.7.25",
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "v1.32.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    })
}

/// A Node write as a real server takes it: `spec.taints` must decode as a
/// list of taints and pass validation (`validateNodeTaints`: key a
/// qualified name, value a label value, a known effect, each key and
/// effect pair once). An empty list is stored as no list, as Go's
/// `omitempty` encodes it, so a later `test` sees what a real server shows.
pub(crate) fn admit(name: &str, mut object: Value) -> Result<Value, ApiError> {
    let invalid = |errors: Vec<String>| {
        let listed = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        ApiError::new(
            422,
            "Invalid",
            format!("Node {name:?} is invalid: {listed}"),
        )
    };
    let taints = match object.pointer("/spec/taints") {
        None | Some(Value::Null) => return Ok(object),
        Some(Value::Array(taints)) if taints.is_empty() => {
            if let Some(spec) = object["spec"].as_object_mut() {
                spec.remove("taints");
            }
            return Ok(object);
        }
        Some(Value::Array(taints)) => taints,
        Some(other) => {
            return Err(invalid(vec![format!(
                "spec.taints: Invalid value: {other}: must be a list of taints"
            )]));
        }
    };
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, taint) in taints.iter().enumerate() {
        let path = format!("spec.taints[{index}]");
        let field = |field: &str| match &taint[field] {
            Value::Null => Ok(""),
            Value::String(text) => Ok(text.as_str()),
            other => Err(format!(
                "{path}.{field}: Invalid value: {other}: must be a string"
            )),
        };
        if !taint.is_object() {
            errors.push(format!(
                "{path}: Invalid value: {taint}: must be a taint object"
            ));
            continue;
        }
        let (key, value, effect) = match (field("key"), field("value"), field("effect")) {
            (Ok(key), Ok(value), Ok(effect)) => (key, value, effect),
            (key, value, effect) => {
                errors.extend([key.err(), value.err(), effect.err()].into_iter().flatten());
                continue;
            }
        };
        errors.extend(
            qualified_name(key).map(|why| format!("{path}.key: Invalid value: {key:?}: {why}")),
        );
        if !value.is_empty() {
            errors.extend(name_part(value).map(|why| {
                format!(
                    "{path}.value: Invalid value: {value:?}: {}",
                    why.replace("name part", "a valid label")
                )
            }));
        }
        match effect {
            "" => errors.push(format!("{path}.effect: Required value")),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errors.push(format!(
                "{path}.effect: Unsupported value: {other:?}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""
            )),
        }
        if !seen.insert((key.to_string(), effect.to_string())) {
            errors.push(format!(
                "{path}: Duplicate value: {}: taints must be unique by key and effect pair",
                json!({"key": key, "effect": effect})
            ));
        }
    }
    if errors.is_empty() {
        Ok(object)
    } else {
        Err(invalid(errors))
    }
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name
/// part. `None` if it is one.
fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let subdomain = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !subdomain {
            return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string());
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".to_string());
    }
    name_part(name)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn name_part(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".to_string());
    }
    let bytes = name.as_bytes();
    let inner = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    (!ends || !bytes.iter().all(inner)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()
    })
}

/// A refusal a test asked for, in the words a real server uses for it.
fn injected_failure(status: u16, name: &str) -> ApiError {
    let (reason, message) = match status {
        400 => (
            "BadRequest",
            "the server rejected our request for an unknown reason".to_string(),
        ),
        401 => ("Unauthorized", "Unauthorized".to_string()),
        403 => (
            "Forbidden",
            format!(
                "nodes {name:?} is forbidden: User \"system:anonymous\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
            ),
        ),
        404 => ("NotFound", format!("nodes {name:?} not found")),
        409 => return ApiError::conflict(Kind::Node, name).with_cause("injected failure (409)"),
        422 => (
            "Invalid",
            format!("Node {name:?} is invalid: injected failure"),
        ),
        429 => (
            "TooManyRequests",
            "Too many requests, please try again later.".to_string(),
        ),
        503 => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request".to_string(),
        ),
        504 => (
            "Timeout",
            "Timeout: request did not complete within the allotted timeout".to_string(),
        ),
        _ => (
            "InternalError",
            format!("Internal error occurred: injected failure ({status})"),
        ),
    };
    ApiError::new(status, reason, message).with_cause(format!("injected failure ({status})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_taints_pass_and_an_empty_list_is_dropped() {
        let taints = json!([
            {"key": "iamlet.io/agent-not-ready", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        ]);
        assert!(admit("n", node_object("n", taints)).is_ok());
        let empty = admit("n", node_object("n", json!([]))).unwrap();
        assert!(empty["spec"].get("taints").is_none(), "{empty}");
    }

    #[test]
    fn invalid_taints_are_refused_with_a_real_servers_words() {
        let refused = |taints: Value| admit("n", node_object("n", taints)).unwrap_err();
        let error = refused(json!([{"key": "a", "effect": "Sometimes"}]));
        assert_eq!((error.code, error.reason), (422, "Invalid"));
        assert!(
            error.message.starts_with(
                "Node \"n\" is invalid: spec.taints[0].effect: Unsupported value: \"Sometimes\""
            ),
            "{}",
            error.message
        );
        let error = refused(
            json!([{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}]),
        );
        assert!(
            error.message.contains("spec.taints[1]: Duplicate value"),
            "{}",
            error.message
        );
        let error = refused(json!([{"effect": "NoSchedule"}]));
        assert!(
            error.message.contains("name part must be non-empty"),
            "{}",
            error.message
        );
        let error = refused(json!([{"key": "a"}]));
        assert!(
            error
                .message
                .contains("spec.taints[0].effect: Required value"),
            "{}",
            error.message
        );
        let error = refused(
            json!([{"key": "Bad_Prefix/x", "effect": "NoSchedule"}, {"key": 3, "effect": "NoSchedule"}]),
        );
        assert!(
            error.message.contains("prefix part") && error.message.contains("spec.taints[1].key"),
            "{}",
            error.message
        );
        assert_eq!(refused(json!("taint")).code, 422);
    }

    #[test]
    fn injected_failures_carry_their_reason() {
        for (status, reason) in [
            (403, "Forbidden"),
            (409, "Conflict"),
            (500, "InternalError"),
            (503, "ServiceUnavailable"),
        ] {
            let error = injected_failure(status, "n");
            assert_eq!((error.code, error.reason), (status, reason));
        }
    }
}
