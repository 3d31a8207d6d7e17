//! The node's budget of STS calls: at most so many in flight and so many a
//! second (`--sts-max-in-flight`, `--sts-calls-per-second`), with a pod's
//! own request going ahead of prefetch and refresh work.
//!
//! STS rate-limits per account, and every node of a fleet calls it with the
//! same account. Without a budget, a node start with 110 role-bearing pods
//! sends 110 calls at once, and a fleet-wide restart sends half a million
//! within seconds: most of them come back throttled and are retried,
//! pods' own requests among them. With it, a node's calls queue here, and a
//! pod that is waiting for its credentials is served before the warmer's
//! work for pods that are not.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::CredentialKey;

/// What a node may ask of STS; zero in either field: no limit on it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StsLimits {
    pub max_in_flight: usize,
    pub per_second: f64,
}

impl StsLimits {
    pub const UNLIMITED: StsLimits = StsLimits {
        max_in_flight: 0,
        per_second: 0.0,
    };
}

/// Who is waiting for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urgency {
    /// A pod's request is waiting for these credentials.
    Pod,
    /// Prefetch or refresh: no request waits on it.
    Background,
}

#[derive(Debug)]
pub struct StsGate {
    limits: StsLimits,
    state: Mutex<GateState>,
    changed: Notify,
}

#[derive(Debug)]
struct GateState {
    in_flight: usize,
    /// Calls waiting for a pod; while there are any, background calls wait.
    pods_waiting: usize,
    background_waiting: usize,
    /// A token bucket of one second's calls.
    tokens: f64,
    refilled: Instant,
    /// Keys a pod's request is waiting for, with how many requests: a
    /// background call for such a key is a pod's call.
    wanted: HashMap<CredentialKey, usize>,
}

/// Held while a call is in flight.
pub struct Permit<'a> {
    gate: &'a StsGate,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.gate.lock().in_flight -= 1;
        self.gate.changed.notify_waiters();
    }
}

/// Marks a key as wanted by a pod's request for as long as it lives.
pub struct Wanted<'a> {
    gate: &'a StsGate,
    key: CredentialKey,
}

impl Drop for Wanted<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        if let Some(count) = state.wanted.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                state.wanted.remove(&self.key);
            }
        }
    }
}

/// Counts a waiting call, also when its future is dropped while it waits.
struct Waiting<'a> {
    gate: &'a StsGate,
    urgency: Option<Urgency>,
}

impl Waiting<'_> {
    fn count_as(&mut self, state: &mut GateState, urgency: Urgency) {
        if self.urgency == Some(urgency) {
            return;
        }
        Self::adjust(state, self.urgency, -1);
        Self::adjust(state, Some(urgency), 1);
        self.urgency = Some(urgency);
    }

    fn adjust(state: &mut GateState, urgency: Option<Urgency>, by: isize) {
        let counter = match urgency {
            Some(Urgency::Pod) => &mut state.pods_waiting,
            Some(Urgency::Background) => &mut state.background_waiting,
            None => return,
        };
        *counter = counter.saturating_add_signed(by);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        Self::adjust(&mut state, self.urgency, -1);
        drop(state);
        // A pod that stops waiting may unblock background calls.
        self.gate.changed.notify_waiters();
    }
}

impl StsGate {
    pub fn new(limits: StsLimits) -> Self {
        StsGate {
            limits,
            state: Mutex::new(GateState {
                in_flight: 0,
                pods_waiting: 0,
                background_waiting: 0,
                tokens: burst(limits.per_second),
                refilled: Instant::now(),
                wanted: HashMap::new(),
            }),
            changed: Notify::new(),
        }
    }

    pub fn limits(&self) -> StsLimits {
        self.limits
    }

    /// A pod's request waits for `key`: a call for it, queued or to come,
    /// goes ahead of background work until the returned guard is dropped.
    pub fn want(&self, key: &CredentialKey) -> Wanted<'_> {
        *self.lock().wanted.entry(key.clone()).or_insert(0) += 1;
        self.changed.notify_waiters();
        Wanted {
            gate: self,
            key: key.clone(),
        }
    }

    /// Calls waiting now: (for pods, in the background).
    pub fn waiting(&self) -> (usize, usize) {
        let state = self.lock();
        (state.pods_waiting, state.background_waiting)
    }

    /// Waits until a call for `key` may go: a slot in flight and a token,
    /// and, for background work, no pod's call waiting.
    pub async fn enter(&self, key: &CredentialKey, urgency: Urgency) -> Permit<'_> {
        let mut waiting = Waiting {
            gate: self,
            urgency: None,
        };
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut state = self.lock();
                let urgency = if urgency == Urgency::Pod || state.wanted.contains_key(key) {
                    Urgency::Pod
                } else {
                    Urgency::Background
                };
                waiting.count_as(&mut state, urgency);
                let now = Instant::now();
                self.refill(&mut state, now);
                let turn = urgency == Urgency::Pod || state.pods_waiting == 0;
                let slot =
                    self.limits.max_in_flight == 0 || state.in_flight < self.limits.max_in_flight;
                if turn && slot && state.tokens >= 1.0 {
                    state.tokens -= 1.0;
                    state.in_flight += 1;
                    drop(state);
                    drop(waiting);
                    return Permit { gate: self };
                }
                (turn && slot).then(|| self.next_token_in(&state))
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    fn refill(&self, state: &mut GateState, now: Instant) {
        if self.limits.per_second <= 0.0 {
            state.tokens = f64::INFINITY;
            return;
        }
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens =
            (state.tokens + elapsed * self.limits.per_second).min(burst(self.limits.per_second));
        state.refilled = now;
    }

    fn next_token_in(&self, state: &GateState) -> Duration {
        if self.limits.per_second <= 0.0 {
            return Duration::ZERO;
        }
        let missing = (1.0 - state.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.limits.per_second).max(Duration::from_millis(1))
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One call: calls are spaced evenly, so no window of a second holds more
/// than the rate (a saved-up burst would double it in the first second,
/// which is when a fleet restarting together hurts most).
fn burst(per_second: f64) -> f64 {
    if per_second <= 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests;
