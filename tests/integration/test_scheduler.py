"""Scheduler and executor processes on a real Consul: runs happen on time, once, on the right executors,
and survive leader changes (docs/semantics.md §3–§6)."""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

from cronbus.common import messages as m
from cronbus.common.bus import Bus, node_topic
from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent, free_port
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution, now_utc, process_running
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import (
    client,
    control,
    executions,
    executor_joined,
    finished,
    put_job,
    slot_counts,
)


async def _leader(store: Store) -> str:
    found = await store.get_leader()
    return found[0].name if found else ""


async def test_a_scheduled_shell_job_runs_and_records_output(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    await put_job(store, name="hello", schedule="@every 1s", executor="shell",
                  executor_config={"command": "echo hello $CRONBUS_JOB_NAME", "shell": "true"})  # fmt: skip

    async def two_runs() -> bool:
        return len([r for r in finished(await executions(store, "hello")) if r.success]) >= 2

    await async_wait_until(two_runs, timeout_s=20, what="two successful runs")
    record = finished(await executions(store, "hello"))[0]
    assert record.output.strip() == "hello hello"
    assert record.node_name == "e1" and record.status == "success" and record.exit_code == 0
    assert timedelta(0) <= record.started_at - record.scheduled_at < timedelta(seconds=1)
    status, _ = await store.get_status("hello")
    assert status.success_count >= 2 and status.status == "success"
    await store.consul.close()


async def test_runs_too_short_to_be_reported_started_still_count_in_the_lag_histogram(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """An executor reports a run of a few milliseconds by its result alone (it says when the run started): the
    leader counts its lag then."""
    store = Store(client(fresh_consul))
    metrics_port = free_port()
    cluster.scheduler("--metrics-port", str(metrics_port), name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    await put_job(store, name="instant", schedule="@every 1s", executor="noop")

    async def lag_counted() -> bool:
        return len(finished(await executions(store, "instant"))) >= 2 and _lag_count(metrics_port) >= 2

    await async_wait_until(lag_counted, timeout_s=20, what="two runs and their lag counted")
    assert all(r.started_at >= r.scheduled_at for r in finished(await executions(store, "instant")))
    await store.consul.close()


async def test_a_job_status_says_running_only_while_its_process_runs(cluster: Cluster, fresh_consul: DevAgent) -> None:
    """A run sent ahead of its slot is under way (`running`) but not started; a run reported started is in
    `started` until its result is recorded (docs/migrating-from-dkron.md §5)."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    await put_job(store, name="ahead", schedule="@every 1s", executor="noop")
    await put_job(store, name="slow", schedule="@every 1h", executor="shell",
                  executor_config={"command": "sleep 2", "shell": "true"})  # fmt: skip
    assert (await control(store, m.RunJob(req_id="r1", job_name="slow"))).ok

    async def slow_started() -> list[str]:
        status, _ = await store.get_status("slow")
        return status.started

    started = await async_wait_until(slow_started, timeout_s=10, what="the slow run reported started")
    status, _ = await store.get_status("slow")
    assert started == status.running and process_running(status)
    ahead_samples = []
    deadline = asyncio.get_running_loop().time() + 15
    while not finished(await executions(store, "slow")):
        assert asyncio.get_running_loop().time() < deadline, "the slow run did not end within 15 s"
        ahead_samples.append((await store.get_status("ahead"))[0])
        await asyncio.sleep(0.05)
    assert any(s.running for s in ahead_samples), "runs were sent ahead of their slots while sampled"
    assert not any(process_running(s) for s in ahead_samples), "a noop run is never reported started"
    status, _ = await store.get_status("slow")
    assert (status.running, status.started, status.status) == ([], [], "success")
    await store.consul.close()


async def test_a_job_disables_itself_after_its_failed_runs_in_a_row(cluster: Cluster, fresh_consul: DevAgent) -> None:
    """disable_after_failures=3 on a job that always fails: the third failed run disables it (its definition says
    so, its status says why), and it runs no more (docs/semantics.md §6)."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    # Every 2 s: the disabling (a write, then the leader's view of it) lands well before the next slot.
    await put_job(store, name="broken", schedule="@every 2s", executor="shell", disable_after_failures=3,
                  executor_config={"command": "exit 7", "shell": "true"})  # fmt: skip
    await put_job(store, name="steady", schedule="@every 1s", executor="noop", disable_after_failures=1)

    async def disabled() -> bool:
        stored = await store.get_job("broken")
        return stored is not None and stored.definition is not None and stored.definition.disabled

    await async_wait_until(disabled, timeout_s=20, what="the failing job disabled")
    runs = _ran(await executions(store, "broken"))
    status, _ = await store.get_status("broken")
    assert [r.status for r in runs] == ["failed"] * 3
    last = max(runs, key=lambda r: r.scheduled_at)
    assert status.disabled_reason == f"disabled after 3 failed runs in a row (the last: {last.id}, failed)"
    assert status.failed_in_a_row == 0
    steady_runs = len(finished(await executions(store, "steady")))
    await async_wait_until(
        lambda: _more_runs(store, "steady", steady_runs + 2), timeout_s=10, what="the other job running on"
    )
    records = await executions(store, "broken")
    assert len(_ran(records)) == 3, "the disabled job ran no more"
    # A slot recorded ahead of the disabling (up to a second before it) ends skipped, never run.
    assert {(r.status, r.reason) for r in records if r not in runs} <= {("skipped", "job disabled before its slot")}
    assert not (await store.get_job("steady")).definition.disabled  # type: ignore[union-attr]
    await store.consul.close()


def _ran(records: list[Execution]) -> list[Execution]:
    return [r for r in finished(records) if r.status not in ("skipped", "missed")]


async def _more_runs(store: Store, name: str, count: int) -> bool:
    return len(finished(await executions(store, name))) >= count


def _lag_count(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith("cronbus_dispatch_lag_seconds_count"))


async def test_targeting_is_exact_and_untagged_jobs_run_once(cluster: Cluster, fresh_consul: DevAgent) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    for name, role in (("web1", "web"), ("web2", "web"), ("ws", "webserver")):
        cluster.executor("--tag", f"role={role}", name=name)
    await async_wait_until(lambda: _leader(store), timeout_s=15)
    await put_job(store, name="web", schedule="@every 1s", executor="noop", tags={"role": "web"})
    await put_job(store, name="one", schedule="@every 1s", executor="noop")

    async def enough() -> bool:
        return len(finished(await executions(store, "web"))) >= 6 and len(finished(await executions(store, "one"))) >= 3

    await async_wait_until(enough, timeout_s=25, what="runs of both jobs")
    web = finished(await executions(store, "web"))
    assert {r.node_name for r in web} <= {"web1", "web2"}
    by_slot = slot_counts(web, web[0].scheduled_at, web[-1].scheduled_at)
    assert set(by_slot.values()) <= {1, 2}  # every matching executor runs a slot, each once
    one = finished(await executions(store, "one"))
    assert max(slot_counts(one, one[0].scheduled_at, one[-1].scheduled_at).values()) == 1
    await store.consul.close()


async def test_leader_killed_standby_takes_over_without_duplicates(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    s1 = cluster.scheduler(name="s1")
    await async_wait_until(lambda: _leader(store), timeout_s=15)
    s2 = cluster.scheduler(name="s2")
    cluster.executor("--capacity", "200", name="e1")
    names = [f"j{i:02d}" for i in range(50)]
    for name in names:
        await put_job(store, name=name, schedule="@every 1s", executor="noop")

    async def running_for(seconds: int) -> bool:
        records = finished(await executions(store, names[0]))
        return len(records) >= seconds

    await async_wait_until(lambda: running_for(3), timeout_s=20, what="jobs running")
    victim, survivor = (s1, "s2") if await _leader(store) == "s1" else (s2, "s1")
    killed_at = now_utc()
    victim.kill()

    async def new_leader() -> bool:
        return await _leader(store) == survivor

    await async_wait_until(new_leader, timeout_s=3.5, what="the standby taking over within 3 s")

    async def dispatching_again() -> bool:
        records = finished(await executions(store, names[0]))
        return any(r.started_at > killed_at + timedelta(seconds=1) for r in records if r.status == "success")

    await async_wait_until(dispatching_again, timeout_s=5, what="dispatching resumed")
    end = now_utc() - timedelta(seconds=2)
    start = killed_at - timedelta(seconds=3)

    stuck: list[str] = []

    async def window_settled() -> bool:
        stuck.clear()
        for name in names:
            records = await executions(store, name)
            open_runs = [r for r in records if r.status in ("pending", "running") and r.scheduled_at <= end]
            stuck.extend(f"{r.id}:{r.status}@{r.node_name}" for r in open_runs)
        return not stuck

    try:
        await async_wait_until(window_settled, timeout_s=15, what="runs of the examined window finished")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still unfinished: {stuck[:10]}") from None
    for name in names:
        slots = sorted(
            r.scheduled_at for r in await executions(store, name) if r.attempt == 1 and start <= r.scheduled_at <= end
        )
        assert len(slots) == len(set(slots)), f"{name}: a slot launched twice"
        gaps = [(a, b) for a, b in itertools.pairwise(slots) if b - a != timedelta(seconds=1)]
        assert not gaps, f"{name}: slots with neither a run nor a missed record between {gaps[:3]}"
    await store.consul.close()


async def test_runs_beyond_an_executors_capacity_wait_at_the_leader(cluster: Cluster, fresh_consul: DevAgent) -> None:
    """Six one-second runs due at once on an executor of capacity 2: the leader sends two at a time as slots free,
    so the executor never has to refuse one, and every run happens."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    executor = cluster.executor("--capacity", "2", "--log-level", "info", name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    instant = (now_utc() + timedelta(seconds=3)).replace(microsecond=0)
    names = [f"slow{i}" for i in range(6)]
    for name in names:
        await put_job(store, name=name, schedule=f"@at {instant.isoformat().replace('+00:00', 'Z')}",
                      executor="shell", executor_config={"command": "sleep 1"})  # fmt: skip

    async def all_done() -> list[Execution]:
        done = [finished(await executions(store, name)) for name in names]
        return [r for records in done for r in records] if all(done) else []

    records = await async_wait_until(all_done, timeout_s=30, what="all six runs")
    assert [r.status for r in records] == ["success"] * 6
    edges = sorted([(r.started_at, 1) for r in records] + [(r.finished_at, -1) for r in records])
    assert max(itertools.accumulate(step for _, step in edges)) <= 2
    assert "at capacity" not in executor.log()
    await store.consul.close()


async def test_a_run_waiting_for_a_full_executor_goes_to_another_with_a_free_slot(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """Two executors of capacity 1. Two long runs end up one on each, even one sent to the busy executor (its
    heartbeat may not show the first run yet). A third run waits at the leader for one of them; when the other
    one's run ends first, the waiting run goes there instead of waiting for its own."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    for name in ("e1", "e2"):
        cluster.executor("--capacity", "1", name=name)
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executors up")
    holding: dict[str, Execution] = {}  # node -> its long run
    for name in ("hold1", "hold2"):
        await put_job(store, name=name, executor="shell", executor_config={"command": "sleep 60"}, schedule="@manually")
        assert (await control(store, m.RunJob(req_id=f"run-{name}", job_name=name))).ok

        async def running(name: str = name) -> list[Execution]:
            return [r for r in await executions(store, name) if r.status == "running"]

        record = (await async_wait_until(running, timeout_s=15, what=f"{name} running"))[0]
        holding[record.node_name] = record
    assert sorted(holding) == ["e1", "e2"]
    await put_job(store, name="quick", executor="noop", schedule="@manually")
    assert (await control(store, m.RunJob(req_id="run-quick", job_name="quick"))).ok
    waiting_for = (await async_wait_until(lambda: executions(store, "quick"), timeout_s=10, what="quick"))[0].node_name
    other = "e2" if waiting_for == "e1" else "e1"
    freed = holding[other]
    assert (await control(store, m.KillExecution(req_id="k", job_name=freed.job_name, execution_id=freed.id))).ok
    record = (await async_wait_until(lambda: _finished_of(store, "quick"), timeout_s=10, what="quick's run"))[0]
    assert (record.status, record.node_name) == ("success", other)
    assert [r.status for r in await executions(store, holding[waiting_for].job_name)] == ["running"]
    await store.consul.close()


async def test_a_launch_recorded_ahead_is_skipped_if_the_job_is_disabled_before_its_slot(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    executor = cluster.executor("--log-level", "debug", name="e1")  # it logs each start at debug
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    instant = (now_utc() + timedelta(seconds=5)).replace(microsecond=0)
    fields = {"name": "late-off", "schedule": f"@at {instant.isoformat().replace('+00:00', 'Z')}", "executor": "noop"}
    await put_job(store, **fields)

    async def launched() -> list[Execution]:
        return await executions(store, "late-off")

    await async_wait_until(launched, timeout_s=10, what="the launch recorded ahead of its slot")
    assert now_utc() < instant
    await put_job(store, **fields, disabled=True)
    record = (await async_wait_until(lambda: _finished_of(store, "late-off"), timeout_s=15, what="the record ended"))[0]
    assert (record.status, record.reason) == ("skipped", "job disabled before its slot")
    assert "started job=probe" in executor.log()  # the line looked for below
    assert "started job=late-off" not in executor.log()
    await store.consul.close()


async def _finished_of(store: Store, name: str) -> list[Execution]:
    return finished(await executions(store, name))


async def _delete(store: Store, name: str) -> None:
    stored = await store.get_job(name)
    assert stored is not None
    await store.delete_job(name, cas=stored.modify_index)


def _line(log: str, part: str) -> str:
    return next(line for line in log.splitlines() if part in line)


async def _left_of(store: Store, name: str) -> list[str]:
    """What Consul still holds of a job besides its definition: status and execution records."""
    return [*await store.consul.kv_keys(keys.executions(name)), *await store.consul.kv_keys(keys.status(name))]


async def test_a_job_deleted_before_its_slot_does_not_run_and_leaves_nothing_behind(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    store = Store(client(fresh_consul))
    scheduler = cluster.scheduler(name="s1")
    executor = cluster.executor("--log-level", "debug", name="e1")  # it logs each start at debug
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    instant = (now_utc() + timedelta(seconds=5)).replace(microsecond=0)
    at = f"@at {instant.isoformat().replace('+00:00', 'Z')}"
    await put_job(store, name="late-gone", schedule=at, executor="noop")
    await async_wait_until(lambda: executions(store, "late-gone"), timeout_s=10, what="the launch recorded ahead")
    assert now_utc() < instant
    await _delete(store, "late-gone")

    async def settled() -> bool:
        log = scheduler.log()
        return "not kept job=late-gone" in log and "nothing of it left in Consul job=late-gone" in log

    await async_wait_until(settled, timeout_s=15, what="the cancelled run's result dropped, the job cleaned up")
    assert "status=skipped" in _line(scheduler.log(), "not kept job=late-gone")
    assert "started job=probe" in executor.log()  # the line looked for below
    assert "started job=late-gone" not in executor.log()
    assert await _left_of(store, "late-gone") == []
    await store.consul.close()


async def test_a_run_under_way_when_its_job_is_deleted_goes_on_and_leaves_nothing_behind(
    cluster: Cluster, fresh_consul: DevAgent, tmp_path: Path
) -> None:
    store = Store(client(fresh_consul))
    scheduler = cluster.scheduler(name="s1")
    cluster.executor(name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    marker = tmp_path / "went-on"
    config = {"command": f"sleep 3; touch {marker}", "shell": "true"}
    await put_job(store, name="gone-mid-run", schedule="@manually", executor="shell", executor_config=config)
    assert (await control(store, m.RunJob(req_id="r1", job_name="gone-mid-run"))).ok

    async def running() -> bool:
        return any(r.status == "running" for r in await executions(store, "gone-mid-run"))

    async def went_on() -> bool:
        return marker.exists()

    async def result_dropped() -> bool:
        return "not kept job=gone-mid-run" in scheduler.log()

    await async_wait_until(running, timeout_s=10, what="the run under way")
    await _delete(store, "gone-mid-run")
    await async_wait_until(went_on, timeout_s=10, what="the run went on to its end")
    await async_wait_until(result_dropped, timeout_s=10, what="its result")
    assert "status=success" in _line(scheduler.log(), "not kept job=gone-mid-run")
    assert "nothing of it left in Consul job=gone-mid-run" in scheduler.log()
    assert await _left_of(store, "gone-mid-run") == []
    await store.consul.close()


async def test_an_executor_of_revision_0_gets_each_run_alone_and_at_its_slot(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """A rolling upgrade runs an old executor beside a new leader: it would start a run sent ahead at once, so the
    leader sends it nothing ahead of the slot, and one Dispatch per message."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    found = await async_wait_until(store.get_leader, timeout_s=20, what="a leader")
    assert found is not None
    info = found[0]
    bus = Bus()
    dealer = bus.dealer(info.router, "executor:old")
    sub = bus.sub(info.publisher, [node_topic("old")])

    hello = m.encode(m.Hello(node="old", tags={"node": "old"}, capacity=4))  # revision 0

    async def beat() -> None:
        while True:
            await dealer.send(m.encode(m.ExecutorHeartbeat(node="old", running=0)))
            await asyncio.sleep(0.3)

    async def answer() -> None:
        """Like an executor: says hello again to a leader that does not know it (one that had just taken the lock,
        and was not ready yet when the first hello came, answers NotLeader)."""
        while True:
            frames = await dealer.recv_multipart()
            # Bound to a name first: inside isinstance() the call would be inferred from isinstance's `object`
            # parameter, and the decoder (invariant in its type) is not a Decoder[object].
            reply = m.decode(m.to_peer_decoder, frames[-1], source="test")
            if isinstance(reply, m.NotLeader):
                await dealer.send(hello)

    await dealer.send(hello)
    beating = asyncio.gather(beat(), answer())
    try:
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="the old executor joined")
        instant = (now_utc() + timedelta(seconds=3)).replace(microsecond=0)
        await put_job(store, name="old-one", schedule=f"@at {instant.isoformat().replace('+00:00', 'Z')}",
                      executor="noop")  # fmt: skip

        async def dispatched() -> tuple[m.Published | None, datetime]:
            while True:  # executor_joined's probe run comes first
                frames = await sub.recv_multipart()
                message = m.decode(m.published_decoder, frames[1], source="test")
                if not isinstance(message, m.Dispatch) or message.job_name == "old-one":
                    return message, now_utc()

        dispatch, arrived = await asyncio.wait_for(dispatched(), 15)
        assert isinstance(dispatch, m.Dispatch), dispatch
        assert arrived >= instant
        exec_id = dispatch.execution_id
        await dealer.send(m.encode(m.DispatchAccepted(execution_id=exec_id, node="old")))
        await dealer.send(m.encode(m.ExecutionStarted(seq=1, execution_id=exec_id, job_name="old-one", node="old",
                                                      started_at=arrived)))  # fmt: skip
        await dealer.send(m.encode(m.ExecutionFinished(seq=2, execution_id=exec_id, job_name="old-one", node="old",
                                                       status="success", exit_code=0, started_at=arrived,
                                                       finished_at=now_utc())))  # fmt: skip
        records = await async_wait_until(lambda: _finished_of(store, "old-one"), timeout_s=15, what="the record")
        assert [(r.status, r.node_name) for r in records] == [("success", "old")]
    finally:
        beating.cancel()
        dealer.close(linger=0)
        sub.close(linger=0)
        bus.close()
        await store.consul.close()


async def test_runs_with_big_configurations_are_sent_in_frames_an_executor_takes(
    cluster: Cluster, fresh_consul: DevAgent
) -> None:
    """40 jobs of 120 kB each due at one second: 4.8 MB of dispatches for one executor, more than one frame may hold
    (4 MiB), so they go in several messages, and every run runs."""
    store = Store(client(fresh_consul))
    cluster.scheduler(name="s1")
    cluster.executor("--capacity", "64", name="e1")
    await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="leader and executor up")
    instant = (now_utc() + timedelta(seconds=4)).replace(microsecond=0)
    command = "true # " + "x" * 120_000  # under Linux's 128 KiB for one argument
    names = [f"big{i}" for i in range(40)]
    for name in names:
        await put_job(store, name=name, schedule=f"@at {instant.isoformat().replace('+00:00', 'Z')}",
                      executor="shell", executor_config={"command": command, "shell": "true"})  # fmt: skip

    async def all_done() -> list[Execution]:
        done = [finished(await executions(store, name)) for name in names]
        return [r for records in done for r in records] if all(done) else []

    records = await async_wait_until(all_done, timeout_s=30, what="all 40 runs")
    assert {r.status for r in records} == {"success"}
    await store.consul.close()
