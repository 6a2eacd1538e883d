"""Job validation and normalisation before a write, with Dkron's messages; parent and cycle checks as pure helpers."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from cronbus.common.errors import NotFoundError, ScheduleError, ValidationError
from cronbus.common.executor_config import EXECUTORS, unknown_executor, validate_executor_config
from cronbus.common.models import ZERO_TIME, Job, utc
from cronbus.common.schedule import parse_duration, parse_schedule

MAX_NAME_CHARS: Final = 200
MAX_FAILURES_IN_A_ROW: Final = 1000
CONCURRENCY: Final = ("allow", "forbid", "replace")
MISFIRE_POLICIES: Final = ("run_once", "run_all", "skip")
TRIGGER_ON: Final = ("success", "failure", "always")
PROCESSORS: Final = ("files", "fluent", "log", "syslog")
PARENT_NOT_FOUND: Final = "specified parent job not found"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

# Defaults of the extension fields, applied when a client sends them empty.
_EXT_DEFAULTS: Final = {
    "misfire_policy": "run_once",
    "catchup_window": "1h",
    "trigger_on": "success",
    "retry_backoff": "5s",
}


def _fail(reason: str) -> ValidationError:
    # Dkron's wording: the API answers exactly this text with a 400.
    return ValidationError(f"Job validation failed: {reason}.")


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def illegal_name_character(name: str) -> str | None:
    """The first character Dkron's name rule rejects (Unicode lower-case letter, ASCII digit, '_', '-'), if any."""
    for ch in name:
        if not (("0" <= ch <= "9") or ch in "_-" or unicodedata.category(ch) == "Ll"):
            return ch
    return None


def validate_name(name: str) -> None:
    if not name:
        raise _fail("name cannot be empty")
    bad = illegal_name_character(name)
    if bad is not None:
        raise _fail(f"name contains illegal character '{bad}'")
    if len(name) > MAX_NAME_CHARS:
        raise _fail(f"name is longer than {MAX_NAME_CHARS} characters")


def _check_timezone(zone: str) -> None:
    if not zone:
        return
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _fail(f"invalid timezone '{zone}': unknown time zone") from None


def _check_duration(field: str, value: str, *, positive: bool) -> None:
    try:
        duration = parse_duration(value)
    except ValidationError as exc:
        raise _fail(f"invalid {field} '{value}': {exc}") from None
    if duration < timedelta(0) or (positive and duration == timedelta(0)):
        raise _fail(f"invalid {field} '{value}': must be {'more than' if positive else 'at least'} 0")


def validate_job(job: Job, *, existing: Job | None, now: datetime) -> Job:
    """The job to store: checked, and normalised (id = name, created_at kept from `existing` or `now`,
    empty policies replaced by their defaults, naive datetimes taken as UTC).

    Raises ValidationError with a message like ``Job validation failed: name contains illegal character ' '.``
    Whether the parent exists and whether the chain has a cycle need the store: see check_parent.
    """
    validate_name(job.name)
    if job.parent_job and job.parent_job == job.name:
        raise _fail("the job can not have itself as parent")
    _check_timezone(job.timezone)
    created_at = existing.created_at if existing is not None and existing.created_at is not None else now
    created_at = utc(created_at)
    _check_schedule(job, created_at)
    concurrency = job.concurrency or "allow"
    if concurrency not in CONCURRENCY:
        raise _fail(f"invalid concurrency policy value, use {_quoted(CONCURRENCY)}")
    _check_executor(job)
    if job.retries < 0:
        raise _fail("retries must be 0 or more")
    if not 0 <= job.disable_after_failures <= MAX_FAILURES_IN_A_ROW:
        raise _fail(f"disable_after_failures must be from 0 (never) to {MAX_FAILURES_IN_A_ROW}")
    ext = _extensions(job)
    starts_at = utc(job.starts_at) if job.starts_at is not None else None
    expires_at = utc(job.expires_at) if job.expires_at is not None else None
    if starts_at is not None and expires_at is not None and starts_at >= expires_at:
        raise _fail("starts_at must be before expires_at")
    _check_processors(job)
    for key in job.tags or {}:
        if not key.strip():
            raise _fail("tags cannot have an empty key")
    return msgspec.structs.replace(
        job,
        id=job.name,
        concurrency=concurrency,
        starts_at=starts_at,
        expires_at=expires_at,
        created_at=created_at,
        next=ZERO_TIME,  # read-only: computed from the schedule when the job is shown
        **ext,
    )


