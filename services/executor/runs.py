"""The executor's runs: one `Run` per accepted execution, the gate that holds runs sent ahead until their slot,
and the reports that a run started (docs/protocol.md, "Reliability")."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from cronbus.common.models import ExecutionStatus, now_utc
from cronbus.services.executor.executors.base import RunRequest

# The leader sends a run up to 1.5 s ahead of its slot, and this executor starts it at the slot by its own clock.
# A longer wait means the two clocks disagree: the run starts after this long rather than wait on a wrong clock.
HOLD_MAX_S = 5.0
# The loop's timers fire a millisecond or two late (epoll counts whole milliseconds, other callbacks go first): the
# timer of a slot is set this much early and the release sleeps the rest, so held runs start within a millisecond.
TIMER_SLACK_S = 0.003
# A run still going this long after it started is reported started; a shorter one only by its result (which says
# when it started): for runs of a few milliseconds that halves the messages and the leader's writes.
STARTED_AFTER_S = 0.1


class Unstarted(NamedTuple):
    """How a run ends without starting: killed or cancelled while it waited for its slot."""

    status: ExecutionStatus
    reason: str


@dataclass
class Run:
    request: RunRequest
    kill: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    processors: dict[str, dict[str, str]] = field(default_factory=dict)  # the job's output processors
    # Resolved when a run sent ahead of its slot may start (None), or ends before it started (Unstarted).
    release: asyncio.Future[Unstarted | None] | None = None
    trace: dict[str, str] = field(default_factory=dict)  # the launch's trace context (the dispatch's)
    unstarted: Unstarted | None = None  # a kill or cancel that came before the run began to wait for its slot
    started_at: datetime | None = None
    report_at: float = 0.0  # monotonic time to report it started, if it is still going (STARTED_AFTER_S)
    reported: bool = False
    ended: bool = False


class SlotGate:
    """Runs sent ahead of their slot wait here; one timer per slot releases all of its runs at once."""

    def __init__(self) -> None:
        self._held: dict[datetime, list[Run]] = {}

    async def hold(self, run: Run) -> Unstarted | None:
        """Waits for the run's slot. None when the run may start, or how it ends when it was killed or cancelled
        before that."""
        if run.unstarted is not None:
            return run.unstarted
        slot = run.request.scheduled_at
        wait_s = (slot - now_utc()).total_seconds()
        if wait_s <= 0:
            return None
        loop = asyncio.get_running_loop()
        run.release = loop.create_future()
        held = self._held.get(slot)
        if held is None:
            held = self._held[slot] = []
            loop.call_later(max(0.0, min(wait_s, HOLD_MAX_S) - TIMER_SLACK_S), self._release, slot)
        held.append(run)
        return await run.release

    def _release(self, slot: datetime) -> None:
        early_s = (slot - now_utc()).total_seconds()
        if 0 < early_s <= TIMER_SLACK_S:  # the timer was set early on purpose: never start before the slot
            time.sleep(early_s)
        for run in self._held.pop(slot, []):
            if run.release is not None and not run.release.done():
                run.release.set_result(None)

    @staticmethod
    def end_unstarted(run: Run, why: Unstarted) -> bool:
        """Ends a run that has not started without starting it: one waiting for its slot, or one still being
        accepted (its id made durable), which then ends as it reaches its slot. False once it started."""
        if run.release is None and run.started_at is None:
            run.unstarted = run.unstarted or why
            return True
        if run.release is None or run.release.done():
            return False
        run.release.set_result(why)
        return True


class StartReports:
    """Reports a run started STARTED_AFTER_S after it did, if it is still going: one timer for all such runs (a
    thousand start at one slot). `report` sends the report; it is called once per run at most."""

    def __init__(self, report: Callable[[Run], None]) -> None:
        self._report = report
        self._unreported: deque[Run] = deque()  # started runs, oldest first, until reported or STARTED_AFTER_S
        self._timer: asyncio.TimerHandle | None = None  # for the oldest of them

    def later(self, run: Run) -> None:
        run.report_at = time.monotonic() + STARTED_AFTER_S
        self._unreported.append(run)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(STARTED_AFTER_S, self._due)

    def now(self, run: Run) -> None:
        """Reports it at once (its output comes, and output never comes before the start)."""
        if not run.reported:
            run.reported = True
            self._report(run)

    def _due(self) -> None:
        self._timer = None
        now = time.monotonic()
        while self._unreported and self._unreported[0].report_at <= now:
            run = self._unreported.popleft()
            if not (run.reported or run.ended):
                self.now(run)
        if self._unreported:
            wait_s = self._unreported[0].report_at - now
            self._timer = asyncio.get_running_loop().call_later(wait_s, self._due)
