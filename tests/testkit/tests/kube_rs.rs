//! kube-rs 5 against the test server, the way the agent uses it: a
//! metadata-only watcher on ServiceAccounts (both the `metadata_watcher`
//! function, deprecated in kube 5, and its replacement, a `watcher` on
//! `Api<PartialObjectMeta<K>>`), and the metadata list, get and patch.

mod common;

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use iamlet_testkit::{ApiServer, Kind, TokenSpec};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{
    Api, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

fn client(api: &ApiServer) -> Client {
    let config = kube::Config::new(api.url().parse().unwrap());
    Client::try_from(config).unwrap()
}

/// The next watcher event that satisfies `wanted`, within a few seconds.
async fn next_matching<S, T>(
    stream: &mut S,
    what: &str,
    mut wanted: impl FnMut(&Event<T>) -> bool,
) -> Event<T>
where
    S: futures::Stream<Item = Result<Event<T>, watcher::Error>> + Unpin,
{
    let search = async {
        loop {
            let event = stream
                .try_next()
                .await
                .expect("watch")
                .expect("open stream");
            if wanted(&event) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), search)
        .await
        .unwrap_or_else(|_| panic!("no {what}"))
}

type Accounts =
    BoxStream<'static, Result<Event<PartialObjectMeta<ServiceAccount>>, watcher::Error>>;

async fn server() -> ApiServer {
    let api = ApiServer::start_on("127.0.0.1:0".parse().unwrap(), Duration::from_millis(300))
        .await
        .unwrap();
    api.create_service_account("default", "app", json!({"eks.amazonaws.com/role-arn": "a"}));
    api
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_watcher_sees_service_accounts_and_annotation_changes() {
    let api = server().await;
    let accounts = Api::<ServiceAccount>::all(client(&api));
    #[allow(deprecated)]
    let stream = watcher::metadata_watcher(accounts, watcher::Config::default()).boxed();
    sees_service_accounts_and_annotation_changes(&api, stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_on_partial_object_meta_sees_service_accounts_and_annotation_changes() {
    let api = server().await;
    let accounts = Api::<PartialObjectMeta<ServiceAccount>>::all(client(&api));
    let stream = watcher::watcher(accounts, watcher::Config::default()).boxed();
    sees_service_accounts_and_annotation_changes(&api, stream).await;
}

async fn sees_service_accounts_and_annotation_changes(api: &ApiServer, mut stream: Accounts) {
    let mut initial = Vec::new();
    next_matching(&mut stream, "the initial list", |event| match event {
        Event::InitApply(account) => {
            initial.push(format!(
                "{}/{}",
                account.namespace().unwrap_or_default(),
                account.name_any()
            ));
            false
        }
        Event::InitDone => true,
        _ => false,
    })
    .await;
    assert_eq!(
        initial,
        ["default/app", "default/default", "kube-system/default"]
    );
    let log = api.request_log();
    let list = log
        .iter()
        .find(|r| r.path.starts_with("/api/v1/serviceaccounts?") && !r.path.contains("watch=true"))
        .expect("a list");
    assert_eq!(list.accept.as_deref(), Some(common::METADATA_LIST));

    // An annotation change, from kubectl's side of the world.
    api.patch(
        Kind::ServiceAccount,
        "default",
        "app",
        json!({"metadata": {"annotations": {"eks.amazonaws.com/role-arn": "b"}}}),
    )
    .unwrap();
    let event = next_matching(
        &mut stream,
        "the annotation change",
        |event| matches!(event, Event::Apply(account) if account.name_any() == "app"),
    )
    .await;
    let Event::Apply(account) = event else {
        unreachable!()
    };
    assert_eq!(
        account
            .annotations()
            .get("eks.amazonaws.com/role-arn")
            .map(String::as_str),
        Some("b")
    );
    assert_eq!(
        account.types.as_ref().unwrap().kind,
        "PartialObjectMetadata"
    );

    // A new account in a new namespace, and a deletion.
    api.create_namespace("team", json!({}));
    next_matching(
        &mut stream,
        "team's default account",
        |event| matches!(event, Event::Apply(a) if a.namespace().as_deref() == Some("team")),
    )
    .await;
    api.delete(Kind::ServiceAccount, "default", "app").unwrap();
    next_matching(
        &mut stream,
        "the deletion",
        |event| matches!(event, Event::Delete(a) if a.name_any() == "app"),
    )
    .await;

    let watch = api
        .request_log()
        .into_iter()
        .find(|r| r.path.contains("watch=true"))
        .expect("a watch");
    assert_eq!(watch.accept.as_deref(), Some(common::METADATA));
    assert!(
        watch.path.starts_with("/api/v1/serviceaccounts?"),
        "{}",
        watch.path
    );

    // Bookmarks in metadata form parse as kube-rs expects: the stream has
    // stayed healthy across several bookmark intervals.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    api.create_service_account("default", "late", json!({}));
    next_matching(
        &mut stream,
        "a later account",
        |event| matches!(event, Event::Apply(a) if a.name_any() == "late"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_list_get_and_patch_through_kube_rs() {
    let api = ApiServer::start().await.unwrap();
    let client = client(&api);
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "default");
    let created = accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.name_any(), "app");

    let page = Api::<ServiceAccount>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.metadata.continue_.is_some());

    let partial: PartialObjectMeta<ServiceAccount> = accounts.get_metadata("app").await.unwrap();
    assert_eq!(partial.name_any(), "app");
    let patched = accounts
        .patch_metadata(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"k": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.annotations().get("k").map(String::as_str),
        Some("v")
    );

    // Api<PartialObjectMeta<K>> sends the metadata headers for plain calls.
    let metadata_api = Api::<PartialObjectMeta<Pod>>::all(client);
    api.put_pod(iamlet_testkit::pod(
        "default",
        "web",
        "node-a",
        "10.0.0.5",
        json!({}),
    ));
    let pods = metadata_api.list(&ListParams::default()).await.unwrap();
    assert_eq!(pods.items[0].name_any(), "web");
}

/// The agent's own loop: `list` then `watch` with bookmarks on
/// `Api<PartialObjectMeta<ServiceAccount>>`, which must parse every event,
/// bookmarks included.
#[tokio::test(flavor = "multi_thread")]
async fn raw_metadata_list_and_watch_with_bookmarks() {
    let api = server().await;
    let accounts = Api::<PartialObjectMeta<ServiceAccount>>::all(client(&api));
    let list = accounts
        .list(&ListParams::default().limit(500))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    let version = list.metadata.resource_version.clone().unwrap();
    let mut params = WatchParams::default().timeout(5);
    params.bookmarks = true;
    let mut events = accounts.watch(&params, &version).await.unwrap().boxed();
    api.patch(
        Kind::ServiceAccount,
        "default",
        "app",
        json!({"metadata": {"annotations": {"eks.amazonaws.com/role-arn": "b"}}}),
    )
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.try_next())
            .await
            .expect("an event")
            .expect("parses")
            .expect("open");
        seen.push(match event {
            WatchEvent::Modified(account) => {
                let role = account.annotations()["eks.amazonaws.com/role-arn"].clone();
                format!("modified {} {role}", account.name_any())
            }
            WatchEvent::Bookmark(bookmark) => {
                assert_eq!(bookmark.types.kind, "PartialObjectMetadata");
                "bookmark".to_string()
            }
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, ["modified app b", "bookmark"]);
}

/// The agent's TokenReview: k8s-openapi's types through `Api::create`.
#[tokio::test(flavor = "multi_thread")]
async fn token_review_through_kube_rs() {
    let api = server().await;
    api.put_pod(iamlet_testkit::pod_with_service_account(
        "default",
        "web",
        "node-a",
        "10.0.0.5",
        "app",
        json!({}),
    ));
    let token = api
        .mint_token(
            TokenSpec::new("default", "app")
                .pod("web")
                .audiences(["pods.eks.amazonaws.com"]),
        )
        .unwrap();
    let reviews = Api::<TokenReview>::all(client(&api));
    let review = |token: String| TokenReview {
        spec: TokenReviewSpec {
            token,
            audiences: Some(vec!["pods.eks.amazonaws.com".to_string()]),
        },
        ..TokenReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review(token.clone()))
        .await
        .unwrap();
    let status = answer.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:app")
    );
    assert_eq!(
        user.extra.unwrap()["authentication.kubernetes.io/pod-name"],
        ["web"]
    );

    api.delete(Kind::Pod, "default", "web").unwrap();
    let answer = reviews
        .create(&PostParams::default(), &review(token))
        .await
        .unwrap();
    let status = answer.status.unwrap();
    assert_eq!(status.authenticated, None);
    assert_eq!(
        status.error.as_deref(),
        Some("[invalid bearer token, service account token has been invalidated]")
    );

    // 500 is not retried; kube 5's default client retries 429, 503 and 504
    // up to 15 times, with a backoff that grows to minutes.
    api.set_token_review_failure(Some(500));
    let failure = reviews
        .create(&PostParams::default(), &review("x".into()))
        .await
        .unwrap_err();
    assert!(matches!(failure, kube::Error::Api(status) if status.code == 500));
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.default_retry = false;
    let once = Api::<TokenReview>::all(Client::try_from(config).unwrap());
    api.set_token_review_failure(Some(503));
    let before = api.token_reviews();
    let failure = once
        .create(&PostParams::default(), &review("x".into()))
        .await
        .unwrap_err();
    assert!(matches!(failure, kube::Error::Api(status) if status.code == 503));
    assert_eq!(api.token_reviews(), before + 1);
}
