"""Injected faults between cronbus and a real Consul agent: an HTTP proxy that answers or cuts the requests a rule
matches, and forwards every other one to the agent unchanged (blocking queries included)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

from cronbus.common.consul.agent import free_port

Action = Literal["500", "cut", "hang"]


@dataclass
class Rule:
    """Fault the next `count` requests whose method and path (with its query) match."""

    method: str
    path: re.Pattern[str]
    count: int
    action: Action
    hit: int = 0


@dataclass
class ConsulFaults:
    upstream: str  # host:port of the real agent
    rules: list[Rule] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # "METHOD path?query" of every request, forwarded or not
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> ConsulFaults:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def fault(self, method: str, path: str, count: int, action: Action = "500") -> Rule:
        """Arms a rule: the next `count` requests of `method` whose path and query match the regular expression."""
        rule = Rule(method, re.compile(path), count, action)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.path_qs
        self.seen.append(f"{request.method} {target}")
        for rule in self.rules:
            if rule.hit < rule.count and rule.method == request.method and rule.path.search(target):
                rule.hit += 1
                if rule.action == "500":
                    return web.Response(status=500, text="injected fault")
                if rule.action == "hang":
                    await asyncio.sleep(30)  # longer than any cronbus timeout on Consul
                assert request.transport is not None
                request.transport.close()  # "cut": the connection drops with no answer
                return web.Response(status=500)
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, f"http://{self.upstream}{target}", data=body or None, headers=headers
        ) as upstream:
            payload = await upstream.read()
            kept = {
                k: v for k, v in upstream.headers.items() if k.lower().startswith("x-consul") or k == "Content-Type"
            }
            return web.Response(status=upstream.status, body=payload, headers=kept)
