"""The leader lock and the leader's ledger against a real Consul: terms grow, writes are fenced, create-only
launches are recognised when replayed, and a status changed by someone else is re-read, not overwritten."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import consul.exceptions as consul_exceptions
import msgspec
import pytest

from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import MAX_TXN_OPS, ConsulClient, KVEntry, TxnError, TxnOp, status_of
from cronbus.common.consul.lock import LeaderLock, LeaseKeeper
from cronbus.common.consul.store import Store
from cronbus.common.errors import ConsulError
from cronbus.common.models import Execution, JobStatus
from cronbus.services.scheduler import ledger as ledger_module
from cronbus.services.scheduler.ledger import Ledger, Unit
from tests.helpers import wait_until

SLOT = datetime(2026, 1, 1, tzinfo=UTC)


async def _lock(consul: ConsulClient, name: str, clock: list[float] | None = None) -> LeaderLock:
    check = f"service:test-{name}"
    await consul.register_service(
        "cronbus-test", f"test-{name}", address="127.0.0.1", port=1, tags=[], meta={}, ttl_s=30
    )
    await consul.check_pass(check)
    if clock is None:
        return LeaderLock(consul, name=name, check_id=check, ttl_s=2)
    return LeaderLock(consul, name=name, check_id=check, ttl_s=2, clock=lambda: clock[0])


async def test_terms_grow_and_only_one_holds_the_lock(consul: ConsulClient) -> None:
    first, second = await _lock(consul, "one"), await _lock(consul, "two")
    assert await first.try_acquire("tcp://a:1", "tcp://a:2")
    assert not await second.try_acquire("tcp://b:1", "tcp://b:2")
    leader = await Store(consul).get_leader()
    assert leader is not None and leader[0].name == "one" and leader[0].term == first.term
    first_term = first.term
    await first.release()
    assert not first.is_leader()
    assert await second.try_acquire("tcp://b:1", "tcp://b:2")
    assert second.term > first_term
    await second.release()


async def test_the_lease_runs_out_without_renewal(consul: ConsulClient) -> None:
    clock = [100.0]
    lock = await _lock(consul, "lease", clock)
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    assert lock.is_leader()
    clock[0] += 1.6  # past 0.75 * ttl: the lease must end before Consul could give the lock to another
    assert not lock.is_leader()
    assert await lock.renew()
    assert lock.is_leader()
    await lock.release()


async def test_a_busy_event_loop_keeps_the_lease(consul: ConsulClient) -> None:
    """The lease thread renews while the loop is blocked for longer than the TTL (thousands of runs due at once):
    the leader stays leader, and nobody else gets the lock."""
    lock, rival = await _lock(consul, "busy"), await _lock(consul, "rival")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    first_lease = lock.lease_until
    keeper = LeaseKeeper(lock, interval_s=0.5)
    keeper.start()
    try:
        # A blocking wait, on purpose: the event loop does not get back to its tasks until the thread has renewed
        # the lease past the whole TTL.
        wait_until(lambda: lock.lease_until > first_lease + lock.ttl_s, timeout_s=10, what="a renewal past the TTL")
        assert lock.is_leader()
        assert not await rival.try_acquire("tcp://b:1", "tcp://b:2")
    finally:
        keeper.stop()
    await lock.release()
    await rival.release()


async def test_a_forgotten_session_does_not_keep_the_lock_forever(consul: ConsulClient) -> None:
    """A session whose id this process dropped (a failed release, an error) may still hold the lock, alive on the
    check we keep passing; the next campaign round destroys it instead of waiting on it forever."""
    lock = await _lock(consul, "forgetful")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    orphan = lock.session
    lock._session, lock.term = "", 0  # what an error in the middle of a release leaves
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    assert lock.session != orphan
    assert orphan not in {str(s["ID"]) for s in await consul.session_list()}
    await lock.release()


async def test_updates_of_a_record_land_in_the_order_they_came(consul: ConsulClient) -> None:
    """Updates are written before queued launches, in the order they came, and several of one record in one batch
    write the latest: a run sent elsewhere and then finished never ends up pending again."""
    lock = await _lock(consul, "coalesce")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    store = Store(consul)
    ledger = Ledger(store, lock.session, {})
    created = ledger.submit(Unit(create=[_record("c1")]))
    runner = asyncio.create_task(ledger.run())
    await asyncio.sleep(0)  # the runner takes the create and waits on Consul, so what follows queues behind it
    moved = msgspec.structs.replace(_record("c1"), node_name="e2")
    done = msgspec.structs.replace(_record("c1"), node_name="e2", status="success")
    queued = [
        ledger.submit(Unit(update=[moved])),
        ledger.submit(Unit(create=[_record("c2")])),  # a launch, queued between the two updates
        ledger.submit(Unit(update=[done])),
    ]
    assert [await created, *await asyncio.gather(*queued)] == ["committed"] * 4
    assert (await store.get_execution("job1", "c1")).status == "success"
    assert (await store.get_execution("job1", "c2")).status == "pending"
    runner.cancel()
    await lock.release()


async def test_a_queued_update_is_replaced_by_a_later_update_of_the_same_record(consul: ConsulClient) -> None:
    """A short run's "started" still queued when its "finished" comes is not written: one write, and both waiters
    learn the outcome of the one that was."""
    lock = await _lock(consul, "supersede")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    store = Store(consul)
    ledger = Ledger(store, lock.session, {})
    runner = asyncio.create_task(ledger.run())
    assert await ledger.submit(Unit(create=[_record("s1")])) == "committed"
    written: list[str] = []
    commit = store.consul.txn

    async def counting(ops: Sequence[TxnOp]) -> tuple[bool, list[KVEntry], list[TxnError]]:
        written.extend(op.key for op in ops if op.verb == "set")
        return await commit(ops)

    store.consul.txn = counting  # type: ignore[method-assign]
    # Queued at once, with more than a transaction's worth of other updates around the two: without the
    # replacement they would be written in different transactions.
    others = [ledger.submit(Unit(update=[_record(f"o{i}")])) for i in range(MAX_TXN_OPS + 10)]
    started = ledger.submit(Unit(update=[msgspec.structs.replace(_record("s1"), status="running")]))
    others += [ledger.submit(Unit(update=[_record(f"p{i}")])) for i in range(2 * MAX_TXN_OPS)]
    done = msgspec.structs.replace(_record("s1"), status="success")
    finished = ledger.submit(Unit(update=[done], status={"job1": [_add("s1")]}))
    assert [await started, await finished] == ["committed"] * 2
    assert set(await asyncio.gather(*others)) == {"committed"}
    assert written.count(keys.execution("job1", "s1")) == 1
    assert (await store.get_execution("job1", "s1")).status == "success"
    runner.cancel()
    await lock.release()


async def test_updates_gather_into_a_transaction_that_a_launch_or_a_full_one_sends_at_once(
    consul: ConsulClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trickle of results waits (up to GATHER_S) to share a transaction instead of costing one each; a launch
    goes at once and takes what is queued with it, and so does a transaction's worth of updates."""
    monkeypatch.setattr(ledger_module, "GATHER_S", 30.0)  # longer than the test: only a launch or a full batch sends
    lock = await _lock(consul, "gather")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    store = Store(consul)
    ledger = Ledger(store, lock.session, {})
    sizes: list[int] = []
    commit = store.consul.txn

    async def counting(ops: Sequence[TxnOp]) -> tuple[bool, list[KVEntry], list[TxnError]]:
        sizes.append(len(ops))
        return await commit(ops)

    store.consul.txn = counting  # type: ignore[method-assign]
    runner = asyncio.create_task(ledger.run())
    trickle = []
    for i in range(5):
        trickle.append(ledger.submit(Unit(update=[_record(f"t{i}")])))
        await asyncio.sleep(0)  # the runner sees each one come alone
    launch = ledger.submit(Unit(create=[_record("l1")]))
    assert await asyncio.wait_for(launch, 10) == "committed"
    assert await asyncio.gather(*trickle) == ["committed"] * 5
    assert sizes == [1 + 5 + 1]  # the fence, the five updates and the launch: one transaction
    full = [ledger.submit(Unit(update=[_record(f"f{i}")])) for i in range(MAX_TXN_OPS - 1)]
    assert await asyncio.wait_for(asyncio.gather(*full), 10) == ["committed"] * (MAX_TXN_OPS - 1)
    assert sizes[1:] == [MAX_TXN_OPS]
    runner.cancel()
    await lock.release()


