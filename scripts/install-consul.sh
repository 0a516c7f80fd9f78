#!/usr/bin/env bash
# Install a Consul binary for configd's dev server and tests, without touching the system.
#
# Prints the path of a usable `consul` (>= 1.8) on stdout:
#   1. $CONSUL_BIN or `consul` on PATH when it is at least 1.8;
#   2. else a binary kept under .cache/consul from an earlier run;
#   3. else Debian bullseye's `consul` package (1.8.7), fetched with `apt-get download` through a
#      private sources list (this machine's own Debian mirror, suite changed to bullseye) and private
#      lists/cache directories, then unpacked with `dpkg -x`. Nothing is installed system-wide.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/consul"
bin="$dest/usr/bin/consul"

version_ok() {  # $1: a consul binary; true when it runs and is >= 1.8
  local v
  v="$("$1" version 2>/dev/null | sed -n 's/^Consul v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')" || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 1 ] || { [ "$1" -eq 1 ] && [ "$2" -ge 8 ]; }
}

for candidate in "${CONSUL_BIN:-}" "$(command -v consul || true)" "$bin"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done

# The Debian mirror this machine already uses (deb822 .sources or one-line .list format).
mirror="$(
  { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'; } |
    grep -E '/debian/?$' | head -n 1
)" || true
if [ -z "$mirror" ]; then
  echo "install-consul: no Debian mirror found in /etc/apt/sources.list*; install consul >= 1.8 on PATH or set CONSUL_BIN" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
if [ -f "$keyring" ]; then
  echo "deb [signed-by=$keyring] ${mirror%/} bullseye main" >"$work/sources.list"
else
  echo "deb ${mirror%/} bullseye main" >"$work/sources.list"
fi
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
echo "install-consul: fetching Debian bullseye's consul package from $mirror" >&2
apt-get "${apt_opts[@]}" -qq update >&2
(cd "$work" && apt-get "${apt_opts[@]}" -qq download consul >&2)
rm -rf "$dest"
mkdir -p "$dest"
dpkg -x "$work"/consul_*.deb "$dest"
version_ok "$bin" || { echo "install-consul: unpacked $bin does not run" >&2; exit 1; }
echo "install-consul: $("$bin" version | head -n 1) at $bin" >&2
echo "$bin"
