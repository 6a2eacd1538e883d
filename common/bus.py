"""ZeroMQ socket factory (every socket option in one place), topics and framing."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Final, cast

import zmq
import zmq.asyncio
import zmq.auth
import zmq.auth.thread

from cronbus.common.errors import SettingsError
from cronbus.common.messages import MAX_FRAME_BYTES
from cronbus.common.settings import BusSettings

log = logging.getLogger(__name__)

LINGER_MS: Final = 500
RECONNECT_IVL_MS: Final = 100
RECONNECT_IVL_MAX_MS: Final = 5000  # reconnects back off exponentially up to this
SNDHWM: Final = 100_000
RCVHWM: Final = 100_000


def send_now(socket: zmq.asyncio.Socket, frames: list[bytes]) -> None:
    """Sends without waiting: pyzmq tries a non-blocking send at once and returns a finished future. A full queue
    (XPUB drops instead; a ROUTER or DEALER peer that is gone or flooded) loses the message: the sender resends
    what must arrive, and heartbeats tell the rest."""
    sent = cast("asyncio.Future[object]", socket.send_multipart(frames, flags=zmq.NOBLOCK))  # typed as Awaitable
    if sent.done() and sent.exception() is not None:
        log.debug("message dropped: %s", sent.exception())


def tag_topic(key: str, value: str) -> bytes:
    """The PUB topic of one executor tag. Terminated by NUL because SUB filters match by prefix:
    without it a subscriber to role=web would also receive role=webserver."""
    return f"{key}={value}\0".encode()


def node_topic(node: str) -> bytes:
    return tag_topic("node", node)


class CurveKeys:
    """The cluster's CURVE key pair (`cronbus keygen`). Every member holds it: the stable side (the
    schedulers' ROUTER and XPUB) serves with it, the connecting side (executors, gateways) presents it,
    and the servers admit only that public key. A process without the secret key can neither connect
    nor read what is sent."""

    def __init__(self, public: bytes, secret: bytes) -> None:
        self.public = public
        self.secret = secret

    @classmethod
    def load(cls, path: str) -> CurveKeys:
        """Reads a key file written by `cronbus keygen` (ZeroMQ's certificate format, with the secret)."""
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"--curve-key {path}: cannot read a CURVE key pair: {exc}") from exc
        if secret is None:
            raise SettingsError(f"--curve-key {path}: holds no secret key (use the .key_secret file)")
        return cls(public, secret)


def write_keys(path_stem: str) -> tuple[str, str]:
    """Writes a new key pair: <stem>.key (public) and <stem>.key_secret (both). Returns their paths."""
    directory, name = os.path.split(os.path.abspath(path_stem))
    os.makedirs(directory, exist_ok=True)
    public_file, secret_file = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_file, 0o600)
    return str(public_file), str(secret_file)


class _OnlyClusterKey:
    def __init__(self, public: bytes) -> None:
        self.z85 = public

    def callback(self, _domain: str, key: bytes) -> bool:
        allowed = key == self.z85
        if not allowed:
            log.warning("bus connection refused: unknown CURVE key %s", key.decode(errors="replace"))
        return allowed


class Bus:
    """Owns the ZeroMQ context; creates sockets with cronbus's options. close() ends them all."""

    def __init__(self, curve: CurveKeys | None = None) -> None:
        self.ctx = zmq.asyncio.Context()
        self.curve = curve
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None

    @classmethod
    def from_settings(cls, settings: BusSettings) -> Bus:
        return cls(CurveKeys.load(settings.curve_key_file) if settings.curve_key_file else None)

    def _serve_curve(self, sock: zmq.asyncio.Socket) -> None:
        if self.curve is None:
            return
        if self._auth is None:
            # A thread, not the asyncio authenticator: sockets are made before the loop runs, and the ZAP
            # handler must answer during handshakes whatever the loop is busy with.
            self._auth = zmq.auth.thread.ThreadAuthenticator(zmq.Context.shadow(self.ctx.underlying))
            self._auth.start()
            self._auth.configure_curve_callback("*", _OnlyClusterKey(self.curve.public))
        sock.curve_server = True
        sock.curve_secretkey = self.curve.secret
        sock.curve_publickey = self.curve.public

    def _present_curve(self, sock: zmq.asyncio.Socket) -> None:
        if self.curve is None:
            return
        sock.curve_serverkey = self.curve.public
        sock.curve_publickey = self.curve.public
        sock.curve_secretkey = self.curve.secret

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
        self._serve_curve(sock)
        return sock, _bind(sock, host, port)

    def xpub(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        """A bound XPUB: like PUB, but it reads subscriptions, so the leader sees who listens to what."""
        sock = self._socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        # What comes in on an XPUB is subscriptions, short topics: a huge one would stall the owner's loop.
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)
        self._serve_curve(sock)
        return sock, _bind(sock, host, port)

    def dealer(self, endpoint: str, identity: str) -> zmq.asyncio.Socket:
        sock = self._socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        self._present_curve(sock)
        sock.connect(endpoint)
        return sock

    def sub(self, endpoint: str, topics: list[bytes]) -> zmq.asyncio.Socket:
        sock = self._socket(zmq.SUB)
        self._present_curve(sock)
        for topic in topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        sock.connect(endpoint)
        return sock

    def close(self) -> None:
        if self._auth is not None:
            self._auth.stop()
        self.ctx.destroy(linger=LINGER_MS)


def _bind(sock: zmq.asyncio.Socket, host: str, port: int) -> int:
    if port:
        sock.bind(f"tcp://{host}:{port}")
        return port
    return sock.bind_to_random_port(f"tcp://{host}")
