"""What macOS and Windows lack, on a simulated platform (tests/simulated_platform.py; docs/portability.md): every
module imports, the client CLI talks to a real gateway, and durable writes work without fdatasync.

Simulated means this Linux interpreter with those functions and modules taken away from cronbus's code: it shows
that the code does not reach for them on these paths, not that it runs on a real Mac or Windows server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cronbus.common.settings import default_syslog_address
from cronbus.services.executor.group_commit import AppendedFile
from tests.helpers import Cluster, wait_until
from tests.integration.test_cli import cli

ROOT = Path(__file__).resolve().parents[2]
IMPORT_ALL = """
import importlib, pkgutil, sys
from tests import simulated_platform
simulated_platform.install(sys.argv[1])
failed = []
for top in ("cronbus.common", "cronbus.services"):
    for module in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        if not module.name.endswith("__main__"):
            try:
                importlib.import_module(module.name)
            except Exception as exc:
                failed.append(f"{module.name}: {exc!r}")
print("\\n".join(failed))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.parametrize("platform", ["macos", "windows"])
def test_every_module_imports_on_a_simulated_system(platform: str) -> None:
    done = _python("-c", IMPORT_ALL, platform)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_the_client_cli_works_against_a_real_gateway_on_simulated_windows(cluster: Cluster) -> None:
    cluster.scheduler(name="s1")
    _, url = cluster.gateway(name="g1")
    wait_until(lambda: cli(url, "leader").exit_code == 0, timeout_s=30, what="the gateway and a leader")
    job = json.dumps({"name": "portable", "schedule": "@manually", "executor": "noop"})
    for args, expected in ((["jobs", "create", "-"], 0), (["jobs", "list", "--json"], 0)):
        done = subprocess.run(
            [sys.executable, "-m", "tests.simulated_platform", "windows", "-m", "cronbus.services", *args],
            check=False, cwd=ROOT, input=job, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT), "CRONBUS_GATEWAY": url},
        )  # fmt: skip
        assert done.returncode == expected, done.stderr
    assert [j["name"] for j in json.loads(done.stdout)] == ["portable"]


def test_the_gateway_and_a_scheduler_run_and_stop_on_simulated_windows(cluster: Cluster) -> None:
    scheduler = cluster.scheduler(name="s1", simulate="windows")
    gateway, url = cluster.gateway(name="g1", simulate="windows")
    wait_until(lambda: cli(url, "leader").exit_code == 0, timeout_s=30, what="the gateway and its leader")
    for process in (gateway, scheduler):
        process.signal(signal.SIGINT)  # Ctrl-C: what a Windows console sends
    assert [gateway.stop(), scheduler.stop()] == [0, 0]
    assert "no SIGHUP on this system" in scheduler.log()


def test_durable_appends_without_fdatasync_as_on_macos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fdatasync")
    appended = AppendedFile(tmp_path / "seen.jsonl")
    assert appended.append(b"one\n") and not appended.append(b"two\n")
    appended.close()
    assert (tmp_path / "seen.jsonl").read_bytes() == b"one\ntwo\n"


@pytest.mark.parametrize(
    ("platform", "address"), [("linux", "/dev/log"), ("darwin", "/var/run/syslog"), ("win32", "127.0.0.1:514")]
)
def test_the_syslog_processor_defaults_to_the_systems_address(platform: str, address: str) -> None:
    assert default_syslog_address(platform) == address
