"""An in-memory view of every job definition and job status, kept current by Consul blocking queries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cronbus.common.consul import keys
from cronbus.common.consul.client import KVItem
from cronbus.common.consul.store import NOT_A_JOB_KEY, Store, StoredJob, stored_job
from cronbus.common.errors import ConsulError, CorruptRecordError
from cronbus.common.lifecycle import wait_or_stop
from cronbus.common.models import JobStatus

log = logging.getLogger(__name__)

Listener = Callable[[set[str], set[str]], None]  # (changed or added names, removed names)


class JobView:
    """Jobs and statuses as Consul has them. Only entries whose ModifyIndex moved are decoded again, so a
    change costs one transfer of the prefix but not one decode per job."""

    def __init__(self, store: Store, *, min_interval_s: float = 0.05, wait_s: float = 30.0) -> None:
        self.store = store
        self.jobs: dict[str, StoredJob] = {}
        self.statuses: dict[str, tuple[JobStatus, int]] = {}
        self.jobs_ready = asyncio.Event()
        self.statuses_ready = asyncio.Event()
        self._listeners: list[Listener] = []
        self._min_interval_s = min_interval_s
        self._wait_s = wait_s

    def on_jobs_changed(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def run(self, stop: asyncio.Event, *, statuses: bool = True) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._watch_jobs(stop))
            if statuses:
                tg.create_task(self._watch_statuses(stop))

    async def refresh_jobs(self) -> None:
        """Reads the job prefix now (not blocking) and applies it."""
        _, entries = await self.store.consul.kv_items(keys.JOBS)
        self._apply_jobs(entries)

    def _apply_jobs(self, entries: list[KVItem]) -> None:
        seen: set[str] = set()
        changed: set[str] = set()
        for entry in entries:
            if "/" in entry.key[len(keys.JOBS) :]:
                self.store.report_unreadable(CorruptRecordError(entry.key, NOT_A_JOB_KEY))
                continue
            try:
                current = stored_job(entry.entry()) if self._moved(entry) else None  # only what changed is decoded
            except ConsulError as exc:  # a value that is not base64: reported, and the job kept as last read
                self.store.report_unreadable(CorruptRecordError(entry.key, str(exc)))
                seen.add(self._name(entry))
                continue
            if current is not None:
                self.jobs[current.name] = current
                changed.add(current.name)
                seen.add(current.name)
            else:
                seen.add(self._name(entry))
        removed = set(self.jobs) - seen
        for name in removed:
            del self.jobs[name]
        if changed or removed:
            for listener in self._listeners:
                listener(changed, removed)
        self.jobs_ready.set()

    @staticmethod
    def _name(entry: KVItem) -> str:
        return keys.name_from_key(keys.JOBS, entry.key)

    def _moved(self, entry: KVItem) -> bool:
        known = self.jobs.get(self._name(entry))
        return known is None or known.modify_index != entry.modify_index

    async def _watch_jobs(self, stop: asyncio.Event) -> None:
        index: int | None = None
        while not stop.is_set():
            try:
                new_index = await self._next_jobs(index)
            except ConsulError as exc:
                log.warning("job watch failed: %s", exc)
                await wait_or_stop(stop, 1.0)
                continue
            if index is not None and new_index == index:
                continue  # the blocking query timed out with no change
            # An index that goes backwards means the Consul state was reset: start over (Consul docs).
            index = new_index if index is None or new_index > index else None
            await wait_or_stop(stop, self._min_interval_s)

    async def _next_jobs(self, index: int | None) -> int:
        """One blocking read of the job prefix, applied unless it timed out unchanged; returns its index. The
        entries (every definition's raw bytes) are dropped on return, not held through the next blocking query."""
        new_index, entries = await self.store.consul.kv_items(keys.JOBS, index=index, wait_s=self._wait_s)
        if index is None or new_index != index:
            self._apply_jobs(entries)
        return new_index

    async def _watch_statuses(self, stop: asyncio.Event) -> None:
        index: int | None = None
        while not stop.is_set():
            try:
                new_index, statuses = await self.store.list_statuses(index=index, wait_s=self._wait_s)
            except ConsulError as exc:
                log.warning("status watch failed: %s", exc)
                await wait_or_stop(stop, 1.0)
                continue
            if index is not None and new_index == index:
                continue
            index = new_index if index is None or new_index > index else None
            self.statuses = statuses
            self.statuses_ready.set()
            await wait_or_stop(stop, self._min_interval_s)
