"""Launching runs: each launch recorded in Consul before it is sent, the concurrency policy, missed slots."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Literal, Protocol, assert_never

import msgspec

from cronbus.common.errors import ConsulError, UnavailableError
from cronbus.common.models import Execution, Job, JobStatus, concurrency_of, execution_group, execution_id, now_utc
from cronbus.common.tracing import NO_TRACING, Attributes, Span, Tracing
from cronbus.services.scheduler.ledger import Ledger, Outcome, Unit
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.ports import Jobs
from cronbus.services.scheduler.registry import ExecutorRegistry, NoTargetError
from cronbus.services.scheduler.runs import Active, RunBook
from cronbus.services.scheduler.sending import Sender

log = logging.getLogger(__name__)

FAN_OUT_CHUNK = 60  # records per ledger unit (a transaction holds 64 operations)
DISABLED = "job disabled before its slot"

# What became of a launch:
# launched: recorded (every record, or those of the chunks that committed) and sent;
# skipped: recorded skipped (concurrency forbid, a run of the job still runs);
# exists: recorded by an earlier term (a replay): the ids are of those records, for the caller to adopt;
# fenced: nothing recorded (no longer leader, or Consul refused every record 20 times);
# deleted: the job was deleted this term, nothing recorded;
# failed: under concurrency forbid, the skipped record could not be written (Consul refused it 20 times).
LaunchOutcome = Literal["launched", "skipped", "exists", "fenced", "deleted", "failed"]
MissedStatus = Literal["missed", "skipped"]

_Queued = Literal["launch", "skipped", "deleted", "failed"]  # a launch queued in the ledger (Launcher._submit)
_Written = Outcome | Literal["failed"]  # what became of a chunk of a launch's records


class Finisher(Protocol):
    """Ends runs (results.Results implements it): a launch ends runs it replaces or finds disabled."""

    async def finish(self, active: Active, record: Execution) -> None: ...

    async def kill(self, exec_id: str, why: str = ...) -> bool: ...


def new_record(job: Job, exec_id: str, slot: datetime, attempt: int, manual: bool, term: int) -> Execution:
    """A pending record of one attempt of a run of `job`'s slot, launched by `term`."""
    return Execution(
        id=exec_id,
        job_name=job.name,
        scheduled_at=slot,
        group=execution_group(slot),
        attempt=attempt,
        status="pending",
        term=term,
        manual=manual,
    )


def _add_running(ids: list[str], slot: datetime | None) -> Callable[[JobStatus], JobStatus]:
    """A status change: `ids` are under way, and `slot` (a scheduled launch's) is accounted for."""

    def change(s: JobStatus) -> JobStatus:
        last = s.last_slot if slot is None or (s.last_slot and s.last_slot >= slot) else slot
        return msgspec.structs.replace(s, running=[*s.running, *ids], last_slot=last)

    return change


def slot_done(slot: datetime) -> Callable[[JobStatus], JobStatus]:
    """A status change: `slot` is accounted for (it was recorded missed or skipped)."""

    def change(s: JobStatus) -> JobStatus:
        if s.last_slot and s.last_slot >= slot:
            return s
        return msgspec.structs.replace(s, last_slot=slot)

    return change


