"""The leader's ROUTER: one reader that decodes what executors and gateways send at the edge and hands each message
over in order, and the in-order acknowledgement of executors' reliable messages (docs/protocol.md, "Reliability")."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
import zmq
import zmq.asyncio

from cronbus.common import messages as m
from cronbus.common.bus import RefusalLog, peer_role
from cronbus.common.errors import UnavailableError

log = logging.getLogger(__name__)

READ_BURST = 1000  # router messages read at once, then the loop runs other work


class RouterReader:
    """The ROUTER socket's one reader. On a bus with keys, each message is checked against the role of its sender's
    key (docs/production.md, "Bus keys per role"); a message that role may not send is refused, never handled."""

    def __init__(
        self,
        router: zmq.asyncio.Socket,
        *,
        keyed: bool,
        handle: Callable[[bytes, m.ToLeader], Awaitable[None]],
        send_to: Callable[[bytes, msgspec.Struct], None],
    ) -> None:
        self._router = router
        self._keyed = keyed
        self._handle = handle
        self._send_to = send_to
        self._refusals = RefusalLog()  # senders refused a message their key's role may not send

    async def run(self) -> None:
        """Reads until cancelled."""
        # What has arrived already is read without a future per message (a sync twin of the same socket).
        ready: zmq.Socket[bytes] = zmq.Socket.shadow(self._router.underlying)
        if self._keyed:
            await self._read_keyed(ready)
            return
        while True:
            await self._on_frames(await self._router.recv_multipart())
            for _ in range(READ_BURST):
                try:
                    frames = ready.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                await self._on_frames(frames)
            await asyncio.sleep(0)  # a receive that finds a message does not yield: let the handlers run

    async def _read_keyed(self, ready: zmq.Socket[bytes]) -> None:
        """The router's reader on a bus with keys: frames rather than bytes, as each carries the role of its sender's
        key (docs/production.md, "Bus keys per role")."""
        while True:
            frames = await self._router.recv_multipart(copy=False)
            await self._on_frames([f.bytes for f in frames], peer_role(frames[-1]))
            for _ in range(READ_BURST):
                try:
                    frames = ready.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                await self._on_frames([f.bytes for f in frames], peer_role(frames[-1]))
            await asyncio.sleep(0)

    async def _on_frames(self, frames: list[bytes], sender: m.BusRole | None = None) -> None:
        """One message on the router: the peer's identity, then one or more frames, each a message. On a bus with
        keys, `sender` is the role of the sender's key, and a message that role may not send is refused."""
        if not 2 <= len(frames) <= 1 + m.MAX_BUNDLE:
            log.warning("dropped message with %d frames on the router", len(frames))
            return
        identity, *payloads = frames
        for payload in payloads:
            msg = m.decode(m.to_leader_decoder, payload, source=identity.decode(errors="replace"))
            if msg is None:
                continue
            if self._keyed and m.sender_role(msg) != sender:
                self._refuse(identity, sender, msg)
                continue
            try:
                await self._handle(identity, msg)
            except Exception:  # a task boundary: one bad message must not end the scheduler
                log.exception("failed to handle %s from %r", type(msg).__name__, identity)

    def _refuse(self, identity: bytes, sender: m.BusRole | None, msg: m.ToLeader) -> None:
        """A message its sender's key may not send (an executor's key asking to run a job, a gateway's reporting a
        result): never acted on. A control request is answered 403, so its sender knows why."""
        allowed = m.sender_role(msg)
        key = f"a {sender}'s key" if sender else "a key no longer in the allow-lists"
        if self._refusals.due(identity):
            log.warning(
                "refused %s from %r: sent with %s; only %ss may send it", type(msg).__name__, identity, key, allowed
            )
        if isinstance(msg, m.RunJob | m.KillExecution | m.ListBusy):
            error = f"refused: {type(msg).__name__} was sent with {key}; only {allowed} keys may send it"
            self._send_to(identity, m.ControlReply(req_id=msg.req_id, ok=False, code=403, error=error))


class InOrderAcks:
    """Per executor, the handlers of its reliable messages in the order they came. Acks are cumulative (an executor
    forgets every message it sent before the acked one), so a message is acknowledged only once every earlier one
    from the same executor was handled, and nothing is acknowledged while a handling failed, until that message
    comes again (resent after the ack timeout, or after a new hello) and is handled. Handlers that end together get
    one ack, for the latest."""

    def __init__(self, send: Callable[[bytes, int], None]) -> None:
        self._send = send
        self._queues: dict[bytes, deque[tuple[int, asyncio.Task[None]]]] = {}
        self._failed: dict[bytes, set[int]] = {}  # per executor: seqs whose handling failed

    def add(self, identity: bytes, seq: int, task: asyncio.Task[None]) -> None:
        queue = self._queues.setdefault(identity, deque())
        queue.append((seq, task))
        task.add_done_callback(lambda _: self._settle(identity, queue))

    def clear(self) -> None:
        self._queues.clear()
        self._failed.clear()

    def reset(self, identity: bytes) -> None:
        """The executor said hello: it sends every unacknowledged message again, failed ones included."""
        self._failed.pop(identity, None)

    def _settle(self, identity: bytes, queue: deque[tuple[int, asyncio.Task[None]]]) -> None:
        if self._queues.get(identity) is not queue:
            return  # from before clear(): a new term acknowledges only what it handled itself
        failed = self._failed.setdefault(identity, set())
        ack = None
        while queue and queue[0][1].done():
            seq, task = queue.popleft()
            if _handled(task, seq):
                failed.discard(seq)
                if not failed:
                    ack = seq
            else:
                failed.add(seq)
        if ack is not None:
            self._send(identity, ack)


def _handled(task: asyncio.Task[None], seq: int) -> bool:
    if task.cancelled():
        return False
    exc = task.exception()
    if exc is None:
        return True
    if isinstance(exc, UnavailableError):  # the term ended under it: expected, and the next leader gets it
        log.warning("result not handled seq=%d: %s", seq, exc)
    else:  # a task boundary: log, and leave the message unacknowledged so it comes again
        log.error("result handling failed seq=%d", seq, exc_info=exc)
    return False
