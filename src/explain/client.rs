//! The `iamlet explain` subcommand: asks the agent on this node (run it
//! with `kubectl exec` in the agent's pod, or on the node) and prints its
//! answer for people, or as JSON.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use thiserror::Error;

use super::Query;

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum ExplainError {
    #[error("invalid agent URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("cannot reach the agent at {url}: {why}")]
    Unreachable { url: String, why: String },
    #[error("the agent at {url} answered {status}: {body}")]
    Refused {
        url: String,
        status: u16,
        body: String,
    },
}

/// What the answer means for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Granted (a pod) or allowed (a policy check).
    Entitled,
    Refused,
}

/// Asks the agent at `agent` (`http://HOST:PORT`) about `query`.
pub async fn ask(agent: &str, query: &Query) -> Result<Value, ExplainError> {
    let url = format!(
        "{}/explain?{}",
        agent.trim_end_matches('/'),
        query.to_query_string()
    );
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ExplainError::Url {
            url: url.clone(),
            why: e.to_string(),
        })?;
    if uri.scheme_str() != Some("http") {
        return Err(ExplainError::Url {
            url,
            why: "the agent speaks plain http on the node".into(),
        });
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let unreachable = |why: String| ExplainError::Unreachable {
        url: url.clone(),
        why,
    };
    let response = tokio::time::timeout(TIMEOUT, client.get(uri))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
        .await
        .map_err(|_| unreachable("the answer did not finish".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(ExplainError::Refused {
            url,
            status: status.as_u16(),
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|e| unreachable(format!("not a JSON answer: {e}")))
}

/// Where the agent this command runs beside listens, read from its own
/// command line (`/proc/1/cmdline`: `kubectl exec` runs this in the
/// agent's container, where the agent is process 1), so an agent on
/// another port (the side-by-side cut-over's 8182) is found without
/// `--agent`. `None` when process 1 is not an iamlet agent.
pub fn running_agent() -> Option<String> {
    agent_from_cmdline(&std::fs::read("/proc/1/cmdline").ok()?)
}

fn agent_from_cmdline(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.first()?.ends_with("iamlet") {
        return None;
    }
    let config = crate::config::Config::parse(&args, |name| std::env::var(name).ok()).ok()?;
    let port = config.metrics_port.unwrap_or(config.listen.port());
    Some(format!(
        "http://{}",
        std::net::SocketAddr::new(config.listen.ip(), port)
    ))
}

/// Whether the answer grants (or allows) the role.
pub fn outcome(answer: &Value) -> Outcome {
    let entitled = answer["decision"]["granted"].as_bool() == Some(true)
        || answer["allowed"].as_bool() == Some(true);
    if entitled {
        Outcome::Entitled
    } else {
        Outcome::Refused
    }
}

/// The answer as lines for people.
pub fn render(answer: &Value) -> String {
    let mut out = Vec::new();
    let text = |value: &Value| value.as_str().unwrap_or("").to_string();
    if let Some(pod) = answer.get("pod") {
        let ips: Vec<String> = pod["ips"]
            .as_array()
            .map(|ips| ips.iter().map(text).collect())
            .unwrap_or_default();
        let network = if pod["hostNetwork"].as_bool() == Some(true) {
            "hostNetwork".to_string()
        } else if ips.is_empty() {
            "no address yet".to_string()
        } else {
            ips.join(", ")
        };
        out.push(format!(
            "pod:          {}/{} (uid {}, {}, {}, serviceaccount {})",
            text(&pod["namespace"]),
            text(&pod["name"]),
            text(&pod["uid"]),
            network,
            text(&pod["phase"]),
            text(&pod["serviceAccount"]),
        ));
    } else if answer["query"].get("role").is_none() {
        out.push("pod:          none on this node matches".to_string());
    }
    if let Some(role) = answer.get("role") {
        out.push(render_role(role));
        if let Some(verdict) = role.get("namespacePolicy") {
            out.push(render_verdict(verdict, &text(&answer["pod"]["namespace"])));
        }
    }
    if answer["query"].get("role").is_some() {
        let namespace = text(&answer["query"]["namespace"]);
        match answer.get("arn") {
            Some(arn) => out.push(format!("role:         {}", text(arn))),
            None => out.push(format!("role:         {}", text(&answer["error"]))),
        }
        if let Some(verdict) = answer.get("namespacePolicy") {
            out.push(render_verdict(verdict, &namespace));
        }
        out.push(format!(
            "result:       {}",
            if answer["allowed"].as_bool() == Some(true) {
                "allowed: pods in this namespace may be annotated with this role"
            } else {
                "not allowed: a pod annotated with this role would be refused"
            }
        ));
    }
    if let Some(decision) = answer.get("decision") {
        if decision["granted"].as_bool() == Some(true) {
            out.push(format!("decision:     granted {}", text(&decision["role"])));
        } else {
            out.push(format!(
                "decision:     refused ({}): {}",
                text(&decision["reason"]),
                text(&decision["message"])
            ));
        }
    }
    if let Some(credentials) = answer.get("credentials") {
        out.push(render_credentials(credentials));
    }
    out.join("\n")
}

fn render_role(role: &Value) -> String {
    let text = |key: &str| role[key].as_str().unwrap_or("").to_string();
    let mut line = match text("source").as_str() {
        "none" => "role source:  none (no role annotation and no --default-role)".to_string(),
        "unknown" => format!("role source:  unknown: {}", text("error")),
        source => format!(
            "role source:  {source}, from {}: {:?}",
            text("from"),
            text("value")
        ),
    };
    if let Some(arn) = role["arn"].as_str() {
        line.push_str(&format!("\nrole:         {arn}"));
    }
    if let Some(error) = role["error"].as_str()
        && role.get("arn").is_none()
        && role["source"] != "unknown"
    {
        line.push_str(&format!("\nrole:         invalid: {error}"));
    }
    line
}

fn render_verdict(verdict: &Value, namespace: &str) -> String {
    let text = |key: &str| verdict[key].as_str().unwrap_or("").to_string();
    match text("verdict").as_str() {
        "unrestricted" => {
            "allow-list:   not enforced (--namespace-restrictions is off)".to_string()
        }
        "allowed" => format!(
            "allow-list:   allowed by entry {:?} of namespace {namespace}",
            text("entry")
        ),
        "not-allowed" => format!(
            "allow-list:   not allowed: no entry of namespace {namespace} matches (entries: {})",
            verdict["entries"]
        ),
        "invalid-policy" => format!(
            "allow-list:   namespace {namespace}'s annotation is invalid, so it allows nothing: {}",
            text("why")
        ),
        "unknown-namespace" => {
            format!("allow-list:   namespace {namespace} is not known to the agent")
        }
        other => format!("allow-list:   {other}"),
    }
}

fn render_credentials(credentials: &Value) -> String {
    let text = |value: &Value| value.as_str().unwrap_or("").to_string();
    let mut line = if credentials["cached"].as_bool() == Some(true) {
        format!(
            "credentials:  cached, expire {} ({} s left), fetched {}",
            text(&credentials["expiration"]),
            credentials["remainingSeconds"],
            text(&credentials["lastRefresh"]),
        )
    } else {
        "credentials:  none cached (fetched on the pod's next request)".to_string()
    };
    if let Some(error) = credentials.get("lastError") {
        line.push_str(&format!(
            "\nlast error:   {} at {}: {}",
            text(&error["code"]),
            text(&error["at"]),
            text(&error["message"])
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_agents_address_comes_from_its_command_line() {
        // The side-by-side cut-over's ports (manifests/overlays/from-kube2iam).
        let cmdline = b"/usr/local/bin/iamlet\0--iptables=true\0--host-ip=10.0.0.5\0--app-port=8182\0--metrics-port=8182\0";
        assert_eq!(
            agent_from_cmdline(cmdline).as_deref(),
            Some("http://10.0.0.5:8182")
        );
        let metrics = b"iamlet\0--host-ip=10.0.0.5\0--app-port=8182\0--metrics-port=9100\0";
        assert_eq!(
            agent_from_cmdline(metrics).as_deref(),
            Some("http://10.0.0.5:9100")
        );
        assert_eq!(agent_from_cmdline(b"/sbin/init\0"), None);
        assert_eq!(agent_from_cmdline(b"iamlet\0--app-port=nope\0"), None);
    }
}
