"""Stored domain records: Job, JobStatus, Execution, and the members of the cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time, what Dkron shows for "no time"

Concurrency = Literal["allow", "forbid", "replace"]
MisfirePolicy = Literal["run_once", "run_all", "skip"]
TriggerOn = Literal["success", "failure", "always"]
# pending: launch recorded, not yet started on an executor.
ExecutionStatus = Literal["pending", "running", "success", "failed", "killed", "timeout", "missed", "skipped"]
FINISHED_STATUSES: Final[frozenset[ExecutionStatus]] = frozenset(
    {"success", "failed", "killed", "timeout", "missed", "skipped"}
)
# JobStatus.status: how the job's latest run went ("" never run); "running" is derived, never stored.
RunStatus = Literal["", "success", "failed", "partially_failed"]
# JobStatus.status and Execution.status are typed: a stored value outside them makes the record unreadable.
# Job's user-facing fields stay `str`: a Job is decoded from API input before validation fills in defaults
# ("" is "allow"), and its unknown value is the validator's to report, not the decoder's. Code that branches
# on them reads them typed through these.
# The job list's sort fields and status filters (GET /v1/jobs `_sort` and `status`; the CLI's `jobs list`).
JOB_SORT_FIELDS: Final = (
    "name",
    "displayname",
    "schedule",
    "success_count",
    "error_count",
    "last_success",
    "last_error",
    "next",
)
JOB_STATUS_FILTERS: Final = ("success", "failed", "partially_failed", "running", "untriggered")
_CONCURRENCY: Final[dict[str, Concurrency]] = {"allow": "allow", "forbid": "forbid", "replace": "replace"}
_TRIGGER_ON: Final[dict[str, TriggerOn]] = {"success": "success", "failure": "failure", "always": "always"}


def utc(value: datetime) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)


class Job(msgspec.Struct, kw_only=True):
    """A job as the Dkron v1 API shows it (field order as Dkron writes it), then the cronbus extensions.

    The same Struct is stored in Consul as the job definition, with the read-only fields
    (counters, status, next, dependent_jobs) cleared: those live in JobStatus.
    """

    id: str = ""
    name: str = ""
    displayname: str = ""
    timezone: str = ""
    schedule: str = ""
    owner: str = ""
    owner_email: str = ""
    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    disabled: bool = False
    tags: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    retries: int = 0
    dependent_jobs: list[str] | None = None
    parent_job: str = ""
    processors: dict[str, dict[str, str]] | None = None
    concurrency: str = "allow"
    executor: str = ""
    executor_config: dict[str, str] | None = None
    status: str = ""
    next: datetime = ZERO_TIME
    ephemeral: bool = False
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    # cronbus extensions
    misfire_policy: str = "run_once"
    catchup_window: str = "1h"
    trigger_on: str = "success"
    timeout: str = ""
    retry_backoff: str = "5s"
    created_at: datetime | None = None  # phase anchor of "@every" schedules; set once, at creation
    disable_after_failures: int = 0  # the job disables itself after this many failed runs in a row (0: never)
    problem: str = ""  # read-only: why the stored definition cannot be scheduled or run ("" when it can)
    disabled_reason: str = ""  # read-only: why the leader disabled the job (disable_after_failures), while disabled


class JobStatus(msgspec.Struct, kw_only=True):
    """The scheduler's bookkeeping for one job, kept apart from the definition so edits never race it."""

    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    status: RunStatus = ""  # how its latest finished run went; "running" is derived, never stored
    running: list[str] = []  # execution ids currently pending or running
    started: list[str] = []  # those of `running` whose process has been reported started (running now)
    last_slot: datetime | None = None  # latest scheduled slot the leader has accounted for
    problem: str = ""  # why the stored definition cannot be scheduled, when it cannot
    failed_in_a_row: int = 0  # runs that failed since the last success (or since disable_after_failures acted)
    disabled_reason: str = ""  # why the leader disabled the job; cleared by its next finished run


