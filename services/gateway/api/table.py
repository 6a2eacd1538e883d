"""Jobs as the API shows them (definition + status + next + dependents), filtered, sorted and sliced from the view."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from cronbus.common.consul.store import StoredJob
from cronbus.common.consul.view import JobView
from cronbus.common.errors import ValidationError
from cronbus.common.models import (
    JOB_SORT_FIELDS,
    JOB_STATUS_FILTERS,
    ZERO_TIME,
    Job,
    JobStatus,
    now_utc,
    process_running,
    utc,
)
from cronbus.common.schedule import Schedule, parse_schedule

# react-admin sorts by `id` unless told otherwise (Dkron's UI does on every list); Dkron maps it to the name.
JOB_SORT_ALIASES: Final = {"id": "name"}
_EMPTY_STATUS: Final = JobStatus()


def api_status(status: JobStatus) -> str:
    """Dkron's job `status`: `running` while a process of it runs, else how its last finished run went."""
    return "running" if process_running(status) else status.status


def has_status(status: JobStatus, wanted: str) -> bool:
    """The list's status filter and counts: `running` is a process running now; the others go by the last finished
    run ("" is never run), so a job that runs now is also counted by how its last run ended."""
    return process_running(status) if wanted == "running" else status.status == wanted


class JobCounts(msgspec.Struct, kw_only=True):
    """How many jobs there are by the status the list filters on, and how many are disabled (the dashboard's
    totals in one answer)."""

    total: int = 0
    success: int = 0
    failed: int = 0
    partially_failed: int = 0
    running: int = 0
    untriggered: int = 0
    disabled: int = 0


class JobQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The react-admin list conventions plus Dkron's filters, already checked."""

    sort: str = "name"
    descending: bool = False
    start: int = 0
    end: int | None = None
    q: str = ""
    status: str = ""
    disabled: bool | None = None
    metadata: dict[str, str] = {}
    ids: frozenset[str] = frozenset()  # only these names, when given (react-admin's getMany)


def parse_order(order: str | None) -> bool:
    """True for DESC; raises ValidationError for anything but ASC/DESC (any case)."""
    value = (order or "ASC").upper()
    if value not in ("ASC", "DESC"):
        raise ValidationError(f"_order must be ASC or DESC, not '{order}'")
    return value == "DESC"


def parse_slice(start: int | None, end: int | None) -> tuple[int, int | None]:
    if start is not None and start < 0:
        raise ValidationError("_start must be 0 or more")
    if end is not None and end < 0:
        raise ValidationError("_end must be 0 or more")
    return start or 0, end


def metadata_filter(params: Mapping[str, Any]) -> dict[str, str]:
    """`metadata[k]=v` query parameters as {k: v}."""
    found: dict[str, str] = {}
    for key, value in params.items():
        if key.startswith("metadata[") and key.endswith("]"):
            found[key[len("metadata[") : -1]] = str(value)
    return found


class _NextFire(msgspec.Struct, frozen=True):
    modify_index: int
    schedule: Schedule | None
    next: datetime  # ZERO_TIME: none


def _first_fire(schedule: Schedule | None, job: Job, now: datetime) -> datetime:
    """First fire after `now` inside [starts_at, expires_at], as schedule.next_fires bounds it."""
    if schedule is None:
        return ZERO_TIME
    after = now
    starts = utc(job.starts_at) if job.starts_at is not None else None
    if starts is not None and after < starts:
        after = starts - timedelta(microseconds=1)
    fire = schedule.next_after(after)
    if fire is None or (job.expires_at is not None and fire > utc(job.expires_at)):
        return ZERO_TIME
    return fire


