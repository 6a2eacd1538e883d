"""Kill -9 the leader and an executor at the same moment (one host dying with both on it). The new leader finds
launches the old one recorded for the dead executor, some sent, some not: it cannot know which ran, so none is
sent to another executor on a guess (docs/semantics.md §3.4): each becomes failed "executor lost" once that executor has
had the time to come back. Every slot is accounted for, and none runs twice."""

from __future__ import annotations

from datetime import timedelta

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.support import (
    all_executions,
    assert_slots_clean,
    hold,
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
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, executor_joined

JOBS = 40
AFTER_KILL_S = 8.0


async def test_leader_and_an_executor_killed_together(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, history_store: tuple[str, ...]
) -> None:
    store = Store(client(fresh_consul))
    try:
        schedulers = {"s1": cluster.scheduler("--log-level", "info", *history_store, name="s1")}
        first = await wait_leader(store)
        schedulers["s2"] = cluster.scheduler("--log-level", "info", *history_store, name="s2")
        executors = {n: cluster.executor("--log-level", "info", name=n) for n in ("e1", "e2")}
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs = await load_jobs(store, "pair", JOBS)
        await wait_running(store, jobs)

        since = now_utc() - timedelta(seconds=2)
        schedulers[first.name].kill()
        executors["e1"].kill()
        taken = await async_wait_until(
            lambda: new_leader(store, after_term=first.term, not_name=first.name), timeout_s=15, what="a new leader"
        )
        assert taken is not None
        await hold(AFTER_KILL_S, "scheduling with one executor")
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until)

        records = await all_executions(store)
        tally = tally_slots(jobs, records, starts(executors.values()), since, until)
        window = [r for rs in records.values() for r in rs if since < r.scheduled_at <= until]
        lost_runs = [r for r in window if r.reason == "executor lost" and r.node_name == "e1"]
        elsewhere = [r for r in window if r.node_name == "e2"]
        moved = await moved_count()
        assert moved or not history_store, "records moved to PostgreSQL while the faults went on"
        figures.add(
            slot_figures(
                f"leader and an executor kill -9 together ({JOBS} jobs/s, 2 executors){on(history_store)}",
                tally,
                executor_lost_records=len(lost_runs),
                ran_on_survivor=len(elsewhere),
                moved_to_postgresql=moved,
            )
        )
        assert_slots_clean(tally)
        assert elsewhere, "scheduling carried on on the surviving executor"
    finally:
        await store.consul.close()
