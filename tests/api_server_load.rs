//! What the agent asks of the API server, as the test API server recorded
//! it: lists served from its watch cache (`resourceVersion=0`, then never
//! older than what was seen) and paged, namespaces and ServiceAccounts
//! watched metadata-only, pods only of this node.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::time::Duration;

use iamlet_testkit::RecordedRequest;
use serde_json::json;
use support::{Node, eventually, pod};

fn query(request: &RecordedRequest) -> Vec<(String, String)> {
    let (_, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3D", "=")))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// GET requests on `collection` (`/api/v1/pods`), lists or watches.
fn requests_on(node: &Node, collection: &str, watch: bool) -> Vec<RecordedRequest> {
    node.api
        .request_log()
        .into_iter()
        .filter(|r| r.method == "GET")
        .filter(|r| r.path.split('?').next() == Some(collection))
        .filter(|r| param(&query(r), "watch").is_some() == watch)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_from_the_watch_cache_in_pages_and_only_metadata_where_that_is_enough() {
    let node = Node::start().await;
    // More pods on this node than one page holds, and some elsewhere.
    for n in 0..1_100 {
        node.api.put_pod(pod(
            "default",
            &format!("here-{n}"),
            support::NODE,
            &format!("127.1.{}.{}", n / 250, n % 250 + 1),
            json!({}),
        ));
    }
    for n in 0..50 {
        node.api.put_pod(pod(
            "default",
            &format!("there-{n}"),
            "node-b",
            &format!("127.2.0.{}", n + 1),
            json!({}),
        ));
    }
    let agent = node
        .agent(&["--namespace-restrictions", "--service-account-roles"])
        .await;

    // Pods: this node's only, the first page at any version (the cache),
    // the next ones by continue token (which carries its own version).
    let lists = requests_on(&node, "/api/v1/pods", false);
    assert_eq!(lists.len(), 3, "{lists:?}");
    let first = query(&lists[0]);
    assert_eq!(param(&first, "fieldSelector"), Some("spec.nodeName=node-a"));
    assert_eq!(param(&first, "limit"), Some("500"));
    assert_eq!(param(&first, "resourceVersion"), Some("0"));
    assert_eq!(param(&first, "resourceVersionMatch"), Some("NotOlderThan"));
    for page in &lists[1..] {
        let page = query(page);
        assert!(param(&page, "continue").is_some(), "{page:?}");
        assert_eq!(param(&page, "resourceVersion"), None);
    }
    let metrics = agent.get("127.0.0.1", "/metrics").await.body;
    assert!(
        metrics.contains("iamlet_pods_indexed 1100"),
        "only this node's pods"
    );

    // Namespaces and ServiceAccounts: metadata only, lists and watches.
    for collection in ["/api/v1/namespaces", "/api/v1/serviceaccounts"] {
        let list = &requests_on(&node, collection, false)[0];
        assert!(
            list.accept
                .as_deref()
                .unwrap_or_default()
                .contains("as=PartialObjectMetadataList"),
            "{list:?}"
        );
        assert_eq!(param(&query(list), "resourceVersion"), Some("0"));
        let watch = &requests_on(&node, collection, true)[0];
        assert!(
            watch
                .accept
                .as_deref()
                .unwrap_or_default()
                .contains("as=PartialObjectMetadata;"),
            "{watch:?}"
        );
        assert_eq!(param(&query(watch), "allowWatchBookmarks"), Some("true"));
    }

    // A compaction (410 on resume): the relist asks for nothing older than
    // what the agent had seen, still from the cache.
    node.api.compact();
    eventually("the relist", Duration::from_secs(15), || async {
        (requests_on(&node, "/api/v1/pods", false).len() > 3).then_some(())
    })
    .await;
    let relist = query(&requests_on(&node, "/api/v1/pods", false)[3]);
    let version: u64 = param(&relist, "resourceVersion").unwrap().parse().unwrap();
    assert!(version > 1_000, "{relist:?}");
    assert_eq!(param(&relist, "resourceVersionMatch"), Some("NotOlderThan"));
}
