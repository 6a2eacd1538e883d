"""The gateway process: serves the HTTP API and UI, registered in the catalog while it serves."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Iterator

import uvicorn

from cronbus.common.consul import keys
from cronbus.common.consul.catalog import Registration
from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import CronbusError
from cronbus.common.lifecycle import reload_on_sighup
from cronbus.common.settings import GatewaySettings
from cronbus.common.statsd import statsd_sender
from cronbus.services.gateway.api.app import create_app
from cronbus.services.gateway.api.state import GatewayState

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
            ssl_certfile=self.settings.tls_cert_file or None,
            ssl_keyfile=self.settings.tls_key_file or None,
        )
        server = _Server(config)
        registration = Registration(
            self.consul,
            service=keys.GATEWAY_SERVICE,
            service_id=f"gateway-{self.settings.node_name}",
            address=_catalog_address(self.settings.host),
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
                scheme = "https" if self.settings.tls_cert_file else "http"
                log.info("gateway listening on %s://%s:%d", scheme, self.settings.host, self.settings.port)
                await registration.register_with_retry(stop)
                tg.create_task(registration.keep_alive(stop))
                if (sender := statsd_sender(app.gateway.metrics.registry, self.settings.statsd)) is not None:
                    tg.create_task(sender.run(stop))
                watcher = tg.create_task(_end_if_view_crashes(app.gateway, server, serving))
                tg.create_task(reload_on_sighup(app.gateway.control.reload_keys, stop))  # without keys: a no-op
                await stop.wait()
                server.should_exit = True
                watcher.cancel()  # it waits for a crash that, on a stop, never comes
        finally:
            await registration.deregister()
            await self.consul.close()


async def _end_if_view_crashes(state: GatewayState, server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    """Once the job view has crashed: stops the server (it closes its sockets), then raises, so that the task group
    ends, and with it the process (exit code 1)."""
    await state.view_crashed.wait()
    server.should_exit = True
    await asyncio.wait([serving])
    raise CronbusError(f"the job view crashed: {state.view_failure}")


def _catalog_address(host: str) -> str:
    """The address to register: Consul refuses a wildcard (0.0.0.0, ::), and an empty one means the agent's node."""
    try:
        return "" if ipaddress.ip_address(host).is_unspecified else host
    except ValueError:
        return host
