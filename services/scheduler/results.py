"""Results of runs: what executors report, and what a final record brings (retries, lanes, chaining, ephemeral)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from cronbus.common import messages as m
from cronbus.common.errors import CorruptRecordError, NotFoundError, UnavailableError, ValidationError
from cronbus.common.models import (
    ZERO_TIME,
    Execution,
    Job,
    JobStatus,
    RunStatus,
    execution_id,
    now_utc,
    trigger_of,
    with_running,
)
from cronbus.common.schedule import parse_duration
from cronbus.services.scheduler.history import History
from cronbus.services.scheduler.launching import LaunchOutcome, new_record
from cronbus.services.scheduler.ledger import Ledger, Unit
from cronbus.services.scheduler.metrics import SchedulerMetrics
from cronbus.services.scheduler.notify import Notifier
from cronbus.services.scheduler.ports import Jobs, Wire
from cronbus.services.scheduler.registry import ExecutorRegistry
from cronbus.services.scheduler.runs import Active, RunBook, lane_of
from cronbus.services.scheduler.sending import Sender

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 256_000
MAX_OUTPUT_JSON = 300_000  # bytes of a record's output once JSON-encoded
MAX_BACKOFF = timedelta(minutes=5)


class Launches(Protocol):
    """Launches a slot of a job (launching.Launcher, through the Dispatcher): a parent's result launches its
    children."""

    async def launch(
        self, job: Job, slot: datetime, *, manual: bool = False, trace: dict[str, str] | None = None
    ) -> tuple[LaunchOutcome, list[str]]: ...


class FailureStreak:
    """What `_final_status` found of a job's failed runs in a row: `disabled` is the reason when this run's failure
    reached the job's disable_after_failures ("" otherwise), as of the change that was written (a change applied
    again, after a check-and-set conflict, says it again)."""

    def __init__(self) -> None:
        self.disabled = ""


def _final_status(
    record: Execution, retry_id: str | None, run_status: RunStatus, *, run_open: bool = False,
    job_disabled: bool = False, disable_after: int = 0, streak: FailureStreak | None = None,
) -> Callable[[JobStatus], JobStatus]:  # fmt: skip
    """The job's status once `record` is final: counters, `run_status` (its run's, see RunLanes), and the failed runs
    in a row, counted once a run is over (`run_open`: a retry or another executor's part is still to come): a run
    that did not succeed everywhere adds one, a success resets them (a run of a job disabled already, as a manual
    one, leaves them); at `disable_after` (when set) they reset and `streak.disabled` says why the job is to be
    disabled (docs/semantics.md §6)."""

    def change(s: JobStatus) -> JobStatus:
        s = with_running(s, [i for i in s.running if i != record.id] + ([retry_id] if retry_id else []))
        if record.status in ("missed", "skipped"):
            return s
        if streak is not None:
            streak.disabled = ""
        if record.success:
            s = msgspec.structs.replace(
                s, success_count=s.success_count + 1, last_success=record.finished_at, status=run_status
            )
        else:
            s = msgspec.structs.replace(
                s, error_count=s.error_count + 1, last_error=record.finished_at, status=run_status
            )
        if run_open or retry_id or record.status == "killed" or job_disabled:
            return s  # the run goes on, someone stopped it, or the job is off: not the job failing
        if run_status == "success":
            return msgspec.structs.replace(s, failed_in_a_row=0, disabled_reason="")
        failed = s.failed_in_a_row + 1
        if not disable_after or failed < disable_after:
            return msgspec.structs.replace(s, failed_in_a_row=failed, disabled_reason="")
        reason = f"disabled after {failed} failed runs in a row (the last: {record.id}, {record.status})"
        if streak is not None:
            streak.disabled = reason
        return msgspec.structs.replace(s, failed_in_a_row=0, disabled_reason=reason)

    return change


def _started(exec_id: str) -> Callable[[JobStatus], JobStatus]:
    """The job's status once the run `exec_id` (under way) has been reported started: its process runs."""

    def change(s: JobStatus) -> JobStatus:
        if exec_id not in s.running or exec_id in s.started:
            return s
        return msgspec.structs.replace(s, started=[*s.started, exec_id])

    return change


def retry_id(record: Execution) -> str:
    """The id of the next attempt of `record`'s lane: each executor's part of a run retries on its own."""
    return execution_id(record.job_name, record.scheduled_at, record.attempt + 1, lane_of(record))


def day_counts(record: Execution) -> dict[str, tuple[int, int]]:
    """What a final record adds to the day stats (GET /v1/stats): a run that ran counts on the day it finished."""
    if record.status in ("missed", "skipped", "pending", "running"):
        return {}
    day = record.finished_at.astimezone(UTC).strftime("%Y-%m-%d")
    return {day: (1, 0) if record.success else (0, 1)}


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


def backoff(job: Job, attempt: int) -> timedelta:
    """Delay before retry number `attempt` (1-based): retry_backoff doubled each time, capped, with jitter."""
    try:
        base = parse_duration(job.retry_backoff or "5s")
    except ValidationError:  # not for a stored job: its definition is validated when read
        base = timedelta(seconds=5)
    delay: timedelta = min(base * (2 ** (attempt - 1)), MAX_BACKOFF)
    return delay * random.uniform(0.9, 1.1)


class RunLanes:
    """The latest outcome of every lane of the runs whose lanes are not all final, so a job's status says
    whether all (success), none (failed) or some (Dkron's partially_failed) of its run's executors succeeded.
    A retry's result replaces its lane's earlier one: a run that succeeds on a retry is a success."""

    def __init__(self) -> None:
        self._runs: dict[tuple[str, int], dict[str, bool]] = {}

    def finished(self, record: Execution, *, run_open: bool) -> RunStatus:
        """Notes `record`'s outcome; the run's status so far. `run_open`: another lane (or a retry) is to come."""
        key = (record.job_name, record.group)
        lanes = self._runs.setdefault(key, {})
        lanes[lane_of(record)] = record.success
        if not run_open:
            del self._runs[key]
        if all(lanes.values()):
            return "success"
        return "failed" if not any(lanes.values()) else "partially_failed"

    def __len__(self) -> int:
        return len(self._runs)


def _ran(record: Execution) -> bool:
    """Whether the record is of a run that ran (not one recorded missed or skipped)."""
    return record.status not in ("missed", "skipped")


class Results:
    """Handles what executors report of the runs of a term, and writes final records."""

    def __init__(
        self, *, term: int, runs: RunBook, sender: Sender, ledger: Ledger, registry: ExecutorRegistry, wire: Wire,
        jobs: Jobs, launches: Launches, history: History, metrics: SchedulerMetrics, notifier: Notifier,
    ) -> None:  # fmt: skip
        self._term = term
        self._runs = runs
        self._sender = sender
        self._ledger = ledger
        self._registry = registry
        self._wire = wire
        self._jobs = jobs
        self._launches = launches
        self._history = history
        self._metrics = metrics
        self._notifier = notifier
        self._lanes = RunLanes()

    # ---- from executors --------------------------------------------------------------------------------

    def on_accepted(self, msg: m.DispatchAccepted) -> None:
        self._runs.confirm(msg.node, msg.execution_ids or [msg.execution_id])

    async def on_refused(self, msg: m.DispatchRefused) -> None:
        active = self._runs.get(msg.execution_id)
        if active is None or active.record.node_name != msg.node or active.acked:
            return
        active.refusals += 1
        log.info("dispatch refused exec=%s node=%s: %s", msg.execution_id, msg.node, msg.reason)
        if active.refusals < active.sends:
            return  # a later send to the same executor is still unanswered: it may be accepted
        if await self._sender.retarget(active):
            await self._sender.dispatch(active)

    async def on_started(self, msg: m.ExecutionStarted) -> None:
        active = self._runs.get(msg.execution_id)
        if active is None:
            return
        active.acked = True
        self._observe_lag(active.record, msg.started_at)
        active.record = msgspec.structs.replace(
            active.record, status="running", started_at=msg.started_at, node_name=msg.node
        )
        if not self._runs.is_deleted(active.record.job_name):
            name = active.record.job_name
            # The status change is moot once the run's result is written (it drops the id from `started`): a
            # result that comes while this is still queued replaces it whole.
            await self._ledger.submit(Unit(update=[active.record], status={name: [_started(msg.execution_id)]},
                                           moot_status=True))  # fmt: skip
            self._notifier.starting(active.job, active.record)

    def _observe_lag(self, record: Execution, started_at: datetime) -> None:
        """Slot to start of a scheduled run's first attempt, counted once (while its record is still pending)."""
        if not record.manual and record.attempt == 1 and record.status == "pending":
            self._metrics.lag.observe(max(0.0, (started_at - record.scheduled_at).total_seconds()))

    async def on_output(self, msg: m.OutputProduced) -> None:
        active = self._runs.get(msg.execution_id)
        if active is None:
            return
        active.output = (active.output + msg.chunk)[-OUTPUT_LIMIT:]
        self._wire.publish(
            m.output_topic(msg.execution_id), m.OutputPublished(execution_id=msg.execution_id, chunk=msg.chunk)
        )

    async def on_finished(self, msg: m.ExecutionFinished) -> None:
        writing = self._runs.finishing(msg.execution_id)
        if writing is not None:  # the same result again: handled (and acknowledged) only if that write commits
            if not await asyncio.shield(writing):
                raise UnavailableError(f"result of {msg.execution_id} not recorded")
            return
        active = self._runs.get(msg.execution_id) or await self._adopt_reported(msg.job_name, msg.execution_id)
        if active is None:
            return  # finished before (a resend), or its job is gone
        deleted = self._runs.is_deleted(msg.job_name)
        if msg.status == "skipped" and not deleted:  # cancelled before its slot (cancel_ahead)
            self._metrics.skipped.inc()
        if active.record.status == "pending" and msg.started_at != ZERO_TIME:  # ended before it was reported started
            self._observe_lag(active.record, msg.started_at)
            if not deleted:
                running = msgspec.structs.replace(
                    active.record, status="running", started_at=msg.started_at, node_name=msg.node
                )
                self._notifier.starting(active.job, running)  # its pre-run webhook, late but before the other
        await self.finish(active, _result_record(active.record, msg))

    async def _adopt_reported(self, job_name: str, exec_id: str) -> Active | None:
        """A result of a run this term does not track. If Consul has its record unfinished (an earlier term launched
        it, and this one has not adopted it yet), adopt it: acknowledged, the result would be gone unrecorded."""
        job = self._jobs.job(job_name)
        if job is None or self._runs.known_final(exec_id):
            return None
        try:
            record = await self._ledger.read_execution(job_name, exec_id)
        except (NotFoundError, CorruptRecordError):  # an unreadable record is logged by the store
            return None
        self._sender.adopt(record, job)
        return self._runs.get(exec_id)

    async def on_executor_lost(self, node: str) -> None:
        for active in [a for a in self._runs if a.record.node_name == node]:
            if active.record.node_name != node or active.record.id not in self._runs:
                continue  # handled meanwhile (finished, or sent elsewhere)
            if active.acked or self._sender.may_have_run(active):
                await self.lost(active)
            elif await self._sender.retarget(active):  # recorded for it, never sent: it goes elsewhere
                await self._sender.dispatch(active)

    # ---- final records ---------------------------------------------------------------------------------

    async def lost(self, active: Active) -> None:
        """Its executor is dead: the run failed (docs/semantics.md §3.5), and retries apply."""
        record = msgspec.structs.replace(
            active.record, status="failed", success=False, reason="executor lost",
            output=(active.output + "\n[cronbus] executor lost").lstrip("\n"), finished_at=now_utc(),
        )  # fmt: skip
        await self.finish(active, record)

    async def kill(self, exec_id: str, why: str = "killed on request") -> bool:
        """Kills a run: its executor is asked to, if it has it; else it is recorded killed at once. False when
        no such run is tracked."""
        active = self._runs.get(exec_id)
        if active is None:
            return False
        state = self._registry.executors.get(active.record.node_name)
        if active.acked and state is not None:
            self._wire.send_to(state.identity, m.KillRequested(execution_id=exec_id, term=self._term))
            return True
        record = msgspec.structs.replace(
            active.record, status="killed", success=False, reason=why, output=why, finished_at=now_utc()
        )
        await self.finish(active, record)
        return True

    async def finish(self, active: Active, record: Execution) -> None:
        """Writes the final record; schedules a retry, triggers children, deletes an ephemeral job. Raises
        UnavailableError when the record is not committed (this term is over)."""
        job = self._jobs.job(record.job_name) or active.job
        self._sender.untrack(record)
        written = self._runs.begin_finish(record.id)  # before any wait: a resent result must find it
        committed = False
        try:
            # Its slot is free: a run waiting for that executor goes now, not after the write.
            await self._sender.send_waiting()
            await self._write_final(job, record)
            committed = True
        finally:
            self._runs.end_finish(record.id, written, committed=committed)

    async def _write_final(self, job: Job, record: Execution) -> None:
        if self._runs.is_deleted(job.name):
            log.info("result of a deleted job not kept job=%s exec=%s status=%s", job.name, record.id, record.status)
            return
        retry = self._retry_of(job, record)
        run_status: RunStatus = ""
        run_open = False
        if _ran(record):
            run_open = retry is not None or self._runs.group_open(job.name, record.group)
            run_status = self._lanes.finished(record, run_open=run_open)
        streak = FailureStreak()
        retry_of = retry.id if retry else None
        change = _final_status(record, retry_of, run_status, run_open=run_open, job_disabled=job.disabled,
                               disable_after=job.disable_after_failures, streak=streak)  # fmt: skip
        unit = Unit(update=[record], create=[retry] if retry else [], status={job.name: [change]},
                    counts=day_counts(record))  # fmt: skip
        outcome = await self._ledger.submit(unit)
        if outcome != "committed":  # fenced: this term is over, and the result must reach the next leader
            raise UnavailableError(f"result of {record.id} not recorded: {outcome}")
        if streak.disabled:
            self._jobs.disable_failing(job.name, streak.disabled)
        self._recorded(job, record, streak.disabled)
        if retry is not None:
            self._metrics.retries.inc()
            self._sender.track(Active(record=retry, job=job))
            return
        if not self._runs.group_open(job.name, record.group) and _ran(record):  # only a run that ran chains
            await self._chain(job, record)
        if record.success and job.ephemeral:
            self._jobs.delete_ephemeral(job.name)

    def _retry_of(self, job: Job, record: Execution) -> Execution | None:
        """The next attempt of a run that ran and failed, while it has retries left."""
        if record.status not in ("failed", "timeout") or record.attempt > job.retries:
            return None
        return msgspec.structs.replace(
            new_record(job, retry_id(record), record.scheduled_at, record.attempt + 1, record.manual, self._term),
            group=record.group,
            due_at=now_utc() + backoff(job, record.attempt),
        )

    def _recorded(self, job: Job, record: Execution, disabled: str = "") -> None:
        """A final record committed: counted, notified (`disabled`: why this failure disables the job), and
        announced to who follows its output."""
        # History is trimmed off this path, every tenth of history_limit records (see History.jobs_to_trim).
        self._history.written(job.name)
        self._metrics.finished.inc(status=record.status)
        if _ran(record):
            self._metrics.per_job.finished(job.name, record.success)
        self._notifier.finished(job, record, disabled=disabled)
        self._wire.publish(m.output_topic(record.id), m.ExecutionEnded(execution_id=record.id, status=record.status))
        log.log(
            logging.DEBUG if record.success else logging.INFO,
            "execution finished job=%s exec=%s status=%s node=%s",
            job.name,
            record.id,
            record.status,
            record.node_name,
        )

    async def _chain(self, parent: Job, record: Execution) -> None:
        for child in self._jobs.children(parent.name):
            wanted = trigger_of(child)
            if wanted == "always" or (wanted == "success") == record.success:
                # The child's slot is the parent's, so a replayed parent result cannot launch it twice.
                await self._launches.launch(child, record.scheduled_at, manual=True)


def _result_record(record: Execution, msg: m.ExecutionFinished) -> Execution:
    """The final record of a run, as its executor reported it."""
    output, cut = fit_output(msg.output)
    return msgspec.structs.replace(
        record,
        status=msg.status,
        success=msg.status == "success",
        exit_code=msg.exit_code,
        reason=msg.reason,
        output=output,
        output_truncated=msg.output_truncated or cut,
        node_name=msg.node,
        started_at=msg.started_at if msg.started_at != ZERO_TIME else record.started_at,
        finished_at=msg.finished_at if msg.finished_at != ZERO_TIME else now_utc(),
    )
