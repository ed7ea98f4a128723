#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Installs the programs the tests drive (tmux, tcpdump, tshark, redis-server, haproxy) from
# Debian packages when they are missing, then runs the quality gates and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# program:debian-package pairs the tests need.
needed=(tmux:tmux tcpdump:tcpdump tshark:tshark ip:iproute2 python3:python3 redis-server:redis-server haproxy:haproxy)

missing=()
for pair in "${needed[@]}"; do
  prog=${pair%%:*} pkg=${pair#*:}
  command -v "$prog" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing test dependencies: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc

echo "== tcpchat check against our own server (the real binary)"
cargo build --quiet -p tcpchat
tcpchat="${CARGO_TARGET_DIR:-target}/debug/tcpchat"
log=$(mktemp)
"$tcpchat" serve --listen 127.0.0.1:0 --max-clients 200 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$log")
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "server did not start:"; cat "$log"; exit 1; }
"$tcpchat" check "$addr" --capacity 200
kill -TERM $server
wait $server
