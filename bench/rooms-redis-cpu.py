#!/usr/bin/env python3
"""Redis CPU per room message (docs/cluster.md, "Rooms": cost).

Starts a private Redis (one redis-server, or with --redis-cluster three masters and three
replicas), three `tcpchat serve --cluster` nodes, puts MEMBERS members of one room on them
in turn, and has SENDERS of them (on different nodes) pipeline SAYS `SAY`s each at once,
while every member reads everything. Reads Redis's `INFO cpu` and `INFO
commandstats` (summed over the masters) before and after, and prints Redis's CPU per `SAY`
and the commands it ran per `SAY`.

    bench/rooms-redis-cpu.py [--bin target/debug/tcpchat] [--redis-cluster]
        [--members 30] [--senders 3] [--says 5000] [--serve-arg=ARG ...]

Only Redis's CPU is measured, so a debug build of the nodes is fine (it slows the run, not
Redis's work per message). Traffic stays on loopback.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args):
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    )
    return out.stdout


def info(port, section):
    d = {}
    for line in cli(port, "INFO", section).splitlines():
        if ":" in line:
            k, v = line.strip().split(":", 1)
            d[k] = v
    return d


def redis_cpu(port):
    i = info(port, "cpu")
    return float(i["used_cpu_user"]) + float(i["used_cpu_sys"])


def commands(port):
    """{command: (calls, usec)} from INFO commandstats."""
    out = {}
    for k, v in info(port, "commandstats").items():
        if not k.startswith("cmdstat_"):
            continue
        f = dict(p.split("=", 1) for p in v.split(","))
        out[k[len("cmdstat_"):]] = (int(f["calls"]), int(f["usec"]))
    return out


class Line:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def send(self, text):
        self.s.sendall(text.encode())

    def line(self):
        return self.f.readline().rstrip(b"\n").decode()

    def expect(self, want):
        got = self.line()
        if got != want:
            raise SystemExit(f"expected {want!r}, got {got!r}")


def login(port, name):
    deadline = time.time() + 30
    while True:
        c = Line(port)
        c.send(f"EXT rooms\nHELLO-FROM {name}\n")
        c.expect("EXT-OK rooms")
        got = c.line()
        if got == f"HELLO {name}":
            return c
        if got != "BUSY" or time.time() > deadline:
            raise SystemExit(f"login {name}: {got!r}")
        time.sleep(0.2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/debug/tcpchat")
    ap.add_argument("--redis-cluster", action="store_true")
    ap.add_argument("--members", type=int, default=30)
    ap.add_argument("--senders", type=int, default=3)
    ap.add_argument("--says", type=int, default=5000)
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="one more `serve` argument for the nodes (repeat), e.g. "
                         "--serve-arg=--extensions=keepalive,presence,accounts,rooms "
                         "for the rooms without history")
    a = ap.parse_args()

    work = tempfile.mkdtemp()
    procs = []

    def start(args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        procs.append(p)
        return p

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        ports = [free_port() for _ in range(6 if a.redis_cluster else 1)]
        for port in ports:
            d = os.path.join(work, str(port))
            os.mkdir(d)
            extra = []
            if a.redis_cluster:
                extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "1000",
                         "--cluster-port", str(free_port())]
            start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", *extra], cwd=d)
        for port, p in zip(ports, procs):
            while subprocess.run(["redis-cli", "-p", str(port), "PING"],
                                 capture_output=True).returncode != 0:
                if p.poll() is not None:
                    raise SystemExit(f"redis-server on {port} exited")
                time.sleep(0.1)
        if a.redis_cluster:
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-replicas", "1", "--cluster-yes"],
                           capture_output=True, check=True)
            while not all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports):
                time.sleep(0.2)
            url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
        else:
            url = f"redis://127.0.0.1:{ports[0]}"
        nodes = []
        for i in range(3):
            port = free_port()
            start([a.bin, "serve", "--listen", f"127.0.0.1:{port}", "--cluster", url,
                   "--node-id", f"n{i + 1}", "--limits", "off", *a.serve_arg])
            nodes.append(port)
        for port in nodes:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.1)

        members = []
        for i in range(a.members):
            c = login(nodes[i % 3], f"m{i}")
            c.send("JOIN #bench\n")
            members.append(c)
        # Every member has seen every JOINED once the last one's reached everyone.
        for i, c in enumerate(members):
            while c.line() != f"JOINED #bench m{a.members - 1}":
                pass

        masters = ports if not a.redis_cluster else [
            p for p in ports if "role:master" in cli(p, "INFO", "replication")]
        cpu0 = sum(redis_cpu(p) for p in masters)
        cmd0 = [commands(p) for p in masters]
        total = a.senders * a.says
        t0 = time.time()

        def reader(c):
            for _ in range(total):
                line = c.line()
                if not line.startswith("SAID #bench "):
                    raise SystemExit(f"unexpected {line!r}")

        def sender(c, s):
            # All at once; its own SAID lines are read by its reader.
            batch = "".join(f"SAY #bench s{s}-{k} xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"
                            for k in range(a.says))
            c.send(batch)

        readers = [threading.Thread(target=reader, args=(c,)) for c in members]
        for t in readers:
            t.start()
        # Senders on different nodes: members 0, 1, 2 are on n1, n2, n3.
        for s in range(a.senders):
            sender(members[s], s)
        for t in readers:
            t.join()
        elapsed = time.time() - t0
        cpu1 = sum(redis_cpu(p) for p in masters)
        cmd1 = [commands(p) for p in masters]
        delta = {}
        for before, after in zip(cmd0, cmd1):
            for k, (calls, usec) in after.items():
                c0, u0 = before.get(k, (0, 0))
                dc, du = delta.get(k, (0, 0))
                delta[k] = (dc + calls - c0, du + usec - u0)
        kind = "redis-cluster (3 masters, 3 replicas)" if a.redis_cluster else "redis"
        print(f"{kind}: {a.members} members on 3 nodes, {a.senders} senders, {total} SAYs, "
              f"{total * a.members} lines delivered in {elapsed:.1f}s "
              f"({total / elapsed:.0f} SAY/s)")
        print(f"Redis CPU per SAY: {(cpu1 - cpu0) / total * 1e6:.1f} us "
              f"(used_cpu_user+sys over the masters)")
        for k, (calls, usec) in sorted(delta.items(), key=lambda kv: -kv[1][1]):
            if calls:
                print(f"  {k:>12}: {calls / total:.3f} per SAY, {usec / max(calls, 1):.1f} us each "
                      f"(commandstats)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
