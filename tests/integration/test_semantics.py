"""Semantics §3–§6 with real processes: concurrency, retries, chaining, misfires, executor loss, fencing."""

from __future__ import annotations

import itertools
import signal
import uuid
from datetime import timedelta
from pathlib import Path

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution, now_utc
from cronbus.services.scheduler.service import LEAD
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, control, executions, executor_joined, finished, put_job


async def _leader(store: Store) -> str:
    found = await store.get_leader()
    return found[0].name if found else ""


async def _up(cluster: Cluster, store: Store, executors: int = 1) -> None:
    cluster.scheduler(name="s1")
    for i in range(executors):
        cluster.executor(name=f"e{i + 1}")
    await async_wait_until(lambda: _leader(store), timeout_s=15, what="a leader")
    await async_wait_until(lambda: executor_joined(store), timeout_s=15, what="an executor")


def _run(name: str) -> m.RunJob:
    return m.RunJob(req_id=uuid.uuid4().hex, job_name=name)


async def test_forbid_under_rapid_manual_runs(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    await _up(cluster, store)
    await put_job(store, name="solo", schedule="@manually", concurrency="forbid", executor="shell",
                  executor_config={"command": "sleep 2"})  # fmt: skip
    replies = [await control(store, _run("solo")) for _ in range(5)]
    assert [r.code for r in replies] == [202, 409, 409, 409, 409]
    assert "already running" in replies[1].error

    async def done() -> list[Execution]:
        records = await executions(store, "solo")
        return records if len(finished(records)) == len(records) == 5 else []

    records = await async_wait_until(done, timeout_s=15, what="one run and four skips")
    assert sorted(r.status for r in records) == ["skipped"] * 4 + ["success"]
    assert all("concurrency forbid" in r.reason for r in records if r.status == "skipped")
    await store.consul.close()


async def test_a_failed_run_is_retried_and_its_success_counts(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    await _up(cluster, store)
    marker = tmp_path / "attempted"
    command = f"test -f {marker} || {{ touch {marker}; exit 3; }}"
    await put_job(store, name="flaky", schedule="@manually", retries=2, retry_backoff="1s", executor="shell",
                  executor_config={"command": command, "shell": "true"})  # fmt: skip
    assert (await control(store, _run("flaky"))).ok

    async def settled() -> list[Execution]:
        records = finished(await executions(store, "flaky"))
        return records if any(r.success for r in records) else []

    records = await async_wait_until(settled, timeout_s=20, what="the retry succeeding")
    assert [(r.attempt, r.status, r.exit_code) for r in records] == [(1, "failed", 3), (2, "success", 0)]
    assert records[0].group == records[1].group and records[0].scheduled_at == records[1].scheduled_at
    assert records[1].started_at - records[0].finished_at >= timedelta(seconds=0.8)  # backoff 1s, jitter 10%
    status, _ = await store.get_status("flaky")
    assert (status.success_count, status.error_count, status.status) == (1, 1, "success")
    await store.consul.close()


async def test_chaining_follows_trigger_on(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    await _up(cluster, store)
    for parent, command in (("good", "true"), ("bad", "false")):
        await put_job(store, name=parent, schedule="@manually", executor="shell", executor_config={"command": command})
        for trigger in ("success", "failure", "always"):
            await put_job(store, name=f"{parent}-on-{trigger}", parent_job=parent, trigger_on=trigger, executor="noop")
    # The scheduler promises that edits apply within 1 s (it watches Consul with blocking queries).
    await async_wait_until(_until(now_utc() + timedelta(seconds=1)), timeout_s=5)
    for parent in ("good", "bad"):
        assert (await control(store, _run(parent))).ok

    async def children_ran() -> set[str]:
        ran = set()
        for parent, trigger in itertools.product(("good", "bad"), ("success", "failure", "always")):
            if finished(await executions(store, f"{parent}-on-{trigger}")):
                ran.add(f"{parent}-on-{trigger}")
        return ran if len(ran) >= 4 else set()

    ran = await async_wait_until(children_ran, timeout_s=15, what="the children")
    assert ran == {"good-on-success", "good-on-always", "bad-on-failure", "bad-on-always"}
    child = finished(await executions(store, "good-on-success"))
    parent_run = finished(await executions(store, "good"))[0]
    assert len(child) == 1 and child[0].scheduled_at == parent_run.scheduled_at
    await store.consul.close()


async def test_misfire_policies_after_the_whole_scheduler_tier_stopped(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    store = Store(client(fresh_consul))
    await _up(cluster, store)
    for policy in ("run_once", "run_all", "skip"):
        await put_job(store, name=policy.replace("_", "-"), schedule="@every 1s", misfire_policy=policy,
                      executor="noop")  # fmt: skip

    async def running() -> bool:
        return all([len(finished(await executions(store, n))) >= 2 for n in ("run-once", "run-all", "skip")])

    await async_wait_until(running, timeout_s=15, what="the jobs running")
    scheduler = cluster.processes[0]
    scheduler.signal(signal.SIGTERM)
    assert scheduler.stop() == 0
    stopped_at = now_utc()
    await async_wait_until(_until(stopped_at + timedelta(seconds=4)), timeout_s=10)
    cluster.scheduler(name="s2")
    await async_wait_until(lambda: _leader(store), timeout_s=15)
    restarted_at = now_utc()
    horizon = restarted_at + timedelta(seconds=2)

    async def caught_up() -> dict[str, list[Execution]]:
        """The records of (stopped_at, horizon], once every one of them has finished and the scheduler is past it."""
        out = {}
        for name in ("run-once", "run-all", "skip"):
            records = [r for r in await executions(store, name) if stopped_at < r.scheduled_at]
            window = [r for r in records if r.scheduled_at <= horizon]
            if len(finished(window)) < len(window) or not any(r.scheduled_at > horizon for r in records):
                return {}
            out[name] = window
        return out

    after = await async_wait_until(caught_up, timeout_s=20, what="the missed slots handled")
    once = sorted(after["run-once"], key=lambda r: r.scheduled_at)
    coalesced = [r for r in once if r.status == "missed" and "coalesced" in r.reason]
    assert coalesced, [(r.scheduled_at.time(), r.status, r.reason) for r in once]
    # run_once: the slots missed while no leader ran are recorded, and only the latest of them runs.
    # (Launches the stopped leader had already recorded ahead of their slot run: they were committed.)
    span = [r for r in once if coalesced[0].scheduled_at <= r.scheduled_at <= coalesced[-1].scheduled_at]
    assert all(r.status == "missed" for r in span)
    following = [r for r in once if r.scheduled_at > coalesced[-1].scheduled_at]
    assert following[0].status == "success" and following[0].scheduled_at <= restarted_at + timedelta(seconds=1)
    assert all(r.status == "success" for r in after["run-all"])
    assert any(r.status == "missed" and "misfire_policy skip" in r.reason for r in after["skip"])
    for name, records in after.items():
        slots = sorted(r.scheduled_at for r in records if r.attempt == 1)
        assert len(slots) == len(set(slots)), f"{name}: a slot accounted for twice"
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots)), f"{name}: a silent gap"
    await store.consul.close()


def _until(instant: object):  # type: ignore[no-untyped-def]
    async def passed() -> bool:
        return now_utc() >= instant  # type: ignore[operator]

    return passed


async def test_executor_lost_mid_run_fails_and_retries_elsewhere(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    await _up(cluster, store, executors=2)
    await async_wait_until(lambda: executor_joined(store), timeout_s=15)
    await put_job(store, name="long", schedule="@manually", retries=1, retry_backoff="1s", executor="shell",
                  executor_config={"command": "sleep 30"})  # fmt: skip
    assert (await control(store, _run("long"))).ok

    async def running_on() -> str:
        records = await executions(store, "long")
        return records[0].node_name if records and records[0].status == "running" else ""

    node = await async_wait_until(running_on, timeout_s=10, what="the run started")
    victim = next(p for p in cluster.processes if p.name == node)
    lost_at = now_utc()
    victim.kill()

    async def retried() -> list[Execution]:
        records = await executions(store, "long")
        return records if len(records) == 2 and records[1].status == "running" else []

    records = await async_wait_until(retried, timeout_s=15, what="executor lost and the retry running")
    assert records[0].status == "failed" and records[0].reason == "executor lost"
    assert records[0].finished_at - lost_at < timedelta(seconds=6)  # 3 missed heartbeats of 1 s, plus slack
    assert records[1].node_name != node and records[1].attempt == 2
    await store.consul.close()


async def test_a_paused_old_leader_never_dispatches_again(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    s1 = cluster.scheduler(name="s1")
    await async_wait_until(lambda: _leader(store), timeout_s=15)
    cluster.scheduler(name="s2")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=15)
    names = [f"tick{i}" for i in range(10)]
    for name in names:
        await put_job(store, name=name, schedule="@every 1s", executor="noop")
    await async_wait_until(lambda: _count_at_least(store, names[0], 2), timeout_s=15)
    old = await store.get_leader()
    assert old is not None and old[0].name == "s1"
    old_term = old[0].term  # (a later term of s1, elected after s2 lost a lease, would be a new leadership)
    stopped_at = now_utc()
    s1.signal(signal.SIGSTOP)

    async def taken_over() -> int:
        found = await store.get_leader()
        return found[0].term if found and found[0].name == "s2" else 0

    await async_wait_until(taken_over, timeout_s=10, what="s2 taking over")
    s1.signal(signal.SIGCONT)
    resumed_at = now_utc()
    await async_wait_until(_until(resumed_at + timedelta(seconds=4)), timeout_s=10)
    await async_wait_until(lambda: _count_at_least(store, names[0], 6), timeout_s=10)
    for name in names:
        # What the old term recorded (and sent) before its pause runs at its slot, at most LEAD after the pause
        # (a few jobs per second: no herd, which would be recorded HERD_LEAD ahead).
        late = [r for r in await executions(store, name) if r.scheduled_at > stopped_at + LEAD and r.term == old_term]
        assert late == [], f"{name}: launched by an old term after it was stopped: {late[:2]}"
    assert "leadership lost" in s1.log() or "leadership ended" in s1.log()
    await store.consul.close()


async def _count_at_least(store: Store, name: str, count: int) -> bool:
    return len(finished(await executions(store, name))) >= count


async def test_history_keeps_the_newest_records_per_job(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler("--history-limit", "3", name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    await put_job(store, name="chatty", schedule="@every 1s", executor="noop")
    await put_job(store, name="chatty-db", schedule="@every 1s", executor="noop")

    async def many_runs() -> bool:
        return (await store.get_status("chatty"))[0].success_count >= 8

    await async_wait_until(many_runs, timeout_s=20, what="eight runs")

    async def trimmed() -> list[Execution]:
        records = await executions(store, "chatty")
        return records if len(records) <= 4 else []  # the limit, plus one that may be in flight

    records = await async_wait_until(trimmed, timeout_s=10, what="history trimmed to the limit")
    assert records[-1].scheduled_at > now_utc() - timedelta(seconds=4), "the newest records are the ones kept"
    assert len(await executions(store, "chatty-db")) >= 1  # a job whose name extends another's keeps its own
    await store.consul.close()
