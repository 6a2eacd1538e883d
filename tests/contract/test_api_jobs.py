"""The jobs API on a real Consul: Dkron's contract (upserts, lists, filters, paging, errors) and cronbus's fixes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import RequestFactory

from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store, encode
from cronbus.common.errors import ConflictError, NotFoundError, UnavailableError, ValidationError
from cronbus.common.models import Execution, JobStatus
from cronbus.common.settings import ConsulSettings, GatewaySettings
from cronbus.services.gateway.api.app import GatewayApp, create_app
from cronbus.services.gateway.api.control import ControlError
from cronbus.services.gateway.api.errors import handle_exception
from tests.helpers import async_wait_until

NODE = "gw-test"


@contextlib.asynccontextmanager
async def gateway_client(
    consul: ConsulClient,
    *,
    on_leave: Callable[[], None] = lambda: None,
    tokens: dict[str, str] | None = None,
    request_timeout_s: float = 2.0,
    history_store: str = "consul",
) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process gateway on `consul` (its lifespan running in this loop) and an HTTP client for it."""
    settings = GatewaySettings(
        node_name=NODE,
        consul=ConsulSettings(addr=consul.address),
        tokens=tokens or {},
        request_timeout_s=request_timeout_s,
        history_store=history_store,
    )
    app: GatewayApp = create_app(settings, consul, on_leave=on_leave)
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar's ASGI types are narrower
    async with running(app), httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30) as client:
        yield client


@contextlib.asynccontextmanager
async def running(app: GatewayApp) -> AsyncIterator[None]:
    """The app's lifespan, entered and left by one task of its own (anyio requires it; pytest-asyncio sets a
    fixture up and tears it down in different tasks)."""
    started, stop = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # raises why the app could not start
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
async def api(consul: ConsulClient) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(consul) as client:
        yield client


def job_body(name: str = "job1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "schedule": "@every 10s",
        "executor": "shell",
        "executor_config": {"command": "date"},
    }
    body.update(fields)
    return body


async def create(api: httpx.AsyncClient, name: str = "job1", **fields: Any) -> dict[str, Any]:
    response = await api.post("/v1/jobs", json=job_body(name, **fields))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def put_status(consul: ConsulClient, name: str, status: JobStatus) -> None:
    await consul.kv_put(keys.status(name), encode(status))


async def put_execution(consul: ConsulClient, execution: Execution) -> None:
    await consul.kv_put(keys.execution(execution.job_name, execution.id), encode(execution))


async def names(api: httpx.AsyncClient, query: str) -> list[str]:
    response = await api.get(f"/v1/jobs?{query}")
    assert response.status_code == 200, response.text
    return [j["name"] for j in response.json()]


async def wait_for_names(api: httpx.AsyncClient, query: str, expected: list[str]) -> None:
    """Status rows reach the gateway's view by a watch: wait (bounded) for a list to show them."""
    for _ in range(100):
        if await names(api, query) == expected:
            return
        await asyncio.sleep(0.05)
    assert await names(api, query) == expected


# ---- create and read ----------------------------------------------------------------------------------------


async def test_create_answers_201_with_the_stored_job_and_its_location(api: httpx.AsyncClient) -> None:
    body = {
        "name": "job1",
        "schedule": "@every 10s",
        "timezone": "Europe/Berlin",
        "owner": "Platform Team",
        "owner_email": "platform@example.com",
        "disabled": False,
        "tags": {"role": "web:1"},
        "metadata": {"user": "12345"},
        "concurrency": "allow",
        "executor": "shell",
        "executor_config": {"command": "date"},
    }
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 201
    assert response.headers["location"] == "/v1/jobs/job1"
    assert response.headers["x-whom"] == NODE
    job = response.json()
    assert job["id"] == "job1"
    assert {k: job[k] for k in body} == body
    assert job["success_count"] == job["error_count"] == 0
    assert job["last_success"] is None and job["status"] == "" and job["dependent_jobs"] is None
    assert datetime.fromisoformat(job["next"]) > datetime.now(UTC)
    # Field order as Dkron writes it, then the extensions.
    assert list(job)[:8] == [
        "id",
        "name",
        "displayname",
        "timezone",
        "schedule",
        "owner",
        "owner_email",
        "success_count",
    ]
    shown = (await api.get("/v1/jobs/job1")).json()
    assert shown == job


