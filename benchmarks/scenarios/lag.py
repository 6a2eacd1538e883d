"""Lag: N jobs firing every second on one executor; (start of the run - scheduled instant), vs APScheduler, Celery.

cronbus: the execution records' started_at - scheduled_at (started_at is stamped by the executor as it starts
the run). APScheduler: the job function's first timestamp - the scheduled run time of its submission event.
Celery: the task's first timestamp - the instant beat computed it due (last_run_at + 1 s).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import timedelta

from benchmarks import plots
from benchmarks.cronbus_stack import (
    Stack,
    executions,
    lag_s,
    load_jobs,
    noop_job,
    recorded_total,
    shell_true_job,
    started,
    whole_second,
)
from benchmarks.peers.celery_stack import CeleryStack
from benchmarks.report import at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import Distribution, Procs, wait_for

GOAL_P99_MS = 50.0
GOAL_PEER_RATIO = 0.2  # cronbus p99 <= 1/5 of the best peer's
PEER_SECONDS_QUICK = 5  # --quick: the peers' distributions settle within fewer seconds


class LagResult:
    def __init__(self, name: str, lags_ms: list[float], expected: int) -> None:
        self.name = name
        self.dist = Distribution(lags_ms)
        self.expected = expected
        self.missing = max(0, expected - self.dist.count)


async def cronbus_lag(ctx: Ctx, jobs: int, duration_s: int, shell: bool) -> LagResult:
    kind = "shell" if shell else "noop"
    ctx.step(f"cronbus, {jobs:,} {kind} jobs every second for {duration_s} s")
    async with Stack(ctx.run_dir, f"lag-{kind}-cronbus") as stack:
        scheduler = stack.scheduler("scheduler-1")
        executor = stack.executor("executor-1")
        await stack.ready(scheduler, [executor])
        first = whole_second(2.0)
        last = first + timedelta(seconds=duration_s - 1)
        make = shell_true_job if shell else noop_job
        batch = [make(f"job-{i}", "@every 1s", first, starts_at=first, expires_at=last) for i in range(jobs)]
        await load_jobs(stack.client, batch)
        expected = jobs * duration_s
        await asyncio.sleep(max(0.0, last.timestamp() - time.time()))

        async def all_recorded() -> bool:
            return await recorded_total(stack.client) >= expected

        try:
            await wait_for(all_recorded, ctx.size(5, 15), "every run to be recorded", interval_s=0.5)
        except Exception as exc:  # a partial result is still a result: the missing runs are reported
            ctx.report.note("lag", f"cronbus {kind}: {exc}")
        records = [r for r in await executions(stack.client) if started(r) and r.attempt == 1]
        return LagResult("cronbus", [lag_s(r) * 1000 for r in records], expected)


async def aps_lag(ctx: Ctx, jobs: int, duration_s: int, shell: bool) -> LagResult:
    kind = "shell" if shell else "noop"
    ctx.step(f"APScheduler, {jobs:,} {kind} jobs every second for {duration_s} s")
    directory = ctx.run_dir / f"lag-{kind}-apscheduler"
    directory.mkdir(parents=True, exist_ok=True)
    procs = Procs(directory)
    out = directory / "runs.json"
    start = whole_second(2.0).timestamp()
    try:
        proc = procs.start(
            "apscheduler",
            [sys.executable, "-m", "benchmarks.peers.aps", "lag", "--jobs", str(jobs), "--start", str(start),
             "--duration", str(duration_s), "--bound", "20", "--out", str(out), *(["--shell"] if shell else [])],
        )  # fmt: skip
        await asyncio.to_thread(proc.popen.wait, duration_s + 60)
    finally:
        procs.stop_all()
    data = json.loads(out.read_text())
    lags = [(started_at - scheduled) * 1000 for _, scheduled, started_at, _ in data["runs"]]
    return LagResult("APScheduler", lags, int(data["expected"]))


async def celery_lag(ctx: Ctx, jobs: int, duration_s: int, shell: bool) -> LagResult:
    kind = "shell" if shell else "noop"
    ctx.step(f"Celery beat + worker, {jobs:,} {kind} jobs every second for {duration_s} s")
    env = {"BENCH_MODE": "lag", "BENCH_JOBS": str(jobs), "BENCH_SHELL": "1" if shell else "0"}
    async with CeleryStack(ctx.run_dir, f"lag-{kind}-celery", env) as celery:
        await celery.worker()
        beat = celery.beat("BenchScheduler")
        began = time.time()
        # Beat runs each entry 1 s after it starts, then every second: the window starts once it is up.
        window_start = began + 2.0
        window_end = window_start + duration_s
        await asyncio.sleep(window_end - time.time())
        beat.stop()
        await celery.drain(20)
        runs = [r for r in celery.runs() if window_start <= r.scheduled < window_end]
    return LagResult("Celery beat", [(r.started - r.scheduled) * 1000 for r in runs], jobs * duration_s)


async def run(ctx: Ctx) -> None:
    jobs, duration = ctx.size(200, 1000), ctx.size(15, 60)
    variants = [(False, jobs, duration)]
    if not ctx.quick:
        variants.append((True, 200, 20))
    for shell, n, d in variants:
        kind = "shell /bin/true" if shell else "noop"
        scenario = f"lag {kind}"
        peer_d = min(d, PEER_SECONDS_QUICK) if ctx.quick else d
        results = [await cronbus_lag(ctx, n, d, shell), await aps_lag(ctx, n, peer_d, shell)]
        if ctx.quick:
            ctx.report.note(scenario, "--quick: Celery beat is measured in the full run only (APScheduler has been the "
                                      "best peer by far)")  # fmt: skip
        else:
            results.append(await celery_lag(ctx, n, peer_d, shell))
        ctx.report.note(scenario, f"{n} jobs every second on one executor / worker, {d} s for cronbus "
                                  f"({n * d:,} runs), {peer_d} s for each peer ({n * peer_d:,} runs)")  # fmt: skip
        ours, peers = results[0], results[1:]
        for result in results:
            is_ours = result is ours
            goal = at_most(GOAL_P99_MS) if is_ours and not shell else None
            ctx.report.add(scenario, f"{result.name} lag p50", result.dist.p50, "ms")
            ctx.report.add(scenario, f"{result.name} lag p99", result.dist.p99, "ms", goal)
            ctx.report.add(scenario, f"{result.name} lag max", result.dist.max, "ms")
            ctx.report.add(scenario, f"{result.name} runs missing", result.missing, "runs",
                           at_most(0) if is_ours else None, f"of {result.expected:,}")  # fmt: skip
        best = min(peers, key=lambda r: r.dist.p99)
        ctx.report.add(
            scenario,
            "cronbus p99 / best peer p99",
            ours.dist.p99 / best.dist.p99,
            "x",
            at_most(GOAL_PEER_RATIO) if not shell else None,
            f"best peer: {best.name}",
        )
        name = "lag_shell.png" if shell else "lag_noop.png"
        plots.lag_cdf(ctx, name, f"Lag, {n} jobs every second, {kind}", {r.name: r.dist.values for r in results})
