#!/usr/bin/env python3
"""Redis CPU per direct message to an account (docs/cluster.md, "History": direct streams).

Starts a private, persisting redis-server (AOF, `appendfsync always`, as accounts need) and
two `tcpchat serve --cluster` nodes; registers `dora` and logs her in on n2; `eve` on n1
sends MESSAGES `SEND dora ...`, in batches of 100 written at once, and dora reads them all.
Reads Redis's `INFO cpu` and `INFO commandstats` before and after, and prints the wall time,
Redis's CPU per message and the commands Redis ran.

    bench/direct-redis-cpu.py [--bin target/debug/tcpchat] [--messages 5000]
        [--sender history|classic] [--history-off]

`--sender history` (the default) negotiates `history` for eve: each of her `SEND`s is
answered before the next is taken (the connection's `history` path); `classic` pipelines.
`--history-off` runs the nodes without the extension (the baseline). Traffic stays on
loopback.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(port, *args):
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=False
    ).stdout


class Client:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr)
        self.file = self.sock.makefile("rb")

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def line(self):
        return self.file.readline().decode().rstrip("\n")

    def expect(self, want):
        got = self.line()
        if got != want:
            raise SystemExit(f"expected {want!r}, got {got!r}")


def login(addr, lines, want):
    """Sends `lines`, retrying while the cluster answers BUSY; checks the answers."""
    while True:
        c = Client(addr)
        for l in lines:
            c.send(l)
        got = [c.line() for _ in lines]
        if "BUSY" not in got:
            if got != want:
                raise SystemExit(f"expected {want}, got {got}")
            return c
        c.file.close()
        c.sock.close()
        time.sleep(0.1)


def cpu(port):
    info = cli(port, "INFO", "cpu")
    user = float(re.search(r"used_cpu_user:([\d.]+)", info).group(1))
    sys_ = float(re.search(r"used_cpu_sys:([\d.]+)", info).group(1))
    return user + sys_


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default="target/debug/tcpchat")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sender", choices=["history", "classic"], default="history")
    ap.add_argument("--history-off", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tcpchat-direct-bench-")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", work,
         "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    nodes = []
    try:
        while cli(port, "PING").strip() != "PONG":
            time.sleep(0.05)
        extra = ["--extensions", "keepalive,presence,accounts,rooms"] if a.history_off else []
        for i in (1, 2):
            p = subprocess.Popen(
                [a.bin, "serve", "--listen", "127.0.0.1:0", "--cluster",
                 f"redis://127.0.0.1:{port}", "--node-id", f"n{i}", "--limits", "off", *extra],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                env=dict(os.environ, TCPCHAT_LOG_LEVEL="info"),
            )
            for line in iter(p.stderr.readline, ""):
                m = re.search(r"listening addr=(\S+)", line)
                if m:
                    host, pt = m.group(1).rsplit(":", 1)
                    nodes.append((p, (host, int(pt))))
                    break
            # The rest of its log is read and dropped, so the node never blocks on it.
            threading.Thread(target=p.stderr.read, daemon=True).start()
        n1, n2 = nodes[0][1], nodes[1][1]
        dora_ext = "accounts" if a.history_off else "accounts,history"
        eve_ext = "history" if a.sender == "history" and not a.history_off else "accounts"
        reg = login(n1, [f"EXT {dora_ext}", "HELLO-FROM dora"], [f"EXT-OK {dora_ext}", "HELLO dora"])
        reg.send("REGISTER correct-horse")
        reg.expect("REGISTER-OK")
        reg.file.close()
        reg.sock.close()
        eve = login(n1, [f"EXT {eve_ext}", "HELLO-FROM eve"], [f"EXT-OK {eve_ext}", "HELLO eve"])
        # dora's registering login is gone once LIST no longer shows her.
        while True:
            eve.send("LIST")
            if "dora" not in eve.line().removeprefix("LIST-OK ").split(","):
                break
            time.sleep(0.05)
        dora = Client(n2)
        dora.send(f"EXT {dora_ext}")
        dora.expect(f"EXT-OK {dora_ext}")
        dora.send("LOGIN dora correct-horse")
        dora.expect("HELLO dora")
        if not a.history_off:
            dora.line()  # RESUME-OK
        cli(port, "CONFIG", "RESETSTAT")
        c0, t0 = cpu(port), time.time()
        batch = 100
        for k in range(0, a.messages, batch):
            n = min(batch, a.messages - k)
            eve.sock.sendall(b"".join(b"SEND dora m%d\n" % j for j in range(k, k + n)))
            for _ in range(n):
                eve.expect("SEND-OK")
        for j in range(a.messages):
            got = dora.line()
            want = "DELIVERY eve " if a.history_off else f"DELIVERY-AT {j + 1} "
            if not got.startswith(want):
                raise SystemExit(f"dora: expected {want}..., got {got!r}")
        c1, t1 = cpu(port), time.time()
        print(f"messages {a.messages}  wall {t1 - t0:.2f} s  "
              f"redis cpu {(c1 - c0) / a.messages * 1e6:.1f} us/message")
        for l in cli(port, "INFO", "commandstats").splitlines():
            if l.startswith("cmdstat_"):
                print(" ", l)
    finally:
        for p, _ in nodes:
            p.terminate()
            p.wait()
        redis.terminate()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
