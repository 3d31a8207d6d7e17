//! Prometheus metrics, all under `iamlet_`. One [`Metrics`] is made at start
//! and shared; the parts that record hold an `Arc` to it. Gauges that mirror
//! state (pods indexed, cached credentials) are set when scraped.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::pods::IndexHealth;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StsLabels {
    /// `success`, or STS's error code (`AccessDenied`, `Throttling`, ...).
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForLabels {
    /// `pod` (a request waits) or `background` (prefetch, refresh).
    pub r#for: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<RouteLabels>,
    pub sts_calls: Family<StsLabels, Counter>,
    pub sts_duration: Histogram,
    pub cache_lookups: Family<ResultLabels, Counter>,
    pub prefetches: Family<ResultLabels, Counter>,
    pub refreshes: Family<ResultLabels, Counter>,
    pub denied: Family<ReasonLabels, Counter>,
    pub pods_indexed: Gauge,
    pub cached_credentials: Gauge,
    pub sts_waiting: Family<ForLabels, Gauge>,
    pub watch_restarts: Family<KindLabels, Counter>,
    pub relists: Family<KindLabels, Counter>,
    pub rules_installed: Gauge,
    pub rule_repairs: Counter,
    pub rules_managed: Gauge,
    pub cgroup_identity: Gauge,
    pub container_listening: Gauge,
    pub host_interfaces_matched: Gauge,
    pub grants: Family<ResultLabels, Counter>,
    pub connections_refused: Family<ReasonLabels, Counter>,
    pub connections_open: Gauge,
    pub index_stale: Gauge,
    pub watch_streaming: Family<KindLabels, Gauge>,
    pub watch_contact_age: Family<KindLabels, Gauge<f64, AtomicU64>>,
    pub watch_reconnects: Family<KindLabels, Gauge>,
}

