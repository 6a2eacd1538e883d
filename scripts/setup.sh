#!/usr/bin/env bash
# Idempotent set-up on a fresh clone: Python venv with cronbus installed (editable), and a Consul binary.
# Usage: scripts/setup.sh [--browser]   (--browser also installs Debian's chromium for the UI tests)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
stamp="$venv/.cronbus-installed"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
# Reinstall only when the dependency list changed.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
scripts/get-consul.sh >/dev/null
if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "UI tests need Debian's chromium: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
# mypy cannot follow setuptools' package-dir mapping, so it reads a view of the tree under the
# installed names: .cache/typecheck/cronbus/{common,services} are links to the real folders.
mkdir -p .cache/typecheck/cronbus
ln -sfn ../../../common .cache/typecheck/cronbus/common
ln -sfn ../../../services .cache/typecheck/cronbus/services
