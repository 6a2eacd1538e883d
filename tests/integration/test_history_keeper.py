"""The leader's history keeper in a real scheduler: --history-max-age trims records by age (on the Consul store), and
with a PostgreSQL --history-store records move there while the job keeps running, and a real gateway lists them."""

from __future__ import annotations

from datetime import timedelta

import httpx

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.history import when
from cronbus.common.models import now_utc
from cronbus.common.postgresql import PostgresHistoryStore
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, executions, executor_joined, finished, put_job


async def test_history_max_age_trims_old_records(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler("--history-max-age", "2s", "--history-limit", "1000", name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    await put_job(store, name="chatty", schedule="@every 1s", executor="noop")

    async def many_runs() -> bool:
        return (await store.get_status("chatty"))[0].success_count >= 14

    await async_wait_until(many_runs, timeout_s=30, what="fourteen runs")

    async def only_recent() -> bool:
        done = finished(await executions(store, "chatty"))
        # 2 s of age, a sweep every 5 s, and a second of slack; 14 runs would reach back further untrimmed.
        return bool(done) and min(when(r) for r in done) > now_utc() - timedelta(seconds=9)

    await async_wait_until(only_recent, timeout_s=20, what="records older than the max age deleted")
    assert (await store.get_status("chatty"))[0].success_count >= 14
    await store.consul.close()


async def test_records_move_to_postgresql_and_the_gateway_lists_each_once(
    cluster: Cluster, fresh_consul: DevAgent, postgres_dsn: str
) -> None:
    store = Store(client(fresh_consul))
    archive = PostgresHistoryStore(postgres_dsn)
    cluster.scheduler("--history-store", postgres_dsn, "--history-settle", "1s", "--history-limit", "1000", name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway("--history-store", postgres_dsn, name="gw")
    try:
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
        await put_job(store, name="chatty", schedule="@every 1s", executor="noop")

        async def moved_some() -> bool:
            return await archive.count("chatty") >= 8

        await async_wait_until(moved_some, timeout_s=40, what="records moved to PostgreSQL")

        async def consul_holds_only_recent() -> bool:
            done = finished(await executions(store, "chatty"))
            # settled after 1 s, a sweep every 5 s, and slack: older ones have left Consul
            return all(when(r) > now_utc() - timedelta(seconds=9) for r in done)

        await async_wait_until(consul_holds_only_recent, timeout_s=20, what="Consul keeping only recent records")
        runs = (await store.get_status("chatty"))[0].success_count
        async with httpx.AsyncClient(base_url=url, timeout=10) as api:
            listed = await api.get("/v1/jobs/chatty/executions")
        assert listed.status_code == 200, listed.text
        ids = [e["id"] for e in listed.json()]
        assert len(ids) == len(set(ids)) == int(listed.headers["X-Total-Count"])
        assert len(ids) >= runs  # every run that had ended when the status was read, each once (and newer ones)
        assert {r.id for r in (await archive.page("chatty")).records} <= set(ids)  # every moved record is listed
    finally:
        await archive.close()
        await store.consul.close()