class Launcher:
    """Launches the slots of a term: records, then tracks and sends, every run of a slot."""

    def __init__(
        self, *, term: int, runs: RunBook, sender: Sender, ledger: Ledger, registry: ExecutorRegistry, jobs: Jobs,
        finisher: Finisher, metrics: SchedulerMetrics, tracing: Tracing = NO_TRACING,
    ) -> None:  # fmt: skip
        self._tracing = tracing
        self._term = term
        self._runs = runs
        self._sender = sender
        self._ledger = ledger
        self._registry = registry
        self._jobs = jobs
        self._finisher = finisher
        self._metrics = metrics

    async def launch(
        self, job: Job, slot: datetime, *, manual: bool = False, trace: dict[str, str] | None = None
    ) -> tuple[LaunchOutcome, list[str]]:
        """Records the launch of one slot in Consul, then dispatches it. Returns the outcome (see LaunchOutcome)
        and the execution ids it concerns ([] when fenced or deleted). `trace`: the context of the request that
        asked for the run, if any."""
        return (await self.launch_many([(job, slot)], manual=manual, trace=trace))[0]

    async def launch_many(
        self, due: list[tuple[Job, datetime]], *, manual: bool = False, trace: dict[str, str] | None = None
    ) -> list[tuple[LaunchOutcome, list[str]]]:
        """launch() of many slots at once: every launch record is submitted before any is awaited, so they share
        transactions, and the runs are dispatched once all are committed, ahead of their slot (their executors
        start them at the slot). Outcomes in the order of `due`; a launch that failed (Consul refused it 20
        times) is logged and reported "fenced"."""
        pending: list[tuple[_Queued, list[Execution], list[asyncio.Future[Outcome]]]] = []
        spans = [self._span(job, slot, manual, trace) for job, slot in due]
        for job, slot in due:
            try:
                pending.append(await self._submit(job, slot, manual))
            except (ConsulError, UnavailableError) as exc:  # replacing a run failed: this launch only
                log.error("launch failed job=%s slot=%s: %s", job.name, slot.isoformat(), exc)
                pending.append(("failed", [], []))
        outcomes = [
            await self._written(job, *launch, trace=span.carrier())
            for (job, _), launch, span in zip(due, pending, spans, strict=True)
        ]
        for (outcome, ids), (_, records, _), span in zip(outcomes, pending, spans, strict=True):
            if outcome == "launched":
                for record in records:
                    await self._send_launched(record)
            span.set("cronbus.outcome", outcome)
            span.set("cronbus.execution_id", ",".join(ids))
            span.end()
        return outcomes

    def _span(self, job: Job, slot: datetime, manual: bool, trace: dict[str, str] | None) -> Span:
        """The launch's span: from the decision to the record committed and the run sent (docs/metrics.md,
        "Traces")."""
        attributes: Attributes = {"cronbus.job": job.name, "cronbus.scheduled_at": slot.isoformat(),
                                  "cronbus.manual": manual}  # fmt: skip
        return self._tracing.start("cronbus.launch", parent=trace, attributes=attributes)

    async def _send_launched(self, record: Execution) -> None:
        launched = self._runs.get(record.id)
        if launched is None or launched.sent_at:  # the tick may have sent it already
            return
        if self._runs.is_deleted(record.job_name):
            self._sender.untrack(record)
            return
        current = self._jobs.job(record.job_name)
        if current is not None:
            launched.job = current  # an edit made since the launch was recorded applies
        if not record.manual and current is not None and current.disabled:
            self._metrics.skipped.inc()
            await self._finisher.finish(launched, msgspec.structs.replace(
                record, status="skipped", reason=DISABLED, output=DISABLED, finished_at=now_utc()))  # fmt: skip
        else:
            await self._sender.dispatch(launched)

    async def _submit(
        self, job: Job, slot: datetime, manual: bool
    ) -> tuple[_Queued, list[Execution], list[asyncio.Future[Outcome]]]:
        """Queues the records of one launch: ("skipped", [its record], [future]) under concurrency forbid, else
        ("launch", records, a future per chunk of records); ("deleted", [], []) for a job deleted this term."""
        if self._runs.is_deleted(job.name):
            return "deleted", [], []
        running = self._runs.of_job(job.name)
        if running:
            policy = concurrency_of(job)
            match policy:
                case "forbid":
                    return self._submit_skipped(job, slot, manual)
                case "replace":
                    for active in running:
                        await self._finisher.kill(active.record.id, why="replaced by a newer run (concurrency replace)")
                case "allow":
                    pass
                case _:
                    assert_never(policy)
        records = self._records(job, slot, manual)
        chunks = []
        for start in range(0, len(records), FAN_OUT_CHUNK):
            chunk = records[start : start + FAN_OUT_CHUNK]
            change = _add_running([r.id for r in chunk], None if manual else slot)
            chunks.append(self._ledger.submit(Unit(create=chunk, status={job.name: [change]})))
        return "launch", records, chunks

    def _submit_skipped(
        self, job: Job, slot: datetime, manual: bool
    ) -> tuple[_Queued, list[Execution], list[asyncio.Future[Outcome]]]:
        record = msgspec.structs.replace(
            new_record(job, execution_id(job.name, slot, 1), slot, 1, manual, self._term),
            status="skipped",
            finished_at=now_utc(),
            reason="previous run still running (concurrency forbid)",
        )
        unit = Unit(create=[record], status={job.name: [slot_done(slot)]} if not manual else {})
        return "skipped", [record], [self._ledger.submit(unit)]

    def _records(self, job: Job, slot: datetime, manual: bool) -> list[Execution]:
        """The records of a launch: one per executor chosen (one that waits for a matching executor, up to the
        catch-up window, when there is none)."""
        base = execution_id(job.name, slot, 1)
        try:
            targets = self._registry.select(job.tags)
        except NoTargetError:
            targets = [""]
        if len(targets) == 1:
            return [msgspec.structs.replace(new_record(job, base, slot, 1, manual, self._term), node_name=targets[0])]
        return [
            msgspec.structs.replace(new_record(job, f"{base}.{node}", slot, 1, manual, self._term), node_name=node)
            for node in targets
        ]

    async def _written(
        self,
        job: Job,
        queued: _Queued,
        records: list[Execution],
        chunks: list[asyncio.Future[Outcome]],
        *,
        trace: dict[str, str],
    ) -> tuple[LaunchOutcome, list[str]]:
        """Waits for a launch's records; tracks the ones committed."""
        match queued:
            case "failed":
                return "fenced", []
            case "deleted":
                return "deleted", []
            case "skipped":
                return self._skipped((await self._chunks_written(job, chunks))[0], records[0])
            case "launch":
                return self._launched(job, records, await self._chunks_written(job, chunks), trace)
            case _:
                assert_never(queued)

    async def _chunks_written(self, job: Job, chunks: list[asyncio.Future[Outcome]]) -> list[_Written]:
        outcomes: list[_Written] = []
        for chunk in chunks:
            try:
                outcomes.append(await chunk)
            except ConsulError as exc:  # Consul refused it 20 times: these runs are not recorded, so not run
                log.error("launch not recorded job=%s: %s", job.name, exc)
                outcomes.append("failed")
        return outcomes

    def _skipped(self, written: _Written, record: Execution) -> tuple[LaunchOutcome, list[str]]:
        if written == "committed":
            self._metrics.skipped.inc()
            return "skipped", [record.id]
        return written, [record.id]

    def _launched(
        self, job: Job, records: list[Execution], written: list[_Written], trace: dict[str, str]
    ) -> tuple[LaunchOutcome, list[str]]:
        existing: list[str] = []
        for start, outcome in zip(range(0, len(records), FAN_OUT_CHUNK), written, strict=True):
            part = records[start : start + FAN_OUT_CHUNK]
            if outcome == "exists":  # launched by an earlier term (a replay): the caller adopts what it became
                existing.extend(r.id for r in part)
            elif outcome == "committed":
                for record in part:
                    self._sender.track(Active(record=record, job=job, trace=trace))
        if "committed" not in written and not existing:
            return "fenced", []
        if existing:
            self._metrics.deduplicated.inc()
            return "exists", existing
        return "launched", [r.id for r in records]

    async def record_missed(self, job: Job, slot: datetime, status: MissedStatus, reason: str) -> None:
        """A slot that will not run still gets a record saying why (docs/semantics.md §4)."""
        record = msgspec.structs.replace(
            new_record(job, execution_id(job.name, slot, 1), slot, 1, False, self._term),
            status=status,
            reason=reason,
            output=reason,
            finished_at=now_utc(),
        )
        if self._runs.is_deleted(job.name):
            return
        if await self._ledger.submit(Unit(create=[record], status={job.name: [slot_done(slot)]})) == "committed":
            (self._metrics.missed if status == "missed" else self._metrics.skipped).inc()
