"""Executions API and the leader's control channel: history, delete, kill, run, busy and live output streams.

The scheduler's control channel is stood in for by FakeLeader: it holds the real leader key in Consul and
answers on real ZeroMQ sockets, so the gateway's side (discovery, DEALER requests, SUB streams) runs for real.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import msgspec
import pytest

from cronbus.common import messages
from cronbus.common.bus import Bus
from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.messages import (
    ControlReply,
    ExecutionEnded,
    KillExecution,
    ListBusy,
    NotLeader,
    OutputPublished,
    RunJob,
    ToPeer,
)
from cronbus.common.models import Execution, JobStatus, LeaderInfo
from cronbus.services.gateway.api.executions import truncate_output, unseen
from tests.contract.test_api_jobs import create, gateway_client, job_body, put_execution, put_status

T0 = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)

Responder = Callable[[messages.ToLeader], Awaitable[ToPeer | None]]


class FakeLeader:
    """Holds the leader key and answers control requests on a ROUTER; publishes on an XPUB it watches."""

    def __init__(self, consul: ConsulClient, name: str = "fake") -> None:
        self.consul = consul
        self.name = name
        self.bus = Bus()
        self.router, router_port = self.bus.router("127.0.0.1", 0)
        self.xpub, pub_port = self.bus.xpub("127.0.0.1", 0)
        self.info = LeaderInfo(
            name=name, term=1, router=f"tcp://127.0.0.1:{router_port}", publisher=f"tcp://127.0.0.1:{pub_port}"
        )
        self.received: list[messages.ToLeader] = []
        self.busy: list[Execution] = []
        self.respond: Responder = self.answer_ok
        self.subscriptions: set[bytes] = set()
        self._subscribed = asyncio.Event()
        self._session = ""
        self._tasks: list[asyncio.Task[None]] = []

    async def answer_ok(self, message: messages.ToLeader) -> ToPeer | None:
        match message:
            case ListBusy():
                return ControlReply(req_id=message.req_id, ok=True, executions=self.busy)
            case RunJob() | KillExecution():
                return ControlReply(req_id=message.req_id, ok=True)
        return None

    async def start(self) -> FakeLeader:
        self._session = await self.consul.session_create(f"fake leader {self.name}", [])
        await self.take_lead()
        self._tasks = [asyncio.create_task(self._serve()), asyncio.create_task(self._watch_subscriptions())]
        return self

    async def take_lead(self) -> None:
        assert await self.consul.kv_put(keys.LEADER, msgspec.json.encode(self.info), acquire=self._session)

    async def step_down(self) -> None:
        await self.consul.kv_put(keys.LEADER, b"", release=self._session)

    async def _serve(self) -> None:
        while True:
            identity, *frames = await self.router.recv_multipart()
            message = messages.decode(messages.to_leader_decoder, frames[-1], source="test")
            assert message is not None
            self.received.append(message)
            reply = await self.respond(message)
            if reply is not None:
                await self.router.send_multipart([identity, messages.encode(reply)])

    async def _watch_subscriptions(self) -> None:
        while True:
            frame = await self.xpub.recv()
            if frame[:1] == b"\x01":
                self.subscriptions.add(frame[1:])
                self._subscribed.set()

    async def wait_subscribed(self, execution_id: str) -> None:
        topic = messages.output_topic(execution_id)
        async with asyncio.timeout(10):
            while topic not in self.subscriptions:
                self._subscribed.clear()
                await self._subscribed.wait()

    async def publish(self, execution_id: str, message: OutputPublished | ExecutionEnded) -> None:
        await self.xpub.send_multipart([messages.output_topic(execution_id), messages.encode(message)])

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.router.close(linger=0)
        self.xpub.close(linger=0)
        self.bus.close()
        with contextlib.suppress(Exception):
            await self.step_down()
        await self.consul.session_destroy(self._session)


@pytest.fixture
async def leader(consul: ConsulClient) -> AsyncIterator[FakeLeader]:
    fake = await FakeLeader(consul).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def api(consul: ConsulClient) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client(consul, request_timeout_s=1.0) as client:
        yield client


def execution(job: str, number: int, **fields: object) -> Execution:
    base: dict[str, object] = {
        "id": f"{job}-{number}",
        "job_name": job,
        "started_at": T0 + timedelta(minutes=number),
        "finished_at": T0 + timedelta(minutes=number, seconds=30),
        "scheduled_at": T0 + timedelta(minutes=number),
        "success": True,
        "status": "success",
        "output": f"run {number}\n",
        "attempt": 1,
        "exit_code": 0,
    }
    base.update(fields)
    return Execution(**base)  # type: ignore[arg-type]


# ---- history ----------------------------------------------------------------------------------------------------


async def test_list_is_newest_first_with_total_and_slices(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    for number in (1, 3, 2):
        await put_execution(consul, execution("job1", number, attempt=number))
    zero = datetime(1, 1, 1, tzinfo=UTC)
    pending = execution("job1", 9, started_at=zero, finished_at=zero, status="pending", output="", attempt=9)
    await put_execution(consul, pending)
    response = await api.get("/v1/jobs/job1/executions")
    assert response.status_code == 200 and response.headers["x-total-count"] == "4"
    assert [e["id"] for e in response.json()] == ["job1-9", "job1-3", "job1-2", "job1-1"]
    first = response.json()[1]
    assert (first["job_name"], first["output"], first["output_truncated"], first["exit_code"]) == (
        "job1",
        "run 3\n",
        False,
        0,
    )
    response = await api.get("/v1/jobs/job1/executions?_sort=attempt&_order=ASC&_start=1&_end=3")
    assert response.headers["x-total-count"] == "4"
    assert [e["id"] for e in response.json()] == ["job1-2", "job1-3"]
    response = await api.get("/v1/jobs/job1/executions?_sort=finished_at&_order=DESC&_end=1")
    assert [e["id"] for e in response.json()] == ["job1-3"]
    assert (await api.get("/v1/jobs/job1/executions?_start=3&_end=1")).json() == []


async def test_output_size_limit_keeps_the_last_bytes(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1, output="0123456789"))
    await put_execution(consul, execution("job1", 2, output="ok"))
    listed = (await api.get("/v1/jobs/job1/executions?output_size_limit=4")).json()
    by_id = {e["id"]: e for e in listed}
    assert (by_id["job1-1"]["output"], by_id["job1-1"]["output_truncated"]) == ("6789", True)
    assert (by_id["job1-2"]["output"], by_id["job1-2"]["output_truncated"]) == ("ok", False)
    # The single execution is never cut.
    assert (await api.get("/v1/jobs/job1/executions/job1-1")).json()["output"] == "0123456789"


def test_truncation_never_splits_a_character() -> None:
    cut = truncate_output(Execution(id="x", job_name="j", output="aé€"), 4)  # 1 + 2 + 3 bytes
    assert (cut.output, cut.output_truncated) == ("€", True)


async def test_history_errors(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/jobs/ghost/executions")).status_code == 404
    await create(api, "job1")
    response = await api.get("/v1/jobs/job1/executions?_sort=output")
    assert response.status_code == 400 and response.text.startswith("_sort must be one of started_at, finished_at")
    assert (await api.get("/v1/jobs/job1/executions?output_size_limit=-1")).status_code == 400
    response = await api.get("/v1/jobs/job1/executions/nope")
    assert (response.status_code, response.text) == (404, "execution 'nope' of job 'job1' not found")


async def test_a_search_across_jobs_filters_by_status_job_node_time_and_output(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    for name in ("web", "db"):
        await create(api, name)
    runs = [
        execution("web", 1, node_name="e1"),
        execution("web", 2, node_name="e2", status="failed", success=False, output="ERROR: connection refused\n"),
        execution("db", 3, node_name="e1", status="timeout", success=False, output="slow query\n"),
        execution("db", 4, node_name="e2", status="killed", success=False),
        execution("db", 5, node_name="e1", status="missed", success=False, output=""),
    ]
    for record in runs:
        await put_execution(consul, record)

    async def found(query: str) -> tuple[list[str], str]:
        response = await api.get(f"/v1/executions?{query}")
        assert response.status_code == 200, response.text
        return [e["id"] for e in response.json()], response.headers["X-Total-Count"]

    assert await found("") == (["db-5", "db-4", "db-3", "web-2", "web-1"], "5")
    assert await found("status=failed,timeout,killed") == (["db-4", "db-3", "web-2"], "3")
    assert await found("status=failed,timeout,killed&_start=1&_end=2") == (["db-3"], "3")
    assert await found("status=failed&job=web") == (["web-2"], "1")
    assert await found("node=e1") == (["db-5", "db-3", "web-1"], "3")
    since, until = (T0 + timedelta(minutes=2)).isoformat(), (T0 + timedelta(minutes=4)).isoformat()
    assert await found(f"since={quote(since)}&until={quote(until)}") == (["db-3", "web-2"], "2")
    assert await found("q=Connection") == (["web-2"], "1")
    assert await found("job=ghost") == ([], "0")
    assert await found("_sort=started_at&_order=ASC&_end=2") == (["web-1", "web-2"], "5")
    cut = (await api.get("/v1/executions?job=web&status=failed&output_size_limit=8")).json()[0]
    assert (cut["output"], cut["output_truncated"]) == ("refused\n", True)
    own = await api.get("/v1/jobs/db/executions?status=timeout,killed")
    assert ([e["id"] for e in own.json()], own.headers["X-Total-Count"]) == (["db-4", "db-3"], "2")


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("status=failure", "status must be among pending, running, success, failed, killed, timeout, missed, skipped,"
                           " not 'failure'"),
        ("since=yesterday", "since must be an RFC 3339 time like 2026-12-01T00:00:00Z, not 'yesterday'"),
        ("until=2026-12-01T00:00:00",
         "until '2026-12-01T00:00:00' has no time zone: add Z or an offset such as +01:00"),
        ("_start=0&_end=5000", "a search returns at most 1000 executions a page: _end - _start is 5000"),
        ("_sort=output", "_sort must be one of started_at, finished_at, attempt, not 'output'"),
        ("_order=up", "_order must be ASC or DESC, not 'up'"),
        ("q=" + "x" * 1001, "q is 1001 characters: a search looks for at most 1000"),
    ],
)  # fmt: skip
async def test_a_bad_search_says_what_is_wrong(api: httpx.AsyncClient, query: str, error: str) -> None:
    response = await api.get(f"/v1/executions?{query}")
    assert (response.status_code, response.text) == (400, error)
    if query.startswith("status"):
        await create(api, "job1")
        own = await api.get(f"/v1/jobs/job1/executions?{query}")
        assert (own.status_code, own.text) == (400, error)


async def test_delete_executions_resets_counters_but_not_what_runs(
    api: httpx.AsyncClient, consul: ConsulClient
) -> None:
    await create(api, "backup")
    await create(api, "backup-db")
    for job in ("backup", "backup-db"):
        await put_execution(consul, execution(job, 1))
    slot = T0 + timedelta(hours=1)
    why = "disabled after 3 failed runs in a row"
    status = JobStatus(success_count=4, error_count=2, last_success=T0, status="failed", running=["x"], started=["x"],
                       last_slot=slot, failed_in_a_row=2, disabled_reason=why)  # fmt: skip
    await put_status(consul, "backup", status)
    response = await api.delete("/v1/jobs/backup/executions")
    assert response.status_code == 200
    job = response.json()
    assert (job["success_count"], job["error_count"], job["last_success"]) == (0, 0, None)
    assert job["status"] == "running"  # still running
    stored, _ = await Store(consul).get_status("backup")
    assert (stored.running, stored.started, stored.last_slot, stored.status) == (["x"], ["x"], slot, "")
    assert (stored.disabled_reason, stored.failed_in_a_row) == (why, 0)  # why it is disabled is not history
    assert (await api.get("/v1/jobs/backup/executions")).json() == []
    assert (await api.get("/v1/jobs/backup-db/executions")).headers["x-total-count"] == "1"
    assert (await api.delete("/v1/jobs/ghost/executions")).status_code == 404


# ---- run, kill, busy through the leader ---------------------------------------------------------------------------


async def test_run_is_accepted_by_the_leader(api: httpx.AsyncClient, leader: FakeLeader) -> None:
    await create(api, "job1", disabled=True)
    for path in ("/v1/jobs/job1", "/v1/jobs/job1/run"):
        response = await api.post(path)
        assert response.status_code == 202, response.text
        assert response.json()["name"] == "job1"
    runs = [m for m in leader.received if isinstance(m, RunJob)]
    assert [m.job_name for m in runs] == ["job1", "job1"]
    assert runs[0].req_id != runs[1].req_id


async def test_runoncreate_asks_the_leader(api: httpx.AsyncClient, leader: FakeLeader) -> None:
    response = await api.post("/v1/jobs?runoncreate=true", json=job_body("eager"))
    assert response.status_code == 201
    assert [m.job_name for m in leader.received if isinstance(m, RunJob)] == ["eager"]


async def test_the_leaders_refusal_passes_through(api: httpx.AsyncClient, leader: FakeLeader) -> None:
    async def refuse(message: messages.ToLeader) -> ToPeer | None:
        assert isinstance(message, RunJob)
        return ControlReply(req_id=message.req_id, ok=False, code=503, error="no executor matches tags role=db")

    leader.respond = refuse
    await create(api, "job1")
    response = await api.post("/v1/jobs/job1/run")
    assert (response.status_code, response.text) == (503, "no executor matches tags role=db")


async def test_a_silent_leader_times_out_with_503(api: httpx.AsyncClient, leader: FakeLeader) -> None:
    async def silent(message: messages.ToLeader) -> ToPeer | None:
        return None

    leader.respond = silent
    await create(api, "job1")
    response = await api.post("/v1/jobs/job1/run")
    assert (response.status_code, response.text) == (503, "the leader (fake) did not answer within 1s")
    # The next request uses a fresh connection and works once the leader answers again.
    leader.respond = leader.answer_ok
    assert (await api.post("/v1/jobs/job1/run")).status_code == 202


async def test_not_leader_rereads_the_leader_and_retries_once(
    api: httpx.AsyncClient, leader: FakeLeader, consul: ConsulClient
) -> None:
    successor = FakeLeader(consul, name="successor")

    async def hand_over(message: messages.ToLeader) -> ToPeer | None:
        await leader.step_down()
        await successor.start()
        return NotLeader(leader="successor")

    leader.respond = hand_over
    await create(api, "job1")
    try:
        response = await api.post("/v1/jobs/job1/run")
        assert response.status_code == 202, response.text
        assert [m.job_name for m in successor.received if isinstance(m, RunJob)] == ["job1"]
    finally:
        await successor.stop()


async def test_kill_a_running_execution(api: httpx.AsyncClient, leader: FakeLeader, consul: ConsulClient) -> None:
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1, status="running", finished_at=datetime(1, 1, 1, tzinfo=UTC)))
    await put_execution(consul, execution("job1", 2))
    response = await api.post("/v1/jobs/job1/executions/job1-1/kill")
    assert response.status_code == 202 and response.json()["id"] == "job1-1"
    kills = [m for m in leader.received if isinstance(m, KillExecution)]
    assert [(k.job_name, k.execution_id) for k in kills] == [("job1", "job1-1")]
    response = await api.post("/v1/jobs/job1/executions/job1-2/kill")
    assert (response.status_code, response.text) == (409, "execution 'job1-2' already ended (success)")
    assert (await api.post("/v1/jobs/job1/executions/nope/kill")).status_code == 404


async def test_kill_and_busy_without_a_leader_are_503(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1, status="running"))
    response = await api.post("/v1/jobs/job1/executions/job1-1/kill")
    assert (response.status_code, response.text) == (503, "no leader")
    assert (await api.get("/v1/busy")).status_code == 503


async def test_busy_lists_running_executions_with_their_output(api: httpx.AsyncClient, leader: FakeLeader) -> None:
    leader.busy = [execution("job1", 1, status="running", output="so far\n"), execution("job2", 1, status="running")]
    response = await api.get("/v1/busy")
    assert response.status_code == 200 and response.headers["x-total-count"] == "2"
    assert [(e["id"], e["output"]) for e in response.json()] == [("job1-1", "so far\n"), ("job2-1", "run 1\n")]


# ---- streams ----------------------------------------------------------------------------------------------------


def events(body: str) -> list[tuple[str, object]]:
    found = []
    for block in body.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        found.append((fields["event"], msgspec.json.decode(fields["data"])))
    return found


async def test_stream_of_a_finished_execution(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1, output="a\r\nb\n", status="failed", exit_code=3))
    response = await api.get("/v1/jobs/job1/executions/job1-1/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events(response.text) == [("output", "a\r\nb\n"), ("end", {"status": "failed", "exit_code": 3})]
    assert (await api.get("/v1/jobs/job1/executions/nope/stream")).status_code == 404


async def test_stream_of_a_running_execution_follows_it_to_its_end(
    api: httpx.AsyncClient, leader: FakeLeader, consul: ConsulClient
) -> None:
    await create(api, "job1")
    running = execution("job1", 1, status="running", output="", exit_code=None)
    await put_execution(consul, running)
    leader.busy = [msgspec.structs.replace(running, output="line 1\n")]
    stream = asyncio.create_task(api.get("/v1/jobs/job1/executions/job1-1/stream"))
    await leader.wait_subscribed("job1-1")
    await leader.publish("job1-1", OutputPublished(execution_id="job1-1", chunk="line 2\n"))
    await leader.publish("job1-1", OutputPublished(execution_id="other", chunk="not mine\n"))
    await put_execution(consul, execution("job1", 1, output="line 1\nline 2\n"))  # the leader records the end
    await leader.publish("job1-1", ExecutionEnded(execution_id="job1-1", status="success"))
    response = await asyncio.wait_for(stream, 10)
    assert response.status_code == 200
    assert events(response.text) == [
        ("output", "line 1\n"),
        ("output", "line 2\n"),
        ("end", {"status": "success", "exit_code": 0}),
    ]


async def test_stream_ends_when_the_record_does_even_if_the_end_was_missed(
    api: httpx.AsyncClient, leader: FakeLeader, consul: ConsulClient
) -> None:
    await create(api, "job1")
    running = execution("job1", 1, status="running", output="", exit_code=None)
    await put_execution(consul, running)
    stream = asyncio.create_task(api.get("/v1/jobs/job1/executions/job1-1/stream"))
    await leader.wait_subscribed("job1-1")
    await leader.publish("job1-1", OutputPublished(execution_id="job1-1", chunk="early\n"))
    await asyncio.sleep(0.2)
    await put_execution(consul, execution("job1", 1, status="timeout", output="early\nlate\n", exit_code=None))
    response = await asyncio.wait_for(stream, 10)
    assert events(response.text) == [
        ("output", "early\n"),
        ("output", "late\n"),
        ("end", {"status": "timeout", "exit_code": None}),
    ]


async def test_stream_of_a_running_execution_needs_a_leader(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1, status="running"))
    response = await api.get("/v1/jobs/job1/executions/job1-1/stream")
    assert (response.status_code, response.text) == (503, "no leader")


def test_chunks_already_in_the_snapshot_are_not_repeated() -> None:
    assert unseen("ab", ["a", "b", "c"]) == ["c"]
    assert unseen("xyz", ["y", "z"]) == []
    assert unseen("xyz", ["q"]) == ["q"]
    assert unseen("", ["a"]) == ["a"]
    assert unseen("abc", []) == []


async def test_an_unreadable_execution_record_costs_only_itself(api: httpx.AsyncClient, consul: ConsulClient) -> None:
    """Decoded at the store's edge into the project's errors: the record answers 409 naming its key and why (a
    msgspec error leaked as a 400 "bad input" before), the list goes on without it, /health names it. A status
    outside the known ones is such a record too (the field is typed)."""
    await create(api, "job1")
    await put_execution(consul, execution("job1", 1))
    await consul.kv_put(keys.execution("job1", "job1-2"), b'{"id": "job1-2", "job_name": 5}')
    await consul.kv_put(keys.execution("job1", "job1-3"), b'{"id": "job1-3", "job_name": "job1", "status": "exploded"}')
    shown = await api.get("/v1/jobs/job1/executions/job1-2")
    assert shown.status_code == 409
    assert shown.text.startswith("unreadable record cronbus/executions/job1/job1-2: not a valid Execution: ")
    unknown_status = await api.get("/v1/jobs/job1/executions/job1-3")
    assert unknown_status.status_code == 409
    assert "Invalid enum value 'exploded'" in unknown_status.text
    listed = await api.get("/v1/jobs/job1/executions")
    assert [e["id"] for e in listed.json()] == ["job1-1"]
    health = (await api.get("/health")).json()
    assert any(line.startswith("cronbus/executions/job1/job1-2: ") for line in health["unreadable_records"])
