"""Physical limits measured in this run (spawn rate, ZeroMQ round trip), and the executor's durable writes on the
same disk its data directory uses, which bound how fast one executor can start and finish runs."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from benchmarks import limits
from benchmarks.scenarios import Ctx
from benchmarks.support import Procs
from cronbus.common.messages import ExecutionFinished
from cronbus.services.executor.dedupe import SeenIds
from cronbus.services.executor.journal import Journal

BURST = 1000


async def durable_writes(directory: Path) -> tuple[float, float]:
    """Seconds for BURST runs accepted at once (SeenIds.accept, one fsynced line each, one at a time) and for
    BURST results journaled at once (Journal.save: group-committed segments)."""
    seen = SeenIds(directory / "seen.jsonl")
    await asyncio.to_thread(seen.load)
    began = time.perf_counter()
    await asyncio.gather(*(seen.accept(f"job-{i}.20260101T000000.000000Z.1", f"job-{i}") for i in range(BURST)))
    accept_s = time.perf_counter() - began
    journal = Journal(directory / "results")
    await asyncio.to_thread(journal.load)
    results = [ExecutionFinished(seq=i + 1, execution_id=f"job-{i}.x.1", job_name=f"job-{i}", node="n",
                                 status="success") for i in range(BURST)]  # fmt: skip
    began = time.perf_counter()
    await asyncio.gather(*(journal.save(r) for r in results))
    return accept_s, time.perf_counter() - began


async def run(ctx: Ctx) -> None:
    scenario = "limits"
    procs = Procs(ctx.run_dir)
    try:
        ctx.limits = found = await limits.measure(procs, ctx.quick)
    finally:
        procs.stop_all()
    ctx.report.add(scenario, "spawn /bin/true, sequential", found.spawn_sequential_per_s, "/s")
    ctx.report.add(scenario, "spawn /bin/true, 16 in parallel (asyncio)", found.spawn_parallel_per_s, "/s")
    ctx.report.add(scenario, "ZeroMQ DEALER/ROUTER round trip p50", found.zmq_rtt.p50, "ms", note="tcp loopback, 300 B")
    ctx.report.add(scenario, "ZeroMQ DEALER/ROUTER round trip p99", found.zmq_rtt.p99, "ms")
    ctx.report.add(scenario, "ZeroMQ echoes per second (pipelined)", found.zmq_msgs_per_s, "/s")
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=ctx.run_dir) as tmp:
        accept_s, journal_s = await durable_writes(Path(tmp))
    ctx.report.add(scenario, f"executor: {BURST:,} SeenIds.accept at once", accept_s * 1000, "ms",
                   note=f"{BURST / accept_s:,.0f}/s; a run starts only after its accept")  # fmt: skip
    ctx.report.add(scenario, f"executor: {BURST:,} Journal.save at once", journal_s * 1000, "ms",
                   note=f"{BURST / journal_s:,.0f}/s; one per finished run")  # fmt: skip
