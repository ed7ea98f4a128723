#!/usr/bin/env bash
# Records the real captures that crates/trace's tests read (crates/trace/tests/captures/):
# tcpdump on loopback while scripted clients talk to the real server. Run it by hand when the
# scenarios change, then commit the files; the tests never record (they need root).
#
#   sudo scripts/record-captures.sh            # needs tcpdump, editcap (tshark), python3, root
#
# Each capture is one session against `tcpchat serve`, on the default port 5378 so the trace
# finds it without --port:
#   session.pcap        IPv4, Ethernet link type (tcpdump -i lo), microseconds: two users log
#                       in, a taken name, LIST, SEND/DELIVERY, a bad command, a line sent in
#                       two segments, clean closes by client and server side, one abort (RST)
#   session.pcapng      the same capture converted to pcapng (editcap)
#   session-nano.pcap   the same session recorded with nanosecond timestamps
#   ipv6-any.pcap       IPv6 on ::1, captured with -i any (Linux cooked v2 link type)
#   snaplen.pcap        a capture with -s 70: payloads cut by the snap length
set -euo pipefail
cd "$(dirname "$0")/.."

out=crates/trace/tests/captures
port=5378
mkdir -p "$out"

for prog in tcpdump editcap python3; do
  command -v "$prog" >/dev/null || { echo "record-captures: $prog is needed (apt-get install tcpdump tshark python3)" >&2; exit 1; }
done
if ss -ltn 2>/dev/null | grep -q ":$port "; then
  echo "record-captures: something already listens on port $port; stop it first" >&2
  exit 1
fi

cargo build -q -p tcpchat
bin=${CARGO_TARGET_DIR:-target}/debug/tcpchat

server_pid=""
dump_pid=""
cleanup() {
  [ -n "$dump_pid" ] && kill "$dump_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# The scripted clients. Pauses between steps only keep the capture readable (each message in
# its own segment); nothing depends on them.
clients() {
  local host=$1
  python3 - "$host" "$port" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET

def conn():
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    s.settimeout(5)
    return s

def say(s, data):
    s.sendall(data)
    time.sleep(0.05)

def expect(s, want):
    buf = b""
    while not buf.endswith(b"\n") or buf.count(b"\n") < want.count(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    if buf.startswith(b"LIST-OK ") and want.startswith(b"LIST-OK "):
        # The server lists names in no particular order.
        same = sorted(buf.strip()[8:].split(b",")) == sorted(want.strip()[8:].split(b","))
        buf = want if same else buf
    if buf != want:
        sys.exit(f"expected {want!r}, got {buf!r}")

alice = conn()
say(alice, b"HELLO-FROM alice\n"); expect(alice, b"HELLO alice\n")
bob = conn()
say(bob, b"HELLO-FROM alice\n"); expect(bob, b"IN-USE\n")
say(bob, b"HELLO-FROM bob\n"); expect(bob, b"HELLO bob\n")
say(alice, b"LIST\n"); expect(alice, b"LIST-OK alice,bob\n")
say(alice, b"SEND bob hi bob, how are you?\n"); expect(alice, b"SEND-OK\n"); expect(bob, b"DELIVERY alice hi bob, how are you?\n")
# One line in two segments.
say(bob, b"SEND alice fine, tha"); say(bob, b"nks!\n")
expect(bob, b"SEND-OK\n"); expect(alice, b"DELIVERY bob fine, thanks!\n")
say(bob, b"NAMES\n"); expect(bob, b"BAD-RQST-HDR\n")
say(bob, b"SEND carol hello?\n"); expect(bob, b"BAD-DEST-USER\n")
# bob leaves cleanly (client closes first).
bob.shutdown(socket.SHUT_WR); time.sleep(0.1); bob.close()
# carol is refused a bad name, then aborts with RST.
carol = conn()
say(carol, b"HELLO-FROM car ol\n"); expect(carol, b"BAD-RQST-BODY\n")
carol.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
carol.close()
time.sleep(0.1)
alice.shutdown(socket.SHUT_WR); time.sleep(0.1); alice.close()
time.sleep(0.2)
PY
}

# record FILE INTERFACE LISTEN-ADDR CLIENT-HOST [tcpdump options...]
record() {
  local file=$1 iface=$2 listen=$3 host=$4; shift 4
  "$bin" serve --listen "$listen" --log-level warn &
  server_pid=$!
  for _ in $(seq 50); do ss -ltn | grep -q ":$port " && break; sleep 0.1; done
  tcpdump -i "$iface" -U --immediate-mode -w "$out/$file" "$@" "tcp port $port" 2>/dev/null &
  dump_pid=$!
  sleep 1
  clients "$host"
  # Let the last packets reach the file before stopping tcpdump.
  sleep 1
  kill "$dump_pid"; wait "$dump_pid" 2>/dev/null || true; dump_pid=""
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  echo "recorded $out/$file"
}

record session.pcap lo 127.0.0.1:$port 127.0.0.1
editcap -F pcapng "$out/session.pcap" "$out/session.pcapng"
echo "converted $out/session.pcapng"
record session-nano.pcap lo 127.0.0.1:$port 127.0.0.1 --time-stamp-precision=nano
record ipv6-any.pcap any "[::1]:$port" ::1
record snaplen.pcap lo 127.0.0.1:$port 127.0.0.1 -s 70