class Execution(msgspec.Struct, kw_only=True):
    """One attempt of one run on one executor, as the Dkron API shows it, plus the cronbus extensions."""

    id: str
    job_name: str
    started_at: datetime = ZERO_TIME
    finished_at: datetime = ZERO_TIME
    success: bool = False
    output: str = ""
    node_name: str = ""
    group: int = 0
    attempt: int = 1
    output_truncated: bool = False
    scheduled_at: datetime = ZERO_TIME
    status: ExecutionStatus = "pending"
    exit_code: int | None = None
    reason: str = ""
    term: int = 0  # leadership term that launched it (fencing)
    manual: bool = False
    due_at: datetime = ZERO_TIME  # a retry waits for its backoff: not dispatched before this instant


def with_running(status: JobStatus, running: list[str]) -> JobStatus:
    """`status` with `running` as its runs under way; `started` keeps only those still among them."""
    return msgspec.structs.replace(status, running=running, started=[i for i in status.started if i in running])


def process_running(status: JobStatus) -> bool:
    """Whether a process of the job runs now: a run reported started and not finished. A run sent ahead of its slot,
    or waiting out a retry's backoff, is under way (`running`) but not started (docs/migrating-from-dkron.md §5)."""
    return any(i in status.running for i in status.started)


def concurrency_of(job: Job) -> Concurrency:
    """The job's concurrency policy; a validated job has one of the three (anything else acts as "allow")."""
    return _CONCURRENCY.get(job.concurrency, "allow")


def trigger_of(job: Job) -> TriggerOn:
    """When the job runs after its parent: a validated job has one of the three ("" is "success"; any other value
    acts as "failure", as the comparison with "success" always did)."""
    return _TRIGGER_ON.get(job.trigger_on or "success", "failure")


def execution_id(job_name: str, scheduled_at: datetime, attempt: int, node: str = "") -> str:
    """Deterministic id of an execution: the same slot and attempt always give the same id, so a launch
    replayed by a new leader is recognised instead of run twice. `node` tells apart the executions of a
    run that goes to several executors."""
    stamp = utc(scheduled_at).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{job_name}.{stamp}.{attempt}" + (f".{node}" if node else "")


def execution_group(scheduled_at: datetime) -> int:
    """Dkron's `group`: shared by every node's execution of one trigger and by its retries."""
    return int(utc(scheduled_at).timestamp() * 1_000_000)


class Member(msgspec.Struct, rename={"status_text": "statusText"}):
    """A process of the cluster as Dkron's /v1/members shows it (capitalised keys on purpose)."""

    Name: str
    Addr: str
    Port: int
    Tags: dict[str, str]
    Status: int
    status_text: str
    id: str


class LeaderInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Value of the leader key: who leads, in which term, and where its bus sockets are."""

    name: str
    term: int = 0
    router: str  # tcp://host:port of the ROUTER (executors and gateways connect DEALERs)
    publisher: str  # tcp://host:port of the PUB (executors SUB to their tag topics)
    elected_at: datetime = ZERO_TIME
    # The leader's public bus key (z85; empty on a bus without keys): which scheduler key a connection to it pins.
    # Only a hint among the keys the reader trusts (docs/production.md, "Bus keys per role"), never trusted itself.
    curve_key: str = ""


class DayStats(msgspec.Struct, kw_only=True):
    """Executions that ran and finished on one day (UTC): Dkron's GET /v1/stats counts, one shard of them."""

    success_count: Annotated[int, msgspec.Meta(ge=0)] = 0
    failed_count: Annotated[int, msgspec.Meta(ge=0)] = 0


class TermRecord(msgspec.Struct):
    """Value of the term key: the last leadership term handed out."""

    term: Annotated[int, msgspec.Meta(ge=0)] = 0


MAX_PAUSE_NOTE: Final = 1000
MAX_PAUSE_BY: Final = 200


class PauseState(msgspec.Struct, kw_only=True):
    """Whether new job submissions are paused, and the note left by whoever paused them (shown to everyone until
    resumed). Every field has a default, so a value stored before the note existed (`{"paused": true}`) decodes."""

    paused: bool = False
    note: Annotated[str, msgspec.Meta(max_length=MAX_PAUSE_NOTE)] = ""  # why
    paused_by: Annotated[str, msgspec.Meta(max_length=MAX_PAUSE_BY)] = ""  # who, as they gave it
    paused_at: datetime | None = None  # when (UTC), set by the gateway that paused
