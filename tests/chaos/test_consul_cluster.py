"""A 3-server Consul cluster on loopback; cronbus talks to a 4th, client agent. Kill -9 the server that leads Raft
(the worst server to lose): scheduling carries on, every slot runs once or is recorded missed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.models import now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.consul_cluster import ConsulCluster, wait_new_raft_leader
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
from tests.conftest import ARTIFACTS
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import executor_joined

JOBS = 30
AFTER_KILL_S = 8.0


@pytest.fixture
def consul_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ConsulCluster]:
    directory = tmp_path / "consul"
    directory.mkdir()
    group = ConsulCluster(directory).start()
    yield group
    group.stop()
    _keep_logs_on_failure(request, directory)


@pytest.fixture
def on_client_agent(consul_cluster: ConsulCluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """cronbus processes pointed at the cluster's client agent."""
    group = Cluster(consul_cluster.client.address, tmp_path)
    yield group
    group.stop_all()
    if _keep_logs_on_failure(request, tmp_path):
        print(group.logs())


def _keep_logs_on_failure(request: pytest.FixtureRequest, directory: Path) -> bool:
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return False
    keep = ARTIFACTS / "logs" / request.node.name
    keep.mkdir(parents=True, exist_ok=True)
    for log in directory.glob("*.log"):
        shutil.copy(log, keep / log.name)
    return True


async def test_scheduling_carries_on_when_the_raft_leader_server_dies(
    consul_cluster: ConsulCluster, on_client_agent: Cluster, figures: FigureSheet
) -> None:
    group = on_client_agent
    store = Store(ConsulClient("127.0.0.1", consul_cluster.client.http_port))
    try:
        group.scheduler("--log-level", "info", name="s1")
        await async_wait_until(lambda: leader(store), timeout_s=20, what="a leader")
        group.scheduler("--log-level", "info", name="s2")
        executors = [group.executor("--log-level", "info", name=f"e{i}") for i in (1, 2)]
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs = await load_jobs(store, "quorum", JOBS)
        await wait_running(store, jobs)

        victim = consul_cluster.raft_leader()
        assert victim is not None
        before = await leader(store)
        since = now_utc() - timedelta(seconds=2)
        consul_cluster.kill(victim)
        _, election_s = await asyncio.to_thread(wait_new_raft_leader, consul_cluster, victim)
        await hold(AFTER_KILL_S, "scheduling on two servers")
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until)

        tally = tally_slots(jobs, await all_executions(store), starts(executors), since, until)
        after = await leader(store)
        figures.add(
            slot_figures(
                f"Consul: Raft-leader server of 3 kill -9 ({JOBS} jobs/s via a client agent)",
                tally,
                raft_election_s=election_s,
                cronbus_leader=f"{before.name if before else '-'} -> {after.name if after else '-'}",
                cronbus_term_changes=(after.term - before.term) if before and after else -1,
            )
        )
        dead = [p.name for p in group.processes if not p.alive()]
        assert dead == [], f"cronbus processes died: {dead}"
        assert_slots_clean(tally)
    finally:
        await store.consul.close()
