#!/usr/bin/env bash
# Records crates/trace/tests/captures/tls.pcap, the real TLS capture that crates/trace's tests
# read: dumpcap (tshark's capture tool; tcpdump works the same) on loopback while
# `openssl s_client` talks to `openssl s_server` on the proposed TLS port 5379, with a
# certificate from `tcpchat cert --host chat.example`. Run it by hand, then commit the file;
# the tests never record (capturing needs root).
#
#   sudo scripts/record-tls-capture.sh        # needs openssl, dumpcap (tshark), python3, root
#
# Connections, in order:
#   0  TLS 1.3: s_client -servername chat.example, sends one chat line, closes
#   1  TLS 1.2: the same with -tls1_2 (the version is in the ServerHello's legacy field)
#   2  a truncated ClientHello: the first 60 bytes of a real one, then the client closes
set -euo pipefail
cd "$(dirname "$0")/.."

out=crates/trace/tests/captures/tls.pcap
port=5379
for prog in openssl dumpcap python3; do
  command -v "$prog" >/dev/null || { echo "record-tls-capture: $prog is needed (apt-get install openssl tshark python3)" >&2; exit 1; }
done
if ss -ltn 2>/dev/null | grep -q ":$port "; then
  echo "record-tls-capture: something already listens on port $port; stop it first" >&2
  exit 1
fi

cargo build -q -p tcpchat
bin=${CARGO_TARGET_DIR:-target}/debug/tcpchat
dir=$(mktemp -d)
server_pid=""
dump_pid=""
cleanup() {
  [ -n "$dump_pid" ] && kill "$dump_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin" cert --host chat.example --out "$dir" >/dev/null
openssl s_server -quiet -accept "127.0.0.1:$port" -cert "$dir/cert.pem" -key "$dir/key.pem" \
  </dev/null >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 50); do ss -ltn | grep -q ":$port " && break; sleep 0.1; done
dumpcap -q -i lo -P -w "$out" -f "tcp port $port" 2>/dev/null &
dump_pid=$!
sleep 1

# Pauses keep each step in its own segments; nothing depends on them.
{ printf 'HELLO-FROM alice\n'; sleep 0.5; } |
  openssl s_client -quiet -servername chat.example -connect "127.0.0.1:$port" >/dev/null 2>&1 || true
sleep 0.3
{ printf 'HELLO-FROM bob\n'; sleep 0.5; } |
  openssl s_client -quiet -tls1_2 -servername chat.example -connect "127.0.0.1:$port" >/dev/null 2>&1 || true
sleep 0.3
# A ClientHello cut short: openssl's own, captured by a fake server, first 60 bytes sent on.
python3 - "$port" <<'PY'
import socket, subprocess, sys, time
port = int(sys.argv[1])
fake = socket.socket(); fake.bind(("127.0.0.1", 0)); fake.listen(1)
client = subprocess.Popen(
    ["openssl", "s_client", "-servername", "chat.example", "-connect", "127.0.0.1:%d" % fake.getsockname()[1]],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
conn, _ = fake.accept()
conn.settimeout(5)
hello = conn.recv(65536)
conn.close(); client.kill(); client.wait()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(hello[:60])
time.sleep(0.2)
s.close()
PY
sleep 1
kill "$dump_pid"; wait "$dump_pid" 2>/dev/null || true; dump_pid=""
echo "recorded $out"
