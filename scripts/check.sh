#!/usr/bin/env bash
# Runs every check: the lock agrees with pyproject.toml, ruff (lint + format), mypy --strict, ESLint and tsc --checkJs on the
# web UI, and the whole pytest suite (real Consul, real processes,
# headless Chromium). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh --tests
export CONSUL_BIN="${CONSUL_BIN:-$(scripts/get-consul.sh)}"
bin="$root/.venv/bin"
"$bin/python" scripts/lock.py --check
"$bin/ruff" check .
"$bin/ruff" format --check .
"$bin/mypy" -p cronbus
"$bin/mypy" tests benchmarks scripts
# The web UI's JavaScript (no build step): ESLint, and TypeScript checking the plain JS with its JSDoc types.
node_modules/.bin/eslint --max-warnings 0
node_modules/.bin/tsc -p tsconfig.json
"$bin/pytest" -q "$@"