async def test_settled_waits_for_the_units_submitted_before_it_only(
    consul: ConsulClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """settled() (the leader's cleanup after a job's deletion waits on it) is done once every unit submitted before
    the call is written, and is not held back by units submitted after it."""
    monkeypatch.setattr(ledger_module, "GATHER_S", 30.0)  # a trickle of updates waits for a launch to go
    lock = await _lock(consul, "settled")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    ledger = Ledger(Store(consul), lock.session, {})
    runner = asyncio.create_task(ledger.run())
    early = [ledger.submit(Unit(update=[_record(f"e{i}")])) for i in range(3)]
    settling = ledger.settled()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not settling.done()
    ledger.submit(Unit(create=[_record("launch")]))  # sends what is queued at once
    await asyncio.wait_for(settling, 10)
    assert [f.result() for f in early] == ["committed"] * 3
    later = ledger.settled()
    waiting = ledger.submit(Unit(update=[_record("late")]))
    await asyncio.wait_for(later, 10)
    assert not waiting.done()
    runner.cancel()
    await lock.release()


def _record(exec_id: str, job: str = "job1") -> Execution:
    return Execution(id=exec_id, job_name=job, scheduled_at=SLOT, status="pending")


def _add(exec_id: str):  # type: ignore[no-untyped-def]
    def change(s: JobStatus) -> JobStatus:
        return msgspec.structs.replace(s, running=[*s.running, exec_id], success_count=s.success_count + 1)

    return change


async def test_ledger_commits_detects_replays_and_is_fenced(consul: ConsulClient) -> None:
    lock = await _lock(consul, "ledger")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    store = Store(consul)
    ledger = Ledger(store, lock.session, {})
    runner = asyncio.create_task(ledger.run())
    first = ledger.submit(Unit(create=[_record("e1")], status={"job1": [_add("e1")]}))
    second = ledger.submit(Unit(create=[_record("e2")], status={"job1": [_add("e2")]}))
    assert (await first, await second) == ("committed", "committed")
    status, _ = await store.get_status("job1")
    assert status.running == ["e1", "e2"] and status.success_count == 2

    # Someone else (the gateway) resets the counters: the next change applies on top of that, not over it.
    await store.update_status("job1", lambda s: msgspec.structs.replace(s, success_count=0))
    assert await ledger.submit(Unit(create=[_record("e3")], status={"job1": [_add("e3")]})) == "committed"
    status, _ = await store.get_status("job1")
    assert status.success_count == 1 and status.running == ["e1", "e2", "e3"]

    # A replayed launch: its record exists, so the unit is not applied, and the rest of the batch is.
    replay = ledger.submit(Unit(create=[_record("e1")], status={"job1": [_add("e1")]}))
    other = ledger.submit(Unit(create=[_record("e4")]))
    assert (await replay, await other) == ("exists", "committed")
    assert (await store.get_status("job1"))[0].running == ["e1", "e2", "e3"]

    # Once the lock is gone, nothing more is written.
    await consul.kv_put(keys.LEADER, b"", release=lock.session)
    assert await ledger.submit(Unit(create=[_record("e5")])) == "fenced"
    keys_now = await store.execution_keys("job1")
    assert [k.rsplit("/", 1)[1] for k in keys_now] == ["e1", "e2", "e3", "e4"]
    await runner
    await lock.release()


async def test_a_job_named_fence_is_a_job_not_the_fence(consul: ConsulClient) -> None:
    """The fence operation's owner is a marker of its own type: a conflict on the status of a job named "fence"
    (its counters reset by DELETE /v1/jobs/fence/executions) is read again and applied, and the ledger goes on.
    It was taken for the fence failing once: the ledger stopped, and no job recorded a run again."""
    lock = await _lock(consul, "fence-owner")
    assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
    store = Store(consul)
    ledger = Ledger(store, lock.session, {})
    runner = asyncio.create_task(ledger.run())
    assert await ledger.submit(Unit(create=[_record("f1", job="fence")], status={"fence": [_add("f1")]})) == (
        "committed"
    )
    await store.update_status("fence", lambda s: msgspec.structs.replace(s, success_count=0))  # the reset
    unit = Unit(create=[_record("f2", job="fence")], status={"fence": [_add("f2")]})
    assert await ledger.submit(unit) == "committed"
    assert not ledger.fenced
    assert await ledger.submit(Unit(create=[_record("o1", job="other")], status={"other": [_add("o1")]})) == (
        "committed"
    )
    status, _ = await store.get_status("fence")
    assert status.running == ["f1", "f2"] and status.success_count == 1
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await lock.release()


def _free_port_with_500() -> int:
    """A free loopback port whose number holds "500" (the lock once looked for "500" in an error's text)."""
    for port in (*range(35000, 35010), *range(45000, 45010), *range(50000, 50010), 15000, 25000):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return int(port)
    raise AssertionError("no free port holding 500")


async def test_an_unreachable_consul_on_a_port_with_500_keeps_the_session(tmp_path: Path) -> None:
    """The lock drops its session only when Consul answers 500 (the session is invalid), decided by the status
    code: a refused connection to 127.0.0.1:35000 is not Consul saying so. A dropped session would be left
    holding the lock until its TTL, with nobody to destroy it."""
    agent = DevAgent(_free_port_with_500(), log_path=tmp_path / "consul.log").start()
    consul = ConsulClient("127.0.0.1", agent.http_port)
    try:
        lock = await _lock(consul, "port500")
        assert await lock.try_acquire("tcp://a:1", "tcp://a:2")
        session = lock.session
        agent.stop()
        with pytest.raises(ConsulError) as refused:
            await lock.try_acquire("tcp://a:1", "tcp://a:2")
        assert refused.value.status is None and "500" in str(refused.value)
        assert lock.session == session
    finally:
        agent.stop()
        await consul.close()


def test_the_status_consul_answered_is_read_from_py_consuls_exceptions() -> None:
    assert status_of(consul_exceptions.ConsulException("500 invalid session")) == 500
    assert status_of(consul_exceptions.ConsulException("Failed to decode JSON: x")) is None
    assert status_of(consul_exceptions.ACLPermissionDenied("denied")) == 403
    assert status_of(consul_exceptions.ClientError("429 too many")) == 429
    assert status_of(OSError("Cannot connect to host 127.0.0.1:8500")) is None


async def test_terms_grow_even_when_the_leader_key_is_overwritten(consul: ConsulClient) -> None:
    """A plain write of the leader key (a hand edit) resets Consul's LockIndex to 0: a term taken from it alone
    went back to 1, and executors, which refuse terms lower than the highest they saw, refused every dispatch of
    the new leader. The term key keeps terms growing; a term an executor saw raises the next past it."""
    first, second = await _lock(consul, "grow-a"), await _lock(consul, "grow-b")
    assert await first.try_acquire("tcp://a:1", "tcp://a:2")
    await first.try_acquire("tcp://a:1", "tcp://a:2")
    earlier = first.term
    await consul.kv_put(keys.LEADER, b"edited by hand")
    entry = await consul.kv_get(keys.LEADER)
    assert entry is not None and entry.lock_index == 0  # what Consul does to a locked key written plainly
    await first.release()
    assert await second.try_acquire("tcp://b:1", "tcp://b:2")
    assert second.term > earlier
    await second.step_down_past(50)  # an executor saw term 50
    assert await first.try_acquire("tcp://a:1", "tcp://a:2")
    assert first.term == 51
    await consul.kv_put(keys.TERM, b"garbage")  # lost too: the LockIndex and this process's floor still hold
    await first.release()
    assert await first.try_acquire("tcp://a:1", "tcp://a:2")
    assert first.term > 51
    await first.release()
    await second.release()
