"""Jobs, job status, executions, pause state and the leader record on Consul KV, as JSON an operator can read."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec

from cronbus.common.consul import keys
from cronbus.common.consul.client import MAX_TXN_OPS, ConsulClient, KVEntry, TxnError, TxnOp
from cronbus.common.errors import ConflictError, NotFoundError
from cronbus.common.models import Execution, Job, JobStatus, LeaderInfo, PauseState

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
}


def encode(value: msgspec.Struct) -> bytes:
    return _encoder.encode(value)


def decode(kind: type[T], data: bytes) -> T:
    """Raises msgspec.DecodeError / ValidationError on a bad value (e.g. edited by hand in the Consul UI)."""
    return msgspec.json.decode(data, type=kind)


class StoredJob(msgspec.Struct, frozen=True):
    """A job definition as read from KV: the job, or why the stored value is unusable."""

    name: str
    modify_index: int
    job: Job | None
    problem: str = ""


def stored_job(entry: KVEntry) -> StoredJob:
    name = keys.name_from_key(keys.JOBS, entry.key)
    try:
        job = decode(Job, entry.value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return StoredJob(name, entry.modify_index, None, f"stored definition is not a valid job: {exc}")
    if job.name != name:
        return StoredJob(name, entry.modify_index, None, f"stored definition names {job.name!r}, not {name!r}")
    return StoredJob(name, entry.modify_index, job)


def definition(job: Job) -> Job:
    """The job as stored: read-only fields cleared (they live in JobStatus), id = name."""
    return msgspec.structs.replace(job, id=job.name, **_READ_ONLY_RESET)


class Store:
    """Typed access to cronbus's KV data. Raises ConsulError when Consul cannot answer."""

    def __init__(self, consul: ConsulClient) -> None:
        self.consul = consul

    # ---- jobs -----------------------------------------------------------------------------------------

    async def get_job(self, name: str) -> StoredJob | None:
        entry = await self.consul.kv_get(keys.job(name))
        return stored_job(entry) if entry else None

    async def list_jobs(self, *, index: int | None = None, wait_s: float | None = None) -> tuple[int, list[StoredJob]]:
        idx, entries = await self.consul.kv_list(keys.JOBS, index=index, wait_s=wait_s)
        return idx, [stored_job(e) for e in entries if "/" not in e.key[len(keys.JOBS) :]]

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
        return _status_or_empty(entry), entry.modify_index

    async def list_statuses(
        self, *, index: int | None = None, wait_s: float | None = None
    ) -> tuple[int, dict[str, tuple[JobStatus, int]]]:
        idx, entries = await self.consul.kv_list(keys.STATUS, index=index, wait_s=wait_s)
        return idx, {keys.name_from_key(keys.STATUS, e.key): (_status_or_empty(e), e.modify_index) for e in entries}

    async def update_status(self, name: str, change: Callable[[JobStatus], JobStatus]) -> JobStatus:
        """Read-modify-write with check-and-set, retried until it applies."""
        for _ in range(50):
            status, index = await self.get_status(name)
            new = change(status)
            if await self.consul.kv_put(keys.status(name), encode(new), cas=index):
                return new
        raise ConflictError(f"status of job {name!r} keeps changing; gave up")

    # ---- executions -----------------------------------------------------------------------------------

    async def list_executions(self, job_name: str) -> list[Execution]:
        _, entries = await self.consul.kv_list(keys.executions(job_name))
        result = []
        for entry in entries:
            try:
                result.append(decode(Execution, entry.value))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("unreadable execution record key=%s: %s", entry.key, exc)
        return result

    async def get_execution(self, job_name: str, execution_id: str) -> Execution:
        entry = await self.consul.kv_get(keys.execution(job_name, execution_id))
        if entry is None:
            raise NotFoundError(f"execution {execution_id!r} of job {job_name!r} not found")
        return decode(Execution, entry.value)

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
        entry = await self.consul.kv_get(keys.PAUSE)
        if entry is None:
            return False
        try:
            return decode(PauseState, entry.value).paused
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("unreadable pause state; treating as not paused")
            return False

    async def set_pause(self, paused: bool) -> None:
        await self.consul.kv_put(keys.PAUSE, encode(PauseState(paused)))

    async def get_leader(self) -> tuple[LeaderInfo, KVEntry] | None:
        """The leader record when the lock is held, else None."""
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or not entry.session:
            return None
        try:
            return decode(LeaderInfo, entry.value), entry
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None


def _status_or_empty(entry: KVEntry) -> JobStatus:
    try:
        return decode(JobStatus, entry.value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("unreadable job status key=%s: %s", entry.key, exc)
        return JobStatus()


def _job_data(name: str) -> list[TxnOp]:
    """Deletes what Consul holds of a job besides its definition."""
    return [TxnOp("delete", keys.status(name)), TxnOp("delete-tree", keys.executions(name))]
