"""A cronbus cluster for one scenario: a fresh Consul dev agent, real service processes, jobs loaded in bulk."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from benchmarks.support import BenchError, Proc, Procs, wait_for
from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent, free_port
from cronbus.common.consul.client import MAX_TXN_OPS, ConsulClient, TxnOp
from cronbus.common.consul.store import Store, definition, encode
from cronbus.common.models import Execution, Job, JobStatus

LEADING = "leading term="


class Stack:
    """A Consul dev agent plus the cronbus processes started against it. Use as an async context manager:
    leaving it stops every process and the agent, whatever happened."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.dir = run_dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs = Procs(self.dir)
        self.metrics_port: dict[str, int] = {}  # scheduler name -> its metrics port
        self.agent = DevAgent(log_path=self.dir / "consul.log")
        self.consul: ConsulClient | None = None

    async def __aenter__(self) -> Stack:
        await asyncio.to_thread(self.agent.start)
        self.consul = ConsulClient("127.0.0.1", self.agent.http_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            self.procs.stop_all()
            if self.consul is not None:
                await self.consul.close()
        finally:
            self.agent.stop()

    @property
    def client(self) -> ConsulClient:
        assert self.consul is not None
        return self.consul

    @property
    def store(self) -> Store:
        return Store(self.client)

    def _service(self, command: str, name: str, *args: str, log_level: str = "info") -> Proc:
        base = ["--consul", self.agent.address, "--node-name", name, "--log-level", log_level]
        return self.procs.start(name, [sys.executable, "-m", "cronbus.services", command, *base, *args])

    def scheduler(self, name: str, *args: str) -> Proc:
        """Starts a scheduler, with its metrics on a port of its own (`metrics_port[name]`)."""
        port = self.metrics_port[name] = free_port()
        return self._service("scheduler", name, "--metrics-port", str(port), *args)

    def executor(self, name: str, *args: str, capacity: int = 10_000) -> Proc:
        data = self.dir / f"{name}-data"
        return self._service("executor", name, "--data-dir", str(data), "--capacity", str(capacity), *args)

    def gateway(self, name: str = "gateway", *args: str) -> tuple[Proc, str]:
        port = free_port()
        return self._service("gateway", name, "--port", str(port), *args), f"http://127.0.0.1:{port}"

    async def leader(self) -> tuple[str, int] | None:
        found = await self.store.get_leader()
        return (found[0].name, found[0].term) if found else None

    async def ready(self, scheduler: Proc, executors: Sequence[Proc], timeout_s: float = 60.0) -> None:
        """Waits until `scheduler` leads and has welcomed every executor."""
        await scheduler.wait_log(LEADING, timeout_s)
        for executor in executors:
            await executor.wait_log("welcomed by leader", timeout_s)


# ---- jobs -----------------------------------------------------------------------------------------------


def noop_job(name: str, schedule: str, created_at: datetime, **fields: object) -> Job:
    return msgspec.structs.replace(
        Job(name=name, id=name, schedule=schedule, executor="noop", executor_config={}, created_at=created_at),
        **fields,
    )


def shell_true_job(name: str, schedule: str, created_at: datetime, **fields: object) -> Job:
    job = noop_job(name, schedule, created_at, **fields)
    return msgspec.structs.replace(job, executor="shell", executor_config={"command": "/bin/true", "shell": "false"})


async def load_jobs(consul: ConsulClient, jobs: Iterable[Job], concurrency: int = 6) -> tuple[int, float]:
    """Writes job definitions with Consul transactions of 64 operations, several in flight; returns
    (jobs written, seconds taken)."""
    ops = [TxnOp("set", keys.job(job.name), encode(definition(job))) for job in jobs]
    batches = [ops[i : i + MAX_TXN_OPS] for i in range(0, len(ops), MAX_TXN_OPS)]
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()

    async def write(batch: list[TxnOp]) -> None:
        async with gate:
            for _ in range(5):
                ok, _, errors = await consul.txn(batch)
                if ok:
                    return
                await asyncio.sleep(0.1)
            raise BenchError(f"job load transaction failed: {errors}")

    await asyncio.gather(*(write(b) for b in batches))
    return len(ops), time.monotonic() - started


async def executions(consul: ConsulClient) -> list[Execution]:
    """Every execution record in Consul."""
    _, entries = await consul.kv_list(keys.EXECUTIONS)
    decoder = msgspec.json.Decoder(Execution)
    return [decoder.decode(e.value) for e in entries if e.value]


async def statuses(consul: ConsulClient) -> dict[str, JobStatus]:
    _, found = await Store(consul).list_statuses()
    return {name: status for name, (status, _) in found.items()}


async def recorded_total(consul: ConsulClient) -> int:
    """Finished runs recorded, from the job statuses' counters (trimming history does not lower them)."""
    return sum(s.success_count + s.error_count for s in (await statuses(consul)).values())


def lag_s(record: Execution) -> float:
    return (record.started_at - record.scheduled_at).total_seconds()


def started(record: Execution) -> bool:
    return record.started_at.year > 1


def whole_second(after_s: float) -> datetime:
    """The first whole UTC second at least after_s seconds from now."""
    return datetime.fromtimestamp(math.ceil(time.time() + after_s), UTC)


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


async def wait_leader(
    stack: Stack, *, other_than: str = "", min_term: int = 0, timeout_s: float = 30.0
) -> tuple[str, int]:
    async def found() -> tuple[str, int] | None:
        leader = await stack.leader()
        if leader and leader[0] != other_than and leader[1] >= min_term:
            return leader
        return None

    return await wait_for(found, timeout_s, "a leader", interval_s=0.02)


async def metric(port: int, name: str) -> float | None:
    """One sample of a service's Prometheus endpoint: the sum of the series named `name` (all their labels), None
    if unreachable or absent."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        body = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{")
    ]
    return sum(values) if values else None


class FinishWatch:
    """Counts the results the leader has committed to Consul since it started (its
    `cronbus_executions_finished_total`), so the instant a number of results were recorded is known without
    polling Consul."""

    def __init__(self, metrics_port: int) -> None:
        self.port = metrics_port

    async def poll(self) -> int:
        return int(await metric(self.port, "cronbus_executions_finished_total") or 0)

    async def wait(self, count: int, timeout_s: float, interval_s: float = 0.02) -> float | None:
        """The wall-clock instant `count` results were seen recorded; None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.poll() >= count:
                return time.time()
            await asyncio.sleep(interval_s)
        return None
