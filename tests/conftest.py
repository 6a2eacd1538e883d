"""Fixtures: a real Consul dev agent (never a fake), a clean KV per test, and real cronbus processes."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cronbus.common.consul.agent import DevAgent, find_consul
from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import CronbusError
from tests.helpers import Cluster

ARTIFACTS = Path(__file__).parent / "artifacts"


def _agent(tmp: Path) -> DevAgent:
    try:
        find_consul()
    except CronbusError as exc:
        pytest.fail(f"these tests need a real Consul: {exc}", pytrace=False)
    return DevAgent(log_path=tmp / "consul.log").start()


@pytest.fixture(scope="session")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevAgent]:
    """One Consul dev agent for the whole session (loopback, free ports)."""
    agent = _agent(tmp_path_factory.mktemp("consul"))
    os.environ["CRONBUS_TEST_CONSUL"] = agent.address
    yield agent
    agent.stop()


@pytest.fixture
def fresh_consul(tmp_path: Path) -> Iterator[DevAgent]:
    """A Consul dev agent of this test's own, for tests that kill, pause or pollute it."""
    agent = _agent(tmp_path)
    yield agent
    agent.stop()


@pytest.fixture
async def consul(consul_agent: DevAgent) -> AsyncIterator[ConsulClient]:
    """A client on the session agent, with cronbus's KV prefix empty before the test."""
    client = ConsulClient("127.0.0.1", consul_agent.http_port)
    await client.kv_delete("cronbus/", recurse=True)
    yield client
    await client.close()


@pytest.fixture
def cluster(fresh_consul: DevAgent, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Real cronbus processes on a fresh agent; their logs are printed when the test fails."""
    group = Cluster(fresh_consul.address, tmp_path)
    yield group
    group.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(group.logs())
        keep = ARTIFACTS / "logs" / request.node.name
        keep.mkdir(parents=True, exist_ok=True)
        for log in tmp_path.glob("*.log"):
            shutil.copy(log, keep / log.name)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
