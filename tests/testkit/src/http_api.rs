//! The HTTP side: discovery, REST verbs on pods and namespaces, and watch
//! streams (one JSON event per line over a chunked response).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use crate::Shared;
use crate::store::{ApiError, FieldSelector, Kind, ObjectKey, StoredEvent};

type Body = BoxBody<Bytes, Infallible>;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let mut cut = shared.generation.subscribe();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = cut.changed() => {}
            }
        });
    }
}

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{} {}", parts.method, parts.uri));
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(&ApiError::new(400, "BadRequest", "unreadable body")),
    };
    let wants_table = parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("as=Table"));
    match route(&shared, &parts.method, &path, &query, &content_type, &body) {
        Ok(Reply::Json(status, value)) if wants_table => {
            json_response(status, &as_table(&value).unwrap_or(value))
        }
        Ok(Reply::Json(status, value)) => json_response(status, &value),
        Ok(Reply::Watch(watch)) => watch_response(shared, watch),
        Err(api_error) => error(&api_error),
    }
}

enum Reply {
    Json(StatusCode, Value),
    Watch(WatchRequest),
}

struct WatchRequest {
    kind: Kind,
    namespace: Option<String>,
    selector: FieldSelector,
    since: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ok = |value| Ok(Reply::Json(StatusCode::OK, value));
    match (method, segments.as_slice()) {
        (&Method::GET, ["version"]) => ok(
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-iamlet-fake", "platform": "linux/amd64"}),
        ),
        (&Method::GET, ["api"]) => ok(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        (&Method::GET, ["apis"]) => {
            ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
        }
        (&Method::GET, ["api", "v1"]) => ok(resource_list()),
        // Test control: forget the history and cut the watches (410 on resume).
        (&Method::POST, ["fake", "compact"]) => {
            shared.state().compact();
            shared.generation.send_modify(|g| *g += 1);
            ok(json!({"compacted": true}))
        }
        (_, ["api", "v1", "pods"]) => collection(shared, method, Kind::Pod, None, query, body),
        (_, ["api", "v1", "namespaces"]) => {
            collection(shared, method, Kind::Namespace, None, query, body)
        }
        (_, ["api", "v1", "namespaces", name]) => object(
            shared,
            method,
            Kind::Namespace,
            "",
            name,
            content_type,
            body,
        ),
        (_, ["api", "v1", "namespaces", ns, "pods"]) => {
            collection(shared, method, Kind::Pod, Some(ns), query, body)
        }
        (
            _,
            ["api", "v1", "namespaces", ns, "pods", name]
            | ["api", "v1", "namespaces", ns, "pods", name, "status"],
        ) => object(shared, method, Kind::Pod, ns, name, content_type, body),
        _ => Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )),
    }
}

fn collection(
    shared: &Shared,
    method: &Method,
    kind: Kind,
    namespace: Option<&str>,
    query: &HashMap<String, String>,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    match *method {
        Method::GET => {
            let selector =
                FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let since = match query.get("resourceVersion").map(String::as_str) {
                    None | Some("") | Some("0") => None,
                    Some(text) => Some(text.parse().map_err(|_| {
                        ApiError::new(
                            400,
                            "BadRequest",
                            format!("invalid resourceVersion {text:?}"),
                        )
                    })?),
                };
                let timeout = query
                    .get("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(1800u64)
                    .clamp(1, 3600);
                return Ok(Reply::Watch(WatchRequest {
                    kind,
                    namespace: namespace.map(str::to_string),
                    selector,
                    since,
                    bookmarks: query
                        .get("allowWatchBookmarks")
                        .is_some_and(|b| b == "true"),
                    timeout: Duration::from_secs(timeout),
                }));
            }
            let (items, version) = shared.state().list(kind, namespace, &selector);
            let offset: usize = query
                .get("continue")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let limit: usize = query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0)
                .unwrap_or(usize::MAX);
            let end = offset.saturating_add(limit).min(items.len());
            let page: Vec<Value> = items.get(offset..end).unwrap_or_default().to_vec();
            let mut metadata = json!({"resourceVersion": version.to_string()});
            if end < items.len() {
                metadata["continue"] = json!(end.to_string());
                metadata["remainingItemCount"] = json!(items.len() - end);
            }
            Ok(Reply::Json(
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", kind.name()), "apiVersion": "v1",
                    "metadata": metadata, "items": page,
                }),
            ))
        }
        Method::POST => {
            let object: Value = parse_body(body)?;
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "metadata.name: Required value",
                ));
            }
            let key = ObjectKey::new(kind, namespace.unwrap_or("default"), &name);
            let created = shared.state().create(key, object)?;
            Ok(Reply::Json(StatusCode::CREATED, created))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported here"),
        )),
    }
}

fn object(
    shared: &Shared,
    method: &Method,
    kind: Kind,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let key = ObjectKey::new(kind, namespace, name);
    let value = match *method {
        Method::GET => shared.state().get(&key)?,
        Method::PUT => shared.state().update(key, parse_body(body)?)?,
        Method::PATCH => {
            let merge_like = content_type.starts_with("application/merge-patch+json")
                || content_type.starts_with("application/strategic-merge-patch+json");
            if !merge_like {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("patch type {content_type:?} is not supported"),
                ));
            }
            shared.state().patch(key, &parse_body(body)?)?
        }
        Method::DELETE => shared.state().delete(&key)?,
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            ));
        }
    };
    Ok(Reply::Json(StatusCode::OK, value))
}

