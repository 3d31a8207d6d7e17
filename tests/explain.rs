//! `iamlet explain` and `/explain`: the real binary asks a real agent
//! (against the test API server and moto) why pods get their roles, for
//! each role source and each allow-list verdict, and never shows a secret
//! or answers a pod.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::process::{Command, Output};

use iamlet_testkit::{pod, pod_with_service_account};
use serde_json::{Value, json};
use support::moto::StsFault;
use support::{Agent, NODE, Node, role_arn};

/// Runs `iamlet explain <args>` against `agent`.
fn explain(agent: &Agent, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .arg("explain")
        .args(args)
        .arg(format!("--agent=http://{}", agent.addr))
        .env_clear()
        .output()
        .unwrap()
}

/// The JSON answer, and the exit code.
fn explain_json(agent: &Agent, args: &[&str]) -> (Value, i32) {
    let mut all = args.to_vec();
    all.push("--json");
    let out = explain(agent, &all);
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (answer, out.status.code().unwrap())
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces with allow-lists, a ServiceAccount with a role, and a pod
/// for each role source and verdict.
async fn cluster() -> (Node, Agent) {
    let node = Node::start().await;
    let allowed = |entries: Value| json!({"iam.amazonaws.com/allowed-roles": entries.to_string()});
    node.api
        .create_namespace("team", allowed(json!(["app-*", "sa-role"])));
    node.api
        .create_namespace("open", allowed(json!(["default-role"])));
    node.api.create_namespace(
        "broken",
        json!({"iam.amazonaws.com/allowed-roles": "app-*"}),
    );
    node.api.create_service_account(
        "team",
        "builder",
        json!({"eks.amazonaws.com/role-arn": role_arn("sa-role")}),
    );
    node.add_pod("team", "annotated", "127.0.0.20", Some("app-web"));
    node.add_pod("team", "denied", "127.0.0.21", Some("admin"));
    node.api.put_pod(pod_with_service_account(
        "team",
        "sa-pod",
        NODE,
        "127.0.0.22",
        "builder",
        json!({}),
    ));
    node.api
        .put_pod(pod("open", "plain", NODE, "127.0.0.23", json!({})));
    node.add_pod("broken", "any", "127.0.0.24", Some("app-web"));
    let agent = node
        .agent(&[
            "--namespace-restrictions",
            "--service-account-roles",
            "--default-role=default-role",
        ])
        .await;
    (node, agent)
}

#[tokio::test]
async fn each_role_source_and_verdict_is_explained() {
    let (_node, agent) = cluster().await;

    let (annotated, code) = explain_json(&agent, &["team/annotated"]);
    assert_eq!(code, 0, "{annotated}");
    assert_eq!(annotated["pod"]["ips"], json!(["127.0.0.20"]));
    assert_eq!(annotated["role"]["source"], "annotation");
    assert_eq!(
        annotated["role"]["from"],
        "pod annotation iam.amazonaws.com/role"
    );
    assert_eq!(annotated["role"]["value"], "app-web");
    assert_eq!(annotated["role"]["arn"], role_arn("app-web"));
    assert_eq!(
        annotated["role"]["namespacePolicy"],
        json!({"verdict": "allowed", "entry": "app-*"})
    );
    assert_eq!(annotated["decision"]["granted"], true);
    assert_eq!(annotated["decision"]["role"], role_arn("app-web"));

    let (denied, code) = explain_json(&agent, &["team/denied"]);
    assert_eq!(code, 1, "{denied}");
    assert_eq!(
        denied["role"]["namespacePolicy"],
        json!({"verdict": "not-allowed", "entries": ["app-*", "sa-role"]})
    );
    assert_eq!(denied["decision"]["granted"], false);
    assert_eq!(denied["decision"]["reason"], "namespace-restriction");

    let (account, code) = explain_json(&agent, &["team/sa-pod"]);
    assert_eq!(code, 0, "{account}");
    assert_eq!(account["role"]["source"], "service-account");
    assert_eq!(
        account["role"]["from"],
        "annotation eks.amazonaws.com/role-arn of ServiceAccount team/builder"
    );
    assert_eq!(
        account["role"]["namespacePolicy"],
        json!({"verdict": "allowed", "entry": "sa-role"})
    );

    let (default, code) = explain_json(&agent, &["open/plain"]);
    assert_eq!(code, 0, "{default}");
    assert_eq!(default["role"]["source"], "default-role");
    assert_eq!(default["role"]["from"], "--default-role");
    assert_eq!(default["decision"]["source"], "default-role");

    let (broken, code) = explain_json(&agent, &["broken/any"]);
    assert_eq!(code, 1, "{broken}");
    assert_eq!(
        broken["role"]["namespacePolicy"]["verdict"],
        "invalid-policy"
    );
    assert_eq!(broken["decision"]["reason"], "invalid-namespace-policy");

    // By address: the same pod, the same words.
    let (by_address, code) = explain_json(&agent, &["127.0.0.21"]);
    assert_eq!(code, 1);
    assert_eq!(by_address["pod"]["name"], "denied");
    assert_eq!(by_address["role"], denied["role"]);

    // An IPv4 address as a dual-stack socket would see it: the same pod.
    let (mapped, _) = explain_json(&agent, &["::ffff:127.0.0.21"]);
    assert_eq!(mapped["pod"]["name"], "denied", "{mapped}");

    let (ghost, code) = explain_json(&agent, &["team/ghost"]);
    assert_eq!(code, 1);
    assert!(ghost.get("pod").is_none(), "{ghost}");
    assert_eq!(ghost["decision"]["reason"], "unknown-pod");

    // What people read.
    let shown = text(&explain(&agent, &["team/annotated"]));
    assert!(
        shown.contains(
            "role source:  annotation, from pod annotation iam.amazonaws.com/role: \"app-web\""
        ),
        "{shown}"
    );
    assert!(
        shown.contains("allowed by entry \"app-*\" of namespace team"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("decision:     granted {}", role_arn("app-web"))),
        "{shown}"
    );
    let shown = text(&explain(&agent, &["team/denied"]));
    assert!(
        shown.contains("not allowed: no entry of namespace team matches"),
        "{shown}"
    );
    assert!(shown.contains("refused (namespace-restriction)"), "{shown}");
}

#[tokio::test]
async fn a_policy_is_checked_before_anyone_annotates() {
    let (_node, agent) = cluster().await;
    let (allowed, code) = explain_json(&agent, &["--role=app-api", "--namespace=team"]);
    assert_eq!(code, 0, "{allowed}");
    assert_eq!(allowed["arn"], role_arn("app-api"));
    assert_eq!(
        allowed["namespacePolicy"],
        json!({"verdict": "allowed", "entry": "app-*"})
    );
    let shown = text(&explain(
        &agent,
        &["--role", "app-api", "--namespace", "team"],
    ));
    assert!(shown.contains("result:       allowed"), "{shown}");

    for (role, namespace, verdict) in [
        ("admin", "team", "not-allowed"),
        // The same name in another account is another role: relative
        // entries admit roles under the base ARN only.
        (
            "arn:aws:iam::999999999999:role/app-web",
            "team",
            "not-allowed",
        ),
        ("app-web", "nowhere", "unknown-namespace"),
        ("app-web", "broken", "invalid-policy"),
    ] {
        let (answer, code) = explain_json(
            &agent,
            &[
                &format!("--role={role}"),
                &format!("--namespace={namespace}"),
            ],
        );
        assert_eq!(code, 1, "{role} in {namespace}: {answer}");
        assert_eq!(answer["allowed"], false);
        assert_eq!(answer["namespacePolicy"]["verdict"], verdict, "{answer}");
    }
    let (invalid, code) = explain_json(&agent, &["--role=arn:aws:s3:::bucket", "--namespace=team"]);
    assert_eq!(code, 1);
    assert!(
        invalid["error"]
            .as_str()
            .unwrap()
            .contains("invalid role ARN"),
        "{invalid}"
    );
}

#[tokio::test]
async fn credentials_state_is_shown_without_a_secret() {
    let (node, agent) = cluster().await;
    let reply = agent
        .get(
            "127.0.0.20",
            "/latest/meta-data/iam/security-credentials/app-web",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let issued = reply.json();
    let (answer, _) = explain_json(&agent, &["team/annotated"]);
    let credentials = &answer["credentials"];
    assert_eq!(credentials["cached"], true, "{answer}");
    assert_eq!(credentials["expiration"], issued["Expiration"]);
    assert_eq!(credentials["lastRefresh"], issued["LastUpdated"]);
    assert!(credentials["remainingSeconds"].as_u64().unwrap() > 600);
    let everything = format!("{answer}{}", text(&explain(&agent, &["team/annotated"])));
    for secret in ["AccessKeyId", "SecretAccessKey", "Token"] {
        let value = issued[secret].as_str().unwrap();
        assert!(!everything.contains(value), "{secret} shown: {everything}");
    }

    // STS refuses the role: the last error is shown, code and time.
    node.moto.set_fault(StsFault::AccessDenied);
    node.add_pod("team", "refused", "127.0.0.25", Some("app-other"));
    support::eventually(
        "the pod to be indexed",
        std::time::Duration::from_secs(5),
        || async {
            let (a, _) = explain_json(&agent, &["team/refused"]);
            a.get("pod").is_some().then_some(())
        },
    )
    .await;
    let reply = agent
        .get(
            "127.0.0.25",
            "/latest/meta-data/iam/security-credentials/app-other",
        )
        .await;
    assert_ne!(reply.status, 200);
    let (refused, code) = explain_json(&agent, &["team/refused"]);
    assert_eq!(code, 0, "entitled, though STS refuses: {refused}");
    assert_eq!(refused["credentials"]["cached"], false);
    assert_eq!(
        refused["credentials"]["lastError"]["code"], "AccessDenied",
        "{refused}"
    );
    let shown = text(&explain(&agent, &["team/refused"]));
    assert!(shown.contains("last error:   AccessDenied at "), "{shown}");
}

#[tokio::test]
async fn pods_are_never_answered() {
    let (_node, agent) = cluster().await;
    let path = "/explain?pod=team/denied";
    assert_eq!(agent.get("127.0.0.1", path).await.status, 200);
    for pod in ["127.0.0.20", "127.0.0.99"] {
        let reply = agent.get(pod, path).await;
        assert_eq!(reply.status, 404, "{pod}: {}", reply.body);
        assert!(!reply.body.contains("denied"), "{}", reply.body);
    }
    // A question that does not parse is a 400 saying why.
    let reply = agent.get("127.0.0.1", "/explain?pod=team").await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("neither NAMESPACE/POD"),
        "{}",
        reply.body
    );
}

#[test]
fn bad_questions_and_an_absent_agent_get_clear_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_iamlet"))
            .arg("explain")
            .args(args)
            .env_clear()
            .output()
            .unwrap()
    };
    let none = run(&[]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("give a pod"));
    let bad = run(&["not a pod"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("neither NAMESPACE/POD nor an IP address")
    );
    let port = support::free_port();
    let absent = run(&["team/a", &format!("--agent=http://127.0.0.1:{port}")]);
    assert_eq!(absent.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&absent.stderr).contains("cannot reach the agent"));
}
