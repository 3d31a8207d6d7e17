//! The HTTP side: discovery, REST verbs on pods, namespaces, service
//! accounts, nodes and Events (`events.k8s.io/v1`, and read through core
//! v1), watch streams (one JSON event per line over a chunked response),
//! TokenRequest and TokenReview.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
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

use crate::media::Form;
use crate::store::{ApiError, FieldSelector, Kind, ObjectKey, PatchType, Resource, StoredEvent};
use crate::tokens::{self, Grant};
use crate::{RecordedRequest, Shared};
use crate::{nodes, protobuf};

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
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header(http::header::ACCEPT);
    record(&shared, &parts.method, &parts.uri, accept.clone());
    let content_type = header(http::header::CONTENT_TYPE).unwrap_or_default();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error(&ApiError::new(400, "BadRequest", "unreadable body")),
    };
    route(&shared, &parts.method, &path, &query, &content_type, &body)
        .and_then(|reply| respond(shared, reply, accept.as_deref()))
        .unwrap_or_else(|api_error| error(&api_error))
}

fn record(shared: &Shared, method: &Method, uri: &http::Uri, accept: Option<String>) {
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: method.to_string(),
            path: uri.to_string(),
            accept,
        });
}

/// Stored objects go out in the form the `Accept` header asks for; other
/// replies (discovery, reviews, tokens) as they are.
fn respond(
    shared: Arc<Shared>,
    reply: Reply,
    accept: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    match reply {
        Reply::Resource(status, value) => {
            let value = Form::negotiate(accept)?.render(value)?;
            Ok(json_response(status, &value))
        }
        Reply::Watch(mut watch) => {
            watch.form = Form::negotiate(accept)?.for_watch()?;
            Ok(watch_response(shared, watch))
        }
        Reply::Plain(status, value) => Ok(json_response(status, &value)),
    }
}

enum Reply {
    /// A stored object or a list of them, which content negotiation shapes.
    Resource(StatusCode, Value),
    Plain(StatusCode, Value),
    Watch(WatchRequest),
}

