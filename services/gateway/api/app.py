"""The Litestar application: the Dkron v1 API, health, metrics, OpenAPI and the UI, with the cross-cutting rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import parse_qsl

import msgspec
from litestar import Litestar, Router, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import OpenAPIMediaType, Reference, RequestBody, Schema
from litestar.response import Redirect
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router
from litestar.types import HTTPScope, LifeSpanReceive, LifeSpanScope, LifeSpanSend, Message, Receive, Scope, Send

from cronbus.common.consul.client import ConsulClient
from cronbus.common.consul.store import Store
from cronbus.common.consul.view import JobView
from cronbus.common.history import open_history_store
from cronbus.common.models import now_utc
from cronbus.common.settings import GatewaySettings
from cronbus.common.tracing import tracing
from cronbus.services.gateway.api import cluster, executions, jobs, stats
from cronbus.services.gateway.api.auth import OPEN, token_guard
from cronbus.services.gateway.api.control import ControlClient
from cronbus.services.gateway.api.errors import handle_exception, one_line
from cronbus.services.gateway.api.history import History
from cronbus.services.gateway.api.metrics import Metrics
from cronbus.services.gateway.api.state import GatewayState
from cronbus.services.gateway.api.table import JobTable

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024
OPENAPI_PATH: Final = "/v1/openapi.json"
UI_DIR: Final = Path(__file__).resolve().parents[1] / "ui" / "static"
# Paths that keep their trailing slash: the API root (Dkron serves both) and the UI's files.
_SLASH_KEPT: Final = ("/", "/v1/")
_JSON: Final = b"application/json"


def _terminate_self() -> None:
    # The process lifecycle turns SIGTERM into a graceful stop (deregistration included).
    os.kill(os.getpid(), signal.SIGTERM)


class GatewayApp(Litestar):
    """The Litestar app plus what must apply to every request, matched by a route or not (Litestar runs its
    own middleware only after routing): X-Whom and CORS headers, trailing-slash redirects, `?pretty`,
    request metrics."""

    gateway: GatewayState
    allowed_methods: dict[str, str]  # route template -> its Allow header

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        kind: str = scope["type"]
        if kind != "http":
            await super().__call__(scope, receive, send)
            return
        await self._serve(cast(HTTPScope, scope), cast(Receive, receive), cast(Send, send))

    async def _serve(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500
        whom = self.gateway.settings.node_name

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableScopeHeaders.from_message(message)
                headers["X-Whom"] = whom
                # Browsers need these on plain requests too, not only on CORS ones, to read X-Total-Count.
                if "access-control-allow-origin" not in headers:
                    headers["Access-Control-Allow-Origin"] = "*"
                if "access-control-expose-headers" not in headers:
                    headers["Access-Control-Expose-Headers"] = "*"
                if "allow" in headers:
                    # Litestar's automatic OPTIONS answer lists only the methods of the route's first handler.
                    allowed = self.allowed_methods.get(scope.get("path_template") or "")
                    if allowed:
                        headers["Allow"] = allowed
            await send(message)

        route = "unmatched"
        try:
            redirect = _trailing_slash_redirect(scope)
            if redirect is not None:
                route = "redirect"
                await _send_redirect(send_with_headers, *redirect)
                return
            outgoing: Send = send_with_headers
            if any(key == "pretty" for key, _ in parse_qsl(scope["query_string"].decode("latin-1"), True)):
                outgoing = _pretty_sender(send_with_headers)
            await super().__call__(scope, receive, outgoing)
            route = scope.get("path_template") or "unmatched"
        finally:
            self.gateway.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


def _trailing_slash_redirect(scope: HTTPScope) -> tuple[int, bytes] | None:
    """(status, location) when the path ends with '/': 301 for GET and HEAD, 307 (method kept) otherwise."""
    path = scope["path"]
    if not path.endswith("/") or path in _SLASH_KEPT or path.startswith("/ui/"):
        return None
    raw = scope.get("raw_path") or path.encode()
    location = raw.split(b"?", 1)[0].rstrip(b"/") or b"/"
    if scope["query_string"]:
        location += b"?" + scope["query_string"]
    return (301 if scope["method"] in ("GET", "HEAD") else 307), location


async def _send_redirect(send: Send, status: int, location: bytes) -> None:
    body = b"moved to " + location
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"location", location),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _pretty_sender(send: Send) -> Send:
    """Indents a JSON response: holds it until its last chunk, then sends it formatted."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def pretty_send(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            content_type = dict(message.get("headers") or []).get(b"content-type", b"")
            if content_type.startswith(_JSON):
                start = message
                return
        elif message["type"] == "http.response.body" and start is not None:
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            with contextlib.suppress(msgspec.DecodeError):
                body = msgspec.json.format(body, indent=2) + b"\n"
            headers = MutableScopeHeaders.from_message(start)
            headers["Content-Length"] = str(len(body))
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await send(message)

    return pretty_send


