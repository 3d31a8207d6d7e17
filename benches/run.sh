#!/usr/bin/env bash
# iamlet's benchmarks, through the real path: a client in a pod network
# namespace -> the nftables DNAT rule -> the agent, on a simulated node
# (tests/e2e/node.sh). Run on demand as root; not part of CI. Results go to
# stdout and to $BENCH_OUT (default $CARGO_TARGET_DIR/bench-results.txt);
# each agent run's log to $BENCH_LOGS (default $CARGO_TARGET_DIR/bench-logs).
#
#   benches/run.sh            # soak of 120 s
#   BENCH_SOAK=600 benches/run.sh   # the 10-minute soak
#   CARGO_TARGET_DIR=/tmp/bench-target benches/run.sh   # build (and read binaries) there
#
# Core budget: the server under test (iamlet or nginx) is pinned to CPU 1,
# the load generator to CPU 0.
set -euo pipefail
. "$(dirname "$0")/../scripts/as-root.sh"
cd "$(dirname "$0")/.."
repo=$(pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
soak=${BENCH_SOAK:-120}
out=${BENCH_OUT:-$target_dir/bench-results.txt}
logs=${BENCH_LOGS:-$target_dir/bench-logs}

scripts/setup-test-env.sh
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null; }
done
CARGO_TARGET_DIR=$target_dir cargo build --release --locked --workspace --quiet
export IAMLET_BIN_DIR=$target_dir/release
bin=$IAMLET_BIN_DIR/iamlet
venv=$repo/.venv

