"""Sending runs to executors: the choice of executor, their slots (flow control), runs waiting for one, batching."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

import msgspec

from cronbus.common import messages as m
from cronbus.common.bus import node_topic
from cronbus.common.errors import ValidationError
from cronbus.common.models import FINISHED_STATUSES, Execution, Job, now_utc
from cronbus.common.schedule import parse_duration
from cronbus.services.scheduler.ledger import Ledger, Unit
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.ports import Wire
from cronbus.services.scheduler.registry import ExecutorRegistry, NoTargetError
from cronbus.services.scheduler.runs import Active, RunBook, names_no_node

log = logging.getLogger(__name__)

MOVE_SCAN = 64  # waiting runs looked at for an executor with a free slot (Sender.move_waiting)
DISPATCH_BATCH = 200  # runs per Dispatches message at most
DISPATCH_BYTES = 1024 * 1024  # about this many bytes of configuration at most (a frame over 4 MiB is dropped)


def _approx_bytes(dispatch: m.Dispatch) -> int:
    """About how big a dispatch is encoded: a job's configuration can be hundreds of kilobytes."""
    config = sum(len(k) + len(v) for k, v in dispatch.config.items())
    processors = sum(len(k) + len(v) for p in dispatch.processors.values() for k, v in p.items())
    return 256 + len(dispatch.execution_id) + len(dispatch.job_name) + config + processors


def _timeout_s(job: Job) -> float | None:
    if not job.timeout:
        return None
    try:
        return parse_duration(job.timeout).total_seconds()
    except ValidationError:
        return None


def _dispatch_of(active: Active, term: int) -> m.Dispatch:
    record, job = active.record, active.job
    return m.Dispatch(
        term=term,
        execution_id=record.id,
        job_name=record.job_name,
        scheduled_at=record.scheduled_at,
        attempt=record.attempt,
        group=record.group,
        targets=[record.node_name],
        executor=job.executor,
        config=job.executor_config or {},
        timeout_s=_timeout_s(job),
        processors=job.processors or {},
        trace=active.trace,
    )


class Outbox:
    """Dispatches go out per executor in batches: when DISPATCH_BATCH are queued, or at the loop's next turn
    (an executor of revision 0 gets each alone, at once)."""

    def __init__(self, wire: Wire, registry: ExecutorRegistry) -> None:
        self._wire = wire
        self._registry = registry
        self._outgoing: dict[str, list[m.Dispatch]] = {}  # node -> dispatches not sent yet
        self._outgoing_bytes: dict[str, int] = {}  # node -> about how big those are

    def takes_ahead(self, node: str) -> bool:
        """Whether the executor holds a run sent ahead until its slot (revision 1 of the protocol)."""
        state = self._registry.executors.get(node)
        return state is not None and state.revision >= 1

    def queue(self, node: str, dispatch: m.Dispatch) -> None:
        if not self.takes_ahead(node):
            self._wire.publish(node_topic(node), dispatch)
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send)
        queued = self._outgoing.setdefault(node, [])
        queued.append(dispatch)
        size = self._outgoing_bytes[node] = self._outgoing_bytes.get(node, 0) + _approx_bytes(dispatch)
        if len(queued) >= DISPATCH_BATCH or size >= DISPATCH_BYTES:
            self._wire.publish(node_topic(node), m.Dispatches(runs=queued))
            del self._outgoing[node], self._outgoing_bytes[node]

    def _send(self) -> None:
        outgoing, self._outgoing, self._outgoing_bytes = self._outgoing, {}, {}
        if self._wire.is_leader():  # else they are dropped: a dispatch is always sent again until acknowledged
            for node, runs in outgoing.items():
                self._wire.publish(node_topic(node), m.Dispatches(runs=runs))


