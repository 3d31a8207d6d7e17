//! The manifests as a platform team applies them: every kustomization
//! renders, validates offline against the Kubernetes schemas, asks for no
//! more than it needs, and passes the binary's own flag validation.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use iamlet::config::Invocation;
use serde_json::Value;
use support::manifest::expanded_args;

const KUBERNETES_VERSION: &str = "1.32.0";

fn kustomizations() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut dirs = vec![("base".to_string(), root.join("base"))];
    let mut overlays: Vec<_> = std::fs::read_dir(root.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    overlays.sort();
    dirs.extend(
        overlays
            .into_iter()
            .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p)),
    );
    dirs
}

/// `kubectl kustomize DIR`, validated, as JSON objects.
fn render(name: &str, dir: &Path) -> Vec<Value> {
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered.stdout).unwrap();
    let validate = Command::new(support::venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "{name} does not validate:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    let to_json = Command::new(support::venv().join("bin/python"))
        .args(["-c", "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        to_json.status.success(),
        "{}",
        String::from_utf8_lossy(&to_json.stderr)
    );
    serde_json::from_slice(&to_json.stdout).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_kustomization_renders_validates_and_starts_the_binary() {
    let kustomizations = kustomizations();
    let names: Vec<&str> = kustomizations.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "base",
            "aws-vpc-cni",
            "calico",
            "cilium",
            "from-kube2iam",
            "with-prometheus-operator"
        ]
    );
    for (name, dir) in &kustomizations {
        let objects = render(name, dir);
        let daemonset = find(&objects, "DaemonSet");
        let pod = &daemonset["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let args = expanded_args(container);
        let argv = std::iter::once("iamlet".to_string()).chain(args.iter().cloned());
        let config = match Invocation::parse(argv, |_| None) {
            Ok(Invocation::Run(config)) => config,
            Ok(other) => panic!("{name}: args select {other:?}"),
            Err(error) => {
                panic!("{name}: the binary refuses its manifest's args {args:?}: {error}")
            }
        };
        assert!(config.iptables, "{name}");
        // Beside kube2iam, which holds :8181 on every interface.
        let port = if name == "from-kube2iam" { 8182 } else { 8181 };
        assert_eq!(config.listen.port(), port, "{name}");
        assert_eq!(config.listen.ip().to_string(), "10.0.1.23", "{name}");
        assert_eq!(config.metrics_port, None, "{name}: metrics on the app port");
        assert_eq!(container["ports"][0]["hostPort"], port, "{name}");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], port, "{name}");
        }
        assert!(
            config.imds_token_key_file.is_some(),
            "{name}: tokens survive restarts"
        );
        let expected_interface = match name.as_str() {
            "aws-vpc-cni" => "eni*",
            "calico" | "from-kube2iam" => "cali*",
            "cilium" => "lxc*",
            _ => "docker0",
        };
        assert_eq!(
            config.host_interface.include,
            [expected_interface],
            "{name}"
        );

        // The same args through the real binary's parser: only the flag
        // checks run when --help follows them.
        let mut with_help = args.clone();
        with_help.push("--help".into());
        let out = Command::new(env!("CARGO_BIN_EXE_iamlet"))
            .args(&with_help)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_daemonset_asks_for_only_what_it_needs() {
    let objects = render(
        "base",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base"),
    );
    let daemonset = find(&objects, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"][0]["operator"], "Exists");
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(
        security["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_BIND_SERVICE"])
    );
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for field in ["requests", "limits"] {
        assert!(
            container["resources"][field]["memory"].is_string(),
            "{field}"
        );
        assert!(container["resources"][field]["cpu"].is_string(), "{field}");
    }
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        env,
        [("HOST_IP", "status.hostIP"), ("NODE_NAME", "spec.nodeName")]
    );
    assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");

    let role = find(&objects, "ClusterRole");
    assert_eq!(
        role["rules"],
        serde_json::json!([
            {"apiGroups": [""], "resources": ["pods", "namespaces", "serviceaccounts"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
        ])
    );
    let binding = find(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"][0]["name"],
        find(&objects, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(pod["serviceAccountName"], "iamlet");

    // The host paths: the IMDSv2 token key's directory (on tmpfs), and
    // the host's cgroups, read-only, where nft and the agent look for them.
    assert_eq!(
        pod["volumes"],
        serde_json::json!([
            {"name": "state", "hostPath": {"path": "/run/iamlet", "type": "DirectoryOrCreate"}},
            {"name": "host-cgroups", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}}
        ])
    );
    assert_eq!(
        container["volumeMounts"],
        serde_json::json!([
            {"name": "state", "mountPath": "/run/iamlet"},
            {"name": "host-cgroups", "mountPath": "/sys/fs/cgroup", "readOnly": true}
        ])
    );
    // A headless Service over the agents gives Prometheus job="iamlet".
    let service = find(&objects, "Service");
    assert_eq!(service["metadata"]["name"], "iamlet");
    assert_eq!(service["spec"]["clusterIP"], "None");
    let labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[key], value, "the Service selects the agents");
    }
    let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == target)
    );
}

