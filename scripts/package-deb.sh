#!/usr/bin/env bash
# Builds the Debian package of tcpchat with dpkg-deb directly (no cargo-deb to compile):
#
#   scripts/package-deb.sh                       # release build, then the package
#   scripts/package-deb.sh --binary PATH [--out DIR]   # package a binary already built
#
# The package holds:
#   /usr/bin/tcpchat                                  the binary, debug info stripped
#   /usr/share/man/man1/tcpchat.1.gz                  `tcpchat man`, so `man tcpchat` works
#   /usr/share/bash-completion/completions/tcpchat    `tcpchat completions bash`
#   /usr/share/zsh/vendor-completions/_tcpchat        `tcpchat completions zsh`
#   /usr/share/fish/vendor_completions.d/tcpchat.fish `tcpchat completions fish`
#   /lib/systemd/system/tcpchat.service               packaging/tcpchat.service
#   /etc/tcpchat/tcpchat.toml                         packaging/tcpchat.toml (a conffile)
#   /usr/share/doc/tcpchat/                           README, operations guide, copyright
#
# The man page and completions come from the binary being packaged, so they always match
# it. The test command (scripts/test.sh) packages the debug binary it has already built
# (one build for the whole suite) and scripts/test-package.sh installs that package into a
# scratch root; a release package for installing is this script with no arguments.
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=""
out="target/debian"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [ -z "$binary" ]; then
  cargo build --release --locked -p tcpchat
  binary="${CARGO_TARGET_DIR:-target}/release/tcpchat"
fi
[ -x "$binary" ] || { echo "error: no executable at $binary" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb is missing (apt-get install dpkg)" >&2; exit 1; }

version=$("$binary" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/tcpchat_${version}_${arch}"

install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/lib/systemd/system" \
  "$root/etc/tcpchat" "$root/usr/share/doc/tcpchat"

# Stripped of debug info: what Debian ships (a release build has line tables for
# backtraces, a debug build much more; neither belongs on a server).
if command -v objcopy >/dev/null; then
  objcopy --strip-debug "$binary" "$root/usr/bin/tcpchat"
else
  cp "$binary" "$root/usr/bin/tcpchat"
fi
chmod 0755 "$root/usr/bin/tcpchat"

"$binary" man | gzip -9n >"$root/usr/share/man/man1/tcpchat.1.gz"
"$binary" completions bash >"$root/usr/share/bash-completion/completions/tcpchat"
"$binary" completions zsh >"$root/usr/share/zsh/vendor-completions/_tcpchat"
"$binary" completions fish >"$root/usr/share/fish/vendor_completions.d/tcpchat.fish"
install -m 0644 packaging/tcpchat.service "$root/lib/systemd/system/tcpchat.service"
install -m 0644 packaging/tcpchat.toml "$root/etc/tcpchat/tcpchat.toml"
install -m 0644 README.md docs/operations.md "$root/usr/share/doc/tcpchat/"
cat >"$root/usr/share/doc/tcpchat/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tcpchat
License: MIT OR Apache-2.0
EOF

# A conffile: dpkg keeps the operator's edits across upgrades and asks before replacing.
echo "/etc/tcpchat/tcpchat.toml" >"$root/DEBIAN/conffiles"
installed_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
# The newest glibc symbol version the binary links against is the libc6 it needs (what
# dpkg-shlibdeps would say, without a debian/ directory); it also links libgcc_s.
glibc=""
if command -v objdump >/dev/null; then
  glibc=$(objdump -T "$root/usr/bin/tcpchat" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
fi
glibc=${glibc:-2.34}
cat >"$root/DEBIAN/control" <<EOF
Package: tcpchat
Version: $version
Architecture: $arch
Maintainer: tcpchat maintainers <tcpchat@example.invalid>
Installed-Size: $installed_kb
Depends: libc6 (>= $glibc), libgcc-s1
Section: net
Priority: optional
Homepage: https://example.invalid/tcpchat
Description: chat server, client and tools for the classic line protocol
 tcpchat serves the classic line chat protocol over TCP and TLS, alone or as a
 cluster of nodes sharing one Redis, and includes a terminal client, a
 conformance checker, a packet-trace analyzer and a load generator. The
 package installs a sandboxed systemd unit (tcpchat.service), not started.
EOF
# The unit is installed, not enabled or started: the operator reads the config first
# (docs/operations.md), then `systemctl enable --now tcpchat`.
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  # An upgrade restarts a running server (its users reconnect; see docs/operations.md).
  if [ -n "$2" ] && systemctl is-active --quiet tcpchat.service; then
    systemctl restart tcpchat.service || true
  fi
fi
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop tcpchat.service >/dev/null 2>&1 || true
fi
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/tcpchat_${version}_${arch}.deb"
# gzip at level 6: a fraction of xz's time on CI, and every dpkg reads it.
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
