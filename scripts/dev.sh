#!/usr/bin/env bash
# Sets up a fresh clone and brings the whole system up on this machine (Consul dev agent, scheduler,
# executor, gateway). Extra arguments go to `cronbus dev` (e.g. --schedulers 2 --tag role=web, or
# --history-store postgresql).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
# A PostgreSQL history store (--history-store postgresql) runs Debian's postgresql: installed when missing.
case " $* " in
  *" --history-store postgresql "* | *" --history-store=postgresql "*) scripts/apt-install.sh postgresql ;;
esac
CONSUL_BIN="${CONSUL_BIN:-$(scripts/get-consul.sh)}" exec "$root/.venv/bin/cronbus" dev "$@"
