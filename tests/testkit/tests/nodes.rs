//! Nodes and their taints: read, listed and watched like other kinds, and
//! patched as a real server patches them (JSON patch with `test` guards,
//! merge and strategic merge patches, resourceVersion preconditions),
//! over raw HTTP, through kube-rs and through the real kubectl; and the
//! test controls: recorded patches, a racing writer, injected failures.

mod common;

use std::time::Duration;

use common::{Kubectl, call, send_body, watch_events};
use iamlet_testkit::{ApiServer, Kind, NodePatch, PatchType};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const JSON_PATCH: &str = "application/json-patch+json";
const MERGE_PATCH: &str = "application/merge-patch+json";
const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
const NODE: &str = "/api/v1/nodes/node-a";
const INVALID: &str = "the server rejected our request due to an error in our request";

fn startup_taint() -> Value {
    json!({"key": "iamlet.io/agent-not-ready", "effect": "NoSchedule"})
}

fn other_taint() -> Value {
    json!({"key": "dedicated", "value": "gpu", "effect": "NoExecute"})
}

/// A server with `node-a` tainted with the startup taint and another.
async fn server_with_node() -> ApiServer {
    let api = ApiServer::start().await.unwrap();
    api.create_node("node-a", json!([startup_taint(), other_taint()]));
    api
}

fn version(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {object}"))
}

fn taints(api: &ApiServer) -> Value {
    api.node("node-a").expect("node-a")["spec"]["taints"].clone()
}

/// The guarded removal an agent sends: test the list it read, replace it.
fn guarded_removal(read: &Value) -> String {
    let kept: Vec<Value> = read
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] != "iamlet.io/agent-not-ready")
        .cloned()
        .collect();
    json!([
        {"op": "test", "path": "/spec/taints", "value": read},
        {"op": "replace", "path": "/spec/taints", "value": kept},
    ])
    .to_string()
}

