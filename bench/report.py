"""Turns bench/compare's JSON results into docs/performance.md (called by bench/compare)."""
import glob, json, os, platform, statistics, subprocess, sys

results, out, runs, duration, elapsed, idle_clients, scale_clients = sys.argv[1:8]
rounds = sys.argv[8] if len(sys.argv) > 8 else "0"
only = sys.argv[9] if len(sys.argv) > 9 else "all"
SERVERS = ["tcpchat", "ngircd", "inspircd"]
# The three-node cluster's column, beside the single process (its rows only).
CLUSTER = "cluster3"
CLUSTER_ROWS = {"throughput64", "throughput16", "latency"}
# The interleaved latency rounds, in the order they ran.
ROUND_SERVERS = [("tcpchat", "tcpchat"), ("baseline", "tcpchat, `--baseline` binary"), ("relay", "minimal relay (bench/relay)"),
                 ("inspircd", "InspIRCd"), ("ngircd", "ngircd"),
                 ("cluster3", "tcpchat, 3 nodes + Redis")]
LAYOUTS = ["pinned", "unpinned"]


def load(server, layout, name):
    reports = []
    for path in sorted(glob.glob(f"{results}/{server}.{layout}.{name}.*.json")):
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (json.JSONDecodeError, OSError):
            err = path[:-5] + ".err"
            msg = open(err).read().strip() if os.path.exists(err) else "no output"
            reports.append({"error": msg})
    return reports


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def metric(server, layout, name, get):
    return med([get(r) for r in load(server, layout, name) if "error" not in r])


def problems(server, layout, name):
    rs = load(server, layout, name)
    bad = [r for r in rs if "error" in r or r.get("problems")]
    if not bad:
        return ""
    first = bad[0].get("error") or "; ".join(bad[0]["problems"][:2])
    return f"{len(bad)}/{len(rs)} runs: {first}"


def msgs(k):
    return lambda r: (r.get("messages") or {}).get(k)


def lat(k):
    return lambda r: ((r.get("messages") or {}).get("latency") or {}).get(k)


def fmt_rate(v):
    return "–" if v is None else f"{v:,.0f}"


def fmt_ms(v):
    return "–" if v is None else f"{v / 1000:.3f} ms"


def fmt_ratio(a, b, higher_better=True):
    if a is None or b is None or a == 0 or b == 0:
        return "–"
    return f"{(a / b if higher_better else b / a):.2f}×"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


ROWS = [
    ("throughput, window 64 (delivered msg/s)", "throughput64", msgs("delivered_per_sec"), fmt_rate, True),
    ("throughput, window 16 (delivered msg/s)", "throughput16", msgs("delivered_per_sec"), fmt_rate, True),
    ("latency at 20,000 msg/s, p50", "latency", lat("p50_us"), fmt_ms, False),
    ("latency at 20,000 msg/s, p99", "latency", lat("p99_us"), fmt_ms, False),
    ("latency at 20,000 msg/s, p99.9", "latency", lat("p999_us"), fmt_ms, False),
    ("latency at 20,000 msg/s, max", "latency", lat("max_us"), fmt_ms, False),
    ("connect burst of 2,000: logged in", "connect", lambda r: r["login"]["logged_in"], fmt_rate, True),
    ("connect burst of 2,000: logins/s", "connect", lambda r: r["login"]["logins_per_sec"], fmt_rate, True),
    ("connect burst of 2,000: all in after (s)", "connect", lambda r: r["login"]["seconds_until_all_in"], lambda v: "–" if v is None else f"{v:.2f}", False),
    ("fan-in 99→1, window 8 (delivered msg/s)", "fanin", msgs("delivered_per_sec"), fmt_rate, True),
    ("fan-in: server peak RSS (MiB)", "fanin", lambda r: (r.get("memory") or {}).get("peak_bytes"), lambda v: "–" if v is None else f"{v / 2**20:.1f}", False),
]

