"""The rabbitmq executor: publishes one message over AMQP 0-9-1, as Dkron's rabbitmq plugin (docs/executors.md)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cronbus.common.executor_config import DEFAULT_PUBLISH_TIMEOUT_S, RabbitmqConfig, parse_rabbitmq_config
from cronbus.common.settings import redact_url
from cronbus.services.executor.executors.base import (
    ClientExecutor,
    RunRequest,
    RunResult,
    fail,
    register,
)

if TYPE_CHECKING:
    from cronbus.services.executor.output import OutputBuffer

logger = logging.getLogger(__name__)

PERSISTENT = 2


@register
class RabbitmqExecutor(ClientExecutor[RabbitmqConfig]):
    """Connects to `url`, declares `queue.name` when `queue.create` is true, and publishes the message to
    `exchange` ("" is the default exchange) with `queue.name` as the routing key.

    Unlike Dkron, the publish is mandatory and confirmed: the run succeeds only once the broker has taken the
    message (acknowledged it) and routed it to a queue; a message it returns (no queue bound for the key) or
    refuses, or an unknown exchange, fails the run with the broker's reason.
    """

    name = "rabbitmq"
    modules = ("aio_pika",)
    packages = "aio-pika"

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_rabbitmq_config(config)

    def parse(self, config: dict[str, str]) -> RabbitmqConfig:
        return parse_rabbitmq_config(config)

    def timeout_s(self, config: RabbitmqConfig) -> float:
        return DEFAULT_PUBLISH_TIMEOUT_S

    async def call(
        self, config: RabbitmqConfig, timeout_s: float, request: RunRequest, output: OutputBuffer
    ) -> RunResult:
        return await _publish(config, timeout_s, request, output)


async def _publish(config: RabbitmqConfig, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
    import aio_pika  # noqa: PLC0415 - lazy, and found by run() already
    from aio_pika.exceptions import AMQPError, PublishError  # noqa: PLC0415
    from pamqp.commands import Basic  # noqa: PLC0415 - aio-pika's AMQP frames

    where = redact_url(config.url).removesuffix("/…")  # the URL's user:password stays out of the output
    try:
        connection = await aio_pika.connect(
            config.url, timeout=timeout_s, client_properties={"connection_name": f"cronbus {request.job_name}"}
        )
    except (AMQPError, OSError) as exc:
        return fail(output, f"cannot connect to RabbitMQ at {where}: {_describe(exc)}")
    step = "open a channel"
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            if config.create_queue:
                step = f"declare queue {config.queue!r}"
                await channel.declare_queue(
                    config.queue, durable=config.durable, auto_delete=config.auto_delete, exclusive=config.exclusive
                )
            step = f"publish to exchange {config.exchange!r} with routing key {config.queue!r}"
            exchange = (
                await channel.get_exchange(config.exchange, ensure=False)
                if config.exchange
                else channel.default_exchange
            )
            message = aio_pika.Message(
                config.body,
                content_type=config.content_type,
                # aio-pika sends 1 or 2; RabbitMQ makes any mode but 2 transient, as 1 is, so this is the same.
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                if config.delivery_mode == PERSISTENT
                else aio_pika.DeliveryMode.NOT_PERSISTENT,
                message_id=config.message_id or None,
            )
            await exchange.publish(message, routing_key=config.queue, mandatory=True, timeout=timeout_s)
    except PublishError as exc:
        returned = exc.message.delivery if exc.message is not None else None
        why = f"{returned.reply_code} {returned.reply_text}" if isinstance(returned, Basic.Return) else str(exc)
        return fail(output, f"{step}: the broker returned the message ({why})")
    except (AMQPError, OSError) as exc:
        # Dkron's own example names the default exchange so; RabbitMQ has no exchange of that name to publish to.
        hint = ""
        if config.exchange == "amq.default":
            hint = " (the default exchange is the empty name: leave exchange unset)"
        return fail(output, f"{step} failed: {_describe(exc)}{hint}")
    logger.debug("published job=%s exec=%s exchange=%s routing_key=%s bytes=%d", request.job_name,
                 request.execution_id, config.exchange, config.queue, len(config.body))  # fmt: skip
    output.write(f"Result: message published to exchange {config.exchange!r} with routing key {config.queue!r} "
                 f"and confirmed by {where}\n".encode())  # fmt: skip
    return RunResult("success", None)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
