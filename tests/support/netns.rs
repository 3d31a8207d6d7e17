//! The simulated node of `tests/e2e/node.sh`, driven from Rust: network
//! namespaces for the node and each pod, the real `iamlet` with
//! `--iptables`, and real clients run inside pod namespaces. Everything is
//! torn down on drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const NODE_IP: &str = "10.77.0.1";
pub const AGENT_PORT: u16 = 8181;
const MOTO_URL: &str = "http://10.77.0.1:5000";
const API_URL: &str = "http://127.0.0.1:6443";

pub struct SimNode {
    state: tempfile::TempDir,
    prefix: String,
    node_credentials: Vec<(String, String)>,
    agent: Option<Child>,
    agent_port: u16,
    agent_logs: usize,
    /// Other processes a test started in the node's or a pod's namespace,
    /// killed by PID on drop.
    background: Vec<Child>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where cargo put iamlet and the testkit's binaries.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_iamlet"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn check_tools() {
    let dir = bin_dir();
    for tool in ["fake-apiserver", "fake-imds", "sdk-identity"] {
        assert!(
            dir.join(tool).exists(),
            "{tool} is not built in {}: run `cargo build --workspace` (scripts/test.sh does)",
            dir.display()
        );
    }
}

/// Fails the test with the command's output unless it succeeded.
pub fn check(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl SimNode {
    pub fn up() -> SimNode {
        assert!(
            Command::new("id")
                .arg("-u")
                .output()
                .map(|o| o.stdout == b"0\n")
                .unwrap_or(false),
            "the network-namespace suite needs root (ip netns, nft)"
        );
        check_tools();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "iml{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join("prefix"), &prefix).unwrap();
        let mut node = SimNode {
            state,
            prefix,
            node_credentials: Vec::new(),
            agent: None,
            agent_port: AGENT_PORT,
            agent_logs: 0,
            background: Vec::new(),
        };
        let output = node.script(&["up"]);
        check(&output, "node.sh up");
        let env = std::fs::read_to_string(node.state.path().join("node-credentials.env")).unwrap();
        node.node_credentials = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        node
    }

    fn script(&self, args: &[&str]) -> Output {
        let mut full = vec![args[0], self.state.path().to_str().unwrap()];
        full.extend(&args[1..]);
        Command::new(repo().join("tests/e2e/node.sh"))
            .args(&full)
            .env("IAMLET_BIN_DIR", bin_dir())
            .env("IAMLET_TEST_VENV", super::venv())
            .output()
            .expect("run node.sh")
    }

    pub fn node_ns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    pub fn pod_ns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }

    /// A pod namespace on the bridge, and its Pod object on the API server.
    pub fn add_pod(&self, name: &str, ip: &str, role: Option<&str>) {
        self.add_pod_with(name, &[ip], role);
    }

    /// A dual-stack pod: an IPv4 and an IPv6 address, both in its Pod's podIPs.
    pub fn add_dual_stack_pod(&self, name: &str, ip: &str, ip6: &str, role: Option<&str>) {
        self.add_pod_with(name, &[ip, ip6], role);
    }

    /// A pod with the UID its cgroups carry (see [`SimNode::add_pod_cgroup`]).
    pub fn add_pod_with_uid(&self, name: &str, ip: &str, uid: &str, role: Option<&str>) {
        self.add_pod_netns_only(name, ip);
        self.create_pod_object(name, &[ip], Some(uid), role);
    }

    /// A pod's network namespace on the bridge, with no Pod object: a pod
    /// the agent's watch has not reported.
    pub fn add_pod_netns_only(&self, name: &str, ip: &str) {
        check(&self.script(&["pod-add", name, ip]), "node.sh pod-add");
    }

    fn add_pod_with(&self, name: &str, ips: &[&str], role: Option<&str>) {
        let mut script = vec!["pod-add", name];
        script.extend_from_slice(ips);
        check(&self.script(&script), "node.sh pod-add");
        self.create_pod_object(name, ips, None, role);
    }

    /// The Pod object of a pod (its network namespace made already).
    pub fn create_pod_object(
        &self,
        name: &str,
        ips: &[&str],
        uid: Option<&str>,
        role: Option<&str>,
    ) {
        self.kubectl_create(&pod_object(name, ips, uid, role));
    }

    fn kubectl_create(&self, object: &serde_json::Value) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node_ns(),
                "kubectl",
                &format!("--server={API_URL}"),
                "create",
                "--validate=false",
                "-f",
                "-",
            ])
            .env("HOME", self.state.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(object.to_string().as_bytes())
            .unwrap();
        check(&child.wait_with_output().unwrap(), "kubectl create");
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        let server = format!("--server={API_URL}");
        let ns = self.node_ns();
        let mut full = vec!["netns", "exec", &ns, "kubectl", &server];
        full.extend(args);
        Command::new("ip")
            .args(&full)
            .env("HOME", self.state.path())
            .output()
            .unwrap()
    }

    /// Runs a command in the node namespace (as the host would).
    pub fn in_node(&self, args: &[&str]) -> Output {
        let ns = self.node_ns();
        let mut full = vec!["netns", "exec", &ns];
        full.extend(args);
        Command::new("ip").args(&full).output().unwrap()
    }

    /// Runs a command in a pod's namespace with a clean environment: no
    /// credentials, AWS APIs at moto, metadata at the usual address.
    pub fn in_pod(&self, pod: &str, args: &[&str]) -> Output {
        let ns = self.pod_ns(pod);
        let home = self.state.path().join(format!("home-{pod}"));
        let _ = std::fs::create_dir_all(&home);
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(client_env(&home))
            .args(args)
            .output()
            .unwrap()
    }

    /// `aws <args>` (botocore) inside a pod.
    pub fn aws(&self, pod: &str, args: &[&str]) -> Output {
        self.aws_with(pod, &[], args)
    }

    /// `aws <args>` inside a pod with extra `NAME=VALUE` variables.
    pub fn aws_with(&self, pod: &str, env: &[&str], args: &[&str]) -> Output {
        let aws = super::venv().join("bin/aws");
        let mut full = env.to_vec();
        full.push(aws.to_str().unwrap());
        full.extend(args);
        self.in_pod(pod, &full)
    }

    /// Where the testkit's unmodified aws-config application is.
    pub fn sdk_identity_bin() -> PathBuf {
        bin_dir().join("sdk-identity")
    }

    /// The caller ARN an unmodified aws-config application in the pod sees.
    pub fn sdk_identity(&self, pod: &str) -> Output {
        let bin = bin_dir().join("sdk-identity");
        self.in_pod(pod, &[bin.to_str().unwrap()])
    }

    /// `curl` inside a pod: (exit code, body).
    pub fn curl(&self, pod: &str, args: &[&str]) -> (i32, String) {
        let mut full = vec!["curl", "-s", "-m", "5"];
        full.extend(args);
        let output = self.in_pod(pod, &full);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    pub fn start_agent(&mut self, extra: &[&str]) {
        self.start_agent_as(&[], extra);
    }

    /// Starts the agent through `wrapper` (say `setpriv` with a capability
    /// set, as a container's security context would give it), with `extra`
    /// flags after the suite's own (a repeated flag takes the last value).
    pub fn start_agent_as(&mut self, wrapper: &[&str], extra: &[&str]) {
        let child = self.spawn_agent(wrapper, extra);
        self.agent = Some(child);
        self.wait_ready();
    }

    /// Starts the agent without waiting for it; returns its exit once it
    /// has stopped on its own (within `limit`), with its log.
    pub fn run_agent_to_exit(
        &mut self,
        wrapper: &[&str],
        extra: &[&str],
        limit: Duration,
    ) -> (Option<ExitStatus>, String) {
        let mut child = self.spawn_agent(wrapper, extra);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return (Some(status), self.agent_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.agent = Some(child);
        (None, self.agent_log())
    }

    fn spawn_agent(&mut self, wrapper: &[&str], extra: &[&str]) -> Child {
        assert!(self.agent.is_none(), "an agent is already running");
        self.agent_port = extra
            .iter()
            .rev()
            .find_map(|a| a.strip_prefix("--app-port="))
            .map_or(AGENT_PORT, |p| p.parse().unwrap());
        self.agent_logs += 1;
        let log = std::fs::File::create(self.agent_log_path(self.agent_logs)).unwrap();
        let port = format!("--app-port={AGENT_PORT}");
        let host_ip = format!("--host-ip={NODE_IP}");
        let api = format!("--api-server={API_URL}");
        let node = format!("--node={}", super::NODE);
        let base = format!("--base-role-arn=arn:aws:iam::{}:role/", super::ACCOUNT);
        let node_ns = self.node_ns();
        let mut args = vec!["netns", "exec", &node_ns];
        args.extend(wrapper);
        args.extend([
            env!("CARGO_BIN_EXE_iamlet"),
            "--iptables=true",
            "--host-interface=br0",
            &host_ip,
            &port,
            &api,
            &node,
            &base,
        ]);
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        Command::new("ip")
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.node_credentials.iter().map(|(k, v)| (k, v)))
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", MOTO_URL)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready_url = format!("http://{NODE_IP}:{}/readyz", self.agent_port);
        loop {
            if let Some(status) = self.agent.as_mut().unwrap().try_wait().unwrap() {
                panic!("iamlet exited with {status}:\n{}", self.agent_log());
            }
            if self
                .in_node(&["curl", "-sf", "-m", "1", &ready_url])
                .status
                .success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "iamlet not ready:\n{}",
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The body of `path` on the running agent, asked from the node.
    pub fn agent_get(&self, path: &str) -> String {
        let url = format!("http://{NODE_IP}:{}{path}", self.agent_port);
        String::from_utf8_lossy(&self.in_node(&["curl", "-s", "-m", "2", &url]).stdout).into_owned()
    }

    /// The value of a metric (with its labels, as printed) on the agent.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.agent_get("/metrics")
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Starts `args` in the background in the node's namespace; killed (by
    /// PID) on drop. Returns its index for [`SimNode::stop_background`].
    pub fn spawn_in_node(&mut self, args: &[&str]) -> usize {
        let ns = self.node_ns();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.background.push(child);
        self.background.len() - 1
    }

    /// Starts `args` in the background in a pod's namespace, its output
    /// captured; collect it with [`SimNode::wait_background`].
    pub fn spawn_in_pod(&mut self, pod: &str, args: &[&str]) -> usize {
        let ns = self.pod_ns(pod);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.background.push(child);
        self.background.len() - 1
    }

    /// Kills a background process by PID.
    pub fn stop_background(&mut self, index: usize) {
        let child = &mut self.background[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for a background process to end on its own; its stdout.
    pub fn wait_background(&mut self, index: usize, limit: Duration) -> String {
        let child = &mut self.background[index];
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "background process did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        use std::io::Read;
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_string(&mut out).unwrap();
        }
        out
    }

    /// A file in the node's state directory (removed with the node).
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.state.path().join(name)
    }

    /// This node's share of the machine's cgroup v2 hierarchy: a directory
    /// of its own, where the tests lay out a kubelet's pod tree. The agent
    /// sees it as `/sys/fs/cgroup/<prefix>` (see [`SimNode::cgroup_wrapper`]).
    pub fn cgroup_tree(&self) -> PathBuf {
        let tree = iamlet::identity::cgroups::cgroup2_mount()
            .expect("a cgroup v2 mount")
            .join(&self.prefix);
        std::fs::create_dir_all(tree.join("kubepods.slice/kubepods-besteffort.slice")).unwrap();
        tree
    }

    /// A pod's container cgroup, as the systemd driver and containerd lay
    /// it out; returns its directory.
    pub fn add_pod_cgroup(&self, uid: &str) -> PathBuf {
        let scope = self.cgroup_tree().join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
            uid.replace('-', "_"),
            "ab".repeat(32)
        ));
        std::fs::create_dir_all(&scope).unwrap();
        scope
    }

    /// Removes a pod's cgroups, as the kubelet does when the pod is deleted.
    pub fn remove_pod_cgroup(&self, uid: &str) {
        let pod = self.cgroup_tree().join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            uid.replace('-', "_")
        ));
        remove_cgroup_dirs(&pod);
    }

    /// What the agent runs under to see the host's cgroup v2 hierarchy at
    /// `/sys/fs/cgroup` (where nft resolves cgroup paths), as a DaemonSet
    /// that mounts it: a mount namespace of its own with cgroup2 mounted
    /// there. Pair it with [`SimNode::cgroup_root_flag`].
    pub fn cgroup_wrapper() -> [&'static str; 6] {
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount -t cgroup2 none /sys/fs/cgroup && exec \"$@\"",
            "sh",
        ]
    }

    /// Starts the agent as a DaemonSet pod runs: inside the pod cgroup
    /// `cgroup` (see [`SimNode::add_pod_cgroup`]), seeing the hierarchy as
    /// [`SimNode::cgroup_wrapper`] does, with `--cgroup-root` set, and with
    /// `own_cgroup_namespace` in a cgroup namespace of its own (as a
    /// container on cgroup v2 is). `extra` flags follow.
    pub fn start_agent_in_pod_cgroup(
        &mut self,
        cgroup: &Path,
        own_cgroup_namespace: bool,
        extra: &[&str],
    ) {
        // Inside the wrapper's mount namespace the hierarchy is at /sys/fs/cgroup.
        let relative = cgroup
            .strip_prefix(iamlet::identity::cgroups::cgroup2_mount().unwrap())
            .unwrap();
        let enter = format!(
            "echo $$ > /sys/fs/cgroup/{}/cgroup.procs && exec \"$@\"",
            relative.display()
        );
        let mut wrapper = Self::cgroup_wrapper().to_vec();
        wrapper.extend(["sh", "-c", &enter, "sh"]);
        if own_cgroup_namespace {
            wrapper.extend(["unshare", "-C"]);
        }
        let root = self.cgroup_root_flag();
        let mut flags = vec![root.as_str()];
        flags.extend(extra);
        self.start_agent_as(&wrapper, &flags);
    }

    /// `--host-cgroup-namespace` naming the test process's cgroup
    /// namespace: the host's, as `/proc/1/ns/cgroup` is under hostPID.
    pub fn host_cgroup_namespace_flag() -> String {
        format!(
            "--host-cgroup-namespace=/proc/{}/ns/cgroup",
            std::process::id()
        )
    }

    /// `--cgroup-root` for the agent under [`SimNode::cgroup_wrapper`].
    pub fn cgroup_root_flag(&self) -> String {
        self.cgroup_tree();
        format!("--cgroup-root=/sys/fs/cgroup/{}", self.prefix)
    }

    /// A hostNetwork pod's Pod object: the node's address, its own UID.
    pub fn add_host_network_pod(&self, name: &str, uid: &str, role: Option<&str>) {
        let mut pod = pod_object(name, &[NODE_IP], Some(uid), role);
        pod["spec"]["hostNetwork"] = serde_json::json!(true);
        self.kubectl_create(&pod);
    }

    /// Runs a command on the node's network (a hostNetwork pod's process)
    /// inside the cgroup `cgroup`, with the clean environment of
    /// [`SimNode::in_pod`].
    pub fn in_node_cgroup(&self, cgroup: &Path, args: &[&str]) -> Output {
        let home = self.state.path().join("home-host");
        let _ = std::fs::create_dir_all(&home);
        in_cgroup(cgroup)
            .args(["ip", "netns", "exec", &self.node_ns()])
            .args(client_env(&home))
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `args` in the background on the node's network inside the
    /// cgroup `cgroup` (a hostNetwork pod's long-running process); killed
    /// by PID on drop.
    pub fn spawn_in_node_cgroup(&mut self, cgroup: &Path, args: &[&str]) -> usize {
        let child = in_cgroup(cgroup)
            .args(["ip", "netns", "exec", &self.node_ns()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.background.push(child);
        self.background.len() - 1
    }

    /// Deletes a pod's network namespace (its address is free again).
    pub fn remove_pod_netns(&self, pod: &str) {
        check(
            &Command::new("ip")
                .args(["netns", "del", &self.pod_ns(pod)])
                .output()
                .unwrap(),
            "ip netns del",
        );
    }

    /// The running agent's process id.
    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().expect("a running agent").id()
    }

    /// Sends `signal` to the agent (by PID) and waits for it to exit.
    pub fn signal_agent(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.agent.take().expect("a running agent");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        child.wait().unwrap()
    }

    fn agent_log_path(&self, n: usize) -> PathBuf {
        self.state.path().join(format!("iamlet-{n}.log"))
    }

    /// The log of the latest agent.
    pub fn agent_log(&self) -> String {
        // Written by the agent's log thread: let it catch up.
        std::thread::sleep(std::time::Duration::from_millis(150));
        std::fs::read_to_string(self.agent_log_path(self.agent_logs)).unwrap_or_default()
    }

    /// `nft list ruleset` in the node namespace.
    pub fn ruleset(&self) -> String {
        String::from_utf8_lossy(&self.in_node(&["nft", "list", "ruleset"]).stdout).into_owned()
    }

    pub fn iamlet(&self, args: &[&str]) -> Output {
        let mut full = vec![env!("CARGO_BIN_EXE_iamlet")];
        full.extend(args);
        self.in_node(&full)
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        for child in &mut self.background {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- iamlet log ---\n{}", self.agent_log());
        }
        let _ = self.script(&["down"]);
        if let Some(mount) = iamlet::identity::cgroups::cgroup2_mount() {
            let tree = mount.join(&self.prefix);
            if tree.exists() {
                remove_cgroup_dirs(&tree);
            }
        }
    }
}

/// A command's stdout and stderr, as one text.
pub fn output_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A Pod object of this node in `default`, with the role annotation.
fn pod_object(
    name: &str,
    ips: &[&str],
    uid: Option<&str>,
    role: Option<&str>,
) -> serde_json::Value {
    let annotations = role.map_or(
        serde_json::json!({}),
        |r| serde_json::json!({"iam.amazonaws.com/role": r}),
    );
    let mut pod = iamlet_testkit::pod("default", name, super::NODE, ips[0], annotations);
    pod["status"]["podIPs"] = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
    if let Some(uid) = uid {
        pod["metadata"]["uid"] = serde_json::json!(uid);
    }
    pod
}

/// `env -i` and the variables of a client in a simulated pod: no
/// credentials, AWS APIs at moto, metadata at the usual address.
fn client_env(home: &Path) -> Vec<String> {
    vec![
        "env".into(),
        "-i".into(),
        format!("PATH={}", std::env::var("PATH").unwrap_or_default()),
        format!("HOME={}", home.display()),
        "AWS_DEFAULT_REGION=us-east-1".into(),
        "AWS_REGION=us-east-1".into(),
        format!("AWS_ENDPOINT_URL={MOTO_URL}"),
        "AWS_CONFIG_FILE=/dev/null".into(),
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null".into(),
    ]
}

/// A command that moves itself into `cgroup`, then runs the arguments
/// added to it (a process of the pod that cgroup belongs to).
fn in_cgroup(cgroup: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\""])
        .arg(cgroup);
    command
}

/// Removes a cgroup directory and those below it, deepest first (a cgroup
/// directory goes only when it has no children and no processes).
fn remove_cgroup_dirs(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_dirs(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