struct WatchRequest {
    resource: Resource,
    namespace: Option<String>,
    selector: FieldSelector,
    since: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
    /// Whole objects, or PartialObjectMetadata for a metadata watch.
    form: Form,
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
    let on = |namespace| OnCollection {
        namespace,
        query,
        content_type,
        body,
    };
    let ok = |value| Ok(Reply::Plain(StatusCode::OK, value));
    match (method, segments.as_slice()) {
        (&Method::GET, ["version"]) => ok(
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-iamlet-fake", "platform": "linux/amd64"}),
        ),
        (&Method::GET, ["api"]) => ok(
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        (&Method::GET, ["apis"]) => ok(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [authentication_group(), events_group()]}),
        ),
        (&Method::GET, ["apis", "authentication.k8s.io"]) => ok(authentication_group()),
        (&Method::GET, ["apis", "authentication.k8s.io", "v1"]) => {
            ok(authentication_resource_list())
        }
        (&Method::GET, ["apis", "events.k8s.io"]) => ok(events_group()),
        (&Method::GET, ["apis", "events.k8s.io", "v1"]) => ok(events_resource_list()),
        (&Method::GET, ["api", "v1"]) => ok(resource_list()),
        // Test control: forget the history and cut the watches (410 on resume).
        (&Method::POST, ["fake", "compact"]) => {
            shared.state().compact();
            shared.generation.send_modify(|g| *g += 1);
            ok(json!({"compacted": true}))
        }
        // Test control for out-of-process servers (the network-namespace
        // suite): a writer racing the next PATCH of a node, and the node
        // PATCHes received (see `ApiServer::on_next_node_patch`,
        // `ApiServer::node_patches`).
        (&Method::POST, ["fake", "nodes", name, "race"]) => {
            let taints: Value = serde_json::from_slice(body).map_err(|_| {
                ApiError::new(400, "BadRequest", "the body is not a JSON taint list")
            })?;
            shared.node_control().race_next_patch(name, taints);
            ok(json!({"racing": name}))
        }
        (&Method::GET, ["fake", "node-patches"]) => {
            let patches: Vec<Value> = shared
                .node_control()
                .patches()
                .into_iter()
                .map(|p| json!({"name": p.name, "status": p.status, "body": p.body}))
                .collect();
            ok(json!(patches))
        }
        (_, ["api", "v1", "pods"]) => collection(shared, method, stored(Kind::Pod), on(None)),
        (_, ["api", "v1", "namespaces"]) => {
            collection(shared, method, stored(Kind::Namespace), on(None))
        }
        (_, ["api", "v1", "namespaces", name]) => object(
            shared,
            method,
            stored(Kind::Namespace),
            ObjectKey::new(Kind::Namespace, "", name),
            content_type,
            body,
        ),
        (_, ["api", "v1", "namespaces", ns, "pods"]) => {
            collection(shared, method, stored(Kind::Pod), on(Some(ns)))
        }
        (
            _,
            ["api", "v1", "namespaces", ns, "pods", name]
            | ["api", "v1", "namespaces", ns, "pods", name, "status"],
        ) => object(
            shared,
            method,
            stored(Kind::Pod),
            ObjectKey::new(Kind::Pod, ns, name),
            content_type,
            body,
        ),
        (_, ["api", "v1", "nodes"]) => collection(shared, method, stored(Kind::Node), on(None)),
        // Node PATCHes are recorded, and may be raced or failed on purpose.
        (&Method::PATCH, ["api", "v1", "nodes", name]) => {
            let node = nodes::patch(shared, name, content_type, body)?;
            Ok(Reply::Resource(StatusCode::OK, node))
        }
        (_, ["api", "v1", "nodes", name]) => object(
            shared,
            method,
            stored(Kind::Node),
            ObjectKey::new(Kind::Node, "", name),
            content_type,
            body,
        ),
        (_, ["api", "v1", "serviceaccounts"]) => {
            collection(shared, method, stored(Kind::ServiceAccount), on(None))
        }
        (_, ["api", "v1", "namespaces", ns, "serviceaccounts"]) => {
            collection(shared, method, stored(Kind::ServiceAccount), on(Some(ns)))
        }
        (_, ["api", "v1", "namespaces", ns, "serviceaccounts", name]) => object(
            shared,
            method,
            stored(Kind::ServiceAccount),
            ObjectKey::new(Kind::ServiceAccount, ns, name),
            content_type,
            body,
        ),
        (_, ["api", "v1", "events"]) => collection(shared, method, Resource::CoreEvents, on(None)),
        (_, ["api", "v1", "namespaces", ns, "events"]) => {
            collection(shared, method, Resource::CoreEvents, on(Some(ns)))
        }
        (_, ["api", "v1", "namespaces", ns, "events", name]) => object(
            shared,
            method,
            Resource::CoreEvents,
            ObjectKey::new(Kind::Event, ns, name),
            content_type,
            body,
        ),
        (_, ["apis", "events.k8s.io", "v1", "events"]) => {
            collection(shared, method, stored(Kind::Event), on(None))
        }
        (_, ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"]) => {
            collection(shared, method, stored(Kind::Event), on(Some(ns)))
        }
        (
            _,
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                ns,
                "events",
                name,
            ],
        ) => object(
            shared,
            method,
            stored(Kind::Event),
            ObjectKey::new(Kind::Event, ns, name),
            content_type,
            body,
        ),
        (
            &Method::POST,
            [
                "api",
                "v1",
                "namespaces",
                ns,
                "serviceaccounts",
                name,
                "token",
            ],
        ) => token_request(shared, ns, name, content_type, body),
        (&Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            token_review(shared, content_type, body)
        }
        _ => Err(ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )),
    }
}

/// A request on a collection: its namespace (`None` for all of them), the
/// query, and the body (with its content type) of a create.
struct OnCollection<'a> {
    namespace: Option<&'a str>,
    query: &'a HashMap<String, String>,
    content_type: &'a str,
    body: &'a Bytes,
}

fn stored(kind: Kind) -> Resource {
    Resource::Stored(kind)
}

