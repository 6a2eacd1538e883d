"""Test helpers: bounded waits on conditions and real cronbus service processes on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from cronbus.common.consul.agent import free_port
from cronbus.common.procs import stop_process

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float = 10.0, interval_s: float = 0.05, what: str = "") -> T:
    """Polls predicate until it returns a truthy value (returned), or fails the test after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


async def async_wait_until(
    predicate: Callable[[], Awaitable[T]], timeout_s: float = 10.0, interval_s: float = 0.05, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await asyncio.sleep(interval_s)


class ServiceProcess:
    """One `cronbus <command>` process with its log in a file; stopped by the fixture that made it."""

    def __init__(self, command: str, args: list[str], log_dir: Path, name: str, simulate: str = "") -> None:
        """`simulate`: "macos" or "windows" runs it on that simulated platform (tests/simulated_platform.py)."""
        self.command = command
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._terminated = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        launcher = ["-m", "cronbus.services"]
        if simulate:
            launcher = ["-m", "tests.simulated_platform", simulate, *launcher]
            env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        self.proc = subprocess.Popen(
            [sys.executable, *launcher, command, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)
        self._terminated |= sig == signal.SIGTERM

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout_s: float = 15.0) -> int:
        """Exit code after SIGTERM (sent once: a second one could hit the process after its loop closed)."""
        if self._terminated:
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = stop_process(self.proc, timeout_s)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Cluster:
    """Starts cronbus processes against one Consul agent; stop_all() ends every one of them."""

    def __init__(self, consul_addr: str, log_dir: Path) -> None:
        self.consul_addr = consul_addr
        self.log_dir = log_dir
        self.processes: list[ServiceProcess] = []

    def start(self, command: str, *args: str, name: str = "", simulate: str = "") -> ServiceProcess:
        name = name or f"{command}-{len(self.processes) + 1}"
        base = ["--consul", self.consul_addr, "--node-name", name, "--log-level", "debug"]
        process = ServiceProcess(command, [*base, *args], self.log_dir, name, simulate)
        self.processes.append(process)
        return process

    def scheduler(self, *args: str, name: str = "", simulate: str = "") -> ServiceProcess:
        return self.start("scheduler", "--lock-ttl", "1.5", *args, name=name, simulate=simulate)

    def executor(self, *args: str, name: str = "", simulate: str = "") -> ServiceProcess:
        name = name or f"executor-{len(self.processes) + 1}"
        data_dir = str(self.log_dir / f"{name}-data")
        return self.start("executor", "--data-dir", data_dir, *args, name=name, simulate=simulate)

    def gateway(self, *args: str, name: str = "", port: int = 0, simulate: str = "") -> tuple[ServiceProcess, str]:
        port = port or free_port()
        process = self.start("gateway", "--port", str(port), *args, name=name, simulate=simulate)
        return process, f"http://127.0.0.1:{port}"

    def stop_all(self) -> None:
        for process in self.processes:
            if process.alive():
                process.signal(signal.SIGTERM)
        for process in self.processes:
            process.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.log()[-8000:]}" for p in self.processes)
