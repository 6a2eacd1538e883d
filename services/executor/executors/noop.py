"""The noop executor: ends at once, optionally printing `output` or failing (for tests and dry runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import parse_bool
from cronbus.services.executor.executors.base import (
    Executor,
    RunRequest,
    RunResult,
    fail,
    register,
)

if TYPE_CHECKING:
    import asyncio

    from cronbus.services.executor.output import OutputBuffer


@register
class NoopExecutor(Executor):
    """Writes config `output` (if any) and succeeds, or fails when config `fail` is true."""

    name = "noop"

    @staticmethod
    def validate_config(config: dict[str, str]) -> None:
        parse_bool("fail", config.get("fail", ""))

    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        output.write(request.config.get("output", "").encode())
        try:
            failing = parse_bool("fail", request.config.get("fail", ""))
        except ValidationError as exc:
            return fail(output, str(exc))
        return fail(output, "failed as configured (fail=true)") if failing else RunResult("success", None)
