//! Events: written by kube-rs 5's real `Recorder` (`events.k8s.io/v1`: a
//! create, then a merge patch of `series` for each repeat), read back by
//! the real kubectl (`describe pod`, `get events`, which read core v1), by
//! kube-rs's typed clients of both APIs, and over raw HTTP.

mod common;

use std::time::Duration;

use common::{Kubectl, call, watch_events};
use iamlet_testkit::{ApiServer, Kind};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event as NewEvent;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::{Value, json};

const DENIED: &str = "role arn:aws:iam::123456789012:role/admin is not allowed in namespace team";
const MISSING: &str =
    "the pod names no role: kubectl annotate pod web -n team iam.amazonaws.com/role=ROLE";

fn client(api: &ApiServer) -> Client {
    let config = kube::Config::new(api.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

/// A server with namespace `team` and its pod `web`, and the pod's
/// reference as kube-rs makes it (uid and resourceVersion included).
async fn server_with_pod() -> (ApiServer, ObjectReference) {
    let api = ApiServer::start().await.unwrap();
    api.create_namespace("team", json!({}));
    api.put_pod(iamlet_testkit::pod(
        "team",
        "web",
        "node-a",
        "10.0.0.5",
        json!({}),
    ));
    let pod = Api::<Pod>::namespaced(client(&api), "team")
        .get("web")
        .await
        .unwrap();
    let reference = pod.object_ref(&());
    (api, reference)
}

fn warning(reason: &str, note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "GetCredentials".into(),
        secondary: None,
    }
}

/// What the Recorder and kubectl send, in order, for the checks below.
async fn record_three_denials_and_a_missing_role(api: &ApiServer, pod: &ObjectReference) {
    let recorder = Recorder::new(
        client(api),
        Reporter {
            controller: "iamlet".into(),
            instance: Some("node-a".into()),
        },
    );
    for _ in 0..3 {
        recorder
            .publish(&warning("RoleNotAllowed", DENIED), pod)
            .await
            .unwrap();
    }
    let mut missing = warning("RoleMissing", MISSING);
    missing.type_ = EventType::Normal;
    recorder.publish(&missing, pod).await.unwrap();
}

fn by_reason<'a>(events: &'a [Value], reason: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event in {events:?}"))
}

