"""What a new term takes over from earlier ones: the runs they left unfinished, and the slots that passed while
no leader dispatched (docs/semantics.md §3, §4)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import msgspec

from cronbus.common.consul.store import Store
from cronbus.common.errors import CorruptRecordError, NotFoundError, ValidationError
from cronbus.common.models import FINISHED_STATUSES, Job, JobStatus
from cronbus.common.schedule import plan_catchup, plan_late
from cronbus.services.scheduler.dispatcher import Dispatcher
from cronbus.services.scheduler.ledger import Ledger, Unit
from cronbus.services.scheduler.ports import Jobs

log = logging.getLogger(__name__)

Launch = Callable[[Dispatcher, Job, datetime], Awaitable[object]]  # the service's launch (its lease checked)


class Takeover:
    """The term set-up's reads and decisions. It keeps no state of its own: everything it finds goes to the
    term's dispatcher (runs adopted, launches, missed records) and ledger (status changes)."""

    def __init__(self, store: Store, jobs: Jobs, launch: Launch) -> None:
        self._store = store
        self._jobs = jobs
        self._launch = launch

    async def adopt_unfinished(self, dispatcher: Dispatcher, statuses: dict[str, tuple[JobStatus, int]]) -> None:
        """Unfinished executions recorded by earlier terms (each job status lists them) become this term's to
        resolve; ids whose records ended, or are gone, leave the running list."""
        for name, (status, _) in statuses.items():
            job = self._jobs.job(name)
            if job is None:
                continue
            stale: list[str] = []
            for exec_id in status.running:
                try:
                    record = await self._store.get_execution(name, exec_id)
                except (NotFoundError, CorruptRecordError):  # a bad record is logged by the store, and costs itself
                    stale.append(exec_id)
                    continue
                if record.status in FINISHED_STATUSES:
                    stale.append(exec_id)
                dispatcher.adopt(record, job)
            if stale:
                dispatcher.forget_running(name, stale)

    async def adopt_unlisted(self, dispatcher: Dispatcher, names: set[str]) -> None:
        """Jobs whose status did not decode: the runs it listed as under way are found from their records."""
        for name in sorted(names):
            job = self._jobs.job(name)
            if job is None:
                continue
            found = [r for r in await self._store.list_executions(name) if r.status not in FINISHED_STATUSES]
            for record in found:
                dispatcher.adopt(record, job)
            if found:
                log.warning("status of job=%s unreadable: %d unfinished runs found from their records", name,
                            len(found))  # fmt: skip
                started = [r.id for r in found if r.status == "running"]
                dispatcher.ledger.submit(Unit(status={name: [running((r.id for r in found), started)]}))

    async def adopt_launched(self, dispatcher: Dispatcher, job: Job, ids: list[str]) -> None:
        """Runs an earlier term launched (a launch that found its records there): resolve what they became."""
        for exec_id in ids:
            with contextlib.suppress(NotFoundError, CorruptRecordError):
                dispatcher.adopt(await self._store.get_execution(job.name, exec_id), job)

    async def catch_up(self, dispatcher: Dispatcher, ledger: Ledger, job: Job, now: datetime) -> None:
        """The job's slots between the last one accounted for and `now`: run or recorded, per misfire_policy
        (and an `@after` job's late fire within its grace)."""
        if job.disabled or not job.schedule:
            return
        last = ledger.status(job.name).last_slot
        try:
            plans = [plan_catchup(job, last or job.created_at, now), plan_late(job, last, now)]
        except ValidationError as exc:
            log.warning("cannot plan catch-up job=%s: %s", job.name, exc)
            return
        for plan in plans:
            for slot, reason in plan.missed:
                await dispatcher.record_missed(job, slot, "missed", reason)
            for slot in plan.run:
                await self._launch(dispatcher, job, slot)


def running(ids: Iterable[str], started: Iterable[str] = ()) -> Callable[[JobStatus], JobStatus]:
    """A status change: `ids` are under way, and `started` of them are reported started (kept once each)."""
    added, begun = list(ids), list(started)

    def change(status: JobStatus) -> JobStatus:
        return msgspec.structs.replace(
            status,
            running=[*status.running, *(i for i in added if i not in status.running)],
            started=[*status.started, *(i for i in begun if i not in status.started)],
        )

    return change
