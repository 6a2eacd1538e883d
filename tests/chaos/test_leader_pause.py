"""SIGSTOP the leader past its lease under load, resume it: it never launches or dispatches once a new leader
exists (docs/semantics.md §3.2), and every slot of the period still runs once or is recorded missed."""

from __future__ import annotations

import signal
from datetime import timedelta

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import now_utc
from cronbus.services.scheduler.service import LEAD
from tests.chaos.conftest import FigureSheet
from tests.chaos.support import (
    all_executions,
    assert_slots_clean,
    hold,
    leader,
    load_jobs,
    moved_count,
    new_leader,
    settle,
    slot_figures,
    starts,
    tally_slots,
    wait_leader,
    wait_running,
)
from tests.chaos.support import (
    history_label as on,
)
from tests.helpers import Cluster, ServiceProcess, async_wait_until
from tests.integration.scheduling import client, executor_joined

JOBS = 100
ARGS = ("--history-limit", "100000", "--log-level", "info")


async def test_paused_leader_never_dispatches_after_a_new_leader(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, history_store: tuple[str, ...]
) -> None:
    store = Store(client(fresh_consul))
    paused: ServiceProcess | None = None
    try:
        schedulers = {"s1": cluster.scheduler(*ARGS, *history_store, name="s1")}
        await wait_leader(store)
        schedulers["s2"] = cluster.scheduler(*ARGS, *history_store, name="s2")
        executors = [cluster.executor("--capacity", "64", "--log-level", "info", name=f"e{i}") for i in (1, 2)]
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs = await load_jobs(store, "paused", JOBS)
        await wait_running(store, jobs)

        old = await wait_leader(store, 10, "the leader")
        paused = schedulers[old.name]
        since = now_utc() - timedelta(seconds=2)
        stopped_at = now_utc()
        paused.signal(signal.SIGSTOP)

        async def replaced() -> object:
            return await new_leader(store, after_term=old.term, not_name=old.name)

        await async_wait_until(replaced, timeout_s=15, what="a standby taking over from the paused leader")
        current = await leader(store)
        assert current is not None
        await hold(2.0, "the new leader dispatching while the old one is still stopped")
        paused.signal(signal.SIGCONT)
        resumed = paused
        paused = None
        await hold(6.0, "the old leader running again beside the new one")
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until)

        records = await all_executions(store)
        tally = tally_slots(jobs, records, starts(executors), since, until)
        # Launches the old term recorded (and sent) before the pause run at their slot, at most LEAD after it; a
        # later one would have been recorded after the pause: by a leader that was replaced meanwhile. (Not bound by
        # the new leader's election: a leader already losing its session can be replaced within LEAD. Its rounds are
        # smaller than a herd, which is recorded HERD_LEAD ahead.)
        late = [r for rs in records.values() for r in rs if r.term == old.term and r.scheduled_at > stopped_at + LEAD]
        started = starts(executors)
        late_started = [r.id for r in late if started[r.id]]
        stale_refusals = sum(p.log().count("stale term") for p in executors)
        moved = await moved_count()
        assert moved or not history_store, "records moved to PostgreSQL while the faults went on"
        figures.add(
            slot_figures(
                f"leader SIGSTOP past its lease, resumed ({JOBS} jobs/s){on(history_store)}",
                tally,
                late_launches_by_old_term=len(late),
                moved_to_postgresql=moved,
                late_runs_started=len(late_started),
                stale_term_refusals=stale_refusals,
            )
        )
        assert late == [], f"the old term launched after the new leader: {[r.id for r in late[:5]]}"
        assert_slots_clean(tally)
        log = resumed.log()
        assert "leadership lost" in log or "leadership ended" in log
        assert resumed.alive() and all(p.alive() for p in executors)
    finally:
        if paused is not None:
            paused.signal(signal.SIGCONT)
        await store.consul.close()
