//! `iamlet explain`: why a pod gets the role it gets, or none, in the
//! agent's own words.
//!
//! The agent answers `/explain` for callers on the node that are no pod
//! (as `/debug/store`): which pod a name or address is, where its role
//! comes from (its annotation, its ServiceAccount's, the default role),
//! what its namespace's allow-list says and which entry said it, the
//! decision itself (the very [`Entitlements`] call the metadata path
//! makes), and the state of its cached credentials: times and the last
//! error, never a key, secret or token. A role and a namespace alone ask
//! whether an annotation would be allowed before anyone writes it.
//! [`client`] is the subcommand that asks the agent and prints the answer.

pub mod client;

use std::net::IpAddr;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::credentials::CredentialCache;
use crate::entitlement::{Entitlements, Grant, Refusal};
use crate::imds::responses::imds_time;
use crate::pods::{PodKey, PodView};
use crate::roles::RoleSource;

/// What is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Pod(PodKey),
    Address(IpAddr),
    /// Would `role` (a name or ARN, as an annotation would carry it) be
    /// allowed in `namespace`?
    Policy {
        role: String,
        namespace: String,
    },
}

impl Query {
    /// A pod's `namespace/name` or an address.
    pub fn target(text: &str) -> Result<Query, String> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Query::Address(ip));
        }
        match text.split_once('/') {
            Some((namespace, name))
                if is_name(namespace) && is_name(name) && !name.contains('/') =>
            {
                Ok(Query::Pod(PodKey {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                }))
            }
            _ => Err(format!(
                "{text:?} is neither NAMESPACE/POD nor an IP address"
            )),
        }
    }

    /// The `/explain` query string.
    pub fn to_query_string(&self) -> String {
        match self {
            Query::Pod(key) => format!("pod={}", encode(&key.to_string())),
            Query::Address(ip) => format!("address={}", encode(&ip.to_string())),
            Query::Policy { role, namespace } => {
                format!("role={}&namespace={}", encode(role), encode(namespace))
            }
        }
    }

    /// Reads an `/explain` query string.
    pub fn from_query_string(query: &str) -> Result<Query, String> {
        let mut pod = None;
        let mut address = None;
        let mut role = None;
        let mut namespace = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value).ok_or_else(|| format!("{name}: bad percent-encoding"))?;
            let slot = match name {
                "pod" => &mut pod,
                "address" => &mut address,
                "role" => &mut role,
                "namespace" => &mut namespace,
                other => return Err(format!("unknown parameter {other:?}")),
            };
            if slot.replace(value).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        match (pod, address, role, namespace) {
            (Some(pod), None, None, None) => match Query::target(&pod)? {
                query @ Query::Pod(_) => Ok(query),
                _ => Err(format!("pod {pod:?} is not NAMESPACE/NAME")),
            },
            (None, Some(address), None, None) => address
                .trim()
                .parse()
                .map(Query::Address)
                .map_err(|_| format!("address {address:?} is not an IP address")),
            (None, None, Some(role), Some(namespace)) if is_name(&namespace) => {
                Ok(Query::Policy { role, namespace })
            }
            (None, None, Some(_), Some(namespace)) => {
                Err(format!("namespace {namespace:?} is not a namespace name"))
            }
            _ => Err(
                "ask for one of: pod=NAMESPACE/NAME, address=IP, role=ROLE&namespace=NAMESPACE"
                    .into(),
            ),
        }
    }
}

