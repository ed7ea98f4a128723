#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this). Works as root or not on any
# Linux machine with a Rust toolchain (rustup's, for the components):
#
# 1. Tools. rustfmt and clippy are added with `rustup component add` when missing.
#    cargo-nextest is installed with `cargo install --locked cargo-nextest` when missing,
#    rather than falling back to `cargo test` for good: the suite is written for and checked
#    under nextest, which runs each test in its own process (a test that raises a limit, sets
#    up a namespace or kills children cannot disturb another). Only when that install fails
#    (offline) do the tests run under `cargo test`, with a warning.
# 2. Programs the tests drive, from Debian packages when missing: as root with apt-get, else
#    with sudo when there is one. When they cannot be installed (no root and no sudo, no apt,
#    apt fails), the script says which programs are missing and which tests will fail for it,
#    then goes on: everything else still runs, and those tests fail, each naming what to
#    install, so the command still exits non-zero. Nothing is skipped silently.
#    The browser test's one npm package (playwright-core) comes from the committed
#    tests/browser/package-lock.json (`npm ci`); it drives Debian's chromium.
# 3. Root is not needed: the dead-peer test makes its own user + network namespaces
#    (`unshare --user --map-root-user --net`). Where the kernel forbids that, the script says
#    so up front and the test fails saying which setting to change.
# 4. One build. `cargo nextest run --workspace` builds every test and the `tcpchat` binary
#    once; the doc tests reuse those libraries, and the check step and the cluster tests
#    (TCPCHAT_BIN) use that same binary instead of building their own. The Debian package
#    is built from that debug binary too (scripts/package-deb.sh strips it), so CI does no
#    release build; `scripts/package-deb.sh` alone builds the release package.
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- 1. Rust tools
need_component() { # tool component
  if ! cargo "$1" --version >/dev/null 2>&1; then
    command -v rustup >/dev/null 2>&1 || {
      echo "error: cargo $1 is missing and there is no rustup to add it; install the $2 component of your toolchain" >&2
      exit 1
    }
    echo "== rustup component add $2"
    rustup component add "$2"
  fi
}
need_component fmt rustfmt
need_component clippy clippy

runner=nextest
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo install --locked cargo-nextest (once; a few minutes)"
  if ! cargo install --locked cargo-nextest; then
    runner=cargo-test
    echo "warning: cannot install cargo-nextest; running the tests with cargo test instead" >&2
  fi
fi

# ---- 2. Programs the tests drive: program:debian-package:the tests that drive it
needed=(
  "tmux:tmux:tcpchat::connect_tui (the full-screen client in a real terminal)"
  "tshark:tshark:tcpchat-trace::captures (our reading of each capture against Wireshark's)"
  "redis-server:redis-server:tcpchat-redis::cluster (cluster mode against a real Redis)"
  "haproxy:haproxy:tcpchat-redis::cluster (three nodes behind HAProxy)"
  "ip:iproute2:tcpchat::dead_peer (sets up the link the peer vanishes from)"
  "unshare:util-linux:tcpchat::dead_peer (creates its user + network namespaces)"
  "dpkg-deb:dpkg:scripts/test-package.sh (builds and unpacks the Debian package)"
  "systemd-analyze:systemd:scripts/test-package.sh (verifies the systemd unit)"
  "man:man-db:scripts/test-package.sh (renders the installed man page)"
  "python3:python3:tcpchat-check-client::broken_clients (the correct and the broken Python clients)"
  "chromium:chromium:tcpchat::browser (the web page in a real, headless browser)"
  "node:nodejs:tcpchat::browser (runs tests/browser/chat.mjs)"
  "npm:npm:tcpchat::browser (installs playwright-core from tests/browser/package-lock.json)"
)
missing_programs() {
  for entry in "${needed[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || echo "$entry"
  done
}
mapfile -t missing < <(missing_programs)
if [ ${#missing[@]} -gt 0 ]; then
  packages=()
  for entry in "${missing[@]}"; do
    rest=${entry#*:}
    packages+=("${rest%%:*}")
  done
  mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo=(sudo)
  fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ ${#sudo[@]} -gt 0 ]; }; then
    echo "== installing test dependencies: ${packages[*]}"
    if ! { "${sudo[@]}" apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null; }; then
      echo "warning: apt-get could not install ${packages[*]}" >&2
    fi
  fi
  mapfile -t missing < <(missing_programs)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "warning: these programs are missing, so the tests that drive them will fail:" >&2
    for entry in "${missing[@]}"; do
      prog=${entry%%:*} rest=${entry#*:}
      echo "  $prog (Debian package ${rest%%:*}): ${rest#*:}" >&2
    done
    echo "  install them (as root: apt-get install ${packages[*]}) and run this again;" \
      "going on with everything else" >&2
  fi
fi

# ---- 2b. The browser test's one npm package (playwright-core, which downloads no browser:
# the test drives Debian's /usr/bin/chromium), at the version in the committed lockfile.
browser_dir=tests/browser
if [ ! -d "$browser_dir/node_modules/playwright-core" ] ||
  [ "$browser_dir/package-lock.json" -nt "$browser_dir/node_modules/.package-lock.json" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "== npm ci ($browser_dir)"
    (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
      echo "warning: npm ci failed in $browser_dir, so tcpchat::browser will fail" >&2
  else
    echo "warning: npm is missing, so tcpchat::browser will fail (it needs $browser_dir/node_modules)" >&2
  fi
fi

# ---- 3. Network namespaces without root (the dead-peer test)
if command -v unshare >/dev/null 2>&1 && ! unshare --user --map-root-user --net true 2>/dev/null; then
  echo "warning: this machine does not allow unprivileged user + network namespaces, so" \
    "tcpchat::dead_peer will fail; its message says which kernel setting to change" >&2
fi

# ---- 4. Gates and tests, on one build
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
tcpchat="$target_dir/debug/tcpchat"
# The cluster tests start this binary (built by the test build below) instead of building one.
export TCPCHAT_BIN="$tcpchat"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# A failing test does not stop the doc tests and the check step; the exit status still says it.
status=0
echo "== tests ($runner)"
if [ "$runner" = nextest ]; then
  cargo nextest run --workspace --no-fail-fast || status=1
else
  cargo test --workspace --no-fail-fast --lib --bins --tests || status=1
fi
echo "== doc tests"
cargo test --workspace --doc || status=1

echo "== tcpchat check against our own server (the real binary)"
[ -x "$tcpchat" ] || { echo "error: the test build did not leave $tcpchat" >&2; exit 1; }
log=$(mktemp)
# Its own account database, not the user's (check registers and removes a random account).
data=$(mktemp -d)
"$tcpchat" serve --listen 127.0.0.1:0 --max-clients 200 --data-dir "$data" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$log" "$data"' EXIT
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

echo "== Debian package: build from the test build's binary, install into a scratch root"
if deb=$(scripts/package-deb.sh --binary "$tcpchat" --out "$target_dir/debian" | tail -n 1); then
  scripts/test-package.sh "$deb" || status=1
else
  echo "error: scripts/package-deb.sh failed" >&2
  status=1
fi
echo "== tcpchat check-client against our own client (the real binary)"
"$tcpchat" check-client -- "$tcpchat" connect --plain '{host}:{port}'
[ "$status" = 0 ] || echo "error: some tests failed (above)" >&2
exit "$status"
