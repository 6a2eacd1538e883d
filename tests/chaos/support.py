"""Shared steps of the chaos tests: leaders, every execution in one read, per-slot accounting, fault holds."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import msgspec
import psycopg

from cronbus.common.consul import keys
from cronbus.common.consul.store import Store, decode
from cronbus.common.errors import CorruptRecordError
from cronbus.common.models import Execution, Job, LeaderInfo, execution_id, now_utc
from cronbus.common.schedule import slots_between
from tests.chaos.figures import Detail, Figures
from tests.helpers import ServiceProcess, async_wait_until
from tests.integration.scheduling import put_job

STARTED: Final = re.compile(r"executor\.service: started job=(\S+) exec=(\S+)")
OPEN: Final = frozenset({"pending", "running"})
NOT_RUN: Final = frozenset({"missed", "skipped"})
SLACK_S: Final = 10.0  # how much longer than a deliberate hold its bounded wait may take


async def leader(store: Store) -> LeaderInfo | None:
    found = await store.get_leader()
    return found[0] if found is not None else None


async def new_leader(store: Store, *, after_term: int, not_name: str = "") -> LeaderInfo | None:
    """The leader, once one with a higher term than `after_term` (and another name than `not_name`) holds."""
    info = await leader(store)
    if info is None or info.term <= after_term or (not_name and info.name == not_name):
        return None
    return info


async def hold(seconds: float, what: str) -> None:
    """A deliberate fault duration (a pause, an outage): waits on the deadline, bounded like any wait."""
    deadline = time.monotonic() + seconds

    async def passed() -> bool:
        return time.monotonic() >= deadline

    await async_wait_until(passed, timeout_s=seconds + SLACK_S, interval_s=0.05, what=what)


async def hold_until(instant: datetime, what: str) -> None:
    await hold(max(0.0, (instant - now_utc()).total_seconds()), what)


@dataclass
class HistoryUnderTest:
    """The history store the running test's schedulers use: `dsn` "" is Consul alone; else a PostgreSQL database
    that finished records move to (set by the `history_store` fixture, tests/chaos/conftest.py)."""

    dsn: str = ""


HISTORY: Final = HistoryUnderTest()


def history_label(scheduler_args: tuple[str, ...]) -> str:
    """How a figure's name says which history store its test ran on (nothing for Consul's, the default)."""
    return ", PostgreSQL history" if "--history-store" in scheduler_args else ""


async def _moved_records() -> list[Execution]:
    if not HISTORY.dsn:
        return []
    async with await psycopg.AsyncConnection.connect(HISTORY.dsn, autocommit=True) as conn:
        if (await (await conn.execute("SELECT to_regclass('cronbus_executions')")).fetchone()) == (None,):
            return []  # no record moved yet: the keeper makes the table on its first write
        rows = await (await conn.execute("SELECT record::text FROM cronbus_executions")).fetchall()
    return [msgspec.json.decode(text, type=Execution) for (text,) in rows]


async def moved_count() -> int:
    """How many records are in the PostgreSQL history store under test (0 with Consul's)."""
    return len(await _moved_records())


async def all_executions(store: Store, *, skip: frozenset[str] = frozenset()) -> dict[str, list[Execution]]:
    """Every execution record of every job, by job name: Consul's in one call, then (with a PostgreSQL history
    store) those moved there, each record once. Consul is read first, so a record moved in between (written to
    PostgreSQL, then deleted from Consul) is found in PostgreSQL. An unreadable one fails the test, unless its key
    is in `skip` (written so on purpose)."""
    _, entries = await store.consul.kv_list(keys.EXECUTIONS)
    found: dict[tuple[str, str], Execution] = {}
    for entry in entries:
        try:
            record = decode(Execution, entry.value, entry.key)
        except CorruptRecordError as exc:
            if entry.key in skip:
                continue
            raise AssertionError(str(exc)) from None
        found[record.job_name, record.id] = record
    for record in await _moved_records():
        found.setdefault((record.job_name, record.id), record)
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for record in found.values():
        by_job[record.job_name].append(record)
    return by_job


def starts(processes: Iterable[ServiceProcess]) -> Counter[str]:
    """How many times each execution id was started, over the logs of the given executors (restarts too)."""
    counted: Counter[str] = Counter()
    for process in processes:
        counted.update(match[2] for match in STARTED.finditer(process.log()))
    return counted


def vm_rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS in /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def pid_alive(pid: int) -> bool:
    """True while the pid exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@dataclass
class SlotTally:
    """Per (job, slot) outcome over a window: each expected slot is executed, missed (with a record saying
    why), or lost; a slot started more than once on the executors counts as duplicated."""

    expected: int = 0
    executed: int = 0
    missed: int = 0
    lost: int = 0
    duplicated: int = 0
    unfinished: int = 0  # records still pending/running (counted in lost once the settle wait is over)
    unexpected: int = 0  # scheduled records on no expected slot (a phase bug or a double launch)
    ran_but_missed: int = 0  # recorded missed/skipped, yet an executor started it
    missed_reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 12:
            self.examples.append(text)

    def account(self, slot: str, found: list[Execution], ran: int) -> None:
        """One expected slot (`slot` names it), its records, and how many times executors started it."""
        self.expected += 1
        if ran > 1:
            self.duplicated += ran - 1
            self.note(f"{slot} started {ran} times")
        if len(found) > 1:
            self.duplicated += len(found) - 1
            self.note(f"{slot} has {len(found)} records")
        if not found:
            self.lost += 1
            self.note(f"{slot} has no record" + (f" (started {ran}x)" if ran else ""))
            return
        record = found[0]
        if record.status in OPEN:
            self.unfinished += 1
            self.lost += 1
            self.note(f"{slot} still {record.status} on {record.node_name or '-'}")
        elif record.status in NOT_RUN:
            self.missed += 1
            self.missed_reasons[_reason_kind(record.reason)] += 1
            if ran:
                self.ran_but_missed += 1
                self.note(f"{slot} recorded {record.status} but started {ran}x")
        else:
            self.executed += 1

    def problems(self) -> str:
        return "; ".join(self.examples)


def tally_slots(
    jobs: Iterable[Job],
    records: dict[str, list[Execution]],
    started: Counter[str],
    since: datetime,
    until: datetime,
) -> SlotTally:
    """Accounts every slot of `jobs` in (since, until] against the records and the executors' starts."""
    tally = SlotTally()
    for job in jobs:
        expected = slots_between(job, max(since, job.created_at or since), until, 100_000)
        by_slot: dict[datetime, list[Execution]] = defaultdict(list)
        for record in records.get(job.name, []):
            if record.attempt == 1 and not record.manual and since < record.scheduled_at <= until:
                by_slot[record.scheduled_at].append(record)
        for slot in expected:
            tally.account(f"{job.name}@{slot.time()}", by_slot.pop(slot, []), started[execution_id(job.name, slot, 1)])
        for slot, found in by_slot.items():
            tally.unexpected += len(found)
            tally.duplicated += len(found)
            tally.note(f"{job.name}@{slot.time()} recorded off its schedule ({found[0].status})")
    return tally


def _reason_kind(reason: str) -> str:
    """A reason without its instants, to count reasons by kind."""
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "<t>", reason)


