//! ServiceAccounts through the real kubectl and over raw HTTP, and the
//! metadata-only forms of lists, gets and watches for every kind.

mod common;

use std::time::Duration;

use common::{Kubectl, METADATA, METADATA_LIST, call, watch_events};
use iamlet_testkit::{ApiServer, Kind};
use serde_json::{Value, json};

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let meta = &item["metadata"];
            format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap_or(""),
                meta["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_namespace_gets_a_default_service_account() {
    let api = ApiServer::start().await.unwrap();
    let (status, list) = call(&api, "GET", "/api/v1/serviceaccounts", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["kind"], "ServiceAccountList");
    assert_eq!(names(&list), ["default/default", "kube-system/default"]);

    api.create_namespace("team-a", json!({}));
    let namespace =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-b"}});
    let (status, _) = call(&api, "POST", "/api/v1/namespaces", None, Some(namespace)).await;
    assert_eq!(status, 201);
    for namespace in ["team-a", "team-b"] {
        let account = api.get(Kind::ServiceAccount, namespace, "default").unwrap();
        assert_eq!(account["kind"], "ServiceAccount");
        assert_eq!(account["apiVersion"], "v1");
        assert!(account["metadata"]["uid"].is_string());
    }
    let (_, list) = call(
        &api,
        "GET",
        "/api/v1/namespaces/team-b/serviceaccounts",
        None,
        None,
    )
    .await;
    assert_eq!(names(&list), ["team-b/default"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_creates_annotates_lists_and_deletes_service_accounts() {
    let api = ApiServer::start().await.unwrap();
    let kubectl = Kubectl::new(&api);

    let out = kubectl.ok(&["create", "serviceaccount", "app", "-n", "default"]);
    assert!(out.contains("serviceaccount/app created"), "{out}");
    kubectl.ok(&[
        "annotate",
        "sa",
        "app",
        "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/a",
    ]);
    kubectl.ok(&[
        "annotate",
        "sa",
        "app",
        "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/b",
        "--overwrite",
    ]);
    let account = api.get(Kind::ServiceAccount, "default", "app").unwrap();
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/b"
    );
    kubectl.fails(&["annotate", "sa", "app", "eks.amazonaws.com/role-arn=c"]);

    let table = kubectl.ok(&["get", "sa"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("NAME") && header.contains("SECRETS") && header.contains("AGE"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("app ")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("default ")), "{table}");
    let everywhere = kubectl.ok(&["get", "serviceaccounts", "-A", "-o", "name"]);
    assert_eq!(everywhere.lines().count(), 3, "{everywhere}");
    let annotation = kubectl.ok(&[
        "get",
        "sa",
        "app",
        "-o",
        "jsonpath={.metadata.annotations.eks\\.amazonaws\\.com/role-arn}",
    ]);
    assert_eq!(annotation, "arn:aws:iam::1:role/b");

    kubectl.ok(&["annotate", "sa", "app", "eks.amazonaws.com/role-arn-"]);
    let account = api.get(Kind::ServiceAccount, "default", "app").unwrap();
    assert!(
        account["metadata"]["annotations"]
            .get("eks.amazonaws.com/role-arn")
            .is_none(),
        "{account}"
    );

    let out = kubectl.ok(&["delete", "sa", "app"]);
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        api.get(Kind::ServiceAccount, "default", "app")
            .unwrap_err()
            .code,
        404
    );
    let err = kubectl.fails(&["get", "sa", "app"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );

    kubectl.ok(&["create", "namespace", "team"]);
    let out = kubectl.ok(&["get", "sa", "-n", "team", "-o", "name"]);
    assert_eq!(out.trim(), "serviceaccount/default");
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_service_accounts_tokens_and_token_reviews() {
    let api = ApiServer::start().await.unwrap();
    let (_, core) = call(&api, "GET", "/api/v1", None, None).await;
    let resources = core["resources"].as_array().unwrap();
    let find = |name: &str| resources.iter().find(|r| r["name"] == name).cloned();
    let accounts = find("serviceaccounts").expect("serviceaccounts");
    assert_eq!(accounts["shortNames"], json!(["sa"]));
    assert_eq!(accounts["namespaced"], true);
    let token = find("serviceaccounts/token").expect("the token subresource");
    assert_eq!(token["verbs"], json!(["create"]));
    assert_eq!(token["kind"], "TokenRequest");

    let (_, groups) = call(&api, "GET", "/apis", None, None).await;
    assert_eq!(groups["groups"][0]["name"], "authentication.k8s.io");
    let (_, group) = call(&api, "GET", "/apis/authentication.k8s.io/v1", None, None).await;
    assert_eq!(group["resources"][0]["name"], "tokenreviews");
    assert_eq!(group["resources"][0]["verbs"], json!(["create"]));

    let kubectl = Kubectl::new(&api);
    let out = kubectl.ok(&["api-resources"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("serviceaccounts") && l.contains(" sa ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("tokenreviews") && l.contains("authentication.k8s.io/v1")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_lists_are_partial_object_metadata_for_every_kind() {
    let api = ApiServer::start().await.unwrap();
    api.create_service_account("default", "app", json!({"k": "v"}));
    api.put_pod(iamlet_testkit::pod(
        "default",
        "web",
        "node-a",
        "10.0.0.5",
        json!({}),
    ));

    let (status, list) = call(
        &api,
        "GET",
        "/api/v1/serviceaccounts?limit=2",
        Some(METADATA_LIST),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert_eq!(list["metadata"]["continue"], "2");
    assert_eq!(names(&list), ["default/app", "default/default"]);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "PartialObjectMetadata");
        assert_eq!(item["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(item.as_object().unwrap().len(), 3, "only metadata: {item}");
    }
    assert_eq!(list["items"][0]["metadata"]["annotations"]["k"], "v");
    let (_, rest) = call(
        &api,
        "GET",
        "/api/v1/serviceaccounts?limit=2&continue=2",
        Some(METADATA_LIST),
        None,
    )
    .await;
    assert_eq!(names(&rest), ["kube-system/default"]);
    assert!(rest["metadata"].get("continue").is_none());

    for path in ["/api/v1/pods", "/api/v1/namespaces"] {
        let (status, list) = call(&api, "GET", path, Some(METADATA_LIST), None).await;
        assert_eq!(status, 200);
        assert_eq!(list["kind"], "PartialObjectMetadataList", "{path}");
        assert!(list["items"][0].get("spec").is_none(), "{list}");
    }

    let (status, one) = call(
        &api,
        "GET",
        "/api/v1/namespaces/default/serviceaccounts/app",
        Some(METADATA),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert_eq!(one["metadata"]["name"], "app");

    // The wrong shape is refused as a real server refuses it.
    let (status, refusal) =
        call(&api, "GET", "/api/v1/serviceaccounts", Some(METADATA), None).await;
    assert_eq!(status, 406, "{refusal}");
    assert_eq!(refusal["reason"], "NotAcceptable");

    // Plain clients still get whole objects.
    let (_, whole) = call(&api, "GET", "/api/v1/serviceaccounts", None, None).await;
    assert_eq!(whole["kind"], "ServiceAccountList");
    assert_eq!(whole["items"][0]["kind"], "ServiceAccount");

    let log = api.request_log();
    let first = &log[0];
    assert_eq!(first.method, "GET");
    assert_eq!(first.path, "/api/v1/serviceaccounts?limit=2");
    assert_eq!(first.accept.as_deref(), Some(METADATA_LIST));
    assert_eq!(
        api.requests()[0],
        "GET /api/v1/serviceaccounts?limit=2",
        "requests() is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_watches_stream_partial_object_metadata_and_bookmarks() {
    let api = ApiServer::start_on("127.0.0.1:0".parse().unwrap(), Duration::from_millis(200))
        .await
        .unwrap();
    let (_, list) = call(
        &api,
        "GET",
        "/api/v1/serviceaccounts",
        Some(METADATA_LIST),
        None,
    )
    .await;
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!(
        "/api/v1/serviceaccounts?watch=true&allowWatchBookmarks=true&resourceVersion={version}&timeoutSeconds=5"
    );
    let watcher = {
        let url = path.clone();
        let api = &api;
        async move { watch_events(api, &url, Some(METADATA), 3, Duration::from_secs(5)).await }
    };
    let changes = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.create_service_account("default", "app", json!({}));
        api.patch(
            Kind::ServiceAccount,
            "default",
            "app",
            json!({"metadata": {"annotations": {"k": "v"}}}),
        )
        .unwrap();
    };
    let (events, ()) = tokio::join!(watcher, changes);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "BOOKMARK"], "{events:?}");
    for event in &events {
        assert_eq!(event["object"]["kind"], "PartialObjectMetadata", "{event}");
        assert_eq!(event["object"]["apiVersion"], "meta.k8s.io/v1");
        assert!(event["object"].get("spec").is_none());
    }
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k"], "v");
    assert!(events[2]["object"]["metadata"]["resourceVersion"].is_string());

    // A watch without a version starts with the current objects.
    let initial = watch_events(
        &api,
        "/api/v1/namespaces/default/serviceaccounts?watch=true&timeoutSeconds=1",
        Some(METADATA),
        2,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(initial.len(), 2);
    assert!(
        initial
            .iter()
            .all(|e| e["type"] == "ADDED" && e["object"]["kind"] == "PartialObjectMetadata")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_default_service_account_comes_back_with_a_new_uid() {
    let api = ApiServer::start().await.unwrap();
    let before = api.get(Kind::ServiceAccount, "default", "default").unwrap();
    api.delete(Kind::ServiceAccount, "default", "default")
        .unwrap();
    let after = api.get(Kind::ServiceAccount, "default", "default").unwrap();
    assert_ne!(before["metadata"]["uid"], after["metadata"]["uid"]);
    // Other accounts stay deleted.
    api.create_service_account("default", "app", json!({}));
    api.delete(Kind::ServiceAccount, "default", "app").unwrap();
    assert_eq!(
        api.get(Kind::ServiceAccount, "default", "app")
            .unwrap_err()
            .code,
        404
    );
}