async def test_unknown_job_is_404_in_plain_text(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/jobs/ghost")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "job 'ghost' not found"


async def test_upsert_keeps_created_at_and_replaces_the_rest(api: httpx.AsyncClient) -> None:
    first = await create(api, owner="a")
    second = await create(api, owner="b", schedule="@every 1m")
    assert second["owner"] == "b" and second["schedule"] == "@every 1m"
    assert second["created_at"] == first["created_at"]
    assert (await api.get("/v1/jobs")).headers["x-total-count"] == "1"


async def test_patch_is_a_full_upsert_and_put_takes_the_body_name(api: httpx.AsyncClient) -> None:
    response = await api.patch("/v1/jobs", json=job_body("patched", owner="x"))
    assert response.status_code == 201 and response.json()["owner"] == "x"
    response = await api.put("/v1/jobs/patched", json=job_body("patched", owner="y"))
    assert response.status_code == 201 and response.json()["owner"] == "y"
    # The body's name wins over the path (the Dkron UI's edit form relies on it) ...
    response = await api.put("/v1/jobs/whatever", json=job_body("renamed"))
    assert response.status_code == 201 and response.headers["location"] == "/v1/jobs/renamed"
    # ... and a body without a name takes the path's.
    body = job_body()
    del body["name"]
    response = await api.put("/v1/jobs/from-path", json=body)
    assert response.status_code == 201 and response.json()["name"] == "from-path"


async def test_unknown_keys_are_ignored_and_nulls_mean_default(api: httpx.AsyncClient) -> None:
    body = job_body(displayname=None, tags=None, retries=None, legacy_field={"x": 1}, next="2020-01-01T00:00:00Z")
    response = await api.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["displayname"] == "" and job["retries"] == 0 and "legacy_field" not in job
    assert job["next"] != "2020-01-01T00:00:00Z"  # read-only


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{bad", "invalid JSON: "),
        (b"", "the request body is empty"),
        (b"[]", "expected a JSON object (a job)"),
        (json.dumps(job_body(executor_config={"command": 1})).encode(), "invalid job: Expected `str`, got `int`"),
        (json.dumps(job_body(retries="3")).encode(), "invalid job: Expected `int`, got `str` - at `$.retries`"),
        (json.dumps(job_body(name="a b")).encode(), "Job validation failed: name contains illegal character ' '."),
        (json.dumps(job_body(timezone="Mars/Base")).encode(), "invalid timezone 'Mars/Base'"),
        (json.dumps(job_body(schedule="* * *")).encode(), "Job validation failed: can't parse job schedule: "),
        (json.dumps(job_body(executor="docker")).encode(), "unknown executor 'docker'"),
        (json.dumps(job_body(concurrency="sometimes")).encode(), "invalid concurrency policy value"),
        (json.dumps(job_body(starts_at="yesterday")).encode(), "invalid job: "),
    ],
)
async def test_bad_input_is_400_with_a_one_line_reason(api: httpx.AsyncClient, content: bytes, message: str) -> None:
    response = await api.post("/v1/jobs", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert message in response.text
    assert "\n" not in response.text and "Traceback" not in response.text


async def test_a_body_over_one_mebibyte_is_413(api: httpx.AsyncClient) -> None:
    big = json.dumps(job_body(displayname="x" * (1024 * 1024))).encode()
    response = await api.post("/v1/jobs", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert (await api.get("/v1/jobs/job1")).status_code == 404


# ---- parents, dependents, delete ----------------------------------------------------------------------------------


async def test_parent_must_exist_and_cycles_are_rejected(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/jobs", json=job_body("child", schedule="", parent_job="parent"))
    assert (response.status_code, response.text) == (404, "specified parent job not found")
    await create(api, "parent")
    child = await create(api, "child", schedule="", parent_job="parent")
    assert child["parent_job"] == "parent"
    await create(api, "grandchild", schedule="", parent_job="child")
    response = await api.post("/v1/jobs", json=job_body("parent", parent_job="grandchild"))
    assert response.status_code == 400
    assert response.text == (
        "Job validation failed: parent_job would create a cycle: parent -> grandchild -> child -> parent."
    )
    response = await api.post("/v1/jobs", json=job_body("selfish", parent_job="selfish"))
    assert (response.status_code, response.text) == (
        400,
        "Job validation failed: the job can not have itself as parent.",
    )


async def test_dependent_jobs_follow_the_childrens_parent_job(api: httpx.AsyncClient) -> None:
    await create(api, "parent")
    await create(api, "child-b", schedule="", parent_job="parent")
    await create(api, "child-a", schedule="", parent_job="parent")
    assert (await api.get("/v1/jobs/parent")).json()["dependent_jobs"] == ["child-a", "child-b"]
    await create(api, "child-b")  # no longer a child
    assert (await api.get("/v1/jobs/parent")).json()["dependent_jobs"] == ["child-a"]
    listed = {j["name"]: j for j in (await api.get("/v1/jobs")).json()}
    assert listed["parent"]["dependent_jobs"] == ["child-a"]
    assert listed["child-a"]["dependent_jobs"] is None


async def test_delete_answers_the_job_and_refuses_while_it_has_dependents(api: httpx.AsyncClient) -> None:
    await create(api, "parent")
    await create(api, "child", schedule="", parent_job="parent")
    response = await api.delete("/v1/jobs/parent")
    assert (response.status_code, response.text) == (409, "job has dependent jobs, delete them first")
    response = await api.delete("/v1/jobs/child")
    assert response.status_code == 200 and response.json()["name"] == "child"
    response = await api.delete("/v1/jobs/parent")
    assert response.status_code == 200 and response.json()["dependent_jobs"] is None
    assert (await api.get("/v1/jobs/parent")).status_code == 404
    assert (await api.get("/v1/jobs")).json() == []
    assert (await api.delete("/v1/jobs/parent")).status_code == 404


async def test_delete_removes_only_this_jobs_executions(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "backup")
    await create(api, "backup-db")
    for job in ("backup", "backup-db"):
        await put_execution(consul, Execution(id=f"{job}-1", job_name=job, status="success"))
    assert (await api.delete("/v1/jobs/backup")).status_code == 200
    store = Store(consul)
    assert await store.list_executions("backup") == []
    assert [e.id for e in await store.list_executions("backup-db")] == ["backup-db-1"]
    assert (await api.get("/v1/jobs/backup-db/executions")).headers["x-total-count"] == "1"


async def test_an_invalid_stored_definition_is_reported_and_can_be_deleted(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    await consul.kv_put(keys.job("broken"), b'{"name": 42}')

    async def shown() -> httpx.Response | None:  # reads come from the view, a blocking query behind Consul
        found = await api.get("/v1/jobs/broken")
        return found if found.status_code != 404 else None

    response = await async_wait_until(shown, timeout_s=5, what="the broken job in the view")
    assert response is not None and response.status_code == 409 and "invalid stored definition" in response.text
    for _ in range(100):
        health = (await api.get("/health")).json()
        if health.get("invalid_jobs"):
            break
        await asyncio.sleep(0.05)
    assert health["invalid_jobs"][0].startswith("broken: ")
    assert (await api.get("/v1/jobs")).json() == []
    assert (await api.delete("/v1/jobs/broken")).status_code == 200
    assert await consul.kv_get(keys.job("broken")) is None


async def test_a_definition_edited_in_consul_with_naive_times_still_shows(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    raw = job_body("by-hand", starts_at="2020-01-01T00:00:00", expires_at="2999-01-01T00:00:00")
    raw["created_at"] = "2020-01-01T00:00:00"
    await consul.kv_put(keys.job("by-hand"), json.dumps(raw).encode())
    response = await api.get("/v1/jobs/by-hand/next?count=2")
    assert response.status_code == 200 and len(response.json()) == 2
    await wait_for_names(api, "_sort=next", ["by-hand"])
    assert (await api.get("/v1/jobs/by-hand")).json()["next"] != "0001-01-01T00:00:00Z"


# ---- lists ----------------------------------------------------------------------------------------------------


async def test_list_filters_metadata_q_status_and_disabled(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "alpha", metadata={"team": "a", "env": "prod"}, displayname="Nightly Backup")
    await create(api, "beta", metadata={"team": "a", "env": "dev"}, disabled=True)
    await create(api, "gamma", metadata={"team": "b"})
    await create(api, "delta")
    await put_status(consul, "alpha", JobStatus(success_count=3, status="success"))
    await put_status(consul, "beta", JobStatus(error_count=1, status="failed"))
    await put_status(consul, "gamma", JobStatus(status="success", running=["gamma-1"], started=["gamma-1"]))
    # Sent ahead of its slot, or waiting out a retry's backoff: under way, but no process runs.
    await put_status(consul, "delta", JobStatus(running=["delta-1"], started=["an-earlier-run"]))
    await wait_for_names(api, "status=running", ["gamma"])
    assert await names(api, "metadata[team]=a") == ["alpha", "beta"]
    assert await names(api, "metadata[team]=a&metadata[env]=prod") == ["alpha"]
    assert await names(api, "metadata[team]=c") == []
    assert await names(api, "q=backup") == ["alpha"]  # displayname, any case
    assert await names(api, "q=ta") == ["beta", "delta"]
    assert await names(api, "status=success") == ["alpha", "gamma"]  # by the last finished run
    assert await names(api, "status=failed") == ["beta"]
    assert await names(api, "status=untriggered") == ["delta"]
    assert await names(api, "disabled=true") == ["beta"]
    assert await names(api, "disabled=false") == ["alpha", "delta", "gamma"]
    response = await api.get("/v1/jobs?metadata[team]=a&_start=1&_end=2")
    assert response.headers["x-total-count"] == "2"
    assert [j["name"] for j in response.json()] == ["beta"]
    alpha = (await api.get("/v1/jobs/alpha")).json()
    assert (alpha["success_count"], alpha["status"]) == (3, "success")
    assert (await api.get("/v1/jobs/gamma")).json()["status"] == "running"
    assert (await api.get("/v1/jobs/delta")).json()["status"] == ""


async def test_list_sorts_and_slices_like_react_admin(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "a", displayname="Zulu", schedule="@every 1h")
    await create(api, "b", displayname="alpha", schedule="@every 2h")
    await create(api, "c", displayname="Mike", schedule="@manually")
    await put_status(
        consul, "a", JobStatus(success_count=5, error_count=1, last_success=datetime(2026, 1, 2, tzinfo=UTC))
    )
    await put_status(
        consul, "b", JobStatus(success_count=1, error_count=7, last_error=datetime(2026, 1, 3, tzinfo=UTC))
    )
    await wait_for_names(api, "_sort=error_count&_order=DESC", ["b", "a", "c"])
    assert await names(api, "") == ["a", "b", "c"]
    assert await names(api, "_sort=name&_order=DESC") == ["c", "b", "a"]
    assert await names(api, "_sort=name&_order=desc") == ["c", "b", "a"]
    assert await names(api, "_sort=displayname") == ["b", "c", "a"]
    assert await names(api, "_sort=schedule") == ["a", "b", "c"]
    assert await names(api, "_sort=success_count&_order=DESC") == ["a", "b", "c"]
    assert await names(api, "_sort=last_success&_order=DESC") == ["a", "b", "c"]
    assert await names(api, "_sort=last_error&_order=DESC") == ["b", "a", "c"]
    assert await names(api, "_sort=next") == ["c", "a", "b"]  # "none" (zero time) first
    assert await names(api, "_start=1&_end=2") == ["b"]
    assert await names(api, "_start=2") == ["c"]
    assert await names(api, "_end=1") == ["a"]
    assert await names(api, "_start=5&_end=10") == []
    response = await api.get("/v1/jobs?_start=2&_end=1")
    assert response.status_code == 200 and response.json() == [] and response.headers["x-total-count"] == "3"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("_sort=owner", "_sort must be one of name, displayname, schedule"),
        ("_order=UP", "_order must be ASC or DESC"),
        ("_start=-1", "query parameter _start: Expected `int` >= 0"),
        ("_end=x", "query parameter _end"),
        ("status=sleeping", "status must be one of"),
        ("disabled=perhaps", "query parameter disabled"),
    ],
)
async def test_bad_list_parameters_are_400(api: httpx.AsyncClient, query: str, message: str) -> None:
    response = await api.get(f"/v1/jobs?{query}")
    assert response.status_code == 400
    assert message in response.text


# ---- writes racing -----------------------------------------------------------------------------------------------


async def test_concurrent_edits_each_store_a_full_body(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "raced")
    bodies = [job_body("raced", owner=f"writer-{i}", retries=i, displayname=f"D{i}") for i in range(16)]
    responses = await asyncio.gather(*(api.put("/v1/jobs/raced", json=b) for b in bodies))
    assert sorted(r.status_code for r in responses) == [201] * 16, [r.text for r in responses]
    stored = await Store(consul).get_job("raced")
    assert stored is not None and stored.job is not None
    final = stored.job
    # Never a mix of two bodies: the stored version is exactly one writer's.
    assert (final.owner, final.retries, final.displayname) in {
        (b["owner"], b["retries"], b["displayname"]) for b in bodies
    }


# ---- run, toggle, pause ------------------------------------------------------------------------------------------


async def test_run_without_a_leader_is_503_and_unknown_job_404(api: httpx.AsyncClient) -> None:
    await create(api)
    for path in ("/v1/jobs/job1", "/v1/jobs/job1/run"):
        response = await api.post(path)
        assert (response.status_code, response.text) == (503, "no leader")
    assert (await api.post("/v1/jobs/ghost/run")).status_code == 404


async def test_runoncreate_stores_the_job_even_when_the_run_cannot_start(api: httpx.AsyncClient) -> None:
    """The write succeeded, so the answer says so (as Dkron's does); the header says why nothing ran."""
    response = await api.post("/v1/jobs?runoncreate", json=job_body("eager"))
    assert response.status_code == 201 and response.json()["name"] == "eager"
    assert response.headers["X-Cronbus-Warning"] == "stored, but not run: no leader"
    assert (await api.get("/v1/jobs/eager")).status_code == 200


async def test_toggle_flips_disabled_and_next(api: httpx.AsyncClient) -> None:
    await create(api)
    response = await api.post("/v1/jobs/job1/toggle")
    assert response.status_code == 200
    assert response.json()["disabled"] is True
    assert response.json()["next"] == "0001-01-01T00:00:00Z"
    assert await names(api, "disabled=true") == ["job1"]
    assert (await api.post("/v1/jobs/job1/toggle")).json()["disabled"] is False
    assert (await api.post("/v1/jobs/ghost/toggle")).status_code == 404


async def test_paused_cluster_refuses_new_jobs(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/pause")).json()["paused"] is True
    response = await api.post("/v1/jobs", json=job_body())
    assert (response.status_code, response.text) == (503, "New job submissions are currently paused")
    assert (await api.put("/v1/jobs/job1", json=job_body())).status_code == 503
    assert (await api.post("/v1/unpause")).json()["paused"] is False
    assert (await api.post("/v1/jobs", json=job_body())).status_code == 201


# ---- schedule previews -------------------------------------------------------------------------------------------


async def test_next_fires_of_a_job_and_of_an_unsaved_schedule(api: httpx.AsyncClient) -> None:
    await create(api, "berlin", schedule="0 0 9 * * *", timezone="Europe/Berlin")
    fires = (await api.get("/v1/jobs/berlin/next?count=3")).json()
    assert len(fires) == 3
    instants = [datetime.fromisoformat(f) for f in fires]
    assert all(t.utcoffset() is not None and t.utcoffset().total_seconds() == 0 for t in instants)  # type: ignore[union-attr]
    assert all(t.hour in (7, 8) for t in instants)  # 09:00 in Berlin
    assert len((await api.get("/v1/jobs/berlin/next")).json()) == 5
    assert (await api.get("/v1/jobs/berlin/next?count=0")).status_code == 400
    assert (await api.get("/v1/jobs/ghost/next")).status_code == 404
    preview = await api.post(
        "/v1/schedule/preview",
        json={
            "schedule": "0 30 9 * * 1-5",
            "timezone": "America/New_York",
            "count": 2,
            "after": "2026-03-06T00:00:00Z",
        },
    )
    assert preview.status_code == 200
    assert preview.json() == ["2026-03-06T14:30:00Z", "2026-03-09T13:30:00Z"]  # DST starts on the 8th
    bad = await api.post("/v1/schedule/preview", json={"schedule": "61 * * * * *"})
    assert bad.status_code == 400 and bad.text.startswith("can't parse job schedule: ")
    assert (await api.post("/v1/schedule/preview", json={"schedule": ""})).status_code == 400
    assert (await api.post("/v1/schedule/preview", json={"schedule": "@daily", "count": 5000})).status_code == 400
    assert (await api.post("/v1/schedule/preview", json={"count": 1})).status_code == 400


# ---- restore -------------------------------------------------------------------------------------------------


async def test_restore_a_dump_of_get_jobs(api: httpx.AsyncClient) -> None:
    await create(api, "parent", metadata={"k": "v"})
    await create(api, "child", schedule="", parent_job="parent")
    await create(api, "other", executor="http", executor_config={"method": "GET", "url": "http://example.com"})
    dump = (await api.get("/v1/jobs")).content
    for name in ("child", "parent", "other"):
        assert (await api.delete(f"/v1/jobs/{name}")).status_code == 200
    # Children listed before their parents must still be created after them.
    jobs = json.loads(dump)
    jobs.sort(key=lambda j: j["parent_job"] == "", reverse=False)
    jobs.append({**jobs[0], "name": "Bad Name"})
    response = await api.post("/v1/restore", files={"file": ("jobs.json", json.dumps(jobs).encode())})
    assert response.status_code == 200, response.text
    results = response.json()
    assert results.index("success create parent") < results.index("success create child")
    assert "success create other" in results
    assert "fail create Bad Name: Job validation failed: name contains illegal character 'B'." in results
    restored = {j["name"]: j for j in (await api.get("/v1/jobs")).json()}
    assert sorted(restored) == ["child", "other", "parent"]
    assert restored["parent"]["dependent_jobs"] == ["child"]
    assert restored["parent"]["metadata"] == {"k": "v"}


async def test_restore_reports_bad_files(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/restore", files={"file": ("jobs.json", b"not json")})
    assert response.status_code == 400 and response.text.startswith("file is not JSON")
    response = await api.post("/v1/restore", files={"file": ("jobs.json", b'{"name": "x"}')})
    assert (response.status_code, response.text) == (400, "file must be a JSON array of jobs")
    response = await api.post("/v1/restore", files={"other": ("jobs.json", b"[]")})
    assert response.status_code == 400
    response = await api.post(
        "/v1/restore", files={"file": ("jobs.json", b'[{"name": "orphan", "parent_job": "x", "executor": "noop"}, 7]')}
    )
    assert response.json() == [
        "fail create #1: expected a JSON object (a job)",
        "fail create orphan: specified parent job not found",
    ]


# ---- conventions ----------------------------------------------------------------------------------------------


async def test_trailing_slash_redirects_301_for_get_and_307_otherwise(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/jobs/?_sort=name", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == "/v1/jobs?_sort=name"
    response = await api.post("/v1/jobs/", json=job_body(), follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/v1/jobs"
    assert response.headers["x-whom"] == NODE
    assert (await api.get("/v1/", follow_redirects=False)).status_code == 200


async def test_pretty_indents_json(api: httpx.AsyncClient) -> None:
    await create(api)
    plain = await api.get("/v1/jobs/job1")
    pretty = await api.get("/v1/jobs/job1?pretty")
    assert "\n" not in plain.text and pretty.text.startswith('{\n  "id": "job1"')
    assert pretty.json() == plain.json()
    assert int(pretty.headers["content-length"]) == len(pretty.content)
    assert (await api.get("/v1/jobs/ghost?pretty=1")).text == "job 'ghost' not found"


async def test_cors_preflight_and_exposed_headers(api: httpx.AsyncClient) -> None:
    response = await api.options(
        "/v1/jobs",
        headers={
            "Origin": "http://ui.example",
            "Access-Control-Request-Method": "DELETE",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "DELETE" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    listed = await api.get("/v1/jobs", headers={"Origin": "http://ui.example"})
    assert listed.headers["access-control-expose-headers"] == "*"
    assert listed.headers["access-control-allow-origin"] == "*"
    assert (await api.get("/v1/jobs")).headers["access-control-expose-headers"] == "*"


async def test_unknown_routes_and_methods_answer_plain_text(api: httpx.AsyncClient) -> None:
    response = await api.get("/v2/jobs")
    assert (response.status_code, response.text, response.headers["x-whom"]) == (404, "Not Found", NODE)
    response = await api.delete("/v1/busy")
    assert response.status_code == 405 and response.headers["content-type"].startswith("text/plain")


def test_our_own_bugs_are_500_internal_error_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # The factory needs an app; the default one would configure logging (and unhook caplog).
    app = create_app(GatewaySettings(node_name=NODE), ConsulClient())
    request = RequestFactory(app=app).get("/v1/jobs")
    response = handle_exception(request, RuntimeError("boom\nwith a second line"))
    assert (response.status_code, response.content) == (500, "internal error")
    assert "boom" in caplog.text
    # Client mistakes are never 500s, and every message is one line.
    assert handle_exception(request, ValidationError("bad\ninput")).content == "bad input"
    assert handle_exception(request, NotFoundError("gone")).status_code == 404
    assert handle_exception(request, ConflictError("raced")).status_code == 409
    assert handle_exception(request, UnavailableError("later")).status_code == 503
    assert handle_exception(request, ControlError(404, "no such execution")).status_code == 404
    assert handle_exception(request, msgspec.ValidationError("Expected `str`")).status_code == 400


async def test_openapi_describes_every_endpoint(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    expected = {
        "/v1/jobs": {"get", "post", "patch"},
        "/v1/jobs/{job}": {"get", "put", "delete", "post"},
        "/v1/jobs/{job}/run": {"post"},
        "/v1/jobs/{job}/toggle": {"post"},
        "/v1/jobs/{job}/next": {"get"},
        "/v1/jobs/{job}/executions": {"get", "delete"},
        "/v1/jobs/{job}/executions/{execution}": {"get"},
        "/v1/jobs/{job}/executions/{execution}/kill": {"post"},
        "/v1/jobs/{job}/executions/{execution}/stream": {"get"},
        "/v1/schedule/preview": {"post"},
        "/v1/restore": {"post"},
        "/v1": {"get"},
        "/v1/members": {"get"},
        "/v1/leader": {"get"},
        "/v1/isleader": {"get"},
        "/v1/leave": {"post"},
        "/v1/pause": {"get", "post"},
        "/v1/unpause": {"post"},
        "/v1/busy": {"get"},
        "/health": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(document["paths"][path]), path
    create_op = document["paths"]["/v1/jobs"]["post"]
    assert set(create_op["responses"]) >= {"201", "400", "404", "503"}
    assert create_op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Job"}
    assert "X-Total-Count" in document["paths"]["/v1/jobs"]["get"]["responses"]["200"]["headers"]
    assert document["paths"]["/v1/jobs/{job}/run"]["post"]["responses"].keys() >= {"202", "404", "503"}
    assert msgspec.json.decode((await api.get("/v1/openapi.json?pretty")).content) == document