class JobTable:
    """Derived data over a JobView: who depends on whom (kept up to date by the view's change listener) and
    each job's next fire time (cached per definition version until that time passes)."""

    def __init__(self, view: JobView, clock: Callable[[], datetime] = now_utc) -> None:
        self.view = view
        self.clock = clock
        self._parent_of: dict[str, str] = {}
        self._children: defaultdict[str, set[str]] = defaultdict(set)
        self._next: dict[str, _NextFire] = {}
        self._changed = asyncio.Event()
        self._sorted_names: list[str] | None = None  # valid jobs by name, rebuilt after a change
        view.on_jobs_changed(self._jobs_changed)

    # ---- derived data ---------------------------------------------------------------------------------

    def _jobs_changed(self, changed: set[str], removed: set[str]) -> None:
        for name in removed:
            self._set_parent(name, "")
            self._next.pop(name, None)
        for name in changed:
            stored = self.view.jobs.get(name)
            job = stored.job if stored is not None else None
            self._set_parent(name, job.parent_job if job is not None else "")
        self._sorted_names = None
        # Wake every waiter, then start a new generation.
        self._changed.set()
        self._changed = asyncio.Event()

    def _set_parent(self, name: str, parent: str) -> None:
        old = self._parent_of.pop(name, "")
        if old:
            self._children[old].discard(name)
            if not self._children[old]:
                del self._children[old]
        if parent:
            self._parent_of[name] = parent
            self._children[parent].add(name)

    def dependents(self, name: str) -> list[str] | None:
        children = self._children.get(name)
        return sorted(children) if children else None

    def has_dependents(self, name: str) -> bool:
        return bool(self._children.get(name))

    def next_fire(self, job: Job, modify_index: int, now: datetime) -> datetime:
        """The next scheduled fire after `now`, or ZERO_TIME (disabled, manual, expired, invalid).

        The parsed schedule is kept per definition version and the answer until it passes, so sorting
        100 000 jobs by `next` parses each schedule once, not at every request."""
        if job.disabled:
            return ZERO_TIME
        cached = self._next.get(job.name)
        if cached is not None and cached.modify_index == modify_index:
            if cached.next == ZERO_TIME or cached.next > now:
                return cached.next
            schedule = cached.schedule
        else:
            try:
                anchor = utc(job.created_at) if job.created_at is not None else None
                schedule = parse_schedule(job.schedule, job.timezone, job_name=job.name, anchor=anchor)
            except (ValidationError, ValueError):
                schedule = None  # reported by the scheduler; shown here as "no next run"
        value = _first_fire(schedule, job, now)
        self._next[job.name] = _NextFire(modify_index, schedule, value)
        return value

    def api_job(self, job: Job, status: JobStatus | None, modify_index: int, now: datetime, problem: str = "") -> Job:
        """The job as the API shows it; `problem`: why its stored definition cannot run (then it has no next)."""
        st = status or _EMPTY_STATUS
        return msgspec.structs.replace(
            job,
            id=job.name,
            problem=problem or st.problem,
            processors={name: config or {} for name, config in (job.processors or {}).items()},  # never null
            success_count=st.success_count,
            error_count=st.error_count,
            last_success=st.last_success,
            last_error=st.last_error,
            status=api_status(st),
            disabled_reason=st.disabled_reason if job.disabled else "",  # a job enabled again is past it
            next=ZERO_TIME if problem else self.next_fire(job, modify_index, now),
            dependent_jobs=self.dependents(job.name),
        )

    def lookup(self, name: str) -> Job | None:
        stored = self.view.jobs.get(name)
        return stored.job if stored is not None else None

    def shown(self, stored: StoredJob, status: JobStatus | None, now: datetime) -> Job:
        """A stored job as the API shows it: valid, or as it decoded with its problem."""
        assert stored.definition is not None
        return self.api_job(stored.definition, status, stored.modify_index, now, stored.problem)

    # ---- listing --------------------------------------------------------------------------------------

    def _names_by_name(self) -> list[str]:
        if self._sorted_names is None:
            # Jobs that decode, valid or not: an invalid one is listed with its problem, so it can be seen and fixed.
            self._sorted_names = sorted(n for n, stored in self.view.jobs.items() if stored.definition is not None)
        return self._sorted_names

    def _page_by_name(self, query: JobQuery, now: datetime) -> tuple[int, list[Job]]:
        """list() unfiltered, in name order: a slice of the cached sorted names."""
        names = self._names_by_name()
        ordered = names[::-1] if query.descending else names
        end = len(ordered) if query.end is None else query.end
        page_names = ordered[query.start : end] if query.start < end else []
        page: list[Job] = []
        for name in page_names:
            found = self.view.statuses.get(name)
            page.append(self.shown(self.view.jobs[name], found[0] if found else None, now))
        return len(ordered), page

    def list(self, query: JobQuery) -> tuple[int, list[Job]]:
        """(count after filters, the jobs of the slice). Only the slice is turned into API jobs.

        The default order (by name) comes from a cached sorted list, so an unfiltered page of 100 000 jobs
        costs a slice, not a sort."""
        if query.sort not in JOB_SORT_FIELDS:
            raise ValidationError(f"_sort must be one of {', '.join(JOB_SORT_FIELDS)}, not '{query.sort}'")
        if query.status and query.status not in JOB_STATUS_FILTERS:
            raise ValidationError(f"status must be one of {', '.join(JOB_STATUS_FILTERS)}, not '{query.status}'")
        now = self.clock()
        statuses = self.view.statuses
        jobs = self.view.jobs
        by_name = query.sort == "name"
        filtered = bool(query.q or query.status or query.disabled is not None or query.metadata or query.ids)
        if by_name and not filtered:
            return self._page_by_name(query, now)
        needle = query.q.casefold()
        wanted_status = "" if query.status == "untriggered" else query.status
        rows: list[tuple[StoredJob, Job, JobStatus]] = []
        # Walking in name order and sorting stably leaves ties by name, ascending, in either direction.
        for stored in (jobs[name] for name in self._names_by_name()):
            job = stored.definition
            if job is None or (query.ids and stored.name not in query.ids):
                continue
            found = statuses.get(stored.name)
            status = found[0] if found is not None else _EMPTY_STATUS
            if _matches(query, job, status, needle, wanted_status):
                rows.append((stored, job, status))
        if by_name:
            if query.descending:
                rows.reverse()
        else:
            rows.sort(key=self._sort_key(query.sort, now), reverse=query.descending)
        last = len(rows) if query.end is None else query.end
        window = rows[query.start : last] if query.start < last else []
        return len(rows), [self.shown(stored, status, now) for stored, _, status in window]

    def counts(self) -> JobCounts:
        """The jobs listed (those that decode) counted as `list` filters them by status and by `disabled`."""
        counts = JobCounts()
        statuses = self.view.statuses
        for name in self._names_by_name():
            job = self.view.jobs[name].definition
            if job is None:
                continue
            found = statuses.get(name)
            status = found[0] if found is not None else _EMPTY_STATUS
            counts.total += 1
            counts.disabled += job.disabled
            counts.running += process_running(status)
            match status.status:  # the last finished run's (has_status)
                case "success" | "failed" | "partially_failed":
                    setattr(counts, status.status, getattr(counts, status.status) + 1)
                case "":
                    counts.untriggered += 1
                case _:
                    pass  # a status a newer scheduler writes: counted in the total only
        return counts

    def _sort_key(self, field: str, now: datetime) -> Callable[[tuple[StoredJob, Job, JobStatus]], Any]:
        match field:
            case "name":
                return lambda row: row[1].name
            case "displayname":
                return lambda row: row[1].displayname.casefold()
            case "schedule":
                return lambda row: row[1].schedule
            case "success_count":
                return lambda row: row[2].success_count
            case "error_count":
                return lambda row: row[2].error_count
            case "last_success":
                return lambda row: row[2].last_success or ZERO_TIME
            case "last_error":
                return lambda row: row[2].last_error or ZERO_TIME
            case "next":
                return lambda row: self.next_fire(row[1], row[0].modify_index, now)
        raise ValidationError(f"_sort must be one of {', '.join(JOB_SORT_FIELDS)}")

    # ---- waiting for the view -------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Waits until predicate() holds after a job change seen by the view (bounded); its last value."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    def has_version(self, name: str, modify_index: int) -> bool:
        stored = self.view.jobs.get(name)
        return stored is not None and stored.modify_index >= modify_index


def _matches(query: JobQuery, job: Job, status: JobStatus, needle: str, wanted_status: str) -> bool:
    """Whether the job passes list()'s filters (`needle`: the casefolded q; `wanted_status`: see has_status)."""
    if query.disabled is not None and job.disabled != query.disabled:
        return False
    if query.status and not has_status(status, wanted_status):
        return False
    if query.metadata:
        labels = job.metadata or {}
        if any(labels.get(k) != v for k, v in query.metadata.items()):
            return False
    return not (needle and needle not in job.name.casefold() and needle not in job.displayname.casefold())
