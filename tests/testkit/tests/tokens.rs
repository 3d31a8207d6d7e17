//! TokenRequest (through the real `kubectl create token` and raw HTTP) and
//! TokenReview, with a real API server's rules and answers.

mod common;

use std::time::Duration;

use common::{Kubectl, call, claims, review};
use iamlet_testkit::{ApiServer, DEFAULT_AUDIENCE, Kind, TokenSpec, pod_with_service_account};
use serde_json::{Value, json};

const AUDIENCE: &str = "sts.amazonaws.com";

/// A server with service account `app` and its pod `web` on `node-a`.
async fn server() -> ApiServer {
    let api = ApiServer::start().await.unwrap();
    api.create_service_account("default", "app", json!({}));
    api.put_pod(pod_with_service_account(
        "default",
        "web",
        "node-a",
        "10.0.0.5",
        "app",
        json!({}),
    ));
    api
}

fn uid(api: &ApiServer, kind: Kind, name: &str) -> String {
    api.get(kind, "default", name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn refusal(answer: &Value) -> &str {
    assert!(
        answer["status"].get("authenticated").is_none(),
        "a refusal has no `authenticated`: {answer}"
    );
    assert_eq!(answer["status"]["user"], json!({}), "{answer}");
    answer["status"]["error"].as_str().expect("an error")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_create_token_bound_to_a_pod_authenticates_with_its_extras() {
    let api = server().await;
    let kubectl = Kubectl::new(&api);
    let token = kubectl.ok(&[
        "create",
        "token",
        "app",
        "-n",
        "default",
        "--audience",
        AUDIENCE,
        "--duration",
        "10m",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
    ]);
    let token = token.trim();
    let pod_uid = uid(&api, Kind::Pod, "web");
    let account_uid = uid(&api, Kind::ServiceAccount, "app");

    let header = claims(&format!("x.{}", token.split('.').next().unwrap()));
    assert_eq!(header, json!({"alg": "HS256", "kid": "fake"}));
    let claims = claims(token);
    assert_eq!(claims["iss"], DEFAULT_AUDIENCE);
    assert_eq!(claims["sub"], "system:serviceaccount:default:app");
    assert_eq!(claims["aud"], json!([AUDIENCE]));
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 600);
    assert_eq!(claims["nbf"], claims["iat"]);
    let binding = &claims["kubernetes.io"];
    assert_eq!(binding["namespace"], "default");
    assert_eq!(
        binding["serviceaccount"],
        json!({"name": "app", "uid": account_uid})
    );
    assert_eq!(binding["pod"], json!({"name": "web", "uid": pod_uid}));
    assert_eq!(binding["node"]["name"], "node-a");
    let node_uid = binding["node"]["uid"].as_str().unwrap().to_string();
    let jti = claims["jti"].as_str().unwrap();
    assert_eq!(jti.len(), 36, "{jti}");

    let answer = review(&api, token, &[AUDIENCE, "other"]).await;
    assert_eq!(answer["kind"], "TokenReview");
    assert_eq!(answer["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(answer["spec"]["token"], token, "the spec is echoed");
    let status = &answer["status"];
    assert_eq!(status["authenticated"], true, "{answer}");
    assert_eq!(status["audiences"], json!([AUDIENCE]));
    let user = &status["user"];
    assert_eq!(user["username"], "system:serviceaccount:default:app");
    assert_eq!(user["uid"], account_uid.as_str());
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    let extra = &user["extra"];
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-name"],
        json!(["node-a"])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/node-uid"],
        json!([node_uid])
    );
    assert_eq!(
        extra["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={jti}")])
    );
    assert_eq!(api.token_reviews(), 1);

    // The node's uid is the same in every token for that node.
    let again = api
        .mint_token(TokenSpec::new("default", "app").pod("web"))
        .unwrap();
    assert_eq!(
        common::claims(&again)["kubernetes.io"]["node"]["uid"],
        node_uid.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_audience_is_refused() {
    let api = server().await;
    let kubectl = Kubectl::new(&api);
    let token = kubectl.ok(&["create", "token", "app", "--audience", AUDIENCE]);
    let answer = review(&api, token.trim(), &["vault"]).await;
    assert_eq!(
        refusal(&answer),
        "[invalid bearer token, token audiences [\"sts.amazonaws.com\"] is invalid for the target audiences [\"vault\"]]"
    );
    // No audiences in the review: the API server's own is required.
    let answer = review(&api, token.trim(), &[]).await;
    assert!(refusal(&answer).contains(DEFAULT_AUDIENCE), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_request_without_audiences_or_lifetime_gets_the_defaults() {
    let api = server().await;
    let (status, answer) = call(
        &api,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/app/token",
        None,
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["kind"], "TokenRequest");
    assert_eq!(answer["metadata"]["name"], "app");
    assert_eq!(answer["spec"]["audiences"], json!([DEFAULT_AUDIENCE]));
    assert_eq!(answer["spec"]["expirationSeconds"], 3600);
    let token = answer["status"]["token"].as_str().unwrap();
    let claims = claims(token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert!(claims["kubernetes.io"].get("pod").is_none());
    let expires = answer["status"]["expirationTimestamp"].as_str().unwrap();
    let expires =
        time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(expires.unix_timestamp(), claims["exp"].as_i64().unwrap());

    // Not pod-bound: no pod or node extras; the default audience works.
    let answer = review(&api, token, &[]).await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(answer["status"]["audiences"], json!([DEFAULT_AUDIENCE]));
    let extra = answer["status"]["user"]["extra"].as_object().unwrap();
    assert_eq!(
        extra.keys().collect::<Vec<_>>(),
        ["authentication.kubernetes.io/credential-id"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_requests_follow_a_real_servers_rules() {
    let api = server().await;
    api.put_pod(iamlet_testkit::pod(
        "default",
        "other",
        "node-a",
        "10.0.0.6",
        json!({}),
    ));
    let request = |sa: &str, spec: Value| {
        let path = format!("/api/v1/namespaces/default/serviceaccounts/{sa}/token");
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let api = &api;
        async move { call(api, "POST", &path, None, Some(body)).await }
    };
    let pod =
        |name: &str| json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": name}});

    let (status, answer) = request("nobody", json!({})).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (404, Some("serviceaccounts \"nobody\" not found"))
    );
    let (status, answer) = request("app", pod("gone")).await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (404, Some("pods \"gone\" not found"))
    );
    // `other` names no service account: it runs as `default`.
    let (status, answer) = request("app", pod("other")).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("different serviceaccount name")
    );
    let (status, _) = request("default", pod("other")).await;
    assert_eq!(status, 201);
    let (status, answer) = request(
        "app",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "not-its-uid"}}),
    )
    .await;
    assert_eq!((status, answer["reason"].as_str()), (409, Some("Conflict")));
    let (status, answer) = request("app", json!({"expirationSeconds": 599})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["message"],
        "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"
    );

    let kubectl = Kubectl::new(&api);
    let err = kubectl.fails(&["create", "token", "app", "--duration", "1m"]);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // mint_token has the same rules but not the floor.
    let mint = |spec| api.mint_token(spec).map_err(|e| e.code);
    assert_eq!(mint(TokenSpec::new("default", "nobody")), Err(404));
    assert_eq!(mint(TokenSpec::new("default", "app").pod("gone")), Err(404));
    assert_eq!(
        mint(TokenSpec::new("default", "app").pod("other")),
        Err(400)
    );
    let short = mint(TokenSpec::new("default", "app").ttl(Duration::from_secs(5))).unwrap();
    let claims = claims(&short);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_refused() {
    let api = server().await;
    let token = api
        .mint_token(
            TokenSpec::new("default", "app")
                .pod("web")
                .audiences([AUDIENCE])
                .ttl(Duration::from_secs(1)),
        )
        .unwrap();
    let exp = claims(&token)["exp"].as_i64().unwrap();
    let answer = review(&api, &token, &[AUDIENCE]).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now < exp {
        assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    }
    while time::OffsetDateTime::now_utc().unix_timestamp() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = review(&api, &token, &[AUDIENCE]).await;
    assert_eq!(
        refusal(&answer),
        "[invalid bearer token, service account token has expired]"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_replaced_pod_invalidates_its_tokens() {
    let api = server().await;
    let spec = TokenSpec::new("default", "app")
        .pod("web")
        .audiences([AUDIENCE]);
    let token = api.mint_token(spec.clone()).unwrap();
    assert_eq!(
        review(&api, &token, &[AUDIENCE]).await["status"]["authenticated"],
        true
    );

    api.delete(Kind::Pod, "default", "web").unwrap();
    let answer = review(&api, &token, &[AUDIENCE]).await;
    assert_eq!(
        refusal(&answer),
        "[invalid bearer token, service account token has been invalidated]"
    );

    // Same name, new pod: the old token names the old uid.
    api.put_pod(pod_with_service_account(
        "default",
        "web",
        "node-a",
        "10.0.0.5",
        "app",
        json!({}),
    ));
    let answer = review(&api, &token, &[AUDIENCE]).await;
    assert!(
        refusal(&answer).contains("does not match service account pod ref claim"),
        "{answer}"
    );
    let fresh = api.mint_token(spec).unwrap();
    assert_eq!(
        review(&api, &fresh, &[AUDIENCE]).await["status"]["authenticated"],
        true
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_or_replaced_service_account_invalidates_its_tokens() {
    let api = server().await;
    let token = api.mint_token(TokenSpec::new("default", "app")).unwrap();
    // Re-annotating keeps the account (and its uid).
    api.create_service_account("default", "app", json!({"k": "v"}));
    assert_eq!(
        review(&api, &token, &[]).await["status"]["authenticated"],
        true
    );

    api.delete(Kind::ServiceAccount, "default", "app").unwrap();
    let answer = review(&api, &token, &[]).await;
    assert_eq!(
        refusal(&answer),
        "[invalid bearer token, serviceaccounts \"app\" not found]"
    );
    api.create_service_account("default", "app", json!({}));
    let answer = review(&api, &token, &[]).await;
    assert!(refusal(&answer).contains("service account UID"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_and_foreign_tokens_are_refused() {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let api = server().await;
    let token = api
        .mint_token(TokenSpec::new("default", "app").pod("web"))
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    // Another pod's name in otherwise genuine claims.
    let mut forged = claims(&token);
    forged["kubernetes.io"]["pod"]["name"] = json!("admin");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(forged.to_string()),
        parts[2]
    );
    let answer = review(&api, &forged, &[]).await;
    assert_eq!(
        refusal(&answer),
        "[invalid bearer token, go-jose/go-jose: error in cryptographic primitive]"
    );

    // A flipped signature byte.
    let mut signature = engine.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], engine.encode(signature));
    assert!(refusal(&review(&api, &flipped, &[]).await).contains("cryptographic"));

    // Another server's token: a different key.
    let elsewhere = server().await;
    let foreign = elsewhere
        .mint_token(TokenSpec::new("default", "app").pod("web"))
        .unwrap();
    assert!(refusal(&review(&api, &foreign, &[]).await).contains("cryptographic"));

    // Not a JWT at all.
    assert_eq!(
        refusal(&review(&api, "garbage", &[]).await),
        "invalid bearer token"
    );
    assert_eq!(api.token_reviews(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_review_refuses_malformed_bodies_and_fails_on_request() {
    let api = server().await;
    let path = "/apis/authentication.k8s.io/v1/tokenreviews";
    for body in [
        json!("not an object"),
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {}}),
        json!({"kind": "Pod", "spec": {"token": "x"}}),
        json!({"kind": "TokenReview", "spec": {"token": "x", "audiences": "sts"}}),
    ] {
        let (status, answer) = call(&api, "POST", path, None, Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["kind"], "Status");
    }

    let token = api.mint_token(TokenSpec::new("default", "app")).unwrap();
    let body = json!({"kind": "TokenReview", "spec": {"token": token}});
    api.set_token_review_failure(Some(503));
    let (status, answer) = call(&api, "POST", path, None, Some(body.clone())).await;
    assert_eq!(status, 503);
    assert_eq!(answer["kind"], "Status");
    assert_eq!(answer["code"], 503);
    api.set_token_review_failure(Some(500));
    assert_eq!(
        call(&api, "POST", path, None, Some(body.clone())).await.0,
        500
    );
    api.set_token_review_failure(None);
    let (status, answer) = call(&api, "POST", path, None, Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(api.token_reviews(), 7);
}
