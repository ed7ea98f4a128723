#!/usr/bin/env bash
# Three cluster nodes and a private redis-server on this machine, every message crossing
# nodes: `tcpchat bench ... throughput` (100 clients, window 64), then Redis's CPU per
# delivered message from INFO before and after (docs/cluster.md, "Cost per message").
#
#   bench/cluster-throughput.sh [SERVER_BIN] [ROUNDS]
#   SCENARIO=latency CLIENTS=200 RATE=5000 bench/cluster-throughput.sh [SERVER_BIN] [ROUNDS]
#
# SERVER_BIN (default target/release/tcpchat) runs the nodes; the load generator is always
# BENCH_BIN (default target/release/tcpchat), so two servers can be compared under the same
# load: run it with each, alternating. Environment: SECONDS_PER_RUN (5), CLIENTS (100),
# WINDOW (64), REDIS_PORT (16390), BASE_PORT (15401: nodes on BASE_PORT..BASE_PORT+2),
# NODES (3; with 1 every message is local).
# Prints one line per round: delivered/s, delivered total, Redis's and the nodes' CPU per
# delivered message (µs; the nodes' summed over both ends), errors, latency, load average.
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

publish_stats() { # PUBLISH calls and the µs Redis spent in them
    redis-cli -p "$rport" INFO commandstats | tr -d '\r' |
        awk -F'[:=,]' '/^cmdstat_publish:/ { print $3, $5; found = 1 } END { if (!found) print 0, 0 }'
}

redis_cpu() { # seconds of CPU Redis has used (user + sys, main thread and all)
    redis-cli -p "$rport" INFO cpu | tr -d '\r' |
        awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.6f\n", s }'
}

redis-server --port "$rport" --save '' --appendonly no --daemonize no \
    >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$rport" PING >/dev/null 2>&1 && break; sleep 0.1; done

node_cpu() { # seconds of CPU the three nodes have used, together
    local t=0
    for p in "${node_pids[@]}"; do
        t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.6f\n", t / hz }'
}

nodes=""
node_pids=()
for i in $(seq 0 $((${NODES:-3} - 1))); do
    port=$((base + i))
    "$server" serve --listen "127.0.0.1:$port" --cluster "redis://127.0.0.1:$rport" \
        --node-id "n$((i + 1))" --limits off --log-level warn >"$work/n$i.log" 2>&1 &
    pids+=($!)
    node_pids+=($!)
    nodes="${nodes:+$nodes,}127.0.0.1:$port"
done
# A fresh Redis settles (logins get BUSY) for 3 s; give the nodes time to register.
sleep 4.5

for r in $(seq "$rounds"); do
    before=$(redis_cpu)
    nodes_before=$(node_cpu)
    pub_before=$(publish_stats)
    if [ "${SCENARIO:-throughput}" = latency ]; then
        load_args=(latency --rate "${RATE:-5000}")
    else
        load_args=(throughput --window "$window")
    fi
    "$bench" bench "$nodes" "${load_args[@]}" -n "$clients" \
        --duration "${secs}s" --json >"$work/out.json" 2>"$work/bench.err"
    after=$(redis_cpu)
    nodes_after=$(node_cpu)
    pub_after=$(publish_stats)
    python3 - "$r" "$before" "$after" "$(cut -d' ' -f1-3 /proc/loadavg)" "$work/out.json" \
        "$nodes_before" "$nodes_after" "$pub_before" "$pub_after" <<'PY'
import json, sys
r, before, after, load = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
m = json.load(open(sys.argv[5]))["messages"]
n = m["delivered"]
us = (after - before) * 1e6 / n if n else float("nan")
node_us = (float(sys.argv[7]) - float(sys.argv[6])) * 1e6 / n if n else float("nan")
(c0, u0), (c1, u1) = (map(float, a.split()) for a in sys.argv[8:10])
pubs = c1 - c0
per_pub = (u1 - u0) / pubs if pubs else float("nan")
print(f"round {r}: {pubs:.0f} PUBLISH ({pubs / n if n else float('nan'):.3f} per message, "
      f"{per_pub:.2f} us each in Redis)")
print(f"round {r}: {m['delivered_per_sec']:.0f} delivered/s, {n} delivered, "
      f"redis {us:.2f} us/message, nodes {node_us:.2f} us/message (both ends), {m['lost']} lost, {m['order_violations']} out of order, "
      f"{m['send_failed']} refused, p50 {m['latency']['p50_us'] / 1000:.2f} ms, "
      f"p99 {m['latency']['p99_us'] / 1000:.2f} ms, load {load}")
PY
    if [ -n "${VERBOSE:-}" ]; then cat "$work/out.json" "$work/bench.err"; fi
done
