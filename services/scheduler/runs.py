"""The runs of one term: what is pending or running, being recorded final, recorded final lately, and deleted jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, KeysView

import msgspec

from cronbus.common.models import Execution, Job, execution_id

RECENTLY_FINISHED = 20_000  # final records remembered, so a result sent again needs no Consul read


class Active(msgspec.Struct, kw_only=True):
    """An execution that is pending or running, as the leader tracks it."""

    record: Execution
    job: Job
    acked: bool = False  # an executor accepted it
    sent_at: float = 0.0  # monotonic time of the last dispatch (0: not sent yet)
    sends: int = 0  # dispatches sent to the current target
    refusals: int = 0  # of those, refused
    output: str = ""
    trace: dict[str, str] = {}  # the launch span's context, carried by its dispatches (common/tracing.py)
    holds: str = ""  # the executor this run holds a slot of (sent there, not finished): see sending.Slots
    waiting: bool = False  # held back: its executor has no free slot


def lane_of(record: Execution) -> str:
    """Which executor's part of its run a record is ("" when the run went to one executor): the suffix of its id
    after the slot and attempt. A retry keeps it, wherever it runs."""
    own = execution_id(record.job_name, record.scheduled_at, record.attempt)
    return record.id[len(own) + 1 :] if record.id.startswith(own + ".") else ""


def names_no_node(record: Execution) -> bool:
    """Whether the run may go to any executor its tags match (it is not one part of a run on several executors)."""
    return record.id == execution_id(record.job_name, record.scheduled_at, record.attempt)


class RunBook:
    """The runs this term tracks, by execution id and by job, and what became of the ones it stopped tracking.
    Created at takeover, dropped when leadership ends; only sending.Sender adds and removes runs (a run holds
    an executor's slot while it is tracked)."""

    def __init__(self) -> None:
        self._active: dict[str, Active] = {}  # by execution id
        self._by_job: dict[str, dict[str, Active]] = {}  # the same, by job name (no scan of all per launch)
        # ids whose final record is being written (no longer tracked) -> whether that write committed
        self._finishing: dict[str, asyncio.Future[bool]] = {}
        # ids this term recorded final lately, oldest first: a result sent again (its ack was slow) is known at once
        self._finished: dict[str, None] = {}
        self._deleted: set[str] = set()  # jobs seen deleted this term: nothing more of theirs is written

    # ---- tracked runs ------------------------------------------------------------------------------------

    def track(self, active: Active) -> None:
        self._active[active.record.id] = active
        self._by_job.setdefault(active.record.job_name, {})[active.record.id] = active

    def untrack(self, record: Execution) -> Active:
        """Stops tracking `record`'s run (KeyError if it is not tracked); returns it."""
        active = self._active.pop(record.id)
        of_job = self._by_job[record.job_name]
        of_job.pop(record.id)
        if not of_job:
            del self._by_job[record.job_name]
        return active

    def get(self, exec_id: str) -> Active | None:
        return self._active.get(exec_id)

    def __contains__(self, exec_id: object) -> bool:
        return exec_id in self._active

    def __len__(self) -> int:
        return len(self._active)

    def __iter__(self) -> Iterator[Active]:
        return iter(self._active.values())

    def ids(self) -> KeysView[str]:
        """The ids of the runs tracked (a live view)."""
        return self._active.keys()

    def all(self) -> list[Active]:
        """A copy: safe to iterate while runs end."""
        return list(self._active.values())

    def of_job(self, name: str) -> list[Active]:
        return list(self._by_job.get(name, {}).values())

    def group_open(self, job_name: str, group: int) -> bool:
        """Whether a run of that trigger (another lane, or a retry) is still tracked."""
        return any(a.record.group == group for a in self._by_job.get(job_name, {}).values())

    def confirm(self, node: str, exec_ids: Iterable[str]) -> None:
        """The executor `node` has these runs (accepted, or running when it said hello)."""
        for exec_id in exec_ids:
            active = self._active.get(exec_id)
            if active is not None and active.record.node_name == node:
                active.acked = True

    # ---- runs being, or lately, recorded final -------------------------------------------------------------

    def finishing(self, exec_id: str) -> asyncio.Future[bool] | None:
        """The write of that run's final record, while it is under way: its result is whether it committed."""
        return self._finishing.get(exec_id)

    def begin_finish(self, exec_id: str) -> asyncio.Future[bool]:
        written = asyncio.get_running_loop().create_future()
        self._finishing[exec_id] = written
        return written

    def end_finish(self, exec_id: str, written: asyncio.Future[bool], *, committed: bool) -> None:
        """Ends begin_finish: a committed final record is remembered (the RECENTLY_FINISHED latest)."""
        if committed:
            written.set_result(True)
            self._finished[exec_id] = None
            if len(self._finished) > RECENTLY_FINISHED:
                del self._finished[next(iter(self._finished))]
        elif not written.done():
            written.set_result(False)
        del self._finishing[exec_id]

    def known_final(self, exec_id: str) -> bool:
        """Being recorded final, or recorded final lately, by this term."""
        return exec_id in self._finishing or exec_id in self._finished

    def under_way(self) -> set[str]:
        """Ids of the runs tracked or being recorded final (their records must stay)."""
        return {*self._active, *self._finishing}

    # ---- deleted jobs --------------------------------------------------------------------------------------

    def is_deleted(self, job_name: str) -> bool:
        return job_name in self._deleted

    def mark_deleted(self, job_name: str) -> None:
        self._deleted.add(job_name)

    def mark_exists(self, job_name: str) -> None:
        self._deleted.discard(job_name)
