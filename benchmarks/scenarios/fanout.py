"""Fan-out: one job tagged to every executor ({"dc": "dc1"}) with 1 000 executors connected (simulated by one
harness process holding 1 000 real DEALER + SUB connections and catalog registrations); time from the scheduled
instant until the dispatch has reached all of them, and until all their results are recorded; and the leader's CPU
while they only heartbeat. CRONBUS_BENCH_FANOUT_EXECUTORS sets how many (default 1 000, 200 quick).
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from benchmarks import plots
from benchmarks.cronbus_stack import LEADING, FinishWatch, Stack, executions, load_jobs, noop_job, rfc3339, whole_second
from benchmarks.report import at_least, at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import cpu_seconds

GOAL_S = 1.0
GOAL_IDLE_CPU_PERCENT = 10.0
IDLE_S = 10.0
JOB = "fanout"


async def run(ctx: Ctx) -> None:
    scenario = "fan-out"
    count = int(os.environ.get("CRONBUS_BENCH_FANOUT_EXECUTORS") or ctx.size(200, 1000))
    async with Stack(ctx.run_dir, "fanout") as stack:
        scheduler = stack.scheduler("scheduler-1", "--history-limit", "100000")  # every record stays readable
        await scheduler.wait_log(LEADING, 60)
        out = stack.dir / "received.json"
        harness = stack.procs.python(
            "sim-executors", "benchmarks.sim_executors", "--consul", stack.agent.address, "--count", str(count),
            "--job", JOB, "--out", str(out), "--timeout", "60",
        )  # fmt: skip
        began = time.monotonic()
        ctx.step(f"{count:,} simulated executors connecting")
        await harness.wait_log("ready", 180)
        setup_s = time.monotonic() - began
        await asyncio.sleep(2.0)  # heartbeats settle; the leader has seen every subscription
        before = cpu_seconds(scheduler.pid)
        await asyncio.sleep(IDLE_S)
        idle = (cpu_seconds(scheduler.pid) - before) / IDLE_S * 100
        ctx.report.add(scenario, f"leader CPU with {count:,} executors and no run", idle, "%",
                       at_most(GOAL_IDLE_CPU_PERCENT), f"heartbeats and catalog, over {IDLE_S:.0f} s")  # fmt: skip
        instant = whole_second(2.5)
        watch = FinishWatch(stack.metrics_port["scheduler-1"])
        job = noop_job(JOB, f"@at {rfc3339(instant)}", instant, tags={"dc": "dc1"})
        await load_jobs(stack.client, [job])
        recorded_at = await watch.wait(count, instant.timestamp() - time.time() + 60)
        await asyncio.to_thread(harness.popen.wait, 90)
        data = json.loads(out.read_text())
        targeted = len([r for r in await executions(stack.client) if r.job_name == JOB])
    delays = sorted(t - instant.timestamp() for t in data["received"].values())
    ctx.report.note(scenario, f"{count:,} simulated executors connected and registered in {setup_s:.1f} s "
                              f"(catalog registrations {data['registered_s']:.1f} s)")  # fmt: skip
    if data.get("dropped"):
        ctx.report.note(scenario, f"{data['dropped']:,} messages from the simulated executors dropped (leader's "
                                  "socket full)")  # fmt: skip
    ctx.report.add(scenario, "executors targeted (records)", targeted, "count", at_least(count))
    ctx.report.add(scenario, "executors reached", len(delays), "count", at_least(count))
    ctx.report.add(scenario, f"dispatch reached all {count:,}", delays[-1] if len(delays) >= count else None, "s",
                   at_most(GOAL_S), "instant -> last receipt (negative: before the instant, as runs are sent "
                   "ahead of their slot)")  # fmt: skip
    if delays:
        ctx.report.add(scenario, "dispatch reached the first", delays[0], "s")
        ctx.report.add(scenario, "dispatch reached half", delays[len(delays) // 2], "s")
    ctx.report.add(scenario, f"all {count:,} results recorded",
                   None if recorded_at is None else recorded_at - instant.timestamp(), "s")  # fmt: skip
    plots.cumulative(ctx, "fanout.png", f"Fan-out to {count:,} executors", "seconds after the instant",
                     {"cronbus": delays}, "executors reached")  # fmt: skip
