"""Next fire of every enabled, scheduled job in one priority queue."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from datetime import datetime

from cronbus.common.errors import ValidationError
from cronbus.common.models import Job
from cronbus.common.schedule import job_fires

log = logging.getLogger(__name__)


class Planner:
    """A heap of (fire time, version, job name). Editing a job bumps its version, which makes its old heap
    entries stale (skipped when they surface) instead of searching the heap: O(log n) per change."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str]] = []
        self._fires: dict[str, Callable[[datetime], datetime | None]] = {}
        self._next: dict[str, tuple[datetime, int]] = {}
        self._at: dict[datetime, int] = {}  # planned fires per instant
        self._version = 0

    def __len__(self) -> int:
        return len(self._next)

    def set_job(self, job: Job, after: datetime) -> str:
        """(Re)plans the job's first fire strictly after `after`. Disabled, child and manual jobs are not
        planned. Returns why the job cannot be planned ("" when fine)."""
        self.remove(job.name)
        if job.disabled or not job.schedule:
            return ""
        try:
            fire_after = job_fires(job)
            first = fire_after(after)
        except (ValidationError, ValueError) as exc:
            return str(exc)
        self._fires[job.name] = fire_after
        if first is not None:
            self._push(job.name, first)
        return ""

    def remove(self, name: str) -> None:
        self._fires.pop(name, None)
        entry = self._next.pop(name, None)  # its heap entries are now stale
        if entry is not None:
            self._unplan(entry[0])

    def next_fire(self, name: str) -> datetime | None:
        entry = self._next.get(name)
        return entry[0] if entry else None

    def planned_at(self, instant: datetime) -> int:
        """How many jobs fire at this instant."""
        return self._at.get(instant, 0)

    def peek(self) -> datetime | None:
        """The earliest planned fire."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, until: datetime, limit: int = 10_000) -> list[tuple[str, datetime]]:
        """Every (job, slot) due at or before `until`, earliest first; each job is re-planned at its
        following fire, so a job due several times (a leader catching up) comes once per slot."""
        due: list[tuple[str, datetime]] = []
        while len(due) < limit:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > until:
                break
            slot, _, name = heapq.heappop(self._heap)
            del self._next[name]
            self._unplan(slot)
            due.append((name, slot))
            following = self._fires[name](slot)
            if following is not None:
                self._push(name, following)
        return due

    def _push(self, name: str, fire: datetime) -> None:
        self._version += 1
        self._next[name] = (fire, self._version)
        self._at[fire] = self._at.get(fire, 0) + 1
        heapq.heappush(self._heap, (fire, self._version, name))

    def _unplan(self, fire: datetime) -> None:
        left = self._at[fire] - 1
        if left:
            self._at[fire] = left
        else:
            del self._at[fire]

    def _drop_stale(self) -> None:
        while self._heap:
            fire, version, name = self._heap[0]
            if self._next.get(name) == (fire, version):
                return
            heapq.heappop(self._heap)
