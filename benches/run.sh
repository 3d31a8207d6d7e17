#!/usr/bin/env bash
# iamlet's benchmarks, through the real path: a client in a pod network
# namespace -> the nftables DNAT rule -> the agent, on a simulated node
# (tests/e2e/node.sh). Run on demand as root; not part of CI. Results go to
# stdout and to $BENCH_OUT (default target/bench-results.txt).
#
#   benches/run.sh            # soak of 120 s
#   BENCH_SOAK=600 benches/run.sh   # the 10-minute soak
#
# Core budget: the server under test (iamlet or nginx) is pinned to CPU 1,
# the load generator to CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
soak=${BENCH_SOAK:-120}
out=${BENCH_OUT:-$repo/target/bench-results.txt}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }

scripts/setup-test-env.sh
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; }
done
cargo build --release --locked --workspace --quiet
export IAMLET_BIN_DIR=$repo/target/release
bin=$IAMLET_BIN_DIR/iamlet
venv=$repo/.venv

state=$(mktemp -d /tmp/iamlet-bench.XXXXXX)
echo imlbench >"$state/prefix"
NODE=imlbench-node
agent_pid= nginx_pid= proxy_pid=
cleanup() {
  set +e
  for pid in $agent_pid $nginx_pid $proxy_pid; do kill "$pid" 2>/dev/null; done
  ip netns exec $NODE "$bin" cleanup >/dev/null 2>&1
  tests/e2e/node.sh down "$state"
  rm -rf "$state"
}
trap cleanup EXIT

tests/e2e/node.sh up "$state"
set -a; . "$state/node-credentials.env"; set +a
API=http://127.0.0.1:6443
in_node() { ip netns exec $NODE "$@"; }
in_pod() { local pod=$1; shift; ip netns exec "imlbench-$pod" "$@"; }
now_ns() { date +%s%N; }
report() { echo "$*" | tee -a "$out"; }
: >"$out"

start_agent() {  # start_agent STS_ENDPOINT [extra flags]
  local sts=$1; shift
  ip netns exec $NODE env AWS_REGION=us-east-1 AWS_ENDPOINT_URL="$sts" \
    taskset -c 1 "$bin" --iptables=true --host-interface=br0 --host-ip=10.77.0.1 --app-port=8181 \
    --api-server=$API --node=node-a --base-role-arn=arn:aws:iam::123456789012:role/ \
    --pod-request-rate=0 --log-level=warn "$@" >"$state/agent.log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 600); do
    in_node curl -sf http://10.77.0.1:8181/readyz >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  cat "$state/agent.log"; return 1
}
stop_agent() { kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status"; }
metric() { in_node curl -s http://10.77.0.1:8181/metrics | awk -v s="$1" 'index($0, s" ") == 1 {print $2}'; }
add_pod() {  # add_pod NAME IP ROLE: a pod with its own network namespace
  tests/e2e/node.sh pod-add "$state" "$1" "$2"
  python3 -c 'import json,sys; n,ip,role=sys.argv[1:4]; print(json.dumps({"apiVersion":"v1","kind":"Pod","metadata":{"name":n,"namespace":"default","annotations":({"iam.amazonaws.com/role":role} if role else {})},"spec":{"nodeName":"node-a","containers":[{"name":"a","image":"a"}]},"status":{"phase":"Running","podIP":ip,"podIPs":[{"ip":ip}]}}))' "$1" "$2" "${3:-}" \
    | in_node curl -sf -X POST -H 'content-type: application/json' --data-binary @- $API/api/v1/namespaces/default/pods >/dev/null
}
wrk_run() {  # wrk_run CONNECTIONS SECONDS DELAY_MS URL -> RESULT line
  in_pod p0 env WRK_DELAY_MS="$3" taskset -c 0 wrk -t1 -c"$1" -d"$2"s -s benches/latency.lua "$4" | grep '^RESULT'
}
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
percentile() {  # percentile P < numbers
  sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p/100)+0.999); if (i<1) i=1; print a[i]}'
}

report "# iamlet benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $($bin --version)"
CREDS=http://169.254.169.254/latest/meta-data/iam/security-credentials

# 1. Cached-credential throughput and latency, against nginx.
add_pod p0 10.77.0.10 bench-role
start_agent http://10.77.0.1:5000
in_pod p0 curl -sf "$CREDS/bench-role" >"$state/creds.json"
in_pod p0 curl -sf "$CREDS/bench-role" >/dev/null
wrk_run 32 3 0 "$CREDS/bench-role" >/dev/null   # warm-up
iamlet_peak=$(wrk_run 32 10 0 "$CREDS/bench-role")
peak_rps=$(field "$iamlet_peak" rps)
# Half of iamlet's peak rate: connections that each pause 1 ms between
# requests; the count is calibrated so that the offered load is half the peak.
half_connections=$(awk -v r="$peak_rps" 'BEGIN {printf "%d", r / 2 / 1000 + 1}')
for _ in 1 2 3; do
  got=$(field "$(wrk_run "$half_connections" 3 1 "$CREDS/bench-role")" rps)
  half_connections=$(awk -v c="$half_connections" -v g="$got" -v r="$peak_rps" 'BEGIN {n = int(c * (r / 2) / g + 0.5); print (n < 1 ? 1 : n)}')