/// Streams a watch: backlog from the history (or synthetic ADDED events for
/// a watch without a version), then live events, bookmarks, and the end of
/// the stream at the timeout, or a 410 ERROR event if the version is gone.
fn watch_response(shared: Arc<Shared>, watch: WatchRequest) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let mut cut = shared.generation.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + watch.timeout;
        let (backlog, mut live) = {
            let state = shared.state();
            let live = state.subscribe();
            let backlog = match watch.since {
                None => Some(
                    state
                        .list(watch.kind, watch.namespace.as_deref(), &watch.selector)
                        .0
                        .into_iter()
                        .map(|object| line("ADDED", &object))
                        .collect::<Vec<_>>(),
                ),
                Some(since) => state.events_since(since).map(|events| {
                    events
                        .iter()
                        .filter_map(|e| event_line(&watch, e))
                        .collect()
                }),
            };
            (backlog, live)
        };
        let Some(backlog) = backlog else {
            let _ = tx
                .send(Ok(Frame::data(gone(watch.since.unwrap_or(0)))))
                .await;
            return;
        };
        for chunk in backlog {
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                return;
            }
        }
        let mut bookmark = tokio::time::interval(shared.bookmark_interval);
        bookmark.tick().await;
        loop {
            let chunk = tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => match event_line(&watch, &event) {
                        Some(chunk) => chunk,
                        None => continue,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => gone(0),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark.tick(), if watch.bookmarks => {
                    // Everything up to `version` is already queued in `live`
                    // (events are sent under the state lock): flush it first.
                    let version = shared.state().resource_version;
                    while let Ok(event) = live.try_recv() {
                        if let Some(chunk) = event_line(&watch, &event)
                            && tx.send(Ok(Frame::data(chunk))).await.is_err()
                        {
                            return;
                        }
                    }
                    line("BOOKMARK", &json!({"kind": watch.kind.name(), "apiVersion": "v1",
                        "metadata": {"resourceVersion": version.to_string()}}))
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = cut.changed() => return,
            };
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// kubectl's `get` asks for a `meta.k8s.io/v1` Table: name, phase, IP,
/// node and the role annotation for pods; name for namespaces.
fn as_table(value: &Value) -> Option<Value> {
    let kind = value["kind"].as_str()?;
    let items: Vec<Value> = match kind {
        "PodList" | "NamespaceList" => value["items"].as_array()?.clone(),
        "Pod" | "Namespace" => vec![value.clone()],
        _ => return None,
    };
    let pods = kind.starts_with("Pod");
    let column = |name: &str| json!({"name": name, "type": "string", "format": "", "description": "", "priority": 0});
    let columns = if pods {
        vec![
            column("Name"),
            column("Status"),
            column("IP"),
            column("Node"),
            column("Role"),
        ]
    } else {
        vec![column("Name"), column("Allowed roles")]
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let text = |pointer: &str| item.pointer(pointer).and_then(Value::as_str).unwrap_or("<none>").to_string();
            let cells = if pods {
                vec![
                    text("/metadata/name"),
                    text("/status/phase"),
                    text("/status/podIP"),
                    text("/spec/nodeName"),
                    text("/metadata/annotations/iam.amazonaws.com~1role"),
                ]
            } else {
                vec![text("/metadata/name"), text("/metadata/annotations/iam.amazonaws.com~1allowed-roles")]
            };
            json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": item["metadata"]}})
        })
        .collect();
    Some(json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": value["metadata"]["resourceVersion"]},
        "columnDefinitions": columns, "rows": rows,
    }))
}

fn event_line(watch: &WatchRequest, event: &StoredEvent) -> Option<Bytes> {
    let in_scope = event.kind == watch.kind
        && watch
            .namespace
            .as_deref()
            .is_none_or(|ns| event.object["metadata"]["namespace"] == ns)
        && watch.selector.matches(&event.object);
    in_scope.then(|| line(event.event_type, &event.object))
}

fn line(event_type: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": event_type, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn gone(since: u64) -> Bytes {
    let status = ApiError::new(410, "Expired", format!("too old resource version: {since}"));
    line("ERROR", &status.to_status())
}

fn resource_list() -> Value {
    let resource = |name: &str, kind: &str, namespaced: bool, short: &[&str], verbs: &[&str]| {
        json!({"name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced, "kind": kind,
               "verbs": verbs, "shortNames": short})
    };
    let all = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1",
        "resources": [
            resource("pods", "Pod", true, &["po"], &all),
            {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get", "patch", "update"]},
            resource("namespaces", "Namespace", false, &["ns"], &all),
        ],
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("invalid JSON body: {e}")))
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(value.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(api_error: &ApiError) -> Response<Body> {
    json_response(
        StatusCode::from_u16(api_error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &api_error.to_status(),
    )
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
