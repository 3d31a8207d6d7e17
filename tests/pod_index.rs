//! How the agent maps source IPs to pods: IP reuse, hostNetwork pods, pods
//! it does not know yet, namespace restrictions, and a watch that survives
//! API server restarts and 410 Gone.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Agent, Kind, NODE, Node, pod};

const CREDS: &str = "/latest/meta-data/iam/security-credentials/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_the_initial_list_wait_instead_of_failing() {
    let node = Node::start().await;
    node.add_pod("default", "early", "127.0.1.40", Some("early-role"));
    // The API server is down when the agent starts: it answers, but is not ready.
    node.api.stop();
    let agent = Agent::start_unready(&node, &["--backoff-max-elapsed-time=300ms"]).await;
    assert_eq!(agent.get("127.0.0.1", "/healthz").await.status, 200);
    assert_eq!(agent.get("127.0.0.1", "/readyz").await.status, 503);
    let started = Instant::now();
    assert_eq!(agent.get("127.0.1.40", CREDS).await.status, 503);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the request waited for the index"
    );
    assert!(agent.logs().contains("index-not-ready"), "{}", agent.logs());
    drop(agent);

    // A request that arrives before the list is in is answered once it is.
    let agent = Agent::start_unready(&node, &["--backoff-max-elapsed-time=10s"]).await;
    let request = agent.get("127.0.1.40", CREDS);
    let list_later = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        node.api.restart().await.unwrap();
    };
    let (reply, ()) = tokio::join!(request, list_later);
    assert_eq!((reply.status, reply.body.as_str()), (200, "early-role"));
    assert_eq!(agent.get("127.0.0.1", "/readyz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_ip_belongs_to_the_new_pod() {
    let node = Node::start().await;
    node.add_pod("default", "job-1", "127.0.1.10", Some("role-one"));
    let agent = node.agent(&["--backoff-max-elapsed-time=500ms"]).await;
    assert_eq!(agent.get("127.0.1.10", CREDS).await.body, "role-one");

    // The first pod finishes; the CNI hands its IP to a new pod.
    node.api
        .patch(
            Kind::Pod,
            "default",
            "job-1",
            json!({"status": {"phase": "Succeeded"}}),
        )
        .unwrap();
    node.add_pod("default", "job-2", "127.0.1.10", Some("role-two"));
    support::eventually("the new pod's role", Duration::from_secs(5), || async {
        (agent.get("127.0.1.10", CREDS).await.body == "role-two").then_some(())
    })
    .await;
    assert_eq!(
        agent
            .get("127.0.1.10", &format!("{CREDS}role-one"))
            .await
            .status,
        403
    );

    // Deleted and recreated under another name: the same.
    node.api.delete(Kind::Pod, "default", "job-2").unwrap();
    node.add_pod("default", "job-3", "127.0.1.10", None);
    support::eventually(
        "no role for the third pod",
        Duration::from_secs(5),
        || async { (agent.get("127.0.1.10", CREDS).await.status == 404).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_pods_claiming_one_ip_get_nothing() {
    let node = Node::start().await;
    node.add_pod("default", "old", "127.0.1.11", Some("role-old"));
    node.add_pod("default", "new", "127.0.1.11", Some("role-new"));
    let agent = node.agent(&["--backoff-max-elapsed-time=300ms"]).await;
    for path in [
        CREDS.to_string(),
        format!("{CREDS}role-old"),
        format!("{CREDS}role-new"),
    ] {
        assert_eq!(agent.get("127.0.1.11", &path).await.status, 404, "{path}");
    }
    assert!(agent.logs().contains("ip-conflict"));
    // The old pod's deletion arrives: the answer becomes certain.
    node.api.delete(Kind::Pod, "default", "old").unwrap();
    support::eventually("the conflict to settle", Duration::from_secs(5), || async {
        (agent.get("127.0.1.11", CREDS).await.body == "role-new").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_pods_are_never_indexed() {
    let node = Node::start().await;
    let mut host_pod = pod(
        "kube-system",
        "node-exporter",
        NODE,
        "127.0.1.12",
        json!({"iam.amazonaws.com/role": "host-role"}),
    );
    host_pod["spec"]["hostNetwork"] = json!(true);
    node.api.put_pod(host_pod);
    let agent = node.agent(&["--backoff-max-elapsed-time=200ms"]).await;
    assert_eq!(agent.get("127.0.1.12", CREDS).await.status, 404);
    assert_eq!(
        agent
            .get("127.0.1.12", &format!("{CREDS}host-role"))
            .await
            .status,
        404
    );
    // Without cgroup identity the pod can still be known by its token (the
    // container credentials endpoint), so the warmer keeps its credentials
    // ready: they are still never served to the node's address.
    support::eventually(
        "the prefetch for the token path",
        Duration::from_secs(5),
        || async { (!node.moto.assume_role_calls().is_empty()).then_some(()) },
    )
    .await;
    assert_eq!(agent.get("127.0.1.12", CREDS).await.status, 404);
    assert_eq!(
        agent
            .get("127.0.1.12", &format!("{CREDS}host-role"))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_watch_reports_during_the_wait_is_answered() {
    let node = Node::start().await;
    let agent = node.agent(&[]).await;
    let started = Instant::now();
    let request = agent.get("127.0.1.13", CREDS);
    let add_later = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        node.add_pod("default", "late", "127.0.1.13", Some("late-role"));
    };
    let (reply, ()) = tokio::join!(request, add_later);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "late-role");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "woken by the event, not by polling"
    );

    // An IP nobody claims waits the configured time, then gets 404.
    let started = Instant::now();
    assert_eq!(agent.get("127.0.1.14", CREDS).await.status, 404);
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_restrictions_apply_to_annotated_and_default_roles() {
    let node = Node::start().await;
    node.api.create_namespace(
        "allowed",
        json!({"iam.amazonaws.com/allowed-roles": r#"["app-*"]"#}),
    );
    node.api.create_namespace(
        "broken",
        json!({"iam.amazonaws.com/allowed-roles": "app-*"}),
    );
    node.api.create_namespace("bare", json!({}));
    node.add_pod("allowed", "ok", "127.0.1.20", Some("app-reader"));
    node.add_pod("allowed", "greedy", "127.0.1.21", Some("admin"));
    node.add_pod("broken", "b", "127.0.1.22", Some("app-reader"));
    node.add_pod("bare", "c", "127.0.1.23", Some("app-reader"));
    node.add_pod("bare", "d", "127.0.1.24", None);
    let agent = node
        .agent(&[
            "--namespace-restrictions",
            "--default-role=app-default",
            "--backoff-max-elapsed-time=200ms",
        ])
        .await;

    assert_eq!(
        agent
            .get("127.0.1.20", &format!("{CREDS}app-reader"))
            .await
            .status,
        200
    );
    assert_eq!(
        agent
            .get("127.0.1.21", &format!("{CREDS}admin"))
            .await
            .status,
        404
    );
    assert_eq!(
        agent
            .get("127.0.1.22", &format!("{CREDS}app-reader"))
            .await
            .status,
        404
    );
    assert_eq!(
        agent
            .get("127.0.1.23", &format!("{CREDS}app-reader"))
            .await
            .status,
        404
    );
    // kube2iam let the default role skip the restrictions; iamlet does not.
    // Refusals are 404, as kube2iam answered: the pod has no role.
    assert_eq!(
        agent
            .get("127.0.1.24", &format!("{CREDS}app-default"))
            .await
            .status,
        404
    );
    assert!(agent.logs().contains("namespace-restriction"));

    // Allowing the role with kubectl takes effect at once.
    let out = node.kubectl(&[
        "annotate",
        "--overwrite",
        "namespace",
        "bare",
        r#"iam.amazonaws.com/allowed-roles=["app-*"]"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::eventually("the namespace change", Duration::from_secs(5), || async {
        (agent
            .get("127.0.1.23", &format!("{CREDS}app-reader"))
            .await
            .status
            == 200)
            .then_some(())
    })
    .await;
    assert_eq!(
        agent
            .get("127.0.1.24", &format!("{CREDS}app-default"))
            .await
            .status,
        200
    );
    assert!(
        agent.logs().contains(r#"role_source="default-role""#),
        "{}",
        agent.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regexp_restrictions_are_anchored() {
    let node = Node::start().await;
    node.api.create_namespace(
        "apps",
        json!({"iam.amazonaws.com/allowed-roles": r#"["app-[a-z]+"]"#}),
    );
    node.add_pod("apps", "good", "127.0.1.25", Some("app-reader"));
    node.add_pod("apps", "sneaky", "127.0.1.26", Some("evil-app-reader"));
    let agent = node
        .agent(&[
            "--namespace-restrictions=true",
            "--namespace-restriction-format=regexp",
        ])
        .await;
    assert_eq!(
        agent
            .get("127.0.1.25", &format!("{CREDS}app-reader"))
            .await
            .status,
        200
    );
    assert_eq!(
        agent
            .get("127.0.1.26", &format!("{CREDS}evil-app-reader"))
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_survives_an_api_server_outage_without_stale_pods() {
    let node = Node::start().await;
    node.add_pod("default", "stays", "127.0.1.30", Some("stay-role"));
    node.add_pod("default", "goes", "127.0.1.31", Some("go-role"));
    let agent = node.agent(&["--backoff-max-elapsed-time=300ms"]).await;
    assert_eq!(agent.get("127.0.1.31", CREDS).await.body, "go-role");

    node.api.stop();
    // While the API server is down, requests are served from the index.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        agent
            .get("127.0.1.30", &format!("{CREDS}stay-role"))
            .await
            .status,
        200
    );

    // A pod is deleted during the outage, and the history that would tell
    // the watch so is compacted away: only a relist can reveal it.
    node.api.delete(Kind::Pod, "default", "goes").unwrap();
    node.api.compact();
    node.api.restart().await.unwrap();

    support::eventually(
        "the relist to drop the deleted pod",
        Duration::from_secs(15),
        || async { (agent.get("127.0.1.31", CREDS).await.status == 404).then_some(()) },
    )
    .await;
    assert_eq!(agent.get("127.0.1.30", CREDS).await.body, "stay-role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_stream_410_makes_the_agent_relist() {
    let node = Node::start().await;
    node.add_pod("default", "a", "127.0.1.32", Some("role-a"));
    let agent = node.agent(&[]).await;
    let lists_before = pod_lists(&node);
    // Changes the watch will not see as events once history is compacted.
    node.api.delete(Kind::Pod, "default", "a").unwrap();
    node.add_pod("default", "b", "127.0.1.32", Some("role-b"));
    node.api.compact();
    support::eventually("the relist", Duration::from_secs(15), || async {
        (pod_lists(&node) > lists_before).then_some(())
    })
    .await;
    support::eventually("the new pod", Duration::from_secs(5), || async {
        (agent.get("127.0.1.32", CREDS).await.body == "role-b").then_some(())
    })
    .await;
    assert!(node.api.requests().iter().any(|r| r.contains("watch=true")));
}

/// How many times the agent has listed (not watched) pods.
fn pod_lists(node: &Node) -> usize {
    node.api
        .requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/pods?") && !r.contains("watch=true"))
        .count()
}
