"""Many executors in one process: each a real DEALER + SUB pair speaking common/messages.py, and a catalog entry.

python -m benchmarks.sim_executors --consul HOST:PORT --count N --job NAME --out FILE [--timeout S]

Each simulated executor registers in the Consul catalog, says Hello, heartbeats, and answers every Dispatch for
it with DispatchAccepted, then (at the run's slot, like an executor) ExecutionStarted and ExecutionFinished (noop).
It writes "ready N" to stdout once the leader has welcomed all N, and when every executor has received a dispatch
of job NAME (or after --timeout), writes the wall-clock receipt times to FILE and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import cast

import msgspec
import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.bus import tag_topic
from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.models import now_utc
from cronbus.common.settings import split_host_port


class Sim:
    def __init__(self, index: int, ctx: zmq.asyncio.Context, router: str, publisher: str) -> None:
        self.node = f"sim-{index:04d}"
        self.tags = {"node": self.node, "hostname": "sim-host", "dc": "dc1"}
        self.dealer = ctx.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.IDENTITY, f"executor:{self.node}".encode())
        self.dealer.connect(router)
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        for key, value in self.tags.items():
            self.sub.setsockopt(zmq.SUBSCRIBE, tag_topic(key, value))
        self.sub.connect(publisher)
        self.welcomed = asyncio.Event()
        self.seq = time.time_ns() // 1000
        self.dropped = 0

    def send(self, message: msgspec.Struct) -> None:
        # NOBLOCK: the future is done at once; a full queue (the leader not reading) is counted, not resent.
        sent = cast("asyncio.Future[None]", self.dealer.send(m.encode(message), flags=zmq.NOBLOCK))
        if sent.done() and sent.exception() is not None:
            self.dropped += 1

    def hello(self) -> None:
        self.send(m.Hello(node=self.node, tags=self.tags, capacity=10_000, revision=m.REVISION))

    def close(self) -> None:
        self.dealer.close()
        self.sub.close()


async def _register(consul: ConsulClient, count: int) -> None:
    """Registers `count` simulated executors in the catalog, passing their checks."""
    gate = asyncio.Semaphore(64)

    async def register(i: int) -> None:
        node = f"sim-{i:04d}"
        async with gate:
            await consul.register_service(
                keys.EXECUTOR_SERVICE, f"executor-{node}", address="127.0.0.1", port=0,
                tags=[f"node={node}", "hostname=sim-host", "dc=dc1"],
                meta={"node": node, "hostname": "sim-host", "dc": "dc1"}, ttl_s=600,
            )  # fmt: skip
            await consul.check_pass(f"service:executor-{node}")

    await asyncio.gather(*(register(i) for i in range(count)))


def _runs_of(message: m.Published | None) -> list[m.Dispatch]:
    if isinstance(message, m.Dispatch):
        return [message]
    return message.runs if isinstance(message, m.Dispatches) else []


class Fleet:
    """The simulated executors' readers and answers: when each first got a run of `job`."""

    def __init__(self, sims: list[Sim], job: str) -> None:
        self.sims = sims
        self.job = job
        self.received: dict[str, float] = {}
        self.answering: set[asyncio.Task[None]] = set()
        self.all_received = asyncio.Event()

    async def read_dealer(self, sim: Sim) -> None:
        while True:
            message = m.decode(m.to_peer_decoder, await sim.dealer.recv(), source="router")
            if isinstance(message, m.Welcome):
                sim.welcomed.set()
            elif isinstance(message, m.NotLeader):
                sim.hello()

    async def read_sub(self, sim: Sim) -> None:
        while True:
            frames = await sim.sub.recv_multipart()
            for run in _runs_of(m.decode(m.published_decoder, frames[-1], source="pub")):
                if sim.node in run.targets:
                    self.answering.add(task := asyncio.create_task(self.answer(sim, run)))
                    task.add_done_callback(self.answering.discard)

    async def answer(self, sim: Sim, run: m.Dispatch) -> None:
        if run.job_name == self.job and sim.node not in self.received:
            self.received[sim.node] = time.time()
            if len(self.received) >= len(self.sims):
                self.all_received.set()
        sim.send(m.DispatchAccepted(execution_ids=[run.execution_id], node=sim.node))
        await asyncio.sleep((run.scheduled_at - now_utc()).total_seconds())  # like an executor: starts at the slot
        now = now_utc()
        sim.seq += 1
        sim.send(m.ExecutionStarted(seq=sim.seq, execution_id=run.execution_id, job_name=run.job_name,
                                    node=sim.node, started_at=now))  # fmt: skip
        sim.seq += 1
        sim.send(m.ExecutionFinished(seq=sim.seq, execution_id=run.execution_id, job_name=run.job_name,
                                     node=sim.node, status="success", exit_code=0, started_at=now,
                                     finished_at=now_utc()))  # fmt: skip

    async def heartbeat(self) -> None:
        while True:
            for sim in self.sims:
                sim.send(m.ExecutorHeartbeat(node=sim.node, running=0))
            await asyncio.sleep(1.0)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consul", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    host, port = split_host_port(args.consul, setting="--consul", default_port=8500)
    consul = ConsulClient(host, port)
    started = time.monotonic()
    found = await Store(consul).get_leader()
    if found is None:
        sys.exit("no leader")
    leader = found[0]
    await _register(consul, args.count)
    registered_s = time.monotonic() - started
    ctx = zmq.asyncio.Context()
    ctx.set(zmq.MAX_SOCKETS, 2 * args.count + 64)
    sims = [Sim(i, ctx, leader.router, leader.publisher) for i in range(args.count)]
    fleet = Fleet(sims, args.job)
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(fleet.read_dealer(s)) for s in sims] + [
                tg.create_task(fleet.read_sub(s)) for s in sims
            ]
            for sim in sims:
                sim.hello()
            tasks.append(tg.create_task(fleet.heartbeat()))
            await asyncio.wait_for(asyncio.gather(*(s.welcomed.wait() for s in sims)), args.timeout)
            print(f"ready {args.count} registered_s={registered_s:.2f} connected_s={time.monotonic() - started:.2f}",
                  flush=True)  # fmt: skip
            try:
                await asyncio.wait_for(fleet.all_received.wait(), args.timeout)
                await asyncio.sleep(2.0)  # the results go out to the leader
            except TimeoutError:
                pass
            result = {"received": fleet.received, "registered_s": registered_s,
                      "dropped": sum(s.dropped for s in sims)}  # fmt: skip
            await asyncio.to_thread(Path(args.out).write_text, json.dumps(result))
            for task in tasks:
                task.cancel()
    finally:
        for sim in sims:
            sim.close()
        ctx.term()
        await consul.close()


if __name__ == "__main__":
    asyncio.run(main())
