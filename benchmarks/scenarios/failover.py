"""Failover: two schedulers, SIGKILL the leader again and again; kill -> first run launched by the new leader.

cronbus: 2 schedulers (default lock TTL), 2 executors, jobs every second; once with the Consul history store, once
with a PostgreSQL one (records read back from both). For each kill, the failover time is
the earliest started_at among the records of the new term that started after the kill. A duplicate is an
execution id started twice (across both executors' logs) or a slot with more than one attempt-1 run.
RedBeat: two celery beat processes on one Redis lock (lock timeout set to cronbus's lock TTL, polling every
0.5 s), a worker; the beat holding the lock is SIGKILLed; failover = the first task sent by the other beat
that starts after the kill.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks import plots
from benchmarks.cronbus_stack import LEADING, Stack, executions, load_jobs, noop_job, started, wait_leader, whole_second
from benchmarks.peers.celery_stack import CeleryStack
from benchmarks.report import at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import BenchError, Distribution, Proc, wait_for
from cronbus.common.history import ExecutionFilter
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.models import Execution
from cronbus.common.postgresql import PostgresHistoryStore

GOAL_P99_S = 3.0
JOBS = 20
LOCK_TTL_S = 2  # cronbus's default --lock-ttl; RedBeat gets the same
STARTED = re.compile(rb"executor\.service: started job=\S+ exec=(\S+)")


@dataclass
class FailoverResult:
    name: str
    takeovers_s: list[float] = field(default_factory=list)
    duplicates: int = 0
    starts: list[float] = field(default_factory=list)  # every run start, seconds since `began`
    kills: list[float] = field(default_factory=list)
    began: float = 0.0
    failed_kills: int = 0
    unaccounted: int = 0

    @property
    def gaps(self) -> list[tuple[float, float]]:
        return [(k, k + t) for k, t in zip(self.kills, self.takeovers_s, strict=False)]


async def every_record(stack: Stack, dsn: str) -> tuple[list[Execution], int]:
    """Every record in Consul and, with a PostgreSQL store, in PostgreSQL, each once; and how many of them were in
    PostgreSQL. Consul is read first, so a record moved (written to PostgreSQL, then deleted from Consul) between
    the two reads is found in PostgreSQL."""
    found = {(r.job_name, r.id): r for r in await executions(stack.client)}
    moved: list[Execution] = []
    if dsn:
        store = PostgresHistoryStore(dsn)
        try:
            moved = (await store.search(ExecutionFilter())).records
        finally:
            await store.close()
    for record in moved:
        found.setdefault((record.job_name, record.id), record)
    return list(found.values()), len(moved)


async def cronbus_failover(ctx: Ctx, kills: int, rng: random.Random, dsn: str = "") -> FailoverResult:
    """With `dsn`, the schedulers keep history in that PostgreSQL database, records moving there 1 s after they
    end (so runs, moves and kills overlap)."""
    result = FailoverResult("cronbus (PostgreSQL store)" if dsn else "cronbus")
    ctx.step(f"{result.name}, {kills} kills of the leader")
    async with Stack(ctx.run_dir, "failover-cronbus-postgresql" if dsn else "failover-cronbus") as stack:
        history: tuple[str, ...] = ("--history-limit", "100000")  # keep every record, so all runs can be read back
        if dsn:
            history += ("--history-store", dsn, "--history-settle", "1s")
        schedulers = {name: stack.scheduler(name, *history) for name in ("scheduler-1", "scheduler-2")}
        executors = [stack.executor(f"executor-{i + 1}") for i in range(2)]
        leader_name, term = await wait_leader(stack)
        await stack.ready(schedulers[leader_name], executors)
        anchor = whole_second(1)
        await load_jobs(stack.client, [noop_job(f"job-{i}", "@every 1s", anchor) for i in range(JOBS)])
        result.began = time.time()
        await asyncio.sleep(ctx.size(1, 3))
        cycles: list[tuple[float, int]] = []  # (kill instant, new term)
        for cycle in range(kills):
            leader_name, term = await wait_leader(stack)
            standby = next(n for n in schedulers if n != leader_name)
            await asyncio.sleep(rng.uniform(0, 1))  # a random phase against the one-second slots
            since = schedulers[standby].log_size()
            killed_at = schedulers[leader_name].kill()
            result.kills.append(killed_at - result.began)
            try:
                _, new_term = await wait_leader(stack, other_than=leader_name, min_term=term + 1, timeout_s=30)
                await schedulers[standby].wait_log(LEADING, 30, since=since)
            except BenchError as exc:
                ctx.report.note("failover", f"cronbus: no takeover after a kill: {exc}")
                result.failed_kills += 1
                break
            cycles.append((killed_at, new_term))
            await asyncio.sleep(1.0)  # let the new leader dispatch, then bring the killed one back as standby
            if cycle == kills - 1:
                break
            schedulers[leader_name] = stack.scheduler(leader_name, *history)
            await schedulers[leader_name].wait_log("registered service=", 30)
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        everything, moved = await every_record(stack, dsn)
        records = [r for r in everything if started(r)]
        for killed_at, new_term in cycles:
            after = [
                r.started_at.timestamp() for r in records if r.term == new_term and r.started_at.timestamp() > killed_at
            ]
            result.takeovers_s.append(min(after) - killed_at if after else float("inf"))
        result.starts = [r.started_at.timestamp() - result.began for r in records]
        starts_per_id: Counter[bytes] = Counter()
        for proc in executors:
            starts_per_id.update(STARTED.findall(proc.log_path.read_bytes()))
        per_slot = Counter((r.job_name, r.scheduled_at) for r in records if r.attempt == 1 and not r.manual)
        result.duplicates = sum(n - 1 for n in starts_per_id.values() if n > 1) + sum(
            n - 1 for n in per_slot.values() if n > 1
        )
        coalesced = sum(1 for r in everything if r.status == "missed")
        result.unaccounted = unaccounted_slots(everything)
        ctx.report.note(
            "failover",
            f"{result.name}: {JOBS} jobs every second, {len(records):,} runs, {coalesced} slots recorded missed "
            "(coalesced, misfire_policy run_once) across the kills"
            + (f"; {moved:,} records read back from PostgreSQL" if dsn else ""),
        )
    return result


def unaccounted_slots(records: list[Execution]) -> int:
    """Whole-second slots of each job, from its first recorded slot to 3 s before the newest, with no record
    at all (neither a run nor a missed/skipped record, docs/semantics.md §4)."""
    by_job: dict[str, set[int]] = {}
    for r in records:
        by_job.setdefault(r.job_name, set()).add(int(r.scheduled_at.timestamp()))
    newest = max((max(slots) for slots in by_job.values()), default=0)
    return sum(1 for slots in by_job.values() for slot in range(min(slots), newest - 3 + 1) if slot not in slots)


async def redbeat_failover(ctx: Ctx, kills: int, rng: random.Random) -> FailoverResult:
    result = FailoverResult("RedBeat")
    ctx.step(f"RedBeat, {kills} kills of the beat holding the lock")
    env = {"BENCH_MODE": "failover", "BENCH_JOBS": str(JOBS), "BENCH_LOCK_TIMEOUT": str(LOCK_TTL_S),
           "BENCH_MAX_INTERVAL": "0.5"}  # fmt: skip
    async with CeleryStack(ctx.run_dir, "failover-redbeat", env) as celery:
        await celery.worker()
        beats: dict[int, Proc] = {}
        for _ in range(2):
            proc = celery.beat("BenchRedBeatScheduler")
            beats[proc.pid] = proc
        result.began = time.time()

        async def holder() -> int | None:
            runs = celery.runs()
            recent = [r for r in runs[-5:] if r.beat in beats and beats[r.beat].alive()]
            return recent[-1].beat if recent else None

        await wait_for(holder, 30, "a RedBeat beat to send tasks")
        await asyncio.sleep(ctx.size(1, 3))
        for cycle in range(kills):
            pid = await wait_for(holder, 30, "the beat holding the lock")
            await asyncio.sleep(rng.uniform(0, 1))
            killed_at = beats[pid].kill()
            result.kills.append(killed_at - result.began)
            del beats[pid]

            async def taken_over(killed_at: float = killed_at, pid: int = pid) -> float | None:
                after = [r.started for r in celery.runs() if r.beat != pid and r.started > killed_at]
                return min(after) if after else None

            try:
                first = await wait_for(taken_over, 30, "the standby beat to send a task", interval_s=0.05)
            except BenchError as exc:
                ctx.report.note("failover", f"RedBeat: no takeover after a kill: {exc}")
                result.failed_kills += 1
                break
            result.takeovers_s.append(first - killed_at)
            await asyncio.sleep(1.0)
            if cycle == kills - 1:
                break
            proc = celery.beat("BenchRedBeatScheduler")
            beats[proc.pid] = proc
            await asyncio.sleep(2.0)  # celery beat's start-up, so the next kill has a standby
        await asyncio.sleep(1.0)
        runs = [r for r in celery.runs() if r.entry != "warmup"]
    result.starts = [r.started - result.began for r in runs]
    per_slot = Counter((r.entry, round(r.scheduled, 3)) for r in runs)
    result.duplicates = sum(n - 1 for n in per_slot.values() if n > 1)
    return result


async def run(ctx: Ctx) -> None:
    scenario = "failover"
    kills = ctx.size(3, 10)
    rng = random.Random(7)
    ours = await cronbus_failover(ctx, kills, rng)
    server = LocalPostgres().init().start()
    try:
        on_postgresql = await cronbus_failover(ctx, kills, rng, server.dsn)
    finally:
        server.remove()
    peer = await redbeat_failover(ctx, ctx.size(2, kills), rng)
    for r in (ours, on_postgresql, peer):
        dist = Distribution(r.takeovers_s)
        is_ours = r is not peer
        ctx.report.add(scenario, f"{r.name} kill -> next dispatch p50", dist.p50, "s")
        ctx.report.add(scenario, f"{r.name} kill -> next dispatch p99", dist.p99, "s",
                       at_most(GOAL_P99_S) if is_ours else None, f"{len(r.takeovers_s)} kills")  # fmt: skip
        ctx.report.add(scenario, f"{r.name} kill -> next dispatch max", dist.max, "s")
        ctx.report.add(scenario, f"{r.name} duplicate runs", r.duplicates, "runs", at_most(0) if is_ours else None)
        if is_ours:
            ctx.report.add(scenario, f"{r.name} slots without any record", r.unaccounted, "slots", at_most(0),
                           "neither run nor recorded missed")  # fmt: skip
        if r.failed_kills:
            ctx.report.add(scenario, f"{r.name} kills without takeover", r.failed_kills, "count", at_most(0))
    ratio = Distribution(ours.takeovers_s).p50 / Distribution(peer.takeovers_s).p50
    ctx.report.add(scenario, "cronbus p50 / RedBeat p50", ratio, "x", note="lower is faster")
    plots.timelines(
        ctx,
        "failover.png",
        "runs started, leader SIGKILLed at the red lines",
        {r.name: (r.starts, r.kills, r.gaps) for r in (ours, on_postgresql, peer)},
    )