def spread(values, fmt):
    """median (min–max) of the values that exist."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values)).replace(' ms', '')}–{fmt(max(values))})"


def server_side(k):
    return lambda r: ((r.get("messages") or {}).get("server_latency") or {}).get(k)


def lag(k):
    return lambda r: ((r.get("messages") or {}).get("send_lag") or {}).get(k)


def bench_cpu(r):
    return (r.get("messages") or {}).get("bench_cpu")


def load_avgs(server, name):
    out = []
    for path in sorted(glob.glob(f"{results}/{server}.pinned.{name}.*.load")):
        try:
            out.append(float(open(path).read().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def interleaved(w):
    """The interleaved rounds' table (see bench/compare)."""
    w(f"## Latency, interleaved rounds (pinned, {rounds} rounds)")
    w("")
    rate = os.environ.get("COMPARE_RATE", "20000")
    w(f"`bench/compare` runs `tcpchat bench latency -n 200 -r {rate} -d {duration}` (classic dialect; IRC against")
    w("the IRC servers) against each server in turn, a fresh process each time, server on core 0 and bench")
    w(f"on core 1, and repeats the round {rounds} times: the machine's noise falls on every server alike. Each")
    w("cell is the median over the rounds, with the lowest and highest in brackets. *Bench lag* is how late")
    w("the bench wrote each message after its intended send time (its own timer and scheduler: part of every")
    w("latency here); *server* is tcpchat's own histogram (read of the `SEND` to the write of the `DELIVERY`,")
    w("from `/metrics`; bucket upper bounds, so \"at most\"), which no other server offers. *Bench CPU* is the")
    w("bench's own CPU over the run in cores: near 1.0 its one pinned core is saturated, and its queueing, not")
    w("the server's, makes the tail.")
    if os.environ.get("COMPARE_REALTIME"):
        w("")
        w("Server and bench ran at real-time priority (`--realtime`: `chrt -f 10`), so the machine's other jobs")
        w("could not preempt them, except that the kernel still gives waiting ordinary jobs up to 50 ms a second")
        w("(RT throttling): that lands in the far tail of every server alike.")
    w("")
    w("| server | p50 | p99 | p99.9 | max | bench lag p99 | bench lag p99.9 | bench CPU | server p99 | server p99.9 | load avg |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in ROUND_SERVERS:
        rs = [r for r in load(key, "pinned", "interleaved") if "error" not in r]
        if not rs:
            continue
        get = lambda f: [f(r) for r in rs]
        loads = load_avgs(key, "interleaved")
        load_txt = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"
        w(f"| {label} | {spread(get(lat('p50_us')), fmt_ms)} | {spread(get(lat('p99_us')), fmt_ms)} | "
          f"{spread(get(lat('p999_us')), fmt_ms)} | {spread(get(lat('max_us')), fmt_ms)} | "
          f"{spread(get(lag('p99_us')), fmt_ms)} | {spread(get(lag('p999_us')), fmt_ms)} | "
          f"{spread(get(bench_cpu), lambda v: f'{v:.2}')} | "
          f"{spread(get(server_side('p99_us')), fmt_ms)} | {spread(get(server_side('p999_us')), fmt_ms)} | {load_txt} |")
    w("")
    notes = [(label, problems(key, "pinned", "interleaved")) for key, label in ROUND_SERVERS]
    notes = [(l, p) for l, p in notes if p]
    if notes:
        w("Problems the bench reported in the rounds:")
        w("")
        for label, p in notes:
            w(f"- {label}: {p}")
        w("")


def room_rounds(w):
    """The interleaved room rounds' table (bench/compare --only room)."""
    rate = float(os.environ.get("COMPARE_RATE", "20000"))
    w(f"## Room, interleaved rounds (pinned, {rounds} rounds)")
    w("")
    w(f"`tcpchat bench ADDR room -n 200 --senders 10 -r {rate:,.0f} -d {duration}` against tcpchat with history (its")
    w("default extensions), tcpchat with `--extensions keepalive,presence,accounts,rooms` (history off) and")
    w("InspIRCd's channel, one after the other, a fresh process each, server on core 0 and bench on core 1.")
    w("Medians over the rounds, lowest and highest in brackets; *lost* counts deliveries never received")
    w("(a server drops a member it cannot write to in time: a room never waits for one).")
    if os.environ.get("COMPARE_REALTIME"):
        w("Server and bench at real-time priority (`--realtime`).")
    w("")
    w("| server | deliveries/s | vs InspIRCd | p50 | p99 | lost | bench CPU | bench lag p99 | load avg |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = [("tcpchat", "tcpchat, history on"), ("tcpchat-nohist", "tcpchat, history off"), ("inspircd", "InspIRCd")]
    insp = [r for r in load("inspircd", "pinned", "roomround") if "error" not in r]
    insp_med = med([msgs("delivered_per_sec")(r) for r in insp])
    for key, label in labels:
        rs = [r for r in load(key, "pinned", "roomround") if "error" not in r]
        if not rs:
            continue
        get = lambda f: [f(r) for r in rs]
        d = get(msgs("delivered_per_sec"))
        loads = load_avgs(key, "roomround")
        load_txt = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "–"
        ratio = fmt_ratio(med(d), insp_med) if key != "inspircd" else ""
        w(f"| {label} | {spread(d, fmt_rate)} | {ratio} | {spread(get(lat('p50_us')), fmt_ms)} | "
          f"{spread(get(lat('p99_us')), fmt_ms)} | {spread(get(msgs('lost')), fmt_rate)} | "
          f"{spread(get(bench_cpu), lambda v: f'{v:.2}')} | {spread(get(lag('p99_us')), fmt_ms)} | {load_txt} |")
    w("")
    for key, label in labels:
        p = problems(key, "pinned", "roomround")
        if p:
            w(f"- {label}: {p}")
    w("")


if only == "room":
    lines = []
    room_rounds(lines.append)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    sys.exit(0)

if only == "latency":
    lines = []
    interleaved(lines.append)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    sys.exit(0)

lines = []
w = lines.append
w("# Performance")
w("")
w("Measured by `bench/compare` (one command; see the README). Every number below is the median of")
w(f"{runs} runs of {duration} per scenario, tcpchat, ngircd and InspIRCd in the same run on the same")
w(f"machine over loopback. This run, `bench/compare --runs {runs} --duration {duration}` (the defaults), took")
w(f"{int(elapsed) // 60} min {int(elapsed) % 60} s after the release build. Regenerate with `bench/compare`;")
w("the hand-written analysis at the end comes from `bench/notes.md`.")
w("")
w("## Machine and versions")
w("")
CPU = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
MEM = sh("free -g | awk '/Mem:/{print $2}'")
w(f"- CPU: {CPU}, {os.cpu_count()} logical CPUs")
w(f"- Memory: {MEM} GiB; kernel {platform.release()}; open-file limit {sh('ulimit -Hn')}")
w(f"- tcpchat: `{sh('$CARGO_TARGET_DIR/release/tcpchat --version')}` (release build)")
w(f"- ngircd: `{sh('ngircd --version | head -1')}`")
w(f"- InspIRCd: `{sh('inspircd --version | head -1')}`")
w("- Configs: `bench/conf/` (flood control, fake lag and command-rate limits off; connection limits raised; no DNS or ident); tcpchat with `--limits off`, the same way (its abuse limits are measured on their own under \"Abuse limits\")")
w("- Load: `tcpchat bench`, 64-byte message bodies; classic dialect against tcpchat, IRC against the peers.")
w("  A classic message costs tcpchat two lines out (`DELIVERY` to the recipient, `SEND-OK` to the sender); an IRC")
w("  `PRIVMSG` costs one.")
ALL_LOADS = []
for path in glob.glob(f"{results}/*.load"):
    try:
        ALL_LOADS.append(float(open(path).read().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
if ALL_LOADS:
    w(f"- Other load: 1-minute load average {min(ALL_LOADS):.1f} to {max(ALL_LOADS):.1f} at the end of the runs (2 cores; above")
    w("  about 2 other jobs were competing for the CPU, and every figure below is lower or slower for it)")
w("")
for layout in LAYOUTS:
    title = "pinned: server on core 0, bench on core 1" if layout == "pinned" else "unpinned: both free to use both cores"
    w(f"## Results, {title}")
    w("")
    w("| scenario | tcpchat | tcpchat, 3 nodes + Redis | ngircd | InspIRCd | tcpchat vs ngircd | tcpchat vs InspIRCd |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for label, name, get, fmt, higher in ROWS:
        vals = [metric(s, layout, name, get) for s in SERVERS]
        cluster = fmt(metric(CLUSTER, layout, name, get)) if name in CLUSTER_ROWS else ""
        w(f"| {label} | {fmt(vals[0])} | {cluster} | {fmt(vals[1])} | {fmt(vals[2])} | {fmt_ratio(vals[0], vals[1], higher)} | {fmt_ratio(vals[0], vals[2], higher)} |")
    if layout == "pinned":
        vals = [metric(s, layout, "idle", lambda r: (r.get("memory") or {}).get("bytes_per_client")) for s in SERVERS]
        logged = [metric(s, layout, "idle", lambda r: r["login"]["logged_in"]) for s in SERVERS]
        cells = ["–" if v is None else f"{v:,.0f} B" for v in vals]
        w(f"| idle {int(idle_clients):,} clients: server RSS per client | {cells[0]} | | {cells[1]} | {cells[2]} |"
          f" {fmt_ratio(vals[0], vals[1], False)} | {fmt_ratio(vals[0], vals[2], False)} |")
        cells = [fmt_rate(v) for v in logged]
        w(f"| idle: clients logged in | {cells[0]} | | {cells[1]} | {cells[2]} | | |")
    w("")
    w("Ratios are tcpchat's advantage (>1× means tcpchat is better: more messages, lower latency, less memory).")
    w("The 3-node column is three `tcpchat serve --cluster` nodes and their Redis on the same machine (on the")
    w("server's core when pinned), the bench's clients spread over the nodes so every message crosses nodes")
    w("(`docs/cluster.md`); blank where the scenario is not run against it.")
    w("")
    notes = []
    for s in SERVERS:
        for _, name, *_ in ROWS:
            p = problems(s, layout, name)
            if p and (s, name) not in [(n[0], n[1]) for n in notes]:
                notes.append((s, name, p))
    for name in sorted(CLUSTER_ROWS):
        for s in [CLUSTER]:
            p = problems(s, layout, name)
            if p and (s, name) not in [(n[0], n[1]) for n in notes]:
                notes.append((s, name, p))
    if notes:
        w("Problems the bench reported (lost, refused or dropped messages and the like):")
        w("")
        for s, name, p in notes:
            w(f"- {s}, {name}: {p}")
        w("")

def room_section():
    """One room of N members (an IRC channel on the peers), pinned layout (issue 14)."""
    w("## Rooms: one room's fan-out, pinned")
    w("")
    runs = {name: [r for s in SERVERS for r in load(s, "pinned", name) if "error" not in r] for name in ("room", "roommax")}
    if not runs["room"] and not runs["roommax"]:
        w("Not measured in this run.")
        w("")
        return
    r0 = (runs["room"] or runs["roommax"])[0]
    members, senders = r0["clients"], r0["scenario"].get("senders")
    rates = {name: rs[0]["scenario"].get("rate") for name, rs in runs.items() if rs}
    w(f"`tcpchat bench ADDR room -n {members} --senders {senders} -r RATE`: one room of {members:,} members,")
    w(f"{senders} of them sharing RATE messages/s (open loop), each message delivered to the other")
    w(f"{members - 1:,} members. tcpchat: the rooms extension (`SAY`; its own `SAID` back is the sender's")
    w("confirmation, not counted as a delivery); ngircd and InspIRCd: `JOIN #bench`, `PRIVMSG #bench` (no echo")
    w("to the sender). Deliveries/s are counted in the measured window; a server that cannot keep up")
    w("delivers less than offered, its latency grows without bound and what is still queued when the")
    w("drain time ends counts as lost.")
    w("")
    w("| room | tcpchat | ngircd | InspIRCd | tcpchat vs ngircd | tcpchat vs InspIRCd |")
    w("|---|---:|---:|---:|---:|---:|")
    for name in ("room", "roommax"):
        if name not in rates:
            continue
        rate = rates[name]
        offered = f"{rate:,.0f} msg/s, {rate * (members - 1):,.0f} deliveries/s offered"
        rows = [
            (f"{offered}: deliveries/s", msgs("delivered_per_sec"), fmt_rate, True),
            (f"{offered}: latency p50", lat("p50_us"), fmt_ms, False),
            (f"{offered}: latency p99", lat("p99_us"), fmt_ms, False),
        ]
        for label, get, fmt, higher in rows:
            vals = [metric(s, "pinned", name, get) for s in SERVERS]
            w(f"| {label} | {fmt(vals[0])} | {fmt(vals[1])} | {fmt(vals[2])} | {fmt_ratio(vals[0], vals[1], higher)} | {fmt_ratio(vals[0], vals[2], higher)} |")
    w("")
    for name in ("room", "roommax"):
        for s in SERVERS:
            p = problems(s, "pinned", name)
            if p:
                w(f"- {s}, {name}: {p}")
    w("")


room_section()

scale = load("tcpchat", "pinned", "scale")
w("## Scale: one tcpchat process at its client limit")
w("")
if scale and "error" not in scale[0]:
    r = scale[0]
    f = r["login"]["failures"]
    mem = r.get("memory") or {}
    w(f"`tcpchat serve --max-clients {int(scale_clients):,}`, then {r['clients']:,} clients (over {r['processes']} bench processes):")
    w(f"{r['login']['logged_in']:,} logged in and held, {f['busy']:,} answered `BUSY`, {f['total'] if 'total' in f else sum(f.values()) - f['busy']:,} other failures;")
    if mem.get("logged_in_bytes"):
        w(f"server RSS {mem['logged_in_bytes'] / 2**20:.1f} MiB with everyone in ({(mem.get('bytes_per_client') or 0):,.0f} B per client).")
else:
    w(f"Not measured: {scale[0].get('error', 'no result') if scale else 'no result'}")
w("")
if int(rounds) > 0:
    interleaved(w)
w("## Plots")
w("")
for s in SERVERS:
    if os.path.exists(f"docs/performance/latency-{s}.svg"):
        w(f"![latency percentiles and delivered rate, {s}](performance/latency-{s}.svg)")
        w("")
if os.path.exists("bench/notes.md"):
    w(open("bench/notes.md").read().rstrip())
    w("")
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    f.write("\n".join(lines))