fn collection(
    shared: &Shared,
    method: &Method,
    resource: Resource,
    request: OnCollection<'_>,
) -> Result<Reply, ApiError> {
    let OnCollection {
        namespace,
        query,
        content_type,
        body,
    } = request;
    match *method {
        Method::GET => {
            let selector = FieldSelector::parse(
                resource,
                query.get("fieldSelector").map_or("", String::as_str),
            )?;
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
                    resource,
                    namespace: namespace.map(str::to_string),
                    selector,
                    since,
                    bookmarks: query
                        .get("allowWatchBookmarks")
                        .is_some_and(|b| b == "true"),
                    timeout: Duration::from_secs(timeout),
                    form: Form::Full,
                }));
            }
            let (items, version) = shared.state().list(resource, namespace, &selector);
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
            Ok(Reply::Resource(
                StatusCode::OK,
                json!({
                    "kind": format!("{}List", resource.kind().name()),
                    "apiVersion": resource.api_version(),
                    "metadata": metadata, "items": page,
                }),
            ))
        }
        Method::POST => {
            let Resource::Stored(kind) = resource else {
                return Err(read_only(method));
            };
            let object: Value = parse_object(content_type, body)?;
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
            Ok(Reply::Resource(StatusCode::CREATED, created))
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
    resource: Resource,
    key: ObjectKey,
    content_type: &str,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let writes = matches!(*method, Method::PUT | Method::PATCH);
    if writes && resource != Resource::Stored(key.kind) {
        return Err(read_only(method));
    }
    let value = match *method {
        Method::GET => shared.state().get(&key)?,
        Method::PUT => shared
            .state()
            .update(key, parse_object(content_type, body)?)?,
        Method::PATCH => {
            let patch_type = PatchType::from_content_type(content_type)?;
            shared
                .state()
                .apply_patch(key, patch_type, &parse_body(body)?)?
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
    Ok(Reply::Resource(StatusCode::OK, resource.show(&value)))
}

/// Writes through an API that only reads (Events through core v1): a real
/// server would take them; this one stores Events in the events.k8s.io form
/// only.
fn read_only(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("{method} is not supported here: write Events through events.k8s.io/v1"),
    )
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
                        .list(watch.resource, watch.namespace.as_deref(), &watch.selector)
                        .0
                        .into_iter()
                        .map(|object| line("ADDED", &watch.form.event_object(&object)))
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
                    let bookmark = json!({"kind": watch.resource.kind().name(),
                        "apiVersion": watch.resource.api_version(),
                        "metadata": {"resourceVersion": version.to_string()}});
                    line("BOOKMARK", &watch.form.event_object(&bookmark))
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

/// A change as a watch sees it, if it is in the watch's scope: the object
/// as the watched API shows it.
fn event_line(watch: &WatchRequest, event: &StoredEvent) -> Option<Bytes> {
    let in_scope = event.kind == watch.resource.kind()
        && watch
            .namespace
            .as_deref()
            .is_none_or(|ns| event.object["metadata"]["namespace"] == ns);
    if !in_scope {
        return None;
    }
    let object = watch.resource.show(&event.object);
    watch
        .selector
        .matches(&object)
        .then(|| line(event.event_type, &watch.form.event_object(&object)))
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
            resource("serviceaccounts", "ServiceAccount", true, &["sa"], &all),
            resource("events", "Event", true, &["ev"], &all),
            resource("nodes", "Node", false, &["no"], &all),
            {"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
             "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]},
        ],
    })
}

fn authentication_group() -> Value {
    let version = json!({"groupVersion": "authentication.k8s.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "authentication.k8s.io",
           "versions": [version], "preferredVersion": version})
}

fn events_group() -> Value {
    let version = json!({"groupVersion": "events.k8s.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "events.k8s.io",
           "versions": [version], "preferredVersion": version})
}

fn events_resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "events.k8s.io/v1",
        "resources": [
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
             "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
             "shortNames": ["ev"]},
        ],
    })
}

fn authentication_resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "authentication.k8s.io/v1",
        "resources": [
            {"name": "tokenreviews", "singularName": "tokenreview", "namespaced": false,
             "kind": "TokenReview", "verbs": ["create"]},
        ],
    })
}

/// `POST .../serviceaccounts/NAME/token` (`kubectl create token`): a real
/// server's checks in its order (name, service account, lifetime, bound
/// object), then a signed token and when it expires.
fn token_request(
    shared: &Shared,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let mut request = parse_object(content_type, body)?;
    expect_kind(&request, "TokenRequest")?;
    let named = request["metadata"]["name"].as_str().unwrap_or_default();
    if !named.is_empty() && named != name {
        return Err(invalid_token_request(
            name,
            &format!(
                "metadata.name: Invalid value: {named:?}: must match the service account name if specified"
            ),
        ));
    }
    let state = shared.state();
    state.get(&ObjectKey::new(Kind::ServiceAccount, namespace, name))?;
    let audiences = string_list(&request["spec"]["audiences"], "spec.audiences")?;
    let seconds = expiration_seconds(&request["spec"]["expirationSeconds"])?;
    let bound = &request["spec"]["boundObjectRef"];
    let pod = bound_pod_name(bound)?;
    let grant = Grant {
        namespace,
        service_account: name,
        pod,
        pod_uid: bound["uid"].as_str(),
        audiences,
        ttl: Duration::from_secs(seconds.unsigned_abs()),
    };
    let issued = shared.signer.issue(&state, &grant)?;
    request["kind"] = json!("TokenRequest");
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["metadata"] = json!({"name": name, "namespace": namespace,
        "creationTimestamp": rfc3339(issued.issued_at)});
    request["spec"]["audiences"] = json!(issued.audiences);
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["status"] =
        json!({"token": issued.token, "expirationTimestamp": rfc3339(issued.expires_at)});
    Ok(Reply::Plain(StatusCode::CREATED, request))
}

