"""Stored domain records: Job, JobStatus, Execution, and the members of the cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time, what Dkron shows for "no time"

Concurrency = Literal["allow", "forbid", "replace"]
MisfirePolicy = Literal["run_once", "run_all", "skip"]
TriggerOn = Literal["success", "failure", "always"]
# pending: launch recorded, not yet started on an executor.
ExecutionStatus = Literal["pending", "running", "success", "failed", "killed", "timeout", "missed", "skipped"]
FINISHED_STATUSES: Final = frozenset({"success", "failed", "killed", "timeout", "missed", "skipped"})


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


class JobStatus(msgspec.Struct, kw_only=True):
    """The scheduler's bookkeeping for one job, kept apart from the definition so edits never race it."""

    success_count: int = 0
    error_count: int = 0
    last_success: datetime | None = None
    last_error: datetime | None = None
    status: str = ""  # success | failed | partially_failed | "" (never run); "running" is derived
    running: list[str] = []  # execution ids currently pending or running
    last_slot: datetime | None = None  # latest scheduled slot the leader has accounted for
    problem: str = ""  # why the stored definition cannot be scheduled, when it cannot


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
    status: str = "pending"
    exit_code: int | None = None
    reason: str = ""
    term: int = 0  # leadership term that launched it (fencing)
    manual: bool = False
    due_at: datetime = ZERO_TIME  # a retry waits for its backoff: not dispatched before this instant


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


class PauseState(msgspec.Struct):
    paused: bool = False
