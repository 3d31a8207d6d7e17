//! Content negotiation: the `Accept` header picks whether stored objects go
//! out whole, as a `meta.k8s.io` Table (kubectl's `get`), or reduced to
//! PartialObjectMetadata (kube-rs's metadata API and `metadata_watcher`).
//! The choice and its failures (406) follow a real API server's: the first
//! media range it can produce wins, even when it does not fit the reply.

use serde_json::{Value, json};

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

/// A kind's Table columns, and how a row's cells are read off an object.
type Columns = (&'static [&'static str], fn(&Value) -> Vec<Value>);

/// kubectl's `get` asks for a `meta.k8s.io/v1` Table: name, phase, IP,
/// node and the role annotation for pods; name and allowed roles for
/// namespaces; name, secrets and age for service accounts, as a real
/// server prints them.
fn as_table(value: &Value) -> Option<Value> {
    let kind = value["kind"].as_str()?;
    let (singular, items) = match kind.strip_suffix("List") {
        Some(singular) => (singular, value["items"].as_array()?.clone()),
        None => (kind, vec![value.clone()]),
    };
    let (columns, cells): Columns = match singular {
        "Pod" => (&["Name", "Status", "IP", "Node", "Role"], pod_cells),
        "Namespace" => (&["Name", "Allowed roles"], namespace_cells),
        "ServiceAccount" => (&["Name", "Secrets", "Age"], service_account_cells),
        _ => return None,
    };
    let columns: Vec<Value> = columns
        .iter()
        .map(|name| {
            let kind = if *name == "Secrets" {
                "integer"
            } else {
                "string"
            };
            json!({"name": name, "type": kind, "format": "", "description": "", "priority": 0})
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
    let age = item["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(|created| {
            time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map_or_else(
            || "<unknown>".to_string(),
            |created| human_age(time::OffsetDateTime::now_utc() - created),
        );
    vec![text(item, "/metadata/name"), json!(secrets), json!(age)]
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