fn is_invalid_status(status: &Value) {
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["reason"], "Invalid", "{status}");
    assert_eq!(status["code"], 422, "{status}");
    assert_eq!(status["message"], INVALID, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_stored_listed_and_discovered_as_cluster_scoped() {
    let api = server_with_node().await;
    let node = api.node("node-a").unwrap();
    assert_eq!(node["kind"], "Node");
    assert_eq!(node["apiVersion"], "v1");
    assert!(node["metadata"].get("namespace").is_none(), "{node}");
    assert!(node["metadata"]["uid"].is_string());
    assert!(node["metadata"]["creationTimestamp"].is_string());
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-a"
    );
    assert_eq!(
        node["spec"]["taints"],
        json!([startup_taint(), other_taint()])
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(node["status"]["addresses"][0]["type"], "InternalIP");

    api.create_node("node-b", json!([]));
    assert!(api.node("node-b").unwrap()["spec"].get("taints").is_none());
    assert!(api.node("node-c").is_none());

    let (status, list) = call(&api, "GET", "/api/v1/nodes", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "NodeList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
    let (_, selected) = call(
        &api,
        "GET",
        "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b",
        None,
        None,
    )
    .await;
    assert_eq!(selected["items"].as_array().unwrap().len(), 1);

    let (status, fetched) = call(&api, "GET", NODE, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, node);
    let protobuf_first = "application/vnd.kubernetes.protobuf,application/json";
    let (status, fetched) = call(&api, "GET", NODE, Some(protobuf_first), None).await;
    assert_eq!((status, &fetched["kind"]), (200, &json!("Node")));
    let (status, missing) = call(&api, "GET", "/api/v1/nodes/node-c", None, None).await;
    assert_eq!(status, 404);
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["message"], "nodes \"node-c\" not found");

    let (_, core) = call(&api, "GET", "/api/v1", None, None).await;
    let nodes = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nodes")
        .cloned()
        .expect("nodes in discovery");
    assert_eq!(nodes["kind"], "Node");
    assert_eq!(nodes["namespaced"], false);
    assert_eq!(nodes["shortNames"], json!(["no"]));
    for verb in ["get", "list", "watch", "patch", "update", "delete"] {
        assert!(
            nodes["verbs"].as_array().unwrap().contains(&json!(verb)),
            "{verb}"
        );
    }

    let requests = api.requests();
    assert!(
        requests.contains(&"GET /api/v1/nodes".to_string()),
        "{requests:?}"
    );
    assert!(requests.contains(&format!("GET {NODE}")), "{requests:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guarded_json_patch_removes_the_taint_and_is_watched() {
    let api = server_with_node().await;
    let (_, read) = call(&api, "GET", NODE, None, None).await;
    let before = version(&read);
    // Resumed from the version read: the patch is in its backlog.
    let watch = format!("/api/v1/nodes?watch=true&resourceVersion={before}");

    let body = guarded_removal(&read["spec"]["taints"]);
    let (status, patched) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["taints"], json!([other_taint()]));
    assert_eq!(version(&patched), before + 1);
    assert_eq!(patched["metadata"]["uid"], read["metadata"]["uid"]);
    assert_eq!(taints(&api), json!([other_taint()]));

    let events = watch_events(&api, &watch, None, 1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(
        events[0]["object"]["spec"]["taints"],
        json!([other_taint()])
    );

    let patches = api.node_patches();
    assert_eq!(
        patches,
        [NodePatch {
            name: "node-a".into(),
            content_type: JSON_PATCH.into(),
            body: serde_json::from_str(&body).unwrap(),
            status: 200,
            error: None,
        }]
    );
    assert!(api.requests().contains(&format!("PATCH {NODE}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_by_index_and_the_last_taint_leaves_no_list() {
    let api = server_with_node().await;
    let remove_first = json!([
        {"op": "test", "path": "/spec/taints/0/key", "value": "iamlet.io/agent-not-ready"},
        {"op": "remove", "path": "/spec/taints/0"},
    ]);
    let (status, patched) =
        send_body(&api, "PATCH", NODE, JSON_PATCH, &remove_first.to_string()).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["taints"], json!([other_taint()]));

    let remove_last = json!([{"op": "remove", "path": "/spec/taints/0"}]).to_string();
    let (status, patched) = send_body(&api, "PATCH", NODE, JSON_PATCH, &remove_last).await;
    assert_eq!(status, 200, "{patched}");
    // An empty list is not stored, as on a real server (omitempty), so a
    // later guard sees no list: `null` passes, `[]` does not.
    assert!(patched["spec"].get("taints").is_none(), "{patched}");
    let guard = |value: Value| json!([{"op": "test", "path": "/spec/taints", "value": value}]);
    let (status, _) = send_body(
        &api,
        "PATCH",
        NODE,
        JSON_PATCH,
        &guard(Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send_body(
        &api,
        "PATCH",
        NODE,
        JSON_PATCH,
        &guard(json!([])).to_string(),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_test_is_an_invalid_422_and_changes_nothing() {
    let api = server_with_node().await;
    let before = api.node("node-a").unwrap();
    let stale = json!([startup_taint()]);
    let (status, answer) =
        send_body(&api, "PATCH", NODE, JSON_PATCH, &guarded_removal(&stale)).await;
    assert_eq!(status, 422);
    is_invalid_status(&answer);
    assert_eq!(api.node("node-a").unwrap(), before);

    let patches = api.node_patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].status, 422);
    let error = patches[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("testing value /spec/taints failed"),
        "{error}"
    );

    // A test of the resourceVersion is an ordinary test.
    let version = before["metadata"]["resourceVersion"].clone();
    let pinned = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "remove", "path": "/spec/taints/0"},
    ]);
    let (status, _) = send_body(&api, "PATCH", NODE, JSON_PATCH, &pinned.to_string()).await;
    assert_eq!(status, 200);
    let (status, answer) = send_body(&api, "PATCH", NODE, JSON_PATCH, &pinned.to_string()).await;
    assert_eq!(status, 422);
    is_invalid_status(&answer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_racing_writer_fails_the_guarded_patch_once() {
    let api = server_with_node().await;
    let (_, read) = call(&api, "GET", NODE, None, None).await;
    let racer =
        json!([startup_taint(), other_taint(), {"key": "maintenance", "effect": "NoSchedule"}]);
    api.on_next_node_patch("node-b", json!([]));
    api.on_next_node_patch("node-a", racer.clone());

    let body = guarded_removal(&read["spec"]["taints"]);
    let (status, answer) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
    assert_eq!(status, 422);
    is_invalid_status(&answer);
    let node = api.node("node-a").unwrap();
    assert_eq!(node["spec"]["taints"], racer);
    assert_eq!(version(&node), version(&read) + 1, "only the racer wrote");

    // The agent reads again and retries; the race was one-shot.
    let (_, reread) = call(&api, "GET", NODE, None, None).await;
    let body = guarded_removal(&reread["spec"]["taints"]);
    let (status, patched) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["spec"]["taints"],
        json!([other_taint(), {"key": "maintenance", "effect": "NoSchedule"}])
    );
    let statuses: Vec<u16> = api.node_patches().iter().map(|p| p.status).collect();
    assert_eq!(statuses, [422, 200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_racing_writer_is_overwritten_by_a_merge_patch() {
    let api = server_with_node().await;
    api.on_next_node_patch("node-a", json!([startup_taint()]));
    let body = json!({"spec": {"taints": [other_taint()]}}).to_string();
    let (status, patched) = send_body(&api, "PATCH", NODE, MERGE_PATCH, &body).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["taints"], json!([other_taint()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_that_are_not_patches_are_400_and_patches_that_do_not_apply_422() {
    let api = server_with_node().await;
    let before = api.node("node-a").unwrap();
    let cases = [
        (
            JSON_PATCH,
            r#"{"op": "remove", "path": "/spec/taints/0"}"#,
            400,
        ),
        (JSON_PATCH, r#"["remove"]"#, 400),
        (JSON_PATCH, "[{", 400),
        (
            JSON_PATCH,
            r#"[{"op": "remove", "path": "/spec/taints/2"}]"#,
            422,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "replace", "path": "/spec/nothing/x", "value": 1}]"#,
            422,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "frobnicate", "path": "/spec"}]"#,
            422,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "add", "path": "spec", "value": 1}]"#,
            422,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "replace", "path": "/metadata/name", "value": "node-z"}]"#,
            400,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "remove", "path": "/metadata/name"}]"#,
            400,
        ),
        (MERGE_PATCH, r#"{"metadata": {"name": "node-z"}}"#, 400),
        (
            JSON_PATCH,
            r#"[{"op": "add", "path": "/spec/taints/-", "value": {"key": "k", "effect": "Often"}}]"#,
            422,
        ),
        (
            JSON_PATCH,
            r#"[{"op": "add", "path": "/spec/taints/-", "value": {"key": "dedicated", "effect": "NoExecute"}}]"#,
            422,
        ),
        ("application/json", r#"{"spec": {}}"#, 415),
        ("application/apply-patch+yaml", "spec: {}", 415),
    ];
    for (content_type, body, expected) in cases {
        let (status, answer) = send_body(&api, "PATCH", NODE, content_type, body).await;
        assert_eq!(status, expected, "{content_type} {body}: {answer}");
        assert_eq!(answer["code"], expected, "{answer}");
        assert_eq!(answer["kind"], "Status", "{answer}");
    }
    assert_eq!(api.node("node-a").unwrap(), before);
    let recorded: Vec<u16> = api.node_patches().iter().map(|p| p.status).collect();
    let expected: Vec<u16> = cases.iter().map(|c| c.2).collect();
    assert_eq!(recorded, expected);
    assert_eq!(api.node_patches()[2].body, json!("[{"));

    let (status, _) = send_body(&api, "PATCH", "/api/v1/nodes/node-z", JSON_PATCH, "[]").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_and_strategic_patches_replace_the_list_and_check_the_version() {
    let api = server_with_node().await;
    let node = api.node("node-a").unwrap();
    let current = node["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    let body = json!({"spec": {"taints": [other_taint()]}}).to_string();
    let (status, patched) = send_body(&api, "PATCH", NODE, STRATEGIC_PATCH, &body).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["spec"]["taints"], json!([other_taint()]));

    // The body's resourceVersion is a precondition: `current` is stale now.
    let stale = json!({"metadata": {"resourceVersion": current}, "spec": {"taints": null}});
    let (status, answer) = send_body(&api, "PATCH", NODE, MERGE_PATCH, &stale.to_string()).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["reason"], "Conflict");
    assert_eq!(
        answer["message"],
        "Operation cannot be fulfilled on nodes \"node-a\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let stale_json = json!([
        {"op": "replace", "path": "/metadata/resourceVersion", "value": current},
        {"op": "remove", "path": "/spec/taints"},
    ]);
    let (status, _) = send_body(&api, "PATCH", NODE, JSON_PATCH, &stale_json.to_string()).await;
    assert_eq!(status, 409);
    assert_eq!(taints(&api), json!([other_taint()]));

    let fresh = patched["metadata"]["resourceVersion"].clone();
    let body = json!({"metadata": {"resourceVersion": fresh}, "spec": {"taints": null}});
    let (status, patched) = send_body(&api, "PATCH", NODE, MERGE_PATCH, &body.to_string()).await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched["spec"].get("taints").is_none(), "{patched}");
}

#[tokio::test(flavor = "multi_thread")]
async fn put_checks_the_version_and_delete_removes_the_node() {
    let api = server_with_node().await;
    let mut node = api.node("node-a").unwrap();
    node["spec"]["taints"] = json!([other_taint()]);
    api.set_node_taints("node-a", json!([startup_taint()]));
    let (status, answer) = call(&api, "PUT", NODE, None, Some(node.clone())).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["reason"], "Conflict");

    node["metadata"]["resourceVersion"] =
        api.node("node-a").unwrap()["metadata"]["resourceVersion"].clone();
    let (status, replaced) = call(&api, "PUT", NODE, None, Some(node)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["spec"]["taints"], json!([other_taint()]));

    let (status, _) = call(&api, "DELETE", NODE, None, None).await;
    assert_eq!(status, 200);
    assert!(api.node("node-a").is_none());
    assert!(api.node_patches().is_empty(), "PUT is not a PATCH");
}

