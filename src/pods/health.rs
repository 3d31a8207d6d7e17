//! How current the index is: for each watch, when the agent last heard from
//! the API server, whether events are flowing, and whether a break has
//! lasted long enough that answers resting on the index must be refused.
//!
//! A break starts when a watch stream ends or fails (or, for a stream gone
//! silent, at the last word from the API server) and lasts until events
//! flow again: an event or bookmark arrives on a reopened stream, or the
//! stream stays open for [`HEAL_AFTER`] without failing. Merely opening a
//! stream heals nothing: an API server may accept the watch and then end
//! it at once (410, a decoding error), and such a loop must not look
//! healthy. A short break is healed by resuming from the last
//! resourceVersion (the API server replays what was missed). A break longer
//! than `--max-index-staleness` makes the index stale: a pod deleted during
//! it may still be indexed while its IP serves a new pod, so every answer
//! that needs the index is refused until a full relist completes.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// A reopened stream that has not failed for this long is flowing, even if
/// nothing happened on the node meanwhile.
pub const HEAL_AFTER: Duration = Duration::from_secs(2);

/// The watches that feed the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    Pods,
    Namespaces,
    ServiceAccounts,
}

impl WatchKind {
    pub fn label(self) -> &'static str {
        match self {
            WatchKind::Pods => "pods",
            WatchKind::Namespaces => "namespaces",
            WatchKind::ServiceAccounts => "serviceaccounts",
        }
    }
}

/// One watch's health, kept inside the store's lock.
#[derive(Debug, Default)]
pub(super) struct WatchHealth {
    /// The last list, event, bookmark or stream opening.
    last_contact: Option<Instant>,
    /// When events stopped flowing; `None` while a stream is open.
    broken_since: Option<Instant>,
    /// Streams opened again after a break.
    reconnects: u64,
}

impl WatchHealth {
    /// An event or bookmark arrived: events flow, any break is over.
    /// Returns whether there was one.
    pub(super) fn heard(&mut self, now: Instant) -> bool {
        self.last_contact = Some(now);
        self.healed()
    }

    /// A reopened stream stayed up for [`HEAL_AFTER`]. Returns whether a
    /// break ended.
    pub(super) fn healed(&mut self) -> bool {
        self.broken_since.take().is_some()
    }

    /// Events stopped at `since`; an earlier start of the same break wins.
    pub(super) fn broken(&mut self, since: Instant) {
        self.broken_since.get_or_insert(since);
    }

    /// Events stopped, the last time anything was heard (a silent stream).
    pub(super) fn went_silent(&mut self, now: Instant) {
        self.broken(self.last_contact.unwrap_or(now));
    }

    /// A new stream is open; the break (if any) lasts until events flow.
    /// Returns false when the break already outlasted `max`: then only a
    /// relist clears it.
    pub(super) fn opened(&mut self, now: Instant, max: Option<Duration>) -> bool {
        self.last_contact = Some(now);
        let Some(since) = self.broken_since else {
            return true;
        };
        self.reconnects += 1;
        max.is_none_or(|max| now.duration_since(since) <= max)
    }

    /// A full list was applied: whatever the break hid is now known.
    pub(super) fn relisted(&mut self, now: Instant) {
        self.last_contact = Some(now);
        self.broken_since = None;
    }

    /// How long the break has lasted when it is longer than `max`.
    pub(super) fn stale_for(&self, now: Instant, max: Option<Duration>) -> Option<Duration> {
        let broken_for = now.duration_since(self.broken_since?);
        (broken_for > max?).then_some(broken_for)
    }

    pub(super) fn report(&self, kind: WatchKind, now: Instant) -> WatchReport {
        WatchReport {
            kind: kind.label(),
            streaming: self.last_contact.is_some() && self.broken_since.is_none(),
            seconds_since_contact: self
                .last_contact
                .map(|at| now.duration_since(at).as_secs_f64()),
            broken_for_seconds: self
                .broken_since
                .map(|at| now.duration_since(at).as_secs_f64()),
            reconnects: self.reconnects,
        }
    }
}

/// One watch's health, for `/readyz`, logs and metrics.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WatchReport {
    pub kind: &'static str,
    /// A stream is open and events flow.
    pub streaming: bool,
    /// Since the last list, event, bookmark or stream opening.
    pub seconds_since_contact: Option<f64>,
    /// How long the current break has lasted, if there is one.
    pub broken_for_seconds: Option<f64>,
    pub reconnects: u64,
}

/// The index's health as a whole.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IndexHealth {
    /// The initial lists are done.
    pub ready: bool,
    /// A break outlasted `--max-index-staleness`: index answers are refused
    /// until a relist completes.
    pub stale: bool,
    pub max_staleness_seconds: Option<f64>,
    pub watches: Vec<WatchReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Option<Duration> = Some(Duration::from_secs(10));

    #[tokio::test(start_paused = true)]
    async fn a_short_break_heals_when_events_flow_again() {
        let mut health = WatchHealth::default();
        health.relisted(Instant::now());
        health.broken(Instant::now());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(health.stale_for(Instant::now(), MAX), None);
        assert!(health.opened(Instant::now(), MAX));
        assert_eq!(health.report(WatchKind::Pods, Instant::now()).reconnects, 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            health.stale_for(Instant::now(), MAX).is_some(),
            "an open stream alone heals nothing"
        );
        assert!(health.heard(Instant::now()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(health.stale_for(Instant::now(), MAX), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_opens_and_fails_at_once_stays_broken() {
        let mut health = WatchHealth::default();
        health.relisted(Instant::now());
        health.broken(Instant::now());
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(2)).await;
            if health.opened(Instant::now(), MAX) {
                health.broken(Instant::now());
            }
        }
        assert_eq!(
            health.stale_for(Instant::now(), MAX),
            Some(Duration::from_secs(12)),
            "counted from the first failure"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_is_broken_since_it_was_last_heard() {
        let mut health = WatchHealth::default();
        health.relisted(Instant::now());
        tokio::time::advance(Duration::from_secs(150)).await;
        health.went_silent(Instant::now());
        assert_eq!(
            health.stale_for(Instant::now(), MAX),
            Some(Duration::from_secs(150))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_break_is_stale_until_a_relist() {
        let mut health = WatchHealth::default();
        health.relisted(Instant::now());
        health.broken(Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        health.broken(Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            health.stale_for(Instant::now(), MAX),
            Some(Duration::from_secs(11)),
            "the break counts from its first moment"
        );
        assert!(!health.opened(Instant::now(), MAX));
        assert!(health.stale_for(Instant::now(), MAX).is_some());
        health.relisted(Instant::now());
        assert_eq!(health.stale_for(Instant::now(), MAX), None);
        assert_eq!(health.stale_for(Instant::now(), None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_bound_means_never_stale() {
        let mut health = WatchHealth::default();
        health.broken(Instant::now());
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(health.stale_for(Instant::now(), None), None);
        assert!(health.opened(Instant::now(), None));
    }
}
