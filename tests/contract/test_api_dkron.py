"""Dkron's own clients against the API on a real Consul: the requests Dkron's UI (react-admin's JSON-server data
provider) sends, word for word, and the other places where a Dkron client expects Dkron's answer."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import encode
from cronbus.common.models import DayStats, Execution, JobStatus
from tests.contract.test_api_jobs import create, gateway_client, job_body, put_execution, put_status
from tests.helpers import async_wait_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UNICODE_NAME = "ßñëäïüøáéíóýćàèìòùâêîôûæšłç"


@pytest.fixture
async def api(consul: ConsulClient) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(consul) as client:
        yield client


def _execution(job: str, number: int, started: datetime, output: str = "") -> Execution:
    return Execution(
        id=f"{job}-{number}", job_name=job, started_at=started, finished_at=started + timedelta(seconds=1),
        scheduled_at=started, success=True, status="success", output=output or f"run {number}\n", attempt=1,
    )  # fmt: skip


# ---- what Dkron's UI sends (ui/src/dataProvider.ts: ra-data-json-server; query keys sorted by query-string) ----


async def test_the_jobs_list_as_dkrons_ui_asks_for_it(api: httpx.AsyncClient) -> None:
    for name in ("gamma", "alpha", "beta"):
        await create(api, name, displayname=f"The {name}")
    response = await api.get("/v1/jobs?_end=10&_order=ASC&_sort=id&_start=0")  # react-admin's default sort: id
    assert response.status_code == 200, response.text
    assert response.headers["x-total-count"] == "3"
    jobs = response.json()
    assert [job["id"] for job in jobs] == ["alpha", "beta", "gamma"]  # Dkron maps id to name
    assert all(job["id"] == job["name"] for job in jobs)
    descending = await api.get("/v1/jobs?_end=2&_order=DESC&_sort=id&_start=0")
    assert [job["id"] for job in descending.json()] == ["gamma", "beta"]
    assert descending.headers["x-total-count"] == "3"
    searched = await api.get("/v1/jobs?_end=10&_order=ASC&_sort=displayname&_start=0&q=be")
    assert [job["id"] for job in searched.json()] == ["beta"]
    for sort in ("displayname", "schedule", "success_count", "error_count", "last_success", "last_error", "next"):
        assert (await api.get(f"/v1/jobs?_end=10&_order=ASC&_sort={sort}&_start=0")).status_code == 200, sort
    # CORS: a browser app on another origin must read the total.
    cors = await api.get("/v1/jobs?_end=10&_order=ASC&_sort=id&_start=0", headers={"Origin": "http://ui.example"})
    assert "x-total-count" in cors.headers["access-control-expose-headers"].lower() or (
        cors.headers["access-control-expose-headers"] == "*"
    )


async def test_a_jobs_executions_tab_as_dkrons_ui_asks_for_it(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    for number, minutes in ((1, 3), (2, 1), (3, 2)):
        await put_execution(consul, _execution("job1", number, T0 + timedelta(minutes=minutes), "x" * 300))
    query = "_end=25&_order=DESC&_sort=id&_start=0&jobs=job1&output_size_limit=200"
    response = await api.get(f"/v1/jobs/job1/executions?{query}")
    assert response.status_code == 200, response.text
    assert response.headers["x-total-count"] == "3"
    rows = response.json()
    assert [row["id"] for row in rows] == ["job1-1", "job1-3", "job1-2"]  # id is started_at, newest first
    assert all(len(row["output"]) == 200 and row["output_truncated"] for row in rows)
    ascending = await api.get("/v1/jobs/job1/executions?_end=25&_order=ASC&_sort=id&_start=0&jobs=job1")
    assert [row["id"] for row in ascending.json()] == ["job1-2", "job1-3", "job1-1"]
    empty_sort = await api.get("/v1/jobs/job1/executions?_sort=&_order=DESC")  # the default order
    assert [row["id"] for row in empty_sort.json()] == ["job1-1", "job1-3", "job1-2"]
    full = await api.get("/v1/jobs/job1/executions/job1-1")  # "Load full output"
    assert full.json()["output"] == "x" * 300


async def test_dkrons_ui_edit_form_puts_the_whole_record_back(api: httpx.AsyncClient) -> None:
    shown = (await api.get(f"/v1/jobs/{(await create(api, 'job1'))['id']}")).json()
    shown["owner"] = "ops"
    shown["starts_at"] = "2026-05-01T10:30"  # the UI's DateTimeInput (an HTML datetime-local)
    response = await api.put("/v1/jobs/job1", json=shown)  # read-only fields included, as react-admin sends them
    assert response.status_code == 201, response.text
    again = (await api.get("/v1/jobs/job1")).json()
    assert (again["owner"], again["starts_at"]) == ("ops", "2026-05-01T10:30:00Z")  # that minute in UTC


async def test_processors_are_an_object_never_null(api: httpx.AsyncClient) -> None:
    created = await create(api, "plain")
    assert created["processors"] == {}
    await create(api, "logged", processors={"log": {}})
    listed = {job["name"]: job for job in (await api.get("/v1/jobs")).json()}
    assert listed["plain"]["processors"] == {} and listed["logged"]["processors"] == {"log": {}}
    assert (await api.get("/v1/jobs/plain")).json()["processors"] == {}


async def test_a_name_of_any_allowed_letter_is_created_with_201_and_a_location_that_works(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post("/v1/jobs", json=job_body(UNICODE_NAME))
    assert response.status_code == 201, response.text  # was a 500: the Location header encoded as Latin-1
    assert response.headers["location"] == f"/v1/jobs/{quote(UNICODE_NAME, safe='')}"
    assert response.headers["location"].isascii()
    assert (await api.get(response.headers["location"])).json()["name"] == UNICODE_NAME


# ---- other Dkron clients ------------------------------------------------------------------------------------


async def test_basic_auth_carries_the_token_as_its_password(consul: ConsulClient) -> None:
    """django-dkron sends `Authorization: Basic <DKRON_API_AUTH>` (a proxy in front of Dkron checks it)."""
    token = "a-token-of-32-characters-long-xx"
    async with gateway_client(consul, tokens={token: "admin"}) as api:
        basic = base64.b64encode(f"django:{token}".encode()).decode()
        assert (await api.get("/v1/jobs", headers={"Authorization": f"Basic {basic}"})).status_code == 200
        wrong = base64.b64encode(b"django:not-the-token").decode()
        assert (await api.get("/v1/jobs", headers={"Authorization": f"Basic {wrong}"})).status_code == 401
        assert (await api.get("/v1/jobs", headers={"Authorization": "Basic %%%"})).status_code == 401
        refused = await api.get("/v1/jobs")
        assert refused.headers["www-authenticate"] == 'Bearer realm="cronbus"'  # no Basic: browsers would prompt


async def test_stats_are_dkrons_executions_per_day(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day = today.strftime("%Y-%m-%d")
    yesterday = (today - timedelta(days=1)).strftime("%Y-%m-%d")
    for key, stats in (
        (keys.day_stats(day, 0), DayStats(success_count=3, failed_count=1)),
        (keys.day_stats(day, 5), DayStats(success_count=2)),  # the shards of one day add up
        (keys.day_stats(yesterday, 1), DayStats(failed_count=4)),
        (keys.day_stats("2001-01-01", 0), DayStats(success_count=9)),  # outside the window
    ):
        await consul.kv_put(key, encode(stats))
    await consul.kv_put(keys.day_stats(day, 7), b"not json")  # unreadable: counted as nothing, never a 500
    response = await api.get("/v1/stats?days=3")
    assert response.status_code == 200, response.text
    assert response.json()["stats"] == [
        {"date": _day(today - timedelta(days=2)), "success_count": 0, "failed_count": 0},
        {"date": _day(today - timedelta(days=1)), "success_count": 0, "failed_count": 4},
        {"date": _day(today), "success_count": 5, "failed_count": 1},
    ]
    for asked, length in (("", 30), ("0", 30), ("-3", 30), ("abc", 30), ("400", 365), ("1", 1)):
        stats = (await api.get(f"/v1/stats?days={asked}")).json()["stats"]
        assert len(stats) == length, asked
        assert stats[-1]["date"] == _day(today)


async def test_stats_count_the_jobs_by_status_as_the_list_filters_them(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    """cronbus's `jobs` in GET /v1/stats: the dashboard's totals in the same answer as the chart."""
    empty = {"total": 0, "success": 0, "failed": 0, "partially_failed": 0, "running": 0, "untriggered": 0}
    assert (await api.get("/v1/stats?days=1")).json()["jobs"] == {**empty, "disabled": 0}
    for name in ("alpha", "beta", "gamma", "delta", "omega"):
        await create(api, name, disabled=name == "beta")
    await put_status(consul, "alpha", JobStatus(success_count=3, status="success"))
    await put_status(consul, "beta", JobStatus(error_count=1, status="failed"))
    await put_status(consul, "gamma", JobStatus(status="success", running=["gamma-1"], started=["gamma-1"]))
    await put_status(consul, "delta", JobStatus(running=["delta-1"]))  # sent ahead of its first slot: not running
    await put_status(consul, "omega", JobStatus(status="partially_failed"))

    async def counted() -> bool:
        jobs = (await api.get("/v1/stats?days=1")).json()["jobs"]
        return bool(jobs["running"] == 1 and jobs["partially_failed"] == 1)

    await async_wait_until(counted, what="the statuses in the view")
    jobs = (await api.get("/v1/stats?days=1")).json()["jobs"]
    # By the last finished run: gamma, running now, is counted as the success its last run was, and as running.
    assert jobs == {"total": 5, "success": 2, "failed": 1, "partially_failed": 1, "running": 1, "untriggered": 1,
                    "disabled": 1}  # fmt: skip
    for status in ("success", "failed", "partially_failed", "running", "untriggered"):
        assert jobs[status] == int((await api.get(f"/v1/jobs?status={status}")).headers["x-total-count"]), status
    assert jobs["disabled"] == int((await api.get("/v1/jobs?disabled=true")).headers["x-total-count"])


def _day(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


async def test_health_names_the_leader_without_claiming_dkrons_leader_flag(api: httpx.AsyncClient) -> None:
    body = (await api.get("/health")).json()
    assert body["status"] == "healthy" and "leader" not in body  # Dkron's `leader` is "this node leads": a bool


# ---- restore: a Dkron dump never loses a job ---------------------------------------------------------------


async def test_restore_keeps_a_job_whose_executor_cronbus_lacks_disabled_with_its_problem(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    dump = [
        job_body("shell-job"),
        job_body("kafka-job", executor="kafka", executor_config={"brokerAddress": "k:9092", "topic": "t"}),
        job_body("custom-job", executor="my-plugin", executor_config={"x": "y"}, disabled=True),
        job_body("bad-job", schedule="every day"),
    ]
    files = {"file": ("dump.json", json.dumps(dump).encode(), "application/json")}
    response = await api.post("/v1/restore", files=files)
    assert response.status_code == 200, response.text
    results = response.json()
    assert results[:3] == [
        "success create shell-job",
        "success create kafka-job: stored disabled, the executor 'kafka' is not available in cronbus",
        "success create custom-job: stored disabled, the executor 'my-plugin' is not available in cronbus",
    ]
    assert results[3].startswith("fail create bad-job: Job validation failed: can't parse job schedule")
    kafka = (await api.get("/v1/jobs/kafka-job")).json()
    assert kafka["disabled"] is True and kafka["executor"] == "kafka"
    assert kafka["executor_config"] == {"brokerAddress": "k:9092", "topic": "t"}
    assert (
        "executor 'kafka' is not available in cronbus: " in kafka["problem"] and kafka["next"] == "0001-01-01T00:00:00Z"
    )
    listed = {job["name"]: job for job in (await api.get("/v1/jobs")).json()}
    assert set(listed) == {"shell-job", "kafka-job", "custom-job"} and listed["shell-job"]["problem"] == ""
    toggled = await api.post("/v1/jobs/kafka-job/toggle")
    assert toggled.status_code == 409 and "cannot be enabled: " in toggled.text
    assert (await api.post("/v1/jobs/kafka-job/run")).status_code == 409
    health = (await api.get("/health")).json()
    assert any(line.startswith("kafka-job: ") for line in health["invalid_jobs"])
    assert (await api.delete("/v1/jobs/kafka-job")).status_code == 200  # and it can go
    # The status the scheduler keeps is not touched by any of this.
    await put_status(consul, "shell-job", JobStatus(success_count=1, status="success"))
    await async_wait_until(lambda: _status_is(api, "shell-job", "success"), timeout_s=5, what="the status in the view")


async def _status_is(api: httpx.AsyncClient, name: str, status: str) -> bool:
    return bool((await api.get(f"/v1/jobs/{name}")).json()["status"] == status)
