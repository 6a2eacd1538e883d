"""The leader's writes to Consul: units batched into transactions, each fenced by the leader's session."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, assert_never

import msgspec

from cronbus.common.consul import keys
from cronbus.common.consul.client import MAX_TXN_OPS, TxnOp
from cronbus.common.consul.store import Store, encode
from cronbus.common.errors import ConsulError
from cronbus.common.models import DayStats, Execution, JobStatus

log = logging.getLogger(__name__)

StatusChange = Callable[[JobStatus], JobStatus]
Outcome = Literal["committed", "exists", "fenced"]
MAX_TXN_BYTES = 300_000
IN_FLIGHT = 8  # transactions under way at once (Consul applies concurrent ones together: several times the rate)
SCAN = 512  # units looked at for one batch, past ones blocked by a transaction in flight
GATHER_S = 0.02  # how long queued updates may wait for more to fill a transaction (launches never wait)


class Unit:
    """Writes that must commit together. `create` records are create-only: if one exists already the
    unit is not applied and its outcome is "exists" (a launch replayed after a leader change)."""

    def __init__(
        self,
        *,
        create: list[Execution] | None = None,
        update: list[Execution] | None = None,
        status: dict[str, list[StatusChange]] | None = None,
        delete: list[TxnOp] | None = None,
        counts: dict[str, tuple[int, int]] | None = None,
        moot_status: bool = False,
    ) -> None:
        self.create = create or []
        self.update = update or []
        self.status = status or {}
        self.delete = delete or []
        self.counts = counts or {}  # day (YYYY-MM-DD) -> (succeeded, failed) executions to add to its stats
        # The status changes only mark its record's run as started: a later update of that record (its result)
        # makes them moot, so that update may replace the whole unit.
        self.moot_status = moot_status
        # The records' keys, computed once: queueing, batching and writing all need them.
        self.create_keys = [keys.execution(r.job_name, r.id) for r in self.create]
        self.update_keys = [keys.execution(r.job_name, r.id) for r in self.update]
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.superseded = False  # a later unit writes its only record: it shares that unit's outcome
        self._keys: set[str] | None = None

    def only_updates(self, key: str) -> bool:
        """Whether the unit does nothing but update the record at `key` (a later update of it may replace it)."""
        status = bool(self.status) and not self.moot_status
        return not (self.create or status or self.delete or self.counts) and self.update_keys == [key]

    def size(self) -> int:
        return len(self.create) + len(self.update) + len(self.status) + len(self.delete) + len(self.counts)

    def touched(self) -> set[str]:
        """What the unit writes: record keys and the names of the jobs whose status it changes."""
        if self._keys is None:
            self._keys = {*self.create_keys, *self.update_keys}
            self._keys.update(self.status)
            self._keys.update(op.key for op in self.delete)
        return self._keys

    def nbytes(self) -> int:
        """About how many bytes the unit adds to a transaction request."""
        records = (*self.create, *self.update)
        # JSON escapes (a NUL byte takes 6) and base64 (4/3) both grow the output on the way to Consul.
        return sum(len(msgspec.json.encode(r.output)) * 4 // 3 + 1024 for r in records) + 512 * (
            len(self.status) + len(self.delete)
        )


class _Fence:
    """The owner of a transaction's first operation, the leader-session check: its failure means deposed."""


FENCE: Final = _Fence()


@dataclass(frozen=True)
class _StatusOf:
    """The owner of a job status's check-and-set."""

    name: str


@dataclass(frozen=True)
class _DayShard:
    """The owner of a day's stats shard's check-and-set (the KV key)."""

    key: str


# Who an operation of a transaction belongs to, so Consul's error for it (it names the operation's index) goes to
# the right place. A tagged type: a job named "fence" is a _StatusOf, never the fence.
Owner = _Fence | Unit | _StatusOf | _DayShard | None


