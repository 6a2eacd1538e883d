#!/usr/bin/env bash
# Idempotent set-up on a fresh clone: a Python venv holding exactly requirements/dev.txt (the lock) and cronbus
# (editable), and a Consul binary.
# Usage: scripts/setup.sh [--tests]   (--tests also installs what the tests run: Debian's nats-server,
# rabbitmq-server, chromium and postgresql, and the npm packages of package-lock.json)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
lock=requirements/dev.txt
stamp="$venv/.cronbus-installed"
# The venv is made anew whenever the lock or pyproject.toml changed, so it never keeps a package the lock
# dropped: what is installed is the lock, nothing more.
want=$(cat "$lock" requirements/build.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  mkdir -p .cache
  log="$root/.cache/setup-pip.log"
  echo "installing $lock into .venv (pip's output: .cache/setup-pip.log) ..." >&2
  # Where packages come from is the machine's pip configuration (index, mirror, proxy); the lock only says what.
  if ! "$venv/bin/python" -m pip install --require-hashes --no-deps -r requirements/build.txt >"$log" 2>&1 \
    || ! "$venv/bin/python" -m pip install --require-hashes --no-deps --no-build-isolation -r "$lock" >>"$log" 2>&1; then
    grep -E "ERROR|Error|error:|hash" "$log" | tail -n 20 >&2
    echo "Could not install $lock (see $log). If it was edited by hand, make it again from pyproject.toml:" \
      ".venv/bin/python scripts/lock.py (then commit requirements/)." >&2
    exit 1
  fi
  if ! "$venv/bin/python" -m pip install --no-deps --no-build-isolation -e . >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "Could not install cronbus itself (see $log)." >&2
    exit 1
  fi
  "$venv/bin/python" -m pip check >&2
  echo "$want" > "$stamp"
fi
scripts/get-consul.sh >/dev/null
if [ "${1:-}" = "--tests" ]; then
  # What the tests run for real, in one apt-get update and one install: the NATS and RabbitMQ servers the broker
  # executors' tests publish to, Chromium for the UI tests, PostgreSQL (initdb, pg_ctl) for the history store's,
  # npm for the JavaScript packages below.
  packages=(nats-server rabbitmq-server chromium postgresql)
  command -v npm >/dev/null || packages+=(npm)
  scripts/apt-install.sh "${packages[@]}"
  # The JavaScript packages of package.json (react-admin's data provider for its test, ESLint and TypeScript for the
  # UI's checks), exactly as package-lock.json has them (npm ci), from the machine's npm configuration; made anew
  # when the lock changes.
  npm_want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ "$(cat node_modules/.cronbus-installed 2>/dev/null)" != "$npm_want" ]; then
    echo "installing package-lock.json into node_modules ..." >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$npm_want" > node_modules/.cronbus-installed
  fi
fi
# mypy cannot follow setuptools' package-dir mapping, so it reads a view of the tree under the
# installed names: .cache/typecheck/cronbus/{common,services} are links to the real folders.
mkdir -p .cache/typecheck/cronbus
ln -sfn ../../../common .cache/typecheck/cronbus/common
ln -sfn ../../../services .cache/typecheck/cronbus/services
