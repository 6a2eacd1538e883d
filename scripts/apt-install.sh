#!/usr/bin/env bash
# Installs the Debian packages named that are not installed yet: one `apt-get update`, then one install, as root.
# Not root: says what to run and fails. Sources are the machine's own apt configuration.
# Usage: scripts/apt-install.sh PACKAGE...
set -euo pipefail
missing=()
for package in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "cronbus's set-up needs the Debian packages ${missing[*]} (this is not a Debian system: install them yourself)" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "cronbus's set-up needs the Debian packages ${missing[*]}: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "apt-get install ${missing[*]} ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq "${missing[@]}" >&2
