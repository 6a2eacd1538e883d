"""The executor service against a fake leader: real executor processes, a real Consul, real ZeroMQ sockets."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import msgspec
import pytest

from cronbus.common import messages
from cronbus.common.bus import Bus, node_topic, tag_topic
from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import ConsulClient
from cronbus.common.messages import (
    Ack,
    CancelRun,
    Dispatch,
    DispatchAccepted,
    Dispatches,
    DispatchRefused,
    ExecutionFinished,
    ExecutionStarted,
    ExecutorHeartbeat,
    Hello,
    KillRequested,
    LeaderHeartbeat,
    NotLeader,
    OutputProduced,
    Welcome,
)
from cronbus.common.models import ZERO_TIME, LeaderInfo, now_utc
from tests.helpers import Cluster, ServiceProcess, async_wait_until

M = TypeVar("M", bound=msgspec.Struct)
HEARTBEAT_S = 0.2
NODE = "e1"


class FakeLeader:
    """Plays the scheduler's side: a ROUTER and an XPUB on loopback, heartbeats, acks, and the leader record.
    `revision` 0 plays a leader of before revision 1 (single dispatches, one frame per message)."""

    def __init__(self, consul: ConsulClient, name: str, term: int, revision: int = messages.REVISION) -> None:
        self.consul = consul
        self.revision = revision
        self.frames_per_message: list[int] = []
        self.bus = Bus()
        self.router, router_port = self.bus.router("127.0.0.1", 0)
        self.xpub, pub_port = self.bus.xpub("127.0.0.1", 0)
        self.info = LeaderInfo(
            name=name, term=term, router=f"tcp://127.0.0.1:{router_port}", publisher=f"tcp://127.0.0.1:{pub_port}"
        )
        self.received: list[msgspec.Struct] = []
        self.subscriptions: list[bytes] = []  # every subscribe seen (XPUB_VERBOSE passes repeats too)
        self.auto_ack = True
        self.beating = True
        self._peers: set[bytes] = set()
        self._session = ""
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> FakeLeader:
        self._tasks = [asyncio.create_task(t) for t in (self._read_router(), self._read_xpub(), self._beat())]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.resign()
        self.router.close(linger=0)
        self.xpub.close(linger=0)
        self.bus.close()

    async def claim(self) -> None:
        """Takes the leader key as a real leader would: a session lock holding a JSON LeaderInfo."""
        self._session = await self.consul.session_create(f"fake-leader {self.info.name}", checks=["serfHealth"])
        assert await self.consul.kv_put(keys.LEADER, msgspec.json.encode(self.info), acquire=self._session)

    async def resign(self) -> None:
        if self._session:
            await self.consul.kv_put(keys.LEADER, msgspec.json.encode(self.info), release=self._session)
            await self.consul.session_destroy(self._session)
            self._session = ""

    async def publish(self, topic: bytes, message: msgspec.Struct) -> None:
        if isinstance(message, Dispatch) and self.revision >= 1:  # a leader sends runs in batches
            message = Dispatches(runs=[message])
        await self.xpub.send_multipart([topic, messages.encode(message)])

    async def send(self, message: msgspec.Struct, node: str = NODE) -> None:
        await self.router.send_multipart([f"executor:{node}".encode(), messages.encode(message)])

    def of(self, kind: type[M], where: Callable[[M], bool] = lambda m: True, since: int = 0) -> list[M]:
        """Messages received of `kind` matching `where`, from the since-th one received on."""
        return [m for m in self.received[since:] if isinstance(m, kind) and where(m)]

    async def wait_for(
        self,
        kind: type[M],
        where: Callable[[M], bool] = lambda m: True,
        *,
        timeout_s: float = 15.0,
        count: int = 1,
        since: int = 0,
    ) -> M:
        """The count-th message of `kind` matching `where`, waiting up to timeout_s for it."""

        async def arrived() -> M | None:
            found = self.of(kind, where, since)
            return found[count - 1] if len(found) >= count else None

        message = await async_wait_until(arrived, timeout_s, what=f"{kind.__name__} at {self.info.name}")
        assert message is not None
        return message

    async def _read_router(self) -> None:
        while True:
            identity, *frames = await self.router.recv_multipart()
            self.frames_per_message.append(len(frames))
            for frame in frames:  # an executor bundles what it sends in one turn of its loop
                await self._on_message(identity, messages.decode(messages.to_leader_decoder, frame, source="test"))

    async def _on_message(self, identity: bytes, message: messages.ToLeader | None) -> None:
        if message is None:
            return
        self._peers.add(identity)
        self.received.append(message)
        if isinstance(message, Hello):
            welcome = Welcome(leader=self.info.name, term=self.info.term, revision=self.revision)
            await self.router.send_multipart([identity, messages.encode(welcome)])
        if self.auto_ack and isinstance(message, ExecutionStarted | OutputProduced | ExecutionFinished):
            await self.router.send_multipart([identity, messages.encode(Ack(seq=message.seq))])

    async def _read_xpub(self) -> None:
        while True:
            event = await self.xpub.recv()
            if event[:1] == b"\x01":
                self.subscriptions.append(event[1:])

    async def _beat(self) -> None:
        while True:
            for peer in list(self._peers) if self.beating else []:
                await self.router.send_multipart([peer, messages.encode(LeaderHeartbeat(term=self.info.term))])
            await asyncio.sleep(HEARTBEAT_S)


def shell(
    execution_id: str,
    command: str,
    *,
    term: int = 1,
    targets: tuple[str, ...] = (NODE,),
    scheduled_at: datetime = datetime(2020, 1, 1, tzinfo=UTC),  # passed: it starts at once
) -> Dispatch:
    return Dispatch(
        term=term,
        execution_id=execution_id,
        job_name=execution_id.split(":", maxsplit=1)[0],
        scheduled_at=scheduled_at,
        attempt=1,
        group=0,
        targets=list(targets),
        executor="shell",
        config={"command": command, "shell": "true"},
    )


def gated(gate: Path, then: str = "echo released") -> str:
    """A command that waits until the test creates `gate`."""
    return f"while [ ! -e {gate} ]; do sleep 0.05; done; {then}"


def for_exec(execution_id: str) -> Callable[[msgspec.Struct], bool]:
    return lambda m: getattr(m, "execution_id", None) == execution_id or execution_id in getattr(m, "execution_ids", ())


def start_executor(cluster: Cluster, *args: str) -> ServiceProcess:
    return cluster.executor(
        "--heartbeat-interval", str(HEARTBEAT_S), "--heartbeat-liveness", "5", *args, name=NODE
    )  # fmt: skip


async def connected(leader: FakeLeader, hellos: int = 1) -> Hello:
    """Waits for the executor's Hello and for its SUB to reach the XPUB (so a publish is not lost)."""
    hello = await leader.wait_for(Hello, count=hellos, timeout_s=20)
    await eventually(lambda: leader.subscriptions.count(node_topic(NODE)) >= hellos, "executor subscribed")
    return hello


