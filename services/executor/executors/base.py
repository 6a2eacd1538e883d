"""What every job executor shares: run request and result types, the Executor contract, the registry."""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import msgspec

from cronbus.common.errors import ValidationError
from cronbus.common.executor_config import unknown_executor

if TYPE_CHECKING:
    from cronbus.services.executor.output import OutputBuffer


RunStatus = Literal["success", "failed", "timeout", "killed"]


class RunRequest(msgspec.Struct, frozen=True):
    """One execution to run on this host."""

    execution_id: str
    job_name: str
    scheduled_at: datetime
    attempt: int
    executor: str
    config: dict[str, str]
    timeout_s: float | None = None  # the job-level timeout; executors also honour their own `timeout`


class RunResult(msgspec.Struct, frozen=True):
    """How an execution ended. `exit_code` is None when there was no process (or no exit)."""

    status: RunStatus
    exit_code: int | None
    reason: str = ""  # short and human, empty on success: "exit code 3", "timed out after 5s", ...


class Executor(ABC):
    """Runs one execution of a job on this host.

    Implementations are stateless between runs; one instance may run many executions concurrently.
    """

    name: ClassVar[str]

    def __init__(self, kill_grace_s: float = 10.0) -> None:
        self.kill_grace_s = kill_grace_s

    @staticmethod
    @abstractmethod
    def validate_config(config: dict[str, str]) -> None:
        """Raises ValidationError naming the first invalid key of `executor_config`, as `run` would read it.

        Checks only syntax, not whether a user, file or host exists on an executor. The parsing itself is in
        common.executor_config, which the gateway checks jobs with; `run` may be stricter (noop's `fail`).
        """

    @abstractmethod
    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        """Runs the execution to its end and returns how it ended; output goes to `output` as it comes.

        Never raises for a problem of the job (invalid config, missing command, bad URL, unknown user):
        that is a "failed" result whose reason is also written to `output`. Setting `kill` stops the
        execution ("killed"). If the calling task is cancelled, everything the run started is stopped
        before CancelledError propagates. The caller owns `output` and flushes or closes it after the run.
        """


C = TypeVar("C")


class ClientExecutor(Executor, Generic[C]):
    """An executor that makes one request through a client library of the `executors` extra (nats, rabbitmq,
    grpc): its config parsed, the client found (a clear failure when it is not installed), then `call` supervised
    (kill, timeout)."""

    modules: ClassVar[tuple[str, ...]]  # imported to find the client, only by a run of this executor
    packages: ClassVar[str]  # what to install, in words, when one is missing

    @abstractmethod
    def parse(self, config: dict[str, str]) -> C:
        """The typed config; raises ValidationError."""

    @abstractmethod
    def timeout_s(self, config: C) -> float:
        """The run's timeout when the job sets none."""

    @abstractmethod
    async def call(self, config: C, timeout_s: float, request: RunRequest, output: OutputBuffer) -> RunResult:
        """The request; cancelled when the run is killed or times out."""

    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        try:
            config = self.parse(request.config)
        except ValidationError as exc:
            return fail(output, str(exc))
        try:
            for module in self.modules:
                importlib.import_module(module)
        except ImportError as exc:
            return client_missing(output, self.name, self.packages, exc)
        timeout_s = effective_timeout_s(self.timeout_s(config), request.timeout_s) or self.timeout_s(config)
        return await supervise(self.call(config, timeout_s, request, output), kill, timeout_s, output)


EXECUTORS: dict[str, type[Executor]] = {}

E = TypeVar("E", bound=type[Executor])


def register(cls: E) -> E:
    """Class decorator adding an executor to EXECUTORS under its `name`."""
    EXECUTORS[cls.name] = cls
    return cls


def get_executor(name: str, *, kill_grace_s: float = 10.0) -> Executor:
    """Returns a new executor; raises ValidationError for an unknown name. kill_grace_s is the time between
    SIGTERM and SIGKILL for executors that run processes."""
    return _executor_class(name)(kill_grace_s=kill_grace_s)


def validate_executor_config(executor: str, config: dict[str, str]) -> None:
    """Raises ValidationError if `executor` is unknown or `config` is invalid for it as this executor runs it."""
    _executor_class(executor).validate_config(config)


def _executor_class(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ValidationError(unknown_executor(name)) from None


def fail(output: OutputBuffer, reason: str, exit_code: int | None = None) -> RunResult:
    """A "failed" result whose reason is also written to the output, where the user looks first."""
    notice(output, reason)
    return RunResult("failed", exit_code, reason)


def notice(output: OutputBuffer, message: str) -> None:
    """Writes a line from cronbus itself (not the job) to the output, on a line of its own."""
    prefix = "" if output.at_line_start else "\n"
    output.write(f"{prefix}[cronbus] {message}\n".encode())


def format_seconds(seconds: float) -> str:
    """Renders a duration for a reason: 5 -> "5s", 0.5 -> "0.5s"."""
    return f"{seconds:g}s"


async def supervise(
    work: Coroutine[Any, Any, RunResult], kill: asyncio.Event, timeout_s: float, output: OutputBuffer
) -> RunResult:
    """Awaits `work` (one request to a server) until it ends, `kill` is set ("killed") or `timeout_s` passes
    ("timeout"); whatever ends it, `work` is cancelled and awaited before this returns."""
    working = asyncio.ensure_future(work)
    killed = asyncio.ensure_future(kill.wait())
    try:
        done, _ = await asyncio.wait({working, killed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        killed.cancel()
        if not working.done():
            working.cancel()
            await asyncio.wait({working})
    if working in done:
        return working.result()
    if killed in done:
        notice(output, "killed")
        return RunResult("killed", None, "killed")
    reason = f"timed out after {format_seconds(timeout_s)}"
    notice(output, reason)
    return RunResult("timeout", None, reason)


def client_missing(output: OutputBuffer, executor: str, package: str, exc: ImportError) -> RunResult:
    """The failed result of a run whose executor's client library is not installed on this host."""
    return fail(
        output,
        f"the {executor} executor needs the Python package {package}, which is not installed on this executor "
        f"({exc}); install cronbus with its executors extra: pip install 'cronbus[executors]'",
    )


def effective_timeout_s(*timeouts_s: float | None) -> float | None:
    """The smallest of the timeouts that are set, or None when none is."""
    positive = [t for t in timeouts_s if t is not None and t > 0]
    return min(positive) if positive else None


def rfc3339(instant: datetime) -> str:
    """Formats an instant as RFC 3339 in UTC with a Z; a naive datetime is taken to be UTC already."""
    utc = instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    return utc.isoformat().replace("+00:00", "Z")


# Each executor module imports this one and registers itself, so they are imported last: whichever module
# is imported first, EXECUTORS holds every built-in executor once that import completes.
for _module in ("grpc", "http", "nats", "noop", "rabbitmq", "shell"):
    importlib.import_module(f"{__package__}.{_module}")
