//! The manifests as a platform team applies them: every kustomization
//! renders, validates offline against the Kubernetes schemas, asks for no
//! more than it needs, and passes the binary's own flag validation.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use iamlet::config::Invocation;
use serde_json::Value;

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

/// The container's args with `$(VAR)` expanded as the kubelet would, from
/// values the downward API gives on a node.
fn expanded_args(container: &Value) -> Vec<String> {
    let downward = [
        ("HOST_IP", "10.0.1.23"),
        ("NODE_NAME", "ip-10-0-1-23.ec2.internal"),
    ];
    let declared: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let mut arg = arg.as_str().unwrap().to_string();
            for (name, value) in downward {
                if arg.contains(&format!("$({name})")) {
                    assert!(declared.contains(&name), "$({name}) used but not declared");
                    arg = arg.replace(&format!("$({name})"), value);
                }
            }
            assert!(!arg.contains("$("), "unexpanded variable in {arg}");
            arg
        })
        .collect()
}

#[test]
fn every_kustomization_renders_validates_and_starts_the_binary() {
    let kustomizations = kustomizations();
    let names: Vec<&str> = kustomizations.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["base", "aws-vpc-cni", "calico", "cilium", "from-kube2iam"]
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
        assert_eq!(config.listen.to_string(), "10.0.1.23:8181", "{name}");
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
        serde_json::json!(["NET_ADMIN"])
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
        serde_json::json!([{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}])
    );
    let binding = find(&objects, "ClusterRoleBinding");
    assert_eq!(
        binding["subjects"][0]["name"],
        find(&objects, "ServiceAccount")["metadata"]["name"]
    );
    assert_eq!(pod["serviceAccountName"], "iamlet");
}
