"""Kill -9 the leader and restart it at once under the same name (a supervisor's Restart=always): a leader
must be back within a few lock TTLs, and no slot may be lost for longer than that."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Job, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.support import all_executions, hold_until, new_leader, slot_figures, tally_slots, wait_leader
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, executions, executor_joined, finished, put_job

# Longer than a scheduler takes to start on a loaded machine, so the restart always beats the TTL (with the
# helpers' 1.5 s it does only sometimes, and the bug shows only then).
LOCK_TTL_S = 4.0
OBSERVE_S = 4 * LOCK_TTL_S


async def test_leader_restarted_at_once_under_its_name_gives_way(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet
) -> None:
    store = Store(client(fresh_consul))
    try:
        ttl = ("--lock-ttl", str(LOCK_TTL_S), "--log-level", "info")
        s1 = cluster.scheduler(*ttl, name="s1")
        first = await wait_leader(store)
        cluster.scheduler(*ttl, name="s2")
        cluster.executor("--log-level", "info", name="e1")
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs: list[Job] = [await put_job(store, name=f"r{i}", schedule="@every 1s", executor="noop") for i in range(5)]

        async def running() -> bool:
            return len(finished(await executions(store, "r4"))) >= 2

        await async_wait_until(running, timeout_s=20, what="the jobs running")
        killed = now_utc()
        started = time.monotonic()
        s1.kill()
        cluster.scheduler(*ttl, name="s1")  # at once, as a supervisor would

        async def replaced() -> object:
            return await new_leader(store, after_term=first.term)

        took_over_s = -1.0
        try:
            await async_wait_until(replaced, timeout_s=OBSERVE_S, what="a new leader")
            took_over_s = time.monotonic() - started
        except AssertionError:
            pass
        await hold_until(killed + timedelta(seconds=OBSERVE_S), "the observed period")
        entry = await store.consul.kv_get(keys.LEADER)
        tally = tally_slots(
            jobs, await all_executions(store), Counter(), killed, killed + timedelta(seconds=OBSERVE_S - 4)
        )
        figures.add(
            slot_figures(
                "leader kill -9, restarted at once under its name",
                tally,
                new_leader_after_s=took_over_s,
                lock_session=entry.session if entry is not None else "",
                leader_term=first.term,
            )
        )
        assert 0 < took_over_s < 3 * LOCK_TTL_S, f"no new leader within {OBSERVE_S}s; lock held by {entry}"
    finally:
        await store.consul.close()
