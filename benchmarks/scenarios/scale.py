"""Scale: N jobs stored (every hour, so nothing fires): scheduler memory, idle CPU, start-up and takeover time, and
the gateway's job list latency and job reads per second. N is 100 000 (20 000 quick); CRONBUS_BENCH_SCALE_JOBS sets
it (the 1 000 000-job figures: CRONBUS_BENCH_SCALE_JOBS=1000000 python -m benchmarks.run --only scale).
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import aiohttp

from benchmarks.cronbus_stack import LEADING, Stack, load_jobs, noop_job, wait_leader, whole_second
from benchmarks.report import at_least, at_most
from benchmarks.scenarios import Ctx
from benchmarks.support import BenchError, Distribution, Proc, cpu_seconds, rss_mib, wait_for

LIST = "/v1/jobs?_start=0&_end=25"
GOAL_LEADER_BYTES_PER_JOB = 2500
GOAL_TAKEOVER_S = 10.0
GOAL_LIST_P99_MS = 50.0


async def settled(procs: list[Proc], timeout_s: float) -> float:
    """Waits until every process uses under 5 % of a CPU over one second; returns how long that took."""
    began = time.monotonic()

    async def quiet() -> bool:
        before = [cpu_seconds(p.pid) for p in procs]
        await asyncio.sleep(1.0)
        return all(cpu_seconds(p.pid) - b < 0.05 for p, b in zip(procs, before, strict=True))

    await wait_for(quiet, timeout_s, "the schedulers to go idle", interval_s=0)
    return time.monotonic() - began


async def gateway_figures(ctx: Ctx, stack: Stack, jobs: int) -> None:
    scenario = "scale"
    gateway, url = stack.gateway()
    began = time.monotonic()
    try:
        async with aiohttp.ClientSession(url) as http:

            async def listed() -> int | None:
                try:
                    async with http.get(LIST) as resp:
                        if resp.status == 404:
                            return -1
                        total = int(resp.headers.get("X-Total-Count", "0")) if resp.status == 200 else 0
                        return total if total >= jobs else None
                except aiohttp.ClientError:
                    return None

            bound = ctx.size(60, 90) * max(1, jobs // 100_000)
            if await wait_for(listed, bound, f"the gateway to list {jobs:,} jobs", interval_s=0.5) == -1:
                ctx.report.add(scenario, "gateway", None, note="skipped: GET /v1/jobs answers 404")
                return
            ctx.report.add(scenario, f"gateway start -> lists {jobs:,} jobs", time.monotonic() - began, "s")
            ctx.report.add(scenario, "gateway RSS", rss_mib(gateway.pid), "MiB")
            rounds = ctx.size(50, 300)
            latencies = []
            for _ in range(rounds):
                t = time.perf_counter()
                async with http.get(LIST) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise BenchError(f"GET {LIST}: {resp.status}")
                latencies.append((time.perf_counter() - t) * 1000)
            dist = Distribution(latencies)
            ctx.report.add(scenario, "GET /v1/jobs?_start=0&_end=25 p50", dist.p50, "ms", note=f"{rounds} sequential")
            ctx.report.add(scenario, "GET /v1/jobs?_start=0&_end=25 p99", dist.p99, "ms", at_most(GOAL_LIST_P99_MS))
            rng = random.Random(3)
            done = 0
            errors = 0
            window = ctx.size(2, 8)
            end = time.monotonic() + window

            async def reader() -> None:
                nonlocal done, errors
                while time.monotonic() < end:
                    async with http.get(f"/v1/jobs/job-{rng.randrange(jobs)}") as resp:
                        await resp.read()
                        done += resp.status == 200
                        errors += resp.status != 200

            began_reads, cpu_before = time.monotonic(), cpu_seconds(gateway.pid)
            await asyncio.gather(*(reader() for _ in range(8)))
            elapsed = time.monotonic() - began_reads
            rate, busy = done / elapsed, (cpu_seconds(gateway.pid) - cpu_before) / elapsed
            ctx.report.add(scenario, "GET /v1/jobs/{name} per second", rate, "/s",
                           note=f"8 concurrent clients in one process, {errors} errors")  # fmt: skip
            # The client shares the 2 CPUs: what one gateway process serves per CPU-second it uses.
            ctx.report.add(scenario, "gateway CPU during the reads", busy * 100, "%")
            per_cpu = rate / busy if busy else 0.0
            ctx.report.add(scenario, "GET /v1/jobs/{name} per gateway CPU-second", per_cpu, "/s", goal=at_least(2000),
                           note="one gateway process; gateways are stateless and scale out")  # fmt: skip
    finally:
        gateway.stop()


async def run(ctx: Ctx) -> None:
    scenario = "scale"
    jobs = int(os.environ.get("CRONBUS_BENCH_SCALE_JOBS") or ctx.size(20_000, 100_000))
    idle_s = ctx.size(3, 20)
    longer = max(1, jobs // 100_000)  # the bounds below grow with the jobs past 100 000
    idle_bound = ctx.size(15, 45) * longer
    async with Stack(ctx.run_dir, "scale") as stack:
        created = whole_second(0)  # "@every 1h" from now: nothing fires during the scenario
        count, load_s = await load_jobs(stack.client, (noop_job(f"job-{i}", "@every 1h", created) for i in range(jobs)))
        rate = f"written in {load_s:.1f} s ({count / load_s:,.0f}/s, 64-op transactions)"
        ctx.report.add(scenario, "jobs stored", count, "jobs", note=rate)
        ctx.step(f"{count:,} jobs stored; starting the schedulers")
        began = time.time()
        first = stack.scheduler("scheduler-1")
        await first.wait_log(LEADING, 300)
        ctx.report.add(scenario, "scheduler start -> leading", time.time() - began, "s")
        second = stack.scheduler("scheduler-2")
        executor = stack.executor("executor-1")
        await second.wait_log("registered service=", 60 * longer)
        try:
            await executor.wait_log("welcomed by leader", ctx.size(20, 60) * longer)
        except BenchError:
            ctx.report.note(scenario, "the executor was not welcomed by a leader within the bound")
        try:
            settle_s = await settled([first, second], idle_bound)
            ctx.report.note(scenario, f"{jobs:,} jobs @every 1h, 2 schedulers + 1 executor; idle {settle_s:.0f} s "
                                      "after the standby started")  # fmt: skip
        except BenchError:
            ctx.report.note(scenario, f"{jobs:,} jobs @every 1h, 2 schedulers + 1 executor: the schedulers never went "
                                      f"idle within {idle_bound} s (leadership kept changing)")  # fmt: skip
        found = await wait_leader(stack, timeout_s=60)
        leader, standby = (first, second) if found[0] == first.name else (second, first)
        ctx.step(f"measuring; {found[0]} leads, term {found[1]}")
        step_downs = sum(p.log_text().count("leadership lost") for p in (first, second))
        ctx.report.add(scenario, "leadership acquisitions (no kill)",
                       sum(p.log_text().count("leadership acquired") for p in (first, second)), "count")  # fmt: skip
        ctx.report.add(scenario, "leader step-downs (no kill)", step_downs, "count", at_most(0),
                       "while the standby and executor started" if step_downs else "")  # fmt: skip
        ctx.report.add(scenario, "leader RSS", rss_mib(leader.pid), "MiB")
        ctx.report.add(scenario, "standby RSS", rss_mib(standby.pid), "MiB")
        ctx.report.add(scenario, "leader RSS per job", rss_mib(leader.pid) * 1024 * 1024 / jobs, "bytes",
                       at_most(GOAL_LEADER_BYTES_PER_JOB), "the whole process's RSS over the jobs")  # fmt: skip
        assert stack.agent.proc is not None
        ctx.report.add(scenario, f"Consul RSS, {jobs:,} jobs", rss_mib(stack.agent.proc.pid), "MiB",
                       note="a dev agent (its Raft log in memory), after the schedulers' reads")  # fmt: skip
        roles = {leader.name: "leader", standby.name: "standby", executor.name: "executor"}
        before = {p.name: cpu_seconds(p.pid) for p in (leader, standby, executor)}
        await asyncio.sleep(idle_s)
        for proc in (leader, standby, executor):
            busy = (cpu_seconds(proc.pid) - before[proc.name]) / idle_s * 100
            ctx.report.add(scenario, f"{roles[proc.name]} idle CPU", busy, "%", note=f"over {idle_s} s")
        ctx.step("gateway")
        try:
            await gateway_figures(ctx, stack, jobs)
        except (BenchError, aiohttp.ClientError) as exc:
            ctx.report.add(scenario, "gateway figures", None, note=f"{type(exc).__name__}: {exc}"[:200])
        ctx.step("takeover")
        found = await wait_leader(stack, timeout_s=60)
        leader, standby = (first, second) if found[0] == first.name else (second, first)
        since = standby.log_size()
        killed_at = leader.kill()
        try:
            led_at = await standby.wait_log(LEADING, ctx.size(30, 60) * longer, since=since)
        except BenchError as exc:
            ctx.report.add(scenario, "takeover (SIGKILL leader -> standby leading)", None, "s", note=str(exc)[:200])
            return
        ctx.report.add(scenario, "takeover (SIGKILL leader -> standby leading)", led_at - killed_at, "s",
                       at_most(GOAL_TAKEOVER_S), "includes the lock TTL (2 s)")  # fmt: skip
        ctx.report.add(scenario, "new leader RSS", rss_mib(standby.pid), "MiB")
