"""With Consul ACLs on (default deny), cronbus works when given a token, because every call carries it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from tests.helpers import Cluster, async_wait_until, wait_until
from tests.integration.scheduling import executions, finished, put_job

TOKEN = "6a1c5b0e-3f0e-4f43-9a7e-acl000000001"


@pytest.fixture
def acl_consul(tmp_path: Path) -> Iterator[DevAgent]:
    agent = DevAgent(log_path=tmp_path / "consul.log", acl_master_token=TOKEN).start()
    yield agent
    agent.stop()


async def test_services_work_with_a_token_and_are_refused_without(acl_consul: DevAgent, tmp_path: Path) -> None:
    anonymous = Store(ConsulClient("127.0.0.1", acl_consul.http_port))
    store = Store(ConsulClient("127.0.0.1", acl_consul.http_port, token=TOKEN))
    cluster = Cluster(acl_consul.address, tmp_path)
    try:
        tokenless = cluster.executor(name="tokenless")
        wait_until(lambda: "cannot register yet" in tokenless.log(), timeout_s=15, what="a refused registration")
        cluster.scheduler("--consul-token", TOKEN, name="s1")
        cluster.executor("--consul-token", TOKEN, name="e1")
        await put_job(store, name="acl", schedule="@every 1s", executor="noop")

        async def ran() -> bool:
            return len(finished(await executions(store, "acl"))) >= 2

        try:
            await async_wait_until(ran, timeout_s=20, what="runs with ACLs on")
        except AssertionError:
            print(cluster.logs())
            raise
        assert await anonymous.list_executions("acl") == []  # deny by default: unreadable without the token
    finally:
        cluster.stop_all()
        await anonymous.consul.close()
        await store.consul.close()
