"""The Litestar application: the Dkron v1 API, health and metrics."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Response, get

from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import ConsulError
from cronbus.common.settings import GatewaySettings


def create_app(settings: GatewaySettings, consul: ConsulClient) -> Litestar:
    @get("/health")
    async def health() -> Response[dict[str, Any]]:
        try:
            await consul.status_leader()
        except ConsulError as exc:
            return Response({"status": "unhealthy", "consul": str(exc)}, status_code=503)
        return Response({"status": "healthy"})

    return Litestar(route_handlers=[health], openapi_config=None, logging_config=None)