/// The component for the Prometheus operator: its ServiceMonitor finds the
/// Service, and its PrometheusRule carries exactly the shipped rule file.
#[test]
fn the_prometheus_operator_component_scrapes_the_agents_with_the_shipped_alerts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let objects = render(
        "with-prometheus-operator",
        &root.join("manifests/overlays/with-prometheus-operator"),
    );
    let service = find(&objects, "Service");
    let monitor = find(&objects, "ServiceMonitor");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value);
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    let rule = find(&objects, "PrometheusRule");
    let file = yaml_file(&root.join("manifests/monitoring/iamlet.rules.yaml"));
    assert_eq!(
        rule["spec"], file,
        "the PrometheusRule and the rule file differ"
    );
}

fn yaml_file(path: &Path) -> Value {
    let out = Command::new(support::venv().join("bin/python"))
        .args([
            "-c",
            "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// kube2iam's own DaemonSets (its README's and its chart's, with
/// --iptables=true) with only the image swapped: the binary takes their
/// args as they are, and they run privileged with no runAsUser, which is
/// the image's default user (root: tests/dockerfile.rs).
/// tests/node_operations.rs runs the agent under both security contexts.
#[test]
fn kube2iams_own_daemonsets_start_iamlet_with_the_image_swapped() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube2iam");
    for (file, interface) in [
        ("readme-iptables.yaml", "docker0"),
        ("chart-iptables.yaml", "cali*"),
    ] {
        let daemonset = yaml_file(&root.join(file));
        let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["securityContext"]["privileged"], true, "{file}");
        assert!(
            container["securityContext"]["runAsUser"].is_null(),
            "{file}"
        );
        let args = expanded_args(container);
        let argv = std::iter::once("iamlet".to_string()).chain(args.iter().cloned());
        let config = match Invocation::parse(argv, |_| None) {
            Ok(Invocation::Run(config)) => config,
            other => panic!("{file}: {other:?}"),
        };
        assert!(config.iptables, "{file}");
        assert_eq!(config.listen.to_string(), "10.0.1.23:8181", "{file}");
        assert_eq!(config.host_interface.include, [interface], "{file}");
        if let Some(probe) = container["livenessProbe"]["httpGet"].as_object() {
            assert_eq!(probe["path"], "/healthz", "{file}: iamlet serves it");
        }
    }
}

/// The workload component stands in for the EKS Pod Identity webhook:
/// labelled workloads get the SDKs' two variables and the projected token
/// for iamlet's audience; unlabelled ones are left alone.
#[test]
fn the_container_credentials_component_gives_labelled_workloads_what_the_sdks_read() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let objects = render(
        "examples/container-credentials",
        &root.join("examples/container-credentials"),
    );
    let deployment = find(&objects, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let first = &pod["containers"][0];
    let env: Vec<(&str, &str)> = first["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        env[0],
        ("AWS_REGION", "eu-west-1"),
        "the workload's own env stays"
    );
    assert!(env.contains(&(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://169.254.170.23/v1/credentials"
    )));
    let token_file =
        "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token";
    assert!(env.contains(&("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token_file)));
    let mount = &first["volumeMounts"][0];
    assert_eq!(mount["name"], "eks-pod-identity-token");
    assert!(token_file.starts_with(mount["mountPath"].as_str().unwrap()));
    let projected = &pod["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projected["audience"], "pods.eks.amazonaws.com");
    assert_eq!(projected["path"], "eks-pod-identity-token");
    assert!(
        pod["containers"][1].get("env").is_none(),
        "only the first container"
    );

    // A Job with the label is patched too; a Deployment without it is not.
    let dir = tempfile::tempdir().unwrap();
    // kustomize takes components by relative path only.
    let up = "../".repeat(dir.path().components().count() - 1);
    let component = format!(
        "{up}{}",
        root.join("components/container-credentials")
            .display()
            .to_string()
            .trim_start_matches('/')
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [workloads.yaml]\ncomponents: [{}]\n",
            component
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("workloads.yaml"),
        r#"apiVersion: batch/v1
kind: Job
metadata: {name: report, labels: {iamlet.io/container-credentials: "true"}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: report, image: report:1, env: [], volumeMounts: []}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: untouched}
spec:
  selector: {matchLabels: {app: untouched}}
  template:
    metadata: {labels: {app: untouched}}
    spec:
      containers: [{name: web, image: web:1}]
"#,
    )
    .unwrap();
    let objects = render("job and unlabelled deployment", dir.path());
    let job = find(&objects, "Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"],
        "AWS_CONTAINER_CREDENTIALS_FULL_URI"
    );
    let untouched = &find(&objects, "Deployment")["spec"]["template"]["spec"];
    assert!(untouched.get("volumes").is_none(), "{untouched}");
    assert!(untouched["containers"][0].get("env").is_none());
}

/// The admission policy installation.md offers for narrowing the agent's
/// node RBAC to its own node validates against the same schemas, and names
/// the ServiceAccount the manifests create.
#[test]
fn the_documented_node_policy_validates() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/installation.md"))
            .unwrap();
    let block = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.contains("kind: ValidatingAdmissionPolicy\n"))
        .expect("the policy in docs/installation.md");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), block).unwrap();
    let validate = Command::new(support::venv().join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "the documented policy does not validate:\n{}{}",
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&validate.stderr)
    );
    let base = render(
        "base",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base"),
    );
    let account = find(&base, "ServiceAccount");
    let user = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    );
    assert!(block.contains(&format!("== \"{user}\"")), "{block}");
}

