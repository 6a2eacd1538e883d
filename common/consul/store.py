"""Jobs, job status, executions, pause state and the leader record on Consul KV, as JSON an operator can read."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import msgspec

from cronbus.common.consul import keys
from cronbus.common.consul.client import MAX_TXN_OPS, ConsulClient, KVEntry, TxnError, TxnOp
from cronbus.common.errors import ConflictError, CorruptRecordError, NotFoundError
from cronbus.common.models import ZERO_TIME, DayStats, Execution, Job, JobStatus, LeaderInfo, PauseState
from cronbus.common.validation import definition_problem

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()
_READ_ONLY_RESET = {
    "success_count": 0,
    "error_count": 0,
    "last_success": None,
    "last_error": None,
    "dependent_jobs": None,
    "status": "",
    "problem": "",
    "disabled_reason": "",
}


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def decode(kind: type[T], data: bytes, key: str = "") -> T:
    """The value as `kind`; CorruptRecordError (with `key` and why) when it is not one (edited by hand in the
    Consul UI, a bad restore, half written): the one place stored bytes become the project's types."""
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecordError(key, f"not a valid {kind.__name__}: {exc}") from None


NOT_A_JOB_KEY = "not a job's key (a name holds no '/'): ignored"
MAX_UNREADABLE = 1000  # unreadable keys remembered (for /health and metrics); their count keeps growing


class StoredJob(msgspec.Struct, frozen=True):
    """A job definition as read from KV. `job` is set only when the definition is valid: only such a job is
    scheduled or run. Otherwise `problem` says why; `definition` is what decoded, valid or not (the API shows it
    with its problem, so an operator can see and fix it)."""

    name: str
    modify_index: int
    job: Job | None
    problem: str = ""
    definition: Job | None = None


def stored_job(entry: KVEntry) -> StoredJob:
    """Decodes and validates a stored definition (anything read from storage is untrusted: one bad value costs
    only its own job, never the reader)."""
    name = keys.name_from_key(keys.JOBS, entry.key)
    try:
        job = decode(Job, entry.value, entry.key)
    except CorruptRecordError as exc:
        return StoredJob(name, entry.modify_index, None, f"stored definition is not a valid job: {exc.reason}")
    if job.name != name:
        return StoredJob(name, entry.modify_index, None, f"stored definition names {job.name!r}, not {name!r}")
    _share_values(job, name)
    problem = definition_problem(job)
    if problem:
        return StoredJob(name, entry.modify_index, None, problem, job)
    return StoredJob(name, entry.modify_index, job, "", job)


# Job fields whose values many jobs have alike (a schedule, the executor, the defaults of the policies). msgspec
# decodes every string anew: a process that holds every job (the leader) keeps one copy of each such value instead.
_SHARED_STRINGS: Final = (
    "timezone", "schedule", "owner", "owner_email", "parent_job", "concurrency", "executor",
    "misfire_policy", "catchup_window", "trigger_on", "timeout", "retry_backoff",
)  # fmt: skip


def _share_values(job: Job, name: str) -> None:
    """Replaces the decoded job's values by equal ones shared with other jobs (strings and datetimes are
    immutable: only memory changes): its name and id by `name` (the key's), the strings above by interned ones,
    a zero `next` by ZERO_TIME."""
    job.name = name
    if job.id == name:
        job.id = name
    for field in _SHARED_STRINGS:
        value = getattr(job, field)
        if type(value) is str:
            setattr(job, field, sys.intern(value))
    if job.next == ZERO_TIME and job.next.tzinfo is ZERO_TIME.tzinfo:
        job.next = ZERO_TIME


def definition(job: Job) -> Job:
    """The job as stored: read-only fields cleared (they live in JobStatus), id = name."""
    return msgspec.structs.replace(job, id=job.name, **_READ_ONLY_RESET)


