"""The leader's history keeper: moves settled records from Consul to the history store and trims it by age and count.

docs/storage.md, "History store". A record is moved only once it has finished and settled (`settle_s` past its end,
so no result of it or launch of its slot can still be on the way: the leader and executors resend within seconds),
written to the store, and deleted from Consul only after the store committed it, through the leader's ledger (so a
term that ended deletes nothing). While the store is down, records wait where they are, in Consul: what one sweep
takes in memory is bounded by `max_backlog`, the backlog is a metric, and scheduling does not wait for any of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from cronbus.common.consul import keys
from cronbus.common.consul.client import TxnOp
from cronbus.common.consul.store import Store, decode
from cronbus.common.errors import CorruptRecordError, CronbusError
from cronbus.common.history import CONSUL, HistoryStore, finished
from cronbus.common.lifecycle import wait_or_stop
from cronbus.common.metrics import Registry
from cronbus.common.models import ZERO_TIME, Execution, now_utc
from cronbus.services.scheduler.ledger import Ledger, Unit

log = logging.getLogger(__name__)

DELETE_CHUNK: Final = 60  # Consul deletes per ledger unit (a transaction holds 64 operations)
MAX_PAUSE_S: Final = 60.0  # the longest wait between two sweeps while the store is down


@dataclass(frozen=True)
class ArchiveSettings:
    history_limit: int = 100
    max_age_s: float = 0.0  # 0: no age limit
    settle_s: float = 600.0
    batch: int = 500  # records per write to the store
    max_backlog: int = 10_000  # records one sweep holds in memory at most
    interval_s: float = 5.0


class HistoryArchive:
    """One per scheduler, run by each term beside its dispatcher (with the term's ledger); `protect` gives the ids
    the dispatcher tracks."""

    def __init__(
        self,
        store: Store,
        history: HistoryStore,
        registry: Registry,
        settings: ArchiveSettings,
        protect: Callable[[], Collection[str]] = frozenset,
    ) -> None:
        self.store = store
        self.history = history
        self.settings = settings
        self.protect = protect
        self.backlog = 0
        self._moved = registry.counter(
            "cronbus_history_moved_total", "Finished execution records moved from Consul to the history store."
        )
        self._failures = registry.counter(
            "cronbus_history_store_failures_total", "Writes or trims the history store could not do (it was down)."
        )
        registry.gauge(
            "cronbus_history_backlog",
            "Settled execution records in Consul waiting to move to the history store (0 with the Consul store).",
            lambda: float(self.backlog),
        )

    @property
    def moves(self) -> bool:
        return self.history.name != CONSUL

    async def run(self, ledger: Ledger, lost: asyncio.Event) -> None:
        pause = self.settings.interval_s
        while not lost.is_set():
            try:
                if self.moves:
                    await self.sweep(ledger)
                await self.trim()
                pause = self.settings.interval_s
            except CronbusError as exc:  # the store or Consul is down: try again later, scheduling goes on
                self._failures.inc()
                pause = min(pause * 2, MAX_PAUSE_S)
                log.warning("history keeper: %s; next try in %.0fs", exc, pause)
            await wait_or_stop(lost, pause)

    async def sweep(self, ledger: Ledger) -> int:
        """Moves what has settled, at most max_backlog records; how many moved. Raises what the store or Consul
        raise (what was not moved stays in Consul for the next sweep)."""
        settled = await self._settled()
        self.backlog = len(settled)
        taken = settled[: self.settings.max_backlog]
        moved = 0
        for start in range(0, len(taken), self.settings.batch):
            batch = taken[start : start + self.settings.batch]
            await self.history.put(batch)  # committed before anything is deleted from Consul
            for first in range(0, len(batch), DELETE_CHUNK):
                chunk = batch[first : first + DELETE_CHUNK]
                ops = [TxnOp("delete", keys.execution(r.job_name, r.id)) for r in chunk]
                outcome = await ledger.submit(Unit(delete=ops))
                if outcome != "committed":  # the term ended: the next leader's keeper moves the rest
                    return moved
                moved += len(chunk)
                self.backlog -= len(chunk)
                self._moved.inc(len(chunk))
        if moved:
            log.info("history keeper moved=%d backlog=%d", moved, self.backlog)
        return moved

    async def trim(self) -> int:
        """Age trims on either store; with another store also --history-limit (the dispatcher trims Consul)."""
        deleted = 0
        protect = set(self.protect())
        if self.settings.max_age_s > 0:
            cutoff = now_utc() - timedelta(seconds=self.settings.max_age_s)
            deleted += await self.history.trim_older_than(cutoff, protect=protect)
        if self.moves:
            deleted += await self.history.trim_to_count(self.settings.history_limit, protect=protect)
        return deleted

    async def _settled(self) -> list[Execution]:
        _, entries = await self.store.consul.kv_list(keys.EXECUTIONS)
        before = now_utc() - timedelta(seconds=self.settings.settle_s)
        protect = set(self.protect())
        settled = []
        for entry in entries:
            try:
                record = decode(Execution, entry.value, entry.key)
            except CorruptRecordError as exc:
                self.store.report_unreadable(exc)  # it stays in Consul, where an operator can see it
                continue
            if keys.execution(record.job_name, record.id) != entry.key:
                continue  # a record under another job's key (a hand edit): left where it is
            ended = record.finished_at if record.finished_at != ZERO_TIME else record.scheduled_at
            if finished(record) and ended <= before and record.id not in protect:
                settled.append(record)
        settled.sort(key=lambda r: (r.finished_at, r.id))  # oldest first: the bound keeps the newest waiting
        return settled