def _add_request_bodies(app: Litestar) -> None:
    """Routes that read a job from the raw body (to accept nulls like Dkron does) declare it here, so the
    OpenAPI document shows the Job schema as their request body."""
    openapi = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or openapi.paths is None:
            continue
        item = openapi.paths.get(route.path_format)
        if item is None:
            continue
        for handler in route.route_handlers:
            if handler.opt.get("request_body") != "Job":
                continue
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if operation is None:
                    continue
                job_schema = _success_schema(operation)
                operation.request_body = RequestBody(
                    content={"application/json": OpenAPIMediaType(schema=job_schema)},
                    required=True,
                    description="A job (unknown keys are ignored; null means the default)",
                )


def _success_schema(operation: Any) -> Schema | Reference:
    for code, response in (operation.responses or {}).items():
        if code.startswith("2") and getattr(response, "content", None):
            media = response.content.get("application/json")
            if media is not None and media.schema is not None:
                schema: Schema | Reference = media.schema
                return schema
    return Schema()


def create_app(
    settings: GatewaySettings,
    consul: ConsulClient,
    *,
    on_leave: Callable[[], None] = _terminate_self,
    clock: Callable[[], datetime] = now_utc,
) -> GatewayApp:
    """The gateway's ASGI app. Its lifespan runs the job view and closes the control client."""
    store = Store(consul)
    view = JobView(store)
    metrics = Metrics()
    state = GatewayState(
        settings=settings,
        consul=consul,
        store=store,
        history=History(store, open_history_store(settings.history_store, store)),
        view=view,
        table=JobTable(view, clock),
        control=ControlClient(
            store,
            node_name=settings.node_name,
            timeout_s=settings.request_timeout_s,
            bus_settings=settings.bus,
            tracing=tracing("gateway", settings.otel_endpoint),
        ),
        metrics=metrics,
        on_leave=on_leave,
        clock=clock,
    )
    metrics.gauge("cronbus_gateway_jobs", "Jobs in the gateway's view of Consul.", lambda: float(len(view.jobs)))

    @contextlib.asynccontextmanager
    async def run_view(app: Litestar) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(view.run(stop), name="job-view")
        task.add_done_callback(lambda done: _view_ended(state, done))
        try:
            yield
        finally:
            stop.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # a crash was handled by _view_ended
            await state.control.close()
            await asyncio.to_thread(state.control.tracing.close)  # the last spans, bounded by the exporter's timeout
            await state.history.close()

    handlers: list[Any] = [*jobs.ROUTES, *executions.ROUTES, *cluster.ROUTES, *stats.ROUTES]
    if UI_DIR.is_dir():
        handlers.append(
            create_static_files_router(path="/ui", directories=[UI_DIR], html_mode=True, opt=OPEN, name="ui")
        )
        handlers.append(ui_root)

    app = GatewayApp(
        route_handlers=handlers,
        dependencies={"gw": Provide(lambda: state, sync_to_thread=False, use_cache=True)},
        guards=[token_guard(settings.tokens)],
        exception_handlers={Exception: handle_exception},
        cors_config=CORSConfig(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"], expose_headers=["*"]),
        openapi_config=OpenAPIConfig(
            title="cronbus",
            version=cluster.version(),
            description="The Dkron v1 compatible API of cronbus, with its extensions.",
            create_examples=False,
            use_handler_docstrings=False,
            path=OPENAPI_PATH,
            render_plugins=[JsonRenderPlugin(path="/")],
            openapi_router=Router(OPENAPI_PATH, route_handlers=[], include_in_schema=False, opt={"role": "read"}),
        ),
        lifespan=[run_view],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
        debug=False,
    )
    app.gateway = state
    app.allowed_methods = {
        route.path_format: ", ".join(sorted(route.methods)) for route in app.routes if isinstance(route, HTTPRoute)
    }
    _add_request_bodies(app)  # builds the OpenAPI document now, so it is complete from the first request
    return app


def _view_ended(state: GatewayState, task: asyncio.Task[None]) -> None:
    # A crashed view is a bug. From then on nothing that reads it is served (ready_view answers 503, /health says
    # why), and the gateway process ends, as it does for any crashed task (GatewayService waits for view_crashed),
    # so its supervisor starts it again with a fresh view instead of one that serves what it cannot vouch for.
    if not task.cancelled() and (error := task.exception()) is not None:
        state.view_failure = one_line(repr(error))
        log.critical("job view crashed: %s", state.view_failure, exc_info=error)
        state.view_crashed.set()


@get("/", include_in_schema=False, opt=OPEN)
async def ui_root() -> Redirect:
    return Redirect("/ui/")