class Store:
    """Typed access to cronbus's KV data. Raises ConsulError when Consul cannot answer."""

    def __init__(self, consul: ConsulClient) -> None:
        self.consul = consul
        # Keys whose value did not decode (job definitions aside: a job's problem says it), with why, the latest
        # MAX_UNREADABLE; and how many were met in all. Each is logged once; readers go on without it.
        self.unreadable: dict[str, str] = {}
        self.unreadable_total = 0

    def _read(self, kind: type[T], entry: KVEntry) -> T | None:
        """The entry's value as `kind`, or None when it does not decode (logged once, remembered)."""
        try:
            return decode(kind, entry.value, entry.key)
        except CorruptRecordError as exc:
            self.report_unreadable(exc)
            return None

    def report_unreadable(self, exc: CorruptRecordError) -> None:
        """Logs an unreadable value once (per key and reason) and remembers it (/health, metrics)."""
        if self.unreadable.get(exc.key) == exc.reason:
            return
        log.warning("unreadable record key=%s: %s", exc.key, exc.reason)
        self.unreadable_total += 1
        self.unreadable[exc.key] = exc.reason
        if len(self.unreadable) > MAX_UNREADABLE:
            del self.unreadable[next(iter(self.unreadable))]

    # ---- jobs -----------------------------------------------------------------------------------------

    async def get_job(self, name: str) -> StoredJob | None:
        entry = await self.consul.kv_get(keys.job(name))
        return stored_job(entry) if entry else None

    async def list_jobs(self, *, index: int | None = None, wait_s: float | None = None) -> tuple[int, list[StoredJob]]:
        idx, entries = await self.consul.kv_list(keys.JOBS, index=index, wait_s=wait_s)
        jobs = []
        for entry in entries:
            if "/" in entry.key[len(keys.JOBS) :]:  # no job lives there (a name never holds a '/' unquoted)
                self.report_unreadable(CorruptRecordError(entry.key, NOT_A_JOB_KEY))
            else:
                jobs.append(stored_job(entry))
        return idx, jobs

    async def put_job(self, job: Job, *, cas: int) -> bool:
        """Check-and-set write: cas=0 creates only; else the write applies only at that modify index."""
        return await self.consul.kv_put(keys.job(job.name), encode(definition(job)), cas=cas)

    async def delete_job(self, name: str, *, cas: int) -> None:
        """Deletes the definition (check-and-set), its status and its executions, atomically."""
        ok, _, errors = await self.consul.txn([TxnOp("delete-cas", keys.job(name), index=cas), *_job_data(name)])
        if not ok:
            why = "; ".join(e.what for e in errors)
            raise ConflictError(f"job {name!r} changed while deleting it, try again ({why})")

    async def delete_leftovers(self, name: str) -> bool:
        """Deletes the status and executions of a job that does not exist (written after it was deleted), atomically;
        False, deleting nothing, when the job exists."""
        ok, _, _ = await self.consul.txn([TxnOp("check-not-exists", keys.job(name)), *_job_data(name)])
        return ok

    # ---- status ---------------------------------------------------------------------------------------

    async def get_status(self, name: str) -> tuple[JobStatus, int]:
        entry = await self.consul.kv_get(keys.status(name))
        if entry is None:
            return JobStatus(), 0
        return self._read(JobStatus, entry) or JobStatus(), entry.modify_index

    async def read_status(self, name: str) -> tuple[JobStatus | None, int]:
        """As get_status, but None for a value that does not decode (its modify index still given): the leader
        then writes over it what it knows, rather than an empty status."""
        entry = await self.consul.kv_get(keys.status(name))
        if entry is None:
            return JobStatus(), 0
        return self._read(JobStatus, entry), entry.modify_index

    async def list_statuses(
        self, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, dict[str, tuple[JobStatus, int]]]:
        """Every job status; one that does not decode is an empty status (logged)."""
        idx, statuses, _ = await self.list_statuses_checked(index=index, wait_s=wait_s)
        return idx, statuses

    async def list_statuses_checked(
        self, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, dict[str, tuple[JobStatus, int]], set[str]]:
        """list_statuses, and the names of the jobs whose status did not decode: the runs it listed as under way
        are lost with it, and must be found from the jobs' execution records."""
        idx, entries = await self.consul.kv_list(keys.STATUS, index=index, wait_s=wait_s)
        statuses: dict[str, tuple[JobStatus, int]] = {}
        unreadable: set[str] = set()
        for entry in entries:
            name = keys.name_from_key(keys.STATUS, entry.key)
            status = self._read(JobStatus, entry)
            if status is None:
                unreadable.add(name)
            statuses[name] = (status or JobStatus(), entry.modify_index)
        return idx, statuses, unreadable

    async def update_status(self, name: str, change: Callable[[JobStatus], JobStatus]) -> JobStatus:
        """Read-modify-write with check-and-set, retried until it applies."""
        for _ in range(50):
            status, index = await self.get_status(name)
            new = change(status)
            if await self.consul.kv_put(keys.status(name), encode(new), cas=index):
                return new
        raise ConflictError(f"status of job {name!r} keeps changing; gave up")

    # ---- day stats ------------------------------------------------------------------------------------

    async def list_day_stats(self) -> dict[str, tuple[DayStats, int]]:
        """Every day stats shard: key -> (counts, modify index). An unreadable one counts as empty (logged)."""
        _, entries = await self.consul.kv_list(keys.STATS)
        return {e.key: (self._read(DayStats, e) or DayStats(), e.modify_index) for e in entries}

    async def get_day_stats(self, key: str) -> tuple[DayStats, int]:
        entry = await self.consul.kv_get(key)
        return (self._read(DayStats, entry) or DayStats(), entry.modify_index) if entry is not None else (DayStats(), 0)

    async def executions_per_day(self) -> dict[str, DayStats]:
        """The executions that ran, per day (YYYY-MM-DD, UTC), every shard added up."""
        totals: dict[str, DayStats] = {}
        for key, (stats, _) in (await self.list_day_stats()).items():
            day = keys.name_from_key(keys.STATS, key)
            total = totals.setdefault(day, DayStats())
            total.success_count += stats.success_count
            total.failed_count += stats.failed_count
        return totals

    # ---- executions -----------------------------------------------------------------------------------

    async def list_executions(self, job_name: str) -> list[Execution]:
        _, entries = await self.consul.kv_list(keys.executions(job_name))
        return [record for entry in entries if (record := self._read(Execution, entry)) is not None]

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        """NotFoundError when there is none, CorruptRecordError when it does not decode."""
        entry = await self.consul.kv_get(keys.execution(job_name, execution_id))
        if entry is None:
            raise NotFoundError(f"execution {execution_id!r} of job {job_name!r} not found")
        try:
            return decode(Execution, entry.value, entry.key)
        except CorruptRecordError as exc:
            self.report_unreadable(exc)
            raise

    async def execution_keys(self, job_name: str) -> list[str]:
        return sorted(await self.consul.kv_keys(keys.executions(job_name)))

    async def delete_executions(self, job_name: str) -> None:
        await self.consul.kv_delete(keys.executions(job_name), recurse=True)

    # ---- batched writes -------------------------------------------------------------------------------

    async def apply(self, ops: Sequence[TxnOp]) -> list[tuple[bool, list[TxnError]]]:
        """Applies ops in transactions of at most 64 operations (Consul's limit), in order; one
        (committed, errors) per transaction."""
        results = []
        for start in range(0, len(ops), MAX_TXN_OPS):
            ok, _, errors = await self.consul.txn(ops[start : start + MAX_TXN_OPS])
            results.append((ok, errors))
        return results

    # ---- pause and leader -----------------------------------------------------------------------------

    async def get_pause(self) -> bool:
        return (await self.get_pause_state()).paused

    async def get_pause_state(self) -> PauseState:
        entry = await self.consul.kv_get(keys.PAUSE)
        if entry is None:
            return PauseState()
        return self._read(PauseState, entry) or PauseState()  # unreadable: not paused (logged)

    async def set_pause(self, paused: bool) -> None:
        await self.set_pause_state(PauseState(paused=paused))

    async def set_pause_state(self, state: PauseState) -> None:
        await self.consul.kv_put(keys.PAUSE, encode(state))

    async def get_leader(self) -> tuple[LeaderInfo, KVEntry] | None:
        """The leader record when the lock is held, else None."""
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or not entry.session:
            return None
        info = self._read(LeaderInfo, entry)
        return (info, entry) if info is not None else None


def _job_data(name: str) -> list[TxnOp]:
    """Deletes what Consul holds of a job besides its definition."""
    return [TxnOp("delete", keys.status(name)), TxnOp("delete-tree", keys.executions(name))]
