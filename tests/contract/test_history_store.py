"""The history store's contract (common/history.py), one suite run against every store: the Consul one on a real
Consul agent and the PostgreSQL one on a real PostgreSQL cluster (a database of its own per test)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.history import ConsulHistoryStore
from cronbus.common.consul.store import Store
from cronbus.common.errors import NotFoundError, SettingsError
from cronbus.common.history import (
    FAILED_STATUSES,
    ExecutionFilter,
    HistoryStore,
    HistoryStoreError,
    check_history_store,
    open_history_store,
)
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.models import ZERO_TIME, Execution, ExecutionStatus, execution_id
from cronbus.common.postgresql import PostgresHistoryStore
from cronbus.common.settings import redact_dsn

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# Names cronbus allows (any Unicode lower-case letter, ASCII digits, '_' and '-', up to 200), among them words of
# its own key layout and prefixes of one another.
ODD_NAMES = ["fence", "executions", "status", "-", "_", "0", "--", "ǆemal", "straße", "ёлка", "µ", "ﬀ", "a" * 200,
             "ß" * 200, "backup", "backup-db", "backup_", "ü-1"]  # fmt: skip


def record(
    job: str, minute: int, *, attempt: int = 1, status: ExecutionStatus = "success", started: bool = True
) -> Execution:
    slot = T0 + timedelta(minutes=minute)
    return Execution(
        id=execution_id(job, slot, attempt),
        job_name=job,
        scheduled_at=slot,
        started_at=slot + timedelta(seconds=1) if started else ZERO_TIME,
        finished_at=slot + timedelta(seconds=2) if status not in ("pending", "running") else ZERO_TIME,
        success=status == "success",
        status=status,
        attempt=attempt,
        output=f"output of {job} at {minute}\n\x00\u2603",
    )


@pytest.fixture(params=["consul", "postgresql"])
def where(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Which store, and where: the session's Consul agent, or a new database on the session's PostgreSQL."""
    if request.param == "consul":
        agent: DevAgent = request.getfixturevalue("consul_agent")
        return "consul", str(agent.http_port)
    return "postgresql", request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def history(where: tuple[str, str]) -> AsyncIterator[HistoryStore]:
    kind, address = where
    store: HistoryStore
    consul: ConsulClient | None = None
    if kind == "consul":
        consul = ConsulClient("127.0.0.1", int(address))
        await consul.kv_delete(keys.ROOT, recurse=True)
        store = ConsulHistoryStore(Store(consul))
    else:
        store = PostgresHistoryStore(address)
    try:
        yield store
    finally:
        await store.close()
        if consul is not None:
            await consul.close()


async def test_a_batch_is_stored_and_each_record_read_back(history: HistoryStore) -> None:
    batch = [record("nightly", m) for m in range(150)]  # more than one Consul transaction, and a PUT_CHUNK or so
    await history.put(batch)
    assert await history.count("nightly") == 150
    for sample in (batch[0], batch[77], batch[-1]):
        assert await history.get("nightly", sample.id) == sample
    with pytest.raises(NotFoundError):
        await history.get("nightly", "nightly.nope")
    with pytest.raises(NotFoundError):
        await history.get("other", batch[0].id)  # an id belongs to its job


async def test_a_large_batch(history: HistoryStore) -> None:
    await history.put([record("big", m) for m in range(2100)])
    assert await history.count("big") == 2100
    page = await history.page("big", limit=3)
    assert [r.scheduled_at for r in page.records] == [T0 + timedelta(minutes=m) for m in (2099, 2098, 2097)]


async def test_list_is_newest_first_and_paged(history: HistoryStore) -> None:
    older = [record("job", m) for m in range(10)]
    pending = record("job", 20, status="pending", started=False)  # listed by its slot until it starts
    await history.put([*older[5:], pending, *older[:5], record("job-2", 99)])
    page = await history.page("job")
    assert page.total == 11
    assert [r.id for r in page.records] == [pending.id, *(r.id for r in reversed(older))]
    second = await history.page("job", offset=3, limit=4)
    assert second.total == 11
    assert [r.id for r in second.records] == [older[m].id for m in (7, 6, 5, 4)]
    assert (await history.page("job", offset=11, limit=5)).records == []
    oldest = await history.page("job", descending=False, limit=2)
    assert [r.id for r in oldest.records] == [older[0].id, older[1].id]
    assert (await history.page("nobody")).total == 0


async def test_list_sorted_by_a_field_breaks_ties_by_id(history: HistoryStore) -> None:
    same = [record("retry", 1, attempt=a, status="failed") for a in (1, 2, 3)]
    await history.put([same[1], same[2], same[0], record("retry", 0)])
    by_attempt = await history.page("retry", sort="attempt", descending=True)
    assert [r.attempt for r in by_attempt.records] == [3, 2, 1, 1]
    ascending = await history.page("retry", sort="finished_at", descending=False)
    assert [r.id for r in ascending.records] == [record("retry", 0).id, *sorted(r.id for r in same)]


