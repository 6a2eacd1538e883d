"""What the benchmark compares with: checks the peers' packages are installed (the lock's, by scripts/setup.sh),
installs Debian's redis-server when missing, and reports the versions a run used."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess

import zmq

from benchmarks.support import REPO
from cronbus.common.consul.agent import find_consul

# The peers measured beside cronbus, and the plots: the `bench` extra, pinned in requirements/dev.txt, which
# scripts/setup.sh installs.
PEERS = ("apscheduler", "celery", "redbeat", "redis", "matplotlib")
DISTRIBUTIONS = ["apscheduler", "celery", "celery-redbeat", "redis", "matplotlib", "pyzmq", "msgspec", "croniter",
                 "aiohttp", "py-consul"]  # fmt: skip


def ensure_peers() -> None:
    """Fails with what to run when a peer's package is missing; installs Debian's redis-server when missing."""
    missing = [module for module in PEERS if importlib.util.find_spec(module) is None]
    if missing:
        raise SystemExit(f"the benchmark's peers are not installed ({', '.join(missing)}): run scripts/setup.sh")
    if shutil.which("redis-server") is None:
        subprocess.run([str(REPO / "scripts" / "apt-install.sh"), "redis-server"], check=True)


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def versions() -> dict[str, str]:
    """Versions of cronbus (git commit), its peers and the tools the run used."""
    found: dict[str, str] = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "missing"
    found["libzmq"] = zmq.zmq_version()
    commit = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    dirty = bool(_run(["git", "-C", str(REPO), "status", "--porcelain", "--", "common", "services"]).strip())
    found["cronbus"] = commit + (" + uncommitted changes" if dirty else "")
    redis_server = re.search(r"v=(\S+)", _run(["redis-server", "--version"]))
    found["redis-server"] = redis_server.group(1) if redis_server else "missing"
    try:
        consul = re.search(r"Consul (v\S+)", _run([find_consul(), "version"]))
        found["consul"] = consul.group(1) if consul else "unknown"
    except Exception as exc:
        found["consul"] = f"not found ({exc})"
    return found
