"""Bad input on the bus: garbage, truncated, oversized (> 4 MiB) and wrong-version frames on every socket a
cronbus process reads — the leader's ROUTER and XPUB directly, an executor's DEALER and SUB through a fake
leader. Nothing crashes, each frame that reaches cronbus is logged once and dropped, scheduling goes on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlparse

import msgspec
import pytest
import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.bus import node_topic
from cronbus.common.consul import keys
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.models import LeaderInfo, now_utc
from tests.chaos.conftest import FigureSheet
from tests.chaos.support import (
    all_executions,
    assert_slots_clean,
    hold,
    leader,
    load_jobs,
    settle,
    slot_figures,
    starts,
    tally_slots,
    wait_running,
)
from tests.helpers import Cluster, ServiceProcess, async_wait_until
from tests.integration.scheduling import client, executor_joined

OVERSIZED = m.MAX_FRAME_BYTES + 100  # past cronbus's limit, within the socket's: reaches the decoder
HUGE = 6 * 1024 * 1024  # past the socket's MAXMSGSIZE: libzmq drops the connection before cronbus sees it
CRASH_MARKS = ("Traceback", "crashed", "CRITICAL")


@pytest.fixture
async def zmq_context() -> AsyncIterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


def _hello(**fields: object) -> m.Hello:
    return m.Hello(**{"node": "chaos", "tags": {}, "capacity": 1, **fields})  # type: ignore[arg-type]


async def _raw_tcp(endpoint: str, payloads: list[bytes]) -> None:
    """Plain TCP bytes at a ZeroMQ port: no ZMTP handshake at all."""
    url = urlparse(endpoint)
    assert url.hostname is not None and url.port is not None
    for payload in payloads:
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(url.hostname, url.port)
            writer.write(payload)
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 5)
                await asyncio.wait_for(reader.read(64), 0.5)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _dealer_send(ctx: zmq.asyncio.Context, router: str, identity: str, frames: list[bytes]) -> None:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.connect(router)
    try:
        await sock.send_multipart(frames)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sock.recv_multipart(), 0.5)  # a NotLeader/ControlReply, or nothing
    finally:
        sock.close()


async def _long_subscription(publisher: str, length: int) -> None:
    """A subscriber with a multi-megabyte topic, in a process of its own: libzmq frees a subscription trie
    recursively, so the subscribing process itself crashes at exit (os._exit skips that)."""
    code = (
        "import os, time, zmq\n"
        "s = zmq.Context().socket(zmq.SUB)\n"
        f"s.connect({publisher!r})\n"
        f"s.setsockopt(zmq.SUBSCRIBE, b't' * {length})\n"
        "time.sleep(1.0)\n"
        "os._exit(0)\n"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


def _term(info: LeaderInfo | None) -> int:
    return info.term if info is not None else 0


def _no_crash(process: ServiceProcess) -> None:
    log = process.log()
    assert process.alive(), f"{process.name} died"
    found = [mark for mark in CRASH_MARKS if mark in log]
    assert not found, f"{process.name} logged {found}"


async def test_garbage_on_the_leaders_router_and_xpub(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, zmq_context: zmq.asyncio.Context
) -> None:
    store = Store(client(fresh_consul))
    try:
        s1 = cluster.scheduler(name="s1")  # debug: the log shows what happened to every frame
        e1 = cluster.executor(name="e1")
        await async_wait_until(lambda: executor_joined(store), timeout_s=20, what="an executor")
        jobs = await load_jobs(store, "bus", 5)
        await wait_running(store, jobs)
        info = await leader(store)
        assert info is not None
        since = now_utc()

        hello = m.encode(_hello(node="chaos-hello"))
        run_v99_frame = m.encode(m.RunJob(req_id="r", job_name="bus000", protocol=99))
        logged_once = {
            "chaos-garbage": [b"\xc1 not msgpack \xff"],
            "chaos-empty": [b""],
            "chaos-truncated": [hello[: len(hello) // 2]],
            "chaos-wrong-kind": [m.encode(m.Welcome(leader="x", term=1))],  # a leader->peer message
            "chaos-oversized": [os.urandom(OVERSIZED)],
        }
        for identity, frames in logged_once.items():
            await _dealer_send(zmq_context, info.router, identity, frames)
        # More parts than a bundle has: a count raw TCP junk (read by libzmq as ZMTP/1.0 frames) will hardly produce.
        await _dealer_send(zmq_context, info.router, "chaos-many-frames", [b"part"] * (m.MAX_BUNDLE + 1))
        await _dealer_send(zmq_context, info.router, "chaos-huge", [os.urandom(HUGE)])
        await _dealer_send(zmq_context, info.router, "chaos-v99", [m.encode(_hello(node="chaos-v99", protocol=99))])
        await _dealer_send(zmq_context, info.router, "chaos-run-v99", [run_v99_frame])
        junk = [b"GET / HTTP/1.0\r\n\r\n", b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f", os.urandom(HUGE)]
        await _raw_tcp(info.router, junk)

        xsub = zmq_context.socket(zmq.XSUB)
        xsub.setsockopt(zmq.LINGER, 2000)
        xsub.connect(info.publisher)
        for frames in ([b"\x05not a subscription"], [b""], [b"\x01" + b"t" * 100_000], [b"\x01x", b"tail"]):
            await xsub.send_multipart(frames)
        await xsub.send(b"\x02" + os.urandom(HUGE))  # not a subscription: not kept in this socket's own trie
        xsub.close()
        await _raw_tcp(info.publisher, junk)
        await hold(3.0, "scheduling after the garbage")
        after_garbage = await leader(store)
        # Last, as it is the one that hurts: libzmq adds (and removes) a subscription to the XPUB's trie on the
        # thread that owns the socket, i.e. the leader's event loop, one node per byte.
        await _long_subscription(info.publisher, m.MAX_FRAME_BYTES - 100)

        await hold(3.0, "scheduling after the long subscription")
        after_subscription = await leader(store)
        until = now_utc() - timedelta(seconds=1)
        await settle(store, jobs, since, until)
        tally = tally_slots(jobs, await all_executions(store), starts([e1]), since, until)
        log = s1.log()
        counts = {identity: log.count(f"frame source={identity}") for identity in logged_once}
        counts["many-frames"] = log.count(f"dropped message with {m.MAX_BUNDLE + 2} frames on the router")
        v99_refused = "protocol 99, not" in log
        v99_admitted = "executor joined node=chaos-v99" in log
        run_v99 = [r for r in (await all_executions(store)).get("bus000", []) if r.manual]
        figures.add(
            slot_figures(
                "bus garbage at the leader's ROUTER/XPUB (12 bad frames, 6 raw TCP junk)",
                tally,
                logged_once=sum(n == 1 for n in counts.values()),
                should_log=len(counts),
                v99_hello_admitted=v99_admitted,
                v99_run_job_ran=len(run_v99),
                junk_read_as_frames=log.count("frames on the router") - counts["many-frames"],
                term_changes_garbage=_term(after_garbage) - info.term,
                term_changes_4mib_subscription=_term(after_subscription) - _term(after_garbage),
            )
        )
        _no_crash(s1)
        _no_crash(e1)
        s1.signal(signal.SIGTERM)
        assert s1.stop() == 0, "the leader did not stop cleanly after the garbage"
        assert_slots_clean(tally)
        assert tally.executed >= len(jobs) * 2
        assert counts == dict.fromkeys(counts, 1), counts
        assert after_garbage is not None and after_garbage.term == info.term, "the garbage cost the leadership"
        assert v99_refused
        assert not v99_admitted, "an executor speaking protocol 99 was admitted (registered as a target)"
        assert run_v99 == [], "a RunJob of protocol 99 was run"
        # Not asserted: how long libzmq's trie work blocks the leader's loop varies with the machine (0.3 to 5 s
        # measured for 2 to 4 MiB); term_changes_4mib_subscription in the figures shows when it cost the lease.
    finally:
        await store.consul.close()


async def test_garbage_from_a_fake_leader_reaches_an_executor(
    cluster: Cluster, fresh_consul: DevAgent, figures: FigureSheet, zmq_context: zmq.asyncio.Context
) -> None:
    """Executors bind nothing: what they read comes from the leader. A fake leader record (a real lock on
    the leader key) points an executor at sockets this test owns, which then send it garbage."""
    store = Store(client(fresh_consul))
    router = zmq_context.socket(zmq.ROUTER)
    xpub = zmq_context.socket(zmq.XPUB)
    for sock in (router, xpub):
        sock.setsockopt(zmq.LINGER, 0)
    try:
        router_port = router.bind_to_random_port("tcp://127.0.0.1")
        pub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
        session = await store.consul.session_create("chaos fake leader", [])
        fake = LeaderInfo(name="fake", term=1, router=f"tcp://127.0.0.1:{router_port}",
                          publisher=f"tcp://127.0.0.1:{pub_port}", elected_at=now_utc())  # fmt: skip
        assert await store.consul.kv_put(keys.LEADER, msgspec.json.encode(fake), acquire=session)
        e1 = cluster.executor(name="e1")

        async def hello() -> bytes:
            identity, payload, *_ = await router.recv_multipart()  # the first of a bundle
            assert isinstance(m.to_leader_decoder.decode(payload), m.Hello)
            return identity

        identity = await asyncio.wait_for(hello(), 30)
        await router.send_multipart([identity, m.encode(m.Welcome(leader="fake", term=1))])
        topic = node_topic("e1")

        async def subscribed() -> None:
            while (await xpub.recv()) != b"\x01" + topic:
                pass

        await asyncio.wait_for(subscribed(), 15)
        beat = m.encode(m.LeaderHeartbeat(term=1))
        welcome = m.encode(m.Welcome(leader="fake", term=1))
        dispatch = m.encode(
            m.Dispatches(
                runs=[
                    m.Dispatch(
                        term=1,
                        execution_id="x.1",
                        job_name="x",
                        scheduled_at=now_utc(),
                        attempt=1,
                        group=1,
                        targets=["e1"],
                        executor="noop",
                        config={},
                    )
                ]
            )
        )
        to_router: list[list[bytes]] = [
            [b"\xc1 not msgpack"],
            [b""],
            [welcome[: len(welcome) // 2]],
            [m.encode(_hello())],  # a peer->leader message, the wrong way round
            [os.urandom(OVERSIZED)],
            [b"a", b"b"],
            [m.encode(m.Welcome(leader="fake", term=1, protocol=99))],
            [os.urandom(HUGE)],  # last: libzmq drops the connection (the executor reconnects)
        ]
        for frames in to_router:
            await router.send_multipart([identity, *frames])
            await router.send_multipart([identity, beat])
        to_sub: list[list[bytes]] = [
            [topic, b"\xc1 not msgpack"],
            [topic, dispatch[: len(dispatch) // 2]],
            [topic, m.encode(m.Ack(seq=1))],
            [topic, b"a", b"b"],
            [topic, os.urandom(OVERSIZED)],
            [topic, os.urandom(HUGE)],
        ]
        for frames in to_sub:
            await xpub.send_multipart(frames)
        await hold(2.0, "the executor reading the garbage")
        assert await store.consul.kv_put(keys.LEADER, b"", release=session)
        await store.consul.session_destroy(session)

        s1 = cluster.scheduler(name="s1")
        await async_wait_until(lambda: executor_joined(store), timeout_s=30, what="the executor under a real leader")
        jobs = await load_jobs(store, "after", 3)
        since = now_utc() + timedelta(seconds=1)  # a stored job is planned within a second: its slots from then on
        await wait_running(store, jobs, runs=4)
        until = now_utc() - timedelta(seconds=1)
        tally = tally_slots(jobs, await all_executions(store), starts([e1]), since, until)
        log = e1.log()
        counts = {
            "malformed router": log.count("dropped malformed frame source=router"),
            "oversized router": log.count("dropped oversized frame source=router"),
            "parts router": log.count("dropped frame source=router: 2 parts"),
            "malformed pub": log.count("dropped malformed frame source=pub"),
            "oversized pub": log.count("dropped oversized frame source=pub"),
            "parts pub": log.count("dropped frame source=pub: 3 parts"),
        }
        expected = {"malformed router": 4, "oversized router": 1, "parts router": 1, "malformed pub": 3,
                    "oversized pub": 1, "parts pub": 1}  # fmt: skip
        v99_welcomed = log.count("welcomed by leader=fake") > 1
        figures.add(
            slot_figures(
                "bus garbage from a fake leader to an executor (14 bad frames)",
                tally,
                logged_as_expected=sum(counts[k] == v for k, v in expected.items()),
                kinds=len(expected),
                v99_welcome_accepted=v99_welcomed,
            )
        )
        _no_crash(e1)
        _no_crash(s1)
        assert tally.expected >= len(jobs)
        assert_slots_clean(tally)
        assert counts == expected, counts
        assert not v99_welcomed, "the executor accepted a Welcome of protocol 99"
    finally:
        router.close()
        xpub.close()
        await store.consul.close()