async def eventually(predicate: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    async def check() -> bool:
        return bool(predicate())

    await async_wait_until(check, timeout_s, what=what)


@pytest.fixture
async def fresh_client(fresh_consul: DevAgent) -> AsyncIterator[ConsulClient]:
    """A client on the same agent as the `cluster` processes."""
    client = ConsulClient("127.0.0.1", fresh_consul.http_port)
    yield client
    await client.close()


@pytest.fixture
async def leader(fresh_client: ConsulClient) -> AsyncIterator[FakeLeader]:
    async with FakeLeader(fresh_client, "leader-a", term=1) as fake:
        await fake.claim()
        yield fake


async def test_hello_carries_tags_and_subscriptions_are_exact(cluster: Cluster, fresh_client: ConsulClient) -> None:
    start_executor(cluster, "--tag", "role=webserver", "--capacity", "3")

    async def registered() -> bool:
        return bool((await fresh_client.health_service(keys.EXECUTOR_SERVICE))[1])

    await async_wait_until(registered, timeout_s=20, what="executor registered")
    async with FakeLeader(fresh_client, "leader-a", term=1) as leader:
        await leader.claim()  # after the executor started: its watch on the leader key must see it
        await check_hello_and_topics(leader)


async def check_hello_and_topics(leader: FakeLeader) -> None:
    hello = await connected(leader)
    assert hello.node == NODE
    assert hello.capacity == 3
    assert {"role": "webserver", "node": NODE, "dc": "dc1"}.items() <= hello.tags.items()
    assert "hostname" in hello.tags
    await leader.wait_for(ExecutorHeartbeat)
    assert tag_topic("role", "webserver") in leader.subscriptions

    # Published on role=web: the XPUB must not send it to a role=webserver subscriber, though it names e1.
    await leader.publish(tag_topic("role", "web"), shell("wrong-topic:1", "echo no"))
    # On the executor's own topic but for other executors: ignored.
    await leader.publish(tag_topic("role", "webserver"), shell("not-mine:1", "echo no", targets=("e2",)))
    await leader.publish(tag_topic("role", "webserver"), shell("mine:1", "echo yes", targets=("e2", NODE)))
    finished = await leader.wait_for(ExecutionFinished, for_exec("mine:1"))
    assert finished.output == "yes\n"
    # One SUB connection delivers in order, so anything done with the earlier two would be here by now.
    assert not [m for m in leader.received if getattr(m, "execution_id", "") in ("wrong-topic:1", "not-mine:1")]


async def test_shell_dispatch_streams_output_and_finishes(cluster: Cluster, leader: FakeLeader) -> None:
    start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("job:1", "echo one; sleep 0.6; echo two"))
    accepted = await leader.wait_for(DispatchAccepted, for_exec("job:1"))
    assert not accepted.duplicate
    started = await leader.wait_for(ExecutionStarted, for_exec("job:1"))
    chunk = await leader.wait_for(OutputProduced, for_exec("job:1"))
    assert chunk.chunk.startswith("one")
    finished = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    assert (finished.status, finished.exit_code, finished.output) == ("success", 0, "one\ntwo\n")
    assert finished.job_name == "job" and finished.node == NODE
    assert started.seq < chunk.seq < finished.seq
    assert started.started_at == finished.started_at <= finished.finished_at

    unknown = msgspec.structs.replace(shell("odd:1", "x"), executor="nope")
    await leader.publish(node_topic(NODE), unknown)
    failed = await leader.wait_for(ExecutionFinished, for_exec("odd:1"))
    assert failed.status == "failed"
    assert "unknown executor 'nope'" in failed.reason
    assert "unknown executor 'nope'" in failed.output


