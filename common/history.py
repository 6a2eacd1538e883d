"""The history store: where execution records live (Consul, or PostgreSQL for volume), one interface for both.

The contract is in the docstrings of HistoryStore; tests/contract/test_history_store.py runs the same suite
against every implementation (docs/storage.md, "History store").
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from cronbus.common.errors import SettingsError, UnavailableError
from cronbus.common.models import FINISHED_STATUSES, ZERO_TIME, Execution, ExecutionStatus
from cronbus.common.settings import redact_dsn

if TYPE_CHECKING:
    from cronbus.common.consul.store import Store

HistorySort = Literal["default", "started_at", "finished_at", "attempt"]
HISTORY_SORTS: Final[tuple[HistorySort, ...]] = ("default", "started_at", "finished_at", "attempt")
# A run that ended in failure: what the UI lists as failed (missed and skipped runs never ran).
FAILED_STATUSES: Final[frozenset[ExecutionStatus]] = frozenset({"failed", "timeout", "killed"})
CONSUL: Final = "consul"


class HistoryStoreError(UnavailableError):
    """The history store cannot answer now (its server is down or refused the call): the message names the store
    and why. An UnavailableError, so the API answers 503 and a caller may try again later."""


@dataclass(frozen=True)
class ExecutionFilter:
    """Which records a search across jobs finds: each field that is set narrows it, an empty filter finds all."""

    statuses: frozenset[ExecutionStatus] = frozenset()
    job_name: str = ""
    node: str = ""  # the executor that ran it (Execution.node_name)
    since: datetime | None = None  # `when` at or after
    until: datetime | None = None  # `when` before
    text: str = ""  # in the output, ignoring case

    def matches(self, record: Execution) -> bool:
        return (
            (not self.statuses or record.status in self.statuses)
            and (not self.job_name or record.job_name == self.job_name)
            and (not self.node or record.node_name == self.node)
            and (self.since is None or when(record) >= self.since)
            and (self.until is None or when(record) < self.until)
            and (not self.text or self.text.lower() in record.output.lower())
        )


@dataclass(frozen=True)
class ExecutionPage:
    """One page of records, and how many the job has (or the search finds) in all (the API's X-Total-Count)."""

    records: list[Execution]
    total: int


def when(record: Execution) -> datetime:
    """The instant a record is listed by: when it started, or its slot while it has not started (pending)."""
    return record.started_at if record.started_at != ZERO_TIME else record.scheduled_at


def newest_first_key(record: Execution) -> tuple[datetime, str]:
    return when(record), record.id


def sort_records(records: list[Execution], sort: HistorySort, descending: bool) -> list[Execution]:
    """The order every store lists in: by `sort` (default: when), ties broken by id, both the same direction."""
    if sort == "default":
        return sorted(records, key=newest_first_key, reverse=descending)
    return sorted(records, key=lambda e: (getattr(e, sort), e.id), reverse=descending)


def finished(record: Execution) -> bool:
    return record.status in FINISHED_STATUSES


class HistoryStore(abc.ABC):
    """Execution records of every job. Records are keyed by (job_name, id); ids are unique within a job.

    Every method raises HistoryStoreError (or, for the Consul store, ConsulError: both UnavailableError) when the
    store cannot answer; a call that raised may or may not have applied, and repeating it is safe (every write is
    idempotent). A store recovers by itself once its server is back: no restart, no reopening.
    """

    name: str  # "consul" or "postgresql", for logs and /health

    @abc.abstractmethod
    async def put(self, records: Sequence[Execution]) -> None:
        """Writes the records, replacing any stored under the same (job_name, id): putting a record twice stores it
        once. The Consul store commits in transactions of 64 records (each atomic); the PostgreSQL store commits
        the whole batch in one transaction. When two records of one batch share a key, the later one wins."""

    async def page(
        self,
        job_name: str,
        *,
        offset: int = 0,
        limit: int | None = None,
        sort: HistorySort = "default",
        descending: bool = True,
    ) -> ExecutionPage:
        """The job's records ordered by `sort` (default: `when`, newest first), ties broken by id in the same
        direction; `offset` records skipped, at most `limit` (None: all). `total` counts all the job's records.
        A record that does not decode is left out and reported (the Consul store's unreadable records)."""
        return await self.search(
            ExecutionFilter(job_name=job_name), offset=offset, limit=limit, sort=sort, descending=descending
        )

    @abc.abstractmethod
    async def get(self, job_name: str, execution_id: str) -> Execution:
        """The record. NotFoundError when the job has none of that id; CorruptRecordError when it does not
        decode."""

    @abc.abstractmethod
    async def stored_ids(self, job_name: str, ids: Collection[str]) -> set[str]:
        """Which of `ids` the job has records of."""

    @abc.abstractmethod
    async def delete_job(self, job_name: str) -> None:
        """Deletes every record of the job, and only of that job (deleting 'backup' keeps 'backup-db's)."""

    @abc.abstractmethod
    async def trim_to_count(self, keep: int, job_name: str | None = None, *, protect: Collection[str] = ()) -> int:
        """Deletes the job's finished records beyond its `keep` newest (in the default order); None: every job's.
        Records not finished and ids in `protect` are never deleted, nor counted among the kept. Deletes in
        small batches (no long lock); returns how many were deleted."""

    @abc.abstractmethod
    async def trim_older_than(self, cutoff: datetime, *, protect: Collection[str] = ()) -> int:
        """Deletes every job's finished records whose `when` is before `cutoff`, in small batches; records not
        finished and ids in `protect` are kept. Returns how many were deleted."""

    @abc.abstractmethod
    async def count(self, job_name: str | None = None) -> int:
        """How many records the job has (None: all jobs), unreadable ones included."""

    @abc.abstractmethod
    async def search(
        self,
        where: ExecutionFilter,
        *,
        offset: int = 0,
        limit: int | None = None,
        sort: HistorySort = "default",
        descending: bool = True,
    ) -> ExecutionPage:
        """The records of every job that `where` matches, in the order of `page`, `offset` skipped, at most
        `limit`; `total` counts every match. The Consul store reads every job's records (or the one job's) for
        it; the PostgreSQL store filters in the database."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Releases connections; the store is not used after."""


def check_history_store(value: str, *, setting: str = "--history-store") -> str:
    """The setting as given when it names a store cronbus has ('consul', or a postgresql:// or postgres:// DSN
    that parses); SettingsError naming the setting otherwise. Nothing is contacted."""
    if value == CONSUL:
        return value
    if value.startswith(("postgresql://", "postgres://")):
        from cronbus.common.postgresql import check_dsn  # noqa: PLC0415 - the stores import this module

        check_dsn(value, setting=setting)
        return value
    raise SettingsError(f"{setting} {redact_dsn(value)!r}: expected 'consul' or a postgresql://… DSN")


def open_history_store(value: str, consul_store: Store) -> HistoryStore:
    """The store the (checked) setting names; the Consul one shares `consul_store` and its client. Contacts
    nothing: a PostgreSQL store connects, and makes its table, on first use."""
    if value == CONSUL:
        from cronbus.common.consul.history import ConsulHistoryStore  # noqa: PLC0415 - it imports this module

        return ConsulHistoryStore(consul_store)
    from cronbus.common.postgresql import PostgresHistoryStore  # noqa: PLC0415 - it imports this module

    return PostgresHistoryStore(value)
