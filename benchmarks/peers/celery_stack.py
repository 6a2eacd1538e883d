"""Celery on Redis for one scenario: a redis-server on a free loopback port, a worker, beat processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.peers.celery_app import RUNS_KEY, app
from benchmarks.support import BenchError, Proc, Procs, wait_for
from cronbus.common.consul.agent import free_port

WORKER_CONCURRENCY = 2  # prefork, one process per CPU: Celery's own default here


@dataclass(frozen=True)
class CeleryRun:
    entry: str
    scheduled: float
    started: float
    finished: float
    beat: int


class CeleryStack:
    """redis-server + celery worker + celery beat(s), all stopped on leaving (async context manager)."""

    def __init__(self, run_dir: Path, name: str, env: dict[str, str]) -> None:
        self.dir = run_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(self.dir)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.env = {**env, "BENCH_REDIS_URL": self.url}
        self.redis = redis.Redis(port=self.port)
        self._beats = 0

    async def __aenter__(self) -> CeleryStack:
        server = shutil.which("redis-server")
        if server is None:
            raise BenchError("redis-server not installed (benchmarks.setup_peers installs it)")
        self.procs.start(
            "redis",
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no"],
        )  # fmt: skip

        async def pong() -> bool:
            try:
                return bool(self.redis.ping())
            except redis.ConnectionError:
                return False

        await wait_for(pong, 10, "redis-server")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.procs.stop_all()
        self.redis.close()

    def _celery(self, name: str, *args: str) -> Proc:
        return self.procs.start(
            name, [sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_app", *args], env=self.env
        )

    async def worker(self, concurrency: int = WORKER_CONCURRENCY) -> Proc:
        """Starts a worker and waits until it has run a warm-up task (so it is consuming)."""
        proc = self._celery(
            "celery-worker", "worker", "-l", "warning", "-P", "prefork", "-c", str(concurrency),
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"bench{self.port}@%h",
        )  # fmt: skip
        with app.connection_for_write(self.url) as connection:
            app.send_task("bench.tick", kwargs={"name": "warmup"}, connection=connection)
        await wait_for(self._warm, 60, "the celery worker to run a task", interval_s=0.05)
        self.redis.delete(RUNS_KEY)
        if not proc.alive():
            raise BenchError(f"celery worker died: {proc.tail()}")
        return proc

    async def _warm(self) -> bool:
        return bool(self.redis.llen(RUNS_KEY))

    def beat(self, scheduler: str) -> Proc:
        self._beats += 1
        return self._celery(
            f"celery-beat-{self._beats}", "beat", "-l", "warning", "-S", f"benchmarks.peers.celery_app:{scheduler}",
            "--pidfile=", "-s", str(self.dir / f"beat-{self._beats}.db"),
        )  # fmt: skip

    def runs(self) -> list[CeleryRun]:
        raw = self.redis.lrange(RUNS_KEY, 0, -1)
        return [CeleryRun(*json.loads(item)) for item in raw]

    def run_count(self) -> int:
        return int(self.redis.llen(RUNS_KEY))

    def queued(self) -> int:
        return int(self.redis.llen("celery"))

    async def drain(self, timeout_s: float) -> None:
        """Waits (bounded) until the broker queue is empty and no run was added for half a second."""
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            count = self.run_count()
            if count == last and self.queued() == 0:
                return
            last = count
            await asyncio.sleep(0.5)