// kubectl blocks its thread while the server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorders_series_shows_in_kubectl_describe_and_get_events() {
    let (api, pod) = server_with_pod().await;
    record_three_denials_and_a_missing_role(&api, &pod).await;

    let events = api.events("team");
    assert_eq!(events.len(), 2, "{events:?}");
    let denied = by_reason(&events, "RoleNotAllowed");
    assert_eq!(denied["series"]["count"], 3, "{denied}");
    assert!(denied["series"]["lastObservedTime"].is_string());
    assert_eq!(denied["apiVersion"], "events.k8s.io/v1");
    assert_eq!(denied["kind"], "Event");
    assert_eq!(denied["note"], DENIED);
    assert_eq!(denied["regarding"]["uid"], pod.uid.clone().unwrap());
    assert_eq!(denied["reportingController"], "iamlet");
    assert_eq!(denied["reportingInstance"], "node-a");
    assert!(denied["metadata"]["uid"].is_string());
    assert!(denied["metadata"]["resourceVersion"].is_string());
    let missing = by_reason(&events, "RoleMissing");
    assert!(missing.get("series").is_none(), "{missing}");
    let writes: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET"))
        .map(|r| r.split('?').next().unwrap_or_default().to_string())
        .collect();
    let denied_name = denied["metadata"]["name"].as_str().unwrap();
    let events_path = "/apis/events.k8s.io/v1/namespaces/team/events";
    let patch = format!("PATCH {events_path}/{denied_name}");
    let post = format!("POST {events_path}");
    assert_eq!(
        writes,
        [&post, &patch, &patch, &post].map(String::as_str),
        "{writes:?}"
    );

    let kubectl = Kubectl::new(&api);
    let described = kubectl.ok(&["describe", "pod", "web", "-n", "team"]);
    let section = described
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    let line = |reason: &str| {
        section
            .lines()
            .find(|l| l.contains(reason))
            .unwrap_or_else(|| panic!("no {reason} in {section}"))
            .to_string()
    };
    let denied_line = line("RoleNotAllowed");
    assert!(denied_line.trim_start().starts_with("Warning"), "{section}");
    assert!(denied_line.contains("(x3 over"), "{section}");
    assert!(denied_line.contains("iamlet"), "{section}");
    assert!(denied_line.contains(DENIED), "{section}");
    let missing_line = line("RoleMissing");
    assert!(missing_line.trim_start().starts_with("Normal"), "{section}");
    assert!(!missing_line.contains("(x"), "{section}");
    assert!(missing_line.contains(MISSING), "{section}");
    let search = api
        .requests()
        .into_iter()
        .find(|r| r.starts_with("GET /api/v1/namespaces/team/events?"))
        .expect("describe's search for the pod's events");
    let uid = pod.uid.clone().unwrap();
    assert!(
        search.contains("involvedObject.name%3Dweb")
            && search.contains("involvedObject.namespace%3Dteam")
            && search.contains(&format!("involvedObject.uid%3D{uid}")),
        "{search}"
    );

    let table = kubectl.ok(&["get", "events", "-n", "team"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(column), "{table}");
    }
    assert_eq!(table.lines().count(), 3, "{table}");
    for (reason, note) in [("RoleNotAllowed", DENIED), ("RoleMissing", MISSING)] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(reason) && l.contains("pod/web") && l.contains(note)),
            "{table}"
        );
    }
    let wide = kubectl.ok(&["get", "events", "-n", "team", "-o", "wide"]);
    let row = wide
        .lines()
        .find(|l| l.contains("RoleNotAllowed"))
        .unwrap_or_default();
    assert!(row.contains("iamlet, node-a"), "{wide}");
    assert!(row.contains(denied_name), "{wide}");
    assert!(row.split_whitespace().any(|cell| cell == "3"), "{wide}");
    let everywhere = kubectl.ok(&["get", "events", "-A", "-o", "name"]);
    assert_eq!(everywhere.lines().count(), 2, "{everywhere}");
    let new_api = kubectl.ok(&["get", "events.events.k8s.io", "-n", "team"]);
    assert_eq!(new_api.lines().count(), 3, "{new_api}");
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_clients_of_both_apis_read_the_same_events() {
    let (api, pod) = server_with_pod().await;
    record_three_denials_and_a_missing_role(&api, &pod).await;

    let new: Vec<NewEvent> = Api::namespaced(client(&api), "team")
        .list(&ListParams::default().fields("regarding.name=web,type=Warning"))
        .await
        .unwrap()
        .items;
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].series.as_ref().map(|s| s.count), Some(3));

    let core: Vec<CoreEvent> = Api::all(client(&api))
        .list(&ListParams::default().fields(&format!(
            "involvedObject.kind=Pod,involvedObject.uid={}",
            pod.uid.clone().unwrap()
        )))
        .await
        .unwrap()
        .items;
    assert_eq!(core.len(), 2);
    let denied = core
        .iter()
        .find(|e| e.reason.as_deref() == Some("RoleNotAllowed"))
        .unwrap();
    assert_eq!(denied.count, Some(3));
    assert_eq!(denied.message.as_deref(), Some(DENIED));
    assert_eq!(denied.involved_object.name.as_deref(), Some("web"));
    assert_eq!(
        denied.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("iamlet")
    );
    assert_eq!(denied.reporting_component.as_deref(), Some("iamlet"));
    assert!(denied.first_timestamp.is_some() && denied.last_timestamp.is_some());
    assert!(denied.first_timestamp <= denied.last_timestamp);
    assert!(denied.event_time.is_some());
    let missing = core
        .iter()
        .find(|e| e.reason.as_deref() == Some("RoleMissing"))
        .unwrap();
    assert_eq!(missing.count, Some(1));
    assert_eq!(missing.type_.as_deref(), Some("Normal"));
}

