#!/usr/bin/env bash
# Installs a tcpchat .deb into a scratch root and checks it as an operator would use it:
#
#   scripts/test-package.sh target/debian/tcpchat_0.1.0_amd64.deb
#
# 1. dpkg -x into a scratch root (no change to this machine); every file in place, the
#    config file registered as a conffile.
# 2. systemd-analyze verify on the installed unit, and its sandboxing scored by
#    `systemd-analyze security` (the unit is checked with its ExecStart pointing into the
#    scratch root: the one line changed, since the binary is not in /usr/bin here).
# 3. `man tcpchat` renders from the installed page; the bash completion loads.
# 4. The installed binary: --version, then `serve --config` the installed (commented)
#    config file, a short chat between two clients, and a /metrics scrape.
# Needs: dpkg, systemd (systemd-analyze), man-db, bash. scripts/test.sh installs them.
set -euo pipefail

deb=${1:?usage: $0 PACKAGE.deb}
scratch=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() { echo "package test: $*" >&2; exit 1; }

echo "== package: install $deb into a scratch root"
dpkg-deb --info "$deb" >/dev/null || fail "not a Debian package: $deb"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/tcpchat/tcpchat.toml ||
  fail "/etc/tcpchat/tcpchat.toml is not a conffile"
root="$scratch/root"
dpkg -x "$deb" "$root"
for f in usr/bin/tcpchat usr/share/man/man1/tcpchat.1.gz \
  usr/share/bash-completion/completions/tcpchat usr/share/zsh/vendor-completions/_tcpchat \
  usr/share/fish/vendor_completions.d/tcpchat.fish lib/systemd/system/tcpchat.service \
  etc/tcpchat/tcpchat.toml usr/share/doc/tcpchat/operations.md; do
  [ -e "$root/$f" ] || fail "missing /$f"
done
bin="$root/usr/bin/tcpchat"

echo "== package: systemd-analyze verify tcpchat.service"
unit_dir="$scratch/unit"
mkdir -p "$unit_dir"
sed "s#/usr/bin/tcpchat#$bin#g" "$root/lib/systemd/system/tcpchat.service" >"$unit_dir/tcpchat.service"
# Any output is a finding: systemd ignores a directive it cannot parse, with a warning.
verdict=$(systemd-analyze verify --man=no "$unit_dir/tcpchat.service" 2>&1) ||
  fail "the unit does not verify: $verdict"
[ -z "$verdict" ] || fail "systemd-analyze verify warns: $verdict"
exposure=$(systemd-analyze security --offline=yes "$unit_dir/tcpchat.service" 2>/dev/null |
  sed -n 's/.*Overall exposure level for tcpchat.service: \([0-9.]*\).*/\1/p')
[ -n "$exposure" ] || fail "systemd-analyze security gave no exposure level"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' ||
  fail "sandboxing exposure $exposure is above 2.0 (systemd-analyze security)"
echo "   exposure level $exposure"

echo "== package: man tcpchat, bash completion"
MANPATH="$root/usr/share/man" MANWIDTH=100 man -P cat tcpchat 2>/dev/null | grep -q "TCPCHAT SERVE" ||
  fail "man tcpchat does not render the installed page"
bash -c "source '$root/usr/share/bash-completion/completions/tcpchat' && complete -p tcpchat" >/dev/null ||
  fail "the bash completion does not load"

echo "== package: the installed binary"
"$bin" --version | grep -q "^tcpchat " || fail "--version: $("$bin" --version)"
log="$scratch/serve.log"
"$bin" serve --config "$root/etc/tcpchat/tcpchat.toml" --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 2>"$log" &
server=$!
addr="" metrics=""
for _ in $(seq 100); do
  addr=$(sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$log")
  metrics=$(sed -n 's/.*serving metrics addr=\([^ ]*\).*/\1/p' "$log")
  [ -n "$addr" ] && [ -n "$metrics" ] && break
  sleep 0.1
done
[ -n "$addr" ] && [ -n "$metrics" ] || { cat "$log" >&2; fail "the server did not start"; }

# A short chat over bash's /dev/tcp: ann and bob log in, ann writes to bob.
exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}" 4<>"/dev/tcp/${addr%:*}/${addr##*:}"
expect() { # fd want
  local line
  IFS= read -r -t 10 line <&"$1" || fail "no answer on fd $1 (wanted $2)"
  [ "$line" = "$2" ] || fail "got '$line', wanted '$2'"
}
printf 'HELLO-FROM ann\n' >&3 && expect 3 "HELLO ann"
printf 'HELLO-FROM bob\n' >&4 && expect 4 "HELLO bob"
printf 'SEND bob hello from the package\n' >&3 && expect 3 "SEND-OK"
expect 4 "DELIVERY ann hello from the package"

# The scrape Prometheus would make.
exec 5<>"/dev/tcp/${metrics%:*}/${metrics##*:}"
printf 'GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n' >&5
scrape=$(timeout 10 cat <&5) || fail "no answer from /metrics"
grep -q '^tcpchat_users 2' <<<"$scrape" || fail "scrape lacks tcpchat_users 2: $scrape"
grep -q '^tcpchat_deliveries_total 1' <<<"$scrape" || fail "scrape lacks one delivery"
exec 3>&- 4>&- 5>&-

kill -TERM "$server"
wait "$server" || fail "the server did not exit cleanly on SIGTERM"
server=""
echo "== package: ok"
