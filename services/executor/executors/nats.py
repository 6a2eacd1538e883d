"""The nats executor: publishes one message to a NATS subject, as Dkron's nats plugin (docs/executors.md)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from cronbus.common.executor_config import DEFAULT_PUBLISH_TIMEOUT_S, NatsConfig, parse_nats_config
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

SENT = "Result: Message successfully sent\n"  # Dkron's output, which scripts may look for


@register
class NatsExecutor(ClientExecutor[NatsConfig]):
    """Connects (with `userName`/`password` when set), publishes `message` to `subject` and flushes.

    Unlike Dkron, which ignores what the publish returns, an error the server reports for the publish (a
    permissions violation, say) fails the run: the flush waits for the server's answer to a ping sent after
    the message, and the server answers in order.
    """

    name = "nats"
    modules = ("nats",)
    packages = "nats-py"

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_nats_config(config)

    def parse(self, config: dict[str, str]) -> NatsConfig:
        return parse_nats_config(config)

    def timeout_s(self, config: NatsConfig) -> float:
        return DEFAULT_PUBLISH_TIMEOUT_S

    async def call(self, config: NatsConfig, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
        return await _publish(config, timeout_s, request, output)


async def _publish(config: NatsConfig, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
    from nats.aio.client import Client  # noqa: PLC0415 - lazy, and found by run() already
    from nats.errors import Error as NatsError  # noqa: PLC0415

    reported: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        reported.append(exc)

    connection = Client()
    try:
        await connection.connect(
            servers=config.servers,
            user=config.user or None,
            password=config.password or None,
            name=f"cronbus {request.job_name}",
            connect_timeout=max(1, math.ceil(timeout_s)),
            allow_reconnect=False,
            # Each server of the list is tried twice, then the run fails (the client's own loop would go on).
            max_reconnect_attempts=1,
            reconnect_time_wait=1,
            error_cb=on_error,
        )
    except (TimeoutError, NatsError, OSError) as exc:
        await connection.close()  # a refused login leaves the socket open otherwise
        first = reported[0] if reported else exc
        return fail(output, f"cannot connect to NATS at {', '.join(config.servers)}: {_describe(first)}")
    reported.clear()  # servers of the list that could not be reached on the way: only the publish counts now
    try:
        if config.debug:  # Dkron logs its whole config; the output says where the message goes, without secrets
            url = connection.connected_url
            where = f"{url.scheme}://{url.hostname}:{url.port}" if url else "?"
            output.write(f"connected to {where}\n".encode())
        await connection.publish(config.subject, config.message)
        # nats-py writes a flush's PING straight to the socket, ahead of a message still waiting for the client's
        # flusher task, so one round trip may end before the server has seen the message. By the end of the first
        # the message is written; the server answers the second PING after it has answered the message.
        for _ in range(2):
            await connection.flush(timeout=max(1, int(timeout_s)))
    except (TimeoutError, NatsError, OSError) as exc:
        return fail(output, f"publish to {config.subject!r} failed: {_describe(exc)}")
    finally:
        await connection.close()
    if reported:
        return fail(output, f"publish to {config.subject!r} failed: {_describe(reported[0])}")
    logger.debug("published job=%s exec=%s subject=%s bytes=%d", request.job_name, request.execution_id,
                 config.subject, len(config.message))  # fmt: skip
    output.write(SENT.encode())
    return RunResult("success", None)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
