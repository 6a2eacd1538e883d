"""The leader's run book: launches recorded before dispatch, acks and resends, results, retries, chaining."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import msgspec

from cronbus.common import messages as m
from cronbus.common.bus import node_topic
from cronbus.common.consul import keys
from cronbus.common.consul.client import TxnOp
from cronbus.common.errors import ConsulError, NotFoundError, UnavailableError
from cronbus.common.models import (
    FINISHED_STATUSES,
    ZERO_TIME,
    Execution,
    Job,
    JobStatus,
    execution_group,
    execution_id,
    now_utc,
)
from cronbus.common.schedule import parse_duration
from cronbus.services.scheduler.ledger import Ledger, Outcome, Unit
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.notify import Notifier
from cronbus.services.scheduler.registry import ExecutorRegistry, NoTargetError

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 256_000
MAX_OUTPUT_JSON = 300_000  # bytes of a record's output once JSON-encoded
MAX_BACKOFF = timedelta(minutes=5)
FAN_OUT_CHUNK = 60  # records per ledger unit (a transaction holds 64 operations)
DISABLED = "job disabled before its slot"
DELETED = "job deleted before its slot"
MOVE_SCAN = 64  # waiting runs looked at for an executor with a free slot (_move_waiting)
DISPATCH_BATCH = 200  # runs per Dispatches message at most
RECENTLY_FINISHED = 20_000  # final records remembered, so a result sent again needs no Consul read
DISPATCH_BYTES = 1024 * 1024  # about this many bytes of configuration at most (a frame over 4 MiB is dropped)

Publish = Callable[[bytes, msgspec.Struct], None]  # sends at once, never blocks (see SchedulerService._publish)
SendTo = Callable[[bytes, msgspec.Struct], None]


class Active(msgspec.Struct, kw_only=True):
    """An execution that is pending or running, as the leader tracks it."""

    record: Execution
    job: Job
    acked: bool = False  # an executor accepted it
    sent_at: float = 0.0  # monotonic time of the last dispatch (0: not sent yet)
    sends: int = 0  # dispatches sent to the current target
    refusals: int = 0  # of those, refused
    output: str = ""
    holds: str = ""  # the executor this run holds a slot of (sent there, not finished): see Dispatcher._slots
    waiting: bool = False  # held back: its executor has no free slot


# ---- status changes (pure: they return new structs, never mutate) -----------------------------------------


def _launched(ids: list[str], slot: datetime | None) -> Callable[[JobStatus], JobStatus]:
    def change(s: JobStatus) -> JobStatus:
        last = s.last_slot if slot is None or (s.last_slot and s.last_slot >= slot) else slot
        return msgspec.structs.replace(s, running=[*s.running, *ids], last_slot=last)

    return change


def _slot_done(slot: datetime) -> Callable[[JobStatus], JobStatus]:
    def change(s: JobStatus) -> JobStatus:
        if s.last_slot and s.last_slot >= slot:
            return s
        return msgspec.structs.replace(s, last_slot=slot)

    return change


def _finished(record: Execution, retry_id: str | None) -> Callable[[JobStatus], JobStatus]:
    def change(s: JobStatus) -> JobStatus:
        running = [i for i in s.running if i != record.id] + ([retry_id] if retry_id else [])
        if record.status in ("missed", "skipped"):
            return msgspec.structs.replace(s, running=running)
        if record.success:
            return msgspec.structs.replace(
                s, running=running, success_count=s.success_count + 1, last_success=record.finished_at,
                status="success",
            )  # fmt: skip
        return msgspec.structs.replace(
            s, running=running, error_count=s.error_count + 1, last_error=record.finished_at, status="failed"
        )

    return change


def fit_output(text: str, limit_bytes: int = MAX_OUTPUT_JSON) -> tuple[str, bool]:
    """The longest tail of `text` whose JSON encoding fits in limit_bytes (Consul caps a value at 512 KiB,
    and escapes such as NUL's six bytes can make 256 000 bytes of output several times larger). Returns the
    text and whether it was cut."""
    if len(msgspec.json.encode(text)) <= limit_bytes:
        return text, False
    low, high = 0, len(text)  # the number of trailing characters kept
    while low < high:
        middle = (low + high + 1) // 2
        if len(msgspec.json.encode(text[-middle:])) <= limit_bytes:
            low = middle
        else:
            high = middle - 1
    return (text[-low:] if low else ""), True


def _approx_bytes(dispatch: m.Dispatch) -> int:
    """About how big a dispatch is encoded: a job's configuration can be hundreds of kilobytes."""
    config = sum(len(k) + len(v) for k, v in dispatch.config.items())
    processors = sum(len(k) + len(v) for p in dispatch.processors.values() for k, v in p.items())
    return 256 + len(dispatch.execution_id) + len(dispatch.job_name) + config + processors


def backoff(job: Job, attempt: int) -> timedelta:
    """Delay before retry number `attempt` (1-based): retry_backoff doubled each time, capped, with jitter."""
    try:
        base = parse_duration(job.retry_backoff or "5s")
    except ValueError:
        base = timedelta(seconds=5)
    delay: timedelta = min(base * (2 ** (attempt - 1)), MAX_BACKOFF)
    return delay * random.uniform(0.9, 1.1)


class Dispatcher:
    """Everything the leader does with runs during one term. Created at takeover, dropped when leadership ends."""

    def __init__(
        self,
        *,
        term: int,
        ledger: Ledger,
        registry: ExecutorRegistry,
        publish: Publish,
        send_to: SendTo,
        job: Callable[[str], Job | None],
        children: Callable[[str], list[Job]],
        ack_timeout_s: float,
        history_limit: int,
        on_ephemeral_success: Callable[[str], None],
        metrics: SchedulerMetrics,
        is_leader: Callable[[], bool],
        notifier: Notifier,
    ) -> None:
        self.term = term
        self.ledger = ledger
        self.registry = registry
        self._publish = publish
        self._send_to = send_to
        self._job = job
        self._children = children
        self.ack_timeout_s = ack_timeout_s
        self.history_limit = history_limit
        self._on_ephemeral_success = on_ephemeral_success
        self.metrics = metrics
        self._is_leader = is_leader
        self.notifier = notifier
        self.active: dict[str, Active] = {}  # by execution id; change it through _track and _untrack only
        self._by_job: dict[str, dict[str, Active]] = {}  # the same, by job name (no scan of all per launch)
        # ids whose final record is being written (no longer in active) -> whether that write committed
        self._finishing: dict[str, asyncio.Future[bool]] = {}
        # ids this term recorded final lately, oldest first: a result sent again (its ack was slow) is known at once
        self._finished: dict[str, None] = {}
        self._written: dict[str, int] = {}  # records written per job since the last history trim
        self._deleted: set[str] = set()  # jobs seen deleted this term: nothing more of theirs is written
        self._cleanups: set[asyncio.Task[None]] = set()
        # Flow control: runs sent to an executor and not finished hold one of its `capacity` slots; a run for a
        # full executor waits here and goes when a slot frees, so an overloaded executor is not flooded with runs
        # it must refuse (and the leader does not resend refused runs in a loop).
        self._slots: dict[str, int] = {}  # node -> slots held
        self._waiting: dict[str, deque[Active]] = {}  # node -> runs waiting for a slot, oldest first
        self._freed: set[str] = set()  # nodes with waiting runs and a slot freed since _send_waiting ran
        # Waiting runs that may go to any executor their tags match (not one of a run on several executors), oldest
        # first: one that waits for a full executor goes to another with a free slot (_move_waiting, every tick).
        self._movable: dict[str, Active] = {}  # by execution id
        self._outgoing: dict[str, list[m.Dispatch]] = {}  # node -> dispatches not sent yet (_queue_dispatch)
        self._outgoing_bytes: dict[str, int] = {}  # node -> about how big those are
        self.started_at = time.monotonic()

    # ---- recovery --------------------------------------------------------------------------------------

    def adopt(self, record: Execution, job: Job) -> None:
        """An unfinished execution found in Consul at takeover (or on a replayed launch)."""
        if record.id in self.active or record.status in FINISHED_STATUSES:
            return
        active = Active(record=record, job=job, acked=record.status == "running")
        if record.node_name:  # sent by an earlier term, perhaps running: it holds a slot until resolved
            self._hold_slot(active)
        self._track(active)

    def _track(self, active: Active) -> None:
        self.active[active.record.id] = active
        self._by_job.setdefault(active.record.job_name, {})[active.record.id] = active

    def _untrack(self, record: Execution) -> None:
        self._free_slot(self.active.pop(record.id))
        self._movable.pop(record.id, None)
        of_job = self._by_job[record.job_name]
        of_job.pop(record.id)
        if not of_job:
            del self._by_job[record.job_name]

    def forget_running(self, job_name: str, ids: list[str]) -> None:
        """Drops ids from the job's running list without waiting (written with the next batch)."""
        gone = set(ids)

        def change(s: JobStatus) -> JobStatus:
            return msgspec.structs.replace(s, running=[i for i in s.running if i not in gone])

        if job_name not in self._deleted:
            self.ledger.submit(Unit(status={job_name: [change]}))

    # ---- launching -------------------------------------------------------------------------------------

    def running_of(self, name: str) -> list[Active]:
        return list(self._by_job.get(name, {}).values())

    async def launch(self, job: Job, slot: datetime, *, manual: bool = False) -> tuple[str, list[str]]:
        """Records the launch of one slot in Consul, then dispatches it. Returns (outcome, execution ids):
        outcome is "launched", "skipped" (concurrency forbid), "exists" (already launched: replayed), or
        "fenced" (no longer leader)."""
        return (await self.launch_many([(job, slot)], manual=manual))[0]

    async def launch_many(
        self, due: list[tuple[Job, datetime]], *, manual: bool = False
    ) -> list[tuple[str, list[str]]]:
        """launch() of many slots at once: every launch record is submitted before any is awaited, so they share
        transactions, and the runs are dispatched once all are committed, ahead of their slot (their executors
        start them at the slot). Outcomes in the order of `due`; a launch that failed (Consul refused it 20
        times) is logged and reported "fenced"."""
        pending: list[tuple[str, list[Execution], list[asyncio.Future[Outcome]]]] = []
        for job, slot in due:
            try:
                pending.append(await self._submit_launch(job, slot, manual))
            except (ConsulError, UnavailableError) as exc:  # replacing a run failed: this launch only
                log.error("launch failed job=%s slot=%s: %s", job.name, slot.isoformat(), exc)
                pending.append(("failed", [], []))
        outcomes = [await self._launched(job, *launch) for (job, _), launch in zip(due, pending, strict=True)]
        for (outcome, _), (_, records, _) in zip(outcomes, pending, strict=True):
            if outcome == "launched":
                for record in records:
                    await self._send_launched(record)
        return outcomes

    async def _send_launched(self, record: Execution) -> None:
        launched = self.active.get(record.id)
        if launched is None or launched.sent_at:  # the tick may have sent it already
            return
        if record.job_name in self._deleted:
            self._untrack(record)
            return
        current = self._job(record.job_name)
        if current is not None:
            launched.job = current  # an edit made since the launch was recorded applies
        if not record.manual and current is not None and current.disabled:
            self.metrics.skipped.inc()
            await self._finish(launched, msgspec.structs.replace(
                record, status="skipped", reason=DISABLED, output=DISABLED, finished_at=now_utc()))  # fmt: skip
        else:
            await self._dispatch(launched)

    def cancel_ahead(self, job_name: str, reason: str = DISABLED) -> None:
        """The job was disabled (or deleted): its runs sent ahead of their slot do not start (the executor reports
        them skipped, unless the slot came first)."""
        now = now_utc()
        for active in self.running_of(job_name):
            record = active.record
            state = self.registry.executors.get(record.node_name)
            if active.sent_at and not record.manual and record.scheduled_at > now and state is not None:
                self._send_to(state.identity, m.CancelRun(execution_id=record.id, term=self.term, reason=reason))

    def job_deleted(self, name: str) -> None:
        """The job was deleted, and its status and history with it. Runs sent ahead of their slot do not start,
        runs not sent are dropped, runs under way go on (as in Dkron) and their results are acknowledged, but
        nothing more of the job is written; what was written meanwhile (a result that raced the delete) is
        removed once the writes already queued are done."""
        self._deleted.add(name)
        self.cancel_ahead(name, DELETED)
        for active in self.running_of(name):
            if not active.sent_at and not self._may_have_run(active):
                self._untrack(active.record)
        task = asyncio.create_task(self._clean_up_after(name, self.ledger.settled()))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def job_exists(self, name: str) -> None:
        """A job of that name was created or changed: its runs are recorded (again, if it had been deleted)."""
        self._deleted.discard(name)

    async def _clean_up_after(self, name: str, written: asyncio.Future[list[Any]]) -> None:
        await written
        if name not in self._deleted:
            return  # created again meanwhile: what was written is the new job's
        self.ledger.statuses.pop(name, None)
        self._written.pop(name, None)
        try:
            removed = await self.ledger.store.delete_leftovers(name)
        except ConsulError as exc:
            log.warning("could not remove what was written of deleted job=%s: %s", name, exc)
            return
        if removed:
            log.info("job deleted: nothing of it left in Consul job=%s", name)
        else:  # created again before this ran
            log.info("job created again, kept its records job=%s", name)

    async def _submit_launch(
        self, job: Job, slot: datetime, manual: bool
    ) -> tuple[str, list[Execution], list[asyncio.Future[Outcome]]]:
        """Queues the records of one launch: ("skipped", [its record], [future]) under concurrency forbid, else
        ("launch", records, a future per chunk of records)."""
        if job.name in self._deleted:
            return "deleted", [], []
        base = execution_id(job.name, slot, 1)
        running = self.running_of(job.name)
        if running and job.concurrency == "forbid":
            record = msgspec.structs.replace(
                self._record(job, base, slot, 1, manual),
                status="skipped",
                finished_at=now_utc(),
                reason="previous run still running (concurrency forbid)",
            )
            unit = Unit(create=[record], status={job.name: [_slot_done(slot)]} if not manual else {})
            return "skipped", [record], [self.ledger.submit(unit)]
        if running and job.concurrency == "replace":
            for active in running:
                await self.kill(active.record.id, why="replaced by a newer run (concurrency replace)")
        try:
            targets = self.registry.select(job.tags)
        except NoTargetError:
            targets = [""]  # recorded, waiting for a matching executor (up to the catch-up window)
        if len(targets) == 1:
            records = [msgspec.structs.replace(self._record(job, base, slot, 1, manual), node_name=targets[0])]
        else:
            records = [
                msgspec.structs.replace(self._record(job, f"{base}.{node}", slot, 1, manual), node_name=node)
                for node in targets
            ]
        chunks = []
        for start in range(0, len(records), FAN_OUT_CHUNK):
            chunk = records[start : start + FAN_OUT_CHUNK]
            change = _launched([r.id for r in chunk], None if manual else slot)
            chunks.append(self.ledger.submit(Unit(create=chunk, status={job.name: [change]})))
        return "launch", records, chunks

    async def _launched(
        self, job: Job, kind: str, records: list[Execution], chunks: list[asyncio.Future[Outcome]]
    ) -> tuple[str, list[str]]:
        """Waits for a launch's records; tracks the ones committed."""
        if kind == "failed":
            return "fenced", []
        if kind == "deleted":
            return "deleted", []
        outcomes: list[str] = []
        for chunk in chunks:
            try:
                outcomes.append(await chunk)
            except ConsulError as exc:  # Consul refused it 20 times: these runs are not recorded, so not run
                log.error("launch not recorded job=%s: %s", job.name, exc)
                outcomes.append("failed")
        if kind == "skipped":
            if outcomes[0] == "committed":
                self.metrics.skipped.inc()
                return "skipped", [records[0].id]
            return outcomes[0], [records[0].id]
        existing: list[str] = []
        for start, outcome in zip(range(0, len(records), FAN_OUT_CHUNK), outcomes, strict=True):
            part = records[start : start + FAN_OUT_CHUNK]
            if outcome == "exists":  # launched by an earlier term (a replay): the caller adopts what it became
                existing.extend(r.id for r in part)
            elif outcome == "committed":
                for record in part:
                    self._track(Active(record=record, job=job))
        if "committed" not in outcomes and not existing:
            return "fenced", []
        if existing:
            self.metrics.deduplicated.inc()
            return "exists", existing
        return "launched", [r.id for r in records]

    def _record(self, job: Job, exec_id: str, slot: datetime, attempt: int, manual: bool) -> Execution:
        return Execution(
            id=exec_id,
            job_name=job.name,
            scheduled_at=slot,
            group=execution_group(slot),
            attempt=attempt,
            status="pending",
            term=self.term,
            manual=manual,
        )

    async def record_missed(self, job: Job, slot: datetime, status: str, reason: str) -> None:
        """A slot that will not run still gets a record saying why (semantics §4)."""
        record = msgspec.structs.replace(
            self._record(job, execution_id(job.name, slot, 1), slot, 1, False),
            status=status,
            reason=reason,
            output=reason,
            finished_at=now_utc(),
        )
        if job.name in self._deleted:
            return
        if await self.ledger.submit(Unit(create=[record], status={job.name: [_slot_done(slot)]})) == "committed":
            (self.metrics.missed if status == "missed" else self.metrics.skipped).inc()

    async def _dispatch(self, active: Active) -> None:
        record = active.record
        if record.due_at > now_utc() or not self._is_leader() or active.waiting:
            return
        if record.scheduled_at > now_utc() and not self._takes_ahead(record.node_name):
            return  # an executor of revision 0 would start it at once: the tick sends it at the slot
        needs_target = not record.node_name or not self.registry.is_live(record.node_name)
        if needs_target and (not await self._retarget(active) or record.id not in self.active):
            return  # no executor for it now, or it ended (killed, expired) while the choice was written
        if not active.holds:
            if self._full(active.record.node_name):
                active.waiting = True
                self._waiting.setdefault(active.record.node_name, deque()).append(active)
                if record.id == execution_id(record.job_name, record.scheduled_at, record.attempt):  # names no node
                    self._movable[record.id] = active
                return
            self._hold_slot(active)
        active.sent_at = time.monotonic()
        active.sends += 1
        job = active.job
        timeout_s = None
        if job.timeout:
            try:
                timeout_s = parse_duration(job.timeout).total_seconds()
            except ValueError:
                timeout_s = None
        self._queue_dispatch(
            active.record.node_name,
            m.Dispatch(
                term=self.term,
                execution_id=record.id,
                job_name=record.job_name,
                scheduled_at=record.scheduled_at,
                attempt=record.attempt,
                group=record.group,
                targets=[active.record.node_name],
                executor=job.executor,
                config=job.executor_config or {},
                timeout_s=timeout_s,
                processors=job.processors or {},
            ),
        )
        self.metrics.dispatched.inc()
        log.debug("dispatched exec=%s node=%s send=%d", record.id, active.record.node_name, active.sends)

    def _takes_ahead(self, node: str) -> bool:
        """Whether the executor holds a run sent ahead until its slot (revision 1 of the protocol)."""
        state = self.registry.executors.get(node)
        return state is not None and state.revision >= 1

    def _queue_dispatch(self, node: str, dispatch: m.Dispatch) -> None:
        """Dispatches go out per executor in batches: when DISPATCH_BATCH are queued, or at the loop's next turn
        (an executor of revision 0 gets each alone, at once)."""
        if not self._takes_ahead(node):
            self._publish(node_topic(node), dispatch)
            return
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._send_dispatches)
        queued = self._outgoing.setdefault(node, [])
        queued.append(dispatch)
        size = self._outgoing_bytes[node] = self._outgoing_bytes.get(node, 0) + _approx_bytes(dispatch)
        if len(queued) >= DISPATCH_BATCH or size >= DISPATCH_BYTES:
            self._publish(node_topic(node), m.Dispatches(runs=queued))
            del self._outgoing[node], self._outgoing_bytes[node]

    def _send_dispatches(self) -> None:
        outgoing, self._outgoing, self._outgoing_bytes = self._outgoing, {}, {}
        if self._is_leader():  # else they are dropped: a dispatch is always sent again until acknowledged
            for node, runs in outgoing.items():
                self._publish(node_topic(node), m.Dispatches(runs=runs))

    async def _retarget(self, active: Active, node: str = "") -> bool:
        """Chooses an executor (`node`, else the least busy other one) for a waiting or orphaned pending execution,
        and records the choice before dispatching it, so a new leader re-sends it to the same executor (which
        deduplicates)."""
        if active.record.job_name in self._deleted:  # it runs nowhere, and never will
            self._untrack(active.record)
            return False
        try:
            node = node or self.registry.select(active.job.tags, exclude=frozenset({active.record.node_name}))[0]
        except NoTargetError:
            return False
        self._free_slot(active)
        self._stop_waiting(active)
        active.record = msgspec.structs.replace(active.record, node_name=node)
        active.acked = False
        active.sends = active.refusals = 0
        outcome = await self.ledger.submit(Unit(update=[active.record]))
        return outcome == "committed"

    # ---- flow control ---------------------------------------------------------------------------------

    def waiting(self) -> int:
        return sum(a.waiting for a in self.active.values())

    def _full(self, node: str) -> bool:
        state = self.registry.executors.get(node)
        return state is not None and self._slots.get(node, 0) >= state.capacity

    def _hold_slot(self, active: Active) -> None:
        active.holds = active.record.node_name
        self._slots[active.holds] = self._slots.get(active.holds, 0) + 1

    def _free_slot(self, active: Active) -> None:
        if active.holds:
            self._slots[active.holds] -= 1
            if active.holds in self._waiting:
                self._freed.add(active.holds)
            active.holds = ""

    async def _send_waiting(self) -> None:
        """Sends runs that waited for a slot, as slots free."""
        while self._freed:
            node = self._freed.pop()
            queue = self._waiting.get(node)
            while queue and not self._full(node):
                active = queue.popleft()
                if active.waiting and active.record.node_name == node and active.record.id in self.active:
                    self._stop_waiting(active)
                    await self._dispatch(active)
            if queue is not None and not queue and self._waiting.get(node) is queue:
                del self._waiting[node]

    async def _move_waiting(self, node: str) -> None:
        """Sends runs waiting for other executors to `node` (none waits for it) while it has free slots: of the
        MOVE_SCAN that have waited longest, those whose tags it has. (A moved run's place in its old executor's
        queue is skipped when reached.)"""
        for active in list(itertools.islice(self._movable.values(), MOVE_SCAN)):
            if self._full(node):
                return
            movable = active.record.id in self._movable and self.registry.matches(node, active.job.tags)
            if movable and await self._retarget(active, node):
                await self._dispatch(active)

    def _stop_waiting(self, active: Active) -> None:
        active.waiting = False
        self._movable.pop(active.record.id, None)

    # ---- from executors --------------------------------------------------------------------------------

    def on_accepted(self, msg: m.DispatchAccepted) -> None:
        for exec_id in msg.execution_ids or [msg.execution_id]:
            active = self.active.get(exec_id)
            if active is not None and active.record.node_name == msg.node:
                active.acked = True

    async def on_refused(self, msg: m.DispatchRefused) -> None:
        active = self.active.get(msg.execution_id)
        if active is None or active.record.node_name != msg.node or active.acked:
            return
        active.refusals += 1
        log.info("dispatch refused exec=%s node=%s: %s", msg.execution_id, msg.node, msg.reason)
        if active.refusals < active.sends:
            return  # a later send to the same executor is still unanswered: it may be accepted
        if await self._retarget(active):
            await self._dispatch(active)

    async def on_started(self, msg: m.ExecutionStarted) -> None:
        active = self.active.get(msg.execution_id)
        if active is None:
            return
        active.acked = True
        self._observe_lag(active.record, msg.started_at)
        active.record = msgspec.structs.replace(
            active.record, status="running", started_at=msg.started_at, node_name=msg.node
        )
        if active.record.job_name not in self._deleted:
            await self.ledger.submit(Unit(update=[active.record]))
            self.notifier.starting(active.job, active.record)

    def _observe_lag(self, record: Execution, started_at: datetime) -> None:
        """Slot to start of a scheduled run's first attempt, counted once (while its record is still pending)."""
        if not record.manual and record.attempt == 1 and record.status == "pending":
            self.metrics.lag.observe(max(0.0, (started_at - record.scheduled_at).total_seconds()))

    async def on_output(self, msg: m.OutputProduced) -> None:
        active = self.active.get(msg.execution_id)
        if active is None:
            return
        active.output = (active.output + msg.chunk)[-OUTPUT_LIMIT:]
        self._publish(
            m.output_topic(msg.execution_id), m.OutputPublished(execution_id=msg.execution_id, chunk=msg.chunk)
        )

    async def on_finished(self, msg: m.ExecutionFinished) -> None:
        writing = self._finishing.get(msg.execution_id)
        if writing is not None:  # the same result again: handled (and acknowledged) only if that write commits
            if not await asyncio.shield(writing):
                raise UnavailableError(f"result of {msg.execution_id} not recorded")
            return
        active = self.active.get(msg.execution_id) or await self._adopt_reported(msg.job_name, msg.execution_id)
        if active is None:
            return  # finished before (a resend), or its job is gone
        if msg.status == "skipped" and msg.job_name not in self._deleted:  # cancelled before its slot (cancel_ahead)
            self.metrics.skipped.inc()
        if active.record.status == "pending" and msg.started_at != ZERO_TIME:  # ended before it was reported started
            self._observe_lag(active.record, msg.started_at)
            if msg.job_name not in self._deleted:
                running = msgspec.structs.replace(
                    active.record, status="running", started_at=msg.started_at, node_name=msg.node
                )
                self.notifier.starting(active.job, running)  # its pre-run webhook, late but before the other
        output, cut = fit_output(msg.output)
        record = msgspec.structs.replace(
            active.record,
            status=msg.status,
            success=msg.status == "success",
            exit_code=msg.exit_code,
            reason=msg.reason,
            output=output,
            output_truncated=msg.output_truncated or cut,
            node_name=msg.node,
            started_at=msg.started_at if msg.started_at != ZERO_TIME else active.record.started_at,
            finished_at=msg.finished_at if msg.finished_at != ZERO_TIME else now_utc(),
        )
        await self._finish(active, record)

    async def _adopt_reported(self, job_name: str, execution_id: str) -> Active | None:
        """A result of a run this term does not track. If Consul has its record unfinished (an earlier term launched
        it, and this one has not adopted it yet), adopt it: acknowledged, the result would be gone unrecorded."""
        job = self._job(job_name)
        if job is None or execution_id in self._finishing or execution_id in self._finished:
            return None
        try:
            record = await self.ledger.store.get_execution(job_name, execution_id)
        except NotFoundError:
            return None
        self.adopt(record, job)
        return self.active.get(execution_id)

    async def on_executor_lost(self, node: str) -> None:
        for active in [a for a in self.active.values() if a.record.node_name == node]:
            if active.record.node_name != node or active.record.id not in self.active:
                continue  # handled meanwhile (finished, or sent elsewhere)
            if active.acked or self._may_have_run(active):
                await self._lost(active)
            elif await self._retarget(active):  # recorded for it, never sent: it goes elsewhere
                await self._dispatch(active)

    def _may_have_run(self, active: Active) -> bool:
        """Sent and not confirmed, by this term or (adopted) an earlier one: only its executor knows whether it
        runs, and the run is never sent to another one on a guess (semantics §3.4)."""
        return bool(active.record.node_name) and (active.sent_at > 0 or active.record.term < self.term)

    async def _lost(self, active: Active) -> None:
        """Its executor is dead: the run failed (semantics §3.5), and retries apply."""
        record = msgspec.structs.replace(
            active.record, status="failed", success=False, reason="executor lost",
            output=(active.output + "\n[cronbus] executor lost").lstrip("\n"), finished_at=now_utc(),
        )  # fmt: skip
        await self._finish(active, record)

    async def _finish(self, active: Active, record: Execution) -> None:
        """Writes the final record; schedules a retry, triggers children, deletes an ephemeral job."""
        job = self._job(record.job_name) or active.job
        self._untrack(record)
        written = asyncio.get_running_loop().create_future()
        self._finishing[record.id] = written  # before any wait: a resent result must find it
        try:
            # Its slot is free: a run waiting for that executor goes now, not after the write.
            await self._send_waiting()
            await self._write_final(job, record)
            written.set_result(True)
            self._finished[record.id] = None
            if len(self._finished) > RECENTLY_FINISHED:
                del self._finished[next(iter(self._finished))]
        finally:
            if not written.done():
                written.set_result(False)
            del self._finishing[record.id]

    async def _write_final(self, job: Job, record: Execution) -> None:
        if job.name in self._deleted:
            log.info("result of a deleted job not kept job=%s exec=%s status=%s", job.name, record.id, record.status)
            return
        retry: Execution | None = None
        if record.status in ("failed", "timeout") and record.attempt <= job.retries:  # attempts that ran and failed
            retry_id = execution_id(job.name, record.scheduled_at, record.attempt + 1)
            retry = msgspec.structs.replace(
                self._record(job, retry_id, record.scheduled_at, record.attempt + 1, record.manual),
                group=record.group,
                due_at=now_utc() + backoff(job, record.attempt),
            )
        unit = Unit(
            update=[record],
            create=[retry] if retry else [],
            status={job.name: [_finished(record, retry.id if retry else None)]},
        )
        outcome = await self.ledger.submit(unit)
        if outcome != "committed":  # fenced: this term is over, and the result must reach the next leader
            raise UnavailableError(f"result of {record.id} not recorded: {outcome}")
        # History is trimmed off this path, every tenth of history_limit records (see jobs_to_trim).
        self._written[job.name] = self._written.get(job.name, 0) + 1
        self.metrics.finished.inc(status=record.status)
        self.notifier.finished(job, record)
        self._publish(m.output_topic(record.id), m.ExecutionEnded(execution_id=record.id, status=record.status))
        log.log(
            logging.DEBUG if record.success else logging.INFO,
            "execution finished job=%s exec=%s status=%s node=%s",
            job.name,
            record.id,
            record.status,
            record.node_name,
        )
        if retry is not None:
            self.metrics.retries.inc()
            self._track(Active(record=retry, job=job))
            return
        group_open = any(a.record.group == record.group for a in self.running_of(job.name))
        if not group_open and record.status not in ("missed", "skipped"):  # only a run that ran triggers children
            await self._chain(job, record)
        if record.success and job.ephemeral:
            self._on_ephemeral_success(job.name)

    async def _chain(self, parent: Job, record: Execution) -> None:
        for child in self._children(parent.name):
            wanted = child.trigger_on or "success"
            if wanted == "always" or (wanted == "success") == record.success:
                # The child's slot is the parent's, so a replayed parent result cannot launch it twice.
                await self.launch(child, record.scheduled_at, manual=True)

    def jobs_to_trim(self) -> list[str]:
        due = [name for name, count in self._written.items() if count >= max(1, self.history_limit // 10)]
        for name in due:
            self._written[name] = 0
        return due

    async def trim(self, job_name: str, record_keys: list[str]) -> None:
        """Deletes the oldest records beyond history_limit (ids sort by scheduled time)."""
        excess = len(record_keys) - self.history_limit
        if excess <= 0:
            return
        active = {keys.execution(job_name, i) for i in (*self.active, *self._finishing)}
        doomed = [k for k in record_keys[:excess] if k not in active]
        for start in range(0, len(doomed), FAN_OUT_CHUNK):
            await self.ledger.submit(Unit(delete=[TxnOp("delete", k) for k in doomed[start : start + FAN_OUT_CHUNK]]))

    # ---- control ---------------------------------------------------------------------------------------

    async def kill(self, exec_id: str, why: str = "killed on request") -> bool:
        active = self.active.get(exec_id)
        if active is None:
            return False
        state = self.registry.executors.get(active.record.node_name)
        if active.acked and state is not None:
            self._send_to(state.identity, m.KillRequested(execution_id=exec_id, term=self.term))
            return True
        record = msgspec.structs.replace(
            active.record, status="killed", success=False, reason=why, output=why, finished_at=now_utc()
        )
        await self._finish(active, record)
        return True

    def busy(self) -> list[Execution]:
        return [
            msgspec.structs.replace(a.record, output=a.output)
            for a in sorted(self.active.values(), key=lambda a: a.record.scheduled_at)
            if a.record.due_at <= now_utc()
        ]

    # ---- periodic ----------------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Resends unacknowledged dispatches, dispatches due retries and waiting runs, resolves lost
        executors, and gives up on runs that waited longer than their catch-up window."""
        for node in [s.node for s in self.registry.reap()]:
            await self.on_executor_lost(node)
        self._freed.update(n for n in self._waiting if not self._full(n))  # e.g. back with a greater capacity
        await self._send_waiting()
        if self._movable:  # runs wait for full executors: the others take them
            for state in self.registry.live():
                if state.node not in self._waiting:
                    await self._move_waiting(state.node)
        now = time.monotonic()
        wall = now_utc()
        for active in list(self.active.values()):
            if active.acked or active.waiting or active.record.id not in self.active:
                continue  # a waiting run goes when its executor frees a slot (_send_waiting): capacity is not failure
            if active.sent_at and now - active.sent_at < self.ack_timeout_s:
                continue
            if not active.sent_at and max(active.record.due_at, active.record.scheduled_at) > wall:
                continue  # not due yet (a retry in backoff, or a launch recorded ahead of its slot)
            if await self._expired(active, wall):
                continue
            if self._may_have_run(active) and not self.registry.is_live(active.record.node_name):
                # Its executor is not here. One that this leader knows is judged by its heartbeats (it comes
                # back, or on_executor_lost fails the run); one that never said hello to this leader gets the
                # time executors take to reconnect after a leader change, then its run is lost.
                never_seen = active.record.node_name not in self.registry.executors
                if never_seen and now - self.started_at >= self.registry.dead_after_s:
                    await self._lost(active)
                continue
            await self._dispatch(active)

    async def _expired(self, active: Active, wall: datetime) -> bool:
        try:
            window = parse_duration(active.job.catchup_window or "1h")
        except ValueError:
            window = timedelta(hours=1)
        if active.sent_at or active.record.manual or wall - active.record.scheduled_at <= window:
            return False
        shown = ", ".join(f"{k}={v}" for k, v in sorted((active.job.tags or {}).items())) or "(any)"
        record = msgspec.structs.replace(
            active.record, status="missed", reason=f"no executor matches tags {shown} within the catch-up window",
            finished_at=wall,
        )  # fmt: skip
        record = msgspec.structs.replace(record, output=record.reason)
        await self._finish(active, record)
        return True
