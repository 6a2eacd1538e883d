"""Plumbing every scenario shares: processes we start and always stop, bounded waits, statistics, /proc readings."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A scenario could not measure what it set out to (a process died, a bounded wait ran out)."""


# ---- processes ------------------------------------------------------------------------------------------


class Proc:
    """A child process in its own session (so stop() reaches the children it forks), output in a log file."""

    def __init__(self, name: str, args: Sequence[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.time()
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )
        self._scan_offset = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> float:
        """SIGKILL to the process group; returns the wall-clock instant it was sent."""
        sent = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        return sent

    def terminate(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the process group, then SIGKILL after timeout_s. Idempotent."""
        self.terminate()
        self.finish(time.monotonic() + timeout_s)

    def finish(self, deadline: float) -> None:
        """Waits for the process until `deadline` (monotonic), then SIGKILLs its whole group."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(max(0.0, deadline - time.monotonic()))
        # Also children that outlived their parent (celery's pool): they still belong to the group we created.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)
        if not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, needle: bytes, offset: int = 0) -> tuple[int, int]:
        """Occurrences of needle in the log from byte `offset` on, and the offset to resume from (cheap to
        call often: only new bytes are read)."""
        with self.log_path.open("rb") as file:
            file.seek(offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # only whole lines, so a needle split by a partial write is not lost
        return data[:end].count(needle), offset + end

    async def wait_log(self, needle: str, timeout_s: float, *, since: int = 0) -> float:
        """Waits until the log holds `needle` (after byte `since`); returns the wall-clock instant it was seen."""
        data = needle.encode()
        offset = since
        deadline = time.monotonic() + timeout_s
        while True:
            found, offset = self.count(data, offset)
            if found:
                return time.time()
            if not self.alive():
                raise BenchError(f"{self.name} exited with code {self.popen.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no {needle!r} in its log after {timeout_s:.0f}s: {self.tail()}")
            await asyncio.sleep(0.02)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def tail(self, chars: int = 1500) -> str:
        return self.log_text()[-chars:]


class Procs:
    """Every process a scenario starts; stop_all() (in a finally) ends them in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Proc] = []

    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, args, self.log_dir, env)
        self.items.append(proc)
        return proc

    def python(self, name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        return self.start(name, [sys.executable, "-m", module, *args], env)

    def stop_all(self, grace_s: float = 3.0) -> None:
        """SIGTERM to every process at once, SIGKILL to those still running after grace_s: what they measured
        is read before, so a graceful drain (an executor waiting for acks) would only cost time."""
        for proc in reversed(self.items):
            proc.terminate()
        deadline = time.monotonic() + grace_s
        for proc in reversed(self.items):
            proc.finish(deadline)


# ---- waits ----------------------------------------------------------------------------------------------


async def wait_for(
    predicate: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, interval_s: float = 0.1
) -> T:
    """Polls predicate until it returns a truthy value; raises BenchError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def sleep_until(wall_s: float) -> None:
    delay = wall_s - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# ---- statistics -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Distribution:
    """p50/p99/max of a sample, in the sample's unit."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.count = len(self.values)
        self.p50 = percentile(self.values, 50)
        self.p99 = percentile(self.values, 99)
        self.max = max(self.values) if self.values else math.nan


# ---- /proc ----------------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process so far."""
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine() -> dict[str, str]:
    """What the run ran on: CPUs, memory, CPU model, kernel, Python."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": str(os.cpu_count() or 0),
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
