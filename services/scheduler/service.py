"""The scheduler process: campaigns for leadership, and while leader plans and dispatches runs."""

from __future__ import annotations

import asyncio
import logging

from cronbus.common.bus import Bus
from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.lock import LeaderLock
from cronbus.common.errors import ConsulError
from cronbus.common.lifecycle import wait_or_stop
from cronbus.common.settings import SchedulerSettings

log = logging.getLogger(__name__)


class SchedulerService:
    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        host, port = settings.consul.host_port
        self.consul = ConsulClient(host, port, settings.consul.token)
        self.bus = Bus()
        advertise = settings.advertise_host or settings.bind_host
        self.router, router_port = self.bus.router(settings.bind_host, settings.router_port)
        self.xpub, pub_port = self.bus.xpub(settings.bind_host, settings.pub_port)
        self.router_endpoint = f"tcp://{advertise}:{router_port}"
        self.pub_endpoint = f"tcp://{advertise}:{pub_port}"
        self.registration = Registration(
            self.consul,
            service=keys.SCHEDULER_SERVICE,
            service_id=f"scheduler-{settings.node_name}",
            address=advertise,
            port=router_port,
            tags={"pub_port": str(pub_port)},
            ttl_s=settings.lock_ttl_s,
        )
        self.lock = LeaderLock(
            self.consul,
            name=settings.node_name,
            check_id=self.registration.check_id,
            ttl_s=settings.lock_ttl_s,
        )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.registration.register_with_retry(stop)
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._leadership(stop))]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self.lock.release()
            await self.registration.deregister()
            await self.consul.close()
            self.router.close()
            self.xpub.close()
            self.bus.close()

    async def _leadership(self, stop: asyncio.Event) -> None:
        """Keeps the health check passing; campaigns while standby, renews the lease while leader."""
        interval = self.settings.lock_ttl_s / 4
        while not stop.is_set():
            if self.lock.is_leader():
                await self.lock.renew()
                await wait_or_stop(stop, interval)
                continue
            await self.lock.renew()  # as standby: passes the health check only
            try:
                if await self.lock.try_acquire(self.router_endpoint, self.pub_endpoint):
                    continue
                await asyncio.wait_for(self.lock.wait_for_vacancy(stop, wait_s=1), interval * 2)
            except (ConsulError, TimeoutError) as exc:
                log.debug("campaign round failed: %s", exc)
                await wait_or_stop(stop, interval)
