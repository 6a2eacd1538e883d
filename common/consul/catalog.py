"""Service registration with a TTL health check kept passing by a task, and discovery of cluster members."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from cronbus.common.consul.client import ConsulClient
from cronbus.common.errors import ConsulError
from cronbus.common.lifecycle import wait_or_stop
from cronbus.common.models import Member

log = logging.getLogger(__name__)


class Registration:
    """This process in the Consul catalog. Its TTL check passes only while keep_alive() runs, so a killed
    process turns critical within ttl_s."""

    def __init__(
        self,
        consul: ConsulClient,
        *,
        service: str,
        service_id: str,
        address: str,
        port: int,
        tags: dict[str, str],
        ttl_s: float = 3.0,
    ) -> None:
        self.consul = consul
        self.service = service
        self.service_id = service_id
        self.address = address
        self.port = port
        self.tags = tags
        self.ttl_s = ttl_s
        self.check_id = f"service:{service_id}"

    async def register(self) -> None:
        await self.consul.register_service(
            self.service,
            self.service_id,
            address=self.address,
            port=self.port,
            tags=[f"{k}={v}" for k, v in sorted(self.tags.items())],
            meta=self.tags,
            ttl_s=self.ttl_s,
        )
        await self.consul.check_pass(self.check_id, "started")
        log.info("registered service=%s id=%s addr=%s:%d", self.service, self.service_id, self.address, self.port)

    async def register_with_retry(self, stop: asyncio.Event) -> None:
        """Registers, retrying with capped exponential backoff while Consul is unreachable."""
        delay = 0.2
        while not stop.is_set():
            try:
                await self.register()
                return
            except ConsulError as exc:
                log.warning("cannot register yet (%s); retrying in %.1fs", exc, delay)
                await wait_or_stop(stop, delay)
                delay = min(delay * 2, 5.0)

    async def keep_alive(self, stop: asyncio.Event) -> None:
        """Passes the TTL check every ttl/4 until stop; re-registers if the agent forgot the service."""
        while not await wait_or_stop(stop, self.ttl_s / 4):
            try:
                await self.consul.check_pass(self.check_id)
            except ConsulError as exc:
                log.warning("health check update failed service=%s: %s", self.service_id, exc)
                with contextlib.suppress(ConsulError):
                    await self.register()

    async def deregister(self) -> None:
        try:
            await self.consul.deregister_service(self.service_id)
            log.info("deregistered id=%s", self.service_id)
        except ConsulError as exc:
            log.warning("deregister failed id=%s: %s", self.service_id, exc)


def _member(entry: dict[str, Any], role: str) -> Member:
    service = entry["Service"]
    checks = entry.get("Checks") or []
    healthy = all(c.get("Status") == "passing" for c in checks)
    tags = dict(service.get("Meta") or {})
    tags["role"] = role
    return Member(
        Name=tags.get("node") or service["ID"],
        Addr=service.get("Address") or entry["Node"].get("Address", ""),
        Port=int(service.get("Port") or 0),
        Tags=tags,
        Status=1 if healthy else 4,
        status_text="alive" if healthy else "failed",
        id=service["ID"],
    )


async def list_members(consul: ConsulClient, services: dict[str, str]) -> list[Member]:
    """Every registered process of the given services (service name -> role), healthy or not."""
    members: list[Member] = []
    for service, role in services.items():
        _, entries = await consul.health_service(service)
        members.extend(_member(e, role) for e in entries)
    return sorted(members, key=lambda m: (m.Tags.get("role", ""), m.Name))
