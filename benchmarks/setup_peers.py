"""Installs what the benchmark compares with and plots with, when missing: Python packages into this interpreter's
environment (the repo's .venv) with pip, and redis-server with apt-get (run as root; `apt-get update` first)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import zmq

from benchmarks.support import REPO
from cronbus.common.consul.agent import find_consul

# import name -> pip requirement (the `bench` optional dependencies)
PACKAGES = {
    "apscheduler": "apscheduler>=3.10,<4",
    "celery": "celery[redis]>=5.3,<6",
    "redbeat": "celery-redbeat>=2.2",
    "redis": "redis>=5",
    "matplotlib": "matplotlib>=3.8",
}
DISTRIBUTIONS = ["apscheduler", "celery", "celery-redbeat", "redis", "matplotlib", "pyzmq", "msgspec", "croniter",
                 "aiohttp", "py-consul"]  # fmt: skip


def ensure_peers() -> None:
    """pip-installs the missing packages; apt-installs redis-server when it is not on PATH."""
    missing = [req for module, req in PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        print(f"setup: pip install {' '.join(missing)}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
        importlib.invalidate_caches()
    if shutil.which("redis-server") is None:
        print("setup: apt-get install redis-server", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)


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