done
iamlet_half=$(wrk_run "$half_connections" 10 1 "$CREDS/bench-role")
stop_agent   # the rule stays: the same DNAT now reaches nginx on the same port
mkdir -p "$state/www/latest/meta-data/iam/security-credentials" "$state/nginx"
cp "$state/creds.json" "$state/www/latest/meta-data/iam/security-credentials/bench-role"
cat >"$state/nginx.conf" <<NGINX
worker_processes 1;
user root;
pid $state/nginx/nginx.pid;
error_log $state/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/plain;
  client_body_temp_path $state/nginx; proxy_temp_path $state/nginx; fastcgi_temp_path $state/nginx;
  uwsgi_temp_path $state/nginx; scgi_temp_path $state/nginx;
  server { listen 10.77.0.1:8181; root $state/www; }
}
NGINX
# Started directly, not through a shell function, so that $! is nginx's PID.
ip netns exec $NODE taskset -c 1 nginx -c "$state/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
sleep 0.5
wrk_run 32 3 0 "$CREDS/bench-role" >/dev/null
nginx_peak=$(wrk_run 32 10 0 "$CREDS/bench-role")
nginx_half=$(wrk_run "$half_connections" 10 1 "$CREDS/bench-role")
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true; nginx_pid=
report ""
report "## 1. Cached credentials, closed loop (wrk -c32, 10 s), server on 1 core"
report "iamlet: $iamlet_peak"
report "nginx:  $nginx_peak (same bytes, same DNAT rule)"
report "ratio iamlet/nginx throughput: $(awk -v a="$peak_rps" -v b="$(field "$nginx_peak" rps)" 'BEGIN {printf "%.2f", a/b}')"
report "at half of iamlet's peak ($half_connections connections, 1 ms pause each):"
report "iamlet: $iamlet_half"
report "nginx:  $nginx_half"

# 2. A pod's first request after it appears, STS 200 ms slower.
ip netns exec $NODE "$venv/bin/python" benches/delay_proxy.py 10.77.0.1 5001 10.77.0.1 5000 200 &
proxy_pid=$!
sleep 0.3
start_agent http://10.77.0.1:5001
sleep 1   # p0's credentials are prefetched: its requests are warm
warm=()
for _ in $(seq 1 50); do warm+=("$(in_pod p0 curl -s -o /dev/null -w '%{time_total}' "$CREDS/bench-role")"); done
first_now=() first_after=()
for n in $(seq 1 20); do
  add_pod "f$n" "10.77.1.$n" bench-role
  # The pod object carries its IP once its sandbox exists; its container
  # starts later. Ask at once (the worst case) ...
  first_now+=("$(in_pod "f$n" curl -s -o /dev/null -w '%{time_total}' "$CREDS/bench-role")")
done
for n in $(seq 21 40); do
  add_pod "f$n" "10.77.1.$n" bench-role
  sleep 0.5   # ... and after a container start's 500 ms.
  first_after+=("$(in_pod "f$n" curl -s -o /dev/null -w '%{time_total}' "$CREDS/bench-role")")
done
stop_agent
ms() { awk '{printf "%.1f", $1 * 1000}'; }
report ""
report "## 2. First request of a new pod, STS +200 ms (curl time_total; 50 warm, 20 + 20 new pods)"
report "warm request p50 $(printf '%s\n' "${warm[@]}" | percentile 50 | ms) ms, p99 $(printf '%s\n' "${warm[@]}" | percentile 99 | ms) ms"
report "first request 500 ms after the pod appears: p50 $(printf '%s\n' "${first_after[@]}" | percentile 50 | ms) ms, p99 $(printf '%s\n' "${first_after[@]}" | percentile 99 | ms) ms"
report "first request at the moment the pod appears: p50 $(printf '%s\n' "${first_now[@]}" | percentile 50 | ms) ms, p99 $(printf '%s\n' "${first_now[@]}" | percentile 99 | ms) ms"

# 3. Grant and revoke propagation.
start_agent http://10.77.0.1:5000
kubectl_node() { in_node env HOME="$state" kubectl --server=$API "$@"; }
lags=()
for i in $(seq 1 20); do
  if (( i % 2 )); then want=role-a; else want=role-b; fi
  kubectl_node annotate --overwrite pod p0 "iam.amazonaws.com/role=$want" >/dev/null
  t0=$(now_ns)
  until [ "$(in_pod p0 curl -s "$CREDS/")" = "$want" ]; do :; done
  lags+=("$(( ($(now_ns) - t0) / 1000 ))")
