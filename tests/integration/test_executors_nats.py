"""The nats executor against a real nats-server (Debian's), one per module, with users and permissions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent, free_port
from cronbus.common.consul.store import Store
from cronbus.services.executor.executors.base import RunRequest, RunResult
from cronbus.services.executor.executors.nats import SENT, NatsExecutor
from cronbus.services.executor.output import OutputBuffer
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executions, executor_joined, finished, put_job
from tests.servers import NatsServer

USER, PASSWORD = "cronbus", "s3cret"


@pytest.fixture
async def store(fresh_consul: DevAgent) -> AsyncIterator[Store]:
    """A store on the test's own agent, closed whatever the test's outcome."""
    opened = Store(client(fresh_consul))
    yield opened
    await opened.consul.close()


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    print(f"nats-server started in {server.started_in_s:.2f}s")
    yield server
    server.stop()


class Subscription:
    """What a real subscriber on the server received."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []

    async def on_message(self, message: Msg) -> None:
        self.messages.append(message)


@pytest.fixture
async def subscriber(nats_server: NatsServer) -> AsyncIterator[tuple[Client, Subscription]]:
    connection = await nats.connect(nats_server.url(), user=USER, password=PASSWORD, allow_reconnect=False)
    received = Subscription()
    await connection.subscribe("jobs.>", cb=received.on_message)
    await connection.flush()
    yield connection, received
    await connection.close()


def config(server: NatsServer, **keys: str) -> dict[str, str]:
    return {"url": server.url(), "subject": "jobs.backup", "userName": USER, "password": PASSWORD, **keys}


async def run(config: dict[str, str], timeout_s: float | None = None) -> tuple[RunResult, str]:
    request = RunRequest(
        execution_id="publish-1-1",
        job_name="publish",
        scheduled_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=1,
        executor="nats",
        config=config,
        timeout_s=timeout_s,
    )
    output = OutputBuffer()
    result = await NatsExecutor().run(request, output, asyncio.Event())
    return result, output.text()


async def test_the_message_is_published_to_the_subject(
    nats_server: NatsServer, subscriber: tuple[Client, Subscription]
) -> None:
    _, received = subscriber
    result, output = await run(config(nats_server, message='{"backup": "nightly"}'))
    assert result == RunResult("success", None)
    assert output == SENT == "Result: Message successfully sent\n"  # Dkron's output

    async def arrived() -> bool:
        return bool(received.messages)

    await async_wait_until(arrived, timeout_s=5, what="the message at the subscriber")
    (message,) = received.messages
    assert (message.subject, message.data) == ("jobs.backup", b'{"backup": "nightly"}')


async def test_several_servers_and_credentials_in_the_url(
    nats_server: NatsServer, subscriber: tuple[Client, Subscription]
) -> None:
    _, received = subscriber
    down = f"nats://127.0.0.1:{free_port()}"
    url = f"{down},{nats_server.url(USER, PASSWORD)}"  # the first one is down: the client goes on to the next
    result, output = await run({"url": url, "subject": "jobs.urls", "message": "m", "debug": "true"})
    assert result == RunResult("success", None), output
    assert output == f"connected to nats://127.0.0.1:{nats_server.port}\n{SENT}"  # and no password

    async def arrived() -> bool:
        return any(m.subject == "jobs.urls" for m in received.messages)

    await async_wait_until(arrived, timeout_s=5, what="the message at the subscriber")


async def test_bad_credentials_fail_with_the_servers_reason(nats_server: NatsServer) -> None:
    result, output = await run(config(nats_server, password="wrong"))
    assert result.status == "failed"
    assert result.reason.startswith(f"cannot connect to NATS at nats://127.0.0.1:{nats_server.port}: ")
    assert "authorization violation" in result.reason.lower()
    assert output == f"[cronbus] {result.reason}\n"


async def test_a_publish_the_server_refuses_fails_the_run(nats_server: NatsServer) -> None:
    """Dkron ignores the publish's error; cronbus reports it: `reader` may publish nothing. Every time: the
    client library can send the flush's ping ahead of the message (about every other run, with one flush)."""
    for _ in range(20):
        result, _ = await run(config(nats_server, userName="reader", password="r3ader"))
        assert result.status == "failed"
        assert result.reason.startswith("publish to 'jobs.backup' failed: ")
        assert "permissions violation for publish" in result.reason.lower()


async def test_a_server_that_is_down_fails_the_run() -> None:
    port = free_port()
    result, _ = await run({"url": f"127.0.0.1:{port}", "subject": "jobs.x"})
    assert result.status == "failed"
    assert result.reason.startswith(f"cannot connect to NATS at nats://127.0.0.1:{port}: ")


async def test_a_failed_publish_is_retried_as_every_failed_run(
    cluster: Cluster, store: Store, nats_server: NatsServer, subscriber: tuple[Client, Subscription]
) -> None:
    """Through a real scheduler and executor: a run that publishes, and one the server refuses, retried."""
    _, received = subscriber
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")

    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor the leader knows")
    await put_job(store, name="publish", schedule="@manually", executor="nats",
                  executor_config=config(nats_server, subject="jobs.cluster", message="from cronbus"))  # fmt: skip
    await put_job(store, name="refused", schedule="@manually", executor="nats", retries=1, retry_backoff="1s",
                  executor_config=config(nats_server, userName="reader", password="r3ader"))  # fmt: skip
    for name in ("publish", "refused"):
        assert (await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name=name))).ok

    async def published() -> bool:
        return any(m.subject == "jobs.cluster" and m.data == b"from cronbus" for m in received.messages)

    await async_wait_until(published, timeout_s=30, what="the job's message at the subscriber")

    async def retried() -> list[str]:
        records = finished(await executions(store, "refused"))
        return [r.output for r in records] if len(records) >= 2 else []

    outputs = await async_wait_until(retried, timeout_s=30, what="two failed attempts")
    records = finished(await executions(store, "refused"))
    assert [(r.attempt, r.success) for r in records] == [(1, False), (2, False)]
    assert all("permissions violation for publish" in text.lower() for text in outputs), outputs
    (ok,) = finished(await executions(store, "publish"))
    assert ok.success and ok.output == SENT