/// `spec.expirationSeconds`: an hour if absent; a real server refuses less
/// than ten minutes and more than 2^32 s as an invalid object (422).
fn expiration_seconds(value: &Value) -> Result<i64, ApiError> {
    if value.is_null() {
        return Ok(tokens::DEFAULT_EXPIRATION_SECONDS);
    }
    let seconds = value.as_i64().ok_or_else(|| {
        ApiError::new(
            400,
            "BadRequest",
            format!("spec.expirationSeconds: not an integer: {value}"),
        )
    })?;
    let complaint = if seconds < tokens::MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if seconds > tokens::MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(seconds);
    };
    Err(invalid_token_request(
        "",
        &format!("spec.expirationSeconds: Invalid value: {seconds}: {complaint}"),
    ))
}

/// The pod a token is to be bound to. Secrets and Nodes can be bound on a
/// real server; there are none here, so they are not found.
fn bound_pod_name(bound: &Value) -> Result<Option<&str>, ApiError> {
    if bound.is_null() {
        return Ok(None);
    }
    let kind = bound["kind"].as_str().unwrap_or_default();
    let api_version = bound["apiVersion"].as_str().unwrap_or_default();
    let name = bound["name"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1" | "", "Pod") => Ok(Some(name)),
        ("v1" | "", "Secret" | "Node") => Err(ApiError::new(
            404,
            "NotFound",
            format!("{}s {name:?} not found", kind.to_lowercase()),
        )),
        _ => Err(ApiError::new(
            400,
            "BadRequest",
            format!("cannot bind token to object of type {api_version}, Kind={kind}"),
        )),
    }
}

fn invalid_token_request(name: &str, cause: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("TokenRequest.authentication.k8s.io {name:?} is invalid: {cause}"),
    )
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: the review echoed
/// with its `status`, 201 whether the token is good or not. Tests can make
/// it fail instead ([`crate::ApiServer::set_token_review_failure`]).
fn token_review(shared: &Shared, content_type: &str, body: &Bytes) -> Result<Reply, ApiError> {
    shared.token_reviews.fetch_add(1, Ordering::SeqCst);
    let failure = *shared
        .token_review_failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(code) = failure {
        return Err(injected_failure(code));
    }
    let mut review = parse_object(content_type, body)?;
    expect_kind(&review, "TokenReview")?;
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if token.is_empty() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            "token is required for TokenReview in authentication",
        ));
    }
    let audiences = string_list(&review["spec"]["audiences"], "spec.audiences")?;
    let status = shared.signer.review(&shared.state(), &token, &audiences);
    review["kind"] = json!("TokenReview");
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["metadata"] = json!({"creationTimestamp": null});
    review["status"] = status;
    Ok(Reply::Plain(StatusCode::CREATED, review))
}

fn injected_failure(code: u16) -> ApiError {
    let reason = match code {
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiError::new(
        code,
        reason,
        format!("injected TokenReview failure ({code})"),
    )
}

/// A body of another kind is refused as a real server's decoder refuses it.
fn expect_kind(object: &Value, kind: &str) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::new(
            400,
            "BadRequest",
            format!("the body is not a {kind} object"),
        ));
    }
    let group_version = object["apiVersion"]
        .as_str()
        .unwrap_or("authentication.k8s.io/v1");
    match object["kind"].as_str() {
        Some(sent) if sent != kind => Err(ApiError::new(
            400,
            "BadRequest",
            format!("the body is a {sent}, not a {kind}"),
        )),
        _ if group_version != "authentication.k8s.io/v1" => Err(ApiError::new(
            400,
            "BadRequest",
            format!("{kind} is served as authentication.k8s.io/v1, not {group_version}"),
        )),
        _ => Ok(()),
    }
}

/// An optional list of strings (`spec.audiences`).
fn string_list(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .ok_or_else(|| {
            ApiError::new(
                400,
                "BadRequest",
                format!("{field} must be a list of strings"),
            )
        })
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(tokens::unix_seconds(at))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A created or replaced object: JSON, or protobuf from kubectl's typed
/// commands.
fn parse_object(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    if content_type.starts_with(protobuf::MEDIA_TYPE) {
        return protobuf::decode(body);
    }
    parse_body(body)
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
