use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;

use super::*;
use crate::clock::ManualClock;
use crate::credentials::{Secret, StsErrorKind};
use crate::roles::RoleArn;

/// An STS that hands out numbered credentials valid for an hour on the
/// shared clock, or fails when told to, after an optional delay.
#[derive(Debug)]
struct FakeSts {
    clock: Arc<ManualClock>,
    calls: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
    delay: Duration,
}

impl AssumeRole for FakeSts {
    fn assume_role<'a>(
        &'a self,
        _key: &'a CredentialKey,
        duration: Duration,
    ) -> BoxFuture<'a, Result<Credentials, StsError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.delay).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(StsError::new(
                    StsErrorKind::AccessDenied,
                    "AccessDenied",
                    "not allowed",
                ));
            }
            let now = self.clock.now();
            Ok(Credentials {
                access_key_id: format!("ASIA{n:016}"),
                secret_access_key: Secret::new("secret"),
                session_token: Secret::new("token"),
                expiration: now + duration,
                issued: now,
                grant_memo: Default::default(),
                rendered: Default::default(),
            })
        })
    }
}

fn settings(error_ttl: Duration) -> CacheSettings {
    CacheSettings {
        session_duration: Duration::from_secs(3600),
        refresh_before: Duration::from_secs(1800),
        min_remaining: Duration::from_secs(900),
        error_ttl,
        sts_limits: super::StsLimits::UNLIMITED,
    }
}

fn setup(
    error_ttl: Duration,
    delay: Duration,
) -> (Arc<ManualClock>, Arc<FakeSts>, CredentialCache) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let sts = Arc::new(FakeSts {
        clock: clock.clone(),
        calls: AtomicUsize::new(0),
        fail: false.into(),
        delay,
    });
    let metrics = Arc::new(crate::telemetry::Metrics::new("test", "test"));
    let cache = CredentialCache::new(sts.clone(), settings(error_ttl), clock.clone(), metrics);
    (clock, sts, cache)
}

