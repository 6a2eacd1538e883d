"""StatsD and DogStatsD from real scheduler, executor and gateway processes, received by real UDP listeners."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest

from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.store import Store
from cronbus.common.metrics import Registry
from cronbus.common.settings import StatsdSettings
from cronbus.common.statsd import StatsdSender
from tests.helpers import Cluster, async_wait_until
from tests.integration.scheduling import client, put_job


class UdpListener:
    """A UDP socket on loopback, as a StatsD server or DogStatsD agent listens; keeps every line received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines: list[str] = []

    def read(self) -> list[str]:
        while True:
            try:
                datagram = self.sock.recv(65536)
            except BlockingIOError:
                return self.lines
            self.lines += datagram.decode().split("\n")

    def wait_for(self, pattern: str, timeout_s: float = 20.0) -> str:
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in self.read() if compiled.fullmatch(line)]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no line /{pattern}/ within {timeout_s}s; received: {self.lines[-40:]}")


@pytest.fixture
async def store(fresh_consul: DevAgent) -> AsyncIterator[Store]:
    """A store on the test's own agent, closed whatever the test's outcome."""
    opened = Store(client(fresh_consul))
    yield opened
    await opened.consul.close()


@pytest.fixture
def listeners() -> Iterator[tuple[UdpListener, UdpListener]]:
    pair = UdpListener(), UdpListener()
    yield pair
    for listener in pair:
        listener.sock.close()


def test_a_sender_sends_increases_to_statsd_and_tags_to_dogstatsd(listeners: tuple[UdpListener, UdpListener]) -> None:
    statsd, dog = listeners
    registry = Registry()
    runs = registry.counter("cronbus_executor_runs_finished_total", "Runs.", labels=("status",))
    registry.gauge("cronbus_executor_capacity", "Capacity.", lambda: 16)
    settings = StatsdSettings(addr=statsd.address, dog_addr=dog.address, dog_tags=("env:test",))
    sender = StatsdSender(registry, settings)
    try:
        runs.inc(3, status="success")
        sender.flush()
        assert statsd.wait_for(r"cronbus_executor_runs_finished_total\.status\.success:.*") == (
            "cronbus_executor_runs_finished_total.status.success:3|c"
        )
        assert dog.wait_for(r"cronbus_executor_runs_finished_total:.*") == (
            "cronbus_executor_runs_finished_total:3|c|#status:success,env:test"
        )
        assert "cronbus_executor_capacity:16|g" in statsd.read()
        assert "cronbus_executor_capacity:16|g|#env:test" in dog.read()
        runs.inc(status="success")
        sender.flush()
        assert statsd.wait_for(r"cronbus_executor_runs_finished_total\.status\.success:1\|c")
    finally:
        sender.close()


async def test_every_service_sends_its_metrics(
    cluster: Cluster,
    store: Store,
    listeners: tuple[UdpListener, UdpListener],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each by its own way of setting it: the scheduler from CRONBUS_* variables, the executor (DogStatsD) and the
    gateway (StatsD) from flags."""
    statsd, dog = listeners
    fast = ("--statsd-interval", "0.2")
    with monkeypatch.context() as env:
        env.setenv("CRONBUS_STATSD_ADDR", statsd.address)
        env.setenv("CRONBUS_STATSD_INTERVAL", "0.2")
        cluster.scheduler(name="s1")
    cluster.executor("--dog-statsd-addr", dog.address, "--dog-statsd-tags", "env:test", "--dog-statsd-tags",
                     "team:ops", *fast, name="e1")  # fmt: skip
    _, gateway = cluster.gateway("--statsd-addr", statsd.address, *fast, name="g1")

    async def leader() -> bool:
        return await store.get_leader() is not None

    await async_wait_until(leader, timeout_s=15, what="a leader")
    await put_job(store, name="tick", schedule="@every 1s", executor="noop")
    assert await asyncio.to_thread(statsd.wait_for, r"cronbus_leader:1\|g")
    assert await asyncio.to_thread(statsd.wait_for, r"cronbus_fires_total:\d+\|c")
    assert await asyncio.to_thread(
        dog.wait_for, r"cronbus_executor_runs_finished_total:\d+\|c\|#status:success,env:test,team:ops"
    )
    assert await asyncio.to_thread(dog.wait_for, r"cronbus_executor_capacity:16\|g\|#env:test,team:ops")

    def get_jobs() -> int:
        try:
            with urllib.request.urlopen(f"{gateway}/v1/jobs", timeout=5) as response:
                return int(response.status)
        except OSError:  # not listening yet
            return 0

    await async_wait_until(lambda: asyncio.to_thread(get_jobs), timeout_s=15, what="the gateway")
    assert await asyncio.to_thread(
        statsd.wait_for, r"cronbus_gateway_requests_total\.method\.GET\.route\._v1_jobs\.status\.200:\d+\|c"
    )
