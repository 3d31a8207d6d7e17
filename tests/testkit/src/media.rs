//! Content negotiation: the `Accept` header picks whether stored objects go
//! out whole, as a `meta.k8s.io` Table (kubectl's `get`), or reduced to
//! PartialObjectMetadata (kube-rs's metadata API and `metadata_watcher`).
//! The choice and its failures (406) follow a real API server's: the first
//! media range it can produce wins, even when it does not fit the reply.

use serde_json::{Value, json};

use crate::events;
use crate::store::ApiError;

/// The form a reply's objects take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Full,
    Table,
    /// `PartialObjectMetadata` (`list: false`) or `PartialObjectMetadataList`,
    /// in `meta.k8s.io/<version>`.
    Metadata {
        list: bool,
        version: &'static str,
    },
}

impl Form {
    /// `Accept` to form: the first range that names JSON (or anything) and
    /// a conversion this server knows. No header means the object itself.
    pub fn negotiate(accept: Option<&str>) -> Result<Form, ApiError> {
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok(Form::Full);
        };
        accept.split(',').find_map(Form::from_range).ok_or_else(|| {
            ApiError::new(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json",
            )
        })
    }

    /// One media range, `application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`.
    fn from_range(range: &str) -> Option<Form> {
        let mut parts = range.split(';').map(str::trim);
        let media_type = parts.next()?.to_ascii_lowercase();
        if !["application/json", "application/*", "*/*"].contains(&media_type.as_str()) {
            return None;
        }
        let (mut target, mut group, mut version) = (None, None, None);
        for parameter in parts {
            match parameter.split_once('=') {
                Some(("as", value)) => target = Some(value),
                Some(("g", value)) => group = Some(value),
                Some(("v", value)) => version = Some(value),
                _ => {}
            }
        }
        let Some(target) = target else {
            return Some(Form::Full);
        };
        if group != Some("meta.k8s.io") {
            return None;
        }
        let version = match version? {
            "v1" => "v1",
            "v1beta1" => "v1beta1",
            _ => return None,
        };
        match target {
            "Table" => Some(Form::Table),
            "PartialObjectMetadata" => Some(Form::Metadata {
                list: false,
                version,
            }),
            "PartialObjectMetadataList" => Some(Form::Metadata {
                list: true,
                version,
            }),
            _ => None,
        }
    }

    /// A stored object or list in this form. Asking for the metadata of a
    /// list as one object (or the reverse) is a 406, as on a real server.
    pub fn render(self, value: Value) -> Result<Value, ApiError> {
        let is_list = value["items"].is_array();
        match self {
            Form::Full => Ok(value),
            Form::Table => Ok(as_table(&value).unwrap_or(value)),
            Form::Metadata { list, version } if list == is_list => Ok(if list {
                metadata_list(&value, version)
            } else {
                partial(&value, version)
            }),
            Form::Metadata { list, .. } => {
                let kind = value["kind"].as_str().unwrap_or("object");
                let message = if list {
                    format!(
                        "you requested PartialObjectMetadataList, but the requested object is not a list ({kind})"
                    )
                } else {
                    format!(
                        "you requested PartialObjectMetadata, but the requested object is a list ({kind})"
                    )
                };
                Err(ApiError::new(406, "NotAcceptable", message))
            }
        }
    }

    /// The form of the objects in a watch's events: whole, or reduced to
    /// PartialObjectMetadata. Tables are not streamed: a Table watch gets
    /// whole objects.
    pub fn for_watch(self) -> Result<Form, ApiError> {
        match self {
            Form::Full | Form::Table => Ok(Form::Full),
            Form::Metadata { list: false, .. } => Ok(self),
            Form::Metadata { list: true, .. } => Err(ApiError::new(
                406,
                "NotAcceptable",
                "you requested PartialObjectMetadataList, but the requested object is not a list (watch event)",
            )),
        }
    }

    /// One watched object (a bookmark's too) in this form.
    pub fn event_object(self, object: &Value) -> Value {
        match self {
            Form::Metadata { version, .. } => partial(object, version),
            Form::Full | Form::Table => object.clone(),
        }
    }
}

fn partial(object: &Value, version: &str) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}

fn metadata_list(list: &Value, version: &str) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .map(|items| items.iter().map(|item| partial(item, version)).collect())
        .unwrap_or_default();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list["metadata"],
        "items": items,
    })
}

/// A Table column: its name, its type, and its priority (1: shown by
/// kubectl only with `-o wide`).
#[derive(Clone, Copy)]
struct Column(&'static str, &'static str, u8);

const fn string(name: &'static str) -> Column {
    Column(name, "string", 0)
}

const fn wide(name: &'static str) -> Column {
    Column(name, "string", 1)
}