async def test_ties_are_broken_by_id_by_code_point(history: HistoryStore) -> None:
    """As the Consul store sorts (and the API always has), whatever the database's collation: en-US puts 'x-a'
    before 'x-B', code points the other way round."""
    tied = [msgspec.structs.replace(record("job", 1), id=f"job.{suffix}") for suffix in ("a", "B", "_", "ä", "Z")]
    await history.put(tied)
    listed = [r.id for r in (await history.page("job")).records]
    assert listed == sorted((r.id for r in tied), reverse=True)


async def test_putting_a_record_again_replaces_it(history: HistoryStore) -> None:
    running = record("job", 1, status="running")
    await history.put([running])
    done = msgspec.structs.replace(running, status="failed", exit_code=3, output="boom")
    await history.put([done])
    await history.put([done])
    assert await history.count("job") == 1
    assert await history.get("job", running.id) == done
    twice = record("job", 2)
    await history.put([twice, msgspec.structs.replace(twice, output="the later one")])  # one batch, one key
    assert (await history.get("job", twice.id)).output == "the later one"
    assert await history.count() == 2


async def test_which_ids_are_stored(history: HistoryStore) -> None:
    runs = [record(name, m) for name in ("job", "job-2") for m in range(3)]
    await history.put(runs)
    asked = [runs[0].id, runs[2].id, "job.nope", runs[3].id]  # runs[3] is job-2's
    assert await history.stored_ids("job", asked) == {runs[0].id, runs[2].id}
    assert await history.stored_ids("job", []) == set()
    assert await history.stored_ids("nobody", asked) == set()


async def test_deleting_a_job_s_history_touches_no_other_job(history: HistoryStore) -> None:
    await history.put([record(name, m) for name in ("backup", "backup-db", "backup_", "backu") for m in range(3)])
    await history.delete_job("backup")
    assert await history.count("backup") == 0
    assert (await history.page("backup")).records == []
    for name in ("backup-db", "backup_", "backu"):
        assert await history.count(name) == 3
    await history.delete_job("no-such-job")
    assert await history.count() == 9


async def test_trim_to_count_keeps_the_newest_and_what_is_not_finished(history: HistoryStore) -> None:
    runs = [record("job", m) for m in range(20)]
    open_run = record("job", 0, attempt=2, status="running")  # oldest, but under way
    protected = runs[1]
    await history.put([*runs, open_run, *(record("other", m) for m in range(8))])
    assert await history.trim_to_count(5, "job", protect=[protected.id]) == 14
    left = {r.id for r in (await history.page("job")).records}
    assert left == {open_run.id, protected.id, *(r.id for r in runs[15:])}
    assert await history.count("other") == 8
    assert await history.trim_to_count(5, "job", protect=[protected.id]) == 0  # nothing more to do
    assert await history.trim_to_count(3) == 2 + 1 + 5  # every job: job keeps 3 finished (+ the running one)
    assert await history.count("job") == 4
    assert await history.count("other") == 3


async def test_trim_older_than_keeps_newer_and_unfinished(history: HistoryStore) -> None:
    await history.put(
        [
            *(record("a", m) for m in range(10)),
            *(record("b", m, status="failed") for m in range(10)),
            record("a", 1, attempt=2, status="pending", started=False),
        ]
    )
    cutoff = T0 + timedelta(minutes=6)  # `when` of minute m is T0 + m min + 1 s: minutes 0..5 are older
    assert await history.trim_older_than(cutoff, protect=[record("b", 0, status="failed").id]) == 6 + 5
    assert await history.count("a") == 5
    assert await history.count("b") == 5
    assert await history.trim_older_than(cutoff) == 1
    assert await history.count() == 9


async def test_counts(history: HistoryStore) -> None:
    assert await history.count() == 0
    await history.put([record(name, m) for name in ("x", "y", "xy") for m in range(4)])
    assert await history.count("x") == 4
    assert await history.count("xy") == 4
    assert await history.count() == 12


async def test_a_search_across_jobs_finds_the_failed_runs(history: HistoryStore) -> None:
    await history.put(
        [
            record("a", 1, status="failed"),
            record("a", 2),
            record("b", 3, status="timeout"),
            record("c", 4, status="killed"),
            record("c", 5, status="missed"),
            record("c", 6, status="skipped"),
            record("d", 7, status="running"),
            record("d", 0, status="failed"),
        ]
    )
    failed = ExecutionFilter(statuses=FAILED_STATUSES)
    found = await history.search(failed)
    assert [(r.job_name, r.status) for r in found.records] == [("c", "killed"), ("b", "timeout"), ("a", "failed"),
                                                               ("d", "failed")]  # fmt: skip
    assert found.total == 4
    paged = await history.search(failed, offset=1, limit=2)
    assert ([r.job_name for r in paged.records], paged.total) == (["b", "a"], 4)
    since = await history.search(ExecutionFilter(statuses=FAILED_STATUSES, since=T0 + timedelta(minutes=2)))
    assert [r.job_name for r in since.records] == ["c", "b"]
    oldest_first = await history.search(failed, sort="started_at", descending=False)
    assert [r.job_name for r in oldest_first.records] == ["d", "a", "b", "c"]


