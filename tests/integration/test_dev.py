"""`cronbus dev` brings the whole system up, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

from cronbus.common.consul.agent import free_port, listening
from tests.helpers import wait_until


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.load(resp)
    except (urllib.error.URLError, OSError, ValueError):
        return None


class Dev:
    """`cronbus dev` with `args`, its output read line by line; `stop()` is Ctrl-C, waited for."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port, self.consul_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cronbus.services", "dev", "--port", str(self.port),
             "--consul-port", str(self.consul_port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "CRONBUS_DEV_DIR": str(tmp_path), **(env or {})},
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout or []:
            self.lines.append(line.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_up(self) -> None:
        wait_until(lambda: "cronbus is up" in self.text, timeout_s=90, what="cronbus is up")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        assert self.proc.returncode == 0, self.text

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _passing(dev: Dev) -> bool:
    checks = _get(f"http://127.0.0.1:{dev.consul_port}/v1/health/state/passing") or []
    return {"cronbus-scheduler", "cronbus-executor", "cronbus-gateway"} <= {c["ServiceName"] for c in checks}


def test_dev_brings_everything_up_and_ctrl_c_stops_it_all(tmp_path: Path) -> None:
    dev = Dev(tmp_path, "--schedulers", "2", "--tag", "role=web")
    try:
        dev.wait_up()
        assert _get(f"http://127.0.0.1:{dev.port}/health")

        wait_until(lambda: _passing(dev), timeout_s=30, what="scheduler, executor and gateway passing in Consul")
        family = _descendants(dev.proc.pid)
        assert len(family) >= 5, "consul, two schedulers, an executor and a gateway"
        dev.stop()
        assert f"http://127.0.0.1:{dev.port}/ui/" in dev.text
        assert f"http://127.0.0.1:{dev.consul_port}/ui/" in dev.text
        wait_until(lambda: not any(_alive(pid) for pid in family), timeout_s=10, what="every child gone")
    finally:
        dev.close()


def test_dev_with_a_postgresql_history_store_keeps_runs_there_and_removes_it_at_ctrl_c(tmp_path: Path) -> None:
    dev = Dev(tmp_path, "--history-store", "postgresql", env={"CRONBUS_HISTORY_SETTLE": "1s"})
    try:
        dev.wait_up()
        found = re.search(r"History: +(postgresql://\S+)", dev.text)
        assert found, dev.text
        dsn = found[1]
        # Every second, not ?runoncreate: the gateway is up before the executor has joined, and a run asked for
        # sooner would find no executor.
        job = {
            "name": "pg-dev",
            "schedule": "@every 1s",
            "executor": "shell",
            "executor_config": {"command": "echo hi"},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{dev.port}/v1/jobs", data=json.dumps(job).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201

        def in_postgres() -> list[tuple[str, str]]:
            with contextlib.suppress(psycopg.Error), psycopg.connect(dsn, connect_timeout=2) as conn:
                return conn.execute("SELECT job_name, status FROM cronbus_executions").fetchall()
            return []

        moved = wait_until(in_postgres, timeout_s=60, what="runs' records in PostgreSQL")
        assert set(moved) == {("pg-dev", "success")}
        listed = _get(f"http://127.0.0.1:{dev.port}/v1/jobs/pg-dev/executions?status=success")
        assert len(listed) >= len(moved), "read back from PostgreSQL (and Consul, for those not moved yet)"
        assert {(e["job_name"], e["output"]) for e in listed} == {("pg-dev", "hi\n")}
        port = int(dsn.split(":")[2].split("/")[0])
        dev.stop()
        assert not listening(port), "the PostgreSQL cluster is stopped"
        logs = Path(tempfile.gettempdir()).glob("cronbus-pg-*/postgres.log")
        assert not [log for log in logs if f"port {port}" in log.read_text(errors="replace")], "its folder is removed"
    finally:
        dev.close()