#[tokio::test(flavor = "multi_thread")]
async fn set_node_taints_is_a_write_watchers_see() {
    let api = server_with_node().await;
    let before = version(&api.node("node-a").unwrap());
    let written = api.set_node_taints("node-a", json!([]));
    assert_eq!(version(&written), before + 1);
    assert!(written["spec"].get("taints").is_none());
    let watch = format!("/api/v1/nodes?watch=true&resourceVersion={before}");
    let events = watch_events(&api, &watch, None, 1, Duration::from_secs(5)).await;
    assert_eq!(events[0]["type"], "MODIFIED", "{events:?}");
    assert_eq!(version(&events[0]["object"]), before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_failures_answer_without_applying() {
    let api = server_with_node().await;
    let before = api.node("node-a").unwrap();
    let body = guarded_removal(&before["spec"]["taints"]);
    api.on_next_node_patch("node-a", json!([startup_taint()]));

    api.fail_node_patches(403, 2);
    for _ in 0..2 {
        let (status, answer) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
        assert_eq!(status, 403);
        assert_eq!(answer["reason"], "Forbidden");
        assert_eq!(answer["status"], "Failure");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.starts_with("nodes \"node-a\" is forbidden: User"),
            "{message}"
        );
    }
    assert_eq!(
        api.node("node-a").unwrap(),
        before,
        "nothing applied, no race"
    );

    for (code, reason) in [(500, "InternalError"), (409, "Conflict")] {
        api.fail_node_patches(code, 1);
        let (status, answer) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
        assert_eq!(
            (status, answer["reason"].as_str()),
            (code, Some(reason)),
            "{answer}"
        );
    }
    assert_eq!(api.node("node-a").unwrap(), before);

    // Failures used up: the racing write happens now, and fails the guard.
    let (status, _) = send_body(&api, "PATCH", NODE, JSON_PATCH, &body).await;
    assert_eq!(status, 422);
    assert_eq!(taints(&api), json!([startup_taint()]));
    let statuses: Vec<u16> = api.node_patches().iter().map(|p| p.status).collect();
    assert_eq!(statuses, [403, 403, 500, 409, 422]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_reads_and_json_patches_a_node() {
    let api = server_with_node().await;
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let nodes: Api<Node> = Api::all(client);
    let node = nodes.get("node-a").await.unwrap();
    let read = serde_json::to_value(node.spec.unwrap().taints.unwrap()).unwrap();
    let guarded = |read: &Value| {
        let operations: Value = serde_json::from_str(&guarded_removal(read)).unwrap();
        Patch::Json::<()>(serde_json::from_value(operations).unwrap())
    };

    api.on_next_node_patch("node-a", json!([startup_taint()]));
    let error = nodes
        .patch("node-a", &PatchParams::default(), &guarded(&read))
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(status.message, INVALID);

    let reread =
        serde_json::to_value(nodes.get("node-a").await.unwrap().spec.unwrap().taints).unwrap();
    let patched = nodes
        .patch("node-a", &PatchParams::default(), &guarded(&reread))
        .await
        .unwrap();
    assert!(patched.spec.unwrap().taints.is_none());
    assert!(
        api.node_patches()
            .iter()
            .all(|p| p.content_type == JSON_PATCH)
    );
    assert_eq!(
        api.patch_as(
            Kind::Node,
            "",
            "node-a",
            PatchType::Json,
            json!([{"op": "test", "path": "/kind", "value": "Pod"}])
        )
        .unwrap_err()
        .cause
        .unwrap_or_default(),
        "operation 0: testing value /kind failed: test failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_gets_patches_and_untaints_nodes() {
    let api = server_with_node().await;
    let kubectl = Kubectl::new(&api);

    let table = kubectl.ok(&["get", "nodes"]);
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("node-a "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("Ready") && row.contains("<none>") && row.contains("v1.32.0"),
        "{row}"
    );
    let wide = kubectl.ok(&["get", "no", "node-a", "-o", "wide"]);
    assert!(
        wide.contains("INTERNAL-IP") && wide.contains("10.0.0."),
        "{wide}"
    );

    let json_out = kubectl.ok(&["get", "node", "node-a", "-o", "json"]);
    let node: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(node["metadata"]["name"], "node-a");
    assert_eq!(
        node["spec"]["taints"],
        json!([startup_taint(), other_taint()])
    );

    // A failing guard: kubectl exits non-zero with the server's words.
    let stale = guarded_removal(&json!([startup_taint()]));
    let err = kubectl.fails(&["patch", "node", "node-a", "--type=json", "-p", &stale]);
    assert!(err.contains(INVALID), "{err}");
    assert_eq!(taints(&api), json!([startup_taint(), other_taint()]));

    let good = guarded_removal(&node["spec"]["taints"]);
    let out = kubectl.ok(&["patch", "node", "node-a", "--type=json", "-p", &good]);
    assert!(out.contains("node/node-a patched"), "{out}");
    assert_eq!(taints(&api), json!([other_taint()]));

    let out = kubectl.ok(&["taint", "nodes", "node-a", "maintenance=soon:NoSchedule"]);
    assert!(out.contains("node/node-a tainted"), "{out}");
    let out = kubectl.ok(&["taint", "nodes", "node-a", "dedicated:NoExecute-"]);
    assert!(out.contains("node/node-a untainted"), "{out}");
    assert_eq!(
        taints(&api),
        json!([{"key": "maintenance", "value": "soon", "effect": "NoSchedule"}])
    );
    let out = kubectl.ok(&["taint", "nodes", "node-a", "maintenance:NoSchedule-"]);
    assert!(out.contains("node/node-a untainted"), "{out}");
    assert!(api.node("node-a").unwrap()["spec"].get("taints").is_none());
    let err = kubectl.fails(&["taint", "nodes", "node-a", "maintenance:NoSchedule-"]);
    assert!(err.contains("not found"), "{err}");

    let content_types: Vec<String> = api
        .node_patches()
        .into_iter()
        .map(|p| p.content_type)
        .collect();
    assert_eq!(content_types[..2], [JSON_PATCH, JSON_PATCH]);
    assert!(
        content_types[2..]
            .iter()
            .all(|c| c.starts_with(STRATEGIC_PATCH)),
        "{content_types:?}"
    );
    assert_eq!(content_types.len(), 5);

    let out = kubectl.ok(&["delete", "node", "node-a"]);
    assert!(out.contains("deleted"), "{out}");
    assert!(api.node("node-a").is_none());
}
