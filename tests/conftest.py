"""Fixtures: a real Consul dev agent (never a fake), a clean KV per test, and real cronbus processes."""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cronbus.common.consul.agent import DevAgent, find_consul
from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import CronbusError
from cronbus.common.local_postgres import LocalPostgres
from cronbus.services.executor.executors.shell import GUARDIAN
from tests.helpers import Cluster
from tests.integration.scheduling import OPEN_CLIENTS

ARTIFACTS = Path(__file__).parent / "artifacts"
_databases = itertools.count()


def _agent(tmp: Path) -> DevAgent:
    try:
        find_consul()
    except CronbusError as exc:
        pytest.fail(f"these tests need a real Consul: {exc}", pytrace=False)
    return DevAgent(log_path=tmp / "consul.log").start()


@pytest.fixture(scope="session", autouse=True)
def _stop_the_run_guardian() -> Iterator[None]:
    """Tests that run the shell executor in this process start its guardian (one per process, as in an executor);
    the executor service stops it when it ends, and so does the test session."""
    yield
    GUARDIAN.close()


@pytest.fixture(scope="session")
def consul_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevAgent]:
    """One Consul dev agent for the whole session (loopback, free ports)."""
    agent = _agent(tmp_path_factory.mktemp("consul"))
    os.environ["CRONBUS_TEST_CONSUL"] = agent.address
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One throw-away PostgreSQL cluster for the whole session (initdb + pg_ctl on a free loopback port)."""
    server = LocalPostgres().init().start()
    yield server
    server.remove()


@pytest.fixture
def postgres_dsn(postgres_server: LocalPostgres) -> str:
    """A new, empty database on the session's PostgreSQL: its DSN. It sorts text by ICU's en-US rules (as most
    production databases sort by a language's), not by code point, so the stores' orders are tested against it."""
    name = f"history_{next(_databases)}_{int(time.time() * 1000)}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'").format(
                sql.Identifier(name)
            )
        )
    return postgres_server.dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def fresh_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster of this test's own, for tests that stop it."""
    server = LocalPostgres().init().start()
    yield server
    server.remove()


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
async def closed_clients() -> AsyncIterator[None]:
    """Every Consul client a test made with tests.integration.scheduling.client is closed when it ends, failed or
    not: an unclosed one is reported, as a warning, in whichever later test the collector happens to run."""
    yield
    while OPEN_CLIENTS:
        await OPEN_CLIENTS.pop().close()


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
