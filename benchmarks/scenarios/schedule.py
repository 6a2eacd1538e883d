"""Schedule computation: next fire of many parsed jobs, cronbus.common.schedule vs bare croniter (bench_schedule)."""

from __future__ import annotations

import asyncio

from benchmarks import bench_schedule, plots
from benchmarks.report import at_least, at_most
from benchmarks.scenarios import Ctx


async def run(ctx: Ctx) -> None:
    scenario = "schedule"
    n = ctx.size(10_000, bench_schedule.FULL_JOBS)
    r = await asyncio.to_thread(bench_schedule.measure, n)
    ctx.report.note(scenario, f"{n:,} jobs, {len(bench_schedule.SCHEDULES)} schedules x {len(bench_schedule.ZONES)} "
                              "zones, in the benchmark process")  # fmt: skip
    projected = "" if n == bench_schedule.FULL_JOBS else f"projected from {n:,}"
    ctx.report.add(scenario, f"next fire of {bench_schedule.FULL_JOBS:,} jobs", r.projected_next_s, "s",
                   at_most(bench_schedule.GOAL_S), projected)  # fmt: skip
    ctx.report.add(scenario, "cronbus / croniter (next fire)", r.ratio, "x", at_most(bench_schedule.GOAL_RATIO))
    ctx.report.add(scenario, "cronbus / croniter (parse + next fire)",
                   (r.ours_parse + r.ours_next) / (r.theirs_build + r.theirs_next), "x")  # fmt: skip
    ctx.report.add(scenario, "same next fire as croniter", r.agree, "jobs", at_least(n), f"of {n:,}")
    plots.bars(ctx, "schedule.png", f"Next fire of {n:,} jobs (µs per job)", "µs per job", {
        "cronbus parse": r.ours_parse / n * 1e6, "croniter build": r.theirs_build / n * 1e6,
        "cronbus next": r.ours_next / n * 1e6, "croniter next": r.theirs_next / n * 1e6,
    })  # fmt: skip