class Sender:
    """Sends the runs of a term, and owns the executors' slots. Flow control: runs sent to an executor and not
    finished hold one of its `capacity` slots; a run for a full executor waits and goes when a slot frees, so an
    overloaded executor is not flooded with runs it must refuse (and the leader does not resend refused runs in
    a loop). Runs are tracked and untracked through here, so a run holds a slot exactly while it is tracked."""

    def __init__(
        self, *, term: int, runs: RunBook, ledger: Ledger, registry: ExecutorRegistry, wire: Wire,
        metrics: SchedulerMetrics,
    ) -> None:  # fmt: skip
        self._term = term
        self._runs = runs
        self._ledger = ledger
        self._registry = registry
        self._wire = wire
        self._metrics = metrics
        self._outbox = Outbox(wire, registry)
        self._slots: dict[str, int] = {}  # node -> slots held
        self._waiting: dict[str, deque[Active]] = {}  # node -> runs waiting for a slot, oldest first
        self._freed: set[str] = set()  # nodes with waiting runs and a slot freed since send_waiting ran
        # Waiting runs that may go to any executor their tags match (not one of a run on several executors), oldest
        # first: one that waits for a full executor goes to another with a free slot (move_waiting, every tick).
        self._movable: dict[str, Active] = {}  # by execution id

    # ---- tracking ---------------------------------------------------------------------------------------

    def adopt(self, record: Execution, job: Job) -> None:
        """Tracks an unfinished run recorded earlier (by an earlier term, or a replayed launch); a run tracked
        already, or a final record, is left alone."""
        if record.id in self._runs or record.status in FINISHED_STATUSES:
            return
        active = Active(record=record, job=job, acked=record.status == "running")
        if record.node_name:  # sent by an earlier term, perhaps running: it holds a slot until resolved
            self._hold_slot(active)
        self._runs.track(active)

    def track(self, active: Active) -> None:
        self._runs.track(active)

    def untrack(self, record: Execution) -> None:
        self._free_slot(self._runs.untrack(record))
        self._movable.pop(record.id, None)

    # ---- sending ----------------------------------------------------------------------------------------

    def may_have_run(self, active: Active) -> bool:
        """Sent and not confirmed, by this term or (adopted) an earlier one: only its executor knows whether it
        runs, and the run is never sent to another one on a guess (docs/semantics.md §3.4)."""
        return bool(active.record.node_name) and (active.sent_at > 0 or active.record.term < self._term)

    def takes_ahead(self, node: str) -> bool:
        return self._outbox.takes_ahead(node)

    async def dispatch(self, active: Active) -> None:
        """Sends the run to its executor (choosing one, and recording the choice, if it has none that is live),
        unless it is not due, this scheduler does not lead, or it waits for a slot."""
        record = active.record
        if record.due_at > now_utc() or not self._wire.is_leader() or active.waiting:
            return
        if record.scheduled_at > now_utc() and not self.takes_ahead(record.node_name):
            return  # an executor of revision 0 would start it at once: the tick sends it at the slot
        needs_target = not record.node_name or not self._registry.is_live(record.node_name)
        if needs_target and (not await self.retarget(active) or record.id not in self._runs):
            return  # no executor for it now, or it ended (killed, expired) while the choice was written
        if not active.holds:
            if self._full(active.record.node_name):
                self._wait(active)
                return
            self._hold_slot(active)
        active.sent_at = time.monotonic()
        active.sends += 1
        self._outbox.queue(active.record.node_name, _dispatch_of(active, self._term))
        self._metrics.dispatched.inc()
        log.debug("dispatched exec=%s node=%s send=%d", record.id, active.record.node_name, active.sends)

    async def retarget(self, active: Active, node: str = "") -> bool:
        """Chooses an executor (`node`, else the least busy other one) for a waiting or orphaned pending execution,
        and records the choice before dispatching it, so a new leader re-sends it to the same executor (which
        deduplicates)."""
        if self._runs.is_deleted(active.record.job_name):  # it runs nowhere, and never will
            self.untrack(active.record)
            return False
        try:
            node = node or self._registry.select(active.job.tags, exclude=frozenset({active.record.node_name}))[0]
        except NoTargetError:
            return False
        self._free_slot(active)
        self._stop_waiting(active)
        active.record = msgspec.structs.replace(active.record, node_name=node)
        active.acked = False
        active.sends = active.refusals = 0
        outcome = await self._ledger.submit(Unit(update=[active.record]))
        return outcome == "committed"

    # ---- flow control -----------------------------------------------------------------------------------

    def waiting(self) -> int:
        return sum(a.waiting for a in self._runs)

    def _full(self, node: str) -> bool:
        state = self._registry.executors.get(node)
        return state is not None and self._slots.get(node, 0) >= state.capacity

    def _wait(self, active: Active) -> None:
        active.waiting = True
        self._waiting.setdefault(active.record.node_name, deque()).append(active)
        if names_no_node(active.record):
            self._movable[active.record.id] = active

    def _hold_slot(self, active: Active) -> None:
        active.holds = active.record.node_name
        self._slots[active.holds] = self._slots.get(active.holds, 0) + 1

    def _free_slot(self, active: Active) -> None:
        if active.holds:
            self._slots[active.holds] -= 1
            if active.holds in self._waiting:
                self._freed.add(active.holds)
            active.holds = ""

    def _stop_waiting(self, active: Active) -> None:
        active.waiting = False
        self._movable.pop(active.record.id, None)

    async def send_waiting(self) -> None:
        """Sends runs that waited for a slot, as slots free."""
        while self._freed:
            node = self._freed.pop()
            queue = self._waiting.get(node)
            while queue and not self._full(node):
                active = queue.popleft()
                if active.waiting and active.record.node_name == node and active.record.id in self._runs:
                    self._stop_waiting(active)
                    await self.dispatch(active)
            if queue is not None and not queue and self._waiting.get(node) is queue:
                del self._waiting[node]

    async def unblock(self) -> None:
        """Every tick: sends waiting runs their executors have room for now (one may be back with a greater
        capacity), and runs waiting for full executors to the others that have free slots."""
        self._freed.update(n for n in self._waiting if not self._full(n))
        await self.send_waiting()
        if self._movable:  # runs wait for full executors: the others take them
            for state in self._registry.live():
                if state.node not in self._waiting:
                    await self._move_waiting(state.node)

    async def _move_waiting(self, node: str) -> None:
        """Sends runs waiting for other executors to `node` (none waits for it) while it has free slots: of the
        MOVE_SCAN that have waited longest, those whose tags it has. (A moved run's place in its old executor's
        queue is skipped when reached.)"""
        for active in list(itertools.islice(self._movable.values(), MOVE_SCAN)):
            if self._full(node):
                return
            movable = active.record.id in self._movable and self._registry.matches(node, active.job.tags)
            if movable and await self.retarget(active, node):
                await self.dispatch(active)
