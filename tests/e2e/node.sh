#!/usr/bin/env bash
# A simulated Kubernetes node in network namespaces, for the end-to-end
# suite and the demo. Nothing here touches the root namespace's network.
#
#   node.sh up STATE_DIR              node namespace, bridge, fake IMDS, moto, API server
#   node.sh pod-add STATE_DIR NAME IP [IP6]  a pod namespace on a veth to the bridge
#   node.sh down STATE_DIR            kill every process (by PID), delete every namespace
#
# Layout (names prefixed by $(cat STATE_DIR/prefix)):
#   <prefix>-node : lo with 127.0.0.1, 169.254.169.254 and fd00:ec2::254 (fake upstream
#                   IMDS :80 on both), br0 10.77.0.1/16 and fd77::1/64 (the pod-side
#                   interface), moto on 10.77.0.1:5000,
#                   the test API server on 127.0.0.1:6443
#   <prefix>-<pod>: eth0 with the pod's IP (and IPv6 address), default routes via the node
# Environment: IAMLET_BIN_DIR (iamlet, fake-apiserver, fake-imds), IAMLET_TEST_VENV.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${IAMLET_BIN_DIR:-$repo/target/debug}
venv=${IAMLET_TEST_VENV:-$repo/.venv}

NODE_IP=10.77.0.1
NODE_IP6=fd77::1
MOTO_URL=http://$NODE_IP:5000
API_URL=http://127.0.0.1:6443

state=${2:?usage: node.sh up|pod-add|down STATE_DIR ...}
node_ns() { echo "$(cat "$state/prefix")-node"; }

# Starts a background process inside the node namespace; records its PID.
start_in_node() {
  local name=$1; shift
  ip netns exec "$(node_ns)" "$@" >"$state/$name.log" 2>&1 &
  echo "$name $!" >>"$state/pids"
}

wait_for() {
  local what=$1; shift
  for _ in $(seq 1 200); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "node.sh: timed out waiting for $what" >&2
  return 1
}

up() {
  mkdir -p "$state"
  [ -f "$state/prefix" ] || echo "iml$$" >"$state/prefix"
  : >"$state/pids"
  local ns; ns=$(node_ns)
  ip netns add "$ns"
  echo "$ns" >>"$state/netns"
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add 169.254.169.254/32 dev lo
  ip -n "$ns" addr add fd00:ec2::254/128 dev lo nodad
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" addr add "$NODE_IP/16" dev br0
  ip -n "$ns" addr add "$NODE_IP6/64" dev br0 nodad
  ip -n "$ns" link set br0 up

  start_in_node fake-imds "$bin_dir/fake-imds" --listen 169.254.169.254:80
  start_in_node fake-imds6 "$bin_dir/fake-imds" --listen '[fd00:ec2::254]:80'
  start_in_node moto "$venv/bin/moto_server" -H "$NODE_IP" -p 5000
  start_in_node apiserver "$bin_dir/fake-apiserver" --listen 127.0.0.1:6443 --bookmark-interval-seconds 2
  wait_for "moto" ip netns exec "$ns" curl -sf "$MOTO_URL/moto-api/"
  wait_for "the API server" ip netns exec "$ns" curl -sf "$API_URL/api"
  wait_for "the fake IMDS" ip netns exec "$ns" curl -s -o /dev/null -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' http://169.254.169.254/latest/api/token
  wait_for "the fake IMDS on IPv6" ip netns exec "$ns" curl -s -g -o /dev/null -X PUT -H 'x-aws-ec2-metadata-token-ttl-seconds: 60' 'http://[fd00:ec2::254]/latest/api/token'
  ip netns exec "$ns" "$venv/bin/python" "$here/seed_moto.py" "$MOTO_URL" >"$state/node-credentials.env"
}

pod_add() {
  local name=${3:?pod name} ip=${4:?pod IP} ip6=${5:-}
  local prefix; prefix=$(cat "$state/prefix")
  local ns="$prefix-$name" index
  index=$(wc -l <"$state/netns")
  ip netns add "$ns"
  echo "$ns" >>"$state/netns"
  ip -n "$(node_ns)" link add "vh$index" type veth peer name eth0 netns "$ns"
  ip -n "$(node_ns)" link set "vh$index" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$ip/16" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route add default via "$NODE_IP"
  if [ -n "$ip6" ]; then
    ip -n "$ns" addr add "$ip6/64" dev eth0 nodad
    ip -n "$ns" -6 route add default via "$NODE_IP6"
  fi
}

down() {
  [ -d "$state" ] || return 0
  if [ -f "$state/pids" ]; then
    while read -r _ pid; do kill "$pid" 2>/dev/null || true; done <"$state/pids"
    sleep 0.2
    while read -r _ pid; do kill -9 "$pid" 2>/dev/null || true; done <"$state/pids"
  fi
  if [ -f "$state/netns" ]; then
    while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done <"$state/netns"
  fi
  rm -f "$state/pids" "$state/netns"
}

case ${1:-} in
  up) up ;;
  pod-add) pod_add "$@" ;;
  down) down ;;
  *) echo "usage: node.sh up|pod-add|down STATE_DIR ..." >&2; exit 2 ;;
esac
