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

import psutil
import pytest

from cronbus.common.settings import default_syslog_address
from cronbus.services.executor.group_commit import AppendedFile
from tests.helpers import Cluster, wait_until
from tests.integration.test_cli import as_json, cli, ok, one_finished, run_now
from tests.integration.test_executors_shell import alive

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


def test_the_shell_executors_tests_pass_on_simulated_windows() -> None:
    """The shell executor's own tests, run on the simulated Windows: runs held as process trees, their output read by
    a thread, stdin fed by a thread, reaped by a thread (no pidfd), stopped and killed through psutil. Those that
    need process groups or POSIX users are skipped there, and one that needs a Job Object."""
    done = _python("-m", "tests.simulated_platform", "windows", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-rs", "tests/integration/test_executors_shell.py")  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 50 and "failed" not in summary, summary
    assert "the simulation has none" in done.stdout  # the one left to the Job Object, skipped and said so


def test_an_executor_runs_kills_and_guards_shell_jobs_on_simulated_windows(cluster: Cluster, tmp_path: Path) -> None:
    cluster.scheduler(name="s1")
    executor = cluster.executor(name="w1", simulate="windows")
    _, url = cluster.gateway(name="g1")
    wait_until(lambda: cli(url, "leader").exit_code == 0, timeout_s=30, what="the gateway and a leader")
    wait_until(lambda: any(m["Name"] == "w1" for m in as_json(url, "members")), timeout_s=20, what="w1 listed")
    ok(
        url,
        "jobs",
        "create",
        "--name",
        "hello",
        "--schedule",
        "@manually",
        "--command",
        "echo hi from $CRONBUS_JOB_NAME",
    )
    run_now(url, "hello")
    hello = one_finished(url, "hello")
    assert (hello["status"], hello["output"]) == ("success", "hi from hello\n")

    ok(url, "jobs", "create", "--name", "sleepy", "--schedule", "@manually", "--command", "sleep 300 & echo $!; wait")
    run_now(url, "sleepy")
    victim = wait_until(lambda: _running(url, "sleepy"), timeout_s=20, what="sleepy running")
    ok(url, "executions", "kill", "sleepy", victim)
    killed = one_finished(url, "sleepy")
    assert killed["status"] == "killed"
    child = int(killed["output"].splitlines()[0])
    wait_until(lambda: not alive(child), timeout_s=10, what="the killed run's child ended")

    pids = tmp_path / "pids"
    ok(url, "jobs", "create", "--name", "orphan", "--schedule", "@manually",
       "--command", f"sleep 300 & echo $$ $! > {pids}; wait")  # fmt: skip
    run_now(url, "orphan")
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, timeout_s=20, what="the run's pids")
    commands = [child.cmdline() for child in psutil.Process(executor.proc.pid).children()]
    guardians = [c for c in commands if "cronbus.services.executor.guardian" in c]
    assert [g[-1] for g in guardians] == ["trees"], commands  # w1's, told that runs are process trees
    executor.signal(signal.SIGKILL)
    executor.stop()
    run_pids = [int(p) for p in pids.read_text().split()]
    wait_until(lambda: not any(map(alive, run_pids)), timeout_s=10, what=f"the guardian to kill {run_pids}")


def _running(url: str, job: str) -> str:
    return next((e["id"] for e in as_json(url, "busy") if e["job_name"] == job and e["status"] == "running"), "")


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
