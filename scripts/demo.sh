#!/usr/bin/env bash
# The local demo (README): on a fresh machine, as root, installs what it
# needs, builds iamlet, starts a simulated node in network namespaces and
# replays the kube2iam tutorial against it: the node's startup taint comes
# off once iamlet is ready, a pod without a role cannot list the bucket
# (and `iamlet explain` says why), `kubectl annotate` grants the role,
# removing it revokes it.
# Everything it starts is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
. "$(dirname "$0")/../scripts/as-root.sh"
cd "$(dirname "$0")/.."
repo=$(pwd)


bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[36m%s $\033[0m %s\n' "$1" "$2"; }

bold "Setting up: Debian packages, Python venv (moto, awscli), cargo build"
scripts/setup-test-env.sh
cargo build --locked --workspace --quiet

state=$(mktemp -d /tmp/iamlet-demo.XXXXXX)
echo "iamldemo" >"$state/prefix"
agent_pid=
cleanup() {
  set +e
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
  ip netns exec iamldemo-node "$repo/target/debug/iamlet" cleanup >/dev/null 2>&1
  tests/e2e/node.sh down "$state"
  rm -rf "$state"
}
trap cleanup EXIT

bold "Starting a simulated node: network namespace iamldemo-node with a pod bridge br0 (10.77.0.1),"
echo "   the node's metadata service on 169.254.169.254, moto (STS, IAM, S3) with IAM enforcement on,"
echo "   and a Kubernetes API server; then a pod 'app' (10.77.0.11) in its own namespace"
tests/e2e/node.sh up "$state"
tests/e2e/node.sh pod-add "$state" app 10.77.0.11

node() { ip netns exec iamldemo-node "$@"; }
kubectl() { node env HOME="$state" kubectl --server=http://127.0.0.1:6443 "$@"; }
in_pod() {
  ip netns exec iamldemo-app env -i PATH="$PATH" HOME="$state" AWS_DEFAULT_REGION=us-east-1 \
    AWS_ENDPOINT_URL=http://10.77.0.1:5000 AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null "$@"
}
pod_aws() {
  show "pod/app" "aws $*"
  in_pod "$repo/.venv/bin/aws" "$@" 2>&1 || true
}
run_kubectl() {
  show "node" "kubectl $*"
  kubectl "$@"
}

cat >"$state/app.json" <<'JSON'
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"app","namespace":"default"},
 "spec":{"nodeName":"node-a","containers":[{"name":"app","image":"amazon/aws-cli"}]},
 "status":{"phase":"Running","podIP":"10.77.0.11","podIPs":[{"ip":"10.77.0.11"}]}}
JSON
kubectl create --validate=false -f "$state/app.json" >/dev/null
run_kubectl get pods

cat >"$state/node.json" <<'JSON'
{"apiVersion":"v1","kind":"Node","metadata":{"name":"node-a"},
 "spec":{"taints":[{"key":"iamlet.io/agent-not-ready","effect":"NoSchedule"}]}}
JSON
kubectl create --validate=false -f "$state/node.json" >/dev/null
bold "The node registered with the startup taint: nothing is scheduled here until iamlet is ready"
run_kubectl get node node-a -o jsonpath='{.spec.taints}'; echo

bold "Starting iamlet on the node, as its DaemonSet would (kube2iam's flags)"
set -a; . "$state/node-credentials.env"; set +a
cmd=(iamlet --iptables=true --host-interface=br0 --host-ip=10.77.0.1 --app-port=8181
     --api-server=http://127.0.0.1:6443 --node=node-a --base-role-arn=arn:aws:iam::123456789012:role/)
show "node" "${cmd[*]}"
# Started directly (not through a shell function) so that $! is iamlet's PID.
ip netns exec iamldemo-node env AWS_REGION=us-east-1 AWS_ENDPOINT_URL=http://10.77.0.1:5000 \
  "$repo/target/debug/${cmd[0]}" "${cmd[@]:1}" >"$state/iamlet.log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 100); do
  node curl -sf http://10.77.0.1:8181/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
for _ in $(seq 1 100); do
  grep -q "startup taint removed" "$state/iamlet.log" && break
  sleep 0.1
done
sed -e 's/^[^ ]* *//' "$state/iamlet.log" \
  | grep -E "rules installed|were cut|serving|credentials work|startup taint removed" | cut -c1-160
echo "   (the taint came off only now: rules in, older connections cut, pods listed, node credentials working)"
run_kubectl get node node-a -o jsonpath='{.spec.taints}'; echo

bold "The DNAT rule iamlet installed in its own nftables table"
show "node" "nft list table ip iamlet"
node nft list table ip iamlet

bold "1. The pod has no role: the SDK finds no credentials"
pod_aws s3 ls s3://team-bucket

bold "2. Grant the role with kubectl annotate"
run_kubectl annotate pod app iam.amazonaws.com/role=s3-reader
pod_aws s3 ls s3://team-bucket
pod_aws sts get-caller-identity --query Arn --output text
echo "   (the role may list team-bucket only:)"
pod_aws s3 ls s3://other-bucket

bold "3. Revoke it"
run_kubectl annotate pod app iam.amazonaws.com/role-
pod_aws s3 ls s3://team-bucket

bold "4. Why does the pod get no role? Ask the node's agent"
show "node" "iamlet explain default/app"
node "$repo/target/debug/iamlet" explain default/app --agent=http://10.77.0.1:8181 || true
show "node" "iamlet explain --role s3-reader --namespace default"
node "$repo/target/debug/iamlet" explain --role s3-reader --namespace default \
  --agent=http://10.77.0.1:8181 || true

bold "5. What the pod can and cannot read from the metadata service"
show "pod/app" "curl http://169.254.169.254/latest/meta-data/instance-id"
in_pod curl -s http://169.254.169.254/latest/meta-data/instance-id; echo
show "pod/app" "curl -w ' (%{http_code})' http://169.254.169.254/latest/user-data"
in_pod curl -s -o /dev/null -w '(%{http_code})' http://169.254.169.254/latest/user-data; echo

bold "6. Something flushes the node's ruleset: iamlet hears it and writes its table again"
show "node" "nft flush ruleset"
node nft flush ruleset
sleep 0.5
show "node" "nft list table ip iamlet | grep dnat"
node nft list table ip iamlet | grep dnat | sed -e 's/^[[:space:]]*//'
grep -E "written again" "$state/iamlet.log" | sed -e 's/^[^ ]* *//' | cut -c1-160
show "node" "curl -s http://10.77.0.1:8181/metrics | grep iamlet_rule"
node curl -s http://10.77.0.1:8181/metrics | grep -E "^iamlet_rule"

bold "7. A signed token instead of an address: the container credentials endpoint (EKS Pod Identity's)"
run_kubectl annotate pod app iam.amazonaws.com/role=s3-reader
show "node" "kubectl create token default --audience pods.eks.amazonaws.com --bound-object-kind Pod --bound-object-name app"
kubectl create token default --audience pods.eks.amazonaws.com --bound-object-kind Pod \
  --bound-object-name app --duration 1h >"$state/app.token"
echo "   (the kubelet would project it into the pod; the SDK reads it again on every refresh)"
show "pod/app" "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=... AWS_EC2_METADATA_DISABLED=true aws sts get-caller-identity"
in_pod AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/v1/credentials \
  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="$state/app.token" AWS_EC2_METADATA_DISABLED=true \
  "$repo/.venv/bin/aws" sts get-caller-identity --query Arn --output text 2>&1 || true
show "pod/app" "curl -H 'Host: attacker.example' -H \"Authorization: \$TOKEN\" http://169.254.170.23/v1/credentials"
in_pod curl -s -m 3 -H 'Host: attacker.example' -H "Authorization: $(cat "$state/app.token")" \
  http://169.254.170.23/v1/credentials; echo

bold "iamlet's decision log"
grep -E "credential decision|request refused" "$state/iamlet.log" | sed -e 's/^[^ ]* *//' | cut -c1-160
echo "   (the grant is logged once: the later requests got the same credentials and are counted, not logged)"

bold "Stopping iamlet (SIGTERM): the rule stays, so the pod is refused, never sent to the real service"
kill "$agent_pid"; wait "$agent_pid" || true; agent_pid=
show "pod/app" "curl http://169.254.169.254/latest/meta-data/iam/security-credentials/"
in_pod curl -sS -m 3 http://169.254.169.254/latest/meta-data/iam/security-credentials/ 2>&1 || true
grep -E "rules left in place" "$state/iamlet.log" | sed -e 's/^[^ ]* *//' | cut -c1-160
show "node" "iamlet cleanup"
node "$repo/target/debug/iamlet" cleanup 2>&1 | sed -e 's/^[^ ]* *//'

bold "Done: tearing down the namespaces and processes"