done
kubectl_node annotate pod p0 iam.amazonaws.com/role- >/dev/null
t0=$(now_ns)
until [ "$(in_pod p0 curl -s -o /dev/null -w '%{http_code}' "$CREDS/")" = "404" ]; do :; done
revoke_us=$(( ($(now_ns) - t0) / 1000 ))
report ""
report "## 3. Annotation change to first request that sees it (20 changes; includes one curl, ~5 ms)"
report "grant/change p50 $(printf '%s\n' "${lags[@]}" | percentile 50) us, p99 $(printf '%s\n' "${lags[@]}" | percentile 99) us; revoke $revoke_us us"
kubectl_node annotate --overwrite pod p0 iam.amazonaws.com/role=bench-role >/dev/null

# 4. STS calls: N pods x M requests on one role.
calls_start=$(metric 'iamlet_sts_calls_total{code="success"}')
for n in $(seq 1 5); do add_pod "s$n" "10.77.2.$n" shared-role; done
sleep 1
calls0=$(metric 'iamlet_sts_calls_total{code="success"}')
for n in $(seq 1 5); do in_pod "s$n" curl -s -o /dev/null "$CREDS/shared-role"; done
calls1=$(metric 'iamlet_sts_calls_total{code="success"}')
for n in $(seq 1 5); do for _ in $(seq 1 40); do in_pod "s$n" curl -s -o /dev/null "$CREDS/shared-role"; done; done
calls40=$(metric 'iamlet_sts_calls_total{code="success"}')
add_pod cold 10.77.2.50 cold-role
seq 1 50 | xargs -P50 -I{} ip netns exec imlbench-cold curl -s -o /dev/null "$CREDS/cold-role"
calls_cold=$(metric 'iamlet_sts_calls_total{code="success"}')
report ""
report "## 4. AssumeRole calls (5 pods sharing one role, one session each)"
report "calls when the 5 pods appeared (prefetch): $(( calls0 - calls_start )); then for 5x1 requests: $(( calls1 - calls0 )); for 5x40 more: $(( calls40 - calls1 ))"
report "a new pod with 50 concurrent first requests: +$(( calls_cold - calls40 )) call(s)"
stop_agent

# 5. Memory, and 6. start and relist at 1,000 pods.
start_agent http://10.77.0.1:5000
sleep 2
idle=$(rss_kib)
in_node "$venv/bin/python" benches/pods.py $API create 110 10.80.0.1 load-role node-a
sleep 5
at110=$(rss_kib)
in_node "$venv/bin/python" benches/pods.py $API create 890 10.80.1.1 load-role node-a more
sleep 10
at1000=$(rss_kib)
stop_agent
t0=$(now_ns)
start_agent http://10.77.0.1:5000
ready_ms=$(( ($(now_ns) - t0) / 1000000 ))
# Let the restart's prefetch of 1,000 sessions finish before measuring.
prev=-1
until cur=$(metric 'iamlet_credential_prefetches_total{result="success"}'); [ "$cur" = "$prev" ]; do
  prev=$cur; sleep 2
done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$agent_pid/stat"; }
idle_before=$(cpu_ticks); sleep 5; idle_after=$(cpu_ticks)
cpu_before=$(cpu_ticks)
t0=$(now_ns)
in_node curl -s -X POST $API/fake/compact >/dev/null
until [ "$(metric 'iamlet_watch_relists_total{kind="pods"}')" = "2" ]; do sleep 0.05; done
relist_ms=$(( ($(now_ns) - t0) / 1000000 ))
sleep $(( 5 - relist_ms / 1000 ))
cpu_after=$(cpu_ticks)
report ""
report "## 5. Agent RSS"
report "idle (1 pod): $((idle / 1024)) MiB; 110 pods: $((at110 / 1024)) MiB; 1,000 pods: $((at1000 / 1024)) MiB"
report ""
report "## 6. Start and relist with 1,000 pods"
report "start to ready (incl. rule install, initial list): $ready_ms ms"
report "relist after a 410: done $relist_ms ms after the compaction (includes kube-rs' reconnect backoff)"
report "CPU in the 5 s around the relist: $(( (cpu_after - cpu_before) * 10 )) ms; in 5 idle s: $(( (idle_after - idle_before) * 10 )) ms"

# 5b. Soak: RSS under load for $soak s.
samples=()
in_pod p0 taskset -c 0 wrk -t1 -c16 -d"${soak}s" "$CREDS/bench-role" >/dev/null &
wrk_pid=$!
for _ in $(seq 1 $(( soak / 10 ))); do sleep 10; samples+=("$(( $(rss_kib) / 1024 ))"); done
wait "$wrk_pid" || true
report ""
report "## 5b. RSS (MiB) every 10 s during a ${soak} s closed-loop load at 1,000 pods"
report "${samples[*]}"
stop_agent
echo "results in $out"
