"""`cronbus dev` brings the whole system up, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cronbus.common.consul.agent import free_port
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


def test_dev_brings_everything_up_and_ctrl_c_stops_it_all(tmp_path: Path) -> None:
    port, consul_port = free_port(), free_port()
    env = {**os.environ, "CRONBUS_DEV_DIR": str(tmp_path)}
    dev = subprocess.Popen(
        [sys.executable, "-m", "cronbus.services", "dev", "--port", str(port), "--consul-port", str(consul_port),
         "--schedulers", "2", "--tag", "role=web"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        for line in dev.stdout or []:
            lines.append(line.decode(errors="replace"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_until(lambda: any("cronbus is up" in line for line in lines), timeout_s=90, what="cronbus is up")
        assert _get(f"http://127.0.0.1:{port}/health")

        def passing() -> bool:
            checks = _get(f"http://127.0.0.1:{consul_port}/v1/health/state/passing") or []
            names = {c["ServiceName"] for c in checks}
            return {"cronbus-scheduler", "cronbus-executor", "cronbus-gateway"} <= names

        wait_until(passing, timeout_s=30, what="scheduler, executor and gateway passing in Consul")
        family = _descendants(dev.pid)
        assert len(family) >= 5, "consul, two schedulers, an executor and a gateway"
        os.killpg(dev.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        dev.wait(timeout=60)
        reader.join(timeout=10)
        text = "".join(lines)
        assert dev.returncode == 0, text
        assert f"http://127.0.0.1:{port}/ui/" in text
        assert f"http://127.0.0.1:{consul_port}/ui/" in text
        wait_until(lambda: not any(_alive(pid) for pid in family), timeout_s=10, what="every child gone")
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