/// The host-network-pods component gives the agent what loading the
/// hostNetwork rules from the host's cgroup namespace takes, and nothing
/// else changes.
#[test]
fn the_host_network_pods_component_adds_host_pid_and_sys_admin() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let dir = tempfile::tempdir().unwrap();
    // kustomize takes resources and components by relative path only.
    let up = "../".repeat(dir.path().components().count() - 1);
    let relative = |p: &str| {
        format!(
            "{up}{}",
            root.join(p).display().to_string().trim_start_matches('/')
        )
    };
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
            relative("base"),
            relative("components/host-network-pods")
        ),
    )
    .unwrap();
    let with = render("with the component", dir.path());
    let base = render("base", &root.join("base"));
    let pod = &find(&with, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(
        pod["containers"][0]["securityContext"]["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_BIND_SERVICE", "SYS_ADMIN"])
    );
    let mut expected = find(&base, "DaemonSet").clone();
    let spec = &mut expected["spec"]["template"]["spec"];
    spec["hostPID"] = serde_json::json!(true);
    spec["containers"][0]["securityContext"]["capabilities"]["add"] =
        serde_json::json!(["NET_ADMIN", "NET_BIND_SERVICE", "SYS_ADMIN"]);
    assert_eq!(find(&with, "DaemonSet"), &expected);
}
