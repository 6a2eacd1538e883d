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
from cronbus.common.consul.client import ConsulClient, KVEntry, TxnOp
from cronbus.common.errors import ConsulError, CorruptRecordError
from cronbus.common.models import LeaderInfo, TermRecord, now_utc

log = logging.getLogger(__name__)


def decode_term(value: bytes, key: str) -> int:
    try:
        return msgspec.json.decode(value, type=TermRecord).term
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptRecordError(key, f"not a valid TermRecord: {exc}") from None


class LeaderLock:
    """Campaigns for the leader key. The session hangs on this process's TTL health check, so a killed
    leader loses the lock within ttl_s; is_leader() is a local lease that runs out *before* that, so an
    old leader that cannot reach Consul stops acting before anyone else can start.

    The check is passed and the lease renewed by renew_blocking(), on a thread of its own (LeaseKeeper):
    an event loop busy with thousands of runs due at once is slow, not dead, and must not lose the lock
    for that (a new leader would start by recovering every one of those runs, and fall behind in turn).

    The term grows at every acquisition: one more than the last handed out (the term key), never less than the
    key's LockIndex, and past any term an executor reports having seen (see _next_term)."""

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
        self._floor = 0  # terms known to have been used (step_down_past): the next one is higher
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

    async def try_acquire(self, router: str, publisher: str, *, curve_key: str = "") -> bool:
        """One attempt at the lock. On success sets term and info (curve_key: the leader's public bus key)."""
        if not self._session:
            # A session this process forgot (its release failed, or an error made us drop it) may still hold the
            # lock, kept alive by the check we keep passing: destroy it, or nobody ever gets the lock again.
            await self.clear_stale_sessions()
            self._session = await self.consul.session_create(
                f"cronbus-scheduler {self.name}", ["serfHealth", self.check_id]
            )
        started = self._clock()
        info = LeaderInfo(name=self.name, router=router, publisher=publisher, elected_at=now_utc(), curve_key=curve_key)
        try:
            acquired = await self.consul.kv_put(keys.LEADER, msgspec.json.encode(info), acquire=self._session)
        except ConsulError as exc:
            if exc.status == 500:  # Consul's answer to an invalid session (its check critical, or destroyed)
                self._session = ""  # invalidated (e.g. our check went critical): make a new one next time
            raise
        if not acquired:
            return False
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or entry.session != self._session:
            return False
        term = await self._next_term(entry.lock_index)
        if term is None:
            return False
        self.term = term
        self._floor = max(self._floor, term)
        self.info = msgspec.structs.replace(info, term=self.term)
        # Same session re-acquiring keeps the LockIndex and only updates the value.
        await self.consul.kv_put(keys.LEADER, msgspec.json.encode(self.info), acquire=self._session)
        self._lease_until = started + self.ttl_s * 0.75
        log.info("leadership acquired node=%s term=%d", self.name, self.term)
        return True

    async def step_down_past(self, term: int) -> None:
        """A term this cluster has used and ours does not exceed (an executor saw it): records it in the term key
        while the lock is still ours, so that the next term anyone takes is higher, then gives the lock up."""
        self._floor = max(self._floor, term)
        if self.term:
            record = msgspec.json.encode(TermRecord(term))
            try:
                await self.consul.txn([TxnOp("check-session", keys.LEADER, session=self._session),
                                       TxnOp("set", keys.TERM, record)])  # fmt: skip
            except ConsulError as exc:
                log.warning("could not record term %d: %s", term, exc)
        await self.release()

    async def _next_term(self, lock_index: int) -> int | None:
        """The term of the leadership just acquired: one more than any handed out before. Consul's LockIndex alone
        would not do: a plain write of the leader key (a hand edit) resets it to 0. The last term is kept in its
        own key, written by the lock holder only (checked against its session), and raised past anything this
        process learned (step_down_past). None when the lock is no longer this session's."""
        for _ in range(5):
            entry = await self.consul.kv_get(keys.TERM)
            stored = 0
            if entry is not None:
                try:
                    stored = decode_term(entry.value, entry.key)
                except CorruptRecordError as exc:  # the others say where terms stand: the floor, the LockIndex
                    log.warning("unreadable record key=%s: %s", exc.key, exc.reason)
            term = max(stored + 1, lock_index, self._floor + 1)
            record = msgspec.json.encode(TermRecord(term))
            ok, _, errors = await self.consul.txn([
                TxnOp("check-session", keys.LEADER, session=self._session),
                TxnOp("cas", keys.TERM, record, entry.modify_index if entry is not None else 0),
            ])  # fmt: skip
            if ok:
                return term
            if any(e.op_index == 0 for e in errors):
                return None
        raise ConsulError("the term key keeps changing under the leader lock")

    async def wait_for_vacancy(self, stop: asyncio.Event, wait_s: float = 5.0) -> None:
        """Returns when the leader key is free (or after wait_s), watching it with a blocking query."""
        entry = await self.consul.kv_get(keys.LEADER)
        if entry is None or not entry.session:
            return
        await self._watch(entry, wait_s)

    async def _watch(self, entry: KVEntry, wait_s: float) -> None:
        await self.consul.kv_list(keys.LEADER, index=entry.modify_index, wait_s=wait_s)

    async def guard_record(self, wait_s: float = 10.0) -> None:
        """While this process leads: keeps the leader key's value this term's record. Anyone may overwrite it
        (a hand edit in the Consul UI, a bad restore): executors and gateways read it to find the leader, so an
        unreadable one would stall the cluster. A key no longer locked by this session (deleted, or taken) ends
        the lease: the ledger's check-session fences this term's writes anyway. Watches with blocking queries;
        returns when the lease has ended. Raises ConsulError when Consul cannot answer."""
        index = 0
        while self.is_leader() and self.info is not None:
            index, entries = await self.consul.kv_list(keys.LEADER, index=index or None, wait_s=wait_s)
            entry = next((e for e in entries if e.key == keys.LEADER), None)
            if not self.is_leader() or self.info is None:
                return
            if entry is None or entry.session != self._session:
                self._step_down("the leader key is no longer this session's")
                return
            wanted = msgspec.json.encode(self.info)
            if entry.value != wanted:
                log.warning("leader record overwritten key=%s: written again", keys.LEADER)
                await self.consul.kv_put(keys.LEADER, wanted, acquire=self._session)

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
