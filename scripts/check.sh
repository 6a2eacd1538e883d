#!/usr/bin/env bash
# Runs every check: ruff (lint + format), mypy --strict, and the whole pytest suite (real Consul, real processes,
# headless Chromium). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh --browser
export CONSUL_BIN="${CONSUL_BIN:-$(scripts/get-consul.sh)}"
bin="$root/.venv/bin"
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy" -p cronbus
"$bin/mypy" tests benchmarks
"$bin/pytest" -q "$@"