fn new_event(name: &str) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": name, "namespace": "team"},
        "eventTime": "2026-01-02T03:04:05.000001Z",
        "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "team", "name": "web"},
        "reason": "RoleNotAllowed", "note": DENIED, "type": "Warning",
        "action": "GetCredentials", "reportingController": "iamlet", "reportingInstance": "node-a",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn events_over_http_create_conflict_patch_list_and_delete() {
    let (api, _) = server_with_pod().await;
    let events = "/apis/events.k8s.io/v1/namespaces/team/events";
    let one = format!("{events}/web.1");

    let (status, created) = call(&api, "POST", events, None, Some(new_event("web.1"))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "team");
    let (status, again) = call(&api, "POST", events, None, Some(new_event("web.1"))).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(
        again["message"],
        "events.events.k8s.io \"web.1\" already exists"
    );
    let mut unnamed_action = new_event("web.2");
    unnamed_action["action"] = Value::Null;
    let (status, invalid) = call(&api, "POST", events, None, Some(unnamed_action)).await;
    assert_eq!(status, 422, "{invalid}");
    assert_eq!(
        invalid["message"],
        "Event.events.k8s.io \"web.2\" is invalid: action: Required value"
    );

    // A repeat, as the Recorder sends it; then a change a real server refuses.
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-02T03:05:00.5Z"}});
    let patched = patch(&api, &one, &series).await;
    assert_eq!(patched.0, 200, "{}", patched.1);
    assert_eq!(
        patched.1["series"]["lastObservedTime"],
        "2026-01-02T03:05:00.500000Z"
    );
    let refused = patch(&api, &one, &json!({"note": "something else"})).await;
    assert_eq!(refused.0, 422, "{}", refused.1);
    let refused = patch(&api, &one, &json!({"series": {"count": 1}})).await;
    assert_eq!(refused.0, 422, "{}", refused.1);

    let (status, got) = call(&api, "GET", &one, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(got["series"]["count"], 2);
    let (_, core) = call(
        &api,
        "GET",
        "/api/v1/namespaces/team/events/web.1",
        None,
        None,
    )
    .await;
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["count"], 2);
    assert_eq!(core["message"], DENIED);
    assert_eq!(core["lastTimestamp"], "2026-01-02T03:05:00Z");

    let (_, all) = call(&api, "GET", "/apis/events.k8s.io/v1/events", None, None).await;
    assert_eq!(all["kind"], "EventList");
    assert_eq!(all["apiVersion"], "events.k8s.io/v1");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1));
    let selected = "/api/v1/namespaces/team/events?fieldSelector=involvedObject.name%3Dweb%2Creason%3DRoleNotAllowed";
    let (_, list) = call(&api, "GET", selected, None, None).await;
    assert_eq!(list["apiVersion"], "v1");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, none) = call(
        &api,
        "GET",
        "/api/v1/events?fieldSelector=involvedObject.name%3Dother",
        None,
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));
    let (status, bad) = call(
        &api,
        "GET",
        "/api/v1/events?fieldSelector=regarding.name%3Dweb",
        None,
        None,
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    // Core v1 is read (and delete) only here.
    let (status, _) = call(
        &api,
        "POST",
        "/api/v1/namespaces/team/events",
        None,
        Some(json!({"metadata": {"name": "x"}})),
    )
    .await;
    assert_eq!(status, 405);

    let (status, deleted) = call(&api, "DELETE", &one, None, None).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, gone) = call(&api, "GET", &one, None, None).await;
    assert_eq!(status, 404, "{gone}");
    assert!(api.events("team").is_empty());
    assert!(api.get(Kind::Event, "team", "web.1").is_err());
}

/// A JSON merge patch, as kube-rs sends one (the Recorder's repeats).
async fn patch(api: &ApiServer, path: &str, body: &Value) -> (u16, Value) {
    let request = http::Request::patch(format!("{}{path}", api.url()))
        .header("content-type", "application/merge-patch+json")
        .body(body.to_string().into_bytes())
        .unwrap();
    let client = client(api);
    match client.request::<Value>(request).await {
        Ok(value) => (200, value),
        Err(kube::Error::Api(status)) => (status.code, json!({"message": status.message})),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_watch_sees_events_added_and_their_series_grow() {
    let (api, pod) = server_with_pod().await;
    let watch = "/api/v1/namespaces/team/events?watch=true&fieldSelector=involvedObject.name%3Dweb";
    let watcher = watch_events(&api, watch, None, 3, Duration::from_secs(10));
    let recorder = async {
        // After the watch has started: it sees every change live.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let recorder = Recorder::new(client(&api), "iamlet".into());
        for _ in 0..3 {
            recorder
                .publish(&warning("RoleNotAllowed", DENIED), &pod)
                .await
                .unwrap();
        }
    };
    let (seen, ()) = tokio::join!(watcher, recorder);
    let types: Vec<&str> = seen.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "MODIFIED"], "{seen:?}");
    assert_eq!(seen[2]["object"]["apiVersion"], "v1");
    assert_eq!(seen[2]["object"]["count"], 3);
    assert_eq!(seen[2]["object"]["involvedObject"]["name"], "web");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_events_in_both_apis() {
    let api = ApiServer::start().await.unwrap();
    let (_, groups) = call(&api, "GET", "/apis", None, None).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["authentication.k8s.io", "events.k8s.io"]);
    assert_eq!(
        groups["groups"][1]["preferredVersion"]["groupVersion"],
        "events.k8s.io/v1"
    );
    let (status, group) = call(&api, "GET", "/apis/events.k8s.io/v1", None, None).await;
    assert_eq!(status, 200);
    let events = &group["resources"][0];
    assert_eq!(events["name"], "events");
    assert_eq!(events["kind"], "Event");
    assert_eq!(events["namespaced"], true);
    assert_eq!(
        events["verbs"],
        json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ])
    );
    let (_, core) = call(&api, "GET", "/api/v1", None, None).await;
    let core_events = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "events")
        .expect("events in /api/v1");
    assert_eq!(core_events["kind"], "Event");

    let out = Kubectl::new(&api).ok(&["api-resources"]);
    for api_version in [" v1 ", " events.k8s.io/v1 "] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("events") && l.contains(api_version)),
            "{out}"
        );
    }
}
