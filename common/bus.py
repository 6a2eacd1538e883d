"""ZeroMQ socket factory (every socket option in one place), topics and framing."""

from __future__ import annotations

import logging
from typing import Final

import zmq
import zmq.asyncio

from cronbus.common.messages import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

LINGER_MS: Final = 500
RECONNECT_IVL_MS: Final = 100
RECONNECT_IVL_MAX_MS: Final = 5000  # reconnects back off exponentially up to this
SNDHWM: Final = 100_000
RCVHWM: Final = 100_000


def tag_topic(key: str, value: str) -> bytes:
    """The PUB topic of one executor tag. Terminated by NUL because SUB filters match by prefix:
    without it a subscriber to role=web would also receive role=webserver."""
    return f"{key}={value}\0".encode()


def node_topic(node: str) -> bytes:
    return tag_topic("node", node)


class Bus:
    """Owns the ZeroMQ context; creates sockets with cronbus's options. close() ends them all."""

    def __init__(self) -> None:
        self.ctx = zmq.asyncio.Context()

    def _socket(self, kind: int) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, LINGER_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES + 1024)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.SNDHWM, SNDHWM)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        return sock

    def router(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        """A bound ROUTER (the stable side); returns it and its port (a free one when port is 0)."""
        sock = self._socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a peer reconnecting with its identity takes over
        return sock, _bind(sock, host, port)

    def xpub(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        """A bound XPUB: like PUB, but it reads subscriptions, so the leader sees who listens to what."""
        sock = self._socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        return sock, _bind(sock, host, port)

    def dealer(self, endpoint: str, identity: str) -> zmq.asyncio.Socket:
        sock = self._socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        sock.connect(endpoint)
        return sock

    def sub(self, endpoint: str, topics: list[bytes]) -> zmq.asyncio.Socket:
        sock = self._socket(zmq.SUB)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        return sock

    def close(self) -> None:
        self.ctx.destroy(linger=LINGER_MS)


def _bind(sock: zmq.asyncio.Socket, host: str, port: int) -> int:
    if port:
        sock.bind(f"tcp://{host}:{port}")
        return port
    return sock.bind_to_random_port(f"tcp://{host}")
