"""Throughput: runs per second end to end, each result recorded in Consul.

noop: jobs every second spread over two executors, offered above the goal; the rate is the leader's committed
results per second over the steady part of the run; the same with a PostgreSQL history store (the leader still
records in Consul first, and its history keeper moves the finished records to PostgreSQL a second after they end).
shell: /bin/true jobs through one executor, offered at the machine's raw spawn rate measured just before, three
times; the verdict is on the median of the three ratios.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from datetime import timedelta

import psycopg

from benchmarks import limits, plots
from benchmarks.cronbus_stack import (
    FinishWatch,
    Stack,
    load_jobs,
    noop_job,
    recorded_total,
    shell_true_job,
    whole_second,
)
from benchmarks.report import at_least, at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import Procs
from cronbus.common.local_postgres import LocalPostgres

GOAL_NOOP_PER_S = 2000.0
GOAL_PG_PER_S = 5000.0
PG_OFFERED = 6000  # jobs every second with the PostgreSQL store, offered above its goal
GOAL_SHELL_OF_RAW = 0.75
SHELL_REPEATS = 3  # the verdict is on the median ratio, with the lowest and highest shown
WARMUP_S = 2.0
SUSTAIN_OFFERED = (500,)  # full run only: a load below the goal, to see what is sustained
SHELL_OFFERED_OF_RAW = 1.0
SHELL_CAPACITY = 64  # parallel /bin/true processes on the executor; the leader holds the rest until a slot frees


class Throughput:
    def __init__(self, offered: int, samples: list[tuple[float, int]], first: float, last: float, total: int) -> None:
        self.offered = offered
        self.samples = samples  # (wall time, results recorded so far)
        self.total = total
        self.stepped_down = 0
        begin, end = first + WARMUP_S, last + 1.0
        inside = [(t, c) for t, c in samples if begin <= t <= end]
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            self.rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
        else:
            self.rate = float("nan")
        self.series = [
            (t1 - first, (c1 - c0) / (t1 - t0)) for (t0, c0), (t1, c1) in itertools.pairwise(samples) if t1 > t0
        ]


async def measure(
    ctx: Ctx, name: str, jobs: int, duration_s: int, executors: int, shell: bool, capacity: int = 10_000,
    scheduler_args: tuple[str, ...] = (),
) -> Throughput:  # fmt: skip
    ctx.step(f"{name}: {jobs:,} jobs every second for {duration_s} s, {executors} executor(s)")
    async with Stack(ctx.run_dir, name) as stack:
        scheduler = stack.scheduler("scheduler-1", *scheduler_args)
        procs = [stack.executor(f"executor-{i + 1}", capacity=capacity) for i in range(executors)]
        await stack.ready(scheduler, procs)
        first = whole_second(3.0)
        last = first + timedelta(seconds=duration_s - 1)
        make = shell_true_job if shell else noop_job
        await load_jobs(stack.client, [make(f"job-{i}", "@every 1s", first, starts_at=first, expires_at=last)
                                       for i in range(jobs)])  # fmt: skip
        watch = FinishWatch(stack.metrics_port["scheduler-1"])
        expected = jobs * duration_s
        samples: list[tuple[float, int]] = []
        # Sample until every run is recorded, or for a bounded while after the last slot.
        deadline = last.timestamp() + ctx.size(2, 10)
        while time.time() < deadline:
            samples.append((time.time(), await watch.poll()))
            if samples[-1][1] >= expected:
                break
            await asyncio.sleep(0.25)
        total = await recorded_total(stack.client)
        result = Throughput(jobs, samples, first.timestamp(), last.timestamp(), total)
        result.stepped_down = scheduler.log_text().count("leadership lost")
        if result.stepped_down:
            ctx.report.note("throughput", f"{name}: the leader stepped down {result.stepped_down} time(s) under load")
        if total < expected:
            ctx.report.note("throughput", f"{name}: {total:,} of {expected:,} runs recorded by the end")
        return result


async def with_postgresql(ctx: Ctx, duration: int) -> list[tuple[float, float]]:
    """noop throughput with a PostgreSQL history store (records move there 1 s after they end, during the run);
    its rate series."""
    scenario = "throughput"
    server = LocalPostgres().init().start()
    try:
        args = ("--history-store", server.dsn, "--history-settle", "1s")
        result = await measure(ctx, "throughput-noop-postgresql", PG_OFFERED, duration, 2, False, scheduler_args=args)
        async with await psycopg.AsyncConnection.connect(server.dsn) as conn:
            row = await (await conn.execute("SELECT count(*) FROM cronbus_executions")).fetchone()
        moved = row[0] if row else 0
    finally:
        server.remove()
    ctx.report.add(scenario, f"cronbus noop runs recorded per second, PostgreSQL store ({PG_OFFERED:,}/s offered)",
                   result.rate, "/s", at_least(GOAL_PG_PER_S),
                   f"records moved to PostgreSQL by the end: {moved:,} of {result.total:,}")  # fmt: skip
    ctx.report.add(scenario, "leader step-downs (PostgreSQL store)", result.stepped_down, "count", at_most(0))
    return result.series


async def run(ctx: Ctx) -> None:
    scenario = "throughput"
    duration = ctx.size(5, 30)
    noop_jobs = 3000
    noop = await measure(ctx, "throughput-noop", noop_jobs, duration, 2, shell=False)
    ctx.report.note(scenario, f"noop: {noop_jobs:,} jobs every second (offered {noop_jobs:,}/s) for {duration} s, "
                              f"2 executors; rate over the steady part (after the first {WARMUP_S:.0f} s)")  # fmt: skip
    ctx.report.add(scenario, f"cronbus noop runs recorded per second ({noop_jobs:,}/s offered)", noop.rate, "/s",
                   at_least(GOAL_NOOP_PER_S))  # fmt: skip
    ctx.report.add(scenario, f"leader step-downs ({noop_jobs:,}/s offered)", noop.stepped_down, "count", at_most(0))
    series = {f"cronbus noop, {noop_jobs:,}/s offered": noop.series}
    series[f"cronbus noop, PostgreSQL store, {PG_OFFERED:,}/s offered"] = await with_postgresql(ctx, duration)
    if not ctx.quick:  # what it sustains below the goal, to size the gap
        for offered in SUSTAIN_OFFERED:
            low = await measure(ctx, f"throughput-noop-{offered}", offered, 20, 2, shell=False)
            ctx.report.add(scenario, f"cronbus noop runs recorded per second ({offered:,}/s offered)", low.rate, "/s")
            ctx.report.add(scenario, f"leader step-downs ({offered:,}/s offered)", low.stepped_down, "count",
                           at_most(0))  # fmt: skip
            series[f"cronbus noop, {offered:,}/s offered"] = low.series
    if ctx.limits is None:
        procs = Procs(ctx.run_dir)
        try:
            ctx.limits = await limits.measure(procs, ctx.quick)
        finally:
            procs.stop_all()
    shells = [await _shell_against_raw(ctx, f"throughput-shell-{i + 1}", duration) for i in range(SHELL_REPEATS)]
    ratios = sorted(shell.rate / raw for shell, raw in shells)
    shell_jobs = shells[0][0].offered
    ctx.report.note(scenario, f"shell: {SHELL_REPEATS} runs, each of /bin/true jobs every second offered at "
                              f"{SHELL_OFFERED_OF_RAW}x the raw spawn rate measured just before it, for {duration} s, "
                              f"1 executor with --capacity {SHELL_CAPACITY}; ratios "
                              f"{', '.join(f'{r:.3f}' for r in ratios)}")  # fmt: skip
    for i, (shell, raw) in enumerate(shells, 1):
        ctx.report.add(scenario, f"cronbus shell /bin/true runs per second (run {i})", shell.rate, "/s")
        ctx.report.add(scenario, f"raw spawn rate (before run {i})", raw, "/s")
        ctx.report.add(scenario, f"leader step-downs (shell run {i})", shell.stepped_down, "count", at_most(0))
    ctx.report.add(scenario, f"cronbus shell rate / raw spawn rate, median of {SHELL_REPEATS}",
                   statistics.median(ratios), "x", at_least(GOAL_SHELL_OF_RAW))  # fmt: skip
    ctx.report.add(scenario, "cronbus shell rate / raw spawn rate, lowest", ratios[0], "x")
    ctx.report.add(scenario, "cronbus shell rate / raw spawn rate, highest", ratios[-1], "x")
    plots.rate(ctx, "throughput_noop.png", "noop runs recorded per second", series, GOAL_NOOP_PER_S)
    plots.rate(ctx, "throughput_shell.png", f"/bin/true runs recorded per second (~{shell_jobs:,} offered)",
               {f"cronbus shell, run {i}": shell.series for i, (shell, _) in enumerate(shells, 1)},
               GOAL_SHELL_OF_RAW * shells[0][1])  # fmt: skip


async def _shell_against_raw(ctx: Ctx, name: str, duration: int) -> tuple[Throughput, float]:
    """One shell measurement and the raw spawn rate measured right before it (the pair shares the machine's mood)."""
    sequential = await asyncio.to_thread(limits.spawn_sequential, 1.0)
    raw = max(sequential, await limits.spawn_parallel(1.0, concurrency=16))
    jobs = max(100, round(raw * SHELL_OFFERED_OF_RAW))
    return await measure(ctx, name, jobs, duration, 1, shell=True, capacity=SHELL_CAPACITY), raw
