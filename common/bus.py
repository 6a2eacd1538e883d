"""ZeroMQ socket factory (every socket option in one place), bus keys per role, topics and framing."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import zmq
import zmq.asyncio
import zmq.auth
import zmq.auth.thread
from zmq.utils import z85

from cronbus.common.errors import SettingsError, UntrustedKeyError
from cronbus.common.messages import BUS_ROLES, MAX_FRAME_BYTES, BusRole
from cronbus.common.settings import BusSettings

log = logging.getLogger(__name__)

LINGER_MS: Final = 500
RECONNECT_IVL_MS: Final = 100
RECONNECT_IVL_MAX_MS: Final = 5000  # reconnects back off exponentially up to this
SNDHWM: Final = 100_000
RCVHWM: Final = 100_000

# The layout `cronbus keygen DIR` writes and --curve-keys DIR reads (docs/production.md, "Bus keys per role"):
# DIR/<name>.key_secret are key pairs, DIR/public/<role folder>/*.key the allow-lists.
PUBLIC_FOLDER: Final = "public"
ROLE_FOLDERS: Final[Mapping[BusRole, str]] = {"scheduler": "schedulers", "executor": "executors", "gateway": "gateways"}
# Who may connect to a scheduler's server sockets. Schedulers never connect to one another, so no scheduler key is
# admitted; and the connecting side pins the schedulers' keys, so only a scheduler can serve them.
ROUTER_PEERS: Final[frozenset[BusRole]] = frozenset({"executor", "gateway"})
XPUB_PEERS: Final[frozenset[BusRole]] = frozenset({"executor", "gateway"})
REFUSAL_LOG_EVERY_S: Final = 60.0  # a refused peer reconnects every few seconds: log it once a minute
REBIND_WAIT_S: Final = 5.0  # an unbound port is free again once ZeroMQ's I/O thread has closed its listener
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ROLE_NAMES: Final[Mapping[str, BusRole]] = {role: role for role in BUS_ROLES}


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


# ---- keys ------------------------------------------------------------------------------------------------------


class CurveKeys:
    """One CURVE key pair (z85): this process's, read from a `.key_secret` file `cronbus keygen` wrote."""

    def __init__(self, public: bytes, secret: bytes) -> None:
        self.public = public
        self.secret = secret

    @classmethod
    def load(cls, path: str, *, setting: str = "--curve-key") -> CurveKeys:
        """Reads a key file written by `cronbus keygen` (ZeroMQ's certificate format, with the secret)."""
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{setting} {path}: cannot read a CURVE key pair: {exc}") from exc
        if secret is None:
            raise SettingsError(f"{setting} {path}: holds no secret key (use a .key_secret file)")
        return cls(public, secret)


class PublicKeys:
    """The allow-lists: every public key (z85) of DIR/public/{schedulers,executors,gateways}/*.key with its role.
    Never changed: a reload makes a new one, so a reader (the ZAP thread) sees one set or the other."""

    def __init__(self, roles: Mapping[bytes, BusRole]) -> None:
        self._roles = dict(roles)

    @classmethod
    def load(cls, directory: str) -> PublicKeys:
        """Raises SettingsError naming the file when a folder is missing, a file is no public key, or one key is
        listed under two roles (a key has one role)."""
        if not Path(directory).is_dir():
            raise SettingsError(f"--curve-keys {directory}: no such folder (`cronbus keygen {directory}` makes one)")
        roles: dict[bytes, BusRole] = {}
        found_in: dict[bytes, Path] = {}
        for role in BUS_ROLES:
            folder = Path(directory) / PUBLIC_FOLDER / ROLE_FOLDERS[role]
            if not folder.is_dir():
                raise SettingsError(f"--curve-keys {directory}: no folder {folder} (`cronbus keygen` makes it)")
            for path in sorted(folder.glob("*.key")):
                try:
                    key, _ = zmq.auth.load_certificate(path)
                except (OSError, ValueError) as exc:
                    raise SettingsError(f"--curve-keys: cannot read the public key {path}: {exc}") from exc
                if key in roles and roles[key] != role:
                    raise SettingsError(f"--curve-keys: {found_in[key]} and {path} hold one key: a key has one role")
                roles[key], found_in[key] = role, path
        return cls(roles)

    def role_of(self, key: bytes) -> BusRole | None:
        return self._roles.get(key)

    def of(self, role: BusRole) -> frozenset[bytes]:
        return frozenset(key for key, its in self._roles.items() if its == role)

    def lost_since(self, older: PublicKeys) -> frozenset[BusRole]:
        """The roles of which some key listed in `older` is no longer listed with that role."""
        return frozenset(role for key, role in older._roles.items() if self._roles.get(key) != role)

    def counts(self) -> str:
        return " ".join(f"{ROLE_FOLDERS[role]}={len(self.of(role))}" for role in BUS_ROLES)