fn key(session: &str) -> CredentialKey {
    CredentialKey {
        role: RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap(),
        external_id: None,
        session_name: session.into(),
        tags: None,
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_call() {
    let (_, sts, cache) = setup(Duration::ZERO, Duration::from_millis(50));
    let k = key("s");
    let results = futures::future::join_all((0..50).map(|_| cache.get(&k))).await;
    let ids: std::collections::HashSet<_> = results
        .into_iter()
        .map(|r| r.unwrap().access_key_id.clone())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn credentials_near_expiry_are_never_served() {
    let (clock, sts, cache) = setup(Duration::ZERO, Duration::ZERO);
    let k = key("s");
    let first = cache.get(&k).await.unwrap();
    clock.advance(Duration::from_secs(2600));
    assert!(
        cache.peek(&k).await.is_some(),
        "16m40s left: still servable"
    );
    assert_eq!(
        cache.refresh_due_in(&k).await,
        Some(Duration::ZERO),
        "due for a refresh"
    );
    clock.advance(Duration::from_secs(200));
    assert!(
        cache.peek(&k).await.is_none(),
        "13m20s left: below the floor"
    );
    let second = cache.get(&k).await.unwrap();
    assert_ne!(first.access_key_id, second.access_key_id);
    assert_eq!(sts.calls.load(Ordering::SeqCst), 2);
    assert!(second.remaining(clock.now()) >= Duration::from_secs(3599));
}

#[tokio::test]
async fn refresh_replaces_while_the_old_entry_keeps_serving() {
    let (clock, _, cache) = setup(Duration::ZERO, Duration::ZERO);
    let k = key("s");
    let old = cache.get(&k).await.unwrap();
    // 1,300 s left: past every key's refresh point (30 to 22.5 minutes
    // before expiry), still above the 15-minute floor.
    clock.advance(Duration::from_secs(2300));
    assert_eq!(cache.refresh_due_in(&k).await, Some(Duration::ZERO));
    let new = cache.refresh(&k).await.unwrap();
    assert_ne!(old.access_key_id, new.access_key_id);
    assert_eq!(
        cache.get(&k).await.unwrap().access_key_id,
        new.access_key_id
    );
    // The next refresh falls in the first half of the window
    // (refresh_before 30m, floor 15m): 30 to 37.5 minutes from now.
    let due = cache.refresh_due_in(&k).await.unwrap();
    assert!(due >= Duration::from_secs(1800), "{due:?}");
    assert!(due <= Duration::from_secs(2250), "{due:?}");
}

#[tokio::test]
async fn refreshes_of_credentials_fetched_together_are_spread() {
    let (_, _, cache) = setup(Duration::ZERO, Duration::ZERO);
    let mut due = Vec::new();
    for n in 0..50 {
        let k = key(&format!("s{n}"));
        cache.get(&k).await.unwrap();
        due.push(cache.refresh_due_in(&k).await.unwrap());
    }
    due.sort();
    let spread = due[due.len() - 1] - due[0];
    assert!(
        spread >= Duration::from_secs(300),
        "50 sessions fetched together refresh within {spread:?}"
    );
    assert!(due[0] >= Duration::from_secs(1800) && due[49] <= Duration::from_secs(2250));
}

#[tokio::test]
async fn errors_are_remembered_for_the_error_ttl_and_at_least_a_second() {
    let (_, sts, cache) = setup(Duration::ZERO, Duration::ZERO);
    sts.fail.store(true, Ordering::SeqCst);
    let k = key("s");
    assert_eq!(cache.get(&k).await.unwrap_err().code, "AccessDenied");
    assert!(cache.get(&k).await.is_err());
    assert_eq!(
        sts.calls.load(Ordering::SeqCst),
        1,
        "remembered for a second even without an error TTL"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(cache.get(&k).await.is_err());
    assert_eq!(sts.calls.load(Ordering::SeqCst), 2, "then asked again");

    let (_, sts, cache) = setup(Duration::from_secs(60), Duration::ZERO);
    sts.fail.store(true, Ordering::SeqCst);
    assert!(cache.get(&k).await.is_err());
    sts.fail.store(false, Ordering::SeqCst);
    assert!(
        cache.get(&k).await.is_err(),
        "the error is remembered for its TTL"
    );
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retain_drops_credentials_nobody_is_entitled_to() {
    let (_, _, cache) = setup(Duration::ZERO, Duration::ZERO);
    cache.get(&key("keep")).await.unwrap();
    cache.get(&key("drop")).await.unwrap();
    cache.retain(|k| k.session_name == "keep").await;
    assert!(cache.peek(&key("keep")).await.is_some());
    assert!(cache.peek(&key("drop")).await.is_none());
}

/// A cache whose STS returns credentials lasting `lifetime` while the floor
/// is `min_remaining`, on a real clock (moka's own expiry runs on it).
fn short_lived(lifetime: Duration, min_remaining: Duration) -> (Arc<FakeSts>, CredentialCache) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let sts = Arc::new(FakeSts {
        clock: clock.clone(),
        calls: AtomicUsize::new(0),
        fail: false.into(),
        delay: Duration::ZERO,
    });
    let settings = CacheSettings {
        session_duration: lifetime,
        refresh_before: min_remaining * 2,
        min_remaining,
        error_ttl: Duration::ZERO,
        sts_limits: super::StsLimits::UNLIMITED,
    };
    let metrics = Arc::new(crate::telemetry::Metrics::new("test", "test"));
    (
        sts.clone(),
        CredentialCache::new(sts, settings, clock, metrics),
    )
}

#[tokio::test]
async fn freshly_fetched_credentials_below_the_floor_are_not_served() {
    // STS may answer with less than asked (a role's MaxSessionDuration, a
    // proxy): such credentials are refused, not served.
    let (sts, cache) = short_lived(Duration::from_secs(600), Duration::from_secs(900));
    let error = cache.get(&key("s")).await.unwrap_err();
    assert_eq!(error.code, "ShortLived");
    assert!(cache.peek(&key("s")).await.is_none());
    assert_eq!(sts.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_entry_leaves_the_cache_when_it_reaches_the_floor() {
    // The floor is measured on the injected clock when the entry is
    // written; moka then evicts it after that long on its own clock (its
    // timer wheel ticks about once a second, hence the waits).
    let (_, cache) = short_lived(Duration::from_millis(1300), Duration::from_secs(1));
    cache.get(&key("s")).await.unwrap();
    assert_eq!(cache.entry_count().await, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(cache.entry_count().await, 0, "evicted once at the floor");
    // The same for an entry replaced by a refresh.
    cache.refresh(&key("t")).await.unwrap();
    cache.refresh(&key("t")).await.unwrap();
    assert_eq!(cache.entry_count().await, 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        cache.entry_count().await,
        0,
        "the replaced entry is evicted too"
    );
}
