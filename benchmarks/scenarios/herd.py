"""Thundering herd: N jobs due at the same instant (`@at`); time until all have started and until all are recorded.

The jobs are written (Consul transactions) a few seconds before the instant, and the scheduler has planned
them all (its `cronbus_planned_jobs` gauge) before it comes. Peers get the same N one-shot jobs:
APScheduler date jobs in-process, Celery beat entries with a one-shot schedule and a worker.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from benchmarks import plots
from benchmarks.cronbus_stack import (
    FinishWatch,
    Stack,
    executions,
    load_jobs,
    metric,
    noop_job,
    recorded_total,
    rfc3339,
    started,
    whole_second,
)
from benchmarks.peers.celery_stack import CeleryStack
from benchmarks.report import at_least, at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import Procs, wait_for

GOAL_S = 1.0
GOAL_PEER_RATIO = 5.0
EXECUTORS = 2


class HerdResult:
    def __init__(self, name: str, jobs: int, starts: list[float], recorded_s: float | None, bound_s: float) -> None:
        self.name = name
        self.jobs = jobs
        self.starts = sorted(starts)  # seconds after the instant
        self.complete = len(starts) >= jobs
        # Not all started within the bound: the bound is a lower limit of the time it would take.
        last = self.starts[-1] if self.starts else bound_s
        self.all_started_s = last if self.complete else max(last, bound_s)
        self.recorded_s = recorded_s


async def cronbus_herd(ctx: Ctx, jobs: int, bound_s: float) -> HerdResult:
    scenario = "herd"
    ctx.step(f"cronbus, {jobs:,} jobs at one instant")
    async with Stack(ctx.run_dir, "herd-cronbus") as stack:
        scheduler = stack.scheduler("scheduler-1")
        metrics_port = stack.metrics_port["scheduler-1"]
        executors = [stack.executor(f"executor-{i + 1}") for i in range(EXECUTORS)]
        await stack.ready(scheduler, executors)
        instant = whole_second(ctx.size(4, 8))
        batch = [noop_job(f"job-{i}", f"@at {rfc3339(instant)}", instant) for i in range(jobs)]
        _, load_s = await load_jobs(stack.client, batch)

        async def planned() -> bool:
            return (await metric(metrics_port, "cronbus_planned_jobs") or 0) >= jobs

        await wait_for(planned, max(1.0, instant.timestamp() - time.time()), f"the leader to plan {jobs:,} jobs")
        ahead = instant.timestamp() - time.time()
        ctx.report.note(scenario, f"cronbus: {jobs:,} jobs written in {load_s:.2f} s; all planned {ahead:.1f} s "
                                  f"before the instant; {EXECUTORS} executors")  # fmt: skip
        watch = FinishWatch(metrics_port)
        recorded_at = await watch.wait(jobs, instant.timestamp() - time.time() + bound_s)
        recorded = await recorded_total(stack.client)
        records = [r for r in await executions(stack.client) if started(r)]
        starts = [r.started_at.timestamp() - instant.timestamp() for r in records]
        stepped_down = scheduler.log_text().count("leadership lost")
        ctx.report.add(scenario, "cronbus leader step-downs during the herd", stepped_down, "count", at_most(0),
                       "the leader's lease ran out under load" if stepped_down else "")  # fmt: skip
        if recorded < jobs:
            ctx.report.note(scenario, f"cronbus: only {recorded:,} of {jobs:,} results recorded within {bound_s:.0f} s")
        recorded_s = None if recorded_at is None else recorded_at - instant.timestamp()
        return HerdResult("cronbus", jobs, starts, recorded_s, bound_s)


async def aps_herd(ctx: Ctx, jobs: int, bound_s: float) -> HerdResult:
    ctx.step(f"APScheduler, {jobs:,} jobs at one instant")
    directory = ctx.run_dir / "herd-apscheduler"
    directory.mkdir(parents=True, exist_ok=True)
    procs = Procs(directory)
    out = directory / "runs.json"
    instant = whole_second(2).timestamp()
    try:
        proc = procs.start(
            "apscheduler",
            [sys.executable, "-m", "benchmarks.peers.aps", "herd", "--jobs", str(jobs), "--start", str(instant),
             "--bound", str(bound_s), "--out", str(out)],
        )  # fmt: skip
        await asyncio.to_thread(proc.popen.wait, bound_s + 60)
    finally:
        procs.stop_all()
    data = json.loads(out.read_text())
    if data["loaded_at"] > instant:
        ctx.report.note("herd", f"APScheduler: jobs loaded {data['loaded_at'] - instant:.2f} s after the instant")
    runs = data["runs"]
    return HerdResult(
        "APScheduler",
        jobs,
        [started_at - instant for _, _, started_at, _ in runs],
        max((finished - instant for *_, finished in runs), default=None),
        bound_s,
    )


async def celery_herd(ctx: Ctx, jobs: int, bound_s: float) -> HerdResult:
    ctx.step(f"Celery beat + worker, {jobs:,} jobs at one instant")
    lead = ctx.size(3, 10)
    instant = whole_second(lead + 1.5).timestamp()  # the worker's start comes first
    env = {"BENCH_MODE": "herd", "BENCH_JOBS": str(jobs), "BENCH_AT": str(instant)}
    async with CeleryStack(ctx.run_dir, "herd-celery", env) as celery:
        await celery.worker()
        celery.beat("BenchScheduler")
        deadline = instant + bound_s

        async def all_ran() -> bool:
            return celery.run_count() >= jobs or time.time() > deadline

        await wait_for(all_ran, deadline - time.time() + 5, "celery's herd", interval_s=0.1)
        runs = celery.runs()
    starts = [r.started - instant for r in runs if r.entry != "warmup"]
    if len(starts) < jobs:
        ctx.report.note("herd", f"Celery beat: {len(starts):,} of {jobs:,} started within {bound_s:.0f} s")
    recorded = max((r.finished - instant for r in runs), default=None)
    return HerdResult("Celery beat", jobs, starts, recorded, bound_s)


async def run(ctx: Ctx) -> None:
    jobs = ctx.size(1_000, 10_000)
    bound = ctx.size(8, 45)
    results = [await cronbus_herd(ctx, jobs, bound), await aps_herd(ctx, jobs, bound)]
    if ctx.quick:
        ctx.report.note("herd", "--quick: Celery beat is measured in the full run only (APScheduler has been the best "
                                "peer by far)")  # fmt: skip
    else:
        results.append(await celery_herd(ctx, jobs, bound))
    ours, peers = results[0], results[1:]
    scenario = "herd"
    for r in results:
        goal = at_most(GOAL_S) if r is ours else None
        note = "" if r.complete else f"only {len(r.starts):,} of {r.jobs:,} started within {bound} s (lower bound)"
        ctx.report.add(scenario, f"{r.name} all {jobs:,} started", r.all_started_s, "s", goal, note)
        if r.starts:
            ctx.report.add(scenario, f"{r.name} half started", r.starts[len(r.starts) // 2], "s")
        if r is ours:
            ctx.report.add(scenario, "cronbus all recorded in Consul", r.recorded_s, "s", at_most(GOAL_S))
    best = min(peers, key=lambda r: r.all_started_s)
    ctx.report.add(
        scenario,
        "best peer all-started / cronbus all-started",
        best.all_started_s / ours.all_started_s if ours.all_started_s > 0 else float("nan"),
        "x",
        at_least(GOAL_PEER_RATIO),
        f"best peer: {best.name}",
    )
    plots.cumulative(
        ctx,
        "herd.png",
        f"Thundering herd: {jobs:,} jobs due at the same instant",
        "seconds after the instant",
        {r.name: r.starts for r in results},
        "runs started",
    )
