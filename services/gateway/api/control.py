"""Client of the leader's control channel: run, kill and busy requests over a DEALER, replies matched by req_id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import assert_never

from cronbus.common import messages
from cronbus.common.bus import Bus, KeyRing, load_keys
from cronbus.common.consul.store import Store
from cronbus.common.errors import CronbusError, UnavailableError, UntrustedKeyError
from cronbus.common.messages import (
    Ack,
    ControlReply,
    ExecutionEnded,
    KillExecution,
    LeaderHeartbeat,
    ListBusy,
    NotLeader,
    OutputPublished,
    RunJob,
    Welcome,
)
from cronbus.common.models import Execution, LeaderInfo
from cronbus.common.settings import BusSettings
from cronbus.common.tracing import NO_TRACING, Tracing

log = logging.getLogger(__name__)

NO_LEADER = "no leader"

ControlRequest = RunJob | KillExecution | ListBusy
OutputEvent = OutputPublished | ExecutionEnded


class ControlError(CronbusError):
    """The leader refused a request; `code` is the HTTP status it asked the gateway to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _NotLeaderError(Exception):
    """The peer answered NotLeader: read the leader record again."""


class _LeaderConnection:
    """One DEALER to one leader's ROUTER and the task that reads it, resolving pending requests by req_id. On a bus
    with keys it pins server_key, a scheduler's: only a scheduler can answer it."""

    def __init__(self, bus: Bus, endpoint: str, identity: str, server_key: bytes | None) -> None:
        self.endpoint = endpoint
        self.server_key = server_key
        self.socket = bus.dealer(endpoint, identity, server_key=server_key)
        self.pending: dict[str, asyncio.Future[ControlReply]] = {}
        self.reader = asyncio.create_task(self._read(), name=f"control-reader {endpoint}")

    async def _read(self) -> None:
        try:
            while True:
                frames = await self.socket.recv_multipart()
                message = messages.decode(messages.to_peer_decoder, frames[-1], source=self.endpoint)
                match message:
                    case ControlReply():
                        future = self.pending.pop(message.req_id, None)
                        if future is not None and not future.done():
                            future.set_result(message)
                    case NotLeader():
                        log.info("control peer is not the leader endpoint=%s leader=%s", self.endpoint, message.leader)
                        self._fail_pending(_NotLeaderError(message.leader))
                    case Welcome() | LeaderHeartbeat() | Ack() | messages.KillRequested() | messages.CancelRun():
                        log.debug("ignored %s from the leader endpoint=%s", type(message).__name__, self.endpoint)
                    case None:
                        continue
                    case _:
                        assert_never(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # task boundary: a broken socket fails its requests, never the gateway
            log.warning("control connection failed endpoint=%s: %r", self.endpoint, exc)
            self._fail_pending(UnavailableError(f"connection to the leader failed: {exc}"))

    def _fail_pending(self, error: Exception) -> None:
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        self.pending.clear()

    async def request(self, message: ControlRequest, timeout_s: float) -> ControlReply:
        future: asyncio.Future[ControlReply] = asyncio.get_running_loop().create_future()
        self.pending[message.req_id] = future
        try:
            async with asyncio.timeout(timeout_s):
                await self.socket.send(messages.encode(message))
                return await future
        finally:
            self.pending.pop(message.req_id, None)

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        self._fail_pending(UnavailableError("connection to the leader closed"))
        # linger 0: a request still queued for a leader that never answered must not run later.
        self.socket.close(linger=0)


class ControlClient:
    """Sends control requests to whoever leads now (read from the leader record for each request).

    Raises UnavailableError("no leader") when no scheduler leads, UnavailableError when the leader does not
    answer within `timeout_s`, ControlError when it refuses. A NotLeader answer re-reads the record and
    retries once.
    """

    def __init__(
        self,
        store: Store,
        *,
        node_name: str,
        timeout_s: float,
        bus_settings: BusSettings | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.store = store
        self.tracing = tracing
        self._bus_settings = bus_settings or BusSettings()
        # Read once (at start) and kept across buses: reload_keys() reads the allow-lists again.
        self.keys: KeyRing | None = load_keys(self._bus_settings, "gateway")
        self.timeout_s = timeout_s
        self.identity = f"gateway-{node_name}-{uuid.uuid4().hex[:8]}"
        self._bus: Bus | None = None
        self._connection: _LeaderConnection | None = None
        self._lock = asyncio.Lock()

    @property
    def bus(self) -> Bus:
        # Created on first use, inside the running loop, and again after close() (an app restarted in tests).
        if self._bus is None:
            self._bus = Bus(self.keys)
        return self._bus

    async def reload_keys(self) -> None:
        """SIGHUP: the allow-lists again; a connection to a leader whose key left them is dropped."""
        await asyncio.to_thread(self.bus.reload_keys)
        connection = self._connection
        if connection is not None and not self.bus.trusts_leader(connection.server_key):
            log.warning("dropping the control connection endpoint=%s: its key is no longer a scheduler's",
                        connection.endpoint)  # fmt: skip
            await self._drop(connection)

    def _leader_key(self, leader: LeaderInfo) -> bytes | None:
        try:
            return self.bus.leader_key(leader.curve_key)
        except UntrustedKeyError as exc:
            log.error("not talking to leader=%s router=%s: %s", leader.name, leader.router, exc)
            raise UnavailableError(f"the leader ({leader.name}) is not trusted: {exc}") from None

    async def leader(self) -> LeaderInfo:
        found = await self.store.get_leader()
        if found is None:
            raise UnavailableError(NO_LEADER)
        return found[0]

    async def _connect(self, leader: LeaderInfo) -> _LeaderConnection:
        async with self._lock:
            server_key = self._leader_key(leader)
            current = self._connection
            if current is not None and (current.endpoint, current.server_key) != (leader.router, server_key):
                await current.close()
                self._connection = None
            if self._connection is None:
                self._connection = _LeaderConnection(self.bus, leader.router, self.identity, server_key)
            return self._connection

    async def _drop(self, connection: _LeaderConnection) -> None:
        async with self._lock:
            if self._connection is connection:
                self._connection = None
        await connection.close()

    async def _request(self, make: Callable[[str], ControlRequest]) -> ControlReply:
        for attempt in (1, 2):
            leader = await self.leader()
            connection = await self._connect(leader)
            message = make(uuid.uuid4().hex)
            try:
                reply = await connection.request(message, self.timeout_s)
            except _NotLeaderError:
                await self._drop(connection)
                if attempt == 2:
                    raise UnavailableError(NO_LEADER) from None
                continue
            except TimeoutError:
                await self._drop(connection)
                raise UnavailableError(
                    f"the leader ({leader.name}) did not answer within {self.timeout_s:g}s"
                ) from None
            if not reply.ok:
                raise ControlError(reply.code, reply.error or f"the leader refused the request ({reply.code})")
            return reply
        raise UnavailableError(NO_LEADER)  # pragma: no cover - the loop returns or raises

    async def run_job(self, job_name: str) -> ControlReply:
        """Asks the leader to run the job now; returns once the leader accepted (not when the run ends). The
        trace of the run starts here (docs/metrics.md, "Traces")."""
        with self.tracing.span("cronbus.run_job", attributes={"cronbus.job": job_name}) as span:
            trace = span.carrier()
            return await self._request(lambda req_id: RunJob(req_id=req_id, job_name=job_name, trace=trace))

    async def kill_execution(self, job_name: str, execution_id: str) -> ControlReply:
        return await self._request(
            lambda req_id: KillExecution(req_id=req_id, job_name=job_name, execution_id=execution_id)
        )

    async def list_busy(self) -> list[Execution]:
        """The executions running now, with their output so far."""
        return (await self._request(lambda req_id: ListBusy(req_id=req_id))).executions

    @contextlib.asynccontextmanager
    async def output(self, leader: LeaderInfo, execution_id: str) -> AsyncIterator[OutputSubscription]:
        """A subscription to an execution's live output on the leader's publisher, closed on exit."""
        subscription = OutputSubscription(self.bus, leader.publisher, execution_id, self._leader_key(leader))
        try:
            yield subscription
        finally:
            subscription.close()

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
        if self._bus is not None:
            self._bus.close()
            self._bus = None


class OutputSubscription:
    """A SUB on one execution's output topic. Its owner (one stream) is the only reader."""

    def __init__(self, bus: Bus, publisher: str, execution_id: str, server_key: bytes | None) -> None:
        self.publisher = publisher
        self.execution_id = execution_id
        self.socket = bus.sub(publisher, [messages.output_topic(execution_id)], server_key=server_key)

    async def receive(self, timeout_s: float) -> OutputEvent | None:
        """The next event of this execution, or None after timeout_s (0: only what has arrived) without one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            remaining_ms = max(0.0, deadline - loop.time()) * 1000
            if not await self.socket.poll(int(remaining_ms)):
                return None
            frames = await self.socket.recv_multipart()
            event = messages.decode(messages.published_decoder, frames[-1], source=self.publisher)
            if isinstance(event, OutputPublished | ExecutionEnded) and event.execution_id == self.execution_id:
                return event

    async def drain(self) -> list[OutputEvent]:
        """Every event that has arrived and was not read yet, without waiting."""
        events: list[OutputEvent] = []
        while (event := await self.receive(0)) is not None:
            events.append(event)
        return events

    def close(self) -> None:
        self.socket.close(linger=0)
