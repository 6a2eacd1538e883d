"""The leader's runs during one term: wires the run book, sending, launching, results and history together."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import msgspec

from cronbus.common import messages as m
from cronbus.common.errors import ConsulError, ValidationError
from cronbus.common.models import Execution, Job, JobStatus, now_utc, with_running
from cronbus.common.schedule import parse_duration
from cronbus.common.tracing import NO_TRACING, Tracing
from cronbus.services.scheduler.history import History
from cronbus.services.scheduler.launching import DISABLED, Launcher, LaunchOutcome, MissedStatus
from cronbus.services.scheduler.ledger import Ledger, Unit
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.notify import Notifier
from cronbus.services.scheduler.ports import Jobs, Wire
from cronbus.services.scheduler.registry import ExecutorRegistry
from cronbus.services.scheduler.results import Results
from cronbus.services.scheduler.runs import Active, RunBook
from cronbus.services.scheduler.sending import Sender

log = logging.getLogger(__name__)

DELETED = "job deleted before its slot"


class Dispatcher:
    """Everything the leader does with runs during one term. Created at takeover, dropped when leadership ends.
    Each role owns its state: `runs` (RunBook) the runs of the term, `sender` (Sender) the executors' slots and
    what waits for one, `launcher` (Launcher) launches, `results` (Results) what executors report and final
    records, `history` (History) trimming; this object wires them and runs the tick."""

    def __init__(
        self,
        *,
        term: int,
        ledger: Ledger,
        registry: ExecutorRegistry,
        wire: Wire,
        jobs: Jobs,
        ack_timeout_s: float,
        history_limit: int,
        metrics: SchedulerMetrics,
        notifier: Notifier,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.term = term
        self.ledger = ledger
        self.registry = registry
        self.ack_timeout_s = ack_timeout_s
        self._wire = wire
        self.runs = RunBook()
        self.sender = Sender(term=term, runs=self.runs, ledger=ledger, registry=registry, wire=wire, metrics=metrics)
        self.history = History(ledger=ledger, runs=self.runs, history_limit=history_limit)
        self.results = Results(
            term=term, runs=self.runs, sender=self.sender, ledger=ledger, registry=registry, wire=wire, jobs=jobs,
            launches=self, history=self.history, metrics=metrics, notifier=notifier,
        )  # fmt: skip
        self.launcher = Launcher(
            term=term, runs=self.runs, sender=self.sender, ledger=ledger, registry=registry, jobs=jobs,
            finisher=self.results, metrics=metrics, tracing=tracing,
        )  # fmt: skip
        self._cleanups: set[asyncio.Task[None]] = set()
        self.started_at = time.monotonic()

    # ---- recovery --------------------------------------------------------------------------------------

    def adopt(self, record: Execution, job: Job) -> None:
        """An unfinished execution found in Consul at takeover (or on a replayed launch)."""
        self.sender.adopt(record, job)

    def forget_running(self, job_name: str, ids: list[str]) -> None:
        """Drops ids from the job's running list without waiting (written with the next batch)."""
        gone = set(ids)

        def change(s: JobStatus) -> JobStatus:
            return with_running(s, [i for i in s.running if i not in gone])

        if not self.runs.is_deleted(job_name):
            self.ledger.submit(Unit(status={job_name: [change]}))

    # ---- launching -------------------------------------------------------------------------------------

    async def launch(
        self, job: Job, slot: datetime, *, manual: bool = False, trace: dict[str, str] | None = None
    ) -> tuple[LaunchOutcome, list[str]]:
        """See Launcher.launch."""
        return await self.launcher.launch(job, slot, manual=manual, trace=trace)

    async def launch_many(
        self, due: list[tuple[Job, datetime]], *, manual: bool = False
    ) -> list[tuple[LaunchOutcome, list[str]]]:
        """See Launcher.launch_many."""
        return await self.launcher.launch_many(due, manual=manual)

    async def record_missed(self, job: Job, slot: datetime, status: MissedStatus, reason: str) -> None:
        """See Launcher.record_missed."""
        await self.launcher.record_missed(job, slot, status, reason)

    # ---- jobs ------------------------------------------------------------------------------------------

    def cancel_ahead(self, job_name: str, reason: str = DISABLED) -> None:
        """The job was disabled (or deleted): its runs sent ahead of their slot do not start (the executor reports
        them skipped, unless the slot came first)."""
        now = now_utc()
        for active in self.runs.of_job(job_name):
            record = active.record
            state = self.registry.executors.get(record.node_name)
            if active.sent_at and not record.manual and record.scheduled_at > now and state is not None:
                self._wire.send_to(state.identity, m.CancelRun(execution_id=record.id, term=self.term, reason=reason))

    def job_deleted(self, name: str) -> None:
        """The job was deleted, and its status and history with it. Runs sent ahead of their slot do not start,
        runs not sent are dropped, runs under way go on (as in Dkron) and their results are acknowledged, but
        nothing more of the job is written; what was written meanwhile (a result that raced the delete) is
        removed once the writes already queued are done."""
        self.runs.mark_deleted(name)
        self.cancel_ahead(name, DELETED)
        for active in self.runs.of_job(name):
            if not active.sent_at and not self.sender.may_have_run(active):
                self.sender.untrack(active.record)
        task = asyncio.create_task(self._clean_up_after(name, self.ledger.settled()))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def job_exists(self, name: str) -> None:
        """A job of that name was created or changed: its runs are recorded (again, if it had been deleted)."""
        self.runs.mark_exists(name)

    async def _clean_up_after(self, name: str, written: asyncio.Future[list[Any]]) -> None:
        await written
        if not self.runs.is_deleted(name):
            return  # created again meanwhile: what was written is the new job's
        self.ledger.forget_status(name)
        self.history.forget(name)
        try:
            removed = await self.ledger.delete_leftovers(name)
        except ConsulError as exc:
            log.warning("could not remove what was written of deleted job=%s: %s", name, exc)
            return
        if removed:
            log.info("job deleted: nothing of it left in Consul job=%s", name)
        else:  # created again before this ran
            log.info("job created again, kept its records job=%s", name)

    # ---- from executors --------------------------------------------------------------------------------

    def on_accepted(self, msg: m.DispatchAccepted) -> None:
        self.results.on_accepted(msg)

    async def on_refused(self, msg: m.DispatchRefused) -> None:
        await self.results.on_refused(msg)

    async def on_started(self, msg: m.ExecutionStarted) -> None:
        await self.results.on_started(msg)

    async def on_output(self, msg: m.OutputProduced) -> None:
        await self.results.on_output(msg)

    async def on_finished(self, msg: m.ExecutionFinished) -> None:
        await self.results.on_finished(msg)

    # ---- control ---------------------------------------------------------------------------------------

    async def kill(self, exec_id: str, why: str = "killed on request") -> bool:
        """See Results.kill."""
        return await self.results.kill(exec_id, why)

    def busy(self) -> list[Execution]:
        return [
            msgspec.structs.replace(a.record, output=a.output)
            for a in sorted(self.runs, key=lambda a: a.record.scheduled_at)
            if a.record.due_at <= now_utc()
        ]

    def waiting(self) -> int:
        """Runs due and held until their executor has a free slot."""
        return self.sender.waiting()

    def jobs_to_trim(self) -> list[str]:
        return self.history.jobs_to_trim()

    async def trim(self, job_name: str, record_keys: list[str]) -> None:
        await self.history.trim(job_name, record_keys)

    # ---- periodic ----------------------------------------------------------------------------------------

    async def tick(self) -> None:
        """Resends unacknowledged dispatches, dispatches due retries and waiting runs, resolves lost
        executors, and gives up on runs that waited longer than their catch-up window."""
        for node in [s.node for s in self.registry.reap()]:
            await self.results.on_executor_lost(node)
        await self.sender.unblock()
        now = time.monotonic()
        wall = now_utc()
        for active in self.runs.all():
            if not self._awaited(active, now, wall):
                await self._resend(active, now, wall)

    def _awaited(self, active: Active, now: float, wall: datetime) -> bool:
        """Whether nothing is to be done for the run now: acknowledged, waiting for a slot (it goes when its
        executor frees one: capacity is not failure), ended, sent lately, or not due."""
        if active.acked or active.waiting or active.record.id not in self.runs:
            return True
        if active.sent_at:
            return now - active.sent_at < self.ack_timeout_s
        # not due yet: a retry in backoff, or a launch recorded ahead of its slot
        return max(active.record.due_at, active.record.scheduled_at) > wall

    async def _resend(self, active: Active, now: float, wall: datetime) -> None:
        if await self._expired(active, wall):
            return
        if self.sender.may_have_run(active) and not self.registry.is_live(active.record.node_name):
            # Its executor is not here. One that this leader knows is judged by its heartbeats (it comes
            # back, or on_executor_lost fails the run); one that never said hello to this leader gets the
            # time executors take to reconnect after a leader change, then its run is lost.
            never_seen = active.record.node_name not in self.registry.executors
            if never_seen and now - self.started_at >= self.registry.dead_after_s:
                await self.results.lost(active)
            return
        await self.sender.dispatch(active)

    async def _expired(self, active: Active, wall: datetime) -> bool:
        try:
            window = parse_duration(active.job.catchup_window or "1h")
        except ValidationError:
            window = timedelta(hours=1)
        if active.sent_at or active.record.manual or wall - active.record.scheduled_at <= window:
            return False
        shown = ", ".join(f"{k}={v}" for k, v in sorted((active.job.tags or {}).items())) or "(any)"
        record = msgspec.structs.replace(
            active.record, status="missed", reason=f"no executor matches tags {shown} within the catch-up window",
            finished_at=wall,
        )  # fmt: skip
        record = msgspec.structs.replace(record, output=record.reason)
        await self.results.finish(active, record)
        return True