class Ledger:
    """Owns the statuses of every job, and the day stats, while this scheduler leads. Status changes are
    functions, applied to the latest known status at write time and written with check-and-set; when someone
    else changed a status (the gateway resetting counters), it is read again and the change applied to that.

    Day stats (executions per day, for GET /v1/stats) are added in the transaction that records the results,
    so each is counted once. Every transaction in flight writes its own shard of a day's counts (IN_FLIGHT
    shards, keys.day_stats): concurrent transactions never contend for one key, and readers add the shards."""

    def __init__(
        self,
        store: Store,
        session: str,
        statuses: dict[str, tuple[JobStatus, int]],
        days: dict[str, tuple[DayStats, int]] | None = None,
    ) -> None:
        self._store = store
        self._session = session
        self._statuses = statuses
        self._days = days if days is not None else {}  # day stats shard key -> (counts, modify index)
        self._shards = list(range(IN_FLIGHT))  # shards no transaction in flight writes
        self._pending: deque[Unit] = deque()
        self._updates: deque[Unit] = deque()  # units that change records of runs under way: written first
        self._queued: dict[str, Unit] = {}  # record key -> the queued unit that updates it last
        self._backlog = 0  # operations of the queued units (superseded ones not counted)
        self._launches = 0  # queued units that create records: they are written at once
        self._since = 0.0  # when the oldest queued unit came (loop time)
        self._in_flight: dict[asyncio.Task[None], tuple[list[Unit], set[str]]] = {}  # transactions under way
        self._wake = asyncio.Event()
        self.fenced = False

    def submit(self, unit: Unit) -> asyncio.Future[Outcome]:
        """Queues a unit. Units that update records (a run started, finished, went to another executor) go before
        the others, in the order they came: when more runs are due than Consul takes in, runs under way are still
        recorded and new launches wait (late, never lost). Launches create records, so no update can be about a
        record still waiting in the other queue. A queued unit that only updates one record is replaced by a later
        update of that record (a short run's "started" by its "finished"): one write instead of two."""
        if self.fenced:
            unit.done.set_result("fenced")
            return unit.done
        for key in unit.update_keys:
            earlier = self._queued.get(key)
            if earlier is not None and not earlier.superseded and earlier.only_updates(key):
                earlier.superseded = True
                self._backlog -= earlier.size()
                unit.done.add_done_callback(functools.partial(_follow, earlier))
            self._queued[key] = unit
        (self._updates if unit.update else self._pending).append(unit)
        if not self._backlog:
            self._since = asyncio.get_running_loop().time()
        self._backlog += unit.size()
        self._launches += bool(unit.create)
        self._wake.set()
        return unit.done

    def settled(self) -> asyncio.Future[list[Any]]:
        """Done once every unit submitted so far is written or given up (units submitted later do not count)."""
        units = [*self._updates, *self._pending, *(u for batch, _ in self._in_flight.values() for u in batch)]
        return asyncio.gather(*(u.done for u in units), return_exceptions=True)

    def old_days(self, before: str) -> list[Unit]:
        """Units that delete the day stats of days before `before` (YYYY-MM-DD), forgotten here at once."""
        doomed = [key for key in self._days if keys.name_from_key(keys.STATS, key) < before]
        for key in doomed:
            del self._days[key]
        chunks = [doomed[i : i + MAX_TXN_OPS - 1] for i in range(0, len(doomed), MAX_TXN_OPS - 1)]
        return [Unit(delete=[TxnOp("delete", key) for key in chunk]) for chunk in chunks]

    def status(self, name: str) -> JobStatus:
        return self._statuses.get(name, (JobStatus(), 0))[0]

    def forget_status(self, name: str) -> None:
        """The job is gone: its status is no longer this ledger's (a job created again starts from nothing)."""
        self._statuses.pop(name, None)

    async def read_execution(self, job_name: str, exec_id: str) -> Execution:
        """The stored record, read now (raises NotFoundError, CorruptRecordError, ConsulError)."""
        return await self._store.get_execution(job_name, exec_id)

    async def delete_leftovers(self, job_name: str) -> bool:
        """Deletes what is left of a deleted job's status and records (see Store.delete_leftovers)."""
        return await self._store.delete_leftovers(job_name)

    async def run(self) -> None:
        """Flushes units as they come, as many per transaction as fit, with up to IN_FLIGHT transactions at once.
        Updates that would not fill a transaction wait up to GATHER_S for more (a transaction costs Consul and the
        leader about as much as the few runs it would record: a trickle of results must not become a trickle of
        transactions); launches are written at once, with whatever is queued. Ends when fenced; when it ends for any
        reason (cancelled at the end of the term included), every unit not committed resolves as "fenced", so
        nothing waits for it forever."""
        in_flight = self._in_flight
        try:
            while not self.fenced:
                busy = {key for _, keys_ in in_flight.values() for key in keys_}
                gathered_at = self._since + GATHER_S
                now = asyncio.get_running_loop().time()
                due = self._backlog >= MAX_TXN_OPS - 1 or self._launches > 0 or now >= gathered_at
                batch = self._take(busy) if len(in_flight) < IN_FLIGHT and self._backlog and due else []
                if batch:
                    self._since = now  # what is left (did not fit, or waits for a key in flight) gathers anew
                    task = asyncio.create_task(self._commit(batch))
                    in_flight[task] = (batch, {key for unit in batch for key in unit.touched()})
                    continue
                # Wait for a transaction to end, or (with room for another) for a new unit.
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                waits: list[asyncio.Future[Any]] = [*in_flight, *([woken] if len(in_flight) < IN_FLIGHT else [])]
                gathering = bool(self._backlog) and not due
                try:
                    await asyncio.wait(waits, timeout=gathered_at - now if gathering else None,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                finally:
                    woken.cancel()
                for task in [t for t in in_flight if t.done()]:
                    batch, _ = in_flight.pop(task)
                    if task.cancelled() or task.exception() is not None:
                        _resolve(batch, "fenced")
                        task.result()  # a bug in _commit ends the ledger (and the term), never silently
        finally:
            self.fenced = True
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)
            _resolve([*(u for batch, _ in in_flight.values() for u in batch), *self._updates, *self._pending], "fenced")
            in_flight.clear()
            self._updates.clear()
            self._pending.clear()
            self._queued.clear()
            self._backlog = self._launches = 0

    def _take(self, busy: set[str]) -> list[Unit]:
        """The next batch: queued units (updates first, each queue in order) that fit in one transaction and
        touch no key of a transaction in flight. A unit passed over blocks its keys for the units after it, so the
        writes of one key stay in the order they came. Looks at most SCAN units ahead. Superseded units are dropped."""
        batch: list[Unit] = []
        blocked = set(busy)
        ops = size = scanned = 0
        full = False
        for queue in (self._updates, self._pending):
            passed: list[Unit] = []
            while queue and scanned < SCAN and not full:
                unit = queue[0]
                if unit.superseded:
                    queue.popleft()
                    continue
                # One operation of every transaction is the fence; status writes of one job merge into one; and
                # Consul refuses a request body over 512 KiB (values travel base64-encoded, a third larger).
                # A full batch ends the scan: what is left of the updates still goes before any launch.
                full = bool(batch) and (ops + unit.size() > MAX_TXN_OPS - 1 or size + unit.nbytes() > MAX_TXN_BYTES)
                if full:
                    break
                queue.popleft()
                scanned += 1
                unit_keys = unit.touched()
                if blocked.isdisjoint(unit_keys):
                    batch.append(unit)
                    self._backlog -= unit.size()
                    self._launches -= bool(unit.create)
                    ops += unit.size()
                    size += unit.nbytes()
                    for key in unit.update_keys:
                        if self._queued.get(key) is unit:
                            del self._queued[key]
                else:
                    passed.append(unit)
                    blocked.update(unit_keys)
            queue.extendleft(reversed(passed))
        return batch

    async def _commit(self, batch: list[Unit]) -> None:
        shard = self._shards.pop()  # run() keeps at most IN_FLIGHT transactions under way: one is free
        try:
            await self._commit_in(batch, shard)
        finally:
            self._shards.append(shard)

    async def _commit_in(self, batch: list[Unit], shard: int) -> None:
        for _ in range(20):
            if not batch:
                return
            ops, owners, written = self._ops(batch, shard)
            try:
                ok, results, errors = await self._store.consul.txn(ops)
            except ConsulError as exc:
                log.warning("ledger write failed, retrying: %s", exc)
                await asyncio.sleep(0.2)
                continue
            if ok:
                for entry in results:
                    self._written(written.get(entry.key), entry.modify_index)
                _resolve(batch, "committed")
                return
            for error in errors:
                owner = owners[error.op_index] if 0 <= error.op_index < len(owners) else None
                if await self._refused(batch, owner, error.what):
                    return
        for unit in batch:
            if not unit.done.done():
                unit.done.set_exception(ConsulError("ledger could not commit after 20 attempts"))

    async def _refused(self, batch: list[Unit], owner: Owner, what: str) -> bool:
        """Handles one operation Consul refused (a rolled-back transaction): True when the ledger is fenced, and
        the batch resolved; else what the operation needs is done, and the batch may be tried again."""
        match owner:
            case _Fence():
                log.warning("ledger fenced: %s", what)
                self.fenced = True
                _resolve(batch, "fenced")
                return True
            case Unit():  # Consul names every failed operation: a unit may come twice
                if not owner.done.done():
                    owner.done.set_result("exists")
                if owner in batch:
                    batch.remove(owner)
            case _StatusOf(name=name):  # a status changed under us: read it again
                status, index = await self._store.read_status(name)
                if status is None:  # overwritten with something unreadable: what this leader knows wins
                    status = self._statuses.get(name, (JobStatus(), 0))[0]
                self._statuses[name] = (status, index)
            case _DayShard(key=key):  # written by an earlier term after this one read it
                self._days[key] = await self._store.get_day_stats(key)
            case None:
                log.error("ledger transaction failed: %s", what)
            case _:
                assert_never(owner)
        return False

    def _written(self, what: _StatusWrite | _DayWrite | None, modify_index: int) -> None:
        match what:
            case _StatusWrite(name=name, status=status):
                self._statuses[name] = (status, modify_index)
            case _DayWrite(key=key, stats=stats):
                self._days[key] = (stats, modify_index)
            case None:
                pass
            case _:
                assert_never(what)

    def _ops(self, batch: list[Unit], shard: int) -> tuple[list[TxnOp], list[Owner], dict[str, _Write]]:
        """The transaction's operations, who owns each, and the statuses and day stats it writes (by key)."""
        ops: list[TxnOp] = [TxnOp("check-session", keys.LEADER, session=self._session)]
        owners: list[Owner] = [FENCE]
        changes: dict[str, list[StatusChange]] = {}
        updates: dict[str, Execution] = {}  # the latest of a record's updates is the one written (started, finished)
        for unit in batch:
            for key, record in zip(unit.create_keys, unit.create, strict=True):
                ops.append(TxnOp("cas", key, encode(record), 0))
                owners.append(unit)
            updates.update(zip(unit.update_keys, unit.update, strict=True))
            for name, fns in unit.status.items():
                changes.setdefault(name, []).extend(fns)
        for key, record in updates.items():
            ops.append(TxnOp("set", key, encode(record)))
            owners.append(None)
        deletes = [op for unit in batch for op in unit.delete]  # after the updates: history trimming wins
        ops.extend(deletes)
        owners.extend([None] * len(deletes))
        written: dict[str, _Write] = {}
        for name, fns in changes.items():
            status, index = self._statuses.get(name, (JobStatus(), 0))
            for fn in fns:
                status = fn(msgspec.structs.replace(status))
            key = keys.status(name)
            ops.append(TxnOp("cas", key, encode(status), index))
            owners.append(_StatusOf(name))
            written[key] = _StatusWrite(name, status)
        counts: dict[str, tuple[int, int]] = {}
        for unit in batch:
            for day, (succeeded, failed) in unit.counts.items():
                before = counts.get(day, (0, 0))
                counts[day] = (before[0] + succeeded, before[1] + failed)
        for day, (succeeded, failed) in counts.items():
            key = keys.day_stats(day, shard)
            stats, index = self._days.get(key, (DayStats(), 0))
            added = DayStats(success_count=stats.success_count + succeeded, failed_count=stats.failed_count + failed)
            ops.append(TxnOp("cas", key, encode(added), index))
            owners.append(_DayShard(key))
            written[key] = _DayWrite(key, added)
        return ops, owners, written


@dataclass(frozen=True)
class _StatusWrite:
    name: str
    status: JobStatus


@dataclass(frozen=True)
class _DayWrite:
    key: str
    stats: DayStats


_Write = _StatusWrite | _DayWrite


def _follow(unit: Unit, later: asyncio.Future[Outcome]) -> None:
    """A superseded unit ends as the unit that replaced it did."""
    if unit.done.done():
        return
    if later.cancelled():
        unit.done.set_result("fenced")
    elif (exc := later.exception()) is not None:
        unit.done.set_exception(exc)
    else:
        unit.done.set_result(later.result())


def _resolve(batch: list[Unit], outcome: Outcome) -> None:
    for unit in batch:
        if not unit.done.done():
            unit.done.set_result(outcome)
