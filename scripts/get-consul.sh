#!/usr/bin/env bash
# Finds a Consul binary (>= 1.8) or fetches Debian bullseye's consul package into .cache/consul; prints its path.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache/consul"
cached="$cache/root/usr/bin/consul"

version_ok() {  # prints nothing; exit 0 when "$1 version" reports >= 1.8
  local v
  v=$("$1" version 2>/dev/null | sed -n 's/^Consul v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p' | head -n1)
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 1 ] || { [ "$1" -eq 1 ] && [ "$2" -ge 8 ]; }
}

for candidate in "${CONSUL_BIN:-}" "$(command -v consul || true)" "$cached"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && version_ok "$candidate"; then
    echo "$candidate"
    exit 0
  fi
done
if [ -n "${CONSUL_BIN:-}" ]; then
  echo "CONSUL_BIN=$CONSUL_BIN is not a Consul >= 1.8 binary" >&2
  exit 1
fi

howto="Install Consul >= 1.8 (https://developer.hashicorp.com/consul/install) and put it on PATH, or set CONSUL_BIN."
if ! command -v apt-get >/dev/null || ! command -v dpkg >/dev/null; then
  echo "No consul found and this is not a Debian system to fetch it from. $howto" >&2
  exit 1
fi
# The machine's own Debian archive (its mirror or proxy, its keyring), with the suite changed to bullseye.
if ! source_line=$(python3 "$root/scripts/debian_source.py" bullseye); then
  echo "No consul found, and no Debian archive to fetch it from. $howto" >&2
  exit 1
fi
echo "fetching consul 1.8.7 from Debian bullseye into $cache ..." >&2
apt_dir="$cache/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$cache/deb"
echo "$source_line" > "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Debug::NoLocking=1")
if ! apt-get "${apt_opts[@]}" -qq update >&2 \
  || ! (cd "$cache/deb" && apt-get "${apt_opts[@]}" -qq download consul >&2); then
  echo "Could not download Debian's consul package (no network?). $howto" >&2
  exit 1
fi
rm -rf "$cache/root"
dpkg -x "$(ls "$cache"/deb/consul_*.deb | head -n1)" "$cache/root"
rm -rf "$apt_dir" "$cache/deb"
if ! version_ok "$cached"; then
  echo "The fetched consul does not run here. $howto" >&2
  exit 1
fi
echo "$cached"
