#!/usr/bin/env bash
# Records crates/trace/tests/captures/websocket.pcap, the real WebSocket capture that
# crates/trace's tests read: dumpcap (tshark's capture tool; tcpdump works the same) on
# loopback while scripted clients talk to `tcpchat serve --web-listen`, over WebSocket and TCP.
# Run it by hand when the scenario changes, then commit the file; the tests never record
# (capturing needs root).
#
#   sudo scripts/record-ws-capture.sh          # needs dumpcap (tshark), python3, root
#   sudo TCPCHAT_BIN=target/release/tcpchat scripts/record-ws-capture.sh   # a built binary
#
# The server listens on 5378 (TCP) and 5380 (web). Connections, in order:
#   0  alice over WebSocket (subprotocol tcpchat): logs in, LIST, gets bob's message, sends one
#      split over two frames with a ping between them, closes with 1000; the server answers
#      with its own 1000
#   1  bob over TCP: logs in, sends alice a message, gets hers, leaves
#   2  carol over WebSocket: logs in, sends a message longer than the line limit; the server
#      closes with 1009
#   3  a plain HTTP GET / (the page), not a WebSocket
#   4  an upgrade with a foreign Origin; the server refuses it with 403
#   5  dave over WebSocket sends a binary message; the server closes with 1003
set -euo pipefail
cd "$(dirname "$0")/.."

out=crates/trace/tests/captures/websocket.pcap
port=5378
web=5380
for prog in dumpcap python3; do
  command -v "$prog" >/dev/null || { echo "record-ws-capture: $prog is needed (apt-get install tshark python3)" >&2; exit 1; }
done
for p in $port $web; do
  if ss -ltn 2>/dev/null | grep -q ":$p "; then
    echo "record-ws-capture: something already listens on port $p; stop it first" >&2
    exit 1
  fi
done

# TCPCHAT_BIN: a tcpchat binary already built (skips the build).
bin=${TCPCHAT_BIN:-}
if [ -z "$bin" ]; then
  cargo build -q -p tcpchat
  bin=${CARGO_TARGET_DIR:-target}/debug/tcpchat
fi
server_pid=""
dump_pid=""
cleanup() {
  [ -n "$dump_pid" ] && kill "$dump_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

"$bin" serve --listen 127.0.0.1:$port --web-listen 127.0.0.1:$web --log-level warn &
server_pid=$!
for _ in $(seq 50); do ss -ltn | grep -q ":$web " && break; sleep 0.1; done
dumpcap -q -P -i lo -w "$out" -f "tcp port $port or tcp port $web" 2>/dev/null &
dump_pid=$!
sleep 1

# Pauses between steps keep each message in its own segment; nothing depends on them.
python3 - "$port" "$web" <<'PY'
import base64, os, socket, struct, sys, time
port, web = int(sys.argv[1]), int(sys.argv[2])

def tcp(p):
    s = socket.create_connection(("127.0.0.1", p))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(5)
    return s

def upgrade(extra=b""):
    s = tcp(web)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
              b"Sec-WebSocket-Protocol: tcpchat\r\n%s\r\n" % (web, key, extra))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    time.sleep(0.05)
    return s, head

def frame(opcode, payload, fin=True):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", (0x80 if fin else 0) | opcode, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", (0x80 if fin else 0) | opcode, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", (0x80 if fin else 0) | opcode, 0x80 | 127, n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def say(s, data):
    s.sendall(data)
    time.sleep(0.05)

def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit(f"connection closed, wanted {n - len(buf)} more bytes")
        buf += chunk
    return buf

def recv_frame(s):
    b0, b1 = recv_exact(s, 2)
    n = b1 & 0x7f
    if n == 126:
        n = struct.unpack("!H", recv_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", recv_exact(s, 8))[0]
    return b0 & 0x0f, recv_exact(s, n)

def expect(s, opcode, payload=None):
    got = recv_frame(s)
    if got[0] != opcode or (payload is not None and got[1] != payload):
        sys.exit(f"expected opcode {opcode} {payload!r}, got {got!r}")
    return got

def expect_close(s):
    """The server's close frame's code; None when it closed the socket without one."""
    try:
        opcode, payload = recv_frame(s)
    except SystemExit:
        return None
    if opcode != 8:
        sys.exit(f"expected a close frame, got {opcode} {payload!r}")
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0

def expect_line(s, want):
    buf = b""
    while not buf.endswith(b"\n"):
        buf += s.recv(4096)
    if buf != want:
        sys.exit(f"expected {want!r}, got {buf!r}")

alice, head = upgrade()
assert head.startswith(b"HTTP/1.1 101"), head
say(alice, frame(1, b"HELLO-FROM alice")); expect(alice, 1, b"HELLO alice")
bob = tcp(port)
say(bob, b"HELLO-FROM bob\n"); expect_line(bob, b"HELLO bob\n")
say(alice, frame(1, b"LIST")); expect(alice, 1, b"LIST-OK alice,bob")
say(bob, b"SEND alice hi alice, from TCP\n"); expect_line(bob, b"SEND-OK\n")
expect(alice, 1, b"DELIVERY bob hi alice, from TCP")
# One line in two frames, a ping between them.
say(alice, frame(1, b"SEND bob hello ", fin=False))
say(alice, frame(9, b"are you there?"))
expect(alice, 10, b"are you there?")
say(alice, frame(0, b"from the browser"))
expect(alice, 1, b"SEND-OK"); expect_line(bob, b"DELIVERY alice hello from the browser\n")
say(alice, frame(8, struct.pack("!H", 1000) + b"bye"))
# The server answers with its own close frame, the code echoed.
code = expect_close(alice)
assert code == 1000, code
alice.close()
time.sleep(0.1)
bob.shutdown(socket.SHUT_WR); time.sleep(0.1); bob.close()

carol, head = upgrade()
say(carol, frame(1, b"HELLO-FROM carol")); expect(carol, 1, b"HELLO carol")
say(carol, frame(1, b"SEND alice " + b"x" * 5000))
code = expect_close(carol)
assert code == 1009, code
carol.close()
time.sleep(0.1)

page = tcp(web)
say(page, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % web)
while page.recv(65536):
    pass
page.close()
time.sleep(0.1)

evil, head = upgrade(b"Origin: http://evil.example\r\n")
assert head.startswith(b"HTTP/1.1 403"), head
evil.close()
time.sleep(0.1)

dave, head = upgrade()
say(dave, frame(1, b"HELLO-FROM dave")); expect(dave, 1, b"HELLO dave")
say(dave, frame(2, b"\x00\x01binary"))
code = expect_close(dave)
assert code == 1003, code
dave.close()
time.sleep(0.3)
PY

# Let the last packets reach the file before stopping the capture.
sleep 1
kill "$dump_pid"; wait "$dump_pid" 2>/dev/null || true; dump_pid=""
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
echo "recorded $out"
