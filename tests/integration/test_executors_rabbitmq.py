"""The rabbitmq executor against a real RabbitMQ node (Debian's rabbitmq-server), one node for the module."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from cronbus.common.consul.agent import free_port
from cronbus.services.executor.executors.base import RunRequest, RunResult
from cronbus.services.executor.executors.rabbitmq import RabbitmqExecutor
from cronbus.services.executor.output import OutputBuffer
from tests.helpers import async_wait_until
from tests.servers import RabbitNode


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    node = RabbitNode(tmp_path_factory.mktemp("rabbit")).start()
    print(f"rabbitmq-server started in {node.started_in_s:.2f}s")
    yield node
    node.stop()


@pytest.fixture
async def channel(rabbit: RabbitNode) -> AsyncIterator[AbstractChannel]:
    """A channel of the test's own, to set up queues and exchanges and to read what was published."""
    connection = await aio_pika.connect(rabbit.url())
    async with connection:
        yield await connection.channel()


@pytest.fixture
def queue_name() -> str:
    return f"jobs-{uuid.uuid4().hex[:8]}"


async def run(config: dict[str, str], timeout_s: float | None = None) -> tuple[RunResult, str]:
    request = RunRequest(
        execution_id="publish-1-1",
        job_name="publish",
        scheduled_at=datetime(2026, 1, 1, tzinfo=UTC),
        attempt=1,
        executor="rabbitmq",
        config=config,
        timeout_s=timeout_s,
    )
    output = OutputBuffer()
    result = await RabbitmqExecutor().run(request, output, asyncio.Event())
    return result, output.text()


async def take(channel: AbstractChannel, queue_name: str) -> AbstractIncomingMessage:
    queue = await channel.get_queue(queue_name)

    async def got() -> AbstractIncomingMessage | None:
        return await queue.get(fail=False, no_ack=True)

    message = await async_wait_until(got, timeout_s=10, what=f"a message in {queue_name}")
    assert message is not None
    return message


async def test_a_declared_queue_gets_the_message_with_its_properties(
    rabbit: RabbitNode, channel: AbstractChannel, queue_name: str
) -> None:
    config = {
        "url": rabbit.url(),
        "queue.name": queue_name,
        "queue.create": "true",
        "queue.durable": "true",
        "queue.auto_delete": "false",
        "queue.exclusive": "false",
        "message.content_type": "application/json",
        "message.delivery_mode": "2",
        "message.messageId": "4373732772",
        "message.body": '{"key":"value"}',
    }
    result, output = await run(config)
    assert result == RunResult("success", None), output
    assert output == (f"Result: message published to exchange '' with routing key '{queue_name}' and confirmed by "
                      f"amqp://127.0.0.1:{rabbit.port}\n")  # fmt: skip
    assert "guest" not in output  # the URL's credentials stay out
    message = await take(channel, queue_name)
    assert message.body == b'{"key":"value"}'
    assert (message.content_type, message.delivery_mode, message.message_id) == (
        "application/json",
        aio_pika.DeliveryMode.PERSISTENT,
        "4373732772",
    )
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):  # it was declared durable
        await channel.declare_queue(queue_name, durable=False)


async def test_dkrons_example_exchange_amq_default_is_refused_by_the_broker_with_a_hint(
    rabbit: RabbitNode, channel: AbstractChannel, queue_name: str
) -> None:
    """RabbitMQ has no exchange of that name to publish to: Dkron's run "succeeds" and the message is lost."""
    await channel.declare_queue(queue_name, auto_delete=True)
    config = {"url": rabbit.url(), "exchange": "amq.default", "queue.name": queue_name, "message.body": "hi"}
    result, _ = await run(config)
    assert result.status == "failed"
    assert "NOT_FOUND - no exchange 'amq.default' in vhost '/'" in result.reason
    assert result.reason.endswith("(the default exchange is the empty name: leave exchange unset)")


async def test_a_base64_body_to_an_exchange_bound_to_the_queue(
    rabbit: RabbitNode, channel: AbstractChannel, queue_name: str
) -> None:
    exchange = await channel.declare_exchange(f"x-{queue_name}", aio_pika.ExchangeType.DIRECT, auto_delete=True)
    queue = await channel.declare_queue(queue_name, auto_delete=True)
    await queue.bind(exchange, routing_key=queue_name)
    body = bytes(range(256))
    config = {
        "url": rabbit.url(),
        "exchange": exchange.name,
        "queue.name": queue_name,
        "message.base64Body": base64.b64encode(body).decode(),
    }
    result, output = await run(config)
    assert result == RunResult("success", None), output
    message = await take(channel, queue_name)
    assert message.body == body
    assert message.content_type == "text/plain"  # Dkron's default
    assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT


async def test_an_unroutable_message_fails_with_the_brokers_reason(rabbit: RabbitNode, queue_name: str) -> None:
    """Dkron publishes without `mandatory`, so a message no queue takes is dropped silently; here the run fails."""
    result, output = await run({"url": rabbit.url(), "queue.name": queue_name, "message.body": "lost?"})
    assert result.status == "failed"
    assert result.reason == (
        f"publish to exchange '' with routing key '{queue_name}': the broker returned the message (312 NO_ROUTE)"
    )
    assert output == f"[cronbus] {result.reason}\n"


async def test_an_unknown_exchange_fails_with_the_brokers_reason(rabbit: RabbitNode, queue_name: str) -> None:
    result, _ = await run({"url": rabbit.url(), "exchange": "no-such-exchange", "queue.name": queue_name})
    assert result.status == "failed"
    assert result.reason.startswith(f"publish to exchange 'no-such-exchange' with routing key '{queue_name}' failed")
    assert "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'" in result.reason


async def test_a_queue_declared_otherwise_fails_with_the_brokers_reason(
    rabbit: RabbitNode, channel: AbstractChannel, queue_name: str
) -> None:
    await channel.declare_queue(queue_name, durable=False, auto_delete=True)
    config = {"url": rabbit.url(), "queue.name": queue_name, "queue.create": "true", "queue.durable": "true"}
    result, _ = await run(config)
    assert result.status == "failed"
    assert result.reason.startswith(f"declare queue '{queue_name}' failed: ")
    assert "PRECONDITION_FAILED - inequivalent arg 'durable'" in result.reason


async def test_bad_credentials_fail_with_the_brokers_reason(rabbit: RabbitNode, queue_name: str) -> None:
    result, output = await run({"url": rabbit.url(password="wrong"), "queue.name": queue_name})
    assert result.status == "failed"
    assert result.reason.startswith(f"cannot connect to RabbitMQ at amqp://127.0.0.1:{rabbit.port}: ")
    assert "ACCESS_REFUSED" in result.reason
    assert "wrong" not in output


async def test_a_broker_that_is_down_fails_the_run(queue_name: str) -> None:
    port = free_port()
    result, _ = await run({"url": f"amqp://guest:guest@127.0.0.1:{port}/", "queue.name": queue_name})
    assert result.status == "failed"
    assert result.reason.startswith(f"cannot connect to RabbitMQ at amqp://127.0.0.1:{port}: ")
