#!/usr/bin/env bash
# Three cluster nodes and a private redis-server on this machine, every message crossing
# nodes: `tcpchat bench ... throughput` (100 clients, window 64), then Redis's CPU per
# delivered message from INFO before and after (docs/cluster.md, "Cost per message").
#
#   bench/cluster-throughput.sh [SERVER_BIN] [ROUNDS]
#
# SERVER_BIN (default target/release/tcpchat) runs the nodes; the load generator is always
# BENCH_BIN (default target/release/tcpchat), so two servers can be compared under the same
# load: run it with each, alternating. Environment: SECONDS_PER_RUN (5), CLIENTS (100),
# WINDOW (64), REDIS_PORT (16390), BASE_PORT (15401: nodes on BASE_PORT..BASE_PORT+2).
# Prints one line per round: delivered/s, delivered total, Redis CPU µs per message, load.
set -euo pipefail

server=${1:-target/release/tcpchat}
rounds=${2:-1}
bench=${BENCH_BIN:-target/release/tcpchat}
secs=${SECONDS_PER_RUN:-5}
clients=${CLIENTS:-100}
window=${WINDOW:-64}
rport=${REDIS_PORT:-16390}
base=${BASE_PORT:-15401}
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

redis_cpu() { # seconds of CPU Redis has used (user + sys, main thread and all)
    redis-cli -p "$rport" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}

redis-server --port "$rport" --save '' --appendonly no --daemonize no \
    >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done

nodes=""
for i in 0 1 2; do
    port=$((base + i))
    "$server" serve --listen "127.0.0.1:$port" --cluster "redis://127.0.0.1:$rport" \
        --node-id "n$((i + 1))" --limits off --log-level warn >"$work/n$i.log" 2>&1 &
    pids+=($!)
    nodes="${nodes:+$nodes,}127.0.0.1:$port"
done
# A fresh Redis settles (logins get BUSY) for 3 s; give the nodes time to register.
sleep 4.5

for r in $(seq "$rounds"); do
    before=$(redis_cpu)
    "$bench" bench "$nodes" throughput -n "$clients" --window "$window" \
        --duration "${secs}s" --json >"$work/out.json" 2>"$work/bench.err"
    after=$(redis_cpu)
    python3 - "$r" "$before" "$after" "$(cut -d' ' -f1-3 /proc/loadavg)" "$work/out.json" <<'PY'
import json, sys
r, before, after, load = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
m = json.load(open(sys.argv[5]))["messages"]
n = m["delivered"]
us = (after - before) * 1e6 / n if n else float("nan")
print(f"round {r}: {m['delivered_per_sec']:.0f} delivered/s, {n} delivered, "
      f"redis {us:.2f} us/message, {m['lost']} lost, {m['order_violations']} out of order, "
      f"{m['send_failed']} refused, load {load}")
PY
    if [ -n "${VERBOSE:-}" ]; then cat "$work/out.json" "$work/bench.err"; fi
done
