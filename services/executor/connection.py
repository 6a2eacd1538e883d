"""The executor's link to the leader: a DEALER and a SUB that follow the leader record, heartbeats, resends."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Iterable
from typing import Protocol, assert_never

import msgspec
import zmq
import zmq.asyncio

from cronbus.common import messages
from cronbus.common.bus import RECONNECT_IVL_MAX_MS, Bus, send_now
from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.errors import ConsulError, UntrustedKeyError
from cronbus.common.messages import (
    Ack,
    CancelRun,
    ControlReply,
    ExecutionFinished,
    ExecutionStarted,
    Hello,
    KillRequested,
    LeaderHeartbeat,
    NotLeader,
    OutputProduced,
    Published,
    ToPeer,
    Welcome,
)
from cronbus.common.models import LeaderInfo
from cronbus.common.settings import BusSettings

log = logging.getLogger(__name__)

Reliable = ExecutionStarted | OutputProduced | ExecutionFinished
WATCH_WAIT_S = 10.0  # blocking-query wait on the leader key
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = RECONNECT_IVL_MAX_MS / 1000


class Handler(Protocol):
    """What the connection needs from the service. on_peer and on_acked run on the DEALER's reader task,
    on_published on the SUB's; each is awaited before its socket's next frame is read."""

    def hello(self) -> Hello: ...

    def running_count(self) -> int: ...

    async def on_peer(self, message: Welcome | KillRequested | CancelRun | ControlReply) -> None: ...

    async def on_published(self, message: Published) -> None: ...

    async def on_acked(self, message: Reliable) -> None: ...


class Outbox:
    """Reliable messages not yet acknowledged. Seqs grow across connections and restarts: they start from the
    wall clock in microseconds and stay above every restored message.

    The leader handles messages in the order they arrive and acknowledges cumulatively, so an ack of one message
    covers every message sent before it on the connection, whatever their seqs: results are not sent in seq order
    (each waits for its own journal write). Every operation costs about the messages it touches, not all pending
    ones (thousands pile up while no leader acks)."""

    def __init__(self) -> None:
        self._seq = time.time_ns() // 1000
        self._pending: dict[int, Reliable] = {}
        self._sent_at: dict[int, float] = {}
        self._sends = 0  # sends so far
        self._send_number: dict[int, int] = {}  # seq -> the number of its latest send
        self._order: list[tuple[int, int]] = []  # (send number, seq), in send order; superseded ones left lazily
        self._outputs: dict[str, list[int]] = {}  # execution id -> seqs of its output chunks
        self._finished: dict[str, int] = {}  # execution id -> seq of its ExecutionFinished

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add(self, message: Reliable) -> None:
        """A message about to be sent (or restored, to be sent at the next connection)."""
        self._seq = max(self._seq, message.seq)
        self._pending[message.seq] = message
        self.sending(message.seq)
        if isinstance(message, OutputProduced):
            self._outputs.setdefault(message.execution_id, []).append(message.seq)
        elif isinstance(message, ExecutionFinished):
            self._finished[message.execution_id] = message.seq

    def sending(self, seq: int) -> None:
        """Records that the message is being sent (again) now."""
        self._sends += 1
        self._send_number[seq] = self._sends
        self._order.append((self._sends, seq))
        self._sent_at[seq] = time.monotonic()

    def ack(self, seq: int) -> list[Reliable]:
        """Removes and returns `seq` and every message sent before it (acks are cumulative)."""
        last = self._send_number.get(seq)
        if last is None:
            return []  # acknowledged before (a resend's ack)
        upto = bisect.bisect_right(self._order, (last, seq))
        acked = [m for n, s in self._order[:upto] if self._send_number.get(s) == n and (m := self._remove(s))]
        del self._order[:upto]
        return acked

    def due(self, timeout_s: float) -> list[Reliable]:
        """Messages sent more than timeout_s ago without an ack, in seq order; recorded as sent now."""
        now = time.monotonic()
        late = [m for m in self.pending() if now - self._sent_at[m.seq] >= timeout_s]
        for message in late:
            self.sending(message.seq)
        return late

    def pending(self) -> list[Reliable]:
        return [self._pending[seq] for seq in sorted(self._pending)]

    def finished(self, execution_id: str) -> ExecutionFinished | None:
        message = self._pending.get(self._finished.get(execution_id, -1))
        return message if isinstance(message, ExecutionFinished) else None

    def drop_output(self, execution_id: str) -> None:
        """Forgets unacked output chunks of a finished run: its ExecutionFinished carries the whole output,
        and this keeps memory bounded while no leader acks."""
        for seq in self._outputs.pop(execution_id, []):
            self._remove(seq)

    def _remove(self, seq: int) -> Reliable | None:
        message = self._pending.pop(seq, None)
        if message is None:
            return None
        del self._sent_at[seq]
        del self._send_number[seq]
        if isinstance(message, ExecutionFinished) and self._finished.get(message.execution_id) == seq:
            del self._finished[message.execution_id]
        return message


class LeaderConnection:
    """Follows the leader record in Consul and keeps one session (DEALER + SUB) with the current leader.

    A session ends when the leader record changes, when the leader is silent for heartbeat_liveness
    intervals, or when it answers NotLeader; then the record is re-read and new sockets are made, with a
    capped exponential backoff while no leader answers. Messages sent while no session is up are dropped;
    reliable ones stay in the outbox and are resent after every Hello and after each ack timeout.
    """

    def __init__(
        self,
        *,
        node: str,
        topics: Iterable[bytes],
        consul: ConsulClient,
        bus: Bus,
        settings: BusSettings,
        handler: Handler,
    ) -> None:
        self.node = node
        self.identity = f"executor:{node}"
        self.topics = list(topics)
        self.store = Store(consul)
        self.consul = consul
        self.bus = bus
        self.settings = settings
        self.handler = handler
        self.outbox = Outbox()
        self.leader: LeaderInfo | None = None
        self._leader_changed = asyncio.Event()
        self._dealer: zmq.asyncio.Socket | None = None  # the current session's
        self.revision = 0  # of the protocol the current leader and this executor both speak (messages.REVISION)
        self._bundle: list[bytes] = []  # frames to send at the loop's next turn (see send)
        self._bundle_bytes = 0
        self._session_leader: LeaderInfo | None = None
        self._session_key: bytes | None = None  # the scheduler key the current session pins (bus with keys)
        self._session_over = asyncio.Event()
        self._welcomed = False
        self._heard_at = 0.0

    @property
    def connected(self) -> bool:
        """True while a leader has welcomed this executor on the current session."""
        return self._welcomed and self._dealer is not None

    def send(self, message: msgspec.Struct) -> None:
        """Best effort: sent on the current session at the loop's next turn, together with every other message sent
        in this turn (one ZeroMQ message of several frames); dropped when there is no session."""
        if self._dealer is None:
            log.debug("no leader session; dropped kind=%s", type(message).__name__)
            return
        frame = messages.encode(message)
        if self.revision < 1:  # the leader reads one frame per message
            send_now(self._dealer, [frame])
            return
        if not self._bundle:
            asyncio.get_running_loop().call_soon(self._send_bundle)
        self._bundle.append(frame)
        self._bundle_bytes += len(frame)
        if len(self._bundle) >= messages.MAX_BUNDLE or self._bundle_bytes >= messages.BUNDLE_BYTES:
            self._send_bundle()

    def _send_bundle(self) -> None:
        bundle, self._bundle, self._bundle_bytes = self._bundle, [], 0
        if bundle and self._dealer is not None:
            send_now(self._dealer, bundle)

    def send_reliable(self, message: Reliable) -> None:
        """Kept until acked, resent after the ack timeout and after every reconnect."""
        self.outbox.add(message)
        self.send(message)

    def resend(self, message: Reliable) -> None:
        """Sends a message of the outbox again now (its ack then covers what was sent before this send)."""
        self.outbox.sending(message.seq)
        self.send(message)

    async def run(self, stop: asyncio.Event) -> None:
        """Follows the leader until stop is set."""
        async with asyncio.TaskGroup() as tg:
            watcher = tg.create_task(self._watch_leader(stop))
            backoff_s = BACKOFF_MIN_S
            while not stop.is_set():
                leader = self.leader
                if leader is None:
                    self._leader_changed.clear()
                    await _wait_any([stop, self._leader_changed])
                    continue
                answered = await self._session(leader, stop)
                if stop.is_set():
                    break
                await self._reread_leader()
                if answered:
                    backoff_s = BACKOFF_MIN_S
                elif self.leader == leader:  # the same leader never answered: do not hammer it
                    self._leader_changed.clear()
                    await _wait_any([stop, self._leader_changed], backoff_s)
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
            watcher.cancel()

    # ---- leader record ------------------------------------------------------------------------------

    async def _watch_leader(self, stop: asyncio.Event) -> None:
        """Blocking queries on the leader key, so a change is seen at once."""
        index = 0
        backoff_s = BACKOFF_MIN_S
        while not stop.is_set():
            try:
                new_index, _ = await asyncio.wait_for(
                    self.consul.kv_list(keys.LEADER, index=index or None, wait_s=WATCH_WAIT_S), WATCH_WAIT_S + 5
                )
                # Consul may reset its index; a smaller one means "start over" (Consul's blocking-query rules).
                index = new_index if new_index >= index else 0
                self._set_leader(await self._read_leader())
                backoff_s = BACKOFF_MIN_S
            except (ConsulError, TimeoutError) as exc:
                log.warning("cannot watch the leader record (%s); retrying in %.1fs", exc, backoff_s)
                await _wait_any([stop], backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)

    async def _read_leader(self) -> LeaderInfo | None:
        found = await self.store.get_leader()
        return found[0] if found else None

    async def _reread_leader(self) -> None:
        try:
            self._set_leader(await self._read_leader())
        except ConsulError as exc:
            log.warning("cannot read the leader record: %s", exc)

    def _set_leader(self, leader: LeaderInfo | None) -> None:
        if leader == self.leader:
            return
        log.info(
            "leader record changed leader=%s term=%s router=%s",
            leader and leader.name,
            leader and leader.term,
            leader and leader.router,
        )
        self.leader = leader
        self._leader_changed.set()
        if self._session_leader is not None and leader != self._session_leader:
            self._end_session("leader changed")

    # ---- one session with one leader ----------------------------------------------------------------

    def _end_session(self, reason: str) -> None:
        if not self._session_over.is_set():
            log.info("leaving leader=%s: %s", self._session_leader and self._session_leader.name, reason)
            self._session_over.set()

    def keys_reloaded(self) -> None:
        """After the bus's allow-lists were read again: a session with a leader whose key is no longer a scheduler's
        ends (the next one is refused, see _session)."""
        if self._session_leader is not None and not self.bus.trusts_leader(self._session_key):
            self._end_session("its key is no longer among the schedulers' keys")

    async def _session(self, leader: LeaderInfo, stop: asyncio.Event) -> bool:
        """Talks to one leader until the session ends; True when the leader welcomed this executor.

        On a bus with keys both sockets pin a scheduler's key (Bus.leader_key): the handshake fails unless the peer
        holds that key's secret, so every dispatch, kill and query this executor acts on comes from a scheduler. A
        leader record naming another key (an executor's, say) is refused before anything connects."""
        try:
            server_key = self.bus.leader_key(leader.curve_key)
        except UntrustedKeyError as exc:
            log.error("not connecting to leader=%s router=%s: %s", leader.name, leader.router, exc)
            return False
        self._session_leader = leader
        self._session_key = server_key
        self._session_over = asyncio.Event()
        self._welcomed = False
        self.revision = 0
        self._heard_at = time.monotonic()
        dealer: zmq.asyncio.Socket | None = None
        sub: zmq.asyncio.Socket | None = None
        try:
            dealer = self.bus.dealer(leader.router, self.identity, server_key=server_key)
            sub = self.bus.sub(leader.publisher, self.topics, server_key=server_key)
            log.info("connecting leader=%s term=%d router=%s", leader.name, leader.term, leader.router)
            self._dealer = dealer
            self.send(self.handler.hello())
            for message in self.outbox.due(0):
                self.send(message)
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._read_dealer(dealer)),
                    tg.create_task(self._read_sub(sub)),
                    tg.create_task(self._tick()),
                ]
                await _wait_any([stop, self._session_over])
                for task in tasks:
                    task.cancel()
        except* zmq.ZMQError as group:
            log.warning("bus error with leader=%s: %s", leader.name, group.exceptions[0])
        finally:
            self._dealer = None
            self._session_leader = None
            self._session_key = None
            for sock in (dealer, sub):
                if sock is not None:
                    sock.close()  # with the bus's linger
        return self._welcomed

    async def _read_dealer(self, dealer: zmq.asyncio.Socket) -> None:
        while True:
            frames = await dealer.recv_multipart()
            self._heard_at = time.monotonic()  # any frame proves the leader is alive
            if len(frames) != 1:
                log.warning("dropped frame source=router: %d parts, expected 1", len(frames))
                continue
            message = messages.decode(messages.to_peer_decoder, frames[0], source="router")
            if message is not None:
                log.debug("from leader kind=%s", type(message).__name__)
                await self._on_peer(message)

    async def _on_peer(self, message: ToPeer) -> None:
        match message:
            case Ack(seq=seq):
                for acked in self.outbox.ack(seq):
                    await self.handler.on_acked(acked)
            case LeaderHeartbeat():
                pass
            case NotLeader(leader=name):
                self._end_session(f"not the leader (says leader is {name!r})")
            case Welcome(leader=name, term=term):
                if message.protocol != messages.PROTOCOL_VERSION:
                    self._end_session(
                        f"leader {name} speaks protocol {message.protocol}, not {messages.PROTOCOL_VERSION}"
                    )
                    return
                self._welcomed = True
                self.revision = min(message.revision, messages.REVISION)
                log.info("welcomed by leader=%s term=%d revision=%d", name, term, self.revision)
                await self.handler.on_peer(message)
            case KillRequested() | CancelRun() | ControlReply():
                await self.handler.on_peer(message)
            case _:
                assert_never(message)

    async def _read_sub(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2:
                log.warning("dropped frame source=pub: %d parts, expected topic and payload", len(frames))
                continue
            message = messages.decode(messages.published_decoder, frames[1], source="pub")
            if message is not None:
                log.debug("published topic=%r kind=%s", frames[0], type(message).__name__)
                await self.handler.on_published(message)

    async def _tick(self) -> None:
        """Heartbeats, the leader's liveness, and resends of unacked messages."""
        interval_s = self.settings.heartbeat_interval_s
        silence_s = interval_s * self.settings.heartbeat_liveness
        step_s = min(interval_s, self.settings.ack_timeout_s) / 2
        next_beat = 0.0
        while True:
            now = time.monotonic()
            if now - self._heard_at > silence_s:
                self._end_session(f"leader silent for {now - self._heard_at:.1f}s")
                return
            if now >= next_beat:
                self.send(messages.ExecutorHeartbeat(node=self.node, running=self.handler.running_count()))
                next_beat = now + interval_s
            if self._welcomed:
                for message in self.outbox.due(self.settings.ack_timeout_s):
                    log.debug("resend seq=%d exec=%s", message.seq, message.execution_id)
                    self.send(message)
            await asyncio.sleep(step_s)


async def _wait_any(events: list[asyncio.Event], timeout_s: float | None = None) -> None:
    """Returns when any event is set or after timeout_s."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