/// A DNS label or subdomain, as namespace and pod names are.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes.get(at + 1..at + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                at += 3;
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            other => {
                out.push(other);
                at += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The answer to `query`, as JSON.
pub async fn explain(
    query: &Query,
    entitlements: &Entitlements,
    cache: &CredentialCache,
    now: SystemTime,
) -> Value {
    let store = entitlements.store();
    match query {
        Query::Policy { role, namespace } => policy(entitlements, role, namespace),
        Query::Pod(key) => {
            let found = store.lookup_pod(key);
            // A pod with an address of its own is decided by it, as its
            // requests are (two pods claiming it is a refusal).
            let decision = match &found {
                Ok(view) => match view.pod.ips.first() {
                    Some(ip) if !view.pod.host_network => entitlements.decide(*ip),
                    _ => entitlements.decide_view(view.clone()),
                },
                Err(error) => Err(Refusal::Lookup(error.clone())),
            };
            answer(query, found.ok(), decision, entitlements, cache, now).await
        }
        Query::Address(ip) => {
            let found = store.lookup(crate::entitlement::canonical(*ip)).ok();
            let decision = entitlements.decide(*ip);
            answer(query, found, decision, entitlements, cache, now).await
        }
    }
}

fn query_json(query: &Query) -> Value {
    match query {
        Query::Pod(key) => json!({"pod": key.to_string()}),
        Query::Address(ip) => json!({"address": ip.to_string()}),
        Query::Policy { role, namespace } => json!({"role": role, "namespace": namespace}),
    }
}

async fn answer(
    query: &Query,
    view: Option<PodView>,
    decision: Result<Grant, Refusal>,
    entitlements: &Entitlements,
    cache: &CredentialCache,
    now: SystemTime,
) -> Value {
    let mut out = json!({"query": query_json(query)});
    if let Some(view) = &view {
        let pod = &view.pod;
        out["pod"] = json!({
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
            "ips": pod.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "phase": pod.phase,
            "hostNetwork": pod.host_network,
            "serviceAccount": pod.service_account,
        });
        out["role"] = role(view, entitlements);
    }
    out["decision"] = match &decision {
        Ok(grant) => json!({
            "granted": true,
            "role": grant.target.role.to_string(),
            "source": grant.target.source.label(),
            "externalId": grant.target.external_id.is_some(),
            "sessionName": grant.key.session_name,
        }),
        Err(refusal) => json!({
            "granted": false,
            "reason": refusal.label(),
            "message": refusal.to_string(),
        }),
    };
    if let Ok(grant) = &decision {
        out["credentials"] = credentials(cache, grant, now).await;
    }
    out
}

/// Where the pod's role comes from, and the allow-list's verdict on it.
fn role(view: &PodView, entitlements: &Entitlements) -> Value {
    let resolver = entitlements.resolver();
    let keys = entitlements.store().annotation_keys();
    let origin = match resolver.origin(&view.pod, view.service_account.as_deref()) {
        Ok(origin) => origin,
        Err(error) => {
            return json!({"source": "unknown", "error": error.to_string()});
        }
    };
    let (source, written_in) = match origin.source {
        Some(RoleSource::Annotation) => {
            ("annotation", Some(format!("pod annotation {}", keys.role)))
        }
        Some(RoleSource::ServiceAccount) => (
            "service-account",
            Some(format!(
                "annotation {} of ServiceAccount {}/{}",
                keys.service_account_role, view.pod.namespace, view.pod.service_account
            )),
        ),
        Some(RoleSource::Default) => ("default-role", Some("--default-role".to_string())),
        None => ("none", None),
    };
    let mut out = json!({"source": source, "from": written_in, "value": origin.value});
    match origin.role {
        Some(Ok(arn)) => {
            out["arn"] = json!(arn.to_string());
            out["namespacePolicy"] = json!(resolver.verdict(&arn, view.policy.as_deref()));
        }
        Some(Err(error)) => out["error"] = json!(error.to_string()),
        None => {}
    }
    out
}

/// `--role` and `--namespace`: the verdict an annotation would get.
fn policy(entitlements: &Entitlements, role: &str, namespace: &str) -> Value {
    let resolver = entitlements.resolver();
    let query = json!({"role": role, "namespace": namespace});
    let arn = match resolver.role_arn(role) {
        Ok(arn) => arn,
        Err(error) => {
            return json!({"query": query, "allowed": false, "error": error.to_string()});
        }
    };
    let policy = entitlements.store().namespace_policy(namespace);
    let verdict = resolver.verdict(&arn, policy.as_deref());
    let allowed = matches!(
        verdict,
        crate::roles::PolicyVerdict::Unrestricted | crate::roles::PolicyVerdict::Allowed { .. }
    );
    json!({"query": query, "arn": arn.to_string(), "allowed": allowed, "namespacePolicy": verdict})
}

async fn credentials(cache: &CredentialCache, grant: &Grant, now: SystemTime) -> Value {
    let state = cache.state(&grant.key).await;
    let mut out = json!({"cached": state.cached.is_some()});
    if let Some((expiration, fetched)) = state.cached {
        out["expiration"] = json!(imds_time(expiration));
        out["remainingSeconds"] = json!(
            expiration
                .duration_since(now)
                .map_or(0, |left| left.as_secs())
        );
        out["lastRefresh"] = json!(imds_time(fetched));
    }
    if let Some((error, at)) = state.last_error {
        out["lastError"] = json!({
            "code": error.code,
            "message": crate::entitlement::clip(&error.message),
            "at": imds_time(at),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_survive_the_query_string() {
        for query in [
            Query::Pod(PodKey {
                namespace: "team-a".into(),
                name: "web-1".into(),
            }),
            Query::Address("fd00::5".parse().unwrap()),
            Query::Policy {
                role: "arn:aws:iam::123456789012:role/app role&x=1".into(),
                namespace: "team-a".into(),
            },
        ] {
            assert_eq!(
                Query::from_query_string(&query.to_query_string()).unwrap(),
                query
            );
        }
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        for (query, words) in [
            ("", "ask for one of"),
            ("pod=a/b&pod=c/d", "given twice"),
            ("pod=a", "neither"),
            ("pod=a/b/c", "neither"),
            ("address=10.0.0.300", "not an IP address"),
            ("role=x&namespace=Bad_NS", "not a namespace name"),
            ("role=x", "ask for one of"),
            ("pod=a/b&address=10.0.0.1", "ask for one of"),
            ("secret=1", "unknown parameter"),
            ("pod=a%2", "bad percent-encoding"),
        ] {
            let error = Query::from_query_string(query).unwrap_err();
            assert!(error.contains(words), "{query}: {error}");
        }
    }
}
