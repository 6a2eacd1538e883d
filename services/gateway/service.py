"""The gateway process: serves the HTTP API and UI, registered in the catalog while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.settings import GatewaySettings
from cronbus.services.gateway.api.app import create_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Signals belong to the process lifecycle (common.lifecycle), which sets `should_exit` through stop.
        yield


class GatewayService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        host, port = settings.consul.host_port
        self.consul = ConsulClient(host, port, settings.consul.token)

    async def run(self, stop: asyncio.Event) -> None:
        app = create_app(self.settings, self.consul, on_leave=stop.set)
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        server = _Server(config)
        registration = Registration(
            self.consul,
            service=keys.GATEWAY_SERVICE,
            service_id=f"gateway-{self.settings.node_name}",
            address=self.settings.host,
            port=self.settings.port,
            tags={"node": self.settings.node_name},
        )
        try:
            async with asyncio.TaskGroup() as tg:
                serving = tg.create_task(server.serve())
                while not server.started:
                    if serving.done():
                        return
                    await asyncio.sleep(0.05)
                log.info("gateway listening on http://%s:%d", self.settings.host, self.settings.port)
                await registration.register_with_retry(stop)
                tg.create_task(registration.keep_alive(stop))
                await stop.wait()
                server.should_exit = True
        finally:
            await registration.deregister()
            await self.consul.close()
