"""Celery peer: the app, the task and the beat schedulers that celery worker / celery beat processes load.

Configured by environment (set by benchmarks.peers.celery_stack): BENCH_REDIS_URL, BENCH_MODE (lag | herd |
failover), BENCH_JOBS, BENCH_AT (herd instant), BENCH_SHELL (1: each run spawns /bin/true),
BENCH_LOCK_TIMEOUT and BENCH_MAX_INTERVAL (RedBeat). Every task start is pushed to the Redis list
`bench:runs` as JSON [entry, scheduled, started, finished, beat pid].

The task gets the instant beat meant to run it (`scheduled`): last_run_at + interval for interval entries,
which is the time beat itself computes is_due from; the one-shot instant for the herd.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import redis
from celery import Celery
from celery.beat import Scheduler
from celery.schedules import schedstate, schedule
from redbeat import RedBeatScheduler

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
MODE = os.environ.get("BENCH_MODE", "lag")
JOBS = int(os.environ.get("BENCH_JOBS", "0"))
AT = float(os.environ.get("BENCH_AT", "0"))
SHELL = os.environ.get("BENCH_SHELL") == "1"
RUNS_KEY = "bench:runs"

app = Celery("bench", broker=REDIS_URL)
app.conf.update(
    task_ignore_result=True,
    enable_utc=True,
    timezone="UTC",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    redbeat_redis_url=REDIS_URL,
    redbeat_lock_timeout=int(os.environ.get("BENCH_LOCK_TIMEOUT", "2")),
    beat_max_loop_interval=float(os.environ.get("BENCH_MAX_INTERVAL", "1")),
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client  # noqa: PLW0603 - one connection per worker process, made on first use
    if _client is None:
        _client = redis.Redis.from_url(REDIS_URL)
    return _client


@app.task(name="bench.tick", ignore_result=True)  # type: ignore[untyped-decorator]
def tick(name: str = "", scheduled: float = 0.0, beat: int = 0) -> None:
    started = time.time()
    if SHELL:
        subprocess.run(["/bin/true"], check=False)
    _redis().rpush(RUNS_KEY, json.dumps([name, scheduled, started, time.time(), beat]))


class OneShot(schedule):  # type: ignore[misc]
    """Due once, at the wall-clock instant `at` (Celery has no one-shot schedule of its own)."""

    def __init__(self, at: float) -> None:
        super().__init__(timedelta(days=1))
        self.at = at

    def is_due(self, last_run_at: datetime) -> schedstate:
        now = time.time()
        if last_run_at.timestamp() >= self.at:
            return schedstate(False, 3600.0)
        if now >= self.at:
            return schedstate(True, 3600.0)
        return schedstate(False, self.at - now)

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return timedelta(seconds=max(0.0, self.at - time.time()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OneShot) and other.at == self.at

    def __hash__(self) -> int:
        return hash(self.at)


def _due(entry: Any) -> float:
    if isinstance(entry.schedule, OneShot):
        return float(entry.schedule.at)
    if entry.last_run_at is None:
        return time.time()
    return float((entry.last_run_at + entry.schedule.run_every).timestamp())


class _StampDue:
    """Sends each task with the instant beat meant to run it, and this beat's pid, as task arguments."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        due = _due(entry)
        if advance:
            self.reserve(entry)  # type: ignore[attr-defined]
        # What the base apply_async reads of an entry, with this send's arguments (the entry stays untouched).
        sent = SimpleNamespace(name=entry.name, task=entry.task, args=entry.args, options=entry.options,
                               kwargs={"name": entry.name, "scheduled": due, "beat": os.getpid()})  # fmt: skip
        return super().apply_async(sent, producer=producer, advance=False, **kwargs)  # type: ignore[misc]


class BenchScheduler(_StampDue, Scheduler):  # type: ignore[misc]
    """Celery's default in-memory scheduler."""


class BenchRedBeatScheduler(_StampDue, RedBeatScheduler):  # type: ignore[misc]
    """RedBeat: the schedule in Redis, one beat at a time through a Redis lock (the others wait for it)."""


def _schedule() -> dict[str, dict[str, Any]]:
    if MODE == "herd":
        return {f"job-{i}": {"task": "bench.tick", "schedule": OneShot(AT)} for i in range(JOBS)}
    return {f"job-{i}": {"task": "bench.tick", "schedule": timedelta(seconds=1)} for i in range(JOBS)}


app.conf.beat_schedule = _schedule()
