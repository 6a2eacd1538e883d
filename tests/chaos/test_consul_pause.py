"""SIGSTOP the Consul agent for 15 s, then resume it: no cronbus process dies, the leader steps down, dispatching
resumes, and the slots of the gap are run or recorded per misfire_policy (docs/semantics.md §4) — none silently lost."""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Job, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.support import (
    all_executions,
    assert_slots_clean,
    hold,
    leader,
    load_jobs,
    settle,
    slot_figures,
    starts,
    tally_slots,
    wait_running,
)
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, executor_joined

OUTAGE_S = 15.0
PER_POLICY = 10
POLICIES = ("run_once", "run_all", "skip")


async def test_consul_stopped_for_15s(cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet) -> None:
    assert fresh_consul.proc is not None
    consul_pid = fresh_consul.proc.pid
    store = Store(client(fresh_consul))
    stopped = False
    try:
        s1 = cluster.scheduler("--log-level", "info", name="s1")
        await async_wait_until(lambda: leader(store), timeout_s=20, what="a leader")
        cluster.scheduler("--log-level", "info", name="s2")
        executors = [cluster.executor("--log-level", "info", name=f"e{i}") for i in (1, 2)]
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        groups: dict[str, list[Job]] = {}
        for policy in POLICIES:
            groups[policy] = await load_jobs(store, policy.replace("_", "-"), PER_POLICY, misfire_policy=policy)
        jobs = [job for group in groups.values() for job in group]
        await wait_running(store, jobs)
        old = await leader(store)
        assert old is not None and old.name == "s1"

        since = now_utc() - timedelta(seconds=2)
        os.kill(consul_pid, signal.SIGSTOP)
        stopped = True
        paused_at = now_utc()
        try:
            await hold(OUTAGE_S, "Consul stopped")
        finally:
            os.kill(consul_pid, signal.SIGCONT)
            stopped = False
        resumed_at = now_utc()
        resumed = time.monotonic()

        async def dispatching_again() -> bool:
            records = await all_executions(store)
            return all(
                any(r.scheduled_at > resumed_at and r.status == "success" for r in records.get(job.name, []))
                for job in groups["run_all"]
            )

        await async_wait_until(dispatching_again, timeout_s=20, interval_s=0.5, what="dispatching resumed")
        resumed_after_s = time.monotonic() - resumed
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until)

        records = await all_executions(store)
        started = starts(executors)
        tallies = {policy: tally_slots(group, records, started, since, until) for policy, group in groups.items()}
        total = tally_slots(jobs, records, started, since, until)
        gap = {p: t.missed for p, t in tallies.items()}
        new = await leader(store)
        figures.add(
            slot_figures(
                f"Consul agent SIGSTOP {OUTAGE_S:.0f} s ({len(jobs)} jobs/s, run_once/run_all/skip)",
                total,
                dispatching_again_after_s=resumed_after_s,
                missed_run_once=gap["run_once"],
                missed_run_all=gap["run_all"],
                missed_skip=gap["skip"],
                leader_after=f"{new.name} term {new.term}" if new else "none",
            )
        )
        dead = [p.name for p in cluster.processes if not p.alive()]
        assert dead == [], f"cronbus processes died: {dead}"
        assert "leadership lost" in s1.log() or "leadership ended" in s1.log(), "the leader did not step down"
        assert_slots_clean(total)
        outage = (resumed_at - paused_at).total_seconds()
        # The gap (at least the outage minus the lease) is run per policy: skip records every slot of it as
        # skipped-by-policy, run_once coalesces it into one run, run_all runs every slot.
        assert tallies["skip"].missed >= PER_POLICY * (outage - 3), tallies["skip"]
        assert all("skip" in r for r in tallies["skip"].missed_reasons), tallies["skip"].missed_reasons
        assert tallies["run_once"].missed >= PER_POLICY * (outage - 4), tallies["run_once"]
        assert all("coalesced" in r for r in tallies["run_once"].missed_reasons), tallies["run_once"].missed_reasons
        assert tallies["run_all"].missed == 0, tallies["run_all"].missed_reasons
    finally:
        if stopped:
            os.kill(consul_pid, signal.SIGCONT)
        await store.consul.close()
