use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

const AUDIENCE: &str = "pods.eks.amazonaws.com";

fn accepted(audiences: &[&str]) -> TokenReviewStatus {
    let extra: BTreeMap<String, Vec<String>> = [
        (POD_NAME, "api-0"),
        (POD_UID, "6f1c0a8e-0000-4000-8000-000000000001"),
        (NODE_NAME, "node-a"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
    .collect();
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
        user: Some(UserInfo {
            username: Some("system:serviceaccount:payments:api".into()),
            extra: Some(extra),
            ..UserInfo::default()
        }),
        error: None,
    }
}

fn jwt(exp: u64) -> String {
    let encode = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2ln",
        encode(serde_json::json!({"alg": "RS256"})),
        encode(serde_json::json!({"exp": exp, "sub": "system:serviceaccount:payments:api"}))
    )
}

#[test]
fn an_accepted_review_names_the_pod() {
    let bound = interpret(&accepted(&[AUDIENCE]), AUDIENCE).unwrap();
    assert_eq!(bound.pod.to_string(), "payments/api-0");
    assert_eq!(bound.service_account, "api");
    assert_eq!(bound.pod_uid, "6f1c0a8e-0000-4000-8000-000000000001");
    assert_eq!(bound.node.as_deref(), Some("node-a"));
}

#[test]
fn anything_less_is_rejected() {
    let mut unauthenticated = accepted(&[AUDIENCE]);
    unauthenticated.authenticated = None;
    unauthenticated.error = Some("token has expired".into());
    let why = interpret(&unauthenticated, AUDIENCE).unwrap_err();
    assert!(why.contains("token has expired"), "{why}");

    let other_audience = interpret(&accepted(&["sts.amazonaws.com"]), AUDIENCE).unwrap_err();
    assert!(other_audience.contains("audience"), "{other_audience}");
    let no_audience = TokenReviewStatus {
        audiences: None,
        ..accepted(&[])
    };
    assert!(interpret(&no_audience, AUDIENCE).is_err());

    let mut user = accepted(&[AUDIENCE]);
    user.user.as_mut().unwrap().username = Some("alice".into());
    assert!(
        interpret(&user, AUDIENCE)
            .unwrap_err()
            .contains("not a ServiceAccount")
    );

    let mut unbound = accepted(&[AUDIENCE]);
    unbound.user.as_mut().unwrap().extra = None;
    assert!(
        interpret(&unbound, AUDIENCE)
            .unwrap_err()
            .contains("not bound to a pod")
    );

    let mut two_pods = accepted(&[AUDIENCE]);
    two_pods
        .user
        .as_mut()
        .unwrap()
        .extra
        .as_mut()
        .unwrap()
        .insert(POD_NAME.into(), vec!["a".into(), "b".into()]);
    assert!(interpret(&two_pods, AUDIENCE).is_err());
}

#[test]
fn a_review_is_kept_no_longer_than_the_token_lives() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(accepted_for(&jwt(1_000_030), now), Duration::from_secs(30));
    assert_eq!(accepted_for(&jwt(2_000_000), now), MAX_ACCEPTED_FOR);
    assert_eq!(accepted_for(&jwt(999_000), now), Duration::ZERO);
    assert_eq!(accepted_for("opaque-token", now), Duration::ZERO);
    assert_eq!(accepted_for("a.!!!.b", now), Duration::ZERO);
}

/// Counts reviews and answers with a fixed status (or an outage).
struct Counting {
    calls: AtomicUsize,
    answer: Result<TokenReviewStatus, ReviewError>,
}

impl TokenReviewer for Counting {
    fn review<'a>(
        &'a self,
        _token: &'a str,
        audience: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewStatus, ReviewError>> {
        assert_eq!(audience, AUDIENCE);
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

fn reviewing(answer: Result<TokenReviewStatus, ReviewError>) -> (Arc<Counting>, TokenReviews) {
    let counting = Arc::new(Counting {
        calls: AtomicUsize::new(0),
        answer,
    });
    let reviews = TokenReviews::new(counting.clone(), AUDIENCE);
    (counting, reviews)
}

fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn one_review_per_token_while_it_is_remembered() {
    let (counting, reviews) = reviewing(Ok(accepted(&[AUDIENCE])));
    let token = jwt(in_an_hour());
    for _ in 0..5 {
        assert_eq!(
            reviews.review(&token, "pod").await.unwrap().service_account,
            "api"
        );
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    reviews.review(&jwt(in_an_hour() + 1), "pod").await.unwrap();
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        2,
        "another token, another review"
    );
}

#[tokio::test]
async fn rejections_are_remembered_and_outages_are_not() {
    let mut status = accepted(&[AUDIENCE]);
    status.authenticated = Some(false);
    let (counting, reviews) = reviewing(Ok(status));
    let token = jwt(in_an_hour());
    for _ in 0..3 {
        assert!(matches!(
            reviews.review(&token, "pod").await,
            Err(ReviewError::Rejected(_))
        ));
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);

    let (counting, reviews) = reviewing(Err(ReviewError::Unavailable("503".into())));
    for _ in 0..3 {
        assert!(matches!(
            reviews.review(&token, "pod").await,
            Err(ReviewError::Unavailable(_))
        ));
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn debug_shows_no_token() {
    let (_, reviews) = reviewing(Ok(accepted(&[AUDIENCE])));
    let token = jwt(in_an_hour());
    let bound = reviews.review(&token, "pod").await.unwrap();
    let debug = format!("{reviews:?} {bound:?}");
    assert!(debug.contains(AUDIENCE));
    assert!(!debug.contains(&token[..20]), "{debug}");
}

/// Answers after a pause, counting reviews in flight at once.
struct Slow {
    in_flight: AtomicUsize,
    most: AtomicUsize,
}

impl TokenReviewer for Slow {
    fn review<'a>(
        &'a self,
        _token: &'a str,
        _audience: &'a str,
    ) -> BoxFuture<'a, Result<TokenReviewStatus, ReviewError>> {
        Box::pin(async move {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(accepted(&[AUDIENCE]))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn one_caller_flooding_new_tokens_holds_two_review_slots_not_all() {
    let slow = Arc::new(Slow {
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let reviews = Arc::new(TokenReviews::new(slow.clone(), AUDIENCE));
    let mut flood = Vec::new();
    for n in 0..20 {
        let reviews = reviews.clone();
        flood.push(tokio::spawn(async move {
            reviews.review(&jwt(in_an_hour() + n), "flooder").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let other = reviews.review(&jwt(in_an_hour() + 100), "bystander").await;
    assert!(other.is_ok(), "{other:?}");
    assert!(
        started.elapsed() <= Duration::from_millis(2100),
        "{:?}",
        started.elapsed()
    );
    let mut refused = 0;
    for task in flood {
        if let Err(ReviewError::Unavailable(why)) = task.await.unwrap() {
            assert!(why.contains("too many"), "{why}");
            refused += 1;
        }
    }
    assert_eq!(refused, 18, "two of the flood's reviews at a time");
    assert!(slow.most.load(Ordering::SeqCst) <= 3);
}