async def test_a_search_by_job_node_time_and_output(history: HistoryStore) -> None:
    ran = [msgspec.structs.replace(record(job, m), node_name=node, output=text) for job, m, node, text in [
        ("web", 1, "e1", "connected to db\n"), ("web", 2, "e2", "ERROR: Connection refused\n"),
        ("web-2", 3, "e1", "error: disk full\x00 at /var\n"), ("db", 4, "e2", "ok \\u0000 \"quoted\"\n"),
        ("db", 5, "e1", "Straße ☃ done\n"),
    ]]  # fmt: skip
    await history.put(ran)

    async def found(**where: Any) -> list[tuple[str, int]]:
        page = await history.search(ExecutionFilter(**where))
        assert page.total == len(page.records)
        return [(r.job_name, r.scheduled_at.minute) for r in page.records]

    assert await found(job_name="web") == [("web", 2), ("web", 1)]  # not web-2
    assert await found(node="e1") == [("db", 5), ("web-2", 3), ("web", 1)]
    assert await found(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4)) == [("web-2", 3), ("web", 2)]
    assert await found(text="error") == [("web-2", 3), ("web", 2)]  # ignoring case
    assert await found(text="CONNECT") == [("web", 2), ("web", 1)]
    assert await found(text="disk full at") == []  # the NUL is part of the output
    assert await found(text="/var") == [("web-2", 3)]  # an output with a NUL is searched too
    assert await found(text="☃ done") == [("db", 5)]
    assert await found(text="straße") == [("db", 5)]
    assert await found(text="%") == [] and await found(text="_") == []  # no wildcards
    assert await found(text="error", node="e2", job_name="web") == [("web", 2)]
    assert await found(job_name="nobody") == []
    assert len(await found()) == 5


async def test_any_job_name_cronbus_allows(history: HistoryStore) -> None:
    await history.put([record(name, m) for name in ODD_NAMES for m in range(2)])
    for name in ODD_NAMES:
        page = await history.page(name)
        assert page.total == 2, name
        assert {r.job_name for r in page.records} == {name}
        assert await history.get(name, page.records[0].id) == page.records[0]
    await history.delete_job("backup")
    assert await history.count() == 2 * (len(ODD_NAMES) - 1)
    assert await history.count("backup-db") == 2
    assert await history.trim_to_count(1) == len(ODD_NAMES) - 1


async def test_the_consul_store_keeps_today_s_layout(consul: ConsulClient) -> None:
    """What the scheduler writes and the gateway reads today is what the Consul history store reads and writes."""
    store = Store(consul)
    history = ConsulHistoryStore(store)
    run = record("job", 1)
    await history.put([run])
    assert await store.execution_keys("job") == [keys.execution("job", run.id)]
    assert await store.list_executions("job") == [run]


async def test_an_outage_raises_a_store_error_and_the_store_recovers(fresh_postgres: LocalPostgres) -> None:
    history = PostgresHistoryStore(fresh_postgres.dsn, timeout_s=1)
    try:
        await history.put([record("job", 1)])
        fresh_postgres.stop()
        began = time.monotonic()
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: history.put([record("job", 2)]),
            lambda: history.page("job"),
            lambda: history.get("job", record("job", 1).id),
            history.count,
            lambda: history.search(ExecutionFilter(text="x")),
            lambda: history.trim_to_count(1),
            lambda: history.trim_older_than(T0),
            lambda: history.delete_job("job"),
        ]
        for call in calls:
            with pytest.raises(HistoryStoreError, match=r"PostgreSQL history store .* unavailable"):
                await call()
        assert time.monotonic() - began < len(calls) * 1 + 10  # each call gives up within its timeout
        fresh_postgres.start()
        deadline = time.monotonic() + 30
        while True:  # the pool reconnects in the background: the first calls after the start may still fail
            try:
                await history.put([record("job", 3)])
                break
            except HistoryStoreError:
                if time.monotonic() > deadline:
                    raise
        assert await history.count("job") == 2
        assert (await history.page("job")).records[0].id == record("job", 3).id
    finally:
        await history.close()


def test_the_setting_names_a_store() -> None:
    assert check_history_store("consul") == "consul"
    dsn = "postgresql://cronbus:secret@db.example:5432/cronbus?sslmode=require"
    assert check_history_store(dsn) == dsn
    for bad in ("", "Consul", "mysql://x", "postgresql://h/db?bogus_option=1"):
        with pytest.raises(SettingsError, match="--history-store"):
            check_history_store(bad)
    with pytest.raises(SettingsError) as caught:
        check_history_store("postgresql://u:hunter2@h/db?nope=1")
    assert "hunter2" not in str(caught.value)
    assert redact_dsn(dsn) == "postgresql://cronbus:***@db.example:5432/cronbus?sslmode=require"


async def test_opening_a_store_contacts_nothing(consul: ConsulClient) -> None:
    assert isinstance(open_history_store("consul", Store(consul)), ConsulHistoryStore)
    unreachable = open_history_store("postgresql://nobody@127.0.0.1:1/none", Store(consul))
    assert isinstance(unreachable, PostgresHistoryStore)
    await unreachable.close()
