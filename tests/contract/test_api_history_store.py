"""The executions API on a PostgreSQL history store (--history-store postgresql://...): a job's history is its records
in PostgreSQL and those still in Consul (launches under way, results not moved yet), each once; deletes reach both;
an outage answers 503 and passes. Real Consul, real PostgreSQL, an in-process gateway; and the setting itself,
given as a flag, a variable or in the config file, through real gateway processes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import pytest
from click.testing import CliRunner

from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.models import ZERO_TIME, Execution, ExecutionStatus, execution_id
from cronbus.common.postgresql import PostgresHistoryStore
from cronbus.services.cli import main
from tests.contract.test_api_jobs import create, gateway_client, put_execution
from tests.helpers import Cluster, wait_until

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)


def run(job: str, minute: int, status: ExecutionStatus = "success", attempt: int = 1) -> Execution:
    slot = T0 + timedelta(minutes=minute)
    ended = status not in ("pending", "running")
    return Execution(
        id=execution_id(job, slot, attempt),
        job_name=job,
        scheduled_at=slot,
        started_at=slot + timedelta(seconds=1) if status != "pending" else ZERO_TIME,
        finished_at=slot + timedelta(seconds=5) if ended else ZERO_TIME,
        success=status == "success",
        status=status,
        attempt=attempt,
        output=f"run {minute}",
    )


@pytest.fixture
async def archive(postgres_dsn: str) -> AsyncIterator[PostgresHistoryStore]:
    store = PostgresHistoryStore(postgres_dsn)
    yield store
    await store.close()


async def ids(api: httpx.AsyncClient, path: str) -> tuple[list[str], str]:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()], response.headers["X-Total-Count"]


async def test_the_history_is_postgresql_s_records_and_consul_s_each_once(
    consul: ConsulClient, archive: PostgresHistoryStore, postgres_dsn: str
) -> None:
    moved = [run("job1", m) for m in range(6)]
    await archive.put(moved)
    both = moved[5]  # written to PostgreSQL, its Consul record not deleted yet
    under_way = [run("job1", 7, "running"), run("job1", 8, "pending")]
    for record in (both, *under_way):
        await put_execution(consul, record)
    await archive.put([run("job1-db", 1)])
    async with gateway_client(consul, history_store=postgres_dsn) as api:
        await create(api, "job1")
        newest_first = [under_way[1].id, under_way[0].id, *(r.id for r in reversed(moved))]
        assert await ids(api, "/v1/jobs/job1/executions") == (newest_first, "8")
        assert await ids(api, "/v1/jobs/job1/executions?_start=1&_end=4") == (newest_first[1:4], "8")
        assert await ids(api, "/v1/jobs/job1/executions?_start=7&_end=20") == (newest_first[7:], "8")
        oldest = await ids(api, "/v1/jobs/job1/executions?_sort=started_at&_order=ASC&_start=0&_end=2")
        assert oldest == ([under_way[1].id, moved[0].id], "8")  # a pending run has not started: zero time
        for record in (moved[0], under_way[0]):
            shown = await api.get(f"/v1/jobs/job1/executions/{record.id}")
            assert shown.status_code == 200, shown.text
            assert msgspec.convert(shown.json(), Execution, strict=False) == record
        assert (await api.get("/v1/jobs/job1/executions/job1.nope")).status_code == 404


async def test_a_search_across_jobs_reads_both_stores_each_record_once(
    consul: ConsulClient, archive: PostgresHistoryStore, postgres_dsn: str
) -> None:
    moved = [run("web", 1, "failed"), run("web", 2), run("db", 3, "timeout"), run("db", 4, "failed")]
    await archive.put(moved)
    await put_execution(consul, moved[3])  # written to PostgreSQL, its Consul record not deleted yet
    await put_execution(consul, run("web", 5, "running"))
    await put_execution(consul, run("db", 6, "pending"))
    async with gateway_client(consul, history_store=postgres_dsn) as api:
        for name in ("web", "db"):
            await create(api, name)
        newest_first = [run("db", 6).id, run("web", 5).id, *(r.id for r in reversed(moved))]
        assert await ids(api, "/v1/executions") == (newest_first, "6")
        assert await ids(api, "/v1/executions?_start=1&_end=3") == (newest_first[1:3], "6")
        failed = [moved[3].id, moved[2].id, moved[0].id]
        assert await ids(api, "/v1/executions?status=failed,timeout,killed") == (failed, "3")
        assert await ids(api, "/v1/executions?status=running,pending") == (newest_first[:2], "2")
        assert await ids(api, "/v1/executions?job=db&q=RUN%204") == ([moved[3].id], "1")
        assert await ids(api, "/v1/jobs/web/executions?status=failed") == ([moved[0].id], "1")


async def test_deletes_reach_both_stores_and_only_that_job(
    consul: ConsulClient, archive: PostgresHistoryStore, postgres_dsn: str
) -> None:
    await archive.put([run(name, m) for name in ("backup", "backup-db") for m in range(3)])
    await put_execution(consul, run("backup", 9, "running"))
    await put_execution(consul, run("backup-db", 9, "running"))
    async with gateway_client(consul, history_store=postgres_dsn) as api:
        for name in ("backup", "backup-db"):
            await create(api, name)
        cleared = await api.delete("/v1/jobs/backup/executions")
        assert cleared.status_code == 200, cleared.text
        assert await ids(api, "/v1/jobs/backup/executions") == ([], "0")
        assert await archive.count("backup") == 0
        assert await Store(consul).list_executions("backup") == []
        assert (await ids(api, "/v1/jobs/backup-db/executions"))[1] == "4"
        await archive.put([run("backup", 20)])
        assert (await api.delete("/v1/jobs/backup")).status_code == 200
        assert await archive.count("backup") == 0
        assert await archive.count("backup-db") == 3
        assert len(await Store(consul).list_executions("backup-db")) == 1


async def test_an_outage_answers_503_and_passes(consul: ConsulClient, fresh_postgres: LocalPostgres) -> None:
    store = PostgresHistoryStore(fresh_postgres.dsn)
    try:
        await store.put([run("job1", 1)])
        async with gateway_client(consul, history_store=fresh_postgres.dsn) as api:
            await create(api, "job1")
            assert (await ids(api, "/v1/jobs/job1/executions"))[1] == "1"
            fresh_postgres.stop()
            down = await api.get("/v1/jobs/job1/executions")
            assert down.status_code == 503, down.text
            assert "PostgreSQL history store" in down.text
            fresh_postgres.start()
            deadline = time.monotonic() + 30
            while (again := await api.get("/v1/jobs/job1/executions")).status_code != 200:
                assert time.monotonic() < deadline, again.text
            assert again.headers["X-Total-Count"] == "1"
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["flag", "variable", "config file"])
def test_a_bad_history_store_stops_the_start_naming_the_setting(how: str, tmp_path: Path) -> None:
    for command in ("gateway", "scheduler"):
        args, env = [command], {}
        if how == "flag":
            args += ["--history-store", "mysql://db/cronbus"]
        elif how == "variable":
            env["CRONBUS_HISTORY_STORE"] = "mysql://db/cronbus"
        else:
            config = tmp_path / "cronbus.yaml"
            config.write_text(f"{command}:\n  history-store: mysql://db/cronbus\n")
            args = ["--config", str(config), *args]
        result = CliRunner().invoke(main, args, env=env, prog_name="cronbus")
        assert result.exit_code == 2, result.output
        assert "--history-store" in result.output and "expected 'consul' or a postgresql://" in result.output


def test_a_bad_history_max_age_stops_the_scheduler() -> None:
    result = CliRunner().invoke(main, ["scheduler", "--history-max-age", "3 weeks"], prog_name="cronbus")
    assert result.exit_code == 2, result.output
    assert "--history-max-age" in result.output


def test_a_gateway_process_reads_the_store_its_variable_names(
    cluster: Cluster, postgres_server: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: CRONBUS_HISTORY_STORE read by a real gateway process, which serves PostgreSQL's records."""
    import asyncio  # noqa: PLC0415 - only this test writes through the async store from sync code

    dsn = postgres_server.dsn

    async def seed() -> None:
        store = PostgresHistoryStore(dsn)
        await store.delete_job("from-pg")
        await store.put([run("from-pg", 1, "failed")])
        await store.close()

    asyncio.run(seed())
    monkeypatch.setenv("CRONBUS_HISTORY_STORE", dsn)
    _, url = cluster.gateway(name="gw")
    with httpx.Client(base_url=url, timeout=10) as api:
        wait_until(lambda: _answers(api), timeout_s=30, what="the gateway")
        created = api.post("/v1/jobs", json={"name": "from-pg", "schedule": "@daily", "executor": "shell",
                                             "executor_config": {"command": "date"}})  # fmt: skip
        assert created.status_code == 201, created.text
        listed = api.get("/v1/jobs/from-pg/executions")
        assert listed.status_code == 200, listed.text
        assert [e["id"] for e in listed.json()] == [run("from-pg", 1).id]


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/health").status_code in (200, 503)
    except httpx.HTTPError:
        return False
