#!/usr/bin/env bash
# Sets up a fresh clone and brings the whole system up on this machine (Consul dev agent, scheduler,
# executor, gateway). Extra arguments go to `cronbus dev` (e.g. --schedulers 2 --tag role=web).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
CONSUL_BIN="${CONSUL_BIN:-$(scripts/get-consul.sh)}" exec "$root/.venv/bin/cronbus" dev "$@"