/// A kind's Table columns, and how a row's cells are read off an object.
type Columns = (&'static [Column], fn(&Value) -> Vec<Value>);

const POD_COLUMNS: &[Column] = &[
    string("Name"),
    string("Status"),
    string("IP"),
    string("Node"),
    string("Role"),
];

const NAMESPACE_COLUMNS: &[Column] = &[string("Name"), string("Allowed roles")];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    string("Name"),
    Column("Secrets", "integer", 0),
    string("Age"),
];

const EVENT_COLUMNS: &[Column] = &[
    string("Last Seen"),
    string("Type"),
    string("Reason"),
    string("Object"),
    wide("Subobject"),
    wide("Source"),
    string("Message"),
    wide("First Seen"),
    Column("Count", "integer", 1),
    wide("Name"),
];

const NODE_COLUMNS: &[Column] = &[
    string("Name"),
    string("Status"),
    string("Roles"),
    string("Age"),
    string("Version"),
    wide("Internal-IP"),
    wide("External-IP"),
    wide("OS-Image"),
    wide("Kernel-Version"),
    wide("Container-Runtime"),
];

/// kubectl's `get` asks for a `meta.k8s.io/v1` Table: name, phase, IP,
/// node and the role annotation for pods; name and allowed roles for
/// namespaces; name, secrets and age for service accounts, as a real
/// server prints them; and for Events and Nodes a real server's columns.
fn as_table(value: &Value) -> Option<Value> {
    let kind = value["kind"].as_str()?;
    let (singular, items) = match kind.strip_suffix("List") {
        Some(singular) => (singular, value["items"].as_array()?.clone()),
        None => (kind, vec![value.clone()]),
    };
    let (columns, cells): Columns = match singular {
        "Pod" => (POD_COLUMNS, pod_cells),
        "Namespace" => (NAMESPACE_COLUMNS, namespace_cells),
        "ServiceAccount" => (SERVICE_ACCOUNT_COLUMNS, service_account_cells),
        "Event" => (EVENT_COLUMNS, event_cells),
        "Node" => (NODE_COLUMNS, node_cells),
        _ => return None,
    };
    let columns: Vec<Value> = columns
        .iter()
        .map(|Column(name, kind, priority)| {
            json!({"name": name, "type": kind, "format": "", "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| json!({"cells": cells(item), "object": partial(item, "v1")}))
        .collect();
    Some(json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": value["metadata"]["resourceVersion"]},
        "columnDefinitions": columns, "rows": rows,
    }))
}

fn text(item: &Value, pointer: &str) -> Value {
    json!(
        item.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("<none>")
    )
}

fn pod_cells(item: &Value) -> Vec<Value> {
    [
        "/metadata/name",
        "/status/phase",
        "/status/podIP",
        "/spec/nodeName",
        "/metadata/annotations/iam.amazonaws.com~1role",
    ]
    .iter()
    .map(|pointer| text(item, pointer))
    .collect()
}

fn namespace_cells(item: &Value) -> Vec<Value> {
    vec![
        text(item, "/metadata/name"),
        text(
            item,
            "/metadata/annotations/iam.amazonaws.com~1allowed-roles",
        ),
    ]
}

fn service_account_cells(item: &Value) -> Vec<Value> {
    let secrets = item["secrets"].as_array().map_or(0, Vec::len);
    let age = age(&item["metadata"]["creationTimestamp"]);
    vec![text(item, "/metadata/name"), json!(secrets), json!(age)]
}

/// A real server's event row (`printEvent`), read off the core form:
/// first seen is the first timestamp or else the event time, last seen the
/// series' last observation or else the last timestamp or else first seen,
/// the count the series' or else the event's or else 1.
fn event_cells(item: &Value) -> Vec<Value> {
    let event = events::as_core(item);
    let first = match &event["firstTimestamp"] {
        Value::String(_) => age(&event["firstTimestamp"]),
        _ => age(&event["eventTime"]),
    };
    let last = if event["series"].is_object() {
        age(&event["series"]["lastObservedTime"])
    } else if event["lastTimestamp"].is_string() {
        age(&event["lastTimestamp"])
    } else {
        first.clone()
    };
    let count = [&event["series"]["count"], &event["count"]]
        .into_iter()
        .find_map(|c| c.as_i64().filter(|c| *c > 0))
        .unwrap_or(1);
    let involved = &event["involvedObject"];
    let kind = involved["kind"].as_str().unwrap_or_default().to_lowercase();
    let object = match involved["name"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    let message = event["message"].as_str().unwrap_or_default().trim();
    vec![
        json!(last),
        json!(plain(&event, "/type")),
        json!(plain(&event, "/reason")),
        json!(object),
        json!(plain(&event, "/involvedObject/fieldPath")),
        json!(event_source(&event)),
        json!(message),
        json!(first),
        json!(count),
        json!(plain(&event, "/metadata/name")),
    ]
}

/// A real server's node row (`printNode`): the Ready condition's status
/// (`Ready`, `NotReady`, `Unknown`), `,SchedulingDisabled` if cordoned, the
/// roles its `node-role.kubernetes.io/` labels name, and the kubelet's
/// version, addresses and platform.
fn node_cells(item: &Value) -> Vec<Value> {
    let ready = item["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Ready"))
        .map(|ready| match ready["status"].as_str() {
            Some("True") => "Ready",
            Some("False") => "NotReady",
            _ => "Unknown",
        })
        .unwrap_or("Unknown");
    let mut status = ready.to_string();
    if item["spec"]["unschedulable"] == true {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = item["metadata"]["labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    key.strip_prefix("node-role.kubernetes.io/")
                        .filter(|role| !role.is_empty())
                        .or_else(|| {
                            (key == "kubernetes.io/role")
                                .then(|| value.as_str())
                                .flatten()
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |kind: &str| {
        item["status"]["addresses"]
            .as_array()
            .and_then(|addresses| addresses.iter().find(|a| a["type"] == kind))
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |field: &str| text(item, &format!("/status/nodeInfo/{field}"));
    vec![
        text(item, "/metadata/name"),
        json!(status),
        json!(roles),
        json!(age(&item["metadata"]["creationTimestamp"])),
        info("kubeletVersion"),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// `formatEventSource`: component (or reporting controller), then `, `
/// and the host (or reporting instance) if there is one.
fn event_source(event: &Value) -> String {
    let either = |first: &str, second: &str| {
        let value = plain(event, first);
        if value.is_empty() {
            plain(event, second)
        } else {
            value
        }
    };
    let component = either("/source/component", "/reportingComponent");
    let instance = either("/source/host", "/reportingInstance");
    if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    }
}

/// A string field, empty if absent.
fn plain<'a>(item: &'a Value, pointer: &str) -> &'a str {
    item.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// How long ago an RFC 3339 time was, as kubectl prints it; `<unknown>` if
/// there is none.
fn age(at: &Value) -> String {
    at.as_str().and_then(events::parse_time).map_or_else(
        || "<unknown>".to_string(),
        |at| human_age(time::OffsetDateTime::now_utc() - at),
    )
}

/// kubectl's short ages: `42s`, `3m12s`, `25m`, `5h3m`, `20h`, `3d`.
fn human_age(age: time::Duration) -> String {
    let seconds = age.whole_seconds().max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{minutes}m{}s", s % 60),
        s if s < 3 * 3600 => format!("{minutes}m"),
        s if s < 8 * 3600 => format!("{hours}h{}m", minutes % 60),
        s if s < 48 * 3600 => format!("{hours}h"),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_RS_OBJECT: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    const KUBE_RS_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    const KUBECTL_TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    #[test]
    fn negotiates_like_a_real_server() {
        let metadata = |list| Form::Metadata {
            list,
            version: "v1",
        };
        let cases = [
            (None, Ok(Form::Full)),
            (Some("application/json"), Ok(Form::Full)),
            (Some("*/*"), Ok(Form::Full)),
            (Some(KUBECTL_TABLE), Ok(Form::Table)),
            (Some(KUBE_RS_OBJECT), Ok(metadata(false))),
            (Some(KUBE_RS_LIST), Ok(metadata(true))),
            (
                Some("application/vnd.kubernetes.protobuf,application/json"),
                Ok(Form::Full),
            ),
            (Some("application/yaml"), Err(406)),
            (
                Some("application/json;as=PartialObjectMetadata;g=other;v=v1"),
                Err(406),
            ),
        ];
        for (accept, expected) in cases {
            let got = Form::negotiate(accept).map_err(|e| e.code);
            assert_eq!(got, expected, "{accept:?}");
        }
    }

    #[test]
    fn metadata_of_the_wrong_shape_is_not_acceptable() {
        let list = json!({"kind": "PodList", "metadata": {}, "items": []});
        let object = json!({"kind": "Pod", "metadata": {"name": "a"}});
        let one = Form::Metadata {
            list: false,
            version: "v1",
        };
        let many = Form::Metadata {
            list: true,
            version: "v1",
        };
        assert_eq!(one.render(list).map_err(|e| e.code).err(), Some(406));
        assert_eq!(many.render(object).map_err(|e| e.code).err(), Some(406));
        assert_eq!(many.for_watch().map_err(|e| e.code).err(), Some(406));
    }

    #[test]
    fn ages_read_like_kubectl() {
        let age = |s| human_age(time::Duration::seconds(s));
        assert_eq!(age(42), "42s");
        assert_eq!(age(192), "3m12s");
        assert_eq!(age(1500), "25m");
        assert_eq!(age(5 * 3600 + 180), "5h3m");
        assert_eq!(age(20 * 3600), "20h");
        assert_eq!(age(3 * 86_400), "3d");
    }
}