async def test_a_run_shorter_than_the_start_report_delay_is_reported_by_its_result_alone(
    cluster: Cluster, leader: FakeLeader
) -> None:
    """A run that ends within STARTED_AFTER_S sends no ExecutionStarted (half the messages and leader writes for
    runs of a few milliseconds): its result says when it started."""
    start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), msgspec.structs.replace(shell("quick:1", ""), executor="noop", config={}))
    finished = await leader.wait_for(ExecutionFinished, for_exec("quick:1"))
    assert finished.status == "success"
    assert ZERO_TIME < finished.started_at <= finished.finished_at
    assert not leader.of(ExecutionStarted, for_exec("quick:1"))


async def test_results_are_resent_until_acked(cluster: Cluster, leader: FakeLeader) -> None:
    leader.auto_ack = False
    start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("job:1", "echo hi"))
    first = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    again = await leader.wait_for(ExecutionFinished, for_exec("job:1"), count=2)
    assert again == first  # the same message, same seq
    await leader.send(Ack(seq=first.seq))  # cumulative: Started and Output too
    sent = len(leader.of(ExecutionFinished))
    # Heartbeats span more than the ack timeout (1 s): a resend would have come by then.
    beats = len(leader.of(ExecutorHeartbeat))
    await leader.wait_for(ExecutorHeartbeat, count=beats + 8)
    assert len(leader.of(ExecutionFinished)) == sent


async def test_a_repeated_execution_id_never_runs_twice(cluster: Cluster, leader: FakeLeader, tmp_path: Path) -> None:
    start_executor(cluster)
    await connected(leader)
    counter = tmp_path / "runs"
    gate = tmp_path / "gate"
    dispatch = shell("job:1", gated(gate, f"echo ran >> {counter}"))
    await leader.publish(node_topic(NODE), dispatch)
    await leader.wait_for(ExecutionStarted, for_exec("job:1"))
    await leader.publish(node_topic(NODE), dispatch)  # while it runs
    duplicate = await leader.wait_for(DispatchAccepted, for_exec("job:1"), count=2)
    assert duplicate.duplicate
    gate.touch()
    finished = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    await leader.publish(node_topic(NODE), dispatch)  # after it finished: the result again
    assert (await leader.wait_for(DispatchAccepted, for_exec("job:1"), count=3)).duplicate
    resent = await leader.wait_for(ExecutionFinished, for_exec("job:1"), count=2)
    assert (resent.status, resent.output) == (finished.status, finished.output)
    assert len(leader.of(ExecutionStarted, for_exec("job:1"))) == 1
    assert counter.read_text() == "ran\n"


async def test_stale_term_is_refused(cluster: Cluster, leader: FakeLeader) -> None:
    start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("job:1", "echo new", term=5))
    await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    await leader.publish(node_topic(NODE), shell("job:2", "echo old", term=3))
    refused = await leader.wait_for(DispatchRefused, for_exec("job:2"))
    assert refused.reason == "stale term 3 < 5"
    assert not leader.of(ExecutionStarted, for_exec("job:2"))