async def settled(
    store: Store, jobs: list[Job], since: datetime, until: datetime, skip: frozenset[str] = frozenset()
) -> bool:
    """True once every slot of the window has a finished record (`skip`: see all_executions)."""
    records = await all_executions(store, skip=skip)
    tally = tally_slots(jobs, records, Counter(), since, until)
    return tally.lost == 0


async def stale_running_ids(store: Store) -> list[str]:
    """Ids a job status lists as running whose record is finished or gone (a leak in JobStatus.running). A record
    and its status change commit in one transaction, so: an id listed before the records were read must have a
    record; a record finished when read must not be listed afterwards. (Jobs keep running meanwhile.)"""
    _, before = await store.list_statuses()
    by_id = {r.id: r for rs in (await all_executions(store)).values() for r in rs}
    _, after = await store.list_statuses()
    stale = [f"{i}:no record" for status, _ in before.values() for i in status.running if i not in by_id]
    for status, _index in after.values():
        for exec_id in status.running:
            record = by_id.get(exec_id)
            if record is not None and record.status not in OPEN:
                stale.append(f"{exec_id}:{record.status}")
    return stale


async def load_jobs(store: Store, prefix: str, count: int, **fields: object) -> list[Job]:
    """`count` jobs named <prefix>NNN, every second on any executor unless `fields` say otherwise."""
    base: dict[str, object] = {"schedule": "@every 1s", "executor": "noop", **fields}
    return [await put_job(store, name=f"{prefix}{i:03d}", **base) for i in range(count)]


async def wait_running(store: Store, jobs: list[Job], runs: int = 2, timeout_s: float = 40.0) -> None:
    """Until every job has at least `runs` finished executions."""

    async def running() -> bool:
        records = await all_executions(store)
        return all(sum(r.status not in OPEN for r in records.get(job.name, [])) >= runs for job in jobs)

    await async_wait_until(running, timeout_s=timeout_s, interval_s=0.5, what=f"{len(jobs)} jobs running")


async def settle(
    store: Store,
    jobs: list[Job],
    since: datetime,
    until: datetime,
    timeout_s: float = 20.0,
    skip: frozenset[str] = frozenset(),
) -> None:
    """Waits (bounded) until every slot of the window is accounted for; what is not by then counts as lost."""

    deadline = time.monotonic() + timeout_s
    # Not async_wait_until: its timeout is an AssertionError, and so is an unreadable record, which must fail.
    while time.monotonic() < deadline:
        if await settled(store, jobs, since, until, skip):
            return
        await asyncio.sleep(1.0)


def slot_figures(fault: str, tally: SlotTally, **details: Detail) -> Figures:
    extra: dict[str, Detail] = {
        "unfinished": tally.unfinished,
        "unexpected": tally.unexpected,
        "ran_but_missed": tally.ran_but_missed,
    }
    if tally.missed_reasons:
        extra["missed_reasons"] = "; ".join(f"{n}x {r}" for r, n in tally.missed_reasons.most_common(3))
    return Figures(
        fault=fault,
        expected=tally.expected,
        executed=tally.executed,
        duplicated=tally.duplicated,
        missed=tally.missed,
        lost=tally.lost,
        details={**details, **extra},
    )


def assert_slots_clean(tally: SlotTally) -> None:
    assert tally.duplicated == 0, f"{tally.duplicated} duplicated: {tally.problems()}"
    assert tally.lost == 0, f"{tally.lost} lost: {tally.problems()}"
    assert tally.ran_but_missed == 0, tally.problems()


async def wait_leader(store: Store, timeout_s: float = 20.0, what: str = "a leader") -> LeaderInfo:
    found = await async_wait_until(lambda: leader(store), timeout_s=timeout_s, what=what)
    assert found is not None
    return found