/// 0.1 ms to ~3.3 s: cached answers take well under a millisecond, STS
/// calls tens to hundreds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new(version: &'static str, commit: &'static str) -> Self {
        let mut registry = Registry::with_prefix("iamlet");
        let metrics = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            sts_calls: Family::default(),
            sts_duration: latency_histogram(),
            cache_lookups: Family::default(),
            prefetches: Family::default(),
            refreshes: Family::default(),
            denied: Family::default(),
            pods_indexed: Gauge::default(),
            cached_credentials: Gauge::default(),
            sts_waiting: Family::default(),
            watch_restarts: Family::default(),
            relists: Family::default(),
            rules_installed: Gauge::default(),
            rule_repairs: Counter::default(),
            rules_managed: Gauge::default(),
            cgroup_identity: Gauge::default(),
            container_listening: Gauge::default(),
            host_interfaces_matched: Gauge::default(),
            grants: Family::default(),
            connections_refused: Family::default(),
            connections_open: Gauge::default(),
            index_stale: Gauge::default(),
            watch_streaming: Family::default(),
            watch_contact_age: Family::default(),
            watch_reconnects: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Metadata requests answered, by route and HTTP status",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a metadata request, by route",
            metrics.request_duration.clone(),
        );
        registry.register(
            "sts_calls",
            "AssumeRole calls, by result (success or STS error code)",
            metrics.sts_calls.clone(),
        );
        registry.register(
            "sts_call_duration_seconds",
            "Time an AssumeRole call took",
            metrics.sts_duration.clone(),
        );
        registry.register(
            "credential_cache_lookups",
            "Credential requests answered from the cache (hit) or needing STS (miss)",
            metrics.cache_lookups.clone(),
        );
        registry.register(
            "credential_prefetches",
            "Credentials fetched before a pod asked, by result",
            metrics.prefetches.clone(),
        );
        registry.register(
            "credential_refreshes",
            "Background refreshes of cached credentials, by result",
            metrics.refreshes.clone(),
        );
        registry.register(
            "denied_requests",
            "Requests refused, by reason",
            metrics.denied.clone(),
        );
        registry.register(
            "pods_indexed",
            "Pods in the IP index",
            metrics.pods_indexed.clone(),
        );
        registry.register(
            "cached_credentials",
            "Credential sets in the cache",
            metrics.cached_credentials.clone(),
        );
        registry.register(
            "sts_calls_waiting",
            "AssumeRole calls waiting for the node's STS budget (--sts-max-in-flight, --sts-calls-per-second), for a pod's request or in the background",
            metrics.sts_waiting.clone(),
        );
        registry.register(
            "watch_restarts",
            "Kubernetes watch errors that restarted the watch, by kind",
            metrics.watch_restarts.clone(),
        );
        registry.register(
            "watch_relists",
            "Completed (re)lists of a watch, by kind",
            metrics.relists.clone(),
        );
        registry.register(
            "rules_installed",
            "1 while iamlet's nftables tables are in place as this agent wrote them (checked on every ruleset change and every 5 s)",
            metrics.rules_installed.clone(),
        );
        registry.register(
            "rules_managed",
            "1 when this agent manages the rules (--iptables), 0 when something else sends pods' traffic to it",
            metrics.rules_managed.clone(),
        );
        registry.register(
            "cgroup_identity",
            "1 when --cgroup-root lets the agent name pods by their cgroups (hostNetwork pods served, pods' addresses checked against the node), 0 when it works from addresses alone",
            metrics.cgroup_identity.clone(),
        );
        registry.register(
            "container_credentials_listening",
            "Addresses the container credentials endpoint (GET /v1/credentials) is listening on; below the number configured while an address is missing or taken",
            metrics.container_listening.clone(),
        );
        registry.register(
            "rule_repairs",
            "Times iamlet's nftables tables were found flushed, deleted or altered and written again",
            metrics.rule_repairs.clone(),
        );
        registry.register(
            "host_interfaces_matched",
            "Interfaces on the node that --host-interface matches now",
            metrics.host_interfaces_matched.clone(),
        );
        registry.register(
            "credential_grants",
            "Credentials served to pods: logged (a new grant, in the decision log) or repeat (the same pod and credentials again, counted only)",
            metrics.grants.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at accept, by reason (per-source-limit, total-limit, rate-limited)",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open to the agent's listeners",
            metrics.connections_open.clone(),
        );
        registry.register(
            "index_stale",
            "1 while a watch has been broken longer than --max-index-staleness and index answers are refused",
            metrics.index_stale.clone(),
        );
        registry.register(
            "watch_streaming",
            "1 while the watch has an open stream, by kind",
            metrics.watch_streaming.clone(),
        );
        registry.register(
            "watch_contact_age_seconds",
            "Seconds since the last list, event, bookmark or stream opening, by kind",
            metrics.watch_contact_age.clone(),
        );
        registry.register(
            "watch_reconnects",
            "Watch streams opened again after a break, by kind",
            metrics.watch_reconnects.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build.get_or_create(&BuildLabels { version, commit }).set(1);
        registry.register(
            "build_info",
            "Version and commit of the running agent",
            build,
        );
        metrics.start_at_zero();
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }

    pub fn sts_call(&self, code: &str, elapsed: Duration) {
        self.sts_calls
            .get_or_create(&StsLabels {
                code: code.to_string(),
            })
            .inc();
        self.sts_duration.observe(elapsed.as_secs_f64());
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Mirrors the index's health into its gauges (at scrape time).
    pub fn index_health(&self, health: &IndexHealth) {
        self.index_stale.set(i64::from(health.stale));
        for watch in &health.watches {
            let labels = KindLabels { kind: watch.kind };
            self.watch_streaming
                .get_or_create(&labels)
                .set(i64::from(watch.streaming));
            self.watch_contact_age
                .get_or_create(&labels)
                .set(watch.seconds_since_contact.unwrap_or(-1.0));
            self.watch_reconnects
                .get_or_create(&labels)
                .set(i64::try_from(watch.reconnects).unwrap_or(i64::MAX));
        }
    }

    /// Creates the series whose label values are known in advance at zero,
    /// so that they exist before their first event: an alert on
    /// `rate(...{result="error"})` then sees the first error, and a scrape
    /// shows every series the shipped alerts use.
    fn start_at_zero(&self) {
        for reason in ["per-source-limit", "total-limit", "rate-limited"] {
            drop(
                self.connections_refused
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
        for family in [&self.refreshes, &self.prefetches] {
            for result in ["success", "error"] {
                drop(family.get_or_create(&ResultLabels { result }));
            }
        }
        for result in ["hit", "miss"] {
            drop(self.cache_lookups.get_or_create(&ResultLabels { result }));
        }
        for result in ["logged", "repeat"] {
            drop(self.grants.get_or_create(&ResultLabels { result }));
        }
        drop(
            self.watch_restarts
                .get_or_create(&KindLabels { kind: "pods" }),
        );
        drop(self.sts_calls.get_or_create(&StsLabels {
            code: "success".into(),
        }));
    }

    pub fn deny(&self, reason: &'static str) {
        self.denied.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn count(family: &Family<ResultLabels, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabels { result }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("could not encode metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix_and_build_info_is_set() {
        let metrics = Metrics::new("1.2.3", "abc");
        metrics.request("credentials", 200, Duration::from_micros(300));
        metrics.sts_call("AccessDenied", Duration::from_millis(20));
        metrics.deny("no-role");
        let text = metrics.encode();
        assert!(
            text.contains(r#"iamlet_build_info{version="1.2.3",commit="abc"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"iamlet_requests_total{route="credentials",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"iamlet_sts_calls_total{code="AccessDenied"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"iamlet_denied_requests_total{reason="no-role"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("iamlet_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
