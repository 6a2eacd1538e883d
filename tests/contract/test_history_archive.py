"""The leader's history keeper (services/scheduler/archive.py) on a real Consul, a real PostgreSQL and the leader's
real ledger: settled records move in batches and leave Consul only once PostgreSQL has them; what is under way, not
settled or tracked stays; a PostgreSQL outage leaves everything in Consul with the backlog counted, and the next
sweep after it moves them; a term that ended deletes nothing; age and count trims."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.history import ConsulHistoryStore
from cronbus.common.consul.lock import LeaderLock
from cronbus.common.consul.store import Store, encode
from cronbus.common.errors import CronbusError
from cronbus.common.history import HistoryStoreError
from cronbus.common.local_postgres import LocalPostgres
from cronbus.common.metrics import Registry
from cronbus.common.models import ZERO_TIME, Execution, ExecutionStatus, execution_id, now_utc
from cronbus.common.postgresql import PostgresHistoryStore
from cronbus.services.scheduler.archive import ArchiveSettings, HistoryArchive
from cronbus.services.scheduler.ledger import Ledger
from tests.helpers import async_wait_until

SETTLE_S = 600.0


def record(job: str, ended_ago_s: float, status: ExecutionStatus = "success", n: int = 0) -> Execution:
    ended = now_utc() - timedelta(seconds=ended_ago_s)
    slot = ended - timedelta(seconds=10 + n)
    return Execution(
        id=execution_id(job, slot, 1),
        job_name=job,
        scheduled_at=slot,
        started_at=slot + timedelta(seconds=1),
        finished_at=ended if status not in ("pending", "running") else ZERO_TIME,
        success=status == "success",
        status=status,
        output=f"{job} {n}",
    )


async def _leader(consul: ConsulClient, name: str) -> LeaderLock:
    check = f"service:test-{name}"
    await consul.register_service("cronbus-test", f"test-{name}", address="127.0.0.1", port=1, tags=[], meta={},
                                  ttl_s=30)  # fmt: skip
    await consul.check_pass(check)
    lock = LeaderLock(consul, name=name, check_id=check, ttl_s=5)
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    return lock


@pytest.fixture
async def ledger(consul: ConsulClient) -> AsyncIterator[Ledger]:
    lock = await _leader(consul, "keeper")
    ledger = Ledger(Store(consul), lock.session, {})
    runner = asyncio.create_task(ledger.run())
    yield ledger
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await lock.release()


async def _in_consul(consul: ConsulClient) -> set[str]:
    return {keys.name_from_key(keys.EXECUTIONS, k) + "/" + k.rsplit("/", 1)[1] for k in await consul.kv_keys(
        keys.EXECUTIONS)}  # fmt: skip


async def _put(consul: ConsulClient, *records: Execution) -> None:
    for r in records:
        await consul.kv_put(keys.execution(r.job_name, r.id), encode(r))


def _metric(registry: Registry, name: str) -> str:
    return next(line.split()[-1] for line in registry.render().splitlines() if line.startswith(name + " "))


async def test_settled_records_move_and_the_rest_stays(consul: ConsulClient, ledger: Ledger, postgres_dsn: str) -> None:
    history = PostgresHistoryStore(postgres_dsn)
    lanes: list[tuple[str, ExecutionStatus]] = [("backup", "success"), ("backup-db", "failed")]
    settled = [record(job, SETTLE_S + 60 + n, status, n) for n in range(7) for job, status in lanes]
    recent = record("backup", 30, n=99)
    running = record("backup", 0, "running", n=98)
    tracked = record("backup", SETTLE_S * 2, n=97)  # settled, but the dispatcher still holds it
    await _put(consul, *settled, recent, running, tracked)
    registry = Registry()
    keeper = HistoryArchive(Store(consul), history, registry, ArchiveSettings(settle_s=SETTLE_S, batch=4),
                            protect=lambda: {tracked.id})  # fmt: skip
    try:
        assert await keeper.sweep(ledger) == len(settled)
        assert await history.count() == len(settled)
        for r in settled:
            assert await history.get(r.job_name, r.id) == r
        left = await _in_consul(consul)
        assert left == {f"backup/{r.id}" for r in (recent, running, tracked)}
        assert _metric(registry, "cronbus_history_moved_total") == str(len(settled))
        assert _metric(registry, "cronbus_history_backlog") == "0"
        assert await keeper.sweep(ledger) == 0  # nothing more has settled
    finally:
        await history.close()


async def test_the_backlog_is_bounded_and_the_oldest_go_first(
    consul: ConsulClient, ledger: Ledger, postgres_dsn: str
) -> None:
    history = PostgresHistoryStore(postgres_dsn)
    settled = [record("job", SETTLE_S + 100 * (5 - n), n=n) for n in range(5)]  # settled[0] is the oldest
    await _put(consul, *settled)
    registry = Registry()
    keeper = HistoryArchive(Store(consul), history, registry, ArchiveSettings(settle_s=SETTLE_S, max_backlog=3))
    try:
        assert await keeper.sweep(ledger) == 3
        assert await history.stored_ids("job", [r.id for r in settled]) == {r.id for r in settled[:3]}
        assert _metric(registry, "cronbus_history_backlog") == "2"
        assert await keeper.sweep(ledger) == 2
        assert await _in_consul(consul) == set()
    finally:
        await history.close()


async def test_an_outage_keeps_records_in_consul_and_the_next_sweep_moves_them(
    consul: ConsulClient, ledger: Ledger, fresh_postgres: LocalPostgres
) -> None:
    history = PostgresHistoryStore(fresh_postgres.dsn, timeout_s=1)
    settled = [record("job", SETTLE_S + 10, n=n) for n in range(3)]
    await _put(consul, *settled)
    registry = Registry()
    keeper = HistoryArchive(Store(consul), history, registry,
                            ArchiveSettings(settle_s=SETTLE_S, interval_s=0.2))  # fmt: skip
    lost = asyncio.Event()
    try:
        fresh_postgres.stop()
        with pytest.raises(HistoryStoreError):
            await keeper.sweep(ledger)
        assert len(await _in_consul(consul)) == 3  # nothing deleted that the store does not have
        assert _metric(registry, "cronbus_history_backlog") == "3"
        running = asyncio.create_task(keeper.run(ledger, lost))  # it goes on through the outage, never ends

        async def failed_once() -> bool:
            return _metric(registry, "cronbus_history_store_failures_total") != "0"

        await async_wait_until(failed_once, timeout_s=20, what="a failed sweep")
        assert not running.done()
        fresh_postgres.start()

        async def moved() -> bool:
            return not await _in_consul(consul)

        await async_wait_until(moved, timeout_s=90, what="the records moved")  # the pause doubles while down
        assert await history.count("job") == 3
        lost.set()
        await asyncio.wait_for(running, 10)
    finally:
        lost.set()
        await history.close()


async def test_a_term_that_ended_deletes_nothing(consul: ConsulClient, postgres_dsn: str) -> None:
    lock = await _leader(consul, "ended")
    ledger = Ledger(Store(consul), lock.session, {})
    runner = asyncio.create_task(ledger.run())
    history = PostgresHistoryStore(postgres_dsn)
    try:
        await _put(consul, record("job", SETTLE_S + 10))
        await consul.kv_put(keys.LEADER, b"", release=lock.session)  # the lock is gone: the ledger is fenced
        keeper = HistoryArchive(Store(consul), history, Registry(), ArchiveSettings(settle_s=SETTLE_S))
        assert await keeper.sweep(ledger) == 0
        assert len(await _in_consul(consul)) == 1  # still there (and in PostgreSQL: listed once, docs/storage.md)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await history.close()
        await lock.release()


async def test_trims_by_age_on_consul_and_by_count_on_postgresql(
    consul: ConsulClient, ledger: Ledger, postgres_dsn: str
) -> None:
    on_consul = HistoryArchive(Store(consul), ConsulHistoryStore(Store(consul)), Registry(),
                               ArchiveSettings(max_age_s=3600))  # fmt: skip
    await _put(consul, record("job", 7200, n=1), record("job", 60, n=2), record("job", 7200, "running", n=3))
    assert await on_consul.trim() == 1
    assert len(await _in_consul(consul)) == 2
    history = PostgresHistoryStore(postgres_dsn)
    try:
        on_pg = HistoryArchive(Store(consul), history, Registry(), ArchiveSettings(history_limit=2, max_age_s=3600))
        await history.put([record("job", 60 + n, n=n) for n in range(5)] + [record("old", 9000)])
        assert await on_pg.trim() == 1 + 3
        assert await history.count() == 2
    finally:
        await history.close()


def test_failures_are_cronbus_errors() -> None:
    assert issubclass(HistoryStoreError, CronbusError)  # what run() catches to go on
