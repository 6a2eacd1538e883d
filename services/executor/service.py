"""The executor process: registers with its tags, follows the leader, runs what it is dispatched."""

from __future__ import annotations

import asyncio
import logging
import socket

from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.settings import ExecutorSettings

log = logging.getLogger(__name__)


def builtin_tags(settings: ExecutorSettings) -> dict[str, str]:
    """The executor's tags: its own plus node, hostname and dc, which every executor has."""
    return {
        **settings.tags,
        "node": settings.node_name,
        "hostname": socket.gethostname(),
        "dc": settings.datacenter,
    }


class ExecutorService:
    def __init__(self, settings: ExecutorSettings) -> None:
        self.settings = settings
        host, port = settings.consul.host_port
        self.consul = ConsulClient(host, port, settings.consul.token)
        self.tags = builtin_tags(settings)
        self.registration = Registration(
            self.consul,
            service=keys.EXECUTOR_SERVICE,
            service_id=f"executor-{settings.node_name}",
            address="127.0.0.1",
            port=0,
            tags=self.tags,
        )

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self.registration.register_with_retry(stop)
            await self.registration.keep_alive(stop)
        finally:
            await self.registration.deregister()
            await self.consul.close()