class KeyRing:
    """This process's part on a bus with keys: its role, its key pair, and the allow-lists of a `cronbus keygen`
    folder. The key pair is read once, at start; reload() reads the allow-lists again (on SIGHUP)."""

    def __init__(self, role: BusRole, own: CurveKeys, directory: str, public: PublicKeys) -> None:
        self.role = role
        self.own = own
        self.directory = directory
        self.public = public  # replaced whole by reload(); the ZAP thread reads it

    @classmethod
    def load(cls, role: BusRole, directory: str, key_file: str = "") -> KeyRing:
        """The pair is key_file, by default DIR/<role>.key_secret; its public key must be listed under its role, or
        the others would not take this process for what it is. Raises SettingsError naming the setting."""
        public = PublicKeys.load(directory)  # first: a wrong folder is named as such, not as a missing pair
        path = key_file or os.path.join(directory, f"{role}.key_secret")
        own = CurveKeys.load(path)
        if public.role_of(own.public) != role:
            listed = public.role_of(own.public)
            where = f"a {listed}'s key" if listed else "in none of the allow-lists"
            raise SettingsError(
                f"--curve-key {path}: this {role}'s public key is {where}; a {role} needs a key listed in "
                f"{os.path.join(directory, PUBLIC_FOLDER, ROLE_FOLDERS[role])}/ (see `cronbus keygen --help`)"
            )
        return cls(role, own, directory, public)

    def reload(self) -> frozenset[BusRole]:
        """Reads the allow-lists again; returns the roles of which a key lost its place (removed, or listed under
        another role). Raises SettingsError, and changes nothing, when they cannot be read."""
        fresh = PublicKeys.load(self.directory)
        lost = fresh.lost_since(self.public)
        self.public = fresh
        if fresh.role_of(self.own.public) != self.role:
            log.warning("this %s's own public key is no longer among the %s: the others will refuse it",
                        self.role, ROLE_FOLDERS[self.role])  # fmt: skip
        return lost

    def server_key(self, advertised: str) -> bytes:
        """The key to pin (curve_serverkey) on a connection to the leader whose record names `advertised` (its public
        key, z85; empty when it names none). The CURVE handshake fails unless the peer proves it holds that key's
        secret, so only a holder of a scheduler's secret key can be a leader to this process: whatever reaches it
        over such a connection (dispatches, kills) comes from a scheduler. Raises UntrustedKeyError when the key named
        is not a scheduler's, or when none is named and the schedulers have several."""
        schedulers = self.public.of("scheduler")
        if advertised:
            if advertised.encode() in schedulers:
                return advertised.encode()
            raise UntrustedKeyError(f"the leader's key {advertised} is not a scheduler's (not in {self._folder()})")
        if len(schedulers) == 1:
            return next(iter(schedulers))
        raise UntrustedKeyError(f"the leader names no key and {self._folder()} holds {len(schedulers)}")

    def _folder(self) -> str:
        return os.path.join(self.directory, PUBLIC_FOLDER, ROLE_FOLDERS["scheduler"]) + "/"


def load_keys(settings: BusSettings, role: BusRole) -> KeyRing | None:
    """The process's KeyRing; None on a bus without keys (no --curve-keys)."""
    if not settings.curve_keys_dir:
        return None
    return KeyRing.load(role, settings.curve_keys_dir, settings.curve_key_file)


def key_files_taken(directory: str, name: str) -> list[Path]:
    """The files of that name a new pair would take in a `cronbus keygen` folder and that exist already."""
    root = Path(directory)
    wanted = [root / f"{name}.key_secret", *(root / PUBLIC_FOLDER / f / f"{name}.key" for f in ROLE_FOLDERS.values())]
    return [path for path in wanted if path.exists()]