async def test_a_run_sent_ahead_of_its_slot_starts_at_it_unless_cancelled_or_killed(
    cluster: Cluster, leader: FakeLeader
) -> None:
    start_executor(cluster)
    await connected(leader)
    slot = (now_utc() + timedelta(seconds=1.5)).replace(microsecond=0) + timedelta(seconds=1)
    for name in ("runs", "cancelled", "killed"):
        await leader.publish(node_topic(NODE), shell(f"{name}:1", "echo ran", scheduled_at=slot))
        await leader.wait_for(DispatchAccepted, for_exec(f"{name}:1"))
    assert now_utc() < slot
    await leader.send(CancelRun(execution_id="cancelled:1", term=1, reason="job disabled before its slot"))
    await leader.send(KillRequested(execution_id="killed:1", term=1))
    cancelled = await leader.wait_for(ExecutionFinished, for_exec("cancelled:1"))
    assert (cancelled.status, cancelled.reason) == ("skipped", "job disabled before its slot")
    killed = await leader.wait_for(ExecutionFinished, for_exec("killed:1"))
    assert (killed.status, killed.reason) == ("killed", "killed before its slot")
    assert now_utc() < slot  # both ended before the slot, without starting
    finished = await leader.wait_for(ExecutionFinished, for_exec("runs:1"))
    assert (finished.status, finished.output) == ("success", "ran\n")
    assert slot <= finished.started_at < slot + timedelta(seconds=1)
    assert not leader.of(ExecutionStarted, lambda m: m.execution_id in ("cancelled:1", "killed:1"))
    # Once started, a cancel comes too late: the run goes on.
    await leader.send(CancelRun(execution_id="runs:1", term=1, reason="too late"))
    await leader.publish(node_topic(NODE), shell("after:1", "echo after"))
    await leader.wait_for(ExecutionFinished, for_exec("after:1"))
    assert len(leader.of(ExecutionFinished, for_exec("runs:1"))) == 1


async def test_with_a_leader_of_revision_0_the_executor_speaks_revision_0(
    cluster: Cluster, fresh_client: ConsulClient
) -> None:
    """A rolling upgrade runs new executors beside an old leader: one frame per message, one id per acceptance."""
    async with FakeLeader(fresh_client, "leader-old", term=1, revision=0) as leader:
        await leader.claim()
        start_executor(cluster)
        hello = await connected(leader)
        assert hello.revision == messages.REVISION
        for i in range(10):  # within the default capacity
            await leader.publish(node_topic(NODE), shell(f"job:{i}", "true"))
        for i in range(10):  # within the default capacity
            accepted = await leader.wait_for(DispatchAccepted, for_exec(f"job:{i}"))
            assert accepted.execution_id == f"job:{i}"
            await leader.wait_for(ExecutionFinished, for_exec(f"job:{i}"))
        assert set(leader.frames_per_message) == {1}


async def test_kill_and_capacity(cluster: Cluster, leader: FakeLeader) -> None:
    start_executor(cluster, "--capacity", "1")
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("long:1", "echo going; sleep 60"))
    await leader.wait_for(OutputProduced, for_exec("long:1"))
    await leader.publish(node_topic(NODE), shell("other:1", "echo no"))
    refused = await leader.wait_for(DispatchRefused, for_exec("other:1"))
    assert refused.reason == "at capacity"
    await leader.send(KillRequested(execution_id="long:1", term=1))
    finished = await leader.wait_for(ExecutionFinished, for_exec("long:1"))
    assert finished.status == "killed"
    assert finished.output.startswith("going\n")


async def test_leader_change_mid_run_delivers_to_the_new_leader(
    cluster: Cluster, leader: FakeLeader, fresh_client: ConsulClient, tmp_path: Path
) -> None:
    start_executor(cluster)
    await connected(leader)
    gate = tmp_path / "gate"
    await leader.publish(node_topic(NODE), shell("job:1", gated(gate)))
    await leader.wait_for(ExecutionStarted, for_exec("job:1"))
    async with FakeLeader(fresh_client, "leader-b", term=2) as second:
        await leader.resign()
        await second.claim()
        hello = await second.wait_for(Hello, timeout_s=20)
        assert hello.running == ["job:1"]
        gate.touch()
        finished = await second.wait_for(ExecutionFinished, for_exec("job:1"))
        assert (finished.status, finished.output) == ("success", "released\n")
        assert not leader.of(ExecutionFinished)


