"""Cluster API: health, agent info, members and leader from the catalog, leave, pause, metrics; and a real process."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import httpx
import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.agent import free_port
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.consul.view import JobView
from cronbus.common.settings import ConsulSettings, GatewaySettings
from cronbus.services.gateway.service import GatewayService
from tests.contract.test_api_executions import FakeLeader
from tests.contract.test_api_jobs import NODE, create, gateway_client, job_body
from tests.helpers import Cluster, async_wait_until, wait_until


@pytest.fixture
async def api(consul: ConsulClient) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(consul) as client:
        yield client


@pytest.fixture
async def registered(consul: ConsulClient) -> AsyncIterator[list[Registration]]:
    """A scheduler and an executor in the catalog (deregistered afterwards: the agent is shared)."""
    registrations = [
        Registration(
            consul,
            service=keys.SCHEDULER_SERVICE,
            service_id="scheduler-fake",
            address="127.0.0.1",
            port=7001,
            tags={"pub_port": "7002"},
            ttl_s=30,
        ),
        Registration(
            consul,
            service=keys.EXECUTOR_SERVICE,
            service_id="executor-e1",
            address="127.0.0.1",
            port=7003,
            tags={"role": "web", "node": "e1"},
            ttl_s=30,
        ),
    ]
    for registration in registrations:
        await registration.register()
    yield registrations
    for registration in registrations:
        await registration.deregister()


async def test_health_reports_consul_and_the_leader(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    response = await api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "consul": "ok"}
    fake = await FakeLeader(consul).start()
    try:
        assert (await api.get("/health")).json()["leader_name"] == "fake"
    finally:
        await fake.stop()


async def test_health_is_503_when_consul_is_unreachable() -> None:
    unreachable = ConsulClient("127.0.0.1", 1)  # nothing listens on port 1
    try:
        async with gateway_client(unreachable) as client:
            response = await client.get("/health")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "unhealthy" and body["consul"].startswith("consul ")
            # Other endpoints answer 503 with the reason, never 500.
            response = await client.get("/v1/jobs/job1")
            assert response.status_code == 503 and "Consul" in response.text
            response = await client.get("/v1/jobs")
            assert response.status_code == 503
    finally:
        await unreachable.close()


async def test_agent_info(api: httpx.AsyncClient) -> None:
    await create(api)
    info = (await api.get("/v1")).json()
    assert info["agent"]["name"] == NODE and info["agent"]["version"]
    assert info["tags"]["role"] == "gateway"
    assert info["serf"]["jobs"] == "1" and info["serf"]["paused"] == "false"
    assert all(isinstance(v, str) for v in info["serf"].values())
    assert (await api.get("/v1/")).json()["agent"] == info["agent"]


async def test_members_come_from_the_catalog_with_the_leader_tagged(
    api: httpx.AsyncClient, consul: ConsulClient, registered: list[Registration]
) -> None:
    response = await api.get("/v1/members")
    assert response.status_code == 200
    members = {m["Name"]: m for m in response.json()}
    assert response.headers["x-total-count"] == str(len(members))
    executor = members["e1"]
    assert executor["Tags"] == {"role": "executor", "node": "e1"}
    assert (executor["Addr"], executor["Port"], executor["Status"], executor["statusText"], executor["id"]) == (
        "127.0.0.1",
        7003,
        1,
        "alive",
        "executor-e1",
    )
    assert "leader" not in members["scheduler-fake"]["Tags"]
    fake = await FakeLeader(consul).start()
    try:
        members = {m["Name"]: m for m in (await api.get("/v1/members")).json()}
        assert members["scheduler-fake"]["Tags"]["leader"] == "true"
        assert members["scheduler-fake"]["Tags"]["role"] == "scheduler"
        leader = (await api.get("/v1/leader")).json()
        assert leader["Name"] == "scheduler-fake" and leader["Port"] == 7001
    finally:
        await fake.stop()


async def test_leader_is_404_without_one_and_described_from_its_record_otherwise(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    response = await api.get("/v1/leader")
    assert (response.status_code, response.text) == (404, "no leader")
    fake = await FakeLeader(consul).start()
    try:
        leader = (await api.get("/v1/leader")).json()
        assert leader["Name"] == "scheduler-fake" and leader["Tags"] == {"role": "scheduler", "leader": "true"}
        assert leader["Addr"] == "127.0.0.1" and leader["Status"] == 1
    finally:
        await fake.stop()


async def test_a_gateway_is_never_the_leader(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/isleader")
    assert response.status_code == 404
    assert response.json() == "I am a follower"


async def test_leave_answers_the_members_then_stops(consul: ConsulClient) -> None:
    left = asyncio.Event()
    async with gateway_client(consul, on_leave=left.set) as client:
        response = await client.post("/v1/leave")
        assert response.status_code == 200 and isinstance(response.json(), list)
        await asyncio.wait_for(left.wait(), 5)


NOT_PAUSED: Final = {"paused": False, "note": "", "paused_by": "", "paused_at": None}


async def test_pause_is_cluster_wide_in_consul(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    assert (await api.get("/v1/pause")).json() == NOT_PAUSED
    paused = (await api.post("/v1/pause")).json()  # Dkron's form: no body
    assert (paused["paused"], paused["note"], paused["paused_by"]) == (True, "", "")
    assert await Store(consul).get_pause() is True
    # Another gateway sees it.
    async with gateway_client(consul) as other:
        assert (await other.get("/v1/pause")).json() == paused
        assert (await other.post("/v1/jobs", json=job_body())).status_code == 503
    assert (await api.post("/v1/unpause")).json() == NOT_PAUSED
    assert await Store(consul).get_pause() is False


async def test_pause_keeps_a_note_who_and_when_until_unpaused(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    before = datetime.now(UTC)
    body = {"note": "  Consul upgrade, back at 15:00  ", "paused_by": "Ana (ops)"}
    response = await api.post("/v1/pause", json=body)
    assert response.status_code == 200, response.text
    paused = response.json()
    expected = (True, "Consul upgrade, back at 15:00", "Ana (ops)")
    assert (paused["paused"], paused["note"], paused["paused_by"]) == expected
    when = datetime.fromisoformat(paused["paused_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC) + timedelta(seconds=1)
    # Stored with the pause state: every gateway's GET answers it.
    async with gateway_client(consul) as other:
        assert (await other.get("/v1/pause")).json() == paused
    # As query parameters (the query wins over the body), and pausing again replaces the note.
    again = (await api.post("/v1/pause", params={"note": "disk full", "paused_by": "bo"}, json=body)).json()
    assert (again["note"], again["paused_by"]) == ("disk full", "bo")
    assert (await api.get("/v1/pause")).json() == again
    for bad in (b"{not json", b'{"note": 5}', b'{"reason": "x"}', b"[]"):
        response = await api.post("/v1/pause", content=bad, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (bad, response.text)
    assert (await api.post("/v1/pause", json={"note": "x" * 1001})).status_code == 400
    assert (await api.post("/v1/pause", params={"paused_by": "y" * 201})).status_code == 400
    assert (await api.get("/v1/pause")).json() == again, "a refused pause changes nothing"
    assert (await api.post("/v1/unpause")).json() == NOT_PAUSED
    assert (await api.get("/v1/pause")).json() == NOT_PAUSED


async def test_a_pause_stored_before_the_note_existed_still_reads(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await consul.kv_put(keys.PAUSE, b'{"paused":true}')
    assert (await api.get("/v1/pause")).json() == {**NOT_PAUSED, "paused": True}
    assert (await api.post("/v1/jobs", json=job_body())).status_code == 503
    await api.post("/v1/unpause")


async def test_metrics_count_requests_by_route_and_status(api: httpx.AsyncClient) -> None:
    await api.get("/v1/jobs/ghost")
    await api.get("/v1/jobs/other-ghost")
    await api.get("/nowhere")
    await api.get("/v1/jobs/")
    text = (await api.get("/metrics")).text
    assert 'cronbus_gateway_requests_total{method="GET",route="/v1/jobs/{job}",status="404"} 2' in text
    assert 'cronbus_gateway_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert 'cronbus_gateway_requests_total{method="GET",route="redirect",status="301"} 1' in text
    assert "# TYPE cronbus_gateway_request_duration_seconds histogram" in text
    assert 'cronbus_gateway_request_duration_seconds_bucket{method="GET",route="/v1/jobs/{job}",le="+Inf"} 2' in text
    assert 'cronbus_gateway_request_duration_seconds_count{method="GET",route="/v1/jobs/{job}"} 2' in text
    assert "cronbus_gateway_jobs 0" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


# ---- a real gateway process ---------------------------------------------------------------------------------------


def _call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lower(response.headers.items()), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, _lower(error.headers.items()), error.read().decode()


def _lower(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def _healthy(url: str) -> bool:
    try:
        return _call(f"{url}/health")[0] == 200
    except OSError:
        return False


def test_a_real_gateway_process_serves_the_api(cluster: Cluster) -> None:
    cluster.scheduler(name="s1")
    gateway, url = cluster.gateway(name="g1")
    wait_until(lambda: _healthy(url), timeout_s=20, what="gateway healthy")
    status, headers, body = _call(f"{url}/v1/jobs", "POST", job_body("real"))
    assert status == 201, body
    assert headers["x-whom"] == "g1" and headers["location"] == "/v1/jobs/real"
    status, headers, body = _call(f"{url}/v1/jobs")
    assert status == 200 and headers["x-total-count"] == "1" and json.loads(body)[0]["name"] == "real"
    wait_until(lambda: json.loads(_call(f"{url}/health")[2]).get("leader_name") == "s1", timeout_s=20, what="a leader")
    status, _, body = _call(f"{url}/v1/leader")
    assert status == 200 and json.loads(body)["Name"] == "s1"
    members = {m["Name"]: m for m in json.loads(_call(f"{url}/v1/members")[2])}
    assert members["s1"]["Tags"]["leader"] == "true"
    assert "g1" in members
    assert _call(f"{url}/v1/openapi.json")[0] == 200
    status, _, body = _call(f"{url}/v1/jobs/real", "DELETE")
    assert status == 200 and json.loads(body)["name"] == "real"
    status, _, _ = _call(f"{url}/v1/leave", "POST")
    assert status == 200
    assert gateway.stop() == 0  # leave stopped it gracefully


def test_a_real_cluster_runs_a_job_created_with_runoncreate(cluster: Cluster) -> None:
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway(name="g1")
    wait_until(lambda: _healthy(url), timeout_s=20, what="gateway healthy")
    wait_until(lambda: json.loads(_call(f"{url}/health")[2]).get("leader_name") == "s1", timeout_s=20, what="a leader")
    body = job_body("hello", schedule="@manually", executor_config={"command": "echo hello from cronbus"})

    def created() -> bool:
        # Stored (201) at once; not run, and the warning says why, until the executor has joined the leader.
        status, headers, text = _call(f"{url}/v1/jobs?runoncreate", "POST", body)
        assert status == 201, text
        return "x-cronbus-warning" not in headers

    wait_until(created, timeout_s=20, what="job created and run")

    def finished() -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(_call(f"{url}/v1/jobs/hello/executions")[2])
        return [r for r in runs if r["status"] == "success"]

    run = wait_until(finished, timeout_s=30, what="a successful execution")[0]
    assert "hello from cronbus" in run["output"]
    status, headers, text = _call(f"{url}/v1/jobs/hello/executions/{run['id']}/stream")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert '"hello from cronbus\\n"' in text and 'event: end\ndata: {"status":"success"' in text
    job = json.loads(_call(f"{url}/v1/jobs/hello")[2])
    wait_until(lambda: json.loads(_call(f"{url}/v1/jobs/hello")[2])["success_count"] >= 1, timeout_s=10)
    assert job["name"] == "hello"
    status, _, text = _call(f"{url}/v1/busy")
    assert status == 200 and isinstance(json.loads(text), list)


def test_a_real_cluster_streams_a_running_execution(cluster: Cluster) -> None:
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    _, url = cluster.gateway(name="g1")
    wait_until(lambda: _healthy(url), timeout_s=20, what="gateway healthy")
    command = "echo one; sleep 2; echo two"
    body = job_body("slow", schedule="@manually", executor_config={"command": command, "shell": "true"})
    assert _call(f"{url}/v1/jobs", "POST", body)[0] == 201
    wait_until(lambda: _call(f"{url}/v1/jobs/slow/run", "POST")[0] == 202, timeout_s=20, what="run accepted")
    busy = wait_until(
        lambda: [e for e in json.loads(_call(f"{url}/v1/busy")[2]) if e["job_name"] == "slow"],
        timeout_s=10,
        what="the run in /v1/busy",
    )
    with (
        httpx.Client(base_url=url, timeout=20) as client,
        client.stream("GET", f"/v1/jobs/slow/executions/{busy[0]['id']}/stream") as response,
    ):
        assert response.status_code == 200
        text = "".join(response.iter_text())
    outputs = [
        json.loads(line[len("data: ") :])
        for block in text.split("\n\n")
        if block.startswith("event: output")
        for line in block.split("\n")
        if line.startswith("data: ")
    ]
    assert "".join(outputs) == "one\ntwo\n"
    assert text.rstrip().endswith('"status":"success","exit_code":0}')


async def test_a_gateway_whose_job_view_crashed_stops_serving_reads_and_ends(
    consul: ConsulClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed view (an injected fault: its run() raises) must not go on answering from what it last saw: reads
    that need it answer 503, /health names the crash, and the gateway process ends with an error."""
    port = free_port()
    settings = GatewaySettings(node_name="crash", port=port, consul=ConsulSettings(addr=consul.address))
    crash = asyncio.Event()
    real_run = JobView.run

    async def crashing_run(self: JobView, stop: asyncio.Event, *, statuses: bool = True) -> None:
        runner = asyncio.create_task(real_run(self, stop, statuses=statuses))
        await crash.wait()
        runner.cancel()
        raise RuntimeError("injected fault in the job view")

    monkeypatch.setattr(JobView, "run", crashing_run)
    async with gateway_client(consul) as api:  # the app alone: reads refuse once the view is gone
        await async_wait_until(lambda: _answers(api, "/v1/jobs", 200), timeout_s=20, what="the view loaded")
        crash.set()
        await async_wait_until(lambda: _answers(api, "/v1/jobs", 503), timeout_s=20, what="reads refused")
        assert (await api.get("/v1/jobs/anything")).status_code == 503
        health = await api.get("/health")
        assert health.status_code == 503 and "injected fault" in health.json()["problem"]
    crash.clear()
    service = asyncio.create_task(GatewayService(settings).run(asyncio.Event()))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
        await async_wait_until(lambda: _answers(api, "/v1/jobs", 200), timeout_s=20, what="the gateway serving")
        crash.set()
        await async_wait_until(lambda: service_done(service), timeout_s=20, what="the gateway ended")
    with pytest.raises(ExceptionGroup) as ended:
        await service
    assert "the job view crashed: RuntimeError('injected fault in the job view')" in str(ended.value.exceptions)


async def service_done(task: asyncio.Task[None]) -> bool:
    return task.done()


async def _answers(api: httpx.AsyncClient, path: str, status: int) -> bool:
    try:
        return (await api.get(path)).status_code == status
    except httpx.HTTPError:
        return False
