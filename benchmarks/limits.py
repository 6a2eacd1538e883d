"""Physical limits of this machine, measured in the same run: process spawns per second, ZeroMQ round trip.

`python -m benchmarks.limits echo PORT` is the far end of the round trip: a ROUTER that echoes every frame.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass

import zmq

from benchmarks.support import Distribution, Procs
from cronbus.common.consul.agent import free_port

TRUE = "/bin/true"


@dataclass
class Limits:
    spawn_sequential_per_s: float
    spawn_parallel_per_s: float
    zmq_rtt: Distribution
    zmq_msgs_per_s: float

    @property
    def spawn_per_s(self) -> float:
        """The best of both ways of spawning: the bar a runner is held to."""
        return max(self.spawn_sequential_per_s, self.spawn_parallel_per_s)


def spawn_sequential(duration_s: float) -> float:
    """subprocess.run of /bin/true, one after the other."""
    count = 0
    end = time.monotonic() + duration_s
    started = time.monotonic()
    while time.monotonic() < end:
        subprocess.run([TRUE], check=True)
        count += 1
    return count / (time.monotonic() - started)


async def spawn_parallel(duration_s: float, concurrency: int) -> float:
    """asyncio subprocesses of /bin/true, `concurrency` at a time (how the executor spawns)."""
    count = 0
    end = time.monotonic() + duration_s

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < end:
            proc = await asyncio.create_subprocess_exec(TRUE)
            await proc.wait()
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.monotonic() - started)


def zmq_round_trips(endpoint: str, count: int, payload: bytes) -> tuple[Distribution, float]:
    """Sequential DEALER->ROUTER->DEALER round trips (ms), then pipelined echoes per second."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)  # a lost echo fails the measurement (zmq.Again) instead of hanging it
    sock.connect(endpoint)
    try:
        sock.send(b"warm")
        if not sock.poll(10_000):
            raise TimeoutError("echo server silent")
        sock.recv()
        rtts = []
        for _ in range(count):
            t = time.perf_counter()
            sock.send(payload)
            sock.recv()
            rtts.append((time.perf_counter() - t) * 1000)
        window = 500  # in flight at once: half the ROUTER's send high-water mark, past which it drops
        started = time.perf_counter()
        for _ in range(count // window):
            for _ in range(window):
                sock.send(payload)
            for _ in range(window):
                sock.recv()
        rate = (count // window) * window / (time.perf_counter() - started)
        return Distribution(rtts), rate
    finally:
        sock.close()
        ctx.term()


async def measure(procs: Procs, quick: bool) -> Limits:
    duration = 1.0 if quick else 4.0
    sequential = await asyncio.to_thread(spawn_sequential, duration)
    parallel = await spawn_parallel(duration, concurrency=16)
    port = free_port()
    echo = procs.python("zmq-echo", "benchmarks.limits", "echo", str(port))
    try:
        rtt, rate = await asyncio.to_thread(
            zmq_round_trips, f"tcp://127.0.0.1:{port}", 3000 if quick else 10_000, b"x" * 300
        )
    finally:
        echo.stop()
    return Limits(sequential, parallel, rtt, rate)


def echo(port: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(f"tcp://127.0.0.1:{port}")
    while True:
        sock.send_multipart(sock.recv_multipart())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "echo":
        echo(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m benchmarks.limits echo PORT")
