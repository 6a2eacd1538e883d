"""The campaign for leadership: rounds for the Consul lock, and while it is held a term, with its lease watched. A
term that Consul ends is a step down, not an exit (docs/semantics.md, "Terms")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine

from cronbus.common.consul.lock import LeaderLock
from cronbus.common.errors import ConsulError
from cronbus.common.lifecycle import wait_or_stop

log = logging.getLogger(__name__)

Lead = Callable[
    [asyncio.Event, asyncio.Event], Coroutine[object, object, None]
]  # lead(stop, lost): one term, until either is set


class Campaign:
    """Campaigns until `stop`; each time the lock is won, runs `lead` for the term and `on_term_end` after it."""

    def __init__(
        self,
        lock: LeaderLock,
        node_name: str,
        lock_ttl_s: float,
        lead: Lead,
        on_term_end: Callable[[], None],
        *,
        endpoints: tuple[str, str],
        curve_key: str,
    ) -> None:
        self._lock = lock
        self._node_name = node_name
        self._interval_s = lock_ttl_s / 4
        self._lease_check_s = lock_ttl_s / 8
        self._lead = lead
        self._on_term_end = on_term_end
        self._router, self._publisher = endpoints
        self._curve_key = curve_key

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                acquired = await asyncio.wait_for(
                    self._lock.try_acquire(self._router, self._publisher, curve_key=self._curve_key), 5
                )
            except (ConsulError, TimeoutError) as exc:
                log.debug("campaign round failed: %s", exc)
                await wait_or_stop(stop, self._interval_s)
                continue
            if not acquired:
                with contextlib.suppress(ConsulError, TimeoutError):
                    await asyncio.wait_for(self._lock.wait_for_vacancy(stop, wait_s=1), self._interval_s * 2)
                continue
            await self._term(stop)

    async def _term(self, stop: asyncio.Event) -> None:
        lost = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_lease(stop, lost))
                tg.create_task(self._lead(stop, lost))
        except* (ConsulError, TimeoutError) as failed:
            # Consul failing while the term is set up or led (recovery, catch-up, a read) ends the term, not the
            # process: this scheduler steps down and campaigns again; the records say where the next term starts.
            log.warning("term ended by Consul node=%s: %s", self._node_name, failed.exceptions[0])
            await wait_or_stop(stop, self._interval_s)
        finally:
            self._on_term_end()
            if not stop.is_set():
                log.warning("leadership ended node=%s; back to standby", self._node_name)
                await self._lock.release()  # a fresh session next round

    async def _watch_lease(self, stop: asyncio.Event, lost: asyncio.Event) -> None:
        """Ends the term when the lease does (the LeaseKeeper thread renews it)."""
        while not stop.is_set() and not lost.is_set():
            if not self._lock.is_leader():
                lost.set()
                return
            await wait_or_stop(stop, self._lease_check_s)
