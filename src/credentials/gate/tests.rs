use std::sync::Arc;

use super::*;
use crate::roles::RoleArn;

fn key(session: &str) -> CredentialKey {
    CredentialKey {
        role: RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap(),
        external_id: None,
        session_name: session.into(),
        tags: None,
    }
}

#[tokio::test(start_paused = true)]
async fn calls_keep_to_the_rate() {
    let gate = StsGate::new(StsLimits {
        max_in_flight: 0,
        per_second: 10.0,
    });
    let started = Instant::now();
    for n in 0..30 {
        drop(
            gate.enter(&key(&format!("s{n}")), Urgency::Background)
                .await,
        );
    }
    // Evenly spaced: the first at once, then one every 100 ms.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(2850), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(3100), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn no_more_than_the_cap_are_in_flight() {
    let gate = Arc::new(StsGate::new(StsLimits {
        max_in_flight: 2,
        per_second: 0.0,
    }));
    let first = gate.enter(&key("a"), Urgency::Pod).await;
    let _second = gate.enter(&key("b"), Urgency::Pod).await;
    let third = {
        let gate = gate.clone();
        tokio::spawn(async move {
            let _permit = gate.enter(&key("c"), Urgency::Pod).await;
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !third.is_finished(),
        "a third call went while two were in flight"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(1), third)
        .await
        .expect("the freed slot goes to the waiting call")
        .unwrap();
}

/// One slot, held; background calls queue, then a pod's call arrives: it
/// goes first when the slot frees, and so does a background call for a
/// key a pod is waiting for.
#[tokio::test(start_paused = true)]
async fn a_pods_call_goes_ahead_of_background_work() {
    let gate = Arc::new(StsGate::new(StsLimits {
        max_in_flight: 1,
        per_second: 0.0,
    }));
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let held = gate.enter(&key("held"), Urgency::Background).await;
    let mut tasks = Vec::new();
    for (name, urgency) in [
        ("background-1", Urgency::Background),
        ("background-2", Urgency::Background),
        ("wanted-by-a-pod", Urgency::Background),
        ("pod", Urgency::Pod),
    ] {
        let gate = gate.clone();
        let order = order_tx.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.enter(&key(name), urgency).await;
            order.send(name).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _wanted = gate.want(&key("wanted-by-a-pod"));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(gate.waiting(), (2, 2));
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    let mut order = Vec::new();
    while let Ok(name) = order_rx.try_recv() {
        order.push(name);
    }
    assert_eq!(&order[2..], ["background-1", "background-2"], "{order:?}");
    assert!(order[..2].contains(&"pod") && order[..2].contains(&"wanted-by-a-pod"));
    assert_eq!(gate.waiting(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_leaves_no_trace() {
    let gate = StsGate::new(StsLimits {
        max_in_flight: 1,
        per_second: 0.0,
    });
    let held = gate.enter(&key("held"), Urgency::Background).await;
    let gave_up = tokio::time::timeout(
        Duration::from_millis(50),
        gate.enter(&key("pod"), Urgency::Pod),
    )
    .await;
    assert!(gave_up.is_err());
    assert_eq!(
        gate.waiting(),
        (0, 0),
        "a dropped wait is no longer counted"
    );
    drop(held);
    drop(gate.enter(&key("background"), Urgency::Background).await);
}
