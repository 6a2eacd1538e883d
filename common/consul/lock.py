"""Leader election on a Consul session lock, with a local lease (Patroni style) and a growing term."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import consul
import msgspec

from cronbus.common.consul import keys
from cronbus.common.consul.client import ConsulClient, KVEntry
from cronbus.common.errors import ConsulError
from cronbus.common.models import LeaderInfo, now_utc

log = logging.getLogger(__name__)


class LeaderLock:
    """Campaigns for the leader key. The session hangs on this process's TTL health check, so a killed
    leader loses the lock within ttl_s; is_leader() is a local lease that runs out *before* that, so an
    old leader that cannot reach Consul stops acting before anyone else can start.

    The check is passed and the lease renewed by renew_blocking(), on a thread of its own (LeaseKeeper):
    an event loop busy with thousands of runs due at once is slow, not dead, and must not lose the lock
    for that (a new leader would start by recovering every one of those runs, and fall behind in turn).

    The term is the key's LockIndex, which Consul increments at every acquisition."""

    def __init__(
        self,
        consul: ConsulClient,
        *,
        name: str,
        check_id: str,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consul = consul
        self.name = name
        self.check_id = check_id
        self.ttl_s = ttl_s
        self._clock = clock
        self._session = ""
        self._lease_until = 0.0
        self.term = 0
        self.info: LeaderInfo | None = None
        self._blocking: Any = None  # py-consul's blocking client, for renew_blocking (made on first use)

    @property
    def session(self) -> str:
        return self._session

    @property
    def lease_until(self) -> float:
        """When the local lease runs out (on the lock's clock) unless renewed."""
        return self._lease_until

    def is_leader(self) -> bool:
        return self.term > 0 and self._clock() < self._lease_until

    async def renew(self) -> bool:
        """renew_blocking() from the event loop."""
        return await asyncio.to_thread(self.renew_blocking)

    def renew_blocking(self) -> bool:
        """Passes the health check and confirms the lock is still ours; extends the lease on success.
        Without a lock (standby) it only passes the check. False when leadership is lost. Blocks (up to
        ttl_s / 2 per request): call it from a thread, as LeaseKeeper does."""
        if self._blocking is None:
            api, timeout_s = self.consul, self.ttl_s / 2
            self._blocking = consul.Consul(host=api.host, port=api.port, token=api.token, connections_timeout=timeout_s)
        started, term, session = self._clock(), self.term, self._session
        try:
            self._blocking.agent.check.ttl_pass(self.check_id)
            if not term:
                return False
            _, raw = self._blocking.kv.get(keys.LEADER)
        except (consul.ConsulException, OSError) as exc:  # requests' errors are OSErrors
            log.warning("lease renewal failed: %s", exc)
            return self.is_leader()
        if (term, session) != (self.term, self._session):
            return self.is_leader()  # acquired or released meanwhile: the next round judges
        if not raw or raw.get("Session") != session:
            self._step_down("lock lost")
            return False
        # The check was passed at `started` at the latest, so Consul cannot invalidate the session before
        # started + ttl; keep a margin for clock rate differences.
        self._lease_until = started + self.ttl_s * 0.75
        return True

    async def try_acquire(self, router: str, publisher: str) -> bool:
        """One attempt at the lock. On success sets term and info."""
        if not self._session:
            # A session this process forgot (its release failed, or an error made us drop it) may still hold the
            # lock, kept alive by the check we keep passing: destroy it, or nobody ever gets the lock again.
            await self.clear_stale_sessions()
            self._session = await self.consul.session_create(
                f"cronbus-scheduler {self.name}", ["serfHealth", self.check_id]
            )
        started = self._clock()
        info = LeaderInfo(name=self.name, router=router, publisher=publisher, elected_at=now_utc())
        try:
            acquired = await self.consul.kv_put(keys.LEADER, msgspec.json.encode(info), acquire=self._session)
        except ConsulError as exc:
            if "invalid session" in str(exc).lower() or "500" in str(exc):
                self._session = ""  # invalidated (e.g. our check went critical): make a new one next time
            raise
        if not acquired:
            return False
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or entry.session != self._session:
            return False
        self.term = entry.lock_index
        self.info = msgspec.structs.replace(info, term=self.term)
        # Same session re-acquiring keeps the LockIndex and only updates the value.
        await self.consul.kv_put(keys.LEADER, msgspec.json.encode(self.info), acquire=self._session)
        self._lease_until = started + self.ttl_s * 0.75
        log.info("leadership acquired node=%s term=%d", self.name, self.term)
        return True

    async def wait_for_vacancy(self, stop: asyncio.Event, wait_s: float = 5.0) -> None:
        """Returns when the leader key is free (or after wait_s), watching it with a blocking query."""
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or not entry.session:
            return
        await self._watch(entry, wait_s)

    async def _watch(self, entry: KVEntry, wait_s: float) -> None:
        await self.consul.kv_list(keys.LEADER, index=entry.modify_index, wait_s=wait_s)

    def _step_down(self, why: str) -> None:
        if self.term:
            log.warning("leadership lost node=%s term=%d: %s", self.name, self.term, why)
        self.term = 0
        self.info = None
        self._lease_until = 0.0

    async def clear_stale_sessions(self) -> None:
        """Destroys sessions left by an earlier run of this scheduler (same name). Restarted within the
        TTL, this process re-registers the same health check and keeps it passing, so the old session (and
        the lock it may hold) would otherwise never expire."""
        name = f"cronbus-scheduler {self.name}"
        for session in await self.consul.session_list():
            if session.get("Name") == name and session.get("ID") != self._session:
                log.info("destroying a stale session of this scheduler id=%s", session.get("ID"))
                await self.consul.session_destroy(str(session["ID"]))

    async def release(self) -> None:
        """Gives the lock up (so a standby takes over at once) and destroys the session. If Consul cannot be
        reached, the session id is kept so a later release (or clear_stale_sessions) can still destroy it."""
        if self.term:
            self._step_down("released")
            try:
                await self.consul.kv_put(keys.LEADER, b"", release=self._session)
            except ConsulError as exc:
                log.warning("lock release failed: %s", exc)
        if not self._session:
            return
        try:
            await self.consul.session_destroy(self._session)
        except ConsulError as exc:
            log.warning("session destroy failed: %s", exc)
            return
        self._session = ""


class LeaseKeeper:
    """Renews a lock's lease every interval_s on a daemon thread, from start() until stop(). It lives and
    dies with the process: SIGSTOP or SIGKILL stop it with everything else, and the lease runs out."""

    def __init__(self, lock: LeaderLock, interval_s: float) -> None:
        self.lock = lock
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval_s * 3)

    def _run(self) -> None:
        while True:
            try:
                self.lock.renew_blocking()
            except Exception:  # a thread boundary: log, and try again next round
                log.exception("lease renewal failed")
            if self._stop.wait(self.interval_s):
                return