def _check_schedule(job: Job, created_at: datetime) -> None:
    if job.schedule.strip() or not job.parent_job:
        if not job.schedule.strip():
            raise _fail("can't parse job schedule: the schedule is empty (only a job with parent_job may have none)")
        try:
            parse_schedule(job.schedule, job.timezone, job_name=job.name, anchor=created_at)
        except ScheduleError as exc:
            raise _fail(f"can't parse job schedule: {exc}") from None


def _check_executor(job: Job) -> None:
    if not job.executor:
        raise _fail("executor cannot be empty (use shell, http or noop)")
    if job.executor not in EXECUTORS:
        raise _fail(unknown_executor(job.executor))
    try:
        validate_executor_config(job.executor, job.executor_config or {})
    except ValidationError as exc:
        raise _fail(f"invalid executor_config for the {job.executor} executor: {exc}") from None


def _extensions(job: Job) -> dict[str, str]:
    """The cronbus extension fields, checked, empty ones replaced by their defaults; and the timeout checked."""
    ext = {field: getattr(job, field) or default for field, default in _EXT_DEFAULTS.items()}
    if ext["misfire_policy"] not in MISFIRE_POLICIES:
        raise _fail(f"invalid misfire_policy value, use {_quoted(MISFIRE_POLICIES)}")
    if ext["trigger_on"] not in TRIGGER_ON:
        raise _fail(f"invalid trigger_on value, use {_quoted(TRIGGER_ON)}")
    _check_duration("catchup_window", ext["catchup_window"], positive=False)
    _check_duration("retry_backoff", ext["retry_backoff"], positive=True)
    if job.timeout:
        _check_duration("timeout", job.timeout, positive=True)
    return ext


def _check_processors(job: Job) -> None:
    for processor, settings in (job.processors or {}).items():
        if processor not in PROCESSORS:
            raise _fail(f"unknown processor '{processor}' (known: {', '.join(PROCESSORS)})")
        if not isinstance(settings, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
        ):
            raise _fail(f"processor '{processor}' settings must map strings to strings")


def definition_problem(job: Job) -> str:
    """Why a stored definition (read from Consul, perhaps edited there by hand) cannot be scheduled as it is,
    or "" when it can: the same checks as a write through the API, so nothing runs on guessed values."""
    try:
        validate_job(job, existing=job, now=job.created_at or _EPOCH)
    except ValidationError as exc:
        return str(exc)
    return ""


def check_parent(name: str, parent: str, lookup: Callable[[str], Job | None]) -> None:
    """Raises NotFoundError when `parent` does not exist, ValidationError when making `name` its child
    would close a cycle. `lookup` answers a stored job by name (None when unknown)."""
    if not parent:
        return
    if lookup(parent) is None:
        raise NotFoundError(PARENT_NOT_FOUND)
    cycle = find_cycle(name, parent, lookup)
    if cycle:
        raise _fail(f"parent_job would create a cycle: {' -> '.join(cycle)}")


def find_cycle(name: str, parent: str, lookup: Callable[[str], Job | None]) -> list[str]:
    """The chain name -> parent -> ... -> name if setting name's parent closes a loop, else []."""
    chain = [name]
    seen = {name}
    current = parent
    while current:
        chain.append(current)
        if current == name:
            return chain
        if current in seen:
            return []  # a loop that does not pass through `name` is not this write's doing
        seen.add(current)
        job = lookup(current)
        current = job.parent_job if job is not None else ""
    return []


def order_parents_first(jobs: list[Job]) -> list[Job]:
    """Jobs reordered so that a parent comes before its children (for restore). Jobs whose parent is not in
    the list keep their relative order; jobs in a cycle come last, in their original order."""
    by_name = {job.name: job for job in jobs}
    placed: set[str] = set()
    ordered: list[Job] = []
    pending = list(jobs)
    while pending:
        rest = []
        for job in pending:
            parent = job.parent_job
            if not parent or parent not in by_name or parent in placed or parent == job.name:
                ordered.append(job)
                placed.add(job.name)
            else:
                rest.append(job)
        if len(rest) == len(pending):  # only cycles left
            ordered.extend(rest)
            break
        pending = rest
    return ordered
