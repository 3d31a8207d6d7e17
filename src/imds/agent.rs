//! The agent's own routes: liveness, readiness, metrics, `/debug/store`
//! and `/explain`. None of them is reachable through the DNAT, and none but
//! `/debug/store` (node-local callers only, with `--debug`) and `/explain`
//! (node-local callers only) names a pod, role or address.

use std::collections::BTreeMap;

use http::{Response, StatusCode};
use serde_json::json;

use super::handler::MetadataService;
use super::responses::{self, Body};

impl MetadataService {
    /// Liveness: the process answers. Depends on nothing outside it.
    pub(super) fn healthz(&self) -> Response<Body> {
        responses::json(StatusCode::OK, &json!({"status": "ok"}))
    }

    /// Readiness: the index is listed and not stale. The body carries the
    /// watches' health either way, and where the startup taint's removal is.
    pub(super) fn readyz(&self) -> Response<Body> {
        let store = self.entitlements.store();
        let health = store.health();
        let (status, text) = match (health.ready, health.stale) {
            (false, _) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting for the initial pod list",
            ),
            (true, true) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "stale: the pod watch is broken; waiting for a relist",
            ),
            (true, false) => (StatusCode::OK, "ready"),
        };
        let mut body = json!({"status": text, "pods": store.pod_count(), "index": health});
        if let Some(phase) = &self.startup {
            body["startupTaint"] = json!(phase.borrow().label());
        }
        responses::json(status, &body)
    }

    pub(super) async fn metrics_page(&self) -> Response<Body> {
        let store = self.entitlements.store();
        self.metrics.pods_indexed.set(store.pod_count() as i64);
        self.metrics.index_health(&store.health());
        self.metrics
            .connections_open
            .set(self.connections.open() as i64);
        self.metrics
            .cached_credentials
            .set(self.cache.entry_count().await as i64);
        let (pods, background) = self.cache.sts_waiting();
        for (label, count) in [("pod", pods), ("background", background)] {
            self.metrics
                .sts_waiting
                .get_or_create(&crate::telemetry::metrics::ForLabels { r#for: label })
                .set(count as i64);
        }
        responses::with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            self.metrics.encode().into(),
        )
    }

    /// kube2iam's `/debug/store` shape: every address with its pod's
    /// namespace and the role [`crate::entitlement::Entitlements::decide`]
    /// gives it now.
    pub(super) async fn debug_store(&self) -> Response<Body> {
        let mut namespace_by_ip = BTreeMap::new();
        let mut roles_by_ip = BTreeMap::new();
        for (ip, decision) in self.entitlements.decide_all() {
            let (namespace, role) = match decision {
                Ok(grant) => (
                    Some(grant.pod.namespace.clone()),
                    grant.target.role.to_string(),
                ),
                Err(refusal) => (
                    refusal.pod().map(|pod| pod.namespace.clone()),
                    format!("denied ({}): {refusal}", refusal.label()),
                ),
            };
            if let Some(namespace) = namespace {
                namespace_by_ip.insert(ip.to_string(), namespace);
            }
            roles_by_ip.insert(ip.to_string(), role);
        }
        let roles_by_namespace: BTreeMap<_, _> = self
            .entitlements
            .store()
            .namespace_policies()
            .into_iter()
            .map(|(name, policy)| (name, policy.describe()))
            .collect();
        responses::json(
            StatusCode::OK,
            &json!({
                "namespaceByIP": namespace_by_ip,
                "rolesByIP": roles_by_ip,
                "rolesByNamespace": roles_by_namespace,
                "cachedCredentials": self.cache.entry_count().await,
            }),
        )
    }
}

impl MetadataService {
    /// `iamlet explain`'s answer (see [`crate::explain`]); a question that
    /// does not parse is a 400 saying why.
    pub(super) async fn explain(&self, query: &str) -> Response<Body> {
        match crate::explain::Query::from_query_string(query) {
            Ok(query) => responses::json(
                StatusCode::OK,
                &crate::explain::explain(&query, &self.entitlements, &self.cache, self.clock.now())
                    .await,
            ),
            Err(why) => responses::json(StatusCode::BAD_REQUEST, &json!({"error": why})),
        }
    }
}
