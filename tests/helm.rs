//! The Helm chart (manifests/helm/iamlet) as a platform team installs it,
//! or upgrades to it from kube2iam's chart with their values file: rendered
//! offline by Helm's own Go library (helm-python-sdk, no helm binary),
//! linted, validated against the Kubernetes schemas, its args accepted by
//! the binary's own parser, and by default the kustomize base.

#![allow(clippy::unwrap_used)] // helpers of a test crate: a panic is a test failure

mod support;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use iamlet::config::{Config, Invocation, LogFormat};
use serde_json::{Value, json};
use support::manifest::{DOWNWARD, expanded_args};

const KUBERNETES_VERSION: &str = "1.32.0";
const NAMESPACE: &str = "kube-system";
const REGISTRY_IMAGE: &str = "registry.example.com/platform/iamlet";

/// Renders each case with Helm's engine, as `helm template RELEASE CHART
/// -n kube-system -f ... --set ...` would: value layers are merged in order
/// (tables key by key, anything else replaced), a string layer being a
/// values file read by Helm's own YAML reader. Each successful render is
/// written as one YAML stream (for kubernetes-validate) and returned parsed.
const RENDER: &str = r#"
import json, os, re, sys, yaml
from helm_python import Chart, values_from_yaml

request = json.load(sys.stdin)

def merge(into, layer):
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value

results = []
with Chart.load(request["chart"]) as chart:
    for index, case in enumerate(request["cases"]):
        values = {}
        for layer in case["layers"]:
            if isinstance(layer, str):
                with open(layer) as f:
                    layer = values_from_yaml(f.read())
            merge(values, layer)
        try:
            rendered = chart.render(values=values, name=case["release"],
                                    namespace=request["namespace"], is_install=True)
        except Exception as error:
            results.append({"error": "%s: %s" % (type(error).__name__, error)})
            continue
        stream = "".join("---\n# Source: %s\n%s\n" % (path, text.strip("\n"))
                         for path, text in sorted(rendered.items())
                         if path.endswith(".yaml") and text.strip())
        slug = re.sub(r"[^a-z0-9]+", "-", case["name"].lower()).strip("-")
        path = os.path.join(request["out"], "%02d-%s.yaml" % (index, slug))
        with open(path, "w") as f:
            f.write(stream)
        objects = [o for o in yaml.safe_load_all(stream) if o is not None]
        results.append({"file": path, "objects": objects})
json.dump(results, sys.stdout)
"#;

/// `helm lint --strict` on the chart, with the given values.
const LINT: &str = r#"
import json, sys
from helm_python import lint
chart, values = sys.argv[1], json.loads(sys.argv[2])
json.dump(lint(chart, values=values, strict=True, namespace="kube-system",
               kube_version="v1.32.0"), sys.stdout)
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("manifests/helm/iamlet")
}

fn python(script: &str, args: &[&str], stdin: &str) -> Vec<u8> {
    let mut child = Command::new(support::venv().join("bin/python"))
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("no python in {}: {e}", support::venv().display()));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n(helm-python-sdk and PyYAML come with scripts/setup-test-env.sh)",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A render: one case's name, release and value layers (a path is a
/// values file, `-f`; an object is `--set`).
struct Case {
    name: String,
    release: &'static str,
    layers: Vec<Value>,
}

fn case(name: &str, layers: Vec<Value>) -> Case {
    Case {
        name: name.to_string(),
        release: "iamlet",
        layers,
    }
}

/// One render's objects, with what the tests ask of them.
struct Render {
    name: String,
    objects: Vec<Value>,
}