async def test_restart_delivers_the_journaled_result(cluster: Cluster, leader: FakeLeader) -> None:
    leader.auto_ack = False
    executor = start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("job:1", "echo kept", term=4))
    before = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    executor.kill()  # SIGKILL while the result is unacked

    start_executor(cluster)
    hello = await connected(leader, hellos=2)
    assert hello.max_term == 4
    after_restart = next(i for i, m in enumerate(leader.received) if m is hello)
    resent = await leader.wait_for(ExecutionFinished, for_exec("job:1"), since=after_restart)
    assert resent == before
    await leader.send(Ack(seq=resent.seq))
    results = cluster.log_dir / f"{NODE}-data" / "results"
    await eventually(lambda: not list(results.iterdir()), "journal emptied by the ack")
    # The id survived the restart too.
    await leader.publish(node_topic(NODE), shell("job:1", "echo kept", term=4))
    assert (await leader.wait_for(DispatchAccepted, for_exec("job:1"), count=2)).duplicate
    assert {f.started_at for f in leader.of(ExecutionFinished, for_exec("job:1"))} == {before.started_at}  # ran once


async def test_a_run_interrupted_by_a_crash_is_reported_failed(
    cluster: Cluster, leader: FakeLeader, tmp_path: Path
) -> None:
    executor = start_executor(cluster)
    await connected(leader)
    await leader.publish(node_topic(NODE), shell("job:1", gated(tmp_path / "never")))
    await leader.wait_for(ExecutionStarted, for_exec("job:1"))
    executor.kill()
    start_executor(cluster)
    finished = await leader.wait_for(ExecutionFinished, for_exec("job:1"), timeout_s=20)
    assert (finished.status, finished.reason) == ("failed", "executor restarted during the run")


async def test_sigterm_drains_a_running_job_and_exits_0(cluster: Cluster, leader: FakeLeader, tmp_path: Path) -> None:
    executor = start_executor(cluster)
    await connected(leader)
    gate = tmp_path / "gate"
    await leader.publish(node_topic(NODE), shell("job:1", gated(gate)))
    await leader.wait_for(ExecutionStarted, for_exec("job:1"))
    executor.signal(signal.SIGTERM)
    # A new dispatch (new id each time: one accepted before the signal lands would be a duplicate after) is
    # refused once the executor drains.
    attempts = iter(range(1000))

    async def refused_new_work() -> list[DispatchRefused]:
        await leader.publish(node_topic(NODE), shell(f"late:{next(attempts)}", "echo no"))
        return leader.of(DispatchRefused)

    refusals = await async_wait_until(refused_new_work, interval_s=0.2, what="refusal while draining")
    assert refusals[0].reason == "shutting down"
    assert executor.alive()
    gate.touch()
    finished = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    assert (finished.status, finished.output) == ("success", "released\n")
    await eventually(lambda: not executor.alive(), "executor exit")
    assert executor.proc.returncode == 0


async def test_a_silent_leader_or_not_leader_makes_it_reconnect(cluster: Cluster, leader: FakeLeader) -> None:
    start_executor(cluster)
    await connected(leader)
    await leader.send(NotLeader(leader=""))
    await connected(leader, hellos=2)
    leader.beating = False  # liveness is 5 x 0.2 s
    await connected(leader, hellos=3)
    leader.beating = True
    await leader.publish(node_topic(NODE), shell("job:1", "echo still here"))
    assert (await leader.wait_for(ExecutionFinished, for_exec("job:1"))).status == "success"


async def test_garbage_frames_do_not_crash_it(cluster: Cluster, leader: FakeLeader) -> None:
    executor = start_executor(cluster)
    await connected(leader)
    identity = f"executor:{NODE}".encode()
    topic = node_topic(NODE)
    await leader.router.send_multipart([identity, b"\xc1 not msgpack"])
    await leader.router.send_multipart([identity, b"two", b"frames"])
    await leader.router.send_multipart([identity, messages.encode(shell("wrong-channel:1", "echo no"))])
    await leader.xpub.send_multipart([topic, b"\xc1 not msgpack"])
    await leader.xpub.send_multipart([topic, b"three", b"frames"])
    await leader.xpub.send(topic)  # one frame, no payload
    await leader.xpub.send_multipart([topic, messages.encode(Welcome(leader="x", term=1))])
    await leader.publish(topic, shell("job:1", "echo fine"))
    finished = await leader.wait_for(ExecutionFinished, for_exec("job:1"))
    assert finished.output == "fine\n"
    assert executor.alive()
    assert "dropped malformed frame" in executor.log()