def write_key_pair(directory: str, role: BusRole, name: str) -> tuple[Path, Path]:
    """Writes a new key pair of `role` into a `cronbus keygen` folder: DIR/<name>.key_secret (the pair, mode 600) and
    its public key DIR/public/<role folder>/<name>.key (its entry in the allow-list). Returns (public, pair). Never
    replaces a file: raises SettingsError when one of that name exists."""
    if not _KEY_NAME.fullmatch(name):
        raise SettingsError(f"key name {name!r}: letters, digits, '_', '-' and '.', not first")
    if taken := key_files_taken(directory, name):
        raise SettingsError(f"{taken[0]} exists: choose another name (--name) or remove it first")
    root = Path(directory)
    pair = root / f"{name}.key_secret"
    public = root / PUBLIC_FOLDER / ROLE_FOLDERS[role] / f"{name}.key"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in ROLE_FOLDERS.values():
        (root / PUBLIC_FOLDER / folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:  # mode 700: the secret is never readable by others
        public_file, secret_file = zmq.auth.create_certificates(scratch, name)
        os.chmod(secret_file, 0o600)
        os.replace(secret_file, pair)
        os.replace(public_file, public)
    return public, pair


# ---- ZAP: who may connect to a server socket, and with which role --------------------------------------------


class RefusalLog:
    """Whether a refusal of one peer is logged now: at most once a minute per key (or identity), as a refused peer
    keeps reconnecting, or resending."""

    def __init__(self, every_s: float = REFUSAL_LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._logged_at: dict[bytes, float] = {}

    def due(self, peer: bytes) -> bool:
        now = time.monotonic()
        if now - self._logged_at.get(peer, -self.every_s) < self.every_s:
            return False
        if len(self._logged_at) >= 10_000:  # bounded, whoever knocks
            self._logged_at.clear()
        self._logged_at[peer] = now
        return True


class _Admission:
    """ZAP credentials provider of one server socket (its ZAP domain): admits the keys of its peers' roles."""

    def __init__(self, keys: KeyRing, socket: str, peers: frozenset[BusRole]) -> None:
        self.keys = keys
        self.socket = socket
        self.peers = peers
        self._refusals = RefusalLog()

    def callback(self, _domain: str, key: bytes) -> bool:
        role = self.keys.public.role_of(key)
        if role is not None and role in self.peers:
            return True
        if self._refusals.due(key):
            why = f"a {role}'s key" if role else "unknown CURVE key"
            log.warning("bus connection refused socket=%s key=%s: %s", self.socket, key.decode(errors="replace"), why)
        return False


class _Authenticator(zmq.auth.thread.ThreadAuthenticator):
    """ZeroMQ's ZAP handler, in a thread rather than on the loop: sockets are made before the loop runs, and
    handshakes must be answered whatever the loop is busy with. An admitted connection's User-Id is its key's role,
    so the owner of a server socket reads, on every message, which role sent it (peer_role)."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], keys: KeyRing) -> None:
        super().__init__(context)
        self.keys = keys

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.keys.public.role_of(z85.encode(client_public_key)) or ""


def peer_role(frame: zmq.Frame) -> BusRole | None:
    """The role of the key that sent a frame to a server socket of a bus with keys (the User-Id the ZAP handler gave
    its connection); None when it has none (its key lost its place meanwhile)."""
    user = frame.get("User-Id")
    return _ROLE_NAMES.get(user) if isinstance(user, str) else None


# ---- sockets ---------------------------------------------------------------------------------------------------


@dataclass
class _Served:
    """A bound server socket: where, and which roles it admits."""

    socket: zmq.asyncio.Socket
    endpoint: str
    peers: frozenset[BusRole]


class Bus:
    """Owns the ZeroMQ context; creates sockets with cronbus's options. close() ends them all.

    With keys (a KeyRing) the bus is encrypted and authenticated: server sockets admit only the keys of their peers'
    roles and tag each connection with its role; connecting sockets pin the server's key (server_key, from
    leader_key)."""

    def __init__(self, keys: KeyRing | None = None) -> None:
        self.ctx = zmq.asyncio.Context()
        self.keys = keys
        self._auth: _Authenticator | None = None
        self._served: list[_Served] = []

    @classmethod
    def from_settings(cls, settings: BusSettings, role: BusRole) -> Bus:
        return cls(load_keys(settings, role))

    @property
    def public_key(self) -> str:
        """This process's public key (z85), or empty on a bus without keys."""
        return self.keys.own.public.decode() if self.keys is not None else ""

    def leader_key(self, advertised: str) -> bytes | None:
        """The key to pin on connections to the leader whose record names `advertised` (KeyRing.server_key); None on
        a bus without keys. Raises UntrustedKeyError."""
        return self.keys.server_key(advertised) if self.keys is not None else None

    def trusts_leader(self, server_key: bytes | None) -> bool:
        """Whether a leader connection pinned to server_key may go on after a reload."""
        return self.keys is None or self.keys.public.role_of(server_key or b"") == "scheduler"

    def reload_keys(self) -> frozenset[BusRole]:
        """Reads the allow-lists again (on SIGHUP); returns the roles that lost a key (see rebind). Allow-lists that
        cannot be read are logged and stay as they were: a typo must not lock the cluster out."""
        if self.keys is None:
            log.info("no bus keys to reload (no --curve-keys)")
            return frozenset()
        try:
            lost = self.keys.reload()
        except SettingsError as exc:
            log.error("bus keys not reloaded; the allow-lists stay as they were: %s", exc)
            return frozenset()
        log.info("bus keys reloaded from %s: %s", self.keys.directory, self.keys.public.counts())
        return lost

    async def rebind(self, lost: frozenset[BusRole]) -> None:
        """Drops every connection of each server socket that admits a role in `lost`, by unbinding its endpoint and
        binding it again: ZAP runs only at a handshake, so this is how a removed key loses a connection it has. Its
        peers reconnect within RECONNECT_IVL_MS and pass ZAP again, with the allow-lists as they are now; what was in
        flight is lost as on any reconnect (reliable messages are resent)."""
        for served in self._served:
            if not served.peers & lost:
                continue
            served.socket.unbind(served.endpoint)
            deadline = time.monotonic() + REBIND_WAIT_S
            while True:
                try:
                    served.socket.bind(served.endpoint)
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.01)
            log.info("bus connections dropped endpoint=%s: they reconnect with the keys reloaded", served.endpoint)

    def _serve(self, sock: zmq.asyncio.Socket, name: str, peers: frozenset[BusRole], host: str, port: int) -> int:
        if self.keys is not None:
            if self._auth is None:
                self._auth = _Authenticator(zmq.Context.shadow(self.ctx.underlying), self.keys)
                self._auth.start()
            self._auth.configure_curve_callback(name, _Admission(self.keys, name, peers))
            sock.setsockopt(zmq.ZAP_DOMAIN, name.encode())
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.own.secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.own.public)
        bound = _bind(sock, host, port)
        self._served.append(_Served(sock, sock.getsockopt_string(zmq.LAST_ENDPOINT), peers))
        return bound

    def _present_curve(self, sock: zmq.asyncio.Socket, server_key: bytes | None) -> None:
        if self.keys is None:
            return
        assert server_key is not None  # checked before the socket was made
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.own.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.own.secret)

    def _check_server_key(self, server_key: bytes | None) -> None:
        if self.keys is not None and server_key is None:
            raise UntrustedKeyError("a connection on a bus with keys pins its server's key (Bus.leader_key)")

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
        """A bound ROUTER (the stable side); returns it and its port (a free one when port is 0). With keys it
        admits executors' and gateways' keys, and peer_role tells which sent each message."""
        sock = self._socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a peer reconnecting with its identity takes over
        return sock, self._serve(sock, "router", ROUTER_PEERS, host, port)

    def xpub(self, host: str, port: int) -> tuple[zmq.asyncio.Socket, int]:
        """A bound XPUB: like PUB, but it reads subscriptions, so the leader sees who listens to what. With keys it
        admits executors' and gateways' keys."""
        sock = self._socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        # What comes in on an XPUB is subscriptions, short topics: a huge one would stall the owner's loop.
        sock.setsockopt(zmq.MAXMSGSIZE, 1024)
        return sock, self._serve(sock, "xpub", XPUB_PEERS, host, port)

    def dealer(self, endpoint: str, identity: str, *, server_key: bytes | None = None) -> zmq.asyncio.Socket:
        """A DEALER connected to a ROUTER; with keys, server_key (leader_key) is the key that ROUTER must prove."""
        self._check_server_key(server_key)
        sock = self._socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, identity.encode())
        self._present_curve(sock, server_key)
        sock.connect(endpoint)
        return sock

    def sub(self, endpoint: str, topics: list[bytes], *, server_key: bytes | None = None) -> zmq.asyncio.Socket:
        """A SUB connected to an XPUB; with keys, server_key (leader_key) is the key that XPUB must prove."""
        self._check_server_key(server_key)
        sock = self._socket(zmq.SUB)
        self._present_curve(sock, server_key)
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
