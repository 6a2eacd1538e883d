"""Shared steps of the scheduling tests: jobs written straight to Consul, executions read back from it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from datetime import datetime

import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.consul.agent import DevAgent
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.models import Execution, Job, now_utc

OPEN_CLIENTS: list[ConsulClient] = []  # closed after each test (tests/conftest.py), even one that fails


def client(agent: DevAgent) -> ConsulClient:
    made = ConsulClient("127.0.0.1", agent.http_port)
    OPEN_CLIENTS.append(made)
    return made


async def put_job(store: Store, **fields: object) -> Job:
    job = Job(**fields)  # type: ignore[arg-type]
    job = Job(**{**_asdict(job), "id": job.name, "created_at": job.created_at or now_utc()})  # type: ignore[arg-type]
    stored = await store.get_job(job.name)
    assert await store.put_job(job, cas=stored.modify_index if stored else 0)
    return job


def _asdict(job: Job) -> dict[str, object]:
    return {f: getattr(job, f) for f in job.__struct_fields__}


async def executions(store: Store, name: str) -> list[Execution]:
    return sorted(await store.list_executions(name), key=lambda e: (e.scheduled_at, e.attempt, e.id))


def finished(records: list[Execution]) -> list[Execution]:
    return [r for r in records if r.status not in ("pending", "running")]


def slot_counts(records: list[Execution], since: datetime, until: datetime) -> Counter[datetime]:
    """How many executions ran (or were accounted for) per scheduled slot in [since, until]."""
    return Counter(r.scheduled_at for r in records if since <= r.scheduled_at <= until and r.attempt == 1)


async def control(
    store: Store, request: m.RunJob | m.KillExecution | m.ListBusy, timeout_s: float = 5.0
) -> m.ControlReply:
    """Sends one control request to the leader over a DEALER, as the gateway does; returns its reply. A scheduler
    that holds the lock but has not finished setting up its term answers NotLeader: asked again, as the gateway
    does, until `timeout_s` has passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = await store.get_leader()
        assert found is not None, "no leader"
        reply = await _ask(found[0].router, request, deadline - loop.time())
        if reply is not None:
            return reply
        await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))  # retry pacing, bounded by the deadline


async def _ask(router: str, request: m.ToLeader, timeout_s: float) -> m.ControlReply | None:
    """The leader's ControlReply, or None when it answered NotLeader; TimeoutError when it did not answer."""
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(router)
    try:
        await sock.send(m.encode(request))
        async with asyncio.timeout(max(timeout_s, 0.0)):
            while True:
                reply = m.to_peer_decoder.decode(await sock.recv())
                if isinstance(reply, m.ControlReply):
                    return reply
                if isinstance(reply, m.NotLeader):
                    return None
    finally:
        sock.close()


async def executor_joined(store: Store) -> bool:
    """True once the leader accepts a manual run of a throw-away job: it knows a live executor."""
    await put_job(store, name="probe", schedule="@manually", executor="noop")
    with contextlib.suppress(AssertionError, TimeoutError):
        return (await control(store, m.RunJob(req_id=uuid.uuid4().hex, job_name="probe"))).ok
    return False
