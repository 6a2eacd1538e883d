"""What every job executor shares: run request and result types, the Executor contract, the registry."""

from __future__ import annotations

import importlib
import math
import re
from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import msgspec

from cronbus.common.errors import ValidationError

if TYPE_CHECKING:
    import asyncio

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
        """Raises ValidationError naming the first invalid key of `executor_config`.

        Checks only what can be checked anywhere (the gateway calls it when a job is written): syntax, not
        whether a user, file or host exists on an executor.
        """

    @abstractmethod
    async def run(self, request: RunRequest, output: OutputBuffer, kill: asyncio.Event) -> RunResult:
        """Runs the execution to its end and returns how it ended; output goes to `output` as it comes.

        Never raises for a problem of the job (invalid config, missing command, bad URL, unknown user):
        that is a "failed" result whose reason is also written to `output`. Setting `kill` stops the
        execution ("killed"). If the calling task is cancelled, everything the run started is stopped
        before CancelledError propagates. The caller owns `output` and flushes or closes it after the run.
        """


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
    """Raises ValidationError if `executor` is unknown or `config` is invalid for it."""
    _executor_class(executor).validate_config(config)


def _executor_class(name: str) -> type[Executor]:
    try:
        return EXECUTORS[name]
    except KeyError:
        known = ", ".join(sorted(EXECUTORS))
        raise ValidationError(f"unknown executor {name!r} (known: {known})") from None


def fail(output: OutputBuffer, reason: str, exit_code: int | None = None) -> RunResult:
    """A "failed" result whose reason is also written to the output, where the user looks first."""
    notice(output, reason)
    return RunResult("failed", exit_code, reason)


def notice(output: OutputBuffer, message: str) -> None:
    """Writes a line from cronbus itself (not the job) to the output, on a line of its own."""
    prefix = "" if output.at_line_start else "\n"
    output.write(f"{prefix}[cronbus] {message}\n".encode())


def parse_bool(key: str, value: str) -> bool:
    """Parses a boolean the way Go's strconv.ParseBool does (Dkron configs use it); empty is False."""
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("", "0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValidationError(f"{key}: {value!r} is not a boolean (use true or false)")


_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS_S = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration_s(key: str, value: str) -> float:
    """Parses a positive Go duration ("1m30s", "500ms") or plain seconds ("30", "2.5") into seconds."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        seconds = _parse_go_duration(text)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValidationError(f"{key}: {value!r} is not a positive duration (e.g. 30s, 1m30s or 30)")
    return seconds


def _parse_go_duration(text: str) -> float:
    pos, seconds = 0, 0.0
    while pos < len(text):
        match = _GO_DURATION_PART.match(text, pos)
        if match is None:
            return math.nan
        seconds += float(match[1]) * _GO_DURATION_UNITS_S[match[2]]
        pos = match.end()
    return seconds if text else math.nan


def format_seconds(seconds: float) -> str:
    """Renders a duration for a reason: 5 -> "5s", 0.5 -> "0.5s"."""
    return f"{seconds:g}s"


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
for _module in ("http", "noop", "shell"):
    importlib.import_module(f"{__package__}.{_module}")