/// Renders every case in one process, then validates every successful
/// render with `kubernetes-validate --strict` (it passes kinds it has no
/// schema for, the prometheus-operator's, with a warning, as for the
/// kustomize component in tests/manifests.rs). A render Helm refuses comes
/// back as its error message.
fn render_all(cases: &[Case]) -> Vec<Result<Render, String>> {
    let out = tempfile::tempdir().unwrap();
    let request = json!({
        "chart": chart(),
        "namespace": NAMESPACE,
        "out": out.path(),
        "cases": cases.iter().map(|c| json!({
            "name": c.name, "release": c.release, "layers": c.layers,
        })).collect::<Vec<_>>(),
    });
    let stdout = python(RENDER, &[], &request.to_string());
    let results: Vec<Value> = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    let files: Vec<&str> = results.iter().filter_map(|r| r["file"].as_str()).collect();
    if !files.is_empty() {
        let validate = Command::new(support::venv().join("bin/kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .args(&files)
            .output()
            .unwrap();
        assert!(
            validate.status.success(),
            "renders do not validate (files are named after their case):\n{}{}",
            String::from_utf8_lossy(&validate.stdout),
            String::from_utf8_lossy(&validate.stderr)
        );
    }
    cases
        .iter()
        .zip(results)
        .map(|(case, result)| match result["error"].as_str() {
            Some(error) => Err(error.to_string()),
            None => Ok(Render {
                name: case.name.clone(),
                objects: result["objects"].as_array().unwrap().clone(),
            }),
        })
        .collect()
}

fn render_ok(case: Case) -> Render {
    let name = case.name.clone();
    render_all(&[case])
        .pop()
        .unwrap()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Render {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn has(&self, kind: &str) -> bool {
        !self.all(kind).is_empty()
    }

    fn find(&self, kind: &str) -> &Value {
        match self.all(kind).as_slice() {
            [one] => one,
            other => panic!("{}: {} {kind} objects", self.name, other.len()),
        }
    }

    fn daemonset(&self) -> &Value {
        self.find("DaemonSet")
    }

    fn pod(&self) -> &Value {
        &self.daemonset()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = self.pod()["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}", self.name);
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        expanded_args(self.container())
    }

    fn env(&self, name: &str) -> Option<&Value> {
        self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
    }

    /// The binary's own parser on the container's args, with the variables
    /// the container declares set as the kubelet would.
    fn config(&self) -> Config {
        let args = self.args();
        let declared: Vec<String> = self.container()["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        let env = |name: &str| {
            DOWNWARD
                .iter()
                .find(|(n, _)| *n == name && declared.iter().any(|d| d == n))
                .map(|(_, v)| v.to_string())
        };
        let argv = std::iter::once("iamlet".to_string()).chain(args.iter().cloned());
        match Invocation::parse(argv, env) {
            Ok(Invocation::Run(config)) => *config,
            Ok(other) => panic!("{}: args select {other:?}", self.name),
            Err(error) => panic!(
                "{}: the binary refuses the chart's args {args:?}: {error}",
                self.name
            ),
        }
    }

    fn volume(&self, name: &str) -> Option<&Value> {
        self.pod()["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
    }

    fn mount(&self, name: &str) -> Option<&Value> {
        self.container()["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
    }
}

/// The args through the real binary's flag checks (they alone run when
/// --help follows them).
fn the_binary_accepts(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_iamlet"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_to_json(yaml: &[u8]) -> Value {
    let out = python(
        "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        &[],
        std::str::from_utf8(yaml).unwrap(),
    );
    serde_json::from_slice(&out).unwrap()
}

fn kustomize(dir: &str) -> Render {
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(root().join(dir))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{dir}: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    Render {
        name: dir.to_string(),
        objects: yaml_to_json(&rendered.stdout).as_array().unwrap().clone(),
    }
}

fn rule_file() -> Value {
    let text = std::fs::read(root().join("manifests/monitoring/iamlet.rules.yaml")).unwrap();
    yaml_to_json(&text)[0].clone()
}

fn names(objects: &[&Value]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_chart_lints_clean_and_lint_catches_a_broken_chart() {
    let dir = chart();
    let dir = dir.to_str().unwrap();
    for values in [
        json!({}),
        json!({"prometheus": {"serviceMonitor": {"enabled": true}, "metricsPort": 9543},
               "prometheusRule": {"enabled": true}, "aws": {"access_key": "AKIAEXAMPLE", "secret_key": "secret"}}),
    ] {
        let report: Value =
            serde_json::from_slice(&python(LINT, &[dir, &values.to_string()], "")).unwrap();
        assert_eq!(report["total_charts_linted"], 1, "{report}");
        assert_eq!(report["errors"], json!([]), "{values}: {report}");
        let findings: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap() >= 2)
            .collect();
        assert!(findings.is_empty(), "{values}: {findings:?}");
    }

    // The same lint on a copy with a template that does not parse.
    let broken = tempfile::tempdir().unwrap();
    let copy = broken.path().join("iamlet");
    copy_dir(&chart(), &copy);
    std::fs::write(
        copy.join("templates/broken.yaml"),
        "kind: ConfigMap\nmetadata: {name: {{ .Values.nope }\n",
    )
    .unwrap();
    let report: Value =
        serde_json::from_slice(&python(LINT, &[copy.to_str().unwrap(), "{}"], "")).unwrap();
    assert_ne!(report["errors"], json!([]), "lint must see it: {report}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `helm install iamlet manifests/helm/iamlet -n kube-system` installs what
/// `kubectl apply -k manifests/base` does: the same pod, strategy, RBAC,
/// ServiceAccount and Service, differing only in Helm's labels.
#[test]
fn the_default_render_is_the_kustomize_base() {
    let helm = render_ok(case("defaults", vec![]));
    let base = kustomize("manifests/base");

    let kinds = |r: &Render| names(&r.objects.iter().collect::<Vec<_>>());
    assert_eq!(kinds(&helm), kinds(&base));
    for object in &helm.objects {
        let kind = object["kind"].as_str().unwrap();
        if kind != "ClusterRole" && kind != "ClusterRoleBinding" {
            assert_eq!(object["metadata"]["namespace"], NAMESPACE, "{kind}");
        }
        for (key, value) in base.find(kind)["metadata"]["labels"].as_object().unwrap() {
            assert_eq!(&object["metadata"]["labels"][key], value, "{kind} {key}");
        }
    }

    // The whole pod spec: args, env, securityContext, volumes and mounts,
    // probes, ports, resources, tolerations, priority, host network.
    assert_eq!(helm.pod(), base.pod());
    assert_eq!(
        helm.daemonset()["spec"]["updateStrategy"],
        base.daemonset()["spec"]["updateStrategy"]
    );
    assert_eq!(
        helm.daemonset()["spec"]["template"]["metadata"]["annotations"],
        base.daemonset()["spec"]["template"]["metadata"]["annotations"]
    );
    for essential in [
        "args",
        "securityContext",
        "livenessProbe",
        "readinessProbe",
        "volumeMounts",
    ] {
        assert_eq!(
            helm.container()[essential],
            base.container()[essential],
            "{essential}"
        );
    }
    assert_eq!(helm.pod()["volumes"], base.pod()["volumes"]);
    assert_eq!(
        helm.find("ClusterRole")["rules"],
        base.find("ClusterRole")["rules"]
    );
    for field in ["roleRef", "subjects"] {
        assert_eq!(
            helm.find("ClusterRoleBinding")[field],
            base.find("ClusterRoleBinding")[field],
            "{field}"
        );
    }
    let (service, base_service) = (helm.find("Service"), base.find("Service"));
    assert_eq!(service["spec"]["ports"], base_service["spec"]["ports"]);
    assert_eq!(service["spec"]["clusterIP"], "None");
    let pod_labels = &helm.daemonset()["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the Service selects the agents");
    }
    for (key, value) in helm.daemonset()["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[key], value, "the DaemonSet selects its pods");
    }

    let config = helm.config();
    assert!(config.iptables);
    assert_eq!(config.host_interface.include, ["docker0"]);
    assert_eq!(config.listen.to_string(), "10.0.1.23:8181");
    assert_eq!(config.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
    assert_eq!(config.metrics_port, None, "metrics on the app port");
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.imds_token_key_file.is_some());
    assert!(config.container.is_some());
    assert!(config.pod_events.is_some());
    the_binary_accepts(&helm.args());
}

/// prometheus.serviceMonitor and prometheusRule give what the kustomize
/// component gives: a ServiceMonitor on the Service, and the shipped rule
/// file as a PrometheusRule, whose copy in the chart is the file itself.
#[test]
fn the_prometheus_operator_objects_are_the_components() {
    let chart_copy = std::fs::read(chart().join("files/iamlet.rules.yaml")).unwrap();
    let shipped = std::fs::read(root().join("manifests/monitoring/iamlet.rules.yaml")).unwrap();
    assert!(
        chart_copy == shipped,
        "manifests/helm/iamlet/files/iamlet.rules.yaml differs from manifests/monitoring/iamlet.rules.yaml: copy it"
    );

    let helm = render_ok(case(
        "prometheus operator",
        vec![json!({"prometheus": {"serviceMonitor": {"enabled": true}},
                    "prometheusRule": {"enabled": true}})],
    ));
    let component = kustomize("manifests/overlays/with-prometheus-operator");
    let monitor = helm.find("ServiceMonitor");
    let theirs = component.find("ServiceMonitor");
    for field in ["endpoints", "namespaceSelector"] {
        assert_eq!(monitor["spec"][field], theirs["spec"][field], "{field}");
    }
    let service = helm.find("Service");
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value);
    }
    // job="iamlet", what the alerts select, whatever the release's name.
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(service["metadata"]["labels"][job_label], "iamlet");
    assert_eq!(
        helm.find("PrometheusRule")["spec"],
        component.find("PrometheusRule")["spec"]
    );
    assert_eq!(helm.find("PrometheusRule")["spec"], rule_file());
}

/// `helm upgrade ... -f kube2iam-values.yaml` with the image set: a
/// kube2iam chart values file (Calico, iptables, a base ARN, RBAC, a
/// metrics Service, resources, tolerations, ...) renders, validates and
/// starts the binary with what the file says. kube2iam's own image is
/// refused rather than run with iamlet's args.
#[test]
fn a_kube2iam_values_file_upgrades_to_iamlet() {
    let file = json!(root().join("tests/fixtures/kube2iam/values.yaml"));
    let image = json!({"image": {"repository": REGISTRY_IMAGE, "tag": "0.1.0"}});
    let cases = [
        Case {
            name: "kube2iam values".into(),
            release: "kube2iam",
            layers: vec![file.clone(), image],
        },
        Case {
            name: "kube2iam values, kube2iam image".into(),
            release: "kube2iam",
            layers: vec![file],
        },
    ];
    let mut results = render_all(&cases).into_iter();
    let render = results.next().unwrap().unwrap();
    let refused = results.next().unwrap().err().unwrap();
    assert!(
        refused.contains("image.repository") && refused.contains("jtblin/kube2iam"),
        "{refused}"
    );

    let config = render.config();
    assert!(config.iptables);
    assert_eq!(config.host_interface.include, ["cali*"]);
    assert_eq!(config.listen.to_string(), "10.0.1.23:8181");
    assert_eq!(config.metrics_port, None);
    assert_eq!(config.node.as_deref(), Some("ip-10-0-1-23.ec2.internal"));
    assert_eq!(
        config.roles.base_role_arn.as_ref().unwrap().as_str(),
        "arn:aws:iam::123456789012:role/"
    );
    assert_eq!(
        config.roles.default_role.as_deref(),
        Some("kube2iam-default")
    );
    assert!(
        config.roles.restrictions.is_some(),
        "namespace-restrictions"
    );
    assert_eq!(config.cache.session_duration, Duration::from_secs(30 * 60));
    assert_eq!(config.log_level, tracing::Level::INFO);
    assert!(
        config
            .no_effect
            .iter()
            .any(|(flag, _)| flag == "use-regional-sts-endpoint")
    );
    the_binary_accepts(&render.args());

    // What kube2iam's own chart made of the same values (its DaemonSet, the
    // image swapped) and what iamlet's chart makes agree.
    let theirs = yaml_to_json(
        &std::fs::read(root().join("tests/fixtures/kube2iam/chart-iptables.yaml")).unwrap(),
    );
    let theirs = Render {
        name: "kube2iam's chart".into(),
        objects: theirs.as_array().unwrap().clone(),
    }
    .config();
    assert_eq!(theirs.iptables, config.iptables);
    assert_eq!(theirs.host_interface.include, config.host_interface.include);
    assert_eq!(theirs.listen, config.listen);
    assert_eq!(
        theirs.roles.base_role_arn.as_ref().map(|a| a.as_str()),
        config.roles.base_role_arn.as_ref().map(|a| a.as_str())
    );

    let container = render.container();
    assert_eq!(
        container["image"],
        format!("{REGISTRY_IMAGE}:0.1.0"),
        "the image set on the command line"
    );
    assert_eq!(render.env("AWS_REGION").unwrap()["value"], "eu-west-1");
    assert_eq!(
        render.env("NO_PROXY").unwrap()["value"],
        "169.254.169.254,10.0.0.0/8"
    );
    assert_eq!(
        container["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}})
    );
    let pod = render.pod();
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    // The values file's two, and the startup taint's: an agent that cannot
    // land on a node registered with it could never take it off.
    assert_eq!(pod["tolerations"].as_array().unwrap().len(), 3);
    assert_eq!(
        pod["tolerations"][2],
        json!({"key": "iamlet.io/agent-not-ready", "operator": "Exists", "effect": "NoSchedule"})
    );
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let template = &render.daemonset()["spec"]["template"]["metadata"];
    assert_eq!(
        template["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
        "true"
    );
    assert_eq!(template["annotations"]["prometheus.io/scrape"], "true");
    assert_eq!(template["labels"]["team"], "platform");
    assert_eq!(
        render.daemonset()["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}})
    );
    assert_eq!(
        container["livenessProbe"],
        json!({"httpGet": {"path": "/healthz", "port": 8181}, "initialDelaySeconds": 30,
               "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3, "timeoutSeconds": 1})
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    // iamlet's pod security, not kube2iam's privileged container.
    assert_eq!(container["securityContext"]["privileged"], false);

    // rbac.create: iamlet's rules, bound to the ServiceAccount the pods use.
    let defaults = render_ok(case("defaults", vec![]));
    assert_eq!(
        render.find("ClusterRole")["rules"],
        defaults.find("ClusterRole")["rules"]
    );
    let account = render.find("ServiceAccount")["metadata"]["name"].clone();
    assert_eq!(pod["serviceAccountName"], account);
    assert_eq!(
        render.find("ClusterRoleBinding")["subjects"],
        json!([{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}])
    );
    // prometheus.service: the Service, with kube2iam's annotations.
    let service = render.find("Service");
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/port"],
        "8181"
    );
    assert_eq!(service["spec"]["ports"][0]["port"], 8181);
    assert_eq!(
        service["metadata"]["labels"]["app.kubernetes.io/name"],
        "iamlet"
    );
    assert!(!render.has("ServiceMonitor"));
}

/// Values iamlet cannot run with are refused when rendering, naming the
/// value to change: kube2iam's chart quirk first (iptables without an
/// interface installs a rule for nothing).
#[test]
fn values_iamlet_cannot_run_with_are_refused_at_render_time() {
    let refused = [
        (
            json!({"host": {"iptables": true, "interface": ""}}),
            "host.iptables=true needs host.interface",
        ),
        (
            json!({"image": {"repository": "docker.io/jtblin/kube2iam"}}),
            "image.repository is kube2iam's image",
        ),
        (
            json!({"extraArgs": {"app-port": 8182}}),
            "extraArgs.app-port",
        ),
        (
            json!({"extraArgs": {"metrics-port": 9543}}),
            "extraArgs.metrics-port",
        ),
        (json!({"cgroupRoot": ""}), "cgroupRoot"),
    ];
    let cases: Vec<Case> = refused
        .iter()
        .map(|(values, _)| case(&values.to_string(), vec![values.clone()]))
        .collect();
    for ((values, message), result) in refused.iter().zip(render_all(&cases)) {
        match result {
            Ok(_) => panic!("{values} renders"),
            Err(error) => assert!(error.contains(message), "{values}: {error}"),
        }
    }
}

type Check = fn(&Render);

/// An option's values and the check of their effect.
fn option(name: &'static str, values: Value, check: Check) -> (&'static str, Value, Check) {
    (name, values, check)
}

/// One render per option, each checked for its visible effect: on the
/// objects, and through the binary's parser on the config it yields.
#[test]
fn every_value_has_its_visible_effect() {
    let options = vec![
        // kube2iam's chart keys.
        option(
            "host.iptables=false",
            json!({"host": {"iptables": false}}),
            |r| {
                assert!(!r.config().iptables);
            },
        ),
        option(
            "host.iptables=false without an interface",
            json!({"host": {"iptables": false, "interface": ""}}),
            |r| {
                assert!(!r.args().iter().any(|a| a.starts_with("--host-interface")));
                assert!(!r.config().iptables);
            },
        ),
        option(
            "host.interface",
            json!({"host": {"interface": "eni+"}}),
            |r| {
                assert_eq!(r.config().host_interface.include, ["eni*"]);
            },
        ),
        option(
            "host.interface list",
            json!({"host": {"interface": "cali+,!cali-host"}}),
            |r| {
                let config = r.config();
                assert_eq!(config.host_interface.include, ["cali*"]);
                assert_eq!(config.host_interface.exclude, ["cali-host"]);
            },
        ),
        option("host.ip", json!({"host": {"ip": "10.0.1.99"}}), |r| {
            assert_eq!(r.config().listen.ip().to_string(), "10.0.1.99");
        }),
        option(
            "host.ip empty: $HOST_IP",
            json!({"host": {"ip": ""}}),
            |r| {
                assert!(!r.args().iter().any(|a| a.starts_with("--host-ip")));
                assert_eq!(r.config().listen.ip().to_string(), "10.0.1.23");
            },
        ),
        option("host.port", json!({"host": {"port": 8182}}), |r| {
            let config = r.config();
            assert_eq!(config.listen.port(), 8182);
            assert_eq!(config.metrics_port, None, "metrics follow the app port");
            let container = r.container();
            assert_eq!(
                container["ports"],
                json!([{"name": "http", "containerPort": 8182, "hostPort": 8182, "protocol": "TCP"}])
            );
            for probe in ["livenessProbe", "readinessProbe"] {
                assert_eq!(container[probe]["httpGet"]["port"], 8182);
            }
            let annotations = &r.daemonset()["spec"]["template"]["metadata"]["annotations"];
            assert_eq!(annotations["prometheus.io/port"], "8182");
            assert_eq!(r.find("Service")["spec"]["ports"][0]["port"], 8182);
        }),
        option(
            "prometheus.metricsPort",
            json!({"prometheus": {"metricsPort": 9543, "serviceMonitor": {"enabled": true}}}),
            |r| {
                let config = r.config();
                assert_eq!(config.metrics_port, Some(9543));
                assert_eq!(config.listen.port(), 8181);
                assert_eq!(
                    r.container()["ports"][1],
                    json!({"name": "metrics", "containerPort": 9543, "hostPort": 9543, "protocol": "TCP"})
                );
                assert_eq!(
                    r.find("Service")["spec"]["ports"],
                    json!([{"name": "metrics", "port": 9543, "targetPort": "metrics", "protocol": "TCP"}])
                );
                assert_eq!(
                    r.find("ServiceMonitor")["spec"]["endpoints"][0]["port"],
                    "metrics"
                );
                let annotations = &r.daemonset()["spec"]["template"]["metadata"]["annotations"];
                assert_eq!(annotations["prometheus.io/port"], "9543");
            },
        ),
        option(
            "extraArgs",
            json!({"extraArgs": {
                "auto-discover-base-arn": "",
                "default-role": "reader",
                "iam-role-key": "example.com/role",
                "require-imdsv2": true,
                "resolve-duplicate-cache-ips": false,
            }}),
            |r| {
                let args = r.args();
                let first_extra = args.iter().position(|a| a == "--auto-discover-base-arn");
                assert!(
                    first_extra
                        > args
                            .iter()
                            .position(|a| a.starts_with("--imds-token-key-file")),
                    "extraArgs come last, a bare flag for an empty value: {args:?}"
                );
                assert!(args.contains(&"--resolve-duplicate-cache-ips=false".to_string()));
                let config = r.config();
                assert!(config.roles.auto_discover_base_arn);
                assert_eq!(config.roles.default_role.as_deref(), Some("reader"));
                assert_eq!(config.annotations.role, "example.com/role");
                assert!(config.service.require_imdsv2);
            },
        ),
        option(
            "extraArgs override the chart's flags",
            json!({"extraArgs": {"log-format": "text", "iptables": false}}),
            |r| {
                let config = r.config();
                assert_eq!(config.log_format, LogFormat::Text);
                assert!(!config.iptables);
            },
        ),
        option("verbose", json!({"verbose": true}), |r| {
            assert_eq!(r.config().log_level, tracing::Level::DEBUG);
        }),
        option("aws.region", json!({"aws": {"region": "eu-west-1"}}), |r| {
            assert_eq!(
                r.env("AWS_REGION").unwrap(),
                &json!({"name": "AWS_REGION", "value": "eu-west-1"})
            );
        }),
        option(
            "aws keys",
            json!({"aws": {"access_key": "AKIAEXAMPLE", "secret_key": "c2VjcmV0"}}),
            |r| {
                let secret = r.find("Secret");
                assert_eq!(secret["data"]["aws_access_key_id"], "QUtJQUVYQU1QTEU=");
                for (name, key) in [
                    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
                    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
                ] {
                    let from = &r.env(name).unwrap()["valueFrom"]["secretKeyRef"];
                    assert_eq!(from["name"], secret["metadata"]["name"]);
                    assert_eq!(from["key"], key);
                }
            },
        ),
        option(
            "existingSecret",
            json!({"existingSecret": "node-keys"}),
            |r| {
                assert!(!r.has("Secret"));
                let from = &r.env("AWS_ACCESS_KEY_ID").unwrap()["valueFrom"]["secretKeyRef"];
                assert_eq!(from["name"], "node-keys");
            },
        ),
        option(
            "extraEnv",
            json!({"extraEnv": {"HTTPS_PROXY": "http://proxy:3128", "RETRIES": 3}}),
            |r| {
                assert_eq!(r.env("HTTPS_PROXY").unwrap()["value"], "http://proxy:3128");
                assert_eq!(r.env("RETRIES").unwrap()["value"], "3");
            },
        ),
        option(
            "rbac.create=false",
            json!({"rbac": {"create": false}}),
            |r| {
                assert!(!r.has("ClusterRole") && !r.has("ClusterRoleBinding"));
                // kube2iam's chart: no ServiceAccount, the pods run as "default".
                assert!(!r.has("ServiceAccount"));
                assert_eq!(r.pod()["serviceAccountName"], "default");
            },
        ),
        option(
            "rbac.serviceAccountName",
            json!({"rbac": {"create": false, "serviceAccountName": "kube2iam"}}),
            |r| {
                assert!(!r.has("ServiceAccount") && !r.has("ClusterRole"));
                assert_eq!(r.pod()["serviceAccountName"], "kube2iam");
            },
        ),
        option(
            "rbac.create=false with serviceAccount.name",
            json!({"rbac": {"create": false}, "serviceAccount": {"name": "iamlet-agent"}}),
            |r| {
                assert!(!r.has("ClusterRole"));
                assert_eq!(r.find("ServiceAccount")["metadata"]["name"], "iamlet-agent");
                assert_eq!(r.pod()["serviceAccountName"], "iamlet-agent");
            },
        ),
        option(
            "serviceAccount.create=false",
            json!({"serviceAccount": {"create": false, "name": "node-agent"}}),
            |r| {
                assert!(!r.has("ServiceAccount"));
                assert_eq!(r.pod()["serviceAccountName"], "node-agent");
                assert_eq!(
                    r.find("ClusterRoleBinding")["subjects"][0]["name"],
                    "node-agent"
                );
            },
        ),
        option(
            "serviceAccount.annotations",
            json!({"serviceAccount": {"annotations": {"example.com/owner": "platform"}}}),
            |r| {
                assert_eq!(
                    r.find("ServiceAccount")["metadata"]["annotations"],
                    json!({"example.com/owner": "platform"})
                );
            },
        ),
        option(
            "podAnnotations",
            json!({"podAnnotations": {"example.com/a": "b", "prometheus.io/scrape": "false"}}),
            |r| {
                assert_eq!(
                    r.daemonset()["spec"]["template"]["metadata"]["annotations"],
                    json!({"example.com/a": "b", "prometheus.io/scrape": "false",
                           "prometheus.io/port": "8181", "prometheus.io/path": "/metrics"})
                );
            },
        ),
        option(
            "prometheus.scrapeAnnotations=false",
            json!({"prometheus": {"scrapeAnnotations": false}}),
            |r| {
                let metadata = &r.daemonset()["spec"]["template"]["metadata"];
                assert!(metadata.get("annotations").is_none(), "{metadata}");
            },
        ),
        option(
            "podLabels",
            json!({"podLabels": {"team": "platform"}}),
            |r| {
                let spec = &r.daemonset()["spec"];
                assert_eq!(spec["template"]["metadata"]["labels"]["team"], "platform");
                assert!(spec["selector"]["matchLabels"].get("team").is_none());
            },
        ),
        option(
            "resources",
            json!({"resources": {"limits": {"memory": "256Mi"}}}),
            |r| {
                assert_eq!(
                    r.container()["resources"],
                    json!({"requests": {"cpu": "25m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}})
                );
            },
        ),
        option(
            "tolerations",
            json!({"tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}),
            |r| {
                assert_eq!(
                    r.pod()["tolerations"],
                    json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"},
                           {"key": "iamlet.io/agent-not-ready", "operator": "Exists", "effect": "NoSchedule"}])
                );
            },
        ),
        option(
            "startupTaint",
            json!({"startupTaint": "example.com/boot=pending:NoExecute", "tolerations": []}),
            |r| {
                assert_eq!(
                    r.config().startup_taint.unwrap().to_string(),
                    "example.com/boot=pending:NoExecute"
                );
                assert_eq!(
                    r.pod()["tolerations"],
                    json!([{"key": "example.com/boot", "operator": "Exists", "effect": "NoExecute"}])
                );
            },
        ),
        option(
            "hostCgroupNamespace",
            json!({"hostCgroupNamespace": true}),
            |r| {
                assert_eq!(r.pod()["hostPID"], true);
                assert_eq!(
                    r.container()["securityContext"]["capabilities"]["add"],
                    json!(["NET_ADMIN", "NET_BIND_SERVICE", "SYS_ADMIN"])
                );
            },
        ),
        option(
            "startupTaint empty",
            json!({"startupTaint": "", "tolerations": []}),
            |r| {
                assert_eq!(r.config().startup_taint, None);
                assert!(r.pod().get("tolerations").is_none());
            },
        ),
        option(
            "nodeSelector",
            json!({"nodeSelector": {"kubernetes.io/os": "linux"}}),
            |r| {
                assert_eq!(
                    r.pod()["nodeSelector"],
                    json!({"kubernetes.io/os": "linux"})
                );
            },
        ),
        option(
            "affinity",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "eks.amazonaws.com/compute-type", "operator": "NotIn", "values": ["fargate"]}]}]}}}}),
            |r| {
                assert_eq!(
                    r.pod()["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                        ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
                    json!(["fargate"])
                );
            },
        ),
        option("priorityClassName", json!({"priorityClassName": ""}), |r| {
            assert!(r.pod().get("priorityClassName").is_none());
        }),
        option(
            "updateStrategy OnDelete (kube2iam's default)",
            json!({"updateStrategy": "OnDelete"}),
            |r| {
                assert_eq!(
                    r.daemonset()["spec"]["updateStrategy"],
                    json!({"type": "OnDelete"})
                );
            },
        ),
        option(
            "maxUnavailable",
            json!({"updateStrategy": "RollingUpdate", "maxUnavailable": "10%"}),
            |r| {
                assert_eq!(
                    r.daemonset()["spec"]["updateStrategy"],
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}})
                );
            },
        ),
        option(
            "updateStrategy object",
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}),
            |r| {
                assert_eq!(
                    r.daemonset()["spec"]["updateStrategy"]["rollingUpdate"],
                    json!({"maxSurge": 1, "maxUnavailable": 0})
                );
            },
        ),
        option(
            "image",
            json!({"image": {"repository": REGISTRY_IMAGE, "tag": "0.1.1", "pullPolicy": "Always"}}),
            |r| {
                assert_eq!(r.container()["image"], format!("{REGISTRY_IMAGE}:0.1.1"));
                assert_eq!(r.container()["imagePullPolicy"], "Always");
            },
        ),
        option(
            "image.pullSecrets",
            json!({"image": {"pullSecrets": ["registry-credentials"]}}),
            |r| {
                assert_eq!(
                    r.pod()["imagePullSecrets"],
                    json!([{"name": "registry-credentials"}])
                );
            },
        ),
        option(
            "prometheus.service.enabled=false",
            json!({"prometheus": {"service": {"enabled": false}}}),
            |r| assert!(!r.has("Service")),
        ),
        option(
            "prometheus.service.annotations",
            json!({"prometheus": {"service": {"annotations": {"example.com/scrape": "yes"}}}}),
            |r| {
                assert_eq!(
                    r.find("Service")["metadata"]["annotations"],
                    json!({"example.com/scrape": "yes"})
                );
            },
        ),
        option(
            "prometheus.serviceMonitor",
            json!({"prometheus": {"service": {"enabled": false}, "serviceMonitor": {
                "enabled": true, "interval": "10s", "namespace": "monitoring", "labels": {"release": "prom"}}}}),
            |r| {
                assert!(r.has("Service"), "a ServiceMonitor needs the Service");
                let monitor = r.find("ServiceMonitor");
                assert_eq!(monitor["metadata"]["namespace"], "monitoring");
                assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
                assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "10s");
                assert_eq!(
                    monitor["spec"]["namespaceSelector"],
                    json!({"matchNames": [NAMESPACE]})
                );
            },
        ),
        option(
            "prometheusRule",
            json!({"prometheusRule": {"enabled": true, "namespace": "monitoring", "labels": {"release": "prom"}}}),
            |r| {
                let rule = r.find("PrometheusRule");
                assert_eq!(rule["metadata"]["namespace"], "monitoring");
                assert_eq!(rule["metadata"]["labels"]["release"], "prom");
                assert_eq!(rule["spec"], rule_file());
            },
        ),
        // iamlet's own.
        option("logFormat", json!({"logFormat": "text"}), |r| {
            assert_eq!(r.config().log_format, LogFormat::Text)
        }),
        option(
            "containerCredentials.enabled=false",
            json!({"containerCredentials": {"enabled": false}}),
            |r| assert!(r.config().container.is_none()),
        ),
        option(
            "containerCredentials listen and audience",
            json!({"containerCredentials": {"listen": "169.254.170.23:8080", "audience": "sts.example.com"}}),
            |r| {
                let container = r.config().container.unwrap();
                assert_eq!(
                    container.listen,
                    ["169.254.170.23:8080"
                        .parse::<std::net::SocketAddr>()
                        .unwrap()]
                );
                assert_eq!(container.audience, "sts.example.com");
            },
        ),
        option(
            "serviceAccountRoles",
            json!({"serviceAccountRoles": {"enabled": true, "annotation": "example.com/role-arn"}}),
            |r| {
                let config = r.config();
                assert!(config.service_account_roles);
                assert_eq!(
                    config.annotations.service_account_role,
                    "example.com/role-arn"
                );
            },
        ),
        option(
            "sessionTags",
            json!({"sessionTags": {"enabled": true, "clusterName": "prod",
                   "clusterArn": "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "sourceIdentity": true}}),
            |r| {
                let tags = r.config().session_tags.unwrap();
                assert_eq!(tags.cluster_name.as_deref(), Some("prod"));
                assert_eq!(
                    tags.cluster_arn.as_deref(),
                    Some("arn:aws:eks:eu-west-1:123456789012:cluster/prod")
                );
                assert!(tags.source_identity);
            },
        ),
        option(
            "podEvents.enabled=false",
            json!({"podEvents": {"enabled": false}}),
            |r| assert_eq!(r.config().pod_events, None),
        ),
        option(
            "podEvents.interval",
            json!({"podEvents": {"interval": "5m"}}),
            |r| assert_eq!(r.config().pod_events, Some(Duration::from_secs(300))),
        ),
        option(
            "namespaceRestrictions",
            json!({"namespaceRestrictions": {"enabled": true, "format": "regexp"}}),
            |r| {
                assert_eq!(
                    format!("{:?}", r.config().roles.restrictions),
                    "Some(Regexp)"
                );
            },
        ),
        option(
            "cgroupRoot",
            json!({"cgroupRoot": "/sys/fs/cgroup/unified"}),
            |r| {
                assert_eq!(
                    r.volume("host-cgroups").unwrap()["hostPath"]["path"],
                    "/sys/fs/cgroup/unified"
                );
                let mount = r.mount("host-cgroups").unwrap();
                assert_eq!(mount["mountPath"], "/sys/fs/cgroup");
                assert_eq!(mount["readOnly"], true);
                assert_eq!(r.config().cgroup_root, Path::new("/sys/fs/cgroup"));
            },
        ),
        option(
            "imdsTokenKeyFile",
            json!({"imdsTokenKeyFile": "/var/lib/iamlet/token-key"}),
            |r| {
                assert_eq!(
                    r.volume("state").unwrap()["hostPath"]["path"],
                    "/var/lib/iamlet"
                );
                assert_eq!(r.mount("state").unwrap()["mountPath"], "/var/lib/iamlet");
                assert_eq!(
                    r.config().imds_token_key_file.unwrap(),
                    Path::new("/var/lib/iamlet/token-key")
                );
            },
        ),
        option(
            "imdsTokenKeyFile empty",
            json!({"imdsTokenKeyFile": ""}),
            |r| {
                assert!(r.volume("state").is_none() && r.mount("state").is_none());
                assert!(r.config().imds_token_key_file.is_none());
            },
        ),
        option(
            "livenessProbe.enabled=false",
            json!({"livenessProbe": {"enabled": false}}),
            |r| {
                assert!(r.container().get("livenessProbe").is_none());
                assert!(r.container().get("readinessProbe").is_some());
            },
        ),
        option(
            "readinessProbe timings",
            json!({"readinessProbe": {"initialDelaySeconds": 3, "failureThreshold": 5}}),
            |r| {
                assert_eq!(
                    r.container()["readinessProbe"],
                    json!({"httpGet": {"path": "/readyz", "port": 8181}, "initialDelaySeconds": 3,
                           "periodSeconds": 5, "failureThreshold": 5, "timeoutSeconds": 2})
                );
            },
        ),
        option(
            "fullnameOverride",
            json!({"fullnameOverride": "node-iam"}),
            |r| {
                let objects: Vec<&Value> = r.objects.iter().collect();
                assert_eq!(
                    names(&objects),
                    [
                        "ClusterRole/node-iam",
                        "ClusterRoleBinding/node-iam",
                        "DaemonSet/node-iam",
                        "Service/node-iam",
                        "ServiceAccount/node-iam"
                    ]
                );
                assert_eq!(r.pod()["serviceAccountName"], "node-iam");
            },
        ),
    ];
    let cases: Vec<Case> = options
        .iter()
        .map(|(name, values, _)| case(name, vec![values.clone()]))
        .collect();
    let mut failed = Vec::new();
    for ((name, values, check), result) in options.iter().zip(render_all(&cases)) {
        let render = match result {
            Ok(render) => render,
            Err(error) => {
                eprintln!("{name} ({values}) does not render: {error}");
                failed.push(*name);
                continue;
            }
        };
        if catch_unwind(AssertUnwindSafe(|| {
            check(&render);
            the_binary_accepts(&render.args());
        }))
        .is_err()
        {
            eprintln!("{name}: with {values}");
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "options without their effect: {failed:?}"
    );
}