state=$(mktemp -d /tmp/iamlet-bench.XXXXXX)
echo imlbench >"$state/prefix"
NODE=imlbench-node
agent_pid= nginx_pid= proxy_pid= rss_pid= probe_pid= flood_pid=
cleanup() {
  set +e
  for pid in $flood_pid $probe_pid $rss_pid $agent_pid $nginx_pid $proxy_pid; do kill "$pid" 2>/dev/null; done
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
mkdir -p "$(dirname "$out")" "$logs"
rm -f "$logs"/agent-*.log
: >"$out"

# The agent as a DaemonSet runs it: the node's wiring flags and nothing else
# (default log level info, with the decision log; default limits).
agent_runs=0 agent_log=
start_agent_defaults() {  # start_agent_defaults LABEL STS_ENDPOINT [extra flags]
  local label=$1 sts=$2; shift 2
  agent_runs=$((agent_runs + 1))
  agent_log=$logs/agent-$agent_runs-$label.log
  ip netns exec $NODE env AWS_REGION=us-east-1 AWS_ENDPOINT_URL="$sts" \
    taskset -c 1 "$bin" --iptables=true --host-interface=br0 --host-ip=10.77.0.1 --app-port=8181 \
    --api-server=$API --node=node-a --base-role-arn=arn:aws:iam::123456789012:role/ \
    "$@" >"$agent_log" 2>&1 &
  agent_pid=$!
  for _ in $(seq 1 600); do
    in_node curl -sf http://10.77.0.1:8181/readyz >/dev/null 2>&1 && return 0
    sleep 0.01
  done
  cat "$agent_log"; return 1
}
# Default flags except the per-pod request rate limit (100/s by default):
# one benchmark pod sends thousands of requests a second, and the limit
# would answer most of them 429 instead of measuring the agent. Section 7
# runs with the limit.
start_agent() {  # start_agent LABEL STS_ENDPOINT [extra flags]
  local label=$1 sts=$2; shift 2
  start_agent_defaults "$label" "$sts" --pod-request-rate=0 "$@"
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
# The numbers mean little on a busy machine: say how busy it was.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
report "load average at start (1, 5, 15 min): $(loadavg)"
CREDS=http://169.254.169.254/latest/meta-data/iam/security-credentials

# 1. Cached-credential throughput and latency, against nginx: iamlet at its
# default flags (log level info, decision log on; --pod-request-rate=0, see
# start_agent), then the same with --log-level=warn.
add_pod p0 10.77.0.10 bench-role
load_section1=$(loadavg)
start_agent 1-default http://10.77.0.1:5000
in_pod p0 curl -sf "$CREDS/bench-role" >"$state/creds.json"
in_pod p0 curl -sf "$CREDS/bench-role" >/dev/null
wrk_run 32 3 0 "$CREDS/bench-role" >/dev/null   # warm-up
iamlet_peak=$(wrk_run 32 10 0 "$CREDS/bench-role")
peak_rps=$(field "$iamlet_peak" rps)
# Half of iamlet's peak rate: connections that each pause 1 ms between
# requests; the count is calibrated so that the offered load is half the peak.
# Kept under the agent's default cap of 64 connections per source address.
per_source_cap=64
half_connections=$(awk -v r="$peak_rps" 'BEGIN {printf "%d", r / 2 / 1000 + 1}')
for _ in 1 2 3; do
  got=$(field "$(wrk_run "$half_connections" 3 1 "$CREDS/bench-role")" rps)
  half_connections=$(awk -v c="$half_connections" -v g="$got" -v r="$peak_rps" -v m="$per_source_cap" \
    'BEGIN {n = int(c * (r / 2) / g + 0.5); n = (n < 1 ? 1 : n); print (n > m ? m : n)}')
done
iamlet_half=$(wrk_run "$half_connections" 10 1 "$CREDS/bench-role")
stop_agent
log_lines=$(wc -l <"$agent_log")
start_agent 1-warn http://10.77.0.1:5000 --log-level=warn
in_pod p0 curl -sf "$CREDS/bench-role" >/dev/null
wrk_run 32 3 0 "$CREDS/bench-role" >/dev/null   # warm-up
iamlet_warn_peak=$(wrk_run 32 10 0 "$CREDS/bench-role")
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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
ms_of() { awk -v u="$1" 'BEGIN {printf "%.2f ms", u/1000}'; }
nginx_rps=$(field "$nginx_peak" rps) nginx_p99=$(field "$nginx_peak" p99_us)
report ""
report "## 1. Cached credentials, closed loop (wrk -c32, 10 s), server on 1 core (taskset -c 1)"
report "load average at the start of this section: $load_section1; at its end: $(loadavg)"
report "iamlet, default flags:      $iamlet_peak"
report "iamlet, --log-level=warn:   $iamlet_warn_peak"
report "nginx:                      $nginx_peak (same bytes, same DNAT rule)"
report "(iamlet ran with --pod-request-rate=0 only: one benchmark pod would otherwise hit the default limit of 100 requests/s per pod)"
report "throughput iamlet/nginx: default flags $(ratio "$peak_rps" "$nginx_rps"), --log-level=warn $(ratio "$(field "$iamlet_warn_peak" rps)" "$nginx_rps")"
report "p99 under saturation iamlet/nginx: default flags $(ratio "$(field "$iamlet_peak" p99_us)" "$nginx_p99") ($(ms_of "$(field "$iamlet_peak" p99_us)") vs $(ms_of "$nginx_p99")), --log-level=warn $(ratio "$(field "$iamlet_warn_peak" p99_us)" "$nginx_p99") ($(ms_of "$(field "$iamlet_warn_peak" p99_us)"))"
report "log lines the default-flag agent wrote during its whole run (decision log at info): $log_lines"
report "at half of iamlet's (default flags) peak ($half_connections connections, 1 ms pause each):"
report "iamlet: $iamlet_half"
report "nginx:  $nginx_half"

# 2. A pod's first request after it appears, STS 200 ms slower.
ip netns exec $NODE "$venv/bin/python" benches/delay_proxy.py 10.77.0.1 5001 10.77.0.1 5000 200 &
proxy_pid=$!
sleep 0.3
start_agent 2-first-request http://10.77.0.1:5001
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
start_agent 3-4-propagation-sts http://10.77.0.1:5000
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

# 4. STS calls: N pods x M requests on one role. Section 3's prefetches
# (one per annotation change) queue in the node's STS budget: let them
# drain first, or they are counted here.
for _ in $(seq 1 300); do
  [ "$(metric 'iamlet_sts_calls_waiting{for="background"}')" = 0 ] \
    && [ "$(metric 'iamlet_sts_calls_waiting{for="pod"}')" = 0 ] && break
  sleep 0.1
done
sleep 1
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
start_agent 5-memory http://10.77.0.1:5000
sleep 2
idle=$(rss_kib)
in_node "$venv/bin/python" benches/pods.py $API create 110 10.80.0.1 load-role node-a
sleep 5
at110=$(rss_kib)
in_node "$venv/bin/python" benches/pods.py $API create 890 10.80.1.1 load-role node-a more
sleep 10
at1000=$(rss_kib)
# 5,000 pods of other nodes: the field selector keeps them from the agent.
in_node "$venv/bin/python" benches/pods.py $API create 5000 10.90.0.1 load-role node-b elsewhere
sleep 10
at1000_5000=$(rss_kib)
in_node "$venv/bin/python" benches/pods.py $API delete 5000 elsewhere
stop_agent
t0=$(now_ns)
start_agent 6-5b-relist-soak http://10.77.0.1:5000
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
report "idle (1 pod): $((idle / 1024)) MiB; 110 pods: $((at110 / 1024)) MiB; 1,000 role-bearing pods: $((at1000 / 1024)) MiB; and 5,000 pods on other nodes: $((at1000_5000 / 1024)) MiB"
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

# 7. Flood: one pod opens 5,000 connections to 169.254.169.254:80 (through
# the DNAT), each with an unfinished request head, and holds them; another
# pod asks for credentials before, during and after. The agent runs with
# default flags only (the per-pod limit of 100 requests/s, 64 connections
# per source address, 2,048 in all), as users run it. The node keeps the
# ~50 pods of the earlier sections; the 1,000 load pods go first.
in_node "$venv/bin/python" benches/pods.py $API delete 110
in_node "$venv/bin/python" benches/pods.py $API delete 890 more
add_pod flood 10.77.3.1 bench-role
add_pod other 10.77.3.2 bench-role
flood_count=5000 flood_hold=12 probe_count=2000 probe_interval_ms=12.5   # 80 requests/s: under the pod's limit
start_agent_defaults 7-flood http://10.77.0.1:5000
sleep 2   # the new pods' credentials are prefetched
in_pod other curl -sf -o /dev/null "$CREDS/bench-role"
refused_before=$(in_node curl -s http://10.77.0.1:8181/metrics | grep '^iamlet_connections_refused_total' || true)
# The node's listen-queue counters: a full accept queue drops SYNs (the
# caller retries after 1 s), and the agent's caps cannot see those.
listen_drops() { in_node awk '/^TcpExt:/ {if (!h) {split($0, k); h=1} else {for (i = 2; i <= NF; i++) if (k[i] == "ListenOverflows" || k[i] == "ListenDrops") printf "%s=%s ", k[i], $i}}' /proc/net/netstat; }
drops_before=$(listen_drops)
load_section7=$(loadavg)
( while :; do
    echo "$(date +%s.%N) $(awk '/VmRSS/ {print $2}' "/proc/$agent_pid/status")"
    sleep 0.1
  done ) >"$state/rss.txt" 2>/dev/null &
rss_pid=$!
# The probe and the flooder are load generators: CPU 0. The flooder runs at
# nice 19 so that its bursts do not delay the probe's own process there.
ip netns exec imlbench-other taskset -c 0 "$venv/bin/python" benches/probe.py \
  "$CREDS/bench-role" $probe_count $probe_interval_ms >"$state/probe.txt" &
probe_pid=$!
sleep 5
ip netns exec imlbench-flood nice -n 19 taskset -c 0 "$venv/bin/python" benches/flood.py \
  169.254.169.254 80 $flood_count $flood_hold >"$state/flood.txt" 2>&1 &
flood_pid=$!
open_peak=0
while kill -0 "$flood_pid" 2>/dev/null; do
  open_now=$(metric iamlet_connections_open); open_now=${open_now%.*}
  (( ${open_now:-0} > open_peak )) && open_peak=$open_now
  sleep 0.5
done
wait "$flood_pid" || { cat "$state/flood.txt"; exit 1; }
flood_pid=
wait "$probe_pid"; probe_pid=
sleep 1
kill "$rss_pid"; wait "$rss_pid" 2>/dev/null || true; rss_pid=
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
refused_after=$(in_node curl -s http://10.77.0.1:8181/metrics | grep '^iamlet_connections_refused_total' || true)
drops_after=$(listen_drops)
stop_agent
for f in flood probe rss; do cp "$state/$f.txt" "$logs/7-$f.txt"; done
report ""
report "## 7. Flood: one pod opens $flood_count connections (unfinished request heads, held ${flood_hold} s after the last connect), agent at default flags"
report "load average at the start of this section: $load_section7; at its end: $(loadavg)"
"$venv/bin/python" - "$state/flood.txt" "$state/probe.txt" "$state/rss.txt" "$probe_interval_ms" "$hwm" <<'PY' | tee -a "$out"
import json, math, sys
flood_path, probe_path, rss_path, interval_ms, hwm_kib = sys.argv[1:6]
summary = [json.loads(l) for l in open(flood_path) if l.startswith("{")][-1]
start, released = summary["start_epoch"], summary["released_epoch"]
def phase(t):
    return "before" if t < start else "during" if t < released else "after"
def pct(values, p):
    v = sorted(values)
    return v[max(1, math.ceil(len(v) * p / 100)) - 1] if v else float("nan")
o, r = summary["at_opened"], summary["at_release"]
print(f"flooder, every connect attempt ended after {summary['seconds_to_open']} s: "
      f"{o['open']} held open, {o['reset']} reset, {o['closed']} closed by the agent, {o['failed']} failed to connect")
print(f"flooder, at the end of the hold: {r['open']} held open, {r['reset']} reset, {r['closed']} closed by the agent, "
      f"{r['failed']} failed to connect; the agent answered on {summary['answered']}; "
      f"closed ones lasted (min/median/max s): {summary['closed_after_s']}")
rss = {"before": [], "during": [], "after": []}
for line in open(rss_path):
    parts = line.split()
    if len(parts) == 2:
        rss[phase(float(parts[0]))].append(int(parts[1]) / 1024)
peak = {k: max(v) if v else float("nan") for k, v in rss.items()}
print(f"agent RSS peak: before {peak['before']:.1f} MiB, during {peak['during']:.1f} MiB, after {peak['after']:.1f} MiB "
      f"(VmHWM {int(hwm_kib) / 1024:.1f} MiB; target < 64 MiB: {'met' if max(peak.values()) < 64 else 'NOT met'})")
probe = {"before": [], "during": [], "after": []}
failed = {"before": 0, "during": 0, "after": 0}
statuses = {}
slow_connects = {"before": 0, "during": 0, "after": 0}
for line in open(probe_path):
    t, ms, status, connect_ms = line.split()
    statuses[status] = statuses.get(status, 0) + 1
    probe[phase(float(t))].append(float(ms))
    if status != "200":
        failed[phase(float(t))] += 1
    if float(connect_ms) >= 900:
        slow_connects[phase(float(t))] += 1
total = sum(len(v) for v in probe.values())
print(f"other pod: {total} credential requests, one new connection each, one every {interval_ms} ms "
      f"(under the default 100 requests/s per pod); status counts {statuses} (0: reset, refused or timed out)")
for k in ("before", "during", "after"):
    v = probe[k]
    print(f"  {k:6} the flood: {len(v):4} requests, p50 {pct(v, 50):.2f} ms, p99 {pct(v, 99):.2f} ms, "
          f"max {max(v) if v else float('nan'):.2f} ms, not 200: {failed[k]}, "
          f"TCP connect >= 900 ms (a dropped SYN): {slow_connects[k]}")
p99 = pct(probe["during"], 99)
print(f"other pod's p99 during the flood: {p99:.2f} ms (target < 10 ms: {'met' if p99 < 10 else 'NOT met'})")
PY
report "agent: connections open at most (iamlet_connections_open, sampled every 0.5 s): $open_peak"
report "agent: connections refused at accept, before: $(echo "${refused_before:-none}" | tr '\n' ' ')"
report "agent: connections refused at accept, after:  $(echo "${refused_after:-none}" | tr '\n' ' ')"
report "node's listen queue (/proc/net/netstat), before: ${drops_before:-?}; after: ${drops_after:-?}"
# 10. The container credentials endpoint (EKS Pod Identity's contract):
# the same pod, the same role and agent at default flags, a token from
# `kubectl create token`; a reviewed token is served from the review cache,
# so this is what a pod's request costs beside the metadata path's.
load_section10=$(loadavg)
start_agent 10-container http://10.77.0.1:5000
for _ in $(seq 1 100); do
  [ "$(metric iamlet_container_credentials_listening)" = 2 ] && break
  sleep 0.05
done
token=$(in_node env HOME="$state" kubectl --server=$API create token default --audience pods.eks.amazonaws.com \
  --bound-object-kind Pod --bound-object-name p0 --duration 1h)
CONTAINER=http://169.254.170.23/v1/credentials
container_run() {  # container_run CONNECTIONS SECONDS -> RESULT line
  in_pod p0 taskset -c 0 wrk -t1 -c"$1" -d"$2"s -H "Authorization: $token" -s benches/latency.lua "$CONTAINER" | grep '^RESULT'
}
in_pod p0 curl -sf -H "Authorization: $token" "$CONTAINER" >/dev/null
container_run 32 3 >/dev/null   # warm-up
container_peak=$(container_run 32 10)
imds_same_run=$(wrk_run 32 10 0 "$CREDS/bench-role")
stop_agent
report ""
report "## 10. Container credentials endpoint (token, cached review) vs the metadata path, same agent, default flags (wrk -c32, 10 s)"
report "load average at the start of this section: $load_section10; at its end: $(loadavg)"
report "container endpoint: $container_peak"
report "metadata path:      $imds_same_run"
report "ratio (container rps / metadata rps): $(awk -v c="$(field "$container_peak" rps)" -v m="$(field "$imds_same_run" rps)" 'BEGIN {printf "%.2f", c / m}')"

echo "results in $out; agent logs in $logs"
